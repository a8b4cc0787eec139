"""The consoles the `tribes` command prints through: crawled text never reaches the terminal
as control codes (a display name holding `ESC[2J` or an OSC title sequence is shown inert)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from rich.console import Console, ConsoleOptions, RenderableType
from rich.progress import TaskID
from rich.segment import Segment
from rich.text import Text

CONTROL = re.compile(
    r"\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC ... up to BEL or ST (title, hyperlink)
    r"|\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI: cursor, erase, colours
    r"|\x1b[ -~]?"  # any other escape
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"  # C0 but tab and newline, DEL, C1 (\x9b is CSI too)
    r"|[\u202a-\u202e\u2066-\u2069]"  # bidi embeddings, overrides and isolates
)


def printable(text: str) -> str:
    """`text` without terminal control sequences or characters (tab and newline stay)."""
    return CONTROL.sub("", text)


class SafeConsole(Console):
    """A rich Console that strips control characters from all text it prints: strings when they
    become Text (so tables measure what is shown), and every rendered segment (so a Text built
    elsewhere is covered too). Rich's own styling codes are added after this, untouched."""

    def render_str(self, text: str, **options) -> Text:
        return super().render_str(printable(text), **options)

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or not CONTROL.search(segment.text):
                yield segment
            else:
                yield Segment(printable(segment.text), segment.style)


class ProgressBars:
    """pipeline/progress.py's display: one rich bar (or spinner) per task, on `console`; a finished
    task stays as one line with its outcome."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bars = Progress(
            SpinnerColumn(finished_text="✓"),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressBars:
        self.bars.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.bars.stop()

    def start(self, key: str, description: str, total: float | None) -> None:
        self.tasks[key] = self.bars.add_task(printable(description), total=total, note="")

    def update(self, key: str, completed: float, total: float | None, note: str) -> None:
        if key in self.tasks:
            self.bars.update(self.tasks[key], completed=completed, note=printable(note))
            if total is not None:
                self.bars.update(self.tasks[key], total=total)

    def finish(self, key: str, note: str) -> None:
        if key in self.tasks:
            task = self.tasks.pop(key)
            total = self.bars.tasks[task].total or 1
            self.bars.update(task, total=total, completed=total, note=printable(note))
            self.bars.stop_task(task)
