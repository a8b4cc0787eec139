"""Embed texts sharded over a Dask cluster (prefect-dask): workers compute, this process stores.

Shards travel as parquet files in the state folder and vectors come back as .npy files beside
them, so tasks hand each other paths only. DuckDB keeps one writer: the flow's own process.
"""

from __future__ import annotations

import functools
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import distributed
import numpy as np
import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect_dask import DaskTaskRunner

from flows.files import writing
from pipeline import embed as embed_step
from pipeline import store
from pipeline.settings import Settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class Shard(NamedTuple):
    """One embedded shard: its vectors file, the Dask worker that made it, its size."""

    vectors: str
    worker: str
    posts: int


def task_runner(settings: Settings) -> DaskTaskRunner:
    """The scheduler at embed_dask_address, or a temporary local cluster of single threads."""
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


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def embed_shard(shard: str, spec: embed_step.ModelSpec, settings: Settings) -> Shard:
    """Embed one shard's texts on a Dask worker; the vectors go to an .npy beside the shard."""
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
def embed_sharded(settings: Settings, texts_path: str, model_id: str, what: str) -> list[Shard]:
    """Embed the texts of `texts_path`, one task per shard; store each shard as it completes."""
    logger = get_run_logger()
    spec = embed_step.model_spec(settings)
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
        with (
            writing(settings.db),
            store.open(settings, "write") as con,
        ):
            store.insert_embeddings(con, model_id, shards[path], np.load(shard.vectors))
        future.wrapped_future.release()  # stored: a worker lost later must not recompute it
        Path(path).unlink()
        Path(shard.vectors).unlink()
        done.append(shard)
        posts = sum(s.posts for s in done)
        rate = posts / max(time.monotonic() - started, 1e-9)
        logger.info("stored shard %d/%d: %d %s (%.0f/s)", len(done), count, posts, what, rate)
    return done


def embed_on_dask(settings: Settings, texts: pl.DataFrame, model_id: str, what: str) -> list[Shard]:
    """Run embed_sharded on the configured cluster over `texts` (text_hash, text_clean)."""
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shards-", dir=settings.cache_dir) as folder:
        texts_path = Path(folder) / "texts.parquet"
        texts.select("text_hash", "text_clean").write_parquet(texts_path)
        sharded = embed_sharded.with_options(task_runner=task_runner(settings))
        return sharded(settings, str(texts_path), model_id, what)
