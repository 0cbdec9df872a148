"""Exceptions leaving a span: recorded with OpenTelemetry's field names
(`error`, `exception.type`, `exception.message`) and always propagated
unchanged; `GeneratorExit`, `KeyboardInterrupt`, `SystemExit` and
`asyncio.CancelledError` are ways of stopping, not errors, and are not
recorded.

README "Call sites, timings, exceptions"; issue 4 item 3.
"""

from __future__ import annotations

import asyncio
import gc
import json
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

import pykregistry
from pykregistry import Registry

ERROR_FIELDS = {"error", "exception.type", "exception.message"}


class Closed:
    """A layer copying fields at close and the values of every record."""

    def __init__(self) -> None:
        self.fields: dict[str, dict[str, Any]] = {}
        self.records: list[tuple[str, dict[str, Any]]] = []

    def on_record(self, span: pykregistry.SpanRef, values: dict[str, Any]) -> None:
        self.records.append((span.name, dict(values)))

    def on_close(self, span: pykregistry.SpanRef) -> None:
        self.fields[span.name] = span.fields


@pytest.fixture
def layer() -> Closed:
    return Closed()


@pytest.fixture
def ereg(layer: Closed) -> Iterator[Registry]:
    registry = Registry(layers=[layer])
    yield registry
    gc.collect()
    assert len(registry) == 0, f"spans leaked: {registry!r}"


class AppError(Exception):
    pass


class Outer:
    class NestedError(Exception):
        pass


class Stop(BaseException):
    """A BaseException that is not an Exception."""


def raise_value_error(message: str) -> None:
    raise ValueError(message)


# --- what is recorded -------------------------------------------------------------


def test_value_error_is_recorded(ereg: Registry, layer: Closed) -> None:
    with pytest.raises(ValueError, match="card declined"), ereg.span("charge", amount=42):
        raise ValueError("card declined")
    assert layer.fields["charge"] == {
        "amount": 42,
        "error": True,
        "exception.type": "ValueError",
        "exception.message": "card declined",
    }


def test_recording_notifies_on_record(ereg: Registry, layer: Closed) -> None:
    with pytest.raises(KeyError), ereg.span("s"):
        raise KeyError("k")
    assert layer.records == [
        ("s", {"error": True, "exception.type": "KeyError", "exception.message": "'k'"})
    ]


@pytest.mark.parametrize(
    ("exc", "type_name"),
    [
        (ValueError("v"), "ValueError"),
        (TypeError("t"), "TypeError"),
        (ZeroDivisionError("z"), "ZeroDivisionError"),
        (RuntimeError(), "RuntimeError"),
        (OSError(2, "no such file"), "FileNotFoundError"),
        (StopIteration(), "StopIteration"),
    ],
)
def test_builtin_exception_type_is_its_bare_name(
    ereg: Registry, layer: Closed, exc: Exception, type_name: str
) -> None:
    with pytest.raises(type(exc)), ereg.span("s"):
        raise exc
    fields = layer.fields["s"]
    assert fields["error"] is True
    assert fields["exception.type"] == type_name
    assert fields["exception.message"] == str(exc)


def test_non_builtin_exception_type_is_module_and_qualname(ereg: Registry, layer: Closed) -> None:
    with pytest.raises(AppError), ereg.span("app"):
        raise AppError("bad")
    with pytest.raises(Outer.NestedError), ereg.span("nested"):
        raise Outer.NestedError("deep")
    with pytest.raises(json.JSONDecodeError), ereg.span("json"):
        json.loads("{")
    assert layer.fields["app"]["exception.type"] == f"{__name__}.AppError"
    assert layer.fields["nested"]["exception.type"] == f"{__name__}.Outer.NestedError"
    assert layer.fields["json"]["exception.type"] == "json.decoder.JSONDecodeError"
    assert layer.fields["app"]["exception.message"] == "bad"


def test_local_class_qualname_includes_locals(ereg: Registry, layer: Closed) -> None:
    class LocalError(Exception):
        pass

    with pytest.raises(LocalError), ereg.span("s"):
        raise LocalError("x")
    assert layer.fields["s"]["exception.type"] == f"{__name__}.{LocalError.__qualname__}"
    assert "<locals>" in layer.fields["s"]["exception.type"]


def test_message_is_str_of_the_exception(ereg: Registry, layer: Closed) -> None:
    with pytest.raises(ValueError, match=r"^$"), ereg.span("empty"):
        raise ValueError
    with pytest.raises(ValueError, match="'a', 1"), ereg.span("args"):
        raise ValueError("a", 1)
    assert layer.fields["empty"]["exception.message"] == ""
    assert layer.fields["args"]["exception.message"] == str(ValueError("a", 1))


def test_every_span_the_exception_leaves_records_it(ereg: Registry, layer: Closed) -> None:
    with (
        pytest.raises(ValueError, match="up"),
        ereg.span("outer"),
        ereg.span("middle"),
        ereg.span("inner"),
    ):
        raise ValueError("up")
    for name in ("outer", "middle", "inner"):
        assert layer.fields[name]["exception.message"] == "up", name


def test_exception_caught_inside_the_block_is_not_recorded(ereg: Registry, layer: Closed) -> None:
    with ereg.span("outer"), pytest.raises(ValueError, match="caught"), ereg.span("inner"):
        raise ValueError("caught")
    assert layer.fields["inner"]["error"] is True
    assert ERROR_FIELDS.isdisjoint(layer.fields["outer"])


def test_clean_exit_records_nothing(ereg: Registry, layer: Closed) -> None:
    with ereg.span("ok", k=1):
        pass
    assert layer.fields["ok"] == {"k": 1}
    assert layer.records == []


def test_recorded_fields_replace_user_fields_of_the_same_name(
    ereg: Registry, layer: Closed
) -> None:
    with pytest.raises(ValueError, match="x"), ereg.span("s", error=False):
        raise ValueError("x")
    assert layer.fields["s"]["error"] is True


# --- propagation ------------------------------------------------------------------


def test_exception_propagates_unchanged(ereg: Registry) -> None:
    err = ValueError("same")
    with pytest.raises(ValueError, match="same") as info, ereg.span("s"):
        raise err
    assert info.value is err
    assert err.args == ("same",)
    assert err.__context__ is None
    assert err.__cause__ is None


def test_traceback_is_intact(ereg: Registry) -> None:
    with pytest.raises(ValueError, match="deep") as info, ereg.span("s"):
        raise_value_error("deep")
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "raise_value_error"
    assert "test_traceback_is_intact" in frames


def test_chained_exception_keeps_its_cause(ereg: Registry, layer: Closed) -> None:
    cause = KeyError("root cause")

    def wrap() -> None:
        try:
            raise cause
        except KeyError as e:
            raise RuntimeError("wrapped") from e

    with pytest.raises(RuntimeError, match="wrapped") as info, ereg.span("s"):
        wrap()
    assert info.value.__cause__ is cause
    assert layer.fields["s"]["exception.type"] == "RuntimeError"


def test_exception_whose_str_raises_still_propagates(ereg: Registry, layer: Closed) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    err = Unprintable()
    with pytest.raises(Unprintable) as info, ereg.span("s"):
        raise err
    assert info.value is err
    assert info.value.__context__ is None
    fields = layer.fields["s"]
    assert fields["error"] is True
    assert fields["exception.type"].endswith("Unprintable")
    assert isinstance(fields["exception.message"], str)


def test_raising_layer_does_not_replace_the_exception(ereg: Registry, unraisable: Any) -> None:
    class Broken:
        def on_record(self, span: pykregistry.SpanRef, values: dict[str, Any]) -> None:
            raise RuntimeError("layer bug")

    ereg.add_layer(Broken())
    err = ValueError("original")
    with pytest.raises(ValueError, match="original") as info, ereg.span("s"):
        raise err
    assert info.value is err
    assert ereg.layer_errors == 1
    assert [type(e) for e in unraisable.exceptions] == [RuntimeError]


def test_span_is_exited_and_released_after_an_exception(ereg: Registry) -> None:
    with pytest.raises(ValueError, match="x"), ereg.span("s") as span:
        raise ValueError("x")
    assert span.closed
    assert ereg.current_span() is None
    assert ereg.get(span.id) is None


# --- not recorded: ways of stopping ---------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [GeneratorExit(), KeyboardInterrupt(), SystemExit(3), asyncio.CancelledError(), Stop()],
    ids=lambda e: type(e).__name__,
)
def test_base_exceptions_are_not_recorded(
    ereg: Registry, layer: Closed, exc: BaseException
) -> None:
    with pytest.raises(type(exc)) as info, ereg.span("s", k=1) as span:
        raise exc
    assert info.value is exc
    assert layer.fields["s"] == {"k": 1}
    assert layer.records == []
    assert span.closed


def test_generator_closed_inside_a_span_is_not_an_error(ereg: Registry, layer: Closed) -> None:
    def items() -> Iterator[int]:
        with ereg.span("gen"):
            yield 1
            yield 2

    gen = items()
    assert next(gen) == 1
    gen.close()  # GeneratorExit at the yield, inside the span
    assert layer.fields["gen"] == {}
    assert layer.records == []


def test_cancelled_task_is_not_an_error(ereg: Registry, layer: Closed) -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def work() -> None:
            with ereg.span("work"):
                started.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(work())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert layer.fields["work"] == {}
    assert layer.records == []


def test_exception_in_a_coroutine_is_recorded(ereg: Registry, layer: Closed) -> None:
    async def work() -> None:
        with ereg.span("work"):
            await asyncio.sleep(0)
            raise AppError("async")

    with pytest.raises(AppError, match="async"):
        asyncio.run(work())
    assert layer.fields["work"]["exception.message"] == "async"


# --- through entered() ---------------------------------------------------------


def test_exception_leaving_entered_is_recorded(ereg: Registry, layer: Closed) -> None:
    span = ereg.span("s")
    err = ValueError("via entered")
    with pytest.raises(ValueError, match="via entered") as info, span.entered():
        raise err
    assert info.value is err
    assert not span.closed  # entered() does not release the handle
    assert span.ref.fields == {
        "error": True,
        "exception.type": "ValueError",
        "exception.message": "via entered",
    }
    assert ereg.current_span() is None
    span.close()


def test_entered_does_not_record_base_exceptions(ereg: Registry) -> None:
    span = ereg.span("s")
    try:
        for exc in (KeyboardInterrupt(), SystemExit(0), GeneratorExit()):
            with pytest.raises(type(exc)), span.entered():
                raise exc
        assert span.ref.fields == {}
    finally:
        span.close()


def test_later_exception_overwrites_the_earlier_record(ereg: Registry) -> None:
    span = ereg.span("s")
    try:
        with pytest.raises(ValueError, match="first"), span.entered():
            raise ValueError("first")
        with pytest.raises(TypeError), span.entered():
            raise TypeError("second")
        assert span.ref.fields["exception.type"] == "TypeError"
        assert span.ref.fields["exception.message"] == "second"
    finally:
        span.close()


def test_exception_in_callsite_span_is_recorded(ereg: Registry, layer: Closed) -> None:
    cs = ereg.callsite("site", fields=("n",))
    with pytest.raises(AppError), cs.span(n=1):
        raise AppError("from callsite")
    assert layer.fields["site"]["n"] == 1
    assert layer.fields["site"]["exception.message"] == "from callsite"
