"""``@instrument`` (issue 4, items 1 and 3): a span around each call of a
plain function, coroutine, generator or async generator; arguments, fixed
fields and the return value as fields; exceptions recorded and propagated;
the filter's decision made once per decorated function.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import pykregistry
from pykregistry import Level, Registry, SpanRef, instrument

# === a recording layer ===


@dataclass
class Spans:
    """Records each span's data as it goes (views of closed spans raise, so
    everything is read inside the hooks)."""

    opened: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)
    steps: list[tuple[str, str]] = field(default_factory=list)

    @staticmethod
    def read(span: SpanRef) -> dict[str, Any]:
        return {
            "id": span.id,
            "name": span.name,
            "target": span.target,
            "level": span.level,
            "fields": span.fields,
            "parent_id": span.parent_id,
        }

    def on_new_span(self, span: SpanRef) -> None:
        self.opened.append(self.read(span))
        self.steps.append(("new", span.name))

    def on_enter(self, span: SpanRef) -> None:
        self.steps.append(("enter", span.name))

    def on_exit(self, span: SpanRef) -> None:
        self.steps.append(("exit", span.name))

    def on_close(self, span: SpanRef) -> None:
        self.closed.append(self.read(span))
        self.steps.append(("close", span.name))

    def one(self, name: str) -> dict[str, Any]:
        """The closed span named ``name`` (exactly one)."""
        found = [s for s in self.closed if s["name"] == name]
        assert len(found) == 1, (name, self.closed)
        return found[0]

    def names(self) -> list[str]:
        return [s["name"] for s in self.closed]


@pytest.fixture
def spans(reg: Registry) -> Spans:
    layer = Spans()
    reg.add_layer(layer)
    return layer


def current_name(reg: Registry) -> str | None:
    sid = reg.current_span()
    view = None if sid is None else reg.get(sid)
    return None if view is None else view.name


# === plain functions: defaults, names, arguments ===


def test_instrument_bare_uses_qualname_module_and_info() -> None:
    seen: list[dict[str, Any]] = []

    @instrument
    def add(a: int, b: int = 2) -> int:
        """Adds."""
        ref = pykregistry.current()
        assert ref is not None
        seen.append(Spans.read(ref))
        return a + b

    assert add(1) == 3
    assert seen == [
        {
            "id": seen[0]["id"],
            "name": "test_instrument_bare_uses_qualname_module_and_info.<locals>.add",
            "target": __name__,
            "level": Level.INFO,
            "fields": {"a": 1, "b": 2},
            "parent_id": None,
        }
    ]
    assert pykregistry.current() is None


def test_instrument_keeps_name_doc_signature_and_kind() -> None:
    def plain(x: int) -> int:
        """Plain."""
        return x

    async def coro(x: int) -> int:
        return x

    def gen(x: int) -> Iterator[int]:
        yield x

    async def agen(x: int) -> AsyncIterator[int]:
        yield x

    cases: list[tuple[Callable[..., Any], Callable[[object], bool]]] = [
        (plain, inspect.isfunction),
        (coro, inspect.iscoroutinefunction),
        (gen, inspect.isgeneratorfunction),
        (agen, inspect.isasyncgenfunction),
    ]
    for func, kind in cases:
        wrapped = instrument(func)
        assert kind(wrapped), func
        assert wrapped.__name__ == func.__name__
        assert wrapped.__qualname__ == func.__qualname__
        assert wrapped.__doc__ == func.__doc__
        assert wrapped.__wrapped__ is func  # type: ignore[attr-defined]
        assert inspect.signature(wrapped) == inspect.signature(func)


def test_instrument_options(reg: Registry, spans: Spans) -> None:
    @instrument(
        registry=reg, name="db.query", target="app.db", level="debug", fields={"db": "orders"}
    )
    def query(sql: str) -> int:
        return 7

    assert query("select 1") == 7
    assert spans.closed == [
        {
            "id": spans.closed[0]["id"],
            "name": "db.query",
            "target": "app.db",
            "level": Level.DEBUG,
            "fields": {"sql": "select 1", "db": "orders"},
            "parent_id": None,
        }
    ]


def test_instrument_records_every_kind_of_parameter(reg: Registry, spans: Spans) -> None:
    marker = object()

    @instrument(registry=reg)
    def f(a: Any, /, b: Any, c: Any = 3, *rest: Any, d: Any, e: Any = None, **extra: Any) -> Any:
        return a

    f(1, "two", 3.5, 4, 5, d=marker, z=[1])
    f(1, 2, d=True)
    first, second = spans.closed
    assert first["fields"] == {
        "a": 1,
        "b": "two",
        "c": 3.5,
        "rest": (4, 5),  # a tuple of ints: an array (R10)
        "d": repr(marker),
        "e": None,
        "extra": "{'z': [1]}",
    }
    assert second["fields"] == {
        "a": 1,
        "b": 2,
        "c": 3,
        "rest": (),
        "d": True,
        "e": None,
        "extra": "{}",
    }


def test_instrument_args_false_and_skip(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg, args=False, fields={"k": 1})
    def none(a: int, b: int) -> None:
        pass

    @instrument(registry=reg, skip=("password",))
    def login(user: str, password: str) -> None:
        pass

    @instrument(registry=reg, skip="password")  # one name may be given bare
    def login2(user: str, password: str) -> None:
        pass

    none(1, 2)
    login("ada", "hunter2")
    login2(user="ada", password="hunter2")
    assert [s["fields"] for s in spans.closed] == [{"k": 1}, {"user": "ada"}, {"user": "ada"}]


def test_instrument_mistakes_are_caught_at_decoration(reg: Registry) -> None:
    def f(user: str) -> None:
        pass

    with pytest.raises(ValueError, match="passwd"):
        instrument(f, registry=reg, skip=("passwd",))
    with pytest.raises(ValueError, match="user"):
        instrument(f, registry=reg, fields={"user": "x"})
    with pytest.raises(ValueError, match="return"):
        instrument(f, registry=reg, fields={"return": 1}, ret=True)
    with pytest.raises(TypeError, match="functions"):
        instrument(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="methods of a class"):
        instrument(Service)
    # A fixed field may share an argument's name if the argument is skipped.
    instrument(f, registry=reg, skip=("user",), fields={"user": "x"})


def test_instrument_parameter_named_parent_is_a_field(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg, fields={"level": "fixed"})
    def adopt(parent: str, target: int = 1) -> str:
        return parent

    with reg.span("outer") as outer:
        assert adopt("mum") == "mum"
    span = spans.one(adopt.__qualname__)
    assert span["parent_id"] == outer.id  # not taken as the span's parent
    assert span["fields"] == {"parent": "mum", "target": 1, "level": "fixed"}


def test_instrument_ret_records_the_return_value(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg, ret=True)
    def f(x: int) -> object:
        return {"x": x} if x else None

    assert f(1) == {"x": 1}
    assert f(0) is None
    assert [s["fields"] for s in spans.closed] == [
        {"x": 1, "return": "{'x': 1}"},
        {"x": 0, "return": None},
    ]


def test_instrument_ret_without_arguments_and_when_raising(reg: Registry, spans: Spans) -> None:
    # Both shapes of sync wrapper (no recorded argument / recorded ones):
    # the return value is recorded only when there is one.
    @instrument(registry=reg, ret=True)
    def bare(fail: bool = False) -> int:
        if fail:
            raise LookupError("no")
        return 7

    @instrument(registry=reg, ret=True, args=False)
    def none() -> str:
        return "v"

    assert bare() == 7
    assert none() == "v"
    with pytest.raises(LookupError):
        bare(True)
    assert [s["fields"] for s in spans.closed] == [
        {"fail": False, "return": 7},
        {"return": "v"},
        {
            "fail": True,
            "error": True,
            "exception.type": "LookupError",
            "exception.message": "no",
        },
    ]


def test_instrument_spans_nest_and_are_current(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg)
    def inner() -> str | None:
        return current_name(reg)

    @instrument(registry=reg)
    def outer() -> str | None:
        assert current_name(reg) == outer.__qualname__
        return inner()

    assert outer() == inner.__qualname__
    assert current_name(reg) is None
    inner_span, outer_span = spans.closed
    assert inner_span["parent_id"] == outer_span["id"]
    assert outer_span["parent_id"] is None


def test_instrument_wrong_arguments_raise_the_functions_own_type_error(
    reg: Registry, spans: Spans
) -> None:
    def original(a: int, *, b: int) -> None:
        pass

    wrapped = instrument(original, registry=reg)
    with pytest.raises(TypeError) as expected:
        original(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError) as got:
        wrapped(1, 2)  # type: ignore[call-arg]
    assert str(got.value) == str(expected.value)
    # The call happened and failed: a span without argument fields, with the error.
    assert spans.closed[0]["fields"] == {
        "error": True,
        "exception.type": "TypeError",
        "exception.message": str(expected.value),
    }


# === methods ===


SERVICE_SPANS = Spans()
SERVICE_REG = Registry(layers=[SERVICE_SPANS])


class Service:
    @instrument(registry=SERVICE_REG)
    def method(self, x: int) -> str | None:
        return current_name(SERVICE_REG)

    @staticmethod
    @instrument(registry=SERVICE_REG)
    def static_inner(x: int) -> int:
        return x

    @instrument(registry=SERVICE_REG)
    @staticmethod
    def static_outer(x: int) -> int:
        return x

    @classmethod
    @instrument(registry=SERVICE_REG)
    def class_inner(cls, x: int) -> str:
        return cls.__name__

    @instrument(registry=SERVICE_REG)
    @classmethod
    def class_outer(cls, x: int) -> str:
        return cls.__name__


def test_instrument_methods_static_and_class_methods() -> None:
    layer = SERVICE_SPANS
    s = Service()
    assert s.method(1) == "Service.method"
    assert Service.static_inner(2) == 2
    assert s.static_outer(3) == 3
    assert Service.class_inner(4) == "Service"
    assert s.class_outer(5) == "Service"
    got = [(c["name"], c["fields"]) for c in layer.closed]
    assert got == [
        ("Service.method", {"x": 1}),  # self is not recorded
        ("Service.static_inner", {"x": 2}),
        ("Service.static_outer", {"x": 3}),
        ("Service.class_inner", {"x": 4}),  # nor cls
        ("Service.class_outer", {"x": 5}),
    ]


def test_instrument_only_a_leading_self_is_the_receiver(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg)
    def f(x: int, self: int) -> None:
        pass

    f(1, 2)
    assert spans.closed[0]["fields"] == {"x": 1, "self": 2}


# === exceptions ===


class AppError(Exception):
    pass


def test_instrument_exception_is_recorded_and_propagates(reg: Registry, spans: Spans) -> None:
    error = AppError("no such order")

    @instrument(registry=reg)
    def fail(order: int) -> None:
        raise error

    with pytest.raises(AppError) as raised:
        fail(3)
    assert raised.value is error  # unchanged
    assert spans.one("test_instrument_exception_is_recorded_and_propagates.<locals>.fail")[
        "fields"
    ] == {
        "order": 3,
        "error": True,
        "exception.type": f"{__name__}.AppError",
        "exception.message": "no such order",
    }


def test_instrument_err_false_does_not_record(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg, err=False)
    def fail() -> None:
        raise ValueError("quiet")

    @instrument(registry=reg, err=False)
    async def afail() -> None:
        raise ValueError("quiet")

    with pytest.raises(ValueError, match="quiet"):
        fail()
    with pytest.raises(ValueError, match="quiet"):
        asyncio.run(afail())
    assert [s["fields"] for s in spans.closed] == [{}, {}]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_instrument_base_exceptions_are_not_errors(
    reg: Registry, spans: Spans, stop: type[BaseException]
) -> None:
    @instrument(registry=reg)
    def interrupted() -> None:
        raise stop()

    with pytest.raises(stop):
        interrupted()
    assert spans.closed[0]["fields"] == {}


def test_instrument_coroutine_exception_is_recorded_and_propagates(
    reg: Registry, spans: Spans
) -> None:
    @instrument(registry=reg, ret=True)
    async def fetch(key: str) -> str:
        await asyncio.sleep(0)
        raise KeyError(key)

    async def main() -> None:
        with pytest.raises(KeyError) as raised:
            await fetch("user:1")
        assert raised.value.args == ("user:1",)

    asyncio.run(main())
    assert spans.closed[0]["fields"] == {
        "key": "user:1",
        "error": True,
        "exception.type": "KeyError",
        "exception.message": "'user:1'",
    }


def test_instrument_cancelled_coroutine_is_not_an_error(reg: Registry, spans: Spans) -> None:
    started = asyncio.Event()

    @instrument(registry=reg)
    async def wait() -> None:
        started.set()
        await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(wait())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert spans.closed[0]["fields"] == {}


# === coroutines ===


def test_instrument_coroutine_span_is_per_task(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg, ret=True)
    async def fetch(key: str) -> str | None:
        mine = current_name(reg)
        await asyncio.sleep(0)  # the other task runs its own span here
        assert current_name(reg) == mine
        await asyncio.sleep(0)
        return current_name(reg)

    async def main() -> list[str | None]:
        with reg.span("batch"):
            results = await asyncio.gather(fetch("a"), fetch("b"))
            assert current_name(reg) == "batch"
        return list(results)

    assert asyncio.run(main()) == [fetch.__qualname__] * 2
    batch = spans.one("batch")
    fetches = [s for s in spans.closed if s["name"] == fetch.__qualname__]
    assert sorted(s["fields"]["key"] for s in fetches) == ["a", "b"]
    assert all(s["parent_id"] == batch["id"] for s in fetches)


def test_instrument_coroutine_ret_and_nesting(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg, ret=True)
    async def leaf(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    @instrument(registry=reg)
    async def root() -> int:
        return await leaf(1) + await leaf(2)

    assert asyncio.run(root()) == 6
    leaves = [s for s in spans.closed if s["name"] == leaf.__qualname__]
    assert [s["fields"] for s in leaves] == [{"x": 1, "return": 2}, {"x": 2, "return": 4}]
    assert {s["parent_id"] for s in leaves} == {spans.one(root.__qualname__)["id"]}


def test_instrument_coroutine_never_awaited_makes_no_span(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg)
    async def never() -> None:
        pass

    coro = never()
    coro.close()  # closed before it ran: nothing was called
    assert spans.opened == []


# === generators ===


def test_instrument_generator_entered_per_resume_only(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg, ret=True)
    def numbers(n: int) -> Generator[tuple[int, str | None], None, str]:
        for i in range(n):
            yield i, current_name(reg)
        return "done"

    with reg.span("consumer") as consumer:
        items = []
        for item in numbers(3):
            items.append(item)
            # Never current in the caller between items...
            assert current_name(reg) == "consumer"
            # ... so the consumer's spans are not its children.
            with reg.span("between") as between:
                assert between.ref.parent_id == consumer.id  # type: ignore[union-attr]
    assert items == [
        (0, numbers.__qualname__),
        (1, numbers.__qualname__),
        (2, numbers.__qualname__),
    ]
    span = spans.one(numbers.__qualname__)
    assert span["fields"] == {"n": 3, "return": "done"}
    assert span["parent_id"] == consumer.id  # where iteration started
    gen_steps = [s for s in spans.steps if s[1] == numbers.__qualname__]
    # Created at the first next(); entered once to create the generator and
    # once per resume (3 items + the final resume), closed at the end.
    assert gen_steps == [("new", numbers.__qualname__)] + [
        ("enter", numbers.__qualname__),
        ("exit", numbers.__qualname__),
    ] * 5 + [("close", numbers.__qualname__)]


def test_instrument_generator_send_throw_and_return(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg, ret=True)
    def echo() -> Generator[object, object, str]:
        received: object = None
        while True:
            try:
                received = yield received
            except LookupError as exc:
                received = f"caught {exc!r}"
            if received == "stop":
                return "stopped"

    def outer() -> Generator[object, object, None]:
        result = yield from echo()
        yield result

    gen = outer()
    assert next(gen) is None
    assert gen.send("a") == "a"
    assert gen.throw(KeyError("k")) == "caught KeyError('k')"
    assert gen.send("stop") == "stopped"
    span = spans.one(echo.__qualname__)
    assert span["fields"] == {"return": "stopped"}
    gen.close()


def test_instrument_generator_closed_early_closes_span(reg: Registry, spans: Spans) -> None:
    cleaned = []

    @instrument(registry=reg)
    def forever() -> Generator[int, None, None]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            # Closing runs the generator's cleanup inside its span.
            cleaned.append(current_name(reg))

    gen = forever()
    assert [next(gen), next(gen)] == [0, 1]
    assert len(reg) == 1
    gen.close()
    assert cleaned == [forever.__qualname__]
    assert len(reg) == 0
    assert spans.one(forever.__qualname__)["fields"] == {}  # GeneratorExit is not an error


def test_instrument_generator_exception_is_recorded(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg)
    def broken() -> Iterator[int]:
        yield 1
        raise AppError("bad row")

    gen = broken()
    assert next(gen) == 1
    with pytest.raises(AppError, match="bad row"):
        next(gen)
    assert spans.one(broken.__qualname__)["fields"] == {
        "error": True,
        "exception.type": f"{__name__}.AppError",
        "exception.message": "bad row",
    }
    assert len(reg) == 0


def test_instrument_generator_thrown_exception_escaping_is_recorded(
    reg: Registry, spans: Spans
) -> None:
    @instrument(registry=reg)
    def items() -> Generator[int, None, None]:
        yield 1
        yield 2

    gen = items()
    next(gen)
    with pytest.raises(ValueError, match="from the consumer"):
        gen.throw(ValueError("from the consumer"))
    assert spans.one(items.__qualname__)["fields"]["exception.type"] == "ValueError"


def test_instrument_sync_generator_closed_from_another_thread(reg: Registry, spans: Spans) -> None:
    seen: list[str | None] = []

    @instrument(registry=reg)
    def rows() -> Generator[int, None, None]:
        try:
            yield 1
            yield 2
        finally:
            seen.append(current_name(reg))  # runs on the closing thread

    gen = rows()
    assert next(gen) == 1
    assert reg.current_span() is None
    errors: list[BaseException] = []

    def close() -> None:
        try:
            assert next(gen) == 2  # resumed there too
            gen.close()
            assert reg.current_span() is None
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=close)
    t.start()
    t.join()
    assert errors == []
    assert seen == [rows.__qualname__]
    assert spans.names() == [rows.__qualname__]
    assert len(reg) == 0


def test_instrument_generator_dropped_unfinished_closes_span(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg)
    def rows() -> Generator[int, None, None]:
        yield 1
        yield 2

    gen = rows()
    next(gen)
    del gen
    gc.collect()
    assert spans.names() == [rows.__qualname__]
    assert len(reg) == 0


def test_instrument_generator_never_started_makes_no_span(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg)
    def rows() -> Generator[int, None, None]:
        yield 1

    gen = rows()
    gen.close()
    assert spans.opened == []


def test_instrument_generator_under_contextmanager(reg: Registry, spans: Spans) -> None:
    import contextlib

    @contextlib.contextmanager
    @instrument(registry=reg)
    def transaction(name: str) -> Iterator[str]:
        yield name

    with transaction("tx") as name:
        assert name == "tx"
        assert current_name(reg) is None
    assert spans.one(transaction.__wrapped__.__qualname__)["fields"] == {"name": "tx"}  # type: ignore[attr-defined]


# === async generators ===


def test_instrument_async_generator_across_two_tasks(reg: Registry, spans: Spans) -> None:
    """Consumed in task A, continued and closed in task B: entered per resume
    in whichever task resumes it, never current in either between items, and
    closed by B."""
    resumed_in: list[tuple[str | None, str | None]] = []

    @instrument(registry=reg)
    async def stream(n: int) -> AsyncIterator[int]:
        try:
            for i in range(n):
                await asyncio.sleep(0)
                task = asyncio.current_task()
                resumed_in.append((task.get_name() if task else None, current_name(reg)))
                yield i
        finally:
            task = asyncio.current_task()
            resumed_in.append((task.get_name() if task else None, current_name(reg)))

    async def task_a(agen: AsyncIterator[int]) -> list[int]:
        with reg.span("a"):
            got = [await agen.__anext__(), await agen.__anext__()]
            assert current_name(reg) == "a"
            return got

    async def task_b(agen: Any) -> list[int]:
        with reg.span("b"):
            got = [await agen.__anext__()]
            assert current_name(reg) == "b"
            await agen.aclose()
            assert current_name(reg) == "b"
            return got

    async def main() -> None:
        agen = stream(10)
        assert await asyncio.create_task(task_a(agen), name="A") == [0, 1]
        assert len(reg) == 2  # the stream's span (entered nowhere) and its parent "a"
        assert reg.current_span() is None
        assert await asyncio.create_task(task_b(agen), name="B") == [2]

    asyncio.run(main())
    name = stream.__qualname__
    assert resumed_in == [("A", name), ("A", name), ("B", name), ("B", name)]
    span = spans.one(name)
    assert span["fields"] == {"n": 10}
    assert span["parent_id"] == spans.one("a")["id"]  # where iteration started
    assert len(reg) == 0


def test_instrument_async_generator_exception_recorded(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg)
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise AppError("stream broke")

    async def main() -> None:
        got = []
        agen = broken()
        got = [await agen.__anext__()]
        with pytest.raises(AppError, match="stream broke"):
            await agen.__anext__()
        assert got == [1]

    asyncio.run(main())
    assert spans.one(broken.__qualname__)["fields"] == {
        "error": True,
        "exception.type": f"{__name__}.AppError",
        "exception.message": "stream broke",
    }


def test_instrument_async_generator_asend_athrow(reg: Registry, spans: Spans) -> None:
    @instrument(registry=reg)
    async def echo() -> Any:
        received: object = None
        while True:
            try:
                received = yield received
            except LookupError:
                received = "caught"

    async def main() -> None:
        agen = echo()
        assert await agen.asend(None) is None
        assert await agen.asend("x") == "x"
        assert await agen.athrow(KeyError("k")) == "caught"
        await agen.aclose()

    asyncio.run(main())
    assert spans.one(echo.__qualname__)["fields"] == {}
    assert len(reg) == 0


def test_instrument_async_generator_abandoned_is_closed_by_the_loop(
    reg: Registry, spans: Spans
) -> None:
    @instrument(registry=reg)
    async def stream() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    async def main() -> None:
        async for i in stream():
            if i == 2:
                break  # abandoned: asyncio's shutdown_asyncgens closes it

    asyncio.run(main())
    gc.collect()
    assert spans.names() == [stream.__qualname__]
    assert len(reg) == 0


# === registries and filters ===


def test_instrument_default_registry_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = Spans()
    monkeypatch.setattr(pykregistry._default, "_DEFAULT", Registry(layers=[layer]))

    @pykregistry.instrument(level="warn")
    def f() -> None:
        pass

    f()
    f()
    assert [(s["name"], s["level"]) for s in layer.closed] == [(f.__qualname__, Level.WARN)] * 2


def test_registry_instrument_method(reg: Registry, spans: Spans) -> None:
    @reg.instrument
    def bare(x: int) -> int:
        return x

    @reg.instrument(name="named", ret=True)
    def called(x: int) -> int:
        return x

    assert bare(1) == 1
    assert called(2) == 2
    assert [(s["name"], s["fields"]) for s in spans.closed] == [
        (bare.__qualname__, {"x": 1}),
        ("named", {"x": 2, "return": 2}),
    ]


def test_instrument_filtered_out_still_runs(spans: Spans) -> None:
    reg = Registry(filter="warn,app.db=debug", layers=[spans])

    @instrument(registry=reg, target="app.db", level="debug")
    def query() -> str | None:
        return current_name(reg)

    @instrument(registry=reg, target="app.web", level="info")
    def handler(x: int) -> str | None:
        return current_name(reg)

    @instrument(registry=reg, target="app.web", level="info")
    def rows() -> Generator[int, None, None]:
        yield 1
        yield 2

    @instrument(registry=reg, target="app.web", level="info")
    async def fetch() -> int:
        return 5

    @instrument(registry=reg, target="app.web", level="info")
    def fail() -> None:
        raise AppError("still raised")

    @instrument(registry=reg, target="app.web", level="info", ret=True)
    def echo() -> Generator[object, object, str]:
        got = yield "first"
        try:
            got = yield got
        except KeyError:
            got = yield "caught"
        return f"last {got}"

    @instrument(registry=reg, target="app.web", level="info")
    async def aecho() -> AsyncIterator[object]:
        got = yield "first"
        yield got

    assert query() == query.__qualname__
    assert handler(1) is None  # disabled: no span, the function runs
    assert list(rows()) == [1, 2]
    gen = echo()  # send, throw and the return value still pass through
    assert next(gen) == "first"
    assert gen.send("x") == "x"
    assert gen.throw(KeyError("k")) == "caught"
    with pytest.raises(StopIteration) as stop:
        gen.send("y")
    assert stop.value.value == "last y"

    async def drive() -> list[object]:
        agen: Any = aecho()
        return [await agen.asend(None), await agen.asend("sent"), await agen.aclose()]

    assert asyncio.run(drive()) == ["first", "sent", None]
    assert asyncio.run(fetch()) == 5
    with pytest.raises(AppError):
        fail()
    assert spans.names() == [query.__qualname__]
    assert len(reg) == 0


def test_instrument_span_directive_enables_the_subtree(spans: Spans) -> None:
    reg = Registry(filter="warn,[request]=trace", layers=[spans])

    @instrument(registry=reg, target="app.db", level="trace")
    def query() -> None:
        pass

    @instrument(registry=reg, name="request", target="app.web")
    def request() -> None:
        query()

    query()  # outside any request: filtered out
    request()
    request_span = spans.one("request")
    assert spans.one(query.__qualname__)["parent_id"] == request_span["id"]
    assert len(reg) == 0


def test_instrument_field_directive_matches_arguments(spans: Spans) -> None:
    reg = Registry(filter="warn,[{user=42}]=debug", layers=[spans])

    @instrument(registry=reg, name="handle", target="app")
    def handle(user: int) -> None:
        pass

    handle(1)
    handle(42)
    assert [s["fields"] for s in spans.closed] == [{"user": 42}]


def test_instrument_callsite_is_made_once(reg: Registry) -> None:
    made: list[str] = []
    real = Registry.callsite

    class Counting:
        """A registry stand-in counting callsite() calls."""

        def callsite(self, name: str, **kwargs: Any) -> Any:
            made.append(name)
            return real(reg, name, **kwargs)

    @instrument(registry=Counting(), name="hot")  # type: ignore[call-overload,untyped-decorator]
    def hot(x: int) -> int:
        return x

    assert made == []  # made lazily, at the first call
    for i in range(100):
        assert hot(i) == i
    assert made == ["hot"]


def test_instrument_threads_stress(reg: Registry, spans: Spans) -> None:
    barrier = threading.Barrier(4)

    @instrument(registry=reg)
    def leaf(i: int) -> int:
        return i

    @instrument(registry=reg)
    def work(n: int) -> int:
        barrier.wait()
        return sum(leaf(i) for i in range(n))

    threads = [threading.Thread(target=work, args=(200,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(spans.closed) == 4 * 201
    works = {s["id"] for s in spans.closed if s["name"] == work.__qualname__}
    assert len(works) <= 4
    assert all(s["parent_id"] is not None for s in spans.closed if s["name"] == leaf.__qualname__)


def test_instrument_partial_and_callable_objects(reg: Registry, spans: Spans) -> None:
    def add(a: int, b: int) -> int:
        return a + b

    class Doubler:
        def __call__(self, x: int) -> int:
            return 2 * x

    add_one = instrument(functools.partial(add, 1), registry=reg)
    double = instrument(Doubler(), registry=reg)
    assert add_one(2) == 3
    assert double(4) == 8
    assert [(s["name"], s["target"], s["fields"]) for s in spans.closed] == [
        (add.__qualname__, __name__, {"b": 2}),  # named after the function it wraps
        (Doubler.__qualname__, __name__, {"x": 4}),  # after its class
    ]
