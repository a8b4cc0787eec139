"""Granularity probe: how each candidate rule for HDBSCAN's min_cluster_size scores on the
protocol's labelled sets (bench/quality.py), on the SAME consensus UMAP spaces per set and seed.

    .venv/bin/python bench/granularity.py --sets sample tweet_topic_users --seeds 1

For every set: the consensus's ARI / NMI / clusters at each size of the grid (what a perfect
rule would pick), and what each label-free criterion picks; then the mean over sets per rule.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quality import BENCH, loaded_sets  # noqa: E402
from flows.evaluate import SEEDS, cleaned_posts  # noqa: E402
from flows.vectors import stored_vectors  # noqa: E402
from pipeline import cluster, evaluate, profile, reduce  # noqa: E402

VARIANTS = {  # (selection, split share, min_samples as a divisor of the size)
    "eom+split": ("eom", cluster.MAX_CLUSTER_SHARE, 2),
    "eom+split/3": ("eom", 3, 2),
    "eom+split/10": ("eom", 10, 2),
    "eom": ("eom", None, 2),
    "eom samples=size": ("eom", None, 1),
}
SIZE_RULES = {  # fixed rules of the users, beside the label-free criteria
    "users/25": lambda n: max(3, round(n / 25)),  # Tribes' rule until 2026-12-02
    "users/40": lambda n: max(2, n // evaluate.PLAIN_USERS_PER_SIZE),
    "users^0.7/4": cluster.auto_min_cluster_size,  # Tribes' rule: more groups when big
}


SELECTION_SPACES = 3  # spaces the persistence is measured on


def size_grid(n_users: int, steps: int = 9) -> list[int]:
    """Candidate minimum cluster sizes: geometric from 3 to a quarter of the users, and the
    sizes of the fixed rules."""
    top = max(4, n_users // 4)
    fixed = {rule(n_users) for rule in SIZE_RULES.values()}
    return sorted({int(round(s)) for s in np.geomspace(3, top, steps)} | fixed)


def total_persistence(points: np.ndarray, size: int) -> float:
    """The summed persistence of the clusters HDBSCAN finds with minimum cluster size `size`."""
    params = cluster.hdbscan_params(len(points), size)
    model = cluster.run_hdbscan(points, params.min_cluster_size, params.min_samples)
    return float(model.cluster_persistence_.sum()) if model.labels_.max() >= 0 else 0.0


def profiles_of(settings, method: str) -> tuple[pl.DataFrame, np.ndarray]:
    """The users (row i = user i) and their profiles, as the refresh builds them."""
    posts = cleaned_posts(settings)
    users = profile.user_index(posts)
    units = profile.profile_units(posts, method, settings.chunk_chars)
    vectors = stored_vectors(settings, units["text_clean"].to_list(), f"{method} units")
    return users, profile.user_profiles(units, vectors, users, method)


def umap_spaces(settings, profiles: np.ndarray, seed: int) -> np.ndarray:
    """The refresh's consensus UMAP spaces of the profiles (its settings and seeds)."""
    spaces, _ = reduce.consensus_spaces(
        profiles,
        settings.umap_n_components,
        settings.umap_n_neighbors,
        settings.umap_min_dist,
        seed,
        settings.consensus_runs,
    )
    return spaces


def spaces_of(settings, name: str, method: str, profiles: np.ndarray, seed: int) -> np.ndarray:
    """`umap_spaces` of the set's profiles (cached per set, method and seed)."""
    path = BENCH / "granularity" / f"{name.removesuffix('_fine')}-{method}-{seed}.npy"
    if path.exists():
        return np.load(path)
    spaces = umap_spaces(settings, profiles, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, spaces)
    return spaces


def separation(profiles: np.ndarray, found: np.ndarray) -> dict:
    """How well the consensus's groups separate the profiles themselves: the silhouette (cosine)
    and the Calinski-Harabasz index (0 for a single group)."""
    from sklearn.metrics import calinski_harabasz_score, silhouette_score

    if len(set(found.tolist())) < 2:
        return {"silhouette": -1.0, "calinski_harabasz": 0.0}
    return {
        "silhouette": float(silhouette_score(profiles, found, metric="cosine")),
        "calinski_harabasz": float(calinski_harabasz_score(profiles, found)),
    }


def criteria(
    spaces: list[np.ndarray], runs: list[cluster.Clustering], size: int, profiles, found
) -> dict:
    """Label-free measures of one granularity: the clusters' total persistence, how much the
    runs agree, their noise, how well the consensus separates the profiles."""
    first = spaces[:SELECTION_SPACES]
    return {
        "persistence": float(np.mean([total_persistence(s, size) for s in first])),
        "stability": evaluate.mean_pairwise_ari([r.labels.tolist() for r in runs]),
        "noise": float(np.mean([r.noise_share for r in runs])),
        **separation(profiles, found),
    }


def probe(settings, name, method, seed, truth, variants=VARIANTS) -> list[dict]:
    """One row per (variant, size): the consensus's scores and the criteria measured."""
    users, profiles = profiles_of(settings, method)
    truth = [truth[u] for u in users["user_id"]]
    spaces = list(spaces_of(settings, name, method, profiles, seed))
    rows = []
    for variant, (selection, share, samples) in variants.items():
        for size in size_grid(len(truth)):
            params = cluster.HdbscanParams(size, max(2, size // samples), selection, share)
            runs = [cluster.cluster_with(space, params) for space in spaces]
            found = cluster.combine_runs(runs, size).labels
            rows.append(
                {
                    "set": name,
                    "method": method,
                    "seed": seed,
                    "variant": variant,
                    "size": size,
                    **evaluate.agreement(truth, found),
                    "k": len(set(found.tolist())),
                    "n_users": len(truth),
                    "labels": len(set(truth)),
                    **criteria(spaces, runs, size, profiles, found),
                }
            )
    return rows


def picks(rows: pl.DataFrame) -> pl.DataFrame:
    """Per set and variant, the ARI / NMI / clusters at the size each rule picks: the fixed
    rules, the most persistent, the most stable, the best separated (silhouette,
    Calinski-Harabasz), and the best by the labels (an oracle); variant "any": each criterion's
    pick among every variant and size."""
    keys = ["set", "method", "seed", "variant"]
    chosen = []
    users = rows.group_by("set").agg(pl.col("n_users").first())
    for rule, size_of in SIZE_RULES.items():
        sizes = users.with_columns(size=pl.col("n_users").map_elements(size_of, pl.Int64))
        best = rows.join(sizes.select("set", "size"), on=["set", "size"])
        chosen.append(
            best.select(*keys, pl.lit(rule).alias("rule"), "size", "ari", "nmi", "k", "labels")
        )
    for rule, column in (
        ("persistence", "persistence"),
        ("stability", "stability"),
        ("silhouette", "silhouette"),
        ("calinski_harabasz", "calinski_harabasz"),
        ("oracle", "ari"),
    ):
        ranked = rows.sort(column, descending=True)
        best = ranked.group_by(keys, maintain_order=True).first()
        across = ranked.group_by(keys[:-1], maintain_order=True).first()  # any variant and size
        for picked in (best, across.with_columns(variant=pl.lit("any"))):
            chosen.append(
                picked.select(
                    *keys, pl.lit(rule).alias("rule"), "size", "ari", "nmi", "k", "labels"
                )
            )
    return pl.concat(chosen).sort(keys + ["rule"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--methods", nargs="*", default=["chunk_mean"])
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", default=str(BENCH / "granularity" / "probe.parquet"))
    args = parser.parse_args()
    rows = []
    started = time.perf_counter()
    for name, settings, truth in loaded_sets(args.sets):
        for method in args.methods:
            for seed in SEEDS[: args.seeds]:
                chosen = {v: VARIANTS[v] for v in args.variants}
                rows += probe(settings, name, method, seed, truth, chosen)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        pl.DataFrame(rows).write_parquet(args.out)
    table = picks(pl.DataFrame(rows))
    print(table)
    with pl.Config(tbl_rows=200, tbl_cols=20):
        overall = table.group_by("method", "variant", "rule").agg(pl.col("ari", "nmi").mean())
        print(overall.sort("ari"))
        per_set = table.group_by("set", "method", "variant", "rule").agg(pl.col("ari").mean())
        print(per_set.pivot(on="set", index=["method", "variant", "rule"], values="ari"))


if __name__ == "__main__":
    main()
