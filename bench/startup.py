"""Start-up cost of `tribes crawl` and of an unchanged `tribes refresh`, with Prefect's temporary
server (the baseline: PREFECT_API_URL unset), with a running Prefect server, and with that server
and the warm crawl service, as `make serve` runs them (flows/warm.py).

    .venv/bin/python bench/startup.py [--repeat 3] [--pages 40] [--posts-per-page 8] [--reuse]
        [--no-baseline]

Builds a small database of real posts (the bundled sample: `--pages` pages, `--posts-per-page`
posts each) with `tribes import` and one `tribes refresh`, serves one of its accounts as a
Mastodon account on 127.0.0.1 and crawls it once. Then it times, through the real CLI in a
subprocess, a crawl that finds nothing new (overhead = wall time minus the spider's own time), an
unchanged refresh (nothing changed since the last run: no Prefect, no new run) and a forced one
(`--force`: a new run, every stage cached), each `--repeat` times per mode. The running server is
`prefect server start` on a free port and the warm crawl service `python -m flows.warm`, both
stopped at the end. Targets with a server running: crawl overhead <= 3 s, unchanged refresh
<= 5 s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows import serve, warm  # noqa: E402
from scrapers.localserver import LocalPlatforms  # noqa: E402

SAMPLE = ROOT / "data" / "sample" / "fb_pages_sample.parquet"
SPIDER_SECONDS = re.compile(r"requests, ([0-9.]+)s\)")


def small_sample(pages: int, posts_per_page: int) -> pl.DataFrame:
    """`pages` real pages (spread over the labels) with `posts_per_page` posts each."""
    posts = pl.read_parquet(SAMPLE).sort("user_id", "post_id")
    labels = posts["user_label"].n_unique()
    chosen = (
        posts.select("user_label", "user_id")
        .unique()
        .sort("user_label", "user_id")
        .group_by("user_label", maintain_order=True)
        .head(-(-pages // labels))["user_id"]
        .head(pages)
    )
    return (
        posts.filter(pl.col("user_id").is_in(chosen.to_list()))
        .group_by("user_id", maintain_order=True)
        .head(posts_per_page)
    )


def tribes(folder: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    """Run one `tribes` command; returns (wall seconds, output). Fails loudly on exit != 0."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "--db", str(folder / "tribes.duckdb"), *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"`tribes {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr}")
    return wall, done.stdout + done.stderr


def base_env(home: Path) -> dict[str, str]:
    """The CLI's environment without a Prefect server: Prefect starts its temporary one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIBES_", "PREFECT_"))}
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "TRIBES_CRAWL_DELAY": "0",
        "TRIBES_CONTACT": "bench@localhost",
    }


def measure(folder: Path, env: dict[str, str], sources: Path, repeat: int) -> dict[str, list]:
    """Wall times of a crawl finding nothing new (and its spider's time), an unchanged refresh
    and a forced one."""
    times: dict[str, list] = {"crawl": [], "spider": [], "refresh": [], "forced": []}
    for _ in range(repeat):
        wall, output = tribes(folder, env, "crawl", "--sources", str(sources))
        times["crawl"].append(wall)
        times["spider"].append(float(SPIDER_SECONDS.search(output).group(1)))
        times["forced"].append(tribes(folder, env, "refresh", "--force")[0])
        unchanged, output = tribes(folder, env, "refresh")
        if "nothing changed since run" not in output:
            raise SystemExit(f"the refresh after a forced one was not unchanged:\n{output}")
        times["refresh"].append(unchanged)
        print(
            f"  crawl {wall:.1f} s, unchanged refresh {unchanged:.1f} s, "
            f"--force {times['forced'][-1]:.1f} s",
            flush=True,
        )
    return times


def with_warm_crawls(home: Path, port: int, action):
    """Run `action` while the warm crawl service `make serve` starts runs for this home."""
    with (home / "warm.log").open("w") as log:
        service = serve.start_warm_crawls(serve.prefect_env(home, port), home, log)
        try:
            deadline = time.monotonic() + 120
            while not warm.answering(home):
                if service.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the warm crawl service did not start: {home / 'warm.log'}")
                time.sleep(0.2)
            return action()
        finally:
            serve.stop(service)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--posts-per-page", type=int, default=8)
    parser.add_argument("--reuse", action="store_true", help="keep the last run's database")
    parser.add_argument(
        "--no-baseline", action="store_true", help="only with a running server (saves minutes)"
    )
    args = parser.parse_args()
    folder = ROOT / ".tribes" / "bench" / "startup"
    fresh = not (args.reuse and (folder / "tribes.duckdb").exists())
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    home = folder / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    posts = small_sample(args.pages, args.posts_per_page)
    posts.write_parquet(folder / "posts.parquet")
    env = base_env(home)
    one_account = posts.filter(pl.col("user_id") == posts["user_id"][0])
    results: dict[str, dict[str, list]] = {}
    with LocalPlatforms(one_account) as platforms:
        sources = folder / "sources.yaml"
        sources.write_text(yaml.safe_dump({"sources": [platforms.source("mastodon", "bench")]}))
        if fresh:
            print(f"setting up: {posts.height} posts of {args.pages} pages", flush=True)
            tribes(folder, env, "import", str(folder / "posts.parquet"), "--platform", "facebook")
            tribes(folder, env, "crawl", "--sources", str(sources))  # the local account, once
            tribes(folder, env, "refresh")
        if not args.no_baseline:
            print("temporary server (baseline):", flush=True)
            results["temporary server (baseline)"] = measure(folder, env, sources, args.repeat)
        port = serve.free_port()
        with (home / "server.log").open("w") as log:
            server = serve.start_server(serve.prefect_env(home, port), port, log)
            try:
                api_url = f"http://{serve.HOST}:{port}/api"
                serve.wait_healthy(api_url, server)
                running = {**env, "PREFECT_API_URL": api_url}
                print("running server:", flush=True)
                results["running server"] = measure(folder, running, sources, args.repeat)
                print("running server and warm crawl service (make serve):", flush=True)
                results["make serve (+ warm crawls)"] = with_warm_crawls(
                    home, port, lambda: measure(folder, running, sources, args.repeat)
                )
            finally:
                serve.stop(server)
    floor = statistics.median(tribes(folder, env, "--help")[0] for _ in range(args.repeat))
    print(f"\nmedian of {args.repeat} runs; `tribes --help` (Python + CLI start) {floor:.1f} s")
    print("load average at the end (1, 5, 15 min):", *(f"{x:.1f}" for x in os.getloadavg()))
    print(
        f"{'mode':<30}{'crawl wall':>12}{'spider':>9}{'overhead':>10}{'unchanged':>11}"
        f"{'--force':>9}"
    )
    for mode, times in results.items():
        crawl, spider = statistics.median(times["crawl"]), statistics.median(times["spider"])
        print(
            f"{mode:<30}{crawl:>11.1f}s{spider:>8.1f}s{crawl - spider:>9.1f}s"
            f"{statistics.median(times['refresh']):>10.1f}s"
            f"{statistics.median(times['forced']):>8.1f}s"
        )
    print("targets with a server running: crawl overhead <= 3 s, unchanged refresh <= 5 s")


if __name__ == "__main__":
    main()
