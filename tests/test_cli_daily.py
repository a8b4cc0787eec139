"""Issue 18 (items 1, 3, 4, 11), daily use of the CLI: progress and quiet output, status,
version and help, exports, and the text a report shows (cut posts, quotes, cached time)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from flows.cli import PRODUCTS, app
from flows.console import ProgressBars
from pipeline import progress, store
from pipeline.clean import clean_text, excerpt
from pipeline.recommend import cluster_reason, user_reason
from pipeline.settings import RefreshOptions, load_settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample" / "fb_pages_sample.parquet"
STAGES = [  # the refresh stages, in run order
    *("clean", "people", "embed", "profile", "reduce", "cluster", "hierarchy", "label", "behaviour")
]


def tribes(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


class Recorder:
    """A progress display that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, key, description, total):
        self.calls.append(("start", key, description, total))

    def update(self, key, completed, total, note):
        self.calls.append(("update", key, completed, total, note))

    def finish(self, key, note):
        self.calls.append(("finish", key, note))


@pytest.fixture(scope="module")
def rerun(tmp_path_factory, refreshed_template: Path) -> Path:
    """The refreshed sample with the demo catalogue, refreshed twice more: the copy recomputes
    (the stage cache is keyed by the database's path), the last finds every stage cached."""
    from flows.recommend import import_catalogue
    from flows.refresh import refresh

    folder = tmp_path_factory.mktemp("rerun")
    shutil.copytree(refreshed_template, folder, dirs_exist_ok=True)
    settings = load_settings(db=folder / "tribes.duckdb")
    import_catalogue(settings, str(PRODUCTS))
    refresh(db=str(settings.db))
    refresh(db=str(settings.db))
    return settings.db


def runs(db: Path) -> list[dict]:
    """The runs, oldest first, as store.run_info has them."""
    with store.open(db) as con:
        ids = store.runs_table(con, 100)["run_id"].to_list()[::-1]
        return [store.run_info(con, run_id) for run_id in ids]


# ---------------------------------------------------------------- item 11: text shown


def test_excerpt_cuts_at_a_word_and_says_so() -> None:
    assert excerpt("short  text\n", 20) == "short text"
    assert excerpt("the quick brown fox jumps", 15) == "the quick…"  # not "the quick brow…"
    assert excerpt("the quick brown fox", 11) == "the quick…"  # a space at the cut
    assert excerpt("x" * 30, 10) == "x" * 9 + "…"  # one long word: cut where it must be
    for limit in range(5, 51):  # the text has 51 characters
        text = excerpt("a line of words that goes on and on for a while yet", limit)
        assert len(text) <= limit
        assert text.endswith("…") and not text[:-1].endswith(" ")


def test_reasons_never_double_a_quote() -> None:
    post = pl.read_parquet(SAMPLE).filter(pl.col("text").str.contains("The left is mad"))
    text = post["text"][0]
    assert text.startswith('"')
    for reason in (user_reason(text), cluster_reason(["politics"], text)):
        assert '""' not in reason and "“" not in reason, reason
        assert 'post: "The left is mad' in reason and reason.endswith("…")
    assert user_reason("plain words") == "post: “plain words”"
    assert user_reason('He said "no"') == 'post: “He said "no"”'  # not ...no""


def test_representative_posts_and_reasons_are_cut_at_words(rerun: Path) -> None:
    with store.open(rerun) as con:
        run_id = store.latest_run_id(con)
        clusters = store.run_clusters(con, run_id)
        reasons = store.read_recommendations(con, run_id)["reason"].to_list()
        texts = [r[0] for r in con.execute("SELECT text FROM posts").fetchall()]
    posts = [p for row in clusters["representative_posts"] for p in row]
    stored = {" ".join(clean_text(t).split()) for t in texts}
    cut = [p for p in posts if p.endswith("…")]
    assert cut and reasons, "the sample has long representative posts and recommendations"
    for post in cut:  # a post, or a piece of one over the chunk size (pipeline.clean.pieces)
        kept = post[:-1]
        assert any(kept + " " in t for t in stored), post  # ends before a space
    assert not any('""' in r for r in reasons)


def test_cached_refresh_reports_the_first_computation_time(rerun: Path) -> None:
    from flows.report import load_report_data
    from pipeline.report import refresh_time, render_html

    origin, first, second = runs(rerun)[:3]  # the template's run, the copy's, the cached one
    assert first["cached"] == [] and refresh_time(first) == f"{first['seconds']:.1f} s"
    assert second["cached"] == STAGES
    assert second["first_computed_seconds"] == origin["seconds"]  # same data and settings
    shown = f"{second['seconds']:.1f} s (cached; first computed in {origin['seconds']:.1f} s)"
    assert refresh_time(second) == shown
    with store.open(rerun) as con:
        page = render_html(load_report_data(con, second["run_id"]))
    assert f"<b>{shown}</b>refresh time" in page
    assert "embed (cached)" in page


def test_cached_time_comes_from_the_first_run_of_the_same_data_and_settings(workdir) -> None:
    from datetime import datetime, timedelta

    from pipeline.report import refresh_time

    def run(con, settings, version, started, seconds, cached):
        run_id = store.start_run(con, settings, version)
        timings = {"clean": 0.5, **({store.CACHED: cached} if cached else {})}
        con.execute(
            "UPDATE runs SET status = 'completed', started_at = ?, finished_at = ?, "
            "timings = ? WHERE run_id = ?",
            [started, started + timedelta(seconds=seconds), json.dumps(timings), run_id],
        )
        return run_id

    day = datetime(2026, 1, 1)
    with store.open(workdir / "t.duckdb", "write") as con:
        first = run(con, {"seed": 1}, "v1", day, 41.0, [])
        other = run(con, {"seed": 2}, "v1", day + timedelta(hours=1), 12.0, [])
        cached = run(con, {"seed": 1}, "v1", day + timedelta(hours=2), 3.4, STAGES)
        partly = run(con, {"seed": 1}, "v2", day + timedelta(hours=3), 9.0, ["clean"])
        infos = {r: store.run_info(con, r) for r in (first, other, cached, partly)}
    assert refresh_time(infos[first]) == "41.0 s" and infos[first]["timings"] == {"clean": 0.5}
    assert refresh_time(infos[other]) == "12.0 s"
    assert refresh_time(infos[cached]) == "3.4 s (cached; first computed in 41.0 s)"
    assert refresh_time(infos[partly]) == "9.0 s (clean cached)"  # new data: no earlier run


# ---------------------------------------------------------------- item 3: status, version, help


def test_status_run_ids_stay_whole_at_120_columns(workdir: Path) -> None:
    db = workdir / "t.duckdb"
    with store.open(db, "write") as con:
        for _ in range(3):
            failed = store.start_run(con, {}, "v")
            store.fail_run(con, failed, "a long error that would push the table wide " * 5)
    result = tribes("--db", str(db), "status", env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 120
    for run in [*runs(db)]:
        assert any(run["run_id"] in line for line in lines), (run["run_id"], result.stdout)


def test_version_db_help_and_every_refresh_option_has_help() -> None:
    from importlib.metadata import version

    assert tribes("--version").stdout.strip() == f"tribes {version('tribes')}"
    assert "TRIBES_DB" in tribes("--help", env={"COLUMNS": "200"}).stdout
    shown = " ".join(tribes("refresh", "--help", env={"COLUMNS": "200"}).stdout.split())
    for name, field in RefreshOptions.model_fields.items():
        assert f"--{name.replace('_', '-')}" in shown
        assert field.description and field.description.split(";")[0][:30] in shown, name


def test_a_refresh_option_without_description_is_refused() -> None:
    from pipeline.settings import optional

    with pytest.raises(TypeError, match="umap_min_dist needs a description"):
        optional("umap_min_dist")


# ---------------------------------------------------------------- item 4: exports


def read_back(path: Path) -> pl.DataFrame:
    return {
        ".csv": pl.read_csv,
        ".parquet": pl.read_parquet,
        ".json": pl.read_json,
    }[path.suffix](path)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_export_round_trips_every_table(rerun: Path, workdir: Path, fmt: str) -> None:
    from flows.export import EXPORTS

    out = workdir / "out"
    result = tribes("--db", str(rerun), "export", "--format", fmt, "--out", str(out))
    assert result.exit_code == 0, result.output
    names = {e.name for e in EXPORTS}
    assert {p.name for p in out.iterdir()} == {f"{n}.{fmt}" for n in names}
    with store.open(rerun) as con:
        run_id = store.latest_run_id(con)
        expected = {e.name: e.read(con, run_id) for e in EXPORTS}
    assert all(expected[name].height for name in ("users", "clusters", "terms", "recommendations"))
    for name, table in expected.items():
        got = read_back(out / f"{name}.{fmt}")
        assert got.height == table.height, name
        if table.height == 0:  # the sample has no replies, mentions or linked people
            continue
        assert got.columns == table.columns, name
        for column in table.columns:
            want = table[column]
            if isinstance(want.dtype, pl.List):
                have = [
                    None if v is None else json.loads(v) if fmt == "csv" else list(v)
                    for v in got[column]
                ]
                assert have == want.to_list(), (name, column)
            elif want.dtype.is_float():
                assert np.allclose(got[column].to_numpy(), want.to_numpy()), (name, column)
            else:
                assert got[column].cast(pl.Utf8).to_list() == want.cast(pl.Utf8).to_list(), (
                    name,
                    column,
                )
    users = read_back(out / f"users.{fmt}")
    assert {"cluster_id", "probability", "x", "y"} <= set(users.columns)
    assert {"label", "top_terms"} <= set(read_back(out / f"clusters.{fmt}").columns)


def test_export_errors_are_one_line(rerun: Path, workdir: Path) -> None:
    unknown = tribes("--db", str(rerun), "export", "--run", "nope", "--out", str(workdir / "o"))
    assert unknown.exit_code == 1 and unknown.stderr.strip().splitlines() == [
        "error: run nope is unknown or not completed (see `tribes status`)"
    ]
    fmt = tribes("--db", str(rerun), "export", "--format", "xlsx", "--out", str(workdir / "o"))
    assert fmt.exit_code == 1 and "unknown format 'xlsx'" in fmt.stderr
    assert not (workdir / "o").exists() or not any((workdir / "o").iterdir())
    locked = workdir / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        refused = tribes("--db", str(rerun), "export", "--out", str(locked))
    finally:
        locked.chmod(0o700)
    assert refused.exit_code == 1
    assert refused.stderr.strip().splitlines() == [f"error: export folder {locked} is not writable"]


# ---------------------------------------------------------------- item 1: progress, quiet output


def test_embedding_reports_texts_done_of_total(rerun: Path, workdir: Path) -> None:
    from flows.vectors import embed_missing
    from pipeline import embed
    from pipeline.clean import text_hash

    settings = load_settings(db=workdir / "t.duckdb", embed_chunk=300, batch_size=8)
    shutil.copy(rerun, settings.db)
    texts = [f"progress check number {i} about gardening" for i in range(700)]
    frame = pl.DataFrame({"text_hash": [text_hash(t) for t in texts], "text_clean": texts})
    shown, recorder = io.StringIO(), Recorder()
    with progress.showing(recorder):
        assert embed_missing(settings, frame, embed.prepare_model(settings), "posts") == 700
    done = [c[2] for c in recorder.calls if c[0] == "update" and c[1] == "texts"]
    assert done == [128, 256, 300, 428, 556, 600, 700]  # 16 batches of 8 at a time, per chunk
    assert recorder.calls[0] == ("start", "texts", "embedding posts", 700)
    assert recorder.calls[-1] == ("finish", "texts", "700 posts")
    bars = ProgressBars(Console(file=shown, force_terminal=True, width=150))
    with bars, progress.showing(bars):
        progress.start("texts", "embedding posts", 700)
        progress.advance("texts", 350, note="12 texts/s")
    assert "embedding posts" in shown.getvalue() and "350/700" in shown.getvalue()


def test_encode_in_slices_gives_the_same_vectors() -> None:
    from pipeline import embed

    model = embed.load_model(embed.model_spec(load_settings()), "cpu")
    texts = [f"sentence {i} on football and cooking" for i in range(40)]
    seen: list[int] = []
    sliced = embed.encode(model, texts, batch_size=2, on_progress=seen.append)
    assert seen == [32, 40]
    assert np.allclose(sliced, embed.encode(model, texts, batch_size=64), atol=1e-5)


def test_crawl_reports_accounts_and_posts(workdir: Path) -> None:
    from flows.crawl import run_spiders
    from scrapers.localserver import LocalPlatforms

    posts = pl.read_parquet(SAMPLE)
    users = posts["user_id"].unique(maintain_order=True).head(2).to_list()
    picked = posts.filter(pl.col("user_id").is_in(users))
    recorder = Recorder()
    with LocalPlatforms(picked) as server:
        sources = workdir / "sources.yaml"
        sources.write_text(yaml.safe_dump({"sources": [server.source("mastodon", "m")]}))
        with progress.showing(recorder):
            run_spiders.fn(
                str(workdir / "t.duckdb"),
                str(sources),
                "c1",
                str(workdir / "logs"),
                None,
                None,
                None,
                {"DOWNLOAD_DELAY": "0", "AUTOTHROTTLE_START_DELAY": "0"},
            )
    updates = [c for c in recorder.calls if c[0] == "update" and c[1] == "crawl"]
    assert updates, recorder.calls
    last = updates[-1]
    assert last[2:4] == (2, 2)  # both accounts of the source
    assert last[4].startswith(f"{picked.height} posts, ") and last[4].endswith("posts/s")
    assert recorder.calls[-1] == ("finish", "crawl", "")


def cli(db: Path, *args: str) -> subprocess.CompletedProcess:
    """The real `tribes` in a fresh process (Prefect configures its logging there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIBES_", "PREFECT_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "150",
    }
    command = [sys.executable, "-m", "flows.cli", "--db", str(db), *args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=db.parent
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


INFO_LINE = re.compile(r"\| INFO +\|")


def test_plain_output_is_the_final_lines_only(rerun: Path, workdir: Path) -> None:
    db = rerun  # in place: a copy would recompute (the stage cache is keyed by the path)
    imported = cli(db, "import", str(SAMPLE), "--platform", "facebook")
    assert imported.stderr == ""
    assert imported.stdout.startswith("fb_pages_sample.parquet: 4165 rows:")
    before = runs(db)
    unchanged = cli(db, "refresh")  # the same posts again: nothing changed, no new run
    assert unchanged.stderr == ""
    latest = before[-1]["run_id"]
    assert f"Interest clusters of run {latest}" in unchanged.stdout
    assert f"nothing changed since run {latest} (" in unchanged.stdout
    assert f"report: {db.parent.resolve() / 'reports' / latest / 'report.html'}" in unchanged.stdout
    assert runs(db) == before
    refreshed = cli(db, "refresh", "--force")
    assert not INFO_LINE.search(refreshed.stderr), refreshed.stderr
    assert not any(stage in refreshed.stderr for stage in ("embed", "cached", "✓"))
    run_id = runs(db)[-1]["run_id"]
    assert run_id != latest and len(runs(db)) == len(before) + 1
    assert f"Interest clusters of run {run_id}" in refreshed.stdout
    assert f"run {run_id}: refresh time " in refreshed.stdout
    assert "(cached; first computed in" in refreshed.stdout


def test_forced_progress_and_verbose_show_bars_and_prefect_lines(
    rerun: Path, workdir: Path
) -> None:
    db = rerun  # in place: a copy would recompute (the stage cache is keyed by the path)
    imported = cli(db, "--progress", "import", str(SAMPLE), "--platform", "facebook")
    assert "importing fb_pages_sample.parquet" in imported.stderr
    assert "4165/4165" in imported.stderr
    refreshed = cli(db, "--progress", "-v", "refresh", "--force")
    assert INFO_LINE.search(refreshed.stderr), refreshed.stderr[-2000:]
    for stage in STAGES:
        assert re.search(rf"✓ {stage} .*cached", refreshed.stderr), stage
    assert "✓ recommendations and report" in refreshed.stderr
