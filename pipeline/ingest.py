"""Read posts from CSV, JSON Lines or Parquet into the `posts` layout, with reasons for skips."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class IngestError(ValueError):
    """The input file cannot be imported; the message says why and what to do."""


@dataclass(frozen=True)
class ColumnMap:
    user: str = "user_id"
    text: str = "text"
    id: str = "post_id"
    time: str | None = "created_at"
    label: str | None = None
    name: str | None = None


@dataclass
class Ingested:
    posts: pl.DataFrame
    users: pl.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in set(FORMATS.values()):
            raise IngestError(f"unknown format {fmt!r}: use csv, jsonl or parquet")
        return fmt
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise IngestError(
            f"{path.name}: cannot tell the format from {path.suffix!r}; "
            "pass --format csv|jsonl|parquet"
        ) from None


def read_table(path: Path, fmt: str | None = None, encoding: str = "utf-8") -> pl.DataFrame:
    """The file as a frame of strings (parquet keeps its types)."""
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    kind = detect_format(path, fmt)
    if path.stat().st_size == 0:
        raise IngestError(f"{path.name} is empty")
    try:
        if kind == "parquet":
            return pl.read_parquet(path)
        raw = path.read_bytes().decode(encoding)
        if kind == "csv":
            separator = "\t" if path.suffix.lower() == ".tsv" else ","
            return pl.read_csv(io.StringIO(raw), separator=separator, infer_schema=False)
        return pl.read_ndjson(io.StringIO(raw), infer_schema_length=None)
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{path.name} is not valid {encoding} (byte {exc.start}); pass --encoding, e.g. latin-1"
        ) from None
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IngestError(f"{path.name} is not readable as {kind}: {first}") from None


def require_columns(table: pl.DataFrame, columns: ColumnMap, name: str) -> None:
    wanted = {"--user-col": columns.user, "--text-col": columns.text, "--id-col": columns.id}
    if columns.time:
        wanted["--time-col"] = columns.time
    for flag, column in wanted.items():
        if column not in table.columns:
            shown = ", ".join(table.columns[:12])
            raise IngestError(
                f"{name} has no column {column!r} (columns: {shown}); pass {flag} NAME"
            )


def parse_time(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.Datetime or isinstance(dtype, pl.Datetime):
        return column.dt.replace_time_zone(None)
    if dtype.is_numeric():
        return pl.from_epoch(column.cast(pl.Int64), time_unit="s")
    return (
        column.cast(pl.Utf8)
        .str.to_datetime(strict=False, time_zone="UTC")
        .dt.replace_time_zone(None)
    )


def to_posts(
    table: pl.DataFrame, columns: ColumnMap, platform: str, max_chars: int, name: str = "input"
) -> Ingested:
    """Validate and map a raw table to posts and users; invalid rows are skipped with a reason."""
    if table.height == 0:
        raise IngestError(f"{name} has no rows")
    require_columns(table, columns, name)
    time_expr = (
        parse_time(pl.col(columns.time), table.schema[columns.time])
        if columns.time
        else pl.lit(None, pl.Datetime)
    )
    frame = table.select(
        pl.lit(platform).alias("platform"),
        pl.col(columns.id).cast(pl.Utf8).str.strip_chars().alias("post_id"),
        pl.col(columns.user).cast(pl.Utf8).str.strip_chars().alias("user_id"),
        time_expr.alias("created_at"),
        pl.col(columns.text).cast(pl.Utf8).alias("text"),
        pl.lit(None, pl.Utf8).alias("url"),
        pl.lit("post").alias("kind"),
        (pl.col(columns.label).cast(pl.Utf8) if columns.label else pl.lit(None, pl.Utf8)).alias(
            "label"
        ),
        (pl.col(columns.name).cast(pl.Utf8) if columns.name else pl.lit(None, pl.Utf8)).alias(
            "display_name"
        ),
    )
    reason = (
        pl.when(pl.col("post_id").is_null() | (pl.col("post_id") == ""))
        .then(pl.lit("missing post id"))
        .when(pl.col("user_id").is_null() | (pl.col("user_id") == ""))
        .then(pl.lit("missing user id"))
        .when(pl.col("text").is_null() | (pl.col("text").str.strip_chars() == ""))
        .then(pl.lit("empty text"))
        .when(pl.col("text").str.len_chars() > max_chars)
        .then(pl.lit(f"text longer than {max_chars} chars"))
        .when(pl.col("post_id").is_duplicated())
        .then(pl.lit("duplicate post id in file"))
    )
    frame = frame.with_columns(reason=reason)
    # a duplicated id keeps its last row; the earlier copies count as skipped
    last = pl.col("post_id").cum_count().over("post_id") == pl.len().over("post_id")
    frame = frame.with_columns(
        reason=pl.when((pl.col("reason") == "duplicate post id in file") & last)
        .then(None)
        .otherwise(pl.col("reason"))
    )
    skipped = frame.filter(pl.col("reason").is_not_null())["reason"].value_counts()
    kept = frame.filter(pl.col("reason").is_null())
    users = kept.group_by("platform", "user_id").agg(
        pl.col("display_name").drop_nulls().last(), pl.col("label").drop_nulls().last()
    )
    return Ingested(
        posts=kept.select("platform", "post_id", "user_id", "created_at", "text", "url", "kind"),
        users=users,
        skipped=dict(zip(skipped["reason"].to_list(), skipped["count"].to_list(), strict=True)),
    )
