"""The refresh's after-publish step, `insight`: the run's recommendations, then its report."""

from __future__ import annotations

import time

import polars as pl
from prefect import task

from flows.report import report
from flows.vectors import run_logger, stored_vectors
from pipeline import embed as embed_step
from pipeline import recommend as rec
from pipeline import store
from pipeline.settings import Settings


def insight(
    settings: Settings, run_id: str, units_path: str, model: embed_step.ModelSpec
) -> str | None:
    """After publish: recommendations (when a catalogue exists), then the report; returns the
    report's path. The run's clusters are already published, so a failure here is logged, not
    raised."""
    logger = run_logger()
    try:
        started = time.perf_counter()
        recommend(settings, run_id, units_path, model)
        with store.open(settings, "write") as con:
            store.add_run_timings(
                con, run_id, {"recommend": round(time.perf_counter() - started, 3)}
            )
        path = report(settings, run_id)
    except Exception as exc:  # logged; the run stays completed
        logger.error(
            "run %s completed, but its report failed: %s: %s", run_id, type(exc).__name__, exc
        )
        return None
    logger.info("report: %s", path)
    return path


@task(retries=1, retry_delay_seconds=2, task_run_name="recommend products")
def recommend(settings: Settings, run_id: str, units_path: str, model: embed_step.ModelSpec) -> int:
    """Rank the catalogue for every cluster and user of a run from the vectors of their profile
    units (post chunks or posts); returns rows written (0 when there is no catalogue)."""
    logger = run_logger()
    with store.open(settings) as con:
        products = store.read_products(con)
        members = store.run_members(con, run_id).select("platform", "user_id", "cluster_id")
        terms = store.run_terms(con, run_id)
    if products.height == 0:
        logger.info("no product catalogue: `tribes products import FILE` adds one")
        return 0
    units = pl.read_parquet(units_path).join(
        members, on=["platform", "user_id"], how="inner", maintain_order="left"
    )
    with store.open(settings) as con:
        unit_vectors = store.load_embeddings(con, model.model_id, units["text_hash"].to_list())
    product_vectors = stored_vectors(settings, rec.product_texts(products), "products", model)
    term_vectors = stored_vectors(settings, terms["term"].to_list(), "cluster terms", model)
    rows = rec.recommend_all(
        units, unit_vectors, products, product_vectors, terms, term_vectors, settings.recommend_top
    )
    with store.open(settings, "write") as con:
        store.write_recommendations(con, run_id, rows)
    logger.info(
        "ranked %d products for %d clusters and %d users",
        products.height,
        rows.filter(pl.col("scope") == "cluster")["scope_id"].n_unique(),
        rows.filter(pl.col("scope") == "user")["scope_id"].n_unique(),
    )
    return rows.height
