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
import polars as pl

from pipeline.clean import pack_chunks
from pipeline.settings import ProfileMethod

PCA_FIT_POSTS = 20_000  # posts sampled to find the shared directions
USER_KEYS = ["platform", "user_id"]  # what names a user in every frame


def profile_units(posts: pl.DataFrame, method: ProfileMethod, chunk_chars: int) -> pl.DataFrame:
    """The texts a profile averages: each user's cleaned posts packed into chunks (`chunk_mean`)
    or the single posts (the other methods); columns platform, user_id, text_clean, text_hash."""
    if method == "chunk_mean":
        return pack_chunks(posts, chunk_chars)
    return posts.select("platform", "user_id", "text_clean", "text_hash")


def user_index(posts: pl.DataFrame) -> pl.DataFrame:
    """Distinct users (platform, user_id, n_posts), sorted: row i is user i."""
    return posts.group_by(USER_KEYS).len("n_posts").sort(USER_KEYS)


def rows_of(frame: pl.DataFrame, users: pl.DataFrame) -> np.ndarray:
    """For each row of `frame`, the row number of its user (platform, user_id) in `users`."""
    index = users.select(USER_KEYS).with_row_index("row")
    return frame.join(index, on=USER_KEYS, how="left", maintain_order="left")["row"].to_numpy()


def mean_profiles(
    owner: np.ndarray, vectors: np.ndarray, n_users: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """(Weighted) mean of each user's post vectors (L2-normalised)."""
    from sklearn.preprocessing import normalize

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


def user_profiles(
    units: pl.DataFrame,
    vectors: np.ndarray,
    users: pl.DataFrame,
    method: ProfileMethod = "chunk_mean",
    remove_components: int = 3,
    random_state: int = 42,
) -> np.ndarray:
    """One profile per row of `users` (`user_index`) from its profile units (`profile_units`:
    platform, user_id, text_clean) and their vectors, row for row."""
    return build_profiles(
        rows_of(units, users),
        vectors,
        users.height,
        method,
        remove_components,
        random_state,
        units["text_clean"].str.len_chars().to_numpy(),
    )
