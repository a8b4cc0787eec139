"""The crawl flow: run the Scrapy project in a subprocess, record the crawl, report per account.

Scrapy's Twisted reactor cannot restart inside one process, so every crawl (and every retry of
one) is a fresh `python -m scrapers.run`. The subprocess opens DuckDB only while it writes a
batch, so a refresh running at the same time waits at most one batch (and vice versa). It dies
with the crawl (Ctrl-C, SIGTERM, even kill -9: see flows/lifetime.py).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path
from subprocess import STDOUT
from typing import Annotated

import polars as pl
import yaml
from prefect import flow, get_run_logger, task
from pydantic import Field

from flows import lifetime
from pipeline import progress, store
from pipeline.settings import Settings, load_settings
from scrapers.sources import DECLARED, SourcesFile, load_sources

lifetime.tie_temporary_server()

ROOT = Path(__file__).resolve().parent.parent
RUN_SPIDERS = [sys.executable, "-m", "scrapers.run"]  # the crawl subprocess, before its arguments
SAMPLE = ROOT / "data" / "sample" / "fb_pages_sample.parquet"
# Our own server on 127.0.0.1 needs no politeness delays.
LOCAL_SERVER_SETTINGS = {
    "DOWNLOAD_DELAY": "0",
    "AUTOTHROTTLE_START_DELAY": "0",
    "AUTOTHROTTLE_MAX_DELAY": "1",
    "AUTOTHROTTLE_TARGET_CONCURRENCY": "16",
    "CONCURRENT_REQUESTS_PER_DOMAIN": "16",
    "CONCURRENT_REQUESTS": "32",
    "TRIBES_RETRY_BACKOFF": "0.1",
}


class CrawlError(RuntimeError):
    """The crawl subprocess failed; the message says how and where its log is."""


@dataclass(frozen=True)
class AccountCounts:
    """One account's outcome in a crawl."""

    source: str
    platform: str
    account: str
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    errors: int = 0
    reason: str | None = None  # why the last error happened


@dataclass(frozen=True)
class CrawlSummary:
    """What `tribes crawl` prints: per-account counts and where the log is."""

    crawl_id: str
    accounts: list[AccountCounts]
    requests: int
    seconds: float
    log: str

    def total(self, field: str) -> int:
        return sum(getattr(a, field) for a in self.accounts)

    def line(self) -> str:
        counts = ", ".join(
            f"{self.total(f)} {f}" for f in ("new", "updated", "unchanged", "skipped", "errors")
        )
        return (
            f"crawl {self.crawl_id}: {len(self.accounts)} accounts, {counts} "
            f"({self.requests} requests, {self.seconds:.1f}s)"
        )


def crawl_command(
    db: Path,
    sources: Path,
    report: Path,
    source: str | None,
    max_posts_per_user: int | None,
    since: date | None,
    overrides: dict[str, str],
) -> list[str]:
    """The subprocess's command line."""
    command = [
        *RUN_SPIDERS,
        "--sources",
        str(sources),
        "--db",
        str(db),
        "--report",
        str(report),
        "--progress",
        str(report.with_suffix(".progress")),
    ]
    if source:
        command += ["--source", source]
    if max_posts_per_user:
        command += ["--max-posts-per-user", str(max_posts_per_user)]
    if since:
        command += ["--since", since.isoformat()]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    return command


def last_error(log: Path) -> str:
    """The last ERROR line (or last line) of a crawl log, for a one-line failure message."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if " ERROR: " in line or line.startswith("error:")]
    return (errors or lines or ["no output"])[-1][:300]


@contextmanager
def watching(path: Path) -> Iterator[None]:
    """Show the crawl subprocess's counts (scrapers/run.py writes them to `path` each second)
    as progress, while the block runs."""
    path.unlink(missing_ok=True)
    done = threading.Event()

    def show() -> None:
        try:
            counts = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # not written yet
            return
        posts = f"{counts['posts']} posts, {progress.rate('crawl', counts['posts'], 'posts')}"
        progress.advance("crawl", counts["done"], counts["accounts"], posts)

    def follow() -> None:
        while not done.wait(0.5):
            show()
        show()  # the final counts

    progress.start("crawl", "crawling accounts")
    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        progress.finish("crawl")
        path.unlink(missing_ok=True)


_standby: list[lifetime.Standby] = []


def keep_spiders_warm() -> None:
    """Fork a process with Scrapy loaded, now, to run this process's next crawl attempt instead
    of a new Python (the crawl service's children, flows/warm.py: call while one thread runs)."""
    from scrapers import run

    _standby.append(lifetime.Standby(run.main))


@task(retries=2, retry_delay_seconds=5, task_run_name="run spiders")
def run_spiders(
    db: str,
    sources: str,
    crawl_id: str,
    log_dir: str,
    source: str | None,
    max_posts_per_user: int | None,
    since: date | None,
    overrides: dict[str, str],
) -> str:
    """Run one crawl subprocess (a fresh reactor each attempt); returns its report's path."""
    folder = Path(log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    report, log = folder / f"{crawl_id}.json", folder / f"{crawl_id}.log"
    report.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    command = crawl_command(
        Path(db), Path(sources), report, source, max_posts_per_user, since, overrides
    )
    with log.open("a", encoding="utf-8") as out, watching(report.with_suffix(".progress")):
        if _standby:  # the crawl service's warm process (its first attempt only)
            code = lifetime.wait_or_stop(_standby.pop().start(command[len(RUN_SPIDERS) :], out))
        else:
            code = lifetime.run_child(command, stdout=out, stderr=STDOUT, env=env)
    if code != 0 or not report.exists():
        raise CrawlError(f"the crawl subprocess exited with {code}: {last_error(log)} (log: {log})")
    return str(report)


def record_people(settings: Settings, sources_file: SourcesFile) -> None:
    """Store the links sources.yaml declares (`person:`); refuse to crawl a forgotten account
    that is not under `forget:` (it would be collected again)."""
    with store.open(settings, "write") as con:
        forgotten = set(store.forgotten(con).iter_rows())
        listed = {
            (source.platform, source.account_key(account))
            for source in sources_file.select(None)
            for account in source.accounts
        }
        if again := sorted(forgotten & listed):
            platform, account = again[0]
            raise CrawlError(
                f"{settings.sources} lists {platform}:{account}, forgotten with `tribes forget`: "
                "put it under forget: (or remove it) before crawling"
            )
        store.replace_declared(con, sources_file.declared_people(), DECLARED)


@task(retries=2, retry_delay_seconds=2, task_run_name="record verified links")
def record_verified(settings: Settings) -> int:
    """Store the links platforms verified, from the profiles stored (people.verified_links):
    they replace the earlier verified links; a pair `tribes people unlink` rejected stays apart."""
    from pipeline import people  # scikit-learn: only when recording

    with store.open(settings, "write") as con:
        links = store.read_links(con)
        rejected = set(links.filter(pl.col("how") == "rejected")["person_id"].to_list())
        found = people.verified_links(store.read_profiles(con), rejected)
        return store.replace_found(con, "verified", found)


@task(retries=2, retry_delay_seconds=2, task_run_name="record crawl start")
def record_start(settings: Settings, source: str | None) -> str:
    with store.open(settings, "write") as con:
        store.abandon_stale(con)
        return store.start_crawl(con, source)


@task(retries=2, retry_delay_seconds=2, task_run_name="record crawl result")
def record_finish(
    settings: Settings,
    crawl_id: str,
    status: str,
    stats: dict | None,
    error: str | None = None,
) -> None:
    with store.open(settings, "write") as con:
        store.finish_crawl(con, crawl_id, status, stats, error)


def record_failure(settings: Settings, crawl_id: str, error: BaseException) -> None:
    """Record the crawl as failed, directly (no task: after Ctrl-C there is no time for one).
    When even that fails, the next crawl finds it `abandoned`."""
    try:
        with store.open(settings, "write") as con:
            store.finish_crawl(con, crawl_id, "failed", None, lifetime.failure_reason(error))
    except Exception as exc:
        get_run_logger().warning("could not mark crawl %s failed: %s", crawl_id, exc)


def summarise(crawl_id: str, report: dict, log: str) -> CrawlSummary:
    known = {f.name for f in fields(AccountCounts)}
    accounts = [
        AccountCounts(**{k: v for k, v in row.items() if k in known}) for row in report["accounts"]
    ]
    spiders = report.get("spiders", [])
    return CrawlSummary(
        crawl_id,
        accounts,
        requests=sum(int(s.get("downloader/request_count", 0)) for s in spiders),
        seconds=max((float(s.get("elapsed_time_seconds", 0)) for s in spiders), default=0.0),
        log=log,
    )


@flow(name="crawl")
def crawl(
    db: str | None = None,
    sources: str | None = None,
    source: str | None = None,
    max_posts_per_user: Annotated[int, Field(ge=1)] | None = None,
    since: date | None = None,
    scrapy_settings: dict[str, str] | None = None,
) -> CrawlSummary:
    """Collect the accounts of sources.yaml (or one `source`) into the database.

    Each account's newest stored post is remembered, so a second crawl fetches only new posts.
    `scrapy_settings` overrides Scrapy settings (e.g. DOWNLOAD_DELAY for a local server).
    """
    settings = load_settings(db=db, sources=sources)
    sources_file = load_sources(settings.sources)  # a bad file fails here, in one line
    sources_file.select(source)
    record_people(settings, sources_file)
    crawl_id = record_start(settings, source)
    log_dir = settings.state / "crawls"
    try:
        report_path = run_spiders(
            str(settings.db),
            str(settings.sources.resolve()),
            crawl_id,
            str(log_dir),
            source,
            max_posts_per_user,
            since,
            dict(scrapy_settings or {}),
        )
    except BaseException as exc:
        record_failure(settings, crawl_id, exc)
        raise
    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    report["options"] = {
        "source": source,
        "max_posts_per_user": max_posts_per_user,
        "since": since.isoformat() if since else None,
    }
    record_finish(settings, crawl_id, "completed", report)
    record_verified(settings)
    summary = summarise(crawl_id, report, str(log_dir / f"{crawl_id}.log"))
    logger = get_run_logger()
    for row in summary.accounts:  # every account when few, else those with errors
        if len(summary.accounts) <= 20 or row.errors:
            logger.info(
                f"{row.source} {row.account}: {row.new} new, {row.updated} updated, "
                f"{row.unchanged} unchanged, {row.skipped} skipped, {row.errors} errors"
                + (f" (last: {row.reason})" if row.reason else "")
            )
    logger.info(summary.line())
    return summary


def collect_demo_sample(settings: Settings, sample: Path = SAMPLE) -> CrawlSummary:
    """The demo's collection step: serve the bundled real sample as a Mastodon instance on
    127.0.0.1 and crawl it with the spider into the database (labels come from the sample)."""
    from scrapers.localserver import LocalPlatforms

    posts = pl.read_parquet(sample)
    with LocalPlatforms(posts) as server:
        path = settings.state / "demo-sources.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            yaml.safe_dump({"sources": [server.source("mastodon", "demo")]}, allow_unicode=True),
            encoding="utf-8",
        )
        return crawl(db=str(settings.db), sources=str(path), scrapy_settings=LOCAL_SERVER_SETTINGS)
