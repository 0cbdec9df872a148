"""A progress bar on standard error for the command line's long
conversions, drawn only on a terminal.

Standard library only: a bar is one line redrawn in place (``\\r`` and
"erase to end of line"), a few times a second at most, which is all a
conversion needs and not worth a dependency.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """Shows how much of ``total`` bytes a task has done, on ``stream``
    (standard error by default) when it is a terminal; on anything else it
    does nothing, so a log or a pipe never gets one.

    The bar appears once the task has run for ``delay`` seconds (a short
    one shows none), is redrawn at most every ``interval`` seconds, and
    :meth:`close` erases it. Whoever writes to the same terminal meanwhile
    calls :meth:`clear` first; the next :meth:`update` draws the bar again.
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: TextIO | None = None,
        delay: float = 0.5,
        interval: float = 0.1,
        enabled: bool | None = None,
    ) -> None:
        self.label = label
        self.total = max(total, 0)
        self._stream = sys.stderr if stream is None else stream
        self.enabled = _is_terminal(self._stream) if enabled is None else enabled
        self._started = time.monotonic()
        self._next_draw = self._started + delay
        self._interval = interval
        self.shown = False
        """Whether the bar is on the terminal now."""

    def __repr__(self) -> str:
        return f"ProgressBar({self.label!r}, {self.total}, enabled={self.enabled})"

    def update(self, done: int) -> None:
        """Notes that ``done`` bytes are done; redraws the bar if it is time."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next_draw:
            return
        self._next_draw = now + self._interval
        self._draw(done, now)

    def _draw(self, done: int, now: float) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        fraction = min(done / self.total, 1.0) if self.total else 0.0
        elapsed = now - self._started
        text = f" {fraction:4.0%}  {_size(done)} / {_size(self.total)}  {elapsed:.0f} s"
        if fraction > 0.01:
            text += f", {max(elapsed / fraction - elapsed, 0):.0f} s left"
        label = self.label
        room = width - len(text) - 4
        bar_width = min(40, room - len(label) - 1)
        if bar_width < 10:  # a narrow terminal: the label goes first
            label = ""
            bar_width = min(40, room)
        line = text
        if bar_width >= 5:
            filled = round(fraction * bar_width)
            line = f"[{'#' * filled}{'-' * (bar_width - filled)}]" + line
        if label:
            line = f"{label} {line}"
        self._write("\r" + line[: max(width - 1, 1)] + "\x1b[K")
        self.shown = True

    def clear(self) -> None:
        """Erases the bar, so that other output can use the line."""
        if self.shown:
            self._write("\r\x1b[K")
            self.shown = False

    def close(self) -> None:
        """Erases the bar for good."""
        self.clear()
        self.enabled = False

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # the terminal went away: no more bar
            self.enabled = False


def _is_terminal(stream: TextIO) -> bool:
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    size, unit = n / 1000, "KB"
    for larger in ("MB", "GB"):
        if size < 1000:
            break
        size, unit = size / 1000, larger
    return f"{size:.1f} {unit}"
