"""Bluesky: public author feeds through the AppView's XRPC API, no login, cursor paging.

GET /xrpc/app.bsky.actor.getProfile?actor=HANDLE, then
GET /xrpc/app.bsky.feed.getAuthorFeed?actor=DID&limit=100[&cursor=...] until the feed reaches a
post an earlier crawl stored. Reposts are stored as kind 'boost', replies as 'reply'.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import scrapy
from scrapy.http import Response

from scrapers.sources import http_url, url_host
from scrapers.spiders.base import AccountRun, AccountSpider, ParseError, json_of
from scrapers.text import parse_time

APPVIEW = "https://public.api.bsky.app"  # the default `api`
HANDLE = re.compile(r"([A-Za-z0-9-]+\.)+[A-Za-z0-9-]+|did:[a-z]+:[A-Za-z0-9._:%-]+")


def bluesky_actor(handle: str) -> str:
    """A Bluesky handle or DID from `alice.bsky.social`, `@alice...` or a bsky.app profile URL."""
    text = handle.strip()
    if http_url(text):
        text = urlsplit(text).path.rstrip("/").split("/")[-1]
    text = text.lstrip("@")
    if not HANDLE.fullmatch(text):
        raise ValueError(f"{handle!r} is not a Bluesky handle (alice.bsky.social) or DID")
    return text if text.startswith("did:") else text.lower()


def post_url(post: dict) -> str | None:
    """The bsky.app address of a post view."""
    handle = (post.get("author") or {}).get("handle")
    rkey = str(post.get("uri", "")).rsplit("/", 1)[-1]
    return f"https://bsky.app/profile/{handle}/post/{rkey}" if handle and rkey else None


class BlueskySpider(AccountSpider):
    name = "bluesky"
    page_size = 100  # the API's maximum

    @classmethod
    def account_key(cls, handle: str, api: str | None) -> str:
        return bluesky_actor(handle)

    @classmethod
    def hosts(cls, handle: str, api: str | None) -> set[str]:
        return {url_host(api or APPVIEW)}

    def xrpc(self, method: str, **params: Any) -> str:
        return f"{self.source.api or APPVIEW}/xrpc/{method}?{urlencode(params)}"

    def first_requests(self, run: AccountRun) -> Iterable[scrapy.Request]:
        url = self.xrpc("app.bsky.actor.getProfile", actor=bluesky_actor(run.config.handle))
        yield self.request(url, run, self.parse_profile)

    def parse_profile(self, response: Response) -> Iterator[Any]:
        run: AccountRun = response.meta["tribes"]
        profile = json_of(response, dict)
        if not str(profile.get("did", "")).startswith("did:"):
            raise ParseError("the profile has no DID")
        run.user_id = profile["did"]
        handle = profile.get("handle")
        yield self.profile(
            run,
            profile.get("displayName") or handle,
            url=f"https://bsky.app/profile/{handle}" if handle else None,
            description=profile.get("description"),
        )
        yield self.feed(run, cursor=None)

    def feed(self, run: AccountRun, cursor: str | None) -> scrapy.Request:
        params: dict[str, Any] = {"actor": run.user_id, "limit": self.page_size}
        if cursor:
            params["cursor"] = cursor
        return self.request(
            self.xrpc("app.bsky.feed.getAuthorFeed", **params), run, self.parse_feed
        )

    def parse_feed(self, response: Response) -> Iterator[Any]:
        run: AccountRun = response.meta["tribes"]
        data = json_of(response, dict)
        entries = data.get("feed")
        if not isinstance(entries, list):
            raise ParseError("the answer has no 'feed' list")
        finished = not entries
        for entry in entries:
            post = entry.get("post") if isinstance(entry, dict) else None
            if not isinstance(post, dict) or not post.get("uri"):
                raise ParseError("a feed entry without a post uri")
            reason = entry.get("reason") or {}
            repost = str(reason.get("$type", "")).endswith("reasonRepost")
            record = post.get("record") or {}
            if repost:
                post_id = reason.get("uri") or f"{post['uri']}#repost-by-{run.user_id}"
                mark = parse_time(reason.get("indexedAt"))
                created, kind = mark, "boost"
            else:
                post_id = post["uri"]
                mark = parse_time(post.get("indexedAt"))
                created = parse_time(record.get("createdAt")) or mark
                kind = "reply" if record.get("reply") else "post"
            if self.stop_before(run, post_id, mark):
                finished = True
                break
            yield self.post(
                run,
                post_id=post_id,
                created_at=created,
                text=str(record.get("text") or ""),
                url=post_url(post),
                kind=kind,
                mark=mark,
            )
        cursor = data.get("cursor")
        if finished or not cursor or (self.max_posts is not None and run.fetched >= self.max_posts):
            yield self.done(run)
        else:
            yield self.feed(run, cursor=str(cursor))
