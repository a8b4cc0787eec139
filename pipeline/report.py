"""The run report: a self-contained HTML page (plotly map inlined) and a PNG map.

Pure: a `ReportData` of frames in, an HTML string or PNG bytes out. Every string shown comes
from crawled text and is untrusted: the template autoescapes, plotly hover text is escaped
before plotly sees it, and JSON inside <script> has `<`, `>`, `&` written as \\u escapes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import polars as pl
from jinja2 import Environment, StrictUndefined
from markupsafe import Markup

from pipeline import behaviour as bh
from pipeline.changes import Changes, compare_runs
from pipeline.hierarchy import NO_TEXT, TOO_LITTLE_TEXT
from pipeline.people import per_person

# Okabe-Ito and Tableau 10: distinguishable, colour-blind friendly first
PALETTE = [
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
    "#4E79A7",
    "#F28E2B",
    "#59A14F",
    "#E15759",
    "#B07AA1",
    "#76B7B2",
    "#EDC948",
    "#FF9DA7",
    "#9C755F",
    "#BAB0AC",
]
NOISE_COLOR = "#9e9e9e"
MEMBER_CHIPS = 24
MEMBER_ROWS = 500  # per cluster in the page; `tribes recommend --user` covers the rest


@dataclass(frozen=True)
class ReportData:
    """Everything one report shows (see store.run_info, run_members, run_clusters, run_terms)."""

    run: dict[str, Any]
    members: pl.DataFrame
    clusters: pl.DataFrame
    terms: pl.DataFrame
    recommendations: pl.DataFrame
    previous_run_id: str | None = None
    previous_members: pl.DataFrame | None = None
    previous_clusters: pl.DataFrame | None = None
    n_products: int = 0
    behaviour: dict[str, pl.DataFrame] | None = None  # store.read_behaviour
    timezone: str = "UTC"  # of the behaviour tables' weekdays and hours
    min_kind_posts: int = 5
    groups: pl.DataFrame | None = None  # the coarse level (store.run_clusters(..., "coarse"))
    left_out: dict[str, int] = field(default_factory=dict)  # store.left_out

    def changes(self) -> Changes:
        """How this run's clusters differ from the previous completed run's."""
        return compare_runs(
            self.members,
            self.clusters,
            self.previous_run_id,
            self.previous_members,
            self.previous_clusters,
        )


# ---------------------------------------------------------------- helpers


def color_of(cluster_id: int, order: list[int]) -> str:
    """The cluster's colour: by its position in `order` (largest first); grey for noise (< 0)."""
    if cluster_id < 0:
        return NOISE_COLOR
    return PALETTE[order.index(cluster_id) % len(PALETTE)]


def script_json(value: object) -> Markup:
    """JSON safe to place inside <script>: no `</script>`, `<!--` or line separators survive."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, default=str)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return Markup(text)


def top_terms(terms: pl.DataFrame, cluster_id: int, n: int = 10) -> list[tuple[str, float]]:
    chosen = terms.filter(pl.col("cluster_id") == cluster_id).sort("rank").head(n)
    return list(zip(chosen["term"].to_list(), chosen["weight"].to_list(), strict=True))


def label_of(clusters: pl.DataFrame, cluster_id: int) -> str:
    found = clusters.filter(pl.col("cluster_id") == cluster_id)["label"]
    return found[0] if found.len() else f"cluster {cluster_id}"


# ---------------------------------------------------------------- the map


def label_anchors(members: pl.DataFrame) -> pl.DataFrame:
    """Where each cluster's label goes: centred on its confident members, at the height below
    which 85% of them lie, so one member far up does not carry the label away from the rest."""
    confident = members.filter(~pl.col("is_outlier"))
    use = confident if confident.height else members
    return (
        use.group_by("cluster_id")
        .agg(pl.col("x").median(), pl.col("y").quantile(0.85, "linear"))
        .sort("cluster_id")
    )


LOW_CONFIDENCE = "low confidence: outlier or weak membership (faded, cluster colour)"
PROVISIONAL = "provisional: joined after this run, nearest cluster (◇, until the next refresh)"
LABEL_RISE_PX = (36, 58, 80)  # label heights above their anchor, in turn, so neighbours differ


def hover_names(group: pl.DataFrame) -> list[list[str]]:
    """Each point's [name, known-label line], HTML-escaped for plotly (the search box compares
    escaped names, so the raw text never reaches the page's markup)."""
    return [
        [html.escape(name), f"<br>known label: {html.escape(known)}" if known else ""]
        for name, known in zip(group["name"], group["known_label"], strict=True)
    ]


def points(group: pl.DataFrame) -> dict[str, np.ndarray]:
    """The map coordinates as float32 (plotly writes them compactly, base64)."""
    return {c: group[c].cast(pl.Float32).to_numpy() for c in ("x", "y")}


def clustered(members: pl.DataFrame) -> pl.DataFrame:
    """The members the run clustered itself (not those `tribes assign` placed since)."""
    return members.filter(~pl.col("provisional"))


def cluster_trace(data: ReportData, cluster_id: int, group: pl.DataFrame, color: str):
    """One cluster's confident members as WebGL points: the cluster's legend entry."""
    import plotly.graph_objects as go

    label = label_of(data.clusters, cluster_id)
    terms = ", ".join(t for t, _ in top_terms(data.terms, cluster_id, 6))
    size = clustered(data.members).filter(pl.col("cluster_id") == cluster_id).height
    return go.Scattergl(
        **points(group),
        mode="markers",
        name=html.escape(f"{cluster_id}: {label} ({size})"),
        customdata=hover_names(group),
        hovertemplate=f"<b>%{{customdata[0]}}</b><br>cluster {cluster_id}: "
        f"{html.escape(label)}<br>top terms: {html.escape(terms)}%{{customdata[1]}}<extra></extra>",
        marker={"size": 7, "color": color, "opacity": 0.85},
    )


def mixed_trace(data: ReportData, order: list[int], group: pl.DataFrame, name: str, how: str):
    """Users of several clusters in one trace (one legend entry), each in its cluster's colour;
    `how` is said after the cluster in the hover text."""
    import plotly.graph_objects as go

    where = [
        f"<br>cluster {c}: {html.escape(label_of(data.clusters, c))} ({how}, {p:.2f})"
        for c, p in zip(group["cluster_id"], group["probability"], strict=True)
    ]
    return go.Scattergl(
        **points(group),
        mode="markers",
        name=name,
        customdata=[[n, w + k] for (n, k), w in zip(hover_names(group), where, strict=True)],
        hovertemplate="<b>%{customdata[0]}</b>%{customdata[1]}<extra></extra>",
        marker={"size": 6, "color": [color_of(c, order) for c in group["cluster_id"]]},
    )


def low_confidence_trace(data: ReportData, order: list[int]):
    """Every outlier in one faded trace, coloured by its cluster: one legend entry explains them."""
    low = clustered(data.members).filter(pl.col("is_outlier"))
    trace = mixed_trace(data, order, low, LOW_CONFIDENCE, "low confidence")
    trace.marker.opacity = 0.35
    return trace


def provisional_trace(data: ReportData, order: list[int]):
    """Accounts placed by `tribes assign` since the run, as open diamonds in their cluster's
    colour: one legend entry."""
    trace = mixed_trace(
        data, order, data.members.filter(pl.col("provisional")), PROVISIONAL, "provisional"
    )
    trace.marker.update(symbol="diamond-open", size=9, line={"width": 1.5})
    return trace


def map_figure(data: ReportData):
    """The interactive map: WebGL points (fluid at 100,000 users), one legend entry per cluster
    plus one for low-confidence users, and labels set above their cluster with an arrow."""
    import plotly.graph_objects as go

    order = data.clusters["cluster_id"].to_list()
    fig = go.Figure()
    for cluster_id in order:
        group = clustered(data.members).filter(
            (pl.col("cluster_id") == cluster_id) & ~pl.col("is_outlier")
        )
        if group.height:
            fig.add_trace(cluster_trace(data, cluster_id, group, color_of(cluster_id, order)))
    if clustered(data.members)["is_outlier"].any():
        fig.add_trace(low_confidence_trace(data, order))
    if data.members["provisional"].any():
        fig.add_trace(provisional_trace(data, order))
    for i, row in enumerate(label_anchors(clustered(data.members)).iter_rows(named=True)):
        label = html.escape(label_of(data.clusters, row["cluster_id"]))
        fig.add_annotation(
            x=row["x"],
            y=row["y"],
            text=f"<b>{label}</b>",
            showarrow=True,
            arrowhead=0,
            arrowwidth=1.2,
            arrowcolor="#59636e",
            ax=0,
            ay=-LABEL_RISE_PX[i % len(LABEL_RISE_PX)],
            font={"size": 13, "color": "#1b1b1b"},
            bgcolor="rgba(255,255,255,0.85)",
            bordercolor=color_of(row["cluster_id"], order),
            borderwidth=1.5,
            borderpad=3,
        )
    fig.update_layout(
        template="plotly_white",
        height=620,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.01, "itemsizing": "constant"},
        xaxis={"visible": False},
        yaxis={"visible": False},
        hoverlabel={"align": "left"},
        dragmode="pan",
    )
    return fig


def spread_labels(fig, labels: list, gap_px: float = 7.0, max_moves: int = 100) -> None:
    """Move map labels down, top one first, until no two boxes overlap (display coordinates)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed = []
    for label in sorted(labels, key=lambda a: -a.get_window_extent(renderer).y1):
        for _ in range(max_moves):
            box = label.get_window_extent(renderer).padded(gap_px)
            hit = next((p for p in placed if box.overlaps(p)), None)
            if hit is None:
                break
            x, y = label.xyann
            label.xyann = (x, y - (box.y1 - hit.y0 + 1) * 72 / fig.dpi)
        placed.append(label.get_window_extent(renderer).padded(gap_px))


def render_png(data: ReportData, dpi: int = 130) -> bytes:
    """A static map of users coloured by cluster with labels placed on it, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = data.clusters["cluster_id"].to_list()
    fig, ax = plt.subplots(figsize=(11, 7.5), dpi=dpi)
    try:
        for cluster_id in order:
            group = data.members.filter(pl.col("cluster_id") == cluster_id)
            alpha = np.where(group["is_outlier"].to_numpy(), 0.3, 0.85)
            ax.scatter(
                group["x"].to_numpy(),
                group["y"].to_numpy(),
                s=28,
                color=color_of(cluster_id, order),
                alpha=alpha,
                linewidths=0.4,
                edgecolors="white",
                label=f"{label_of(data.clusters, cluster_id)} ({group.height})",
            )
        labels = []
        for row in label_anchors(data.members).iter_rows(named=True):
            annotation = ax.annotate(
                label_of(data.clusters, row["cluster_id"]),
                (row["x"], row["y"]),
                xytext=(0, 7),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=11,
                fontweight="bold",
                parse_math=False,
                bbox={
                    "boxstyle": "round,pad=0.3",
                    "facecolor": "white",
                    "alpha": 0.85,
                    "edgecolor": color_of(row["cluster_id"], order),
                },
            )
            labels.append(annotation)
        ax.set_title(
            f"Tribes · run {data.run['run_id']}: {data.members.height} users in "
            f"{len(order)} clusters",
            fontsize=12,
            loc="left",
        )
        ax.set_axis_off()
        ax.margins(0.08)
        legend = ax.legend(
            loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, frameon=False, markerscale=1.2
        )
        for text in legend.get_texts():
            text.set_parse_math(False)
        fig.tight_layout()
        spread_labels(fig, labels)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", facecolor="white")
    finally:
        plt.close(fig)
    return buffer.getvalue()


# ---------------------------------------------------------------- the page


@cache
def _template():
    source = resources.files("pipeline").joinpath("report.html.j2").read_text(encoding="utf-8")
    env = Environment(
        autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["num"] = lambda v, digits=3: "" if v is None else f"{v:.{digits}g}"
    env.filters["when"] = lambda v: "—" if v is None else f"{v:%Y-%m-%d %H:%M:%S}"
    return env.from_string(source)


def content_security_policy(scripts: list[str]) -> str:
    """Only our own inline scripts (by hash) may run: an injected <script> or onerror= cannot,
    and nothing is fetched from the network. 'unsafe-eval' lets plotly's WebGL layer (regl)
    compile its drawing code; only those hashed scripts can reach eval."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in scripts
    )
    return (
        f"default-src 'none'; script-src {hashes} 'unsafe-eval'; style-src 'unsafe-inline'; "
        "img-src data: blob:; base-uri 'none'; form-action 'none'"
    )


@cache
def _map_script() -> str:
    return resources.files("pipeline").joinpath("report_map.js").read_text(encoding="utf-8")


@cache
def _plotly_js() -> Markup:
    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs()
    if "</script" in bundle.lower():  # never expected; would end the <script> element early
        raise RuntimeError("plotly.js bundle cannot be inlined safely")
    return Markup(bundle)


def cluster_views(data: ReportData, changes: Changes) -> list[dict[str, Any]]:
    """The per-cluster blocks of the page, largest cluster first."""
    order = data.clusters["cluster_id"].to_list()
    recs = data.recommendations
    user_top = (
        {}
        if recs.height == 0
        else {
            r["scope_id"]: r
            for r in recs.filter((pl.col("scope") == "user") & (pl.col("rank") == 1)).iter_rows(
                named=True
            )
        }
    )
    views = []
    for row in data.clusters.iter_rows(named=True):
        cluster_id = row["cluster_id"]
        terms = top_terms(data.terms, cluster_id)
        heaviest = max((w for _, w in terms), default=1.0) or 1.0
        members = data.members.filter(pl.col("cluster_id") == cluster_id)
        member_rows = [
            {**m, "top": user_top.get(f"{m['platform']}:{m['user_id']}")}
            for m in per_person(members).iter_rows(named=True)
        ]
        known = members["known_label"].drop_nulls().value_counts(sort=True).head(4)
        views.append(
            {
                "id": cluster_id,
                "label": row["label"],
                "size": row["size"],
                "n_outliers": row["n_outliers"],
                "n_provisional": int(members["provisional"].sum()),
                "color": color_of(cluster_id, order),
                "terms": [
                    {"term": t, "weight": w, "pct": round(100 * w / heaviest, 1)} for t, w in terms
                ],
                "posts": row["representative_posts"] or [],
                "members": member_rows[:MEMBER_ROWS],
                "chips": member_rows[:MEMBER_CHIPS],
                "known": list(
                    zip(known["known_label"].to_list(), known["count"].to_list(), strict=True)
                )
                if known.height
                else [],
                "change": changes.by_cluster.get(cluster_id),
                "recs": []
                if recs.height == 0
                else recs.filter(
                    (pl.col("scope") == "cluster") & (pl.col("scope_id") == str(cluster_id))
                )
                .sort("rank")
                .to_dicts(),
            }
        )
    return views


def refresh_time(run: dict) -> str:
    """A run's wall time, and whether its work came from the cache (store.run_info): e.g.
    `3.4 s (cached; first computed in 41.0 s)`."""
    took = "—" if run.get("seconds") is None else f"{run['seconds']:.1f} s"
    if not run.get("cached"):
        return took
    if run.get("first_computed_seconds") is not None:
        return f"{took} (cached; first computed in {run['first_computed_seconds']:.1f} s)"
    return f"{took} ({', '.join(run['cached'])} cached)"


def group_views(data: ReportData) -> list[dict[str, Any]]:
    """The coarse groups, largest first, each with its sub-groups (fine clusters) largest first."""
    if data.groups is None or data.groups.height == 0:
        return []
    order = data.clusters["cluster_id"].to_list()
    return [
        {
            "id": group["cluster_id"],
            "label": group["label"],
            "size": group["size"],
            "n_outliers": group["n_outliers"],
            "subgroups": [
                {**fine, "color": color_of(fine["cluster_id"], order)}
                for fine in data.clusters.filter(pl.col("parent_id") == group["cluster_id"])
                .select("cluster_id", "label", "size")
                .iter_rows(named=True)
            ],
        }
        for group in data.groups.iter_rows(named=True)
    ]


def render_html(
    data: ReportData, generated_at: datetime | None = None, figure: dict | None = None
) -> str:
    """The whole report page as one self-contained HTML string; `figure` is the map as plotly
    JSON (default: `map_figure`; bench/map.py passes its SVG twin as the baseline)."""
    changes = data.changes()
    figure = figure or json.loads(map_figure(data).to_json())
    init_js = Markup(_map_script().replace("FIGURE", str(script_json(figure)), 1))
    plotly_js = _plotly_js()
    behaviour, figures = behaviour_views(data)
    behaviour_js = figures_js(figures)
    run = data.run
    timings = run.get("timings") or {}
    slowest = max(timings.values(), default=1.0) or 1.0
    return _template().render(
        run=run,
        settings=sorted((run.get("settings") or {}).items()),
        refresh_time=refresh_time(run),
        timings=[
            {"stage": k, "seconds": v, "pct": round(100 * v / slowest, 1)}
            for k, v in timings.items()
        ],
        clusters=cluster_views(data, changes),
        groups=group_views(data),
        n_placed=data.left_out.get(TOO_LITTLE_TEXT, 0),
        n_not_clustered=data.left_out.get(NO_TEXT, 0),
        changes=changes,
        n_products=data.n_products,
        n_members=clustered(data.members).height,
        n_outliers=int(clustered(data.members)["is_outlier"].sum()),
        n_provisional=int(data.members["provisional"].sum()),
        plotly_js=plotly_js,
        init_js=init_js,
        behaviour=behaviour,
        behaviour_js=behaviour_js,
        csp=content_security_policy([plotly_js, init_js, behaviour_js]),
        generated_at=(generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
    )


# ---------------------------------------------------------------- how to reach each cluster


def nearest_clusters(term_use: pl.DataFrame) -> dict[int, int]:
    """Each cluster's most similar other cluster: cosine of their users_share over terms."""
    if term_use.height == 0 or term_use["cluster_id"].n_unique() < 2:
        return {}
    wide = term_use.pivot(on="term", index="cluster_id", values="users_share").fill_null(0)
    ids = wide["cluster_id"].to_list()
    matrix = wide.drop("cluster_id").to_numpy()
    unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return {cluster_id: ids[int(similarity[i].argmax())] for i, cluster_id in enumerate(ids)}


def heatmap_figure(activity: pl.DataFrame, timezone: str) -> dict[str, Any]:
    """A cluster's posts by weekday (rows) and hour (columns) as a plotly heatmap."""
    grid = np.zeros((7, 24), dtype=int)
    for weekday, hour, posts in activity.select("weekday", "hour", "posts").iter_rows():
        grid[weekday - 1, hour] = posts
    return {
        "data": [
            {
                "type": "heatmap",
                "z": grid.tolist(),
                "x": [f"{h:02d}" for h in range(24)],
                "y": list(bh.WEEKDAYS),
                "colorscale": "Blues",
                "hovertemplate": "%{y} %{x}:00 · %{z} posts<extra></extra>",
            }
        ],
        "layout": {
            "height": 260,
            "margin": {"l": 40, "r": 10, "t": 10, "b": 40},
            "xaxis": {"title": {"text": f"hour ({html.escape(timezone)})"}},
            "yaxis": {"autorange": "reversed"},
        },
    }


def engagement_figure(kinds: pl.DataFrame) -> dict[str, Any]:
    """Median likes, reposts and replies per post kind, as grouped bars."""
    names = [html.escape(k) for k in kinds["kind"].to_list()]
    return {
        "data": [
            {
                "type": "bar",
                "name": count,
                "x": names,
                "y": [0 if v is None else v for v in kinds[f"median_{count}"].to_list()],
                "customdata": kinds["posts"].to_list(),
                "hovertemplate": f"%{{x}}: median %{{y}} {count} (%{{customdata}} posts)"
                "<extra></extra>",
            }
            for count in ("likes", "reposts", "replies")
        ],
        "layout": {
            "height": 260,
            "barmode": "group",
            "margin": {"l": 40, "r": 10, "t": 10, "b": 40},
            "legend": {"orientation": "h"},
        },
    }


def interaction_figure(data: ReportData, matrix: pl.DataFrame) -> dict[str, Any]:
    """Replies + mentions + reposts from each cluster (rows) to each cluster or outside."""
    ids = data.clusters["cluster_id"].to_list()
    targets = [*ids, bh.OUTSIDE]
    grid = np.zeros((len(ids), len(targets)), dtype=int)
    total = matrix.with_columns(n=pl.col("replies") + pl.col("mentions") + pl.col("reposts"))
    for source, target, n in total.select("from_cluster", "to_cluster", "n").iter_rows():
        if source in ids and target in targets:
            grid[ids.index(source), targets.index(target)] = n
    names = [html.escape(f"{c}: {label_of(data.clusters, c)}") for c in ids]
    return {
        "data": [
            {
                "type": "heatmap",
                "z": grid.tolist(),
                "x": [*names, "outside"],
                "y": names,
                "colorscale": "Oranges",
                "hovertemplate": "%{y} → %{x}: %{z}<extra></extra>",
            }
        ],
        "layout": {
            "height": 200 + 28 * len(ids),
            "margin": {"l": 200, "r": 10, "t": 10, "b": 160},
            "yaxis": {"autorange": "reversed"},
            "xaxis": {"tickangle": -40},
        },
    }


def behaviour_views(data: ReportData) -> tuple[dict[str, Any], dict[str, Any]]:
    """The 'how to reach each cluster' part of the page and its plotly figures by element id;
    empty when the run has no behaviour tables."""
    tables = data.behaviour
    if not tables or tables["cluster_activity"].height + tables["cluster_engagement"].height == 0:
        return {"clusters": [], "interactions": False}, {}
    figures: dict[str, Any] = {}
    nearest = nearest_clusters(tables["cluster_term_use"])
    order = data.clusters["cluster_id"].to_list()
    names = data.members.select("platform", "user_id", "name")
    views = []
    for cluster_id in order:
        sheet = bh.fact_sheet(cluster_id, tables, data.recommendations, data.min_kind_posts, top=3)
        activity = tables["cluster_activity"].filter(pl.col("cluster_id") == cluster_id)
        figures[f"heat-{cluster_id}"] = heatmap_figure(activity, data.timezone)
        if sheet["kinds"].height:
            figures[f"kinds-{cluster_id}"] = engagement_figure(sheet["kinds"])
        other = nearest.get(cluster_id)
        views.append(
            {
                "id": cluster_id,
                "label": label_of(data.clusters, cluster_id),
                "color": color_of(cluster_id, order),
                "peaks": sheet["peak_times"].to_dicts(),
                "days": sheet["days"].filter(pl.col("posts") > 0).head(3).to_dicts(),
                "kinds": sheet["kinds"].to_dicts(),
                "few_kinds": sheet["few_kinds"],
                "central": named(sheet["central"], names),
                "bridges": named(sheet["bridges"], names),
                "rising": sheet["rising"].to_dicts(),
                "products": sheet["products"].to_dicts(),
                "compare": None
                if other is None
                else {
                    "other": other,
                    "other_label": label_of(data.clusters, other),
                    **{
                        side: frame["term"].to_list()
                        for side, frame in bh.compare_terms(
                            tables["cluster_term_use"], cluster_id, other, 6
                        ).items()
                    },
                },
            }
        )
    interactions = tables["cluster_interactions"]
    if interactions.height:
        figures["interactions"] = interaction_figure(data, interactions)
    return {
        "clusters": views,
        "interactions": bool(interactions.height),
        "timezone": data.timezone,
        "min_kind_posts": data.min_kind_posts,
    }, figures


def named(accounts: pl.DataFrame, names: pl.DataFrame) -> list[dict[str, Any]]:
    """`accounts` rows with each one's display name (`name`)."""
    return (
        accounts.join(names, on=["platform", "user_id"], how="left", maintain_order="left")
        .with_columns(name=pl.coalesce("name", "user_id"))
        .to_dicts()
    )


def figures_js(figures: dict[str, Any]) -> Markup:
    """The script drawing `figures` (element id → plotly figure) where their elements exist."""
    return Markup(
        f"(function () {{ var figs = {script_json(figures)}; for (var id in figs) {{ "
        "var el = document.getElementById(id); if (el) Plotly.newPlot(el, figs[id].data, "
        "figs[id].layout, {displaylogo: false, responsive: true}); } })();"
    )
