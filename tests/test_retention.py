"""Retention (keep_runs): old runs lose their rows and report folders, the reports folder gets an
index page, and an unchanged refresh shares the previous report instead of writing another."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from pipeline import store
from pipeline.reports_index import index_html


def results(con, run_id: str, cluster: int) -> None:
    """Complete a run with one user in cluster `cluster`, one term and one recommendation."""
    members = pl.DataFrame(
        {
            "platform": ["t"],
            "user_id": ["u1"],
            "cluster_id": [cluster],
            "probability": [1.0],
            "is_outlier": [False],
            "x": [0.0],
            "y": [0.0],
            "n_posts": [3],
        }
    )
    clusters = pl.DataFrame(
        {
            "cluster_id": [cluster],
            "label": ["l"],
            "size": [1],
            "n_outliers": [0],
            "example_users": [["u1"]],
            "representative_posts": [["p"]],
        }
    )
    terms = pl.DataFrame({"cluster_id": [cluster], "term": ["t"], "weight": [1.0], "rank": [1]})
    store.complete_run(con, run_id, members, clusters, terms, {}, 3)
    recommendation = dict(
        scope="cluster", scope_id=str(cluster), product_id="p1", score=1.0, reason="r"
    )
    store.write_recommendations(con, run_id, pl.DataFrame([{**recommendation, "rank": 1}]))


def rows_of(con, run_id: str) -> dict[str, int]:
    return {
        table: store.scalar(con, f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id])
        for table in (*store.RUN_RESULT_TABLES, "runs")
    }


def test_prune_keeps_the_newest_completed_runs_and_everything_newer(tmp_path: Path):
    with store.open(tmp_path / "t.duckdb", "write") as con:
        ids = []
        for n in range(4):
            ids.append(store.start_run(con, {}, "v1"))
            results(con, ids[-1], n)
        failed = store.start_run(con, {}, "v1")
        store.fail_run(con, failed, "boom")
        running = store.start_run(con, {}, "v1")
        before = {run_id: rows_of(con, run_id) for run_id in ids}
        assert all(before[run_id]["user_clusters"] == 1 for run_id in ids)
        assert store.prune_runs(con, 5) == []  # only four completed: nothing is older
        assert store.prune_runs(con, 2) == ids[:2]
        for old in ids[:2]:
            assert set(rows_of(con, old).values()) == {0}
        for kept in ids[2:]:
            assert rows_of(con, kept) == before[kept]  # untouched
        assert store.kept_runs(con)["run_id"].to_list() == ids[:1:-1]  # newest first
        left = store.frame(con, "SELECT run_id FROM runs")["run_id"].to_list()
        assert set(left) == {*ids[2:], failed, running}
        assert store.prune_runs(con, 2) == []  # idempotent
        assert store.prune_runs(con, 1) == [ids[2]]
        assert store.same_results(con, ids[3], ids[3])
        assert not store.same_results(con, ids[3], running)


def test_index_page_escapes_and_links_the_latest_report():
    hostile = 'x"><script>alert(1)</script>'
    runs = pl.DataFrame(
        {
            "run_id": [hostile, "20240101T000000-abcdef"],
            "finished_at": [datetime(2024, 1, 2, 3, 4, 5), datetime(2024, 1, 1)],
            "n_posts": [10, 9],
            "n_users": [4, 3],
            "n_clusters": [2, 1],
        }
    )
    page = index_html(runs, "report.html")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'id="latest" href="x%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E/report.html"' in page
    assert 'href="20240101T000000-abcdef/report.html"' in page
    assert "2024-01-02 03:04:05</td><td>10</td><td>4</td><td>2</td>" in page
    assert "http" not in page  # offline: nothing loaded from elsewhere
    assert "No report yet" in index_html(runs.clear(), "report.html")


def test_refreshes_prune_old_runs_share_an_unchanged_report_and_write_the_index(
    refreshed: Path, monkeypatch: pytest.MonkeyPatch
):
    from flows.refresh import refresh

    monkeypatch.setenv("TRIBES_KEEP_RUNS", "2")
    reports = refreshed.parent / "reports"
    with store.open(refreshed) as con:
        [first] = store.kept_runs(con)["run_id"].to_list()
    assert (reports / first / "report.html").is_file()
    second = refresh(db=str(refreshed))  # unchanged: shares the first run's report
    page, earlier = reports / second / "report.html", reports / first / "report.html"
    assert os.stat(page).st_ino == os.stat(earlier).st_ino
    assert (
        os.stat(reports / second / "map.png").st_ino == os.stat(reports / first / "map.png").st_ino
    )
    third = refresh(db=str(refreshed))  # keep_runs=2: the first run goes
    with store.open(refreshed) as con:
        assert store.kept_runs(con)["run_id"].to_list() == [third, second]
        assert set(rows_of(con, first).values()) == {0}
        assert rows_of(con, third)["user_clusters"] > 0
    assert not (reports / first).exists()
    assert page.read_bytes() == (reports / third / "report.html").read_bytes()  # whole still
    index = (reports / "index.html").read_text(encoding="utf-8")
    assert f'id="latest" href="{third}/report.html"' in index
    assert f'href="{second}/report.html"' in index and first not in index
