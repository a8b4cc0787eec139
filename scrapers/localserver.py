"""A local stand-in for the platforms on 127.0.0.1, filled with real posts (no internet needed).

It answers like the public APIs the spiders use, in the JSON shapes of their documentation:
Mastodon (`/api/v1/accounts/lookup`, `/api/v1/accounts/:id/statuses` with max_id/since_id
paging and a Link header), Bluesky's AppView (`/xrpc/app.bsky.actor.getProfile`,
`/xrpc/app.bsky.feed.getAuthorFeed` with a cursor), RSS 2.0 (`/rss/USER.xml`) and Atom
(`/atom/USER.xml`) feeds with ETag/304, and plain HTML pages (`/html/USER?page=N`). It also
serves `/robots.txt`, logs every request, and can answer chosen paths with scripted faults
(429, 500, broken bodies). `tribes demo`, the tests and `bench/crawl.py` use it.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape as xml_escape

import polars as pl

from pipeline import ingest
from scrapers.text import iso_z

ALLOW_ALL = "User-agent: *\nAllow: /\n"
HTML_SELECTORS = {
    "post": "article.post",
    "text": "div.text",
    "date": "time::attr(datetime)",
    "id": "./@id",
    "url": "a.permalink::attr(href)",
    "next_page": "a[rel=next]::attr(href)",
}
EPOCH = datetime(1970, 1, 1)


@dataclass
class Reply:
    """A scripted answer for one request to a path."""

    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Logged:
    """One request the server received."""

    at: float
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int = 0


@dataclass
class FakePost:
    post_id: str
    status_id: int  # a Mastodon-style snowflake: milliseconds << 16 | sequence
    created_at: datetime
    text: str
    kind: str = "original"  # one of store.KINDS
    likes: int = 0
    reposts: int = 0
    replies: int = 0
    lang: str | None = None
    reply_to: str | None = None  # the username answered (another account when not given)
    repost_of: str | None = None  # the username reposted (another account when not given)
    mentions: list[str] = field(default_factory=list)  # usernames; `user@domain` is remote


@dataclass
class FakeAccount:
    number: int
    username: str
    label: str | None
    posts: list[FakePost] = field(default_factory=list)  # newest first

    @property
    def did(self) -> str:
        return "did:plc:" + hashlib.sha256(self.username.encode()).hexdigest()[:24]

    @property
    def handle(self) -> str:
        return re.sub(r"[^a-z0-9-]", "-", self.username.lower()) + ".bsky.test"


OTHER = "someone_else"  # whom a reply or repost answers when the posts do not say


def with_served_fields(posts: pl.DataFrame) -> pl.DataFrame:
    """`posts` with its optional post fields read as `tribes import` reads them (the fields by
    their names, or Facebook pages' columns such as num_reactions and status_type)."""
    present = {name: name for name in ingest.FIELDS if name in posts.columns}
    columns = ingest.ColumnMap(**present).with_page_columns(posts.columns)
    read = posts.with_columns(ingest.post_fields(posts, columns).values)
    return read.select(pl.exclude("^bad_.*$", "counts_seen_at"))


def to_html(text: str) -> str:
    """Plain text as Mastodon renders it: paragraphs in <p>, line breaks as <br />, escaped."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()) if p]
    return "".join(
        "<p>" + "<br />".join(html.escape(line) for line in p.split("\n")) + "</p>"
        for p in paragraphs
    )


def snowflake(created_at: datetime, sequence: int) -> int:
    return int((created_at - EPOCH).total_seconds() * 1000) << 16 | (sequence & 0xFFFF)


class LocalPlatforms:
    """Serve posts as Mastodon, Bluesky, RSS/Atom and HTML on 127.0.0.1 (a random free port).

    `posts` needs the columns user_id, post_id, created_at, text; optional user_label and
    the post fields of `tribes import` (likes, reposts, replies, kind, lang, reply_to,
    repost_of: usernames, mentions: lists of usernames; or Facebook pages' num_reactions, ...).
    `profiles[username]` replaces keys of that account's Mastodon and Bluesky profile answers
    (fields, note, handle...). Use it as a context manager, or start() and stop().
    """

    def __init__(
        self,
        posts: pl.DataFrame | None = None,
        *,
        page_cap: int = 40,
        robots: str = ALLOW_ALL,
        delay: float = 0.0,
    ):
        self.page_cap = page_cap
        self.robots = robots
        self.delay = delay
        self.accounts: dict[str, FakeAccount] = {}
        self.requests: list[Logged] = []
        self.scripts: dict[str, deque[Reply]] = {}
        self.profiles: dict[str, dict[str, Any]] = {}  # username -> profile keys served instead
        self._lock = threading.Lock()
        self._sequence = 0
        self._server: ThreadingHTTPServer | None = None
        if posts is not None:
            self.add_posts(posts)

    # ------------------------------------------------------------ data and faults

    def add_posts(self, posts: pl.DataFrame) -> None:
        """Add posts (and their accounts); each account's posts stay newest first."""
        posts = with_served_fields(posts)
        with self._lock:
            for row in posts.sort("created_at").iter_rows(named=True):
                account = self.accounts.get(row["user_id"])
                if account is None:
                    account = FakeAccount(
                        100_000 + len(self.accounts), row["user_id"], row.get("user_label")
                    )
                    self.accounts[row["user_id"]] = account
                self._sequence += 1
                created = row["created_at"]
                if created.tzinfo is not None:
                    created = created.astimezone(UTC).replace(tzinfo=None)
                account.posts.append(
                    FakePost(
                        str(row["post_id"]),
                        snowflake(created, self._sequence),
                        created,
                        row["text"],
                        row.get("kind") or "original",
                        row.get("likes") or 0,
                        row.get("reposts") or 0,
                        row.get("replies") or 0,
                        row.get("lang"),
                        row.get("reply_to"),
                        row.get("repost_of"),
                        row.get("mentions") or [],
                    )
                )
            for account in self.accounts.values():
                account.posts.sort(key=lambda p: p.status_id, reverse=True)

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to `path` (no query) with these replies, in order."""
        with self._lock:
            self.scripts.setdefault(path, deque()).extend(replies)

    def requests_to(self, prefix: str) -> list[Logged]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def account(self, username: str) -> FakeAccount:
        return self.accounts[username]

    # ------------------------------------------------------------ sources.yaml entries

    def source(
        self,
        platform: str,
        name: str | None = None,
        users: Iterable[str] | None = None,
        feed: str = "rss",
    ) -> dict[str, Any]:
        """A sources.yaml entry for these users (default all) as `platform` on this server."""
        chosen = [self.accounts[u] for u in (users or self.accounts)]

        def entry(handle: str, account: FakeAccount) -> dict[str, Any]:
            return {"handle": handle, **({"label": account.label} if account.label else {})}

        handles = {
            "mastodon": lambda a: a.username,
            "bluesky": lambda a: a.handle,
            "rss": lambda a: f"{self.url}/{feed}/{a.username}.xml",
            "html": lambda a: f"{self.url}/html/{a.username}",
        }[platform]
        out: dict[str, Any] = {
            "name": name or platform,
            "platform": platform,
            "accounts": [entry(handles(a), a) for a in chosen],
        }
        if platform in ("mastodon", "bluesky"):
            out["api"] = self.url
        if platform == "html":
            out["selectors"] = dict(HTML_SELECTORS)
        return out

    # ------------------------------------------------------------ server

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalPlatforms:
        handler = type("Handler", (_Handler,), {"platforms": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, daemon=True, name="local-platforms"
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalPlatforms:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ answers

    def answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Reply:
        """The reply for one request (scripted faults first)."""
        with self._lock:
            queue = self.scripts.get(path)
            if queue:
                return queue.popleft()
        if path == "/robots.txt":
            return Reply(200, self.robots, {"Content-Type": "text/plain"})
        routes = [
            (r"/api/v1/accounts/lookup", self.mastodon_lookup),
            (r"/api/v1/accounts/(\d+)/statuses", self.mastodon_statuses),
            (r"/xrpc/app\.bsky\.actor\.getProfile", self.bluesky_profile),
            (r"/xrpc/app\.bsky\.feed\.getAuthorFeed", self.bluesky_feed),
            (r"/(rss|atom)/([^/]+)\.xml", self.feed),
            (r"/html/([^/]+)", self.html_page),
        ]
        for pattern, route in routes:
            match = re.fullmatch(pattern, path)
            if match:
                with self._lock:
                    return route(query, headers, *match.groups())
        return _json({"error": "Record not found"}, 404)

    def _by_number(self, number: str) -> FakeAccount | None:
        return next((a for a in self.accounts.values() if str(a.number) == number), None)

    def _by_actor(self, actor: str) -> FakeAccount | None:
        return next((a for a in self.accounts.values() if actor in (a.did, a.handle)), None)

    def mastodon_account_json(self, account: FakeAccount) -> dict[str, Any]:
        return {
            "id": str(account.number),
            "username": account.username,
            "acct": account.username,
            "display_name": account.username,
            "locked": False,
            "bot": False,
            "created_at": "2016-01-01T00:00:00.000Z",
            "note": f"<p>{account.label or ''}</p>",
            "url": f"{self.url}/@{account.username}",
            "avatar": "",
            "header": "",
            "followers_count": 0,
            "following_count": 0,
            "statuses_count": len(account.posts),
            "emojis": [],
            "fields": [],
        } | self.profiles.get(account.username, {})

    def someone(self, name: str | None) -> FakeAccount:
        """The account of this server called `name`, or one elsewhere (OTHER when None)."""
        name = name or OTHER
        found = self.accounts.get(name)
        number = 900_000 + int(hashlib.sha256(name.encode()).hexdigest()[:5], 16)
        return found or FakeAccount(number, name, None)

    def mastodon_mention(self, account: FakeAccount) -> dict[str, Any]:
        username = account.username.split("@")[0]
        return {
            "id": str(account.number),
            "username": username,
            "url": f"{self.url}/@{account.username}",
            "acct": account.username,  # bare for this server's accounts, user@domain for others
        }

    def mastodon_status(self, account: FakeAccount, post: FakePost) -> dict[str, Any]:
        status: dict[str, Any] = {
            "id": str(post.status_id),
            "created_at": iso_z(post.created_at),
            "in_reply_to_id": None,
            "in_reply_to_account_id": None,
            "sensitive": False,
            "spoiler_text": "",
            "visibility": "public",
            "language": post.lang,
            "uri": f"{self.url}/users/{account.username}/statuses/{post.status_id}",
            "url": f"{self.url}/@{account.username}/{post.status_id}",
            "replies_count": post.replies,
            "reblogs_count": post.reposts,
            "favourites_count": post.likes,
            "content": to_html(post.text),
            "reblog": None,
            "account": self.mastodon_account_json(account),
            "media_attachments": [],
            "mentions": [self.mastodon_mention(self.someone(m)) for m in post.mentions],
            "tags": [],
            "emojis": [],
            "card": None,
            "poll": None,
        }
        media = {"photo": "image", "video": "video"}.get(post.kind)
        if media:
            status["media_attachments"] = [
                {"id": f"{post.status_id}1", "type": media, "url": f"{self.url}/media/1"}
            ]
        elif post.kind == "link":
            card = {"url": f"{self.url}/elsewhere", "title": "A page", "type": "link"}
            status["card"] = card
        elif post.kind == "quote":
            status["quote"] = {"state": "accepted", "quoted_status": None}
        elif post.kind == "reply":
            answered = self.someone(post.reply_to)
            status["in_reply_to_id"] = str(post.status_id - 1)
            status["in_reply_to_account_id"] = str(answered.number)
            if answered is not account:  # Mastodon mentions whom a reply answers
                mention = self.mastodon_mention(answered)
                status["mentions"] = [mention, *status["mentions"]]
        elif post.kind == "repost":
            original = self.mastodon_status(
                self.someone(post.repost_of),
                replace(post, status_id=post.status_id - 1, kind="original", mentions=[]),
            )
            status.update(content="", reblog=original, url=None, uri=f"{status['uri']}/activity")
            status.update(replies_count=0, reblogs_count=0, favourites_count=0, language=None)
        return status

    def mastodon_lookup(self, query: dict[str, str], headers: dict[str, str]) -> Reply:
        username = query.get("acct", "").lstrip("@").split("@")[0]
        account = self.accounts.get(username)
        if account is None:
            return _json({"error": "Record not found"}, 404)
        return _json(self.mastodon_account_json(account))

    def mastodon_statuses(
        self, query: dict[str, str], headers: dict[str, str], number: str
    ) -> Reply:
        account = self._by_number(number)
        if account is None:
            return _json({"error": "Record not found"}, 404)
        limit = min(int(query.get("limit", 20)), self.page_cap)
        posts = account.posts
        if "max_id" in query:
            posts = [p for p in posts if p.status_id < int(query["max_id"])]
        if "since_id" in query:
            posts = [p for p in posts if p.status_id > int(query["since_id"])]
        page = posts[:limit]
        extra = {}
        if page:
            base = f"{self.url}/api/v1/accounts/{number}/statuses"
            extra["Link"] = (
                f'<{base}?limit={limit}&max_id={page[-1].status_id}>; rel="next", '
                f'<{base}?limit={limit}&min_id={page[0].status_id}>; rel="prev"'
            )
        return _json([self.mastodon_status(account, p) for p in page], headers=extra)

    def bluesky_profile(self, query: dict[str, str], headers: dict[str, str]) -> Reply:
        account = self._by_actor(query.get("actor", ""))
        if account is None:
            return _json({"error": "InvalidRequest", "message": "Profile not found"}, 400)
        return _json(
            {
                "did": account.did,
                "handle": account.handle,
                "displayName": account.username,
                "description": account.label or "",
                "followersCount": 0,
                "followsCount": 0,
                "postsCount": len(account.posts),
                "indexedAt": "2024-01-01T00:00:00.000Z",
            }
            | self.profiles.get(account.username, {})
        )

    def bluesky_view(self, account: FakeAccount, post: FakePost) -> dict[str, Any]:
        author = {"did": account.did, "handle": account.handle, "displayName": account.username}
        uri = f"at://{account.did}/app.bsky.feed.post/{post.status_id}"
        record: dict[str, Any] = {
            "$type": "app.bsky.feed.post",
            "text": post.text,
            "createdAt": iso_z(post.created_at),
            **({"langs": [post.lang]} if post.lang else {}),
        }
        if post.mentions:
            record["facets"] = [bluesky_mention(post.text, self.someone(m)) for m in post.mentions]
        view: dict[str, Any] = {
            "uri": uri,
            "cid": f"bafy{post.status_id}",
            "author": author,
            "record": record,
            "replyCount": post.replies,
            "repostCount": post.reposts,
            "likeCount": post.likes,
            "indexedAt": iso_z(post.created_at),
        }
        embed = BLUESKY_EMBEDS.get(post.kind)
        if embed:
            view["embed"] = embed(self.url)
        entry: dict[str, Any] = {"post": view}
        if post.kind == "reply":
            answered = self.someone(post.reply_to)
            parent_uri = f"at://{answered.did}/app.bsky.feed.post/{post.status_id - 1}"
            parent = {"uri": parent_uri, "cid": "bafyparent"}
            record["reply"] = {"root": parent, "parent": parent}
            parent_view = {
                "$type": "app.bsky.feed.defs#postView",
                **parent,
                "author": {"did": answered.did, "handle": answered.handle},
            }
            entry["reply"] = {"root": parent_view, "parent": parent_view}
        elif post.kind == "repost":
            other = self.someone(post.repost_of)
            view["uri"] = f"at://{other.did}/app.bsky.feed.post/{post.status_id}"
            view["author"] = {"did": other.did, "handle": other.handle}
            entry["reason"] = {
                "$type": "app.bsky.feed.defs#reasonRepost",
                "by": author,
                "uri": f"at://{account.did}/app.bsky.feed.repost/{post.status_id}",
                "indexedAt": iso_z(post.created_at),
            }
        return entry

    def bluesky_feed(self, query: dict[str, str], headers: dict[str, str]) -> Reply:
        account = self._by_actor(query.get("actor", ""))
        if account is None:
            return _json({"error": "InvalidRequest", "message": "Profile not found"}, 400)
        limit = min(int(query.get("limit", 50)), self.page_cap)
        posts = account.posts
        if query.get("cursor"):
            posts = [p for p in posts if p.status_id < int(query["cursor"])]
        page = posts[:limit]
        body: dict[str, Any] = {"feed": [self.bluesky_view(account, p) for p in page]}
        if len(posts) > limit:
            body["cursor"] = str(page[-1].status_id)
        return _json(body)

    def feed(
        self, query: dict[str, str], headers: dict[str, str], kind: str, username: str
    ) -> Reply:
        account = self.accounts.get(username)
        if account is None:
            return Reply(404, "no such feed", {"Content-Type": "text/plain"})
        body = (_rss if kind == "rss" else _atom)(self.url, account).encode()
        etag = '"' + hashlib.sha1(body).hexdigest() + '"'
        modified = format_datetime(account.posts[0].created_at.replace(tzinfo=UTC), usegmt=True)
        if headers.get("if-none-match") == etag:
            return Reply(304, b"", {"ETag": etag})
        content_type = "application/rss+xml" if kind == "rss" else "application/atom+xml"
        return Reply(
            200,
            body,
            {
                "Content-Type": f"{content_type}; charset=utf-8",
                "ETag": etag,
                "Last-Modified": modified,
            },
        )

    def html_page(self, query: dict[str, str], headers: dict[str, str], username: str) -> Reply:
        account = self.accounts.get(username)
        if account is None:
            return Reply(404, "<html><body>Not found</body></html>", {"Content-Type": "text/html"})
        page = max(1, int(query.get("page", 1)))
        size = min(10, self.page_cap)
        posts = account.posts[(page - 1) * size : page * size]
        articles = "".join(
            f'<article class="post" id="p{p.status_id}">'
            f'<a class="permalink" href="/html/{username}/posts/{p.status_id}">#</a>'
            f'<time datetime="{iso_z(p.created_at)}">{p.created_at:%d %b %Y}</time>'
            f'<div class="text">{to_html(p.text)}</div></article>'
            for p in posts
        )
        more = len(account.posts) > page * size
        following = (
            f'<a rel="next" href="/html/{username}?page={page + 1}">Older</a>' if more else ""
        )
        body = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(username)}"
            f"</title></head><body><main>{articles}</main>{following}</body></html>"
        )
        return Reply(200, body, {"Content-Type": "text/html; charset=utf-8"})


BLUESKY_EMBEDS = {  # a post kind as the AppView shows it in post.embed
    "photo": lambda base: {
        "$type": "app.bsky.embed.images#view",
        "images": [{"thumb": f"{base}/img/t", "fullsize": f"{base}/img/f", "alt": ""}],
    },
    "video": lambda base: {
        "$type": "app.bsky.embed.video#view",
        "cid": "bafyvideo",
        "playlist": f"{base}/video/playlist.m3u8",
    },
    "link": lambda base: {
        "$type": "app.bsky.embed.external#view",
        "external": {"uri": f"{base}/elsewhere", "title": "A page", "description": ""},
    },
    "quote": lambda base: {
        "$type": "app.bsky.embed.record#view",
        "record": {"$type": "app.bsky.embed.record#viewRecord", "uri": "at://did:plc:q/x/1"},
    },
}


def bluesky_mention(text: str, account: FakeAccount) -> dict[str, Any]:
    """A rich-text facet mentioning `account` (over its @handle where the text has it)."""
    start = text.encode().find(f"@{account.handle}".encode())
    end = start + len(account.handle.encode()) + 1 if start >= 0 else 0
    return {
        "$type": "app.bsky.richtext.facet",
        "index": {"byteStart": max(start, 0), "byteEnd": end},
        "features": [{"$type": "app.bsky.richtext.facet#mention", "did": account.did}],
    }


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status,
        json.dumps(data, ensure_ascii=False),
        {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
    )


def _title(text: str) -> str:
    first = text.strip().split("\n")[0].strip()
    return first if len(first) <= 80 else first[:79].rstrip() + "…"


def _rss(base: str, account: FakeAccount) -> str:
    items = "".join(
        f"<item><title>{xml_escape(html.escape(_title(p.text)))}</title>"  # RSS titles are HTML
        f"<link>{base}/html/{account.username}/posts/{p.status_id}</link>"
        f'<guid isPermaLink="false">{xml_escape(p.post_id)}</guid>'
        f"<pubDate>{format_datetime(p.created_at.replace(tzinfo=UTC), usegmt=True)}</pubDate>"
        f"<description>{xml_escape(to_html(p.text))}</description></item>"
        for p in account.posts
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        f"<title>{xml_escape(account.username)}</title><link>{base}/html/{account.username}"
        f"</link><description>{xml_escape(account.label or '')}</description>{items}"
        "</channel></rss>"
    )


def _atom(base: str, account: FakeAccount) -> str:
    entries = "".join(
        f"<entry><id>urn:tribes-test:{xml_escape(p.post_id)}</id>"
        f"<title>{xml_escape(_title(p.text))}</title>"
        f'<link href="{base}/html/{account.username}/posts/{p.status_id}"/>'
        f"<published>{iso_z(p.created_at)}</published><updated>{iso_z(p.created_at)}</updated>"
        f'<content type="html">{xml_escape(to_html(p.text))}</content></entry>'
        for p in account.posts
    )
    updated = iso_z(account.posts[0].created_at) if account.posts else "2016-01-01T00:00:00Z"
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>{xml_escape(account.username)}</title><id>urn:tribes-test:{account.number}"
        f"</id><updated>{updated}</updated>{entries}</feed>"
    )


class _Handler(BaseHTTPRequestHandler):
    platforms: LocalPlatforms
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        headers = {k.lower(): v for k, v in self.headers.items()}
        logged = Logged(time.monotonic(), parts.path, query, headers)
        with self.platforms._lock:
            self.platforms.requests.append(logged)
        if self.platforms.delay:
            time.sleep(self.platforms.delay)
        try:
            reply = self.platforms.answer(parts.path, query, headers)
        except (ValueError, KeyError) as exc:
            reply = _json({"error": f"bad request: {exc}"}, 400)
        logged.status = reply.status
        body = reply.body.encode() if isinstance(reply.body, str) else reply.body
        try:
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the crawler was killed mid-answer
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass
