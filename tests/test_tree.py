"""The span tree with time (issue 12 part 3): ``TreeRecorder.render()`` and
``render_tree`` show each span's duration, busy and idle where a span
waited, errors marked, colour on a terminal only."""

from __future__ import annotations

import io
import re
import time
from typing import Any

import pytest

from pykregistry import Level, Registry
from pykregistry.tree import (
    IDLE_SHOWN_FROM_NS,
    RecordedSpan,
    TreeRecorder,
    format_duration,
    render_tree,
    wants_color,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
UNITS = {"ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9, "min": 60e9, "h": 3600e9}


def duration_ns(text: str) -> float:
    """The number of ns that a duration as format_duration writes it says."""
    value, unit = text.split(" ")
    return float(value) * UNITS[unit]


def span(
    name: str = "x",
    *,
    seq: int = 0,
    parent_seq: int | None = None,
    busy_ns: int | None = None,
    idle_ns: int | None = None,
    closed: bool = True,
    **fields: object,
) -> RecordedSpan:
    return RecordedSpan(
        seq=seq,
        id=seq + 1,
        name=name,
        target="app",
        level=Level.INFO,
        fields=dict(fields),
        parent_id=None,
        parent_seq=parent_seq,
        thread="MainThread",
        closed_seq=seq if closed else None,
        busy_ns=busy_ns,
        idle_ns=idle_ns,
    )


# === durations ===


@pytest.mark.parametrize(
    ("ns", "shown"),
    [
        (0, "0 ns"),
        (850, "850 ns"),
        (999, "999 ns"),
        (1_000, "1 µs"),
        (12_345, "12.3 µs"),
        (340_000, "340 µs"),
        (999_960, "1 ms"),  # 999.96 µs rounds up to the next unit
        (1_204_000, "1.2 ms"),
        (2_012_000_000, "2.01 s"),
        (59_000_000_000, "59 s"),
        (1_000_000_000_000, "16.7 min"),
        (7_200_000_000_000, "2 h"),
    ],
)
def test_durations_read_as_a_person_would_write_them(ns: int, shown: str) -> None:
    assert format_duration(ns) == shown
    assert format_duration(ns, ascii_only=True) == shown.replace("µs", "us")


def test_a_span_shows_its_duration_after_its_name(reg: Registry) -> None:
    recorder = TreeRecorder()
    reg.add_layer(recorder)
    with reg.span("request", target="app"):
        time.sleep(0.02)
    line = recorder.render(color=False)
    found = re.fullmatch(r"request  (\S+ \S+)  app INFO", line)
    assert found, line
    (record,) = recorder.spans
    assert record.duration_ns is not None
    assert 0.02e9 <= record.duration_ns < 5e9
    # The text says the span's own duration, to three significant digits.
    assert duration_ns(found[1]) == pytest.approx(record.duration_ns, rel=0.006)
    assert render_tree(recorder.spans, times=False, color=False) == "request  app INFO"


def test_a_span_that_waited_shows_busy_and_idle(reg: Registry) -> None:
    """A span created, then entered later (a worker's span handed to a
    thread), was idle for most of its life: the tree says so."""
    recorder = TreeRecorder()
    reg.add_layer(recorder)
    s = reg.span("worker", target="app")
    time.sleep(0.02)
    with s.entered():
        time.sleep(0.005)
    s.close()
    line = recorder.render(color=False)
    found = re.fullmatch(r"worker  (\S+ \S+) \(busy (\S+ \S+), idle (\S+ \S+)\)  app INFO", line)
    assert found, line
    total, busy, idle = (duration_ns(found[i]) for i in (1, 2, 3))
    assert busy >= 0.005e9
    assert idle >= 0.02e9
    assert total == pytest.approx(busy + idle, rel=0.01)


@pytest.mark.parametrize(
    ("busy_ns", "idle_ns", "shown"),
    [
        (1_000_000, 2_000_000, "x  3 ms (busy 1 ms, idle 2 ms)  app INFO"),
        (1_000_000, 200_000, "x  1.2 ms (busy 1 ms, idle 200 µs)  app INFO"),
        # Idle but briefly: the few µs layers take between creation and entry.
        (1_000, IDLE_SHOWN_FROM_NS - 1, "x  51 µs  app INFO"),
        # Idle for long, but for little of the span's life.
        (10_000_000, 900_000, "x  10.9 ms  app INFO"),
        (5, 0, "x  5 ns  app INFO"),
    ],
)
def test_busy_and_idle_show_where_the_span_waited(busy_ns: int, idle_ns: int, shown: str) -> None:
    assert render_tree([span(busy_ns=busy_ns, idle_ns=idle_ns)], color=False) == shown


def test_open_and_unended_spans_have_no_duration(reg: Registry) -> None:
    recorder = TreeRecorder()
    reg.add_layer(recorder)
    with reg.span("outer", target="app") as outer:
        kept = outer.clone()  # outer ends at its block's end, closes later
        with reg.span("inner", target="app"):
            running = recorder.render(color=False)
    ended = recorder.render(color=False)
    kept.close()
    closed = recorder.render(color=False)
    assert running == "outer  app INFO  (open)\n└── inner  app INFO  (open)"
    assert re.fullmatch(r"outer  \S+ \S+  app INFO  \(open\)\n└── inner  \S+ \S+  app INFO", ended)
    assert re.fullmatch(r"outer  \S+ \S+  app INFO\n└── inner  \S+ \S+  app INFO", closed)


# === errors, colour ===


def test_a_span_an_exception_left_is_marked(reg: Registry) -> None:
    recorder = TreeRecorder()
    reg.add_layer(recorder)
    with reg.span("request", target="app"):
        with pytest.raises(KeyError), reg.span("lookup", target="app"):
            raise KeyError("user:1")
        with reg.span("fine", target="app"):
            pass
    drawn = render_tree(recorder.spans, color=False, times=False).splitlines()
    assert drawn[0] == "request  app INFO"
    assert drawn[1].startswith("├── ✗ lookup  app INFO  error=True exception.type='KeyError'")
    assert drawn[2] == "└── fine  app INFO"
    assert [s.error for s in recorder.spans] == [False, True, False]
    ascii_drawn = render_tree(recorder.spans, color=False, times=False, ascii_only=True)
    assert ascii_drawn.splitlines()[1].startswith("|-- X lookup  app INFO")


@pytest.mark.parametrize(
    ("fields", "marked"),
    [
        ({"error": True}, True),
        ({"exception.type": "ValueError"}, True),
        ({"error": False}, False),
        ({"error": "yes"}, False),  # only the flag that @instrument and with-blocks set
        ({}, False),
    ],
)
def test_what_counts_as_an_error(fields: dict[str, Any], marked: bool) -> None:
    line = render_tree([span("x", **fields)], color=False, times=False)
    assert line.startswith("✗ x  ") is marked
    assert line.startswith("x  ") is not marked


def test_colour_when_asked_and_plain_text_otherwise() -> None:
    spans = [
        span("request", busy_ns=2_000_000, idle_ns=0),
        span("charge", seq=1, parent_seq=0, busy_ns=1_000, idle_ns=0, error=True),
    ]
    coloured = render_tree(spans, color=True)
    plain = render_tree(spans, color=False)
    assert ANSI.search(coloured)
    assert not ANSI.search(plain)
    # The same text once the colours are taken out.
    assert ANSI.sub("", coloured) == plain
    # The error in red, the duration in its own colour.
    assert "\x1b[1m\x1b[31m✗ charge\x1b[0m" in coloured
    assert "\x1b[36m2 ms\x1b[0m" in coloured
    # Standard output is not a terminal under pytest: auto is plain.
    assert render_tree(spans) == plain


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_auto_follows_the_terminal_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert wants_color(FakeTerminal())
    assert not wants_color(io.StringIO())
    assert not wants_color(object())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_color(FakeTerminal())
    monkeypatch.setenv("NO_COLOR", "")  # empty: as if unset (no-color.org)
    assert wants_color(FakeTerminal())
    monkeypatch.setenv("TERM", "dumb")
    assert not wants_color(FakeTerminal())
    # render(color=None) asks about standard output.
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr("sys.stdout", FakeTerminal())
    assert ANSI.search(render_tree([span(busy_ns=1, idle_ns=0)]))
