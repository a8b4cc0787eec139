"""Politeness and robustness: Retry-After and backoff on retries, per-account error counting."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.utils.asyncio import sleep
from scrapy.utils.response import response_status_message

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.settings import BaseSettings

log = logging.getLogger(__name__)


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


class PoliteRetryMiddleware(RetryMiddleware):
    """Scrapy's RetryMiddleware that also waits before each retry.

    A 429 or 503 with `Retry-After` waits that long (and slows the whole site down to it);
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
        asked = retry_after_seconds(response.headers.get("Retry-After"))
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
        if asked is not None:
            self.slow_down(request, asked)
            wait = asked
        else:
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
