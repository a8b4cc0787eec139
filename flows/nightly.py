"""The nightly flow: crawl the accounts of sources.yaml, then refresh (which writes the report).

Both run as subflows in this one flow run, so the work pool's concurrency limit of 1 counts
the whole night as one run. Without a sources file the crawl is skipped and the refresh works
on the posts already stored; a failed crawl still lets the refresh run, then fails the night.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.refresh import refresh
from pipeline.settings import RefreshOptions, load_settings


class CrawlFailed(RuntimeError):
    """The night's crawl failed; the refresh still ran on the posts already stored."""


@flow(name="nightly")
def nightly(
    db: str | None = None,
    sources: str | None = None,
    max_posts_per_user: Annotated[int, Field(ge=1)] | None = None,
    options: RefreshOptions = RefreshOptions(),
    full: bool = False,
) -> str:
    """Crawl (when a sources file exists), then refresh; returns the new run's id.

    Args:
        db: DuckDB file; default from the settings (.tribes/tribes.duckdb)
        sources: the accounts to crawl; default sources.yaml (no file: no crawl)
        max_posts_per_user: collect at most the N newest posts per account
        options: settings overridden for the refresh; unset ones come from the settings
        full: ignore every cache (stored embeddings are kept)
    """
    logger = get_run_logger()
    settings = load_settings(db=db, sources=sources)
    crawled = None
    if settings.sources.exists():
        from flows.crawl import crawl  # scrapy and its sources only when there is a crawl

        crawled = crawl(
            db=str(settings.db),
            sources=str(settings.sources),
            max_posts_per_user=max_posts_per_user,
            return_state=True,
        )
        if crawled.is_failed():
            logger.error("the crawl failed; refreshing with the posts already stored")
    else:
        logger.info("no sources file %s: skipping the crawl", settings.sources.resolve())
    run_id = refresh(db=str(settings.db), options=options, full=full)
    if crawled is not None and crawled.is_failed():
        raise CrawlFailed(f"run {run_id} completed, but the crawl before it failed")
    return run_id
