"""The run report, opened from disk in a real headless Chromium, with hostile crawled text."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape as html_escape
from html import unescape
from pathlib import Path
from urllib.parse import quote

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.imports import import_file
from flows.recommend import import_catalogue
from flows.refresh import refresh
from flows.report import load_report_data, write_report
from pipeline import report as report_step
from pipeline import store
from pipeline.ingest import ColumnMap
from pipeline.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "data" / "sample" / "products.csv"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's `chromium` is not installed (apt-get install -y chromium; .ci/run does it)",
)
HOSTILE_NAME = "</script><script>document.title='pwned-by-name'</script>"
PAYLOAD = (
    "<script>document.title='pwned-by-post'</script>"
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','yes')\">"
)
HOSTILE_POSTS = [
    f"Match day! {PAYLOAD} Come on you Reds, what a goal",
    f"Derby win {PAYLOAD} the league title race is on",
    f"Champions League final {PAYLOAD} tonight, football fans unite",
    f"New home kit {PAYLOAD} out now in the club shop",
]
runner = CliRunner()


@dataclass(frozen=True)
class Reported:
    settings: Settings
    run_id: str
    page: Path


@pytest.fixture(scope="module")
def reported(
    refreshed_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reported]:
    """The refreshed sample plus the demo catalogue and a page whose name and posts carry
    script injections, refreshed again by the real flow (which writes the report)."""
    folder = tmp_path_factory.mktemp("reported")
    shutil.copytree(refreshed_template, folder, dirs_exist_ok=True)
    hostile = folder / "hostile.csv"
    pl.DataFrame(
        {
            "post_id": [f"h{i}" for i in range(len(HOSTILE_POSTS))],
            "user_id": "intruder",
            "name": HOSTILE_NAME,
            "text": HOSTILE_POSTS,
        }
    ).write_csv(hostile)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        settings = load_settings(db=folder / "tribes.duckdb")
        import_catalogue(settings, str(CATALOGUE))
        import_file(settings, str(hostile), "facebook", ColumnMap(time=None, name="name"))
        run_id = refresh(db=str(settings.db))
        yield Reported(settings, run_id, settings.reports_dir / run_id / "report.html")


def chromium(page: Path, tmp: Path, *args: str, fragment: str = "") -> str:
    """Run headless Chromium on a file (plus a `#fragment`) with the network parts off and
    software WebGL on; returns stdout."""
    done = subprocess.run(
        [
            CHROMIUM or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--enable-unsafe-swiftshader",
            f"--user-data-dir={tmp / 'profile'}",
            "--virtual-time-budget=10000",
            *args,
            page.resolve().as_uri() + fragment,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def clusters_of(settings: Settings, run_id: str) -> list[int]:
    with store.open(settings) as con:
        return store.run_clusters(con, run_id)["cluster_id"].to_list()


def test_refresh_writes_report_and_map_for_its_run(reported):
    assert reported.page.is_file()
    png = reported.page.with_name("map.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    html = reported.page.read_text(encoding="utf-8")
    for cluster_id in clusters_of(reported.settings, reported.run_id):
        assert f'id="cluster-{cluster_id}"' in html
    with store.open(reported.settings) as con:
        timings = store.run_info(con, reported.run_id)["timings"]
    assert {"clean", "embed", "label", "recommend"} <= set(timings)


def test_report_is_self_contained(reported):
    html = reported.page.read_text(encoding="utf-8")
    assert not re.search(r"<(script|img|iframe|link)\b[^>]*\b(src|href)\s*=", html, re.I)
    assert "@import" not in html and "url(http" not in html
    assert "default-src 'none'" in unescape(html)  # CSP: nothing fetched, only our scripts run
    assert html.count("<script>") == 3  # the plotly.js bundle, the map, the behaviour charts


def test_hostile_text_is_escaped_everywhere(reported):
    html = reported.page.read_text(encoding="utf-8")
    assert "intruder" in html or "&lt;/script&gt;&lt;script&gt;" in html
    for raw in ("<script>document", "<img src=x", "</script><script>"):
        assert raw not in html, raw
    assert "&lt;script&gt;document.title=&#39;pwned-by-post&#39;" in html  # shown as text
    # map hover text: HTML-escaped for plotly, then JSON-escaped inside <script>
    assert "\\u0026lt;/script\\u0026gt;\\u0026lt;script\\u0026gt;document.title" in html


@needs_chromium
def test_chromium_renders_every_section_and_the_map_and_runs_no_injected_script(reported, tmp_path):
    dom = chromium(reported.page, tmp_path, "--dump-dom")
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title and title.group(1).startswith("Tribes report · run"), title
    assert "pwned" not in (title.group(1) if title else "")
    assert not re.search(r"<body[^>]*data-pwned", dom)  # neither onerror nor <script> ran
    assert not re.search(r"<img[^>]*src=\"?x", dom)
    assert "&lt;script&gt;document.title='pwned-by-post'&lt;/script&gt;" in dom  # text node
    for cluster_id in clusters_of(reported.settings, reported.run_id):
        assert re.search(rf'<section class="card cluster" id="cluster-{cluster_id}"', dom)
    map_div = dom[dom.index('id="map"') :]
    assert 'class="main-svg"' in map_div[:20_000]  # plotly.js ran offline and drew the map
    assert "gl-canvas-context" in map_div and 'class="no-webgl"' not in map_div  # WebGL points


@needs_chromium
def test_chromium_map_has_one_legend_with_low_confidence_explained(reported, tmp_path):
    dom = chromium(reported.page, tmp_path, "--dump-dom")
    with store.open(reported.settings) as con:
        data = load_report_data(con, reported.run_id)
    assert data.members["is_outlier"].any()  # the sample has low-confidence users to explain
    map_div = dom[dom.index('id="map"') :]
    map_div = map_div[: map_div.index("<section")]  # the map alone, not the charts after it
    assert re.search(r'<div[^>]*id="map"[^>]*data-drawn="\d+"', dom)  # drawn before load ended
    legend = [unescape(t) for t in re.findall(r'class="legendtext"[^>]*>([^<]*)<', map_div)]
    sizes = data.members.group_by("cluster_id").agg(
        pl.len().alias("size"), (~pl.col("is_outlier")).sum().alias("confident")
    )
    shown = {
        f"{c}: {report_step.label_of(data.clusters, c)} ({size})"
        for c, size, confident in sizes.iter_rows()
        if confident
    }
    assert set(legend) == shown | {report_step.LOW_CONFIDENCE}
    assert len(legend) == len(shown) + 1  # one legend: each cluster once, low confidence once
    assert map_div.count('class="legend"') == 1
    assert map_div.count('class="annotation"') == len(shown)  # one label per cluster


@needs_chromium
def test_chromium_map_search_finds_an_account_and_shows_hostile_names_as_text(reported, tmp_path):
    dom = chromium(
        reported.page,
        tmp_path,
        "--dump-dom",
        fragment="#search=" + quote("</script><script>document.title='pwned-by-NAME"),
    )
    assert 'data-matches="1"' in dom
    found = re.search(r'<output id="map-found"[^>]*>(.*?)</output>', dom, re.S)
    assert found and unescape(found.group(1)) == f"1 account matches: {HOSTILE_NAME}"
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title and "pwned" not in title.group(1)  # the name was shown, never run
    none = chromium(reported.page, tmp_path, "--dump-dom", fragment="#search=zzqx")
    assert 'data-matches="0"' in none and "no account matches" in none


@needs_chromium
def test_chromium_screenshot_shows_the_report(reported, tmp_path):
    shot = tmp_path / "report.png"
    chromium(
        reported.page,
        tmp_path,
        "--hide-scrollbars",
        "--window-size=1280,2400",
        f"--screenshot={shot}",
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    background = np.array([0xF6, 0xF8, 0xFA]) / 255
    assert (np.abs(pixels - background).sum(axis=2) > 0.05).mean() > 0.3  # cards, text, map
    blue = np.abs(pixels - np.array([0x00, 0x72, 0xB2]) / 255).sum(axis=2) < 0.08
    assert blue.sum() > 500  # the largest cluster's colour: map markers and term bars


def test_report_shows_changes_recommendations_and_run_details(reported):
    with store.open(reported.settings) as con:
        data = load_report_data(con, reported.run_id)
    assert data.previous_run_id is not None
    changes = data.changes()
    joined = [name for c in changes.by_cluster.values() for name, _ in c.joined]
    assert HOSTILE_NAME in joined  # the new page shows up as having joined a cluster
    html = reported.page.read_text(encoding="utf-8")
    assert "new in the data" in html and "Continues" in html
    assert "Recommended products" in html and "Strikeforce Pro Match Football" in html
    for key in ("profile_method", "min_posts_per_user", "recommend_top"):
        assert f"<code>{key}</code>" in html
    assert "Timings" in html and ">recommend<" in html


def test_cli_report_for_a_run_into_a_folder_and_errors(reported, tmp_path):
    out = tmp_path / "out"
    shown = runner.invoke(
        app,
        ["--db", str(reported.settings.db), "report", "--run", reported.run_id, "--out", str(out)],
    )
    assert shown.exit_code == 0, shown.output
    assert str(out / "report.html") in shown.output.replace("\n", "")
    assert (out / "report.html").is_file() and (out / "map.png").is_file()
    bad = runner.invoke(app, ["--db", str(reported.settings.db), "report", "--run", "nope"])
    assert bad.exit_code == 1 and "no run 'nope'" in bad.output


def test_report_of_a_database_without_runs_is_a_clear_error(workdir):
    settings = load_settings(db=workdir / "empty.duckdb")
    with store.open(settings, "write"):
        pass  # a database without runs
    with pytest.raises(store.StoreError, match="no completed run yet"):
        write_report(settings)


def test_script_json_cannot_close_the_script_element():
    text = str(report_step.script_json({"name": "</script><!--<script>alert(1)&\u2028"}))
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert text.startswith('{"name": "\\u003c/script\\u003e')


def test_map_labels_at_the_same_spot_are_moved_apart():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.report import spread_labels

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        box = {"boxstyle": "round,pad=0.3"}
        labels = [
            ax.annotate(t, (0.5, 0.5), xytext=(0, 7), textcoords="offset points", bbox=box)
            for t in ("love · happy · thank", "god · india · life", "game · nba")
        ]
        far = ax.annotate("far away", (0.1, 0.9), xytext=(0, 7), textcoords="offset points")
        spread_labels(fig, [*labels, far])
        renderer = fig.canvas.get_renderer()
        boxes = [a.get_window_extent(renderer) for a in labels]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        assert far.xyann == (0, 7)  # a label with room stays where it was
    finally:
        plt.close(fig)


def test_a_lone_member_far_up_does_not_carry_the_label_away():
    members = pl.DataFrame(
        {
            "cluster_id": [0] * 8 + [1] * 3,
            "x": [0.0, 1, 2, 3, 4, 5, 6, 3] + [10.0, 11, 12],
            "y": [0.0, 1, 0, 1, 0, 1, 0, 40] + [5.0, 6, 99],
            "is_outlier": [False] * 10 + [True],  # cluster 1's far member is an outlier
        }
    )
    anchors = dict(report_step.label_anchors(members).select("cluster_id", "y").iter_rows())
    assert 1 <= anchors[0] < 10  # above most members, far below the one at 40
    assert anchors[1] == pytest.approx(5.85)  # outliers do not count


def test_map_draws_webgl_points_each_user_once_with_hostile_names_escaped():
    members = pl.DataFrame(
        {
            "platform": "t",
            "user_id": ["a", "b", "c", "d", "e"],
            "name": ["Ann", HOSTILE_NAME, "Cy", "Di", "Ed"],
            "known_label": [None, "<b>x</b>", None, None, None],
            "cluster_id": [0, 0, 0, 1, 1],
            "is_outlier": [False, False, True, False, True],
            "provisional": [False, False, False, False, True],
            "probability": [0.9, 0.8, 0.1, 0.9, 0.02],
            "x": [0.0, 1, 2, 10, 11],
            "y": [0.0, 1, 0, 5, 6],
        }
    )
    clusters = pl.DataFrame({"cluster_id": [0, 1], "label": ["<i>one</i>", "two"]})
    terms = pl.DataFrame({"cluster_id": [0], "term": ["<script>"], "weight": [1.0], "rank": [1]})
    data = report_step.ReportData({}, members, clusters, terms, pl.DataFrame())
    traces = report_step.map_figure(data).to_plotly_json()["data"]
    assert {t["type"] for t in traces} == {"scattergl"}
    names = {t["name"]: [c[0] for c in t["customdata"]] for t in traces}
    assert names == {
        "0: &lt;i&gt;one&lt;/i&gt; (3)": ["Ann", html_escape(HOSTILE_NAME)],
        "1: two (1)": ["Di"],
        report_step.LOW_CONFIDENCE: ["Cy"],
        report_step.PROVISIONAL: ["Ed"],
    }
    text = json.dumps(traces)
    assert "<script>" not in text and "<i>" not in text and "<b>x" not in text
    low, provisional = traces[-2:]
    assert low["marker"]["color"] == [report_step.PALETTE[0]]
    assert provisional["marker"]["color"] == [report_step.PALETTE[1]]
    assert provisional["marker"]["symbol"] == "diamond-open"
