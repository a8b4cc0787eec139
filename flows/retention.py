"""After each refresh: keep the newest `keep_runs` completed runs (their rows and report
folders), prune the older ones, and list the kept reports in the reports folder's index.html."""

from __future__ import annotations

import shutil

import polars as pl
from prefect import task

from flows.files import write_atomically
from flows.report import REPORT_FILE
from pipeline import store
from pipeline.reports_index import index_html
from pipeline.settings import Settings

INDEX_FILE = "index.html"


@task(retries=1, retry_delay_seconds=2, task_run_name="prune old runs")
def keep_latest_runs(settings: Settings) -> list[str]:
    """Prune the runs older than the newest `keep_runs` completed ones (rows, then report
    folders) and rewrite the reports' index; returns the pruned run ids."""
    with store.open(settings, "write") as con:
        pruned = store.prune_runs(con, settings.keep_runs)
        kept = store.kept_runs(con)
    reports = settings.reports_dir
    for run_id in pruned:
        folder = reports / run_id
        if folder.parent == reports and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
    with_report = kept.filter(
        pl.Series(
            [(reports / run_id / REPORT_FILE).is_file() for run_id in kept["run_id"]],
            dtype=pl.Boolean,
        )
    )
    reports.mkdir(parents=True, exist_ok=True)
    page = index_html(with_report, REPORT_FILE)
    write_atomically(reports / INDEX_FILE, lambda temp: temp.write_text(page, encoding="utf-8"))
    return pruned
