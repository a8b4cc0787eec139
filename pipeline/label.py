"""Name each cluster from its members' posts: c-TF-IDF terms, a short label, example posts."""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
from sklearn.preprocessing import normalize

TOKEN_PATTERN = r"(?u)\b[^\W\d_][^\W_]{2,}\b"  # 3+ chars, starting with a letter


@cache
def stop_words() -> frozenset[str]:
    """sklearn's English list plus the bundled multilingual and web-noise list."""
    text = resources.files("pipeline").joinpath("stopwords.txt").read_text(encoding="utf-8")
    extra = {w for line in text.splitlines() if not line.startswith("#") for w in line.split()}
    return frozenset(ENGLISH_STOP_WORDS | extra)


def ctfidf(counts: sp.csr_matrix) -> sp.csr_matrix:
    """Class-based TF-IDF as BERTopic defines it: tf (l1 per class) x log(1 + A / f_t)."""
    frequency = np.asarray(counts.sum(axis=0)).ravel()
    average_words = counts.sum() / counts.shape[0]
    idf = np.log(1 + average_words / np.maximum(frequency, 1))
    tf = normalize(counts.astype(np.float64), norm="l1", axis=1)
    return sp.csr_matrix(tf @ sp.diags(idf))


def indicator(rows: np.ndarray, n_rows: int) -> sp.csr_matrix:
    """A (n_rows x len(rows)) 0/1 matrix putting item i in row rows[i]."""
    return sp.csr_matrix(
        (np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(n_rows, len(rows))
    )


def member_spread(
    doc_counts: sp.csr_matrix, owner: np.ndarray, cluster_of_text: np.ndarray, n_clusters: int
) -> np.ndarray:
    """Per cluster and term, the share of the cluster's users who use the term at all."""
    n_users = int(owner.max()) + 1
    used = (indicator(owner, n_users) @ doc_counts) > 0
    cluster_of_user = np.zeros(n_users, dtype=int)
    cluster_of_user[owner] = cluster_of_text
    users_per_cluster = np.bincount(cluster_of_user, minlength=n_clusters).clip(min=1)
    spread = indicator(cluster_of_user, n_clusters) @ used.astype(np.float64)
    return np.asarray(spread.todense()) / users_per_cluster[:, None]


def cluster_terms(
    texts: list[str],
    cluster_of_text: np.ndarray,
    n_clusters: int,
    top_n: int = 10,
    owner: np.ndarray | None = None,
) -> pl.DataFrame:
    """Top c-TF-IDF terms per cluster: columns cluster_id, term, weight, rank (1 = best).

    With `owner` (the user index of each text), each weight is multiplied by the share of the
    cluster's users who use the term, so one prolific member's pet words do not name the group.
    """
    min_df = 2 if len(texts) >= 200 else 1
    vectorizer = CountVectorizer(
        token_pattern=TOKEN_PATTERN, stop_words=list(stop_words()), lowercase=True, min_df=min_df
    )
    try:
        doc_counts = vectorizer.fit_transform(texts)
    except ValueError:  # nothing but stop words
        return pl.DataFrame(
            schema={"cluster_id": pl.Int32, "term": pl.Utf8, "weight": pl.Float64, "rank": pl.Int32}
        )
    weights = ctfidf(sp.csr_matrix(indicator(cluster_of_text, n_clusters) @ doc_counts)).toarray()
    if owner is not None:
        weights *= member_spread(doc_counts, owner, cluster_of_text, n_clusters)
    vocabulary = vectorizer.get_feature_names_out()
    rows = []
    for cluster_id in range(n_clusters):
        best = np.argsort(-weights[cluster_id])[:top_n]
        rows += [
            (cluster_id, str(vocabulary[t]), float(weights[cluster_id, t]), rank)
            for rank, t in enumerate(best, start=1)
            if weights[cluster_id, t] > 0
        ]
    return pl.DataFrame(
        rows,
        schema={"cluster_id": pl.Int32, "term": pl.Utf8, "weight": pl.Float64, "rank": pl.Int32},
        orient="row",
    )


def short_label(terms: list[str], n: int = 3) -> str:
    return " · ".join(terms[:n]) if terms else "(no terms)"


def representative_posts(
    vectors: np.ndarray, cluster_of_post: np.ndarray, owner: np.ndarray, n_clusters: int, n: int
) -> list[list[int]]:
    """Per cluster, the posts closest to its centroid, at most one per user."""
    chosen: list[list[int]] = []
    for cluster_id in range(n_clusters):
        members = np.flatnonzero(cluster_of_post == cluster_id)
        if len(members) == 0:
            chosen.append([])
            continue
        centroid = vectors[members].mean(axis=0)
        order = members[np.argsort(-(vectors[members] @ centroid))]
        picked: list[int] = []
        seen_users: set[int] = set()
        for post in order:
            if owner[post] not in seen_users:
                picked.append(int(post))
                seen_users.add(int(owner[post]))
            if len(picked) == n:
                break
        chosen.append(picked)
    return chosen
