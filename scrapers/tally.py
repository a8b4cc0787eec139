"""Per-account counts (new, updated, unchanged, skipped, errors), kept in the crawler's stats."""

from __future__ import annotations

from scrapy.statscollectors import StatsCollector

ACCOUNTS_STAT = "tribes/accounts"
FIELDS = ("new", "updated", "unchanged", "skipped", "errors")


def bump(stats: StatsCollector, source: str, account: str, field: str, n: int = 1) -> None:
    """Add `n` to one account's count (n=0 just makes the account's row exist)."""
    table: dict[str, dict] = stats.get_value(ACCOUNTS_STAT) or {}
    if not table:
        stats.set_value(ACCOUNTS_STAT, table)
    row = table.setdefault(
        f"{source}\t{account}", {"source": source, "account": account, **dict.fromkeys(FIELDS, 0)}
    )
    row[field] += n


def rows(stats: StatsCollector) -> list[dict]:
    """One dict per account: source, account and the FIELDS counts."""
    return list((stats.get_value(ACCOUNTS_STAT) or {}).values())
