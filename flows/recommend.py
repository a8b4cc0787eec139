"""The product catalogue: importing it, and the recommendations of a run for one user or cluster
(the refresh ranks them: flows/insight.py)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline import recommend as rec
from pipeline import store
from pipeline.settings import Settings


def import_catalogue(settings: Settings, path: str) -> int:
    """Validate a catalogue file completely, then make it the `products` table; returns rows."""
    products = rec.read_catalogue(Path(path)).rename({"id": "product_id"})
    with store.open(settings, "write") as con:
        return store.replace_products(con, products)


def recommendations_for(
    settings: Settings,
    user: str | None = None,
    cluster: int | None = None,
    run_id: str | None = None,
) -> tuple[str, pl.DataFrame]:
    """(title, ranked products) for one user or cluster of a run (default: the latest);
    every reason there can be none raises a one-line error."""
    if (user is None) == (cluster is None):
        raise rec.RecommendError("pass exactly one of --user NAME or --cluster ID")
    with store.open(settings) as con:
        run_id = run_id or store.latest_run_id(con)
        if run_id is None:
            raise store.StoreError("no completed run yet: run `tribes refresh` first")
        if store.run_info(con, run_id) is None:
            raise store.StoreError(f"no run {run_id!r}: `tribes runs` lists them")
        if store.scalar(con, "SELECT count(*) FROM products") == 0:
            raise rec.RecommendError(
                "no product catalogue: run `tribes products import FILE`, then `tribes refresh`"
            )
        if (
            store.scalar(con, "SELECT count(*) FROM recommendations WHERE run_id = ?", [run_id])
            == 0
        ):
            raise rec.RecommendError(
                f"run {run_id} has no recommendations (catalogue imported later?): "
                "run `tribes refresh`"
            )
        if cluster is not None:
            clusters = store.run_clusters(con, run_id)
            if cluster not in clusters["cluster_id"].to_list():
                known = ", ".join(map(str, sorted(clusters["cluster_id"].to_list())))
                raise rec.RecommendError(f"run {run_id} has no cluster {cluster} (it has {known})")
            label = clusters.filter(pl.col("cluster_id") == cluster)["label"][0]
            found = store.read_recommendations(con, run_id, "cluster", str(cluster))
            return f"cluster {cluster} ({label}) · run {run_id}", found
        matches = store.find_users(con, user or "")
        if matches.height == 0:
            raise rec.RecommendError(f"no user {user!r} in the database")
        if matches.height > 1:
            shown = ", ".join(f"{p}:{u}" for p, u in matches.select("platform", "user_id").rows())
            raise rec.RecommendError(
                f"{user!r} names {matches.height} users ({shown}): pass platform:user_id"
            )
        who = matches.row(0, named=True)
        if who["n_posts"] == 0:
            raise rec.RecommendError(f"user {user} has no posts: nothing to recommend from")
        key = f"{who['platform']}:{who['user_id']}"
        found = store.read_recommendations(con, run_id, "user", key)
        if found.height == 0:
            raise rec.RecommendError(
                f"user {user} ({who['n_posts']} posts) has no recommendations in run {run_id}: "
                f"they need {settings.min_posts_per_user} distinct posts"
            )
        return f"user {who['name']} ({key}) · run {run_id}", found
