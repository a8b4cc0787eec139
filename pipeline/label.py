"""Name each cluster from its members' posts: c-TF-IDF terms, a short label, example posts.

The label step is `member_terms` (the terms) then `describe_clusters` (the cluster table); a
cluster's members are a frame of platform, user_id, cluster_id, probability, is_outlier.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import numpy as np
import polars as pl
import scipy.sparse as sp

from pipeline.clean import best_post_in, excerpt
from pipeline.profile import USER_KEYS, rows_of

LABEL_WORD = re.compile(r"\b[^\W\d_][^\W_]{2,}\b")  # 3+ chars, starting with a letter
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")  # Chinese characters, kanji
KATAKANA = re.compile(r"[\u30a0-\u30ff]+")  # Japanese loanwords: one script run, one word
HIRAGANA = re.compile(r"[\u3040-\u309f]+")  # mostly Japanese grammar, not topics


@cache
def stop_words() -> frozenset[str]:
    """sklearn's English list plus the bundled multilingual and web-noise list."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    text = resources.files("pipeline").joinpath("stopwords.txt").read_text(encoding="utf-8")
    extra = {w for line in text.splitlines() if not line.startswith("#") for w in line.split()}
    return frozenset(ENGLISH_STOP_WORDS | extra)


def terms_of(text: str) -> list[str]:
    """The countable terms of a text: lower-cased words of 3+ characters that are not stop
    words. Chinese and Japanese are written without spaces: runs of han characters count as
    overlapping character pairs, katakana runs as words, hiragana (mostly grammar) not at all."""
    text = text.lower()
    asian: list[str] = []
    if HAN.search(text) or KATAKANA.search(text):
        for run in HAN.findall(text):
            asian += [run[i : i + 2] for i in range(len(run) - 1)]
        asian += [run for run in KATAKANA.findall(text) if len(run) > 1]
        text = HIRAGANA.sub(" ", KATAKANA.sub(" ", HAN.sub(" ", text)))
    stop = stop_words()
    return [word for word in LABEL_WORD.findall(text) if word not in stop] + asian


def ctfidf(counts: sp.csr_matrix) -> sp.csr_matrix:
    """Class-based TF-IDF as BERTopic defines it: tf (l1 per class) x log(1 + A / f_t)."""
    from sklearn.preprocessing import normalize

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


def exclusivity(class_counts: sp.csr_matrix) -> np.ndarray:
    """Per cluster and term, the share of the term's uses that fall in the cluster."""
    counts = class_counts.toarray()
    return counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)


def npmi_matrix(present: sp.spmatrix) -> np.ndarray:
    """NPMI between every pair of columns of a 0/1 (texts x terms) matrix: 1 = always together,
    0 = independent, -1 = never together."""
    present = sp.csc_matrix(present, dtype=np.float64)
    joint = (present.T @ present).toarray() / max(present.shape[0], 1)
    single = np.diag(joint)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(joint / np.outer(single, single))
        npmi = pmi / -np.log(np.where(joint < 1, joint, np.nan))
    npmi = np.where(joint >= 1, 1.0, npmi)
    return np.where(joint > 0, npmi, -1.0)


def coherent_top(
    weights: np.ndarray, present: sp.csr_matrix, top_n: int, pool: int, pull: float = 1.0
) -> np.ndarray:
    """`top_n` of a cluster's `pool` best-weighted terms, picked greedily: the best term first,
    then each time the term with the highest relative weight + `pull` x mean NPMI (within the
    cluster's own texts) with the terms already picked. Returned best weight first."""
    candidates = np.argsort(-weights)[:pool]
    candidates = candidates[weights[candidates] > 0]
    if len(candidates) <= 1 or present.shape[0] == 0:
        return candidates[:top_n]
    together = npmi_matrix(present[:, candidates])
    relative = weights[candidates] / weights[candidates[0]]
    picked = [0]
    while len(picked) < min(top_n, len(candidates)):
        score = relative + pull * together[:, picked].mean(axis=1)
        score[picked] = -np.inf
        picked.append(int(np.argmax(score)))
    chosen = candidates[picked]
    return chosen[np.argsort(-weights[chosen], kind="stable")]


def cluster_terms(
    texts: list[str],
    cluster_of_text: np.ndarray,
    n_clusters: int,
    top_n: int = 10,
    owner: np.ndarray | None = None,
) -> pl.DataFrame:
    """Top terms per cluster: columns cluster_id, term, weight, rank (1 = best).

    A term's weight is its c-TF-IDF, times the square root of the share of its uses that fall in
    the cluster (so one term does not name every cluster) and, with `owner` (the user index of
    each text), times the share of the cluster's users who use it (so one prolific member's pet
    words do not name the group). From each cluster's 3 x top_n best-weighted terms, `top_n` that
    are used together in the cluster's texts are kept (`coherent_top`): the label reads as one
    topic. Chosen on real labelled sets (bench/quality.py: NPMI and topic diversity).
    """
    from sklearn.feature_extraction.text import CountVectorizer

    min_df = 2 if len(texts) >= 200 else 1
    vectorizer = CountVectorizer(analyzer=terms_of, min_df=min_df)
    try:
        doc_counts = vectorizer.fit_transform(texts)
    except ValueError:  # nothing but stop words
        return pl.DataFrame(
            schema={"cluster_id": pl.Int32, "term": pl.Utf8, "weight": pl.Float64, "rank": pl.Int32}
        )
    class_counts = sp.csr_matrix(indicator(cluster_of_text, n_clusters) @ doc_counts)
    weights = ctfidf(class_counts).toarray() * np.sqrt(exclusivity(class_counts))
    if owner is not None:
        weights *= member_spread(doc_counts, owner, cluster_of_text, n_clusters)
    present = (doc_counts > 0).astype(np.float64).tocsr()
    vocabulary = vectorizer.get_feature_names_out()
    rows = []
    for cluster_id in range(n_clusters):
        own_texts = present[np.flatnonzero(cluster_of_text == cluster_id)]
        best = coherent_top(weights[cluster_id], own_texts, top_n, pool=3 * top_n)
        rows += [
            (cluster_id, str(vocabulary[t]), float(weights[cluster_id, t]), rank)
            for rank, t in enumerate(best, start=1)
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


def n_clusters_of(members: pl.DataFrame) -> int:
    """Clusters are numbered 0 .. n-1."""
    return int(members["cluster_id"].max()) + 1


def member_terms(members: pl.DataFrame, posts: pl.DataFrame, top_n: int) -> pl.DataFrame:
    """`cluster_terms` of each cluster from its members' cleaned posts (platform, user_id,
    text_clean), each post weighed as its user's (`member_spread`)."""
    owner = rows_of(posts, members)
    return cluster_terms(
        posts["text_clean"].to_list(),
        members["cluster_id"].to_numpy()[owner],
        n_clusters_of(members),
        top_n,
        owner,
    )


def describe_clusters(
    members: pl.DataFrame,
    terms: pl.DataFrame,
    units: pl.DataFrame,
    vectors: np.ndarray,
    label_terms: int,
    n_posts: int,
    names: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per cluster: its label (first `label_terms` terms), size, outliers, five example
    users (most probable first, by `names`' display_name where there is one) and `n_posts`
    representative posts: from the profile units (platform, user_id, text_clean; `vectors` row
    for row) nearest the cluster's centre, one per member, the post of each that best matches
    the cluster's terms."""
    n_clusters = n_clusters_of(members)
    owner = rows_of(units, members)
    examples = representative_posts(
        vectors - vectors.mean(axis=0),
        members["cluster_id"].to_numpy()[owner],
        owner,
        n_clusters,
        n_posts,
    )
    if names is None:
        named = members.with_columns(name=pl.col("user_id"))
    else:
        named = members.join(names, on=USER_KEYS, how="left").with_columns(
            name=pl.coalesce("display_name", "user_id")
        )
    texts = units["text_clean"].to_list()
    rows = []
    for cluster_id in range(n_clusters):
        group = named.filter(pl.col("cluster_id") == cluster_id).sort(
            ["probability", "name"], descending=[True, False]
        )
        top = terms.filter(pl.col("cluster_id") == cluster_id).sort("rank")["term"].to_list()
        rows.append(
            {
                "cluster_id": cluster_id,
                "label": short_label(top, label_terms),
                "size": group.height,
                "n_outliers": int(group["is_outlier"].sum()),
                "example_users": group["name"].head(5).to_list(),
                "representative_posts": [
                    excerpt(best_post_in(texts[i], set(top)), 280) for i in examples[cluster_id]
                ],
            }
        )
    return pl.DataFrame(rows)
