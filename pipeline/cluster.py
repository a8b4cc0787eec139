"""Cluster users with HDBSCAN; every noise user joins its nearest cluster, flagged."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clustering:
    labels: np.ndarray  # cluster id per user, 0 = largest cluster
    probability: np.ndarray  # membership strength in [0, 1]
    is_outlier: np.ndarray  # HDBSCAN called the user noise; label is the nearest cluster
    noise_share: float  # share of users HDBSCAN called noise, before reassignment


def auto_min_cluster_size(n_users: int) -> int:
    """Smallest group worth naming, scaled to the number of users."""
    return int(max(3, round(n_users / 25)))


def hdbscan_cluster(
    points: np.ndarray, min_cluster_size: int | None = None, min_samples: int | None = None
) -> Clustering:
    """HDBSCAN; the number of clusters is discovered. Noise goes to the nearest centroid."""
    import hdbscan

    n = len(points)
    size = min(min_cluster_size or auto_min_cluster_size(n), max(2, n // 2))
    model = hdbscan.HDBSCAN(
        min_cluster_size=size,
        min_samples=min_samples or max(1, size // 2),
        cluster_selection_method="leaf",  # eom merged most users into one blob (bench/quality.py)
    ).fit(points)
    raw = model.labels_.copy()
    noise = raw < 0
    probability = model.probabilities_.astype(np.float64)
    if noise.all():  # one undivided group: everyone is an outlier of cluster 0
        return Clustering(np.zeros(n, int), np.zeros(n), np.ones(n, bool), 1.0)
    labels, centroid_similarity = reassign_noise(points, raw)
    probability[noise] = centroid_similarity[noise]
    return Clustering(relabel_by_size(labels), probability, noise, float(noise.mean()))


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
