"""The tree above the fine clusters: coarse groups ("tribes") and the fine clusters under them.

Pure: user vectors (profiles) and fine cluster labels in, labels and parents out. The tree is
average linkage (UPGMA) of the users' cosine distances between clusters: the distance of two
clusters is the mean distance of their users, exactly `1 - mean_a · mean_b` for unit vectors.
The coarse level is the cut whose groups separate the users best (Calinski-Harabasz, label-free),
or the cut at the number of groups asked for (`--clusters N`); asked for more groups than there
are fine clusters, the largest clusters are split (KMeans within) until there are enough. Users
with too little text to be clustered join the fine cluster nearest to their profile, flagged
(`place_users`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.cluster import relabel_by_size

TOO_LITTLE_TEXT = "too little text"  # the reason stored for a user placed, not clustered
NO_TEXT = "no text"  # authors whose every post is empty once cleaned: in no cluster


@dataclass(frozen=True)
class Levels:
    """Fine clusters and the coarse groups above them."""

    labels: np.ndarray  # fine cluster per user, 0 = largest
    parent: np.ndarray  # coarse group per fine cluster, 0 = largest (by users)
    tree: np.ndarray  # scipy linkage matrix of the fine clusters (k - 1 rows)


def cluster_means(points: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The mean of each cluster's unit vectors (k x dim; not re-normalised)."""
    from sklearn.preprocessing import normalize

    sums = np.zeros((k, points.shape[1]))
    np.add.at(sums, labels, normalize(points))
    return sums / np.bincount(labels, minlength=k).clip(min=1)[:, None]


def cluster_tree(points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Average linkage of the clusters 0..k-1 over their users' cosine distances, as a scipy
    linkage matrix (merged ids, height, clusters under the node)."""
    k = int(labels.max()) + 1
    means = list(cluster_means(points, labels, k))
    sizes = list(np.bincount(labels, minlength=k).astype(float))  # users under each node
    under = [1] * k  # clusters under each node
    distance = np.full((2 * k - 1, 2 * k - 1), np.inf)
    distance[:k, :k] = 1 - np.array(means) @ np.array(means).T
    np.fill_diagonal(distance, np.inf)
    active = list(range(k))
    tree = []
    for node in range(k, 2 * k - 1):
        sub = distance[np.ix_(active, active)]
        i, j = np.unravel_index(np.argmin(sub), sub.shape)
        a, b = active[i], active[j]
        means.append((sizes[a] * means[a] + sizes[b] * means[b]) / (sizes[a] + sizes[b]))
        sizes.append(sizes[a] + sizes[b])
        under.append(under[a] + under[b])
        tree.append([min(a, b), max(a, b), max(float(sub[i, j]), 0.0), under[node]])
        active = [n for n in active if n not in (a, b)]
        for other in active:
            distance[node, other] = distance[other, node] = 1 - means[node] @ means[other]
        active.append(node)
    return np.array(tree, dtype=float).reshape(-1, 4)


def best_separated_groups(points: np.ndarray, labels: np.ndarray, tree: np.ndarray) -> int:
    """How many groups to cut the tree into, label-free: the cut (2..k-1 groups for k >= 3
    clusters; k otherwise) whose groups best separate the users' unit vectors by the
    Calinski-Harabasz ratio (between-group over within-group variance, each per degree of
    freedom), computed from the clusters' sums: linear in users and clusters."""
    from sklearn.preprocessing import normalize

    k = len(tree) + 1
    if k < 3:
        return k
    unit = normalize(points)
    counts = np.bincount(labels, minlength=k).astype(float)
    sums = cluster_means(unit, labels, k) * counts[:, None]
    n = len(unit)
    total = n - np.sum(unit.sum(axis=0) ** 2) / n  # unit vectors: each |x|^2 is 1

    def ratio(groups: int) -> float:
        parent = cut(tree, labels, groups)
        group_sums = np.zeros((groups, unit.shape[1]))
        np.add.at(group_sums, parent, sums)
        group_counts = np.bincount(parent, weights=counts, minlength=groups)
        within = n - np.sum(np.sum(group_sums**2, axis=1) / group_counts)
        return ((total - within) / (groups - 1)) / max(within / (n - groups), 1e-12)

    return max(range(2, k), key=ratio)


def cut(tree: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    """The coarse group of each fine cluster when the tree is cut into `n_groups` (at most the
    number of clusters), numbered largest first by users."""
    from scipy.cluster.hierarchy import cut_tree

    k = len(tree) + 1
    if k == 1:
        return np.zeros(1, dtype=int)
    groups = cut_tree(tree, n_clusters=min(n_groups, k)).ravel()
    users = np.bincount(groups, weights=np.bincount(labels, minlength=k))
    order = np.lexsort((np.arange(len(users)), -users))
    return np.argsort(order)[groups]


def split_largest(
    points: np.ndarray, labels: np.ndarray, n_clusters: int, random_state: int
) -> np.ndarray:
    """Split the largest cluster in two (KMeans on its unit vectors) until there are
    `n_clusters` (or no cluster has two users left to split); renumbered largest first."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import normalize

    unit = normalize(points)
    labels = labels.copy()
    while labels.max() + 1 < n_clusters:
        largest = int(np.argmax(np.bincount(labels)))
        inside = np.flatnonzero(labels == largest)
        if len(np.unique(unit[inside], axis=0)) < 2:
            break
        halves = KMeans(2, n_init=10, random_state=random_state).fit_predict(unit[inside])
        labels[inside[halves == 1]] = labels.max() + 1
    return relabel_by_size(labels)


def levels(
    points: np.ndarray, labels: np.ndarray, n_groups: int | None = None, random_state: int = 42
) -> Levels:
    """The fine clusters (split until `n_groups` when more are asked for than found) and their
    coarse groups: `n_groups` of them, or as many as separate the users best."""
    if n_groups is not None and n_groups > labels.max() + 1:
        labels = split_largest(points, labels, n_groups, random_state)
    tree = cluster_tree(points, labels)
    parent = cut(tree, labels, n_groups or best_separated_groups(points, labels, tree))
    return Levels(labels, parent, tree)


def nearest_clusters(
    points: np.ndarray, labels: np.ndarray, others: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `others`, the cluster of `labels` (over `points`) whose mean direction is
    nearest, and its cosine similarity clipped to [0, 1]."""
    from sklearn.preprocessing import normalize

    means = normalize(cluster_means(points, labels, int(labels.max()) + 1))
    similarity = normalize(others) @ means.T
    nearest = similarity.argmax(axis=1)
    return nearest, similarity[np.arange(len(others)), nearest].clip(0, 1)


def place_users(
    members: pl.DataFrame,
    points: np.ndarray,
    others: pl.DataFrame,
    other_points: np.ndarray,
    reason: str = TOO_LITTLE_TEXT,
) -> pl.DataFrame:
    """`members` (row i has vector points[i]: platform, user_id, n_posts, cluster_id,
    probability, is_outlier, x, y) with the users of `others` (platform, user_id, n_posts; vectors
    `other_points`) added: each in its nearest cluster, low-confidence, with `reason`, on the map
    at the mean place of its three most similar members. A `reason` column is null for members."""
    members = members.with_columns(reason=pl.lit(None, pl.Utf8))
    if others.height == 0:
        return members
    cluster, similarity = nearest_clusters(points, members["cluster_id"].to_numpy(), other_points)
    closest = most_similar(other_points, points, 3)
    placed = others.with_columns(
        cluster_id=pl.Series(cluster, dtype=members["cluster_id"].dtype),
        probability=pl.Series(similarity.astype(float)),
        is_outlier=pl.lit(True),
        x=pl.Series(members["x"].to_numpy()[closest].mean(axis=1)),
        y=pl.Series(members["y"].to_numpy()[closest].mean(axis=1)),
        reason=pl.lit(reason),
    )
    return pl.concat([members, placed.select(members.columns)], how="vertical_relaxed")


def most_similar(queries: np.ndarray, points: np.ndarray, n: int, batch: int = 256) -> np.ndarray:
    """For each query, the rows of `points` of the `n` highest cosine similarity (any order),
    `batch` queries at a time (memory: batch x len(points))."""
    from sklearn.preprocessing import normalize

    unit = normalize(points).astype(np.float32)
    n = min(n, len(points))
    found = []
    for start in range(0, len(queries), batch):
        similarity = normalize(queries[start : start + batch]).astype(np.float32) @ unit.T
        found.append(np.argpartition(-similarity, n - 1, axis=1)[:, :n])
    return np.vstack(found)


def stack_levels(
    fine: pl.DataFrame,
    fine_terms: pl.DataFrame,
    coarse: pl.DataFrame,
    coarse_terms: pl.DataFrame,
    parent: np.ndarray,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Both levels' cluster rows and terms as one table each: coarse groups take the ids after
    the fine clusters'; each fine row names its group's id in `parent_id`."""
    offset = fine.height
    fine = fine.with_columns(
        parent_id=pl.Series(parent[fine["cluster_id"].to_numpy()] + offset, dtype=pl.Int32),
        level=pl.lit("fine"),
    )
    coarse = coarse.with_columns(
        cluster_id=pl.col("cluster_id") + offset,
        parent_id=pl.lit(None, pl.Int32),
        level=pl.lit("coarse"),
    )
    terms = pl.concat(
        [fine_terms, coarse_terms.with_columns(pl.col("cluster_id") + offset)],
        how="vertical_relaxed",
    )
    return pl.concat([fine, coarse], how="vertical_relaxed"), terms
