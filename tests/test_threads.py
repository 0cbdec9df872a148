"""Thread pools: ``in_current_span`` (issue 11 part 5; SPEC section 3, R5,
R11, R13, R14).

A wrapped callable runs, wherever it is called, with the spans current where
it was wrapped: its spans are that span's children while it lives, and roots
that keep its trace once it has ended. The wrapper holds no reference: the
span closes at its block's end, however long the wrapper lives.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import pykregistry
import pykregistry._default
from pykregistry import Registry, in_current_span
from pykregistry.testing import assert_no_leaks


def made_in(reg: Registry, name: str = "work") -> Callable[[], dict[str, Any]]:
    """A function that makes a span and tells where it stands."""

    def work() -> dict[str, Any]:
        current = reg.current_span()
        with reg.span(name) as span:
            ref = span.ref
            return {
                "current": current,
                "id": span.id,
                "parent_id": ref.parent_id,
                "parent_span_id": ref.parent_span_id,
                "trace_id": ref.trace_id,
            }

    return work


def child_of(parent: pykregistry.Span) -> dict[str, Any]:
    """What `made_in` reports for a child of the live span `parent`."""
    ref = parent.ref
    return {
        "current": parent.id,
        "parent_id": parent.id,
        "parent_span_id": ref.span_id,
        "trace_id": ref.trace_id,
    }


def without_id(seen: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in seen.items() if k != "id"}


# === wherever it runs, its spans are children of the wrapped-at span ===


def test_thread_pool_submit_makes_children_of_the_wrapping_span(reg: Registry) -> None:
    work = made_in(reg)
    with ThreadPoolExecutor(2) as pool, reg.span("batch") as batch:
        wrapped = pool.submit(in_current_span(work)).result()
        plain = pool.submit(work).result()
        assert without_id(wrapped) == child_of(batch)
        # Without the wrapper the pool's thread has nothing current: a root
        # of a new trace. (What the wrapper is for.)
        assert plain["parent_id"] is None
        assert plain["parent_span_id"] is None
        assert plain["trace_id"] != batch.ref.trace_id


def test_run_in_executor_makes_children_of_the_wrapping_span(reg: Registry) -> None:
    work = made_in(reg)

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        loop = asyncio.get_running_loop()
        with reg.span("handler") as handler:
            seen = await loop.run_in_executor(None, in_current_span(work))
            return seen, child_of(handler)

    seen, expected = asyncio.run(main())
    assert without_id(seen) == expected


def test_thread_target_makes_children_of_the_wrapping_span(reg: Registry) -> None:
    work = made_in(reg)
    seen: list[dict[str, Any]] = []
    with reg.span("main") as main:
        threads = [
            threading.Thread(target=in_current_span(lambda: seen.append(work()))) for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [without_id(s) for s in seen] == [child_of(main)] * 3
    assert len({s["id"] for s in seen}) == 3


def test_worker_spans_nest_under_each_other(reg: Registry) -> None:
    """Inside the worker the stack is the wrapped one plus the worker's own
    entries: a grandchild's parent is the worker's span."""

    def work() -> tuple[int | None, int | None, int]:
        with reg.span("outer") as outer, reg.span("inner") as inner:
            return reg.get(outer.id).parent_id, reg.get(inner.id).parent_id, outer.id

    with ThreadPoolExecutor(1) as pool, reg.span("request") as request:
        outer_parent, inner_parent, outer_id = pool.submit(in_current_span(work)).result()
    assert (outer_parent, inner_parent) == (request.id, outer_id)


# === the wrapped-at span ends and closes with its block ===


def test_span_ended_before_the_worker_ran_keeps_its_trace(reg: Registry) -> None:
    """R13: the worker's spans are roots in the registry that name the ended
    span as their parent in the trace."""
    go = threading.Event()
    work = made_in(reg)

    def waits() -> dict[str, Any]:
        assert go.wait(10)
        return work()

    with ThreadPoolExecutor(1) as pool:
        with reg.span("request") as request:
            identity = (request.ref.span_id, request.ref.trace_id)
            future = pool.submit(in_current_span(waits))
        # The worker has not run its span yet; the request closed at its
        # block's end although the wrapper and its captured context live on.
        assert len(reg) == 0
        go.set()
        seen = future.result()
    assert without_id(seen) == {
        "current": None,
        "parent_id": None,
        "parent_span_id": identity[0],
        "trace_id": identity[1],
    }


def test_wrapper_does_not_keep_the_wrapped_span_open(Recorder: Any) -> None:
    recorder = Recorder()
    reg = Registry(layers=[recorder], strict=True)
    with reg.span("request") as request:
        wrapper = in_current_span(made_in(reg))
        sid = request.id
        assert reg.ref_count(sid) == 2  # the handle and this context's entry: nothing more
    # Closed at the block's end (R5, R11), with the wrapper still referenced.
    assert reg.get(sid) is None
    assert ("close", sid) in recorder.hooks()
    assert_no_leaks(reg, collect=False)
    # A call after the span closed keeps its trace and leaks nothing.
    with ThreadPoolExecutor(1) as pool:
        seen = pool.submit(wrapper).result()
    assert seen["parent_id"] is None
    assert seen["parent_span_id"] is not None
    assert_no_leaks(reg, collect=False)
    del wrapper


def test_worker_span_still_open_holds_its_parent_but_does_not_stretch_its_end() -> None:
    """R2 and R14: the wrapped-at span ends at its block's end; it closes
    when the worker's child, which holds it, closes."""
    order: list[tuple[str, str]] = []

    class Ends:
        def on_end(self, span: pykregistry.SpanRef) -> None:
            order.append(("end", span.name))

        def on_close(self, span: pykregistry.SpanRef) -> None:
            order.append(("close", span.name))

    reg = Registry(layers=[Ends()], strict=True)
    inside, release = threading.Event(), threading.Event()

    def work() -> None:
        with reg.span("child"):
            inside.set()
            assert release.wait(10)

    with ThreadPoolExecutor(1) as pool:
        with reg.span("parent"):
            future = pool.submit(in_current_span(work))
            assert inside.wait(10)
        assert order == [("end", "parent")]  # ended, but its child holds it
        assert len(reg) == 2
        release.set()
        future.result()
    assert order == [("end", "parent"), ("end", "child"), ("close", "child"), ("close", "parent")]
    assert_no_leaks(reg, collect=False)


def test_spans_left_entered_by_the_worker_are_released_when_it_returns(reg: Registry) -> None:
    """R11: the per-call copy of the context ends with the call."""

    def leaves_one_entered() -> int:
        span = reg.span("left")
        span.__enter__()  # never exited
        sid = span.id
        span.close()  # the handle's reference goes; the entry's stays
        return sid

    with reg.span("request"):
        wrapper = in_current_span(leaves_one_entered)
    with ThreadPoolExecutor(1) as pool:
        sid = pool.submit(wrapper).result()
    assert reg.get(sid) is None
    # Nor is the entry inherited by the next call of the same wrapper.
    assert in_current_span(reg.current_span)() is None
    assert wrapper.__wrapped__ is leaves_one_entered  # type: ignore[attr-defined]
    assert_no_leaks(reg, collect=False)


# === one wrapper, many threads at once ===


def test_one_wrapper_runs_in_many_threads_at_once(reg: Registry) -> None:
    """Each call runs in its own copy of the captured context: eight
    threads are inside the same wrapper, each in its own span, at once (a
    `Context` can be entered by only one thread at a time)."""
    n = 8
    barrier = threading.Barrier(n, timeout=10)

    def work(i: int) -> tuple[int, int | None, int | None]:
        with reg.span("part", i=i) as part:
            barrier.wait()  # every thread is inside its span now
            current = reg.current_span()
            return part.id, reg.get(part.id).parent_id, current

    with reg.span("batch") as batch:
        wrapper = in_current_span(work)
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(wrapper, range(n)))
        assert len(reg) == 1
    assert all(parent == batch.id for _, parent, _ in results)
    # Each thread saw its own span as current, not another thread's.
    assert all(current == sid for sid, _, current in results)
    assert len({sid for sid, _, _ in results}) == n


def test_one_wrapper_many_threads_after_the_span_ended(reg: Registry) -> None:
    n = 8
    barrier = threading.Barrier(n, timeout=10)
    work = made_in(reg)

    def synchronized() -> dict[str, Any]:
        barrier.wait()
        return work()

    with reg.span("batch") as batch:
        identity = (batch.ref.span_id, batch.ref.trace_id)
        wrapper = in_current_span(synchronized)
    threads = [threading.Thread(target=lambda: seen.append(wrapper())) for _ in range(n)]
    seen: list[dict[str, Any]] = []
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [(s["parent_id"], s["parent_span_id"], s["trace_id"]) for s in seen] == [
        (None, *identity)
    ] * n


def test_a_wrapper_called_from_inside_itself_runs_again_in_the_wrapped_context(
    reg: Registry,
) -> None:
    """Re-entrant calls each get their own copy: no "already entered"
    error, and the inner call starts from the wrapped context again."""
    seen: list[int | None] = []

    def work(depth: int) -> None:
        seen.append(reg.current_span())
        with reg.span("level", depth=depth):
            if depth < 2:
                wrapper(depth + 1)

    with reg.span("request") as request:
        wrapper = in_current_span(work)
        wrapper(0)
        assert seen == [request.id] * 3


# === the calling thread, and what the call carries ===


def test_the_calling_threads_current_span_is_not_the_parent_and_is_restored(
    reg: Registry,
) -> None:
    work = made_in(reg)
    with reg.span("where wrapped") as wrapped_at:
        wrapper = in_current_span(work)
        with reg.span("where called") as called_at:
            seen = wrapper()
            assert reg.current_span() == called_at.id
        assert without_id(seen) == child_of(wrapped_at)


def test_other_context_variables_are_carried_and_not_leaked_back() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")

    def work() -> str:
        seen = var.get()
        var.set("changed by the worker")
        return seen

    token = var.set("r-42")
    wrapper = in_current_span(work)
    var.reset(token)
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(wrapper).result() == "r-42"
        assert pool.submit(wrapper).result() == "r-42"  # a fresh copy per call
    assert var.get() == "none"


# === registry= ===


@pytest.fixture
def default(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    registry = Registry(strict=True)
    monkeypatch.setattr(pykregistry._default, "_DEFAULT", registry)
    yield registry
    assert_no_leaks(registry)


@pytest.mark.parametrize("which", ["default", "explicit", "none"])
def test_registry_argument(default: Registry, reg: Registry, which: str) -> None:
    """`registry=` changes nothing: with the default registry, an explicit
    one or none given, the wrapper carries every registry's current span
    (they share one context variable)."""
    registry = {"default": default, "explicit": reg, "none": None}[which]

    def work() -> tuple[int | None, int | None]:
        with pykregistry.info_span("on default") as a, reg.span("on reg") as b:
            return default.get(a.id).parent_id, reg.get(b.id).parent_id

    with pykregistry.info_span("default parent") as p, reg.span("reg parent") as q:
        wrapper = in_current_span(work, registry=registry)
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(wrapper).result() == (p.id, q.id)


# === what it takes, returns and raises ===


def test_returns_what_fn_returns_raises_what_fn_raises(reg: Registry) -> None:
    error = ValueError("card declined")

    def fails(x: int, *, y: int) -> int:
        """Docs of fails."""
        if x < 0:
            raise error
        return x + y

    wrapper = in_current_span(fails)
    assert wrapper(1, y=2) == 3
    with pytest.raises(ValueError, match="card declined") as raised:
        wrapper(-1, y=0)
    assert raised.value is error
    assert (wrapper.__name__, wrapper.__doc__) == ("fails", "Docs of fails.")
    assert wrapper.__wrapped__ is fails  # type: ignore[attr-defined]
    # functools.partial and bound methods are callables like any other.
    assert in_current_span(functools.partial(fails, 2, y=3))() == 5
    assert in_current_span([1, 2].count)(2) == 1


def test_a_callable_whose_attributes_raise_is_still_wrapped() -> None:
    class Hostile:
        def __call__(self) -> str:
            return "ran"

        def __getattr__(self, name: str) -> Any:
            raise RuntimeError(name)

    fn = Hostile()
    assert in_current_span(fn)() == "ran"


async def coroutine_function() -> None:
    pass


def generator_function() -> Iterator[int]:
    yield 1


async def async_generator_function() -> Any:
    yield 1


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((3,), {}, "takes a callable, not int"),
        ((None,), {}, "takes a callable, not NoneType"),
        ((len,), {"registry": 3}, "registry must be"),
        ((len,), {"registry": "default"}, "registry must be"),
        ((coroutine_function,), {}, "coroutine or generator function"),
        ((generator_function,), {}, "coroutine or generator function"),
        ((async_generator_function,), {}, "coroutine or generator function"),
        ((functools.partial(coroutine_function),), {}, "coroutine or generator function"),
    ],
)
def test_rejects_what_it_cannot_carry_with_type_error(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        in_current_span(*args, **kwargs)


def test_nothing_lingers_once_the_wrapper_is_gone(reg: Registry) -> None:
    with reg.span("request"):
        wrapper = in_current_span(made_in(reg))
    wrapper()
    del wrapper
    gc.collect()
    assert_no_leaks(reg, collect=False)
