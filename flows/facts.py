"""`tribes cluster N` (how to reach a cluster) and `tribes compare A B`, printed from a run's
stored behaviour tables (pipeline/behaviour.py)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from rich.console import Console
from rich.table import Table

from pipeline import behaviour as bh
from pipeline import people, store
from pipeline.settings import Settings

TOP = 5  # rows per list


@dataclass(frozen=True)
class RunBehaviour:
    run_id: str
    tables: dict[str, pl.DataFrame]
    clusters: pl.DataFrame
    members: pl.DataFrame
    recommendations: pl.DataFrame
    timezone: str  # the run's: its weekdays and hours are in it
    min_kind_posts: int


def load(config: Settings, run: str | None, cluster_ids: list[int]) -> RunBehaviour:
    """A completed run's behaviour tables (default: the latest run); unknown clusters or a run
    without behaviour tables are one-line errors."""
    with store.open(config) as con:
        run_id = run or store.latest_run_id(con)
        if run_id is None:
            raise store.StoreError("no completed run yet: run `tribes refresh` first")
        used = (store.run_info(con, run_id) or {"settings": {}})["settings"]
        found = RunBehaviour(
            run_id,
            store.read_behaviour(con, run_id),
            store.run_clusters(con, run_id),
            people.person_named(store.run_members(con, run_id)),
            store.read_recommendations(con, run_id, "cluster"),
            used.get("timezone", config.timezone),
            config.min_kind_posts,  # a reading choice: today's setting
        )
    if found.clusters.height == 0:
        raise store.StoreError(f"run {run_id} has no clusters (unknown or unfinished run id?)")
    known = found.clusters["cluster_id"].to_list()
    for cluster_id in cluster_ids:
        if cluster_id not in known:
            raise ValueError(
                f"run {run_id} has no cluster {cluster_id} (its clusters: "
                f"{', '.join(map(str, sorted(known)))})"
            )
    if (
        found.tables["cluster_engagement"].height == 0
        and found.tables["cluster_activity"].height == 0
    ):
        raise store.StoreError(f"run {run_id} has no activity stored: refresh again to compute it")
    return found


def label(found: RunBehaviour, cluster_id: int) -> str:
    row = found.clusters.filter(pl.col("cluster_id") == cluster_id).row(0, named=True)
    return f"cluster {cluster_id} · {row['label']} ({row['size']} users)"


def names(found: RunBehaviour, accounts: pl.DataFrame) -> list[str]:
    """Display names of `accounts` (platform, user_id), in order."""
    named = accounts.join(
        found.members.select("platform", "user_id", "name"), on=["platform", "user_id"], how="left"
    )
    return [n or u for n, u in zip(named["name"], named["user_id"], strict=True)]


def table(title: str, columns: list[str], rows: list[list[str]], empty: str) -> Table:
    view = Table(title=title, title_justify="left")
    for column in columns:
        view.add_column(column, overflow="fold")
    for row in rows or [[empty, *[""] * (len(columns) - 1)]]:
        view.add_row(*row)
    return view


def show_fact_sheet(console: Console, config: Settings, cluster_id: int, run: str | None) -> None:
    """Print how to reach one cluster."""
    found = load(config, run, [cluster_id])
    sheet = bh.fact_sheet(
        cluster_id, found.tables, found.recommendations, found.min_kind_posts, TOP
    )
    say = lambda text: console.print(text, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"{label(found, cluster_id)} · run {found.run_id} · times in {found.timezone}")
    say(
        "Best times to post: "
        + (
            ", ".join(
                f"{r['day']} {r['hour']:02d}:00 ({r['posts']} posts, {r['share']:.0%})"
                for r in sheet["peak_times"].iter_rows(named=True)
            )
            or "no dated posts"
        )
    )
    busiest = sheet["days"].filter(pl.col("posts") > 0).head(3)
    say(
        "Busiest days: "
        + (", ".join(f"{d} {s:.0%}" for d, s in busiest.select("day", "share").rows()) or "—")
    )
    kinds = [
        [r["kind"], str(r["posts"]), *(cell(r[f"median_{n}"]) for n in bh.COUNTS)]
        for r in sheet["kinds"].iter_rows(named=True)
    ]
    console.print(
        table(
            "What engages it (median per post)",
            ["kind", "posts", "likes", "reposts", "replies"],
            kinds,
            "no engagement counts stored",
        )
    )
    if sheet["few_kinds"]:
        say(
            f"left out, fewer than {sheet['min_kind_posts']} posts: {', '.join(sheet['few_kinds'])}"
        )
    for role, what in (("central", "PageRank"), ("bridges", "share to other clusters")):
        accounts = sheet[role]
        console.print(
            table(
                "Central accounts" if role == "central" else "Accounts that bridge clusters",
                ["account", what, "interactions"],
                [
                    [name, f"{score:.3f}" if role == "central" else f"{score:.0%}", str(n)]
                    for name, score, n in zip(
                        names(found, accounts),
                        accounts["score"],
                        accounts["interactions"],
                        strict=True,
                    )
                ],
                "no replies, mentions or reposts stored",
            )
        )
    rising = [
        [r["term"], f"+{100 * r['rise']:.1f} pts/month", f"{r['latest']:.0%}"]
        for r in sheet["rising"].iter_rows(named=True)
    ]
    console.print(
        table("Rising topics", ["term", "share of posts", "last month"], rising, "none rising")
    )
    products = [
        [str(r["rank"]), r["name"], f"{r['score']:.2f}"]
        for r in sheet["products"].iter_rows(named=True)
    ]
    console.print(
        table("Top products", ["#", "product", "score"], products, "no product catalogue")
    )


def cell(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def show_comparison(console: Console, config: Settings, a: int, b: int, run: str | None) -> None:
    """Print what clusters `a` and `b` share and what sets each apart."""
    if a == b:
        raise ValueError("compare two different clusters")
    found = load(config, run, [a, b])
    compared = bh.compare_terms(found.tables["cluster_term_use"], a, b, 10)
    say = lambda text: console.print(text, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"A = {label(found, a)}\nB = {label(found, b)}\nrun {found.run_id}")
    share_rows = lambda frame: [  # noqa: E731
        [t, f"{x:.0%}", f"{y:.0%}"] for t, x, y in frame.select("term", "share_a", "share_b").rows()
    ]
    headers = ["term", "A's users using it", "B's users using it"]
    console.print(table("Shared interests", headers, share_rows(compared["shared"]), "none"))
    console.print(table("What sets A apart", headers, share_rows(compared["a"]), "none"))
    console.print(table("What sets B apart", headers, share_rows(compared["b"]), "none"))
    console.print(table("Behaviour", ["", "A", "B"], behaviour_rows(found, a, b), "—"))


def behaviour_rows(found: RunBehaviour, a: int, b: int) -> list[list[str]]:
    """Side by side: peak time, busiest day, posts per member per week, median engagement by
    kind, interactions with each other."""
    sheets = {
        c: bh.fact_sheet(c, found.tables, found.recommendations, found.min_kind_posts, 1)
        for c in (a, b)
    }

    def peak(c: int) -> str:
        top = sheets[c]["peak_times"].to_dicts()
        return f"{top[0]['day']} {top[0]['hour']:02d}:00" if top else "—"

    def weekly(c: int) -> str:
        rate = found.tables["cluster_weekly"].filter(pl.col("cluster_id") == c)["posts_per_user"]
        return f"{rate.mean():.2f}" if rate.len() else "—"

    rows = [
        [f"peak hour ({found.timezone})", peak(a), peak(b)],
        ["busiest day", sheets[a]["days"]["day"][0], sheets[b]["days"]["day"][0]],
        ["posts per member per week", weekly(a), weekly(b)],
    ]
    kinds = sorted(set(sheets[a]["kinds"]["kind"]) | set(sheets[b]["kinds"]["kind"]))
    for kind in kinds:
        rows.append(
            [f"median engagement: {kind}", *(kind_engagement(sheets[c], kind) for c in (a, b))]
        )
    matrix = found.tables["cluster_interactions"]
    for x, y, name in ((a, b, "A → B"), (b, a, "B → A")):
        pair = matrix.filter((pl.col("from_cluster") == x) & (pl.col("to_cluster") == y))
        counts = [int(pair[k].sum()) for k in bh.INTERACTIONS]
        rows.append([f"{name}: replies / mentions / reposts", " / ".join(map(str, counts)), ""])
    return rows


def kind_engagement(sheet: dict, kind: str) -> str:
    found = sheet["kinds"].filter(pl.col("kind") == kind)
    if found.height == 0:
        return "too few posts"
    row = found.row(0, named=True)
    return f"{row['median_engagement']:g} ({row['posts']} posts)"
