"""Read a trace that :class:`~pykregistry.JsonLines` recorded, line by line,
and draw its span trees as they complete.

A file of any size is read in one pass and in little memory: each line is
parsed, checked and forgotten, and :class:`SpanTrees` keeps only the trees
whose root has not arrived yet. ``JsonLines`` writes each span at its end,
so children come before their parent and a tree is whole when its root's
line arrives; it is drawn then and forgotten.

Lines that are not what ``JsonLines`` writes (not JSON, a span without its
``span_id``, a line cut short where the file ends) are reported with their
numbers, and the rest of the file is read as if they were not there.

    >>> import io
    >>> from pykregistry.tree import TreeStyle
    >>> lines = io.BytesIO(
    ...     b'{"type": "span", "id": 2, "parent_id": 1, "trace_id": "0af7", "span_id": "b7",'
    ...     b' "parent_span_id": "a1", "name": "db.query", "target": "app", "level": "DEBUG",'
    ...     b' "start_time_ns": 2, "end_time_ns": 3, "busy_ns": 1, "idle_ns": 0, "fields": {}}\\n'
    ...     b'{"type": "span", "id": 1, "parent_id": null, "trace_id": "0af7", "span_id": "a1",'
    ...     b' "parent_span_id": null, "name": "request", "target": "app", "level": "INFO",'
    ...     b' "start_time_ns": 1, "end_time_ns": 4, "busy_ns": 3, "idle_ns": 0, "fields": {}}\\n'
    ... )
    >>> trees = SpanTrees(TreeStyle(times=False))
    >>> for number, record in read_records(lines, on_bad_line=print):
    ...     for line in trees.add(record):
    ...         print(line)
    request  app INFO
    └── db.query  app DEBUG
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

from pykregistry.spilled_trees import SpilledTrees
from pykregistry.tree import TreeStyle

__all__ = ["BadRecordError", "SpanTrees", "read_records"]


class BadRecordError(ValueError):
    """A line is JSON, but not a span or an event as ``JsonLines`` writes
    them; the message says what is wrong with it."""


# === reading ===


def read_records(
    stream: IO[bytes],
    *,
    on_bad_line: Callable[[int, str], object],
    on_progress: Callable[[int], object] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields ``(line number, record)`` for each good line of ``stream`` (a
    binary file), numbered from 1: spans and events, each checked to have
    what ``JsonLines`` writes (a :class:`BadRecordError` otherwise). For
    each bad line, ``on_bad_line(number, message)`` is called instead, and
    the reading goes on. Blank lines and records of other types are
    skipped. ``on_progress(bytes read so far)`` is called after each line.
    """
    done = 0
    for number, raw in enumerate(stream, 1):
        done += len(raw)
        try:
            record = json.loads(raw.decode())
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            if not raw.strip():
                pass
            elif not raw.endswith(b"\n"):
                on_bad_line(number, "cut short: the file ends inside this line")
            else:
                on_bad_line(number, f"not JSON: {_json_error(e)}")
        else:
            try:
                if _check(record):
                    yield number, record
            except BadRecordError as e:
                on_bad_line(number, str(e))
        if on_progress is not None:
            on_progress(done)


def _json_error(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} (column {error.colno})"
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 (byte {error.start + 1})"
    return str(error)


# What JsonLines writes on each line, by type: the keys read here, and the
# types their values may have (None where null is allowed). JSON gives
# exact types, so a type is checked by set membership (a bool, whose type
# is bool, is not an int here).
_NULL: type[None] = type(None)
_SPAN: dict[str, frozenset[type]] = {
    "trace_id": frozenset({str}),
    "span_id": frozenset({str}),
    "parent_span_id": frozenset({str, _NULL}),
    "parent_id": frozenset({int, _NULL}),
    "name": frozenset({str}),
    "target": frozenset({str}),
    "level": frozenset({str}),
    "start_time_ns": frozenset({int}),
    "end_time_ns": frozenset({int, _NULL}),
    "busy_ns": frozenset({int}),
    "idle_ns": frozenset({int}),
    "fields": frozenset({dict}),
}
_EVENT: dict[str, frozenset[type]] = {
    "time_ns": frozenset({int}),
    "message": frozenset({str}),
    "target": frozenset({str}),
    "level": frozenset({str}),
    "trace_id": frozenset({str, _NULL}),
    "span_id": frozenset({str, _NULL}),
    "fields": frozenset({dict}),
}


class _Missing:
    """The value of a key a record lacks."""


# Per type: the keys, the types each may have, and a missing value for each.
_KINDS = {
    kind: (tuple(keys), tuple(keys.values()), (_Missing(),) * len(keys))
    for kind, keys in (("span", _SPAN), ("event", _EVENT))
}
_JSON_TYPES = {str: "a string", int: "an integer", dict: "an object", _NULL: "null"}


def _check(record: object) -> bool:
    """Whether ``record`` is a span or an event to read (False: another
    type, skipped); :class:`BadRecordError` if it is not a record or lacks
    what its type needs."""
    if type(record) is not dict:
        raise BadRecordError(f"not a span or an event: a JSON {_json_kind(record)}")
    kind = record.get("type")
    found = _KINDS.get(kind) if type(kind) is str else None
    if found is None:
        if "type" not in record:
            raise BadRecordError('not a span or an event: no "type"')
        return False
    keys, types, missing = found
    # One pass in C over the keys: the type of each value is one allowed.
    if all(map(frozenset.__contains__, types, map(type, map(record.get, keys, missing)))):
        return True
    for key, allowed in zip(keys, types, strict=True):
        value = record.get(key, missing[0])
        if isinstance(value, _Missing):
            raise BadRecordError(f'a {kind} without "{key}"')
        if type(value) not in allowed:
            wanted = " or ".join(sorted(_JSON_TYPES[t] for t in allowed))
            raise BadRecordError(
                f'a {kind} whose "{key}" is a JSON {_json_kind(value)}, not {wanted}'
            )
    raise AssertionError("unreachable: a key failed the check above")


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# === trees ===

# A node of a tree not yet drawn: its start time (to order siblings), its
# line, and its children (None for an event or a span without any).
_Node = tuple[int, str, "list[_Node] | None"]


class SpanTrees:
    """Builds the span trees of a trace from its records, which arrive in
    the order ``JsonLines`` writes them (each span at its end), and hands
    each tree out as lines as soon as it is complete.

    Spans are linked by ``trace_id``, ``span_id`` and ``parent_span_id``,
    never by the registry's ``id``, which recurs. A span whose
    ``parent_id`` is null was a root in its registry: nothing that comes
    later in the file is its parent, so its tree is complete when its line
    arrives (:meth:`add` returns it). Siblings are drawn in the order they
    started, events among them. What is kept between calls is the trees
    whose root has not arrived: the spans still open when the line was
    written, and their children. :meth:`finish` draws what is left at the
    end of the file: spans whose parent never came (a file cut short) or
    came before them (a child that ended after its parent), under a line
    that names the parent they wait for by its ``span_id``.

    At most ``held_in_memory`` spans and events are kept in memory (about
    500 bytes each); past that, all that is held moves to a temporary
    SQLite file (:class:`~pykregistry.spilled_trees.SpilledTrees`) and
    the trees there are drawn from it, with the same lines. :meth:`close`
    deletes the file.
    """

    def __init__(
        self, style: TreeStyle, *, show_ids: bool = False, held_in_memory: int = 100_000
    ) -> None:
        self._style = style
        self._show_ids = show_ids
        self._limit = held_in_memory
        # The children waiting for their parent, by the parent's trace_id
        # and span_id, and how many nodes they hold in all.
        self._waiting: dict[str, list[_Node]] = {}
        self._held = 0
        self._disk: SpilledTrees | None = None

    def __repr__(self) -> str:
        return f"SpanTrees(waiting={len(self._waiting)}, held={self._held})"

    def __enter__(self) -> SpanTrees:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def waiting(self) -> int:
        """How many spans (with events) wait for their parent's line."""
        return len(self._waiting)

    @property
    def held(self) -> int:
        """How many spans and events are held in memory."""
        return self._held

    @property
    def spilled(self) -> int:
        """How many spans and events are held on disk."""
        return 0 if self._disk is None else self._disk.rows

    def close(self) -> None:
        """Deletes the temporary file, if there is one."""
        if self._disk is not None:
            self._disk.close()
            self._disk = None

    def add(self, record: Mapping[str, Any]) -> Iterable[str]:
        """Takes one record that :func:`read_records` yielded; returns the
        lines of the tree it completes, or nothing. The lines of a tree
        drawn from disk come one by one: read them all before the next
        call."""
        style = self._style
        if record["type"] == "event":
            node: _Node = (
                record["time_ns"],
                style.event_line(record["level"], record["message"], record["fields"]),
                None,
            )
            span_id = record["span_id"]
            if span_id is None:
                return self._draw([node])
            self._wait(record["trace_id"] + span_id, node)
            return []
        trace_id, span_id, parent = record["trace_id"], record["span_id"], record["parent_span_id"]
        ids = None
        if self._show_ids:
            ids = f"trace_id={trace_id} span_id={span_id}"
            if parent is not None:
                ids += f" parent_span_id={parent}"
        line = style.span_line(
            record["name"],
            record["target"],
            record["level"],
            record["fields"],
            busy_ns=record["busy_ns"],
            idle_ns=record["idle_ns"],
            ids=ids,
        )
        key = trace_id + span_id
        node = (record["start_time_ns"], line, self._waiting.pop(key, None))
        is_root = parent is None or record.get("parent_id") is None
        if self._disk is not None and self._disk.waits(key):
            # Some of its children are on disk: it joins them there, after
            # all that memory holds, so that the order of arrival (which
            # orders siblings that started at once) is kept.
            self._spill()
            seq = self._disk.attach(key, node, None if is_root else trace_id + parent)
            return self._disk.draw(seq) if is_root else []
        if is_root:
            return self._draw([node])
        self._wait(trace_id + parent, node)
        return []

    def _wait(self, key: str, node: _Node) -> None:
        """Holds ``node`` until its parent ``key`` arrives."""
        self._waiting.setdefault(key, []).append(node)
        self._held += 1
        if self._held > self._limit:
            self._spill()

    def _spill(self) -> None:
        """Moves all that memory holds to disk."""
        if self._disk is None:
            self._disk = SpilledTrees(self._style)
        self._disk.spill(self._waiting)
        self._waiting.clear()
        self._held = 0

    def finish(self) -> Iterator[Iterable[str]]:
        """Draws the spans and events still waiting for their parent, under
        a line that names the parent by its ``span_id``, and forgets them."""
        if self._disk is not None:
            self._spill()
            yield from self._disk.leftovers(self._missing)
            return
        for key in list(self._waiting):
            nodes = self._waiting.pop(key)
            yield self._draw([(min(map(_start, nodes)), self._missing(key), nodes)])

    def _missing(self, key: str) -> str:
        return self._style.note(f"? {key[-16:]}  (no line for this span before its children)")

    def _draw(self, roots: list[_Node]) -> list[str]:
        """The lines of the trees under ``roots``, siblings in start order."""
        # The walk of render_tree: iterative, so that no depth is too deep.
        style = self._style
        tee, elbow, pipe, branch = style.tee, style.elbow, style.pipe, style.branch
        lines: list[str] = []
        pending: list[tuple[_Node, str, str]] = [
            (node, "", "") for node in sorted(roots, key=_start, reverse=True)
        ]
        while pending:
            (_, line, kids), before, prefix = pending.pop()
            lines.append(branch(before) + line)
            if not kids:
                continue
            kids.sort(key=_start)
            last = len(kids) - 1
            for i in range(last, -1, -1):
                pending.append(
                    (
                        kids[i],
                        prefix + (elbow if i == last else tee),
                        prefix + ("    " if i == last else pipe),
                    )
                )
        # Each line but the roots' was held.
        self._held -= len(lines) - len(roots)
        return lines


def _start(node: _Node) -> int:
    return node[0]
