"""What the spiders yield: posts, account profiles, and an account's end-of-crawl marker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class PostItem:
    """One public post (kind: 'post', 'boost' or 'reply'), keyed by (platform, post_id)."""

    platform: str
    post_id: str
    user_id: str
    created_at: datetime | None
    text: str
    url: str | None
    kind: str
    source: str
    account: str


@dataclass
class UserItem:
    """An account's profile; `label` comes from sources.yaml."""

    platform: str
    user_id: str
    display_name: str | None
    label: str | None
    url: str | None
    description: str | None
    source: str
    account: str


@dataclass
class AccountDone:
    """Yielded after an account's last post: its crawl completed, so remember where it got to."""

    platform: str
    source: str
    account: str
    newest_post_id: str | None
    newest_created_at: datetime | None
    cursor: str | None
