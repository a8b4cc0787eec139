"""How each cluster behaves: when it posts, what engages it, whom it talks to, what it talks about
over time, and how two clusters differ. Pure: frames in, frames out.

Inputs: `activity` (store.read_post_activity: platform, post_id, user_id, created_at, kind, likes,
reposts, replies, reply_to, repost_of), `mentions` (store.read_mentions: platform, post_id,
user_id, mentioned), a run's `members` (platform, user_id, cluster_id), its label terms
(cluster_id, term, weight, rank) and the cleaned posts (platform, user_id, created_at,
text_clean). Times are stored in UTC; weekdays run 1 (Monday) to 7 (Sunday), in `timezone`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from pipeline.label import LABEL_WORD, ctfidf, exclusivity
from pipeline.profile import USER_KEYS

OUTSIDE = -2  # to_cluster of an account that is not in the run (not clustered, not crawled)
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
INTERACTIONS = ("replies", "mentions", "reposts")  # columns of cluster_interactions
COUNTS = ("likes", "reposts", "replies")  # a post's engagement
TREND_TERMS = 5  # each cluster's top label terms followed month by month
MIN_BRIDGE_INTERACTIONS = 3  # a bridge has at least this many interactions with other members


def clustered_posts(activity: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """The posts of the run's members, with their cluster_id."""
    return activity.join(
        members.select(*USER_KEYS, pl.col("cluster_id").cast(pl.Int32)), on=USER_KEYS
    )


def local_times(posts: pl.DataFrame, timezone: str) -> pl.DataFrame:
    """Dated posts with the `weekday` (1 = Monday) and `hour` of `created_at` (UTC) in
    `timezone`."""
    local = pl.col("created_at").dt.replace_time_zone("UTC").dt.convert_time_zone(timezone)
    return posts.filter(pl.col("created_at").is_not_null()).with_columns(
        weekday=local.dt.weekday().cast(pl.Int8), hour=local.dt.hour().cast(pl.Int8)
    )


def cluster_activity(posts: pl.DataFrame, timezone: str) -> pl.DataFrame:
    """Posts per cluster, weekday and hour (local to `timezone`)."""
    return (
        local_times(posts, timezone)
        .group_by("cluster_id", "weekday", "hour")
        .agg(posts=pl.len().cast(pl.Int32))
        .sort("cluster_id", "weekday", "hour")
    )


def cluster_engagement(posts: pl.DataFrame) -> pl.DataFrame:
    """Per cluster and post kind: posts, and the median likes, reposts and replies of the posts
    whose counts are known."""
    return (
        posts.with_columns(pl.col("kind").fill_null("original"))
        .group_by("cluster_id", "kind")
        .agg(
            posts=pl.len().cast(pl.Int32),
            **{f"median_{n}": pl.col(n).cast(pl.Float64).median() for n in COUNTS},
        )
        .sort("cluster_id", "kind")
    )


def cluster_weekly(posts: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """Per cluster and week (its Monday, UTC): posts, members who posted, and posts per member
    (the week's posts over the cluster's size)."""
    sizes = members.group_by(pl.col("cluster_id").cast(pl.Int32)).agg(size=pl.len())
    return (
        posts.filter(pl.col("created_at").is_not_null())
        .with_columns(week=pl.col("created_at").dt.truncate("1w").dt.date())
        .group_by("cluster_id", "week")
        .agg(
            posts=pl.len().cast(pl.Int32),
            active_users=pl.struct(USER_KEYS).n_unique().cast(pl.Int32),
        )
        .join(sizes, on="cluster_id")
        .with_columns(posts_per_user=pl.col("posts") / pl.col("size"))
        .drop("size")
        .sort("cluster_id", "week")
    )


# ---------------------------------------------------------------- interactions


def interaction_edges(activity: pl.DataFrame, mentions: pl.DataFrame) -> pl.DataFrame:
    """Who replied to, mentioned or reposted whom, how often: platform, user_id (the actor),
    target (an account of the same platform), kind (a name of INTERACTIONS), count. An account
    talking to itself (a thread) is left out."""
    parts = [
        activity.select(*USER_KEYS, target=pl.col(column), kind=pl.lit(kind))
        for column, kind in (("reply_to", "replies"), ("repost_of", "reposts"))
    ]
    parts.append(mentions.select(*USER_KEYS, target=pl.col("mentioned"), kind=pl.lit("mentions")))
    return (
        pl.concat(parts)
        .filter(pl.col("target").is_not_null() & (pl.col("target") != pl.col("user_id")))
        .group_by(*USER_KEYS, "target", "kind")
        .agg(count=pl.len().cast(pl.Int32))
        .sort(*USER_KEYS, "target", "kind")
    )


def edges_between_clusters(edges: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """`edges` of the run's members with from_cluster and to_cluster (OUTSIDE for a target
    that is not a member)."""
    clusters = members.select(*USER_KEYS, pl.col("cluster_id").cast(pl.Int32))
    return (
        edges.join(clusters.rename({"cluster_id": "from_cluster"}), on=USER_KEYS)
        .join(
            clusters.rename({"user_id": "target", "cluster_id": "to_cluster"}),
            on=["platform", "target"],
            how="left",
        )
        .with_columns(pl.col("to_cluster").fill_null(OUTSIDE))
    )


def cluster_interactions(edges: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """Replies, mentions and reposts from each cluster to each cluster (or OUTSIDE)."""
    between = edges_between_clusters(edges, members)
    return (
        between.group_by("from_cluster", "to_cluster")
        .agg(
            **{
                kind: pl.col("count").filter(pl.col("kind") == kind).sum().cast(pl.Int32)
                for kind in INTERACTIONS
            }
        )
        .sort("from_cluster", "to_cluster")
    )


def pagerank(edges: pl.DataFrame) -> pl.DataFrame:
    """PageRank of every account on the directed interaction graph (edge weight: interactions
    of any kind): platform, user_id, score."""
    import networkx as nx

    graph = nx.DiGraph()
    weighted = edges.group_by(*USER_KEYS, "target").agg(pl.col("count").sum())
    for platform, source, target, count in weighted.iter_rows():
        graph.add_edge((platform, source), (platform, target), weight=count)
    scores = nx.pagerank(graph, weight="weight") if graph.number_of_nodes() else {}
    return pl.DataFrame(
        [(platform, user, score) for (platform, user), score in scores.items()],
        schema={"platform": pl.Utf8, "user_id": pl.Utf8, "score": pl.Float64},
        orient="row",
    )


def received(edges: pl.DataFrame) -> pl.DataFrame:
    """Interactions each account received: platform, user_id, interactions."""
    return (
        edges.group_by("platform", "target")
        .agg(interactions=pl.col("count").sum().cast(pl.Int32))
        .rename({"target": "user_id"})
    )


def ranked(frame: pl.DataFrame, role: str, top: int) -> pl.DataFrame:
    """The `top` rows of each cluster by score (ties by user), numbered 1.., as `role`."""
    return (
        frame.sort(["cluster_id", "score", *USER_KEYS], descending=[False, True, False, False])
        .with_columns(rank=pl.int_range(1, pl.len() + 1).over("cluster_id").cast(pl.Int32))
        .filter(pl.col("rank") <= top)
        .select(
            pl.col("cluster_id").cast(pl.Int32),
            role=pl.lit(role),
            rank="rank",
            platform="platform",
            user_id="user_id",
            score=pl.col("score").cast(pl.Float64),
            interactions=pl.col("interactions").cast(pl.Int32),
        )
    )


def central_accounts(edges: pl.DataFrame, members: pl.DataFrame, top: int) -> pl.DataFrame:
    """Per cluster, the `top` members that others interact with, by PageRank."""
    scored = (
        members.select(*USER_KEYS, "cluster_id")
        .join(received(edges), on=USER_KEYS)
        .join(pagerank(edges), on=USER_KEYS)
    )
    return ranked(scored, "central", top)


def bridge_accounts(edges: pl.DataFrame, members: pl.DataFrame, top: int) -> pl.DataFrame:
    """Per cluster, the `top` members whose interactions with other members (given and
    received, at least MIN_BRIDGE_INTERACTIONS) most often cross to another cluster; score =
    that share."""
    between = edges_between_clusters(edges, members).filter(pl.col("to_cluster") != OUTSIDE)
    given = between.select(
        *USER_KEYS, "count", crossing=pl.col("from_cluster") != pl.col("to_cluster")
    )
    taken = between.select(
        "platform",
        user_id="target",
        count="count",
        crossing=pl.col("from_cluster") != pl.col("to_cluster"),
    )
    shares = (
        pl.concat([given, taken])
        .group_by(USER_KEYS)
        .agg(
            interactions=pl.col("count").sum(),
            score=pl.col("count").filter("crossing").sum() / pl.col("count").sum(),
        )
        .filter((pl.col("interactions") >= MIN_BRIDGE_INTERACTIONS) & (pl.col("score") > 0))
        .join(members.select(*USER_KEYS, "cluster_id"), on=USER_KEYS)
    )
    return ranked(shares, "bridge", top)


# ---------------------------------------------------------------- words over time, compare


def dated_texts(cleaned: pl.DataFrame, activity: pl.DataFrame) -> pl.DataFrame:
    """The cleaned posts (platform, post_id, user_id, text_clean) with their stored
    `created_at` (a changed time changes the activity version, not the cleaned posts)."""
    return cleaned.select("platform", "post_id", "user_id", "text_clean").join(
        activity.select("platform", "post_id", "created_at"),
        on=["platform", "post_id"],
        how="left",
    )


def term_presence(texts: pl.DataFrame, vocabulary: list[str]) -> pl.DataFrame:
    """Which terms of `vocabulary` (the label step's) each text uses: text_row (row of `texts`),
    term; one row per pair. Words are found as label.terms_of finds them (LABEL_WORD on the
    lower-cased text), in polars; other terms (Chinese and Japanese) as substrings."""
    words = [term for term in vocabulary if LABEL_WORD.fullmatch(term)]
    lowered = texts.select(text=pl.col("text_clean").str.to_lowercase()).with_row_index("text_row")
    found = [
        lowered.select("text_row", term=pl.col("text").str.extract_all(LABEL_WORD.pattern))
        .explode("term")
        .filter(pl.col("term").is_in(words))
    ]
    found += [
        lowered.filter(pl.col("text").str.contains(term, literal=True)).select(
            "text_row", term=pl.lit(term)
        )
        for term in vocabulary
        if term not in words
    ]
    return pl.concat(found).unique().sort("text_row", "term")


def topic_trends(
    texts: pl.DataFrame, presence: pl.DataFrame, members: pl.DataFrame, terms: pl.DataFrame
) -> pl.DataFrame:
    """Per cluster, month (its first day) and each of its TREND_TERMS top label terms: the
    cluster's dated posts that month and the share of them using the term (`term_presence`)."""
    followed = terms.filter(pl.col("rank") <= TREND_TERMS).select(
        pl.col("cluster_id").cast(pl.Int32), "term"
    )
    posts = (
        texts.select(*USER_KEYS, "created_at")
        .with_row_index("text_row")
        .join(members.select(*USER_KEYS, pl.col("cluster_id").cast(pl.Int32)), on=USER_KEYS)
        .filter(pl.col("created_at").is_not_null())
        .with_columns(month=pl.col("created_at").dt.truncate("1mo").dt.date())
    )
    monthly = posts.group_by("cluster_id", "month").agg(posts=pl.len().cast(pl.Int32))
    using = (
        posts.join(presence, on="text_row")
        .join(followed, on=["cluster_id", "term"])
        .group_by("cluster_id", "month", "term")
        .agg(using=pl.len())
    )
    return (
        followed.join(monthly, on="cluster_id")
        .join(using, on=["cluster_id", "month", "term"], how="left")
        .select(
            "cluster_id",
            "month",
            "term",
            "posts",
            share=pl.col("using").fill_null(0) / pl.col("posts"),
        )
        .sort("cluster_id", "term", "month")
    )


def rising_terms(trends: pl.DataFrame, top: int) -> pl.DataFrame:
    """Per cluster, the `top` followed terms whose monthly share rises most: the least-squares
    slope of share over month number (share points per month), where it is positive and the
    cluster posted in at least two months."""
    month_number = pl.col("month").dt.year() * 12 + pl.col("month").dt.month()
    x = month_number - month_number.mean().over("cluster_id", "term")
    y = pl.col("share") - pl.col("share").mean().over("cluster_id", "term")
    return (
        trends.with_columns(x=x, y=y)
        .group_by("cluster_id", "term")
        .agg(
            months=pl.len(),
            rise=(pl.col("x") * pl.col("y")).sum() / (pl.col("x") ** 2).sum(),
            latest=pl.col("share").sort_by("month").last(),
        )
        .filter((pl.col("months") >= 2) & (pl.col("rise") > 0))
        .sort(["cluster_id", "rise", "term"], descending=[False, True, False])
        .group_by("cluster_id", maintain_order=True)
        .head(top)
    )


def cluster_term_use(
    texts: pl.DataFrame, presence: pl.DataFrame, members: pl.DataFrame
) -> pl.DataFrame:
    """Per cluster and label term (of any cluster) its members use: uses (posts using it) and
    users_share (the share of its posting members who use it)."""
    posts = (
        texts.select(USER_KEYS)
        .with_row_index("text_row")
        .join(members.select(*USER_KEYS, pl.col("cluster_id").cast(pl.Int32)), on=USER_KEYS)
    )
    posting = posts.group_by("cluster_id").agg(posting=pl.struct(USER_KEYS).n_unique())
    return (
        posts.join(presence, on="text_row")
        .group_by("cluster_id", "term")
        .agg(uses=pl.len().cast(pl.Int32), users=pl.struct(USER_KEYS).n_unique())
        .join(posting, on="cluster_id")
        .select("cluster_id", "term", "uses", users_share=pl.col("users") / pl.col("posting"))
        .sort("cluster_id", "term")
    )


def compare_terms(term_use: pl.DataFrame, a: int, b: int, top: int) -> dict[str, pl.DataFrame]:
    """What clusters `a` and `b` share and what sets each apart, from `cluster_term_use`.

    shared: terms both use, by the smaller of their users_share; `a` / `b`: each one's terms
    that the other uses less, by c-TF-IDF of the two clusters' term counts times the square root
    of the share of the term's uses that are its own (the label step's weighting: label.ctfidf,
    label.exclusivity). Each frame: term, share_a, share_b, weight_a, weight_b."""
    side = {
        c: term_use.filter(pl.col("cluster_id") == c).select(
            "term", pl.col("uses").alias(f"uses_{n}"), pl.col("users_share").alias(f"share_{n}")
        )
        for n, c in (("a", a), ("b", b))
    }
    pair = side[a].join(side[b], on="term", how="full", coalesce=True).fill_null(0).sort("term")
    uses = sp.csr_matrix(pair.select("uses_a", "uses_b").to_numpy().T.astype(np.float64))
    weights = ctfidf(uses).toarray() * np.sqrt(exclusivity(uses))
    table = pair.select(
        "term",
        pl.col("share_a").cast(pl.Float64),
        pl.col("share_b").cast(pl.Float64),
        weight_a=pl.Series(weights[0], dtype=pl.Float64),
        weight_b=pl.Series(weights[1], dtype=pl.Float64),
    )
    both = pl.min_horizontal("share_a", "share_b")
    return {
        "shared": table.filter(both > 0).sort([both, "term"], descending=[True, False]).head(top),
        "a": apart(table, "a", top),
        "b": apart(table, "b", top),
    }


def apart(table: pl.DataFrame, side: str, top: int) -> pl.DataFrame:
    """The `top` terms of cluster `side` ("a" or "b") by its weight that the other cluster uses
    less (or not at all)."""
    other = "b" if side == "a" else "a"
    return (
        table.filter(
            (pl.col(f"weight_{side}") > 0) & (pl.col(f"share_{side}") > pl.col(f"share_{other}"))
        )
        .sort([f"weight_{side}", "term"], descending=[True, False])
        .head(top)
    )


# ---------------------------------------------------------------- one refresh's tables


def describe_behaviour(
    activity: pl.DataFrame,
    mentions: pl.DataFrame,
    texts: pl.DataFrame,
    members: pl.DataFrame,
    terms: pl.DataFrame,
    timezone: str,
    top_accounts: int,
) -> dict[str, pl.DataFrame]:
    """Every per-cluster behaviour table of a run, by table name (see store.BEHAVIOUR_TABLES);
    `texts`: the cleaned posts with their time (`dated_texts`)."""
    posts = clustered_posts(activity, members)
    edges = interaction_edges(activity, mentions)
    presence = term_presence(texts, terms["term"].unique().sort().to_list())
    return {
        "cluster_activity": cluster_activity(posts, timezone),
        "cluster_engagement": cluster_engagement(posts),
        "cluster_weekly": cluster_weekly(posts, members),
        "cluster_topics": topic_trends(texts, presence, members, terms),
        "cluster_interactions": cluster_interactions(edges, members),
        "cluster_accounts": pl.concat(
            [
                central_accounts(edges, members, top_accounts),
                bridge_accounts(edges, members, top_accounts),
            ]
        ),
        "cluster_term_use": cluster_term_use(texts, presence, members),
    }


# ---------------------------------------------------------------- the fact sheet


def peak_times(activity: pl.DataFrame, top: int) -> pl.DataFrame:
    """A cluster's `top` weekday x hour cells by posts (ties: earlier first), with their share
    of its dated posts and the weekday's name."""
    total = max(int(activity["posts"].sum()), 1)
    return (
        activity.sort(["posts", "weekday", "hour"], descending=[True, False, False])
        .head(top)
        .with_columns(
            share=pl.col("posts") / total,
            day=pl.col("weekday").map_elements(lambda d: WEEKDAYS[d - 1], return_dtype=pl.Utf8),
        )
    )


def peak_days(activity: pl.DataFrame) -> pl.DataFrame:
    """A cluster's posts per weekday (all seven), busiest first."""
    days = pl.DataFrame({"weekday": list(range(1, 8)), "day": list(WEEKDAYS)}).cast(
        {"weekday": pl.Int8}
    )
    total = max(int(activity["posts"].sum()), 1)
    return (
        days.join(activity.group_by("weekday").agg(pl.col("posts").sum()), on="weekday", how="left")
        .with_columns(pl.col("posts").fill_null(0))
        .with_columns(share=pl.col("posts") / total)
        .sort(["posts", "weekday"], descending=[True, False])
    )


def engaging_kinds(engagement: pl.DataFrame, min_posts: int) -> tuple[pl.DataFrame, list[str]]:
    """A cluster's post kinds with at least `min_posts` posts and known counts, most engaging
    first (median likes + reposts + replies); and the kinds left out for too few posts."""
    median = pl.sum_horizontal(*(pl.col(f"median_{n}").fill_null(0) for n in COUNTS))
    counted = engagement.filter(
        pl.any_horizontal(*(pl.col(f"median_{n}").is_not_null() for n in COUNTS))
    )
    enough = counted.filter(pl.col("posts") >= min_posts)
    few = counted.filter(pl.col("posts") < min_posts)["kind"].sort().to_list()
    return (
        enough.with_columns(median_engagement=median).sort(
            ["median_engagement", "posts", "kind"], descending=[True, True, False]
        ),
        few,
    )


def fact_sheet(
    cluster_id: int,
    tables: dict[str, pl.DataFrame],
    recommendations: pl.DataFrame,
    min_kind_posts: int,
    top: int = 3,
) -> dict[str, Any]:
    """How to reach one cluster, from a run's behaviour tables (store.read_behaviour) and its
    cluster recommendations: best times and days, engaging kinds, central and bridging
    accounts, rising topics, top products."""

    def own(name: str) -> pl.DataFrame:
        table = tables[name]
        return table.filter(pl.col("cluster_id") == cluster_id)

    kinds, few = engaging_kinds(own("cluster_engagement"), min_kind_posts)
    accounts = own("cluster_accounts")
    products = recommendations.filter(
        (pl.col("scope") == "cluster") & (pl.col("scope_id") == str(cluster_id))
    ).sort("rank")
    return {
        "cluster_id": cluster_id,
        "peak_times": peak_times(own("cluster_activity"), top),
        "days": peak_days(own("cluster_activity")),
        "kinds": kinds,
        "few_kinds": few,
        "min_kind_posts": min_kind_posts,
        "central": accounts.filter(pl.col("role") == "central").sort("rank"),
        "bridges": accounts.filter(pl.col("role") == "bridge").sort("rank"),
        "rising": rising_terms(own("cluster_topics"), top),
        "products": products.head(top),
    }
