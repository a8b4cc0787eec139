"""People across platforms: links, per-person clusters, suggestions and forgetting, on real
DuckDB files and real refreshes of the bundled sample."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.crawl import CrawlError, record_people
from flows.imports import import_file
from flows.refresh import refresh
from pipeline import people, store
from scrapers.sources import SourcesError, load_sources

runner = CliRunner()
SUGGEST_HEADER = "platform_a,user_a,platform_b,user_b,score,evidence"


def tribes(db, *args: str):
    return runner.invoke(app, ["--db", str(db), *args])


def links(*groups: tuple[str, str, str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        groups, schema=["person_id", "platform", "user_id", "how"], orient="row"
    ).with_columns(score=pl.lit(None, pl.Float64), evidence=pl.lit("test"))


# ---------------------------------------------------------------- linking logic


def test_accounts_sharing_links_are_one_person_named_by_their_smallest_account():
    accounts = pl.DataFrame(
        {"platform": ["rss", "mastodon", "bluesky", "bluesky"], "user_id": ["x", "m", "b", "z"]}
    )
    found = people.person_of(
        accounts,
        links(
            ("jo", "rss", "x", "declared"),
            ("jo", "mastodon", "m", "declared"),
            ("pair", "mastodon", "m", "confirmed"),
            ("pair", "bluesky", "b", "confirmed"),
        ),
    )
    person = dict(zip(found["user_id"], found["person_id"], strict=True))
    assert person == {"x": "bluesky:b", "m": "bluesky:b", "b": "bluesky:b", "z": "bluesky:z"}


def test_only_declared_verified_confirmed_merge_unless_auto_link_says_so():
    stored = links(("p", "a", "1", "suggested"), ("p", "b", "1", "suggested")).with_columns(
        score=pl.lit(0.97)
    )
    assert people.merging_links(stored, None).height == 0
    assert people.merging_links(stored, 0.98).height == 0
    assert people.merging_links(stored, 0.95).height == 2


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("nocolon", "is not PLATFORM:USER"),
        (":user", "is not PLATFORM:USER"),
        ("mastodon:", "is not PLATFORM:USER"),
        ("mastodon:\x1b[31mred", "control characters"),
        ("a:" + "x" * 400, "longer than 300"),
    ],
)
def test_hostile_accounts_give_one_line_errors(tmp_path, text, problem):
    with pytest.raises(people.AccountError, match=problem):
        people.parse_account(text)
    result = tribes(tmp_path / "t.duckdb", "people", "link", text, "rss:feed")
    assert result.exit_code == 1
    assert problem in result.output and "Traceback" not in result.output
    assert "\x1b[31m" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unknown_accounts_cannot_be_linked(make_settings, sample_path):
    settings = make_settings()
    import_file(settings, str(sample_path), "facebook")
    result = tribes(settings.db, "people", "link", "facebook:arsenal", "facebook:nobody")
    assert result.exit_code == 1
    assert "no account facebook:nobody is stored" in result.output


# ---------------------------------------------------------------- clusters per person


def latest_clusters(db) -> dict[str, tuple[int, str]]:
    with store.open(db) as con:
        rows = store.frame(con, "SELECT user_id, cluster_id, person_id FROM latest_user_clusters")
    return {user: (cluster, person) for user, cluster, person in rows.iter_rows()}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_linking_two_accounts_moves_them_into_one_cluster_and_unlinking_splits_them(refreshed):
    before = latest_clusters(refreshed)
    assert all(person == f"facebook:{user}" for user, (_, person) in before.items())
    # two pages of clearly different interests, in different clusters
    first, second = "arsenal", "nytimes"
    assert before[first][0] != before[second][0]

    linked = tribes(refreshed, "people", "link", f"facebook:{first}", f"facebook:{second}")
    assert linked.exit_code == 0, linked.output
    refresh(db=str(refreshed))
    together = latest_clusters(refreshed)
    assert together[first][0] == together[second][0]
    assert together[first][1] == together[second][1] == f"facebook:{first}"
    assert len(together) == len(before)  # one row per account still
    with store.open(refreshed) as con:
        run = store.latest_run_id(con)
        sizes = store.scalar(
            con, "SELECT sum(size) FROM clusters WHERE run_id = ? AND level = 'fine'", [run]
        )
    assert sizes == len(before) - 1  # clusters count people: the two accounts are one
    listed = tribes(refreshed, "people", "list")
    assert "facebook:arsenal" in listed.output and "confirmed" in listed.output

    unlinked = tribes(refreshed, "people", "unlink", f"facebook:{first}", f"facebook:{second}")
    assert unlinked.exit_code == 0 and "never suggested again" in unlinked.output
    refresh(db=str(refreshed))
    apart = latest_clusters(refreshed)
    assert apart[first][0] != apart[second][0]
    assert apart[second][1] == f"facebook:{second}"
    assert apart == before  # the unlinked people's cached stages come back exactly


# ---------------------------------------------------------------- declared links


def test_sources_yaml_person_declares_links_and_forget_skips_accounts(make_settings, workdir):
    settings = make_settings()
    path = workdir / "sources.yaml"
    path.write_text(
        """sources:
  - name: fedi
    platform: mastodon
    api: https://mastodon.example
    accounts:
      - {handle: jo, person: Jo Doe}
      - ann
  - name: feeds
    platform: rss
    accounts:
      - {handle: "https://jo.example/feed.xml", person: Jo Doe}
forget:
  - mastodon:ann@mastodon.example
""",
        encoding="utf-8",
    )
    sources = load_sources(path)
    fedi = sources.select("fedi")[0]
    assert [a.handle for a in fedi.accounts] == ["jo"]  # ann is forgotten: never crawled
    with store.open(settings, "write"):
        pass
    record_people(settings, sources)
    record_people(settings, sources)  # idempotent
    with store.open(settings) as con:
        stored = store.read_links(con)
    assert stored.height == 2
    persons = people.person_of(stored.select("platform", "user_id"), stored)
    assert persons["person_id"].n_unique() == 1
    assert set(persons["user_id"]) == {"jo@mastodon.example", "https://jo.example/feed.xml"}


def test_hostile_person_names_and_forget_entries_are_refused(workdir):
    path = workdir / "sources.yaml"
    for bad, problem in [
        ('accounts: [{handle: jo, person: "a\\x1bb"}]', "person"),
        ("accounts: [jo]\nforget: [nocolon]", "forget"),
    ]:
        path.write_text(
            f"sources:\n  - name: f\n    platform: mastodon\n    api: https://m.example\n"
            f"    {bad}\n",
            encoding="utf-8",
        )
        with pytest.raises(SourcesError, match=problem):
            load_sources(path)


def test_import_person_col_declares_people(make_settings, workdir):
    posts = workdir / "posts.csv"
    pl.DataFrame(
        {
            "user_id": ["a1", "a1", "b1", "c1"],
            "post_id": ["1", "2", "3", "4"],
            "text": ["one", "two", "three", "four"],
            "who": ["Kim", "Kim", "Kim", ""],
        }
    ).write_csv(posts)
    db = workdir / "tribes.duckdb"
    result = tribes(
        db, "import", str(posts), "--platform", "blog", "--time-col", "", "--person-col", "who"
    )
    assert result.exit_code == 0, result.output
    listed = tribes(db, "people", "list")
    assert "blog:a1" in listed.output and "b1" in listed.output and "c1" not in listed.output
    assert "declared (import posts.csv)" in listed.output
    missing = tribes(db, "import", str(posts), "--time-col", "", "--person-col", "nope")
    assert missing.exit_code == 1 and "no column 'nope'" in missing.output


# ---------------------------------------------------------------- suggestions


def twin_accounts(sample_path, n_pages: int = 40) -> pl.DataFrame:
    """The sample's first pages, each split by alternate posts into an account on `blog` and
    one on `forum`, renamed so the twins share no name."""
    pages = pl.read_parquet(sample_path)
    chosen = sorted(pages["user_id"].unique())[:n_pages]
    posts = pages.filter(pl.col("user_id").is_in(chosen)).sort("user_id", "post_id")
    halves = people.split_in_two(posts.with_columns(platform=pl.lit("facebook")))
    return halves.with_columns(
        user_id=pl.struct("platform", "user_id").map_elements(
            lambda r: hashlib.sha1(f"{r['platform']}{r['user_id']}".encode()).hexdigest()[:10],
            return_dtype=pl.Utf8,
        ),
        platform=pl.col("platform").replace({"a": "blog", "b": "forum"}),
    )


@pytest.mark.slow
def test_suggest_finds_twins_as_csv_and_unlink_is_never_suggested_again(
    make_settings, workdir, sample_path
):
    settings = make_settings()
    accounts = twin_accounts(sample_path)
    for platform in ("blog", "forum"):
        part = workdir / f"{platform}.parquet"
        accounts.filter(pl.col("platform") == platform).drop("platform").write_parquet(part)
        import_file(settings, str(part), platform)
    twin = dict(zip(accounts["user_id"], accounts["twin"], strict=True))

    result = tribes(settings.db, "people", "suggest", "--format", "csv", "--min-score", "0.5")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == SUGGEST_HEADER
    found = pl.read_csv(result.output.encode())
    assert found.columns == SUGGEST_HEADER.split(",")
    assert found.height > 0
    assert found["score"].is_between(0.5, 1).all()
    assert found["score"].to_list() == sorted(found["score"].to_list(), reverse=True)
    assert (found["platform_a"] != found["platform_b"]).all()
    right = [twin[a] == twin[b] for a, b in zip(found["user_a"], found["user_b"], strict=True)]
    assert sum(right) / len(right) >= 0.9  # the twins, nearly only them

    top = found.row(0, named=True)
    pair = (f"{top['platform_a']}:{top['user_a']}", f"{top['platform_b']}:{top['user_b']}")
    assert tribes(settings.db, "people", "unlink", *pair).exit_code == 0
    again = tribes(settings.db, "people", "suggest", "--format", "csv", "--min-score", "0.5")
    shown = pl.read_csv(again.output.encode())
    assert (
        shown.filter(
            (pl.col("user_a") == top["user_a"]) & (pl.col("user_b") == top["user_b"])
        ).height
        == 0
    )
    assert shown.height == found.height - 1


# ---------------------------------------------------------------- forgetting


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_forget_removes_an_account_everywhere_and_refuses_it_again(refreshed, workdir, sample_path):
    settings_db = refreshed
    with store.open(settings_db) as con:
        posts_before = store.scalar(con, "SELECT count(*) FROM posts")
        own = store.scalar(con, "SELECT count(*) FROM posts WHERE user_id = 'arsenal'")
        embeddings_before = store.scalar(con, "SELECT count(*) FROM embeddings")
    assert (
        tribes(refreshed, "people", "link", "facebook:arsenal", "facebook:chelseafc").exit_code == 0
    )

    result = tribes(refreshed, "forget", "facebook:arsenal")
    assert result.exit_code == 0, result.output
    assert f"removed {own} posts" in result.output
    assert "1 links" in result.output and "1 cluster rows" in result.output
    with store.open(settings_db) as con:
        count = lambda sql: store.scalar(con, sql)  # noqa: E731
        assert count("SELECT count(*) FROM posts") == posts_before - own
        assert count("SELECT count(*) FROM posts WHERE user_id = 'arsenal'") == 0
        assert count("SELECT count(*) FROM users WHERE user_id = 'arsenal'") == 0
        assert count("SELECT count(*) FROM user_clusters WHERE user_id = 'arsenal'") == 0
        assert count("SELECT count(*) FROM people WHERE user_id = 'arsenal'") == 0
        assert count("SELECT count(*) FROM embeddings") < embeddings_before
        assert (
            count("SELECT count(*) FROM recommendations WHERE scope_id = 'facebook:arsenal'") == 0
        )

    again = tribes(refreshed, "import", str(sample_path), "--platform", "facebook")
    assert again.exit_code == 0
    assert "posts of forgotten accounts refused (facebook:arsenal)" in again.output
    with store.open(settings_db) as con:
        assert store.scalar(con, "SELECT count(*) FROM posts WHERE user_id = 'arsenal'") == 0

    sources = workdir / "sources.yaml"
    sources.write_text(
        "sources:\n  - name: pages\n    platform: rss\n    accounts: [https://a.example/f]\n",
        encoding="utf-8",
    )
    with store.open(settings_db, "write") as con:
        con.execute("INSERT INTO forgotten VALUES ('rss', 'https://a.example/f', now())")
    from pipeline.settings import load_settings

    with pytest.raises(CrawlError, match="forgotten with `tribes forget`"):
        record_people(load_settings(db=settings_db, sources=sources), load_sources(sources))
