"""Per-cluster behaviour (pipeline/behaviour.py) against small datasets with known answers."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import networkx as nx
import polars as pl
import pytest
from test_report import chromium, needs_chromium
from typer.testing import CliRunner

from flows.cli import app
from flows.refresh import refresh
from pipeline import behaviour as bh
from pipeline import store
from pipeline.report import ReportData, render_html
from pipeline.settings import Settings, load_settings

MONDAY = datetime(2024, 1, 1, 9, 0)  # a Monday, 9:00 UTC
USER = ["platform", "user_id"]
runner = CliRunner()


def members_frame() -> pl.DataFrame:
    """Cluster 0: a1, a2, a3; cluster 1: b1, b2."""
    users = {"a1": 0, "a2": 0, "a3": 0, "b1": 1, "b2": 1}
    return pl.DataFrame(
        {"platform": ["m"] * 5, "user_id": list(users), "cluster_id": list(users.values())},
        schema_overrides={"cluster_id": pl.Int32},
    )


POSTS = [  # user, created_at (UTC), kind, likes, reposts, replies, reply_to, repost_of
    ("a1", datetime(2024, 1, 1, 9), "photo", 10, 1, 0, "b1", None),
    ("a1", datetime(2024, 1, 8, 9), "photo", 20, 3, 2, None, None),
    ("a1", datetime(2024, 1, 15, 9, 30), "photo", 30, 5, 4, None, None),
    ("a2", datetime(2024, 1, 1, 9, 10), "original", 1, 0, 0, "b1", None),
    ("a2", datetime(2024, 1, 8, 9, 59), "original", 3, 0, 1, None, None),
    ("a3", datetime(2024, 1, 2, 14), "video", 100, 9, 9, "b1", None),
    ("a3", None, "original", None, None, None, None, None),  # no time, no counts
    ("b1", datetime(2024, 1, 6, 20), "original", 5, 0, 0, "a1", None),
    ("b1", datetime(2024, 1, 13, 20), "original", 7, 0, 0, None, None),
    ("b2", datetime(2024, 1, 7, 8), "repost", 0, 0, 0, None, "a1"),
    ("b2", datetime(2024, 1, 7, 9), "reply", 2, 0, 0, "b1", None),
    ("b2", datetime(2024, 1, 7, 10), "reply", 0, 0, 0, "b2", None),  # its own thread
    ("zz", datetime(2024, 1, 7, 10), "original", 0, 0, 0, "a1", None),  # not clustered
]


def activity_frame() -> pl.DataFrame:
    rows = [("m", f"p{i}", *row) for i, row in enumerate(POSTS)]
    return pl.DataFrame(
        rows,
        schema={
            "platform": pl.Utf8,
            "post_id": pl.Utf8,
            "user_id": pl.Utf8,
            "created_at": pl.Datetime("us"),
            "kind": pl.Utf8,
            "likes": pl.Int32,
            "reposts": pl.Int32,
            "replies": pl.Int32,
            "reply_to": pl.Utf8,
            "repost_of": pl.Utf8,
        },
        orient="row",
    ).with_columns(lang=pl.lit("en"))


def mentions_frame() -> pl.DataFrame:
    """a1 mentions an account outside the data, a2 mentions a1."""
    return pl.DataFrame(
        {
            "platform": ["m", "m"],
            "post_id": ["p0", "p3"],
            "user_id": ["a1", "a2"],
            "mentioned": ["nobody", "a1"],
        }
    )


def clustered() -> pl.DataFrame:
    return bh.clustered_posts(activity_frame(), members_frame())


def test_activity_peaks_at_monday_nine_and_follows_the_time_zone():
    utc = bh.cluster_activity(clustered(), "UTC")
    zero = utc.filter(pl.col("cluster_id") == 0)
    assert zero.rows() == [(0, 1, 9, 5), (0, 2, 14, 1)]  # the undated post is not counted
    assert bh.peak_times(zero.drop("cluster_id"), 1).select("day", "hour", "posts").row(0) == (
        "Mon",
        9,
        5,
    )
    paris = bh.cluster_activity(clustered(), "Europe/Paris").filter(pl.col("cluster_id") == 0)
    assert paris.rows() == [(0, 1, 10, 5), (0, 2, 15, 1)]  # UTC+1 in January
    tokyo = bh.cluster_activity(clustered(), "Asia/Tokyo").filter(pl.col("cluster_id") == 1)
    # b1: Saturdays 20:00 UTC = Sundays 5:00 in Tokyo; b2: Sunday 8-10 UTC = 17-19
    assert tokyo.rows() == [(1, 7, 5, 2), (1, 7, 17, 1), (1, 7, 18, 1), (1, 7, 19, 1)]


def test_engagement_medians_by_kind_and_too_few_posts_left_out():
    engagement = bh.cluster_engagement(clustered())
    zero = engagement.filter(pl.col("cluster_id") == 0)
    assert zero.rows() == [
        (0, "original", 3, 2.0, 0.0, 0.5),  # a3's post without counts is counted, not in medians
        (0, "photo", 3, 20.0, 3.0, 2.0),
        (0, "video", 1, 100.0, 9.0, 9.0),
    ]
    kinds, few = bh.engaging_kinds(zero, min_posts=2)
    assert kinds["kind"].to_list() == ["photo", "original"]
    assert kinds["median_engagement"].to_list() == [25.0, 2.5]
    assert few == ["video"]


def test_posts_per_user_per_week():
    weekly = bh.cluster_weekly(clustered(), members_frame())
    zero = weekly.filter(pl.col("cluster_id") == 0)
    assert zero.rows() == [
        (0, date(2024, 1, 1), 3, 3, 1.0),
        (0, date(2024, 1, 8), 2, 2, 2 / 3),
        (0, date(2024, 1, 15), 1, 1, 1 / 3),
    ]
    one = weekly.filter(pl.col("cluster_id") == 1)
    assert one.rows() == [(1, date(2024, 1, 1), 4, 2, 2.0), (1, date(2024, 1, 8), 1, 1, 0.5)]


def edges() -> pl.DataFrame:
    return bh.interaction_edges(activity_frame(), mentions_frame())


def test_interaction_matrix_between_clusters_and_outside():
    matrix = bh.cluster_interactions(edges(), members_frame())
    assert matrix.rows() == [  # from, to, replies, mentions, reposts
        (0, bh.OUTSIDE, 0, 1, 0),
        (0, 0, 0, 1, 0),
        (0, 1, 3, 0, 0),
        (1, 0, 1, 0, 1),
        (1, 1, 1, 0, 0),  # b2's reply to itself is not an interaction
    ]


def test_pagerank_order_and_central_accounts():
    scores = bh.pagerank(edges())
    assert scores["score"].sum() == pytest.approx(1.0)
    order = scores.sort("score", descending=True)["user_id"].to_list()
    # b1 gets 4 replies, but gives all its weight to a1 (its one reply), who gets 3 more
    assert order[:2] == ["a1", "b1"]
    central = bh.central_accounts(edges(), members_frame(), top=5)
    assert central.select("cluster_id", "rank", "user_id", "interactions").rows() == [
        (0, 1, "a1", 4),  # b1's reply, a2's mention, b2's repost, zz's reply
        (1, 1, "b1", 4),
    ]


def test_pagerank_of_a_star():
    """Three fans reply to a hub, which replies to one of them: hub, that fan, the others."""
    star = pl.DataFrame(
        {
            "platform": ["m"] * 4,
            "user_id": ["f1", "f2", "f3", "hub"],
            "target": ["hub", "hub", "hub", "f1"],
            "kind": ["replies"] * 4,
            "count": [1, 1, 1, 1],
        }
    )
    scores = dict(bh.pagerank(star).select("user_id", "score").rows())
    assert scores["hub"] > scores["f1"] > scores["f2"] == pytest.approx(scores["f3"])
    expected = nx.pagerank(nx.DiGraph([("f1", "hub"), ("f2", "hub"), ("f3", "hub"), ("hub", "f1")]))
    assert scores == pytest.approx(expected)


def test_bridges_are_members_whose_interactions_cross_clusters():
    bridges = bh.bridge_accounts(edges(), members_frame(), top=5)
    assert bridges.select("cluster_id", "user_id", "score", "interactions").rows() == [
        (0, "a1", 0.75, 4),  # to b1, from b1 and b2 cross; a2's mention does not
        (1, "b1", 0.8, 5),  # from a1, a2, a3 and to a1 cross; b2's reply does not
    ]


def texts_frame() -> pl.DataFrame:
    """Cluster 0 talks ever more of gardens (1, 2, 3 of 4 posts a month), ever less of tomatoes."""
    rows = []
    for month, gardens in ((1, 1), (2, 2), (3, 3)):
        for i in range(4):
            text = "garden party" if i < gardens else "tomato sauce"
            rows.append(("m", f"a{i % 3 + 1}", datetime(2024, month, 5 + i), text))
    rows.append(("m", "b1", datetime(2024, 1, 5), "tomato soup garden"))
    rows.append(("m", "b2", datetime(2024, 2, 5), "tomato soup"))
    return pl.DataFrame(
        rows, schema=["platform", "user_id", "created_at", "text_clean"], orient="row"
    )


def terms_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "cluster_id": [0, 0, 1],
            "term": ["garden", "tomato", "soup"],
            "weight": [1.0, 0.5, 1.0],
            "rank": [1, 2, 1],
        },
        schema_overrides={"cluster_id": pl.Int32, "rank": pl.Int32},
    )


def test_topics_over_time_and_rising_terms():
    texts = texts_frame()
    trends = bh.topic_trends(
        texts, bh.term_presence(texts, ["garden", "soup", "tomato"]), members_frame(), terms_frame()
    )
    garden = trends.filter((pl.col("cluster_id") == 0) & (pl.col("term") == "garden"))
    assert garden["share"].to_list() == [0.25, 0.5, 0.75]
    assert garden["posts"].to_list() == [4, 4, 4]
    soup = trends.filter(pl.col("cluster_id") == 1)
    assert soup.select("month", "share").rows() == [
        (date(2024, 1, 1), 1.0),
        (date(2024, 2, 1), 1.0),
    ]
    rising = bh.rising_terms(trends, top=3)
    assert rising.select("cluster_id", "term", "rise", "latest").rows() == [
        (0, "garden", 0.25, 0.75)  # tomato falls, soup stays flat: neither rises
    ]


def test_compare_shares_and_sets_apart():
    texts = texts_frame()
    presence = bh.term_presence(texts, ["garden", "party", "soup", "tomato"])
    assert presence.filter(pl.col("text_row") == 12)["term"].to_list() == [
        "garden",
        "soup",
        "tomato",
    ]  # b1's "tomato soup garden"
    use = bh.cluster_term_use(texts, presence, members_frame())
    zero = use.filter(pl.col("cluster_id") == 0).sort("term")
    assert zero.rows() == [
        (0, "garden", 6, 1.0),  # in 6 posts; all three members use it
        (0, "party", 6, 1.0),
        (0, "tomato", 6, 1.0),
    ]
    one = use.filter(pl.col("cluster_id") == 1).sort("term")
    assert one.rows() == [(1, "garden", 1, 0.5), (1, "soup", 2, 1.0), (1, "tomato", 2, 1.0)]
    compared = bh.compare_terms(use, 0, 1, top=5)
    assert compared["shared"].select("term", "share_a", "share_b").rows() == [
        ("tomato", 1.0, 1.0),
        ("garden", 1.0, 0.5),
    ]
    assert compared["a"]["term"].to_list() == ["party", "garden"]  # B never says party
    assert compared["b"]["term"].to_list() == ["soup"]


def test_fact_sheet_of_a_cluster():
    texts = texts_frame()
    tables = bh.describe_behaviour(
        activity_frame(), mentions_frame(), texts, members_frame(), terms_frame(), "UTC", 5
    )
    recs = pl.DataFrame(
        {
            "scope": ["cluster", "cluster", "user"],
            "scope_id": ["0", "1", "m:a1"],
            "rank": [1, 1, 1],
            "name": ["Seeds", "Pots", "Rake"],
        }
    )
    sheet = bh.fact_sheet(0, tables, recs, min_kind_posts=2)
    assert sheet["peak_times"].select("day", "hour", "posts").row(0) == ("Mon", 9, 5)
    assert sheet["peak_times"]["share"][0] == pytest.approx(5 / 6)  # 5 of 6 dated posts
    assert sheet["days"].select("day", "posts").rows()[:2] == [("Mon", 5), ("Tue", 1)]
    assert sheet["kinds"]["kind"].to_list() == ["photo", "original"]
    assert sheet["few_kinds"] == ["video"]
    assert sheet["central"]["user_id"].to_list() == ["a1"]
    assert sheet["bridges"]["user_id"].to_list() == ["a1"]
    assert sheet["rising"]["term"].to_list() == ["garden"]
    assert sheet["products"]["name"].to_list() == ["Seeds"]


# ---------------------------------------------------------------- the refresh stores them


@dataclass(frozen=True)
class Behaving:
    settings: Settings
    run_id: str
    hub: str  # the account every other one replies to


def known_activity(posts: pl.DataFrame, hub: str, photo_likes: int) -> pl.DataFrame:
    """Every post at 9:00 UTC on a Monday, each account's a week apart in their stored order (so
    its profile chunks, packed oldest first, stay as embedded); even rows photos with
    `photo_likes` likes, odd rows originals with 2; each account's first post replies to `hub`."""
    nth = pl.int_range(pl.len()).over("user_id")
    return (
        posts.sort("user_id", "created_at", "post_id", nulls_last=True)
        .with_row_index("i")
        .select(
            "platform",
            "post_id",
            "user_id",
            "text",
            created_at=pl.lit(MONDAY) + pl.duration(weeks=nth),
            kind=pl.when(pl.col("i") % 2 == 0).then(pl.lit("photo")).otherwise(pl.lit("original")),
            likes=pl.when(pl.col("i") % 2 == 0).then(photo_likes).otherwise(2).cast(pl.Int32),
            reply_to=pl.when(nth == 0).then(pl.lit(hub)).otherwise(None),
        )
    )


def set_activity(settings: Settings, hub: str | None, photo_likes: int) -> str:
    """Give the stored posts known times, kinds, likes and replies to `hub` (default: the
    account with most posts); returns the hub."""
    with store.open(settings, "write") as con:
        posts = store.frame(con, "SELECT platform, post_id, user_id, text, created_at FROM posts")
        hub = hub or posts["user_id"].value_counts(sort=True)["user_id"][0]
        store.upsert_posts(con, known_activity(posts, hub, photo_likes))
    return hub


@pytest.fixture(scope="module")
def behaving(
    prefect_harness: None, refreshed_template: Path, tmp_path_factory: pytest.TempPathFactory
):
    folder = tmp_path_factory.mktemp("behaving")
    shutil.copytree(refreshed_template, folder, dirs_exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        settings = load_settings(db=folder / "tribes.duckdb")
        hub = set_activity(settings, None, photo_likes=10)
        yield Behaving(settings, refresh(db=str(settings.db)), hub)


def stored(settings: Settings, run_id: str) -> dict[str, pl.DataFrame]:
    with store.open(settings) as con:
        return store.read_behaviour(con, run_id) | {"members": store.run_members(con, run_id)}


@pytest.mark.slow
def test_refresh_stores_each_clusters_activity_engagement_and_interactions(behaving):
    tables = stored(behaving.settings, behaving.run_id)
    members = tables["members"]
    with store.open(behaving.settings) as con:
        posts = store.read_post_activity(con)
    clustered = posts.join(members.select("platform", "user_id", "cluster_id"), on=USER)
    activity = tables["cluster_activity"]
    assert set(activity.select("weekday", "hour").rows()) == {(1, 9)}  # Mondays at 9:00 only
    per_cluster = clustered.group_by("cluster_id").len().sort("cluster_id").rows()
    assert activity.select("cluster_id", "posts").sort("cluster_id").rows() == per_cluster
    engagement = tables["cluster_engagement"]
    assert set(engagement.select("kind", "median_likes").rows()) == {("photo", 10), ("original", 2)}
    assert engagement["posts"].sum() == clustered.height
    hub_cluster = members.filter(pl.col("user_id") == behaving.hub)["cluster_id"].item()
    matrix = tables["cluster_interactions"]
    assert matrix["to_cluster"].unique().to_list() == [hub_cluster]
    assert matrix["replies"].sum() == members.height - 1  # every member but the hub, once
    assert matrix["mentions"].sum() == matrix["reposts"].sum() == 0
    central = tables["cluster_accounts"].filter(
        (pl.col("role") == "central") & (pl.col("cluster_id") == hub_cluster)
    )
    assert central.row(0, named=True)["user_id"] == behaving.hub
    every_other_account = posts["user_id"].n_unique() - 1
    assert central.row(0, named=True)["interactions"] == every_other_account


@pytest.mark.slow
def test_a_changed_count_recomputes_behaviour_without_embedding_again(behaving):
    settings = behaving.settings  # the same database: stage artifacts are named by its path

    def artifacts(stage: str) -> int:
        return len(list(settings.cache_dir.glob(f"{stage}-*.parquet")))

    with store.open(settings) as con:
        vectors = store.scalar(con, "SELECT count(*) FROM embeddings")
    before = {stage: artifacts(stage) for stage in ("embed", "cluster", "behaviour")}
    set_activity(settings, behaving.hub, photo_likes=40)
    run_id = refresh(db=str(settings.db))
    with store.open(settings) as con:
        assert store.scalar(con, "SELECT count(*) FROM embeddings") == vectors
    after = {stage: artifacts(stage) for stage in ("embed", "cluster", "behaviour")}
    assert after == {**before, "behaviour": before["behaviour"] + 1}  # only behaviour reran
    engagement = stored(settings, run_id)["cluster_engagement"]
    assert set(engagement.select("kind", "median_likes").rows()) == {("photo", 40), ("original", 2)}


# ---------------------------------------------------------------- the report section

HOSTILE = "<img src=x onerror=\"document.body.setAttribute('data-pwned','yes')\">"


def report_data() -> ReportData:
    """The small dataset's run as a report: b1's display name and cluster 1's label are hostile."""
    texts = texts_frame()
    members = members_frame().with_columns(
        name=pl.when(pl.col("user_id") == "b1").then(pl.lit(HOSTILE)).otherwise("user_id"),
        known_label=pl.lit(None, pl.Utf8),
        probability=pl.lit(1.0),
        is_outlier=pl.lit(False),
        provisional=pl.lit(False),
        x=pl.col("cluster_id").cast(pl.Float64),
        y=pl.lit(0.0),
        n_posts=pl.lit(2),
    )
    return ReportData(
        run={
            "run_id": "r1",
            "status": "completed",
            "started_at": MONDAY,
            "finished_at": MONDAY,
            "data_version": "v",
            "settings": {},
            "timings": {},
            "n_posts": 13,
            "n_users": 5,
            "n_clusters": 2,
            "seconds": 1.0,
        },
        members=members,
        clusters=pl.DataFrame(
            {
                "cluster_id": [0, 1],
                "label": ["garden · party", f"soup {HOSTILE}"],
                "size": [3, 2],
                "n_outliers": [0, 0],
                "example_users": [["a1"], ["b1"]],
                "representative_posts": [["garden party"], ["tomato soup"]],
            },
            schema_overrides={"cluster_id": pl.Int32},
        ),
        terms=terms_frame(),
        recommendations=pl.DataFrame(
            {
                "scope": ["cluster"],
                "scope_id": ["0"],
                "rank": [1],
                "name": ["Seeds"],
                "score": [0.9],
                "reason": [""],
                "product_id": ["s"],
                "description": [""],
                "category": [""],
                "url": [None],
            },
            schema_overrides={"url": pl.Utf8},
        ),
        behaviour=bh.describe_behaviour(
            activity_frame(), mentions_frame(), texts, members_frame(), terms_frame(), "UTC", 5
        ),
        min_kind_posts=2,
    )


def test_report_section_shows_each_clusters_facts_escaped():
    page = render_html(report_data())
    reach = page[page.index('id="reach-0"') : page.index('id="reach-1"')]
    assert "<b>Mon 09:00</b> (5 posts, 83%)" in reach  # 5 of cluster 0's 6 dated posts
    assert "Most engaging: <b>photo</b> (median 25 likes + reposts + replies over 3 posts)" in reach
    assert "Too few posts to rank: video." in reach
    assert ">garden</li>" in reach  # rising
    assert ">Seeds</li>" in reach
    assert "Compared with its nearest cluster" in reach
    assert HOSTILE not in page
    assert "&lt;img src=x onerror" in page
    assert 'id="heat-0"' in page and 'id="kinds-0"' in page and 'id="interactions"' in page


def test_report_without_behaviour_tables_has_no_section():
    data = report_data()
    page = render_html(ReportData(**{**data.__dict__, "behaviour": None}))
    assert 'id="reach"' not in page


@needs_chromium
def test_chromium_draws_the_heatmaps_engagement_and_interaction_charts(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_html(report_data()), encoding="utf-8")
    dom = chromium(page, tmp_path, "--dump-dom")
    for chart in ("heat-0", "heat-1", "kinds-0", "kinds-1", "interactions"):
        drawn = dom[dom.index(f'id="{chart}"') :][:5000]
        assert 'class="main-svg"' in drawn, chart  # plotly.js drew it, offline
    assert not re.search(r"<body[^>]*data-pwned", dom)


# ---------------------------------------------------------------- tribes cluster / compare


@pytest.fixture
def small_run(make_settings) -> Settings:
    """A real database holding the small dataset's run, its behaviour tables and a product."""
    settings = make_settings()
    data = report_data()
    with store.open(settings, "write") as con:
        run_id = store.start_run(con, settings.analysis_fingerprint(), "v")
        store.complete_run(
            con,
            run_id,
            data.members.select(
                "platform",
                "user_id",
                "cluster_id",
                "probability",
                "is_outlier",
                "x",
                "y",
                "n_posts",
            ),
            data.clusters,
            data.terms,
            {},
            13,
            behaviour=data.behaviour,
        )
        store.write_recommendations(
            con,
            run_id,
            pl.DataFrame(
                {
                    "scope": "cluster",
                    "scope_id": "0",
                    "product_id": "Seeds",
                    "score": 0.9,
                    "rank": 1,
                    "reason": "",
                }
            ),
        )
    return settings


def cli(settings: Settings, *args: str):
    done = runner.invoke(
        app,
        ["--db", str(settings.db), *args],
        env={"COLUMNS": "200", "TRIBES_MIN_KIND_POSTS": "2"},
    )
    return done.exit_code, " ".join(done.output.split())  # one line, single spaces


def test_cli_cluster_prints_the_fact_sheet(small_run):
    code, out = cli(small_run, "cluster", "0")
    assert code == 0, out
    assert "cluster 0 · garden · party (3 users)" in out
    assert "times in UTC" in out
    assert "Best times to post: Mon 09:00 (5 posts, 83%), Tue 14:00 (1 posts, 17%)" in out
    assert "Busiest days: Mon 83%, Tue 17%" in out
    assert "│ photo │ 3 │ 20 │ 3 │ 2 │" in out  # median likes, reposts, replies
    assert "│ original │ 3 │ 2 │ 0 │ 0.5 │" in out
    assert out.index("│ photo") < out.index("│ original")  # most engaging first
    assert "left out, fewer than 2 posts: video" in out
    rank = bh.pagerank(edges()).filter(pl.col("user_id") == "a1")["score"].item()
    assert f"│ a1 │ {rank:.3f} │ 4 │" in out  # central: PageRank, interactions received
    assert "│ a1 │ 75% │ 4 │" in out  # bridge: 3 of its 4 interactions cross clusters
    assert "│ garden │ +25.0 pts/month │ 75% │" in out
    assert "│ 1 │ Seeds │ 0.90 │" in out


def test_cli_compare_prints_shared_terms_differences_and_behaviour(small_run):
    code, out = cli(small_run, "compare", "0", "1")
    assert code == 0, out
    shared = out[out.index("Shared interests") : out.index("What sets A apart")]
    assert "│ tomato │ 100% │ 100% │" in shared and "│ garden │ 100% │ 50% │" in shared
    apart_a = out[out.index("What sets A apart") : out.index("What sets B apart")]
    assert "│ garden │ 100% │ 50% │" in apart_a and "│ soup │" not in apart_a
    apart_b = out[out.index("What sets B apart") : out.index("Behaviour")]
    assert "│ soup │ 0% │ 100% │" in apart_b
    assert "│ peak hour (UTC) │ Mon 09:00 │ Sat 20:00 │" in out
    assert "│ busiest day │ Mon │ Sun │" in out
    assert "│ posts per member per week │ 0.67 │ 1.25 │" in out
    assert "│ A → B: replies / mentions / reposts │ 3 / 0 / 0 │" in out
    assert "│ B → A: replies / mentions / reposts │ 1 / 0 / 1 │" in out


def test_cli_cluster_and_compare_errors_are_one_line(small_run):
    code, out = cli(small_run, "cluster", "7")
    assert code == 1 and "has no cluster 7 (its clusters: 0, 1)" in out and "Traceback" not in out
    code, out = cli(small_run, "compare", "1", "1")
    assert code == 1 and "compare two different clusters" in out
    empty = load_settings(db=small_run.db.with_name("empty.duckdb"))
    with store.open(empty, "write"):
        pass
    code, out = cli(empty, "cluster", "0")
    assert code == 1 and "no completed run yet" in out
