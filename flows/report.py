"""A run's HTML report and PNG map (`write_report`, and the `report` task of the refresh)."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
from prefect import task

from pipeline import people, store
from pipeline import report as report_step
from pipeline.settings import Settings

REPORT_FILE = "report.html"
MAP_FILE = "map.png"


def load_report_data(con: duckdb.DuckDBPyConnection, run_id: str) -> report_step.ReportData:
    """Everything the report of `run_id` shows, read from the database."""
    run = store.run_info(con, run_id)
    if run is None:
        raise store.StoreError(f"no run {run_id!r}: `tribes runs` lists them")
    if run["status"] != "completed":
        raise store.StoreError(f"run {run_id} is {run['status']}, not completed: nothing to show")
    previous = store.previous_run_id(con, run_id)
    return report_step.ReportData(
        run=run,
        members=people.person_named(store.run_members(con, run_id)),
        clusters=store.run_clusters(con, run_id),
        terms=store.run_terms(con, run_id),
        recommendations=store.read_recommendations(con, run_id),
        previous_run_id=previous,
        previous_members=people.person_named(store.run_members(con, previous))
        if previous
        else None,
        previous_clusters=store.run_clusters(con, previous) if previous else None,
        n_products=store.scalar(con, "SELECT count(*) FROM products"),
        groups=store.run_clusters(con, run_id, "coarse"),
        left_out=store.left_out(con, run_id),
        behaviour=store.read_behaviour(con, run_id),
        **{k: run["settings"][k] for k in ("timezone", "min_kind_posts") if k in run["settings"]},
    )


def write_report(
    settings: Settings, run_id: str | None = None, out_dir: Path | None = None
) -> Path:
    """Write report.html and map.png of a run (default: the latest completed one); returns the
    HTML path, by default `reports_dir/RUN_ID/report.html`."""
    if out_dir is not None:
        make_folder(out_dir)
    with store.open(settings) as con:
        run_id = run_id or store.latest_run_id(con)
        if run_id is None:
            raise store.StoreError("no completed run yet: run `tribes refresh` first")
        data = load_report_data(con, run_id)
    folder = make_folder(out_dir or settings.reports_dir / run_id)
    page = folder / REPORT_FILE
    (folder / MAP_FILE).write_bytes(report_step.render_png(data))
    page.write_text(report_step.render_html(data), encoding="utf-8")
    return page


def make_folder(folder: Path) -> Path:
    """The report's folder, created; a path that cannot be one is a one-line error."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file: the report needs a folder (report.html, map.png)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create report folder {folder}: {exc.strerror}") from None
    return folder


@task(retries=1, retry_delay_seconds=2, task_run_name="write report")
def report(settings: Settings, run_id: str) -> str:
    """The run's report in the reports folder; returns the HTML path. A run whose results equal
    the previous run's (an unchanged refresh) shares that run's files instead of a new report."""
    return str(reuse_previous_report(settings, run_id) or write_report(settings, run_id))


def reuse_previous_report(settings: Settings, run_id: str) -> Path | None:
    """Hard-link the previous run's report and map into this run's folder when both runs stored
    the same results (no second copy on disk; pruning either folder leaves the other whole);
    returns the page, or None when there is nothing to reuse."""
    with store.open(settings) as con:
        previous = store.previous_run_id(con, run_id)
        if previous is None or not store.same_results(con, run_id, previous):
            return None
    sources = [settings.reports_dir / previous / name for name in (REPORT_FILE, MAP_FILE)]
    if not all(source.is_file() for source in sources):
        return None
    folder = make_folder(settings.reports_dir / run_id)
    try:
        for source in sources:
            (folder / source.name).unlink(missing_ok=True)
            os.link(source, folder / source.name)
    except OSError:  # a file system without hard links: write the report
        return None
    return folder / REPORT_FILE
