"""Alternatives screen: designs outside the pipeline, scored against Tribes' own clustering and
the plain baseline on the protocol's labelled sets (bench/quality.py), same profiles and seeds.

    .venv/bin/python bench/alternatives.py --seeds 3
    .venv/bin/python bench/alternatives.py --sets sample tweets_short_english --lexical 0.5

Rows per set and seed (ARI / NMI / clusters):
- tribes: the refresh's consensus of HDBSCAN runs on the UMAP spaces (bench/granularity.py's);
- plain: the plain baseline (`evaluate.plain_clusters`, mean of single-post vectors);
- lexical W: the profile with a lexical block beside it (each user's cleaned posts as one
  document, TF-IDF over `label.terms_of`, LSA to `LEXICAL_DIMS`, unit rows, times W);
- louvain R: Louvain communities (networkx, resolution R) of UMAP's fuzzy k-nearest-neighbour
  graph of the profiles, one run; "louvain stable" takes the resolution whose runs agree most.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.granularity import profiles_of, spaces_of, umap_spaces  # noqa: E402
from bench.quality import loaded_sets  # noqa: E402
from flows.evaluate import SEEDS, cleaned_posts  # noqa: E402
from pipeline import cluster, evaluate, reduce  # noqa: E402
from pipeline.label import terms_of  # noqa: E402
from pipeline.profile import USER_KEYS  # noqa: E402

LEXICAL_DIMS = 100  # LSA components of the lexical block
RESOLUTIONS = (0.3, 0.5, 0.7, 1.0, 1.3, 1.6, 2.0)  # the grid "louvain stable" chooses from
STABILITY_RUNS = 6  # Louvain runs per resolution whose agreement is measured


def lexical_block(settings, users: pl.DataFrame) -> np.ndarray:
    """Each user's posts as one document → TF-IDF (sublinear, terms in 2+ users and at most
    half of them) → LSA → unit rows; row i is user i of `users`."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    posts = cleaned_posts(settings)
    docs = posts.group_by(USER_KEYS).agg(pl.col("text_clean").str.join("\n"))
    docs = users.join(docs, on=USER_KEYS, how="left", maintain_order="left")
    tfidf = TfidfVectorizer(
        analyzer=terms_of, sublinear_tf=True, min_df=2, max_df=0.5, dtype=np.float32
    ).fit_transform(docs["text_clean"].fill_null("").to_list())
    dims = min(LEXICAL_DIMS, tfidf.shape[0] - 1, tfidf.shape[1] - 1)
    return normalize(TruncatedSVD(dims, random_state=0).fit_transform(tfidf))


def tribes_consensus(spaces) -> np.ndarray:
    """The refresh's clustering of these UMAP spaces (the default sizes)."""
    return cluster.consensus_cluster(list(spaces)).labels


def fuzzy_graph(profiles: np.ndarray, seed: int):
    """UMAP's fuzzy k-nearest-neighbour graph of the profiles (cosine, n_neighbors ≈ √users)."""
    import networkx as nx
    from umap.umap_ import fuzzy_simplicial_set

    n_neighbors = reduce.auto_n_neighbors(len(profiles))
    graph, _, _ = fuzzy_simplicial_set(profiles, n_neighbors, np.random.RandomState(seed), "cosine")
    return nx.from_scipy_sparse_array(graph.tocsr())


def louvain(graph, resolution: float, seed: int) -> np.ndarray:
    """Louvain communities of the graph, as a label per node."""
    import networkx as nx

    labels = np.zeros(graph.number_of_nodes(), int)
    parts = nx.community.louvain_communities(graph, resolution=resolution, seed=seed)
    for label, part in enumerate(parts):
        labels[list(part)] = label
    return labels


def most_stable_louvain(graph, seed: int) -> np.ndarray:
    """Louvain at the resolution of `RESOLUTIONS` whose runs agree most (mean pairwise ARI;
    a single community does not count)."""
    best, best_agreement = None, -np.inf
    for resolution in RESOLUTIONS:
        runs = [louvain(graph, resolution, s) for s in reduce.run_seeds(seed, STABILITY_RUNS)]
        agreement = evaluate.mean_pairwise_ari([r.tolist() for r in runs])
        if len(set(runs[0].tolist())) > 1 and agreement > best_agreement:
            best, best_agreement = runs[0], agreement
    return best if best is not None else runs[0]


def screen(settings, name: str, truth: dict, seed: int, args) -> list[dict]:
    """One row per method: its ARI, NMI and clusters on this set and seed."""
    users, profiles = profiles_of(settings, "chunk_mean")
    _, means = profiles_of(settings, "mean")
    known = [truth[u] for u in users["user_id"]]
    found = {
        "tribes": lambda: tribes_consensus(spaces_of(settings, name, "chunk_mean", profiles, seed)),
        "plain": lambda: evaluate.plain_clusters(means, seed),
    }
    if args.lexical:
        block = lexical_block(settings, users)
        for weight in args.lexical:
            mixed = np.hstack([profiles, weight * block]).astype(np.float32)
            found[f"lexical {weight:g}"] = lambda m=mixed: tribes_consensus(
                umap_spaces(settings, m, seed)
            )
    if args.louvain:
        graph = fuzzy_graph(profiles, seed)
        for resolution in args.louvain:
            found[f"louvain {resolution:g}"] = lambda r=resolution: louvain(graph, r, seed)
        found["louvain stable"] = lambda: most_stable_louvain(graph, seed)
    rows = []
    for method, run in found.items():
        labels = run()
        scores = evaluate.agreement(known, labels)
        rows.append(
            {"set": name, "seed": seed, "method": method, "k": len(set(labels.tolist())), **scores}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--lexical", type=float, nargs="*", default=[0.5, 1.0], metavar="W")
    parser.add_argument("--louvain", type=float, nargs="*", default=[1.0], metavar="R")
    args = parser.parse_args()
    rows = []
    started = time.perf_counter()
    for name, settings, truth in loaded_sets(args.sets):
        for seed in SEEDS[: args.seeds]:
            rows += screen(settings, name, truth, seed, args)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
    table = pl.DataFrame(rows).group_by("set", "method", maintain_order=True).mean()
    methods = table["method"].unique(maintain_order=True).to_list()
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=250, float_precision=3):
        print(f"\n{args.seeds}-seed mean ARI per set:")
        print(table.pivot(on="method", index="set", values="ari").select("set", *methods))
        overall = table.group_by("method", maintain_order=True).agg(pl.col("ari", "nmi").mean())
        tribes = table.filter(pl.col("method") == "tribes").select("set", base=pl.col("ari"))
        wins = (
            table.join(tribes, on="set")
            .group_by("method", maintain_order=True)
            .agg(beats_tribes=(pl.col("ari") > pl.col("base")).sum())
        )
        print(f"\nMean over {len(table['set'].unique())} sets:")
        print(overall.join(wins, on="method"))


if __name__ == "__main__":
    main()
