"""Record spans as they open and close, and draw them as a tree.

:class:`TreeRecorder` is a layer: add it to a registry and it keeps one
:class:`RecordedSpan` per span created (and one :class:`RecordedEvent` per
event), linked to its parent by sequence number. Span IDs are unique only
among live spans and recur once a slot has been reused
:data:`pykregistry.GENERATIONS` times, so the recorder numbers spans in the
order they were created and links parents by that number, which never recurs.

    >>> from pykregistry import Registry
    >>> from pykregistry.tree import TreeRecorder
    >>> recorder = TreeRecorder()
    >>> reg = Registry(layers=[recorder])
    >>> with reg.span("request", target="app", path="/"):
    ...     with reg.span("db.query", target="app.db", level="debug"):
    ...         pass
    >>> print(recorder.render(times=False))
    request  app INFO  path='/'
    └── db.query  app.db DEBUG

By default each span also shows how long it took (its end minus its start,
in the unit that suits it: ``850 ns``, ``340 µs``, ``1.2 ms``, ``2.01 s``),
and how much of that it was entered (busy) and live but entered nowhere
(idle) when it was idle for a noticeable part of it; ``times=False``, as
above, gives output that does not vary from run to run. A span that
recorded an error (``error=True``, or an ``exception.type`` field) is
marked ``✗``. On a terminal the tree is coloured (unless ``NO_COLOR`` is
set)::

    request  1.32 ms  app INFO  path='/'
    ├── ✗ charge  240 µs  app INFO  error=True exception.type='ValueError'
    └── db.query  3.02 ms (busy 1.2 ms, idle 1.82 ms)  app.db DEBUG
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pykregistry._native import Event, SpanRef
    from pykregistry.level import Level

__all__ = [
    "IDLE_SHOWN_FROM_NS",
    "RecordedEvent",
    "RecordedSpan",
    "TreeRecorder",
    "TreeStyle",
    "format_duration",
    "render_tree",
    "wants_color",
]


@dataclass
class RecordedSpan:
    """A span as the recorder saw it.

    ``fields`` are those given at creation, replaced at close by the span's
    final fields (so values recorded later show). ``parent_seq`` is the
    parent's ``seq``, or ``None`` for a root or a parent the recorder never
    saw.
    """

    seq: int
    id: int
    name: str
    target: str
    level: Level
    fields: dict[str, object]
    parent_id: int | None
    parent_seq: int | None
    thread: str
    closed_seq: int | None = None
    """Position in the order spans closed, or ``None`` while open."""
    busy_ns: int | None = None
    """Time the span was entered, in ns, fixed at its end; ``None`` until
    it ends."""
    idle_ns: int | None = None
    """Time the span was live but entered nowhere, in ns, fixed at its end;
    ``None`` until it ends."""

    @property
    def duration_ns(self) -> int | None:
        """From the span's start to its end, in ns (``busy_ns + idle_ns``);
        ``None`` until it ends."""
        if self.busy_ns is None or self.idle_ns is None:
            return None
        return self.busy_ns + self.idle_ns

    @property
    def error(self) -> bool:
        """Whether the span recorded an error: ``error=True`` or an
        ``exception.type`` field (what ``@instrument``, a ``with`` block that
        an exception leaves and the logging integration record)."""
        return _is_error(self.fields)


@dataclass(frozen=True)
class RecordedEvent:
    """An event as the recorder saw it; ``parent_seq`` as in
    :class:`RecordedSpan`, and ``after_seq`` the number of spans created
    before it (to place it among its parent's children)."""

    message: str
    level: Level
    target: str
    fields: dict[str, object]
    parent_seq: int | None
    after_seq: int


class TreeRecorder:
    """A layer that records every span's creation and close, and events.

    Safe to share between threads. Add it with ``Registry(layers=[...])`` or
    :meth:`Registry.add_layer`; read :attr:`spans` and :attr:`events` or
    :meth:`render` the tree. Spans created before the recorder was added are
    recorded when they close, as roots.
    """

    # R15: no lock. A hook can run inside another one on the same thread
    # (a garbage collection during the first frees a handle held in a cycle,
    # which closes its span), so a lock held across any allocation would
    # hang there. Each change of state is one operation that is atomic under
    # the GIL (next() on a count, a dict's item set or pop, a list append),
    # on objects built beforehand; readers copy in one operation too.

    def __init__(self) -> None:
        self._seqs = itertools.count()
        self._closes = itertools.count()
        # The seq the next span gets, for events (after_seq). Threads that
        # race may store it out of order: it places an event among spans
        # created at the same time, whose order is arbitrary anyway.
        self._next_seq = 0
        # Every record by seq; insertion order may differ from seq order
        # when threads race, hence the sort when reading.
        self._spans: dict[int, RecordedSpan] = {}
        self._events: list[RecordedEvent] = []
        # Records of the spans still open, by ID: an ID names one record
        # only while its span is live.
        self._live: dict[int, RecordedSpan] = {}

    def __repr__(self) -> str:
        return f"TreeRecorder(spans={len(self._spans)}, open={len(self._live)})"

    # === the layer ===

    def _record(
        self, span: SpanRef, fields: dict[str, object], parent_seq: int | None
    ) -> RecordedSpan:
        """A new record of `span`, numbered and kept (each step one the GIL
        makes atomic: no lock, see the class docs)."""
        seq = next(self._seqs)
        self._next_seq = seq + 1
        record = RecordedSpan(
            seq=seq,
            id=span.id,
            name=span.name,
            target=span.target,
            level=span.level,
            fields=fields,
            parent_id=span.parent_id,
            parent_seq=parent_seq,
            thread=threading.current_thread().name,
        )
        self._spans[record.seq] = record
        return record

    def on_new_span(self, span: SpanRef) -> None:
        """Records a new span, linked to its parent's record."""
        parent_id = span.parent_id
        parent = self._live.get(parent_id) if parent_id is not None else None
        record = self._record(span, span.fields, parent.seq if parent is not None else None)
        self._live[record.id] = record

    def on_event(self, event: Event) -> None:
        """Records an event under its parent span's record."""
        parent_id = event.parent_id
        parent = self._live.get(parent_id) if parent_id is not None else None
        self._events.append(
            RecordedEvent(
                message=event.message,
                level=event.level,
                target=event.target,
                fields=event.fields,
                parent_seq=parent.seq if parent is not None else None,
                after_seq=self._next_seq,
            )
        )

    def on_end(self, span: SpanRef) -> None:
        """Keeps the span's times, fixed at its end (R14)."""
        busy_ns, idle_ns = span.busy_ns, span.idle_ns
        record = self._live.get(span.id)
        if record is not None:
            # Idle first: a reader in between sees busy_ns None, which
            # reads as not ended yet (duration_ns None).
            record.idle_ns = idle_ns
            record.busy_ns = busy_ns

    def on_close(self, span: SpanRef) -> None:
        """Marks the span's record closed and keeps its final fields."""
        # on_close runs while the span is still readable and before its ID
        # can be reused, so the ID still names this record.
        fields = span.fields
        busy_ns, idle_ns = span.busy_ns, span.idle_ns
        record = self._live.pop(span.id, None)
        if record is None:  # created before the recorder was added
            record = self._record(span, fields, None)
        record.fields = fields
        record.idle_ns = idle_ns
        record.busy_ns = busy_ns
        record.closed_seq = next(self._closes)

    # === reading ===

    @property
    def spans(self) -> list[RecordedSpan]:
        """Every span recorded, in the order they were created."""
        return sorted(self._spans.copy().values(), key=_by_seq)

    @property
    def events(self) -> list[RecordedEvent]:
        """Every event recorded, in the order they were emitted."""
        return self._events.copy()

    @property
    def open_spans(self) -> list[RecordedSpan]:
        """The recorded spans that have not closed (yet)."""
        return [s for s in self.spans if s.closed_seq is None]

    def clear(self) -> None:
        """Forgets what was recorded; spans still open stay tracked."""
        # One atomic step per record: a record added meanwhile is either
        # looked at here or left alone, never lost.
        for seq, record in self._spans.copy().items():
            if record.closed_seq is not None:
                self._spans.pop(seq, None)
        del self._events[: len(self._events)]

    def render(
        self,
        *,
        show_ids: bool = False,
        ascii_only: bool = False,
        color: bool | None = None,
        times: bool = True,
    ) -> str:
        """The recorded spans and events as an indented tree; see
        :func:`render_tree`."""
        return render_tree(
            self.spans,
            self.events,
            show_ids=show_ids,
            ascii_only=ascii_only,
            color=color,
            times=times,
        )


def _by_seq(span: RecordedSpan) -> int:
    return span.seq


def render_tree(
    spans: Iterable[RecordedSpan],
    events: Iterable[RecordedEvent] = (),
    *,
    show_ids: bool = False,
    ascii_only: bool = False,
    color: bool | None = None,
    times: bool = True,
) -> str:
    """Draws spans (and events) as a tree, the way ``tree`` draws folders.

    Each line reads ``name  duration  target LEVEL  field=value ...``;
    children follow their parent in creation order, events among them where
    they happened. The duration is the span's end minus its start
    (:func:`format_duration`), followed by ``(busy ..., idle ...)`` when it
    was idle (live but entered nowhere) for a noticeable part of it
    (:data:`IDLE_SHOWN_FROM_NS`); ``times=False`` leaves times out.
    A span that recorded an error is marked ``✗`` before its name. Spans
    still open are marked ``(open)``. With ``show_ids``, each span's ID and
    sequence number are shown too; with ``ascii_only``, the branches are
    drawn without box-drawing characters (and ``us`` stands for ``µs``).
    ``color`` adds ANSI colours: ``None`` (the default) when standard output
    is a terminal (:func:`wants_color`), ``True`` or ``False`` always or
    never. Spans whose parent is missing from ``spans`` are drawn as roots.
    """
    style = TreeStyle(
        ascii_only=ascii_only,
        color=wants_color(sys.stdout) if color is None else color,
        times=times,
    )
    spans = sorted(spans, key=lambda s: s.seq)
    known = {s.seq for s in spans}
    # Children of each node, keyed by parent seq (None: the roots), as
    # (sort key, line, seq of a span or None for an event).
    children: dict[int | None, list[tuple[tuple[int, int], str, int | None]]] = {}
    for s in spans:
        parent = s.parent_seq if s.parent_seq in known else None
        line = style.span_line(
            s.name,
            s.target,
            s.level.name,
            s.fields,
            busy_ns=s.busy_ns,
            idle_ns=s.idle_ns,
            ids=f"id={s.id} seq={s.seq}" if show_ids else None,
            open_=s.closed_seq is None,
        )
        children.setdefault(parent, []).append(((s.seq, 1), line, s.seq))
    for e in events:
        parent = e.parent_seq if e.parent_seq in known else None
        line = style.event_line(e.level.name, e.message, e.fields)
        children.setdefault(parent, []).append(((e.after_seq, 0), line, None))
    for kids in children.values():
        kids.sort(key=lambda kid: kid[0])

    lines: list[str] = []
    # Iterative depth-first walk, so a very deep tree cannot overflow the
    # Python stack. Each entry: the span's seq (None for an event), its
    # line, the branch drawn before it, and the prefix for its children.
    pending: list[tuple[int | None, str, str, str]] = [
        (seq, line, "", "") for _, line, seq in reversed(children.get(None, []))
    ]
    while pending:
        seq, line, branch, prefix = pending.pop()
        lines.append(style.branch(branch) + line)
        if seq is None:
            continue
        kids = children.get(seq, [])
        for i, (_, kid_line, kid_seq) in reversed(list(enumerate(kids))):
            last = i == len(kids) - 1
            pending.append(
                (
                    kid_seq,
                    kid_line,
                    prefix + (style.elbow if last else style.tee),
                    prefix + ("    " if last else style.pipe),
                )
            )
    return "\n".join(lines)


# === how a line looks ===

_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_DIM = "\x1b[2m"
_RED = "\x1b[31m"
_YELLOW = "\x1b[33m"
_CYAN = "\x1b[36m"
# As tracing-subscriber's fmt colours them.
_LEVEL_COLORS = {
    "TRACE": "\x1b[35m",
    "DEBUG": "\x1b[34m",
    "INFO": "\x1b[32m",
    "WARN": _YELLOW,
    "ERROR": _RED,
}


def wants_color(stream: object) -> bool:
    """Whether text written to ``stream`` should be coloured: it is a
    terminal, ``NO_COLOR`` (https://no-color.org) is unset or empty, and
    ``TERM`` is not ``dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    if not callable(isatty):
        return False
    try:
        return bool(isatty())
    except (OSError, ValueError):  # a closed or detached stream
        return False


class TreeStyle:
    """How a tree's lines are written, by :func:`render_tree` and by
    ``python -m pykregistry tree``: box-drawing or ASCII branches, with or
    without colour, with or without times."""

    def __init__(self, *, ascii_only: bool = False, color: bool = False, times: bool = True):
        self.ascii_only = ascii_only
        self.color = color
        self.times = times
        self.tee, self.elbow, self.pipe, self.bullet = (
            ("|-- ", "`-- ", "|   ", "*") if ascii_only else ("├── ", "└── ", "│   ", "•")
        )
        self._mark = "X " if ascii_only else "✗ "

    def __repr__(self) -> str:
        return f"TreeStyle(ascii_only={self.ascii_only}, color={self.color}, times={self.times})"

    def _paint(self, text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if self.color and code and text else text

    def branch(self, text: str) -> str:
        """The branches drawn before a line."""
        return self._paint(text, _DIM)

    def span_line(
        self,
        name: str,
        target: str,
        level: str,
        fields: Mapping[str, object],
        *,
        busy_ns: int | None = None,
        idle_ns: int | None = None,
        ids: str | None = None,
        open_: bool = False,
    ) -> str:
        """A span's line: ``[✗ ]name  [duration  ]target LEVEL[  fields]``,
        then ``[ids]`` and ``(open)`` if given; the duration shows once the
        span has ended (``busy_ns`` and ``idle_ns`` known)."""
        paint = self._paint
        error = _is_error(fields)
        line = paint(self._mark + name, _BOLD + _RED) if error else paint(name, _BOLD)
        if self.times and busy_ns is not None and idle_ns is not None:
            line += "  " + self._duration(busy_ns, idle_ns)
        line += "  " + (paint(target, _DIM) + " " if target else "")
        line += paint(level, _LEVEL_COLORS.get(level, ""))
        if fields:
            line += "  " + _fields(fields)
        if ids is not None:
            line += "  " + paint(f"[{ids}]", _DIM)
        if open_:
            line += "  " + self.note("(open)")
        return line

    def _duration(self, busy_ns: int, idle_ns: int) -> str:
        text = self._paint(format_duration(busy_ns + idle_ns, ascii_only=self.ascii_only), _CYAN)
        if idle_ns >= IDLE_SHOWN_FROM_NS and idle_ns * 10 >= busy_ns + idle_ns:
            busy = format_duration(busy_ns, ascii_only=self.ascii_only)
            idle = format_duration(idle_ns, ascii_only=self.ascii_only)
            text += " " + self._paint(f"(busy {busy}, idle {idle})", _DIM)
        return text

    def note(self, text: str) -> str:
        """A remark added to a line, such as ``(open)``."""
        return self._paint(text, _YELLOW)

    def event_line(self, level: str, message: str, fields: Mapping[str, object]) -> str:
        """An event's line: ``• LEVEL message[  fields]``."""
        bullet = self._paint(self.bullet, _DIM)
        line = f"{bullet} {self._paint(level, _LEVEL_COLORS.get(level, ''))} {message}"
        if fields:
            line += "  " + _fields(fields)
        return line


IDLE_SHOWN_FROM_NS = 50_000
"""A span's busy and idle times are shown when it was idle (live, entered
nowhere) for at least this long and for at least a tenth of its duration:
what a span waiting for a thread, a task or a queue shows. Below that, idle
time is the few microseconds between a span's creation and its entry, and
between its exit and its end, that the layers take."""


def _is_error(fields: Mapping[str, object]) -> bool:
    return fields.get("error") is True or "exception.type" in fields


def format_duration(ns: int, *, ascii_only: bool = False) -> str:
    """``ns`` nanoseconds for a person: three significant digits in the
    unit that suits (``850 ns``, ``340 µs``, ``1.2 ms``, ``2.01 s``, then
    ``min`` and ``h``), trailing zeros dropped; ``us`` for ``µs`` with
    ``ascii_only``.

        >>> format_duration(1_204_000), format_duration(340_000), format_duration(2_012_000_000)
        ('1.2 ms', '340 µs', '2.01 s')
    """
    # Each unit up to where its three digits would round to 1000.
    if ns < 1_000:
        return f"{max(ns, 0)} ns"
    if ns < 999_500:
        return f"{_three_digits(ns / 1e3)} {'us' if ascii_only else 'µs'}"
    if ns < 999_500_000:
        return f"{_three_digits(ns / 1e6)} ms"
    if ns < 999_500_000_000:
        return f"{_three_digits(ns / 1e9)} s"
    if ns < 5_997_000_000_000:  # 99.95 min
        return f"{_three_digits(ns / 60e9)} min"
    return f"{_three_digits(ns / 3600e9)} h"


def _three_digits(value: float) -> str:
    """``value`` (at least 1) to three significant digits, trailing zeros
    dropped: 1.2, 340, 2.01."""
    if value >= 99.95:
        return f"{value:.0f}"
    text = f"{value:.1f}" if value >= 9.995 else f"{value:.2f}"
    return text.rstrip("0").rstrip(".")


def _fields(fields: Mapping[str, object]) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items())


def _value(value: object) -> str:
    """A field value as ``repr()`` shows it. R10 keeps ints of any size,
    but ``repr()`` refuses those past ``sys.get_int_max_str_digits()``:
    they show in hexadecimal, as JSON lines writes them (``int(s, 0)``
    reads either)."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return repr(value)
        except ValueError:
            return hex(value)
    if isinstance(value, (list, tuple)):
        items = ", ".join(_value(v) for v in value)
        if isinstance(value, list):
            return f"[{items}]"
        return f"({items},)" if len(value) == 1 else f"({items})"
    return repr(value)
