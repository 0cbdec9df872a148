"""Programs of span operations: hypothesis strategies that draw them, the
steps they resolve to against the model, and the runners that perform each
step on a registry and check it against the model.

(PYTEST_DONT_REWRITE, as the whole of :mod:`pykregistry.testing`.)
"""

from __future__ import annotations

import contextvars
import dataclasses
import random
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from pykregistry import CURRENT, Registry, SpanNotFoundError
from pykregistry.testing.leaks import leak_report
from pykregistry.testing.model import (
    NEVER_ISSUED,
    ModelSpan,
    RegistryModel,
    assert_matches_model,
)

INDEX = st.integers(min_value=0, max_value=63)
"""Indices drawn by the strategies and the machine's rules. An index picks
among whatever fits when it is used (``i % len(candidates)``), so programs
stay meaningful while hypothesis shrinks them."""

VALUE = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=5))
"""Field values that read back exactly (R10)."""


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
