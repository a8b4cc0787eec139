"""Crawl throughput: posts per second stored into DuckDB from the local platform server.

    .venv/bin/python bench/crawl.py [--posts 20000] [--platform mastodon] [--batch 500]

Serves real posts (../shared/data/fb_pages_2016/posts.parquet when present, else the bundled
sample repeated under new account names) on 127.0.0.1, crawls them with the real spider in a
subprocess into a fresh database, and prints posts/s end to end, inside the crawl, and for the
DuckDB pipeline alone (the target is >= 2,000 posts/s, so the store is never the bottleneck).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.crawl import LOCAL_SERVER_SETTINGS, crawl_command  # noqa: E402
from pipeline import store  # noqa: E402
from scrapers.localserver import LocalPlatforms  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "fb_pages_2016" / "posts.parquet"
SAMPLE = ROOT / "data" / "sample" / "fb_pages_sample.parquet"


def real_posts(n: int) -> pl.DataFrame:
    """`n` real posts: the shared set when present, else copies of the bundled sample."""
    source = SHARED if SHARED.exists() else SAMPLE
    posts = pl.read_parquet(source).select("user_id", "user_label", "post_id", "created_at", "text")
    copies = [
        posts.with_columns(user_id=pl.col("user_id") + f"_{i}", post_id=pl.col("post_id") + f"_{i}")
        for i in range(-(-n // posts.height))
    ]
    return pl.concat(copies).head(n)


def cpu_seconds() -> float:
    """CPU time used by finished child processes (the crawl), user + system."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument(
        "--platform", default="mastodon", choices=["mastodon", "bluesky", "rss", "html"]
    )
    parser.add_argument("--batch", type=int, default=1000, help="posts per DuckDB transaction")
    args = parser.parse_args()
    posts = real_posts(args.posts)
    with tempfile.TemporaryDirectory() as tmp, LocalPlatforms(posts) as server:
        folder = Path(tmp)
        sources = folder / "sources.yaml"
        sources.write_text(yaml.safe_dump({"sources": [server.source(args.platform, "bench")]}))
        report = folder / "report.json"
        command = crawl_command(
            folder / "bench.duckdb",
            sources,
            report,
            None,
            None,
            None,
            {**LOCAL_SERVER_SETTINGS, "TRIBES_BATCH_SIZE": str(args.batch), "LOG_LEVEL": "WARNING"},
        )
        started, cpu_before = time.perf_counter(), cpu_seconds()
        subprocess.run(command, check=True, cwd=folder)
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
        stats = json.loads(report.read_text())["spiders"][0]
        with store.open(folder / "bench.duckdb") as con:
            stored = store.scalar(con, "SELECT count(*) FROM posts")
    crawl_s, store_s = stats["elapsed_time_seconds"], stats["tribes/store_seconds"]
    print(
        f"{stored} posts from {len(server.accounts)} {args.platform} accounts, "
        f"{stats['downloader/request_count']} requests, batches of {args.batch}"
    )
    load = os.getloadavg()[0]
    rows = [
        ("end to end (subprocess start to exit)", wall),
        ("inside the crawl (Scrapy's elapsed time)", crawl_s),
        ("CPU time of the crawl process", cpu),
        (f"DuckDB pipeline alone ({stats['tribes/flushes']} batches)", store_s),
    ]
    for name, seconds in rows:
        print(f"{name:<44} {seconds:6.1f} s {stored / seconds:8.0f} posts/s")
    print(f"(load average {load:.1f} on {os.cpu_count()} CPUs while measuring)")


if __name__ == "__main__":
    main()
