"""Module-level shortcuts on the default registry (issue 4, item 2):
``span`` and the level-named ``*_span``, ``event`` and the level-named event
helpers, ``current()`` and ``in_scope()``.

Each test swaps in a fresh default registry, so layers added here never
reach other tests.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Iterator
from typing import Any

import pytest

import pykregistry
from pykregistry import CURRENT, Event, Level, Registry, SpanRef


class Log:
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def on_new_span(self, span: SpanRef) -> None:
        self.spans.append(
            {
                "name": span.name,
                "target": span.target,
                "level": span.level,
                "fields": span.fields,
                "parent_id": span.parent_id,
            }
        )

    def on_event(self, event: Event) -> None:
        self.events.append(
            {
                "message": event.message,
                "level": event.level,
                "target": event.target,
                "fields": event.fields,
                "parent_id": event.parent_id,
            }
        )


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> Iterator[Log]:
    layer = Log()
    registry = Registry(layers=[layer])
    monkeypatch.setattr(pykregistry._default, "_DEFAULT", registry)
    assert pykregistry.default_registry() is registry
    yield layer
    assert len(registry) == 0


SPANS = [
    (pykregistry.trace_span, Level.TRACE),
    (pykregistry.debug_span, Level.DEBUG),
    (pykregistry.info_span, Level.INFO),
    (pykregistry.warn_span, Level.WARN),
    (pykregistry.error_span, Level.ERROR),
]

EVENTS = [
    (pykregistry.trace, Level.TRACE),
    (pykregistry.debug, Level.DEBUG),
    (pykregistry.info, Level.INFO),
    (pykregistry.warn, Level.WARN),
    (pykregistry.error, Level.ERROR),
]


def test_span_on_default_registry(log: Log) -> None:
    with pykregistry.span("request", path="/") as request:
        assert pykregistry.default_registry().current_span() == request.id
        with pykregistry.span("db", level="debug", target="app.db") as db:
            pass
    assert log.spans == [
        {
            "name": "request",
            "target": __name__,  # the caller's module, as Registry.span does
            "level": Level.INFO,
            "fields": {"path": "/"},
            "parent_id": None,
        },
        {
            "name": "db",
            "target": "app.db",
            "level": Level.DEBUG,
            "fields": {},
            "parent_id": request.id,
        },
    ]
    assert db.closed


@pytest.mark.parametrize(("make", "level"), SPANS)
def test_level_spans(log: Log, make: Any, level: Level) -> None:
    with make("s", k=1):
        pass
    with make("t", target="", parent=None):
        pass
    assert log.spans == [
        {"name": "s", "target": __name__, "level": level, "fields": {"k": 1}, "parent_id": None},
        {"name": "t", "target": "", "level": level, "fields": {}, "parent_id": None},
    ]


def test_span_parents(log: Log) -> None:
    with (
        pykregistry.info_span("outer") as outer,
        pykregistry.info_span("root", parent=None) as root,
    ):
        with pykregistry.debug_span("explicit", parent=outer):
            pass
        with pykregistry.debug_span("contextual", parent=CURRENT):
            pass
    assert [(s["name"], s["parent_id"]) for s in log.spans] == [
        ("outer", None),
        ("root", None),
        ("explicit", outer.id),
        ("contextual", root.id),
    ]


def test_event_and_level_events(log: Log) -> None:
    pykregistry.event("plain", key="v")
    pykregistry.event("custom", level="warn", target="app.x")
    with pykregistry.info_span("in") as span:
        for emit, _ in EVENTS:
            emit("m", n=1)
        pykregistry.info("rooted", parent=None)
    assert log.events[:2] == [
        {
            "message": "plain",
            "level": Level.INFO,
            "target": __name__,
            "fields": {"key": "v"},
            "parent_id": None,
        },
        {
            "message": "custom",
            "level": Level.WARN,
            "target": "app.x",
            "fields": {},
            "parent_id": None,
        },
    ]
    assert log.events[2:7] == [
        {
            "message": "m",
            "level": level,
            "target": __name__,
            "fields": {"n": 1},
            "parent_id": span.id,
        }
        for _, level in EVENTS
    ]
    assert log.events[7]["parent_id"] is None


def test_current(log: Log) -> None:
    assert pykregistry.current() is None
    with pykregistry.info_span("a") as a, pykregistry.info_span("b") as b:
        view = pykregistry.current()
        assert view is not None
        assert view.id == b.id
        assert [s.name for s in view.scope()] == ["b", "a"]
        assert view.parent_id == a.id
    assert pykregistry.current() is None


def test_current_of_another_registry(reg: Registry) -> None:
    with reg.span("mine") as mine:
        view = pykregistry.current(reg)
        assert view is not None
        assert view.id == mine.id
        assert pykregistry.current() is None  # nothing is current on the default registry


def test_in_scope_enters_for_the_call_only(log: Log) -> None:
    reg = pykregistry.default_registry()
    span = pykregistry.info_span("job")

    def work(a: int, *, b: int) -> tuple[int, int | None]:
        return a + b, reg.current_span()

    assert pykregistry.in_scope(span, work, 1, b=2) == (3, span.id)
    assert reg.current_span() is None
    assert not span.closed  # entered and exited; the handle stays open
    assert pykregistry.in_scope(span, work, 2, b=2) == (4, span.id)
    span.close()


def test_in_scope_records_and_propagates_exceptions(reg: Registry) -> None:
    recorded: list[dict[str, object]] = []

    class OnClose:
        def on_close(self, span: SpanRef) -> None:
            recorded.append(span.fields)

    reg.add_layer(OnClose())
    span = reg.span("job")
    error = RuntimeError("nope")

    def fail() -> None:
        raise error

    with pytest.raises(RuntimeError) as raised:
        pykregistry.in_scope(span, fail)
    assert raised.value is error
    span.close()
    assert recorded == [
        {"error": True, "exception.type": "RuntimeError", "exception.message": "nope"}
    ]


def test_shortcuts_on_filtered_default_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = Log()
    monkeypatch.setattr(pykregistry._default, "_DEFAULT", Registry(filter="warn", layers=[layer]))
    with pykregistry.info_span("quiet") as quiet:
        assert quiet.disabled
        assert pykregistry.current() is None
        pykregistry.info("dropped")
        pykregistry.warn("kept")
        assert pykregistry.in_scope(quiet, lambda: 5) == 5
    with pykregistry.warn_span("loud") as loud:
        assert not loud.disabled
    assert [s["name"] for s in layer.spans] == ["loud"]
    assert [e["message"] for e in layer.events] == ["kept"]


def test_shortcuts_are_exported() -> None:
    for name in (
        "span",
        "trace_span",
        "debug_span",
        "info_span",
        "warn_span",
        "error_span",
        "event",
        "trace",
        "debug",
        "info",
        "warn",
        "error",
        "current",
        "in_scope",
        "instrument",
    ):
        assert name in pykregistry.__all__, name
        assert getattr(pykregistry, name).__doc__, name


@pytest.mark.parametrize("level", list(Level))
def test_level_shortcuts_look_written_out(level: Level) -> None:
    """The per-level shortcuts are generated; each still reads as a function
    of the module: its name everywhere (code object included, so tracebacks
    and profilers tell them apart), its docstring, its signature, pickling."""
    word = level.name.lower()
    article = "An" if word in ("info", "error") else "A"
    for name, what, first, returns in (
        (f"{word}_span", "span", "name", "Span"),
        (word, "event", "message", "None"),
    ):
        func = getattr(pykregistry, name)
        assert func is getattr(pykregistry.shortcuts, name)
        assert func.__module__ == "pykregistry.shortcuts"
        assert func.__name__ == func.__qualname__ == func.__code__.co_name == name
        assert func.__doc__ == (
            f"{article} ``{level.name}`` {what} on the default registry "
            f"(``tracing``'s ``{name}!``)."
        )
        assert str(inspect.signature(func)) == (
            f"({first}: 'str', /, *, target: 'str | None' = None, "
            f"parent: '_ParentLike' = CURRENT, **fields: 'object') -> '{returns}'"
        )
        assert pickle.loads(pickle.dumps(func)) is func


def test_a_shortcut_in_a_traceback_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pykregistry._default, "_DEFAULT", Registry(strict=True))
    with pytest.raises(TypeError) as raised:
        pykregistry.warn_span(1)  # type: ignore[arg-type]
    names = [entry.name for entry in raised.traceback]
    assert "warn_span" in names
