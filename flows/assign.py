"""`tribes assign`: provisional clusters and recommendations for accounts that joined after the
latest completed run, without re-clustering. Only the new accounts' posts are read and embedded
(embeddings are kept by text hash, so texts seen before cost nothing); the next refresh clusters
them for real and its run no longer marks anyone provisional."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from flows.vectors import embed_missing
from pipeline import assign as assign_step
from pipeline import clean as clean_step
from pipeline import embed as embed_step
from pipeline import profile as profile_step
from pipeline import recommend as rec
from pipeline import store
from pipeline.settings import Settings

PROFILE_METHODS = ("chunk_mean", "mean")  # profiles that do not depend on the other users


@dataclass(frozen=True)
class Assigned:
    """What `assign_new_accounts` did: the run, and the accounts it placed per cluster."""

    run_id: str
    members: pl.DataFrame  # platform, user_id, n_posts, cluster_id, probability, is_outlier, x, y

    def summary(self) -> str:
        if self.members.height == 0:
            return f"no new accounts to place since run {self.run_id}"
        low = int(self.members["is_outlier"].sum())
        return (
            f"{self.members.height} new accounts placed provisionally into the clusters of run "
            f"{self.run_id}"
            + (f" ({low} low-confidence)" if low else "")
            + ": `tribes refresh` clusters them for real"
        )


def run_settings(settings: Settings, run: dict) -> Settings:
    """`settings` with the run's analysis settings (model, profile, min posts) applied."""
    used = {k: v for k, v in (run.get("settings") or {}).items() if k in Settings.model_fields}
    return settings.model_copy(update=used)


def assign_new_accounts(settings: Settings) -> Assigned:
    """Place every account the latest completed run did not cluster into its nearest cluster,
    store them marked provisional (replacing earlier provisional rows of that run)."""
    with store.open(settings) as con:
        run_id = store.latest_run_id(con)
        if run_id is None:
            raise store.StoreError("no completed run yet: run `tribes refresh` first")
        used = run_settings(settings, store.run_info(con, run_id) or {})
        centres = store.run_centroids(con, run_id)
        places = assign_step.anchors(store.run_members(con, run_id).filter(~pl.col("provisional")))
        cluster_recs = store.read_recommendations(con, run_id, "cluster")
        posts = store.posts_of_new_accounts(con, run_id)
    if centres.height == 0:
        raise store.StoreError(
            f"run {run_id} keeps no cluster centres (an older version made it): "
            "run `tribes refresh`"
        )
    if used.profile_method not in PROFILE_METHODS:
        raise store.StoreError(
            f"run {run_id} used profile_method={used.profile_method}, whose profiles depend on all "
            f"users: provisional clusters need {' or '.join(PROFILE_METHODS)}"
        )
    members = place(used, posts, centres, places)
    recs = rec.provisional_recommendations(members, cluster_recs)
    with store.open(settings, "write") as con:
        store.write_provisional(con, run_id, members, recs)
    return Assigned(run_id, members)


def place(
    settings: Settings, posts: pl.DataFrame, centres: pl.DataFrame, places: pl.DataFrame
) -> pl.DataFrame:
    """The new accounts' profiles (their posts only, embedded where new) assigned to clusters."""
    cleaned = clean_step.clean_posts(posts, settings.min_posts_per_user)
    if cleaned.height == 0:
        return assign_step.no_members()
    units = profile_step.profile_units(cleaned, settings.profile_method, settings.chunk_chars)
    model = embed_step.prepare_model(settings)
    embed_missing(settings, units.select("text_hash", "text_clean"), model, "new accounts' texts")
    with store.open(settings) as con:
        vectors = store.load_embeddings(con, model.model_id, units["text_hash"].to_list())
    users = profile_step.user_index(cleaned.select("platform", "user_id"))
    profiles = profile_step.user_profiles(units, vectors, users, settings.profile_method)
    return assign_step.assign(profiles, users, centres, places)
