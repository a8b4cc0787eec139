"""Safety, politeness and robustness: only allowed targets, Retry-After and backoff on retries,
per-account error counting."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import IgnoreRequest
from scrapy.utils.asyncio import sleep
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.response import response_status_message

from scrapers.sources import url_host
from scrapers.targets import ip_address

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.settings import BaseSettings

log = logging.getLogger(__name__)

PAUSING_STATUSES = (429, 503)  # answers whose Retry-After pauses the whole host


def retry_after_seconds(value: bytes | str | None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


async def resolve(host: str) -> str:
    """The address the download will connect to: Scrapy's caching resolver answers both."""
    from twisted.internet import reactor

    if ip_address(host):
        return host
    return await maybe_deferred_to_future(reactor.resolver.getHostByName(host))


class SafeTargetsMiddleware:
    """Refuse (never fetch) a request that is not http(s), goes to a host its account's source
    does not configure, or whose host resolves to a non-public address the source is not on.

    It sits before every other downloader middleware, so it sees each request first, and a
    redirect's new request passes it again. A refusal fails the request (IgnoreRequest), which the
    spider counts as an error of the account, with the reason.
    """

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SafeTargetsMiddleware:
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        targets = self.crawler.spider.targets(request.meta.get("tribes"))
        problem = targets.refusal(request.url)
        if problem is None:
            host = url_host(request.url)
            problem = targets.address_refusal(host, await resolve(host))
        if problem is not None:
            self.crawler.stats.inc_value("tribes/refused_requests")
            log.warning("refused %s: %s", request.url, problem)
            raise IgnoreRequest(f"refused: {problem}")


class PoliteRetryMiddleware(RetryMiddleware):
    """Scrapy's RetryMiddleware that also waits before each retry.

    A 429 or 503 with `Retry-After` has paused every download to its host that long already
    (scrapers/pacing.py), so its retry waits with them (and the spider's site slows down to it);
    other retryable answers and network errors wait TRIBES_RETRY_BACKOFF * 2**(n-1) seconds
    (with jitter, at most TRIBES_RETRY_BACKOFF_MAX). A Retry-After beyond TRIBES_RETRY_AFTER_MAX
    gives the request up at once, so one throttled site cannot stall the crawl.
    """

    def __init__(self, settings: BaseSettings):
        super().__init__(settings)
        self.backoff = settings.getfloat("TRIBES_RETRY_BACKOFF", 2.0)
        self.backoff_max = settings.getfloat("TRIBES_RETRY_BACKOFF_MAX", 120.0)
        self.retry_after_max = settings.getfloat("TRIBES_RETRY_AFTER_MAX", 900.0)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PoliteRetryMiddleware:
        middleware = cls(crawler.settings)
        middleware.crawler = crawler
        return middleware

    def backoff_delay(self, attempt: int) -> float:
        """Exponential backoff with ±25% jitter for the `attempt`-th retry (1-based)."""
        base = min(self.backoff_max, self.backoff * 2 ** max(0, attempt - 1))
        return base * random.uniform(0.75, 1.25)

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        if request.meta.get("dont_retry", False) or response.status not in self.retry_http_codes:
            return response
        asked = (
            retry_after_seconds(response.headers.get("Retry-After"))
            if response.status in PAUSING_STATUSES
            else None
        )
        if asked is not None and asked > self.retry_after_max:
            log.warning(
                "%s asks to retry in %.0fs (more than TRIBES_RETRY_AFTER_MAX): giving up",
                request.url,
                asked,
            )
            return response
        retry = self._retry(request, response_status_message(response.status))
        if retry is None:
            return response
        if asked is not None:  # the host is paused for everyone: the retry waits its turn
            self.slow_down(request, asked)
            self.crawler.stats.inc_value("tribes/retry_wait_seconds", round(asked, 3))
            return retry
        wait = self.backoff_delay(retry.meta["retry_times"])
        self.crawler.stats.inc_value("tribes/retry_wait_seconds", round(wait, 3))
        await sleep(wait)
        return retry

    async def process_exception(self, request: Request, exception: Exception) -> Request | None:
        if request.meta.get("dont_retry", False) or not isinstance(
            exception, self.exceptions_to_retry
        ):
            return None
        retry = self._retry(request, exception)
        if retry is None:
            return None
        await sleep(self.backoff_delay(retry.meta["retry_times"]))
        return retry

    def slow_down(self, request: Request, seconds: float) -> None:
        """Space the site's next requests at least `seconds` apart (AutoThrottle relaxes it)."""
        engine = self.crawler.engine
        key = request.meta.get("download_slot")
        slot = engine.downloader.slots.get(key) if engine and key else None
        if slot is not None:
            slot.delay = max(slot.delay, min(seconds, self.backoff_max))


class AccountErrorsMiddleware:
    """An exception in a callback counts as one error of that page's account; the crawl goes on."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> AccountErrorsMiddleware:
        return cls(crawler)

    def process_spider_exception(self, response: Response, exception: Exception) -> list | None:
        run = response.meta.get("tribes")
        spider = self.crawler.spider
        if run is None or spider is None or not hasattr(spider, "account_failed"):
            return None
        spider.account_failed(run, f"{response.url}: {exception}")
        return []
