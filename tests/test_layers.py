"""Layers (SPEC section 5): Python objects with optional ``on_new_span``,
``on_record``, ``on_follows_from``, ``on_event``, ``on_enter``, ``on_exit`` and
``on_close``. A layer that raises never breaks the caller nor the registry,
and its failure is visible: ``Registry.layer_errors`` counts it and the
exception goes to ``sys.unraisablehook``.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

import pykregistry
from pykregistry import Event, Level, Registry, SpanRef

HOOKS = [
    "on_new_span",
    "on_record",
    "on_follows_from",
    "on_event",
    "on_enter",
    "on_exit",
    "on_close",
]


def lifecycle(reg: Registry) -> tuple[int, int]:
    """One of each step; returns the IDs of the main span and the other."""
    other = reg.span("other", parent=None)
    with reg.span("s", target="app", level="debug", parent=None, k=1) as s:
        s.record(k=2, extra="x")
        s.follows_from(other)
        reg.event("hello", level="warn", target="app.events", n=3)
    other_id = other.id
    other.close()
    return s.id, other_id


# === adding layers ===


def test_layer_given_to_constructor_and_added_later(Recorder: Any) -> None:
    first, second, third = Recorder(), Recorder(), Recorder()
    reg = Registry(layers=[first, second])
    assert reg.layers == [first, second]
    reg.add_layer(third)
    assert reg.layers == [first, second, third]
    assert reg.layers[0] is first
    lifecycle(reg)
    assert first.calls == second.calls == third.calls
    assert len(first.calls) > 0
    assert len(reg) == 0


def test_layer_constructor_accepts_any_iterable(Recorder: Any) -> None:
    layers = [Recorder(), Recorder()]
    reg = Registry(layers=iter(layers))
    assert reg.layers == layers
    assert Registry(layers=()).layers == []
    assert Registry().layers == []


def test_layer_added_later_sees_only_later_steps(reg: Registry, recorder: Any) -> None:
    s = reg.span("before")
    reg.add_layer(recorder)
    s.record(k=1)
    s.close()
    assert recorder.hooks() == [("record", s.id), ("close", s.id)]


def test_layer_with_some_or_no_hooks_is_fine(reg: Registry) -> None:
    closed: list[str] = []

    class OnlyClose:
        def on_close(self, span: SpanRef) -> None:
            closed.append(span.name)

    reg.add_layer(object())
    reg.add_layer(OnlyClose())
    lifecycle(reg)
    assert sorted(closed) == ["other", "s"]


def test_layer_hooks_may_be_plain_attributes_or_functions(reg: Registry) -> None:
    seen: list[int] = []

    class Layer:
        pass

    layer = Layer()
    layer.on_new_span = lambda span: seen.append(span.id)  # type: ignore[attr-defined]
    reg.add_layer(layer)
    with reg.span("s") as s:
        pass
    assert seen == [s.id]


# === what each hook receives ===


def test_layer_each_hook_called_with_documented_arguments(reg: Registry, recorder: Any) -> None:
    types: list[tuple[str, tuple[type, ...]]] = []

    class Types:
        def __getattr__(self, name: str) -> Any:
            if name not in HOOKS:
                raise AttributeError(name)
            return lambda *args: types.append((name, tuple(type(a) for a in args)))

    reg.add_layer(recorder)
    reg.add_layer(Types())
    sid, other = lifecycle(reg)
    # `other`'s own steps, and then `s`'s.
    assert recorder.hooks() == [
        ("new_span", other),
        ("new_span", sid),
        ("enter", sid),
        ("record", sid),
        ("follows_from", sid),
        ("event", None),
        ("exit", sid),
        ("close", sid),
        ("close", other),
    ]
    new_span = recorder.calls[1][1]
    assert new_span == {
        "id": sid,
        "name": "s",
        "target": "app",
        "level": Level.DEBUG,
        "fields": {"k": 1},
        "parent_id": None,
    }
    _, span, values = recorder.calls[3]
    assert values == {"k": 2, "extra": "x"}
    assert span["fields"] == {"k": 2, "extra": "x"}
    assert recorder.calls[4][2] == other
    assert recorder.calls[5][1] == {
        "message": "hello",
        "level": Level.WARN,
        "target": "app.events",
        "parent_id": sid,
        "fields": {"n": 3},
    }
    # The views at exit and close still show the span's data.
    assert recorder.calls[6][1]["fields"] == {"k": 2, "extra": "x"}
    assert recorder.calls[7][1]["name"] == "s"
    assert dict(types) == {
        "on_new_span": (SpanRef,),
        "on_enter": (SpanRef,),
        "on_record": (SpanRef, dict),
        "on_follows_from": (SpanRef, int),
        "on_event": (Event,),
        "on_exit": (SpanRef,),
        "on_close": (SpanRef,),
    }


def test_layer_sees_int_api_steps(reg: Registry, recorder: Any) -> None:
    reg.add_layer(recorder)
    a = reg.new_span("a", parent=None, fields={"x": 1})
    reg.enter(a)
    reg.enter(a)  # every enter is a step, duplicates too
    reg.record(a, x=2)
    reg.exit(a)
    reg.exit(a)
    reg.clone_span(a)
    reg.try_close(a)
    assert recorder.hooks() == [
        ("new_span", a),
        ("enter", a),
        ("enter", a),
        ("record", a),
        ("exit", a),
        ("exit", a),
    ]
    assert reg.try_close(a) is True
    assert recorder.hooks()[-1] == ("close", a)


def test_layer_order_is_the_order_added(reg: Registry) -> None:
    log: list[tuple[str, str]] = []

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        def __getattr__(self, hook: str) -> Any:
            if hook not in HOOKS:
                raise AttributeError(hook)
            return lambda *args: log.append((hook, self.name))

    for name in ("one", "two", "three"):
        reg.add_layer(Named(name))
    lifecycle(reg)
    assert len(log) == 9 * 3
    for n in range(0, len(log), 3):
        assert [name for _, name in log[n : n + 3]] == ["one", "two", "three"]
        assert len({hook for hook, _ in log[n : n + 3]}) == 1


def test_layer_values_and_fields_are_copies(reg: Registry) -> None:
    class Mutates:
        def on_new_span(self, span: SpanRef) -> None:
            span.fields["injected"] = True

        def on_record(self, span: SpanRef, values: dict[str, Any]) -> None:
            values["injected"] = True

    reg.add_layer(Mutates())
    with reg.span("s", k=1) as s:
        s.record(k=2)
        assert reg.get(s.id).fields == {"k": 2}


def test_layer_on_close_for_handle_released_by_gc(reg: Registry, recorder: Any) -> None:
    reg.add_layer(recorder)
    s = reg.span("dropped")
    sid = s.id
    del s
    gc.collect()
    assert recorder.hooks() == [("new_span", sid), ("close", sid)]


def test_layer_on_close_when_thread_ends(reg: Registry, recorder: Any) -> None:
    reg.add_layer(recorder)
    made: list[int] = []

    def leaves_entered() -> None:
        s = reg.span("t")
        s.__enter__()
        made.append(s.id)
        s.close()

    t = threading.Thread(target=leaves_entered)
    t.start()
    t.join()
    assert recorder.hooks()[-1] == ("close", made[0])
    assert recorder.of("close")[0][1]["name"] == "t"


def test_layer_on_exit_precedes_on_close_when_exit_releases_last_reference(
    reg: Registry, recorder: Any, unraisable: Any
) -> None:
    # A layer sees a span's steps in the order they happen: the exit, then
    # the close it causes; and it can read the span it is told about.
    reg.add_layer(recorder)
    a = reg.new_span("a", parent=None)
    reg.enter(a)
    reg.try_close(a)  # only the stack entry holds `a` now
    reg.exit(a)
    assert reg.get(a) is None
    assert recorder.hooks() == [("new_span", a), ("enter", a), ("exit", a), ("close", a)]
    assert recorder.of("exit")[0][1]["name"] == "a"
    assert unraisable.exceptions == []
    assert reg.layer_errors == 0


def test_layer_may_call_back_into_the_registry(reg: Registry) -> None:
    seen: list[Any] = []

    class Reentrant:
        busy = False

        def on_new_span(self, span: SpanRef) -> None:
            seen.append(("new", reg.get(span.id).name, reg.current_span()))
            reg.event("from layer")

        def on_close(self, span: SpanRef) -> None:
            if self.busy:
                return
            self.busy = True
            try:
                # A span of the layer's own, made and closed while closing.
                inner = reg.new_span("inner", parent=None)
                seen.append(("close", span.name, reg.try_close(inner)))
            finally:
                self.busy = False

        def on_event(self, event: Event) -> None:
            seen.append(("event", event.message))

    reg.add_layer(Reentrant())
    with reg.span("outer"):
        pass
    assert seen == [
        ("new", "outer", None),
        ("event", "from layer"),
        ("close", "outer", True),
        ("new", "inner", None),
        ("event", "from layer"),
    ] or seen == [
        ("new", "outer", None),
        ("event", "from layer"),
        ("new", "inner", None),
        ("event", "from layer"),
        ("close", "outer", True),
    ]
    assert reg.layer_errors == 0


def test_layer_added_from_inside_a_hook(reg: Registry, Recorder: Any) -> None:
    late = Recorder()

    class Adder:
        def on_new_span(self, span: SpanRef) -> None:
            if late not in reg.layers:
                reg.add_layer(late)

    reg.add_layer(Adder())
    with reg.span("first"):
        pass
    with reg.span("second"):
        pass
    names = [c[1]["name"] for c in late.calls]
    assert "second" in names
    assert names.count("second") == 4  # new, enter, exit, close


# === layers that raise ===


class LayerFailed(Exception):
    pass


class Raises:
    """A layer whose ``hook`` raises."""

    def __init__(self, hook: str) -> None:
        self.hook = hook
        self.raised = 0

    def __getattr__(self, name: str) -> Any:
        if name != self.hook:
            raise AttributeError(name)

        def fail(*args: Any) -> None:
            self.raised += 1
            raise LayerFailed(name)

        return fail


@pytest.mark.parametrize("hook", HOOKS)
def test_layer_raising_does_not_break_caller_or_registry(
    reg: Registry, recorder: Any, unraisable: Any, hook: str
) -> None:
    bad = Raises(hook)
    reg.add_layer(bad)
    reg.add_layer(recorder)
    sid, _ = lifecycle(reg)
    # Every step completed and every later layer still saw it.
    assert len(recorder.calls) == 9
    assert len(reg) == 0
    assert reg.get(sid) is None
    assert reg.current_span() is None
    # The failures are visible, one per call of the failing hook.
    assert bad.raised == (2 if hook in ("on_new_span", "on_close") else 1)
    assert reg.layer_errors == bad.raised
    assert len(unraisable.seen) == bad.raised
    for u in unraisable.seen:
        assert isinstance(u.exc_value, LayerFailed)
        assert str(u.exc_value) == hook
        assert u.object is bad


def test_layer_raising_on_close_during_cascade_closes_everything(
    reg: Registry, unraisable: Any
) -> None:
    bad = Raises("on_close")
    reg.add_layer(bad)
    chain = [reg.new_span("s0", parent=None)]
    for n in range(1, 50):
        chain.append(reg.new_span(f"s{n}", parent=chain[-1]))
    for sid in chain[:-1]:
        reg.try_close(sid)
    assert reg.try_close(chain[-1]) is True
    assert len(reg) == 0
    assert bad.raised == 50
    assert reg.layer_errors == 50
    assert len(unraisable.seen) == 50


def test_layer_raising_base_exception_subclass_of_exception_only(
    reg: Registry, unraisable: Any
) -> None:
    class Weird(LookupError):
        pass

    class Layer:
        def on_enter(self, span: SpanRef) -> None:
            raise Weird("enter")

    reg.add_layer(Layer())
    with reg.span("s") as s:
        assert reg.current_span() == s.id
    assert reg.layer_errors == 1
    assert [type(e) for e in unraisable.exceptions] == [Weird]


def test_layer_errors_counted_per_registry(unraisable: Any) -> None:
    a = Registry(layers=[Raises("on_new_span")])
    b = Registry()
    a.try_close(a.new_span("x"))
    b.try_close(b.new_span("x"))
    assert a.layer_errors == 1
    assert b.layer_errors == 0
    assert len(a) == len(b) == 0


def test_layer_event_repr_and_fields(reg: Registry) -> None:
    events: list[Event] = []

    class Keep:
        def on_event(self, event: Event) -> None:
            events.append(event)

    reg.add_layer(Keep())
    reg.event("msg", level=Level.ERROR, target="t", parent=None, k="v")
    [event] = events
    assert isinstance(event, pykregistry.Event)
    assert event.fields == {"k": "v"}
    assert repr(event) == "Event('msg', level=Level.ERROR, target='t', parent=None)"


def test_layer_holding_its_registry_is_garbage_collected() -> None:
    # registry -> layer -> registry (and -> a callsite -> registry) is a
    # cycle: the registry shows its layers to the collector and drops them
    # when it breaks the cycle, so neither object outlives its last user.
    import weakref

    class Keeper:
        def __init__(self, reg: Registry) -> None:
            self.reg = reg
            self.site = reg.callsite("kept")
            self.closed: list[str] = []

        def on_close(self, span: SpanRef) -> None:
            self.closed.append(span.name)

    reg = Registry()
    keeper = Keeper(reg)
    reg.add_layer(keeper)
    with keeper.site.span(), reg.span("a"):
        pass
    assert keeper.closed == ["a", "kept"]
    gone = weakref.ref(keeper)
    del reg, keeper
    gc.collect()
    assert gone() is None


def test_layer_cycle_collected_while_another_registry_keeps_working() -> None:
    import weakref

    class Keeper:
        reg: Registry

        def on_enter(self, span: SpanRef) -> None:
            pass

    survivors = Registry(layers=[Keeper()])
    for _ in range(3):
        keeper = Keeper()
        reg = Registry(layers=[keeper])
        keeper.reg = reg
        gone = weakref.ref(keeper)
        del reg, keeper
        gc.collect()
        assert gone() is None
    with survivors.span("still") as s:
        assert s.ref is not None
    assert len(survivors.layers) == 1
    assert len(survivors) == 0
