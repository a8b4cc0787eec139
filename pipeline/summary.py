"""What the Prefect UI shows of a run: a markdown table of its clusters and the rows of what
changed since the previous completed run. Pure: frames and `changes.Changes` in, text out.

Labels, terms and names come from crawled text, so every cell is markdown-escaped.
"""

from __future__ import annotations

import re

import polars as pl

from pipeline.changes import NEW_IN_DATA, Changes

MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()!|<>~])")
CHANGE_COLUMNS = ["change", "name", "from", "to", "users"]


def md(text: object) -> str:
    """`text` as one markdown table cell: whitespace folded, markdown and HTML inert."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def clusters_markdown(run_id: str, table: pl.DataFrame, examples: int = 5) -> str:
    """A markdown table of a run's clusters (rows of `store.cluster_table`), largest first."""
    users = int(table["size"].sum()) if table.height else 0
    lines = [
        f"### Interest clusters of run {md(run_id)}",
        "",
        f"{table.height} clusters of {users} users.",
        "",
        "| id | label | users | top terms | example users |",
        "|---:|---|---:|---|---|",
    ]
    for row in table.iter_rows(named=True):
        size = f"{row['size']}" + (f" ({row['n_outliers']} low-conf.)" if row["n_outliers"] else "")
        names = ", ".join((row["example_users"] or [])[:examples])
        lines.append(
            f"| {row['cluster_id']} | {md(row['label'])} | {size} | "
            f"{md(row['top_terms'] or '')} | {md(names)} |"
        )
    return "\n".join(lines) + "\n"


def change_rows(changes: Changes, clusters: pl.DataFrame) -> list[dict[str, object]]:
    """One row per user who moved between clusters, per new and per vanished cluster.

    `clusters` are the current run's (cluster_id, label, size); `changes` come from
    `changes.compare_runs`. Empty when there is no previous run."""
    if changes.previous_run_id is None:
        return []
    label = dict(zip(clusters["cluster_id"], clusters["label"], strict=True))
    size = dict(zip(clusters["cluster_id"], clusters["size"], strict=True))
    rows: list[dict[str, object]] = []
    for cluster_id, change in sorted(changes.by_cluster.items()):
        here = label.get(cluster_id, f"cluster {cluster_id}")
        if change.previous_id is None:
            rows.append(
                {
                    "change": "new cluster",
                    "name": here,
                    "from": "",
                    "to": here,
                    "users": size.get(cluster_id, 0),
                }
            )
        rows += [
            {"change": "moved", "name": user, "from": came_from, "to": here, "users": 1}
            for user, came_from in change.joined
            if came_from != NEW_IN_DATA
        ]
    rows += [
        {"change": "vanished cluster", "name": old, "from": old, "to": "", "users": n}
        for _, old, n in changes.vanished
    ]
    return rows


def change_summary(changes: Changes, rows: list[dict[str, object]]) -> str:
    """One line that says what `rows` hold (and what they leave out)."""
    if changes.previous_run_id is None:
        return "First completed run: nothing earlier to compare with."
    count = {
        kind: sum(1 for r in rows if r["change"] == kind)
        for kind in ("moved", "new cluster", "vanished cluster")
    }
    arrived = sum(
        1
        for c in changes.by_cluster.values()
        for _, came_from in c.joined
        if came_from == NEW_IN_DATA
    )
    return (
        f"Since run {changes.previous_run_id}: {count['moved']} users moved, "
        f"{count['new cluster']} new clusters, {count['vanished cluster']} vanished; "
        f"{arrived} users are new in the data."
    )
