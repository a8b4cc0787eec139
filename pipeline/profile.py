"""Build one profile vector per user from the embeddings of ALL of their posts.

The default, `chunk_mean`, averages the vectors of the user's posts packed into chunks of about
1,000 characters (`clean.pack_chunks`): the model then sees several posts at once, which carries
interests better than single short posts, while every post still counts. `mean`, `centered_mean`
and `debiased_mean` (top principal directions projected out) average single-post vectors.
Measured on real labelled users in bench/quality.py.
"""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import normalize

from pipeline.settings import ProfileMethod

PCA_FIT_POSTS = 20_000  # posts sampled to find the shared directions


def mean_profiles(owner: np.ndarray, vectors: np.ndarray, n_users: int) -> np.ndarray:
    """Mean of each user's post vectors (L2-normalised)."""
    sums = np.zeros((n_users, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, vectors)
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
) -> np.ndarray:
    """Profiles (n_users x dim); `owner[i]` is the user index of post i."""
    if len(vectors) == 0 or n_users == 0:
        raise ValueError("no posts to profile: import posts first")
    if method in ("mean", "chunk_mean"):  # chunk_mean: the vectors are the chunks'
        return mean_profiles(owner, vectors, n_users)
    centered = vectors.astype(np.float64) - vectors.mean(axis=0, keepdims=True)
    if method == "debiased_mean" and remove_components > 0:
        directions = shared_directions(centered, remove_components, random_state)
        centered -= (centered @ directions.T) @ directions
    return mean_profiles(owner, centered, n_users)
