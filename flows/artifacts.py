"""The `show_in_ui` task: a refresh run's results as Prefect artifacts.

Each artifact has a fixed key, so the UI's Artifacts page keeps one history per kind:
`tribes-clusters` (markdown table), `tribes-changes` (table of what changed since the previous
completed run), `tribes-report` (link to the run's HTML report, once it exists) and `tribes-map`
(the report's PNG map: its URL when the reports are served, else the image itself). The refresh
run and the nightly run around it both carry them.
"""

from __future__ import annotations

import base64
from pathlib import Path

from prefect import task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from flows.report import MAP_FILE, REPORT_FILE, load_report_data
from pipeline import store
from pipeline.settings import Settings
from pipeline.summary import CHANGE_COLUMNS, change_rows, change_summary, clusters_markdown

CLUSTERS_KEY = "tribes-clusters"
CHANGES_KEY = "tribes-changes"
REPORT_KEY = "tribes-report"
MAP_KEY = "tribes-map"


def report_link(settings: Settings, page: Path) -> str:
    """The report's URL: under `settings.reports_url` when it is served, else a file URI."""
    if settings.reports_url:
        relative = page.resolve().relative_to(settings.reports_dir.resolve())
        return f"{settings.reports_url.rstrip('/')}/{relative.as_posix()}"
    return page.resolve().as_uri()


def map_source(settings: Settings, image: Path) -> str:
    """Where the UI loads the map from: the reports server, else the PNG inlined (a file URI
    would not load in a browser)."""
    if settings.reports_url:
        return report_link(settings, image)
    return "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()


@task(retries=1, retry_delay_seconds=2, task_run_name="show results in the UI")
def show_in_ui(settings: Settings, run_id: str) -> list[str]:
    """Publish the run's clusters, changes, report link and map as artifacts; returns their
    keys."""
    with store.open(settings) as con:
        data = load_report_data(con, run_id)
        table = store.cluster_table(con, run_id)
    changes = data.changes()
    rows = change_rows(changes, data.clusters)
    create_markdown_artifact(
        key=CLUSTERS_KEY,
        markdown=clusters_markdown(run_id, table),
        description=f"Clusters of Tribes run {run_id}",
    )
    create_table_artifact(
        key=CHANGES_KEY,
        table=rows or {c: [] for c in CHANGE_COLUMNS},
        description=change_summary(changes, rows),
    )
    keys = [CLUSTERS_KEY, CHANGES_KEY]
    page = settings.reports_dir / run_id / REPORT_FILE
    if page.exists():
        create_link_artifact(
            key=REPORT_KEY,
            link=report_link(settings, page),
            link_text=f"Report and cluster map of run {run_id}",
            description=f"`{page.resolve()}`",
        )
        keys.append(REPORT_KEY)
    image = page.with_name(MAP_FILE)
    if image.exists():
        create_markdown_artifact(
            key=MAP_KEY,
            markdown=f"![Cluster map of run {run_id}]({map_source(settings, image)})",
            description=f"Cluster map of Tribes run {run_id}",
        )
        keys.append(MAP_KEY)
    return keys
