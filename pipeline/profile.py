"""Build one profile vector per user from the embeddings of ALL of their posts."""

from __future__ import annotations

import math

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.preprocessing import normalize

from pipeline.settings import ProfileMethod


def auto_topic_k(n_posts: int, n_users: int) -> int:
    """Micro-topics for the topic mix: grows with the corpus, bounded for speed."""
    return int(min(400, max(2 * n_users ** 0.5, math.sqrt(n_posts) * 1.5, 8)))


def mean_profiles(owner: np.ndarray, vectors: np.ndarray, n_users: int) -> np.ndarray:
    """Mean of each user's post vectors (L2-normalised)."""
    sums = np.zeros((n_users, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, vectors)
    return normalize(sums).astype(np.float32)


def centered_mean_profiles(owner: np.ndarray, vectors: np.ndarray, n_users: int) -> np.ndarray:
    """Mean profiles after removing what every post shares (the corpus mean direction)."""
    return mean_profiles(owner, vectors - vectors.mean(axis=0, keepdims=True), n_users)


def topic_mix_profiles(
    owner: np.ndarray, vectors: np.ndarray, n_users: int, k: int, random_state: int
) -> np.ndarray:
    """TF-IDF-weighted histogram of each user's posts over k post micro-topics."""
    k = max(2, min(k, len(vectors)))
    topics = MiniBatchKMeans(
        n_clusters=k, random_state=random_state, n_init=3, batch_size=4096
    ).fit_predict(vectors)
    counts = np.zeros((n_users, k), dtype=np.float64)
    np.add.at(counts, (owner, topics), 1.0)
    tf = counts / counts.sum(axis=1, keepdims=True).clip(min=1.0)
    idf = np.log((1 + n_users) / (1 + (counts > 0).sum(axis=0))) + 1.0
    return normalize(np.sqrt(tf) * idf).astype(np.float32)


def build_profiles(
    owner: np.ndarray,
    vectors: np.ndarray,
    n_users: int,
    method: ProfileMethod = "hybrid",
    topic_k: int | None = None,
    random_state: int = 42,
) -> np.ndarray:
    """Profiles (n_users x dim); `owner[i]` is the user index of post i."""
    if len(vectors) == 0 or n_users == 0:
        raise ValueError("no posts to profile: import posts first")
    if method == "mean":
        return mean_profiles(owner, vectors, n_users)
    centered = centered_mean_profiles(owner, vectors, n_users)
    if method == "centered_mean":
        return centered
    k = topic_k or auto_topic_k(len(vectors), n_users)
    mix = topic_mix_profiles(owner, vectors, n_users, k, random_state)
    if method == "topic_mix":
        return mix
    return normalize(np.hstack([centered, mix])).astype(np.float32)
