"""The refresh flow: clean → embed → profile → reduce → cluster → hierarchy → label → behaviour
→ publish.

Tasks hand each other small values (the database path, the data version, file paths in the
state folder), never big arrays. Each stage is declared once (`Stage`, flows/cache.py): its
artifact's file name is a digest of everything it depends on, so an unchanged refresh finds its
work done, and Prefect, caching on that name, shows it as Cached. Each task calls pipeline
steps only. Artifacts are written atomically, and one found unreadable is recomputed. One
refresh of a database runs at a time: a second one waits for the first, then reuses its work.
"""

from __future__ import annotations

import fcntl
import io
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
from prefect import flow, get_run_logger, task

from flows import lifetime
from flows.artifacts import show_in_ui
from flows.cache import Stage
from flows.files import write_atomically
from flows.inputs import run_inputs
from flows.insight import insight
from flows.notify import notify_failure
from flows.retention import keep_latest_runs
from flows.vectors import embed_missing
from pipeline import assign as assign_step
from pipeline import clean as clean_step
from pipeline import cluster as cluster_step
from pipeline import embed as embed_step
from pipeline import progress, store
from pipeline import reduce as reduce_step
from pipeline.settings import RefreshOptions, Settings, load_settings
from pipeline.store import writing

lifetime.tie_temporary_server()


def transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry a failed task unless its error is one a retry cannot fix (bad model, bad data)."""
    try:
        state.result()
    except (embed_step.ModelError, store.DiskFull, ValueError):
        return False
    except Exception:
        return True
    return True


def stage_task(stage: Stage, retries: int, retry_delay_seconds: float = 0):
    """A stage's task (`Stage.task`), retried unless its error is one a retry cannot fix."""
    return stage.task(
        retries=retries, retry_condition_fn=transient, retry_delay_seconds=retry_delay_seconds
    )


# Each stage once: the task inputs and settings its result depends on, the files it writes.
CLEAN = Stage(  # the companion: the posts of users with too few to cluster
    "clean", ("version",), ("min_posts_per_user",), "parquet", companion=".few.parquet"
)
PEOPLE = Stage("people", ("clean_path", "links"), ("auto_link_min_score",), "parquet")
EMBED = Stage("embed", ("clean_path", "model"), ("profile_method", "chunk_chars"), "parquet")
PROFILE = Stage(  # activity_version: "" while behaviour_weight is 0 (the words alone)
    "profile",
    ("clean_path", "units_path", "model_id", "people_path", "activity_version"),
    (
        "profile_method",
        "chunk_chars",
        "profile_remove_components",
        "random_state",
        "behaviour_weight",
        "rhythm_timezone",
    ),
    "npz",
    companion=".users.parquet",
)
REDUCE = Stage(
    "reduce",
    ("profile_path",),
    ("umap_n_components", "umap_n_neighbors", "umap_min_dist", "random_state", "consensus_runs"),
    "npz",
)
CLUSTER = Stage(
    "cluster", ("profile_path", "reduce_path"), ("min_cluster_size", "min_samples"), "parquet"
)
HIERARCHY = Stage(
    "hierarchy",
    ("clean_path", "profile_path", "cluster_path", "model"),
    ("clusters", "profile_method", "chunk_chars", "profile_remove_components", "random_state"),
    "parquet",
)
LABEL = Stage(
    "label",
    ("clean_path", "units_path", "model_id", "cluster_path"),
    ("top_terms", "label_terms", "representative_posts"),
    "parquet",
    companion=".terms.parquet",
)
BEHAVIOUR = Stage(  # keyed by the run's memberships and terms and the activity data version
    "behaviour",
    ("clean_path", "cluster_path", "label_path", "activity_version"),
    ("timezone",),
    "parquet",
)
TOP_ACCOUNTS = 10  # central and bridging accounts kept per cluster


@contextmanager
def open_db(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """The database, waiting for another writer; a full disk raises DiskFull naming it."""
    with (
        writing(settings.db),
        store.open(settings, "write") as con,
    ):
        yield con


@task(retries=2, retry_condition_fn=transient, retry_delay_seconds=2, task_run_name="begin run")
def begin_run(settings: Settings) -> tuple[str, str]:
    """Record a new run and return (run_id, data_version)."""
    with open_db(settings) as con:
        version = store.data_version(con)
        if version.startswith("0-"):
            raise ValueError(f"database {settings.db} holds no posts: run `tribes import` first")
        store.abandon_stale(con)
        inputs = run_inputs(settings, con)
        return store.start_run(con, settings.analysis_fingerprint(), version, inputs), version


@stage_task(CLEAN, retries=2, retry_delay_seconds=2)
def clean(settings: Settings, out: str, version: str) -> str:
    """The posts of data version `version`, cleaned; those of users with fewer than
    min_posts_per_user in the companion file."""
    if not CLEAN.done(out):
        with open_db(settings) as con:
            posts = store.read_posts(con)
        cleaned = clean_step.clean_posts(posts)
        enough = clean_step.enough_posts(settings.min_posts_per_user)
        write_atomically(CLEAN.companion_of(out), cleaned.filter(~enough).write_parquet)
        write_atomically(Path(out), cleaned.filter(enough).write_parquet)
    return out


@task(retries=2, retry_condition_fn=transient, retry_delay_seconds=2)
def links_version(settings: Settings) -> str:
    """The fingerprint of the people links (a stage input: new links, new people)."""
    with open_db(settings) as con:
        return store.links_version(con)


@stage_task(PEOPLE, retries=2, retry_delay_seconds=2)
def people(settings: Settings, out: str, clean_path: str, links: str) -> str:
    """Each cleaned account's person (platform, user_id, person_id) from the links."""
    if not PEOPLE.done(out):
        from pipeline import people as people_step  # scikit-learn: only when computing

        accounts = pl.read_parquet(clean_path, columns=["platform", "user_id"]).unique()
        with open_db(settings) as con:
            stored = store.read_links(con)
        merging = people_step.merging_links(stored, settings.auto_link_min_score)
        persons = people_step.person_of(accounts, merging)
        write_atomically(Path(out), persons.write_parquet)
    return out


@stage_task(EMBED, retries=2, retry_delay_seconds=5)
def embed(settings: Settings, out: str, clean_path: str, model: embed_step.ModelSpec) -> str:
    """Embed every profile unit (chunk or post) with no stored vector; `out` lists the units.

    Each text is embedded once: a post is embedded as part of its chunk, never again alone.
    """
    done = EMBED.done(out)
    units = pl.read_parquet(out if done else clean_path)
    if not done:
        from pipeline import profile as profile_step  # scikit-learn: only when computing

        units = profile_step.profile_units(units, settings.profile_method, settings.chunk_chars)
    what = "post chunks" if settings.profile_method == "chunk_mean" else "posts"
    embed_missing(settings, units.select("text_hash", "text_clean"), model, what)
    if not done:
        write_atomically(Path(out), units.write_parquet)
    return out


def load_units(settings: Settings, units_path: str, model_id: str):
    """The profile units and their vectors, row for row."""
    units = pl.read_parquet(units_path)
    with open_db(settings) as con:
        vectors = store.load_embeddings(con, model_id, units["text_hash"].to_list())
    return units, vectors


@stage_task(PROFILE, retries=1)
def profile(
    settings: Settings,
    out: str,
    clean_path: str,
    units_path: str,
    model_id: str,
    people_path: str,
    activity_version: str,
) -> str:
    """One profile per person, from all posts of their accounts (each person as its first
    account, with its accounts, row for row, in the companion file), and its behaviour signals
    (pipeline/signals.py; none while behaviour_weight is 0)."""
    if not PROFILE.done(out):
        from pipeline import people as people_step
        from pipeline import profile as profile_step  # scikit-learn: only when computing

        persons = pl.read_parquet(people_path)
        accounts = profile_step.user_index(
            pl.read_parquet(clean_path, columns=["platform", "user_id"])
        )
        users = people_step.person_index(accounts, persons)
        units, vectors = load_units(settings, units_path, model_id)
        profiles = profile_step.user_profiles(
            people_step.as_persons(units, persons),
            vectors,
            users,
            settings.profile_method,
            settings.profile_remove_components,
            settings.random_state,
        )
        signals = person_signals(settings, persons, users)
        write_atomically(PROFILE.companion_of(out), users.write_parquet)
        write_atomically(Path(out), lambda temp: np.savez(temp, profiles=profiles, signals=signals))
    return out


def person_signals(settings: Settings, persons: pl.DataFrame, users: pl.DataFrame) -> np.ndarray:
    """Each person's behaviour signals (row i: person i), from all posts of their accounts."""
    from pipeline import people as people_step
    from pipeline import signals as signals_step  # networkx, scikit-learn: when computing

    if not settings.behaviour_weight:
        return signals_step.no_signals(users.height)
    with open_db(settings) as con:
        activity, mentions = store.read_post_activity(con), store.read_mentions(con)
    return signals_step.behaviour_signals(
        people_step.as_persons(activity, persons),
        people_step.as_persons(mentions, persons),
        users,
        settings.timezone,
        settings.behaviour_weight,
    )


def profile_activity_version(settings: Settings) -> str:
    """What the profile reads of the activity data: its version, or nothing while
    behaviour_weight is 0 (new likes or replies then leave the profiles and clusters cached)."""
    return current_activity_version(settings) if settings.behaviour_weight else ""


@stage_task(REDUCE, retries=1)
def reduce(settings: Settings, out: str, profile_path: str) -> str:
    """The profiles' consensus UMAP spaces and the map's plane."""
    if not REDUCE.done(out):
        from pipeline.signals import with_behaviour  # scikit-learn: only when computing

        profiles = np.load(profile_path)
        spaces, plane = reduce_step.consensus_spaces(
            with_behaviour(profiles["profiles"], profiles["signals"]),
            settings.umap_n_components,
            settings.umap_n_neighbors,
            settings.umap_min_dist,
            settings.random_state,
            settings.consensus_runs,
        )
        write_atomically(Path(out), lambda temp: np.savez(temp, spaces=spaces, plane=plane))
    return out


@stage_task(CLUSTER, retries=1)
def cluster(settings: Settings, out: str, profile_path: str, reduce_path: str) -> str:
    """Each person's cluster (consensus of the spaces) and place on the map (one row per person,
    with its person_id and accounts)."""
    if not CLUSTER.done(out):
        reduced = np.load(reduce_path)
        result = cluster_step.consensus_cluster(
            list(reduced["spaces"]), settings.min_cluster_size, settings.min_samples
        )
        users = pl.read_parquet(PROFILE.companion_of(profile_path))
        members = cluster_step.members(users, result).with_columns(
            x=pl.Series(reduced["plane"][:, 0].astype(float)),
            y=pl.Series(reduced["plane"][:, 1].astype(float)),
        )
        write_atomically(Path(out), members.write_parquet)
    return out


@stage_task(HIERARCHY, retries=1)
def hierarchy(
    settings: Settings,
    out: str,
    clean_path: str,
    profile_path: str,
    cluster_path: str,
    model: embed_step.ModelSpec,
) -> str:
    """The fine clusters (split when `clusters` asks for more), the users with too few posts to
    cluster placed in their nearest one (flagged), and each fine cluster's coarse `group_id`;
    one row per account, with its person_id (a person's accounts share the rest)."""
    if not HIERARCHY.done(out):
        from pipeline import hierarchy as hierarchy_step  # scikit-learn: only when computing
        from pipeline import people as people_step

        members = pl.read_parquet(cluster_path)  # one row per person
        profiles = np.load(profile_path)["profiles"]
        found = hierarchy_step.levels(
            profiles, members["cluster_id"].to_numpy(), settings.clusters, settings.random_state
        )
        members = members.with_columns(cluster_id=pl.Series(found.labels, dtype=pl.Int32))
        persons = members.select("person_id", "accounts")  # row i: person i (profile i)
        placed = hierarchy_step.place_users(
            members.drop("person_id", "accounts"),
            profiles,
            *few_post_users(settings, clean_path, model),
        )
        placed = placed.with_columns(
            group_id=pl.Series(found.parent[placed["cluster_id"].to_numpy()], dtype=pl.Int32)
        )
        accounts = people_step.spread_to_accounts(people_step.with_persons(placed, persons))
        write_atomically(Path(out), accounts.write_parquet)
    return out


def few_post_users(
    settings: Settings, clean_path: str, model: embed_step.ModelSpec
) -> tuple[pl.DataFrame, np.ndarray]:
    """The users with too few posts to cluster (platform, user_id, n_posts) and their profiles,
    made as every profile is."""
    from pipeline import profile as profile_step  # scikit-learn: only when computing

    posts = pl.read_parquet(CLEAN.companion_of(clean_path))
    users = profile_step.user_index(posts.select("platform", "user_id"))
    if users.height == 0:
        return users, np.zeros((0, 0), dtype=np.float32)
    units = profile_step.profile_units(posts, settings.profile_method, settings.chunk_chars)
    embed_missing(settings, units.select("text_hash", "text_clean"), model, "few users' posts")
    with open_db(settings) as con:
        vectors = store.load_embeddings(con, model.model_id, units["text_hash"].to_list())
    profiles = profile_step.user_profiles(
        units,
        vectors,
        users,
        settings.profile_method,
        settings.profile_remove_components,
        settings.random_state,
    )
    return users, profiles


@stage_task(LABEL, retries=1)
def label(
    settings: Settings,
    out: str,
    clean_path: str,
    units_path: str,
    model_id: str,
    cluster_path: str,
) -> str:
    """c-TF-IDF terms (the companion file), labels, example users and representative posts per
    fine cluster and per coarse group (`cluster_path`: the hierarchy stage's members)."""
    if not LABEL.done(out):
        from pipeline import hierarchy as hierarchy_step  # scikit-learn: only when computing
        from pipeline import label as label_step
        from pipeline import people as people_step

        members = pl.read_parquet(cluster_path)
        levels = [members, members.with_columns(cluster_id=pl.col("group_id"))]  # fine, coarse
        posts = pl.read_parquet(clean_path, columns=["platform", "user_id", "text_clean"])
        terms = [label_step.member_terms(level, posts, settings.top_terms) for level in levels]
        del posts  # freed before the vectors come in
        units, vectors = load_units(settings, units_path, model_id)
        with open_db(settings) as con:
            names = store.read_users(con).select("platform", "user_id", "display_name")
        described = [
            label_step.describe_clusters(
                people_step.one_per_person(level),
                level_terms,
                people_step.as_persons(units, members),
                vectors,
                settings.label_terms,
                settings.representative_posts,
                people_step.person_display_names(members, names),
            )
            for level, level_terms in zip(levels, terms, strict=True)
        ]
        parent = members.unique("cluster_id").sort("cluster_id")["group_id"].to_numpy()
        clusters, terms = hierarchy_step.stack_levels(
            described[0], terms[0], described[1], terms[1], parent
        )
        write_atomically(LABEL.companion_of(out), terms.write_parquet)
        write_atomically(Path(out), clusters.write_parquet)
    return out


@stage_task(BEHAVIOUR, retries=1)
def behaviour(
    settings: Settings,
    out: str,
    clean_path: str,
    cluster_path: str,
    label_path: str,
    activity_version: str,
) -> str:
    """Per cluster: activity by weekday and hour, engagement by kind, weekly posts, topics over
    time, interactions, central and bridging accounts, term use (store.BEHAVIOUR_TABLES)."""
    if not BEHAVIOUR.done(out):
        from pipeline import behaviour as behaviour_step  # networkx, scikit-learn: when computing

        members = pl.read_parquet(cluster_path)
        fine_terms = pl.read_parquet(LABEL.companion_of(label_path)).join(
            members.select("cluster_id").unique(), on="cluster_id", how="semi"
        )  # the coarse groups' terms are stored too
        with open_db(settings) as con:
            activity, mentions = store.read_post_activity(con), store.read_mentions(con)
        tables = behaviour_step.describe_behaviour(
            activity,
            mentions,
            behaviour_step.dated_texts(pl.read_parquet(clean_path), activity),
            members,
            fine_terms,
            settings.timezone,
            TOP_ACCOUNTS,
        )
        packed = pl.DataFrame({"table": list(tables), "ipc": [ipc(t) for t in tables.values()]})
        write_atomically(Path(out), packed.write_parquet)
    return out


def ipc(table: pl.DataFrame) -> bytes:
    """A frame as Arrow IPC bytes (one cell of the behaviour artifact)."""
    buffer = io.BytesIO()
    table.write_ipc(buffer)
    return buffer.getvalue()


def behaviour_tables(path: str) -> dict[str, pl.DataFrame]:
    """The behaviour stage's tables, by name."""
    packed = pl.read_parquet(path)
    return {
        row["table"]: pl.read_ipc(io.BytesIO(row["ipc"])) for row in packed.iter_rows(named=True)
    }


def current_activity_version(settings: Settings) -> str:
    with open_db(settings) as con:
        return store.activity_version(con)


@task(retries=2, retry_condition_fn=transient, retry_delay_seconds=2, task_run_name="publish")
def publish(
    settings: Settings,
    run_id: str,
    clean_path: str,
    profile_path: str,
    hierarchy_path: str,
    label_path: str,
    behaviour_path: str,
    timings: dict[str, Any],
) -> None:
    """Write the run's results (with its cluster centres, for `tribes assign`, and its behaviour
    tables) and mark it completed, atomically."""
    from pipeline import people as people_step  # scikit-learn: only here

    members = pl.read_parquet(hierarchy_path).drop("group_id")
    clusters = pl.read_parquet(label_path)
    terms = pl.read_parquet(LABEL.companion_of(label_path))
    profiles = np.load(profile_path)["profiles"]  # row i: person i (first account, by name)
    clustered = members.filter(pl.col("reason").is_null())  # not those placed apart
    centres = assign_step.centroids(profiles, people_step.one_per_person(clustered))
    n_posts = sum(
        pl.scan_parquet(path).select(pl.len()).collect().item()
        for path in (clean_path, CLEAN.companion_of(clean_path))
    )
    tables = behaviour_tables(behaviour_path)
    with open_db(settings) as con:
        store.complete_run(
            con,
            run_id,
            members,
            clusters,
            terms,
            timings,
            n_posts,
            centroids=centres,
            behaviour=tables,
        )


def mark_failed(settings: Settings, run_id: str, error: BaseException) -> None:
    """Record the run as failed, directly (no task: after Ctrl-C there is no time for one). When
    even that fails (a full disk), the next command finds the run `abandoned`."""
    try:
        with open_db(settings) as con:
            store.fail_run(con, run_id, lifetime.failure_reason(error))
    except Exception as exc:
        get_run_logger().warning("could not mark run %s failed: %s", run_id, exc)


def run_stage(timings: dict[str, Any], stage_task, settings: Settings, **inputs: Any) -> str:
    """Run one stage's task, timed, on the artifact its inputs name. Prefect's cache answers
    unless that file is gone or unreadable (`full`, a deleted cache folder, a torn file)."""
    out = stage_task.stage.artifact(settings, inputs)
    refresh_cache = not stage_task.stage.done(out)
    started = time.perf_counter()
    progress.start(stage_task.name, stage_task.name)
    result = stage_task.with_options(refresh_cache=refresh_cache)(
        settings=settings, out=str(out), **inputs
    )
    timings[stage_task.name] = round(time.perf_counter() - started, 3)
    if not refresh_cache:
        timings.setdefault(store.CACHED, []).append(stage_task.name)
    progress.finish(stage_task.name, "cached" if not refresh_cache else "")
    return result


@flow(name="refresh", on_failure=[notify_failure], on_crashed=[notify_failure])
def refresh(
    db: str | None = None, options: RefreshOptions = RefreshOptions(), full: bool = False
) -> str:
    """Cluster every user in the database into interest groups; returns the new run's id.

    Args:
        db: DuckDB file; default from the settings (.tribes/tribes.duckdb)
        options: settings overridden for this run; unset ones come from the settings
        full: ignore every cache (the embeddings stored in DuckDB are kept)
    """
    settings = options.apply(load_settings(db=db))
    with one_refresh_at_a_time(settings):
        return refresh_now(settings, full)


@contextmanager
def one_refresh_at_a_time(settings: Settings) -> Iterator[None]:
    """Hold the database's refresh lock (a file in the state folder). A second refresh waits for
    the first, up to lock_wait_seconds, then reuses its embeddings and cached stages."""
    path = settings.state / f"{settings.db.name}.refresh.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as lock:
        if not locked(lock):
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            get_run_logger().info("waiting for the refresh running since %s", holder)
            deadline = time.monotonic() + settings.lock_wait_seconds
            while not locked(lock):
                if time.monotonic() >= deadline:
                    raise store.StoreError(
                        f"a refresh of {settings.db} is still running (since {holder}): "
                        "try again when it has finished"
                    )
                time.sleep(0.5)
        with writing(path):
            lock.truncate(0)
            lock.write(f"{datetime.now():%Y-%m-%d %H:%M:%S} (pid {os.getpid()})\n")
            lock.flush()
        yield  # closing the file releases the lock, also when this process dies


def locked(lock) -> bool:
    """Take the exclusive lock on an open file if no other process holds it."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def refresh_now(settings: Settings, full: bool) -> str:
    """The refresh itself, under the refresh lock; returns the new run's id."""
    if full:  # drop the stage artifacts; keep model exports (cache/models)
        for old in settings.cache_dir.glob("*.*"):
            if old.is_file():
                old.unlink()
    model = embed_step.prepare_model(settings)
    run_id, version = begin_run(settings)
    timings: dict[str, Any] = {}  # stage seconds, and the cached stages (store.CACHED)
    try:
        clean_path = run_stage(timings, clean, settings=settings, version=version)
        people_path = run_stage(
            timings, people, settings=settings, clean_path=clean_path, links=links_version(settings)
        )
        units_path = run_stage(
            timings, embed, settings=settings, clean_path=clean_path, model=model
        )
        profile_path = run_stage(
            timings,
            profile,
            settings=settings,
            clean_path=clean_path,
            units_path=units_path,
            model_id=model.model_id,
            people_path=people_path,
            activity_version=profile_activity_version(settings),
        )
        reduce_path = run_stage(timings, reduce, settings=settings, profile_path=profile_path)
        cluster_path = run_stage(
            timings,
            cluster,
            settings=settings,
            profile_path=profile_path,
            reduce_path=reduce_path,
        )
        hierarchy_path = run_stage(
            timings,
            hierarchy,
            settings=settings,
            clean_path=clean_path,
            profile_path=profile_path,
            cluster_path=cluster_path,
            model=model,
        )
        label_path = run_stage(
            timings,
            label,
            settings=settings,
            clean_path=clean_path,
            units_path=units_path,
            model_id=model.model_id,
            cluster_path=hierarchy_path,
        )
        behaviour_path = run_stage(
            timings,
            behaviour,
            settings=settings,
            clean_path=clean_path,
            cluster_path=hierarchy_path,
            label_path=label_path,
            activity_version=current_activity_version(settings),
        )
        publish(
            settings,
            run_id,
            clean_path,
            profile_path,
            hierarchy_path,
            label_path,
            behaviour_path,
            timings,
        )
    except BaseException as exc:
        mark_failed(settings, run_id, exc)
        raise
    progress.start("report", "recommendations and report")
    insight(settings, run_id, units_path, model)  # recommendations + report; never fails it
    progress.finish("report")
    show_in_ui(settings, run_id, return_state=True)  # UI artifacts; a failure leaves it completed
    keep_latest_runs(settings, return_state=True)  # prune old runs, index the reports
    get_run_logger().info("run %s completed: %s", run_id, timings)
    return run_id
