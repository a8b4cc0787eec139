"""Issue 17, process faults: Ctrl-C, SIGTERM and kill -9 of real `tribes` processes (with their
Scrapy and Prefect children), torn cache files, two refreshes at once, a full disk (a real tmpfs)
and the Dask dashboard's address, all against real DuckDB files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import psutil
import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.files import unreadable, write_atomically
from flows.imports import import_file
from pipeline import store
from pipeline.ingest import ColumnMap
from pipeline.settings import load_settings
from scrapers.localserver import LocalPlatforms

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample" / "fb_pages_sample.parquet"
STOP_SECONDS = 10  # the promise: Ctrl-C or SIGTERM ends any command within 10 s
STARTUP_SECONDS = 300  # a cold CLI start (imports, Prefect's temporary server) on a busy machine


# ------------------------------------------------------------------ helpers


def first_pages(count: int) -> pl.DataFrame:
    """The posts of the sample's first `count` pages."""
    posts = pl.read_parquet(SAMPLE)
    return posts.filter(
        pl.col("user_id").is_in(posts["user_id"].unique(maintain_order=True)[:count])
    )


def imported(folder: Path, users: int | None = None) -> Path:
    """A database of the bundled sample (or its first `users` pages), imported for real."""
    posts = first_pages(users) if users else pl.read_parquet(SAMPLE)
    source = folder / "posts.parquet"
    posts.write_parquet(source)
    db = folder / "t.duckdb"
    import_file(load_settings(db=db), str(source), "facebook", ColumnMap(label="user_label"))
    return db


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `tribes` subprocess: this checkout, no TRIBES_* of the caller, and
    Prefect's own temporary server unless `extra` names one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIBES_", "PREFECT_API_URL"))}
    env.update(
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        TRIBES_CONSENSUS_RUNS="1",
    )
    env.update(extra)
    return env


def start(
    db: Path, *args: str, env: dict[str, str] | None = None, logs: Path | None = None
) -> subprocess.Popen:
    """`tribes --db DB ARGS` as a new process group (a terminal's Ctrl-C reaches the group),
    its output logged to a file in `logs` (default: the database's folder)."""
    log = (logs or db.parent) / f"{args[0]}-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "-v", "--db", str(db), *args],  # -v: log lines
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env or cli_env(),
            cwd=db.parent,
            start_new_session=True,
        )
    process.log = log
    return process


def output(process: subprocess.Popen) -> str:
    return process.log.read_text(encoding="utf-8", errors="replace")


def wait_for(process: subprocess.Popen, text: str, timeout: float = STARTUP_SECONDS) -> None:
    """Wait until the process has printed `text`."""
    deadline = time.monotonic() + timeout
    while text not in output(process):
        assert process.poll() is None, f"ended before {text!r}:\n{output(process)[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout}s"
        time.sleep(0.1)


def family(process: subprocess.Popen) -> list[psutil.Process]:
    """The process's descendants (Prefect's temporary server, the Scrapy crawl, ...)."""
    return psutil.Process(process.pid).children(recursive=True)


def alive(processes: list[psutil.Process], within: float) -> list[str]:
    """Those of `processes` still running (not zombies) after up to `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        running = []
        for p in processes:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    running.append(" ".join(p.cmdline()[:4]))
            except psutil.NoSuchProcess:
                pass
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.2)


def stop(process: subprocess.Popen, signum: int, whole_group: bool) -> float:
    """Send `signum` (to the process group, as a terminal's Ctrl-C does, or to the process);
    returns the seconds until it exited (killing it when it overstays STOP_SECONDS)."""
    started = time.monotonic()
    if whole_group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    try:
        process.wait(timeout=STOP_SECONDS + 20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return time.monotonic() - started


def rows(db: Path, sql: str) -> list[tuple]:
    with store.open(db, wait_seconds=30) as con:
        return con.execute(sql).fetchall()


@pytest.fixture
def crawl_site() -> Iterator[Path]:
    """A sources.yaml of one slow local Mastodon instance with 40 real sample pages."""
    with LocalPlatforms(first_pages(40), page_cap=5, delay=0.05) as server:
        yield server


def write_sources(folder: Path, server: LocalPlatforms) -> Path:
    path = folder / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": [server.source("mastodon", "slow")]}))
    return path


def wait_for_requests(server: LocalPlatforms, process: subprocess.Popen, count: int) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while len(server.requests_to("/api/v1/accounts/")) < count:
        assert process.poll() is None, output(process)[-3000:]
        assert time.monotonic() < deadline, "the crawl sent no requests"
        time.sleep(0.1)


# ------------------------------------------------------------------ 13: Ctrl-C and SIGTERM


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "whole_group"),
    [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c", "term"],
)
def test_interrupted_refresh_stops_within_10s_marked_failed_and_unpublished(
    tmp_path, signum, whole_group
):
    db = imported(tmp_path)
    process = start(db, "refresh")
    wait_for(process, "embedding ")  # mid-run: the embedding stage is working
    children = family(process)
    assert children, "Prefect's temporary server runs as a child"
    seconds = stop(process, signum, whole_group)
    assert seconds < STOP_SECONDS, output(process)[-3000:]
    assert alive(children, 5) == []
    assert rows(db, "SELECT status, error FROM runs") == [
        ("failed", "interrupted (Ctrl-C or SIGTERM)")
    ]
    assert rows(db, "SELECT count(*) FROM clusters") == [(0,)]


@pytest.mark.slow
def test_ctrl_c_stops_a_crawl_and_its_scrapy_process_within_10s(tmp_path, crawl_site):
    db = tmp_path / "t.duckdb"
    process = start(db, "crawl", "--sources", str(write_sources(tmp_path, crawl_site)))
    wait_for_requests(crawl_site, process, 3)
    children = family(process)
    assert any("scrapers.run" in p.cmdline() for p in children)
    seconds = stop(process, signal.SIGINT, whole_group=True)
    assert seconds < STOP_SECONDS, output(process)[-3000:]
    assert alive(children, 5) == []
    assert rows(db, "SELECT status, error FROM crawls") == [
        ("failed", "interrupted (Ctrl-C or SIGTERM)")
    ]


# ------------------------------------------------------------------ 14: kill -9


@pytest.mark.slow
def test_killed_refresh_leaves_no_child_and_shows_abandoned(tmp_path):
    db = imported(tmp_path)
    process = start(db, "refresh")
    wait_for(process, "embedding ")
    children = family(process)
    process.kill()
    process.wait()
    assert alive(children, 5) == []
    shown = CliRunner().invoke(app, ["--db", str(db), "status"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "abandoned" in shown.output, shown.output
    assert rows(db, "SELECT status FROM runs") == [("running",)]  # `status` only reads
    with store.open(db, "write") as con:  # the next refresh or crawl marks it
        assert store.abandon_stale(con) == 1
    assert rows(db, "SELECT status FROM runs") == [("abandoned",)]


@pytest.mark.slow
def test_killed_crawl_leaves_no_scrapy_process_and_the_next_crawl_marks_it_abandoned(
    tmp_path, crawl_site
):
    db = tmp_path / "t.duckdb"
    process = start(db, "crawl", "--sources", str(write_sources(tmp_path, crawl_site)))
    wait_for_requests(crawl_site, process, 3)
    children = family(process)
    assert any("scrapers.run" in p.cmdline() for p in children)
    process.kill()
    process.wait()
    assert alive(children, 5) == []
    with store.open(db, "write", wait_seconds=30) as con:
        assert store.crawls_table(con)["status"].to_list() == ["abandoned"]
        store.abandon_stale(con)  # what the next `tribes crawl` does first
    assert rows(db, "SELECT status FROM crawls") == [("abandoned",)]


def test_a_row_is_abandoned_only_when_its_process_has_ended(tmp_path):
    db = tmp_path / "t.duckdb"
    code = (
        "import sys; from pipeline import store\n"
        "with store.open(sys.argv[1], 'write') as con: store.start_run(con, {}, 'v'); "
        "store.start_crawl(con, None)"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, env=cli_env())
    with store.open(db, "write") as con:
        mine = store.start_run(con, {}, "v")  # this process: alive
        assert store.abandon_stale(con) == 2
        assert store.abandon_stale(con) == 0  # idempotent
        runs = dict(con.execute("SELECT run_id, status FROM runs").fetchall())
        crawls = [s for (s,) in con.execute("SELECT status FROM crawls").fetchall()]
    assert runs.pop(mine) == "running"
    assert list(runs.values()) == ["abandoned"] and crawls == ["abandoned"]


# ------------------------------------------------------------------ 15: torn cache files


def test_an_interrupted_write_leaves_no_torn_file(tmp_path):
    path = tmp_path / "clean-x.parquet"

    def torn(temp: Path) -> None:
        temp.write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, torn)
    assert list(tmp_path.iterdir()) == []
    write_atomically(path, pl.DataFrame({"a": [1]}).write_parquet)
    assert unreadable(path) is None and list(tmp_path.iterdir()) == [path]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_torn_cache_file_is_recomputed_not_fatal(workdir, monkeypatch):
    from flows.refresh import refresh

    monkeypatch.setenv("TRIBES_CONSENSUS_RUNS", "1")
    db = imported(workdir, users=40)
    first = refresh(db=str(db))
    artifacts = sorted(p for p in (workdir / "cache").glob("*.*") if p.is_file())
    assert {p.suffix for p in artifacts} == {".parquet", ".npz"}
    for path in artifacts:  # as a crash mid-write left them before writes were atomic
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    second = refresh(db=str(db))
    assert [unreadable(p) for p in artifacts] == [None] * len(artifacts)
    with store.open(db) as con:
        assert store.run_info(con, second)["status"] == "completed"
        same = """SELECT count(*) FROM user_clusters a JOIN user_clusters b
            USING (platform, user_id) WHERE a.run_id = ? AND b.run_id = ?
            AND a.cluster_id = b.cluster_id"""
        users = store.scalar(con, "SELECT count(*) FROM user_clusters WHERE run_id = ?", [first])
        assert store.scalar(con, same, [first, second]) == users  # recomputed alike


# ------------------------------------------------------------------ 16: two refreshes at once


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_second_refresh_waits_for_the_first_and_reuses_its_embeddings(tmp_path):
    from prefect.settings import PREFECT_API_URL

    db = imported(tmp_path)
    env = cli_env(PREFECT_API_URL=PREFECT_API_URL.value())
    both = [start(db, "refresh", env=env), start(db, "refresh", env=env)]
    for process in both:
        assert process.wait(timeout=900) == 0, output(process)[-3000:]
    waited = "waiting for the refresh running since"
    first, second = sorted((output(p) for p in both), key=lambda log: waited in log)
    assert waited in second and waited not in first
    assert re.search(r"embedding \d+ new post chunks", first)
    assert not re.search(r"embedding \d+ new", second)  # its embed task came back Cached
    assert rows(db, "SELECT status FROM runs") == [("completed",), ("completed",)]
    assert rows(db, "SELECT count(*) = count(DISTINCT text_hash) FROM embeddings") == [(True,)]


# ------------------------------------------------------------------ 17: disk full


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs (needs root; skipped elsewhere)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.usefixtures("prefect_harness")
def test_disk_full_is_one_line_naming_the_file_without_retries(tmp_path, full_disk):
    from prefect.settings import PREFECT_API_URL

    db = imported(tmp_path, users=40)
    (full_disk / db.name).write_bytes(db.read_bytes())
    free = os.statvfs(full_disk).f_bavail * os.statvfs(full_disk).f_frsize
    (full_disk / "filler").write_bytes(b"\0" * max(free - 16_384, 0))  # 16 KiB left
    env = cli_env(
        PREFECT_API_URL=PREFECT_API_URL.value(),
        PREFECT_HOME=str(tmp_path / "prefect"),  # Prefect's own files live on another disk
        PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(tmp_path / "prefect" / "storage"),
    )
    process = start(full_disk / db.name, "refresh", env=env, logs=tmp_path)
    assert process.wait(timeout=300) == 1
    log = output(process)
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.fullmatch(
        rf"error: disk full writing {full_disk}/\S+", errors[0]
    )
    assert "Retry" not in log and "Prefect API" not in log, log[-3000:]


# ------------------------------------------------------------------ 2: the Dask dashboard


@pytest.mark.slow
def test_the_local_dask_cluster_listens_on_127_0_0_1_only(workdir):
    import distributed

    from flows.vectors import local_cluster_options

    before = listening()
    options = local_cluster_options(load_settings(embed_dask_workers=1))
    with distributed.LocalCluster(**options) as cluster:
        opened = listening() - before
        dashboard = int(cluster.dashboard_link.split(":")[2].split("/")[0])
    assert ("127.0.0.1", dashboard) in opened and len(opened) >= 3  # scheduler, worker, nanny
    assert {ip for ip, _ in opened} == {"127.0.0.1"}


def listening() -> set[tuple[str, int]]:
    """The addresses this process and its children listen on."""
    me = psutil.Process()
    return {
        (c.laddr.ip, c.laddr.port)
        for p in [me, *me.children(recursive=True)]
        for c in p.net_connections("inet")
        if c.status == psutil.CONN_LISTEN
    }
