"""The reference model of the registry's rules R2-R9: the references a test
holds on each span, parents, and each context's stack of entries, with every
span's expected reference count derived from R9; and the comparison of a
registry with it.

(PYTEST_DONT_REWRITE, as the whole of :mod:`pykregistry.testing`.)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pykregistry import Registry
from pykregistry.testing.leaks import leak_report

NEVER_ISSUED = 2**64 - 1
"""A valid ID that no registry issues (a key's thread index never fills its
field): an ID that is certainly not live."""


@dataclass(eq=False)
class ModelSpan:
    """A span as the model sees it: compared by identity."""

    label: str
    """A name for reports (``s0``, ``s1``, ...): IDs are long."""
    id: int
    parent: ModelSpan | None
    refs: int = 0
    """References the test holds as IDs (``new_span``, ``clone_span``)."""
    handles: int = 0
    """Open :class:`~pykregistry.Span` handles."""
    live: bool = True
    fields: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"{self.label}(id={self.id})"


@dataclass(eq=False)
class ModelEntry:
    """One entry of a context's stack. Identity matters: a context copied
    from another (as an asyncio task copies its creator's) shares the very
    same entries, but only the context that made an entry (its `owner`)
    holds a reference through it (R5)."""

    span: ModelSpan
    owner: Hashable
    """The context that made the entry."""
    duplicate: bool
    """Made while its owner already held the span through another entry: it
    holds nothing."""
    exited: bool = False
    """Exited, or its owner ended: it holds nothing and is current nowhere."""

    @property
    def holds(self) -> bool:
        """Whether the entry holds a reference on its span now."""
        return not (self.duplicate or self.exited)

    def __repr__(self) -> str:
        tags = ("(dup)" if self.duplicate else "") + ("(exited)" if self.exited else "")
        return f"{self.span.label}@{self.owner!r}{tags}"


class RegistryModel:
    """Spans and per-context stacks, with counts derived from R9::

        ref_count(S) = references the test holds (IDs and handles)
                       + live children
                       + unexited non-duplicate entries of S, each counted
                         once, in the context that made it

    A span whose count reaches 0 closes, releasing its parent (R4). Contexts
    are keyed by any hashable value; a copy shares its parent's entries but
    holds none of them. Operations mirror the registry's and return what it
    must answer; they never touch a registry.
    """

    def __init__(self) -> None:
        self.spans: list[ModelSpan] = []
        """Every span the model was told of, live or not, in creation order."""
        self.stacks: dict[Hashable, list[ModelEntry]] = {}
        """Each context's view of its stack, bottom first."""
        self.made: dict[Hashable, list[ModelEntry]] = {}
        """The entries each context made."""

    def __repr__(self) -> str:
        live = [s for s in self.spans if s.live]
        return f"RegistryModel(live={live}, stacks={self.stacks})"

    # --- derived state ---

    def counts(self) -> dict[ModelSpan, int]:
        """The expected reference count of every live span (R9)."""
        counts = {s: s.refs + s.handles for s in self.spans if s.live}
        for s in counts:
            if s.parent is not None:
                assert s.parent.live, f"model bug: {s} is live, its parent {s.parent} is not"
                counts[s.parent] += 1
        for made in self.made.values():
            for e in made:
                if e.holds:
                    assert e.span.live, f"model bug: an entry holds {e.span}, which closed"
                    counts[e.span] += 1
        return counts

    def live(self) -> list[ModelSpan]:
        """The live spans, in creation order."""
        return [s for s in self.spans if s.live]

    def current(self, key: Hashable) -> ModelSpan | None:
        """The context's current span (R6): its topmost entry that is not a
        duplicate, nor one it exited itself; `None` if that entry was
        exited by its maker or its span has closed (it is then only the
        trace parent of new spans, R13)."""
        for e in reversed(self.stacks[key]):
            if e.duplicate or (e.exited and e.owner == key):
                continue
            return e.span if e.span.live and not e.exited else None
        return None

    def settle(self) -> None:
        """Closes every span whose count is 0, then their parents, and so on."""
        while True:
            dead = [s for s, n in self.counts().items() if n == 0]
            if not dead:
                return
            for s in dead:
                s.live = False

    # --- operations ---

    def new_span(
        self, label: str, sid: int, parent: ModelSpan | None, *, handle: bool = False
    ) -> ModelSpan:
        """A new span holding one reference (an ID's, or a handle's if
        `handle`); `parent` is already resolved (R2) and live."""
        assert parent is None or parent.live, f"model misuse: parent {parent} is not live"
        span = ModelSpan(label, sid, parent, refs=0 if handle else 1, handles=int(handle))
        self.spans.append(span)
        return span

    def clone_span(self, span: ModelSpan) -> bool:
        """R3: whether the clone succeeds (the span is live)."""
        if not span.live:
            return False
        span.refs += 1
        return True

    def try_close(self, span: ModelSpan) -> bool:
        """R4: a close of one of the test's ID references; whether it closed
        the span."""
        assert span.live, f"model misuse: {span} is not live"
        assert span.refs > 0, f"model misuse: the test holds no reference on {span}"
        span.refs -= 1
        self.settle()
        return not span.live

    def release_handle(self, span: ModelSpan) -> None:
        """A handle's release (``close()``, or garbage collection)."""
        assert span.handles > 0, f"model misuse: no open handle on {span}"
        span.handles -= 1
        self.settle()

    def enter(self, key: Hashable, span: ModelSpan) -> bool:
        """R5: whether the entry succeeds (the span is live). It holds a
        reference unless this context holds the span already."""
        if not span.live:
            return False
        duplicate = any(e.span is span and e.holds for e in self.made[key])
        entry = ModelEntry(span, key, duplicate)
        self.stacks[key].append(entry)
        self.made[key].append(entry)
        return True

    def exit(self, key: Hashable, span: ModelSpan) -> bool:
        """R5: removes the most recent entry of `span` from the context's
        view; if the context made it, it is exited (and releases its
        reference, if it held one). Whether an entry was found."""
        stack = self.stacks[key]
        for i in range(len(stack) - 1, -1, -1):
            e = stack[i]
            if e.exited and e.owner == key:
                continue
            if e.span is span:
                if e.owner == key:
                    e.exited = True
                self._remove(key, i)
                self.settle()
                return True
        return False

    def exit_entry(self, key: Hashable, entry: ModelEntry) -> None:
        """R5: a ``with`` block's exit, run in context `key`, of the entry
        its ``__enter__`` made, wherever that was: the entry is exited (it
        stops counting and being current everywhere) and leaves `key`'s
        view if it is there."""
        if entry.exited:
            return
        entry.exited = True
        stack = self.stacks.get(key, [])
        at = next((i for i, e in enumerate(stack) if e is entry), None)
        self._remove(key, at)
        self.settle()

    def _remove(self, key: Hashable, at: int | None) -> None:
        """Removes entry `at` from `key`'s view (if any); as the registry
        does, the context's own exited entries on its top go with it."""
        stack = self.stacks.get(key, [])
        if at is not None:
            del stack[at]
            if at < len(stack):
                return
        while stack and stack[-1].exited and stack[-1].owner == key:
            stack.pop()

    def record(self, span: ModelSpan, fields: dict[str, Any]) -> bool:
        """R10: whether the recording succeeds (the span is live)."""
        if not span.live:
            return False
        span.fields.update(fields)
        return True

    def new_context(self, key: Hashable, parent: Hashable | None = None) -> None:
        """An empty context, or a copy of `parent` sharing its entries (an
        asyncio task created there, ``parent_ctx.run(copy_context)``); the
        copy holds none of them."""
        self.stacks[key] = [] if parent is None else list(self.stacks[parent])
        self.made[key] = []

    def drop_context(self, key: Hashable) -> None:
        """A context that ended (a thread, a task, a ``Context`` object
        freed): the references its entries held go, and no copy inherits
        them (R11)."""
        del self.stacks[key]
        for e in self.made.pop(key):
            e.exited = True
        self.settle()

    def span_with_id(self, sid: int) -> ModelSpan | None:
        """The live model span with this ID, if any."""
        for s in self.spans:
            if s.live and s.id == sid:
                return s
        return None


def assert_matches_model(
    registry: Registry,
    model: RegistryModel,
    *,
    spans: Iterable[ModelSpan] | None = None,
    baseline: int = 0,
) -> None:
    """Asserts that the registry agrees with the model on every model span's
    reference count, parent and liveness (``get``, ``in``), and that
    ``len(registry)`` is the model's live count plus `baseline` (spans live
    before the model began).

    With `spans`, checks only those spans' counts and parents, and not
    ``len`` (for a model of part of what a registry holds, such as one
    thread's own spans). Raises one AssertionError saying all that differs,
    with a report of the live spans the model does not know.
    """
    problems = model_mismatches(registry, model, spans=spans, baseline=baseline)
    if problems:
        raise AssertionError("\n".join(problems))


def model_mismatches(
    registry: Registry,
    model: RegistryModel,
    *,
    spans: Iterable[ModelSpan] | None = None,
    baseline: int = 0,
) -> list[str]:
    """What :func:`assert_matches_model` would report, as a list of lines
    (empty when the registry agrees with the model)."""
    problems = []
    counts = model.counts()
    checked = model.spans if spans is None else list(spans)
    actual = {s: registry.ref_count(s.id) for s in checked}
    expected = {s: counts.get(s, 0) for s in checked}
    if actual != expected:
        problems.append(f"ref counts: registry {actual}, model {expected}")
    for s in checked:
        view = registry.get(s.id)
        if s.live:
            want = None if s.parent is None else s.parent.id
            if view is None:
                problems.append(f"{s} is live but get() gave None")
            elif view.parent_id != want:
                problems.append(f"{s}: parent_id {view.parent_id}, model {want}")
            if s.id not in registry:
                problems.append(f"{s} is live but not `in` the registry")
        else:
            if view is not None:
                problems.append(f"{s} closed but get() gave {view!r}")
            if s.id in registry:
                problems.append(f"{s} closed but is `in` the registry")
    if spans is None:
        n = len(registry)
        if n != len(counts) + baseline:
            before = f" (+{baseline} live before)" if baseline else ""
            problems.append(f"len(registry) == {n}, model has {len(counts)} live{before}")
    if problems and len(registry) > len(counts) + baseline:
        problems.append(leak_report(registry, known={s.id for s in counts}))
    return problems
