"""Operating Tribes through Prefect: a real server on a free port, the real prefect.yaml deployed
on the `tribes` process pool by `flows.serve`'s own functions, a real worker, real flow runs on
real posts. Skip locally with `-m "not server"`; CI runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.client import HTTPResponse
from pathlib import Path
from uuid import UUID

import polars as pl
import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterTaskRunId,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Scheduled

from flows import serve
from pipeline import store
from pipeline.summary import CHANGE_COLUMNS

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample" / "fb_pages_sample.parquet"
PAGES_PER_LABEL, POSTS_PER_PAGE = 5, 8  # 40 real pages, 320 posts: a short embedding
RUN_TIMEOUT = 480.0
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
WAITING = {StateType.SCHEDULED, StateType.PENDING}
HOLD_LOCK = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(600)"  # noqa: E501


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="module")
def env(home: Path) -> Iterator[dict[str, str]]:
    """A Prefect server with prefect.yaml deployed and a worker polling `tribes`; both are
    stopped (with their children) whatever happens."""
    port = serve.free_port()
    extra = {
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",  # no nightly run during a test
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    environment = {
        k: v for k, v in serve.prefect_env(home, port, extra).items() if not k.startswith("TRIBES_")
    }
    with (
        (home / "server.log").open("w") as server_log,
        (home / "worker.log").open("w") as worker_log,
    ):
        server = serve.start_server(environment, port, server_log)
        worker = None
        try:
            serve.wait_healthy(environment["PREFECT_API_URL"], server)
            serve.create_pool(environment)
            serve.deploy_all(environment)
            worker = serve.start_worker(environment, worker_log)
            yield environment
        finally:
            if worker is not None:
                serve.stop(worker)
            serve.stop(server)


@pytest.fixture(scope="module")
def client(env: dict[str, str]) -> Iterator[SyncPrefectClient]:
    with SyncPrefectClient(env["PREFECT_API_URL"]) as api:
        yield api


def worker_log_tail(home: Path, lines: int = 60) -> str:
    return "\n".join((home / "worker.log").read_text(errors="replace").splitlines()[-lines:])


def wait_final(client: SyncPrefectClient, run_id: UUID, home: Path) -> FlowRun:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state_type in FINAL:
            return run
        time.sleep(1)
    raise AssertionError(
        f"flow run {run_id} not finished after {RUN_TIMEOUT:.0f}s\n{worker_log_tail(home)}"
    )


def assert_completed(run: FlowRun, home: Path) -> None:
    assert run.state_type == StateType.COMPLETED, (
        f"{run.name}: {run.state_name}: {run.state.message if run.state else ''}\n"
        f"{worker_log_tail(home)}"
    )


def deployment_id(client: SyncPrefectClient, name: str) -> UUID:
    return client.read_deployment_by_name(name).id


def artifacts_of(client: SyncPrefectClient, run_id: UUID) -> dict[str, object]:
    found = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return {a.key: a for a in found if a.key}


def completed_runs(db: Path) -> pl.DataFrame:
    with store.open(db) as con:
        return store.frame(
            con,
            "SELECT run_id, finished_at FROM runs WHERE status = 'completed' ORDER BY finished_at",
        )


@pytest.fixture(scope="module")
def imported(
    tmp_path_factory: pytest.TempPathFactory, client: SyncPrefectClient, home: Path
) -> Path:
    """A database filled with 40 real pages × 8 posts through the `import` deployment."""
    folder = tmp_path_factory.mktemp("tribes")
    posts = pl.read_parquet(SAMPLE).sort("user_id", "post_id")
    pages = (
        posts.select("user_label", "user_id")
        .unique()
        .sort("user_label", "user_id")
        .group_by("user_label", maintain_order=True)
        .head(PAGES_PER_LABEL)["user_id"]
    )
    small = (
        posts.filter(pl.col("user_id").is_in(pages.to_list()))
        .group_by("user_id", maintain_order=True)
        .head(POSTS_PER_PAGE)
    )
    small.write_parquet(folder / "posts.parquet")
    db = folder / "tribes.duckdb"
    run = client.create_flow_run_from_deployment(
        deployment_id(client, "import/import"),
        parameters={
            "path": str(folder / "posts.parquet"),
            "platform": "facebook",
            "label_col": "user_label",
            "db": str(db),
        },
    )
    assert_completed(wait_final(client, run.id, home), home)
    with store.open(db) as con:
        assert store.scalar(con, "SELECT count(*) FROM posts") == small.height
    return db


def test_prefect_yaml_is_deployed_with_schedule_pool_and_working_directory(client):
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    nightly_spec = next(d for d in spec["deployments"] if d["name"] == "nightly-refresh")
    names = {f"{client.read_flow(d.flow_id).name}/{d.name}" for d in client.read_deployments()}
    assert names == {"nightly/nightly-refresh", "crawl/crawl", "refresh/refresh", "import/import"}

    nightly = client.read_deployment_by_name("nightly/nightly-refresh")
    [schedule] = nightly.schedules
    assert schedule.active
    assert schedule.schedule.cron == nightly_spec["schedules"][0]["cron"] == "0 2 * * *"
    assert schedule.schedule.timezone == nightly_spec["schedules"][0]["timezone"]
    assert client.read_deployment_by_name("refresh/refresh").schedules == []

    pool = client.read_work_pool("tribes")
    assert (pool.type, pool.concurrency_limit) == ("process", 1)
    for name in names:
        deployment = client.read_deployment_by_name(name)
        assert deployment.work_pool_name == "tribes"
        assert deployment.enforce_parameter_schema
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ]


def test_bad_parameters_are_rejected_before_a_run_starts(client, env):
    refresh_id = deployment_id(client, "refresh/refresh")

    def runs() -> int:
        return len(
            client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[refresh_id]))
            )
        )

    before = runs()
    cli = subprocess.run(
        [
            *serve.PREFECT,
            "deployment",
            "run",
            "refresh/refresh",
            "--param",
            'options={"min_cluster_size": 1}',
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode != 0
    assert "min_cluster_size" in cli.stdout + cli.stderr
    for bad in (
        {"options": {"umap_n_components": "five"}},
        {"options": {"profile_method": "median"}},
        {"options": {"min_cluster": 5}},  # an unknown option
        {"full": "yes"},
    ):
        with pytest.raises(Exception, match="[Vv]alidation|422|409"):
            client.create_flow_run_from_deployment(refresh_id, parameters=bad)
    assert runs() == before


def test_an_unknown_parameter_is_refused_with_its_name_and_a_known_one_accepted(client, env):
    later = Scheduled(scheduled_time=datetime.now(UTC) + timedelta(days=1))
    required = {"import/import": {"path": "posts.csv"}}  # else that is what gets refused
    for name in ("refresh/refresh", "nightly/nightly-refresh", "crawl/crawl", "import/import"):
        deployment = client.read_deployment_by_name(name)
        assert deployment.parameter_openapi_schema["additionalProperties"] is False
        answer = post_run(env, deployment.id, {**required.get(name, {}), "bogus": 3})
        assert answer.status in (409, 422), (name, answer.status)
        assert "bogus" in answer.read().decode(), name
    refresh_id = deployment_id(client, "refresh/refresh")
    accepted = client.create_flow_run_from_deployment(  # not due for a day: the worker leaves it
        refresh_id, parameters={"full": True, "options": {"min_cluster_size": 8}}, state=later
    )
    try:
        assert client.read_flow_run(accepted.id).parameters["options"] == {"min_cluster_size": 8}
    finally:
        client.delete_flow_run(accepted.id)


def post_run(env: dict[str, str], deployment: UUID, parameters: dict) -> HTTPResponse:
    """POST create_flow_run_from_deployment as any HTTP caller would; returns the answer."""
    request = urllib.request.Request(
        f"{env['PREFECT_API_URL']}/deployments/{deployment}/create_flow_run",
        data=json.dumps({"parameters": parameters}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        return urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as refused:
        return refused


def test_refresh_runs_on_the_worker_and_a_trigger_during_it_waits(client, imported, home):
    deadline = time.monotonic() + RUN_TIMEOUT
    first = client.create_flow_run_from_deployment(
        deployment_id(client, "refresh/refresh"), parameters={"db": str(imported)}
    )
    while client.read_flow_run(first.id).state_type != StateType.RUNNING:
        assert time.monotonic() < deadline, worker_log_tail(home)
        assert client.read_flow_run(first.id).state_type not in FINAL, worker_log_tail(home)
        time.sleep(0.25)
    second = client.create_flow_run_from_deployment(  # the nightly flow run by hand, meanwhile
        deployment_id(client, "nightly/nightly-refresh"), parameters={"db": str(imported)}
    )
    waiting_seen = set()
    while (a := client.read_flow_run(first.id)).state_type not in FINAL:
        assert time.monotonic() < deadline, worker_log_tail(home)
        b = client.read_flow_run(second.id)
        if a.state_type == StateType.RUNNING:
            assert b.state_type in WAITING, f"second run {b.state_name} during the first"
            waiting_seen.add(b.state_name)
        time.sleep(0.5)
    assert waiting_seen, "never saw the second run while the first ran"
    a, b = wait_final(client, first.id, home), wait_final(client, second.id, home)
    assert_completed(a, home)
    assert_completed(b, home)
    assert b.start_time >= a.end_time, "the two database runs overlapped"

    runs = completed_runs(imported)
    assert runs.height == 2
    first_run_id, second_run_id = runs["run_id"].to_list()

    artifacts = artifacts_of(client, first.id)
    clusters = artifacts["tribes-clusters"]
    with store.open(imported) as con:
        table = store.cluster_table(con, first_run_id)
    assert f"Interest clusters of run {first_run_id}" in clusters.data
    assert clusters.data.count("\n| ") == table.height + 1  # header + one row per cluster
    assert str(table["size"].sum()) + " users" in clusters.data
    assert artifacts["tribes-changes"].description.startswith("First completed run")
    report = imported.parent / "reports" / first_run_id / "report.html"
    assert ("tribes-report" in artifacts) == report.exists()
    if report.exists():
        assert f"({report.resolve().as_uri()})" in artifacts["tribes-report"].data

    [refresh_run] = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[second.id])
        )
    )
    changes = artifacts_of(client, refresh_run.id)["tribes-changes"]
    assert changes.description.startswith(f"Since run {first_run_id}: 0 users moved")
    assert json.loads(changes.data) == {c: [] for c in CHANGE_COLUMNS}  # clustered the same
    states = {
        t.name.rsplit("-", 1)[0]: t.state_name
        for t in client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[refresh_run.id]))
        )
    }
    assert {states[s] for s in ("clean", "embed", "profile", "reduce", "cluster", "label")} == {
        "Cached"
    }, states
    assert second_run_id != first_run_id


def test_a_locked_database_fails_a_task_that_its_retry_then_finishes(client, imported, home):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(imported)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        run = client.create_flow_run_from_deployment(
            deployment_id(client, "refresh/refresh"),
            parameters={"db": str(imported)},
            job_variables={"env": {"TRIBES_LOCK_WAIT_SECONDS": "3"}},
        )
        deadline = time.monotonic() + RUN_TIMEOUT
        begin = None
        while begin is None or begin.state_name not in ("AwaitingRetry", "Retrying"):
            assert time.monotonic() < deadline, worker_log_tail(home)
            assert client.read_flow_run(run.id).state_type not in FINAL, worker_log_tail(home)
            time.sleep(0.25)
            found = [
                t
                for t in client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
                )
                if t.name == "begin run"
            ]
            begin = found[0] if found else None
    finally:
        serve.stop(holder)
    assert_completed(wait_final(client, run.id, home), home)
    begin = client.read_task_run(begin.id)
    assert begin.state_name == "Completed" and begin.run_count >= 2
    assert "AwaitingRetry" in [s.name for s in client.read_task_run_states(begin.id)]
    logs = LogFilter(task_run_id=LogFilterTaskRunId(any_=[begin.id]))
    deadline = time.monotonic() + 20  # logs reach the API in batches
    while not any("locked" in log.message for log in client.read_logs(log_filter=logs)):
        assert time.monotonic() < deadline, "no log says the database was locked"
        time.sleep(1)
    assert completed_runs(imported).height == 3
