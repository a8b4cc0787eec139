"""Embed each text once and keep its vector in DuckDB: shared by the refresh and the recommender."""

from __future__ import annotations

import logging
import time

import numpy as np
import polars as pl
from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from flows.files import writing
from pipeline import embed as embed_step
from pipeline import store
from pipeline.clean import text_hash
from pipeline.settings import Settings


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task, the module logger outside."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def embed_missing(settings: Settings, texts: pl.DataFrame, model_id: str, what: str) -> int:
    """Embed and store the texts (text_hash, text_clean) not embedded yet; returns how many."""
    texts = texts.unique("text_hash")
    with store.open(settings, "write") as con:  # creates the database when there is none
        todo = set(store.missing_hashes(con, model_id, texts["text_hash"].to_list()))
    if not todo:
        name = embed_step.model_spec(settings).name
        run_logger().info("all %d %s already embedded with %s", texts.height, what, name)
        return 0
    texts = texts.filter(pl.col("text_hash").is_in(list(todo)))
    if settings.embed_dask_address or settings.embed_dask_workers:
        from flows.sharded import embed_on_dask  # the `dask` extra, imported only when used

        return sum(shard.posts for shard in embed_on_dask(settings, texts, model_id, what))
    return embed_here(settings, texts, model_id, what)


def embed_here(settings: Settings, texts: pl.DataFrame, model_id: str, what: str) -> int:
    """Embed the texts in this process, chunk by chunk, storing each chunk."""
    logger = run_logger()
    spec = embed_step.model_spec(settings)
    model = embed_step.load_model(spec, settings.device, settings.model_download)
    logger.info("embedding %d new %s with %s on %s", texts.height, what, spec.name, model.device)
    started, done = time.monotonic(), 0
    for chunk in texts.iter_slices(settings.embed_chunk):
        vectors = embed_step.encode(
            model, chunk["text_clean"].to_list(), spec.prefix, settings.batch_size
        )
        with (
            writing(settings.db),
            store.open(settings, "write") as con,
        ):
            store.insert_embeddings(con, model_id, chunk["text_hash"].to_list(), vectors)
        done += chunk.height
        rate = done / max(time.monotonic() - started, 1e-9)
        logger.info("embedded %d/%d %s (%.0f/s)", done, texts.height, what, rate)
    return done


def stored_vectors(settings: Settings, texts: list[str], what: str) -> np.ndarray:
    """Vectors for `texts` in order, embedding (and storing) the ones never seen."""
    model_id = embed_step.model_spec(settings).model_id
    keys = [text_hash(t) for t in texts]
    frame = pl.DataFrame(
        {"text_hash": keys, "text_clean": texts},
        schema=[("text_hash", pl.Utf8), ("text_clean", pl.Utf8)],
    )
    embed_missing(settings, frame, model_id, what)
    with store.open(settings) as con:
        return store.load_embeddings(con, model_id, keys)
