"""OTLP/gRPC (issue 11): pykregistry's spans through
:class:`pykregistry.otel.OpenTelemetryLayer` and the SDK's OTLP/gRPC
exporter (the native exporter is OTLP/HTTP only; gRPC stays on the SDK
path), to the ``grpc_receiver`` fixture, a grpcio server decoding with
opentelemetry-proto's own messages. The same spans sent by the native
exporter over HTTP are compared with them in tests/test_otel_layer.py.

With the collector down, what the application pays is the SDK's own
behaviour, which is asserted here as it is: a BatchSpanProcessor keeps the
retries off the application's thread, a SimpleSpanProcessor makes the thread
that ends a span wait for them, and both stop within the exporter's timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# The test extra brings them: a missing one is an error, not a skip.
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from otlp_receivers import Receiver, attrs, closed_port

import pykregistry
from pykregistry import Registry
from pykregistry.otel import OpenTelemetryLayer

# The SDK's exporter logs its retries and failures here.
EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"

PROCESSORS: dict[str, Callable[[OTLPSpanExporter], Any]] = {
    "simple": SimpleSpanProcessor,
    # A long delay: only force_flush sends them within the test.
    "batch": lambda exporter: BatchSpanProcessor(exporter, schedule_delay_millis=60_000),
}


def ids(ref: pykregistry.SpanRef) -> tuple[bytes, bytes, bytes]:
    """A span's ids as OTLP carries them (big-endian; no parent: empty)."""
    parent = ref.parent_span_id
    return (
        ref.trace_id.to_bytes(16, "big"),
        ref.span_id.to_bytes(8, "big"),
        b"" if parent is None else parent.to_bytes(8, "big"),
    )


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "grpc-sdk"}), shutdown_on_exit=False
    )
    yield provider
    provider.shutdown()


def through(provider: TracerProvider, registry: Registry) -> OpenTelemetryLayer:
    layer = OpenTelemetryLayer(provider, registry=registry)
    registry.add_layer(layer)
    return layer


# === Spans as they arrive ===


@pytest.mark.parametrize("processor", sorted(PROCESSORS))
def test_spans_arrive_over_grpc_with_our_ids_fields_scope_events_links_and_errors(
    processor: str, grpc_receiver: Receiver, provider: TracerProvider, make: Any
) -> None:
    exporter = OTLPSpanExporter(
        endpoint=grpc_receiver.url, insecure=True, headers=(("x-team", "core"),)
    )
    provider.add_span_processor(PROCESSORS[processor](exporter))
    reg = make()
    layer = through(provider, reg)
    refs = {}
    with reg.span("cause", target="app.jobs") as cause:
        refs["cause"] = ids(cause.ref)
        with reg.span(
            "outer", target="app.db", level="debug", parent=None, rows=3, tags=["a", "b"]
        ) as outer:
            refs["outer"] = ids(outer.ref)
            with reg.span("inner", ratio=0.5, big=2**70, flag=True, pair=(1, 2)) as inner:
                refs["inner"] = ids(inner.ref)
                inner.follows_from(cause)
                reg.event("cache miss", level="warn", key="k", sizes=[1, 2])
            failing = reg.span("failing")
            refs["failing"] = ids(failing.ref)
            with pytest.raises(ValueError, match="bad input"), failing:
                raise ValueError("bad input")
    assert layer.force_flush(10_000)

    got = {r.span.name: r for r in grpc_receiver.spans()}
    assert sorted(got) == ["cause", "failing", "inner", "outer"]
    for name, r in got.items():
        assert (r.span.trace_id, r.span.span_id, r.span.parent_span_id) == refs[name], name
        assert r.resource["service.name"] == "grpc-sdk"  # the provider's resource
    # `outer` began a trace of its own (parent=None); `inner` is its child.
    assert got["outer"].span.parent_span_id == b""
    assert got["outer"].span.trace_id != got["cause"].span.trace_id
    assert got["inner"].span.parent_span_id == got["outer"].span.span_id
    assert got["failing"].span.parent_span_id == got["outer"].span.span_id
    assert {name: r.scope for name, r in got.items()} == {
        "cause": "app.jobs",
        "outer": "app.db",
        "inner": __name__,  # the default target: the caller's module
        "failing": __name__,
    }

    outer_attrs, inner_attrs = (
        attrs(got["outer"].span.attributes),
        attrs(got["inner"].span.attributes),
    )
    assert outer_attrs["rows"] == 3
    assert outer_attrs["tags"] == ["a", "b"]  # an array, not its repr
    assert outer_attrs["level"] == "DEBUG"
    assert isinstance(outer_attrs["busy_ns"], int)
    assert isinstance(outer_attrs["idle_ns"], int)
    assert inner_attrs["ratio"] == 0.5
    assert inner_attrs["flag"] is True
    assert inner_attrs["pair"] == [1, 2]
    assert inner_attrs["big"] == str(2**70)

    inner_span = got["inner"].span
    (event,) = inner_span.events
    assert event.name == "cache miss"
    assert attrs(event.attributes) == {
        "key": "k",
        "sizes": [1, 2],
        "level": "WARN",
        "target": __name__,
    }
    assert inner_span.start_time_unix_nano <= event.time_unix_nano <= inner_span.end_time_unix_nano
    assert [(link.trace_id, link.span_id) for link in inner_span.links] == [refs["cause"][:2]]
    assert list(got["outer"].span.links) == []

    failing_span = got["failing"].span
    assert failing_span.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert failing_span.status.message == "bad input"
    (exception,) = failing_span.events
    assert exception.name == "exception"
    assert attrs(exception.attributes) == {
        "exception.type": "ValueError",
        "exception.message": "bad input",
    }
    assert got["outer"].span.status.code == trace_pb2.Status.STATUS_CODE_UNSET

    # The exporter's headers came as gRPC metadata, on every request.
    assert grpc_receiver.headers
    assert all(h["x-team"] == "core" for h in grpc_receiver.headers)


# === A collector that is down ===


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_with_a_batch_processor_a_down_collector_never_holds_the_application(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=EXPORTER_LOGGER)
    timeout = 2.0
    exporter = OTLPSpanExporter(endpoint=closed_port(), insecure=True, timeout=timeout)
    provider = TracerProvider(shutdown_on_exit=False)
    # A short delay: the worker takes the first span at once.
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    reg = make()
    through(provider, reg)
    try:
        with reg.span("first"):
            pass
        # The worker's export failed to connect and is backing off (1 s
        # ± 20 %, then it gives up: a second backoff would pass the timeout).
        wait_until(lambda: "Transient error" in caplog.text, 10)
        start = time.monotonic()
        for i in range(500):
            with reg.span("while down", i=i):
                pass
        took = time.monotonic() - start
    finally:
        start = time.monotonic()
        provider.shutdown()
        shutdown_took = time.monotonic() - start

    # Had any span's end waited on the export, the loop would have lasted
    # the rest of that backoff, >= 0.75 s.
    assert took < 0.5
    # shutdown joins the worker: the export under way, then one more with
    # the 500 spans queued (fewer than a batch of 512); each gives up by the
    # exporter's timeout. A second for a busy machine.
    assert shutdown_took < 2 * timeout + 1
    failures = [r for r in caplog.records if r.getMessage().startswith("Failed to export")]
    assert len(failures) == 2
    assert all(r.threadName != "MainThread" for r in caplog.records)


def test_with_a_simple_processor_the_application_waits_for_the_sdks_retries(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The SDK's own behaviour, kept as it is: SimpleSpanProcessor exports in
    # the thread that ends the span, so a down collector costs that thread
    # the exporter's retries, bounded by its timeout; the layer adds nothing.
    caplog.set_level(logging.WARNING, logger=EXPORTER_LOGGER)
    timeout = 2.0
    exporter = OTLPSpanExporter(endpoint=closed_port(), insecure=True, timeout=timeout)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reg = make()
    through(provider, reg)
    try:
        start = time.monotonic()
        with reg.span("while down"):
            pass
        took = time.monotonic() - start
    finally:
        start = time.monotonic()
        provider.shutdown()
        shutdown_took = time.monotonic() - start

    # One backoff of 1 s ± 20 % after the refused connection, then it gives
    # up (the next, 2 s ± 20 %, would pass the 2 s timeout).
    assert 0.75 <= took < timeout + 0.5
    assert [r.threadName for r in caplog.records] == ["MainThread", "MainThread"]
    assert caplog.records[-1].getMessage().startswith("Failed to export")
    assert shutdown_took < 1.0  # nothing is queued: it only closes the channel
