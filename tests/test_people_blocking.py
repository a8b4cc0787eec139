"""Candidate blocking for `tribes people suggest`: the cells found by k-means give exactly the
all-pairs nearest neighbours while few, and nearly all of them when many (bench/identity.py
times 100,000 accounts)."""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import normalize

from pipeline import people


def clustered_accounts(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around 50 topics, on three platforms."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((50, 32))
    vectors = topics[rng.integers(0, 50, n)] + 0.7 * rng.standard_normal((n, 32))
    return normalize(vectors).astype(np.float32), np.array(["a", "b", "c"])[np.arange(n) % 3]


def all_pairs(vectors: np.ndarray, platforms: np.ndarray, k: int) -> set[tuple[int, int]]:
    """Every account's k nearest accounts on other platforms, by comparing all pairs."""
    similarity = vectors @ vectors.T
    similarity[platforms[:, None] == platforms[None, :]] = -np.inf
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    return {(min(a, b), max(a, b)) for a in range(len(vectors)) for b in nearest[a]}


def test_few_cells_give_exactly_the_all_pairs_neighbours_on_other_platforms():
    vectors, platforms = clustered_accounts(1500)
    a, b = people.nearest_candidates(vectors, platforms, k=5, cell_size=400, probes=6)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == all_pairs(vectors, platforms, 5)
    assert (platforms[a] != platforms[b]).all() and (a < b).all()


def test_many_cells_find_nearly_all_neighbours_comparing_a_fraction_of_pairs():
    vectors, platforms = clustered_accounts(3000)
    a, b = people.nearest_candidates(vectors, platforms, k=5, cell_size=100, probes=6)
    found = set(zip(a.tolist(), b.tolist(), strict=True))
    exact = all_pairs(vectors, platforms, 5)
    assert len(found & exact) / len(exact) >= 0.95
    assert (platforms[a] != platforms[b]).all()


def test_a_lone_platform_has_no_candidates():
    vectors, _ = clustered_accounts(50)
    a, b = people.nearest_candidates(vectors, np.array(["a"] * 50), k=5)
    assert len(a) == len(b) == 0
