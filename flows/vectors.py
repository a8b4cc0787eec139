"""Embed each text once and keep its vector in DuckDB, in this process or sharded over a Dask
cluster: the one way texts get vectors (the refresh, the recommender, the evaluation).

Sharded (the `dask` extra, imported only when used): shards travel as parquet files in the
state folder and vectors come back as .npy files beside them, so tasks hand each other paths
only. DuckDB keeps one writer: the flow's own process.
"""

from __future__ import annotations

import functools
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from prefect.futures import as_completed

from pipeline import embed as embed_step
from pipeline import progress, store
from pipeline.clean import text_hash
from pipeline.settings import Settings
from pipeline.store import writing

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner
    from sentence_transformers import SentenceTransformer


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task, the module logger outside."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def embed_missing(
    settings: Settings, texts: pl.DataFrame, model: embed_step.ModelSpec, what: str
) -> int:
    """Embed with `model` (prepared: `embed.prepare_model`) and store the texts (text_hash,
    text_clean) not embedded yet; returns how many."""
    texts = texts.unique("text_hash")
    with store.open(settings, "write") as con:  # creates the database when there is none
        todo = set(store.missing_hashes(con, model.model_id, texts["text_hash"].to_list()))
    if not todo:
        run_logger().info("all %d %s already embedded with %s", texts.height, what, model.name)
        return 0
    texts = texts.filter(pl.col("text_hash").is_in(list(todo)))
    if settings.embed_dask_address or settings.embed_dask_workers:
        return sum(shard.posts for shard in embed_on_dask(settings, texts, model, what))
    return embed_here(settings, texts, model, what)


def keep_vectors(settings: Settings, model_id: str, hashes: list[str], vectors: np.ndarray) -> None:
    """Store the vectors of the texts `hashes`; a full disk raises DiskFull naming the database."""
    with (
        writing(settings.db),
        store.open(settings, "write") as con,
    ):
        store.insert_embeddings(con, model_id, hashes, vectors)


def embed_here(
    settings: Settings, texts: pl.DataFrame, model: embed_step.ModelSpec, what: str
) -> int:
    """Embed the texts in this process, chunk by chunk, storing each chunk."""
    logger = run_logger()
    loaded = embed_step.load_model(model, settings.device, settings.model_download)
    logger.info("embedding %d new %s with %s on %s", texts.height, what, model.name, loaded.device)
    started, done = time.monotonic(), 0
    progress.start("texts", f"embedding {what}", texts.height)
    for chunk in texts.iter_slices(settings.embed_chunk):
        vectors = embed_step.encode(
            loaded,
            chunk["text_clean"].to_list(),
            model.prefix,
            settings.batch_size,
            lambda n, before=done: progress.advance(
                "texts", before + n, note=progress.rate("texts", before + n, "texts")
            ),
        )
        keep_vectors(settings, model.model_id, chunk["text_hash"].to_list(), vectors)
        done += chunk.height
        rate = done / max(time.monotonic() - started, 1e-9)
        logger.info("embedded %d/%d %s (%.0f/s)", done, texts.height, what, rate)
    progress.finish("texts", f"{done} {what}")
    return done


def stored_vectors(
    settings: Settings, texts: list[str], what: str, model: embed_step.ModelSpec | None = None
) -> np.ndarray:
    """Vectors for `texts` in order, embedding (and storing) the ones never seen, with `model`
    (default: the settings' model, prepared here)."""
    model = model or embed_step.prepare_model(settings)
    keys = [text_hash(t) for t in texts]
    frame = pl.DataFrame(
        {"text_hash": keys, "text_clean": texts},
        schema=[("text_hash", pl.Utf8), ("text_clean", pl.Utf8)],
    )
    embed_missing(settings, frame, model, what)
    with store.open(settings) as con:
        return store.load_embeddings(con, model.model_id, keys)


# ---------------------------------------------------------------- sharded on Dask


class Shard(NamedTuple):
    """One embedded shard: its vectors file, the Dask worker that made it, its size."""

    vectors: str
    worker: str
    posts: int


def task_runner(settings: Settings) -> DaskTaskRunner:
    """The scheduler at embed_dask_address, or a temporary local cluster of single threads."""
    from prefect_dask import DaskTaskRunner

    if settings.embed_dask_address:
        return DaskTaskRunner(address=settings.embed_dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_options(settings)
    )


def local_cluster_options(settings: Settings) -> dict[str, object]:
    """The temporary LocalCluster: embed_dask_workers single-threaded processes, every socket on
    127.0.0.1 (LocalCluster's dashboard default, ':8787', listens on every interface)."""
    return {
        "n_workers": settings.embed_dask_workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",  # a free port: runs side by side never collide
    }


@functools.cache
def worker_model(
    spec: embed_step.ModelSpec, device: str | None, download: bool
) -> SentenceTransformer | embed_step.ExportedEncoder:
    """The model, loaded once per worker process."""
    return embed_step.load_model(spec, device, download)


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, task_run_name="embed shard")
def embed_shard(shard: str, spec: embed_step.ModelSpec, settings: Settings) -> Shard:
    """Embed one shard's texts on a Dask worker; the vectors go to an .npy beside the shard."""
    import distributed

    texts = pl.read_parquet(shard)["text_clean"].to_list()
    model = worker_model(spec, settings.device, settings.model_download)
    out = Path(shard).with_suffix(".npy")
    np.save(out, embed_step.encode(model, texts, spec.prefix, settings.batch_size))
    return Shard(str(out), distributed.get_worker().address, len(texts))


def cluster_threads() -> int:
    """Worker threads of the flow's Dask cluster."""
    return sum(FlowRunContext.get().task_runner.client.nthreads().values())


def write_shards(texts: pl.DataFrame, folder: Path, count: int) -> dict[str, list[str]]:
    """`count` even parquet shards of (text_hash, text_clean); their paths and hashes."""
    shards = {}
    for i, part in enumerate(texts.iter_slices(math.ceil(texts.height / count))):
        path = folder / f"shard-{i:05d}.parquet"
        part.write_parquet(path)
        shards[str(path)] = part["text_hash"].to_list()
    return shards


@flow(name="embed-sharded")
def embed_sharded(
    settings: Settings, texts_path: str, spec: embed_step.ModelSpec, what: str
) -> list[Shard]:
    """Embed the texts of `texts_path`, one task per shard; store each shard as it completes."""
    logger = get_run_logger()
    texts = pl.read_parquet(texts_path)
    count = max(
        math.ceil(texts.height / settings.embed_chunk), min(texts.height, cluster_threads())
    )
    shards = write_shards(texts, Path(texts_path).parent, count)
    logger.info("embedding %d new %s in %d shards with %s", texts.height, what, count, spec.name)
    started = time.monotonic()
    futures = {embed_shard.submit(path, spec, settings): path for path in shards}
    done: list[Shard] = []
    for future in as_completed(list(futures)):
        shard, path = future.result(), futures[future]
        keep_vectors(settings, spec.model_id, shards[path], np.load(shard.vectors))
        future.wrapped_future.release()  # stored: a worker lost later must not recompute it
        Path(path).unlink()
        Path(shard.vectors).unlink()
        done.append(shard)
        posts = sum(s.posts for s in done)
        rate = posts / max(time.monotonic() - started, 1e-9)
        logger.info("stored shard %d/%d: %d %s (%.0f/s)", len(done), count, posts, what, rate)
    return done


def embed_on_dask(
    settings: Settings, texts: pl.DataFrame, spec: embed_step.ModelSpec, what: str
) -> list[Shard]:
    """Run embed_sharded on the configured cluster over `texts` (text_hash, text_clean)."""
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shards-", dir=settings.cache_dir) as folder:
        texts_path = Path(folder) / "texts.parquet"
        texts.select("text_hash", "text_clean").write_parquet(texts_path)
        sharded = embed_sharded.with_options(task_runner=task_runner(settings))
        return sharded(settings, str(texts_path), spec, what)
