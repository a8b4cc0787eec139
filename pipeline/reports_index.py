"""The reports folder's index.html: the kept runs' reports, newest first, with a "latest" link.

Pure: the runs (a frame of `store.kept_runs` rows whose report exists) in, an HTML string out.
Every value is escaped; the page loads nothing from elsewhere (it works offline, from a file).
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

import polars as pl


def report_href(run_id: str, page: str) -> str:
    """The relative link from the index to a run's page (in the folder named by its id)."""
    return escape(f"{quote(run_id, safe='')}/{quote(page)}", quote=True)


def index_row(run: dict, page: str) -> str:
    finished = run["finished_at"].strftime("%Y-%m-%d %H:%M:%S")
    cells = [finished, *(str(run[c]) for c in ("n_posts", "n_users", "n_clusters"))]
    return (
        f'<tr><td><a href="{report_href(run["run_id"], page)}">{escape(run["run_id"])}</a></td>'
        + "".join(f"<td>{escape(cell)}</td>" for cell in cells)
        + "</tr>"
    )


def index_html(runs: pl.DataFrame, page: str) -> str:
    """The index page of `runs` (run_id, finished_at, n_posts, n_users, n_clusters), newest
    first, each linked to its `page`; the first one is linked as "latest"."""
    rows = "\n".join(index_row(run, page) for run in runs.iter_rows(named=True))
    latest = (
        f'<p><a id="latest" href="{report_href(runs["run_id"][0], page)}">latest report</a> '
        f"(run {escape(runs['run_id'][0])})</p>"
        if runs.height
        else "<p>No report yet: run <code>tribes refresh</code>.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Tribes reports</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}</style>
</head><body><h1>Tribes reports</h1>
{latest}
<table><thead><tr><th>run</th><th>finished (UTC)</th><th>posts</th><th>users</th>
<th>clusters</th></tr></thead><tbody>
{rows}
</tbody></table></body></html>
"""
