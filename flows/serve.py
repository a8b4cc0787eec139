"""`make serve`: run Tribes from the Prefect UI on this machine.

Starts a Prefect server on 127.0.0.1 (analytics off, its database and results in the state
folder, not in $HOME), creates the process work pool `tribes` with a concurrency limit of 1,
registers every deployment of prefect.yaml, serves the run reports over HTTP and starts a
worker and the warm crawl service (flows/warm.py). Ctrl-C stops them, then the server. The
tests drive the same functions.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
POOL = "tribes"
PREFECT = [sys.executable, "-m", "prefect"]
API_URL_FILE = "api-url"  # in the Prefect home while `make serve` runs: `tribes` commands use it


class ServeError(RuntimeError):
    """A step of `make serve` failed; the message carries the command's output."""


def prefect_env(home: Path, port: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every Prefect process: this server, this home, no analytics."""
    home = home.resolve()
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_API_URL": f"http://{HOST}:{port}/api",
        "PREFECT_SERVER_API_HOST": HOST,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        **(extra or {}),
    }


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) != 0


def free_port() -> int:
    """A port on HOST that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start(command: list[str], env: Mapping[str, str], log: IO | None = None) -> subprocess.Popen:
    """Start a process in its own session (so `stop` ends it with all its children)."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
        start_new_session=True,
    )


def stop(process: subprocess.Popen, grace: float = 20.0) -> None:
    """Interrupt a started process group, then terminate, then kill what is left."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived their leader


def start_server(env: Mapping[str, str], port: int, log: IO | None = None) -> subprocess.Popen:
    if not port_free(port):
        raise ServeError(f"port {port} on {HOST} is taken (another `make serve`?)")
    return start(
        [*PREFECT, "server", "start", "--host", HOST, "--port", str(port), "--analytics-off"],
        env,
        log,
    )


def wait_healthy(api_url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    """Wait until the API answers its health check; fail early if the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServeError(f"the Prefect server exited with {process.returncode}")
        if healthy(api_url, timeout=5):
            return
        time.sleep(0.5)
    raise ServeError(f"the Prefect server at {api_url} was not healthy after {timeout:.0f}s")


def healthy(api_url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as answer:
            return answer.status == 200
    except (OSError, ValueError):
        return False


def announce(home: Path, api_url: str) -> Path:
    """Tell `tribes` commands sharing this Prefect home that a server runs at `api_url`."""
    path = home / API_URL_FILE
    path.write_text(api_url + "\n", encoding="utf-8")
    return path


def running_server(home: Path, timeout: float = 1.0) -> str | None:
    """The API URL `make serve` announced in `home`, if that server answers now."""
    try:
        api_url = (home / API_URL_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return api_url if api_url.startswith("http://") and healthy(api_url, timeout) else None


def prefect(args: list[str], env: Mapping[str, str], timeout: float = 300.0) -> str:
    """Run one `prefect` command to completion; returns its output."""
    done = subprocess.run(
        [*PREFECT, *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise ServeError(f"`prefect {' '.join(args)}` failed ({done.returncode}):\n{output}")
    return output


def create_pool(env: Mapping[str, str], name: str = POOL, limit: int = 1) -> None:
    """The process work pool, running at most `limit` flow runs at once."""
    prefect(["work-pool", "create", name, "--type", "process", "--overwrite"], env)
    prefect(["work-pool", "set-concurrency-limit", name, str(limit)], env)


def deploy_all(env: Mapping[str, str]) -> str:
    """Register every deployment of prefect.yaml (runs in the project folder), refusing unknown
    parameters."""
    output = prefect(["deploy", "--all"], env)
    forbid_unknown_parameters(env["PREFECT_API_URL"])
    return output


BUSY = {502, 503, 504}  # the server is busy (e.g. its SQLite database locked): ask again...
BUSY_WAITS = (1, 2, 4, 8)  # ...after these seconds (Prefect's own client retries these too)


def api(api_url: str, method: str, path: str, body: object) -> object:
    """One JSON request to the Prefect API, asked again while the server answers busy; returns
    the decoded answer (None when empty)."""
    request = urllib.request.Request(
        f"{api_url}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    for wait in BUSY_WAITS:
        try:
            return answer(request)
        except urllib.error.HTTPError as exc:
            if exc.code not in BUSY:
                raise
            time.sleep(wait)
    return answer(request)


def answer(request: urllib.request.Request) -> object:
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


def forbid_unknown_parameters(api_url: str) -> None:
    """Make every deployment's parameter schema refuse names its flow does not take.

    `prefect deploy` writes the flow's schema without `additionalProperties: false`, so the
    server accepted `{"bogus": 3}` and the run crashed; with it, the server refuses such a run
    (HTTP 409, naming the parameter) before creating it. Prefect's client model would drop the
    key, hence the plain PATCH.
    """
    for deployment in api(api_url, "POST", "/deployments/filter", {}):
        schema = {**deployment["parameter_openapi_schema"], "additionalProperties": False}
        api(
            api_url,
            "PATCH",
            f"/deployments/{deployment['id']}",
            {"parameter_openapi_schema": schema},
        )


def start_worker(
    env: Mapping[str, str], log: IO | None = None, pool: str = POOL
) -> subprocess.Popen:
    return start([*PREFECT, "worker", "start", "--pool", pool, "--type", "process"], env, log)


def start_warm_crawls(
    env: Mapping[str, str], home: Path, log: IO | None = None
) -> subprocess.Popen:
    """The warm crawl service (flows/warm.py): `tribes crawl` starts in about two seconds."""
    command = [sys.executable, "-m", "flows.cli", "--no-progress", "crawl-service", str(home)]
    return start(command, env, log)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        pass


def serve_reports(folder: Path, port: int) -> ThreadingHTTPServer:
    """Serve `folder` (the reports) on 127.0.0.1 from a daemon thread."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        server = ThreadingHTTPServer(
            (HOST, port), functools.partial(QuietHandler, directory=str(folder))
        )
    except OSError as exc:
        raise ServeError(f"cannot serve the reports on {HOST}:{port}: {exc}") from exc
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def interrupt_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4200, help="Prefect server and UI")
    parser.add_argument("--reports-port", type=int, default=4201, help="run reports over HTTP")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # where prefect.yaml, tribes.toml and the flows' working directory are
    from pipeline.settings import load_settings

    settings = load_settings()
    home = settings.state / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    reports_url = f"http://{HOST}:{args.reports_port}"
    env = prefect_env(home, args.port, {"TRIBES_REPORTS_URL": reports_url})
    interrupt_on_sigterm()
    started: list[subprocess.Popen] = []
    reports = announced = None
    try:
        with (
            (home / "server.log").open("a", encoding="utf-8") as server_log,
            (home / "warm.log").open("a", encoding="utf-8") as warm_log,
        ):
            print(f"starting the Prefect server (log: {home / 'server.log'})", flush=True)
            started.append(start_server(env, args.port, server_log))
            wait_healthy(env["PREFECT_API_URL"], started[0])
            announced = announce(home, env["PREFECT_API_URL"])
            create_pool(env)
            names = re.findall(r"Deployment '([^']+)' successfully", deploy_all(env))
            print(f"deployments on work pool {POOL!r}: {', '.join(names)}", flush=True)
            reports = serve_reports(settings.reports_dir, args.reports_port)
            started.append(start_worker(env))
            started.append(start_warm_crawls(env, home, warm_log))
            print(
                f"\nTribes UI: http://{HOST}:{args.port}  (reports: {reports_url}; Ctrl-C stops)\n",
                flush=True,
            )
            while all(p.poll() is None for p in started):
                time.sleep(1)
            print("a Prefect process exited; stopping the rest", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("\nstopping the worker and the server", flush=True)
        return 0
    except ServeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if announced is not None:
            announced.unlink(missing_ok=True)
        for process in reversed(started):
            stop(process)
        if reports is not None:
            reports.shutdown()


if __name__ == "__main__":
    sys.exit(main())
