"""Lifetimes: a span lives as long as what holds it, and no longer (SPEC R5,
R9, R11, R13, section 3, P13, P14).

A copied context (an asyncio task, a timer handle, ``copy_context()``) sees
the entries it inherited but keeps none of them alive; a span inherited by a
context that outlives it is named there by its identity, so the spans made
there are roots in the registry that keep it as their parent in the trace.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pykregistry
import pykregistry.testing
from pykregistry import Registry

# === the four ways a copied context kept a span alive ===


def test_r9_asyncio_wait_does_not_keep_the_batch_open(reg: Registry) -> None:
    async def job() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        with reg.span("batch"):
            done, _ = await asyncio.wait([asyncio.create_task(job()) for _ in range(3)])
        # The finished tasks (still referenced by `done`) copied the
        # context in which "batch" was current; they hold nothing.
        assert len(done) == 3
        assert len(reg) == 0

    asyncio.run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in 3.11")
def test_r9_asyncio_timeout_does_not_keep_the_span_open(reg: Registry) -> None:
    async def main() -> None:
        with reg.span("request"):
            async with asyncio.timeout(3600):  # its timer handle copies the context
                await asyncio.sleep(0)
        assert len(reg) == 0
        # A pending timer handle of our own, made inside a span, likewise.
        loop = asyncio.get_running_loop()
        with reg.span("scheduling"):
            handle = loop.call_later(3600, lambda: None)
        assert len(reg) == 0
        handle.cancel()

    asyncio.run(main())


def test_r9_copied_context_does_not_keep_the_span_open(reg: Registry) -> None:
    with reg.span("s") as s:
        ctx = contextvars.copy_context()
        sid = s.id
    assert reg.get(sid) is None  # closed at the block's end, not when ctx goes
    assert len(reg) == 0
    assert ctx.run(reg.current_span) is None
    del ctx
    assert len(reg) == 0


def test_r9_fire_and_forget_task_does_not_keep_its_parent_open(reg: Registry) -> None:
    async def main() -> None:
        started, release = asyncio.Event(), asyncio.Event()
        seen: dict[str, Any] = {}

        async def background() -> None:
            started.set()
            await release.wait()
            seen["current"] = reg.current_span()
            with reg.span("late") as late:
                ref = late.ref
                seen["parent_id"] = ref.parent_id
                seen["parent_span_id"] = ref.parent_span_id
                seen["trace_id"] = ref.trace_id

        with reg.span("parent") as parent:
            identity = (parent.ref.span_id, parent.ref.trace_id)
            task = asyncio.create_task(background())
            await started.wait()
        # The task is still running; the parent ended with its block.
        assert not task.done()
        assert len(reg) == 0
        release.set()
        await task
        # R13: a root in the registry, the closed parent's child in the trace.
        assert seen == {
            "current": None,
            "parent_id": None,
            "parent_span_id": identity[0],
            "trace_id": identity[1],
        }
        assert len(reg) == 0

    asyncio.run(main())


def test_r13_task_made_while_parent_lives_is_its_child_in_both(reg: Registry) -> None:
    async def main() -> None:
        async def child() -> tuple[Any, ...]:
            with reg.span("child") as c:
                return (c.ref.parent_id, c.ref.parent_span_id, c.ref.trace_id)

        with reg.span("parent") as parent:
            got = await asyncio.create_task(child())
            assert got == (parent.id, parent.ref.span_id, parent.ref.trace_id)
        assert len(reg) == 0

    asyncio.run(main())


# === identity, not registry IDs ===


def test_r13_inherited_entry_is_not_mistaken_for_a_span_reusing_its_slot(
    reg: Registry,
) -> None:
    old = reg.new_span("old", parent=None)
    reg.enter(old)
    old_identity = (reg.get(old).span_id, reg.get(old).trace_id)
    ctx = contextvars.copy_context()  # inherits the entry of "old"
    reg.exit(old)
    assert reg.try_close(old) is True
    # Reuse the slot until the registry ID comes back (R1: after
    # GENERATIONS reuses of a slot).
    same = None
    for _ in range(4 * pykregistry.GENERATIONS):
        sid = reg.new_span("reuse", parent=None)
        if sid == old:
            same = sid
            break
        reg.try_close(sid)
    assert same == old, "the registry ID never recurred"
    assert reg.get(same).span_id != old_identity[0]

    def inside() -> tuple[Any, ...]:
        current = reg.current_span()
        with reg.span("orphan") as orphan:
            ref = orphan.ref
            return (current, ref.parent_id, ref.parent_span_id, ref.trace_id)

    # The copy's entry names "old", which closed: the new span with "old"'s
    # registry ID is neither its current span nor its children's parent.
    assert ctx.run(inside) == (None, None, *old_identity)
    assert reg.try_close(same) is True
    assert len(reg) == 0


# === one context variable for every registry (P14) ===


def test_p14_registries_share_one_context_variable() -> None:
    before = len(contextvars.copy_context())
    for _ in range(1_000):
        reg = Registry()
        with reg.span("x"):
            pass
    assert len(contextvars.copy_context()) <= before + 1


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_p14_100_000_registries_entered_and_dropped_leave_memory_flat() -> None:
    def churn(n: int) -> None:
        for _ in range(n):
            reg = Registry()
            with reg.span("x"), reg.span("y"):
                pass

    churn(20_000)  # warm up: allocator arenas, free lists
    gc.collect()
    variables = len(contextvars.copy_context())
    before = _rss()
    churn(100_000)
    gc.collect()
    grown = _rss() - before
    assert len(contextvars.copy_context()) == variables
    assert grown <= 1 << 20, f"resident memory grew by {grown} bytes"


# === the garbage collector inside enter and exit ===


def _suspended(reg: Registry, name: str) -> None:
    """A generator suspended inside `with reg.span(name)`, entered in the
    calling context, left in a garbage cycle for the collector to finalize
    whenever it next runs."""

    def body() -> Iterator[None]:
        with reg.span(name):
            yield

    gen = body()
    next(gen)
    cycle: list[Any] = [gen]
    cycle.append(cycle)


@settings(max_examples=60, deadline=None)
@given(
    program=st.lists(
        st.tuples(st.sampled_from(["with", "gen", "enter_exit", "nested"]), st.integers(0, 3)),
        min_size=1,
        max_size=25,
    ),
    threshold=st.integers(1, 7),
)
def test_r5_collector_finalizing_generators_inside_enter_and_exit(
    program: list[tuple[str, int]], threshold: int
) -> None:
    """Collections run at nearly every allocation, so suspended generators
    are finalized at random points inside other spans' enter and exit. Every
    main span's parent is the main span around it or a generator span not
    yet finalized; at the end nothing is live and nothing is current."""
    reg = Registry()
    mine: set[int] = set()
    old = gc.get_threshold()

    def check(parent: int | None, sid: int) -> None:
        got = reg.get(sid).parent_id
        if got != parent:
            view = reg.get(got) if got is not None else None
            assert view is not None, (got, parent)
            assert view.name.startswith("gen"), (got, parent)

    def run(ops: list[tuple[str, int]], parent: int | None) -> None:
        i = 0
        while i < len(ops):
            kind, n = ops[i]
            i += 1
            if kind == "gen":
                for k in range(n + 1):
                    _suspended(reg, f"gen{k}")
            elif kind == "with":
                with reg.span("w") as s:
                    mine.add(s.id)
                    check(parent, s.id)
            elif kind == "enter_exit":
                sid = reg.new_span("ids")
                check(parent, sid)
                reg.enter(sid)
                reg.exit(sid)
                assert reg.try_close(sid) is True
            else:  # the next n + 1 operations run inside a span
                with reg.span("outer") as s:
                    check(parent, s.id)
                    run(ops[i : i + n + 1], s.id)
                i += n + 1

    gc.collect()
    gc.set_threshold(threshold)
    try:
        run(program, None)
    finally:
        gc.set_threshold(*old)
    gc.collect()
    assert reg.current_span() is None
    assert len(reg) == 0


def test_r5_finalizer_inside_exit_cannot_resurrect_a_span(reg: Registry) -> None:
    """The lost update of the old stack: a generator holding `with
    reg.span("g")`, finalized during another exit, stayed current and live
    and adopted every later span."""
    old = gc.get_threshold()
    gc.collect()
    gc.set_threshold(1)
    try:
        for _ in range(200):
            _suspended(reg, "g")
            with reg.span("a"), reg.span("b"):
                pass
    finally:
        gc.set_threshold(*old)
    gc.collect()
    assert reg.current_span() is None
    assert len(reg) == 0
    with reg.span("after") as after:
        assert after.ref.parent_id is None


# === deep nesting (P13) ===


def test_p13_20_000_nested_with_blocks(reg: Registry) -> None:
    """Entering is O(1) in the depth (the duplicate check asks the span, not
    the stack): 20,000 nested blocks, each checked at the bottom."""
    depth = 20_000
    spans: list[Any] = []

    def nest(n: int) -> None:
        # A loop of entered handles, not recursion: Python's own stack is
        # not what is measured.
        for _ in range(n):
            s = reg.span("deep")
            s.__enter__()
            spans.append(s)

    nest(depth)
    assert reg.current_span() == spans[-1].id
    assert reg.get(spans[-1].id).parent_id == spans[-2].id
    assert len(reg) == depth
    while spans:
        spans.pop().__exit__(None, None, None)
    assert len(reg) == 0
    assert reg.current_span() is None


_FINALIZERS_IN_SETS = """
import gc
import random
from pykregistry import Registry


def suspended(reg):
    def body():
        with reg.span("gen"):
            yield

    g = body()
    next(g)
    cycle = [g]
    cycle.append(cycle)


def run(reg, ops):
    i = 0
    while i < len(ops):
        kind, n = ops[i]
        i += 1
        if kind == "gen":
            for _ in range(n + 1):
                suspended(reg)
        elif kind == "with":
            with reg.span("w"):
                pass
        elif kind == "ids":
            sid = reg.new_span("ids")
            reg.enter(sid)
            reg.exit(sid)
            reg.try_close(sid)
        else:
            with reg.span("outer"):
                run(reg, ops[i : i + n + 1])
            i += n + 1


rng = random.Random(1)
for _ in range(60):
    reg = Registry()
    ops = [
        (rng.choice(["with", "gen", "ids", "nested"]), rng.randint(0, 3))
        for _ in range(rng.randint(1, 25))
    ]
    gc.collect()
    gc.set_threshold(rng.randint(1, 7))
    run(reg, ops)
    gc.set_threshold(700, 10, 10)
    gc.collect()
    assert len(reg) == 0, len(reg)
    assert reg.current_span() is None
print("ok")
"""


def test_r15_finalizers_cannot_corrupt_the_context_under_our_set() -> None:
    """CPython's `ContextVar.set` reads the old mapping through a borrowed
    pointer while it allocates; a collection there whose finalizer sets a
    variable of the same context frees it (a use-after-free, also in pure
    Python). Our sets run with the collector off, and nothing of ours sets
    the variable during a collection. With the allocator's debug hooks a
    use-after-free crashes at once."""
    env = {**os.environ, "PYTHONMALLOC": "debug", "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _FINALIZERS_IN_SETS],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-3000:]


def test_r6_collection_on_another_thread_does_not_hide_this_threads_spans() -> None:
    """Only the thread running a collection leaves the stack's variable
    alone (see `set_top`): a collection on one thread, whose finalizer lets
    the GIL go, must not hide another thread's entries (their children then
    lost their contextual parent)."""
    reg = Registry(layers=[pykregistry.testing.LiveSpans()])
    bad: list[int] = []
    start = threading.Barrier(3)

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        start.wait()
        for _ in range(300):
            handle = reg.span("garbage")
            cycle: list[Any] = [handle]
            cycle.append(cycle)
            del handle
            pad = [[] for _ in range(rnd.randrange(8))]
            del cycle, pad
            with reg.span("outer") as outer, reg.span("inner") as inner:
                if reg.get(inner.id).parent_id != outer.id:
                    bad.append(inner.id)

    old = gc.get_threshold()
    gc.set_threshold(1)
    try:
        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        gc.set_threshold(*old)
    gc.collect()
    assert bad == []
    assert len(reg) == 0
