"""Build one profile vector per user from the embeddings of ALL of their posts.

The default, `chunk_mean`, averages the vectors of the user's posts packed into chunks
(`clean.pack_chunks`): the model then sees several posts at once, which carries interests better
than single short posts, while every post still counts. Each chunk weighs by the square root of
its length, so a user's short leftover chunk does not count as much as a full one. `mean`,
`centered_mean` and `debiased_mean` (top principal directions projected out) average single-post
vectors. Measured on real labelled users in bench/quality.py.
"""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import normalize

from pipeline.settings import ProfileMethod

PCA_FIT_POSTS = 20_000  # posts sampled to find the shared directions


def mean_profiles(
    owner: np.ndarray, vectors: np.ndarray, n_users: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """(Weighted) mean of each user's post vectors (L2-normalised)."""
    sums = np.zeros((n_users, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, vectors if weights is None else vectors * weights[:, None])
    return normalize(sums).astype(np.float32)


def shared_directions(centered: np.ndarray, n_components: int, random_state: int) -> np.ndarray:
    """The top principal directions of the (centred) post vectors, fitted on a sample."""
    rng = np.random.default_rng(random_state)
    sample = centered
    if len(centered) > PCA_FIT_POSTS:
        sample = centered[rng.choice(len(centered), PCA_FIT_POSTS, replace=False)]
    _, _, components = np.linalg.svd(sample, full_matrices=False)
    return components[: min(n_components, len(components))]


def build_profiles(
    owner: np.ndarray,
    vectors: np.ndarray,
    n_users: int,
    method: ProfileMethod = "chunk_mean",
    remove_components: int = 3,
    random_state: int = 42,
    text_chars: np.ndarray | None = None,
) -> np.ndarray:
    """Profiles (n_users x dim); `owner[i]` is the user index of post (or chunk) i, `text_chars[i]`
    its length in characters (chunk_mean weighs by its square root)."""
    if len(vectors) == 0 or n_users == 0:
        raise ValueError("no posts to profile: import posts first")
    if method == "chunk_mean" and text_chars is not None:
        return mean_profiles(owner, vectors, n_users, np.sqrt(text_chars.astype(np.float64)))
    if method in ("mean", "chunk_mean"):
        return mean_profiles(owner, vectors, n_users)
    centered = vectors.astype(np.float64) - vectors.mean(axis=0, keepdims=True)
    if method == "debiased_mean" and remove_components > 0:
        directions = shared_directions(centered, remove_components, random_state)
        centered -= (centered @ directions.T) @ directions
    return mean_profiles(owner, centered, n_users)
