"""`tribes assign`: accounts that joined after the latest run get their nearest cluster, marked
provisional, without re-clustering; the next refresh clusters them for real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.refresh import refresh
from flows.report import write_report
from pipeline import assign as assign_step
from pipeline import recommend as rec
from pipeline import report as report_step
from pipeline import store
from pipeline.settings import load_settings

runner = CliRunner()
NEW_TOPIC = [  # an account of its own: texts no one in the sample wrote
    "Sourdough starter fed twice today, the crumb of this loaf is finally open and airy",
    "Rye flour, water and patience: my third sourdough bake this week came out perfect",
    "Tips for shaping a batard and scoring the crust before the dutch oven bake",
    "Proofing dough overnight in the fridge gives the sourdough bread a deeper flavour",
]


def test_nearest_centre_wins_and_probability_ranks_against_its_members():
    profiles = np.array([[1, 0.1, 0], [1, -0.1, 0], [1, 0, 0.3], [0, 1, 0], [0.1, 1, 0]], float)
    members = pl.DataFrame(
        {"cluster_id": [0, 0, 0, 1, 1], "is_outlier": [False, False, True, False, False]}
    )
    centres = assign_step.centroids(profiles, members)
    assert centres["cluster_id"].to_list() == [0, 1]
    np.testing.assert_allclose(centres["centroid"][0].to_numpy(), [1, 0, 0], atol=1e-6)
    # the outlier (third row) is left out: both confident members lie at cos 0.995 of the centre
    assert centres["similarities"][0].to_list() == pytest.approx([1 / np.hypot(1, 0.1)] * 21)
    users = pl.DataFrame({"platform": "t", "user_id": ["near", "far", "b"], "n_posts": [3, 3, 3]})
    places = pl.DataFrame({"cluster_id": [0, 1], "x": [0.0, 10.0], "y": [0.0, 5.0]})
    new = np.array([[1, 0, 0], [1, 0.6, 0.8], [0, 1, 0.05]], float)
    got = assign_step.assign(new, users, centres, places)
    assert got["cluster_id"].to_list() == [0, 0, 1]
    assert got["probability"][0] == 1.0  # closer to the centre than every member
    assert got["probability"][1] == 0.0 and got["is_outlier"][1]  # farther than all of them
    assert got.row(0, named=True)["x"] == pytest.approx(0.0, abs=1e-6)
    assert got.row(0, named=True)["y"] == pytest.approx(0.0, abs=1e-6)
    assert got["x"][2] == pytest.approx(10.0, abs=1e-3)  # placed at its cluster's anchor


def test_provisional_members_get_their_clusters_picks():
    cluster_recs = pl.DataFrame(
        {
            "scope": ["cluster", "cluster", "cluster"],
            "scope_id": ["0", "0", "1"],
            "product_id": ["p1", "p2", "p3"],
            "score": [0.9, 0.5, 0.7],
            "rank": [1, 2, 1],
            "reason": ["terms: a", "terms: b", "terms: c"],
        }
    )
    members = pl.DataFrame({"platform": "t", "user_id": ["u"], "cluster_id": [1]})
    got = rec.provisional_recommendations(members, cluster_recs)
    assert got.rows() == [("user", "t:u", "p3", 0.7, 1, "cluster 1's pick (provisional); terms: c")]


def stored(db, sql: str, params: list | None = None):
    with store.open(db) as con:
        return store.scalar(con, sql, params)


def test_new_accounts_get_their_cluster_provisionally_until_the_next_refresh(refreshed, tmp_path):
    settings = load_settings(db=refreshed)
    with store.open(settings) as con:
        first = store.latest_run_id(con)
        members = store.run_members(con, first)
        posts = store.read_posts(con)
    assert not members["provisional"].any()
    # the two most confident members of the two largest clusters, copied under new names
    sources = (
        members.filter(~pl.col("is_outlier"))
        .sort("probability", descending=True)
        .group_by("cluster_id", maintain_order=True)
        .head(1)
        .sort("cluster_id")
        .head(2)
    )
    copies = posts.join(sources.select("user_id", "cluster_id"), on="user_id").with_columns(
        user_id=pl.format("copy-of-{}", "user_id"), post_id=pl.format("copy-{}", "post_id")
    )
    baker = pl.DataFrame(
        {
            "post_id": [f"b{i}" for i in range(4)],
            "user_id": "baker",
            "created_at": copies["created_at"].head(4),
            "text": NEW_TOPIC,
        }
    )
    new = pl.concat([copies.select("post_id", "user_id", "created_at", "text"), baker])
    new.write_csv(tmp_path / "new.csv")
    embedded = stored(settings, "SELECT count(*) FROM embeddings")

    done = runner.invoke(
        app,
        ["--db", str(refreshed), "import", str(tmp_path / "new.csv"), "--platform", "facebook"],
    )
    assert done.exit_code == 0, done.output
    assert f"3 new accounts placed provisionally into the clusters of run {first}" in (
        " ".join(done.output.split())
    )
    with store.open(settings) as con:
        assert store.latest_run_id(con) == first  # no re-clustering
        placed = store.run_members(con, first).filter(pl.col("provisional"))
    expected = dict(sources.select(pl.format("copy-of-{}", "user_id"), "cluster_id").rows())
    got = dict(placed.select("user_id", "cluster_id").rows())
    assert {k: got[k] for k in expected} == expected  # each copy lands in its original's cluster
    assert set(got) == {*expected, "baker"}
    # only the baker's texts were new: one chunk (the copies' chunks, same posts at the same
    # times, were embedded already)
    assert stored(settings, "SELECT count(*) FROM embeddings") == embedded + 1

    again = runner.invoke(app, ["--db", str(refreshed), "assign"])  # a rerun changes nothing
    assert again.exit_code == 0, again.output
    assert stored(settings, "SELECT count(*) FROM user_clusters WHERE provisional") == 3
    shown = runner.invoke(app, ["--db", str(refreshed), "clusters"])
    assert "provisional" in shown.output
    counted = runner.invoke(app, ["--db", str(refreshed), "status"], env={"COLUMNS": "160"})
    assert "+3 provisional" in " ".join(counted.output.split())

    page = write_report(settings, first)
    html = Path(page).read_text(encoding="utf-8")
    assert report_step.PROVISIONAL.split(":")[0] in html
    assert "(provisional: joined after this run)" in html

    second = refresh(db=str(refreshed))
    with store.open(settings) as con:
        after = store.run_members(con, second)
    assert not after["provisional"].any()  # the refresh clustered them for real
    assert {*expected, "baker"} <= set(after["user_id"].to_list())
    assert stored(settings, "SELECT count(*) FROM cluster_centroids WHERE run_id = ?", [second])


def test_assign_without_a_run_is_a_clear_error(workdir):
    empty = workdir / "empty.duckdb"
    missing = runner.invoke(app, ["--db", str(empty), "assign"])
    assert missing.exit_code == 1 and "no database at" in missing.output
    with store.open(empty, "write"):  # a database with the schema and no run
        pass
    done = runner.invoke(app, ["--db", str(empty), "assign"])
    assert done.exit_code == 1
    assert "no completed run yet" in done.output
