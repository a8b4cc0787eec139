"""The warm crawl service of `make serve` (flows/warm.py), for real: a Prefect server on a free
port, the service started by `flows.serve`'s own function, real `tribes crawl` processes
against local Mastodon-style servers, real DuckDB files. Ctrl-C, kill -9 of the caller and of
the service leave no process behind and no crawl marked running."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from flows import serve, warm
from scrapers.localserver import LocalPlatforms
from tests.test_hostile_faults import (
    STOP_SECONDS,
    alive,
    cli_env,
    first_pages,
    output,
    rows,
    start,
    stop,
    wait_for_requests,
    write_sources,
)

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="module")
def api_url(home: Path) -> Iterator[str]:
    """A real Prefect server for this module's Prefect home."""
    port = serve.free_port()
    with (home / "server.log").open("w") as log:
        server = serve.start_server(serve.prefect_env(home, port), port, log)
        try:
            serve.wait_healthy(f"http://{serve.HOST}:{port}/api", server)
            yield f"http://{serve.HOST}:{port}/api"
        finally:
            serve.stop(server)


def start_service(home: Path, api_url: str) -> subprocess.Popen:
    """The warm crawl service as `make serve` starts it, once it answers."""
    port = int(api_url.rsplit(":", 1)[1].split("/")[0])
    log = (home / "warm.log").open("a")
    service = serve.start_warm_crawls(serve.prefect_env(home, port), home, log)
    deadline = time.monotonic() + 180
    while not warm.answering(home):
        assert service.poll() is None, (home / "warm.log").read_text()
        assert time.monotonic() < deadline, "the warm crawl service did not answer"
        time.sleep(0.2)
    return service


@pytest.fixture
def service(home: Path, api_url: str) -> Iterator[subprocess.Popen]:
    process = start_service(home, api_url)
    try:
        yield process
    finally:
        serve.stop(process)


def crawl(db: Path, sources: Path, home: Path, api_url: str) -> subprocess.Popen:
    """`tribes crawl` in a process of the service's Prefect home, as a user's shell starts it."""
    env = cli_env(PREFECT_HOME=str(home), PREFECT_API_URL=api_url, TRIBES_CONTACT="t@localhost")
    return start(db, "crawl", "--sources", str(sources), env=env)


def served(home: Path, count: int = 0) -> list[str]:
    """The service's log lines about the commands it ran (waiting until there are `count`)."""
    deadline = time.monotonic() + 30
    while True:
        lines = [line for line in (home / "warm.log").read_text().splitlines() if " pid " in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def test_a_crawl_runs_in_the_service_with_the_callers_output_and_exit_status(
    tmp_path, home, api_url, service
):
    before = len(served(home))
    with LocalPlatforms(first_pages(3)) as site:
        sources = write_sources(tmp_path, site)
        process = crawl(tmp_path / "t.duckdb", sources, home, api_url)
        assert process.wait(120) == 0, output(process)
    shown = output(process)
    assert "Crawl " in shown and "3 accounts" in shown, shown  # the table and summary line
    [(pid, status)] = rows(tmp_path / "t.duckdb", "SELECT pid, status FROM crawls")
    assert status == "completed" and pid != process.pid  # a child of the service ran it
    assert rows(tmp_path / "t.duckdb", "SELECT count(DISTINCT user_id) FROM posts") == [(3,)]
    assert "exited with 0" in served(home, before + 2)[-1]  # started, then ended

    failed = crawl(tmp_path / "t.duckdb", tmp_path / "none.yaml", home, api_url)
    assert failed.wait(60) == 1
    assert "error: " in output(failed) and "Traceback" not in output(failed)
    assert "exited with 1" in served(home, before + 4)[-1]
    assert alive(psutil.Process(service.pid).children(recursive=True), 5) == []


@pytest.fixture
def crawl_site() -> Iterator[LocalPlatforms]:
    with LocalPlatforms(first_pages(40), page_cap=5, delay=0.05) as server:
        yield server


@pytest.mark.parametrize("how", ["ctrl-c", "kill -9"])
def test_a_caller_stopped_mid_crawl_stops_its_crawl_in_the_service(
    tmp_path, home, api_url, service, crawl_site, how
):
    db = tmp_path / "t.duckdb"
    sources = write_sources(tmp_path, crawl_site)
    process = crawl(db, sources, home, api_url)
    wait_for_requests(crawl_site, process, 3)
    children = psutil.Process(service.pid).children(recursive=True)
    assert len(children) == 2, "the crawl's child and its Scrapy process"
    if how == "ctrl-c":
        assert stop(process, signal.SIGINT, whole_group=True) < STOP_SECONDS, output(process)
        assert process.returncode == 130
    else:
        process.kill()
        process.wait()
    assert alive(children, STOP_SECONDS) == []
    assert rows(db, "SELECT status, error FROM crawls") == [
        ("failed", "interrupted (Ctrl-C or SIGTERM)")
    ]
    assert service.poll() is None and warm.answering(home)  # the service goes on


def test_a_killed_service_takes_its_crawls_along_and_the_next_crawl_runs_cold(
    tmp_path, home, api_url, crawl_site
):
    service = start_service(home, api_url)
    db = tmp_path / "t.duckdb"
    sources = write_sources(tmp_path, crawl_site)
    process = crawl(db, sources, home, api_url)
    try:
        wait_for_requests(crawl_site, process, 3)
        children = psutil.Process(service.pid).children(recursive=True)
        service.kill()
        service.wait()
        assert alive(children, STOP_SECONDS) == []
        assert process.wait(STOP_SECONDS) != 0
    finally:
        serve.stop(service)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    spiders = "".join(log.read_text()[-2000:] for log in (tmp_path / "crawls").glob("*.log"))
    assert rows(db, "SELECT status FROM crawls") == [("failed",)], output(process) + spiders
    assert not warm.answering(home)  # a stale socket file: the next crawl runs by itself
    with LocalPlatforms(first_pages(2)) as site:
        again = crawl(db, write_sources(tmp_path, site), home, api_url)
        assert again.wait(300) == 0, output(again)
    assert rows(db, "SELECT pid, status FROM crawls ORDER BY started_at")[-1] == (
        again.pid,  # this time the `tribes` process itself ran it
        "completed",
    )


def test_a_service_running_older_code_declines_and_the_crawl_runs_itself(
    tmp_path, home, api_url, service
):
    source = Path(warm.__file__)  # as if Tribes were updated while `make serve` runs
    before = source.stat()
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    try:
        with LocalPlatforms(first_pages(2)) as site:
            process = crawl(tmp_path / "t.duckdb", write_sources(tmp_path, site), home, api_url)
            assert process.wait(300) == 0, output(process)
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert "warning: the warm crawl service runs older Tribes code" in output(process)
    assert rows(tmp_path / "t.duckdb", "SELECT pid, status FROM crawls") == [
        (process.pid, "completed")
    ]
    assert "declined a request: the warm crawl service runs older" in (
        (home / "warm.log").read_text()
    )
