"""The import flow: a posts file (CSV, JSON Lines, Parquet) into DuckDB."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger

from flows import lifetime
from pipeline import ingest, progress, store
from pipeline.settings import Settings, load_settings

lifetime.tie_temporary_server()

REFUSED = "id belongs to another account"


@dataclass(frozen=True)
class ImportReport:
    rows: int
    inserted: int
    updated: int
    unchanged: int
    skipped: dict[str, int]
    users: int
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line of counts, then one `warning:` line per thing the user must know."""
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
        counts = (
            f"{self.rows} rows: {self.inserted} inserted, {self.updated} updated, "
            f"{self.unchanged} unchanged, {sum(self.skipped.values())} skipped ({reasons}); "
            f"{self.users} users"
        )
        return "\n".join([counts, *(f"warning: {line}" for line in self.warnings)])


def platform_warning(platform: str, overlap: tuple[str, int] | None, texts: int) -> list[str]:
    """A warning when most of an import's texts are already stored under another platform."""
    if overlap is None or overlap[1] * 2 <= texts:
        return []
    other, count = overlap
    return [
        f"{count} of these {texts} texts are already stored under platform {other!r}, "
        f"not {platform!r}: a mistyped --platform doubles the corpus"
    ]


def import_file(
    settings: Settings,
    path: str,
    platform: str = "import",
    columns: ingest.ColumnMap | None = None,
    fmt: str | None = None,
    encoding: str = "utf-8",
    person_col: str | None = None,
) -> ImportReport:
    """Validate the file completely, then upsert its posts and users in one transaction; posts
    of forgotten accounts are refused. `person_col` declares each account's person."""
    source = Path(path)
    progress.start("import", f"importing {source.name}")
    table = ingest.read_table(source, fmt, encoding)
    progress.advance("import", 0, table.height, "checking rows")
    columns = columns or ingest.ColumnMap()
    if person_col is not None and person_col not in table.columns:
        raise ingest.IngestError(f"{source.name} has no column {person_col!r} (--person-col)")
    data = ingest.to_posts(table, columns, platform, settings.max_post_chars, source.name)
    progress.advance("import", 0, table.height, "writing posts")
    with store.open(settings, "write") as con:
        data, refused_forgotten = without_forgotten(data, store.forgotten(con))
        texts = data.posts["text"]
        overlap = store.texts_on_other_platforms(con, platform, texts)
        counts = store.upsert_posts(con, data.posts, data.users, data.mentions)
        if person_col is not None:
            from pipeline import people  # scikit-learn: only for declared people

            declared = people.declared_links(
                table.select(columns.user, person_col), platform, f"import {source.name}"
            )
            store.replace_declared(con, declared, f"import {source.name}")
    progress.advance("import", table.height, table.height, "rows")
    progress.finish("import")
    refused = {REFUSED: counts.refused.height} if counts.refused.height else {}
    return ImportReport(
        table.height,
        counts.inserted,
        counts.updated,
        counts.unchanged,
        data.skipped | refused,
        data.users.height,
        [
            *data.warnings,
            *platform_warning(platform, overlap, texts.n_unique()),
            *refused_forgotten,
        ],
    )


def without_forgotten(
    data: ingest.Ingested, forgotten: pl.DataFrame
) -> tuple[ingest.Ingested, list[str]]:
    """`data` less the posts and profiles of forgotten accounts, and a warning naming them."""
    keys = ["platform", "user_id"]
    gone = data.posts.join(forgotten, on=keys, how="semi")
    if gone.height == 0:
        return data, []
    names = ", ".join(sorted(set(gone["platform"] + ":" + gone["user_id"]))[:5])
    kept = replace(
        data,
        posts=data.posts.join(forgotten, on=keys, how="anti"),
        users=data.users.join(forgotten, on=keys, how="anti"),
        mentions=None
        if data.mentions is None
        else data.mentions.join(gone, on=["platform", "post_id"], how="anti"),
    )
    if kept.posts.height == 0:
        raise ingest.IngestError(f"every post belongs to a forgotten account ({names})")
    return kept, [f"{gone.height} posts of forgotten accounts refused ({names})"]


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
