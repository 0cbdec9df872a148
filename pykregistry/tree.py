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
    >>> print(recorder.render())
    request  app INFO  path='/'
    └── db.query  app.db DEBUG
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pykregistry._native import Event, SpanRef
    from pykregistry.level import Level

__all__ = ["RecordedEvent", "RecordedSpan", "TreeRecorder", "render_tree"]


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

    def on_close(self, span: SpanRef) -> None:
        """Marks the span's record closed and keeps its final fields."""
        # on_close runs while the span is still readable and before its ID
        # can be reused, so the ID still names this record.
        fields = span.fields
        record = self._live.pop(span.id, None)
        if record is None:  # created before the recorder was added
            record = self._record(span, fields, None)
        record.fields = fields
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

    def render(self, *, show_ids: bool = False, ascii_only: bool = False) -> str:
        """The recorded spans and events as an indented tree; see
        :func:`render_tree`."""
        return render_tree(self.spans, self.events, show_ids=show_ids, ascii_only=ascii_only)


def _by_seq(span: RecordedSpan) -> int:
    return span.seq


_BOX = ("├── ", "└── ", "│   ", "•")


def render_tree(
    spans: Iterable[RecordedSpan],
    events: Iterable[RecordedEvent] = (),
    *,
    show_ids: bool = False,
    ascii_only: bool = False,
) -> str:
    """Draws spans (and events) as a tree, the way ``tree`` draws folders.

    Each line reads ``name  target LEVEL  field=value ...``; children follow
    their parent in creation order, events among them where they happened.
    Spans still open are marked ``(open)``. With ``show_ids``, each span's
    ID and sequence number are shown too; with ``ascii_only``, the branches
    are drawn without box-drawing characters. Spans whose parent is missing
    from ``spans`` are drawn as roots.
    """
    tee, elbow, pipe, bullet = ("|-- ", "`-- ", "|   ", "*") if ascii_only else _BOX
    spans = sorted(spans, key=lambda s: s.seq)
    known = {s.seq for s in spans}
    # Children of each node, keyed by parent seq (None: the roots), as
    # (sort key, line, seq of a span or None for an event).
    children: dict[int | None, list[tuple[tuple[int, int], str, int | None]]] = {}
    for s in spans:
        parent = s.parent_seq if s.parent_seq in known else None
        children.setdefault(parent, []).append(((s.seq, 1), _span_line(s, show_ids), s.seq))
    for e in events:
        parent = e.parent_seq if e.parent_seq in known else None
        children.setdefault(parent, []).append(((e.after_seq, 0), _event_line(e, bullet), None))
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
        lines.append(branch + line)
        if seq is None:
            continue
        kids = children.get(seq, [])
        for i, (_, kid_line, kid_seq) in reversed(list(enumerate(kids))):
            last = i == len(kids) - 1
            pending.append(
                (
                    kid_seq,
                    kid_line,
                    prefix + (elbow if last else tee),
                    prefix + ("    " if last else pipe),
                )
            )
    return "\n".join(lines)


def _span_line(span: RecordedSpan, show_ids: bool) -> str:
    where = f"{span.target} {span.level.name}" if span.target else span.level.name
    line = f"{span.name}  {where}"
    if span.fields:
        line += "  " + _fields(span.fields)
    if show_ids:
        line += f"  [id={span.id} seq={span.seq}]"
    if span.closed_seq is None:
        line += "  (open)"
    return line


def _event_line(event: RecordedEvent, bullet: str) -> str:
    line = f"{bullet} {event.level.name} {event.message}"
    if event.fields:
        line += "  " + _fields(event.fields)
    return line


def _fields(fields: dict[str, object]) -> str:
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
