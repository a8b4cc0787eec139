"""Mastodon: public statuses through the documented REST API, newest first, `max_id` paging.

GET /api/v1/accounts/lookup?acct=USER, then GET /api/v1/accounts/:id/statuses?limit=40 with
`since_id` set to the newest status an earlier crawl stored, paging down with `max_id`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import scrapy
from scrapy.http import Response

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
            kind = "boost" if boost else "reply" if status.get("in_reply_to_id") else "post"
            body = boost if isinstance(boost, dict) else status
            yield self.post(
                run,
                post_id=status_id,
                created_at=created,
                text=status_text(body),
                url=status.get("url") or body.get("url") or status.get("uri"),
                kind=kind,
                lang=body.get("language"),
            )
        if finished or (self.max_posts is not None and run.fetched >= self.max_posts):
            yield self.done(run)
        else:
            yield self.statuses(run, instance, account_id, max_id=str(page[-1]["id"]))
