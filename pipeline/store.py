"""The one module that talks to DuckDB: schema, migrations, reads and writes.

Every statement is parameterised; frames go in through DuckDB's replacement scans of
local polars variables, never through string formatting.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import polars as pl

from pipeline.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS: list[list[str]] = [
    # 1: the spine
    [
        """CREATE TABLE posts (
            platform VARCHAR NOT NULL, post_id VARCHAR NOT NULL, user_id VARCHAR NOT NULL,
            created_at TIMESTAMP, text VARCHAR NOT NULL, url VARCHAR, kind VARCHAR DEFAULT 'post',
            inserted_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL,
            PRIMARY KEY (platform, post_id))""",
        """CREATE TABLE users (
            platform VARCHAR NOT NULL, user_id VARCHAR NOT NULL, display_name VARCHAR,
            label VARCHAR, url VARCHAR, description VARCHAR, updated_at TIMESTAMP NOT NULL,
            PRIMARY KEY (platform, user_id))""",
        """CREATE TABLE embeddings (
            model_id VARCHAR NOT NULL, text_hash VARCHAR NOT NULL, vector FLOAT[] NOT NULL,
            PRIMARY KEY (model_id, text_hash))""",
        """CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY, started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP,
            status VARCHAR NOT NULL, data_version VARCHAR, settings JSON, n_posts INTEGER,
            n_users INTEGER, n_clusters INTEGER, timings JSON, error VARCHAR)""",
        """CREATE TABLE user_clusters (
            run_id VARCHAR NOT NULL, platform VARCHAR NOT NULL, user_id VARCHAR NOT NULL,
            cluster_id INTEGER NOT NULL, probability DOUBLE NOT NULL, is_outlier BOOLEAN NOT NULL,
            x DOUBLE, y DOUBLE, n_posts INTEGER, PRIMARY KEY (run_id, platform, user_id))""",
        """CREATE TABLE clusters (
            run_id VARCHAR NOT NULL, cluster_id INTEGER NOT NULL, label VARCHAR NOT NULL,
            size INTEGER NOT NULL, n_outliers INTEGER NOT NULL, example_users VARCHAR[],
            representative_posts VARCHAR[], PRIMARY KEY (run_id, cluster_id))""",
        """CREATE TABLE cluster_terms (
            run_id VARCHAR NOT NULL, cluster_id INTEGER NOT NULL, term VARCHAR NOT NULL,
            weight DOUBLE NOT NULL, rank INTEGER NOT NULL,
            PRIMARY KEY (run_id, cluster_id, rank))""",
        """CREATE VIEW latest_run AS
            SELECT * FROM runs WHERE status = 'completed' ORDER BY finished_at DESC LIMIT 1""",
        """CREATE VIEW latest_user_clusters AS
            SELECT uc.* FROM user_clusters uc JOIN latest_run r USING (run_id)""",
        """CREATE VIEW latest_clusters AS
            SELECT c.* FROM clusters c JOIN latest_run r USING (run_id)""",
    ],
    # 2: collection (scrapers/)
    [
        """CREATE TABLE crawls (
            crawl_id VARCHAR PRIMARY KEY, source VARCHAR, started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP, status VARCHAR NOT NULL, stats JSON, error VARCHAR)""",
        """CREATE TABLE crawl_state (
            platform VARCHAR NOT NULL, account VARCHAR NOT NULL, newest_post_id VARCHAR,
            newest_created_at TIMESTAMP, cursor VARCHAR, updated_at TIMESTAMP NOT NULL,
            PRIMARY KEY (platform, account))""",
    ],
    # 3: products and recommendations
    [
        """CREATE TABLE products (
            product_id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, description VARCHAR,
            category VARCHAR, url VARCHAR, updated_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE recommendations (
            run_id VARCHAR NOT NULL, scope VARCHAR NOT NULL, scope_id VARCHAR NOT NULL,
            product_id VARCHAR NOT NULL, score DOUBLE NOT NULL, rank INTEGER NOT NULL,
            reason VARCHAR, PRIMARY KEY (run_id, scope, scope_id, rank))""",
    ],
    # 4: the process running a run or crawl, so a row left `running` by a killed one is seen
    [
        "ALTER TABLE runs ADD COLUMN host VARCHAR",
        "ALTER TABLE runs ADD COLUMN pid INTEGER",
        "ALTER TABLE crawls ADD COLUMN host VARCHAR",
        "ALTER TABLE crawls ADD COLUMN pid INTEGER",
    ],
    # 5: a post's language, as its platform gives it (Mastodon's `language`)
    ["ALTER TABLE posts ADD COLUMN lang VARCHAR"],
    # engagement and interaction (issue 16): counts as last seen, kinds, replies, reposts, mentions
    [
        "ALTER TABLE posts ADD COLUMN likes INTEGER",
        "ALTER TABLE posts ADD COLUMN reposts INTEGER",
        "ALTER TABLE posts ADD COLUMN replies INTEGER",
        "ALTER TABLE posts ADD COLUMN counts_seen_at TIMESTAMP",
        "ALTER TABLE posts ADD COLUMN reply_to VARCHAR",
        "ALTER TABLE posts ADD COLUMN repost_of VARCHAR",
        "UPDATE posts SET kind = CASE WHEN kind = 'boost' THEN 'repost' WHEN kind = 'reply' "
        "THEN 'reply' ELSE 'original' END WHERE kind IS DISTINCT FROM 'reply'",
        "ALTER TABLE posts ALTER COLUMN kind SET DEFAULT 'original'",
        """CREATE TABLE post_mentions (
            platform VARCHAR, post_id VARCHAR, mentioned VARCHAR NOT NULL,
            PRIMARY KEY (platform, post_id, mentioned))""",
    ],
    # provisional clusters (`tribes assign`): each run's cluster centres in profile space, and
    # rows for accounts that joined after the run, marked provisional until the next refresh
    [
        """CREATE TABLE cluster_centroids (
            run_id VARCHAR NOT NULL, cluster_id INTEGER NOT NULL, centroid FLOAT[] NOT NULL,
            similarities DOUBLE[] NOT NULL, PRIMARY KEY (run_id, cluster_id))""",
        "ALTER TABLE user_clusters ADD COLUMN provisional BOOLEAN DEFAULT false",
        "ALTER TABLE recommendations ADD COLUMN provisional BOOLEAN DEFAULT false",
    ],
    # behaviour per cluster and run (issue 16, pipeline/behaviour.py; BEHAVIOUR_TABLES)
    [
        """CREATE TABLE cluster_activity (run_id VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
            weekday TINYINT NOT NULL, hour TINYINT NOT NULL, posts INTEGER NOT NULL,
            PRIMARY KEY (run_id, cluster_id, weekday, hour))""",
        """CREATE TABLE cluster_engagement (run_id VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
            kind VARCHAR NOT NULL, posts INTEGER NOT NULL, median_likes DOUBLE,
            median_reposts DOUBLE, median_replies DOUBLE,
            PRIMARY KEY (run_id, cluster_id, kind))""",
        """CREATE TABLE cluster_weekly (run_id VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
            week DATE NOT NULL, posts INTEGER NOT NULL, active_users INTEGER NOT NULL,
            posts_per_user DOUBLE NOT NULL, PRIMARY KEY (run_id, cluster_id, week))""",
        """CREATE TABLE cluster_topics (run_id VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
            month DATE NOT NULL, term VARCHAR NOT NULL, posts INTEGER NOT NULL,
            share DOUBLE NOT NULL, PRIMARY KEY (run_id, cluster_id, term, month))""",
        """CREATE TABLE cluster_interactions (run_id VARCHAR NOT NULL,
            from_cluster INTEGER NOT NULL, to_cluster INTEGER NOT NULL, replies INTEGER NOT NULL,
            mentions INTEGER NOT NULL, reposts INTEGER NOT NULL,
            PRIMARY KEY (run_id, from_cluster, to_cluster))""",
        """CREATE TABLE cluster_accounts (run_id VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
            role VARCHAR NOT NULL, rank INTEGER NOT NULL, platform VARCHAR NOT NULL,
            user_id VARCHAR NOT NULL, score DOUBLE NOT NULL, interactions INTEGER NOT NULL,
            PRIMARY KEY (run_id, cluster_id, role, rank))""",
        """CREATE TABLE cluster_term_use (run_id VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
            term VARCHAR NOT NULL, uses INTEGER NOT NULL, users_share DOUBLE NOT NULL,
            PRIMARY KEY (run_id, cluster_id, term))""",
    ],
    # the hierarchy (issue 14): coarse groups are clusters rows too (level 'coarse'), a fine
    # cluster names its group in parent_id; a user placed with too little text says why
    [
        "ALTER TABLE clusters ADD COLUMN parent_id INTEGER",
        "ALTER TABLE clusters ADD COLUMN level VARCHAR DEFAULT 'fine'",
        "ALTER TABLE user_clusters ADD COLUMN reason VARCHAR",
        """CREATE OR REPLACE VIEW latest_clusters AS
            SELECT c.* FROM clusters c JOIN latest_run r USING (run_id) WHERE c.level = 'fine'""",
    ],
    # people: link groups of accounts (pipeline/people.py), each clustered account's person,
    # and the accounts `tribes forget` removed (never imported or crawled again)
    [
        """CREATE TABLE people (
            person_id VARCHAR NOT NULL, platform VARCHAR NOT NULL, user_id VARCHAR NOT NULL,
            how VARCHAR NOT NULL, score DOUBLE, evidence VARCHAR, updated_at TIMESTAMP NOT NULL,
            PRIMARY KEY (person_id, platform, user_id))""",
        "ALTER TABLE user_clusters ADD COLUMN person_id VARCHAR",
        """CREATE TABLE forgotten (
            platform VARCHAR NOT NULL, user_id VARCHAR NOT NULL, forgotten_at TIMESTAMP NOT NULL,
            PRIMARY KEY (platform, user_id))""",
    ],
    # verified profile links: the links a platform says it verified (Mastodon's rel=me fields),
    # as JSON [{"url", "verified_at"}], read by people.verified_links
    ["ALTER TABLE users ADD COLUMN verified_links VARCHAR"],
    # what a run read (code, settings, model, stored data: flows/inputs.py), so an unchanged
    # `tribes refresh` is recognised without starting Prefect
    ["ALTER TABLE runs ADD COLUMN inputs VARCHAR"],
]
SCHEMA_VERSION = len(MIGRATIONS)

# ---------------------------------------------------------------- the posts and users schema

Role = Literal["key", "author", "compared", "merged", "inserted", "updated"]
STAMPS: tuple[Role, ...] = ("inserted", "updated")


@dataclass(frozen=True)
class Column:
    """One stored column: its DuckDB type, its polars type and its `role` in upserts.

    Roles: `key` identifies the row; `author` is written once (a row giving another is
    refused); a different `compared` value updates the row (counted as updated); a non-empty
    `merged` value replaces the stored one (posts: without counting as updated); `inserted` /
    `updated` are the times the store inserted / last changed the row.
    """

    sql_type: str
    dtype: pl.DataType
    role: Role
    required: bool = False  # NOT NULL
    default: str | None = None  # stored when a row gives none


@dataclass(frozen=True)
class Table:
    """A table declared once: the upserts, the polars schema writers fill (ingest, the item
    pipeline) and the crawled items derive from it. Existing databases reach it through
    MIGRATIONS; tests/test_store.py checks that the migrations build exactly this."""

    name: str
    columns: dict[str, Column]

    def named(self, *roles: Role) -> list[str]:
        """The columns with one of `roles`, in declared order."""
        return [name for name, column in self.columns.items() if column.role in roles]

    @property
    def given(self) -> dict[str, pl.DataType]:
        """What writers give (every column but the store's times), with its polars type."""
        return {name: c.dtype for name, c in self.columns.items() if c.role not in STAMPS}

    def conform(self, rows: pl.DataFrame) -> pl.DataFrame:
        """`rows` as the given columns in declared order and types: an optional column that
        `rows` lacks is empty, an empty value takes the column's default."""
        return rows.select(
            _conformed(name, column, name in rows.columns)
            for name, column in self.columns.items()
            if column.role not in STAMPS
        )


def _conformed(name: str, column: Column, present: bool) -> pl.Expr:
    value = (pl.col(name) if present or column.required else pl.lit(None)).cast(column.dtype)
    return (value if column.default is None else value.fill_null(column.default)).alias(name)


POSTS = Table(
    "posts",
    {
        "platform": Column("VARCHAR", pl.Utf8, "key", required=True),
        "post_id": Column("VARCHAR", pl.Utf8, "key", required=True),
        "user_id": Column("VARCHAR", pl.Utf8, "author", required=True),
        "created_at": Column("TIMESTAMP", pl.Datetime("us"), "compared"),
        "text": Column("VARCHAR", pl.Utf8, "compared", required=True),
        "url": Column("VARCHAR", pl.Utf8, "compared"),
        "kind": Column("VARCHAR", pl.Utf8, "compared", default="original"),  # one of KINDS
        "inserted_at": Column("TIMESTAMP", pl.Datetime("us"), "inserted", required=True),
        "updated_at": Column("TIMESTAMP", pl.Datetime("us"), "updated", required=True),
        "lang": Column("VARCHAR", pl.Utf8, "compared"),  # the language the platform gives
        # engagement as last seen: a new reading replaces the stored one, the post is not updated
        "likes": Column("INTEGER", pl.Int32, "merged"),
        "reposts": Column("INTEGER", pl.Int32, "merged"),
        "replies": Column("INTEGER", pl.Int32, "merged"),
        "counts_seen_at": Column("TIMESTAMP", pl.Datetime("us"), "merged"),  # crawl/import time
        "reply_to": Column("VARCHAR", pl.Utf8, "merged"),  # user_id replied to, same platform
        "repost_of": Column("VARCHAR", pl.Utf8, "merged"),  # user_id of the reposted account
    },
)
KINDS = ("original", "reply", "repost", "quote", "link", "photo", "video")  # posts.kind values
MENTIONS = {"platform": pl.Utf8, "post_id": pl.Utf8, "user_id": pl.Utf8, "mentioned": pl.Utf8}
USERS = Table(
    "users",
    {
        "platform": Column("VARCHAR", pl.Utf8, "key", required=True),
        "user_id": Column("VARCHAR", pl.Utf8, "key", required=True),
        "display_name": Column("VARCHAR", pl.Utf8, "merged"),
        "label": Column("VARCHAR", pl.Utf8, "merged"),  # a known interest label
        "url": Column("VARCHAR", pl.Utf8, "merged"),
        "description": Column("VARCHAR", pl.Utf8, "merged"),
        "updated_at": Column("TIMESTAMP", pl.Datetime("us"), "updated", required=True),
        "verified_links": Column("VARCHAR", pl.Utf8, "merged"),  # JSON [{url, verified_at}]
    },
)


class StoreError(RuntimeError):
    """A database problem explained in one line."""


class DiskFull(StoreError):
    """The disk (or the user's quota) is full: `disk full writing PATH`; no retry helps."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# libraries that drop the errno keep its text ("No space left on device", "Disk quota exceeded")
DISK_FULL_TEXTS = tuple(os.strerror(code) for code in DISK_FULL_ERRNOS)


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` says the disk or quota is full (OSError, DuckDB's and polars' IO errors)."""
    return getattr(error, "errno", None) in DISK_FULL_ERRNOS or any(
        text in str(error) for text in DISK_FULL_TEXTS
    )


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Turn a full disk while writing `path` (the database or any file) into
    DiskFull('disk full writing PATH')."""
    try:
        yield
    except Exception as exc:
        if is_disk_full(exc):
            raise DiskFull(f"disk full writing {path}") from exc
        raise


@dataclass(frozen=True)
class UpsertCounts:
    """What an upsert did; `refused` holds the incoming (platform, post_id, user_id) rows it
    refused because the post id belongs to another account."""

    inserted: int
    updated: int
    unchanged: int
    refused: pl.DataFrame


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All statements inside commit together, or none do."""
    con.begin()
    try:
        yield con
        con.commit()
    except BaseException:
        con.rollback()
        raise


# ---------------------------------------------------------------- connection and schema

DATABASE_SUFFIXES = (".duckdb", ".db")
DUCKDB_MAGIC = b"DUCK"  # bytes 8-12 of every DuckDB file
DAMAGE_SIGNS = ("Corrupt database file", "Could not read enough bytes")
Mode = Literal["read", "write"]


class StoreLocked(StoreError):
    """Another process held the database longer than the wait allows."""


def check_database_file(path: Path, mode: Mode) -> None:
    """Refuse what is not a DuckDB database before DuckDB sees it: another kind of file (DuckDB
    would open an empty in-memory database instead), a missing database for reading, a new
    database without a .duckdb/.db name."""
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a DuckDB database file")
    if not path.exists():
        if mode == "read":
            raise StoreError(f"no database at {path}: import or crawl first")
        if path.suffix.lower() not in DATABASE_SUFFIXES:
            raise StoreError(f"a new database needs a .duckdb or .db name, not {path.name!r}")
        return
    with path.open("rb") as file:
        header = file.read(12)
    if header[8:12] != DUCKDB_MAGIC:
        raise StoreError(
            f"{path} is not a DuckDB database (import CSV, JSON Lines or Parquet files with "
            "`tribes import FILE`)"
        )


def _open(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        message = str(exc)
        if isinstance(exc, duckdb.IOException) and "lock" in message.lower():
            raise StoreLocked(
                f"database {path} is locked by another process{_holder(message)}"
            ) from exc
        raise _damaged(path, exc) or StoreError(
            f"cannot open database {path}: {_first_line(exc)}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _damaged(path: Path, exc: duckdb.Error) -> StoreError | None:
    """The one-line error for a truncated or scribbled database file; None for other errors
    (DuckDB finds a damaged block only when it reads it: at open or in any query)."""
    first = _first_line(exc)
    if any(sign in first for sign in DAMAGE_SIGNS):
        return StoreError(f"database {path} is damaged or truncated: {first}")
    return None


def _holder(lock_message: str) -> str:
    """' (pid N)' of the process DuckDB names in a lock error, else ''."""
    found = re.search(r"\(PID (\d+)\)", lock_message, re.IGNORECASE)
    return f" (pid {found.group(1)})" if found else ""


def _open_waiting(path: Path, read_only: bool, wait_seconds: float) -> duckdb.DuckDBPyConnection:
    """Open the database, polling up to `wait_seconds` while another process holds its lock (a
    writer's transactions are short: a reader gets in between them)."""
    deadline = time.monotonic() + wait_seconds
    pause = 0.05
    while True:
        try:
            return _open(path, read_only)
        except StoreLocked as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreLocked(
                    f"{exc} for over {wait_seconds:g} s: try again when it finishes "
                    "(lock_wait_seconds sets the wait)"
                ) from None
            if pause == 0.05:
                log.warning(
                    "database %s is busy (another writer); waiting for it up to %g s%s",
                    path,
                    wait_seconds,
                    _holder(str(exc)),
                )
            time.sleep(min(pause, left))
            pause = min(2.0, pause * 2)


@contextmanager
def _session(path: Path, con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield an open connection, close it after, and name a damaged file in one line."""
    try:
        yield con
    except duckdb.Error as exc:
        damaged = _damaged(path, exc)
        if damaged is None:
            raise
        raise damaged from exc
    finally:
        con.close()


@contextmanager
def _connect(
    path: Path, read_only: bool, wait_seconds: float
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the database (migrating it when writable), waiting up to `wait_seconds` for a lock."""
    check_database_file(path, "read" if read_only else "write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder of database {path}: {exc.strerror}") from None
    with _session(path, _open_waiting(path, read_only, wait_seconds)) as con:
        if not read_only:
            migrate(con)
        yield con


@contextmanager
def open(  # noqa: A001 - `store.open`, the one way to open the database
    where: Settings | Path | str, mode: Mode = "read", *, wait_seconds: float | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The database of `where` (settings, or a database path), read-only or writable (migrated).
    Waits while another process holds it, up to the `lock_wait_seconds` setting (its default for
    a path; `wait_seconds` where the setting arrives another way, as in the crawl's Scrapy
    process; 0 tries once), then raises `StoreLocked`. Reading a database that does not exist
    raises `StoreError`."""
    if isinstance(where, Settings):
        path, setting = where.db, where.lock_wait_seconds
    else:
        path, setting = Path(where), Settings.model_fields["lock_wait_seconds"].default
    wait = setting if wait_seconds is None else wait_seconds
    if mode == "write":
        with _connect(path, False, wait) as con:
            yield con
        return
    with _connect(path, True, wait) as con:
        version = schema_version(con)
        if version == SCHEMA_VERSION:
            yield con
            return
    if version == 0:
        raise StoreError(f"{path} holds no Tribes data: import or crawl first")
    with _connect(path, False, wait):  # an older schema: migrate it, then read
        pass
    with _connect(path, True, wait) as con:
        yield con


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply the forward migrations this database lacks; returns the schema version."""
    current = schema_version(con)
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"database schema v{current} is newer than this Tribes (v{SCHEMA_VERSION}): upgrade"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        with transaction(con):
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
            )
            for statement in MIGRATIONS[version - 1]:
                con.execute(statement)
            con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, now()])
    return SCHEMA_VERSION


def frame(
    con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None, **tables: pl.DataFrame
) -> pl.DataFrame:
    """Run a parameterised query, with `tables` visible by name, and return a polars frame."""
    for name, table in tables.items():
        con.register(name, table)
    try:
        return con.sql(sql, params=params or None).pl()
    finally:
        for name in tables:
            con.unregister(name)


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    return con.execute(sql, params or []).fetchall()[0][0]


# ---------------------------------------------------------------- posts and users


def upsert_posts(
    con: duckdb.DuckDBPyConnection,
    posts: pl.DataFrame,
    users: pl.DataFrame | None = None,
    mentions: pl.DataFrame | None = None,
) -> UpsertCounts:
    """Insert new posts and update changed ones (a `compared` column of POSTS differs; a
    non-empty `merged` one, such as a count, replaces the stored value without making the post
    updated), keyed by (platform, post_id), and upsert `users` with them: all in one transaction.

    A post never changes its author: a row whose id is stored under another user, or whose id an
    earlier row of `posts` gave to another user, is refused (and returned, not written). Of the
    rows left, the last one of each id wins. `mentions` (MENTIONS: platform, post_id, user_id,
    mentioned), when given, replace the stored mentions of every accepted post.
    """
    key = ", ".join(POSTS.named("key"))
    changed = " OR ".join(f"p.{c} IS DISTINCT FROM i.{c}" for c in POSTS.named("compared"))
    merged = ", ".join(f"coalesce(i.{c}, p.{c}) AS {c}" for c in POSTS.named("merged"))
    renewed = " OR ".join(f"i.{c} IS NOT NULL" for c in POSTS.named("merged"))
    rewritten = ", ".join(
        f"{c} = excluded.{c}" for c in POSTS.named("compared", "merged", "updated")
    )
    stamp = now()
    with transaction(con):
        if users is not None:
            upsert_users(con, users)
        con.register("incoming_frame", POSTS.conform(posts).with_row_index("seq"))
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE incoming AS
            SELECT f.*, coalesce(p.user_id, first_value(f.user_id) OVER (
                PARTITION BY {key} ORDER BY f.seq)) AS owner
            FROM incoming_frame f LEFT JOIN posts p USING ({key})"""
        )
        con.unregister("incoming_frame")
        refused = con.sql(
            f"SELECT {', '.join(POSTS.named('key', 'author'))} FROM incoming "
            "WHERE user_id IS DISTINCT FROM owner"
        ).pl()
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE accepted AS
            SELECT * EXCLUDE (seq, owner) FROM incoming WHERE user_id = owner
            QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY seq DESC) = 1"""
        )
        status = con.execute(
            f"""SELECT
                count(*) FILTER (WHERE p.post_id IS NULL),
                count(*) FILTER (WHERE p.post_id IS NOT NULL AND ({changed})),
                count(*)
            FROM accepted i LEFT JOIN posts p USING ({key})"""
        ).fetchall()[0]
        con.execute(
            f"""INSERT INTO posts BY NAME
            SELECT i.* EXCLUDE ({", ".join(POSTS.named("merged"))}), {merged},
                ? AS inserted_at,
                CASE WHEN p.post_id IS NULL OR {changed} THEN ? ELSE p.updated_at END
                    AS updated_at
            FROM accepted i LEFT JOIN posts p USING ({key})
            WHERE p.post_id IS NULL OR {changed} OR {renewed}
            ON CONFLICT ({key}) DO UPDATE SET {rewritten}""",
            [stamp, stamp],
        )
        if mentions is not None:
            replace_mentions(con, mentions)
        con.execute("DROP TABLE incoming")
        con.execute("DROP TABLE accepted")
    inserted, updated, total = status
    return UpsertCounts(inserted, updated, total - inserted - updated, refused)


def replace_mentions(con: duckdb.DuckDBPyConnection, mentions: pl.DataFrame) -> None:
    """Make `mentions` the stored mentions of the posts in the temp table `accepted` (inside
    upsert_posts' transaction); rows of another author or of a refused post are not written."""
    con.execute(
        "DELETE FROM post_mentions WHERE (platform, post_id) IN "
        "(SELECT (platform, post_id) FROM accepted)"
    )
    con.register("incoming_mentions", mentions.select(pl.col(MENTIONS).cast(pl.Utf8)))
    con.execute(
        """INSERT INTO post_mentions BY NAME
        SELECT DISTINCT m.platform, m.post_id, m.mentioned
        FROM incoming_mentions m JOIN accepted a USING (platform, post_id, user_id)
        WHERE m.mentioned IS NOT NULL AND m.mentioned <> ''"""
    )
    con.unregister("incoming_mentions")


def upsert_users(con: duckdb.DuckDBPyConnection, users: pl.DataFrame) -> int:
    """Insert or refresh account rows (the given columns of USERS; absent ones are empty): a
    non-empty value replaces the stored one."""
    key = USERS.named("key")
    merged = ", ".join(f"{c} = coalesce(excluded.{c}, users.{c})" for c in USERS.named("merged"))
    incoming = USERS.conform(users).unique(key, keep="last")
    con.register("incoming_users", incoming)
    con.execute(
        f"""INSERT INTO users BY NAME SELECT *, ? AS updated_at FROM incoming_users
        ON CONFLICT ({", ".join(key)}) DO UPDATE SET {merged}, updated_at = excluded.updated_at""",
        [now()],
    )
    con.unregister("incoming_users")
    return incoming.height


def texts_on_other_platforms(
    con: duckdb.DuckDBPyConnection, platform: str, texts: pl.Series
) -> tuple[str, int] | None:
    """The other platform that already stores the most of `texts` (distinct), and how many."""
    found = frame(
        con,
        """SELECT p.platform, count(DISTINCT p.text) AS n
        FROM posts p SEMI JOIN incoming_texts i ON p.text = i.text
        WHERE p.platform <> ? GROUP BY p.platform ORDER BY n DESC, p.platform LIMIT 1""",
        [platform],
        incoming_texts=texts.unique().to_frame("text"),
    )
    return found.row(0) if found.height else None


def read_posts(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return frame(
        con,
        "SELECT platform, post_id, user_id, created_at, text FROM posts ORDER BY platform, post_id",
    )


def read_post_activity(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every post's time, kind, language, engagement counts and the accounts it answers."""
    return frame(
        con,
        """SELECT platform, post_id, user_id, created_at, kind, lang, likes, reposts, replies,
            reply_to, repost_of FROM posts ORDER BY platform, post_id""",
    )


def read_mentions(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Who mentions whom: each post's author and the accounts it mentions (same platform)."""
    return frame(
        con,
        """SELECT m.platform, m.post_id, p.user_id, m.mentioned
        FROM post_mentions m JOIN posts p USING (platform, post_id)
        ORDER BY m.platform, m.post_id, m.mentioned""",
    )


def read_users(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return frame(con, "SELECT platform, user_id, display_name, label FROM users")


def read_profiles(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """What accounts publish about themselves (people.verified_links reads it)."""
    return frame(
        con,
        "SELECT platform, user_id, url, description, verified_links FROM users "
        "ORDER BY platform, user_id",
    )


def data_version(con: duckdb.DuckDBPyConnection) -> str:
    """A fingerprint of every stored post: changes whenever a post is added or edited."""
    count, digest = con.execute(
        "SELECT count(*), coalesce(bit_xor(hash(platform, post_id, user_id, text)), 0) FROM posts"
    ).fetchall()[0]
    return f"{count}-{int(digest):016x}"


def activity_version(con: duckdb.DuckDBPyConnection) -> str:
    """A fingerprint of what the activity stats read (times, kinds, languages, counts, replies,
    reposts, mentions): changes with them, while `data_version` (texts) does not."""
    count, posts, mentions = con.execute(
        """SELECT (SELECT count(*) FROM posts),
            (SELECT coalesce(bit_xor(hash(platform, post_id, user_id, created_at, kind, lang,
                likes, reposts, replies, reply_to, repost_of)), 0) FROM posts),
            (SELECT coalesce(bit_xor(hash(platform, post_id, mentioned)), 0) FROM post_mentions)"""
    ).fetchall()[0]
    return f"{count}-{int(posts):016x}-{int(mentions):016x}"


@dataclass(frozen=True)
class PostCounts:
    users: int
    posts: int
    users_with_enough: int  # users with at least the asked number of posts


def post_counts(con: duckdb.DuckDBPyConnection, min_posts: int) -> PostCounts:
    """How many users and posts there are, and how many users have at least `min_posts` posts."""
    users, posts, enough = con.execute(
        """SELECT count(*), coalesce(sum(n), 0), count(*) FILTER (WHERE n >= ?)
        FROM (SELECT count(*) AS n FROM posts GROUP BY platform, user_id)""",
        [min_posts],
    ).fetchall()[0]
    return PostCounts(users, int(posts), enough)


# ---------------------------------------------------------------- embeddings


def missing_hashes(con: duckdb.DuckDBPyConnection, model_id: str, hashes: list[str]) -> list[str]:
    """The text hashes that have no stored embedding for this model."""
    wanted = pl.DataFrame({"text_hash": hashes}, schema={"text_hash": pl.Utf8}).unique()
    return frame(
        con,
        """SELECT w.text_hash FROM wanted w
        ANTI JOIN (SELECT text_hash FROM embeddings WHERE model_id = ?) e USING (text_hash)
        ORDER BY w.text_hash""",
        [model_id],
        wanted=wanted,
    )["text_hash"].to_list()


def insert_embeddings(
    con: duckdb.DuckDBPyConnection, model_id: str, hashes: list[str], vectors: np.ndarray
) -> None:
    """Store one chunk of vectors (committed on its own, so an interrupted run keeps it)."""
    chunk = pl.DataFrame(
        {"text_hash": hashes, "vector": vectors.astype(np.float32)},
        schema={"text_hash": pl.Utf8, "vector": pl.Array(pl.Float32, vectors.shape[1])},
    )
    con.register("chunk", chunk)
    con.execute(
        """INSERT INTO embeddings SELECT ?, text_hash, vector::FLOAT[] FROM chunk
        ON CONFLICT DO NOTHING""",
        [model_id],
    )
    con.unregister("chunk")


def load_embeddings(con: duckdb.DuckDBPyConnection, model_id: str, hashes: list[str]) -> np.ndarray:
    """Vectors for `hashes`, in that order; fails if any is missing."""
    wanted = pl.DataFrame(
        {"text_hash": hashes, "pos": np.arange(len(hashes))},
        schema={"text_hash": pl.Utf8, "pos": pl.Int64},
    )
    found = frame(
        con,
        """SELECT w.pos, e.vector FROM wanted w
        JOIN (SELECT text_hash, vector FROM embeddings WHERE model_id = ?) e USING (text_hash)
        ORDER BY w.pos""",
        [model_id],
        wanted=wanted,
    )
    if found.height != len(hashes):
        raise StoreError(
            f"{len(hashes) - found.height} posts have no embedding for {model_id}: run embed first"
        )
    if found.height == 0:
        return np.zeros((0, 0), dtype=np.float32)
    dim = len(found["vector"][0])
    return found["vector"].list.to_array(dim).to_numpy().astype(np.float32, copy=False)


# ---------------------------------------------------------------- runs and results


def start_run(
    con: duckdb.DuckDBPyConnection, settings: dict, version: str, inputs: str | None = None
) -> str:
    """Record a run as running by this process (see `abandon_stale`), with the digest of what
    it reads (`inputs`); returns its id."""
    run_id = f"{now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    con.execute(
        "INSERT INTO runs (run_id, started_at, status, data_version, settings, host, pid, inputs) "
        "VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
        [run_id, now(), version, json.dumps(settings), socket.gethostname(), os.getpid(), inputs],
    )
    return run_id


def stored_inputs_version(con: duckdb.DuckDBPyConnection) -> str:
    """A fingerprint of everything stored that a refresh reads: the posts' texts and activity,
    the accounts, the people links and the products."""
    users, products = con.execute(
        """SELECT (SELECT count(*) || '-' || coalesce(bit_xor(hash(platform, user_id,
                display_name, label, url, description, verified_links)), 0) FROM users),
            (SELECT count(*) || '-' || coalesce(bit_xor(hash(product_id, name, description,
                category, url)), 0) FROM products)"""
    ).fetchall()[0]
    return "/".join((data_version(con), activity_version(con), links_version(con), users, products))


def unchanged_run(con: duckdb.DuckDBPyConnection, inputs: str) -> str | None:
    """The latest completed run when it read exactly `inputs` (nothing changed since), else
    None."""
    rows = con.execute("SELECT run_id, inputs FROM latest_run").fetchall()
    return rows[0][0] if rows and rows[0][1] == inputs else None


BEHAVIOUR_TABLES = (  # pipeline/behaviour.describe_behaviour's tables, written at publish
    "cluster_activity",
    "cluster_engagement",
    "cluster_weekly",
    "cluster_topics",
    "cluster_interactions",
    "cluster_accounts",
    "cluster_term_use",
)


RUN_RESULT_TABLES = (  # every table holding a run's results (pruned and failed runs lose them)
    "user_clusters",
    "clusters",
    "cluster_terms",
    "recommendations",
    "cluster_centroids",
    *BEHAVIOUR_TABLES,
)


def fail_run(con: duckdb.DuckDBPyConnection, run_id: str, error: str) -> None:
    """Mark a run failed and drop any partial results; earlier runs stay as they were."""
    with transaction(con):
        for table in RUN_RESULT_TABLES:
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        con.execute(
            "UPDATE runs SET status = 'failed', finished_at = ?, error = ? WHERE run_id = ?",
            [now(), error[:2000], run_id],
        )


def complete_run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    user_clusters: pl.DataFrame,
    clusters: pl.DataFrame,
    terms: pl.DataFrame,
    timings: dict[str, object],
    n_posts: int,
    *,
    centroids: pl.DataFrame | None = None,
    behaviour: dict[str, pl.DataFrame] | None = None,
) -> None:
    """Write a run's results (with its cluster centres, for `tribes assign`, and its
    BEHAVIOUR_TABLES) and mark it completed, all in one transaction."""
    tables = [("user_clusters", user_clusters), ("clusters", clusters), ("cluster_terms", terms)]
    if centroids is not None:
        tables.append(("cluster_centroids", centroids))
    tables += list((behaviour or {}).items())
    with transaction(con):
        for table, rows in tables:
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            con.register("rows", rows)
            con.execute(f"INSERT INTO {table} BY NAME SELECT ? AS run_id, * FROM rows", [run_id])
            con.unregister("rows")
        con.execute(
            """UPDATE runs SET status = 'completed', finished_at = ?, n_posts = ?, n_users = ?,
            n_clusters = ?, timings = ? WHERE run_id = ?""",
            [
                now(),
                n_posts,
                user_clusters.height,
                user_clusters["cluster_id"].n_unique(),  # the fine clusters
                json.dumps(timings),
                run_id,
            ],
        )


def latest_run_id(con: duckdb.DuckDBPyConnection) -> str | None:
    rows = con.execute("SELECT run_id FROM latest_run").fetchall()
    return rows[0][0] if rows else None


Level = Literal["fine", "coarse"]


def cluster_table(
    con: duckdb.DuckDBPyConnection, run_id: str, level: Level = "fine"
) -> pl.DataFrame:
    """One row per cluster of a run at `level`: id, size, label, top terms, example users, its
    group (parent id and label; fine clusters) and its sub-groups (ids; coarse groups)."""
    return frame(
        con,
        """SELECT c.cluster_id, c.size, c.n_outliers, c.label,
            (SELECT string_agg(t.term, ', ' ORDER BY t.rank) FROM cluster_terms t
             WHERE t.run_id = c.run_id AND t.cluster_id = c.cluster_id) AS top_terms,
            c.example_users, c.representative_posts, c.parent_id, p.label AS parent_label,
            (SELECT list(s.cluster_id ORDER BY s.size DESC, s.cluster_id) FROM clusters s
             WHERE s.run_id = c.run_id AND s.parent_id = c.cluster_id) AS children,
            (SELECT count(*) FROM user_clusters u WHERE u.run_id = c.run_id
             AND u.cluster_id = c.cluster_id AND u.provisional) AS n_provisional
        FROM clusters c LEFT JOIN clusters p
            ON p.run_id = c.run_id AND p.cluster_id = c.parent_id
        WHERE c.run_id = ? AND c.level = ? ORDER BY c.size DESC, c.cluster_id""",
        [run_id, level],
    )


def left_out(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, int]:
    """How many users of a run were placed rather than clustered, by reason; and as 'no text'
    how many authors of posts stored before the run are in none of its clusters (every post
    empty once links and handles are cleaned away)."""
    from pipeline.hierarchy import NO_TEXT

    counts = dict(
        con.execute(
            "SELECT reason, count(*) FROM user_clusters WHERE run_id = ? AND reason IS NOT NULL "
            "GROUP BY reason ORDER BY reason",
            [run_id],
        ).fetchall()
    )
    missing = scalar(
        con,
        """SELECT count(*) FROM (SELECT DISTINCT p.platform, p.user_id FROM posts p
            WHERE p.inserted_at <= (SELECT started_at FROM runs WHERE run_id = ?)) a
        ANTI JOIN (SELECT platform, user_id FROM user_clusters WHERE run_id = ?) u
            USING (platform, user_id)""",
        [run_id, run_id],
    )
    return counts | ({NO_TEXT: missing} if missing else {})


def runs_table(con: duckdb.DuckDBPyConnection, limit: int = 20) -> pl.DataFrame:
    """The latest runs, newest first (a stale `running` one shows as `abandoned`)."""
    table = frame(
        con,
        """SELECT run_id, status, started_at, finished_at,
            date_diff('millisecond', started_at, finished_at) / 1000.0 AS seconds,
            n_posts, n_users, n_clusters, error,
            (SELECT count(*) FROM user_clusters u
             WHERE u.run_id = runs.run_id AND u.provisional) AS n_provisional
        FROM runs ORDER BY started_at DESC LIMIT ?""",
        [limit],
    )
    return shown_abandoned(con, "runs", table)


# ---------------------------------------------------------------- retention (keep_runs)


def prune_runs(con: duckdb.DuckDBPyConnection, keep: int) -> list[str]:
    """Delete every finished run started before the `keep`-th newest completed run, its results
    first, in one transaction; returns the deleted ids, oldest first (none while fewer than
    `keep` runs completed). A run still running is left alone."""
    with transaction(con):
        old = [
            row[0]
            for row in con.execute(
                """SELECT run_id FROM runs WHERE status <> 'running' AND started_at < (
                    SELECT started_at FROM runs WHERE status = 'completed'
                    ORDER BY started_at DESC LIMIT 1 OFFSET ?)
                ORDER BY started_at""",
                [keep - 1],
            ).fetchall()
        ]
        for table in (*RUN_RESULT_TABLES, "runs"):
            con.execute(f"DELETE FROM {table} WHERE list_contains(?, run_id)", [old])
    return old


def same_results(con: duckdb.DuckDBPyConnection, run_id: str, other: str) -> bool:
    """Whether two runs stored the same results, row for row, in every result table."""
    for table in RUN_RESULT_TABLES:
        rows = f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ?"
        one_way = f"({rows} EXCEPT ALL {rows})"
        differ = scalar(
            con,
            f"SELECT count(*) FROM ({one_way} UNION ALL {one_way})",
            [run_id, other, other, run_id],
        )
        if differ:
            return False
    return True


def kept_runs(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The completed runs, newest first (what the reports' index lists)."""
    return frame(
        con,
        """SELECT run_id, finished_at, n_posts, n_users, n_clusters FROM runs
        WHERE status = 'completed' ORDER BY started_at DESC""",
    )


# ---------------------------------------------------------------- behaviour per cluster (issue 16)


def read_behaviour(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, pl.DataFrame]:
    """A run's behaviour tables, by name, without the run_id column."""
    return {
        table: frame(con, f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ?", [run_id])
        for table in BEHAVIOUR_TABLES
    }


# ---------------------------------------------------------------- runs and crawls left running

RUNNING_KEYS = {"runs": "run_id", "crawls": "crawl_id"}  # tables whose rows run in a process
ABANDONED = "its process ended before it finished (killed?)"


def process_gone(host: str | None, pid: int | None) -> bool:
    """Whether the process `pid` of this host has ended (unknown hosts and pids: no)."""
    if pid is None or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return is_zombie(pid)


def is_zombie(pid: int) -> bool:
    """Whether `pid` has ended but its parent has not collected it yet (Linux; elsewhere no)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False


def stale_ids(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The ids of `table`'s rows still `running` whose process has ended."""
    key = RUNNING_KEYS[table]
    rows = con.execute(f"SELECT {key}, host, pid FROM {table} WHERE status = 'running'").fetchall()
    return [row_id for row_id, host, pid in rows if process_gone(host, pid)]


def shown_abandoned(con: duckdb.DuckDBPyConnection, table: str, rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` of `table` with its stale `running` rows shown `abandoned`: what `abandon_stale`
    will write, for readers that cannot write."""
    abandoned = pl.col(RUNNING_KEYS[table]).is_in(stale_ids(con, table))
    return rows.with_columns(
        status=pl.when(abandoned).then(pl.lit("abandoned")).otherwise("status"),
        error=pl.when(abandoned).then(pl.lit(ABANDONED)).otherwise("error"),
    )


def abandon_stale(con: duckdb.DuckDBPyConnection) -> int:
    """Mark `abandoned` every run and crawl left `running` by an ended process; returns how many."""
    count = 0
    for table, key in RUNNING_KEYS.items():
        for row_id in stale_ids(con, table):
            con.execute(
                f"UPDATE {table} SET status = 'abandoned', finished_at = ?, error = ? "
                f"WHERE {key} = ? AND status = 'running'",
                [now(), ABANDONED, row_id],
            )
            count += 1
    if count:
        log.warning("marked %d run(s) or crawl(s) abandoned: %s", count, ABANDONED)
    return count


# ------------------------------------------------------- products, recommendations, reports

PRODUCT_COLUMNS = ["product_id", "name", "description", "category", "url"]
RECOMMENDATION_COLUMNS = ["scope", "scope_id", "product_id", "score", "rank", "reason"]


def replace_products(con: duckdb.DuckDBPyConnection, products: pl.DataFrame) -> int:
    """Make `products` (product_id, name, description, category, url) the whole catalogue."""
    with transaction(con):
        con.register("incoming_products", products.select(PRODUCT_COLUMNS))
        con.execute("DELETE FROM products")
        con.execute(
            "INSERT INTO products BY NAME SELECT *, ? AS updated_at FROM incoming_products",
            [now()],
        )
        con.unregister("incoming_products")
    return products.height


def read_products(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return frame(
        con, "SELECT product_id, name, description, category, url FROM products ORDER BY product_id"
    )


def write_recommendations(con: duckdb.DuckDBPyConnection, run_id: str, rows: pl.DataFrame) -> int:
    """Replace a run's recommendations with `rows` (scope, scope_id, product_id, score, rank,
    reason) in one transaction."""
    with transaction(con):
        con.execute("DELETE FROM recommendations WHERE run_id = ?", [run_id])
        con.register("incoming_recs", rows.select(RECOMMENDATION_COLUMNS))
        con.execute(
            "INSERT INTO recommendations BY NAME SELECT ? AS run_id, * FROM incoming_recs",
            [run_id],
        )
        con.unregister("incoming_recs")
    return rows.height


def read_recommendations(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    scope: str | None = None,
    scope_id: str | None = None,
) -> pl.DataFrame:
    """A run's recommendations with product details, optionally for one scope / scope id."""
    return frame(
        con,
        """SELECT r.scope, r.scope_id, r.rank, r.score, r.reason, r.product_id,
            coalesce(p.name, r.product_id) AS name, p.description, p.category, p.url
        FROM recommendations r LEFT JOIN products p USING (product_id)
        WHERE r.run_id = ? AND (?::VARCHAR IS NULL OR r.scope = ?)
          AND (?::VARCHAR IS NULL OR r.scope_id = ?)
        ORDER BY r.scope, r.scope_id, r.rank""",
        [run_id, scope, scope, scope_id, scope_id],
    )


def run_info(con: duckdb.DuckDBPyConnection, run_id: str) -> dict | None:
    """One runs row as a dict (settings and timings parsed), or None for an unknown id."""
    found = frame(
        con,
        """SELECT run_id, status, started_at, finished_at, data_version, settings, n_posts,
            n_users, n_clusters, timings, error,
            date_diff('millisecond', started_at, finished_at) / 1000.0 AS seconds
        FROM runs WHERE run_id = ?""",
        [run_id],
    )
    if found.height == 0:
        return None
    row = found.row(0, named=True)
    for key in ("settings", "timings"):
        row[key] = json.loads(row[key]) if row[key] else {}
    row["cached"] = row["timings"].pop(CACHED, [])
    row["first_computed_seconds"] = first_computed_seconds(con, run_id) if row["cached"] else None
    return row


CACHED = "cached"  # runs.timings: the stages Prefect's cache answered (the rest: stage seconds)


def first_computed_seconds(con: duckdb.DuckDBPyConnection, run_id: str) -> float | None:
    """How long the earliest completed run of the same data and settings as `run_id` took: the
    work a cached run reused."""
    found = con.execute(
        """SELECT date_diff('millisecond', r.started_at, r.finished_at) / 1000.0
        FROM runs r, runs this WHERE this.run_id = ? AND r.status = 'completed'
            AND r.data_version = this.data_version AND r.settings::VARCHAR = this.settings::VARCHAR
            AND r.started_at < this.started_at
        ORDER BY r.started_at LIMIT 1""",
        [run_id],
    ).fetchall()
    return found[0][0] if found else None


def previous_run_id(con: duckdb.DuckDBPyConnection, run_id: str) -> str | None:
    """The completed run that finished last before `run_id` started."""
    rows = con.execute(
        """SELECT run_id FROM runs WHERE status = 'completed' AND run_id <> ?
            AND finished_at <= (SELECT started_at FROM runs WHERE run_id = ?)
        ORDER BY finished_at DESC LIMIT 1""",
        [run_id, run_id],
    ).fetchall()
    return rows[0][0] if rows else None


def add_run_timings(con: duckdb.DuckDBPyConnection, run_id: str, timings: dict[str, float]) -> None:
    """Merge stage timings measured after a run was published into its `timings`."""
    found = con.execute("SELECT timings FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not found:
        return
    merged = {**(json.loads(found[0][0]) if found[0][0] else {}), **timings}
    con.execute("UPDATE runs SET timings = ? WHERE run_id = ?", [json.dumps(merged), run_id])


def run_members(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """A run's users with cluster, map position, display name and known label."""
    return frame(
        con,
        """SELECT uc.platform, uc.user_id, coalesce(u.display_name, uc.user_id) AS name,
            u.label AS known_label, uc.cluster_id, uc.probability, uc.is_outlier, uc.x, uc.y,
            uc.n_posts, uc.provisional, uc.reason, uc.person_id
        FROM user_clusters uc LEFT JOIN users u USING (platform, user_id)
        WHERE uc.run_id = ? ORDER BY uc.cluster_id, uc.probability DESC, uc.user_id""",
        [run_id],
    )


def run_centroids(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """A run's cluster centres in profile space (cluster_id, centroid, similarities)."""
    return frame(
        con,
        "SELECT cluster_id, centroid, similarities FROM cluster_centroids WHERE run_id = ? "
        "ORDER BY cluster_id",
        [run_id],
    )


def posts_of_new_accounts(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """The posts (as `read_posts`) of accounts the run did not cluster: those that joined since,
    and those it left out for having too few posts."""
    return frame(
        con,
        """SELECT p.platform, p.post_id, p.user_id, p.created_at, p.text FROM posts p
        ANTI JOIN (SELECT platform, user_id FROM user_clusters
                   WHERE run_id = ? AND NOT provisional) m USING (platform, user_id)
        ORDER BY p.platform, p.post_id""",
        [run_id],
    )


def write_provisional(
    con: duckdb.DuckDBPyConnection, run_id: str, members: pl.DataFrame, recs: pl.DataFrame
) -> None:
    """Replace a run's provisional members (as user_clusters rows) and their recommendations
    (scope 'user'), in one transaction; the run's own rows stay as they are."""
    with transaction(con):
        for table in ("user_clusters", "recommendations"):
            con.execute(f"DELETE FROM {table} WHERE run_id = ? AND provisional", [run_id])
        for table, rows in (
            ("user_clusters", members),
            ("recommendations", recs.select(RECOMMENDATION_COLUMNS)),
        ):
            con.register("rows", rows)
            con.execute(
                f"INSERT INTO {table} BY NAME SELECT ? AS run_id, true AS provisional, * FROM rows",
                [run_id],
            )
            con.unregister("rows")


def run_clusters(
    con: duckdb.DuckDBPyConnection, run_id: str, level: Level = "fine"
) -> pl.DataFrame:
    """A run's clusters at `level`, largest first (fine ones name their group in parent_id)."""
    return frame(
        con,
        """SELECT cluster_id, label, size, n_outliers, example_users, representative_posts,
            parent_id
        FROM clusters WHERE run_id = ? AND level = ? ORDER BY size DESC, cluster_id""",
        [run_id, level],
    )


def run_terms(con: duckdb.DuckDBPyConnection, run_id: str, level: Level = "fine") -> pl.DataFrame:
    """The top terms of a run's clusters at `level`."""
    return frame(
        con,
        """SELECT t.cluster_id, t.term, t.weight, t.rank FROM cluster_terms t
        SEMI JOIN clusters c ON c.run_id = t.run_id AND c.cluster_id = t.cluster_id
            AND c.level = ?
        WHERE t.run_id = ? ORDER BY t.cluster_id, t.rank""",
        [level, run_id],
    )


def find_users(con: duckdb.DuckDBPyConnection, query: str) -> pl.DataFrame:
    """Users whose id, display name or 'platform:id' equals `query` (case-insensitive), with
    their stored post count."""
    return frame(
        con,
        """SELECT u.platform, u.user_id, coalesce(u.display_name, u.user_id) AS name,
            (SELECT count(*) FROM posts p
             WHERE p.platform = u.platform AND p.user_id = u.user_id) AS n_posts
        FROM users u
        WHERE lower(u.user_id) = lower(?) OR lower(u.display_name) = lower(?)
           OR lower(u.platform || ':' || u.user_id) = lower(?)
        ORDER BY u.platform, u.user_id""",
        [query, query, query],
    )


# ---------------------------------------------------------------- crawls (scrapers/)

CRAWL_STATE_COLUMNS = ["platform", "account", "newest_post_id", "newest_created_at", "cursor"]


def crawl_outcomes(
    con: duckdb.DuckDBPyConnection, keys: pl.DataFrame, since: datetime
) -> pl.DataFrame:
    """Per account, how many of `keys` (platform, post_id, account) an upsert that started at
    `since` inserted (`new`), changed (`updated`) or left as they were (`unchanged`)."""
    return frame(
        con,
        """SELECT k.account,
            count(*) FILTER (WHERE p.inserted_at >= ?)::INTEGER AS new,
            count(*) FILTER (WHERE p.inserted_at < ? AND p.updated_at >= ?)::INTEGER AS updated,
            count(*) FILTER (WHERE p.updated_at < ?)::INTEGER AS unchanged
        FROM crawl_keys k JOIN posts p USING (platform, post_id)
        GROUP BY k.account ORDER BY k.account""",
        [since, since, since, since],
        crawl_keys=keys.select("platform", "post_id", "account"),
    )


def read_crawl_state(con: duckdb.DuckDBPyConnection, platform: str) -> dict[str, dict]:
    """Each account's remembered newest post id, its time and paging cursor, by account."""
    rows = frame(
        con,
        "SELECT account, newest_post_id, newest_created_at, cursor FROM crawl_state "
        "WHERE platform = ?",
        [platform],
    )
    return {row.pop("account"): row for row in rows.iter_rows(named=True)}


def save_crawl_state(con: duckdb.DuckDBPyConnection, states: pl.DataFrame) -> None:
    """Remember where each account's crawl got to (columns of CRAWL_STATE_COLUMNS)."""
    incoming = states.select(CRAWL_STATE_COLUMNS).unique(["platform", "account"], keep="last")
    con.register("incoming_state", incoming)
    try:
        con.execute(
            """INSERT INTO crawl_state BY NAME
            SELECT platform, account, newest_post_id, newest_created_at::TIMESTAMP
                AS newest_created_at, cursor, ? AS updated_at FROM incoming_state
            ON CONFLICT (platform, account) DO UPDATE SET
                newest_post_id = excluded.newest_post_id,
                newest_created_at = excluded.newest_created_at,
                cursor = excluded.cursor, updated_at = excluded.updated_at""",
            [now()],
        )
    finally:
        con.unregister("incoming_state")


def start_crawl(con: duckdb.DuckDBPyConnection, source: str | None) -> str:
    """Record a crawl as running by this process (see `abandon_stale`); returns its id."""
    crawl_id = f"{now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    con.execute(
        "INSERT INTO crawls (crawl_id, source, started_at, status, host, pid) "
        "VALUES (?, ?, ?, 'running', ?, ?)",
        [crawl_id, source or "all", now(), socket.gethostname(), os.getpid()],
    )
    return crawl_id


def finish_crawl(
    con: duckdb.DuckDBPyConnection,
    crawl_id: str,
    status: str,
    stats: dict | None,
    error: str | None = None,
) -> None:
    """Mark a crawl completed or failed, with its per-account counts and Scrapy stats."""
    con.execute(
        "UPDATE crawls SET finished_at = ?, status = ?, stats = ?, error = ? WHERE crawl_id = ?",
        [
            now(),
            status,
            json.dumps(stats, default=str) if stats is not None else None,
            error[:2000] if error else None,
            crawl_id,
        ],
    )


def crawls_table(con: duckdb.DuckDBPyConnection, limit: int = 20) -> pl.DataFrame:
    """The latest crawls, newest first (a stale `running` one shows as `abandoned`)."""
    table = frame(
        con,
        """SELECT crawl_id, source, status, started_at, finished_at,
            date_diff('millisecond', started_at, finished_at) / 1000.0 AS seconds, stats, error
        FROM crawls ORDER BY started_at DESC LIMIT ?""",
        [limit],
    )
    return shown_abandoned(con, "crawls", table)


# ---------------------------------------------------------------- people (pipeline/people.py)

LINK_COLUMNS = ["person_id", "platform", "user_id", "how", "score", "evidence"]


def read_links(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every link group row (LINK_COLUMNS), in a stable order."""
    return frame(
        con,
        f"SELECT {', '.join(LINK_COLUMNS)} FROM people ORDER BY person_id, platform, user_id",
    )


def links_version(con: duckdb.DuckDBPyConnection) -> str:
    """A fingerprint of the links: changes whenever one is added, changed or removed."""
    count, digest = con.execute(
        "SELECT count(*), coalesce(bit_xor(hash(person_id, platform, user_id, how, score)), 0) "
        "FROM people"
    ).fetchall()[0]
    return f"{count}-{int(digest):016x}"


def save_links(con: duckdb.DuckDBPyConnection, rows: pl.DataFrame) -> int:
    """Insert or replace link rows (LINK_COLUMNS), keyed by (person_id, platform, user_id)."""
    con.register("incoming_links", rows.select(LINK_COLUMNS))
    try:
        con.execute(
            """INSERT OR REPLACE INTO people BY NAME
            SELECT *, ? AS updated_at FROM incoming_links""",
            [now()],
        )
    finally:
        con.unregister("incoming_links")
    return rows.height


def replace_declared(con: duckdb.DuckDBPyConnection, rows: pl.DataFrame, origin: str) -> int:
    """Make `rows` the declared links whose evidence is `origin` (a sources file, an import)."""
    with transaction(con):
        con.execute("DELETE FROM people WHERE how = 'declared' AND evidence = ?", [origin])
        return save_links(con, rows)


def delete_link_groups(con: duckdb.DuckDBPyConnection, person_ids: list[str]) -> int:
    """Remove whole link groups; returns how many rows went."""
    return _deleted(con, "people", "list_contains(?, person_id)", [person_ids])


def replace_found(con: duckdb.DuckDBPyConnection, how: str, rows: pl.DataFrame) -> int:
    """Make `rows` the links found `how` ('suggested': the latest `tribes people suggest`;
    'verified': from the profiles the latest crawl stored)."""
    with transaction(con):
        con.execute("DELETE FROM people WHERE how = ?", [how])
        return save_links(con, rows)


def has_account(con: duckdb.DuckDBPyConnection, platform: str, user_id: str) -> bool:
    """Whether the account has a stored post or profile."""
    return scalar(
        con,
        """SELECT EXISTS (SELECT 1 FROM posts WHERE platform = ? AND user_id = ?)
            OR EXISTS (SELECT 1 FROM users WHERE platform = ? AND user_id = ?)""",
        [platform, user_id, platform, user_id],
    )


def forgotten(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return frame(con, "SELECT platform, user_id FROM forgotten ORDER BY platform, user_id")


def forget_account(
    con: duckdb.DuckDBPyConnection, platform: str, user_id: str, hashes: list[str]
) -> dict[str, int]:
    """Remove an account everywhere, in one transaction, and remember it as forgotten: its posts
    and their mentions, mentions of it and replies or reposts naming it, profile, crawl state,
    links, every run's cluster rows, central or bridging account rows and recommendations, its
    name among clusters' example users, and the embeddings of `hashes` (its texts) no other
    post uses.
    Returns how many rows went, per kind."""
    account = [platform, user_id]
    key = f"{platform}:{user_id}"
    with transaction(con):
        name = con.execute(
            "SELECT display_name FROM users WHERE platform = ? AND user_id = ?", account
        ).fetchall()
        names = [user_id, *(row[0] for row in name if row[0])]
        mentions = _deleted(
            con,
            "post_mentions",
            """(platform, post_id) IN (SELECT platform, post_id FROM posts
            WHERE platform = ? AND user_id = ?) OR (platform = ? AND mentioned = ?)""",
            account + account,
        )  # before its posts go: their mentions are found through them
        counts = {
            "posts": _deleted(con, "posts", "platform = ? AND user_id = ?", account),
            "mentions": mentions,
            "embeddings": _deleted(con, "embeddings", "list_contains(?, text_hash)", [hashes]),
            "links": _deleted(con, "people", "platform = ? AND user_id = ?", account),
            "crawl states": _deleted(con, "crawl_state", "platform = ? AND account = ?", account),
            "cluster rows": _deleted(con, "user_clusters", "platform = ? AND user_id = ?", account),
            "recommendations": _deleted(
                con, "recommendations", "scope = 'user' AND scope_id = ?", [key]
            ),
            "profiles": _deleted(con, "users", "platform = ? AND user_id = ?", account),
            "central or bridging": _deleted(
                con, "cluster_accounts", "platform = ? AND user_id = ?", account
            ),
        }
        for column in ("reply_to", "repost_of"):  # other posts name it as whom they answer
            con.execute(
                f"UPDATE posts SET {column} = NULL WHERE platform = ? AND {column} = ?", account
            )
        con.execute(
            """UPDATE clusters SET example_users = list_filter(example_users, lambda n: NOT
            (list_contains(?, n) OR contains(n, ?)))""",
            [names, key],
        )  # a person's name shows its accounts' keys
        con.execute("INSERT OR REPLACE INTO forgotten VALUES (?, ?, ?)", [platform, user_id, now()])
    return counts


def _deleted(con: duckdb.DuckDBPyConnection, table: str, where: str, params: list) -> int:
    return len(con.execute(f"DELETE FROM {table} WHERE {where} RETURNING 1", params).fetchall())
