"""The Python API contract, SPEC section 4: names, handles, levels, reprs."""

from __future__ import annotations

import contextlib
import gc
import threading
from typing import Any

import pytest

import pykregistry
from pykregistry import (
    CURRENT,
    Level,
    Registry,
    Span,
    SpanClosedError,
    SpanNotFoundError,
    SpanRef,
)

# === the public surface ===


def test_api_contract_names_are_exported() -> None:
    for name in (
        "Registry",
        "Level",
        "Span",
        "SpanRef",
        "CURRENT",
        "RegistryError",
        "SpanNotFoundError",
        "SpanClosedError",
        "default_registry",
        "GENERATIONS",
    ):
        assert hasattr(pykregistry, name), name
        assert name in pykregistry.__all__, name
    assert isinstance(pykregistry.__version__, str)
    assert set(pykregistry.__all__) <= set(dir(pykregistry))


def test_api_default_registry_is_one_object() -> None:
    reg = pykregistry.default_registry()
    assert isinstance(reg, Registry)
    assert pykregistry.default_registry() is reg
    before = len(reg)
    with reg.span("on default") as s:
        assert pykregistry.default_registry().current_span() == s.id
    assert len(reg) == before


def test_api_registries_are_independent(reg: Registry) -> None:
    other = Registry()
    with reg.span("mine") as mine:
        assert other.current_span() is None
        assert len(other) == 0
        with other.span("theirs") as theirs:
            assert reg.current_span() == mine.id
            assert other.current_span() == theirs.id
            assert other.get(theirs.id).parent_id is None
    assert len(other) == 0


def test_api_parent_from_another_registry_is_rejected(reg: Registry) -> None:
    # Both fresh, so the registries issue the same first IDs: a handle from
    # one must not silently name the other's span that has the same number.
    other = Registry()
    foreign = other.span("foreign", parent=None)
    local = reg.span("local", parent=None)
    assert foreign.id == local.id
    for parent in (foreign, other.get(foreign.id)):
        with pytest.raises((ValueError, TypeError, KeyError)):
            reg.new_span("child", parent=parent)
    assert reg.ref_count(local.id) == 1
    assert len(reg) == 1
    local.close()
    foreign.close()


def test_api_current_is_a_singleton_sentinel() -> None:
    assert repr(CURRENT) == "CURRENT"
    assert pykregistry.CURRENT is CURRENT
    assert CURRENT is not None


# === Level ===


def test_api_level_ordering() -> None:
    assert Level.TRACE > Level.DEBUG > Level.INFO > Level.WARN > Level.ERROR
    assert sorted(Level) == [Level.ERROR, Level.WARN, Level.INFO, Level.DEBUG, Level.TRACE]
    assert max(Level) is Level.TRACE


@pytest.mark.parametrize(
    ("given", "level"),
    [
        ("trace", Level.TRACE),
        ("TRACE", Level.TRACE),
        ("Debug", Level.DEBUG),
        ("info", Level.INFO),
        ("wArN", Level.WARN),
        ("error", Level.ERROR),
        ("ERROR", Level.ERROR),
        (Level.DEBUG, Level.DEBUG),
        (Level.TRACE, Level.TRACE),
    ],
    ids=repr,
)
def test_api_level_names_case_insensitive_everywhere(
    reg: Registry, recorder: Any, given: Any, level: Level
) -> None:
    reg.add_layer(recorder)
    sid = reg.new_span("a", level=given)
    assert reg.get(sid).level is level
    reg.try_close(sid)
    with reg.span("b", level=given) as b:
        assert reg.get(b.id).level is level
    reg.event("e", level=given)
    assert recorder.of("event")[0][1]["level"] is level


def test_api_default_level_is_info(reg: Registry) -> None:
    with reg.span("s") as s:
        assert reg.get(s.id).level is Level.INFO


# === Span handles ===


def test_api_with_span_enters_exits_and_releases(reg: Registry) -> None:
    handle = reg.span("s", target="app", level="debug", k=1)
    assert isinstance(handle, Span)
    assert reg.current_span() is None
    with handle as s:
        assert s is handle
        assert reg.current_span() == s.id
        assert reg.ref_count(s.id) == 2
        assert reg.get(s.id).fields == {"k": 1}
        assert not s.closed
    assert s.closed
    assert reg.current_span() is None
    assert reg.get(s.id) is None


def test_api_with_span_as_expression(reg: Registry) -> None:
    with reg.span("s", parent=None, k="v") as s:
        view = s.ref
        assert isinstance(view, SpanRef)
        assert (view.name, view.fields, view.parent_id) == ("s", {"k": "v"}, None)
    assert len(reg) == 0


def test_api_with_span_through_exit_stack_and_the_class(reg: Registry) -> None:
    # `Span.__enter__`/`__exit__` bind to the span itself (no bound method
    # per block); reached through the class, as ExitStack does, they take the
    # span first, like methods.
    with contextlib.ExitStack() as stack:
        s = stack.enter_context(reg.span("a"))
        assert reg.current_span() == s.id
        t = reg.span("b")
        assert Span.__enter__(t) is t
        assert reg.current_span() == t.id
        assert Span.__exit__(t, None, None, None) is False
        assert t.closed
        assert reg.current_span() == s.id
    assert s.closed
    assert len(reg) == 0


def test_api_with_methods_reject_bad_calls_and_change_nothing(reg: Registry) -> None:
    s = reg.span("s")
    for call in (
        lambda: s.__exit__(),
        lambda: s.__enter__(1),
        lambda: s.__exit__(None, None),
        lambda: Span.__enter__(object()),
        lambda: Span.__exit__(s, None, None, tb=None),
        lambda: Span.__enter__(),
    ):
        with pytest.raises(TypeError):
            call()
    assert reg.current_span() is None
    assert not s.closed
    assert reg.ref_count(s.id) == 1
    s.close()
    assert len(reg) == 0


def test_api_span_clone_is_a_second_handle(reg: Registry) -> None:
    s = reg.span("s")
    c = s.clone()
    assert isinstance(c, Span)
    assert c is not s
    assert c.id == s.id
    assert reg.ref_count(s.id) == 2
    s.close()
    assert reg.get(c.id) is not None
    assert not c.closed
    c.close()
    assert reg.get(s.id) is None


def test_api_span_close_twice_is_a_noop(reg: Registry) -> None:
    s = reg.span("s")
    keeper = s.clone()
    s.close()
    s.close()
    s.close()
    assert s.closed
    assert reg.ref_count(keeper.id) == 1
    keeper.close()
    keeper.close()
    assert len(reg) == 0


def test_api_span_garbage_collected_releases_its_reference(reg: Registry) -> None:
    s = reg.span("s")
    sid = s.id
    c = s.clone()
    del c
    gc.collect()
    assert reg.ref_count(sid) == 1
    del s
    gc.collect()
    assert reg.get(sid) is None


def test_api_unbound_span_closes_at_once(reg: Registry) -> None:
    sid = reg.span("temporary").id
    gc.collect()
    assert reg.get(sid) is None
    assert len(reg) == 0


def test_api_dropped_parent_handle_kept_alive_by_child(reg: Registry) -> None:
    parent = reg.span("parent", parent=None)
    child = reg.span("child", parent=parent)
    pid = parent.id
    del parent
    gc.collect()
    assert reg.ref_count(pid) == 1
    assert reg.get(child.id).parent.name == "parent"
    child.close()
    assert reg.get(pid) is None


def test_api_span_dropped_on_another_thread(reg: Registry) -> None:
    holder = [reg.span("s")]
    sid = holder[0].id
    t = threading.Thread(target=holder.clear)
    t.start()
    t.join()
    gc.collect()
    assert reg.get(sid) is None


class Boom(Exception):
    pass


def test_api_exception_inside_with_propagates_unchanged(reg: Registry) -> None:
    err = Boom("inside")
    with pytest.raises(Boom) as info, reg.span("s") as s:
        raise err
    assert info.value is err
    assert err.__context__ is None
    assert s.closed
    assert reg.current_span() is None
    assert len(reg) == 0


def test_api_exception_inside_entered_propagates_unchanged(reg: Registry) -> None:
    s = reg.span("s")
    err = Boom("inside")
    with pytest.raises(Boom) as info, s.entered():
        raise err
    assert info.value is err
    assert not s.closed
    assert reg.current_span() is None
    assert reg.ref_count(s.id) == 1
    s.close()


def test_api_exit_never_swallows(reg: Registry) -> None:
    s = reg.span("s")
    s.__enter__()
    assert not s.__exit__(Boom, Boom("x"), None)
    entered = reg.span("t")
    e = entered.entered()
    e.__enter__()
    assert not e.__exit__(Boom, Boom("x"), None)
    entered.close()


def test_api_close_inside_with_block(reg: Registry) -> None:
    with reg.span("s") as s:
        s.close()
        assert s.closed
        # The stack entry still holds the span.
        assert reg.get(s.id) is not None
    assert reg.get(s.id) is None


def test_api_span_record_and_follows_from(reg: Registry) -> None:
    a = reg.span("a")
    with reg.span("b", x=1) as b:
        b.record(x=2, y="z")
        b.follows_from(a)
        assert reg.get(b.id).fields == {"x": 2, "y": "z"}
    a.close()


def test_api_span_record_name_and_value_as_tracing(reg: Registry) -> None:
    # `tracing`'s `span.record("field", value)`: any name, keywords too.
    with reg.span("b") as b:
        b.record("return", 1)
        b.record("exception.type", "E", k=2)
        assert reg.get(b.id).fields == {"return": 1, "exception.type": "E", "k": 2}
        for bad in [("only-a-name",), ("a", 1, "extra")]:
            with pytest.raises(TypeError, match="a name and a value"):
                b.record(*bad)
        with pytest.raises(TypeError, match="field names are str"):
            b.record(1, 2)
        assert reg.get(b.id).fields == {"return": 1, "exception.type": "E", "k": 2}
    with pytest.raises(SpanClosedError):
        b.record("x", 1)
    off = Registry(level="off").span("x")
    assert off.disabled
    off.record("x", 1)  # the disabled span records nothing, and says nothing


# Keywords are read from the caller's arrays (vectorcall), not from a dict:
# the names must still be matched by value, not only by the identity of the
# interned names source code passes.
def _runtime(text: str) -> str:
    built = "".join(list(text))
    assert built == text
    return built


def test_api_keywords_built_at_run_time_are_matched_by_value(reg: Registry) -> None:
    kwargs: dict[str, Any] = {
        _runtime("level"): "warn",
        _runtime("target"): "app",
        _runtime("parent"): None,
        _runtime("user"): "u1",
    }
    with reg.span("outer"), reg.span("x", **kwargs) as s:
        view = reg.get(s.id)
        assert (view.level, view.target, view.parent_id, view.fields) == (
            Level.WARN,
            "app",
            None,
            {"user": "u1"},
        )
    site = reg.callsite("q", fields=("sql",))
    with site.span(**{_runtime("sql"): "select 1"}) as s:
        assert reg.get(s.id).fields == {"sql": "select 1"}
    sid = reg.new_span("r")
    reg.record(sid, **{_runtime("a"): 1}, b=2)
    assert reg.get(sid).fields == {"a": 1, "b": 2}
    reg.try_close(sid)


def test_api_span_and_event_arguments_are_checked(reg: Registry) -> None:
    for call in (reg.span, reg.event):
        with pytest.raises(TypeError, match="takes 1 positional argument"):
            call()  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="takes 1 positional argument"):
            call("a", "b")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="is a str, not int"):
            call(1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="target is a str, not bytes"):
            call("a", target=b"t")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown level"):
            call("a", level="loud")
    with pytest.raises(TypeError, match="takes no positional arguments"):
        reg.callsite("q").span("x")  # type: ignore[call-arg]
    # `name` is positional-only, so `name=` is a field, as in `tracing`.
    with reg.span("x", name="field") as s:
        assert reg.get(s.id).fields == {"name": "field"}
    assert len(reg) == 0


def test_api_filtered_out_span_never_reads_its_fields(make: Any) -> None:
    # As `tracing` evaluates no field of a disabled span: a filtered-out
    # span costs no repr(), and an event no layer sees reads nothing.
    reads = []

    class Loud:
        def __repr__(self) -> str:
            reads.append(self)
            return "Loud()"

    reg = make(level="info")
    with reg.span("x", level="debug", value=Loud()) as s:
        assert s.disabled
    reg.event("e", value=Loud())
    assert reads == []
    with reg.span("x", level="info", value=Loud()) as s:
        assert reg.get(s.id).fields == {"value": "Loud()"}
    assert len(reads) == 1


def test_api_new_span_name_is_positional_only(reg: Registry) -> None:
    with pytest.raises(TypeError):
        reg.new_span(name="x")
    sid = reg.new_span("x", target="t", level=Level.WARN, parent=CURRENT, fields={"k": 1})
    view = reg.get(sid)
    assert (view.name, view.target, view.level, view.fields) == ("x", "t", Level.WARN, {"k": 1})
    reg.try_close(sid)


def test_api_contains(reg: Registry) -> None:
    sid = reg.new_span("x")
    assert sid in reg
    reg.try_close(sid)
    assert sid not in reg


# === SpanRef ===


def test_api_span_ref_equality_and_hash(reg: Registry) -> None:
    a = reg.new_span("a")
    b = reg.new_span("b")
    assert reg.get(a) == reg.get(a)
    assert reg.get(a) != reg.get(b)
    assert len({reg.get(a), reg.get(a), reg.get(b)}) == 2
    other = Registry()
    o = other.new_span("o")
    assert o == a  # same number, different registries
    assert other.get(o) != reg.get(a)
    other.try_close(o)
    reg.try_close(a)
    reg.try_close(b)


# === reprs read like constructor calls ===


class Args:
    """Evaluates a repr with each class name bound to this, to read back the
    arguments it shows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


def read_repr(text: str) -> Args:
    namespace = {"Span": Args, "SpanRef": Args, "Event": Args, "Entered": Args, "Level": Level}
    result = eval(text, {"__builtins__": {}}, namespace)
    assert isinstance(result, Args), text
    return result


NAMES = ["db", "it's", 'say "hi"', "naïve ✓ 🎉", "back\\slash", "tab\tnew\nline", "bell\x07"]


@pytest.mark.parametrize("name", NAMES, ids=repr)
def test_api_span_repr_reads_like_constructor(reg: Registry, name: str) -> None:
    with reg.span("parent") as parent, reg.span(name) as s:
        text = repr(s)
        assert text.startswith("Span(")
        assert read_repr(text).kwargs == {"id": s.id, "name": name, "parent": parent.id}
        assert read_repr(repr(parent)).kwargs == {
            "id": parent.id,
            "name": "parent",
            "parent": None,
        }
    assert read_repr(repr(s)).kwargs == {"id": s.id, "closed": True}


@pytest.mark.parametrize("name", NAMES, ids=repr)
def test_api_span_ref_repr_reads_like_constructor(reg: Registry, name: str) -> None:
    sid = reg.new_span(name, target="app.db", level="warn", parent=None)
    view = reg.get(sid)
    assert repr(view).startswith("SpanRef(")
    assert read_repr(repr(view)).kwargs == {
        "id": sid,
        "name": name,
        "target": "app.db",
        "level": Level.WARN,
        "parent": None,
    }
    reg.try_close(sid)
    assert read_repr(repr(view)).kwargs == {"id": sid, "closed": True}


def test_api_other_reprs(reg: Registry) -> None:
    assert repr(reg) == "Registry(len=0)"
    s = reg.span("s")
    assert repr(reg) == "Registry(len=1)"
    assert repr(Level.INFO) == "Level.INFO"
    assert str(Level.WARN) == "WARN"
    entered = s.entered()
    assert repr(entered) == f"Entered({s!r})"
    s.close()


def test_api_exceptions_from_handles_name_the_span(reg: Registry) -> None:
    s = reg.span("s")
    s.close()
    with pytest.raises(SpanClosedError) as info:
        s.record(k=1)
    assert str(s.id) in str(info.value)
    assert isinstance(info.value, SpanNotFoundError)
