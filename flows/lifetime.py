"""How a `tribes` process ends: Ctrl-C and SIGTERM stop it within seconds, and the processes it
starts (the Scrapy crawl, Prefect's temporary API server) die with it, even when it is killed -9.

Children run in their own session, so a Ctrl-C in the terminal reaches `tribes` alone: it marks
its run or crawl failed and stops them itself. On Linux each child also gets the parent-death
signal (prctl PR_SET_PDEATHSIG), so the kernel kills it when `tribes` dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Sequence
from typing import IO, Any

GRACE_SECONDS = 5.0  # cleanup time after Ctrl-C or SIGTERM before the process exits regardless
CHILD_STOP_SECONDS = 3.0  # a child's time to end after SIGTERM before it is killed
PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_stopping = threading.Event()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the command stops, marking its run or crawl failed on the way out."""


def stop_on_signals() -> None:
    """Make SIGINT and SIGTERM raise `Interrupted` in the main thread. From the first signal the
    process has GRACE_SECONDS to clean up; then, or at a second signal, it exits regardless."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers belong to the main thread (e.g. a CLI invoked from a test thread)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)


def _interrupt(signum: int, _frame: types.FrameType | None) -> None:
    if _stopping.is_set():
        os._exit(128 + signum)
    _stopping.set()
    # a C-level watchdog: it ends the process even while the main thread holds the GIL
    faulthandler.dump_traceback_later(GRACE_SECONDS, exit=True, file=open(os.devnull, "w"))  # noqa: SIM115
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def was_interrupted(error: BaseException) -> bool:
    """Whether `error` is Ctrl-C or SIGTERM (ours, or Prefect's bridge for SIGTERM in a flow)."""
    from prefect.exceptions import TerminationSignal

    return isinstance(error, (KeyboardInterrupt, TerminationSignal))


def failure_reason(error: BaseException) -> str:
    """What a failed run or crawl records as its error."""
    if was_interrupted(error):
        return "interrupted (Ctrl-C or SIGTERM)"
    return f"{type(error).__name__}: {error}"


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> None:
    """In a new child, before it runs its program: ask the kernel to send it `signum` when its
    parent ends; if the parent has ended already, end now."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def child_options() -> dict[str, Any]:
    """Popen options for a child that dies with this process and ignores the terminal's Ctrl-C.

    The kernel's parent is the starting thread: start long-lived children from the main thread.
    """
    parent = os.getpid()
    return {"start_new_session": True, "preexec_fn": lambda: die_with_parent(parent)}


def run_child(command: Sequence[str], **options: Any) -> int:
    """Run a child process to its end; if this process is interrupted meanwhile, stop the child
    (SIGTERM, then SIGKILL after CHILD_STOP_SECONDS) before passing the interruption on."""
    with subprocess.Popen(command, **child_options(), **options) as child:
        return wait_or_stop(child)


def wait_or_stop(child: subprocess.Popen | Standby) -> int:
    """Wait for a started child's exit status; stop it when this process is interrupted."""
    try:
        while True:  # short waits: a signal that lands on another thread is seen here too
            try:
                return child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
    except BaseException:
        child.terminate()
        try:
            child.wait(CHILD_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
        raise


def fork(child: Callable[[], int]) -> int:
    """Fork a child that runs `child()` and exits with its status: it never returns into the
    caller's code, even when a signal arrives at once (SIGINT and SIGTERM are held until it
    runs). Returns the child's pid. Fork only while no other thread runs."""
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
                status = child()
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
    return pid


class Standby:
    """A child forked now, while this process has one thread and its modules loaded, that later
    runs `target(args)` once, its output going to a file: a warm start for a program that
    needs a fresh process each time (a Scrapy crawl), without a new Python and its imports.

    Fork only where no other thread runs (a thread's locks would stay locked in the child). The
    child dies with this process, ignores the terminal's Ctrl-C and ends at once if never used.
    """

    def __init__(self, target: Callable[[list[str]], int]) -> None:
        parent = os.getpid()
        ours, theirs = socket.socketpair()

        def standby() -> int:
            ours.close()
            die_with_parent(parent)
            os.setsid()
            return _run_when_asked(theirs, target)

        self.pid = fork(standby)
        theirs.close()
        self._channel: socket.socket | None = ours
        self.returncode: int | None = None

    def start(self, args: list[str], output: IO) -> Standby:
        """Run the target with `args`, its stdout and stderr into `output`."""
        if self._channel is None:
            raise RuntimeError("a standby process runs once")
        socket.send_fds(self._channel, [json.dumps(args).encode()], [output.fileno()])
        self._channel.close()
        self._channel = None
        return self

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
            elif time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"standby {self.pid}", timeout)
            else:
                time.sleep(0.05)
        return self.returncode

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


def unconfigure_logging() -> None:
    """Logging as a new Python has it: no handlers, levels or filters another library set up
    (Prefect's, in a process forked from one that imported it)."""
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            logger.handlers.clear()
            logger.filters.clear()
            logger.setLevel(logging.NOTSET)
            logger.propagate = True
            logger.disabled = False
    logging.getLogger().setLevel(logging.WARNING)


def _run_when_asked(channel: socket.socket, target: Callable[[list[str]], int]) -> int:
    """The standby child: wait for the arguments and the output file, run, return the status."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    try:
        message, fds, _, _ = socket.recv_fds(channel, 1 << 20, 1)
    except OSError:
        return 1
    if not message or not fds:
        return 0  # never used
    for stream in (1, 2):
        os.dup2(fds[0], stream)
    unconfigure_logging()
    try:
        return target(json.loads(message))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class _ChildPopen(subprocess.Popen):
    """subprocess.Popen whose children die with this process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**child_options(), **kwargs})


def tie_temporary_server() -> None:
    """Prefect's temporary API server (started when PREFECT_API_URL is unset) dies with us.

    Prefect starts it with `subprocess.Popen` from its server module and offers no hook, so that
    module alone is given a `subprocess` whose Popen sets the parent-death signal.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return  # a real server: nothing of ours to tie (and its module is not worth importing)
    from prefect.server.api import server

    if getattr(server.subprocess, "Popen", None) is _ChildPopen:
        return
    module = types.ModuleType("subprocess", subprocess.__doc__)
    module.__dict__.update(vars(subprocess), Popen=_ChildPopen)
    server.subprocess = module
