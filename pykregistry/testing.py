"""Property-test span lifecycles: a reference model of the registry's rules,
hypothesis strategies and a state machine built on it, and leak checks.

Needs `hypothesis <https://hypothesis.readthedocs.io>`_ (``pip install
hypothesis``, or ``pip install 'pykregistry[test]'``); importing
:mod:`pykregistry` itself never imports it. ``pytest`` is optional: without
it, everything but the fixture is available.

What is here:

- :class:`RegistryModel` — the reference model of the rules R2-R9: the
  references a test holds on each span, parents, and each context's stack of
  entries, with every span's expected reference count derived from R9 and
  spans closing (cascading to their parents) when it reaches 0.
  :func:`assert_matches_model` compares a registry with it.
- :func:`span_programs` / :func:`span_ops` — hypothesis strategies for
  programs of span operations (create with a root, contextual or explicit
  parent; clone; close; enter; exit; record; across several contexts), and
  :func:`run_program`, which runs one in ``contextvars.Context`` objects,
  checking every step against the model. :class:`ProgramChecker` checks a
  program whose steps you run yourself (on threads, in asyncio tasks).
- :class:`SpanLifecycleMachine` — a hypothesis ``RuleBasedStateMachine``
  over spans, handles and contexts, checking counts, parents, ``len`` and
  every context's current span after every step. Subclass it and add rules
  that call your own instrumented code.
- :func:`assert_no_leaks` — fails with a report of every span still live:
  ID, name, target, parent, reference count and what may hold it. Add a
  :class:`LiveSpans` layer to the registry for the full report.
- the ``span_registry`` pytest fixture: a fresh registry per test that fails
  the test if it leaves spans live. Enable it in your root ``conftest.py``::

      pytest_plugins = ["pykregistry.testing"]

A property test of your own code in a few lines::

    from hypothesis import given
    from pykregistry import Registry
    from pykregistry.testing import run_program, span_programs

    @given(span_programs(contexts=3))
    def test_rules_hold(program):
        run_program(Registry(), program, contexts=3)

(PYTEST_DONT_REWRITE: the assertions here carry their own messages, so pytest
need not rewrite this module, and it may be imported before pytest loads it
as a plugin.)
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import gc
import importlib.util
import os
import random
import sys
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

# Checked before importing, rather than by catching the ImportError: a
# hypothesis that is installed but broken shows its own error, and no name
# of the handler lingers in the module (stubtest checks it).
if importlib.util.find_spec("hypothesis") is None:  # pragma: no cover - the environment
    raise ImportError(
        "pykregistry.testing needs hypothesis: pip install hypothesis "
        "(or pip install 'pykregistry[test]')",
        name="hypothesis",
    )

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import pykregistry
from pykregistry import CURRENT, Registry, Span, SpanNotFoundError, SpanRef

__all__ = [
    "INDEX",
    "NEVER_ISSUED",
    "OP_KINDS",
    "VALUE",
    "LiveSpans",
    "MachineContext",
    "ModelEntry",
    "ModelSpan",
    "ProgramChecker",
    "RegistryModel",
    "SpanLifecycleMachine",
    "SpanOp",
    "Step",
    "TrackedSpan",
    "assert_matches_model",
    "assert_no_leaks",
    "leak_report",
    "model_mismatches",
    "perform_step",
    "predict_step",
    "random_program",
    "resolve_op",
    "run_program",
    "span_ops",
    "span_programs",
]

_T = TypeVar("_T")

NEVER_ISSUED = 2**64 - 1
"""A valid ID that no registry issues (a key's thread index never fills its
field): an ID that is certainly not live."""

INDEX = st.integers(min_value=0, max_value=63)
"""Indices drawn by the strategies and the machine's rules. An index picks
among whatever fits when it is used (``i % len(candidates)``), so programs
stay meaningful while hypothesis shrinks them."""

VALUE = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=5))
"""Field values that read back exactly (R10)."""


# === the reference model ===


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


# === programs ===

OP_KINDS = (
    "new_root",
    "new_current",
    "new_explicit",
    "clone",
    "close",
    "close_dead",
    "enter",
    "exit",
    "exit_other",
    "record",
)
"""The kinds of :class:`SpanOp`:

- ``new_root``, ``new_current``, ``new_explicit``: ``new_span`` with
  ``parent=None``, ``parent=CURRENT`` or a model span's ID (which may have
  closed: then it must fail and create nothing);
- ``clone`` (any model span, live or not), ``close`` (a span the program
  holds a reference on), ``close_dead`` (an ID that is not live: must fail);
- ``enter`` (any model span), ``exit`` (an entry of the context's stack),
  ``exit_other`` (a span not on the context's stack: a no-op);
- ``record`` (any model span).
"""


@dataclass(frozen=True)
class SpanOp:
    """One drawn operation of a program: a kind from :data:`OP_KINDS`, an
    index that picks its span when it runs (among the spans that fit then),
    and the context it runs in (an index, modulo the number of contexts).
    Where nothing fits, :func:`resolve_op` picks a fallback."""

    kind: str
    index: int = 0
    context: int = 0

    def __repr__(self) -> str:
        return f"SpanOp({self.kind!r}, index={self.index}, context={self.context})"


def span_ops(*, contexts: int = 1, kinds: Iterable[str] = OP_KINDS) -> st.SearchStrategy[SpanOp]:
    """A strategy for one :class:`SpanOp` of the given kinds, in one of
    `contexts` contexts."""
    kinds = tuple(kinds)
    unknown = set(kinds) - set(OP_KINDS)
    if unknown:
        raise ValueError(f"unknown operation kinds {sorted(unknown)}; choose from {OP_KINDS}")
    return st.builds(
        SpanOp,
        kind=st.sampled_from(kinds),
        index=INDEX,
        context=st.integers(0, max(contexts, 1) - 1),
    )


def span_programs(
    *,
    contexts: int = 1,
    min_size: int = 1,
    max_size: int = 50,
    kinds: Iterable[str] = OP_KINDS,
) -> st.SearchStrategy[list[SpanOp]]:
    """A strategy for programs: lists of :class:`SpanOp` over `contexts`
    contexts. Run one with :func:`run_program`, or step by step with
    :class:`ProgramChecker`."""
    return st.lists(span_ops(contexts=contexts, kinds=kinds), min_size=min_size, max_size=max_size)


def random_program(rng: random.Random, length: int, *, contexts: int = 1) -> list[SpanOp]:
    """A program drawn from `rng` rather than by hypothesis: for stress
    tests whose size would overwhelm hypothesis (many threads, long runs)."""
    return [
        SpanOp(rng.choice(OP_KINDS), rng.randrange(64), rng.randrange(max(contexts, 1)))
        for _ in range(length)
    ]


@dataclass(frozen=True)
class Step:
    """An operation resolved against the model before it runs.

    ``kind`` is ``new``, ``clone``, ``close``, ``close_dead``, ``enter``,
    ``exit``, ``exit_other`` or ``record``; ``span`` indexes
    ``model.spans``; ``parent`` is ``root``, ``current`` or ``explicit``
    for ``new``; ``new_index`` numbers a new span's label; ``sid`` is the ID
    to pass.
    """

    kind: str
    span: int | None = None
    parent: str = ""
    new_index: int | None = None
    sid: int | None = None


def resolve_op(
    model: RegistryModel,
    context: Hashable,
    kind: str,
    index: int,
    budget: dict[int, int] | None = None,
) -> Step:
    """Turns a drawn (kind, index) into a step valid now in `context`:
    indices pick among the spans that fit (newest first); where none fits, a
    new root span, a no-op exit or a close of a dead ID instead.

    `budget` counts the closes already planned per span in a batch of steps
    that will run concurrently: a batch never closes more of a span's
    references than the test holds at its start, so no order of the batch
    steals another step's reference.
    """
    spans = model.spans
    budget = {} if budget is None else budget

    def pick(candidates: list[int]) -> int:
        return candidates[-1 - index % len(candidates)]

    if kind not in OP_KINDS:
        raise ValueError(f"unknown operation kind {kind!r}; choose from {OP_KINDS}")
    if kind == "new_root" or (not spans and kind in ("new_explicit", "clone", "enter", "record")):
        return Step("new", parent="root")
    if kind == "new_current":
        return Step("new", parent="current")
    if kind == "exit":
        stack = model.stacks[context]
        if stack:
            j = spans.index(stack[pick(list(range(len(stack))))].span)
            return Step("exit", span=j, sid=spans[j].id)
        kind = "exit_other"
    if kind == "exit_other":
        on_stack = {e.span for e in model.stacks[context]}
        others = [s.id for s in spans if s not in on_stack] + [NEVER_ISSUED]
        return Step("exit_other", sid=others[pick(list(range(len(others))))])
    if kind == "close":
        held = [j for j, s in enumerate(spans) if s.refs - budget.get(j, 0) > 0]
        if held:
            j = pick(held)
            budget[j] = budget.get(j, 0) + 1
            return Step("close", span=j, sid=spans[j].id)
        kind = "close_dead"
    if kind == "close_dead":
        dead = [s.id for s in spans if not s.live] + [NEVER_ISSUED]
        return Step("close_dead", sid=dead[pick(list(range(len(dead))))])
    j = pick(list(range(len(spans))))
    if kind == "new_explicit":
        return Step("new", parent="explicit", span=j, sid=spans[j].id)
    return Step(kind, span=j, sid=spans[j].id)


Outcome = tuple[str, Any]
"""What a step gave: ``("id", new_id)``, ``("ok", result)``,
``("not found", None)`` (SpanNotFoundError) or ``("raised", repr)``."""


def perform_step(registry: Registry, step: Step) -> tuple[Outcome, int | None]:
    """Runs `step` in the calling context: (outcome, current span after).
    Call it where the step belongs (``ctx.run(perform_step, ...)``, on the
    step's thread, in the step's task)."""
    try:
        if step.kind == "new":
            parent = {"root": None, "current": CURRENT}.get(step.parent, step.sid)
            outcome: Outcome = ("id", registry.new_span("t", parent=parent))
        elif step.kind == "clone":
            outcome = ("ok", registry.clone_span(_sid(step)))
        elif step.kind in ("close", "close_dead"):
            outcome = ("ok", registry.try_close(_sid(step)))
        elif step.kind == "enter":
            registry.enter(_sid(step))
            outcome = ("ok", None)
        elif step.kind in ("exit", "exit_other"):
            registry.exit(_sid(step))
            outcome = ("ok", None)
        elif step.kind == "record":
            registry.record(_sid(step), k=step.sid)
            outcome = ("ok", None)
        else:
            raise ValueError(f"unknown step kind {step.kind!r}")
    except SpanNotFoundError:
        outcome = ("not found", None)
    except Exception as e:  # reported, and fails the step
        outcome = ("raised", repr(e))
    return outcome, registry.current_span()


def _sid(step: Step) -> int:
    assert step.sid is not None, f"{step} names no span"
    return step.sid


def predict_step(model: RegistryModel, context: Hashable, step: Step, observed: Outcome) -> Outcome:
    """Applies `step` to `model` as run in `context`; returns the outcome
    the registry must have given. A new span takes the ID the registry gave
    (in `observed`) if it gave one that is not live in the model."""
    spans = model.spans
    s = spans[step.span] if step.span is not None else None
    if step.kind == "new":
        if step.parent == "root":
            parent = None
        elif step.parent == "current":
            parent = model.current(context)
        else:
            assert s is not None
            if not s.live:
                return ("not found", None)
            parent = s
        if observed[0] != "id":
            return ("id", "any new ID")
        sid = observed[1]
        if any(x.live and x.id == sid for x in spans):
            return ("id", f"not {sid}, which is live")
        spans.append(ModelSpan(f"s{step.new_index}", sid, parent, refs=1))
        return ("id", sid)
    if step.kind == "clone":
        assert s is not None
        return ("ok", step.sid) if model.clone_span(s) else ("not found", None)
    if step.kind == "close":
        assert s is not None
        if not s.live:  # cannot happen within the budget
            return ("not found", None)
        return ("ok", model.try_close(s))
    if step.kind == "close_dead":
        return ("not found", None)
    if step.kind == "enter":
        assert s is not None
        return ("ok", None) if model.enter(context, s) else ("not found", None)
    if step.kind == "exit":
        assert s is not None
        model.exit(context, s)
        return ("ok", None)
    if step.kind == "exit_other":
        return ("ok", None)
    if step.kind == "record":
        assert s is not None
        return ("ok", None) if model.record(s, {"k": step.sid}) else ("not found", None)
    raise ValueError(f"unknown step kind {step.kind!r}")


class ProgramChecker:
    """Checks a program run one step at a time, wherever its steps run.

    ``plan`` resolves an operation against the model; run the step where it
    belongs with :func:`perform_step`; ``check`` then applies it to the
    model and asserts the outcome, the context's current span and the whole
    registry (:func:`assert_matches_model`) agree::

        checker = ProgramChecker(registry)
        checker.add_context("t1")
        step = checker.plan("t1", op)
        seen = run_on_thread_1(perform_step, registry, step)
        checker.check("t1", step, seen)

    With ``check_all=False``, only the spans of this model are checked, not
    ``len`` (for a model of one thread's spans in a shared registry); spans
    shared with other programs (:meth:`add_shared_span`) are never checked.
    """

    def __init__(
        self,
        registry: Registry,
        model: RegistryModel | None = None,
        *,
        check_all: bool = True,
    ) -> None:
        self.registry = registry
        self.model = RegistryModel() if model is None else model
        self.check_all = check_all
        self.baseline = len(registry) if check_all else 0
        self.steps = 0
        self.shared: list[ModelSpan] = []
        """Spans held outside the program (:meth:`add_shared_span`)."""
        self._new = 0

    def add_context(self, key: Hashable, parent: Hashable | None = None) -> None:
        """A new context: empty, or a copy of `parent` (sharing its entries)."""
        self.model.new_context(key, parent)

    def drop_context(self, key: Hashable) -> None:
        """The context ended: its stack's references are released (R11)."""
        self.model.drop_context(key)

    def add_shared_span(self, sid: int, label: str = "shared") -> ModelSpan:
        """A live root span held outside this program (by the caller, used
        by programs on other threads too) that the program may use. The
        references the program takes on it are modeled, but its count is
        not checked, since others change it: :meth:`contribution` gives this
        program's part of it. Its holder must keep it live throughout."""
        view = self.registry.get(sid)
        assert view is not None, f"span {sid} is not live"
        assert view.parent_id is None, f"span {sid} is not a root"
        assert not self.check_all, "shared spans need ProgramChecker(..., check_all=False)"
        s = self.model.new_span(label, sid, None, handle=True)  # the holder's reference
        self.shared.append(s)
        return s

    def contribution(self, span: ModelSpan) -> int:
        """The references this program's own spans, IDs and stacks hold on
        `span` (a shared span: its count less its holder's reference)."""
        return self.model.counts().get(span, 0) - (1 if span in self.shared else 0)

    def plan(self, context: Hashable, op: SpanOp) -> Step:
        """The step `op` stands for in `context`, now."""
        step = resolve_op(self.model, context, op.kind, op.index)
        if step.kind == "new":
            step = dataclasses.replace(step, new_index=self._new)
            self._new += 1
        return step

    def check(
        self,
        context: Hashable,
        step: Step,
        seen: tuple[Outcome, int | None],
        *,
        full: bool = True,
    ) -> None:
        """Applies `step` to the model and asserts the registry agrees with
        what `perform_step` saw in `context` and (if `full`) with the
        model."""
        outcome, current = seen
        predicted = predict_step(self.model, context, step, outcome)
        self.steps += 1
        assert outcome == predicted, (
            f"step {self.steps} {step} in {context!r}: saw {outcome}, model {predicted}"
        )
        want = self.model.current(context)
        assert current == (None if want is None else want.id), (
            f"step {self.steps} {step} in {context!r}: current span {current}, model {want} "
            f"(stack {self.model.stacks[context]})"
        )
        if not full:
            return
        try:
            self.check_registry()
        except AssertionError as e:
            raise AssertionError(f"after step {self.steps} {step} in {context!r}: {e}") from None

    def check_registry(self) -> None:
        """Asserts the registry agrees with the model now."""
        if self.check_all:
            assert_matches_model(self.registry, self.model, baseline=self.baseline)
        else:
            own = [s for s in self.model.spans if s not in self.shared]
            assert_matches_model(self.registry, self.model, spans=own)

    def release_all(self) -> None:
        """Closes every ID reference the program still holds."""
        for s in self.model.spans:
            while s.refs:
                assert s.live, f"model bug: {s} holds references but closed"
                closed = self.registry.try_close(s.id)
                assert closed is self.model.try_close(s), f"closing {s} disagrees with the model"


def run_program(registry: Registry, program: Iterable[SpanOp], *, contexts: int = 1) -> None:
    """Runs `program` in `contexts` fresh ``contextvars.Context`` objects on
    the calling thread, checking every step against the model; then drops
    the contexts, closes what the program holds and asserts the registry is
    back to its starting ``len`` (R9, R11). Raises AssertionError at the
    first disagreement, naming the step."""
    checker = ProgramChecker(registry)
    empty = contextvars.Context()
    ctxs = [empty.run(contextvars.copy_context) for _ in range(max(contexts, 1))]
    for n in range(len(ctxs)):
        checker.add_context(n)
    for op in program:
        key = op.context % len(ctxs)
        step = checker.plan(key, op)
        checker.check(key, step, ctxs[key].run(perform_step, registry, step))
    ctxs.clear()  # the contexts and the stacks they hold go now (refcounting)
    for n in range(len(checker.model.stacks)):
        checker.drop_context(n)
    checker.check_registry()
    checker.release_all()
    checker.check_registry()
    assert len(registry) == checker.baseline, (
        f"{len(registry) - checker.baseline} spans leaked\n{leak_report(registry)}"
    )


# === the state machine ===


@dataclass(eq=False)
class MachineContext:
    """One of :class:`SpanLifecycleMachine`'s contexts: ``run`` calls a
    function in it, as ``contextvars.Context.run`` does."""

    label: str
    ctx: contextvars.Context

    def run(self, func: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """``func(*args, **kwargs)`` in this context."""
        return self.ctx.run(func, *args, **kwargs)

    def __repr__(self) -> str:
        return self.label


def _note(text: str) -> None:
    """``hypothesis.note``, and nothing when not in a test (a rule called
    by hand)."""
    with contextlib.suppress(InvalidArgument):
        note(text)


def _expect_not_found(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
    try:
        result = func(*args, **kwargs)
    except SpanNotFoundError:
        return
    raise AssertionError(
        f"{getattr(func, '__name__', func)}{args} gave {result!r}, expected SpanNotFoundError"
    )


class SpanLifecycleMachine(RuleBasedStateMachine):
    """A hypothesis state machine over spans (by ID and by handle) and
    contexts (``contextvars.Context`` objects on one thread: fresh ones, and
    copies that share their parent's entries as an asyncio task does),
    checked against :class:`RegistryModel` after every step: every model
    span's count, parent and liveness, ``len(registry)``, and every
    context's current span.

    Run it as ``TestSpans = SpanLifecycleMachine.TestCase``. To drive your
    own instrumented code, subclass it and add rules: a rule runs your code
    in one of the machine's contexts — where the machine's own rules have
    left spans entered, so your spans get contextual parents — and the
    invariants then check that your code left every count, ``len`` and
    current span as the model says: a span it leaked or left entered, or a
    reference it took and kept, fails the step with a report::

        from hypothesis import strategies as st
        from hypothesis.stateful import rule
        from pykregistry.testing import INDEX, SpanLifecycleMachine

        class HandlerMachine(SpanLifecycleMachine):
            @rule(c=INDEX, user=st.integers())
            def handle_request(self, c: int, user: int) -> None:
                self.context(c).run(myapp.handle_request, self.registry, user)

            @rule(c=INDEX)
            def open_session(self, c: int) -> None:
                # Code that hands back a span it means the caller to own:
                # adopt it, and the machine's rules clone, enter and close it.
                self.adopt(self.context(c).run(myapp.open_session, self.registry))

        TestHandler = HandlerMachine.TestCase

    Override :meth:`make_registry` for a registry with your layers or
    filter (or ``pykregistry.default_registry()``, if your code uses it:
    spans live there before the machine starts are taken as a baseline).
    Add checks of your own with ``@invariant()`` methods. Tune it as any
    machine: ``HandlerMachine.TestCase.settings = settings(max_examples=...,
    stateful_step_count=...)``.
    """

    max_contexts = 6
    """How many contexts may exist at once."""

    def __init__(self) -> None:
        super().__init__()
        self.registry = self.make_registry()
        self.baseline = len(self.registry)
        """Spans live in the registry before the machine began."""
        self.model = RegistryModel()
        # Fresh contexts are copies of an empty one, whatever the test
        # runner did to the context the test runs in.
        self.base = contextvars.Context()
        self.contexts: list[MachineContext] = []
        self.handles: list[tuple[Span, ModelSpan]] = []
        """Open handles the machine holds, with their model spans."""
        self.n_contexts = 0

    def make_registry(self) -> Registry:
        """The registry under test, made once per run. By default a new,
        strict one (timing mistakes raise, SPEC R15), with a
        :class:`LiveSpans` layer for leak reports."""
        return Registry(layers=[LiveSpans()], strict=True)

    # --- for subclasses ---

    def context(self, c: int) -> MachineContext:
        """The context an index drawn from :data:`INDEX` picks."""
        return self.contexts[c % len(self.contexts)]

    def adopt(self, span: Span | int) -> ModelSpan:
        """Takes over a reference your code handed back — a
        :class:`~pykregistry.Span` handle, or the ID of a span it created
        (or cloned) with ``new_span`` for the caller to close — so that the
        model counts it and the machine's rules may clone, enter, record on
        and release it. Its parent must be a span the model knows (or
        none)."""
        handle = span if isinstance(span, Span) else None
        sid = span.id if isinstance(span, Span) else span
        assert sid is not None, "cannot adopt a disabled span"
        view = self.registry.get(sid)
        assert view is not None, f"cannot adopt span {sid}: it is not live"
        known = self.model.span_with_id(sid)
        if known is not None:  # another reference on a span the model knows
            if handle is not None:
                known.handles += 1
                self.handles.append((handle, known))
            else:
                known.refs += 1
            return known
        parent = None
        if view.parent_id is not None:
            parent = self.model.span_with_id(view.parent_id)
            assert parent is not None, (
                f"cannot adopt span {sid}: its parent {view.parent_id} is not a span the "
                "model knows; adopt the parent first"
            )
        s = self.model.new_span(f"s{len(self.model.spans)}", sid, parent, handle=handle is not None)
        if handle is not None:
            self.handles.append((handle, s))
        _note(f"{s} = adopted {'ID' if handle is None else 'handle'}, parent {parent}")
        return s

    # --- helpers ---

    def _add_context(
        self, ctx: contextvars.Context, parent: MachineContext | None
    ) -> MachineContext:
        mc = MachineContext(f"c{self.n_contexts}", ctx)
        self.n_contexts += 1
        self.model.new_context(mc, parent)
        self.contexts.append(mc)
        return mc

    def _span(self, i: int) -> ModelSpan:
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
        """Every run starts with one empty context."""
        self._add_context(self.base.run(contextvars.copy_context), None)

    @precondition(lambda self: len(self.contexts) < self.max_contexts)
    @rule()
    def new_context(self) -> None:
        """A fresh, empty context (a new thread's)."""
        mc = self._add_context(self.base.run(contextvars.copy_context), None)
        _note(f"{mc.label} = fresh context")

    @precondition(lambda self: len(self.contexts) < self.max_contexts)
    @rule(c=INDEX)
    def child_context(self, c: int) -> None:
        """A copy of a context, as asyncio gives a new task: same entries.
        (A copy of an empty context is no different from a fresh one, so
        copy one with entries when there is one.)"""
        entered = [mc for mc in self.contexts if self.model.stacks[mc]] or self.contexts
        parent = entered[c % len(entered)]
        mc = self._add_context(parent.ctx.run(contextvars.copy_context), parent)
        _note(f"{mc.label} = copy of {parent.label} {self.model.stacks[parent]}")

    @precondition(lambda self: len(self.contexts) > 1)
    @rule(c=INDEX)
    def drop_context(self, c: int) -> None:
        """A context that ends releases what its stack held (R11)."""
        mc = self.context(c)
        _note(f"drop {mc.label} {self.model.stacks[mc]}")
        self.contexts.remove(mc)
        mc.ctx = None  # type: ignore[assignment]
        self.model.drop_context(mc)

    # --- spans by ID ---

    @rule(c=INDEX, parent=st.sampled_from(["root", "CURRENT", "default"]))
    def new_span(self, c: int, parent: str) -> None:
        """A root, or a child of the context's current span (R2): with
        parent=CURRENT or by default."""
        mc = self.context(c)
        if parent == "root":
            mparent = None
            sid = mc.run(self.registry.new_span, "root", parent=None)
        else:
            mparent = self.model.current(mc)
            kwargs = {} if parent == "default" else {"parent": CURRENT}
            sid = mc.run(self.registry.new_span, "contextual", **kwargs)
        s = self.model.new_span(self._label(), sid, mparent)
        _note(f"{s} = new span in {mc.label}, parent {mparent}")

    @precondition(_has_spans)
    @rule(p=INDEX)
    def new_explicit(self, p: int) -> None:
        """A child of a given span; of a closed one, an error creating
        nothing (R2)."""
        parent = self._span(p)
        if parent.live:
            sid = self.registry.new_span("explicit", parent=parent.id)
            s = self.model.new_span(self._label(), sid, parent)
            _note(f"{s} = new span, explicit parent {parent}")
        else:
            _note(f"new span, explicit parent {parent} closed: error")
            before = len(self.registry)
            _expect_not_found(self.registry.new_span, "explicit", parent=parent.id)
            assert len(self.registry) == before, "a failed new_span created a span"

    @precondition(_has_spans)
    @rule(i=INDEX)
    def clone_span(self, i: int) -> None:
        """R3: +1 on a live span, an error changing nothing otherwise."""
        s = self._span(i)
        _note(f"clone_span({s}), live={s.live}")
        if self.model.clone_span(s):
            got = self.registry.clone_span(s.id)
            assert got == s.id, f"clone_span({s}) returned {got}"
        else:
            _expect_not_found(self.registry.clone_span, s.id)

    @precondition(lambda self: any(s.refs for s in self.model.spans))
    @rule(i=INDEX)
    def try_close(self, i: int) -> None:
        """R4: True exactly when this close brought the count to 0."""
        held = [s for s in self.model.spans if s.refs]
        s = held[i % len(held)]
        closed = self.registry.try_close(s.id)
        expected = self.model.try_close(s)
        _note(f"try_close({s}) -> {closed}")
        assert closed is expected, f"try_close({s}) returned {closed}, model says {expected}"

    @rule(i=INDEX, c=INDEX)
    def use_dead_id(self, i: int, c: int) -> None:
        """An ID that is not live (closed, or never issued) is an error
        everywhere, changes nothing (R2-R5), and try_close never gives a
        second True (R4)."""
        sid = self._dead_id(i)
        mc = self.context(c)
        _note(f"use dead ID {sid}")
        reg = self.registry
        _expect_not_found(reg.try_close, sid)
        _expect_not_found(reg.clone_span, sid)
        _expect_not_found(reg.new_span, "explicit", parent=sid)
        _expect_not_found(mc.run, reg.span, "handle", parent=sid)
        _expect_not_found(mc.run, reg.enter, sid)
        _expect_not_found(reg.record, sid, a=1)
        mc.run(reg.exit, sid)
        assert reg.get(sid) is None, f"get({sid}) of a dead ID is not None"
        assert reg.ref_count(sid) == 0, f"ref_count({sid}) of a dead ID is not 0"

    @precondition(_has_spans)
    @rule(i=INDEX, key=st.sampled_from(["a", "b"]), value=VALUE)
    def record(self, i: int, key: str, value: Any) -> None:
        """R10: fields recorded on a live span read back exactly."""
        s = self._span(i)
        if self.model.record(s, {key: value}):
            self.registry.record(s.id, **{key: value})
            view = self.registry.get(s.id)
            assert view is not None, f"{s} is live but get() gave None"
            assert view.fields == s.fields, f"{s} fields {view.fields}, model {s.fields}"
        else:
            _expect_not_found(self.registry.record, s.id, **{key: value})

    # --- enter and exit ---

    @precondition(_has_spans)
    @rule(c=INDEX, spans=st.lists(INDEX, min_size=1, max_size=4))
    def enter(self, c: int, spans: list[int]) -> None:
        """Enter spans in turn, each checked: a duplicate takes no reference;
        a closed span raises and leaves the stack as it was (R5)."""
        mc = self.context(c)
        for i in spans:
            s = self._span(i)
            _note(f"enter {s} (live={s.live}) in {mc.label} {self.model.stacks[mc]}")
            if self.model.enter(mc, s):
                mc.run(self.registry.enter, s.id)
            else:
                _expect_not_found(mc.run, self.registry.enter, s.id)
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
            _note(f"exit {s} in {mc.label} {stack}")
            mc.run(self.registry.exit, s.id)
            assert self.model.exit(mc, s), "model bug: the entry vanished"
            self.agrees_with_model()

    @rule(c=INDEX, i=INDEX)
    def exit_not_entered(self, c: int, i: int) -> None:
        """Exit a span this context has not entered: no change, no error."""
        mc = self.context(c)
        on_stack = {e.span for e in self.model.stacks[mc]}
        others = [s.id for s in self.model.spans if s not in on_stack] + [NEVER_ISSUED]
        mc.run(self.registry.exit, others[i % len(others)])

    # --- handles ---

    @rule(c=INDEX, parent=st.sampled_from(["current", "root", "explicit"]), p=INDEX)
    def new_handle(self, c: int, parent: str, p: int) -> None:
        """A ``Span`` handle with each kind of parent."""
        mc = self.context(c)
        label = self._label()
        reg = self.registry
        if parent == "current":
            h = mc.run(reg.span, "handle")
            mparent = self.model.current(mc)
        elif parent == "root":
            h = mc.run(reg.span, "handle", parent=None)
            mparent = None
        elif not self.model.spans:
            return
        else:
            mparent = self._span(p)
            if not mparent.live:
                _expect_not_found(mc.run, reg.span, "handle", parent=mparent.id)
                return
            h = mc.run(reg.span, "handle", parent=mparent.id)
        assert h.id is not None, "the machine's registry turned a span away"
        s = self.model.new_span(label, h.id, mparent, handle=True)
        assert not h.closed, "a new handle is closed"
        self.handles.append((h, s))
        _note(f"{s} = handle in {mc.label}, parent {mparent}")

    @precondition(lambda self: bool(self.handles))
    @rule(i=INDEX)
    def clone_handle(self, i: int) -> None:
        """A second handle, with a reference of its own."""
        h, s = self.handles[i % len(self.handles)]
        h2 = h.clone()
        assert h2.id == h.id, f"clone of {h!r} has ID {h2.id}"
        s.handles += 1
        self.handles.append((h2, s))
        _note(f"clone a handle on {s}")

    @precondition(lambda self: bool(self.handles))
    @rule(i=INDEX, how=st.sampled_from(["close", "del"]))
    def release_handle(self, i: int, how: str) -> None:
        """close() releases once and a second close() does nothing; a handle
        garbage-collected unreleased releases its reference. Either way,
        refcounting alone must release it (no gc.collect() here)."""
        h, s = self.handles.pop(i % len(self.handles))
        _note(f"{how} a handle on {s}")
        if how == "close":
            h.close()
            assert h.closed, "a closed handle says it is open"
            h.close()
        del h
        self.model.release_handle(s)

    # --- invariants ---

    @invariant()
    def agrees_with_model(self) -> None:
        """Counts, parents, liveness, ``len`` and every context's current
        span agree with the model."""
        # One assertion, whatever differs: hypothesis then shrinks one
        # failure, not one per way of seeing it.
        problems = model_mismatches(self.registry, self.model, baseline=self.baseline)
        for mc in self.contexts:
            current = mc.run(self.registry.current_span)
            want = self.model.current(mc)
            if current != (None if want is None else want.id):
                problems.insert(
                    0,
                    f"{mc.label}: current_span() == {current}, model {want}, "
                    f"stack {self.model.stacks[mc]}",
                )
        if problems:
            raise AssertionError("\n".join(problems))

    def teardown(self) -> None:
        """Releases everything the machine holds and drops its contexts;
        then (unless a step failed) asserts nothing is left live."""
        # When a step failed, only clean up. The invariants ran after every
        # step, so a registry that disagrees with the model now means one
        # failed (and so does sys.exc_info(), if hypothesis calls this while
        # handling the failure).
        failed = sys.exc_info()[0] is not None
        if not failed:
            try:
                self.agrees_with_model()
            except AssertionError:
                failed = True
        with contextlib.suppress(Exception) if failed else contextlib.nullcontext():
            for s in self.model.spans:
                for _ in range(s.refs):
                    self.registry.try_close(s.id)
            for h, _ in self.handles:
                h.close()
        self.handles.clear()
        for mc in self.contexts:
            mc.ctx = None  # type: ignore[assignment]
        self.contexts.clear()
        self.base = None  # type: ignore[assignment]
        if failed:
            return  # (and no gc.collect(): costly in a big heap, and shrinking
            # runs many failing examples)
        if len(self.registry) != self.baseline:
            gc.collect()  # (only when needed)
        leaked = len(self.registry) - self.baseline
        assert leaked == 0, f"{leaked} spans leaked\n{leak_report(self.registry)}"


# === leaks ===


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


_PACKAGE_DIR = os.path.dirname(os.path.abspath(pykregistry.__file__))


def _origin() -> str:
    frame = sys._getframe(2)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == (
        _PACKAGE_DIR
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


# === pytest plugin ===

try:
    import pytest
except ImportError:  # not under pytest: everything but the fixture
    pass
else:
    _PASSED = pytest.StashKey[bool]()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        """Notes whether each test passed, so that ``span_registry`` checks
        for leaks only after a test that passed."""
        report = yield
        if report.when == "call":
            item.stash[_PASSED] = report.passed
        return report

    @pytest.fixture
    def span_registry(request: pytest.FixtureRequest) -> Iterator[Registry]:
        """A fresh :class:`~pykregistry.Registry` with a :class:`LiveSpans`
        layer; a test that passes but leaves spans live fails at teardown
        with :func:`leak_report`. Enable it with ``pytest_plugins =
        ["pykregistry.testing"]`` in your root ``conftest.py``. It is
        strict: a handle used after its block ended, or a closed parent,
        raises instead of warning (SPEC R15)."""
        registry = Registry(layers=[LiveSpans()], strict=True)
        yield registry
        # Without the plugin's hook (the fixture imported by hand), check anyway.
        if request.node.stash.get(_PASSED, True):
            try:
                assert_no_leaks(registry)
            except AssertionError as e:
                report = str(e)
            else:
                return
            pytest.fail(f"{request.node.nodeid}: {report}", pytrace=False)
