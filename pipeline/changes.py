"""What changed between two runs: each cluster matched to the previous run's, who joined and who
left, which clusters vanished. Pure: frames in, `Changes` out (the report, the run summary and
the Prefect UI artifacts all read it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

MATCH_JACCARD = 0.3  # a cluster continues a previous one when their members overlap this much
NEW_IN_DATA = "new in the data"  # where a user with no earlier run "came from"


@dataclass
class Change:
    """How one cluster differs from the previous run."""

    previous_id: int | None = None
    previous_label: str | None = None
    overlap: float = 0.0
    joined: list[tuple[str, str]] = field(default_factory=list)  # (user, came from)
    left: list[tuple[str, str]] = field(default_factory=list)  # (user, went to)


@dataclass(frozen=True)
class Changes:
    previous_run_id: str | None
    by_cluster: dict[int, Change]
    vanished: list[tuple[int, str, int]]  # previous (cluster_id, label, size)


def _key(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(key=pl.concat_str("platform", pl.lit(":"), "user_id"))


def compare_runs(
    members: pl.DataFrame,
    clusters: pl.DataFrame,
    previous_run_id: str | None,
    previous_members: pl.DataFrame | None,
    previous_clusters: pl.DataFrame | None,
) -> Changes:
    """Match each cluster to the previous run's cluster sharing the most members (Jaccard), and
    list who joined and left; previous clusters that nothing continues have vanished.

    `members`: platform, user_id, name, cluster_id per user; `clusters`: cluster_id, label."""
    if previous_members is None or previous_clusters is None:
        return Changes(None, {}, [])
    now, before = _key(members), _key(previous_members)
    now_of = dict(zip(now["key"], now["cluster_id"], strict=True))
    before_of = dict(zip(before["key"], before["cluster_id"], strict=True))
    name_of = dict(zip(now["key"], now["name"], strict=True)) | {
        k: n for k, n in zip(before["key"], before["name"], strict=True) if k not in now_of
    }
    groups_now = {c: set(g["key"]) for (c,), g in now.group_by("cluster_id")}
    groups_before = {c: set(g["key"]) for (c,), g in before.group_by("cluster_id")}
    prev_label = dict(zip(previous_clusters["cluster_id"], previous_clusters["label"], strict=True))
    cur_label = dict(zip(clusters["cluster_id"], clusters["label"], strict=True))

    def where(cluster_id: int | None, labels: dict[int, str], missing: str) -> str:
        return missing if cluster_id is None else labels.get(cluster_id, f"cluster {cluster_id}")

    by_cluster: dict[int, Change] = {}
    continued: set[int] = set()
    for cluster_id, keys in groups_now.items():
        best, best_j = None, 0.0
        for previous_id, old in groups_before.items():
            jaccard = len(keys & old) / len(keys | old)
            if jaccard > best_j:
                best, best_j = previous_id, jaccard
        change = Change(overlap=best_j)
        old = set()
        if best is not None and best_j >= MATCH_JACCARD:
            change.previous_id, change.previous_label = best, prev_label.get(best)
            continued.add(best)
            old = groups_before[best]
        change.joined = sorted(
            (name_of[k], where(before_of.get(k), prev_label, NEW_IN_DATA)) for k in keys - old
        )
        change.left = sorted(
            (name_of[k], where(now_of.get(k), cur_label, "not in this run")) for k in old - keys
        )
        by_cluster[cluster_id] = change
    sizes = {c: len(k) for c, k in groups_before.items()}
    vanished = sorted(
        (
            (c, prev_label.get(c, f"cluster {c}"), sizes[c])
            for c in groups_before
            if c not in continued
        ),
        key=lambda v: -v[2],
    )
    return Changes(previous_run_id, by_cluster, vanished)
