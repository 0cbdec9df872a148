"""Fuzzing every public function and method with arbitrary arguments (R12).

Each example builds a scene — a registry with a root span entered, a child
with fields, closed IDs and handles, views live and dead, a call site, an
event, spans and views of another registry, the disabled span — and makes a
few calls drawn by hypothesis: any public callable of pykregistry (module
functions, constructors, methods and properties of every public type),
with positional and keyword arguments drawn from ints of every size and
sign, floats (nan, inf), strings, bytes, None, containers, levels and level
names, ``CURRENT``, plain objects, objects whose ``__repr__``/``__index__``
raise, and the scene's own spans, IDs and views.

Every call must return or raise one of the documented exceptions
(``RegistryError`` subclasses, ``TypeError``, ``ValueError``,
``KeyError``) — or the exception an argument's own method raised, which
propagates — and never anything else: no ``PanicException``, no other
``BaseException``. A rejected call must leave the state as it was: ``len``
of both registries and of the default one, the calling context's current
span, the counts and fields of the scene's spans, its handles'
``closed``, and the layers.

Examples: ten times the hypothesis profile's (1,000 by default, 5,000 with
``ci``, 50,000 with ``long``), of 1 to 8 calls each.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import pykregistry
from pykregistry import (
    CURRENT,
    Callsite,
    Level,
    Registry,
    RegistryError,
    RemoteParent,
    Span,
    SpanRef,
)

_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"

FUZZ = settings(
    max_examples=10 * settings.default.max_examples,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Boom(Exception):
    """Raised by the fuzzer's own hostile objects; it may propagate."""


class BadRepr:
    def __repr__(self) -> str:
        raise Boom("__repr__")

    def __str__(self) -> str:
        raise Boom("__str__")


class BadIndex:
    def __index__(self) -> int:
        raise Boom("__index__")

    def __int__(self) -> int:
        raise Boom("__int__")


class BadIter:
    def __iter__(self) -> Any:
        raise Boom("__iter__")


class IntSub(int):
    """An int subclass, as numpy scalars and enums are."""


# SpanUsageWarning: the scene's registries are not strict, and the suite
# turns warnings into errors; a timing mistake warns (R15).
ALLOWED = (RegistryError, TypeError, ValueError, KeyError, Boom, pykregistry.SpanUsageWarning)


# === the scene ===


class EventKeeper:
    """A layer keeping the events it sees, so the fuzzer can poke at one."""

    def __init__(self) -> None:
        self.events: list[pykregistry.Event] = []

    def on_event(self, event: pykregistry.Event) -> None:
        self.events.append(event)


def instrumented_target(*args: Any, **kwargs: Any) -> int:
    return len(args) + len(kwargs)


@dataclass
class Scene:
    ctx: contextvars.Context
    reg: Registry
    other: Registry
    objects: dict[str, Any] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)
    handles: list[Span] = field(default_factory=list)

    @classmethod
    def build(cls) -> Scene:
        ctx = contextvars.Context().run(contextvars.copy_context)
        keeper = EventKeeper()
        json_lines = pykregistry.JsonLines(os.devnull)
        scene = cls(ctx, Registry(layers=[keeper, json_lines]), Registry())
        scene.objects["json_lines"] = json_lines
        ctx.run(scene._populate, keeper)
        return scene

    def _populate(self, keeper: EventKeeper) -> None:
        reg, other = self.reg, self.other
        root = reg.span("root", parent=None, k=1)
        root.__enter__()
        child = reg.new_span("child", fields={"a": 1, "b": "x"})
        dead = reg.new_span("dead", parent=None)
        dead_view = reg.get(dead)
        reg.try_close(dead)
        closed = reg.span("closed", parent=None)
        closed.close()
        reg.event("an event", k=1)
        foreign_id = other.new_span("foreign", parent=None)
        foreign = other.span("foreign handle", parent=None)
        off = Registry(level="off")
        o = self.objects
        o.update(
            root=root,
            root_id=root.id,
            child_id=child,
            child_id_sub=IntSub(child),
            child_view=reg.get(child),
            root_view=root.ref,
            dead_id=dead,
            dead_view=dead_view,
            closed_handle=closed,
            entered=root.entered(),
            callsite=reg.callsite("cs", target="t", fields=["a", "b"]),
            event=keeper.events[0],
            other=other,
            foreign_id=foreign_id,
            foreign=foreign,
            foreign_view=other.get(foreign_id),
            disabled=off.span("off"),
            reg=reg,
            instrumented=reg.instrument(instrumented_target),
            remote=RemoteParent(2**127 + 5, 2**63 + 7, 1, "congo=t61rcWkgMzE"),
            carrier={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        )
        assert o["disabled"].disabled
        self.ids = [root.id, child, dead]  # type: ignore[list-item]
        self.handles = [root, closed, foreign]

    def state(self) -> tuple[Any, ...]:
        """Everything a rejected call must leave as it was."""
        return self.ctx.run(self._state)

    def _state(self) -> tuple[Any, ...]:
        reg, default = self.reg, pykregistry.default_registry()
        fields = []
        for sid in self.ids:
            view = reg.get(sid)
            fields.append(None if view is None else view.fields)
        return (
            len(reg),
            reg.current_span(),
            [reg.ref_count(sid) for sid in self.ids],
            fields,
            [h.closed for h in self.handles],
            len(reg.layers),
            reg.layer_errors,
            len(self.other),
            self.other.ref_count(self.objects["foreign_id"]),
            len(default),
            default.current_span(),
        )


# === what to call ===

Target = Callable[[Scene], Callable[..., Any]]


def prop(obj: str, name: str) -> Target:
    """A property read, as a call that takes no arguments."""
    return lambda s: lambda *a, **k: getattr(s.objects[obj], name)


def meth(obj: str, name: str) -> Target:
    return lambda s: getattr(s.objects[obj], name)


REGISTRY_METHODS = [
    "add_layer",
    "callsite",
    "clone_span",
    "current_span",
    "enabled",
    "enter",
    "event",
    "exit",
    "follows_from",
    "get",
    "instrument",
    "new_span",
    "record",
    "ref_count",
    "span",
    "try_close",
    "__len__",
    "__contains__",
    "__repr__",
]
SPAN_METHODS = [
    "clone",
    "close",
    "entered",
    "follows_from",
    "record",
    "__enter__",
    "__exit__",
    "__repr__",
]
SPAN_PROPS = ["id", "closed", "disabled", "ref"]
VIEW_METHODS = ["scope", "from_root", "__eq__", "__hash__", "__repr__"]
VIEW_PROPS = [
    "id",
    "name",
    "target",
    "level",
    "fields",
    "parent_id",
    "span_id",
    "trace_id",
    "parent_span_id",
    "parent_is_remote",
    "trace_flags",
    "tracestate",
    "thread_id",
    "task_name",
    "parent",
    "start_time_ns",
    "end_time_ns",
    "busy_ns",
    "idle_ns",
    "extensions",
    "ref_count",
    "closed",
]
CALLSITE_PROPS = ["enabled", "name", "target", "level", "fields_tuple", "registry"]
EVENT_PROPS = [
    "message",
    "level",
    "target",
    "parent_id",
    "trace_id",
    "span_id",
    "fields",
    "time_ns",
]
# The scene's JsonLines writes to os.devnull; its constructor is not fuzzed
# (fuzzed paths would create files), tests/test_jsonlines.py covers it.
JSON_LINES_METHODS = ["flush", "close", "__enter__", "__exit__", "__repr__"]
JSON_LINES_PROPS = ["path", "closed", "events", "write_errors"]
REMOTE_METHODS = ["from_headers", "__eq__", "__hash__", "__repr__", "__reduce__"]
REMOTE_PROPS = ["trace_id", "span_id", "trace_flags", "sampled", "tracestate", "traceparent"]
MODULE_FUNCTIONS = [
    "current",
    "debug",
    "debug_span",
    "default_registry",
    "error",
    "error_span",
    "event",
    "extract",
    "in_current_span",
    "in_scope",
    "info",
    "info_span",
    "inject",
    "instrument",
    "span",
    "trace",
    "trace_span",
    "warn",
    "warn_span",
]

TARGETS: dict[str, Target] = {}
for _name in REGISTRY_METHODS:
    TARGETS[f"Registry.{_name}"] = meth("reg", _name)
    TARGETS[f"other Registry.{_name}"] = meth("other", _name)
TARGETS["Registry.layers"] = prop("reg", "layers")
TARGETS["Registry.layer_errors"] = prop("reg", "layer_errors")
TARGETS["Registry.strict"] = prop("reg", "strict")
for _obj in ("root", "closed_handle", "foreign", "disabled"):
    for _name in SPAN_METHODS:
        TARGETS[f"{_obj}.{_name}"] = meth(_obj, _name)
    for _name in SPAN_PROPS:
        TARGETS[f"{_obj}.{_name}"] = prop(_obj, _name)
for _obj in ("child_view", "root_view", "dead_view", "foreign_view"):
    for _name in VIEW_METHODS:
        TARGETS[f"{_obj}.{_name}"] = meth(_obj, _name)
    for _name in VIEW_PROPS:
        TARGETS[f"{_obj}.{_name}"] = prop(_obj, _name)
for _name in ("__enter__", "__exit__", "__repr__"):
    TARGETS[f"Entered.{_name}"] = meth("entered", _name)
TARGETS["Callsite.span"] = meth("callsite", "span")
for _name in CALLSITE_PROPS:
    TARGETS[f"Callsite.{_name}"] = prop("callsite", _name)
for _name in EVENT_PROPS:
    TARGETS[f"Event.{_name}"] = prop("event", _name)
for _name in JSON_LINES_METHODS:
    TARGETS[f"JsonLines.{_name}"] = meth("json_lines", _name)
for _name in JSON_LINES_PROPS:
    TARGETS[f"JsonLines.{_name}"] = prop("json_lines", _name)
for _name in REMOTE_METHODS:
    TARGETS[f"RemoteParent.{_name}"] = meth("remote", _name)
for _name in REMOTE_PROPS:
    TARGETS[f"RemoteParent.{_name}"] = prop("remote", _name)
for _name in MODULE_FUNCTIONS:
    TARGETS[f"pykregistry.{_name}"] = lambda s, _n=_name: getattr(pykregistry, _n)
TARGETS["Registry()"] = lambda s: Registry
TARGETS["Callsite()"] = lambda s: Callsite
TARGETS["Level()"] = lambda s: Level
TARGETS["RemoteParent()"] = lambda s: RemoteParent
TARGETS["instrumented function"] = meth("instrumented", "__call__")


def test_every_public_name_is_fuzzed() -> None:
    """New public API must join the fuzzer: every name in ``__all__`` and
    every public method and property of the public types is a target."""
    covered = {name.split(".", 1)[1] for name in TARGETS if name.startswith("pykregistry.")}
    functions = {n for n in pykregistry.__all__ if callable(getattr(pykregistry, n))}
    types = {n for n in functions if isinstance(getattr(pykregistry, n), type)}
    assert functions - types - covered == set(), "module functions not fuzzed"
    members = {
        Registry: set(REGISTRY_METHODS) | {"layers", "layer_errors", "strict"},
        Span: set(SPAN_METHODS) | set(SPAN_PROPS),
        SpanRef: set(VIEW_METHODS) | set(VIEW_PROPS),
        Callsite: {"span"} | set(CALLSITE_PROPS),
        pykregistry.Event: set(EVENT_PROPS),
        pykregistry.JsonLines: set(JSON_LINES_METHODS) | set(JSON_LINES_PROPS),
        RemoteParent: set(REMOTE_METHODS) | set(REMOTE_PROPS),
    }
    for cls, fuzzed in members.items():
        public = {n for n in dir(cls) if not n.startswith("_")}
        assert public - fuzzed == set(), f"{cls.__name__} members not fuzzed"


# === what to call it with ===


@dataclass(frozen=True)
class Sym:
    """A reference to one of the scene's objects, resolved per example."""

    name: str

    def __repr__(self) -> str:
        return f"<{self.name}>"


SCENE_NAMES = [
    "root",
    "root_id",
    "child_id",
    "child_id_sub",
    "child_view",
    "root_view",
    "dead_id",
    "dead_view",
    "closed_handle",
    "entered",
    "callsite",
    "event",
    "other",
    "foreign_id",
    "foreign",
    "foreign_view",
    "disabled",
    "reg",
    "remote",
    "carrier",
]

BOUNDARY_INTS = [
    0,
    1,
    -1,
    2**32,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**64),
    10**30,
    -(10**30),
]

LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(BOUNDARY_INTS),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=8),
    st.sampled_from(list(Level)),
    st.sampled_from(
        ["trace", "DEBUG", "Info", "warn", "ERROR", "off", "critical", "", "info,x=debug"]
    ),
    st.just(CURRENT),
    st.builds(object),
    st.sampled_from([BadRepr(), BadIndex(), BadIter(), IntSub(3), type, len]),
    st.just(lambda *a, **k: None),
    st.sampled_from(SCENE_NAMES).map(Sym),
)
VALUE = st.one_of(
    LEAF,
    st.lists(LEAF, max_size=3),
    st.tuples(LEAF),
    st.dictionaries(st.text(max_size=4), LEAF, max_size=3),
)
KWARG_NAMES = st.sampled_from(
    [
        "parent",
        "level",
        "target",
        "fields",
        "name",
        "registry",
        "filter",
        "layers",
        "strict",
        "skip",
        "args",
        "ret",
        "err",
        "k",
        "id",
        "follows",
        "message",
    ]
) | st.text(min_size=1, max_size=4)


@dataclass(frozen=True)
class Call:
    target: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __repr__(self) -> str:
        parts = [repr_or(a) for a in self.args]
        parts += [f"{k}={repr_or(v)}" for k, v in self.kwargs.items()]
        return f"{self.target}({', '.join(parts)})"


def repr_or(value: Any) -> str:
    try:
        return repr(value)
    except Boom:
        return f"<{type(value).__name__}>"


# The shape of each target's calls: (fewest, most positional arguments,
# keyword names). "*" stands for field names (any keyword).
SPAN_KW = ["target", "level", "parent", "*"]
SIGNATURES: dict[str, tuple[int, int, list[str]]] = {
    "Registry.add_layer": (1, 1, []),
    "Registry.callsite": (1, 1, ["target", "level", "fields"]),
    "Registry.enabled": (1, 2, []),
    "Registry.event": (1, 1, SPAN_KW),
    "Registry.follows_from": (2, 2, []),
    "Registry.instrument": (0, 1, ["name", "target", "level", "fields", "skip", "args", "ret"]),
    "Registry.new_span": (1, 1, ["target", "level", "parent", "fields"]),
    "Registry.record": (1, 1, ["*"]),
    "Registry.span": (1, 1, SPAN_KW),
    "Registry()": (0, 0, ["level", "filter", "layers", "strict"]),
    "Callsite()": (1, 1, ["target", "level", "fields", "registry"]),
    "Callsite.span": (0, 0, ["a", "b", "parent", "*"]),
    "Level()": (1, 1, []),
    "RemoteParent()": (2, 4, []),
    "RemoteParent.from_headers": (1, 2, []),
    "pykregistry.extract": (1, 1, ["registry"]),
    "pykregistry.inject": (1, 2, ["registry"]),
    "pykregistry.current": (0, 1, ["registry"]),
    "pykregistry.default_registry": (0, 0, []),
    "pykregistry.in_current_span": (1, 1, ["registry"]),
    "pykregistry.in_scope": (2, 4, ["*"]),
    "pykregistry.instrument": (0, 1, ["registry", "name", "target", "level", "skip", "ret"]),
    "instrumented function": (0, 3, ["*"]),
}
for _name in ("clone_span", "try_close", "enter", "exit", "get", "ref_count", "__contains__"):
    SIGNATURES[f"Registry.{_name}"] = (1, 1, [])
for _name in ("current_span", "__len__", "__repr__", "layers", "layer_errors", "strict"):
    SIGNATURES[f"Registry.{_name}"] = (0, 0, [])
for _name in ("span", "event", "trace", "debug", "info", "warn", "error"):
    SIGNATURES[f"pykregistry.{_name}"] = (1, 1, SPAN_KW)
for _name in ("trace", "debug", "info", "warn", "error"):
    SIGNATURES[f"pykregistry.{_name}_span"] = (1, 1, SPAN_KW)
for _target in list(TARGETS):
    obj, _, member = _target.partition(".")
    if obj == "other Registry":
        SIGNATURES[_target] = SIGNATURES.get(f"Registry.{member}", (0, 1, []))
    elif member in ("record",):
        SIGNATURES.setdefault(_target, (0, 0, ["*"]))
    elif member in ("follows_from", "__eq__"):
        SIGNATURES.setdefault(_target, (1, 1, []))
    elif member == "__exit__":
        SIGNATURES.setdefault(_target, (3, 3, []))
    else:
        SIGNATURES.setdefault(_target, (0, 0, []))

# Arguments a caller might plausibly pass: the scene's spans, IDs and views,
# names, levels, CURRENT, None. Mixed with anything at all (VALUE).
PLAUSIBLE = st.one_of(
    st.sampled_from(SCENE_NAMES).map(Sym),
    st.sampled_from(SCENE_NAMES).map(Sym),
    st.text(max_size=6),
    st.sampled_from(list(Level)),
    st.sampled_from(["debug", "INFO", "off"]),
    st.sampled_from([None, CURRENT, 0, 1, True]),
)
ARGUMENT = st.one_of(PLAUSIBLE, PLAUSIBLE, VALUE)
# Targets whose first argument is a name or message: usually a str.
NAME_FIRST = {
    t
    for t in TARGETS
    if t.endswith(("new_span", ".span", "event", "callsite", "Callsite()", "_span"))
    or t in {f"pykregistry.{level}" for level in ("trace", "debug", "info", "warn", "error")}
}
FIELD_NAMES = st.sampled_from(["k", "a", "b", "error", "message"]) | st.text(max_size=4)


@st.composite
def shaped_call(draw: st.DrawFn) -> Call:
    """A call of the right shape (arity, keyword names) with arguments that
    are often plausible: it gets past argument parsing into the code."""
    target = draw(st.sampled_from(sorted(TARGETS)))
    fewest, most, names = SIGNATURES[target]
    args = tuple(draw(st.lists(ARGUMENT, min_size=fewest, max_size=most)))
    if args and target in NAME_FIRST:
        args = (draw(st.text(max_size=6) | ARGUMENT), *args[1:])
    kwargs = {}
    if names:
        for _ in range(draw(st.integers(0, 3))):
            name = draw(st.sampled_from(names))
            if name == "*":
                name = draw(FIELD_NAMES)
            kwargs[name] = draw(ARGUMENT)
    return Call(target, args, kwargs)


ANY_CALL = st.builds(
    Call,
    target=st.sampled_from(sorted(TARGETS)),
    args=st.lists(VALUE, max_size=3).map(tuple),
    kwargs=st.dictionaries(KWARG_NAMES, VALUE, max_size=3),
)
CALLS = st.one_of(shaped_call(), shaped_call(), shaped_call(), ANY_CALL)


def resolve(scene: Scene, value: Any) -> Any:
    if isinstance(value, Sym):
        return scene.objects[value.name]
    if isinstance(value, list):
        return [resolve(scene, v) for v in value]
    if isinstance(value, tuple):
        return tuple(resolve(scene, v) for v in value)
    if isinstance(value, dict):
        return {k: resolve(scene, v) for k, v in value.items()}
    return value


def outcome(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, BaseException | None]:
    """The call's result, or what it raised (anything, even a BaseException:
    a PanicException derives from BaseException only)."""
    try:
        return func(*args, **kwargs), None
    except BaseException as e:
        return None, e


def runs_user_code(call: Call, args: Sequence[Any]) -> bool:
    """Whether the call ran a callable it was given (`in_scope(span, fn)`):
    what that raises is the user's, and changes the span (R10)."""
    return (
        call.target == "pykregistry.in_scope"
        and len(args) >= 2
        and isinstance(args[0], Span)
        and callable(args[1])
    )


def is_panic(e: BaseException) -> bool:
    return any(t.__name__ == "PanicException" for t in type(e).__mro__)


# === the fuzzer ===


@pytest.mark.timeout(0 if _LONG else 300)
@FUZZ
@given(calls=st.lists(CALLS, min_size=1, max_size=8))
def test_fuzz_every_public_callable(calls: list[Call]) -> None:
    scene = Scene.build()
    try:
        for n, call in enumerate(calls):
            func = scene.ctx.run(TARGETS[call.target], scene)
            args = resolve(scene, call.args)
            kwargs = resolve(scene, call.kwargs)
            before = scene.state()
            result, error = scene.ctx.run(outcome, func, args, kwargs)
            if error is None:
                note(f"call {n}: {call} -> {repr_or(result)[:80]}")
                if isinstance(result, Span) and not result.disabled:
                    scene.handles.append(result)
            else:
                note(f"call {n}: {call} raised {type(error).__name__}: {repr_or(error)}")
                assert not is_panic(error), f"{call} panicked: {error}"
                assert isinstance(error, ALLOWED), (
                    f"{call} raised {type(error).__qualname__}: {error}"
                )
                after = scene.state()
                # Compared as reprs: a field recorded as nan is not equal to
                # itself. An exception of a callable the call ran is the
                # user's, not a rejection: recording it on the span is R10.
                assert runs_user_code(call, args) or repr(after) == repr(before), (
                    f"{call} raised {error!r} but changed the state:\n{before}\n{after}"
                )
            # Whatever happened, the registry stays consistent: every span of the
            # scene is live exactly when its count is positive, and reads back.
            scene.ctx.run(check_consistent, scene)
    finally:
        # Handles made on the default registry must not linger into later
        # examples: collected there at some random moment, they would change
        # its len in the middle of another example's call.
        for h in scene.handles:
            h.close()


def check_consistent(scene: Scene) -> None:
    reg = scene.reg
    for sid in scene.ids:
        count = reg.ref_count(sid)
        view = reg.get(sid)
        assert (count > 0) == (view is not None), f"span {sid}: count {count}, view {view!r}"
        if view is not None:
            assert view.scope()[0].id == sid
    # (The current span may have closed: a caller that closes by ID
    # references it does not own can close a span still entered, and R2
    # then makes a contextual child a root. It must still read as an ID.)
    current = reg.current_span()
    assert current is None or isinstance(current, int)
    assert len(reg) >= 0


# === what the fuzzer found, pinned ===


def plain(*args: Any, **kwargs: Any) -> str:
    return "ran"


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s: pykregistry.current(3), id="current(registry=3)"),
        pytest.param(lambda s: pykregistry.current(s.objects["root"]), id="current(registry=Span)"),
        pytest.param(lambda s: pykregistry.in_scope("span", plain), id="in_scope(str, fn)"),
        pytest.param(lambda s: pykregistry.in_scope(None, plain), id="in_scope(None, fn)"),
        pytest.param(
            lambda s: pykregistry.in_scope(s.objects["root"], 3), id="in_scope(span, not callable)"
        ),
        pytest.param(lambda s: pykregistry.in_current_span(3), id="in_current_span(int)"),
        pytest.param(
            lambda s: pykregistry.in_current_span(plain, registry=s.objects["root"]),
            id="in_current_span(fn, registry=Span)",
        ),
    ],
)
def test_shortcuts_reject_wrong_types_with_type_error(call: Callable[[Scene], Any]) -> None:
    """R12: an argument of the wrong type is a TypeError, and a rejected
    call changes nothing (no exception recorded on the span)."""
    scene = Scene.build()
    before = scene.state()
    with pytest.raises(TypeError):
        scene.ctx.run(call, scene)
    assert scene.state() == before
