"""Reading a trace that JsonLines recorded (``pykregistry.trace_file``),
line by line: the trees drawn as their roots arrive are the ones the
recorder drew; bad lines are reported by number and skipped."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from pykregistry import JsonLines, Level, Registry
from pykregistry.trace_file import SpanTrees, read_records
from pykregistry.tree import TreeRecorder, TreeStyle


def record_workload(reg: Registry) -> None:
    with reg.span("request", target="app", path="/"):
        with reg.span("auth", target="app", level="debug", user="ada"):
            pass
        for row in range(2):
            with reg.span("db.query", target="app.db", row=row):
                reg.event("slow", level=Level.WARN, target="app.db", ms=12)
        with pytest.raises(ValueError, match="declined"), reg.span("charge", target="app"):
            raise ValueError("declined")
    with reg.span("cache.refresh", target="app"):
        pass


def draw_file(path: Path, **style: Any) -> tuple[list[str], list[tuple[int, str]]]:
    bad: list[tuple[int, str]] = []
    trees = SpanTrees(TreeStyle(**style))
    lines: list[str] = []
    with path.open("rb") as f:
        for _, record in read_records(f, on_bad_line=lambda n, m: bad.append((n, m))):
            lines += trees.add(record)
    for tree in trees.finish():
        lines += tree
    return lines, bad


def test_a_recorded_file_draws_the_tree_the_recorder_drew(reg: Registry, tmp_path: Path) -> None:
    """Times included: the file carries the same busy and idle times."""
    recorder = TreeRecorder()
    path = tmp_path / "trace.jsonl"
    with JsonLines(path) as trace:
        reg.add_layer(recorder)
        reg.add_layer(trace)
        record_workload(reg)
    lines, bad = draw_file(path)
    assert bad == []
    assert "\n".join(lines) == recorder.render(color=False)
    assert len(lines) == 8


def test_trees_are_drawn_as_their_root_arrives() -> None:
    """Children come before their parent; a tree is handed out when its
    root's line is read, and nothing of it is kept after."""
    trees = SpanTrees(TreeStyle(times=False))
    assert trees.add(span_line("leaf", "c", parent="b", start=3)) == []
    assert trees.add(span_line("mid", "b", parent="a", start=2)) == []
    assert trees.add(span_line("other", "d", parent="a", start=4)) == []
    assert trees.waiting == 1  # a's two children wait for it
    drawn = trees.add(span_line("root", "a", start=1))
    assert drawn == [
        "root  app INFO",
        "├── mid  app INFO",
        "│   └── leaf  app INFO",
        "└── other  app INFO",
    ]
    assert trees.waiting == 0
    assert list(trees.finish()) == []


def test_a_registry_root_continuing_a_trace_is_drawn_at_once() -> None:
    """A root in its registry whose trace parent is elsewhere (a remote
    parent, or one that closed before it was made): nothing later in the
    file is its parent."""
    trees = SpanTrees(TreeStyle(times=False))
    drawn = trees.add(span_line("child", "b", parent="remote00", start=1, parent_id=None))
    assert drawn == ["child  app INFO"]
    assert trees.waiting == 0


def test_spans_whose_parent_never_came_are_drawn_at_the_end() -> None:
    trees = SpanTrees(TreeStyle(times=False))
    assert trees.add(span_line("late", "c", parent="a", start=5)) == []
    assert trees.add(span_line("early", "b", parent="a", start=2)) == []
    (group,) = trees.finish()
    assert group == [
        "? " + "a".rjust(16, "0") + "  (no line for this span before its children)",
        "├── early  app INFO",
        "└── late  app INFO",
    ]


def test_a_deep_chain_draws_without_recursion() -> None:
    trees = SpanTrees(TreeStyle(times=False, ascii_only=True))
    depth = 20_000
    for i in range(depth, 0, -1):
        assert trees.add(span_line(f"s{i}", str(i), parent=str(i - 1), start=i)) == []
    drawn = trees.add(span_line("s0", "0", start=0))
    assert len(drawn) == depth + 1
    assert drawn[-1] == "    " * (depth - 1) + "`-- s20000  app INFO"


def span_line(
    name: str,
    span_id: str,
    *,
    parent: str | None = None,
    start: int = 0,
    parent_id: int | None = 1,
    trace: str = "0af7651916cd43dd8448eb211c80319c",
) -> dict[str, Any]:
    """A span as JsonLines writes it, with ids padded to their widths."""
    return {
        "type": "span",
        "id": 1,
        "parent_id": parent_id if parent is not None else None,
        "trace_id": trace,
        "span_id": span_id.rjust(16, "0"),
        "parent_span_id": parent.rjust(16, "0") if parent is not None else None,
        "name": name,
        "target": "app",
        "level": "INFO",
        "start_time_ns": start,
        "end_time_ns": start + 1,
        "busy_ns": 1,
        "idle_ns": 0,
        "fields": {},
    }


def test_bad_lines_are_reported_with_their_numbers_and_skipped() -> None:
    good = [json.dumps(span_line("leaf", "b", parent="a")), json.dumps(span_line("root", "a"))]
    no_name = span_line("x", "c")
    del no_name["name"]
    wrong = span_line("x", "d")
    wrong["busy_ns"] = "12"
    text = "\n".join(
        [
            good[0],
            '{"type": "span", oops',
            "",
            "[1, 2]",
            json.dumps(no_name),
            json.dumps(wrong),
            '{"type": "metric", "value": 1}',  # another type: skipped, not an error
            '{"no": "type"}',
            good[1],
            '{"type": "span", "na',
        ]
    ).encode()
    bad: list[tuple[int, str]] = []
    seen = []
    progress: list[int] = []
    for number, record in read_records(
        io.BytesIO(text + b'\n{"cut'),
        on_bad_line=lambda n, m: bad.append((n, m)),
        on_progress=progress.append,
    ):
        seen.append((number, record["name"]))
    assert seen == [(1, "leaf"), (9, "root")]
    assert bad == [
        (2, "not JSON: Expecting property name enclosed in double quotes (column 18)"),
        (4, "not a span or an event: a JSON array"),
        (5, 'a span without "name"'),
        (6, 'a span whose "busy_ns" is a JSON string, not an integer'),
        (8, 'not a span or an event: no "type"'),
        (10, "not JSON: Invalid control character at (column 21)"),
        (11, "cut short: the file ends inside this line"),
    ]
    assert progress[-1] == len(text) + 1 + len(b'{"cut')
    assert progress == sorted(progress)


def test_a_line_that_is_not_utf8_is_a_bad_line() -> None:
    bad: list[tuple[int, str]] = []
    records = list(
        read_records(io.BytesIO(b'{"a": "\xff"}\n'), on_bad_line=lambda *b: bad.append(b))
    )
    assert records == []
    assert bad == [(1, "not JSON: not UTF-8 (byte 8)")]
