"""Provisional clusters for accounts that joined after a run, without re-clustering.

A run keeps each cluster's centre in profile space (`centroids`: the unit mean of its confident
members' profiles) and how close its members lie to it (quantiles of their cosine similarity).
A new account goes to the cluster whose centre is nearest (`assign`); its probability is the
share of that cluster's members lying farther from the centre than it does, so 0.5 means "as
close as a typical member", and 0 means farther than all of them (low confidence). Its place on
the map is the similarity-weighted mean of the clusters' map anchors.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.recommend import unit

LEVELS = np.linspace(0.0, 1.0, 21)  # the similarity quantiles kept per cluster
LOW_CONFIDENCE = 0.05  # probability under which a provisional member is low-confidence
MAP_SHARPNESS = 30.0  # softmax scale on similarities when placing a new account on the map


def centroids(profiles: np.ndarray, members: pl.DataFrame) -> pl.DataFrame:
    """Each cluster's centre and member similarity quantiles; `members` (cluster_id, is_outlier)
    row for row with `profiles`. Outliers do not count unless a cluster has nothing else."""
    vectors = unit(profiles.astype(np.float64))
    cluster = members["cluster_id"].to_numpy()
    confident = ~members["is_outlier"].to_numpy()
    rows = []
    for cluster_id in sorted(set(cluster[cluster >= 0].tolist())):
        own = cluster == cluster_id
        chosen = vectors[own & confident] if (own & confident).any() else vectors[own]
        centre = unit(chosen.mean(axis=0))
        rows.append(
            {
                "cluster_id": cluster_id,
                "centroid": centre.astype(np.float32).tolist(),
                "similarities": np.quantile(chosen @ centre, LEVELS).tolist(),
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "cluster_id": pl.Int32,
            "centroid": pl.List(pl.Float32),
            "similarities": pl.List(pl.Float64),
        },
    )


def anchors(members: pl.DataFrame) -> pl.DataFrame:
    """Each cluster's place on the map: the median of its confident members (all when none)."""
    confident = members.filter(~pl.col("is_outlier"))
    use = confident if confident.height else members
    return use.group_by("cluster_id").agg(pl.col("x").median(), pl.col("y").median())


def assign(
    profiles: np.ndarray, users: pl.DataFrame, centres: pl.DataFrame, places: pl.DataFrame
) -> pl.DataFrame:
    """`users` (platform, user_id, n_posts; row for row with `profiles`) with the nearest
    cluster of `centres` (`centroids`), its probability, is_outlier and x, y from `places`
    (`anchors`: cluster_id, x, y)."""
    if centres.height == 0:
        raise ValueError("the run has no cluster centres to assign to")
    matrix = np.asarray(centres["centroid"].to_list(), dtype=np.float64)
    similarity = unit(profiles.astype(np.float64)) @ matrix.T
    best = similarity.argmax(axis=1)
    quantiles = np.asarray(centres["similarities"].to_list(), dtype=np.float64)
    probability = np.array(
        [
            np.interp(s, quantiles[c], LEVELS, left=0.0, right=1.0)
            for s, c in zip(similarity[np.arange(len(best)), best], best, strict=True)
        ]
    )
    ids = centres["cluster_id"].to_list()
    place = centres.select("cluster_id").join(
        places, on="cluster_id", how="left", maintain_order="left"
    )
    xy = place.select("x", "y").fill_null(0.0).to_numpy()
    weights = np.exp(MAP_SHARPNESS * (similarity - similarity.max(axis=1, keepdims=True)))
    weights /= weights.sum(axis=1, keepdims=True)
    position = weights @ xy
    return users.select("platform", "user_id", "n_posts").with_columns(
        cluster_id=pl.Series([ids[b] for b in best], dtype=pl.Int32),
        probability=pl.Series(probability, dtype=pl.Float64),
        is_outlier=pl.Series(probability < LOW_CONFIDENCE),
        x=pl.Series(position[:, 0]),
        y=pl.Series(position[:, 1]),
    )


def no_members() -> pl.DataFrame:
    """What `assign` returns when there is nobody new."""
    return pl.DataFrame(
        schema={
            "platform": pl.Utf8,
            "user_id": pl.Utf8,
            "n_posts": pl.UInt32,
            "cluster_id": pl.Int32,
            "probability": pl.Float64,
            "is_outlier": pl.Boolean,
            "x": pl.Float64,
            "y": pl.Float64,
        }
    )
