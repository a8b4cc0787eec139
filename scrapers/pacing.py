"""One pace per host for the whole crawl process, across all its spiders (sources).

Scrapy paces each spider's downloader on its own, so three sources on one instance would send
three times the rate. Every source of a crawl runs in one process and one reactor, so the HTTP(S)
download handler below makes every download wait for its host's turn: at most
CONCURRENT_REQUESTS_PER_DOMAIN downloads at once per host, starts at least DOWNLOAD_DELAY seconds
apart (a floor: Scrapy's random jitter only adds to it), and none while the host's Retry-After
pause lasts. A pause longer than TRIBES_RETRY_AFTER_MAX gives the request up instead.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, ClassVar

from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.exceptions import IgnoreRequest
from scrapy.utils.asyncio import sleep

from scrapers.middlewares import PAUSING_STATUSES, retry_after_seconds
from scrapers.sources import url_host

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response


class HostPace:
    """The shared state of one host: free download slots, next allowed start, pause end."""

    hosts: ClassVar[dict[str, HostPace]] = {}

    def __init__(self, concurrency: int):
        self.slots = asyncio.Semaphore(concurrency)
        self.next_start = 0.0
        self.paused_until = 0.0

    @classmethod
    def of(cls, host: str, concurrency: int) -> HostPace:
        if host not in cls.hosts:
            cls.hosts[host] = cls(concurrency)
        return cls.hosts[host]

    def pause(self, seconds: float) -> None:
        """No download to this host starts in the next `seconds` (a Retry-After)."""
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    async def wait_turn(self, delay: float, longest_pause: float) -> None:
        """Wait (holding a slot) until a download may start, then book the next start."""
        while True:
            now = time.monotonic()
            if self.paused_until - now > longest_pause:
                raise IgnoreRequest(
                    f"the host asked to wait {self.paused_until - now:.0f}s (Retry-After), "
                    "more than TRIBES_RETRY_AFTER_MAX"
                )
            start = max(self.next_start, self.paused_until)
            if start <= now:
                break
            await sleep(start - now)
        self.next_start = now + delay


class PacedDownloadHandler(HTTP11DownloadHandler):
    """Scrapy's HTTP(S) handler, each download waiting for its host's turn (see HostPace)."""

    def __init__(self, crawler: Crawler):
        super().__init__(crawler)
        settings = crawler.settings
        self.delay = settings.getfloat("DOWNLOAD_DELAY")
        self.concurrency = settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN")
        self.longest_pause = settings.getfloat("TRIBES_RETRY_AFTER_MAX", 900.0)

    async def download_request(self, request: Request) -> Response:
        pace = HostPace.of(url_host(request.url), self.concurrency)
        async with pace.slots:
            await pace.wait_turn(self.delay, self.longest_pause)
            response = await super().download_request(request)
            asked = retry_after_seconds(response.headers.get("Retry-After"))
            if response.status in PAUSING_STATUSES and asked is not None:
                pace.pause(asked)
        return response
