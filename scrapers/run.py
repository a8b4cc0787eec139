"""Run a crawl in this process (a fresh Twisted reactor) and write a JSON report.

    python -m scrapers.run --sources sources.yaml [--db FILE] [--source NAME]
        [--max-posts-per-user N] [--since YYYY-MM-DD] [--report FILE] [--progress FILE]
        [--set KEY=VALUE ...]

`flows/crawl.py` starts this as a subprocess, because Scrapy's reactor cannot restart inside one
process. Every selected source runs as its own spider, all in one reactor. Exit status: 0 when
every spider ran (per-account errors are in the report), 1 when a spider could not start. Each
source runs the spider whose `name` is its platform, found by Scrapy's spider loader.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from scrapy.crawler import Crawler, CrawlerProcess
from scrapy.settings import Settings as ScrapySettings

from pipeline.settings import Settings, load_settings
from scrapers.platforms import project_settings
from scrapers.sources import Source, load_sources
from scrapers.tally import ACCOUNTS_DONE, POSTS_SEEN, rows

REPORTED_STATS = (
    "downloader/request_count",
    "downloader/response_count",
    "item_scraped_count",
    "item_dropped_count",
    "retry/count",
    "retry/max_reached",
    "robotstxt/forbidden",
    "tribes/posts_stored",
    "tribes/flushes",
    "tribes/store_seconds",
    "tribes/retry_wait_seconds",
    "tribes/refused_requests",
    "elapsed_time_seconds",
    "finish_reason",
    "log_count/ERROR",
)


def user_agent(tribes: Settings) -> str:
    """The `user_agent` setting with the `contact` in its comment, e.g.
    `TribesBot/0.1 (research crawler; +https://example.org/bot)`."""
    agent = tribes.user_agent.strip()
    if not tribes.contact or tribes.contact in agent:
        return agent
    if agent.endswith(")"):
        return f"{agent[:-1]}; +{tribes.contact})"
    return f"{agent} (+{tribes.contact})"


def scrapy_settings(tribes: Settings, overrides: dict[str, str]) -> ScrapySettings:
    """The project's Scrapy settings with the Tribes settings and explicit overrides applied."""
    settings = project_settings()
    settings.setdict(
        {
            "USER_AGENT": user_agent(tribes),
            "DOWNLOAD_DELAY": tribes.crawl_delay,
            "AUTOTHROTTLE_START_DELAY": 2 * tribes.crawl_delay,
            "CONCURRENT_REQUESTS_PER_DOMAIN": tribes.crawl_concurrency_per_domain,
            "RETRY_TIMES": tribes.crawl_retries,
            "TRIBES_DB": str(tribes.db),
            "TRIBES_DB_WAIT_SECONDS": tribes.lock_wait_seconds,
            "TRIBES_BATCH_SIZE": tribes.crawl_batch_size,
            "TRIBES_MAX_POST_CHARS": tribes.max_post_chars,
        },
        priority="cmdline",
    )
    settings.setdict(overrides, priority="cmdline")
    return settings


def crawl(
    sources: list[Source],
    settings: ScrapySettings,
    max_posts_per_user: int | None,
    since: datetime | None,
    progress: Path | None = None,
) -> tuple[dict[str, Any], bool]:
    """Crawl the sources together; returns the report and whether every spider started.
    `progress`: a file the counts so far are written to each second (report_progress)."""
    process = CrawlerProcess(settings)
    crawlers: list[tuple[Source, Crawler]] = []
    for source in sources:
        crawler = process.create_crawler(source.platform)  # Scrapy's spider loader: by name
        process.crawl(crawler, source=source, max_posts_per_user=max_posts_per_user, since=since)
        crawlers.append((source, crawler))
    total = sum(len(s.accounts) for s in sources)
    if progress:
        report_progress(progress, [c for _, c in crawlers], total)
    process.start()
    if progress:
        report_progress(progress, [c for _, c in crawlers], total, final=True)
    accounts: list[dict] = []
    spiders: list[dict] = []
    for source, crawler in crawlers:
        stats = crawler.stats.get_stats() if crawler.stats else {}
        accounts += [{"platform": source.platform, **row} for row in rows(crawler.stats)]
        spiders.append(
            {
                "source": source.name,
                "platform": source.platform,
                **{k: stats[k] for k in REPORTED_STATS if k in stats},
            }
        )
    started = all(
        c.spider is not None and c.stats.get_value("finish_reason") == "finished"
        for _, c in crawlers
    )
    return {"accounts": accounts, "spiders": spiders}, started and not process.bootstrap_failed


def report_progress(path: Path, crawlers: list[Crawler], total: int, final: bool = False) -> None:
    """Replace `path` with the crawl's counts so far (JSON: accounts in all and crawled to the
    end, posts found), each second while the reactor runs (or once, `final`): `tribes crawl`'s
    progress."""
    from twisted.internet import task

    def write() -> None:
        stats = [c.stats for c in crawlers if c.stats]
        counts = {
            "accounts": total,
            "done": sum(s.get_value(ACCOUNTS_DONE, 0) for s in stats),
            "posts": sum(s.get_value(POSTS_SEEN, 0) for s in stats),
        }
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(counts), encoding="utf-8")
        os.replace(partial, path)

    if final:
        write()
    else:
        task.LoopingCall(write).start(1.0, now=False)


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scrapers.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sources", required=True, type=Path)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--source")
    parser.add_argument("--max-posts-per-user", type=int)
    parser.add_argument("--since", type=datetime.fromisoformat)
    parser.add_argument("--report", type=Path)
    parser.add_argument("--progress", type=Path, help="file of the counts so far, each second")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        selected = load_sources(args.sources).select(args.source)
        tribes = load_settings(db=args.db)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report, ok = crawl(
        selected,
        scrapy_settings(tribes, parse_overrides(args.overrides)),
        args.max_posts_per_user,
        args.since,
        args.progress,
    )
    if args.report:
        partial = args.report.with_suffix(".partial")
        partial.write_text(json.dumps(report, default=str, indent=1), encoding="utf-8")
        os.replace(partial, args.report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
