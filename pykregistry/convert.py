"""``pykregistry tree``, ``flamegraph`` and ``perfetto``: a trace recorded
as JSON lines (:class:`~pykregistry.JsonLines`, ``pykregistry run
--jsonl``), drawn as a tree or converted, in one streaming pass.

Each reads its file once, front to back, and keeps little of it: ``tree``
only the trees whose root has not arrived yet
(:class:`~pykregistry.trace_file.SpanTrees`), the conversions what the
native converters keep. A line that is not a span or an event is reported
on standard error as ``FILE:LINE: cause`` and left out, and so is a last
line cut short; what is good is still drawn or written, and the status is
then 1. On a terminal, a progress bar shows on standard error while a
conversion takes more than half a second.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from pathlib import Path
from typing import IO, Any

from pykregistry import _native
from pykregistry.progress import ProgressBar
from pykregistry.runner import can_encode, os_reason
from pykregistry.trace_file import SpanTrees, read_records
from pykregistry.tree import TreeStyle, wants_color

__all__ = ["add_convert_arguments", "add_tree_arguments", "flamegraph", "perfetto", "tree"]

# At most this many bad lines are reported one by one; the rest are counted.
REPORTED_BAD_LINES = 20


def add_tree_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE.jsonl", help="a trace written by JsonLines")
    parser.add_argument("--ids", action="store_true", help="show each span's trace_id and span_id")
    parser.add_argument("--ascii", action="store_true", help="draw the tree with ASCII only")
    parser.add_argument("--no-times", action="store_true", help="leave out durations (busy, idle)")
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the tree: on a terminal unless NO_COLOR is set (auto, the default), "
        "always, or never",
    )


def add_convert_arguments(parser: argparse.ArgumentParser, suffix: str) -> None:
    parser.add_argument("file", metavar="FILE.jsonl", help="a trace written by JsonLines")
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help=f"where to write (default: FILE with its suffix replaced by {suffix})",
    )


class _BadLines:
    """Reports the bad lines of ``path`` on standard error, the first
    :data:`REPORTED_BAD_LINES` one by one, and counts them."""

    def __init__(self, command: str, path: str, bar: ProgressBar) -> None:
        self.command = command
        self.path = path
        self.bar = bar
        self.count = 0

    def __call__(self, number: int, message: str) -> None:
        self.count += 1
        if self.count <= REPORTED_BAD_LINES:
            self.bar.clear()
            print(f"pykregistry {self.command}: {self.path}:{number}: {message}", file=sys.stderr)

    def summary(self, what: str) -> int:
        """Says how many lines were left out, if any; the exit status."""
        if not self.count:
            return 0
        lines = "line" if self.count == 1 else "lines"
        more = self.count - REPORTED_BAD_LINES
        shown = f" ({more} not shown)" if more > 0 else ""
        print(
            f"pykregistry {self.command}: {self.path}: {self.count} bad {lines} left out{shown}; "
            f"{what} from the rest",
            file=sys.stderr,
        )
        return 1


def _open(command: str, path: str) -> tuple[IO[bytes], int] | None:
    """The file to read and its size, or None after saying why not."""
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as e:
        print(f"pykregistry {command}: cannot read {path}: {os_reason(e)}", file=sys.stderr)
        return None
    try:
        size = os.fstat(stream.fileno()).st_size
    except OSError:
        size = 0
    return stream, size


# === tree ===


def tree(args: argparse.Namespace) -> int:
    """Draws the span trees of ``args.file`` on standard output, each as
    soon as its root's line has been read."""
    opened = _open("tree", args.file)
    if opened is None:
        return 1
    stream, size = opened
    out = sys.stdout
    color = {"always": True, "never": False}.get(args.color, wants_color(out))
    style = TreeStyle(
        ascii_only=args.ascii or not can_encode(out, "└├│•✗µ"),
        color=color,
        times=not args.no_times,
    )
    trees = SpanTrees(style, show_ids=args.ids)
    bar = ProgressBar(f"tree {Path(args.file).name}", size)
    # The bar and the tree on one terminal: the bar makes room for each tree.
    shared = bar.enabled and _is_terminal(out)
    bad = _BadLines("tree", args.file, bar)

    def write(tree: Iterable[str]) -> None:
        # A tree drawn from disk comes line by line: written in chunks.
        cleared = False
        lines = iter(tree)
        while chunk := list(islice(lines, 4096)):
            if shared and not cleared:
                bar.clear()
                cleared = True
            out.write("\n".join(chunk))
            out.write("\n")
        if cleared:
            out.flush()

    try:
        with stream, trees:
            progress = bar.update if bar.enabled else None
            for _, record in read_records(stream, on_bad_line=bad, on_progress=progress):
                write(trees.add(record))
            for lines in trees.finish():
                write(lines)
    except BrokenPipeError:  # standard output's reader went away
        bar.close()
        raise
    except OSError as e:  # the file, while reading it
        bar.close()
        print(f"pykregistry tree: cannot read {args.file}: {os_reason(e)}", file=sys.stderr)
        return 1
    except sqlite3.Error as e:  # the temporary file of a very large tree
        bar.close()
        print(f"pykregistry tree: cannot hold the trees on disk: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.close()
        return 130
    bar.close()
    return bad.summary("the trees were drawn")


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


# === flamegraph, perfetto ===


def flamegraph(args: argparse.Namespace) -> int:
    """Writes the flame graph of ``args.file`` (SVG, or folded stacks for a
    ``.folded`` output)."""
    return _convert(args, "flamegraph", "_jsonl_to_flamegraph", ".svg")


def perfetto(args: argparse.Namespace) -> int:
    """Writes ``args.file`` as a Chrome trace (JSON) that Perfetto opens."""
    return _convert(args, "perfetto", "_jsonl_to_chrome", ".json")


def _convert(args: argparse.Namespace, command: str, function: str, suffix: str) -> int:
    """Runs the native streaming converter ``function`` of
    ``pykregistry._native``: ``function(src, dst, progress=None)`` calls
    ``progress(bytes read)`` about every MiB, returns ``{"errors": [(line
    number, cause)], "error_count", ...}`` (the first 1,000 bad lines, and
    how many in all) and raises ``OSError`` for a file it cannot read or
    write."""
    src = args.file
    dst = args.output or str(Path(src).with_suffix(suffix))
    converter: Callable[..., Mapping[str, Any]] | None = getattr(_native, function, None)
    if converter is None:
        print(
            f"pykregistry {command}: this build of pykregistry cannot convert traces "
            f"(pykregistry._native.{function} is missing)",
            file=sys.stderr,
        )
        return 1
    opened = _open(command, src)
    if opened is None:
        return 1
    stream, size = opened
    stream.close()
    if os.path.exists(dst) and os.path.samefile(src, dst):
        print(f"pykregistry {command}: {dst} is the trace itself: give another -o", file=sys.stderr)
        return 2
    bar = ProgressBar(f"{command} {Path(src).name}", size)
    try:
        report = converter(src, dst, progress=bar.update if bar.enabled else None)
    except OSError as e:
        bar.close()
        which = os.fsdecode(e.filename) if e.filename else f"{src} or {dst}"
        print(f"pykregistry {command}: cannot convert {which}: {os_reason(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.close()
        return 130
    bar.close()
    bad = _BadLines(command, src, bar)
    for number, message in report.get("errors", ()):
        bad(number, message)
    bad.count = max(bad.count, int(report.get("error_count", 0)))
    return bad.summary(f"{dst} was written")
