"""Mastodon: public statuses through the documented REST API, newest first, `max_id` paging.

GET /api/v1/accounts/lookup?acct=USER, then GET /api/v1/accounts/:id/statuses?limit=40 with
`since_id` set to the newest status an earlier crawl stored, paging down with `max_id`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import lxml.html
import scrapy
from scrapy.http import Response

from pipeline import store
from scrapers.sources import host_name, http_url, url_host
from scrapers.spiders.base import AccountRun, AccountSpider, ParseError, json_of
from scrapers.text import html_to_text, parse_time

ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]+")  # it becomes part of the next URL's path
USERNAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class MastodonAccount:
    """Where a Mastodon handle lives: `user_id` is the global `user@domain`."""

    username: str
    domain: str
    instance: str

    @property
    def user_id(self) -> str:
        return f"{self.username}@{self.domain}"

    @property
    def lookup_acct(self) -> str:
        """The `acct` the instance's lookup endpoint expects (bare for its own users)."""
        own = (urlsplit(self.instance).hostname or "").lower()
        return self.username if self.domain.lower() == own else self.user_id


def mastodon_account(handle: str, api: str | None) -> MastodonAccount:
    """Parse `user`, `@user@domain` or `https://domain/@user` (with the source's `api`)."""
    text = handle.strip()
    instance = api.rstrip("/") if api else None
    if http_url(text):
        parts = urlsplit(text)
        instance = instance or f"{parts.scheme}://{parts.netloc}"
        segments = parts.path.strip("/").split("/")
        text = next((s for s in segments if s.startswith("@")), segments[-1])
    user, _, domain = text.lstrip("@").partition("@")
    if not USERNAME.fullmatch(user):
        raise ValueError(f"{handle!r} is not a Mastodon handle (user, user@domain or profile URL)")
    domain = domain or (url_host(instance) if instance else "")
    if not domain:
        raise ValueError(f"{handle!r} needs a domain (user@instance) or the source an api URL")
    try:
        domain = host_name(domain)
    except ValueError:
        raise ValueError(f"{handle!r}: the domain {domain!r} is not a host name") from None
    return MastodonAccount(username=user, domain=domain, instance=instance or f"https://{domain}")


def id_order(status_id: str) -> tuple[int, int | str]:
    """Sort key of Mastodon ids: numeric (snowflake) ids compare as numbers."""
    return (1, int(status_id)) if status_id.isdigit() else (0, status_id)


def status_text(status: dict) -> str:
    """Plain text of a status (its content warning first, when it has one)."""
    text = html_to_text(status.get("content"))
    warning = (status.get("spoiler_text") or "").strip()
    return f"{warning}\n\n{text}".strip() if warning else text


MEDIA_KINDS = {"video": "video", "gifv": "video", "image": "photo"}  # media_attachments[].type
CARD_KINDS = {"video": "video", "photo": "photo"}  # card.type; "link" and "rich" are links


def global_acct(acct: Any, instance: str) -> str | None:
    """An `acct` as the spider's user ids spell it: `user@domain` (bare ones are local to the
    instance that answered); None for a missing one."""
    if not isinstance(acct, str) or not acct.strip("@"):
        return None
    acct = acct.strip("@")
    return acct if "@" in acct else f"{acct}@{url_host(instance)}"


def status_kind(status: dict) -> str:
    """What a status is (store.KINDS): a repost, reply, quote, or an original with its media."""
    if isinstance(status.get("reblog"), dict):
        return "repost"
    if status.get("in_reply_to_id"):
        return "reply"
    if status.get("quote"):
        return "quote"
    attached = status.get("media_attachments") or []
    media = {MEDIA_KINDS.get(m.get("type")) for m in attached if isinstance(m, dict)}
    card = status.get("card") if isinstance(status.get("card"), dict) else {}
    for kind in ("video", "photo"):
        if kind in media or CARD_KINDS.get(card.get("type")) == kind:
            return kind
    return "link" if card else "original"


def interactions(status: dict, instance: str, own_id: str, user_id: str) -> dict[str, Any]:
    """Whom a status reposts, answers and mentions, as user ids (`user@domain`). A reply to an
    account it neither mentions nor is (Mastodon mentions whom a reply answers) keeps the
    instance's account id as given."""
    boost = status.get("reblog")
    if isinstance(boost, dict):  # a boost records whom it reposts, not the original's mentions
        author = boost.get("account")
        acct = author.get("acct") if isinstance(author, dict) else None
        return {"repost_of": global_acct(acct, instance), "mentions": []}
    mentions = [m for m in status.get("mentions") or [] if isinstance(m, dict)]
    mentioned = {str(m.get("id")): global_acct(m.get("acct"), instance) for m in mentions}
    answered = status.get("in_reply_to_account_id")
    reply_to = None
    if answered is not None:
        reply_to = (
            user_id if str(answered) == own_id else mentioned.get(str(answered)) or str(answered)
        )
    return {"reply_to": reply_to, "mentions": sorted(set(mentioned.values()) - {None})}


def engagement(status: dict) -> dict[str, Any]:
    """The counts a status shows (a boost shows the boosted post's) and when they were read."""
    return {
        "likes": status.get("favourites_count"),
        "reposts": status.get("reblogs_count"),
        "replies": status.get("replies_count"),
        "counts_seen_at": store.now(),
    }


def verified_fields(fields: Any) -> list[dict[str, str]]:
    """The links of profile fields the instance verified (rel=me back-links: `verified_at`
    set), as [{url, verified_at}]; unverified fields say nothing."""
    links = []
    for entry in fields if isinstance(fields, list) else []:
        if not isinstance(entry, dict) or not entry.get("verified_at"):
            continue
        value = str(entry.get("value") or "").strip()
        hrefs = lxml.html.fragment_fromstring(value, create_parent="div").xpath("//a/@href")
        url = str(hrefs[0]) if hrefs else html_to_text(value)
        if http_url(url):
            links.append({"url": url, "verified_at": str(entry["verified_at"])})
    return links


class MastodonSpider(AccountSpider):
    name = "mastodon"
    page_size = 40  # the API's maximum

    @classmethod
    def account_key(cls, handle: str, api: str | None) -> str:
        return mastodon_account(handle, api).user_id

    @classmethod
    def hosts(cls, handle: str, api: str | None) -> set[str]:
        return {url_host(mastodon_account(handle, api).instance)}

    def first_requests(self, run: AccountRun) -> Iterable[scrapy.Request]:
        who = mastodon_account(run.config.handle, self.source.api)
        run.user_id = who.user_id
        url = f"{who.instance}/api/v1/accounts/lookup?{urlencode({'acct': who.lookup_acct})}"
        yield self.request(url, run, self.parse_account, cb_kwargs={"who": who})

    def parse_account(self, response: Response, who: MastodonAccount) -> Iterator[Any]:
        run: AccountRun = response.meta["tribes"]
        account = json_of(response, dict)
        if not ACCOUNT_ID.fullmatch(str(account.get("id") or "")):
            raise ParseError(f"the lookup answer has no valid account id ({account.get('id')!r})")
        yield self.profile(
            run,
            account.get("display_name") or account.get("username"),
            url=account.get("url"),
            description=html_to_text(account.get("note")),
            verified_links=json.dumps(verified_fields(account.get("fields"))),
        )
        yield self.statuses(run, who.instance, str(account["id"]), max_id=None)

    def statuses(
        self, run: AccountRun, instance: str, account_id: str, max_id: str | None
    ) -> scrapy.Request:
        params = {"limit": self.page_size}
        if max_id:
            params["max_id"] = max_id
        if run.known_id:
            params["since_id"] = run.known_id
        url = f"{instance}/api/v1/accounts/{account_id}/statuses?{urlencode(params)}"
        return self.request(
            url,
            run,
            self.parse_statuses,
            cb_kwargs={"instance": instance, "account_id": account_id},
        )

    def parse_statuses(self, response: Response, instance: str, account_id: str) -> Iterator[Any]:
        run: AccountRun = response.meta["tribes"]
        page = json_of(response, list)
        finished = not page
        for status in page:
            if not isinstance(status, dict) or not status.get("id"):
                raise ParseError("a status without an id")
            status_id = str(status["id"])
            created = parse_time(status.get("created_at"))
            older = run.known_id is not None and id_order(status_id) <= id_order(run.known_id)
            if older or self.stop_before(run, status_id, created):
                finished = True
                break
            boost = status.get("reblog")
            body = boost if isinstance(boost, dict) else status
            yield self.post(
                run,
                post_id=status_id,
                created_at=created,
                text=status_text(body),
                url=status.get("url") or body.get("url") or status.get("uri"),
                kind=status_kind(status),
                lang=body.get("language"),
                **engagement(body),
                **interactions(status, instance, account_id, run.user_id),
            )
        if finished or (self.max_posts is not None and run.fetched >= self.max_posts):
            yield self.done(run)
        else:
            yield self.statuses(run, instance, account_id, max_id=str(page[-1]["id"]))
