"""The warm crawl service: `tribes crawl` starts in about two seconds while `make serve` runs.

A cold `tribes crawl` spends seconds on imports (Prefect, Scrapy, polars, DuckDB) and on a new
Python for the Scrapy crawl. `make serve` also starts this service (`tribes crawl-service`): one
process that imports all that once, then waits on a Unix socket in the Prefect home (mode 600:
this user only). For each request it forks a child, which takes the caller's terminal (its
stdin, stdout and stderr are passed over the socket), working folder and environment and runs
the `tribes crawl` the caller asked for, with the same output and progress bars, against the
running Prefect server (the run is in its UI). The child first forks a standby process with
Scrapy loaded, which runs the crawl's first attempt (lifetime.Standby); a retry starts a cold one
as usual.

Stopping: Ctrl-C in the caller's terminal is forwarded; when the caller ends in any way (even
kill -9), its socket closes and the child stops as a Ctrl-C would stop it, marking the crawl
failed. The service forks only while it has one thread; its children die with it (a
parent-death signal). `tribes crawl` is the client (`forward`): it hands the command over before
it loads anything heavy, and runs the crawl itself when no service answers.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from flows import lifetime

SOCKET_NAME = "crawl.sock"  # in the Prefect home, beside serve.API_URL_FILE
CODE = [Path(__file__).resolve().parent.parent / name for name in ("flows", "pipeline", "scrapers")]
STALE = "the warm crawl service runs older Tribes code: restart `make serve` (crawling cold now)"
REQUEST_SECONDS = 5.0  # a caller sends its request at once; a silent one is dropped after this
PRELOADED = (  # imported once by the service (with every Scrapy component and spider)
    "flows.cli",
    "flows.crawl",
    "flows.assign",
    "flows.files",
    "flows.serve",
    "pipeline.ingest",
    "pipeline.people",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.utilities.visualization",
    "scrapers.run",
    "twisted.internet.asyncioreactor",
)
_in_service = False  # in a service child: its command runs there, never handed on again


def socket_path(home: Path) -> Path:
    return home / SOCKET_NAME


# ------------------------------------------------------------------ the client: `tribes crawl`


def forward(home: Path, argv: Sequence[str], warn: Callable[[str], None]) -> int | None:
    """Run `tribes ARGV` in the service of this Prefect home, on this terminal; its exit status,
    or None when no service answers or it declines, saying why through `warn` (then the caller
    runs the command itself)."""
    if _in_service or not on_real_streams():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        try:
            connection.connect(str(socket_path(home)))
        except OSError:  # none, or a stale socket of a stopped service
            return None
        request = {"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ)}
        socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        try:
            answer = last_message(connection)
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):
                connection.sendall(b"stop\n")  # the child stops as a Ctrl-C stops it
            with contextlib.suppress(OSError, KeyboardInterrupt):  # within this process's grace
                last_message(connection, timeout=lifetime.GRACE_SECONDS - 1)
            return 130
    if "declined" in answer:
        warn(answer["declined"])
        return None
    status = answer.get("exit")
    return status if isinstance(status, int) else 1


def answering(home: Path) -> bool:
    """Whether a service listens on this Prefect home's socket now."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(str(socket_path(home))) == 0


def on_real_streams() -> bool:
    """Whether stdin, stdout and stderr are this process's file descriptors 0-2 (not a test's
    captured output, which the service could not write to)."""
    try:
        return [sys.stdin.fileno(), sys.stdout.fileno(), sys.stderr.fileno()] == [0, 1, 2]
    except (AttributeError, ValueError, OSError):
        return False


def last_message(connection: socket.socket, timeout: float | None = None) -> dict:
    """The service's answer: the child's exit status ({"exit": N}) or why it declined; {} if it
    ended without one. Waits in short steps: a Ctrl-C that lands on another thread (a native
    library's) is seen here too."""
    deadline = None if timeout is None else time.monotonic() + timeout
    connection.settimeout(0.2)
    received = b""
    while True:
        try:
            chunk = connection.recv(4096)
        except TimeoutError:
            if deadline is not None and time.monotonic() > deadline:
                raise
            continue
        if not chunk:
            break
        received += chunk
    try:
        answer = json.loads(received)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def code_stamp() -> frozenset[tuple[str, int, int]]:
    """Tribes' Python files, each with its modification time and size (a few ms to read)."""
    return frozenset(
        (str(path), (stat := path.stat()).st_mtime_ns, stat.st_size)
        for folder in CODE
        for path in folder.rglob("*.py")
    )


# ------------------------------------------------------------------ the service: `make serve`


def serve(home: Path, run: Callable[[list[str]], int]) -> None:
    """Load everything a crawl needs, then answer requests until SIGINT or SIGTERM: each child
    runs `run(argv)` (a `tribes` command line; returns its exit status)."""
    preload()
    loaded = code_stamp()
    path = socket_path(home)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_mask)
    listener.listen(8)
    listener.settimeout(1.0)
    say(f"warm crawl service on {path}")
    try:
        while True:
            reap_children()
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                if not (request := receive(connection)):
                    continue
                if code_stamp() != loaded:
                    decline(connection, request, STALE)
                else:
                    start_child(listener, connection, request, run)
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def preload() -> None:
    """Import what a crawl uses, once, for every child. No thread may start (the service forks)
    nor a Twisted reactor be installed (each crawl installs its own)."""
    for module in PRELOADED:
        importlib.import_module(module)
    load_scrapy_components()
    rehearse_flow_call()
    if threading.active_count() != 1 or "twisted.internet.reactor" in sys.modules:
        raise RuntimeError("loading the crawl modules started a thread or a reactor")


def rehearse_flow_call() -> None:
    """Check and serialise a crawl's parameters once: what Prefect builds and imports for that
    the first time (pydantic models, its JSON encoder) is then ready in every child."""
    from flows.crawl import crawl

    parameters = {"db": "tribes.duckdb", "sources": "sources.yaml", "since": None}
    crawl.serialize_parameters(crawl.validate_parameters(parameters))


def load_scrapy_components() -> None:
    """Import every class the Scrapy settings name (middlewares, extensions, handlers...) and
    every spider, as a crawl would when it starts."""
    from scrapy.spiderloader import SpiderLoader
    from scrapy.utils.misc import load_object

    from scrapers.platforms import project_settings

    settings = project_settings()
    SpiderLoader.from_settings(settings)  # imports every spider module
    for value in settings.copy_to_dict().values():
        for name in [*value, *value.values()] if isinstance(value, dict) else [value]:
            if isinstance(name, str) and name.startswith(("scrapy.", "scrapers.")):
                with contextlib.suppress(Exception):  # optional parts (boto, h2) may be absent
                    load_object(name)


def receive(connection: socket.socket) -> dict | None:
    """A caller's request: its command line, folder, environment and standard streams (`fds`);
    None for a probe (`answering`), another user or a garbled request."""
    if caller(connection)[1] != os.getuid():  # the socket's mode says so too
        return None
    connection.settimeout(REQUEST_SECONDS)
    try:
        message, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
        while message and not message.endswith(b"\n"):  # a large environment: more parts
            message += connection.recv(1 << 16) or b"\n"
        request = json.loads(message) if message else None
    except (OSError, ValueError) as exc:
        say(f"a request could not be read: {exc}")
        return None
    finally:
        connection.settimeout(None)
    if not request or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return None
    return {**request, "fds": fds}


def decline(connection: socket.socket, request: dict, reason: str) -> None:
    """Answer that the caller should run its command itself, and why."""
    say(f"declined a request: {reason}")
    for fd in request["fds"]:
        os.close(fd)
    with contextlib.suppress(OSError):
        connection.sendall(json.dumps({"declined": reason}).encode())


def caller(connection: socket.socket) -> tuple[int, int]:
    """The calling process's pid and user id, from the kernel."""
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    pid, uid, _gid = struct.unpack("3i", credentials)
    return pid, uid


def reap_children() -> None:
    """Collect the children that ended, each with a line in the service's log."""
    with contextlib.suppress(ChildProcessError):
        while True:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                return
            say(f"pid {pid} exited with {os.waitstatus_to_exitcode(status)}")


def say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def start_child(
    listener: socket.socket,
    connection: socket.socket,
    request: dict,
    run: Callable[[list[str]], int],
) -> None:
    """Fork a child that runs the request on `connection` (the service goes back to waiting)."""
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()

    def child() -> int:
        listener.close()
        status = 1
        try:
            status = run_request(connection, request, parent, run)
        finally:
            with contextlib.suppress(OSError):
                connection.sendall(json.dumps({"exit": status}).encode())
        return status

    pid = lifetime.fork(child)
    for fd in request["fds"]:
        os.close(fd)
    say(f"pid {pid}: tribes crawl for pid {caller(connection)[0]}")


def run_request(
    connection: socket.socket, request: dict, parent: int, run: Callable[[list[str]], int]
) -> int:
    """In the child: take over the caller's terminal, folder and environment; run its command."""
    from flows import crawl

    lifetime.die_with_parent(parent, signal.SIGTERM)  # the crawl is marked failed on the way
    for stream, fd in enumerate(request["fds"]):
        os.dup2(fd, stream)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    global _in_service
    _in_service = True
    crawl.keep_spiders_warm()  # the standby fork, while this process has one thread
    threading.Thread(target=stop_when_caller_ends, args=(connection,), daemon=True).start()
    return run(request["argv"])


def stop_when_caller_ends(connection: socket.socket) -> None:
    """Ctrl-C forwarded, or the caller gone: stop as Ctrl-C stops a command (a SIGINT to the
    main thread)."""
    with contextlib.suppress(OSError):
        connection.recv(16)
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
