"""The refresh flow: clean → embed → profile → reduce → cluster → label → publish.

Tasks hand each other small values (the database path, the data version, file paths in the
state folder), never big arrays. Each artifact's file name is a digest of everything it depends
on, so an unchanged refresh finds its work done, and Prefect's input cache shows it as Cached.
Artifacts are written atomically, and one found unreadable is recomputed. One refresh of a
database runs at a time: a second one waits for the first, then reuses its work.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
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
from prefect.cache_policies import TASK_SOURCE, CacheKeyFnPolicy, Inputs

from flows import lifetime
from flows.artifacts import show_in_ui
from flows.files import unreadable, write_atomically, writing
from flows.report import insight
from flows.vectors import embed_missing
from pipeline import clean as clean_step
from pipeline import cluster as cluster_step
from pipeline import embed as embed_step
from pipeline import label as label_step
from pipeline import profile as profile_step
from pipeline import reduce as reduce_step
from pipeline import store
from pipeline.settings import RefreshOptions, Settings, load_settings

lifetime.tie_temporary_server()


def pipeline_code_version() -> str:
    """A digest of the pipeline's source: new step code never reuses old cached results."""
    digest = hashlib.sha256()
    for source in sorted(Path(clean_step.__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


CODE_VERSION = pipeline_code_version()
STAGE_SETTINGS: dict[str, tuple[str, ...]] = {  # the settings each stage's result depends on
    "clean": ("min_posts_per_user",),
    "embed": ("profile_method", "chunk_chars"),
    "profile": (
        "profile_method",
        "chunk_chars",
        "profile_remove_components",
        "random_state",
    ),
    "reduce": (
        "umap_n_components",
        "umap_n_neighbors",
        "umap_min_dist",
        "random_state",
        "consensus_runs",
    ),
    "cluster": ("min_cluster_size", "min_samples"),
    "label": ("top_terms", "label_terms", "representative_posts"),
}


STAGE_OUTPUTS: dict[str, tuple[str, tuple[str, ...]]] = {  # artifact suffix, named by params
    "clean": ("parquet", ("version",)),
    "embed": ("parquet", ("clean_path", "model_id")),
    "profile": ("npz", ("units_path", "model_id")),
    "reduce": ("npz", ("profile_path",)),
    "cluster": ("parquet", ("reduce_path",)),
    "label": ("parquet", ("clean_path", "units_path", "cluster_path")),
}
COMPANIONS = {"profile": ".users.parquet", "label": ".terms.parquet"}  # second file of a stage


def transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry a failed task unless a retry cannot fix its error (bad model, bad data, full disk)."""
    try:
        state.result()
    except (embed_step.ModelError, store.DiskFull, ValueError):
        return False
    except Exception:
        return True
    return True


def stage_key(settings: Settings, stage: str) -> list[Any]:
    """The database, the code version and the settings that a stage's result depends on."""
    return [
        str(settings.db.resolve()),
        CODE_VERSION,
        *(getattr(settings, name) for name in STAGE_SETTINGS[stage]),
    ]


def cached(stage: str):
    """Cache on the task's small inputs and its stage's settings (not on every setting)."""

    def key(_ctx: Any, params: dict[str, Any]) -> str:
        return json.dumps(stage_key(params["settings"], stage), default=str)

    return Inputs(exclude=["settings"]) + TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=key)


def artifact(settings: Settings, stage: str, suffix: str, *inputs: Any) -> Path:
    """A path in the cache folder named by a digest of everything the artifact depends on."""
    key = json.dumps([*stage_key(settings, stage), *inputs], sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    return settings.cache_dir / f"{stage}-{digest[:20]}.{suffix}"


def output(stage: str, params: dict[str, Any]) -> Path:
    """The artifact a stage's task writes, named by the task's parameters (a task passes its
    `locals()` before defining any other name; the flow passes the arguments it will call with)."""
    suffix, names = STAGE_OUTPUTS[stage]
    return artifact(params["settings"], stage, suffix, *(params[name] for name in names))


def stage_done(stage: str, out: Path) -> bool:
    """Whether a stage's artifact (and its companion file) are there and readable; an unreadable
    one is removed, so the stage computes it again."""
    done = True
    for path in [out, *([out.with_suffix(COMPANIONS[stage])] if stage in COMPANIONS else [])]:
        if not path.exists():
            done = False
        elif problem := unreadable(path):
            get_run_logger().warning("unreadable cache file %s (%s): recomputing it", path, problem)
            path.unlink()
            done = False
    return done


@contextmanager
def open_db(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """The database, waiting for another writer; a full disk raises DiskFull naming it."""
    with (
        writing(settings.db),
        store.open(settings, "write") as con,
    ):
        yield con


@task(retries=2, retry_condition_fn=transient, retry_delay_seconds=2)
def begin_run(settings: Settings) -> tuple[str, str]:
    """Record a new run and return (run_id, data_version)."""
    with open_db(settings) as con:
        version = store.data_version(con)
        if version.startswith("0-"):
            raise ValueError(f"database {settings.db} holds no posts: run `tribes import` first")
        store.abandon_stale(con)
        return store.start_run(con, settings.analysis_fingerprint(), version), version


@task(
    retries=2,
    retry_condition_fn=transient,
    retry_delay_seconds=2,
    cache_policy=cached("clean"),
    persist_result=True,
)
def clean(settings: Settings, version: str) -> str:
    out = output("clean", locals())
    if not stage_done("clean", out):
        with open_db(settings) as con:
            posts = store.read_posts(con)
        cleaned = clean_step.clean_posts(posts, settings.min_posts_per_user)
        write_atomically(out, cleaned.write_parquet)
    return str(out)


def profile_units(posts: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """The texts a profile averages: each user's posts packed into chunks (`chunk_mean`) or the
    single posts (the other methods); columns platform, user_id, text_clean, text_hash."""
    if settings.profile_method == "chunk_mean":
        return clean_step.pack_chunks(posts, settings.chunk_chars)
    return posts.select("platform", "user_id", "text_clean", "text_hash")


@task(
    retries=2,
    retry_condition_fn=transient,
    retry_delay_seconds=5,
    cache_policy=cached("embed"),
    persist_result=True,
)
def embed(settings: Settings, clean_path: str, model_id: str) -> str:
    """Embed every profile unit (chunk or post) with no stored vector; returns the units' path.

    Each text is embedded once: a post is embedded as part of its chunk, never again alone.
    """
    out = output("embed", locals())
    done = stage_done("embed", out)
    units = pl.read_parquet(out if done else clean_path)
    if not done:
        units = profile_units(units, settings)
    what = "post chunks" if settings.profile_method == "chunk_mean" else "posts"
    embed_missing(settings, units.select("text_hash", "text_clean"), model_id, what)
    if not done:
        write_atomically(out, units.write_parquet)
    return str(out)


def load_units(settings: Settings, units_path: str, model_id: str):
    """The profile units and their vectors, row for row."""
    units = pl.read_parquet(units_path)
    with open_db(settings) as con:
        vectors = store.load_embeddings(con, model_id, units["text_hash"].to_list())
    return units, vectors


def user_index(posts: pl.DataFrame) -> pl.DataFrame:
    """Distinct users (platform, user_id, n_posts), sorted: row i is user i."""
    return posts.group_by("platform", "user_id").len("n_posts").sort("platform", "user_id")


def rows_of(frame: pl.DataFrame, table: pl.DataFrame, keys: list[str]) -> np.ndarray:
    """For each row of `frame`, the row number in `table` with the same `keys`."""
    index = table.select(keys).with_row_index("row")
    return frame.join(index, on=keys, how="left", maintain_order="left")["row"].to_numpy()


@task(retries=1, retry_condition_fn=transient, cache_policy=cached("profile"), persist_result=True)
def profile(settings: Settings, clean_path: str, units_path: str, model_id: str) -> str:
    out = output("profile", locals())
    if not stage_done("profile", out):
        users = user_index(pl.read_parquet(clean_path, columns=["platform", "user_id"]))
        units, vectors = load_units(settings, units_path, model_id)
        profiles = profile_step.build_profiles(
            rows_of(units, users, ["platform", "user_id"]),
            vectors,
            users.height,
            settings.profile_method,
            settings.profile_remove_components,
            settings.random_state,
            units["text_clean"].str.len_chars().to_numpy(),
        )
        write_atomically(out.with_suffix(COMPANIONS["profile"]), users.write_parquet)
        write_atomically(out, lambda temp: np.savez(temp, profiles=profiles))
    return str(out)


@task(retries=1, retry_condition_fn=transient, cache_policy=cached("reduce"), persist_result=True)
def reduce(settings: Settings, profile_path: str) -> str:
    out = output("reduce", locals())
    if not stage_done("reduce", out):
        profiles = np.load(profile_path)["profiles"]
        spaces = [
            reduce_step.umap_reduce(
                profiles,
                settings.umap_n_components,
                settings.umap_n_neighbors,
                settings.umap_min_dist,
                seed,
            )
            for seed in reduce_step.run_seeds(settings.random_state, settings.consensus_runs)
        ]
        plane = reduce_step.umap_reduce(
            profiles, 2, settings.umap_n_neighbors, 0.1, settings.random_state
        )
        write_atomically(out, lambda temp: np.savez(temp, spaces=np.stack(spaces), plane=plane))
    return str(out)


@task(retries=1, retry_condition_fn=transient, cache_policy=cached("cluster"), persist_result=True)
def cluster(settings: Settings, profile_path: str, reduce_path: str) -> str:
    out = output("cluster", locals())
    if not stage_done("cluster", out):
        reduced = np.load(reduce_path)
        result = cluster_step.consensus_cluster(
            list(reduced["spaces"]), settings.min_cluster_size, settings.min_samples
        )
        users = pl.read_parquet(Path(profile_path).with_suffix(".users.parquet"))
        members = users.with_columns(
            cluster_id=pl.Series(result.labels, dtype=pl.Int32),
            probability=pl.Series(result.probability),
            is_outlier=pl.Series(result.is_outlier),
            x=pl.Series(reduced["plane"][:, 0].astype(float)),
            y=pl.Series(reduced["plane"][:, 1].astype(float)),
        )
        write_atomically(out, members.write_parquet)
    return str(out)


@task(retries=1, retry_condition_fn=transient, cache_policy=cached("label"), persist_result=True)
def label(
    settings: Settings, clean_path: str, units_path: str, model_id: str, cluster_path: str
) -> str:
    """c-TF-IDF terms, labels, example users and representative posts per cluster."""
    out = output("label", locals())
    if not stage_done("label", out):
        members = pl.read_parquet(cluster_path)
        keys = ["platform", "user_id"]
        n_clusters = int(members["cluster_id"].max()) + 1
        cluster_of_user = members["cluster_id"].to_numpy()
        posts = pl.read_parquet(clean_path, columns=[*keys, "text_clean"])
        post_owner = rows_of(posts, members, keys)
        terms = label_step.cluster_terms(
            posts["text_clean"].to_list(),
            cluster_of_user[post_owner],
            n_clusters,
            settings.top_terms,
            post_owner,
        )
        del posts
        units, vectors = load_units(settings, units_path, model_id)
        unit_owner = rows_of(units, members, keys)
        examples = label_step.representative_posts(
            vectors - vectors.mean(axis=0),
            cluster_of_user[unit_owner],
            unit_owner,
            n_clusters,
            settings.representative_posts,
        )
        with open_db(settings) as con:
            names = store.read_users(con).select(*keys, "display_name")
        named = members.join(names, on=keys, how="left").with_columns(
            name=pl.coalesce("display_name", "user_id")
        )
        texts = units["text_clean"].to_list()
        quote = clean_step.best_post_in
        rows = []
        for cluster_id in range(n_clusters):
            group = named.filter(pl.col("cluster_id") == cluster_id).sort(
                "probability", descending=True
            )
            top = terms.filter(pl.col("cluster_id") == cluster_id).sort("rank")["term"].to_list()
            rows.append(
                {
                    "cluster_id": cluster_id,
                    "label": label_step.short_label(top, settings.label_terms),
                    "size": group.height,
                    "n_outliers": int(group["is_outlier"].sum()),
                    "example_users": group["name"].head(5).to_list(),
                    "representative_posts": [
                        quote(texts[i], set(top))[:280] for i in examples[cluster_id]
                    ],
                }
            )
        write_atomically(out.with_suffix(COMPANIONS["label"]), terms.write_parquet)
        write_atomically(out, pl.DataFrame(rows).write_parquet)
    return str(out)


@task(retries=2, retry_condition_fn=transient, retry_delay_seconds=2)
def publish(
    settings: Settings,
    run_id: str,
    clean_path: str,
    cluster_path: str,
    label_path: str,
    timings: dict[str, float],
) -> None:
    """Write the run's results and mark it completed, atomically."""
    members = pl.read_parquet(cluster_path)
    clusters = pl.read_parquet(label_path)
    terms = pl.read_parquet(Path(label_path).with_suffix(".terms.parquet"))
    n_posts = pl.scan_parquet(clean_path).select(pl.len()).collect().item()
    with open_db(settings) as con:
        store.complete_run(con, run_id, members, clusters, terms, timings, n_posts)


def mark_failed(settings: Settings, run_id: str, error: BaseException) -> None:
    """Record the run as failed, directly (no task: after Ctrl-C there is no time for one). When
    even that fails (a full disk), the next command finds the run `abandoned`."""
    try:
        with open_db(settings) as con:
            store.fail_run(con, run_id, lifetime.failure_reason(error))
    except Exception as exc:
        get_run_logger().warning("could not mark run %s failed: %s", run_id, exc)


def run_stage(timings: dict[str, float], stage_task, **params: Any) -> str:
    """Run one stage's task, timed. Its cached result is recomputed when the artifact it names
    is gone or unreadable (`full`, a deleted cache folder, a torn file), else Prefect's cache
    answers."""
    refresh_cache = not stage_done(stage_task.name, output(stage_task.name, params))
    started = time.perf_counter()
    result = stage_task.with_options(refresh_cache=refresh_cache)(**params)
    timings[stage_task.name] = round(time.perf_counter() - started, 3)
    return result


@flow(name="refresh")
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
    model_id = embed_step.model_spec(settings).model_id
    run_id, version = begin_run(settings)
    timings: dict[str, float] = {}
    try:
        clean_path = run_stage(timings, clean, settings=settings, version=version)
        units_path = run_stage(
            timings, embed, settings=settings, clean_path=clean_path, model_id=model_id
        )
        profile_path = run_stage(
            timings,
            profile,
            settings=settings,
            clean_path=clean_path,
            units_path=units_path,
            model_id=model_id,
        )
        reduce_path = run_stage(timings, reduce, settings=settings, profile_path=profile_path)
        cluster_path = run_stage(
            timings,
            cluster,
            settings=settings,
            profile_path=profile_path,
            reduce_path=reduce_path,
        )
        label_path = run_stage(
            timings,
            label,
            settings=settings,
            clean_path=clean_path,
            units_path=units_path,
            model_id=model_id,
            cluster_path=cluster_path,
        )
        publish(settings, run_id, clean_path, cluster_path, label_path, timings)
    except BaseException as exc:
        mark_failed(settings, run_id, exc)
        raise
    insight(settings, run_id, units_path, model_id)  # recommendations + report; never fails it
    show_in_ui(settings, run_id, return_state=True)  # UI artifacts; a failure leaves it completed
    get_run_logger().info("run %s completed: %s", run_id, timings)
    return run_id
