"""What the Prefect UI shows of a run: the clusters' markdown and the changes since the last run."""

from __future__ import annotations

import polars as pl

from pipeline.report import ReportData
from pipeline.summary import change_rows, change_summary, clusters_markdown, md


def members(assignments: dict[str, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "platform": "facebook",
            "user_id": list(assignments),
            "name": [u.title() for u in assignments],
            "cluster_id": list(assignments.values()),
        },
        schema_overrides={"cluster_id": pl.Int32},
    )


def clusters(labels: dict[int, str], sizes: dict[int, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "cluster_id": list(labels),
            "label": list(labels.values()),
            "size": [sizes[c] for c in labels],
        },
        schema_overrides={"cluster_id": pl.Int32},
    )


def data(
    now: dict[str, int],
    labels: dict[int, str],
    before: dict[str, int] | None,
    before_labels: dict[int, str] | None,
) -> ReportData:
    def sizes(groups: dict[str, int]) -> dict[int, int]:
        return {c: list(groups.values()).count(c) for c in set(groups.values())}

    return ReportData(
        run={"run_id": "r2"},
        members=members(now),
        clusters=clusters(labels, sizes(now)),
        terms=pl.DataFrame(),
        recommendations=pl.DataFrame(),
        previous_run_id="r1" if before else None,
        previous_members=members(before) if before else None,
        previous_clusters=clusters(before_labels, sizes(before)) if before_labels else None,
    )


SPORT = {"arsenal": 0, "chelsea": 0, "lakers": 0, "celtics": 0}
MUSIC = {"adele": 1, "drake": 1, "beyonce": 1}
TALK = {"bbc": 2, "cnn": 2, "npr": 2}


def test_a_user_who_changes_cluster_a_new_and_a_vanished_cluster_are_rows():
    before = {**SPORT, **MUSIC, **TALK}
    before_labels = {0: "sport", 1: "music", 2: "news"}
    # football continues sport (drake joins it), music takes bbc, basketball is new (two sport
    # pages, cnn and two new pages), news is gone (npr left the data)
    now = {
        "arsenal": 0,
        "chelsea": 0,
        "drake": 0,
        "adele": 1,
        "beyonce": 1,
        "bbc": 1,
        "lakers": 4,
        "celtics": 4,
        "cnn": 4,
        "joe": 4,
        "kim": 4,
    }
    labels = {0: "football", 1: "music", 4: "basketball"}
    report = data(now, labels, before, before_labels)
    changes = report.changes()
    rows = change_rows(changes, report.clusters)
    assert {
        "change": "moved",
        "name": "Drake",
        "from": "music",
        "to": "football",
        "users": 1,
    } in rows
    assert {
        "change": "moved",
        "name": "Lakers",
        "from": "sport",
        "to": "basketball",
        "users": 1,
    } in rows
    assert {
        "change": "new cluster",
        "name": "basketball",
        "from": "",
        "to": "basketball",
        "users": 5,
    } in rows
    assert {
        "change": "vanished cluster",
        "name": "news",
        "from": "news",
        "to": "",
        "users": 3,
    } in rows
    assert {r["name"] for r in rows if r["change"] == "moved"} == {
        "Drake",
        "Bbc",
        "Lakers",
        "Celtics",
        "Cnn",
    }
    assert len(rows) == 7  # joe and kim are new in the data, not moved
    assert change_summary(changes, rows) == (
        "Since run r1: 5 users moved, 1 new clusters, 1 vanished; 2 users are new in the data."
    )


def test_unchanged_clusters_and_a_first_run_have_no_rows():
    everyone = {**SPORT, **MUSIC}
    same = data(everyone, {0: "sport", 1: "music"}, everyone, {0: "sport", 1: "music"})
    assert change_rows(same.changes(), same.clusters) == []
    first = data(everyone, {0: "sport", 1: "music"}, None, None)
    changes = first.changes()
    assert change_rows(changes, first.clusters) == []
    assert change_summary(changes, []).startswith("First completed run")


def test_clusters_markdown_is_one_row_per_cluster_with_crawled_text_made_inert():
    table = pl.DataFrame(
        {
            "cluster_id": [0, 1],
            "size": [5, 3],
            "n_outliers": [1, 0],
            "label": ["football | goal", "<img src=x onerror=alert(1)>"],
            "top_terms": ["football, goal", "[click](http://evil)"],
            "example_users": [["Arsenal", "*Chelsea*"], ["a\nb"]],
        }
    )
    text = clusters_markdown("r7", table)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 3  # header + 2 clusters
    assert rows[1] == (
        r"| 0 | football \| goal | 5 (1 low-conf.) | football, goal | "
        r"Arsenal, \*Chelsea\* |"
    )
    assert r"\<img src=x onerror=alert\(1\)\>" in rows[2]
    assert r"\[click\]\(http://evil\)" in rows[2] and "a b" in rows[2]
    assert "2 clusters of 8 users." in text
    assert md("a  \n b|c") == r"a b\|c"
