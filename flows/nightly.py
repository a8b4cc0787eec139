"""The nightly flow: crawl the accounts of sources.yaml, then refresh (which writes the report),
then put the night's results on the nightly run itself.

Each step is visible in the run's graph with its own state: the crawl and the refresh as
subflows, a skipped crawl as a `Skipped` task (with the reason as its message), and `report`,
the task that publishes the clusters, what changed, the report link and the map as the nightly
run's artifacts (the same ones the refresh run carries, flows/artifacts.py). Both subflows run
in this one flow run, so the work pool's concurrency limit of 1 counts the whole night as one
run. Without a sources file the crawl is skipped and the refresh works on the posts already
stored; a failed crawl still lets the refresh run, then fails the night. A failed or crashed
night is reported to `notify_url` (flows/notify.py).
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.states import Completed, State
from pydantic import Field

from flows.artifacts import show_in_ui
from flows.notify import notify_failure
from flows.refresh import refresh
from pipeline.settings import RefreshOptions, Settings, load_settings


class CrawlFailed(RuntimeError):
    """The night's crawl failed; the refresh still ran on the posts already stored."""


@task(task_run_name="crawl skipped")
def skip_crawl(settings: Settings) -> State:
    """The crawl's place in the graph when there is nothing to crawl: a `Skipped` state saying
    why."""
    return Completed(
        name="Skipped", message=f"no sources file {settings.sources.resolve()}: nothing to crawl"
    )


def crawl_step(settings: Settings, max_posts_per_user: int | None) -> State:
    """The crawl subflow's final state, or the skipped crawl's when there is no sources file."""
    if not settings.sources.exists():
        return skip_crawl(settings, return_state=True)
    from flows.crawl import crawl  # scrapy and its sources only when there is a crawl

    return crawl(
        db=str(settings.db),
        sources=str(settings.sources),
        max_posts_per_user=max_posts_per_user,
        return_state=True,
    )


@flow(name="nightly", on_failure=[notify_failure], on_crashed=[notify_failure])
def nightly(
    db: str | None = None,
    sources: str | None = None,
    max_posts_per_user: Annotated[int, Field(ge=1)] | None = None,
    options: RefreshOptions = RefreshOptions(),
    full: bool = False,
) -> str:
    """Crawl (when a sources file exists), refresh, publish the results; returns the run's id.

    Args:
        db: DuckDB file; default from the settings (.tribes/tribes.duckdb)
        sources: the accounts to crawl; default sources.yaml (no file: no crawl)
        max_posts_per_user: collect at most the N newest posts per account
        options: settings overridden for the refresh; unset ones come from the settings
        full: ignore every cache (stored embeddings are kept)
    """
    settings = load_settings(db=db, sources=sources)
    crawled = crawl_step(settings, max_posts_per_user)
    if crawled.is_failed():
        get_run_logger().error("the crawl failed; refreshing with the posts already stored")
    run_id = refresh(db=str(settings.db), options=options, full=full)
    show_in_ui.with_options(task_run_name="report")(  # a failure leaves the night completed
        options.apply(settings), run_id, return_state=True
    )
    if crawled.is_failed():
        raise CrawlFailed(f"run {run_id} completed, but the crawl before it failed")
    return run_id
