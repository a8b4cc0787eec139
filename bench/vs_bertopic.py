"""Tribes vs BERTopic on the same precomputed post embeddings: wall time, peak memory, quality.

    .venv/bin/python bench/vs_bertopic.py                    # 200,000 posts (issue 7)
    .venv/bin/python bench/vs_bertopic.py --n 5000           # a quick check
    .venv/bin/python bench/vs_bertopic.py --n 5000 --skip-bertopic

A deterministic sample of real posts (the N with the smallest blake2b(post_id)) is cleaned with
`pipeline.clean.clean_posts` and embedded ONCE with Tribes' default model and backend; the vectors
are cached under .tribes/bench/vs_bertopic/, keyed by the model id and the posts' text hashes.
Each contender then runs in its own fresh subprocess that loads the cached vectors fully (no
mmap), so its peak memory is its own. Tribes runs its refresh's steps (profile → reduce → cluster
→ label); BERTopic runs `fit_transform(docs, embeddings)` with bench/quality.py's baseline
settings (BERTopic's usual 15 neighbours, 5-D, min_cluster_size N/1000; `--bertopic-params
tribes`: the rules Tribes applies to its users, at N posts; a run whose HDBSCAN would not fit in
memory is refused before it starts).
Quality: ARI/NMI of each method's user grouping against the page labels. Prints one markdown
report on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = ROOT / ".tribes" / "bench" / "vs_bertopic"
SOURCES = [
    ROOT.parent / "shared" / "data" / "fb_pages_2016" / "posts_all.parquet",
    ROOT / "data" / "sample" / "fb_pages_sample.parquet",
]
TRIBES_KEYS = (  # the settings the Tribes child needs
    "umap_n_components",
    "umap_n_neighbors",
    "umap_min_dist",
    "consensus_runs",
    "min_cluster_size",
    "min_samples",
    "profile_remove_components",
    "top_terms",
    "representative_posts",
    "label_terms",
)


@dataclass(frozen=True)
class Sample:
    """The benchmark's inputs, as files both children read."""

    posts_path: Path  # user_id, label, post_id, text_clean, text_hash; same row order as vectors
    vectors_path: Path
    source: Path
    model: str
    embed_seconds: float | None  # None: the vectors came from the cache


# ---------------------------------------------------------------- data and embeddings


def sample_posts(n: int, min_posts_per_user: int) -> tuple[pl.DataFrame, Path]:
    """The first `n` cleanable posts by blake2b(post_id), cleaned; page label as `label`."""
    import quality  # bench/quality.py (this script's folder is on sys.path); imports Prefect

    from pipeline.clean import clean_posts, text_hash

    source = next(p for p in SOURCES if p.exists())
    raw = quality.fb_pages("user_label", source).with_columns(platform=pl.lit("facebook"))
    cleanable = clean_posts(raw)["post_id"].implode()  # not empty, not a per-page duplicate
    order = pl.Series([text_hash(p) for p in raw["post_id"]])
    picked = (
        raw.with_columns(order=order).filter(pl.col("post_id").is_in(cleanable)).sort("order")
    ).head(n)
    labels = raw.select("user_id", "label").unique("user_id")
    posts = clean_posts(picked, min_posts_per_user).join(labels, on="user_id", how="left")
    return posts.select("user_id", "label", "post_id", "text_clean", "text_hash"), source


def cache_key(model_id: str, hashes: list[str]) -> str:
    """A digest of the model id and the posts' text hashes, in order: the embeddings' file name."""
    digest = hashlib.blake2b(model_id.encode(), digest_size=10)
    for h in hashes:
        digest.update(h.encode())
    return digest.hexdigest()


def embed_posts(posts: pl.DataFrame, settings: Any, spec: Any, out: Path) -> float:
    """Embed each distinct text with Tribes' prepared model, save the vectors per post; seconds."""
    from pipeline import embed

    model = embed.load_model(spec, settings.device, settings.model_download)
    texts = posts.unique("text_hash", maintain_order=True)
    started, parts = time.perf_counter(), []
    for chunk in texts.iter_slices(settings.embed_chunk):
        parts.append(
            embed.encode(model, chunk["text_clean"].to_list(), spec.prefix, settings.batch_size)
        )
        done = sum(len(p) for p in parts)
        rate = done / (time.perf_counter() - started)
        print(f"  embedded {done:,}/{texts.height:,} texts ({rate:.0f}/s)", file=sys.stderr)
    row = {h: i for i, h in enumerate(texts["text_hash"])}
    vectors = np.concatenate(parts)[[row[h] for h in posts["text_hash"]]]
    partial = out.with_suffix(".partial.npy")
    np.save(partial, vectors)
    partial.rename(out)
    return time.perf_counter() - started


def prepare(posts: pl.DataFrame, source: Path, settings: Any) -> Sample:
    """Write the sampled posts; embed them unless this exact set is cached."""
    from pipeline import embed

    spec = embed.prepare_model(settings)
    key = cache_key(spec.model_id, posts["text_hash"].to_list())
    CACHE.mkdir(parents=True, exist_ok=True)
    posts_path, vectors_path = CACHE / f"posts-{key}.parquet", CACHE / f"embeddings-{key}.npy"
    posts.write_parquet(posts_path)
    seconds = None
    if not vectors_path.exists():
        print(f"embedding {posts.height:,} posts with {spec.model_id} (once)", file=sys.stderr)
        seconds = embed_posts(posts, settings, spec, vectors_path)
    model = f"{spec.name} ({spec.backend})"
    return Sample(posts_path, vectors_path, source, model, seconds)


# ---------------------------------------------------------------- parameters


def tribes_rules(n_points: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """The UMAP/HDBSCAN parameters pipeline.reduce and pipeline.cluster pick for `n_points`."""
    from pipeline.cluster import hdbscan_params
    from pipeline.reduce import umap_params

    umap = umap_params(
        n_points, cfg["umap_n_components"], cfg["umap_n_neighbors"], cfg["umap_min_dist"]
    )
    hdbscan = hdbscan_params(n_points, cfg["min_cluster_size"], cfg["min_samples"])
    return {
        "umap": umap,
        "hdbscan": {k: v for k, v in vars(hdbscan).items() if k != "split_share"},
    }


def bertopic_params(n_posts: int, cfg: dict[str, Any], preset: str) -> dict[str, Any]:
    """BERTopic's UMAP/HDBSCAN on `n_posts` points: Tribes' rules (`tribes`), or the settings of
    bench/quality.py's BERTopic baseline (`quality`: BERTopic-style defaults, scaled size)."""
    if preset == "tribes":
        return tribes_rules(n_posts, cfg)
    import quality  # this script's folder is on sys.path; imports Prefect

    return quality.bertopic_params(n_posts)


def core_distance_bytes(n_points: int, hdbscan: dict[str, Any]) -> int:
    """HDBSCAN's k-NN core-distance arrays (float64 + intp per neighbour); above 16,384 points
    they are computed in joblib workers and stacked again in the parent, so counted twice."""
    k = (hdbscan.get("min_samples") or hdbscan["min_cluster_size"]) + 1
    return n_points * k * 16 * (2 if n_points > 16_384 else 1)


def params_text(params: dict[str, Any]) -> str:
    return "; ".join(
        f"{name} " + ", ".join(f"{k}={v}" for k, v in values.items())
        for name, values in params.items()
    )


# ---------------------------------------------------------------- the children


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: a child started from the parent, which
    holds the embedding model, inherits the parent's RSS at fork into its ru_maxrss."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB; not Linux


class StageClock:
    """Wall seconds per stage, and how much of them numba spent compiling (its event API)."""

    def __init__(self) -> None:
        from numba.core import event

        self.wall: dict[str, float] = {}
        self.jit: dict[str, float] = {}
        self._compiling = event.TimingListener()  # outermost compilations only
        event.register("numba:compile", self._compiling)

    def compiling(self) -> float:
        return self._compiling.duration if self._compiling.done else 0.0

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        wall, jit = time.perf_counter(), self.compiling()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.jit[name] = self.jit.get(name, 0.0) + self.compiling() - jit


def run_tribes(
    posts: pl.DataFrame, vectors: np.ndarray, cfg: dict[str, Any], clock: StageClock
) -> dict[str, Any]:
    """The refresh's profile → reduce → cluster → label steps with Tribes' settings; the posts
    (one vector each) are the profile units."""
    from pipeline import cluster, label, profile, reduce

    seed = cfg["random_state"]
    units = posts.with_columns(platform=pl.lit("facebook"))
    with clock.stage("profile"):
        users = profile.user_index(units)
        profiles = profile.user_profiles(
            units, vectors, users, "mean", cfg["profile_remove_components"], seed
        )
    with clock.stage("reduce"):
        spaces, _plane = reduce.consensus_spaces(
            profiles,
            cfg["umap_n_components"],
            cfg["umap_n_neighbors"],
            cfg["umap_min_dist"],
            seed,
            cfg["consensus_runs"],
        )
    with clock.stage("cluster"):
        found = cluster.consensus_cluster(list(spaces), cfg["min_cluster_size"], cfg["min_samples"])
        members = cluster.members(users, found)
    with clock.stage("label"):
        terms = label.member_terms(members, units, cfg["top_terms"])
        clusters = label.describe_clusters(
            members, terms, units, vectors, cfg["label_terms"], cfg["representative_posts"]
        )
    return {
        "points": users.height,
        "users": users["user_id"].to_list(),
        "groups": found.labels.tolist(),
        "n_clusters": clusters.height,
        "names": clusters["label"].to_list(),
    }


def time_method(obj: object, name: str, clock: StageClock, stage_name: str) -> None:
    """Wrap `obj.name` so that the time spent in it counts as stage `stage_name`."""
    original: Callable[..., Any] = getattr(obj, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        with clock.stage(stage_name):
            return original(*args, **kwargs)

    setattr(obj, name, timed)


def run_bertopic(
    posts: pl.DataFrame, vectors: np.ndarray, cfg: dict[str, Any], clock: StageClock
) -> dict[str, Any]:
    """`BERTopic.fit_transform(docs, embeddings)`; its UMAP and HDBSCAN steps timed inside it."""
    from bertopic import BERTopic
    from hdbscan import HDBSCAN
    from sklearn.feature_extraction.text import CountVectorizer
    from umap import UMAP

    from pipeline.label import terms_of

    params = cfg["params"]
    model = BERTopic(
        umap_model=UMAP(**params["umap"], metric="cosine", random_state=cfg["random_state"]),
        hdbscan_model=HDBSCAN(**params["hdbscan"]),
        vectorizer_model=CountVectorizer(analyzer=terms_of),
        calculate_probabilities=False,
    )
    time_method(model, "_reduce_dimensionality", clock, "reduce")
    time_method(model, "_cluster_embeddings", clock, "cluster")
    wall, jit = time.perf_counter(), clock.compiling()
    topics, _ = model.fit_transform(posts["text_clean"].to_list(), embeddings=vectors)
    clock.wall["topics + rest"] = time.perf_counter() - wall - sum(clock.wall.values())
    clock.jit["topics + rest"] = clock.compiling() - jit - sum(clock.jit.values())
    topics = np.asarray(topics)
    return {
        "points": len(topics),
        "topics": topics.tolist(),
        "n_clusters": len(set(topics.tolist()) - {-1}),
        "noise_share": float((topics == -1).mean()),
    }


def child(method: str, posts_path: Path, vectors_path: Path, cfg: dict, out: Path) -> None:
    """One contender in this fresh process; writes its timings, memory and groups as JSON."""
    warnings.filterwarnings("ignore", message=".*overridden to 1 by setting random_state.*")
    clock = StageClock()
    started = time.perf_counter()
    import hdbscan  # noqa: F401 - imported before the clock, in both children
    import sklearn  # noqa: F401
    import umap  # noqa: F401

    if method == "bertopic":
        import bertopic  # noqa: F401 - pulls in torch and sentence-transformers

    imported = time.perf_counter() - started
    posts = pl.read_parquet(posts_path)
    vectors = np.load(vectors_path)  # fully into memory, as the refresh loads them from DuckDB
    before = peak_rss_mb()
    run = run_tribes if method == "tribes" else run_bertopic
    result = run(posts, vectors, cfg, clock)
    result |= {
        "stages": clock.wall,
        "jit": clock.jit,
        "total": sum(clock.wall.values()),
        "total_jit": sum(clock.jit.values()),
        "import_s": imported,
        "before_rss_mb": before,
        "peak_rss_mb": peak_rss_mb(),
    }
    out.write_text(json.dumps(result))


# ---------------------------------------------------------------- the parent


def watch_memory(pid: int, stop: threading.Event, peak: list[float]) -> None:
    """Sample the PSS of a process and all its descendants (joblib workers) every 0.5 s."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        total = 0
        with contextlib.suppress(psutil.Error):
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_full_info().pss
        peak[0] = max(peak[0], total / 2**20)
        stop.wait(0.5)


def run_child(method: str, sample: Sample, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one contender in a fresh interpreter; its result plus the sampled tree peak."""
    with tempfile.NamedTemporaryFile(suffix=".json", dir=CACHE, delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, __file__, "--child", method, "--posts", str(sample.posts_path)]
    command += ["--vectors", str(sample.vectors_path), "--config", json.dumps(cfg)]
    print(f"running {method} in a fresh process ...", file=sys.stderr)
    stop, peak = threading.Event(), [0.0]
    started = time.perf_counter()
    proc = subprocess.Popen([*command, "--out", str(out)])
    watcher = threading.Thread(target=watch_memory, args=(proc.pid, stop, peak), daemon=True)
    watcher.start()
    code = proc.wait()
    stop.set()
    watcher.join()
    if code != 0:
        out.unlink(missing_ok=True)
        raise SystemExit(f"the {method} process failed with exit code {code}")
    result = json.loads(out.read_text())
    out.unlink()
    return result | {"tree_pss_mb": peak[0], "process_s": time.perf_counter() - started}


def machine() -> str:
    """CPU model, cores, memory."""
    import psutil

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM; load average {load} at start"


def seconds_text(wall: float, jit: float) -> str:
    return f"{wall:.1f}" + (f" (JIT {jit:.1f})" if jit >= 0.05 else "")


def stage_text(result: dict[str, Any]) -> str:
    return " · ".join(
        f"{name} {seconds_text(wall, result['jit'][name])}"
        for name, wall in result["stages"].items()
    )


def row(
    name: str, points: str, result: dict[str, Any], scores: dict[str, float], clusters: str
) -> str:
    cells = [
        name,
        points,
        stage_text(result),
        seconds_text(result["total"], result["total_jit"]),
        f"{result['peak_rss_mb']:.0f}",
        f"{result['tree_pss_mb']:.0f}",
        f"{scores['ari']:.3f}",
        f"{scores['nmi']:.3f}",
        clusters,
    ]
    return "| " + " | ".join(cells) + " |"


def verdict(ok: bool) -> str:
    return "**holds**" if ok else "**does not hold**"


def report(
    args: argparse.Namespace,
    sample: Sample,
    tribes_cfg: dict[str, Any],
    params: dict[str, Any],
    results: dict[str, dict[str, Any]],
    scores: dict[str, dict[str, float]],
    n_labels: int,
) -> None:
    """The markdown report: context, the table, the ratios against the targets, notes."""
    posts = pl.read_parquet(sample.posts_path, columns=["user_id"])
    tribes = results["tribes"]
    now = dt.datetime.now().astimezone()
    print(f"# Tribes vs BERTopic on the same post embeddings — {now:%Y-%m-%d %H:%M %Z}\n")
    print(f"- machine: {machine()}; Python {platform.python_version()}")
    print(
        f"- data: N = {posts.height:,} cleaned posts of {posts['user_id'].n_unique()} pages "
        f"({sample.source.name}; the first {args.n:,} cleanable posts by blake2b(post_id), "
        f"pages with < {args.min_posts} of them left out), {n_labels} page labels (user_label)"
    )
    embedded = (
        f"embedded in this run ({sample.embed_seconds:.0f} s)"
        if sample.embed_seconds is not None
        else "reused from the cache"
    )
    print(
        f"- embeddings: {sample.model}, one vector per post, {embedded}: "
        f"`{sample.vectors_path.relative_to(ROOT)}`; each process loads them fully (no mmap)"
    )
    print(
        "- Tribes: its refresh's steps with its default settings, which give for "
        f"{tribes['points']} users {params_text(tribes_rules(tribes['points'], tribes_cfg))}, "
        f"random_state={args.seed}; profile_method = mean, because the vectors are per post "
        "(the default chunk_mean averages vectors of chunks of posts). reduce = "
        f"{tribes_cfg['consensus_runs']} 5-D UMAP runs plus the 2-D map plane (min_dist 0.1); "
        "cluster = HDBSCAN on each, combined by consensus; label = weighted c-TF-IDF terms "
        "kept when used together, representative posts, short labels"
    )
    versions = ", ".join(
        f"{p} {importlib.metadata.version(p)}" for p in ("bertopic", "umap-learn", "hdbscan")
    )
    print(
        f"- BERTopic ({versions}): fit_transform(docs, embeddings) with {params_text(params)}, "
        f"metric=cosine, random_state={args.seed} ({args.bertopic_params} preset); "
        "CountVectorizer with Tribes' token pattern and stop words; calculate_probabilities=False"
    )
    print(
        f"- **what is clustered**: BERTopic clusters the {posts.height:,} POSTS; Tribes clusters "
        f"the {tribes['points']} USERS (one profile per page, from all of its posts). That is "
        "where the difference in time and memory comes from.\n"
    )
    print(
        "| method | points clustered | wall s per stage (of it numba compiling) | total s "
        "| peak RSS MB "
        "| peak PSS MB incl. workers | ARI | NMI | clusters |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        row(
            "Tribes",
            f"{tribes['points']} users",
            tribes,
            scores["tribes"],
            f"{tribes['n_clusters']} user clusters",
        )
    )
    if "bertopic" in results:
        bert = results["bertopic"]
        print(
            row(
                "BERTopic",
                f"{bert['points']:,} posts",
                bert,
                scores["bertopic"],
                f"{bert['n_clusters']} topics ({bert['noise_share']:.0%} of posts outliers) "
                f"→ {n_labels} user groups",
            )
        )
        print_targets(tribes, bert, scores)
    print_notes(results)


def print_targets(tribes: dict, bert: dict, scores: dict[str, dict[str, float]]) -> None:
    """Ratios against issue 7's targets: ≥ 2× faster, ≤ half the memory, equal or better quality."""
    speed = bert["total"] / tribes["total"]
    warm = (bert["total"] - bert["total_jit"]) / (tribes["total"] - tribes["total_jit"])
    rss = tribes["peak_rss_mb"] / bert["peak_rss_mb"]
    pss = tribes["tree_pss_mb"] / bert["tree_pss_mb"]
    quality_ok = all(scores["tribes"][m] >= scores["bertopic"][m] for m in ("ari", "nmi"))
    print(
        f"\n- time, BERTopic / Tribes: **{speed:.1f}×** as measured (fresh processes), "
        f"{warm:.1f}× without numba's compile time; target ≥ 2×: {verdict(speed >= 2)} as "
        f"measured, {verdict(warm >= 2)} without compile time"
    )
    print(
        f"- memory, Tribes / BERTopic: **{rss:.2f}** peak RSS, {pss:.2f} peak PSS incl. workers; "
        f"target ≤ 0.5 on both: {verdict(rss <= 0.5 and pss <= 0.5)}"
    )
    print(
        f"- quality, Tribes vs BERTopic: ARI {scores['tribes']['ari']:.3f} vs "
        f"{scores['bertopic']['ari']:.3f}, NMI {scores['tribes']['nmi']:.3f} vs "
        f"{scores['bertopic']['nmi']:.3f}; target equal or better on both: {verdict(quality_ok)}"
    )


def print_notes(results: dict[str, dict[str, Any]]) -> None:
    print("\nNotes:\n")
    for name, r in results.items():
        print(
            f"- {name}: {r['before_rss_mb']:.0f} MB peak RSS after imports and loading the "
            f"data, before its stages; imports {r['import_s']:.1f} s (not timed); whole "
            f"process {r['process_s']:.0f} s"
        )
    print(
        "- total s: Tribes = profile + reduce + cluster + label (the profile stage counted "
        "too); BERTopic = its fit_transform "
        "call (UMAP and HDBSCAN timed inside it; the rest is c-TF-IDF topics, representative "
        "documents and bookkeeping)"
    )
    print(
        "- peak RSS: the process's own VmHWM (its ru_maxrss would include this parent's RSS, "
        "inherited at fork). Peak PSS: the process and its descendants "
        "(hdbscan computes core distances in joblib worker processes above 16,384 points), "
        "sampled every 0.5 s, shared pages counted once"
    )
    print(
        "- ARI/NMI against the page labels, per user: Tribes' clusters as found (k discovered); "
        "BERTopic's users grouped by their topic mix with KMeans given the TRUE number of labels, "
        "as in bench/quality.py (which favours BERTopic)"
    )
    print(
        "- JIT: numba compiles UMAP's code on first use in each fresh process (as in every "
        "refresh), measured with numba's compile events; UMAP on more than 4,096 points also "
        "compiles NN-descent, which Tribes' per-user UMAP does not need"
    )
    print("- UMAP runs single-threaded in both: a fixed random_state turns its parallelism off")


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="posts to sample (default 200,000)")
    parser.add_argument("--seed", type=int, default=42, help="random_state of UMAP and KMeans")
    parser.add_argument("--skip-bertopic", action="store_true", help="run Tribes only")
    parser.add_argument(
        "--bertopic-params",
        choices=["tribes", "quality"],
        default="quality",
        help="BERTopic's UMAP/HDBSCAN: the settings of bench/quality.py's BERTopic baseline "
        "(default: 15 neighbours, 5-D, min_cluster_size N/1000), or Tribes' rules at N points "
        "(N/25 per cluster: sized for users, not posts; ~24 GiB at 200,000 posts)",
    )
    parser.add_argument(
        "--force", action="store_true", help="run BERTopic even if HDBSCAN looks too big for RAM"
    )
    for hidden in ("--child", "--posts", "--vectors", "--config", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    return parser.parse_args()


def check_memory(n_posts: int, params: dict[str, Any]) -> None:
    """Refuse, before the long part, a BERTopic run whose HDBSCAN cannot fit in memory."""
    import psutil

    need = core_distance_bytes(n_posts, params["hdbscan"])
    free = psutil.virtual_memory().available
    if need > 0.8 * free:
        raise SystemExit(
            f"BERTopic's HDBSCAN with {params_text({'hdbscan': params['hdbscan']})} on "
            f"{n_posts:,} points needs about {need / 2**30:.1f} GiB for its k-NN core distances "
            f"alone; {free / 2**30:.1f} GiB are available. Use --bertopic-params quality, a "
            "smaller --n, or --force."
        )


def main() -> None:
    args = parse_args()
    if args.child:
        cfg = json.loads(args.config)
        child(args.child, Path(args.posts), Path(args.vectors), cfg, Path(args.out))
        return
    from pipeline.evaluate import agreement
    from pipeline.settings import load_settings

    settings = load_settings(state_dir=ROOT / ".tribes", random_state=args.seed)
    tribes_cfg = {k: getattr(settings, k) for k in TRIBES_KEYS} | {"random_state": args.seed}
    args.min_posts = settings.min_posts_per_user
    posts, source = sample_posts(args.n, settings.min_posts_per_user)
    params = bertopic_params(posts.height, tribes_cfg, args.bertopic_params)
    if not (args.skip_bertopic or args.force):
        check_memory(posts.height, params)  # before the embedding and Tribes' run
    sample = prepare(posts, source, settings)
    known = dict(posts.select("user_id", "label").unique("user_id").iter_rows())
    n_labels = len(set(known.values()))
    results = {"tribes": run_child("tribes", sample, tribes_cfg)}
    tribes = results["tribes"]
    scores = {"tribes": agreement([known[u] for u in tribes["users"]], tribes["groups"])}
    if not args.skip_bertopic:
        cfg = {"params": params, "random_state": args.seed}
        results["bertopic"] = bert = run_child("bertopic", sample, cfg)
        import quality  # imported by sample_posts already

        users, groups = quality.topic_mix_groups(
            posts["user_id"].to_list(), bert["topics"], n_labels, args.seed
        )
        scores["bertopic"] = agreement([known[u] for u in users], groups)
    report(args, sample, tribes_cfg, params, results, scores, n_labels)


if __name__ == "__main__":
    main()
