"""`tribes export`: one run's results as files that analysts load into their own tools.

EXPORTS declares what is written, one table a line: a new table is one more entry (its reader
in pipeline/store.py, its columns in docs/export.md). Each file is written atomically, from a
read-only database connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from flows.files import writable_folder, write_atomically
from pipeline import store
from pipeline.settings import Settings


@dataclass(frozen=True)
class Export:
    """One exported table: its file name and how to read it for a run."""

    name: str
    read: Callable[[duckdb.DuckDBPyConnection, str], pl.DataFrame]


def behaviour(table: str) -> Callable[[duckdb.DuckDBPyConnection, str], pl.DataFrame]:
    """The reader of one of a run's store.BEHAVIOUR_TABLES."""
    return lambda con, run_id: store.read_behaviour(con, run_id)[table]


EXPORTS = (
    Export("users", store.run_members),
    Export("clusters", store.cluster_table),
    Export("groups", lambda con, run_id: store.cluster_table(con, run_id, "coarse")),
    Export("terms", store.run_terms),
    Export("recommendations", store.read_recommendations),
    Export("activity", behaviour("cluster_activity")),
    Export("engagement", behaviour("cluster_engagement")),
    Export("interactions", behaviour("cluster_interactions")),
    Export("accounts", behaviour("cluster_accounts")),
    Export("people", lambda con, run_id: store.read_links(con)),
)


def flat(table: pl.DataFrame) -> pl.DataFrame:
    """`table` with each list column as JSON text (CSV holds no lists)."""
    lists = [name for name, kind in table.schema.items() if isinstance(kind, pl.List)]
    return table.with_columns(
        pl.Series(name, [None if v is None else json.dumps(v) for v in table[name].to_list()])
        for name in lists
    )


WRITERS: dict[str, Callable[[pl.DataFrame, Path], object]] = {
    "csv": lambda table, path: flat(table).write_csv(path),
    "parquet": lambda table, path: table.write_parquet(path),
    "json": lambda table, path: table.write_json(path),
}


def export_run(settings: Settings, run_id: str | None, fmt: str, out: Path) -> list[Path]:
    """Write every EXPORTS table of run `run_id` (default: the latest completed) into `out`
    as `fmt`; returns the files written."""
    if fmt not in WRITERS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(WRITERS)}")
    writable_folder(out, "export folder")
    with store.open(settings, "read") as con:
        chosen = run_id or store.latest_run_id(con)
        run = store.run_info(con, chosen) if chosen else None
        if run is None or run["status"] != "completed":
            raise store.StoreError(
                f"run {run_id} is unknown or not completed (see `tribes status`)"
                if run_id
                else "no completed run yet: run `tribes refresh` first"
            )
        tables = {export.name: export.read(con, chosen) for export in EXPORTS}
    written = []
    for name, table in tables.items():
        path = out / f"{name}.{fmt}"
        write_atomically(path, lambda temp, table=table: WRITERS[fmt](table, temp))
        written.append(path)
    return written
