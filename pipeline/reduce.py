"""Reduce user profiles with UMAP: the clustering spaces and a 2-D map (`consensus_spaces`)."""

from __future__ import annotations

import numpy as np

MAP_MIN_DIST = 0.1  # the 2-D map spreads users a little more than the clustering spaces


def auto_n_neighbors(n_users: int) -> int:
    """Neighbourhood size scaled to the number of users."""
    return int(min(30, max(5, round(n_users**0.5))))


def umap_params(
    n_users: int, n_components: int, n_neighbors: int | None, min_dist: float
) -> dict[str, int | float]:
    """UMAP's sizes for `n_users` points: the settings', scaled and clipped to what fits."""
    if n_users < 4:
        raise ValueError(f"need at least 4 users to cluster, found {n_users}")
    return {
        "n_neighbors": min(n_neighbors or auto_n_neighbors(n_users), n_users - 1),
        "n_components": min(n_components, n_users - 2),
        "min_dist": min_dist,
    }


def run_seeds(random_state: int, runs: int) -> list[int]:
    """`runs` independent seeds drawn from `random_state` (other states share none of them)."""
    return [int(seed) for seed in np.random.SeedSequence(random_state).generate_state(runs)]


def umap_reduce(
    profiles: np.ndarray,
    n_components: int,
    n_neighbors: int | None = None,
    min_dist: float = 0.0,
    random_state: int = 42,
) -> np.ndarray:
    """UMAP (cosine) to `n_components` dimensions; reproducible for a given random_state."""
    import umap  # imported here: numba compiles on first import (~30 s per process)

    n_users = len(profiles)
    params = umap_params(n_users, n_components, n_neighbors, min_dist)
    reducer = umap.UMAP(
        **params,
        metric="cosine",
        random_state=random_state,
        n_jobs=1,  # a seeded UMAP runs on one thread anyway; saying so spares a warning per run
        init="spectral" if n_users > params["n_components"] + 1 else "random",
    )
    return reducer.fit_transform(profiles).astype(np.float32)


def consensus_spaces(
    profiles: np.ndarray,
    n_components: int,
    n_neighbors: int | None,
    min_dist: float,
    random_state: int,
    runs: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The reduce step: `runs` UMAP spaces of the profiles (one per `run_seeds` seed), stacked,
    for the consensus clustering, and the 2-D plane of the map."""
    spaces = [
        umap_reduce(profiles, n_components, n_neighbors, min_dist, seed)
        for seed in run_seeds(random_state, runs)
    ]
    plane = umap_reduce(profiles, 2, n_neighbors, MAP_MIN_DIST, random_state)
    return np.stack(spaces), plane
