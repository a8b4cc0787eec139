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

from pipeline.changes import Changes, compare_runs
from pipeline.hierarchy import NO_TEXT, TOO_LITTLE_TEXT

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


def map_figure(data: ReportData):
    """An interactive plotly scatter of users, one trace per cluster, labels on the map."""
    import plotly.graph_objects as go

    order = data.clusters["cluster_id"].to_list()
    fig = go.Figure()
    for cluster_id in order:
        group = data.members.filter(pl.col("cluster_id") == cluster_id)
        if group.height == 0:
            continue
        label = label_of(data.clusters, cluster_id)
        terms = ", ".join(t for t, _ in top_terms(data.terms, cluster_id, 6))
        hover = [
            "<b>{}</b><br>cluster {}: {}<br>top terms: {}{}".format(
                html.escape(name),
                cluster_id,
                html.escape(label),
                html.escape(terms),
                f"<br>known label: {html.escape(known)}" if known else "",
            )
            for name, known in zip(group["name"], group["known_label"], strict=True)
        ]
        fig.add_trace(
            go.Scatter(
                x=group["x"].to_list(),
                y=group["y"].to_list(),
                mode="markers",
                name=html.escape(f"{cluster_id}: {label} ({group.height})"),
                text=hover,
                hoverinfo="text",
                marker={
                    "size": 9,
                    "color": color_of(cluster_id, order),
                    "opacity": [0.35 if o else 0.85 for o in group["is_outlier"]],
                    "line": {"width": 0.5, "color": "white"},
                },
            )
        )
    for row in label_anchors(data.members).iter_rows(named=True):
        label = html.escape(label_of(data.clusters, row["cluster_id"]))
        fig.add_annotation(
            x=row["x"],
            y=row["y"],
            text=f"<b>{label}</b>",
            showarrow=False,
            yanchor="bottom",
            yshift=6,
            font={"size": 13, "color": "#1b1b1b"},
            bgcolor="rgba(255,255,255,0.8)",
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
    and nothing is fetched from the network."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in scripts
    )
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "img-src data: blob:; base-uri 'none'; form-action 'none'"
    )


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
            for m in members.iter_rows(named=True)
        ]
        known = members["known_label"].drop_nulls().value_counts(sort=True).head(4)
        views.append(
            {
                "id": cluster_id,
                "label": row["label"],
                "size": row["size"],
                "n_outliers": row["n_outliers"],
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


def render_html(data: ReportData, generated_at: datetime | None = None) -> str:
    """The whole report page as one self-contained HTML string."""
    changes = data.changes()
    figure = json.loads(map_figure(data).to_json())
    init_js = Markup(
        f"(function () {{ var f = {script_json(figure)}; Plotly.newPlot('map', f.data, f.layout, "
        "{displaylogo: false, responsive: true}); })();"
    )
    plotly_js = _plotly_js()
    run = data.run
    timings = run.get("timings") or {}
    slowest = max(timings.values(), default=1.0) or 1.0
    return _template().render(
        run=run,
        settings=sorted((run.get("settings") or {}).items()),
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
        n_members=data.members.height,
        n_outliers=int(data.members["is_outlier"].sum()) if data.members.height else 0,
        plotly_js=plotly_js,
        init_js=init_js,
        csp=content_security_policy([plotly_js, init_js]),
        generated_at=(generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
    )
