"""R12 errors: no input crashes the interpreter or leaves the registry
inconsistent; errors are ``RegistryError`` subclasses that also derive from
the matching builtin; wrong types are ``TypeError``, out-of-range ints
``ValueError``; running out of capacity is a clear error.

Every rejected call is checked to change nothing: live spans, the current
span, reference counts, and what layers saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pykregistry
import pykregistry.exceptions
from pykregistry import (
    CapacityError,
    InvalidSpanIdError,
    Level,
    Registry,
    RegistryError,
    SpanClosedError,
    SpanNotFoundError,
)

WRONG_TYPE_IDS = ["1", 1.0, None, True, False, b"1", [1], object(), 1j]
OUT_OF_RANGE_IDS = [0, -1, -(2**64), 2**64, 2**64 + 5, 2**200]


class Snapshot:
    """The observable state a rejected call must leave as it was."""

    def __init__(self, reg: Registry, layer: Any, *ids: int) -> None:
        self.reg, self.layer, self.ids = reg, layer, ids
        self.before = self.take()

    def take(self) -> tuple[Any, ...]:
        return (
            len(self.reg),
            self.reg.current_span(),
            tuple(self.reg.ref_count(i) for i in self.ids),
            tuple(self.reg.get(i).fields.items() for i in self.ids if self.reg.get(i)),
            len(self.layer.calls),
            self.reg.layer_errors,
        )

    def unchanged(self) -> bool:
        return self.take() == self.before


@pytest.fixture
def scene(reg: Registry, recorder: Any) -> Iterator[tuple[Registry, Snapshot, int, int]]:
    """A registry with a layer, a parent and an entered child, snapshotted."""
    reg.add_layer(recorder)
    parent = reg.new_span("parent", parent=None, fields={"p": 1})
    child = reg.new_span("child", parent=parent, fields={"c": 2})
    reg.enter(child)
    yield reg, Snapshot(reg, recorder, parent, child), parent, child
    reg.exit(child)
    reg.try_close(child)
    reg.try_close(parent)


def id_calls(reg: Registry, good: int) -> dict[str, Callable[[Any], Any]]:
    """Every call that takes a span ID and acts on it, with the ID under test
    in one argument and a valid ID (``good``) in any other."""
    return {
        "clone_span": reg.clone_span,
        "try_close": reg.try_close,
        "enter": reg.enter,
        "exit": reg.exit,
        "record": lambda i: reg.record(i, k=1),
        "follows_from(id, _)": lambda i: reg.follows_from(i, good),
        "follows_from(_, id)": lambda i: reg.follows_from(good, i),
        "new_span(parent=)": lambda i: reg.new_span("x", parent=i),
        "span(parent=)": lambda i: reg.span("x", parent=i),
        "event(parent=)": lambda i: reg.event("x", parent=i),
    }


LOOKUPS: dict[str, Callable[[Registry, Any], Any]] = {
    "get": lambda reg, i: reg.get(i),
    "ref_count": lambda reg, i: reg.ref_count(i),
    "in": lambda reg, i: i in reg,
}

ID_CALL_NAMES = list(id_calls(Registry(), 1))


# === the exception classes ===


def test_r12_exception_hierarchy() -> None:
    assert issubclass(RegistryError, Exception)
    assert issubclass(SpanNotFoundError, RegistryError)
    assert issubclass(SpanNotFoundError, KeyError)
    assert issubclass(SpanClosedError, SpanNotFoundError)
    assert issubclass(SpanClosedError, KeyError)
    assert issubclass(InvalidSpanIdError, RegistryError)
    assert issubclass(InvalidSpanIdError, ValueError)
    assert issubclass(CapacityError, RegistryError)
    assert issubclass(CapacityError, RuntimeError)
    for name in (
        "RegistryError",
        "SpanNotFoundError",
        "SpanClosedError",
        "InvalidSpanIdError",
        "CapacityError",
    ):
        assert getattr(pykregistry, name) is getattr(pykregistry.exceptions, name)
        assert name in pykregistry.__all__


def test_r12_not_found_message_is_a_sentence(reg: Registry) -> None:
    sid = reg.new_span("a")
    reg.try_close(sid)
    with pytest.raises(SpanNotFoundError) as info:
        reg.try_close(sid)
    # Unlike KeyError's default str, not a quoted repr; and it names the ID.
    text = str(info.value)
    assert str(sid) in text
    assert not text.startswith(("'", '"'))


# === wrong types: TypeError ===


@pytest.mark.parametrize(
    ("call", "bad"),
    [
        pytest.param(call, bad, id=f"{call}-{bad!r}")
        for call in ID_CALL_NAMES
        for bad in WRONG_TYPE_IDS
        # `parent=None` asks for a root.
        if not (bad is None and "parent=" in call)
    ],
)
def test_r12_id_of_wrong_type_is_type_error(scene: Any, call: str, bad: Any) -> None:
    reg, snap, parent, _ = scene
    with pytest.raises(TypeError):
        id_calls(reg, parent)[call](bad)
    assert snap.unchanged()


@pytest.mark.parametrize("lookup", list(LOOKUPS))
@pytest.mark.parametrize("bad", WRONG_TYPE_IDS, ids=repr)
def test_r12_lookup_with_wrong_type_is_type_error(scene: Any, lookup: str, bad: Any) -> None:
    reg, snap, _, _ = scene
    with pytest.raises(TypeError):
        LOOKUPS[lookup](reg, bad)
    assert snap.unchanged()


WRONG_TYPE_ARGUMENTS: dict[str, Callable[[Registry], Any]] = {
    "new_span(int)": lambda reg: reg.new_span(1),
    "new_span(None)": lambda reg: reg.new_span(None),
    "new_span(bytes)": lambda reg: reg.new_span(b"name"),
    "span(int)": lambda reg: reg.span(1),
    "span(list)": lambda reg: reg.span(["x"]),
    "event(int)": lambda reg: reg.event(1),
    "event(None)": lambda reg: reg.event(None),
    "new_span(target=int)": lambda reg: reg.new_span("x", target=1),
    "new_span(target=bytes)": lambda reg: reg.new_span("x", target=b"t"),
    "span(target=float)": lambda reg: reg.span("x", target=1.5),
    "event(target=object)": lambda reg: reg.event("x", target=object()),
    "new_span(fields=list)": lambda reg: reg.new_span("x", fields=[("k", 1)]),
    "new_span(fields=str)": lambda reg: reg.new_span("x", fields="k=1"),
    "new_span(fields={int: _})": lambda reg: reg.new_span("x", fields={1: "v"}),
    "new_span(fields={bytes: _})": lambda reg: reg.new_span("x", fields={b"k": "v"}),
    "new_span(unknown keyword)": lambda reg: reg.new_span("x", k=1),
    "new_span()": lambda reg: reg.new_span(),
    "new_span(name, extra)": lambda reg: reg.new_span("x", "y"),
    "record()": lambda reg: reg.record(),
    "span(name=...)": lambda reg: reg.span(name="x"),
}


@pytest.mark.parametrize("call", list(WRONG_TYPE_ARGUMENTS))
def test_r12_names_targets_fields_of_wrong_type_are_type_error(scene: Any, call: str) -> None:
    reg, snap, _, _ = scene
    with pytest.raises(TypeError):
        WRONG_TYPE_ARGUMENTS[call](reg)
    assert snap.unchanged()


@pytest.mark.parametrize("bad", ["x", 1.5, True, object(), b"1", [1]], ids=repr)
def test_r12_parent_of_wrong_type_is_type_error(scene: Any, bad: Any) -> None:
    reg, snap, _, _ = scene
    for call in (
        lambda: reg.new_span("x", parent=bad),
        lambda: reg.span("x", parent=bad),
        lambda: reg.event("x", parent=bad),
    ):
        with pytest.raises(TypeError):
            call()
    assert snap.unchanged()


@pytest.mark.parametrize("bad", [1.5, b"info", object(), True, [3], Level], ids=repr)
def test_r12_level_of_wrong_type_is_type_error(scene: Any, bad: Any) -> None:
    reg, snap, _, _ = scene
    for call in (
        lambda: reg.new_span("x", level=bad),
        lambda: reg.span("x", level=bad),
        lambda: reg.event("x", level=bad),
    ):
        with pytest.raises(TypeError):
            call()
    assert snap.unchanged()


def test_r12_layer_with_non_callable_hook_is_type_error(reg: Registry) -> None:
    class Broken:
        on_close = 5

    with pytest.raises(TypeError):
        reg.add_layer(Broken())
    with pytest.raises(TypeError):
        Registry(layers=[Broken()])
    with pytest.raises(TypeError):
        Registry(layers=5)
    assert reg.layers == []


# === out-of-range ints: ValueError ===


@pytest.mark.parametrize("call", ID_CALL_NAMES)
@pytest.mark.parametrize("bad", OUT_OF_RANGE_IDS)
def test_r12_out_of_range_id_is_invalid_span_id_error(scene: Any, call: str, bad: int) -> None:
    reg, snap, parent, _ = scene
    with pytest.raises(InvalidSpanIdError) as info:
        id_calls(reg, parent)[call](bad)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, RegistryError)
    assert snap.unchanged()


@pytest.mark.parametrize("bad", OUT_OF_RANGE_IDS)
def test_r12_out_of_range_lookups_answer_not_live(scene: Any, bad: int) -> None:
    reg, snap, _, _ = scene
    assert reg.get(bad) is None
    assert reg.ref_count(bad) == 0
    assert bad not in reg
    assert snap.unchanged()


@pytest.mark.parametrize("bad", [0, 6, -1, 255, 256, 2**70, -(2**70)])
def test_r12_level_int_out_of_range_is_value_error(scene: Any, bad: int) -> None:
    reg, snap, _, _ = scene
    for call in (
        lambda: reg.new_span("x", level=bad),
        lambda: reg.span("x", level=bad),
        lambda: reg.event("x", level=bad),
    ):
        with pytest.raises(ValueError, match="level"):
            call()
    assert snap.unchanged()


@pytest.mark.parametrize("bad", ["verbose", "", " info", "info ", "inf", "crit", "\u0131nfo"])
def test_r12_unknown_level_name_is_value_error(scene: Any, bad: str) -> None:
    reg, snap, _, _ = scene
    for call in (
        lambda: reg.new_span("x", level=bad),
        lambda: reg.span("x", level=bad),
        lambda: reg.event("x", level=bad),
    ):
        with pytest.raises(ValueError, match="level"):
            call()
    assert snap.unchanged()


# === IDs that are not live: SpanNotFoundError ===


@pytest.mark.parametrize(
    "call", ["clone_span", "try_close", "enter", "record", "follows_from(id, _)"]
)
def test_r12_closed_id_is_span_not_found_error(scene: Any, call: str) -> None:
    reg, _, parent, child = scene
    gone = reg.new_span("gone", parent=None)
    reg.try_close(gone)
    snap = Snapshot(reg, reg.layers[0], parent, child)
    with pytest.raises(SpanNotFoundError) as info:
        id_calls(reg, parent)[call](gone)
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, RegistryError)
    assert snap.unchanged()


# === handles and views misused ===


def test_r12_closed_handle_raises_span_closed_error(reg: Registry) -> None:
    s = reg.span("s")
    other = reg.span("other")
    s.close()
    before = (len(reg), reg.current_span(), reg.ref_count(other.id))
    for misuse in (
        lambda: s.record(k=1),
        s.clone,
        s.entered,
        s.__enter__,
        lambda: s.ref,
        lambda: s.follows_from(other),
    ):
        with pytest.raises(SpanClosedError):
            misuse()
    with pytest.raises(SpanClosedError), s:
        pass
    assert (len(reg), reg.current_span(), reg.ref_count(other.id)) == before
    assert s.id > 0
    assert s.closed
    other.close()


def test_r12_handle_whose_span_was_closed_elsewhere(reg: Registry) -> None:
    s = reg.span("s")
    # Misuse: the integer API releases the handle's reference behind its back.
    assert reg.try_close(s.id) is True
    with pytest.raises(SpanNotFoundError):
        s.record(k=1)
    with pytest.raises(SpanNotFoundError):
        s.clone()
    with pytest.raises(SpanNotFoundError), s:
        pass
    assert reg.current_span() is None
    # Releasing the handle now must not touch the span that reuses the slot.
    reused = reg.new_span("reused")
    s.close()
    assert reg.ref_count(reused) == 1
    reg.try_close(reused)


# === no panic, whatever comes in ===

WEIRD = [
    None,
    True,
    0,
    -1,
    1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**64),
    2**1000,
    1.0,
    float("nan"),
    "",
    "x",
    "\x00",
    "\ud800",
    b"x",
    [],
    {},
    (1,),
    object(),
    Level.INFO,
    pykregistry.CURRENT,
    type,
]


def every_call(reg: Registry, value: Any, live: int) -> list[Callable[[], Any]]:
    return [
        lambda: reg.new_span(value),
        lambda: reg.new_span("n", parent=value),
        lambda: reg.new_span("n", level=value),
        lambda: reg.new_span("n", target=value),
        lambda: reg.new_span("n", fields={"k": value}),
        lambda: reg.new_span("n", fields=value),
        lambda: reg.span(value),
        lambda: reg.span("n", parent=value, k=value),
        lambda: reg.clone_span(value),
        lambda: reg.try_close(value),
        lambda: reg.enter(value),
        lambda: reg.exit(value),
        lambda: reg.get(value),
        lambda: reg.ref_count(value),
        lambda: value in reg,
        lambda: reg.record(value, k=1),
        lambda: reg.record(live, k=value),
        lambda: reg.follows_from(value, live),
        lambda: reg.follows_from(live, value),
        lambda: reg.event(value),
        lambda: reg.event("m", parent=value, level=value),
        lambda: reg.event("m", k=value),
        lambda: reg.add_layer(value),
    ]


def outcome(call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """The call's result, or what it raised (anything, even a BaseException)."""
    try:
        return call(), None
    except BaseException as e:  # a PanicException derives from BaseException only
        return None, e


@pytest.mark.parametrize("value", WEIRD, ids=repr)
def test_r12_no_input_panics_or_corrupts(reg: Registry, value: Any) -> None:
    anchor = reg.new_span("anchor", parent=None)
    allowed = (TypeError, ValueError, KeyError, RegistryError)
    for n, call in enumerate(every_call(reg, value, anchor)):
        live_before = len(reg)
        result, error = outcome(call)
        if error is not None:
            assert isinstance(error, Exception), f"call #{n} raised {error!r}"
            assert type(error).__name__ != "PanicException", f"call #{n} panicked: {error}"
            assert isinstance(error, allowed), f"call #{n} raised {error!r}"
            assert len(reg) == live_before
        # Whatever was created by accident is undone, so the registry stays
        # clean for the next call.
        elif n < 6 and isinstance(result, int):
            reg.try_close(result)
        elif isinstance(result, pykregistry.Span):
            result.close()
    while reg.current_span() is not None:
        reg.exit(reg.current_span())
    assert reg.ref_count(anchor) == 1
    assert reg.try_close(anchor) is True


# === capacity ===

CAPACITY_SCRIPT = textwrap.dedent(
    """
    import json, threading, pykregistry

    threading.stack_size(64 * 1024)
    reg = pykregistry.Registry()
    release = threading.Event()
    outcomes = []

    def hold(done):
        try:
            s = reg.new_span("t", parent=None)
        except pykregistry.CapacityError:
            outcomes.append("capacity")
            done.set()
            return
        except BaseException as e:
            outcomes.append(f"other: {type(e).__module__}.{type(e).__qualname__}: {e}")
            done.set()
            return
        outcomes.append("ok")
        done.set()
        release.wait()
        reg.try_close(s)

    # Keep starting threads that each hold a span, until the registry says
    # it is out of capacity a few times (or many threads are running).
    threads = []
    refused = 0
    while len(threads) < 6000 and refused < 8:
        done = threading.Event()
        t = threading.Thread(target=hold, args=(done,))
        t.start()
        threads.append(t)
        done.wait()
        refused += outcomes[-1] == "capacity"
    release.set()
    for t in threads:
        t.join()

    def attempt():
        try:
            reg.try_close(reg.new_span("again", parent=None))
            return "ok"
        except BaseException as e:
            return f"{type(e).__qualname__}: {e}"

    after = {}
    for n in range(3):
        t = threading.Thread(target=lambda n=n: after.__setitem__(f"new_thread_{n}", attempt()))
        t.start()
        t.join()
    after["main_thread"] = attempt()
    print(json.dumps({
        "kinds": sorted(set(outcomes)),
        "len": len(reg),
        "after": after,
    }))
    """
)


@pytest.mark.slow
def test_r12_running_out_of_threads_is_a_clear_error_and_recovers() -> None:
    # In a subprocess: an abort must fail this test, not kill the suite.
    proc = subprocess.run(
        [sys.executable, "-c", CAPACITY_SCRIPT],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert set(result["kinds"]) <= {"ok", "capacity"}, result["kinds"]
    assert result["len"] == 0
    # Once the threads have ended, capacity is back: new threads and the main
    # thread (which never used the registry before) can create spans.
    assert result["after"] == {
        "new_thread_0": "ok",
        "new_thread_1": "ok",
        "new_thread_2": "ok",
        "main_thread": "ok",
    }
