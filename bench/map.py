"""The report map at scale: page size, HTML build time and browser draw time, WebGL vs SVG.

    .venv/bin/python bench/map.py [--users 1000 10000 100000] [--clusters 12]

Builds a report of synthetic users (Gaussian blobs, 10% low-confidence) with
`pipeline.report.render_html`, once with the map as it ships (WebGL `scattergl`) and once with
the same figure drawn as SVG `scatter` (the map before, the baseline). When Chromium is installed,
times a headless Chromium (software WebGL) loading each page until the map is drawn (load s:
load + parse + plot, minus an empty page's time) and the page's own time in Plotly.newPlot
(plot s).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import report  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def synthetic_report(n_users: int, n_clusters: int, seed: int = 0) -> report.ReportData:
    """`n_users` users in `n_clusters` blobs on the plane, every tenth one low-confidence."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, n_clusters, n_users)
    centres = rng.uniform(-20, 20, (n_clusters, 2))
    xy = centres[cluster] + rng.normal(0, 1.5, (n_users, 2))
    members = pl.DataFrame(
        {
            "platform": "bench",
            "user_id": [f"u{i}" for i in range(n_users)],
            "name": [f"account {i}" for i in range(n_users)],
            "known_label": None,
            "cluster_id": cluster.astype(np.int32),
            "probability": rng.uniform(0, 1, n_users),
            "is_outlier": np.arange(n_users) % 10 == 0,
            "provisional": False,
            "x": xy[:, 0],
            "y": xy[:, 1],
            "n_posts": 5,
            "reason": None,
            "person_id": [f"bench:u{i}" for i in range(n_users)],
        },
        schema_overrides={"known_label": pl.Utf8, "reason": pl.Utf8},
    )
    sizes = members.group_by("cluster_id").len("size").sort("size", descending=True)
    clusters = sizes.with_columns(
        label=pl.format("topic {} · words", pl.col("cluster_id")),
        n_outliers=pl.lit(0),
        example_users=pl.lit([], dtype=pl.List(pl.Utf8)),
        representative_posts=pl.lit([], dtype=pl.List(pl.Utf8)),
    )
    terms = pl.DataFrame(
        schema={"cluster_id": pl.Int32, "term": pl.Utf8, "weight": pl.Float64, "rank": pl.Int32}
    )
    recs = pl.DataFrame(schema={"scope": pl.Utf8, "scope_id": pl.Utf8, "rank": pl.Int32})
    run = {"run_id": f"bench-{n_users}", "status": "completed", "n_posts": 5 * n_users}
    run |= {"n_users": n_users, "n_clusters": n_clusters, "timings": {}, "settings": {}}
    run |= {"started_at": None, "finished_at": None, "data_version": None, "seconds": None}
    return report.ReportData(run, members, clusters, terms, recs)


def as_svg(figure: dict) -> dict:
    """The same figure drawn with SVG markers (plotly `scatter`): the baseline."""
    return {**figure, "data": [{**t, "type": "scatter"} for t in figure["data"]]}


def browser_seconds(page: Path, profile: Path) -> tuple[float, float | None]:
    """Wall time of headless Chromium loading `page` and running its scripts, and the time the
    page itself says plotly took to draw the map (None for a page without one)."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            CHROMIUM or "chromium",
            "--headless",
            "--no-sandbox",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-extensions",
            "--enable-unsafe-swiftshader",  # software WebGL where there is no GPU
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    seconds = time.perf_counter() - started
    drawn = re.search(r'data-draw-ms="(\d+)"', done.stdout)
    if page.stat().st_size > 1000 and (drawn is None or 'class="no-webgl"' in done.stdout):
        raise RuntimeError(f"the map in {page.name} was not drawn: {done.stderr[-500:]}")
    return seconds, int(drawn.group(1)) / 1000 if drawn else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--clusters", type=int, default=12)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tribes-map-"))
    blank = folder / "blank.html"
    blank.write_text("<!doctype html><title>blank</title>", encoding="utf-8")
    startup = browser_seconds(blank, folder / "profile")[0] if CHROMIUM else None
    print(f"chromium: {CHROMIUM or 'not installed (no draw times)'}")
    if startup is not None:
        print(f"empty page: {startup:.2f} s (subtracted below)")
    print(f"{'users':>8} {'map':>6} {'page MB':>8} {'build s':>8} {'load s':>8} {'plot s':>8}")
    for n in args.users:
        data = synthetic_report(n, args.clusters)
        figure = json.loads(report.map_figure(data).to_json())
        for kind, shown in (("svg", as_svg(figure)), ("webgl", figure)):
            started = time.perf_counter()
            html = report.render_html(data, figure=shown)
            build = time.perf_counter() - started
            page = folder / f"{kind}-{n}.html"
            page.write_text(html, encoding="utf-8")
            load = plot = "—"
            if startup is not None:
                wall, drawn = browser_seconds(page, folder / "profile")
                load, plot = f"{wall - startup:.2f}", f"{drawn:.2f}"
            size = page.stat().st_size / 1e6
            print(f"{n:>8} {kind:>6} {size:>8.1f} {build:>8.2f} {load:>8} {plot:>8}")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
