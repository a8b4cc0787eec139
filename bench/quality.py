"""Quality bench: Tribes' user clusters vs known labels, against the study's method and BERTopic.

    .venv/bin/python bench/quality.py                 # every labelled set found
    .venv/bin/python bench/quality.py --sets fb_pages --seeds 1 --no-bertopic
    .venv/bin/python bench/quality.py --protocol      # every set, one summary table
    .venv/bin/python bench/quality.py --sets sample --behaviour-weight 0.1 0.25

`--behaviour-weight W ...` adds a row per weight: Tribes with `behaviour_weight` W (posting
rhythm, post kinds and interactions beside the words, pipeline/signals.py). The sets carry what
their data has: the pages' times and `status_type` (as kinds), the tweets' @mentions (no times).

The protocol (`PROTOCOL`) adds real labelled users of varied shapes cut from the same data:
~2,000 / 300 / 30 users, 3 / 9 / 34 labels, short posts (tweets, one or four languages) and long
ones (page posts joined). Every default is decided on all sets together, never on one.

Each set is imported into its own DuckDB file under .tribes/bench/ (so embeddings are computed
once), Tribes' refresh flow runs exactly as `tribes refresh` does, and the baselines reuse the
same stored post embeddings. Prints one markdown table per set.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".tribes" / "bench" / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from flows.evaluate import (  # noqa: E402
    SEEDS,
    Scores,
    cleaned_posts,
    evaluate_plain,
    evaluate_study,
    evaluate_tribes,
    score_grouping,
)
from flows.vectors import stored_vectors  # noqa: E402
from pipeline import store  # noqa: E402
from pipeline.clean import HANDLE  # noqa: E402
from pipeline.ingest import kind_values  # noqa: E402
from pipeline.settings import Settings, load_settings  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
BENCH = ROOT / ".tribes" / "bench"


# ---------------------------------------------------------------- labelled sets


def fb_pages(
    label_col: str, path: Path = SHARED / "fb_pages_2016" / "posts.parquet"
) -> pl.DataFrame:
    """The Facebook pages set: 139 pages, up to 300 posts each."""
    return pl.read_parquet(path).select(
        "user_id", "post_id", "created_at", "text", "status_type", pl.col(label_col).alias("label")
    )


def fb_pages_largest_categories(k: int = 3) -> pl.DataFrame:
    """The pages of the `k` most common categories only: few, coarse interests."""
    pages = fb_pages("user_label")
    sizes = pages.group_by("label").agg(pl.col("user_id").n_unique().alias("n"))
    largest = sizes.sort(["n", "label"], descending=[True, False]).head(k)["label"]
    return pages.filter(pl.col("label").is_in(largest.implode()))


def fb_pages_other_posts(per_page: int = 300, min_posts: int = 20) -> pl.DataFrame:
    """Held-out text of the same pages: posts of `posts_all.parquet` NOT in `posts.parquet`, at
    most `per_page` per page (smallest md5 of user_id|post_id), pages with `min_posts` or more."""
    folder = SHARED / "fb_pages_2016"
    seen = pl.read_parquet(folder / "posts.parquet", columns=["user_id", "post_id"])
    rest = pl.read_parquet(folder / "posts_all.parquet").join(
        seen, on=["user_id", "post_id"], how="anti"
    )
    order = [
        hashlib.md5(f"{u}|{p}".encode()).hexdigest()
        for u, p in rest.select("user_id", "post_id").iter_rows()
    ]
    picked = (
        rest.with_columns(order=pl.Series(order))
        .sort("order")
        .group_by("user_id", maintain_order=True)
        .head(per_page)
        .filter(pl.len().over("user_id") >= min_posts)
    )
    return picked.select(
        "user_id",
        "post_id",
        "created_at",
        "text",
        "status_type",
        pl.col("user_label").alias("label"),
    )


def tweet_users(chunk: int = 20, seed: int = 0, languages: tuple[str, ...] = ()) -> pl.DataFrame:
    """Pseudo-users from tweet_topic_xl: single-topic tweets grouped by (topic, language),
    shuffled with a fixed seed and cut into users of `chunk` to 2 × `chunk` - 1 tweets; the label
    is the topic. `languages`: only tweets in these (default: all four)."""
    tweets = pl.read_parquet(SHARED / "tweet_topic_xl" / "posts.parquet")
    if languages:
        tweets = tweets.filter(pl.col("lang").is_in(list(languages)))
    topics = [
        c
        for c in tweets.columns
        if c not in {"user_id", "user_label", "post_id", "created_at", "text", "topics", "lang"}
    ]
    single = tweets.filter(pl.sum_horizontal(topics) == 1).with_columns(
        label=pl.concat_list([pl.when(pl.col(t) == 1).then(pl.lit(t)) for t in topics])
        .list.drop_nulls()
        .list.first()
    )
    rng = np.random.default_rng(seed)
    parts = []
    for (topic, lang), group in single.group_by("label", "lang", maintain_order=True):
        if group.height < chunk:
            continue
        order = rng.permutation(group.height)
        owner = np.empty(group.height, dtype=int)
        for i, piece in enumerate(np.array_split(order, group.height // chunk)):
            owner[piece] = i
        parts.append(group.with_columns(user_id=pl.Series([f"{topic}-{lang}-{i}" for i in owner])))
    return pl.concat(parts).select(
        "user_id",
        "post_id",
        "created_at",
        "text",
        pl.lit(None, pl.Utf8).alias("status_type"),
        "label",
    )


def md5_order(frame: pl.DataFrame, *columns: str) -> pl.Series:
    """A fixed pseudo-random order of the rows: the md5 of their `columns` joined by '|'."""
    keys = frame.select(pl.concat_str([pl.col(c).cast(pl.Utf8) for c in columns], separator="|"))
    return pl.Series([hashlib.md5(k.encode()).hexdigest() for k in keys.to_series()])


def page_users(
    users_per_page: int,
    posts_per_user: int,
    label_col: str = "user_label",
    categories: int | None = None,
    pages_per_label: int | None = None,
    join: int = 1,
) -> pl.DataFrame:
    """Pseudo-users cut from the pages' 233k posts (`posts_all.parquet`): each page's posts in
    md5 order, `join` of them concatenated into one (long) post, `posts_per_user` such posts per
    user, at most `users_per_page` users per page; optionally only the `categories` largest
    categories and `pages_per_label` pages of each (by md5 of the page). Label: `label_col`."""
    posts = pl.read_parquet(SHARED / "fb_pages_2016" / "posts_all.parquet").filter(
        pl.col("text").str.strip_chars().str.len_chars() > 0
    )
    if categories:
        largest = posts.group_by("user_label").agg(pl.col("user_id").n_unique().alias("n"))
        keep = largest.sort(["n", "user_label"], descending=[True, False]).head(categories)
        posts = posts.filter(pl.col("user_label").is_in(keep["user_label"].implode()))
    if pages_per_label:
        pages = posts.select("user_id", "user_label").unique()
        pages = pages.with_columns(order=md5_order(pages, "user_id")).sort("order")
        chosen = pages.group_by("user_label", maintain_order=True).head(pages_per_label)
        posts = posts.filter(pl.col("user_id").is_in(chosen["user_id"].implode()))
    span = join * posts_per_user
    ranked = (
        posts.with_columns(order=md5_order(posts, "user_id", "post_id"))
        .sort("order")
        .with_columns(rank=pl.int_range(pl.len()).over("user_id"))
        .with_columns(member=pl.col("rank") // span, piece=pl.col("rank") // join)
        .filter(pl.col("member") < users_per_page)
        .filter(pl.len().over("user_id", "member") == span)  # only whole users
    )
    return (
        ranked.group_by("user_id", "member", "piece", maintain_order=True)
        .agg(
            pl.col("post_id").first(),
            pl.col("created_at").min(),
            pl.col("text").str.join("\n\n"),
            pl.col("status_type").first(),
            pl.col(label_col).first().alias("label"),
        )
        .with_columns(user_id=pl.format("{}~{}", "user_id", "member"))
        .select("user_id", "post_id", "created_at", "text", "status_type", "label")
    )


PROTOCOL = {  # the generalisation protocol: real labelled users of varied shapes
    # ~2,000 users of 10 short posts (each page cut into up to 15 users): 9 and 34 labels
    "pages_2000_users": lambda: page_users(15, 10),
    "pages_2000_users_fine": lambda: page_users(15, 10, "user_label_fine"),
    # 3 labels: ~300 users (3 per page) and 30 users (10 pages per label, one user each)
    "pages_300_users_3_labels": lambda: page_users(3, 10, categories=3),
    "pages_30_users_3_labels": lambda: page_users(1, 20, categories=3, pages_per_label=10),
    # long posts: 10 page posts joined into one, 6 per user, 4 users per page; 9 and 34 labels
    "pages_long_posts": lambda: page_users(4, 6, join=10),
    "pages_long_posts_fine": lambda: page_users(4, 6, "user_label_fine", join=10),
    # short posts: tweet users of 5 tweets in four languages, and of 4 English tweets
    "tweets_short_multilingual": lambda: tweet_users(chunk=5),
    "tweets_short_english": lambda: tweet_users(chunk=4, languages=("en",)),
}


def available_sets() -> dict[str, callable]:
    sample = ROOT / "data" / "sample" / "fb_pages_sample.parquet"
    sets = {"sample": lambda: fb_pages("user_label", sample)}
    if (SHARED / "fb_pages_2016" / "posts.parquet").exists():
        sets["fb_pages"] = lambda: fb_pages("user_label")
        sets["fb_pages_fine"] = lambda: fb_pages("user_label_fine")
        sets["fb_pages_3_largest_categories"] = fb_pages_largest_categories
    if (SHARED / "fb_pages_2016" / "posts_all.parquet").exists():
        sets["fb_pages_other_posts"] = fb_pages_other_posts
    if (SHARED / "tweet_topic_xl" / "posts.parquet").exists():
        sets["tweet_topic_users"] = tweet_users
    if (SHARED / "fb_pages_2016" / "posts_all.parquet").exists() and "tweet_topic_users" in sets:
        sets |= PROTOCOL
    return sets


def loaded_sets(names: list[str] | None = None) -> Iterator[tuple[str, Settings, dict[str, str]]]:
    """Each chosen labelled set (default: every one found) in its bench database: its name, the
    settings that open it, and the known label of each user."""
    sets = available_sets()
    for name in names or list(sets):
        posts = sets[name]()
        truth = dict(posts.select("user_id", "label").unique().iter_rows())
        yield name, load_into_db(name, posts), truth


def text_mentions(posts: pl.DataFrame) -> pl.DataFrame:
    """The accounts each post's text names as @handles (store.MENTIONS; the tweets have some)."""
    handles = pl.col("text").str.extract_all(HANDLE)
    names = handles.list.eval(pl.element().str.replace(r"^[^@]*@", "").str.to_lowercase())
    return (
        posts.select("platform", "post_id", "user_id", mentioned=names)
        .explode("mentioned")
        .drop_nulls("mentioned")
        .unique(maintain_order=True)
    )


def load_into_db(name: str, posts: pl.DataFrame):
    """A bench database holding exactly this set's posts, with their kinds (`status_type`) and
    mentions (re-runs reuse its embeddings)."""
    settings = load_settings(db=BENCH / name.removesuffix("_fine") / "tribes.duckdb")
    frame = posts.with_columns(
        platform=pl.lit("bench"),
        url=pl.lit(None, pl.Utf8),
        kind=kind_values(pl.col("status_type")).fill_null("original"),
        created_at=pl.col("created_at").cast(pl.Datetime),
    )
    with store.open(settings, "write") as con:
        con.register("bench_posts", frame)
        con.execute("DELETE FROM posts WHERE post_id NOT IN (SELECT post_id FROM bench_posts)")
        con.unregister("bench_posts")
        store.upsert_posts(con, frame, mentions=text_mentions(frame))
        store.upsert_users(con, frame.group_by("platform", "user_id").agg(pl.col("label").first()))
    return settings


# ---------------------------------------------------------------- baselines


def stored_post_vectors(settings) -> tuple[pl.DataFrame, np.ndarray]:
    """Every cleaned post and its own vector (Tribes embeds chunks; BERTopic needs posts)."""
    posts = cleaned_posts(settings)
    return posts, stored_vectors(settings, posts["text_clean"].to_list(), "single posts")


def bertopic_params(n_posts: int) -> dict[str, dict[str, Any]]:
    """The BERTopic baseline's UMAP and HDBSCAN: BERTopic's defaults, min_cluster_size scaled
    to the posts."""
    return {
        "umap": {"n_neighbors": 15, "n_components": 5, "min_dist": 0.0},
        "hdbscan": {"min_cluster_size": max(10, n_posts // 1000), "prediction_data": True},
    }


def topic_mix_groups(
    user_of_post: list[str], topics: list[int], k: int, seed: int
) -> tuple[list[str], np.ndarray]:
    """Each user's mix of BERTopic topics (outliers one more topic) grouped by KMeans into `k`
    groups; returns (users, group per user)."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import normalize

    frame = pl.DataFrame({"user_id": user_of_post, "topic": np.asarray(topics) + 1})
    users = sorted(frame["user_id"].unique().to_list())
    row = {u: i for i, u in enumerate(users)}
    mix = np.zeros((len(users), int(frame["topic"].max()) + 1))
    np.add.at(mix, (frame["user_id"].replace_strict(row).to_numpy(), frame["topic"].to_numpy()), 1)
    found = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(normalize(mix))
    return users, found


def bertopic_baseline(
    posts: pl.DataFrame, vectors: np.ndarray, known: dict[str, str], seed: int
) -> Scores:
    """BERTopic fitted on the posts; users = topic mix; KMeans with the true number of labels."""
    from bertopic import BERTopic
    from hdbscan import HDBSCAN
    from umap import UMAP

    params = bertopic_params(len(posts))
    model = BERTopic(
        umap_model=UMAP(**params["umap"], metric="cosine", random_state=seed),
        hdbscan_model=HDBSCAN(**params["hdbscan"]),
        calculate_probabilities=False,
    )
    topics, _ = model.fit_transform(posts["text_clean"].to_list(), embeddings=vectors)
    k = len({known[u] for u in posts["user_id"].unique()})
    users, found = topic_mix_groups(posts["user_id"].to_list(), topics, k, seed)
    method = f"BERTopic topic mix → KMeans (true k={k})"
    scores = score_grouping(method, users, [found], known, posts)
    scores.seed_ari = scores.stability = None  # one seed only
    return scores


# ---------------------------------------------------------------- output


def foreign_function_words() -> frozenset[str]:
    """Function words of the other languages listed in pipeline/stopwords.txt, minus English's."""
    text = (ROOT / "pipeline" / "stopwords.txt").read_text(encoding="utf-8")
    words, language = set(), None
    for line in text.splitlines():
        if line.startswith("#"):
            code = line[1:].strip()
            language = code if len(code) == 2 else None  # "# es", "# pt", ...; not "# web ..."
        elif language:
            words.update(line.split())
    return frozenset(words - ENGLISH_STOP_WORDS)


def english_share(posts: pl.DataFrame) -> dict[str, float]:
    """Per user, the share of posts (of those with any function word) that use more English
    function words than those of the other listed languages: a rough test needing no model."""
    tokens = pl.col("text").str.to_lowercase().str.extract_all(r"\w+")
    english = tokens.list.eval(pl.element().is_in(list(ENGLISH_STOP_WORDS)).cast(pl.Int32))
    other = tokens.list.eval(pl.element().is_in(list(foreign_function_words())).cast(pl.Int32))
    scored = posts.select(
        "user_id", english.list.sum().alias("en"), other.list.sum().alias("other")
    ).filter((pl.col("en") + pl.col("other")) > 0)
    share = scored.group_by("user_id").agg((pl.col("en") >= pl.col("other")).mean().alias("s"))
    return dict(share.iter_rows())


def print_language_report(posts: pl.DataFrame, tribes: Scores, known: dict[str, str]) -> None:
    """Where the mostly non-English users land: with their interest, or among each other?"""
    members = tribes.members
    english = english_share(posts)
    foreign = sorted(u for u, share in english.items() if share < 0.5 and u in members)
    if not foreign:
        return
    main_label = dict(tribes.composition.select("cluster_id", "main_label").iter_rows())
    foreign_share = dict(
        pl.DataFrame({"cluster": list(members.values()), "user_id": list(members)})
        .group_by("cluster")
        .agg(pl.col("user_id").is_in(foreign).mean())
        .iter_rows()
    )
    print(f"\nMostly non-English users ({len(foreign)} of {len(members)}, by function words):\n")
    print("| user | known label | cluster | cluster's main label | non-English share of cluster |")
    print("|---|---|---|---|---|")
    matched = 0
    for user in foreign:
        cluster = members[user]
        matched += main_label[cluster] == known[user]
        print(
            f"| {user} | {known[user]} | {cluster} | {main_label[cluster]} | "
            f"{foreign_share[cluster]:.0%} |"
        )
    print(f"\n{matched} of {len(foreign)} land in a cluster whose main label is their own.")


def fmt(value, digits=3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_table(
    name: str,
    n_users: int,
    n_posts: int,
    n_labels: int,
    rows: list[Scores],
    seconds: float,
    seeds: int,
) -> None:
    print(
        f"\n### {name}: {n_users} users, {n_posts} posts, {n_labels} known labels "
        f"({seconds:.0f} s)\n"
    )
    print(
        "| method | ARI | NMI | AMI | clusters | noise before reassignment | largest "
        f"| mean ARI, {seeds} seeds | seed stability | NPMI top-10 | diversity |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.method} | {fmt(r.ari)} | {fmt(r.nmi)} | {fmt(r.ami)} | {r.n_clusters} | "
            f"{fmt(r.noise_share, 2)} | {r.largest} | {fmt(r.seed_ari)} | {fmt(r.stability)} | "
            f"{fmt(r.npmi)} | {fmt(r.diversity, 2)} |"
        )
    print_composition(rows[0])


def print_composition(tribes: Scores) -> None:
    """Tribes' clusters (first seed), the known labels inside each, and the merge oracle."""
    print(
        f"\nTribes' clusters and the known labels in them (ARI if the clusters sharing a main "
        f"label were one: {fmt(tribes.main_label_ari)}):\n"
    )
    print("| cluster | Tribes' label | users | known labels | main label's share |")
    print("|---|---|---|---|---|")
    for row in tribes.composition.iter_rows(named=True):
        print(
            f"| {row['cluster_id']} | {row['label']} | {row['users']} | {row['known_labels']} "
            f"| {row['main_share']:.0%} |"
        )


def print_summary(
    results: dict[str, tuple[int, int, list[Scores]]], seeds: int, methods: list[str]
) -> None:
    """ONE table: every set × `methods` (Tribes, Tribes + behaviour per weight, study, plain
    baseline), seed-mean ARI / NMI and clusters found vs labels; then the mean over sets and on
    how many sets Tribes (words only) beats each other method."""
    print(f"\n## Summary: {seeds}-seed means, {time.strftime('%Y-%m-%d')}\n")
    print(
        "| set | users | labels | "
        + " | ".join(f"{m} ARI | {m} NMI | {m} clusters" for m in methods)
        + " |"
    )
    print("|---|---|---|" + "---|" * 3 * len(methods))
    for name, (n_users, n_labels, rows) in results.items():
        cells = [f"{fmt(r.seed_ari)} | {fmt(r.seed_nmi)} | {r.seed_clusters:.1f}" for r in rows]
        print(f"| {name} | {n_users} | {n_labels} | " + " | ".join(cells) + " |")
    means = [
        [
            np.mean([rows[i].seed_ari for _, _, rows in results.values()])
            for i in range(len(methods))
        ],
        [
            np.mean([rows[i].seed_nmi for _, _, rows in results.values()])
            for i in range(len(methods))
        ],
    ]
    print(
        f"| **mean of {len(results)} sets** | | | "
        + " | ".join(f"{means[0][i]:.3f} | {means[1][i]:.3f} | " for i in range(len(methods)))
        + " |"
    )
    for i, method in enumerate(methods[1:], start=1):
        if method.startswith("tribes"):  # a behaviour weight: does it beat the words alone?
            wins = sum(rows[i].seed_ari > rows[0].seed_ari for _, _, rows in results.values())
            print(f"\n{method} beats words-only Tribes on {wins} of {len(results)} sets (ARI).")
        else:
            wins = sum(rows[0].seed_ari > rows[i].seed_ari for _, _, rows in results.values())
            print(f"\nTribes beats {method} on {wins} of {len(results)} sets (seed-mean ARI).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*", help="which labelled sets (default: all found)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds for the stability columns")
    parser.add_argument("--no-bertopic", action="store_true", help="skip the BERTopic baseline")
    parser.add_argument(
        "--protocol",
        action="store_true",
        help="every set (the protocol's derived sets too), no BERTopic, one summary table",
    )
    parser.add_argument(
        "--behaviour-weight",
        type=float,
        nargs="*",
        default=[],
        metavar="W",
        help="also run Tribes with these behaviour_weight values (one row each)",
    )
    args = parser.parse_args()
    args.no_bertopic |= args.protocol
    methods = [
        "tribes",
        *(f"tribes + behaviour {w:g}" for w in args.behaviour_weight),
        "study",
        "plain",
    ]
    print(
        f"# Tribes quality bench — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores"
    )
    sets = available_sets()
    results = {}
    for name in args.sets or list(sets):
        started = time.perf_counter()
        posts = sets[name]()
        settings = load_into_db(name, posts)
        known = dict(posts.select("user_id", "label").unique().iter_rows())
        labels = pl.DataFrame({"user_id": list(known), "label": list(known.values())})
        seeds = SEEDS[: max(1, args.seeds)]
        rows = [evaluate_tribes(settings, labels, seeds)]
        rows += [evaluate_tribes(settings, labels, seeds, w) for w in args.behaviour_weight]
        rows.append(evaluate_study(settings, labels, seeds))
        rows.append(evaluate_plain(settings, labels, seeds))
        if not args.no_bertopic:
            clean_posts, vectors = stored_post_vectors(settings)
            rows.append(bertopic_baseline(clean_posts, vectors, known, seed=42))
        print_table(
            name,
            len(known),
            posts.height,
            len(set(known.values())),
            rows,
            time.perf_counter() - started,
            len(seeds),
        )
        print_language_report(posts, rows[0], known)
        results[name] = (len(known), len(set(known.values())), rows[: len(methods)])
    print_summary(results, len(seeds), methods)


if __name__ == "__main__":
    main()
