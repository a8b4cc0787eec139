"""Per-cluster behaviour (pipeline/behaviour.py) against small datasets with known answers."""

from __future__ import annotations

from datetime import date, datetime

import networkx as nx
import polars as pl
import pytest

from pipeline import behaviour as bh

MONDAY = datetime(2024, 1, 1, 9, 0)  # a Monday, 9:00 UTC


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
        texts, bh.count_terms(texts["text_clean"].to_list()), members_frame(), terms_frame()
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
    use = bh.cluster_term_use(texts, bh.count_terms(texts["text_clean"].to_list()), members_frame())
    zero = use.filter(pl.col("cluster_id") == 0).sort("term")
    assert zero.rows() == [
        (0, "garden", 6, 1.0),  # all three members use it
        (0, "party", 6, 1.0),
        (0, "sauce", 6, 1.0),
        (0, "tomato", 6, 1.0),
    ]
    one = use.filter(pl.col("cluster_id") == 1).sort("term")
    assert one.rows() == [(1, "garden", 1, 0.5), (1, "soup", 2, 1.0), (1, "tomato", 2, 1.0)]
    compared = bh.compare_terms(use, 0, 1, top=5)
    assert compared["shared"].select("term", "share_a", "share_b").rows() == [
        ("tomato", 1.0, 1.0),
        ("garden", 1.0, 0.5),
    ]
    assert compared["a"]["term"].to_list() == ["party", "sauce", "garden"]
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
