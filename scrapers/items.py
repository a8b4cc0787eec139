"""What the spiders yield: posts, account profiles, and an account's end-of-crawl marker.

`PostItem` and `UserItem` are built from the declared `posts` and `users` columns
(`pipeline.store.POSTS` / `USERS`), plus the `source` and `account` the crawl counts by: a
column added there is a keyword a spider can fill. Build them with keywords; columns a spider
does not fill (optional ones) are empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from datetime import datetime
from typing import Any

from pipeline import store


def item_class(name: str, table: store.Table, doc: str, *extra: tuple) -> type:
    """A keyword-only dataclass of the given columns of `table` (required ones have no default,
    the others the column's), then `source`, `account` and the `extra` fields."""
    columns: list[Any] = [
        (column, dtype.to_python())
        if table.columns[column].required
        else (column, dtype.to_python() | None, field(default=table.columns[column].default))
        for column, dtype in table.given.items()
    ]
    fields = [*columns, ("source", str), ("account", str), *extra]
    item = make_dataclass(name, fields, kw_only=True)
    item.__module__, item.__doc__ = __name__, doc
    return item


PostItem = item_class(
    "PostItem",
    store.POSTS,
    "One public post (kind: one of store.KINDS), keyed by (platform, post_id); `mentions` are "
    "the user ids it mentions (post_mentions).",
    ("mentions", list[str], field(default_factory=list)),
)
UserItem = item_class(
    "UserItem", store.USERS, "An account's profile; `label` comes from sources.yaml."
)


@dataclass(kw_only=True)
class AccountDone:
    """Yielded after an account's last post: its crawl completed, so remember where it got to."""

    platform: str
    source: str
    account: str
    newest_post_id: str | None
    newest_created_at: datetime | None
    cursor: str | None
