"""What every Tribes spider shares: the source and its accounts, crawl state, limits, counting."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import scrapy
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from pipeline import store
from scrapers.items import AccountDone, PostItem, UserItem
from scrapers.sources import Account, Source, http_url, load_sources, url_host
from scrapers.tally import bump, note_reason
from scrapers.targets import Targets
from scrapers.text import parse_time


class ParseError(ValueError):
    """A page that does not look like what the platform documents."""


class RefusedLink(ValueError):
    """A link that leads where the crawler must not go (see scrapers/targets.py)."""


@dataclass
class AccountRun:
    """One account's crawl, carried from page to page in `request.meta['tribes']`."""

    source: str
    platform: str
    account: str
    config: Account
    known_id: str | None = None  # newest post stored by an earlier, completed crawl
    known_at: datetime | None = None
    cursor: str | None = None
    user_id: str = ""
    fetched: int = 0
    newest_id: str | None = None
    newest_at: datetime | None = None
    pages: set[str] = field(default_factory=set)


def json_of(response: Response, kind: type) -> Any:
    """The response's JSON body, which must be a `kind` (dict or list)."""
    try:
        data = json.loads(response.text)
    except (ValueError, AttributeError) as exc:
        detail = f"{exc.msg} at char {exc.pos}" if isinstance(exc, json.JSONDecodeError) else exc
        raise ParseError(f"not valid JSON ({detail})") from None
    if not isinstance(data, kind):
        raise ParseError(f"expected a JSON {kind.__name__}, got {type(data).__name__}")
    return data


def describe(failure: Failure) -> str:
    """A failed request's reason in a few words."""
    if failure.check(HttpError):
        response = failure.value.response
        if 300 <= response.status < 400:
            target = response.headers.get("Location", b"").decode("latin-1")
            return f"HTTP {response.status}: redirect to {target or 'nowhere'} not followed"
        return f"HTTP {response.status} after retries"
    if failure.check(IgnoreRequest):
        return f"not fetched ({failure.value or 'forbidden by robots.txt'})"
    return f"{failure.type.__name__}: {failure.getErrorMessage()}"


class AccountSpider(scrapy.Spider):
    """Base of the platform spiders: crawls every account of one `Source`, newest posts first.

    A spider's `name` is its platform; it owns the platform's rules: which handles it takes
    (`account_key`) and where an account's requests may go (`hosts`). The defaults take an
    http(s) URL per account (feeds, pages).

    Spider arguments: `source` (a Source, or a source name looked up in `sources`, default
    sources.yaml), `max_posts_per_user` and `since` (a date: older posts are not collected).
    """

    needs_selectors: ClassVar[bool] = False  # whether its sources must give `selectors`

    @classmethod
    def account_key(cls, handle: str, api: str | None) -> str:
        """The account's stable identity on the platform (its crawl-state key), from a handle of
        sources.yaml and the source's `api`; ValueError when the platform cannot take it."""
        url = handle.strip()
        if not http_url(url):
            raise ValueError(f"{handle!r} must be an http(s) URL for {cls.name}")
        return url

    @classmethod
    def hosts(cls, handle: str, api: str | None) -> set[str]:
        """The hosts that the account's requests may go to (besides the source's allowed_hosts)."""
        return {url_host(handle.strip())}

    @property
    def platform(self) -> str:
        return self.name

    def __init__(
        self,
        source: Source | str | None = None,
        sources: str = "sources.yaml",
        max_posts_per_user: int | str | None = None,
        since: datetime | str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not isinstance(source, Source):
            chosen = [
                s for s in load_sources(sources).select(source) if s.platform == self.platform
            ]
            if not chosen:
                raise ValueError(f"{sources} has no {self.platform} source {source or ''}".strip())
            source = chosen[0]
        if source.platform != self.platform:
            raise ValueError(f"source {source.name!r} is {source.platform}, not {self.platform}")
        self.source = source
        self.account_targets = {
            source.account_key(a): Targets(frozenset(source.hosts(a))) for a in source.accounts
        }
        self.source_targets = Targets(frozenset(source.hosts()))
        self.max_posts = int(max_posts_per_user) if max_posts_per_user else None
        self.since = parse_time(since) if isinstance(since, str) else since

    # ------------------------------------------------------------ start

    async def start(self) -> AsyncIterator[Any]:
        remembered = self.remembered_state()
        for account in self.source.accounts:
            key = self.source.account_key(account)
            state = remembered.get(key, {})
            run = AccountRun(
                self.source.name,
                self.platform,
                key,
                account,
                known_id=state.get("newest_post_id"),
                known_at=state.get("newest_created_at"),
                cursor=state.get("cursor"),
            )
            bump(self.crawler.stats, run.source, run.account, "errors", 0)
            for request in self.first_requests(run):
                yield request

    def remembered_state(self) -> dict[str, dict]:
        """Where earlier completed crawls of this platform's accounts got to."""
        settings = self.crawler.settings
        with store.open(  # "write", like the item pipeline that may hold it in this process
            settings["TRIBES_DB"], "write", wait_seconds=settings.getfloat("TRIBES_DB_WAIT_SECONDS")
        ) as con:
            return store.read_crawl_state(con, self.platform)

    def first_requests(self, run: AccountRun) -> Iterable[scrapy.Request]:
        raise NotImplementedError

    # ------------------------------------------------------------ requests and errors

    def targets(self, run: AccountRun | None) -> Targets:
        """Where requests of this account (None: of any account, e.g. robots.txt) may go."""
        return self.account_targets[run.account] if run else self.source_targets

    def request(
        self, url: str, run: AccountRun, callback: Callable, **kwargs: Any
    ) -> scrapy.Request:
        """A request of the account; RefusedLink when `url` leads where we must not go."""
        problem = self.targets(run).refusal(url)
        if problem:
            raise RefusedLink(f"link {url} refused: {problem}")
        meta = {"tribes": run, **kwargs.pop("meta", {})}
        return scrapy.Request(
            url, callback=callback, errback=self.request_failed, meta=meta, **kwargs
        )

    def request_failed(self, failure: Failure) -> None:
        run = failure.request.meta["tribes"]
        self.account_failed(run, f"{failure.request.url}: {describe(failure)}")

    def account_failed(self, run: AccountRun, reason: str) -> None:
        """Count one error for the account and keep its reason; its crawl state stays as it was."""
        bump(self.crawler.stats, run.source, run.account, "errors")
        note_reason(self.crawler.stats, run.source, run.account, reason)
        self.logger.warning("%s %s: %s", run.source, run.account, reason)

    # ------------------------------------------------------------ posts and limits

    def stop_before(self, run: AccountRun, post_id: str, mark: datetime | None) -> bool:
        """True at a post that is already stored, too old for --since, or over the limit."""
        if run.known_id is not None and post_id == run.known_id:
            return True
        if run.known_at is not None and mark is not None and mark < run.known_at:
            return True
        if self.since is not None and mark is not None and mark < self.since:
            return True
        return self.max_posts is not None and run.fetched >= self.max_posts

    def post(self, run: AccountRun, *, mark: datetime | None = None, **columns: Any) -> PostItem:
        """A post of the account from `columns` of `store.POSTS` (post_id, created_at, text,
        url, kind, ...); the first one is remembered as the account's newest. `mark` is the
        time paging compares (default: created_at)."""
        if run.fetched == 0:
            run.newest_id, run.newest_at = columns["post_id"], mark or columns.get("created_at")
        run.fetched += 1
        return PostItem(
            platform=self.platform,
            user_id=run.user_id,
            source=run.source,
            account=run.account,
            **columns,
        )

    def profile(self, run: AccountRun, name: str | None, **columns: Any) -> UserItem:
        """The account's profile from `columns` of `store.USERS` (url, description, ...); the
        display name and label given in sources.yaml win over the platform's `name`."""
        return UserItem(
            platform=self.platform,
            user_id=run.user_id,
            display_name=run.config.name or name,
            label=run.config.label,
            source=run.source,
            account=run.account,
            **columns,
        )

    def done(self, run: AccountRun, cursor: str | None = None) -> AccountDone:
        """The account's crawl completed: remember its newest post for the next crawl."""
        return AccountDone(
            platform=self.platform,
            source=run.source,
            account=run.account,
            newest_post_id=run.newest_id or run.known_id,
            newest_created_at=run.newest_at if run.newest_id else run.known_at,
            cursor=cursor if cursor is not None else run.cursor,
        )
