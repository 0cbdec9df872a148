"""Contexts, SPEC section 3: one stack per thread and per asyncio task.

Interleavings are forced with ``asyncio.Event`` and ``threading.Event`` /
``threading.Barrier`` rather than hoped for with sleeps.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import random
import threading
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from pykregistry import CURRENT, Registry, SpanNotFoundError


def run_threads(*targets: Callable[[], None]) -> None:
    """Runs each target on its own thread, joins them all, and re-raises the
    first failure (with its thread's traceback in the message)."""
    failures: list[str] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException:
                failures.append(traceback.format_exc())

        return run

    threads = [threading.Thread(target=guarded(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[0]


async def settle() -> None:
    """Lets finished tasks' contexts go: one loop turn, then a collection."""
    await asyncio.sleep(0)
    gc.collect()


# === asyncio tasks ===


def test_context_interleaving_tasks_never_see_each_others_spans(reg: Registry) -> None:
    log: list[tuple[str, Any]] = []

    async def main() -> None:
        a_entered, b_entered, a_checked, b_checked = (asyncio.Event() for _ in range(4))

        async def task_a() -> None:
            assert reg.current_span() is None
            with reg.span("a") as a:
                a_entered.set()
                await b_entered.wait()
                # B entered its span meanwhile, on the same thread.
                assert reg.current_span() == a.id
                child = reg.new_span("a.child")
                log.append(("a.child.parent", reg.get(child).parent_id == a.id))
                reg.try_close(child)
                a_checked.set()
                await b_checked.wait()
                assert reg.current_span() == a.id
            assert reg.current_span() is None
            log.append(("a", "done"))

        async def task_b() -> None:
            await a_entered.wait()
            assert reg.current_span() is None
            with reg.span("b") as b:
                assert reg.get(b.id).parent_id is None
                b_entered.set()
                await a_checked.wait()
                assert reg.current_span() == b.id
                with reg.span("b.child") as child:
                    log.append(("b.child.parent", reg.get(child.id).parent_id == b.id))
                b_checked.set()
                await asyncio.sleep(0)
                assert reg.current_span() == b.id
            log.append(("b", "done"))

        await asyncio.gather(task_a(), task_b())
        assert reg.current_span() is None

    asyncio.run(main())
    assert sorted(log) == [
        ("a", "done"),
        ("a.child.parent", True),
        ("b", "done"),
        ("b.child.parent", True),
    ]


def test_context_int_api_enter_in_one_task_invisible_in_another(reg: Registry) -> None:
    async def main() -> None:
        entered, looked = asyncio.Event(), asyncio.Event()
        sid = reg.new_span("s", parent=None)
        seen: list[Any] = []

        async def enterer() -> None:
            reg.enter(sid)
            entered.set()
            await looked.wait()
            assert reg.current_span() == sid
            reg.exit(sid)

        async def looker() -> None:
            await entered.wait()
            seen.append(reg.current_span())
            # Exiting a span entered in another task changes nothing here
            # nor there.
            reg.exit(sid)
            seen.append(reg.ref_count(sid))
            looked.set()

        await asyncio.gather(enterer(), looker())
        assert seen == [None, 2]
        await settle()
        assert reg.ref_count(sid) == 1
        reg.try_close(sid)

    asyncio.run(main())


def test_context_task_created_inside_span_sees_it_and_makes_children(reg: Registry) -> None:
    async def child(n: int, parent: int) -> tuple[bool, bool]:
        inherited = reg.current_span() == parent
        with reg.span(f"child{n}") as c:
            await asyncio.sleep(0)
            is_child = reg.get(c.id).parent_id == parent
            assert reg.current_span() == c.id
        assert reg.current_span() == parent
        return inherited, is_child

    async def main() -> None:
        with reg.span("outer") as outer:
            results = await asyncio.gather(*(child(n, outer.id) for n in range(5)))
            assert results == [(True, True)] * 5
            assert reg.current_span() == outer.id
        assert reg.current_span() is None

    asyncio.run(main())


def test_context_task_entries_do_not_leak_to_creator(reg: Registry) -> None:
    async def main() -> None:
        with reg.span("outer") as outer:
            inner_ids: list[int] = []

            async def enters() -> None:
                s = reg.span("inner")
                s.__enter__()  # left entered on purpose
                inner_ids.append(s.id)
                s.close()

            task = asyncio.create_task(enters())
            await task
            assert reg.current_span() == outer.id
            del task
            await settle()
            assert reg.get(inner_ids[0]) is None

    asyncio.run(main())


def test_context_copy_context_run_sees_current_and_does_not_leak(reg: Registry) -> None:
    with reg.span("outer") as outer:
        ctx = contextvars.copy_context()
        # The copy sees the entry that was current when it was made ...
        assert ctx.run(reg.current_span) == outer.id

    def inside() -> tuple[Any, Any]:
        before = reg.current_span()
        with reg.span("inner") as inner:
            parent = reg.get(inner.id).parent_id
        return before, parent

    # ... but holds none of it (R5): the span closed with its block.
    assert reg.current_span() is None
    assert len(reg) == 0
    assert ctx.run(inside) == (None, None)
    del ctx
    assert len(reg) == 0


def test_context_many_tasks_concurrently_each_own_stack(reg: Registry) -> None:
    async def main() -> None:
        barrier = asyncio.Event()
        ready = 0

        async def worker(n: int) -> None:
            nonlocal ready
            with reg.span(f"w{n}") as w:
                ready += 1
                if ready == 50:
                    barrier.set()
                await barrier.wait()
                for _ in range(3):
                    assert reg.current_span() == w.id
                    with reg.span("nested") as nested:
                        await asyncio.sleep(0)
                        assert reg.current_span() == nested.id
                        assert reg.get(nested.id).parent_id == w.id
                    await asyncio.sleep(0)

        await asyncio.gather(*(worker(n) for n in range(50)))
        await settle()

    asyncio.run(main())
    assert len(reg) == 0


# === threads ===


def test_context_threads_never_see_each_others_current_spans(reg: Registry) -> None:
    n = 6
    barrier = threading.Barrier(n)

    def worker(k: int) -> Callable[[], None]:
        def run() -> None:
            barrier.wait()
            assert reg.current_span() is None
            with reg.span(f"t{k}") as s:
                barrier.wait()  # every thread is inside its span
                for _ in range(100):
                    assert reg.current_span() == s.id
                    with reg.span("child") as c:
                        assert reg.get(c.id).parent_id == s.id
                barrier.wait()
            assert reg.current_span() is None

        return run

    with reg.span("main") as main_span:
        run_threads(*(worker(k) for k in range(n)))
        assert reg.current_span() == main_span.id


def test_context_thread_exit_of_span_entered_elsewhere_is_noop(reg: Registry) -> None:
    sid = reg.new_span("s", parent=None)
    reg.enter(sid)
    run_threads(lambda: reg.exit(sid))
    assert reg.current_span() == sid
    assert reg.ref_count(sid) == 2
    reg.exit(sid)
    reg.try_close(sid)


# === generators closed elsewhere ===


def test_context_async_generator_closed_from_another_task(reg: Registry) -> None:
    async def spans() -> AsyncIterator[int]:
        with reg.span("agen") as s:
            yield s.id
            yield -1  # never reached

    async def main() -> None:
        gen = spans()
        seen: dict[str, Any] = {}

        async def consume() -> None:  # task A
            seen["sid"] = await gen.__anext__()
            seen["current_in_a"] = reg.current_span()

        async def close() -> None:  # task B
            seen["current_in_b"] = reg.current_span()
            await gen.aclose()
            seen["after_close_in_b"] = reg.current_span()

        task_a = asyncio.create_task(consume())
        await task_a
        assert reg.current_span() is None
        task_b = asyncio.create_task(close())
        await task_b
        sid = seen["sid"]
        assert seen == {
            "sid": sid,
            "current_in_a": sid,
            "current_in_b": None,
            "after_close_in_b": None,
        }
        del task_a, task_b
        await settle()
        assert reg.get(sid) is None
        assert len(reg) == 0

    asyncio.run(main())


def test_context_async_generator_consumed_and_closed_in_tasks_still_running(
    reg: Registry,
) -> None:
    async def spans() -> AsyncIterator[int]:
        with reg.span("agen") as s:
            yield s.id

    async def main() -> None:
        gen = spans()
        closed, a_done = asyncio.Event(), asyncio.Event()
        seen: list[Any] = []

        async def consume() -> None:
            sid = await gen.__anext__()
            seen.append(sid)
            await closed.wait()
            # B closed the generator: its `with` exited the very entry it
            # made here (R5), so the span closed and is current nowhere.
            seen.append(reg.current_span())
            seen.append(reg.ref_count(sid))
            a_done.set()

        async def close() -> None:
            while not seen:
                await asyncio.sleep(0)
            await gen.aclose()
            closed.set()
            await a_done.wait()

        await asyncio.gather(consume(), close())
        sid = seen[0]
        assert seen == [sid, None, 0]
        await settle()
        assert len(reg) == 0

    asyncio.run(main())


@pytest.mark.parametrize("owner_ends_first", [True, False])
def test_context_sync_generator_closed_from_another_thread(
    reg: Registry, owner_ends_first: bool
) -> None:
    def spans() -> Iterator[int]:
        with reg.span("gen") as s:
            yield s.id
            yield -1  # never reached

    gen = spans()
    advanced, closed = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def owner() -> None:
        seen["sid"] = next(gen)
        seen["current_in_owner"] = reg.current_span()
        advanced.set()
        if not owner_ends_first:
            closed.wait()
            seen["count_after_close"] = reg.ref_count(seen["sid"])
            seen["current_after_close"] = reg.current_span()

    def closer() -> None:
        advanced.wait()
        seen["current_in_closer"] = reg.current_span()
        gen.close()
        closed.set()

    if owner_ends_first:
        run_threads(owner)
        run_threads(closer)
    else:
        run_threads(owner, closer)
    sid = seen.pop("sid")
    expected: dict[str, Any] = {"current_in_owner": sid, "current_in_closer": None}
    if not owner_ends_first:
        # The closer's `with` exit exited the owner's entry (R5).
        expected |= {"count_after_close": 0, "current_after_close": None}
    assert seen == expected
    assert reg.get(sid) is None
    assert len(reg) == 0


# === thread stress ===


class ThreadModel:
    """What one thread knows it holds: handles (references it took) and its
    stack; spans it made and their parents. Checks the registry against it."""

    def __init__(self, reg: Registry, rng: random.Random, anchors: list[int]) -> None:
        self.reg = reg
        self.rng = rng
        self.anchors = anchors
        self.handles: Counter[int] = Counter()
        self.stack: list[int] = []
        self.parent_of: dict[int, int | None] = {}

    def current(self) -> int | None:
        seen: set[int] = set()
        current = None
        for sid in self.stack:
            if sid not in seen:
                seen.add(sid)
                current = sid
        return current

    def held(self) -> list[int]:
        return [sid for sid, n in self.handles.items() if n > 0]

    def expected_counts(self) -> dict[int, int]:
        """Reference counts of the spans this thread made, from the model."""
        on_stack = set(self.stack)
        live = {sid for sid in self.parent_of if self.handles[sid] > 0 or sid in on_stack}
        for sid in list(live):
            parent = self.parent_of.get(sid)
            while parent is not None and parent in self.parent_of and parent not in live:
                live.add(parent)
                parent = self.parent_of.get(parent)
        children: Counter[int] = Counter(
            self.parent_of[sid] for sid in live if self.parent_of[sid] is not None
        )
        return {
            sid: self.handles[sid] + (sid in on_stack) + children[sid] if sid in live else 0
            for sid in self.parent_of
        }

    def check(self) -> None:
        assert self.reg.current_span() == self.current()
        for sid, want in self.expected_counts().items():
            assert self.reg.ref_count(sid) == want, (sid, want)
            if want == 0:
                assert self.reg.get(sid) is None
                del self.parent_of[sid]

    def step(self) -> None:
        reg, rng = self.reg, self.rng
        op = rng.choice(
            ["new", "new", "clone", "anchor", "close", "enter", "enter", "exit", "exit", "with"]
        )
        held = self.held()
        if op == "new" or (not held and op in ("clone", "close", "enter")):
            choice = rng.choice(["current", "root", "anchor", "own"])
            parent: Any
            if choice == "current":
                parent, expected_parent = CURRENT, self.current()
            elif choice == "root":
                parent = expected_parent = None
            elif choice == "anchor":
                parent = expected_parent = rng.choice(self.anchors)
            else:
                parent = expected_parent = rng.choice(held) if held else None
            sid = reg.new_span("s", parent=parent, fields={"n": len(self.parent_of)})
            assert reg.get(sid).parent_id == expected_parent
            self.parent_of[sid] = expected_parent if expected_parent not in self.anchors else None
            self.handles[sid] += 1
        elif op == "clone":
            sid = rng.choice(held)
            assert reg.clone_span(sid) == sid
            self.handles[sid] += 1
        elif op == "anchor":
            sid = rng.choice(self.anchors)
            assert reg.clone_span(sid) == sid
            if rng.random() < 0.5:
                reg.enter(sid)
                assert reg.current_span() == sid or sid in self.stack
                reg.exit(sid)
            reg.try_close(sid)
        elif op == "close":
            sid = rng.choice(held)
            self.handles[sid] -= 1
            closed = reg.try_close(sid)
            assert isinstance(closed, bool)
        elif op == "enter":
            sid = rng.choice(held)
            reg.enter(sid)
            self.stack.append(sid)
        elif op == "exit" and self.stack:
            sid = rng.choice(self.stack)
            reg.exit(sid)
            del self.stack[len(self.stack) - 1 - self.stack[::-1].index(sid)]
        elif op == "with":
            expected_parent = self.current()
            with reg.span("w") as w:
                assert reg.current_span() == w.id
                assert reg.get(w.id).parent_id == expected_parent
                reg.event("inside", k=1)
                reg.record(w.id, k=2)
            assert reg.get(w.id) is None
            assert reg.current_span() == expected_parent

    def finish(self) -> None:
        while self.stack:
            sid = self.rng.choice(self.stack)
            self.reg.exit(sid)
            del self.stack[len(self.stack) - 1 - self.stack[::-1].index(sid)]
        for sid, n in list(self.handles.items()):
            for _ in range(n):
                self.reg.try_close(sid)
            self.handles[sid] = 0
        self.check()
        assert self.reg.current_span() is None


def test_context_thread_stress_behind_barrier(reg: Registry) -> None:
    threads, ops = 8, 3000
    anchors = [reg.span(f"anchor{n}", parent=None) for n in range(4)]
    anchor_ids = [a.id for a in anchors]
    barrier = threading.Barrier(threads)

    def worker(seed: int) -> Callable[[], None]:
        def run() -> None:
            model = ThreadModel(reg, random.Random(seed), anchor_ids)
            barrier.wait()
            for n in range(ops):
                model.step()
                if n % 50 == 0:
                    model.check()
                else:
                    assert reg.current_span() == model.current()
            model.finish()

        return run

    run_threads(*(worker(seed) for seed in range(threads)))
    assert len(reg) == len(anchors)
    for a in anchors:
        assert reg.ref_count(a.id) == 1
        a.close()
    assert len(reg) == 0


def test_context_threads_racing_on_one_span_count_exactly(reg: Registry) -> None:
    threads, rounds = 8, 2000
    shared = reg.span("shared", parent=None)
    barrier = threading.Barrier(threads)

    def worker() -> None:
        barrier.wait()
        for n in range(rounds):
            assert reg.clone_span(shared.id) == shared.id
            if n % 3 == 0:
                with shared.entered():
                    child = reg.new_span("c")
                reg.try_close(child)
            assert reg.try_close(shared.id) is False

    run_threads(*([worker] * threads))
    assert reg.ref_count(shared.id) == 1
    assert len(reg) == 1
    shared.close()
    with pytest.raises(SpanNotFoundError):
        reg.clone_span(shared.id)


def test_context_threads_racing_to_close_only_one_gets_true(reg: Registry) -> None:
    threads = 8
    for _ in range(200):
        sid = reg.new_span("s", parent=None)
        for _ in range(threads - 1):
            reg.clone_span(sid)
        barrier = threading.Barrier(threads)
        results: list[bool] = []

        def closer(
            sid: int = sid,
            barrier: threading.Barrier = barrier,
            results: list[bool] = results,
        ) -> None:
            barrier.wait()
            results.append(reg.try_close(sid))

        run_threads(*([closer] * threads))
        assert sorted(results) == [False] * (threads - 1) + [True]
        assert reg.get(sid) is None
