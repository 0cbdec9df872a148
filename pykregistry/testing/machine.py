"""A hypothesis state machine over spans, handles and contexts, checked
against the reference model after every step; subclass it to drive your
own instrumented code.

(PYTEST_DONT_REWRITE, as the whole of :mod:`pykregistry.testing`.)
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

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

from pykregistry import CURRENT, Registry, Span, SpanNotFoundError
from pykregistry.testing.leaks import LiveSpans, leak_report
from pykregistry.testing.model import NEVER_ISSUED, ModelSpan, RegistryModel, model_mismatches
from pykregistry.testing.programs import INDEX, VALUE

_T = TypeVar("_T")


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
