"""RSS and Atom feeds (blogs, YouTube channels, news sites): one account per feed URL.

The feed is parsed with feedparser. A second crawl sends the stored ETag / Last-Modified (a 304
means nothing new) and skips entries no newer than the newest one already stored. A feed with a
parse error (e.g. truncated) is an account error: the entries read are stored, the mark stays.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import feedparser
import scrapy
from scrapy.http import Response

from scrapers.spiders.base import AccountRun, AccountSpider, ParseError
from scrapers.text import html_to_text

HTML_TYPES = ("text/html", "application/xhtml+xml")


def detail_text(detail: Any, value: str | None) -> str:
    """The plain text of a feedparser text construct (HTML ones are converted)."""
    if not value:
        return ""
    kind = getattr(detail, "type", None) or (detail or {}).get("type", "text/html")
    return html_to_text(value) if kind in HTML_TYPES else value.strip()


def entry_time(entry: Any) -> datetime | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if not parsed:
        return None
    return datetime.fromtimestamp(calendar.timegm(parsed), UTC).replace(tzinfo=None)


def entry_text(entry: Any) -> str:
    """Title and body of an entry, without repeating a title that starts the body."""
    title = detail_text(entry.get("title_detail"), entry.get("title"))
    if entry.get("content"):
        body = detail_text(entry["content"][0], entry["content"][0].get("value"))
    else:
        body = detail_text(entry.get("summary_detail"), entry.get("summary"))
    stem = title.rstrip("…. ")  # feeds often truncate the body into the title
    if title and body and not body.startswith(stem):
        return f"{title}\n\n{body}"
    return body or title


def parse_error(feed: Any) -> Exception | None:
    """The feed's real parse error (a truncated or malformed document), not a benign warning
    such as a charset or content-type mismatch."""
    problem = feed.get("bozo_exception") if feed.get("bozo") else None
    return None if isinstance(problem, feedparser.ThingsNobodyCaresAboutButMe) else problem


def entry_id(entry: Any, text: str) -> str:
    return entry.get("id") or entry.get("link") or hashlib.sha1(text.encode()).hexdigest()


class FeedSpider(AccountSpider):
    name = "rss"

    def first_requests(self, run: AccountRun) -> Iterable[scrapy.Request]:
        run.user_id = run.account
        remembered = json.loads(run.cursor) if run.cursor else {}
        headers = {}
        if remembered.get("etag"):
            headers["If-None-Match"] = remembered["etag"]
        if remembered.get("modified"):
            headers["If-Modified-Since"] = remembered["modified"]
        yield self.request(
            run.account,
            run,
            self.parse_feed,
            headers=headers,
            meta={"handle_httpstatus_list": [304]},
        )

    def parse_feed(self, response: Response) -> Iterator[Any]:
        run: AccountRun = response.meta["tribes"]
        if response.status == 304:
            yield self.done(run)
            return
        content_type = response.headers.get("Content-Type", b"").decode("latin-1")
        feed = feedparser.parse(
            io.BytesIO(response.body),
            response_headers={"content-type": content_type, "content-location": response.url},
        )
        if not feed.get("version") or (feed.get("bozo") and not feed.entries):
            problem = feed.get("bozo_exception") or "unknown format"
            raise ParseError(f"not an RSS or Atom feed ({problem})")
        broken = parse_error(feed)
        info = feed.feed
        yield self.profile(
            run,
            info.get("title"),
            url=info.get("link") or run.account,
            description=detail_text(info.get("subtitle_detail"), info.get("subtitle")) or None,
        )
        entries = [(entry_time(e), e) for e in feed.entries]
        entries.sort(key=lambda pair: pair[0] or datetime.min, reverse=True)
        for created, entry in entries:
            text = entry_text(entry)
            post_id = entry_id(entry, text)
            if self.stop_before(run, post_id, created):
                break
            yield self.post(
                run, post_id=post_id, created_at=created, text=text, url=entry.get("link")
            )
        if broken:  # keep what parsed, but not as the account's mark: the next crawl refetches
            raise ParseError(f"the feed is broken ({broken}); its mark stays where it was")
        cursor = {
            "etag": response.headers.get("ETag", b"").decode("latin-1"),
            "modified": response.headers.get("Last-Modified", b"").decode("latin-1"),
        }
        yield self.done(run, cursor=json.dumps({k: v for k, v in cursor.items() if v}))
