"""The `sources.yaml` file: which accounts `tribes crawl` collects, validated into typed sources.

sources:
  - name: fediverse
    platform: mastodon            # the name of a spider: mastodon | bluesky | rss | html
    api: https://mastodon.social  # optional for mastodon (else from the handle's domain)
    accounts:
      - Gargron                   # a bare handle, or a mapping with a label:
      - {handle: "@nasa@mstdn.social", label: science, person: NASA}
forget:                           # accounts never crawled again (`tribes forget`)
  - mastodon:someone@mastodon.social

The platform's spider (scrapers/spiders/) holds its rules: which handles it takes, an account's
key and the hosts its requests may reach (`account_key`, `hosts`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.people import parse_account
from scrapers.platforms import platform_spider, platforms

if TYPE_CHECKING:
    from scrapers.spiders.base import AccountSpider

DECLARED = "sources.yaml"  # the evidence of the links `person:` declares
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class SourcesError(ValueError):
    """`sources.yaml` cannot be used; the one-line message names the file and the field."""


def http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def host_name(value: str) -> str:
    """A host name (dot-separated labels of letters, digits and inner hyphens), lower-cased."""
    host = value.strip().lower()
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        raise ValueError(f"{value!r} is not a host name")
    return host


def url_host(url: str) -> str:
    """The lower-cased host of an http(s) URL (an IPv6 address without its brackets)."""
    return (urlsplit(url).hostname or "").lower()


def is_xpath(selector: str) -> bool:
    """Selectors starting with `/`, `./` or `(` are XPath; everything else is CSS."""
    return selector.startswith(("/", "./", "("))


class Account(BaseModel):
    """One account to collect: a handle or URL, an optional known label and display name."""

    model_config = ConfigDict(extra="forbid")

    handle: str = Field(min_length=1, description="handle, profile URL, feed URL or page URL")
    label: str | None = Field(None, description="known interest label, stored as users.label")
    name: str | None = Field(None, description="display name, when the platform has none")
    person: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]+$",
        description="accounts with the same person, on any platform, are one person",
    )


class Selectors(BaseModel):
    """Where the generic HTML spider finds posts: CSS (parsel's ::text/::attr) or XPath."""

    model_config = ConfigDict(extra="forbid")

    post: str = Field(description="one element per post")
    text: str = Field(description="the post's text, inside the post element")
    date: str | None = Field(None, description="its date (e.g. time::attr(datetime))")
    id: str | None = Field(None, description="a stable id (e.g. ::attr(id)); default: url or hash")
    url: str | None = Field(None, description="its permalink (e.g. a.permalink::attr(href))")
    next_page: str | None = Field(
        None, description="the next page's link (e.g. a[rel=next]::attr(href))"
    )

    @field_validator("post", "text", "date", "id", "url", "next_page")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from parsel import Selector

        probe = Selector(text="<html><body></body></html>")
        try:
            probe.xpath(value) if is_xpath(value) else probe.css(value)
        except Exception as exc:  # cssselect and lxml raise several types
            kind = "XPath" if is_xpath(value) else "CSS"
            raise ValueError(f"{value!r} is not a valid {kind} selector ({exc})") from None
        return value


class Source(BaseModel):
    """A named group of accounts on one platform."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="used by `tribes crawl --source NAME`")
    platform: str = Field(description="the name of its spider (scrapers/spiders/)")
    api: str | None = Field(
        None, description="base URL: a Mastodon instance or a Bluesky AppView (public.api.bsky.app)"
    )
    accounts: list[Account] = Field(min_length=1)
    selectors: Selectors | None = None
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="more hosts that links and redirects may lead to (the accounts' and the "
        "api's hosts always may)",
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"{value!r} must be letters, digits, '.', '_' or '-'")
        return value

    @field_validator("platform")
    @classmethod
    def _has_spider(cls, value: str) -> str:
        platform_spider(value)
        return value

    @field_validator("api")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        if value is not None and not http_url(value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/") if value else value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        return [host_name(host) for host in value]

    @field_validator("accounts", mode="before")
    @classmethod
    def _bare_handles(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"handle": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _fits_platform(self) -> Source:
        if self.spider.needs_selectors and self.selectors is None:
            raise ValueError(f"{self.platform} sources need selectors (post, text, ...)")
        if not self.spider.needs_selectors and self.selectors is not None:
            takers = " and ".join(p for p in platforms() if platform_spider(p).needs_selectors)
            raise ValueError(f"selectors only apply to {takers} sources, not {self.platform}")
        keys = [self.account_key(a) for a in self.accounts]
        duplicate = next((k for k in keys if keys.count(k) > 1), None)
        if duplicate:
            raise ValueError(f"account {duplicate!r} is listed twice")
        return self

    @property
    def spider(self) -> type[AccountSpider]:
        """The spider of this source's platform: it knows the platform's rules."""
        return platform_spider(self.platform)

    def account_key(self, account: Account) -> str:
        """The account's stable identity on its platform (the crawl-state key)."""
        return self.spider.account_key(account.handle, self.api)

    def without(self, forgotten: set[tuple[str, str]]) -> Source:
        """This source less its accounts in `forgotten` (platform, account key)."""
        kept = [a for a in self.accounts if (self.platform, self.account_key(a)) not in forgotten]
        return self.model_copy(update={"accounts": kept})

    def hosts(self, account: Account | None = None) -> set[str]:
        """The hosts that requests for `account` (default: for any account) may go to."""
        chosen = [account] if account else self.accounts
        platform_hosts = (self.spider.hosts(a.handle, self.api) for a in chosen)
        return set().union(*platform_hosts) | set(self.allowed_hosts)


class SourcesFile(BaseModel):
    """The whole `sources.yaml`."""

    model_config = ConfigDict(extra="forbid")

    sources: list[Source] = Field(min_length=1)
    forget: list[str] = Field(
        default_factory=list,
        description="accounts (PLATFORM:ACCOUNT) never crawled again, after `tribes forget`",
    )

    @field_validator("forget")
    @classmethod
    def _accounts(cls, value: list[str]) -> list[str]:
        for account in value:
            parse_account(account)
        return value

    @property
    def forgotten(self) -> set[tuple[str, str]]:
        return {parse_account(account) for account in self.forget}

    def declared_people(self) -> pl.DataFrame:
        """The accounts with a `person:` (person_id, platform, user_id), as link rows."""
        rows = [
            (account.person, source.platform, source.account_key(account))
            for source in self.sources
            for account in source.accounts
            if account.person
        ]
        return pl.DataFrame(
            rows, schema=["person_id", "platform", "user_id"], orient="row"
        ).with_columns(
            how=pl.lit("declared"), score=pl.lit(None, pl.Float64), evidence=pl.lit(DECLARED)
        )

    @model_validator(mode="after")
    def _unique_names(self) -> SourcesFile:
        names = [s.name for s in self.sources]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ValueError(f"source name {duplicate!r} is used twice")
        return self

    def select(self, name: str | None) -> list[Source]:
        """All sources, or the one called `name`, less the accounts listed under `forget`."""
        if name is None:
            return [s.without(self.forgotten) for s in self.sources]
        chosen = [s.without(self.forgotten) for s in self.sources if s.name == name]
        if not chosen:
            known = ", ".join(s.name for s in self.sources)
            raise SourcesError(f"no source named {name!r} (sources: {known})")
        return chosen


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_sources(data: object, name: str = "sources.yaml") -> SourcesFile:
    """Validate already-loaded YAML data; errors name the file and the field in one line."""
    try:
        return SourcesFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        where = _where(first["loc"])
        raise SourcesError(f"{name}: {where + ': ' if where else ''}{message}") from None


def load_sources(path: Path | str) -> SourcesFile:
    """Read and validate a sources file."""
    path = Path(path)
    if not path.is_file():
        raise SourcesError(f"{path}: no such sources file (see docs/crawling.md for an example)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SourcesError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise SourcesError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if not isinstance(data, dict):
        raise SourcesError(f"{path}: expected a mapping with a 'sources:' list")
    return parse_sources(data, str(path))
