"""The nightly flow for real (Prefect test harness): its steps are visible with their own states,
the night's artifacts are on the nightly run, and a failed night POSTs a message to notify_url
(a real local HTTP receiver)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
)

from flows.artifacts import CHANGES_KEY, CLUSTERS_KEY, MAP_KEY, REPORT_KEY
from flows.nightly import nightly
from flows.notify import notify_failure
from flows.refresh import refresh
from pipeline import store

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict]]]:
    """A local HTTP server that records the JSON bodies POSTed to it: (url, bodies)."""
    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers["Content-Length"])
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()


def night_steps(flow_run_id: UUID) -> dict[str, tuple[str, str | None]]:
    """The nightly run's steps, task and subflow runs alike: name -> (state name, message)."""
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            )
        )
        flows = {child.id: client.read_flow(child.flow_id).name for child in children}
    stand_ins = {child.parent_task_run_id for child in children}  # a subflow's task run
    steps = {
        t.name: (t.state_name, t.state.message if t.state else None)
        for t in tasks
        if t.id not in stand_ins
    }
    steps |= {flows[c.id]: (c.state_name, c.state.message if c.state else None) for c in children}
    steps["child runs"] = tuple(child.id for child in children)
    return steps


def task_names(flow_run_id: UUID) -> set[str]:
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {t.name for t in tasks}


def artifacts_of(flow_run_id: UUID) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found if a.key}


def test_nightly_without_sources_shows_a_skipped_crawl_refresh_report_and_its_artifacts(
    refreshed: Path, receiver, monkeypatch: pytest.MonkeyPatch
):
    url, bodies = receiver
    monkeypatch.setenv("TRIBES_NOTIFY_URL", url)
    state = nightly(
        db=str(refreshed), sources=str(refreshed.parent / "none.yaml"), return_state=True
    )
    assert state.is_completed(), state.message
    run_id, night = state.result(), state.state_details.flow_run_id
    steps = night_steps(night)
    skipped_state, why = steps["crawl skipped"]
    assert skipped_state == "Skipped" and "none.yaml: nothing to crawl" in why
    assert steps["refresh"][0] == "Completed"
    assert steps["report"][0] == "Completed"
    [refresh_run] = steps["child runs"]
    assert {"begin run", "clean", "embed", "profile", "reduce", "cluster", "label", "publish"} | {
        "write report",
        "show results in the UI",
        "prune old runs",
    } <= task_names(refresh_run)  # named by what they do, not `embed-cb0`

    artifacts = artifacts_of(night)
    assert set(artifacts) == {CLUSTERS_KEY, CHANGES_KEY, REPORT_KEY, MAP_KEY}
    with store.open(refreshed) as con:
        table = store.cluster_table(con, run_id)
        previous = store.previous_run_id(con, run_id)
    assert f"Interest clusters of run {run_id}" in artifacts[CLUSTERS_KEY].data
    assert artifacts[CLUSTERS_KEY].data.count("\n| ") == table.height + 1
    assert artifacts[CHANGES_KEY].description.startswith(f"Since run {previous}: 0 users moved")
    report = (refreshed.parent / "reports" / run_id / "report.html").resolve()
    assert f"({report.as_uri()})" in artifacts[REPORT_KEY].data
    assert artifacts[MAP_KEY].data.startswith(f"![Cluster map of run {run_id}](data:image/png;")
    assert bodies == []  # a completed night sends nothing


def test_a_failed_night_shows_its_failed_crawl_and_posts_one_message(
    refreshed: Path, receiver, monkeypatch: pytest.MonkeyPatch
):
    url, bodies = receiver
    monkeypatch.setenv("TRIBES_NOTIFY_URL", url)
    sources = refreshed.parent / "sources.yaml"
    sources.write_text("sources: [{name: x, platform: nowhere, accounts: [a]}]\n")
    state = nightly(db=str(refreshed), sources=str(sources), return_state=True)
    assert state.is_failed()
    night = state.state_details.flow_run_id
    steps = night_steps(night)
    assert steps["crawl"][0] == "Failed"
    assert steps["refresh"][0] == "Completed"  # the refresh still ran on the stored posts
    assert steps["report"][0] == "Completed"
    [message] = bodies  # the nightly run's only: no second one from a subflow
    assert message["flow"] == "nightly" and message["state"] == "Failed"
    assert message["run_id"] == str(night)
    assert "the crawl before it failed" in message["message"]
    assert message["db"] == str(refreshed.resolve())
    assert message["started"].startswith("20")


def test_a_failed_refresh_notifies_and_a_dead_receiver_only_logs(
    workdir: Path, receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    url, bodies = receiver
    monkeypatch.setenv("TRIBES_NOTIFY_URL", url)
    empty = workdir / "empty.duckdb"
    with store.open(empty, "write"):
        pass
    state = refresh(db=str(empty), return_state=True)
    assert state.is_failed()
    [message] = bodies
    assert message["flow"] == "refresh" and "holds no posts" in message["message"]

    monkeypatch.setenv("TRIBES_NOTIFY_URL", "http://127.0.0.1:9/nobody-listens")

    @flow(on_failure=[notify_failure])
    def doomed() -> None:
        raise RuntimeError("the real problem")

    logger = logging.getLogger("prefect.flow_runs")  # Prefect's loggers do not propagate
    logger.addHandler(caplog.handler)
    try:
        with pytest.raises(RuntimeError, match="the real problem"):
            doomed()
    finally:
        logger.removeHandler(caplog.handler)
    assert "could not notify of the failed run: URLError" in caplog.text
