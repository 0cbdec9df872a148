"""Property tests of R2-R9 and R11 with :mod:`pykregistry.testing`, in each
kind of context the registry serves (SPEC section 3):

- ``test_contexts_in_one_thread``: ``contextvars.Context`` objects on one
  thread, created fresh, copied (sharing their entries, as a task does) and
  dropped between span operations;
- ``test_real_threads``: worker threads, each operation handed to its thread
  in an order hypothesis chooses, threads ending (with spans entered) and
  replaced along the way;
- ``test_asyncio_tasks``: tasks spawned from tasks (inheriting their stack),
  suspended inside ``with`` blocks, awaited or cancelled; async generators
  started in one task and closed from another.

Every operation runs where it belongs, one at a time, so every outcome is
deterministic: after each, the registry must agree with the model on counts,
parents, liveness, ``len`` and the current span of the context that ran it;
each program ends with ``len(registry) == 0`` once everything is released.

Examples per test are three times the hypothesis profile's
(``HYPOTHESIS_PROFILE``, see tests/conftest.py): 300 by default, 60 with
``dev``, 1,500 with ``ci``, 15,000 with ``long``.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from pykregistry import Registry
from pykregistry.testing import (
    INDEX,
    OP_KINDS,
    ModelEntry,
    ModelSpan,
    ProgramChecker,
    SpanOp,
    perform_step,
    span_ops,
)

_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"

# Three times the loaded profile's examples (each is cheap: a few ms); the
# rest is pinned: no deadline (a thread switch or an event loop may be
# slow), no example database (a stored failure from another checkout would
# replay here).
PROPERTY = settings(
    max_examples=3 * settings.default.max_examples,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_TIMEOUT = pytest.mark.timeout(0 if _LONG else 300)

CONTEXTS = 4


# Entering is weighted up, so that contexts often end with spans entered.
KINDS = (*OP_KINDS, "enter", "enter", "new_current")


def op_items(*extra: st.SearchStrategy[tuple[Any, ...]]) -> st.SearchStrategy[list[Any]]:
    """Programs of span operations (three in four items) and `extra` items
    (context operations), 10 to 100 items long."""
    span_op = span_ops(contexts=CONTEXTS, kinds=KINDS).map(lambda op: ("op", op))

    @st.composite
    def item(draw: st.DrawFn) -> tuple[Any, ...]:
        if extra and draw(st.integers(0, 3)) == 3:
            return draw(st.one_of(*extra))
        return draw(span_op)

    return st.lists(item(), min_size=10, max_size=100)


def check_current(checker: ProgramChecker, key: Any, current: int | None) -> None:
    want = checker.model.current(key)
    assert current == (None if want is None else want.id), (
        f"{key!r}: current span {current}, model {want} (stack {checker.model.stacks[key]})"
    )


def finish(checker: ProgramChecker) -> None:
    """Every context has ended: close what the program holds; nothing left."""
    assert not checker.model.stacks, checker.model.stacks
    checker.check_registry()
    checker.release_all()
    checker.check_registry()
    assert not checker.model.live()
    assert len(checker.registry) == 0, f"{len(checker.registry)} spans leaked"


# === contexts in one thread ===


@_TIMEOUT
@PROPERTY
@given(
    op_items(
        st.tuples(st.just("copy"), INDEX),
        st.tuples(st.just("drop"), INDEX),
        st.tuples(st.just("fresh")),
    )
)
def test_contexts_in_one_thread(program: list[Any]) -> None:
    reg = Registry()
    checker = ProgramChecker(reg)
    empty = contextvars.Context()
    ctxs: dict[int, contextvars.Context] = {}
    n = 0

    def add(parent: int | None) -> int:
        nonlocal n
        source = empty if parent is None else ctxs[parent]
        ctxs[n] = source.run(contextvars.copy_context)
        checker.add_context(n, parent)
        n += 1
        return n - 1

    add(None)
    for item in program:
        keys = sorted(ctxs)
        if item[0] == "op":
            op: SpanOp = item[1]
            key = keys[op.context % len(keys)]
            step = checker.plan(key, op)
            checker.check(key, step, ctxs[key].run(perform_step, reg, step))
        elif item[0] == "copy":
            parent = keys[item[1] % len(keys)]
            child = add(parent)
            note(f"ctx {child} = copy of {parent} {checker.model.stacks[parent]}")
            check_current(checker, child, ctxs[child].run(reg.current_span))
        elif item[0] == "fresh":
            note(f"ctx {add(None)} = fresh")
        elif len(keys) > 1:  # drop: its stack's references go (R11)
            key = keys[item[1] % len(keys)]
            note(f"drop ctx {key} {checker.model.stacks[key]}")
            event("context dropped with entries", bool(checker.model.stacks[key]))
            del ctxs[key]
            checker.drop_context(key)
            checker.check_registry()
    ctxs.clear()
    for key in list(checker.model.stacks):
        checker.drop_context(key)
    finish(checker)


# === real threads ===


class Worker:
    """A thread that runs the steps handed to it, one at a time."""

    def __init__(self, reg: Registry, key: int) -> None:
        self.reg = reg
        self.key = key
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self.serve, name=f"worker-{key}", daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while (step := self.inbox.get()) is not None:
            self.outbox.put(perform_step(self.reg, step))

    def run(self, step: Any) -> Any:
        self.inbox.put(step)
        return self.outbox.get(timeout=60)

    def end(self) -> None:
        self.inbox.put(None)
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


@_TIMEOUT
@PROPERTY
@given(
    threads=st.integers(2, 5),
    program=op_items(st.tuples(st.just("end"), INDEX)),
)
def test_real_threads(threads: int, program: list[Any]) -> None:
    """Each operation runs on the worker thread it names, in the order the
    program gives; ``end`` ends a thread with whatever it has entered (R11:
    its stack's references go) and starts a fresh one in its place."""
    reg = Registry()
    checker = ProgramChecker(reg)
    workers: list[Worker] = []
    n = 0

    def start() -> Worker:
        nonlocal n
        w = Worker(reg, n)
        checker.add_context(n)
        n += 1
        return w

    workers = [start() for _ in range(threads)]
    try:
        for item in program:
            if item[0] == "op":
                w = workers[item[1].context % threads]
                step = checker.plan(w.key, item[1])
                checker.check(w.key, step, w.run(step))
            else:
                i = item[1] % threads
                note(f"end thread {workers[i].key} {checker.model.stacks[workers[i].key]}")
                event("thread ended with entries", bool(checker.model.stacks[workers[i].key]))
                workers[i].end()
                checker.drop_context(workers[i].key)
                checker.check_registry()
                workers[i] = start()
    finally:
        for w in workers:
            w.end()
    for w in workers:
        checker.drop_context(w.key)
    finish(checker)


# === asyncio ===


@dataclass(eq=False)
class TaskWorker:
    """A task serving commands from the driver. ``hold`` runs the rest of
    its commands inside a ``with registry.span(...)`` block, until
    ``unhold``; ``stop`` ends the task (leaving every block); a cancel ends
    it from any await."""

    reg: Registry
    key: int
    inbox: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    outbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    held: list[tuple[ModelSpan, ModelEntry]] = field(default_factory=list)

    async def serve(self, env: Env) -> bool:
        """Returns True when told to stop, False at ``unhold``."""
        while True:
            cmd, arg = await self.inbox.get()
            if cmd == "stop":
                return True
            if cmd == "unhold":
                return False
            if cmd == "hold":
                with self.reg.span("held") as s:
                    self.outbox.put_nowait((s.id, self.reg.current_span()))
                    stop = await self.serve(env)
                if stop:
                    return True
                self.outbox.put_nowait(self.reg.current_span())
            elif cmd == "step":
                self.outbox.put_nowait(perform_step(self.reg, arg))
            elif cmd == "spawn":
                child = TaskWorker(self.reg, arg)
                env.tasks[arg] = asyncio.create_task(child.serve(env))  # copies this context
                env.workers[arg] = child
                self.outbox.put_nowait(self.reg.current_span())
            elif cmd == "agen_start":
                gen = env.spans_gen()
                sid = await gen.__anext__()
                env.gens.append(gen)
                self.outbox.put_nowait((sid, self.reg.current_span()))
            elif cmd == "agen_close":
                await arg.aclose()
                self.outbox.put_nowait(self.reg.current_span())
            else:
                raise AssertionError(cmd)


@dataclass
class Env:
    reg: Registry
    tasks: dict[int, asyncio.Task[bool]] = field(default_factory=dict)
    workers: dict[int, TaskWorker] = field(default_factory=dict)
    gens: list[Any] = field(default_factory=list)
    # id(gen) -> its span and the entry its `with` made
    gen_spans: dict[int, tuple[ModelSpan, ModelEntry]] = field(default_factory=dict)

    async def spans_gen(self) -> AsyncIterator[int]:
        with self.reg.span("agen") as s:
            assert s.id is not None
            yield s.id
            yield -1  # never reached: closed after the first


async def call(w: TaskWorker, cmd: str, arg: Any = None) -> Any:
    w.inbox.put_nowait((cmd, arg))
    return await w.outbox.get()


TASK_ITEMS = [
    st.tuples(st.just("spawn"), INDEX),
    st.tuples(st.just("await"), INDEX),
    st.tuples(st.just("cancel"), INDEX),
    st.tuples(st.just("hold"), INDEX),
    st.tuples(st.just("unhold"), INDEX),
    st.tuples(st.just("agen_start"), INDEX),
    st.tuples(st.just("agen_close"), INDEX, INDEX),
]


@_TIMEOUT
@PROPERTY
@given(op_items(*TASK_ITEMS))
def test_asyncio_tasks(program: list[Any]) -> None:
    """Span operations in tasks, with tasks spawned from tasks (a child's
    stack starts as its parent's, sharing its entries), tasks suspended
    inside ``with`` blocks, ended normally or cancelled mid-``await``, and
    async generators that hold a span entered in the task that started them
    and are closed from another task (whose exit finds nothing to exit there
    unless it inherited the entry: R5)."""
    reg = Registry()
    checker = ProgramChecker(reg)
    asyncio.run(drive(reg, checker, program))
    finish(checker)


async def drive(reg: Registry, checker: ProgramChecker, program: list[Any]) -> None:
    env = Env(reg)
    n = 0

    def spawn_root() -> None:
        nonlocal n
        w = TaskWorker(reg, n)
        env.workers[n] = w
        env.tasks[n] = asyncio.create_task(w.serve(env))
        checker.add_context(n)  # the driver's own stack is empty
        n += 1

    async def end(key: int, how: str) -> None:
        w, task = env.workers.pop(key), env.tasks.pop(key)
        note(f"{how} task {key} {checker.model.stacks[key]}")
        event(f"{how} a task with entries", bool(checker.model.stacks[key]))
        event(f"{how} a task inside `with` blocks", bool(w.held))
        if how == "await":
            w.inbox.put_nowait(("stop", None))
            assert await task is True
        else:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("the cancelled task finished")
        # Each `with` block it was suspended in exited in its context, and
        # released its handle; then the task and its context go.
        for s, entry in reversed(w.held):
            checker.model.exit_entry(key, entry)
            checker.model.release_handle(s)
        del w, task
        # The loop still holds the task's context in the handle that ran its
        # last step; one turn later refcounting frees it (no gc needed).
        await asyncio.sleep(0)
        checker.drop_context(key)
        checker.check_registry()

    spawn_root()
    try:
        for item in program:
            if not env.workers:
                spawn_root()
            keys = sorted(env.workers)
            if item[0] == "op":
                key = keys[item[1].context % len(keys)]
                step = checker.plan(key, item[1])
                checker.check(key, step, await call(env.workers[key], "step", step))
                continue
            key = keys[item[1] % len(keys)]
            w = env.workers[key]
            kind = item[0]
            if kind == "spawn":
                child = n
                n += 1
                check_current(checker, key, await call(w, "spawn", child))
                checker.add_context(child, parent=key)
                event("task spawned with entries", bool(checker.model.stacks[key]))
                note(f"task {child} spawned by {key} {checker.model.stacks[key]}")
            elif kind in ("await", "cancel"):
                await end(key, kind)
            elif kind == "hold":
                sid, current = await call(w, "hold")
                s = new_handle_span(checker, key, sid, "held")
                checker.model.enter(key, s)
                w.held.append((s, checker.model.stacks[key][-1]))
                check_current(checker, key, current)
                checker.check_registry()
            elif kind == "unhold":
                if not w.held:
                    continue
                current = await call(w, "unhold")
                s, entry = w.held.pop()
                checker.model.exit_entry(key, entry)
                checker.model.release_handle(s)
                check_current(checker, key, current)
                checker.check_registry()
            elif kind == "agen_start":
                sid, current = await call(w, "agen_start")
                s = new_handle_span(checker, key, sid, "agen")
                checker.model.enter(key, s)
                env.gen_spans[id(env.gens[-1])] = (s, checker.model.stacks[key][-1])
                check_current(checker, key, current)
                checker.check_registry()
            elif kind == "agen_close":
                if not env.gens:
                    continue
                gen = env.gens.pop(item[2] % len(env.gens))
                s, entry = env.gen_spans.pop(id(gen))
                note(f"close the generator of {s} from task {key} {checker.model.stacks[key]}")
                event(
                    "generator closed in a task",
                    "holding its entry"
                    if any(e.span is s for e in checker.model.stacks[key])
                    else "not holding its entry",
                )
                current = await call(w, "agen_close", gen)
                # The generator's `with` exits its own entry, from the
                # closing task (R5).
                checker.model.exit_entry(key, entry)
                checker.model.release_handle(s)
                check_current(checker, key, current)
                checker.check_registry()
        # Close what is left: the generators from the driver (whose stack
        # holds nothing), then end the tasks.
        checker.add_context("driver")
        for gen in env.gens:
            s, entry = env.gen_spans.pop(id(gen))
            await gen.aclose()
            checker.model.exit_entry("driver", entry)
            checker.model.release_handle(s)
            checker.check_registry()
        env.gens.clear()
        checker.drop_context("driver")
        for key in sorted(env.workers):
            await end(key, "await")
    finally:
        for task in env.tasks.values():
            task.cancel()


def new_handle_span(checker: ProgramChecker, key: int, sid: int, label: str) -> ModelSpan:
    """A span made by ``with registry.span(...)`` in task `key`: a handle's
    reference, and the task's current span as its parent."""
    view = checker.registry.get(sid)
    parent = checker.model.current(key)
    assert view is not None
    assert view.parent_id == (None if parent is None else parent.id), (
        f"{label} span's parent {view.parent_id}, model {parent}"
    )
    s = checker.model.new_span(f"{label}{len(checker.model.spans)}", sid, parent, handle=True)
    note(f"{s} = {label} span in task {key}, parent {parent}")
    return s
