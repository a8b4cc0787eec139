"""Read posts from CSV, JSON Lines or Parquet into the `posts` layout (`store.POSTS`), with
reasons for skips."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import polars as pl

from pipeline import store

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


class Accepts(NamedTuple):
    """The column types an input column may have, and the rule to name when it has another."""

    test: Callable[[pl.DataType], bool]
    rule: str


def is_text(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Categorical, pl.Enum, pl.Null)


TEXT = Accepts(is_text, "it must hold text")
IDS = Accepts(
    lambda dtype: is_text(dtype) or dtype.is_integer(),
    "it must hold text or integers (floats round distinct ids to the same value)",
)
TIMES = Accepts(
    lambda dtype: is_text(dtype) or dtype.is_numeric() or dtype in (pl.Date, pl.Datetime),
    "it must hold ISO 8601 text, epoch numbers, dates or datetimes",
)


COUNTS = Accepts(
    lambda dtype: is_text(dtype) or dtype.is_numeric(), "it must hold whole numbers from 0"
)
MENTION_LISTS = Accepts(
    lambda dtype: is_text(dtype) or dtype == pl.List(pl.String),
    "it must hold user ids separated by spaces or commas, or lists of them",
)
# the optional post fields an import maps (--likes-col ..., --map FIELD=COLUMN), and their types
FIELDS = {
    "likes": COUNTS,
    "reposts": COUNTS,
    "replies": COUNTS,
    "kind": TEXT,
    "lang": TEXT,
    "reply_to": IDS,
    "repost_of": IDS,
    "mentions": MENTION_LISTS,
}
# Facebook pages' columns (the bundled sample, ../shared's fb_pages), mapped when present
PAGE_COLUMNS = {
    "likes": "num_reactions",
    "replies": "num_comments",
    "reposts": "num_shares",
    "kind": "status_type",
}
# the kinds other sources name (Facebook's status_type, Tribes' before v6) -> store.KINDS
KIND_NAMES = {
    "status": "original",
    "note": "original",
    "post": "original",
    "event": "link",
    "shared_story": "repost",
    "boost": "repost",
} | {kind: kind for kind in store.KINDS}
LANG = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"  # a BCP 47 tag such as en, pt-BR


def field_flag(name: str) -> str:
    """The `tribes import` option that maps a field: --likes-col, ..., or --map mentions=."""
    return f"--map {name}=" if name == "mentions" else f"--{name.replace('_', '-')}-col"


@dataclass(frozen=True)
class ColumnMap:
    user: str = "user_id"
    text: str = "text"
    id: str = "post_id"
    time: str | None = "created_at"
    label: str | None = None
    name: str | None = None
    likes: str | None = None
    reposts: str | None = None
    replies: str | None = None
    kind: str | None = None
    lang: str | None = None
    reply_to: str | None = None
    repost_of: str | None = None
    mentions: str | None = None

    def wanted(self) -> list[tuple[str, str, Accepts]]:
        """(flag, column, accepted types) of every mapped column."""
        optional = [
            ("--time-col", self.time, TIMES),
            ("--label-col", self.label, IDS),
            ("--name-col", self.name, IDS),
            *((field_flag(f), getattr(self, f), accepts) for f, accepts in FIELDS.items()),
        ]
        return [
            ("--user-col", self.user, IDS),
            ("--text-col", self.text, TEXT),
            ("--id-col", self.id, IDS),
            *((flag, column, kinds) for flag, column, kinds in optional if column),
        ]

    def mapped(self, pairs: list[str]) -> ColumnMap:
        """This map with `FIELD=COLUMN` pairs (any field of the map) applied."""
        changes = {}
        for pair in pairs:
            name, sep, column = pair.partition("=")
            if not sep or not column.strip() or name.strip() not in self.__dataclass_fields__:
                known = ", ".join(self.__dataclass_fields__)
                raise IngestError(f"--map {pair!r}: use FIELD=COLUMN with a field of: {known}")
            changes[name.strip()] = column.strip()
        return replace(self, **changes)

    def with_page_columns(self, present: list[str]) -> ColumnMap:
        """This map with Facebook pages' columns (PAGE_COLUMNS) for the fields it leaves unset."""
        found = {
            name: column
            for name, column in PAGE_COLUMNS.items()
            if getattr(self, name) is None and column in present
        }
        return replace(self, **found)


@dataclass
class Ingested:
    posts: pl.DataFrame
    users: pl.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    mentions: pl.DataFrame | None = None  # store.MENTIONS; None: the file has no mentions column


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
    """Every mapped column exists and holds a type that imports without loss."""
    for flag, column, kinds in columns.wanted():
        if column not in table.columns:
            shown = ", ".join(table.columns[:12])
            hint = f"{flag}NAME" if flag.endswith("=") else f"{flag} NAME"
            raise IngestError(f"{name} has no column {column!r} (columns: {shown}); pass {hint}")
        dtype = table.schema[column]
        if not kinds.test(dtype):
            raise IngestError(f"{name}: column {column!r} ({flag}) is {dtype}: {kinds.rule}")


# ---------------------------------------------------------------- times
#
# Every value is read on its own, never with a format guessed from the first row, and stored as
# naive UTC: ISO 8601 with any offset (`Z`, `+05:30`; without one it is taken as UTC), RFC 2822,
# epoch numbers (numeric columns or numeric text) whose magnitude tells the unit, and slash dates
# such as 01/02/2016 read day/month or month/day only when just one of the two readings fits all
# of the column's slash dates (else they are ambiguous). Values that cannot be read are stored
# empty and counted, as are times in the future, in the import summary.

UNREADABLE = "unreadable"
AMBIGUOUS = "ambiguous"
STRING_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
    "%a, %d %b %Y %H:%M:%S %z",
)
SLASH_DATE = r"^(\d{1,2})/(\d{1,2})/\d{4}(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?$"
SLASH_READINGS = {"day/month": "%d/%m/%Y", "month/day": "%m/%d/%Y"}
# epoch values below each bound are in this unit (given in microseconds): seconds until the
# year 5138, then milliseconds (from 1973 on), microseconds, nanoseconds
EPOCH_UNITS = ((1e11, 1e6), (1e14, 1e3), (1e17, 1.0), (float("inf"), 1e-3))
LATEST_MICROS = 253_402_300_799e6  # 9999-12-31 23:59:59; later values are unreadable


@dataclass(frozen=True)
class ParsedTimes:
    values: pl.Series  # Datetime("us"), naive UTC
    problems: pl.Series  # per value: None, UNREADABLE or AMBIGUOUS
    reading: str | None = None  # how the column's slash dates were read


def parse_times(values: pl.Series) -> ParsedTimes:
    """Each value of a time column as naive UTC, with the values that could not be read."""
    dtype = values.dtype
    if dtype == pl.Datetime:
        utc = values.dt.convert_time_zone("UTC") if dtype.time_zone else values
        return readable(values, utc.dt.replace_time_zone(None).dt.cast_time_unit("us"))
    if dtype == pl.Date:
        return readable(values, values.cast(pl.Datetime("us")))
    if dtype.is_numeric():
        return readable(values, from_epoch(values.cast(pl.Float64)))
    return parse_time_strings(values.cast(pl.Utf8).str.strip_chars().replace("", None))


def readable(values: pl.Series, parsed: pl.Series) -> ParsedTimes:
    """`parsed`, with UNREADABLE where a value was given but not parsed."""
    problems = pl.select(
        pl.when(pl.lit(values).is_not_null() & pl.lit(parsed).is_null()).then(pl.lit(UNREADABLE))
    ).to_series()
    return ParsedTimes(parsed, problems)


def from_epoch(numbers: pl.Series) -> pl.Series:
    """Epoch numbers as naive datetimes, the unit of each told by its magnitude."""
    number = pl.col("n")
    micros = pl.when(number.abs() < EPOCH_UNITS[0][0]).then(number * EPOCH_UNITS[0][1])
    for bound, scale in EPOCH_UNITS[1:]:
        micros = micros.when(number.abs() < bound).then(number * scale)
    micros = pl.when(micros.abs() <= LATEST_MICROS).then(micros.round())
    frame = pl.DataFrame({"n": numbers})
    return frame.select(pl.from_epoch(micros.cast(pl.Int64), time_unit="us")).to_series()


def parse_time_strings(texts: pl.Series) -> ParsedTimes:
    """Text times (empty ones already None), read by the rules above."""
    iso = texts.str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
    parsed = pl.select(
        pl.coalesce(
            *(
                pl.lit(iso).str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit="us")
                for fmt in STRING_FORMATS
            )
        ).dt.replace_time_zone(None)
    ).to_series()
    parsed = parsed.fill_null(from_epoch(texts.cast(pl.Float64, strict=False)))
    slash = texts.str.contains(SLASH_DATE).fill_null(False)
    reading = slash_reading(texts.filter(slash))
    if reading:
        parsed = parsed.zip_with(~slash, parse_slash_dates(texts, SLASH_READINGS[reading]))
    times = readable(texts, parsed)
    if reading or not slash.any():
        return ParsedTimes(parsed, times.problems, reading)
    ambiguous = pl.select(pl.when(pl.lit(slash)).then(pl.lit(AMBIGUOUS))).to_series()
    return ParsedTimes(parsed, ambiguous.fill_null(times.problems))


def slash_reading(dates: pl.Series) -> str | None:
    """'day/month' or 'month/day' when just that reading fits every slash date, else None."""
    if dates.len() == 0:
        return None
    parts = dates.str.extract_groups(SLASH_DATE).struct.unnest().cast(pl.Int32)
    first_fits_month = bool((parts["1"] <= 12).all())
    second_fits_month = bool((parts["2"] <= 12).all())
    if first_fits_month == second_fits_month:
        return None
    return "month/day" if first_fits_month else "day/month"


def parse_slash_dates(texts: pl.Series, date_format: str) -> pl.Series:
    """Slash dates (with an optional clock time) in one reading; other texts become None."""
    return pl.select(
        pl.coalesce(
            pl.lit(texts).str.to_datetime(f"{date_format}{clock}", strict=False, time_unit="us")
            for clock in (" %H:%M:%S", " %H:%M", "T%H:%M:%S", "T%H:%M", "")
        )
    ).to_series()


def time_warnings(kept: pl.DataFrame, column: str | None, reading: str | None) -> list[str]:
    """What the summary must say about the stored rows' times: none is silently empty or odd."""
    unreadable = int((kept["time_problem"] == UNREADABLE).sum())
    ambiguous = int((kept["time_problem"] == AMBIGUOUS).sum())
    future = int((kept["created_at"] > datetime.now(UTC).replace(tzinfo=None)).sum())
    warnings = []
    if unreadable:
        warnings.append(
            f"{column}: {unreadable} unreadable times stored empty "
            "(use ISO 8601 such as 2024-05-01T10:00:00+02:00, or epoch seconds)"
        )
    if ambiguous:
        warnings.append(
            f"{column}: {ambiguous} ambiguous dates like 01/02/2016 (day/month or month/day?) "
            "stored empty: write them as YYYY-MM-DD"
        )
    if reading:
        warnings.append(f"{column}: dates like 01/02/2016 read as {reading}")
    if future:
        warnings.append(f"{column}: {future} times in the future")
    return warnings


def to_posts(
    table: pl.DataFrame, columns: ColumnMap, platform: str, max_chars: int, name: str = "input"
) -> Ingested:
    """Validate and map a raw table to posts and users; invalid rows are skipped with a reason.

    Raises IngestError when the file has no rows, lacks a column, holds a column of the wrong
    type (float ids collide by rounding) or has no valid row at all.
    """
    if table.height == 0:
        raise IngestError(f"{name} has no rows")
    columns = columns.with_page_columns(table.columns)
    require_columns(table, columns, name)
    no_times = pl.Series([None] * table.height, dtype=pl.Utf8)
    times = parse_times(table[columns.time] if columns.time else no_times)
    fields = post_fields(table, columns)
    frame = table.select(
        *fields.values,
        pl.lit(platform).alias("platform"),
        pl.col(columns.id).cast(pl.Utf8).str.strip_chars().alias("post_id"),
        pl.col(columns.user).cast(pl.Utf8).str.strip_chars().alias("user_id"),
        pl.lit(times.values).alias("created_at"),
        pl.lit(times.problems).alias("time_problem"),
        pl.col(columns.text).cast(pl.Utf8).alias("text"),
        (pl.col(columns.label).cast(pl.Utf8) if columns.label else pl.lit(None, pl.Utf8)).alias(
            "label"
        ),
        (pl.col(columns.name).cast(pl.Utf8) if columns.name else pl.lit(None, pl.Utf8)).alias(
            "display_name"
        ),
    )
    # one user's repeated id is an edit: its last row wins; another user's is left to the store
    same_post = pl.struct("post_id", "user_id")
    reason = (
        pl.when(pl.col("post_id").is_null() | (pl.col("post_id") == ""))
        .then(pl.lit("missing post id"))
        .when(pl.col("user_id").is_null() | (pl.col("user_id") == ""))
        .then(pl.lit("missing user id"))
        .when(pl.col("text").is_null() | (pl.col("text").str.strip_chars() == ""))
        .then(pl.lit("empty text"))
        .when(pl.col("text").str.len_chars() > max_chars)
        .then(pl.lit(f"text longer than {max_chars} chars"))
        .when(same_post.is_duplicated())
        .then(pl.lit("duplicate post id in file"))
    )
    frame = frame.with_columns(reason=reason)
    last = (
        pl.int_range(pl.len()).over("post_id", "user_id") == pl.len().over("post_id", "user_id") - 1
    )
    frame = frame.with_columns(
        reason=pl.when((pl.col("reason") == "duplicate post id in file") & last)
        .then(None)
        .otherwise(pl.col("reason"))
    )
    skipped = frame.filter(pl.col("reason").is_not_null())["reason"].value_counts()
    skipped = dict(zip(skipped["reason"].to_list(), skipped["count"].to_list(), strict=True))
    kept = frame.filter(pl.col("reason").is_null())
    if kept.height == 0:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        raise IngestError(f"{name}: no valid row ({reasons})")
    users = kept.group_by("platform", "user_id").agg(
        pl.col("display_name").drop_nulls().last(), pl.col("label").drop_nulls().last()
    )
    return Ingested(
        posts=store.POSTS.conform(kept),
        users=users,
        skipped=skipped,
        warnings=[*time_warnings(kept, columns.time, times.reading), *fields.warnings(kept)],
        mentions=mention_rows(kept) if columns.mentions else None,
    )


# ---------------------------------------------------------------- engagement and interactions
#
# Counts must be whole numbers from 0 (numeric text too); kinds are store.KINDS or a name of
# KIND_NAMES; languages BCP 47 tags. Another value is stored empty (a kind: 'original') and
# counted in a warning; the post itself is kept. Counts read now are stamped with the import time.

MAX_COUNT = 2**31 - 1  # the largest INTEGER a count column holds


@dataclass(frozen=True)
class PostFields:
    """The mapped optional fields of every row, and per field its column and bad-value flags
    (columns `bad_FIELD`, dropped from the posts by store.POSTS.conform)."""

    values: list[pl.Expr]  # over the input table
    sources: dict[str, str]  # field -> the column it came from
    rules: dict[str, str]  # field -> what a good value is

    def warnings(self, kept: pl.DataFrame) -> list[str]:
        """One line per field with values stored empty among the stored rows."""
        lines = []
        for name, column in self.sources.items():
            bad = int(kept[f"bad_{name}"].sum()) if f"bad_{name}" in kept.columns else 0
            if bad:
                lines.append(f"{column} ({name}): {bad} values {self.rules[name]}")
        return lines


def count_values(values: pl.Expr) -> pl.Expr:
    """Counts as integers: a whole number from 0 to MAX_COUNT, else None."""
    number = values.cast(pl.Utf8).str.strip_chars().cast(pl.Float64, strict=False)
    good = (number >= 0) & (number <= MAX_COUNT) & (number == number.floor())
    return pl.when(good).then(number).cast(store.POSTS.given["likes"])


def text_values(values: pl.Expr) -> pl.Expr:
    """Ids and names as stripped text; empty ones None."""
    stripped = values.cast(pl.Utf8).str.strip_chars()
    return pl.when(stripped != "").then(stripped)


def kind_values(values: pl.Expr) -> pl.Expr:
    """Kinds as store.KINDS (KIND_NAMES, case-insensitive); unknown ones None."""
    return text_values(values).str.to_lowercase().replace_strict(KIND_NAMES, default=None)


def lang_values(values: pl.Expr) -> pl.Expr:
    """BCP 47 language tags; other values None."""
    stripped = text_values(values)
    return pl.when(stripped.str.contains(LANG)).then(stripped)


READERS = {
    "likes": (count_values, "not a count (a whole number from 0) stored empty"),
    "reposts": (count_values, "not a count (a whole number from 0) stored empty"),
    "replies": (count_values, "not a count (a whole number from 0) stored empty"),
    "kind": (kind_values, f"not a known kind stored as original (known: {', '.join(KIND_NAMES)})"),
    "lang": (lang_values, "not a language tag such as en or pt-BR stored empty"),
    "reply_to": (text_values, ""),
    "repost_of": (text_values, ""),
}


def post_fields(table: pl.DataFrame, columns: ColumnMap) -> PostFields:
    """The optional fields `columns` maps, read by READERS, with `counts_seen_at` (now, where a
    row gives a count) and the mentions column as lists of user ids."""
    sources = {name: getattr(columns, name) for name in FIELDS if getattr(columns, name)}
    read = {
        name: READERS[name][0](pl.col(column))
        for name, column in sources.items()
        if name in READERS
    }
    flags = {
        f"bad_{name}": pl.col(sources[name]).is_not_null() & value.is_null()
        for name, value in read.items()
        if READERS[name][1]
    }
    counts = [read[name] for name in ("likes", "reposts", "replies") if name in read]
    seen = pl.lit(None, pl.Datetime("us"))
    if counts:
        now = pl.lit(datetime.now(UTC).replace(tzinfo=None), pl.Datetime("us"))
        seen = pl.when(pl.any_horizontal(c.is_not_null() for c in counts)).then(now)
    mentions = mention_lists(table[columns.mentions]) if columns.mentions else None
    values = [
        *(value.alias(name) for name, value in read.items()),
        *(flag.alias(name) for name, flag in flags.items()),
        seen.alias("counts_seen_at"),
        pl.lit(mentions).alias("mentions"),
    ]
    return PostFields(values, sources, {name: rule for name, (_, rule) in READERS.items()})


def mention_lists(values: pl.Series) -> pl.Series:
    """Each row's mentioned user ids: a list, or text separated by spaces or commas (a leading
    @ dropped)."""
    if values.dtype != pl.List(pl.String):
        words = values.cast(pl.Utf8).str.replace_all(r"[,\s]+", " ").str.strip_chars()
        values = words.str.split(" ")
    handle = pl.element().str.strip_chars().str.strip_chars_start("@")
    return values.list.eval(handle.filter(handle != "")).list.unique(maintain_order=True)


def mention_rows(kept: pl.DataFrame) -> pl.DataFrame:
    """One row per stored post and account it mentions (store.MENTIONS)."""
    rows = kept.select("platform", "post_id", "user_id", mentioned="mentions")
    return rows.explode("mentioned").drop_nulls("mentioned")
