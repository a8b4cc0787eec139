"""What a long command reports while it works (rows imported, refresh stages, texts embedded,
accounts crawled). Flows call `start`, `advance` and `finish`; nothing is shown unless the CLI
installed a display with `showing` (rich bars on stderr, when it is a terminal or forced)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Display(Protocol):
    def start(self, key: str, description: str, total: float | None) -> None: ...
    def update(self, key: str, completed: float, total: float | None, note: str) -> None: ...
    def finish(self, key: str, note: str) -> None: ...


_display: Display | None = None
_started: dict[str, float] = {}


@contextmanager
def showing(display: Display) -> Iterator[None]:
    """Send this process's progress to `display` while the block runs."""
    global _display
    _display, before = display, _display
    try:
        yield
    finally:
        _display = before


def start(key: str, description: str, total: float | None = None) -> None:
    """A new task `key` (a bar when `total` is known, a spinner otherwise)."""
    _started[key] = time.monotonic()
    if _display:
        _display.start(key, description, total)


def advance(key: str, completed: float, total: float | None = None, note: str = "") -> None:
    """Task `key` has `completed` of `total` units done; `note` says more (e.g. a rate)."""
    if _display:
        _display.update(key, completed, total, note)


def finish(key: str, note: str = "") -> None:
    """Task `key` is done; `note` is its outcome (e.g. `cached`)."""
    if _display:
        _display.finish(key, note)


def rate(key: str, completed: float, unit: str) -> str:
    """`completed` units since `start(key)` as a rate, e.g. `12 posts/s`."""
    seconds = time.monotonic() - _started.get(key, time.monotonic())
    return f"{completed / seconds:.0f} {unit}/s" if seconds > 0 else ""
