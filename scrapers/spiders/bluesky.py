"""Bluesky: public author feeds through the AppView's XRPC API, no login, cursor paging.

GET /xrpc/app.bsky.actor.getProfile?actor=HANDLE, then
GET /xrpc/app.bsky.feed.getAuthorFeed?actor=DID&limit=100[&cursor=...] until the feed reaches a
post an earlier crawl stored. Each post keeps its counts (likeCount, repostCount, replyCount), its
kind (a repost, a reply, a quote, or an original with images, video or a link card), its first
language and the DIDs it reposts, answers and mentions (the spider's user ids are DIDs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import scrapy
from scrapy.http import Response

from pipeline import store
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


def domain_handle(handle: Any) -> list[dict[str, str]]:
    """A handle that is the account's own domain, which Bluesky verified (DNS or
    /.well-known): [{url, verified_at}]; none for *.bsky.social and invalid handles."""
    if not isinstance(handle, str) or not HANDLE.fullmatch(handle) or handle.startswith("did:"):
        return []
    if handle.lower().endswith(".bsky.social") or handle.lower() == "handle.invalid":
        return []
    return [{"url": f"https://{handle.lower()}", "verified_at": store.now().isoformat()}]


def post_url(post: dict) -> str | None:
    """The bsky.app address of a post view."""
    handle = (post.get("author") or {}).get("handle")
    rkey = str(post.get("uri", "")).rsplit("/", 1)[-1]
    return f"https://bsky.app/profile/{handle}/post/{rkey}" if handle and rkey else None


EMBED_KINDS = {  # post.embed $type -> store.KINDS
    "app.bsky.embed.record#view": "quote",
    "app.bsky.embed.recordWithMedia#view": "quote",
    "app.bsky.embed.video#view": "video",
    "app.bsky.embed.images#view": "photo",
    "app.bsky.embed.external#view": "link",
}
MENTION = "app.bsky.richtext.facet#mention"


def uri_did(uri: Any) -> str | None:
    """The DID of the repository an at:// URI names (its author)."""
    if not isinstance(uri, str) or not uri.startswith("at://did:"):
        return None
    return uri.removeprefix("at://").split("/", 1)[0]


def of(value: Any, key: str) -> Any:
    """value[key] when value is a dict, else None (answers are not trusted to have a shape)."""
    return value.get(key) if isinstance(value, dict) else None


def reply_author(entry: dict, record: dict) -> str | None:
    """The DID a post answers: the feed's parent view, else the parent URI's repository."""
    parent_author = of(of(of(entry, "reply"), "parent"), "author")
    return of(parent_author, "did") or uri_did(of(of(of(record, "reply"), "parent"), "uri"))


def mentioned_dids(record: dict) -> list[str]:
    """The DIDs the post's rich-text facets mention."""
    facets = record.get("facets") if isinstance(record.get("facets"), list) else []
    features = [f for facet in facets for f in of(facet, "features") or [] if isinstance(f, dict)]
    return sorted({str(f["did"]) for f in features if f.get("$type") == MENTION and f.get("did")})


def post_facts(post: dict, record: dict) -> dict[str, Any]:
    """A post view's counts (when read), kind from its embed, and first language."""
    langs = record.get("langs")
    return {
        "likes": post.get("likeCount"),
        "reposts": post.get("repostCount"),
        "replies": post.get("replyCount"),
        "counts_seen_at": store.now(),
        "kind": EMBED_KINDS.get(of(post.get("embed"), "$type"), "original"),
        "lang": langs[0] if isinstance(langs, list) and langs else None,
    }


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
            verified_links=json.dumps(domain_handle(handle)),
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
            record = post.get("record") if isinstance(post.get("record"), dict) else {}
            facts = post_facts(post, record)
            if repost:
                post_id = reason.get("uri") or f"{post['uri']}#repost-by-{run.user_id}"
                mark = parse_time(reason.get("indexedAt"))
                created = mark
                facts |= {"kind": "repost", "repost_of": of(post.get("author"), "did")}
            else:
                post_id = post["uri"]
                mark = parse_time(post.get("indexedAt"))
                created = parse_time(record.get("createdAt")) or mark
                facts["mentions"] = mentioned_dids(record)
                if record.get("reply"):
                    facts |= {"kind": "reply", "reply_to": reply_author(entry, record)}
            if self.stop_before(run, post_id, mark):
                finished = True
                break
            yield self.post(
                run,
                post_id=post_id,
                created_at=created,
                text=str(record.get("text") or ""),
                url=post_url(post),
                mark=mark,
                **facts,
            )
        cursor = data.get("cursor")
        if finished or not cursor or (self.max_posts is not None and run.fetched >= self.max_posts):
            yield self.done(run)
        else:
            yield self.feed(run, cursor=str(cursor))
