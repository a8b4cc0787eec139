"""How a `tribes` process ends: Ctrl-C and SIGTERM stop it within seconds, and the processes it
starts (the Scrapy crawl, Prefect's temporary API server) die with it, even when it is killed -9.

Children run in their own session, so a Ctrl-C in the terminal reaches `tribes` alone: it marks
its run or crawl failed and stops them itself. On Linux each child also gets the parent-death
signal (prctl PR_SET_PDEATHSIG), so the kernel kills it when `tribes` dies without cleaning up.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import subprocess
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

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


def _die_with_parent(parent: int) -> None:
    """In a new child, before it runs its program: ask the kernel to kill it when its parent
    ends; if the parent has ended already, end now."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def child_options() -> dict[str, Any]:
    """Popen options for a child that dies with this process and ignores the terminal's Ctrl-C.

    The kernel's parent is the starting thread: start long-lived children from the main thread.
    """
    parent = os.getpid()
    return {"start_new_session": True, "preexec_fn": lambda: _die_with_parent(parent)}


def run_child(command: Sequence[str], **options: Any) -> int:
    """Run a child process to its end; if this process is interrupted meanwhile, stop the child
    (SIGTERM, then SIGKILL after CHILD_STOP_SECONDS) before passing the interruption on."""
    with subprocess.Popen(command, **child_options(), **options) as child:
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
