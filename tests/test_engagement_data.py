"""Issue 16 item 1: engagement counts, kinds, languages, replies, reposts and mentions are stored
(schema, migration, upserts), imported and crawled exactly as given."""

from datetime import datetime

import duckdb
import polars as pl
import pytest

from pipeline import store

SEEN = datetime(2024, 3, 1, 12, 0)


def posts(ids, user="u1", **columns):
    """Posts of `user` with the given extra columns (one value per post, or one for all)."""
    rows = {"platform": "x", "post_id": ids, "user_id": user, "text": [f"t{i}" for i in ids]}
    return pl.DataFrame({**rows, **columns}).with_columns(
        pl.col(c).cast(store.POSTS.given[c]) for c in columns
    )


def mentions(pairs, user="u1"):
    return pl.DataFrame(
        [("x", post_id, user, mentioned) for post_id, mentioned in pairs],
        schema=store.MENTIONS,
        orient="row",
    )


def version5_database(path):
    """A database as Tribes wrote it before this change (schema v5), with three posts."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
    for version, statements in enumerate(store.MIGRATIONS[:5], start=1):
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, SEEN])
    con.execute(
        """INSERT INTO posts (platform, post_id, user_id, text, kind, inserted_at, updated_at, lang)
        VALUES ('x', '1', 'u', 'a', 'post', ?, ?, 'en'), ('x', '2', 'u', 'b', 'boost', ?, ?, NULL),
               ('x', '3', 'u', 'c', 'reply', ?, ?, 'de')""",
        [SEEN] * 6,
    )
    con.close()


def test_a_version_5_database_keeps_its_posts_and_maps_the_old_kinds(tmp_path):
    path = tmp_path / "old.duckdb"
    version5_database(path)
    with store.open(path, "read") as con:  # a reader upgrades it first
        assert store.schema_version(con) == store.SCHEMA_VERSION
        activity = store.read_post_activity(con)
        assert store.read_posts(con)["text"].to_list() == ["a", "b", "c"]
        assert store.read_mentions(con).height == 0
    assert activity["kind"].to_list() == ["original", "repost", "reply"]
    assert activity["lang"].to_list() == ["en", None, "de"]
    assert activity.select("likes", "reposts", "replies", "reply_to", "repost_of").null_count().row(
        0
    ) == (3, 3, 3, 3, 3)


def test_counts_replace_the_stored_ones_without_making_the_post_updated(tmp_path):
    with store.open(tmp_path / "t.duckdb", "write") as con:
        store.upsert_posts(con, posts(["1"], likes=[3], reposts=[1], counts_seen_at=[SEEN]))
        version, activity = store.data_version(con), store.activity_version(con)
        later = datetime(2024, 3, 2)
        again = store.upsert_posts(con, posts(["1"], likes=[7], counts_seen_at=[later]))
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, 1)
        row = store.read_post_activity(con).row(0, named=True)
        assert (row["likes"], row["reposts"], row["replies"]) == (7, 1, None)  # reposts kept
        assert store.scalar(con, "SELECT counts_seen_at FROM posts") == later
        assert store.scalar(con, "SELECT updated_at = inserted_at FROM posts")
        assert store.data_version(con) == version  # the embeddings stay valid
        assert store.activity_version(con) != activity  # the activity stats do not
        without = store.upsert_posts(con, posts(["1"]))  # a source without counts keeps them
        assert without.unchanged == 1
        assert store.scalar(con, "SELECT likes FROM posts") == 7


def test_a_changed_kind_updates_the_post(tmp_path):
    with store.open(tmp_path / "t.duckdb", "write") as con:
        store.upsert_posts(con, posts(["1"], kind=["photo"]))
        edited = store.upsert_posts(con, posts(["1"], kind=["video"]))
        assert edited.updated == 1
        assert store.read_post_activity(con)["kind"].to_list() == ["video"]


def test_mentions_are_replaced_with_their_post_and_refused_with_it(tmp_path):
    with store.open(tmp_path / "t.duckdb", "write") as con:
        store.upsert_posts(con, posts(["1", "2"]), mentions=mentions([("1", "a"), ("1", "b")]))
        first = store.activity_version(con)
        store.upsert_posts(con, posts(["1"]), mentions=mentions([("1", "c")]))
        assert store.read_mentions(con).rows() == [("x", "1", "u1", "c")]
        assert store.activity_version(con) != first
        store.upsert_posts(con, posts(["1"]))  # no mention data given: the stored ones stay
        assert store.read_mentions(con).height == 1
        thief = store.upsert_posts(
            con, posts(["1", "3"], user="u2"), mentions=mentions([("1", "z"), ("3", "y")], "u2")
        )
        assert thief.refused["post_id"].to_list() == ["1"]
        assert store.read_mentions(con).rows() == [("x", "1", "u1", "c"), ("x", "3", "u2", "y")]
        store.upsert_posts(con, posts(["1"]), mentions=mentions([]))  # the edit dropped them
        assert store.read_mentions(con).rows() == [("x", "3", "u2", "y")]


def test_activity_read_gives_the_declared_columns(tmp_path):
    with store.open(tmp_path / "t.duckdb", "write") as con:
        store.upsert_posts(
            con,
            posts(
                ["1"], kind=["reply"], lang=["fr"], replies=[2], reply_to=["v"], repost_of=[None]
            ),
        )
        row = store.read_post_activity(con).row(0, named=True)
    assert row == {
        "platform": "x",
        "post_id": "1",
        "user_id": "u1",
        "created_at": None,
        "kind": "reply",
        "lang": "fr",
        "likes": None,
        "reposts": None,
        "replies": 2,
        "reply_to": "v",
        "repost_of": None,
    }


@pytest.mark.parametrize("kind", store.KINDS)
def test_every_kind_is_stored_as_given(tmp_path, kind):
    with store.open(tmp_path / "t.duckdb", "write") as con:
        store.upsert_posts(con, posts(["1"], kind=[kind]))
        assert store.scalar(con, "SELECT kind FROM posts") == kind
