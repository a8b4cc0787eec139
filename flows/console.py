"""The consoles the `tribes` command prints through: crawled text never reaches the terminal
as control codes (a display name holding `ESC[2J` or an OSC title sequence is shown inert)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from rich.console import Console, ConsoleOptions, RenderableType
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
