"""The import flow: a posts file (CSV, JSON Lines, Parquet) into DuckDB."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger

from pipeline import ingest, store
from pipeline.settings import Settings, load_settings


@dataclass(frozen=True)
class ImportReport:
    rows: int
    inserted: int
    updated: int
    unchanged: int
    skipped: dict[str, int]
    users: int

    def summary(self) -> str:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
        return (
            f"{self.rows} rows: {self.inserted} inserted, {self.updated} updated, "
            f"{self.unchanged} unchanged, {sum(self.skipped.values())} skipped ({reasons}); "
            f"{self.users} users"
        )


def import_file(
    settings: Settings,
    path: str,
    platform: str = "import",
    columns: ingest.ColumnMap | None = None,
    fmt: str | None = None,
    encoding: str = "utf-8",
) -> ImportReport:
    """Validate the file completely, then upsert its posts and users in one go."""
    source = Path(path)
    table = ingest.read_table(source, fmt, encoding)
    data = ingest.to_posts(
        table, columns or ingest.ColumnMap(), platform, settings.max_post_chars, source.name
    )
    with store.connect(settings.db, wait_seconds=60) as con:
        counts = store.upsert_posts(con, data.posts)
        store.upsert_users(con, data.users)
    return ImportReport(
        table.height,
        counts.inserted,
        counts.updated,
        counts.unchanged,
        data.skipped,
        data.users.height,
    )


@flow(name="import")
def import_posts(
    path: str,
    platform: str = "import",
    user_col: str = "user_id",
    text_col: str = "text",
    id_col: str = "post_id",
    time_col: str | None = "created_at",
    label_col: str | None = None,
    db: str | None = None,
) -> str:
    """Import one posts file; re-importing the same file adds nothing."""
    settings = load_settings(db=db)
    columns = ingest.ColumnMap(user_col, text_col, id_col, time_col, label_col)
    report = import_file(settings, path, platform, columns)
    get_run_logger().info(report.summary())
    return report.summary()
