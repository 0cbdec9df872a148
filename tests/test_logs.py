"""stdlib ``logging`` integration (issue 4, item 8): ``SpanFilter`` puts the
current span on each ``LogRecord``; ``SpanHandler`` turns records into events
on the current span.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

import pykregistry
from pykregistry import Event, Level, Registry
from pykregistry.logs import SpanFilter, SpanHandler, level_of


class Keep(logging.Handler):
    """Keeps the records it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A logger of its own per test, not propagating to the root logger."""
    log = logging.getLogger(f"pykregistry.tests.{request.node.name}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for h in list(log.handlers):
        log.removeHandler(h)
    for f in list(log.filters):
        log.removeFilter(f)


class Events:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def on_event(self, event: Event) -> None:
        self.events.append(
            {
                "message": event.message,
                "level": event.level,
                "target": event.target,
                "parent_id": event.parent_id,
                "fields": event.fields,
            }
        )


# === SpanFilter ===


def test_filter_sets_span_id_name_and_path(reg: Registry, logger: logging.Logger) -> None:
    keep = Keep()
    keep.addFilter(SpanFilter(reg))
    logger.addHandler(keep)
    logger.info("outside")
    with reg.span("request") as request, reg.span("db") as db, reg.span("query") as query:
        logger.info("inside %s", "query")
    with reg.span("request"):
        logger.warning("shallow")
    outside, inside, shallow = keep.records
    assert (outside.span_id, outside.span_name, outside.span_path) == (None, "", "")  # type: ignore[attr-defined]
    assert (inside.span_id, inside.span_name, inside.span_path) == (  # type: ignore[attr-defined]
        query.id,
        "query",
        "request>db>query",
    )
    assert inside.getMessage() == "inside query"
    assert shallow.span_path == "request"  # type: ignore[attr-defined]
    assert request.closed
    assert db.closed


def test_filter_never_rejects(reg: Registry, logger: logging.Logger) -> None:
    span_filter = SpanFilter(reg)
    logger.addFilter(span_filter)
    keep = Keep()
    logger.addHandler(keep)
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        logger.log(level, "x")
        with reg.span("s"):
            logger.log(level, "y")
    assert len(keep.records) == 10
    record = logging.LogRecord("n", logging.INFO, __file__, 1, "m", None, None)
    assert span_filter.filter(record) is True


def test_filter_in_formatter(reg: Registry, logger: logging.Logger) -> None:
    import io

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(SpanFilter(reg))
    handler.setFormatter(logging.Formatter("[%(span_path)s] %(message)s"))
    logger.addHandler(handler)
    with reg.span("job"), reg.span("step"):
        logger.info("working")
    logger.info("idle")
    assert out.getvalue().splitlines() == ["[job>step] working", "[] idle"]


def test_filter_per_task(reg: Registry, logger: logging.Logger) -> None:
    keep = Keep()
    keep.addFilter(SpanFilter(reg))
    logger.addHandler(keep)

    async def worker(name: str) -> None:
        with reg.span(name):
            await asyncio.sleep(0)
            logger.info(name)

    async def main() -> None:
        with reg.span("main"):
            await asyncio.gather(worker("a"), worker("b"))

    asyncio.run(main())
    assert sorted((r.getMessage(), r.span_path) for r in keep.records) == [  # type: ignore[attr-defined]
        ("a", "main>a"),
        ("b", "main>b"),
    ]


def test_filter_uses_default_registry(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pykregistry._default, "_DEFAULT", Registry())
    keep = Keep()
    keep.addFilter(SpanFilter())
    logger.addHandler(keep)
    with pykregistry.info_span("default") as span:
        logger.info("x")
    assert keep.records[0].span_id == span.id  # type: ignore[attr-defined]


class Nothing(logging.Handler):
    """Does nothing with a record, as cheaply as a Handler can."""

    def handle(self, record: logging.LogRecord) -> bool:
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - never called
        pass


@pytest.mark.slow
def test_filter_million_records(reg: Registry) -> None:
    """A million-record logging loop with the filter attached, three spans deep."""
    # Not from logging.getLogger(): pytest's log capture attaches a handler
    # keeping every record to each registered non-propagating logger.
    logger = logging.Logger("pykregistry.tests.million", logging.DEBUG)
    logger.propagate = False
    span_filter = SpanFilter(reg)
    logger.addFilter(span_filter)
    logger.addHandler(Nothing())
    last: list[logging.LogRecord] = []

    class Last(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.args == (999_999,):
                last.append(record)
            return True

    logger.addFilter(Last())
    info = logger.info
    start = time.perf_counter()
    with reg.span("a"), reg.span("b"), reg.span("c") as c:
        for i in range(1_000_000):
            info("record %d", i)
    elapsed = time.perf_counter() - start
    print(f"1,000,000 records with SpanFilter: {elapsed:.2f} s ({elapsed * 1e3:.0f} ns/record)")
    (record,) = last
    assert (record.span_id, record.span_path) == (c.id, "a>b>c")  # type: ignore[attr-defined]


# === SpanHandler ===


@pytest.mark.parametrize(
    ("levelno", "level"),
    [
        (logging.CRITICAL, Level.ERROR),
        (logging.ERROR, Level.ERROR),
        (logging.WARNING, Level.WARN),
        (35, Level.WARN),
        (logging.INFO, Level.INFO),
        (logging.DEBUG, Level.DEBUG),
        (5, Level.TRACE),
        (logging.NOTSET, Level.TRACE),
    ],
)
def test_level_of(levelno: int, level: Level) -> None:
    assert level_of(levelno) is level


def test_handler_emits_events_on_the_current_span(logger: logging.Logger) -> None:
    layer = Events()
    reg = Registry(layers=[layer])
    logger.addHandler(SpanHandler(reg))
    logger.info("outside")
    with reg.span("request") as request:
        logger.warning("slow: %d ms", 1200, extra={"user": "ada", "level": "custom"})
    line = logger.warning.__code__.co_firstlineno  # any int; checked below by type
    outside, inside = layer.events
    assert outside["parent_id"] is None
    assert outside["level"] == Level.INFO
    assert outside["target"] == logger.name
    assert inside["message"] == "slow: 1200 ms"
    assert inside["level"] == Level.WARN
    assert inside["parent_id"] == request.id
    fields = inside["fields"]
    assert isinstance(fields.pop("log.line"), int)
    assert fields.pop("log.file") == __file__
    assert fields == {
        "log.level": "WARNING",
        "log.module": "test_logs",
        "log.function": "test_handler_emits_events_on_the_current_span",
        "user": "ada",
        "extra.level": "custom",
    }
    assert line > 0
    assert len(reg) == 0


def test_handler_records_exceptions(logger: logging.Logger) -> None:
    layer = Events()
    reg = Registry(layers=[layer])
    logger.addHandler(SpanHandler(reg))
    try:
        raise KeyError("k")
    except KeyError:
        logger.exception("lookup failed")
    (event,) = layer.events
    assert event["level"] == Level.ERROR
    assert event["fields"]["exception.type"] == "KeyError"
    assert event["fields"]["exception.message"] == "'k'"
    assert 'raise KeyError("k")' in event["fields"]["exception.stacktrace"]


def test_handler_respects_the_registry_filter(logger: logging.Logger) -> None:
    layer = Events()
    reg = Registry(filter=f"warn,{logger.name}.db=debug", layers=[layer])
    logger.addHandler(SpanHandler(reg))
    db = logging.getLogger(f"{logger.name}.db")
    db.setLevel(logging.DEBUG)
    logger.info("dropped")
    logger.warning("kept")
    db.debug("db kept")
    assert [e["message"] for e in layer.events] == ["kept", "db kept"]


def test_handler_uses_formatter_when_set(logger: logging.Logger) -> None:
    layer = Events()
    reg = Registry(layers=[layer])
    handler = SpanHandler(reg)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.info("hello")
    assert layer.events[0]["message"] == "INFO hello"


def test_handler_does_not_loop_when_a_layer_logs(logger: logging.Logger) -> None:
    seen: list[str] = []

    class Chatty:
        def on_event(self, event: Event) -> None:
            seen.append(event.message)
            logger.info("layer saw %s", event.message)  # back into the handler

    reg = Registry(layers=[Chatty()])
    logger.addHandler(SpanHandler(reg))
    logger.info("first")
    logger.info("second")
    assert seen == ["first", "second"]
    assert reg.layer_errors == 0


def test_handler_and_filter_together(logger: logging.Logger) -> None:
    layer = Events()
    reg = Registry(layers=[layer])
    logger.addFilter(SpanFilter(reg))
    logger.addHandler(SpanHandler(reg))
    with reg.span("job"):
        logger.info("x")
    # The filter's attributes are not copied into the event's fields.
    assert not any(k.startswith("span_") for k in layer.events[0]["fields"])


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class _Ends:
    """Keeps the fields of the last span that ended."""

    fields: dict[str, object]

    def on_end(self, span: pykregistry.SpanRef) -> None:
        self.fields = span.fields


@pytest.mark.parametrize(
    ("module", "exc_type"),
    [(None, "Odd"), (42, "Odd"), ("builtins", "Odd"), ("app.errors", "app.errors.Odd")],
)
def test_handler_records_exceptions_whatever_their_class(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str], module: object, exc_type: str
) -> None:
    """R15: an exception whose `__str__` raises was dropped with a "Logging
    error" on stderr, and an odd `__module__` named its type `None.Odd`.
    The event is emitted, with the exception named and described as a span
    records it (`exception.message` empty when `str()` raises)."""
    layer, ends = Events(), _Ends()
    reg = Registry(layers=[layer, ends])
    logger.addHandler(SpanHandler(reg))
    odd = type("Odd", (_Unprintable,), {"__module__": module})
    with pytest.raises(odd), reg.span("s"):
        raise odd()
    try:
        raise odd()
    except odd:
        logger.exception("failed")
    (event,) = layer.events
    fields = event["fields"]
    assert fields["exception.type"] == exc_type == ends.fields["exception.type"]
    assert fields["exception.message"] == "" == ends.fields["exception.message"]
    assert "Traceback" in fields["exception.stacktrace"]
    assert capsys.readouterr().err == ""
