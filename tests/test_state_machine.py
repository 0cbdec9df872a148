"""Model-based tests of the registry's rules (SPEC R2-R6, R9, R11).

A reference model tracks, for every span the test created: the references the
test holds (explicit IDs from ``new_span``/``clone_span`` and open ``Span``
handles), its parent and whether it is live; and, for every context, its
stack as a list of entries. An entry is a model object with identity: a child
context copied from another shares the very same entries (like an asyncio
task inheriting its creator's stack), and an out-of-order ``exit`` copies the
entries above the removed one, exactly as the bindings do. Each first
(non-duplicate) entry of a span owns one reference, held while any context
still holds the entry. The model derives every span's expected count from
R9::

    ref_count(S) = refs held by the test + live children
                   + distinct live entries of S that own a reference

and closes spans whose count reaches 0, cascading to parents. After every
step the registry must agree with the model on counts, parents, liveness,
``len`` and each context's current span.

``TestRegistryMachine`` drives many ``contextvars.Context`` objects from one
thread. ``test_threads_in_lockstep`` runs the integer-ID operations on 2-4
real threads, one operation per thread per step between two barriers, and
checks that every step is linearizable: some order of its operations,
applied to the model, explains what each thread saw and the state after.

Examples per run: 1,000 machine runs of up to 50 steps and 500 thread
schedules (about 15 s); 10,000 and 5,000 with ``HYPOTHESIS_PROFILE=long``;
20 each with ``HYPOTHESIS_PROFILE=dev``. ``PYKREGISTRY_MACHINE_EXAMPLES`` and
``PYKREGISTRY_THREAD_EXAMPLES`` override either.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import gc
import itertools
import os
import sys
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pykregistry import CURRENT, Registry, Span, SpanNotFoundError

# === settings ===

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
_LONG = PROFILE == "long"
try:  # tests/conftest.py registers and loads the shared profiles
    settings.get_profile("long")
except InvalidArgument:
    settings.register_profile("long", max_examples=10_000, deadline=None)
_MACHINE, _THREADS = {"long": (10_000, 5_000), "dev": (20, 20)}.get(PROFILE, (1_000, 500))
MACHINE_EXAMPLES = int(os.environ.get("PYKREGISTRY_MACHINE_EXAMPLES", _MACHINE))
THREAD_EXAMPLES = int(os.environ.get("PYKREGISTRY_THREAD_EXAMPLES", _THREADS))

# Whatever profile tests/conftest.py loads, these tests pin what makes them
# reproducible: no deadline (a gc.collect() or a thread switch may be slow),
# no example database (a stored failure from another checkout would replay
# here), and the failing example printed as a reproducible blob.
_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

# A long run must not hit the project-wide pytest timeout.
_TIMEOUT = pytest.mark.timeout(0 if _LONG else 300)

# An ID no registry issues: a key's thread index never fills its field.
NEVER_ISSUED = 2**64 - 1

MAX_CONTEXTS = 6


# === model ===


@dataclass(eq=False)
class MSpan:
    """A span as the model sees it."""

    label: str
    id: int
    parent: MSpan | None
    refs: int = 0
    """References held by the test as IDs (new_span, clone_span)."""
    handles: int = 0
    """Open ``Span`` handles."""
    live: bool = True
    fields: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"{self.label}(id={self.id})"


@dataclass(eq=False)
class MEntry:
    """One stack entry. Identity matters: contexts share entries."""

    span: MSpan
    owns_ref: bool
    """A first (non-duplicate) entry, holding one reference."""

    def __repr__(self) -> str:
        return f"{self.span.label}{'' if self.owns_ref else '(dup)'}"


class Model:
    """Spans and per-context stacks; counts derived from R9."""

    def __init__(self) -> None:
        self.spans: list[MSpan] = []
        self.stacks: dict[Hashable, list[MEntry]] = {}

    # --- derived state ---

    def counts(self) -> dict[MSpan, int]:
        """The expected count of every live span (R9)."""
        counts = {s: s.refs + s.handles for s in self.spans if s.live}
        for s in counts:
            if s.parent is not None:
                assert s.parent.live, f"model bug: {s} is live, its parent {s.parent} is not"
                counts[s.parent] += 1
        owning = {id(e): e for stack in self.stacks.values() for e in stack if e.owns_ref}
        for e in owning.values():
            assert e.span.live, f"model bug: an entry holds {e.span}, which closed"
            counts[e.span] += 1
        return counts

    def current(self, key: Hashable) -> MSpan | None:
        """The topmost non-duplicate entry's span (R6)."""
        for e in reversed(self.stacks[key]):
            if e.owns_ref:
                return e.span
        return None

    def settle(self) -> None:
        """Closes every span whose count is 0, then their parents, and so on."""
        while True:
            dead = [s for s, n in self.counts().items() if n == 0]
            if not dead:
                return
            for s in dead:
                s.live = False

    # --- operations: each returns what the registry must answer ---

    def new_span(
        self, label: str, sid: int, parent: MSpan | None, *, handle: bool = False
    ) -> MSpan:
        """A new span with one reference (an ID's, or a handle's); `parent`
        already resolved and live."""
        assert parent is None or parent.live
        span = MSpan(label, sid, parent, refs=0 if handle else 1, handles=int(handle))
        self.spans.append(span)
        return span

    def clone_span(self, span: MSpan) -> bool:
        if not span.live:
            return False
        span.refs += 1
        return True

    def try_close(self, span: MSpan) -> bool:
        """A close of one of the test's references; True when it closed."""
        assert span.live
        assert span.refs > 0
        span.refs -= 1
        self.settle()
        return not span.live

    def release_handle(self, span: MSpan) -> None:
        assert span.handles > 0
        span.handles -= 1
        self.settle()

    def enter(self, key: Hashable, span: MSpan) -> bool:
        if not span.live:
            return False
        stack = self.stacks[key]
        duplicate = any(e.span is span for e in stack)
        stack.append(MEntry(span, owns_ref=not duplicate))
        return True

    def exit(self, key: Hashable, span: MSpan) -> bool:
        """Removes the most recent entry of `span`; the entries above it are
        replaced by copies (new identities, same flags)."""
        stack = self.stacks[key]
        for i in range(len(stack) - 1, -1, -1):
            if stack[i].span is span:
                self.stacks[key] = stack[:i] + [MEntry(e.span, e.owns_ref) for e in stack[i + 1 :]]
                self.settle()
                return True
        return False

    def record(self, span: MSpan, fields: dict[str, Any]) -> bool:
        if not span.live:
            return False
        span.fields.update(fields)
        return True

    def new_context(self, key: Hashable, parent: Hashable | None) -> None:
        """An empty context, or a copy of `parent` sharing its entries."""
        self.stacks[key] = [] if parent is None else list(self.stacks[parent])

    def drop_context(self, key: Hashable) -> None:
        del self.stacks[key]
        self.settle()


def check_registry(reg: Registry, model: Model) -> None:
    """Counts, parents, liveness and len agree with the model."""
    counts = model.counts()
    actual = {s: reg.ref_count(s.id) for s in model.spans}
    expected = {s: counts.get(s, 0) for s in model.spans}
    assert actual == expected, f"ref counts: registry {actual}, model {expected}"
    for s in model.spans:
        view = reg.get(s.id)
        if s.live:
            assert view is not None, f"{s} is live but get() gave None"
            want = None if s.parent is None else s.parent.id
            assert view.parent_id == want, f"{s}: parent_id {view.parent_id}, model {want}"
            assert s.id in reg
        else:
            assert view is None, f"{s} closed but get() gave {view!r}"
            assert s.id not in reg
    assert len(reg) == len(counts), f"len(reg) == {len(reg)}, model has {len(counts)} live"


def expect_not_found(f: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(SpanNotFoundError):
        f(*args, **kwargs)


# === one thread, many contexts ===

INDEX = st.integers(min_value=0, max_value=63)
VALUE = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=5))


@dataclass(eq=False)
class MContext:
    label: str
    ctx: contextvars.Context


class RegistryMachine(RuleBasedStateMachine):
    """Spans, handles and contexts on one thread, against the model."""

    def __init__(self) -> None:
        super().__init__()
        self.reg = Registry()
        self.model = Model()
        # Fresh contexts are copies of an empty one, whatever pytest and
        # hypothesis did to the context the test runs in.
        self.base = contextvars.Context()
        self.contexts: list[MContext] = []
        self.handles: list[tuple[Span, MSpan]] = []
        self.n_contexts = 0

    # --- helpers ---

    def _add_context(self, ctx: contextvars.Context, parent: MContext | None) -> MContext:
        mc = MContext(f"c{self.n_contexts}", ctx)
        self.n_contexts += 1
        self.model.new_context(mc, parent)
        self.contexts.append(mc)
        return mc

    def _context(self, i: int) -> MContext:
        return self.contexts[i % len(self.contexts)]

    def _span(self, i: int) -> MSpan:
        return self.model.spans[i % len(self.model.spans)]

    def _label(self) -> str:
        return f"s{len(self.model.spans)}"

    def _dead_id(self, i: int) -> int:
        dead = [s.id for s in self.model.spans if not s.live] + [NEVER_ISSUED]
        return dead[i % len(dead)]

    def _has_spans(self) -> bool:
        return bool(self.model.spans)

    # --- contexts ---

    @initialize()
    def first_context(self) -> None:
        self._add_context(self.base.run(contextvars.copy_context), None)

    @precondition(lambda self: len(self.contexts) < MAX_CONTEXTS)
    @rule()
    def new_context(self) -> None:
        mc = self._add_context(self.base.run(contextvars.copy_context), None)
        note(f"{mc.label} = fresh context")

    @precondition(lambda self: len(self.contexts) < MAX_CONTEXTS)
    @rule(c=INDEX)
    def child_context(self, c: int) -> None:
        """A copy of a context, as asyncio gives a new task: same entries.
        (A copy of an empty context is no different from a fresh one, so
        copy one with entries when there is one.)"""
        entered = [mc for mc in self.contexts if self.model.stacks[mc]] or self.contexts
        parent = entered[c % len(entered)]
        mc = self._add_context(parent.ctx.run(contextvars.copy_context), parent)
        note(f"{mc.label} = copy of {parent.label} {self.model.stacks[parent]}")

    @precondition(lambda self: len(self.contexts) > 1)
    @rule(c=INDEX)
    def drop_context(self, c: int) -> None:
        """A context that ends releases what its stack held (R11)."""
        mc = self._context(c)
        note(f"drop {mc.label} {self.model.stacks[mc]}")
        self.contexts.remove(mc)
        mc.ctx = None  # type: ignore[assignment]
        self.model.drop_context(mc)

    # --- spans by ID ---

    @rule(c=INDEX, parent=st.sampled_from(["root", "CURRENT", "default"]))
    def new_span(self, c: int, parent: str) -> None:
        """A root, or a child of the context's current span (R2): with
        parent=CURRENT or by default."""
        mc = self._context(c)
        if parent == "root":
            mparent = None
            sid = mc.ctx.run(self.reg.new_span, "root", parent=None)
        else:
            mparent = self.model.current(mc)
            kwargs = {} if parent == "default" else {"parent": CURRENT}
            sid = mc.ctx.run(self.reg.new_span, "contextual", **kwargs)
        s = self.model.new_span(self._label(), sid, mparent)
        note(f"{s} = new span in {mc.label}, parent {mparent}")

    @precondition(_has_spans)
    @rule(p=INDEX)
    def new_explicit(self, p: int) -> None:
        parent = self._span(p)
        if parent.live:
            sid = self.reg.new_span("explicit", parent=parent.id)
            s = self.model.new_span(self._label(), sid, parent)
            note(f"{s} = new span, explicit parent {parent}")
        else:
            note(f"new span, explicit parent {parent} closed: error")
            before = len(self.reg)
            expect_not_found(self.reg.new_span, "explicit", parent=parent.id)
            assert len(self.reg) == before

    @precondition(_has_spans)
    @rule(i=INDEX)
    def clone_span(self, i: int) -> None:
        s = self._span(i)
        note(f"clone_span({s}), live={s.live}")
        if self.model.clone_span(s):
            assert self.reg.clone_span(s.id) == s.id
        else:
            expect_not_found(self.reg.clone_span, s.id)

    @precondition(lambda self: any(s.refs for s in self.model.spans))
    @rule(i=INDEX)
    def try_close(self, i: int) -> None:
        held = [s for s in self.model.spans if s.refs]
        s = held[i % len(held)]
        closed = self.reg.try_close(s.id)
        expected = self.model.try_close(s)
        note(f"try_close({s}) -> {closed}")
        assert closed is expected, f"try_close({s}) returned {closed}, model says {expected}"

    @rule(i=INDEX, c=INDEX)
    def use_dead_id(self, i: int, c: int) -> None:
        """An ID that is not live (closed, or never issued) is an error
        everywhere, changes nothing (R2-R5), and try_close never gives a
        second True (R4)."""
        sid = self._dead_id(i)
        mc = self._context(c)
        note(f"use dead ID {sid}")
        expect_not_found(self.reg.try_close, sid)
        expect_not_found(self.reg.clone_span, sid)
        expect_not_found(self.reg.new_span, "explicit", parent=sid)
        expect_not_found(mc.ctx.run, self.reg.span, "handle", parent=sid)
        expect_not_found(mc.ctx.run, self.reg.enter, sid)
        expect_not_found(self.reg.record, sid, a=1)
        mc.ctx.run(self.reg.exit, sid)
        assert self.reg.get(sid) is None
        assert self.reg.ref_count(sid) == 0

    @precondition(_has_spans)
    @rule(i=INDEX, key=st.sampled_from(["a", "b"]), value=VALUE)
    def record(self, i: int, key: str, value: Any) -> None:
        s = self._span(i)
        if self.model.record(s, {key: value}):
            self.reg.record(s.id, **{key: value})
            fields = self.reg.get(s.id).fields
            assert fields == s.fields, f"{s} fields {fields}, model {s.fields}"
        else:
            expect_not_found(self.reg.record, s.id, **{key: value})

    # --- enter and exit ---

    @precondition(_has_spans)
    @rule(c=INDEX, spans=st.lists(INDEX, min_size=1, max_size=4))
    def enter(self, c: int, spans: list[int]) -> None:
        """Enter spans in turn, each checked: a duplicate takes no reference;
        a closed span raises and leaves the stack as it was."""
        mc = self._context(c)
        for i in spans:
            s = self._span(i)
            note(f"enter {s} (live={s.live}) in {mc.label} {self.model.stacks[mc]}")
            if self.model.enter(mc, s):
                mc.ctx.run(self.reg.enter, s.id)
            else:
                expect_not_found(mc.ctx.run, self.reg.enter, s.id)
            self.agrees_with_model()

    @precondition(lambda self: any(self.model.stacks[mc] for mc in self.contexts))
    @rule(c=INDEX, positions=st.lists(INDEX, min_size=1, max_size=3))
    def exit_entered(self, c: int, positions: list[int]) -> None:
        """Exit spans on the stack, each checked: at the top, or below it."""
        entered = [mc for mc in self.contexts if self.model.stacks[mc]]
        mc = entered[c % len(entered)]
        for pos in positions:
            stack = self.model.stacks[mc]
            if not stack:
                return
            s = stack[pos % len(stack)].span
            note(f"exit {s} in {mc.label} {stack}")
            mc.ctx.run(self.reg.exit, s.id)
            assert self.model.exit(mc, s)
            self.agrees_with_model()

    @rule(c=INDEX, i=INDEX)
    def exit_not_entered(self, c: int, i: int) -> None:
        """Exit a span this context has not entered: no change, no error."""
        mc = self._context(c)
        on_stack = {e.span for e in self.model.stacks[mc]}
        others = [s.id for s in self.model.spans if s not in on_stack] + [NEVER_ISSUED]
        mc.ctx.run(self.reg.exit, others[i % len(others)])

    # --- handles ---

    @rule(c=INDEX, parent=st.sampled_from(["current", "root", "explicit"]), p=INDEX)
    def new_handle(self, c: int, parent: str, p: int) -> None:
        mc = self._context(c)
        label = self._label()
        if parent == "current":
            h = mc.ctx.run(self.reg.span, "handle")
            mparent = self.model.current(mc)
        elif parent == "root":
            h = mc.ctx.run(self.reg.span, "handle", parent=None)
            mparent = None
        elif not self.model.spans:
            return
        else:
            mparent = self._span(p)
            if not mparent.live:
                expect_not_found(mc.ctx.run, self.reg.span, "handle", parent=mparent.id)
                return
            h = mc.ctx.run(self.reg.span, "handle", parent=mparent.id)
        s = self.model.new_span(label, h.id, mparent, handle=True)
        assert not h.closed
        self.handles.append((h, s))
        note(f"{s} = handle in {mc.label}, parent {mparent}")

    @precondition(lambda self: bool(self.handles))
    @rule(i=INDEX)
    def clone_handle(self, i: int) -> None:
        h, s = self.handles[i % len(self.handles)]
        h2 = h.clone()
        assert h2.id == h.id
        s.handles += 1
        self.handles.append((h2, s))
        note(f"clone a handle on {s}")

    @precondition(lambda self: bool(self.handles))
    @rule(i=INDEX, how=st.sampled_from(["close", "del"]))
    def release_handle(self, i: int, how: str) -> None:
        """close() releases once and a second close() does nothing; a handle
        garbage-collected unreleased releases its reference. Either way,
        refcounting alone must release it (no gc.collect() here)."""
        h, s = self.handles.pop(i % len(self.handles))
        note(f"{how} a handle on {s}")
        if how == "close":
            h.close()
            assert h.closed
            h.close()
        del h
        self.model.release_handle(s)

    # --- invariants ---

    @invariant()
    def agrees_with_model(self) -> None:
        check_registry(self.reg, self.model)
        for mc in self.contexts:
            current = mc.ctx.run(self.reg.current_span)
            want = self.model.current(mc)
            assert current == (None if want is None else want.id), (
                f"{mc.label}: current_span() == {current}, model {want}, "
                f"stack {self.model.stacks[mc]}"
            )

    def teardown(self) -> None:
        # sys.exc_info() is set here when a step failed: then only clean up.
        failed = sys.exc_info()[0] is not None
        with contextlib.suppress(Exception) if failed else contextlib.nullcontext():
            for s in self.model.spans:
                for _ in range(s.refs):
                    self.reg.try_close(s.id)
            for h, _ in self.handles:
                h.close()
        self.handles.clear()
        for mc in self.contexts:
            mc.ctx = None  # type: ignore[assignment]
        self.contexts.clear()
        self.base = None  # type: ignore[assignment]
        if len(self.reg):
            gc.collect()  # (costly in a big heap, so only when needed)
        if not failed:
            assert len(self.reg) == 0, f"{len(self.reg)} spans leaked"


RegistryMachine.TestCase.settings = settings(
    max_examples=MACHINE_EXAMPLES, stateful_step_count=50, **_COMMON
)
TestRegistryMachine = _TIMEOUT(RegistryMachine.TestCase)


# === real threads in lockstep ===


@dataclass(frozen=True)
class Op:
    """An operation resolved against the model at the start of a step.

    ``span`` indexes ``model.spans``; ``new_index`` numbers a new span's
    label, in thread order within the step.
    """

    kind: str
    span: int | None = None
    parent: str = ""
    new_index: int | None = None
    sid: int | None = None  # the ID to pass (a dead ID has no model span)


OP = st.one_of(
    st.tuples(st.sampled_from(["new_root", "new_current", "new_explicit"]), INDEX),
    st.tuples(
        st.sampled_from(["clone", "close", "close_dead", "enter", "exit", "exit_other", "record"]),
        INDEX,
    ),
)


def resolve(model: Model, thread: int, kind: str, i: int, budget: dict[int, int]) -> Op:
    """Turns a drawn (kind, index) into an operation valid at this step:
    indices pick among the spans that fit (newest first); where none fits,
    a new root span, a no-op exit or a close of a dead ID instead."""
    spans = model.spans

    def pick(candidates: list[int]) -> int:
        return candidates[-1 - i % len(candidates)]

    if kind == "new_root" or (not spans and kind in ("new_explicit", "clone", "enter", "record")):
        return Op("new", parent="root")
    if kind == "new_current":
        return Op("new", parent="current")
    if kind == "exit":
        stack = model.stacks[thread]
        if stack:
            j = spans.index(stack[pick(list(range(len(stack))))].span)
            return Op("exit", span=j, sid=spans[j].id)
        kind = "exit_other"
    if kind == "exit_other":
        on_stack = {e.span for e in model.stacks[thread]}
        others = [s.id for s in spans if s not in on_stack] + [NEVER_ISSUED]
        return Op("exit_other", sid=others[pick(list(range(len(others))))])
    if kind == "close":
        # Never close more of a span's references in one step than the test
        # holds at its start, so that no order steals another's reference.
        held = [j for j, s in enumerate(spans) if s.refs - budget.get(j, 0) > 0]
        if held:
            j = pick(held)
            budget[j] = budget.get(j, 0) + 1
            return Op("close", span=j, sid=spans[j].id)
        kind = "close_dead"
    if kind == "close_dead":
        dead = [s.id for s in spans if not s.live] + [NEVER_ISSUED]
        return Op("close_dead", sid=dead[pick(list(range(len(dead))))])
    j = pick(list(range(len(spans))))
    if kind == "new_explicit":
        return Op("new", parent="explicit", span=j, sid=spans[j].id)
    return Op(kind, span=j, sid=spans[j].id)


def perform(reg: Registry, op: Op) -> tuple[object, int | None]:
    """Runs `op` on the calling thread: (outcome, current span after)."""
    try:
        if op.kind == "new":
            parent = {"root": None, "current": CURRENT}.get(op.parent, op.sid)
            outcome: object = ("id", reg.new_span("t", parent=parent))
        elif op.kind == "clone":
            outcome = ("ok", reg.clone_span(op.sid))
        elif op.kind in ("close", "close_dead"):
            outcome = ("ok", reg.try_close(op.sid))
        elif op.kind == "enter":
            outcome = ("ok", reg.enter(op.sid))
        elif op.kind in ("exit", "exit_other"):
            outcome = ("ok", reg.exit(op.sid))
        elif op.kind == "record":
            outcome = ("ok", reg.record(op.sid, k=op.sid))
        else:
            raise AssertionError(op.kind)
    except SpanNotFoundError:
        outcome = ("not found", None)
    except Exception as e:  # reported, and fails the step
        outcome = ("raised", repr(e))
    return outcome, reg.current_span()


def predict(model: Model, thread: int, op: Op, observed: object) -> object:
    """Applies `op` to `model` as `thread`; returns the outcome it predicts.
    A new span takes the ID the registry gave (its outcome) if it succeeds."""
    spans = model.spans
    s = spans[op.span] if op.span is not None else None
    if op.kind == "new":
        if op.parent == "root":
            parent = None
        elif op.parent == "current":
            parent = model.current(thread)
        else:
            assert s is not None
            if not s.live:
                return ("not found", None)
            parent = s
        if not (isinstance(observed, tuple) and observed[0] == "id"):
            return ("id", "any new ID")
        sid = observed[1]
        if any(x.live and x.id == sid for x in spans):
            return ("id", f"not {sid}, which is live")
        # Appended in this order's order; linearize() sorts them back.
        spans.append(MSpan(f"s{op.new_index}", sid, parent, refs=1))
        return ("id", sid)
    if op.kind == "clone":
        assert s is not None
        return ("ok", op.sid) if model.clone_span(s) else ("not found", None)
    if op.kind == "close":
        assert s is not None
        if not s.live:  # cannot happen within the budget
            return ("not found", None)
        return ("ok", model.try_close(s))
    if op.kind == "close_dead":
        return ("not found", None)
    if op.kind == "enter":
        assert s is not None
        return ("ok", None) if model.enter(thread, s) else ("not found", None)
    if op.kind == "exit":
        assert s is not None
        model.exit(thread, s)
        return ("ok", None)
    if op.kind == "exit_other":
        return ("ok", None)
    if op.kind == "record":
        assert s is not None
        return ("ok", None) if model.record(s, {"k": op.sid}) else ("not found", None)
    raise AssertionError(op.kind)


def registry_matches(reg: Registry, model: Model) -> str | None:
    try:
        check_registry(reg, model)
    except AssertionError as e:
        return str(e)
    return None


def linearize(
    reg: Registry,
    model: Model,
    ops: dict[int, Op],
    seen: dict[int, tuple[object, int | None]],
    likely: tuple[int, ...],
) -> Model:
    """The model after the first order of `ops` that explains every
    outcome, every thread's current span and the registry's state. The
    order the threads finished in is tried first."""
    failures = []
    orders = itertools.permutations(sorted(ops))
    for order in dict.fromkeys(itertools.chain([likely], orders)):
        trial = copy.deepcopy(model)
        n_before = len(trial.spans)
        mismatch = None
        for t in order:
            predicted = predict(trial, t, ops[t], seen[t][0])
            if predicted != seen[t][0]:
                mismatch = f"thread {t} {ops[t]}: saw {seen[t][0]}, model {predicted}"
                break
        if mismatch is None:
            # New spans in thread order, so that indices drawn later agree.
            trial.spans[n_before:] = sorted(trial.spans[n_before:], key=lambda s: int(s.label[1:]))
            for t in ops:
                want = trial.current(t)
                if seen[t][1] != (None if want is None else want.id):
                    mismatch = f"thread {t}: current {seen[t][1]}, model {want}"
                    break
        if mismatch is None:
            mismatch = registry_matches(reg, trial)
        if mismatch is None:
            return trial
        failures.append(f"order {order}: {mismatch}")
    raise AssertionError("no order of the step's operations explains it:\n" + "\n".join(failures))


@_TIMEOUT
@settings(max_examples=THREAD_EXAMPLES, **_COMMON)
@given(data=st.data())
def test_threads_in_lockstep(data: st.DataObject) -> None:
    """Each step, every thread (in its own thread context) runs one
    operation, all released at once by a barrier; after the next barrier
    the registry must match the model for some order of those operations.
    The threads end with spans still entered: joining them must release
    their stacks' references (R11)."""
    n_threads = data.draw(st.integers(2, 4), label="threads")
    schedule = data.draw(
        st.lists(
            st.lists(OP, min_size=n_threads, max_size=n_threads),
            min_size=4,
            max_size=40,
        ),
        label="schedule",
    )
    reg = Registry()
    model = Model()
    for t in range(n_threads):
        model.new_context(t, None)
    barrier = threading.Barrier(n_threads + 1, timeout=60)
    plan: dict[int, Op] = {}
    finished: list[int] = []
    seen: dict[int, tuple[object, int | None]] = {}
    stop = False
    n_new = 0

    def worker(t: int) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            while True:
                barrier.wait()
                if stop:
                    return
                if t in plan:
                    seen[t] = perform(reg, plan[t])
                    finished.append(t)  # atomic; roughly the order they ran
                barrier.wait()

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(n_threads)]
    for th in threads:
        th.start()
    try:
        for step, drawn in enumerate(schedule):
            budget: dict[int, int] = {}
            plan.clear()
            seen.clear()
            finished.clear()
            for t, (kind, i) in enumerate(drawn):
                op = resolve(model, t, kind, i, budget)
                if op.kind == "new":
                    op = dataclasses.replace(op, new_index=n_new)
                    n_new += 1
                plan[t] = op
            barrier.wait()  # go
            barrier.wait()  # done
            note(f"step {step}: {plan} -> {seen}")
            for t, (outcome, _) in seen.items():
                assert outcome[0] != "raised", f"thread {t} {plan[t]}: {outcome}"  # type: ignore[index]
            model = linearize(reg, model, dict(plan), dict(seen), tuple(finished))
        stop = True
        barrier.wait()
    finally:
        barrier.abort()
        for th in threads:
            th.join(timeout=60)
    assert not any(th.is_alive() for th in threads)
    # The threads ended with their stacks as they were: R11.
    for t in range(n_threads):
        model.drop_context(t)
    check_registry(reg, model)
    for s in model.spans:
        for _ in range(s.refs):
            reg.try_close(s.id)
    assert len(reg) == 0
