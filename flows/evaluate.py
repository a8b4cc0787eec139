"""Judge a database's clustering against known user labels, running refresh exactly as users do."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from flows.refresh import refresh
from flows.vectors import stored_vectors
from pipeline import clean, evaluate, label, profile, store
from pipeline.settings import RefreshOptions, Settings

SEEDS = (42, 0, 1, 2, 3)
PLAIN_METHOD = "plain: mean of posts → UMAP 5-D → HDBSCAN users/40"


@dataclass
class Scores:
    """The quality table's row for one method on one labelled set."""

    method: str
    ari: float
    nmi: float
    ami: float
    n_clusters: int
    noise_share: float | None
    largest: int
    seed_ari: float | None = None  # mean ARI vs labels over the seeds
    seed_nmi: float | None = None  # mean NMI vs labels over the seeds
    seed_clusters: float | None = None  # mean number of clusters over the seeds
    stability: float | None = None  # mean pairwise ARI between the seeds' clusterings
    npmi: float | None = None
    diversity: float | None = None
    members: dict[str, int] = field(default_factory=dict)  # user_id -> cluster, first seed
    composition: pl.DataFrame | None = None  # known labels per cluster, first seed
    main_label_ari: float | None = None  # ARI with clusters of one main label merged (oracle)


def read_labels(settings: Settings, labels: str) -> pl.DataFrame:
    """Known labels per user: a CSV/Parquet file (user_id, label[, platform]) or a users column."""
    path = Path(labels)
    if path.suffix.lower() in {".csv", ".parquet"}:
        if not path.exists():
            raise ValueError(f"labels file {path} does not exist")
        table = pl.read_csv(path) if path.suffix.lower() == ".csv" else pl.read_parquet(path)
        missing = {"user_id", "label"} - set(table.columns)
        if missing:
            raise ValueError(f"labels file {path.name} lacks columns {sorted(missing)}")
        return table.select("user_id", pl.col("label").cast(pl.Utf8))
    if labels != "label":
        raise ValueError(
            f"--labels must be a .csv/.parquet file or the users column 'label', not {labels!r}"
        )
    with store.open(settings) as con:
        return store.read_users(con).select("user_id", "label").drop_nulls()


def run_members(settings: Settings, run_id: str) -> pl.DataFrame:
    with store.open(settings) as con:
        return store.frame(
            con,
            "SELECT user_id, cluster_id, is_outlier FROM user_clusters WHERE run_id = ?",
            [run_id],
        )


def run_topics(settings: Settings, run_id: str) -> list[list[str]]:
    """Each fine cluster's top 10 terms, best first (the coarse groups' terms are not topics)."""
    with store.open(settings) as con:
        terms = store.run_terms(con, run_id)
    return [g["term"].to_list()[:10] for _, g in terms.group_by("cluster_id", maintain_order=True)]


def cleaned_posts(settings: Settings) -> pl.DataFrame:
    with store.open(settings) as con:
        posts = store.read_posts(con)
    return clean.clean_posts(posts, settings.min_posts_per_user)


def topic_scores(posts: pl.DataFrame, cluster_of_user: dict[str, int]) -> tuple[float, float]:
    """NPMI and diversity of the top-10 c-TF-IDF terms of a user grouping's clusters."""
    texts = posts["text_clean"].to_list()
    cluster_of_post = np.array([cluster_of_user[u] for u in posts["user_id"]])
    owner = posts["user_id"].cast(pl.Categorical).to_physical().to_numpy()
    n = int(cluster_of_post.max()) + 1
    terms = label.cluster_terms(texts, cluster_of_post, n, 10, owner)
    topics = [g["term"].to_list() for _, g in terms.group_by("cluster_id", maintain_order=True)]
    return float(np.mean(evaluate.npmi_coherence(texts, topics))), evaluate.topic_diversity(topics)


def seed_means(truth: list, runs: list) -> dict[str, float]:
    """Mean ARI, NMI and number of clusters of the seeds' groupings against the known labels."""
    scores = [evaluate.agreement(truth, r) for r in runs]
    return {
        "seed_ari": float(np.mean([s["ari"] for s in scores])),
        "seed_nmi": float(np.mean([s["nmi"] for s in scores])),
        "seed_clusters": float(np.mean([len(set(np.asarray(r).tolist())) for r in runs])),
    }


def score_grouping(
    method: str, users: list[str], runs: list[np.ndarray], known: dict[str, str], posts
) -> Scores:
    """Scores of a baseline's user groupings (one per seed; the first is the headline)."""
    truth = [known[u] for u in users]
    found = runs[0]
    npmi, diversity = topic_scores(posts, dict(zip(users, found.tolist(), strict=True)))
    return Scores(
        method=method,
        **evaluate.agreement(truth, found),
        n_clusters=len(set(found.tolist())),
        noise_share=None,
        largest=int(np.bincount(found).max()),
        **seed_means(truth, runs),
        stability=evaluate.mean_pairwise_ari([r.tolist() for r in runs]),
        npmi=npmi,
        diversity=diversity,
    )


def evaluate_study(settings: Settings, known: pl.DataFrame, seeds=SEEDS) -> Scores:
    """The original study's method on the same posts and model: each labelled user's posts
    as ONE string cut where the study's E5 stopped reading (512 tokens, `STUDY_CHARS`; a
    transformer with a shorter max_seq_length reads less), UMAP 2-D, KMeans k=7."""
    posts = cleaned_posts(settings).filter(pl.col("user_id").is_in(known["user_id"].implode()))
    joined = (
        posts.group_by("user_id")
        .agg(pl.col("text_clean").str.join(" ").str.slice(0, evaluate.STUDY_CHARS))
        .sort("user_id")
    )
    vectors = stored_vectors(settings, joined["text_clean"].to_list(), "users as one string")
    runs = [evaluate.study_clusters(vectors, seed) for seed in seeds]
    labels = dict(known.iter_rows())
    return score_grouping(
        "study: concat (first 512 tokens) → UMAP 2-D → KMeans 7",
        joined["user_id"].to_list(),
        runs,
        labels,
        posts,
    )


def evaluate_plain(settings: Settings, known: pl.DataFrame, seeds=SEEDS) -> Scores:
    """The plain baseline (`evaluate.plain_clusters`) on the same posts and model: each labelled
    user's vector is the mean of its single-post vectors."""
    posts = cleaned_posts(settings).filter(pl.col("user_id").is_in(known["user_id"].implode()))
    users = profile.user_index(posts)
    vectors = stored_vectors(settings, posts["text_clean"].to_list(), "single posts")
    means = profile.build_profiles(profile.rows_of(posts, users), vectors, users.height, "mean")
    return score_grouping(
        PLAIN_METHOD,
        users["user_id"].to_list(),
        [evaluate.plain_clusters(means, seed) for seed in seeds],
        dict(known.iter_rows()),
        posts,
    )


def evaluate_tribes(
    settings: Settings, known: pl.DataFrame, seeds=SEEDS, behaviour_weight: float = 0.0
) -> Scores:
    """Refresh once per seed (embeddings are reused) and score every run against `known`;
    `behaviour_weight`: that of the behaviour signals beside the words (0: words only)."""
    runs = [
        refresh(
            db=str(settings.db),
            options=RefreshOptions(random_state=seed, behaviour_weight=behaviour_weight),
        )
        for seed in seeds
    ]
    joined = [run_members(settings, r).join(known, on="user_id").sort("user_id") for r in runs]
    first = joined[0]
    headline = evaluate.agreement(first["label"], first["cluster_id"])
    topics = run_topics(settings, runs[0])
    texts = cleaned_posts(settings)["text_clean"].to_list()
    with store.open(settings) as con:
        names = store.cluster_table(con, runs[0]).select("cluster_id", "label")
    composition = evaluate.cluster_composition(first["label"], first["cluster_id"])
    return Scores(
        method=f"tribes + behaviour {behaviour_weight:g}" if behaviour_weight else "tribes",
        **headline,
        n_clusters=first["cluster_id"].n_unique(),
        noise_share=float(first["is_outlier"].mean()),
        largest=int(first["cluster_id"].value_counts()["count"].max()),
        **seed_means(first["label"].to_list(), [j["cluster_id"].to_numpy() for j in joined]),
        stability=evaluate.mean_pairwise_ari([j["cluster_id"].to_list() for j in joined]),
        npmi=float(np.mean(evaluate.npmi_coherence(texts, topics))),
        diversity=evaluate.topic_diversity(topics),
        members=dict(first.select("user_id", "cluster_id").iter_rows()),
        composition=names.join(composition, left_on="cluster_id", right_on="cluster").sort(
            "cluster_id"
        ),
        main_label_ari=evaluate.main_label_ari(first["label"], first["cluster_id"]),
    )
