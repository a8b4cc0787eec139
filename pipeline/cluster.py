"""Cluster users with HDBSCAN; every noise user joins its nearest cluster, flagged."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass(frozen=True)
class Clustering:
    labels: np.ndarray  # cluster id per user, 0 = largest cluster
    probability: np.ndarray  # membership strength in [0, 1]
    is_outlier: np.ndarray  # HDBSCAN called the user noise; label is the nearest cluster
    noise_share: float  # share of users HDBSCAN called noise, before reassignment


MAX_CLUSTER_SHARE = 5  # an HDBSCAN cluster over 1/5 of the users splits into its children


def auto_min_cluster_size(n_users: int) -> int:
    """Smallest group worth naming: grows slower than the users (0.25 · users^0.7), so a bigger
    corpus holds more groups (30 users: 3, 1,000: 31, 100,000: 791). Chosen on all 14 sets of
    bench/quality.py's protocol together (bench/granularity.py, README "Quality")."""
    return int(max(3, round(0.25 * n_users**0.7)))


@dataclass(frozen=True)
class HdbscanParams:
    """HDBSCAN's parameters for one clustering (the rule lives in `hdbscan_params`)."""

    min_cluster_size: int
    min_samples: int
    cluster_selection_method: str = "eom"
    split_share: int | None = MAX_CLUSTER_SHARE  # None: no cluster is split


def hdbscan_params(
    n_users: int, min_cluster_size: int | None = None, min_samples: int | None = None
) -> HdbscanParams:
    """The settings' sizes, or sizes scaled to the users; never over half of them."""
    size = min(min_cluster_size or auto_min_cluster_size(n_users), max(2, n_users // 2))
    return HdbscanParams(size, min_samples or max(2, size // 2))


def hdbscan_cluster(
    points: np.ndarray, min_cluster_size: int | None = None, min_samples: int | None = None
) -> Clustering:
    """HDBSCAN; the number of clusters is discovered. Noise goes to the nearest centroid."""
    return cluster_with(points, hdbscan_params(len(points), min_cluster_size, min_samples))


def cluster_with(points: np.ndarray, params: HdbscanParams) -> Clustering:
    """HDBSCAN with `params`; noise goes to the nearest centroid, flagged."""
    n = len(points)
    raw, probability = persistent_clusters(points, params)
    noise = raw < 0
    if noise.all():  # one undivided group: everyone is an outlier of cluster 0
        return Clustering(np.zeros(n, int), np.zeros(n), np.ones(n, bool), 1.0)
    labels, centroid_similarity = reassign_noise(points, raw)
    probability[noise] = centroid_similarity[noise]
    return Clustering(relabel_by_size(labels), probability, noise, float(noise.mean()))


def persistent_clusters(points: np.ndarray, params: HdbscanParams) -> tuple[np.ndarray, np.ndarray]:
    """HDBSCAN's most persistent clusters ("eom"); one holding over a fifth of the users gives way
    to its child clusters in HDBSCAN's tree (and they to theirs while still too big); a cluster
    without children stays whole. Users that leave a parent before it splits become noise.
    Returns labels (-1 = noise) and membership strengths."""
    model = run_hdbscan(
        points, params.min_cluster_size, params.min_samples, params.cluster_selection_method
    )
    n = len(points)
    if params.split_share is None:
        labels = model.labels_.copy()
        return labels, np.where(labels >= 0, model.probabilities_, 0.0).astype(np.float64)
    tree = model.condensed_tree_.to_numpy()
    children: dict[int, list[int]] = {}
    for parent, child in zip(tree["parent"].tolist(), tree["child"].tolist(), strict=True):
        children.setdefault(parent, []).append(child)
    members = tree_members(children, n)
    node_of_size = {}
    for node, points_in in members.items():
        node_of_size.setdefault(len(points_in), []).append(node)
    cap = max(n // params.split_share, 2 * params.min_cluster_size)
    labels = np.full(n, -1)
    for found in np.unique(model.labels_[model.labels_ >= 0]):
        inside = np.flatnonzero(model.labels_ == found)
        same = [c for c in node_of_size.get(len(inside), []) if np.array_equal(members[c], inside)]
        pending = same[:1] or [-1]  # -1: not found in the tree, the cluster stays as it is
        while pending:
            node = pending.pop()
            inside = members.get(node, inside)
            sub = [c for c in children.get(node, []) if c >= n]
            if len(inside) > cap and sub:
                pending += sub
            else:
                labels[inside] = labels.max() + 1
    probability = np.where(labels >= 0, model.probabilities_, 0.0).astype(np.float64)
    return labels, probability


def run_hdbscan(points: np.ndarray, min_cluster_size: int, min_samples: int, method: str = "eom"):
    """A fitted HDBSCAN of the points."""
    import hdbscan

    return hdbscan.HDBSCAN(
        min_cluster_size=min_cluster_size,
        min_samples=min_samples,
        cluster_selection_method=method,
    ).fit(points)


def tree_members(children: dict[int, list[int]], n_points: int) -> dict[int, np.ndarray]:
    """The points (sorted) under each cluster node of an HDBSCAN condensed tree (nodes >= n)."""
    members: dict[int, np.ndarray] = {}
    for node in sorted(children, reverse=True):  # a child's id is larger than its parent's
        parts = [members[c] if c >= n_points else np.array([c]) for c in children[node]]
        members[node] = np.sort(np.concatenate(parts))
    return members


def consensus_cluster(
    spaces: list[np.ndarray],
    min_cluster_size: int | None = None,
    min_samples: int | None = None,
    agreement: float = 0.5,
) -> Clustering:
    """HDBSCAN on each of several UMAP spaces of the same users, then users grouped by how often
    the runs put them together (average linkage, at least `agreement` of the runs); groups
    smaller than the minimum size join the group they are most often with. Steadier than any
    single run, whose clusters move with the seed and with tiny changes of the vectors."""
    params = hdbscan_params(len(spaces[0]), min_cluster_size, min_samples)
    runs = [cluster_with(space, params) for space in spaces]
    return combine_runs(runs, params.min_cluster_size, agreement)


def combine_runs(runs: list[Clustering], size: int, agreement: float = 0.5) -> Clustering:
    """The consensus of several clusterings of the same users (see `consensus_cluster`)."""
    from sklearn.cluster import AgglomerativeClustering

    if len(runs) == 1:
        return runs[0]
    together = np.mean([r.labels[:, None] == r.labels[None, :] for r in runs], axis=0)
    labels = AgglomerativeClustering(
        n_clusters=None,
        metric="precomputed",
        linkage="average",
        distance_threshold=1 - agreement,
    ).fit_predict(1 - together)
    labels = merge_small_groups(labels, together, size)
    own = labels[:, None] == labels[None, :]
    np.fill_diagonal(own, False)
    probability = (together * own).sum(axis=1) / np.maximum(own.sum(axis=1), 1)
    outlier = np.mean([r.is_outlier for r in runs], axis=0) > 0.5
    noise = float(np.mean([r.noise_share for r in runs]))
    return Clustering(relabel_by_size(labels), probability, outlier, noise)


def members(users: pl.DataFrame, clustering: Clustering) -> pl.DataFrame:
    """`users` (row i is user i) with each one's cluster_id, probability and is_outlier."""
    return users.with_columns(
        cluster_id=pl.Series(clustering.labels, dtype=pl.Int32),
        probability=pl.Series(clustering.probability),
        is_outlier=pl.Series(clustering.is_outlier),
    )


def merge_small_groups(labels: np.ndarray, together: np.ndarray, size: int) -> np.ndarray:
    """Move the members of groups under `size` to the big group they share most runs with."""
    labels = labels.copy()
    ids, counts = np.unique(labels, return_counts=True)
    big = ids[counts >= size]
    if len(big) == 0:
        return np.zeros_like(labels)
    affinity = np.stack([together[:, labels == g].mean(axis=1) for g in big], axis=1)
    small = ~np.isin(labels, big)
    labels[small] = big[affinity[small].argmax(axis=1)]
    return labels


def reassign_noise(points: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Assign noise (-1) to the nearest cluster centroid; also returns a [0, 1] closeness."""
    ids = np.unique(raw[raw >= 0])
    centroids = np.stack([points[raw == c].mean(axis=0) for c in ids])
    distance = np.linalg.norm(points[:, None, :] - centroids[None, :, :], axis=2)
    nearest = distance.argmin(axis=1)
    labels = np.where(raw >= 0, raw, ids[nearest])
    spread = np.median(distance[raw >= 0, :].min(axis=1)) + 1e-9
    closeness = 1.0 / (1.0 + distance.min(axis=1) / spread)
    return labels, closeness


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1, largest first (ties by old id), for stable tables."""
    ids, counts = np.unique(labels, return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    mapping = {old: new for new, old in enumerate(order)}
    return np.array([mapping[x] for x in labels], dtype=int)
