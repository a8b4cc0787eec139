"""Quality metrics: user clusters against known labels, and topic-term coherence and diversity."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import polars as pl
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
)

from pipeline.label import npmi_matrix, terms_of

STUDY_K = 7  # the original study's fixed number of clusters
STUDY_CHARS = 2048  # its E5 models read the first 512 tokens (about 4 characters each) of a user


def study_clusters(user_vectors: np.ndarray, seed: int, k: int = STUDY_K) -> np.ndarray:
    """The original study's grouping, as a baseline: one vector per user (its posts
    concatenated into ONE text) → UMAP to 2-D (library defaults) → KMeans with fixed k."""
    import umap
    from sklearn.cluster import KMeans

    plane = umap.UMAP(n_components=2, random_state=seed, n_jobs=1).fit_transform(user_vectors)
    k = min(k, len(user_vectors))
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(plane)


PLAIN_USERS_PER_SIZE = 40  # the plain baseline's HDBSCAN min_cluster_size is users/40


def plain_clusters(user_vectors: np.ndarray, seed: int) -> np.ndarray:
    """A plain baseline: one vector per user (the mean of its single-post vectors) → UMAP 5-D
    cosine, 15 neighbours, min_dist 0 → HDBSCAN min_cluster_size users/40; noise joins the
    nearest cluster."""
    from pipeline.cluster import reassign_noise, run_hdbscan
    from pipeline.reduce import umap_reduce

    space = umap_reduce(user_vectors, 5, 15, 0.0, seed)
    size = max(2, len(user_vectors) // PLAIN_USERS_PER_SIZE)
    raw = run_hdbscan(space, size, size).labels_
    if (raw < 0).all():
        return np.zeros(len(raw), int)
    return reassign_noise(space, raw)[0]


def agreement(known: Sequence, found: Sequence) -> dict[str, float]:
    """ARI, NMI and AMI of found clusters against known labels."""
    return {
        "ari": float(adjusted_rand_score(known, found)),
        "nmi": float(normalized_mutual_info_score(known, found)),
        "ami": float(adjusted_mutual_info_score(known, found)),
    }


def cluster_composition(known: Sequence[str], found: Sequence[int], top: int = 3) -> pl.DataFrame:
    """Per found cluster (by id): its users, its most common known labels with their counts, its
    main label and that label's share of the cluster."""
    counts = (
        pl.DataFrame({"cluster": list(found), "label": [str(k) for k in known]})
        .group_by("cluster", "label")
        .len()
        .sort(["cluster", "len", "label"], descending=[False, True, False])
    )
    return counts.group_by("cluster", maintain_order=True).agg(
        users=pl.col("len").sum(),
        known_labels=pl.format("{} {}", "label", "len").head(top).str.join(" · "),
        main_label=pl.col("label").first(),
        main_share=pl.col("len").first() / pl.col("len").sum(),
    )


def main_label_ari(known: Sequence[str], found: Sequence[int]) -> float:
    """ARI after merging the clusters that share a main known label. An oracle, for diagnosis:
    well above the ARI, it says the clusters are pure but finer than the labels."""
    main = dict(cluster_composition(known, found).select("cluster", "main_label").iter_rows())
    return float(adjusted_rand_score(known, [main[c] for c in found]))


def mean_pairwise_ari(labelings: Sequence[Sequence]) -> float:
    """Stability: the mean ARI over every pair of runs (e.g. with different seeds)."""
    pairs = list(itertools.combinations(labelings, 2))
    return float(np.mean([adjusted_rand_score(a, b) for a, b in pairs])) if pairs else 1.0


def npmi_coherence(texts: Sequence[str], topics: Sequence[Sequence[str]]) -> list[float]:
    """Mean NPMI of each topic's term pairs, with co-occurrence counted per text of the corpus."""
    vocabulary = sorted({term for topic in topics for term in topic})
    if not vocabulary:
        return [0.0 for _ in topics]
    vectorizer = CountVectorizer(vocabulary=vocabulary, analyzer=terms_of, binary=True)
    present = vectorizer.fit_transform(texts)
    index = {term: i for i, term in enumerate(vocabulary)}
    scores = []
    for topic in topics:
        columns = [index[t] for t in topic]
        if len(columns) < 2:
            scores.append(0.0)
            continue
        pairs = np.triu_indices(len(columns), k=1)
        scores.append(float(npmi_matrix(present[:, columns])[pairs].mean()))
    return scores


def topic_diversity(topics: Sequence[Sequence[str]]) -> float:
    """Share of unique terms among all topics' terms (1.0 = no term repeats across topics)."""
    terms = [term for topic in topics for term in topic]
    return len(set(terms)) / len(terms) if terms else 0.0
