"""Issue 16 item 1: engagement counts, kinds, languages, replies, reposts and mentions are stored
(schema, migration, upserts), imported and crawled exactly as given."""

import json
from collections.abc import Iterator
from datetime import datetime, timedelta

import duckdb
import polars as pl
import pytest
from test_crawl import crawl
from typer.testing import CliRunner

from flows.cli import app
from pipeline import store
from scrapers.localserver import LocalPlatforms
from scrapers.pipelines import typed
from scrapers.spiders.mastodon import interactions

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


# ------------------------------------------------------------------ crawls

T0 = datetime(2024, 5, 6, 9, 0)
# alice's posts as the servers serve them: (kind, likes, reposts, replies, lang, reply_to,
# repost_of, mentions); usernames: bob is on the server, carol and dave@far.example are not
SERVED = {
    "a1": ("original", 5, 2, 1, "en", None, None, ["bob", "dave@far.example"]),
    "a2": ("reply", 0, 0, 3, "de", "bob", None, []),
    "a3": ("reply", 1, 0, 0, None, "alice", None, []),  # a thread: alice answers herself
    "a4": ("repost", 40, 12, 7, "fr", None, "carol", []),
    "a5": ("photo", 9, 1, 0, "en", None, None, []),
    "a6": ("video", 8, 0, 2, "en", None, None, []),
    "a7": ("link", 3, 1, 1, "pt-BR", None, None, ["bob"]),
    "a8": ("quote", 2, 0, 0, "en", None, None, []),
}
FIELDS = ["kind", "likes", "reposts", "replies", "lang", "reply_to", "repost_of", "mentions"]


def served_posts() -> pl.DataFrame:
    alice = [
        {"user_id": "alice", "post_id": post_id, "created_at": T0 - timedelta(hours=n),
         "text": f"post {post_id}", **dict(zip(FIELDS, values, strict=True))}
        for n, (post_id, values) in enumerate(SERVED.items())
    ]  # fmt: skip
    bob = {"user_id": "bob", "post_id": "b1", "created_at": T0, "text": "bob's post"}
    return pl.DataFrame([*alice, bob | {f: None for f in FIELDS}])


@pytest.fixture
def engaged() -> Iterator[LocalPlatforms]:
    with LocalPlatforms(served_posts()) as server:
        yield server


def user_ids(server: LocalPlatforms, platform: str) -> dict[str, str]:
    """The user id each username gets on `platform` (as the spider spells them)."""
    names = ["alice", "bob", "carol", "dave@far.example"]
    if platform == "bluesky":
        return {name: server.someone(name).did for name in names}
    return {name: name if "@" in name else f"{name}@127.0.0.1" for name in names}


@pytest.mark.parametrize("platform", ["mastodon", "bluesky"])
def test_a_crawl_stores_counts_kinds_languages_replies_reposts_and_mentions_as_served(
    workdir, engaged, platform
):
    before = store.now()
    crawl(workdir, [engaged.source(platform)])
    ids = user_ids(engaged, platform)
    with store.open(workdir / "t.duckdb", "read") as con:
        texts = store.read_posts(con).select("post_id", "text")
        activity = store.read_post_activity(con).join(texts, on="post_id")
        found = store.read_mentions(con)
        seen = store.scalar(con, "SELECT min(counts_seen_at) FROM posts")
    by_text = {row["text"]: row for row in activity.iter_rows(named=True)}
    assert len(by_text) == len(SERVED) + 1  # and bob's post
    mentioned = found.group_by("post_id").agg(pl.col("mentioned").sort())
    mentioned = dict(mentioned.iter_rows())
    for post_id, served in SERVED.items():
        kind, likes, reposts, replies, lang, reply_to, repost_of, mentions = served
        row = by_text[f"post {post_id}"]
        expected = {
            "kind": kind,
            "likes": likes,
            "reposts": reposts,
            "replies": replies,
            # Bluesky gives a post's languages; Mastodon's boost shows the boosted post's
            "lang": lang,
            "reply_to": ids.get(reply_to),
            "repost_of": ids.get(repost_of),
        }
        assert {k: row[k] for k in expected} == expected, post_id
        # Mastodon's replies mention whom they answer (not a thread's own author)
        also = [ids["bob"]] if platform == "mastodon" and reply_to == "bob" else []
        want = sorted([*also, *(ids[m] for m in mentions)])
        assert mentioned.get(row["post_id"], []) == want, post_id
    assert seen >= before
    assert set(found["user_id"]) == {ids["alice"]}


# ------------------------------------------------------------------ imports

runner = CliRunner()
FACEBOOK_KINDS = {"status": "original", "link": "link", "event": "link", "photo": "photo"} | {
    "video": "video"
}


def tribes(db, *args):
    return runner.invoke(app, ["--db", str(db), *args])


def test_the_sample_imports_its_engagement_and_kinds_by_default(workdir, sample_path):
    db = workdir / "t.duckdb"
    before = store.now()
    result = tribes(db, "import", str(sample_path), "--platform", "facebook")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    with store.open(db, "read") as con:
        stored = store.read_post_activity(con)
        seen = store.scalar(con, "SELECT min(counts_seen_at) FROM posts")
    source = pl.read_parquet(sample_path).select(
        "post_id",
        likes="num_reactions",
        replies="num_comments",
        reposts="num_shares",
        kind=pl.col("status_type").replace_strict(FACEBOOK_KINDS),
    )
    expected = source.filter(pl.col("post_id").is_in(stored["post_id"].to_list())).sort("post_id")
    got = stored.select(expected.columns).sort("post_id").cast(expected.schema)
    assert got.equals(expected)
    assert stored.height == 4164 and sorted(set(got["kind"])) == [
        "link",
        "original",
        "photo",
        "video",
    ]
    assert seen >= before


def test_import_maps_named_columns_and_map_pairs(workdir):
    db = workdir / "t.duckdb"
    path = workdir / "posts.csv"
    path.write_text(
        "author,id,body,hearts,answers,shared,type,language,to,from,tags\n"
        "ann,1,hello,12,3,0,photo,en,,,@bob carol\n"
        "ann,2,again,0,1,2,Reply,pt-BR,bob,,\n"
        'bob,3,shared,,,,repost,,,ann,"ann, carol"\n',
        encoding="utf-8",
    )
    args = ["import", str(path), "--user-col", "author", "--id-col", "id", "--text-col", "body"]
    mapped = ["--likes-col", "hearts", "--replies-col", "answers", "--map", "reposts=shared"]
    more = ["--kind-col", "type", "--lang-col", "language", "--reply-to-col", "to"]
    pairs = ["--map", "repost_of=from", "--map", "mentions=tags", "--time-col", ""]
    result = tribes(db, *args, *mapped, *more, *pairs)
    assert result.exit_code == 0, result.output
    assert "3 inserted" in result.output and "warning" not in result.output
    with store.open(db, "read") as con:
        rows = store.read_post_activity(con).drop("platform", "created_at").rows()
        mentions = store.read_mentions(con).select("post_id", "user_id", "mentioned").rows()
        seen = con.execute("SELECT post_id, counts_seen_at IS NOT NULL FROM posts").fetchall()
    assert rows == [
        ("1", "ann", "photo", "en", 12, 0, 3, None, None),
        ("2", "ann", "reply", "pt-BR", 0, 2, 1, "bob", None),
        ("3", "bob", "repost", None, None, None, None, None, "ann"),
    ]
    assert mentions == [
        ("1", "ann", "bob"),
        ("1", "ann", "carol"),
        ("3", "bob", "ann"),
        ("3", "bob", "carol"),
    ]
    assert sorted(seen) == [("1", True), ("2", True), ("3", False)]  # no count: not seen


def test_hostile_values_are_stored_empty_with_one_warning_line_each(workdir):
    db = workdir / "t.duckdb"
    path = workdir / "posts.jsonl"
    rows = [
        {"likes": "-3", "kind": "banana", "lang": "<script>alert(1)</script>"},
        {"likes": "lots", "kind": "PHOTO", "lang": "en"},
        {"likes": "1.5", "kind": "video", "lang": "x" * 500},
        {"likes": "99999999999", "kind": None, "lang": None},
        {"likes": "7", "kind": "status", "lang": "de"},
    ]
    path.write_text(
        "\n".join(
            json.dumps({"user_id": "u", "post_id": str(n), "text": f"t{n}", **row})
            for n, row in enumerate(rows)
        ),
        encoding="utf-8",
    )
    result = tribes(db, "import", str(path), "--time-col", "", "--likes-col", "likes",
                    "--map", "kind=kind", "--lang-col", "lang")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "5 inserted" in result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, result.output
    assert warnings[0].startswith("warning: likes (likes): 4 values not a count")
    assert warnings[1].startswith("warning: kind (kind): 1 values not a known kind")
    assert warnings[2].startswith("warning: lang (lang): 2 values not a language tag")
    assert "Traceback" not in result.output
    with store.open(db, "read") as con:
        stored = store.read_post_activity(con).select("likes", "kind", "lang").rows()
    assert stored == [
        (None, "original", None),
        (None, "photo", "en"),
        (None, "video", None),
        (None, "original", None),
        (7, "original", "de"),
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--map", "likes"], "--map 'likes': use FIELD=COLUMN"),
        (["--map", "hearts=likes"], "with a field of: user, text"),
        (["--likes-col", "nope"], "no column 'nope'"),
        (["--map", "mentions=nope"], "pass --map mentions=NAME"),
    ],
)
def test_bad_mapping_options_give_one_line(workdir, options, message):
    path = workdir / "posts.csv"
    path.write_text("user_id,post_id,text\nu,1,hello\n", encoding="utf-8")
    result = tribes(workdir / "t.duckdb", "import", str(path), "--time-col", "", *options)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_mastodon_keeps_the_account_id_of_a_reply_it_cannot_name():
    status = {
        "in_reply_to_id": "9",
        "in_reply_to_account_id": "777",
        "mentions": [{"id": "5", "acct": "bob"}, {"id": "6", "acct": "eve@far.example"}, "junk"],
    }
    found = interactions(status, "https://social.example", own_id="1", user_id="ann@x")
    assert found == {
        "reply_to": "777",
        "mentions": ["bob@social.example", "eve@far.example"],
    }


@pytest.mark.parametrize(
    ("value", "dtype", "kept"),
    [
        (3, pl.Int32, 3),
        (-1, pl.Int32, None),
        ("3", pl.Int32, None),
        (True, pl.Int32, None),
        (2**31, pl.Int32, None),
        ({"a": 1}, pl.Utf8, None),
        (["a", 3, "", "b"], pl.List(pl.Utf8), ["a", "b"]),
        ("not a list", pl.List(pl.Utf8), []),
    ],
)
def test_crawled_values_of_the_wrong_type_are_stored_empty(value, dtype, kept):
    assert typed(value, dtype) == kept
