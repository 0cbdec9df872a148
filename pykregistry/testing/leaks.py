"""Leak checks: a report of the spans still live in a registry, and the
:class:`LiveSpans` layer that lets it say where each was created and
entered.

(PYTEST_DONT_REWRITE, as the whole of :mod:`pykregistry.testing`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pykregistry
from pykregistry import Registry, SpanRef


@dataclass
class TrackedSpan:
    """What :class:`LiveSpans` knows of a live span."""

    id: int
    name: str
    target: str
    level: pykregistry.Level
    parent_id: int | None
    origin: str
    """Where it was created: ``file:line in function`` of the first caller
    outside pykregistry."""
    enters: Counter[str] = field(default_factory=Counter)
    """Enters seen by the layer, by thread (and task)."""
    exits: Counter[str] = field(default_factory=Counter)
    """Exits seen by the layer, by thread (and task)."""

    @property
    def entered(self) -> dict[str, int]:
        """Enters minus exits seen by the layer, by thread (and task), where
        they differ."""
        enters, exits = self.enters.copy(), self.exits.copy()
        return {
            where: n
            for where in enters.keys() | exits.keys()
            if (n := enters[where] - exits[where])
        }


class LiveSpans:
    """A layer that remembers every live span of the registry it is added
    to — name, target, parent, where it was created, and where it was
    entered and not exited — so that :func:`assert_no_leaks` can say more
    than how many spans leaked::

        registry = Registry(layers=[LiveSpans()])

    Spans created before the layer was added are not known to it. It only
    sees what layers see: a context that ends (a thread, a task) releases
    its entries without an exit (R11), so its ``entered`` counts may stay
    behind; they are a hint, not a count.
    """

    # R15: no lock. A hook can run inside another one, or inside a reader,
    # on the same thread (a garbage collection there frees a handle held in
    # a cycle, which closes its span), so a lock held across any allocation
    # would hang. Each change is one operation atomic under the GIL, on
    # objects built beforehand: a dict's item set or pop, and a Counter's
    # update() of one key (counted in C, with no Python code in between).

    def __init__(self) -> None:
        self._live: dict[int, TrackedSpan] = {}

    def __repr__(self) -> str:
        return f"LiveSpans(live={len(self._live)})"

    @property
    def spans(self) -> list[TrackedSpan]:
        """The spans it has seen created and not yet closed."""
        return list(self._live.copy().values())

    def on_new_span(self, span: SpanRef) -> None:
        """Remembers the span."""
        tracked = TrackedSpan(
            span.id, span.name, span.target, span.level, span.parent_id, _origin()
        )
        self._live[tracked.id] = tracked

    def on_enter(self, span: SpanRef) -> None:
        """Counts an entry in the calling thread or task."""
        tracked = self._live.get(span.id)
        if tracked is not None:
            tracked.enters.update((_where(),))

    def on_exit(self, span: SpanRef) -> None:
        """Counts an exit in the calling thread or task."""
        tracked = self._live.get(span.id)
        if tracked is not None:
            tracked.exits.update((_where(),))

    def on_close(self, span: SpanRef) -> None:
        """Forgets the span."""
        self._live.pop(span.id, None)


# The first caller outside pykregistry made the span: frames in the package
# and in its subpackages (this one) are skipped.
_PACKAGE_DIRS = (
    os.path.dirname(os.path.abspath(pykregistry.__file__)),
    os.path.dirname(os.path.abspath(__file__)),
)


def _origin() -> str:
    frame = sys._getframe(2)
    while frame is not None and (
        os.path.dirname(os.path.abspath(frame.f_code.co_filename)) in _PACKAGE_DIRS
    ):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "unknown"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _where() -> str:
    where = f"thread {threading.current_thread().name!r}"
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop
        task = None
    if task is not None:
        where += f", task {task.get_name()!r}"
    return where


def leak_report(registry: Registry, *, known: Iterable[int] = ()) -> str:
    """A readable account of the spans live in `registry`, as a tree: for
    each, its ID, name, target, level, parent, reference count, and what
    may hold it — its live children, whether it is the calling context's
    current span, where it was entered and not exited, where it was created
    (the last three need a :class:`LiveSpans` layer). Spans in `known` are
    left out (those a caller accounts for)."""
    known = set(known)
    trackers = [layer for layer in registry.layers if isinstance(layer, LiveSpans)]
    n = len(registry)
    current = registry.current_span()
    lines = [f"{n} span{'' if n == 1 else 's'} live in {registry!r}"]
    tracked = {t.id: t for tracker in trackers for t in tracker.spans if t.id in registry}
    if not trackers:
        lines.append(
            "  (add a pykregistry.testing.LiveSpans() layer to the registry to see "
            "every live span; without it, only the calling context's current span "
            "and its parents are known)"
        )
        sid = current
        chain: list[SpanRef] = []
        view = registry.get(sid) if sid is not None else None
        if view is not None:
            with contextlib.suppress(pykregistry.SpanClosedError):
                chain = view.scope()
        for depth, v in enumerate(reversed(chain)):
            with contextlib.suppress(pykregistry.SpanClosedError):
                lines.append("  " + "    " * depth + _describe_view(registry, v, current))
        return "\n".join(lines)
    children: dict[int | None, list[TrackedSpan]] = {}
    for t in tracked.values():
        parent = t.parent_id if t.parent_id in tracked else None
        children.setdefault(parent, []).append(t)

    def walk(t: TrackedSpan, depth: int) -> Iterator[str]:
        kids = children.get(t.id, [])
        if t.id not in known:
            pad = "  " + "    " * depth
            yield pad + _describe(registry, t, current, len(kids), tracked)
            if t.entered:
                ins = ", ".join(f"{where} ({n:+d})" for where, n in sorted(t.entered.items()))
                yield pad + f"    entered and not exited (enters - exits): {ins}"
            yield pad + f"    created at {t.origin}"
        for kid in kids:
            yield from walk(kid, depth + 1)

    for root in children.get(None, []):
        lines.extend(walk(root, 0))
    untracked = n - len(tracked)
    if untracked:
        lines.append(
            f"  and {untracked} span{'' if untracked == 1 else 's'} created before "
            "the LiveSpans layer was added"
        )
    return "\n".join(lines)


def _describe(
    registry: Registry,
    t: TrackedSpan,
    current: int | None,
    n_children: int,
    tracked: dict[int, TrackedSpan],
) -> str:
    count = registry.ref_count(t.id)
    if t.parent_id is None:
        parent = "root"
    elif t.parent_id in tracked:
        parent = f"parent={t.parent_id} ({tracked[t.parent_id].name!r})"
    else:
        parent = f"parent={t.parent_id}"
    return (
        f"span {t.id} {t.name!r} target={t.target!r} level={t.level.name} {parent}, "
        f"ref_count={count} = {_holders(count, n_children, t.id == current)}"
    )


def _describe_view(registry: Registry, v: SpanRef, current: int | None) -> str:
    count = registry.ref_count(v.id)
    parent = "root" if v.parent_id is None else f"parent={v.parent_id}"
    return (
        f"span {v.id} {v.name!r} target={v.target!r} level={v.level.name} {parent}, "
        f"ref_count={count}" + (" (the calling context's current span)" if v.id == current else "")
    )


def _holders(count: int, n_children: int, is_current: bool) -> str:
    parts = []
    if n_children:
        parts.append(f"{n_children} live child{'' if n_children == 1 else 'ren'}")
    other = count - n_children
    if is_current:
        parts.append("the calling context's entry (its current span)")
        other -= 1
    if other > 0:
        parts.append(f"{other} other (a handle, an unclosed ID, or another context's entry)")
    return " + ".join(parts) or "nothing known"


def assert_no_leaks(registry: Registry, *, collect: bool = True) -> None:
    """Asserts that no span is live in `registry` (R9: once every handle is
    released and every entered span exited, ``len(registry) == 0``).

    With `collect`, runs ``gc.collect()`` first, so that handles only
    garbage in reference cycles are released. Raises AssertionError with
    :func:`leak_report` otherwise.
    """
    if len(registry) and collect:
        gc.collect()
    if len(registry):
        raise AssertionError("spans leaked: " + leak_report(registry))
