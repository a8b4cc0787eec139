"""Blocking cells stay small where accounts crowd: a cell takes at most twice the mean, the
closest accounts first, the others their next nearest cell (bench/identity.py times 100,000
accounts)."""

from __future__ import annotations

import numpy as np
import polars as pl
from sklearn.preprocessing import normalize

from pipeline import people


def test_a_full_cell_sends_its_farthest_accounts_to_their_next_nearest_cell():
    closeness = np.array(
        [
            [0.4, 0.1, 0.3],  # farthest from cell 0: its next nearest is cell 2
            [0.9, 0.2, 0.1],
            [0.5, 0.3, 0.1],  # next farthest: cell 1
            [0.8, 0.2, 0.1],
            [0.7, 0.2, 0.1],
            [0.6, 0.2, 0.1],
        ]
    )
    cells = people.balanced_cells(closeness, np.argsort(-closeness, axis=1))
    assert cells.tolist() == [2, 0, 1, 0, 0, 0]  # 6 rows, 3 cells: at most 4 a cell


def test_crowded_accounts_fill_capped_cells_and_keep_their_neighbours():
    rng = np.random.default_rng(0)
    topics = rng.standard_normal((20, 32))
    crowd = np.where(rng.random(3000) < 0.8, 0, rng.integers(1, 20, 3000))  # 80% on one topic
    vectors = normalize(topics[crowd] + 0.7 * rng.standard_normal((3000, 32))).astype(np.float32)
    platforms = np.array(["a", "b", "c"])[np.arange(3000) % 3]
    centres = people.cell_centres(vectors, 30, random_state=42)
    closeness = vectors @ centres.T
    cells = people.balanced_cells(closeness, np.argsort(-closeness, axis=1))
    assert (cells >= 0).all() and np.bincount(cells).max() <= 200
    assert np.bincount(closeness.argmax(axis=1)).max() > 200  # uncapped, a cell would crowd

    a, b = people.nearest_candidates(vectors, platforms, k=5, cell_size=100, probes=6)
    similarity = vectors @ vectors.T
    similarity[platforms[:, None] == platforms[None, :]] = -np.inf
    nearest = np.argsort(-similarity, axis=1)[:, :5]
    exact = {(min(i, j), max(i, j)) for i in range(3000) for j in nearest[i]}
    found = set(zip(a.tolist(), b.tolist(), strict=True))
    assert len(found & exact) / len(exact) >= 0.8  # uncapped cells found 0.85 here too


def test_calibration_uses_every_account_below_the_cap_and_a_sample_above(monkeypatch):
    posts = pl.DataFrame(
        {
            "platform": ["a"] * 9 + ["b"] * 4 + ["a"] * 5,
            "user_id": ["x"] * 9 + ["y"] * 4 + ["z"] * 5,
            "text_clean": [f"post {i}" for i in range(18)],
        }
    ).with_row_index("n")
    posts = posts.filter(pl.col("n") != 12).drop("n")  # y keeps 3 posts: too few to split
    everyone = people.calibration_rows(posts, random_state=0)
    assert posts[everyone]["user_id"].unique().sort().to_list() == ["x", "z"]
    assert len(everyone) == 9 + 5 and (np.diff(everyone) > 0).all()

    monkeypatch.setattr(people, "CALIBRATION_ACCOUNTS", 1)
    sampled = posts[people.calibration_rows(posts, random_state=0)]
    assert sampled["user_id"].n_unique() == 1
    assert sampled.height == {"x": 9, "z": 5}[sampled["user_id"][0]]
