"""Per-account counts (new, updated, unchanged, skipped, errors) and the last error's reason,
kept in the crawler's stats."""

from __future__ import annotations

from scrapy.statscollectors import StatsCollector

ACCOUNTS_STAT = "tribes/accounts"
ACCOUNTS_DONE = "tribes/accounts_done"  # progress: accounts crawled to the end
POSTS_SEEN = "tribes/posts_seen"  # progress: posts the spiders found (before storing)
FIELDS = ("new", "updated", "unchanged", "skipped", "errors")


def account_row(stats: StatsCollector, source: str, account: str) -> dict:
    """One account's row of counts (made on first use)."""
    table: dict[str, dict] = stats.get_value(ACCOUNTS_STAT) or {}
    if not table:
        stats.set_value(ACCOUNTS_STAT, table)
    return table.setdefault(
        f"{source}\t{account}",
        {"source": source, "account": account, **dict.fromkeys(FIELDS, 0), "reason": None},
    )


def bump(stats: StatsCollector, source: str, account: str, field: str, n: int = 1) -> None:
    """Add `n` to one account's count (n=0 just makes the account's row exist)."""
    account_row(stats, source, account)[field] += n


def note_reason(stats: StatsCollector, source: str, account: str, reason: str) -> None:
    """Remember why the account's crawl last failed."""
    account_row(stats, source, account)["reason"] = reason


def rows(stats: StatsCollector) -> list[dict]:
    """One dict per account: source, account, the FIELDS counts and the last error's reason."""
    return list((stats.get_value(ACCOUNTS_STAT) or {}).values())
