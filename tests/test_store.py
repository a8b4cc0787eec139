import multiprocessing
from datetime import datetime

import duckdb
import numpy as np
import polars as pl
import pytest

from pipeline import store


def posts(ids, texts, user="u1"):
    return pl.DataFrame(
        {
            "platform": "x",
            "post_id": ids,
            "user_id": user,
            "created_at": [datetime(2024, 1, 1)] * len(ids),
            "text": texts,
            "url": None,
            "kind": "original",
        },
        schema_overrides={"url": pl.Utf8},
    )


def test_migrations_create_schema_once(tmp_path):
    path = tmp_path / "t.duckdb"
    with store.open(path, "write") as con:
        assert store.schema_version(con) == store.SCHEMA_VERSION
    with store.open(path, "write") as con:  # reopening applies nothing twice
        rows = con.execute("SELECT count(*) FROM schema_version").fetchall()[0][0]
        assert rows == store.SCHEMA_VERSION
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
    assert {
        "posts",
        "users",
        "embeddings",
        "runs",
        "user_clusters",
        "clusters",
        "cluster_terms",
        "latest_user_clusters",
    } <= tables


@pytest.mark.parametrize("table", [store.POSTS, store.USERS], ids=lambda t: t.name)
def test_migrations_build_the_declared_table(tmp_path, table):
    with store.open(tmp_path / "t.duckdb", "write") as con:
        built = con.execute(f"DESCRIBE {table.name}").fetchall()
    declared = [
        (
            name,
            column.sql_type,
            "NO" if column.required else "YES",
            "PRI" if column.role == "key" else None,
            f"'{column.default}'" if column.default else None,
            None,
        )
        for name, column in table.columns.items()
    ]
    assert built == declared


def test_conform_orders_types_and_fills_the_declared_columns():
    rows = pl.DataFrame({"text": ["t"], "user_id": ["u"], "post_id": ["1"], "platform": ["x"]})
    conformed = store.POSTS.conform(rows.with_columns(kind=pl.lit(None, pl.Utf8)))
    assert conformed.schema == pl.Schema(store.POSTS.given)  # declared names, order and types
    row = conformed.row(0, named=True)
    assert (row["post_id"], row["text"], row["created_at"], row["kind"]) == (
        "1",
        "t",
        None,
        "original",
    )
    with pytest.raises(pl.exceptions.ColumnNotFoundError):  # a required column is never made up
        store.POSTS.conform(rows.drop("text"))


def test_upsert_counts_and_idempotence(tmp_path):
    with store.open(tmp_path / "t.duckdb", "write") as con:
        first = store.upsert_posts(con, posts(["1", "2"], ["a", "b"]))
        again = store.upsert_posts(con, posts(["1", "2"], ["a", "b"]))
        edited = store.upsert_posts(con, posts(["1", "3"], ["a!", "c"]))
        assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)
        assert (edited.inserted, edited.updated, edited.unchanged) == (1, 1, 0)
        assert store.scalar(con, "SELECT count(*) FROM posts") == 3
        assert store.scalar(con, "SELECT text FROM posts WHERE post_id = ?", ["1"]) == "a!"


def test_data_version_tracks_content(tmp_path):
    with store.open(tmp_path / "t.duckdb", "write") as con:
        empty = store.data_version(con)
        store.upsert_posts(con, posts(["1"], ["a"]))
        one = store.data_version(con)
        store.upsert_posts(con, posts(["1"], ["a"]))
        assert store.data_version(con) == one != empty
        store.upsert_posts(con, posts(["1"], ["edited"]))
        assert store.data_version(con) != one


def test_embeddings_round_trip_and_missing(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    with store.open(tmp_path / "t.duckdb", "write") as con:
        assert store.missing_hashes(con, "m", ["h1", "h2", "h3"]) == ["h1", "h2", "h3"]
        store.insert_embeddings(con, "m", ["h1", "h2", "h3"], vectors)
        store.insert_embeddings(con, "m", ["h1"], vectors[:1])  # no error, no duplicate
        assert store.missing_hashes(con, "m", ["h3", "h4"]) == ["h4"]
        assert store.missing_hashes(con, "other-model", ["h1"]) == ["h1"]
        np.testing.assert_allclose(store.load_embeddings(con, "m", ["h3", "h1"]), vectors[[2, 0]])
        with pytest.raises(store.StoreError, match="no embedding"):
            store.load_embeddings(con, "m", ["h4"])


def one_cluster_results() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """A run's smallest results: one user in one cluster with one term."""
    members = pl.DataFrame(
        {
            "platform": ["x"],
            "user_id": ["u1"],
            "cluster_id": [0],
            "probability": [1.0],
            "is_outlier": [False],
            "x": [0.0],
            "y": [0.0],
            "n_posts": [1],
        }
    )
    clusters = pl.DataFrame(
        {
            "cluster_id": [0],
            "label": ["a"],
            "size": [1],
            "n_outliers": [0],
            "example_users": [["u1"]],
            "representative_posts": [["a"]],
        }
    )
    terms = pl.DataFrame({"cluster_id": [0], "term": ["a"], "weight": [1.0], "rank": [1]})
    return members, clusters, terms


def test_failed_run_leaves_previous_results(tmp_path):
    members, clusters, terms = one_cluster_results()
    with store.open(tmp_path / "t.duckdb", "write") as con:
        good = store.start_run(con, {}, "v1")
        store.complete_run(con, good, members, clusters, terms, {"clean": 0.1}, 1)
        bad = store.start_run(con, {}, "v2")
        with pytest.raises(duckdb.Error):  # a broken write rolls back as a whole
            store.complete_run(con, bad, members.drop("cluster_id"), clusters, terms, {}, 1)
        store.fail_run(con, bad, "boom")
        assert store.latest_run_id(con) == good
        assert store.cluster_table(con, good)["label"].to_list() == ["a"]
        assert store.scalar(con, "SELECT count(*) FROM user_clusters WHERE run_id = ?", [bad]) == 0
        statuses = dict(con.execute("SELECT run_id, status FROM runs").fetchall())
    assert statuses == {good: "completed", bad: "failed"}


def test_stored_inputs_follow_what_a_refresh_reads_and_not_the_runs(tmp_path):
    with store.open(tmp_path / "t.duckdb", "write") as con:
        store.upsert_posts(con, posts(["1", "2"], ["a", "b"]))
        con.execute("INSERT INTO users (platform, user_id, updated_at) VALUES ('x', 'u1', now())")
        seen = [store.stored_inputs_version(con)]
        run_id = store.start_run(con, {}, store.data_version(con), seen[0])
        store.complete_run(con, run_id, *one_cluster_results(), {"clean": 0.1}, 2)
        assert store.stored_inputs_version(con) == seen[0]  # a run's own rows are not inputs
        changes = (
            lambda: store.upsert_posts(con, posts(["3"], ["c"])),
            lambda: con.execute("UPDATE posts SET likes = 4 WHERE post_id = '1'"),
            lambda: con.execute("UPDATE users SET description = 'new bio'"),
            lambda: store.save_links(
                con,
                pl.DataFrame(
                    {
                        "person_id": "p1",
                        "platform": ["x", "y"],
                        "user_id": ["u1", "u9"],
                        "how": "declared",
                        "score": None,
                        "evidence": None,
                    },
                    schema_overrides={"score": pl.Float64, "evidence": pl.Utf8},
                ),
            ),
            lambda: store.replace_products(
                con,
                pl.DataFrame(
                    {
                        "product_id": ["b1"],
                        "name": ["Boots"],
                        "description": ["for hiking"],
                        "category": ["outdoor"],
                        "url": [None],
                    },
                    schema_overrides={"url": pl.Utf8},
                ),
            ),
        )
        for change in changes:
            change()
            seen.append(store.stored_inputs_version(con))
    assert len(set(seen)) == len(seen)  # each change is seen


def test_unchanged_run_is_the_latest_completed_run_with_the_same_inputs(tmp_path):
    results = one_cluster_results()
    with store.open(tmp_path / "t.duckdb", "write") as con:
        assert store.unchanged_run(con, "in1") is None  # no run yet
        first = store.start_run(con, {}, "v1", "in1")
        assert store.unchanged_run(con, "in1") is None  # still running
        store.complete_run(con, first, *results, {}, 1)
        assert store.unchanged_run(con, "in1") == first
        assert store.unchanged_run(con, "in2") is None
        failed = store.start_run(con, {}, "v1", "in2")
        store.fail_run(con, failed, "boom")
        assert store.unchanged_run(con, "in1") == first  # a failed run publishes nothing
        second = store.start_run(con, {}, "v2", "in2")
        store.complete_run(con, second, *results, {}, 1)
        assert store.unchanged_run(con, "in1") is None  # the latest results read other inputs
        assert store.unchanged_run(con, "in2") == second


def hold_lock(path, ready, release):
    con = duckdb.connect(str(path))
    ready.set()
    release.wait(30)
    con.close()


def test_locked_database_gives_one_line_error(tmp_path):
    path = tmp_path / "t.duckdb"
    with store.open(path, "write"):
        pass
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=hold_lock, args=(path, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with (
            pytest.raises(store.StoreError, match="locked by another process"),
            store.open(path, "write", wait_seconds=0.5),
        ):
            pass
    finally:
        release.set()
        holder.join(30)
    with store.open(path, "write", wait_seconds=5) as con:  # usable again once released
        assert store.schema_version(con) == store.SCHEMA_VERSION


def test_unreadable_file_is_reported(tmp_path):
    path = tmp_path / "junk.duckdb"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(store.StoreError, match="junk.duckdb"), store.open(path, "write"):
        pass
    assert path.read_bytes().startswith(b"this is not a database")
