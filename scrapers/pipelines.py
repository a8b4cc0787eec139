"""The item pipeline: posts, profiles and crawl state into DuckDB in batches, via pipeline.store.

Follows Scrapy's documented pattern (from_crawler, open_spider/close_spider, ItemAdapter). A batch
is written when TRIBES_BATCH_SIZE posts are queued or TRIBES_FLUSH_SECONDS have passed: users
and posts (one transaction), then the crawl state of the accounts whose crawl completed. A kill -9
therefore loses only the posts still queued, and an account's state never runs ahead of its posts:
the next crawl fetches again what was lost, and the upsert keeps it free of duplicates.

DuckDB allows one writing process. The pipeline keeps the database open only while batches come
quickly (closing it after TRIBES_DB_IDLE_SECONDS without one) and never longer than
TRIBES_DB_HOLD_SECONDS at a stretch, then stays away for a moment so that a waiting refresh gets
in. While another process holds the database, posts keep queueing (up to ten batches) instead of
stalling the crawl.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
from itemadapter import ItemAdapter
from scrapy.exceptions import DropItem
from scrapy.utils.asyncio import CallLaterResult, call_later

from pipeline import store
from scrapers.items import AccountDone, PostItem, UserItem
from scrapers.sources import http_url
from scrapers.tally import ACCOUNTS_DONE, POSTS_SEEN, bump

if TYPE_CHECKING:
    import duckdb
    from scrapy.crawler import Crawler

log = logging.getLogger(__name__)

POST_SCHEMA = store.POSTS.given | {"account": pl.Utf8, "mentions": pl.List(pl.Utf8)}
USER_SCHEMA = store.USERS.given
STATE_SCHEMA = {
    "platform": pl.Utf8,
    "account": pl.Utf8,
    "newest_post_id": pl.Utf8,
    "newest_created_at": pl.Datetime("us"),
    "cursor": pl.Utf8,
}
YIELD_SECONDS = 2.5  # longer than store.open's polling interval, so a waiting writer gets in
RETRY_SECONDS = 1.0  # how soon to try again when another process holds the database
MAX_PENDING_BATCHES = 10  # past this many queued batches, wait for the database instead
MAX_COUNT = 2**31 - 1  # the largest INTEGER a count column holds
MAX_MENTIONS = 100  # more mentions than this in one post are not an interaction pattern


def typed(value: object, dtype: pl.DataType) -> object:
    """`value` when it fits the column's type (a count: a whole number from 0 to MAX_COUNT),
    else None: a platform's answer may hold anything, and one bad value must not sink a batch."""
    if dtype == pl.Int32:
        fits = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT
    elif dtype == pl.Utf8:
        fits = isinstance(value, str)
    elif dtype == pl.List(pl.Utf8):
        listed = value if isinstance(value, list) else []
        return [v for v in listed if isinstance(v, str) and v][:MAX_MENTIONS]
    else:
        fits = isinstance(value, datetime)
    return value if fits else None


def web_url(adapter: ItemAdapter) -> dict[str, str | None]:
    """The item's `url` when it is http(s); a javascript:, data:, file: ... link is not kept."""
    url = adapter.get("url")
    return {"url": url if url and http_url(url) else None}


def mentioned(posts: pl.DataFrame) -> pl.DataFrame:
    """One row per post and account it mentions (store.MENTIONS)."""
    rows = posts.select("platform", "post_id", "user_id", mentioned="mentions")
    return rows.explode("mentioned").drop_nulls("mentioned")


class DuckDBPipeline:
    """Batched upserts of crawled posts into the Tribes database."""

    def __init__(
        self,
        crawler: Crawler,
        db: Path,
        batch_size: int,
        flush_seconds: float,
        wait_seconds: float,
        hold_seconds: float,
        idle_seconds: float,
        max_chars: int,
    ):
        self.crawler = crawler
        self.db = db
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.wait_seconds = wait_seconds
        self.hold_seconds = hold_seconds
        self.idle_seconds = idle_seconds
        self.max_chars = max_chars
        self.posts: list[dict] = []
        self.users: list[dict] = []
        self.states: list[dict] = []
        self.sources: dict[str, str] = {}  # account -> source, for the counts
        self.last_flush = time.monotonic()
        self.not_before = 0.0  # no unforced flush before this time
        self._open: ExitStack | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._opened_at = 0.0
        self._idle: CallLaterResult | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DuckDBPipeline:
        settings = crawler.settings
        return cls(
            crawler,
            db=Path(settings.get("TRIBES_DB")),
            batch_size=settings.getint("TRIBES_BATCH_SIZE", 1000),
            flush_seconds=settings.getfloat("TRIBES_FLUSH_SECONDS", 30.0),
            wait_seconds=settings.getfloat("TRIBES_DB_WAIT_SECONDS"),
            hold_seconds=settings.getfloat("TRIBES_DB_HOLD_SECONDS", 30.0),
            idle_seconds=settings.getfloat("TRIBES_DB_IDLE_SECONDS", 5.0),
            max_chars=settings.getint("TRIBES_MAX_POST_CHARS", 20_000),
        )

    def open_spider(self) -> None:
        """Fail early (and clearly) when the database cannot be opened or migrated."""
        self.connection(wait=True)
        self.release()

    def close_spider(self) -> None:
        try:
            self.flush(force=True)
        finally:
            self.release()

    def process_item(self, item: object) -> object:
        adapter = ItemAdapter(item)
        if isinstance(item, PostItem):
            self.crawler.stats.inc_value(POSTS_SEEN)
            self.add_post(adapter)
        elif isinstance(item, UserItem):
            self.users.append({c: adapter.get(c) for c in USER_SCHEMA} | web_url(adapter))
        elif isinstance(item, AccountDone):
            self.crawler.stats.inc_value(ACCOUNTS_DONE)
            self.states.append({c: adapter.get(c) for c in STATE_SCHEMA})
        if self.due():
            self.flush(force=False)
        return item

    def add_post(self, adapter: ItemAdapter) -> None:
        """Queue a post, or drop it (counted as skipped) when its text is empty or too long."""
        text = (adapter["text"] or "").strip()
        reason = (
            "empty text"
            if not text
            else f"text longer than {self.max_chars} chars"
            if len(text) > self.max_chars
            else None
        )
        if reason:
            bump(self.crawler.stats, adapter["source"], adapter["account"], "skipped")
            raise DropItem(f"{adapter['platform']} post {adapter['post_id']}: {reason}")
        self.sources[adapter["account"]] = adapter["source"]
        self.posts.append(
            {c: typed(adapter.get(c), dtype) for c, dtype in POST_SCHEMA.items()}
            | {"text": text}
            | web_url(adapter)
        )

    def due(self) -> bool:
        """A full batch or an old one is queued, and we are not giving way to another writer."""
        now = time.monotonic()
        full = len(self.posts) >= self.batch_size
        return (full or now - self.last_flush >= self.flush_seconds) and now >= self.not_before

    # ------------------------------------------------------------ the database

    def connection(self, wait: bool) -> duckdb.DuckDBPyConnection | None:
        """The open database; None when another process holds it and `wait` is False."""
        if self._con is None:
            stack = ExitStack()
            try:
                self._con = stack.enter_context(
                    store.open(self.db, "write", wait_seconds=self.wait_seconds if wait else 0.0)
                )
            except store.StoreLocked:
                if wait:
                    raise
                return None
            self._open, self._opened_at = stack, time.monotonic()
        return self._con

    def release(self) -> None:
        """Close the database so that another process can write."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._open is not None:
            self._open.close()
        self._open = self._con = None

    def flush(self, force: bool = True) -> None:
        """Write everything queued: users and posts (one transaction), then crawl state.

        Unforced, it leaves the queue for later while another process holds the database.
        """
        if not (self.posts or self.users or self.states):
            self.last_flush = time.monotonic()
            return
        must = force or len(self.posts) >= MAX_PENDING_BATCHES * self.batch_size
        con = self.connection(wait=must)
        if con is None:
            self.not_before = time.monotonic() + RETRY_SECONDS
            return
        started = time.perf_counter()
        posts = pl.DataFrame(self.posts, schema=POST_SCHEMA, orient="row").unique(
            store.POSTS.named("key", "author"), keep="last", maintain_order=True
        )
        users = pl.DataFrame(self.users, schema=USER_SCHEMA, orient="row") if self.users else None
        outcomes = None
        if posts.height:
            before = store.now()
            refused = store.upsert_posts(con, posts, users, mentioned(posts)).refused
            self.count_refused(posts.join(refused, on=refused.columns, how="semi"))
            posts = posts.join(refused, on=refused.columns, how="anti")
            outcomes = store.crawl_outcomes(con, posts, before)
        elif users is not None:
            store.upsert_users(con, users)
        if self.states:
            store.save_crawl_state(
                con, pl.DataFrame(self.states, schema=STATE_SCHEMA, orient="row")
            )
        self.count(posts.height, outcomes, time.perf_counter() - started)
        self.posts, self.users, self.states = [], [], []
        self.last_flush = time.monotonic()
        if self.last_flush - self._opened_at >= self.hold_seconds:
            self.release()  # held long enough: give way to whoever waits
            self.not_before = self.last_flush + YIELD_SECONDS
        else:
            if self._idle is not None:
                self._idle.cancel()
            self._idle = call_later(self.idle_seconds, self.release)

    def count_refused(self, refused: pl.DataFrame) -> None:
        """Posts whose id belongs to another account are not stored: skipped, with a log line."""
        for account, n in refused["account"].value_counts().iter_rows():
            bump(self.crawler.stats, self.sources[account], account, "skipped", n)
            log.warning("%d posts of %s not stored: ids of another account", n, account)

    def count(self, stored: int, outcomes: pl.DataFrame | None, seconds: float) -> None:
        """Per-account new/updated/unchanged counts and the pipeline's own stats."""
        stats = self.crawler.stats
        for row in outcomes.iter_rows(named=True) if outcomes is not None else []:
            for field in ("new", "updated", "unchanged"):
                bump(stats, self.sources[row["account"]], row["account"], field, row[field])
        stats.inc_value("tribes/posts_stored", stored)
        stats.inc_value("tribes/flushes")
        stats.inc_value("tribes/store_seconds", round(seconds, 4))
        log.info(
            "stored %d posts, %d profiles, %d account states",
            stored,
            len(self.users),
            len(self.states),
        )
