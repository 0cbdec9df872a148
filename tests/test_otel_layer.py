"""pykregistry.otel.OpenTelemetryLayer (issue 11, part 3): every ended span
goes to OpenTelemetry's SDK span processors with our ids and parents, its
fields as attributes, its target as scope, its events, links and error;
the resource is the provider's own object. Exported through the SDK's
in-memory exporter, its BatchSpanProcessor, and its real OTLP/HTTP and
OTLP/gRPC exporters to tests/otlp_receivers.py's receivers, where the same
span sent by the native exporter is compared with it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# The test extra brings the otel extra's packages and the OTLP exporter: a
# missing one is an error, not a skip.
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.common import trace_encoder as encoder
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as otlp_grpc
from opentelemetry.exporter.otlp.proto.http import trace_exporter as otlp_http
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode
from otlp_receivers import ExportTraceServiceRequest, Receiver, attrs, shape

import pykregistry
from pykregistry import ConfigurationWarning, Level, OtlpExporter, Registry, RemoteParent
from pykregistry.otel import OpenTelemetryLayer

# === Fixtures ===


@dataclass
class Pipeline:
    """A registry whose spans go through an OpenTelemetryLayer to an SDK
    provider with a SimpleSpanProcessor and an in-memory exporter."""

    reg: Registry
    layer: OpenTelemetryLayer
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self) -> dict[str, ReadableSpan]:
        out = {s.name: s for s in self.exporter.get_finished_spans()}
        assert len(out) == len(self.exporter.get_finished_spans()), "names are unique here"
        return out


@pytest.fixture
def pipeline(make: Any) -> Iterator[Pipeline]:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "otel-layer-test"}), shutdown_on_exit=False
    )
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reg = make()
    layer = OpenTelemetryLayer(provider, registry=reg)
    reg.add_layer(layer)
    yield Pipeline(reg, layer, provider, exporter)
    provider.shutdown()


@dataclass
class Ends:
    """A layer noting, at each span's end, what the span read then."""

    seen: dict[str, dict[str, Any]] = field(default_factory=dict)

    def on_end(self, span: pykregistry.SpanRef) -> None:
        self.seen[span.name] = {
            "busy_ns": span.busy_ns,
            "idle_ns": span.idle_ns,
            "start": span.start_time_ns,
            "end": span.end_time_ns,
            "span_id": span.span_id,
            "trace_id": span.trace_id,
        }


# === Ids, parents, names ===


def test_names_ids_and_parents_are_ours(pipeline: Pipeline) -> None:
    reg = pipeline.reg
    with reg.span("request") as request, reg.span("db.query") as query:
        ids = {
            "request": (request.ref.trace_id, request.ref.span_id),
            "db.query": (query.ref.trace_id, query.ref.span_id),
        }
    spans = pipeline.spans()
    assert sorted(spans) == ["db.query", "request"]
    for name, (trace_id, span_id) in ids.items():
        ctx = spans[name].context
        assert (ctx.trace_id, ctx.span_id) == (trace_id, span_id)
        assert ctx.trace_flags.sampled
        assert not ctx.is_remote
    assert spans["request"].parent is None
    parent = spans["db.query"].parent
    assert parent is not None
    assert (parent.trace_id, parent.span_id) == ids["request"]
    assert not parent.is_remote
    assert spans["request"].kind is trace_api.SpanKind.INTERNAL


def test_a_remote_parent_is_a_remote_span_context_with_its_tracestate(
    pipeline: Pipeline,
) -> None:
    reg = pipeline.reg
    remote = pykregistry.extract(
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=opaque,other=1",
        }
    )
    assert remote is not None
    with reg.span("server", parent=remote), reg.span("handler"):
        pass
    spans = pipeline.spans()
    server, handler = spans["server"], spans["handler"]
    assert server.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert server.parent is not None
    assert server.parent.span_id == 0xB7AD6B7169203331
    assert server.parent.trace_id == server.context.trace_id
    assert server.parent.is_remote
    assert server.context.trace_state.to_header() == "vendor=opaque,other=1"
    # Its child's parent is local, and the trace's state carries on.
    assert handler.parent is not None
    assert handler.parent.span_id == server.context.span_id
    assert not handler.parent.is_remote
    assert handler.context.trace_state.to_header() == "vendor=opaque,other=1"


def test_a_parent_that_closed_in_this_process_is_not_remote(pipeline: Pipeline) -> None:
    # R13: a task that outlives its parent makes a root here that keeps the
    # parent's place in the trace; that parent was local, not remote.
    reg = pipeline.reg

    async def main() -> asyncio.Task[None]:
        async def late() -> None:
            await asyncio.sleep(0.01)
            with reg.span("late"):
                pass

        with reg.span("parent"):
            return asyncio.create_task(late())

    async def run() -> None:
        await (await main())

    asyncio.run(run())
    spans = pipeline.spans()
    late = spans["late"]
    assert late.parent is not None
    assert late.parent.span_id == spans["parent"].context.span_id
    assert not late.parent.is_remote


def test_a_trace_that_is_not_sampled_is_dropped_by_the_sdk_processor(
    pipeline: Pipeline,
) -> None:
    # The flags reach the SDK: its processors skip unsampled spans, as
    # they skip their own.
    reg = pipeline.reg
    unsampled = RemoteParent(0x1234, 0x5678, trace_flags=0)
    with reg.span("not sampled", parent=unsampled):
        pass
    with reg.span("sampled", parent=RemoteParent(0x1234, 0x5678)):
        pass
    assert list(pipeline.spans()) == ["sampled"]


# === Attributes, scope, resource ===


def test_fields_are_attributes_with_arrays_kept(pipeline: Pipeline) -> None:
    reg = pipeline.reg
    with reg.span(
        "fields",
        rows=3,
        ratio=0.5,
        flag=True,
        text="héllo",
        tags=["a", "b"],
        pair=(1, 2),
        big=2**70,
        huge_array=[2**70, 1],
        lone="a\udcff",
        nothing=None,
        obj=object(),
        mixed=[1, "x"],
    ):
        pass
    attrs = pipeline.spans()["fields"].attributes
    assert attrs is not None
    assert attrs["rows"] == 3
    assert attrs["ratio"] == 0.5
    assert attrs["flag"] is True
    assert attrs["text"] == "héllo"
    assert list(attrs["tags"]) == ["a", "b"]  # type: ignore[arg-type]
    assert list(attrs["pair"]) == [1, 2]  # type: ignore[arg-type]
    # As the native exporter sends them: digits beyond 64 bits, U+FFFD for
    # each byte of a lone surrogate; None is no attribute (OpenTelemetry's
    # rule); other values their repr(), as the registry stored them.
    assert attrs["big"] == str(2**70)
    assert list(attrs["huge_array"]) == [str(2**70), 1]  # type: ignore[arg-type]
    assert attrs["lone"] == "a\ufffd\ufffd\ufffd"
    assert "nothing" not in attrs
    assert isinstance(attrs["obj"], str)
    assert attrs["obj"].startswith("<object object at")
    assert attrs["mixed"] == "[1, 'x']"


def test_level_busy_and_idle_are_attributes(pipeline: Pipeline) -> None:
    reg = pipeline.reg
    ends = Ends()
    reg.add_layer(ends)
    span = reg.span("timed", level="debug")
    time.sleep(0.02)  # idle: made, not entered
    with span:
        time.sleep(0.03)  # busy
    attrs = pipeline.spans()["timed"].attributes
    assert attrs is not None
    assert attrs["level"] == "DEBUG"
    assert attrs["busy_ns"] == ends.seen["timed"]["busy_ns"]
    assert attrs["idle_ns"] == ends.seen["timed"]["idle_ns"]
    assert attrs["busy_ns"] >= 30_000_000  # type: ignore[operator]
    assert attrs["idle_ns"] >= 20_000_000  # type: ignore[operator]
    exported = pipeline.spans()["timed"]
    assert exported.start_time == ends.seen["timed"]["start"]
    assert exported.end_time == ends.seen["timed"]["end"]


def test_the_target_is_the_scope_and_the_resource_is_the_providers(
    pipeline: Pipeline,
) -> None:
    reg = pipeline.reg
    with reg.span("a", target="app.db"), reg.span("b", target="app.web"):
        pass
    with reg.span("c", target="app.db"):
        pass
    spans = pipeline.spans()
    scopes = {name: s.instrumentation_scope for name, s in spans.items()}
    assert {name: s.name for name, s in scopes.items() if s} == {
        "a": "app.db",
        "b": "app.web",
        "c": "app.db",
    }
    assert scopes["a"] is scopes["c"]  # one scope per target, made once
    for span in spans.values():
        assert span.resource is pipeline.provider.resource
    assert pipeline.layer.resource is pipeline.provider.resource
    assert spans["a"].resource.attributes["service.name"] == "otel-layer-test"


# === Events, links, errors ===


def test_events_are_span_events_timed_within_their_span(pipeline: Pipeline) -> None:
    reg = pipeline.reg
    with reg.span("outer", target="app"):
        reg.event("first", level="warn", key="k")
        time.sleep(0.002)
        with reg.span("inner"):
            reg.event("in inner", n=[1, 2])
        time.sleep(0.002)
        reg.event("second", target="")
    reg.event("outside any span")
    spans = pipeline.spans()
    outer, inner = spans["outer"], spans["inner"]
    assert [e.name for e in outer.events] == ["first", "second"]
    assert [e.name for e in inner.events] == ["in inner"]
    first, second = outer.events
    assert dict(first.attributes or {}) == {"key": "k", "level": "WARN", "target": __name__}
    assert dict(second.attributes or {}) == {"level": "INFO"}  # an empty target is left out
    assert list((inner.events[0].attributes or {})["n"]) == [1, 2]  # type: ignore[arg-type]
    assert outer.start_time is not None
    assert outer.end_time is not None
    assert outer.start_time <= first.timestamp < second.timestamp <= outer.end_time
    assert first.timestamp < inner.events[0].timestamp < second.timestamp
    assert inner.start_time is not None
    assert inner.end_time is not None
    assert first.timestamp <= inner.start_time <= inner.events[0].timestamp <= inner.end_time
    assert inner.end_time <= second.timestamp
    assert pipeline.layer._pending == {}


def test_event_times_are_on_the_spans_clock_when_the_system_clock_steps(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The registry's times come from its own clock (the TSC, set to the
    # wall clock once); time.time_ns() may step (NTP) or drift from it.
    # Events are timed on the span's clock, so they stay where they were.
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 3600 * 10**9)
    reg = pipeline.reg
    with reg.span("stepped"):
        time.sleep(0.002)
        reg.event("a")
        time.sleep(0.002)
        reg.event("b")
        time.sleep(0.002)
    monkeypatch.undo()
    span = pipeline.spans()["stepped"]
    a, b = span.events
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time + 2_000_000 <= a.timestamp
    assert a.timestamp + 2_000_000 <= b.timestamp
    assert b.timestamp + 2_000_000 <= span.end_time


def test_an_event_after_its_spans_end_is_dropped_and_nothing_is_kept(
    pipeline: Pipeline,
) -> None:
    reg = pipeline.reg
    with reg.span("held") as span:
        clone = span.clone()  # keeps it live past its end (R14)
        held_id = span.id
    reg.event("too late", parent=held_id)
    clone.close()
    assert [e.name for e in pipeline.spans()["held"].events] == []
    assert pipeline.layer._pending == {}


def test_follows_from_is_a_link(pipeline: Pipeline) -> None:
    reg = pipeline.reg
    with reg.span("cause") as cause:
        cause_ids = (cause.ref.trace_id, cause.ref.span_id)
        with reg.span("effect", parent=None) as effect:
            effect.follows_from(cause)
    spans = pipeline.spans()
    (link,) = spans["effect"].links
    assert (link.context.trace_id, link.context.span_id) == cause_ids
    assert spans["effect"].context.trace_id != cause_ids[0]  # a link, not a parent
    assert list(spans["cause"].links) == []


def test_an_error_is_status_error_and_an_exception_event(pipeline: Pipeline) -> None:
    reg = pipeline.reg
    with pytest.raises(ValueError, match="bad input"), reg.span("boom"):
        raise ValueError("bad input")
    with reg.span("flagged") as flagged:
        flagged.record(error=True)
    with reg.span("fine", error=False):
        pass
    spans = pipeline.spans()
    boom = spans["boom"]
    assert boom.status.status_code is StatusCode.ERROR
    assert boom.status.description == "bad input"
    (event,) = boom.events
    assert event.name == "exception"
    assert dict(event.attributes or {}) == {
        "exception.type": "ValueError",
        "exception.message": "bad input",
    }
    assert event.timestamp == boom.end_time
    assert spans["flagged"].status.status_code is StatusCode.ERROR
    assert spans["flagged"].status.description is None
    assert spans["fine"].status.status_code is StatusCode.UNSET
    assert list(spans["fine"].events) == []


# === Where spans go ===


def test_a_batch_span_processor_gets_them_on_force_flush(make: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    # A long delay: only force_flush sends them within the test.
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    reg = make()
    layer = OpenTelemetryLayer(tracer_provider=provider, registry=reg)
    reg.add_layer(layer)
    try:
        for i in range(5):
            with reg.span(f"batched {i}"):
                pass
        assert layer.force_flush(10_000)
        assert sorted(s.name for s in exporter.get_finished_spans()) == [
            f"batched {i}" for i in range(5)
        ]
    finally:
        provider.shutdown()


def test_the_global_provider_is_the_default_and_must_be_the_sdks(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = make()
    # OpenTelemetry's own: a proxy until a provider is set.
    monkeypatch.setattr(trace_api, "get_tracer_provider", trace_api.ProxyTracerProvider)
    with pytest.raises(TypeError, match="set_tracer_provider"):
        OpenTelemetryLayer(registry=reg)
    with pytest.raises(TypeError, match="SDK"):
        OpenTelemetryLayer(trace_api.NoOpTracerProvider(), registry=reg)  # type: ignore[arg-type]

    provider = TracerProvider(shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace_api, "get_tracer_provider", lambda: provider)
    reg.add_layer(OpenTelemetryLayer(registry=reg))
    # A processor added after the layer was made gets spans too.
    later = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(later))
    with reg.span("via the global provider"):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.resource is provider.resource
    assert [s.name for s in later.get_finished_spans()] == ["via the global provider"]
    provider.shutdown()


def test_a_span_processor_of_its_own(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace_api, "get_tracer_provider", trace_api.ProxyTracerProvider)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "own-processor")
    reg = make()
    mine = InMemorySpanExporter()
    layer = OpenTelemetryLayer(span_processor=SimpleSpanProcessor(mine), registry=reg)
    reg.add_layer(layer)
    # Another provider's processors see nothing of it.
    provider = TracerProvider(
        resource=Resource.create({"service.name": "provider"}), shutdown_on_exit=False
    )
    theirs = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(theirs))
    with_provider = OpenTelemetryLayer(provider, SimpleSpanProcessor(mine), registry=reg)
    for _ in range(2):
        with reg.span("own"):
            pass
    a, b = mine.get_finished_spans()
    assert a.resource is b.resource is layer.resource  # one default resource, made once
    assert a.resource.attributes["service.name"] == "own-processor"
    assert with_provider.resource is provider.resource
    assert theirs.get_finished_spans() == ()
    provider.shutdown()


def test_a_layer_of_another_registry_warns_once_and_drops_events_and_links(
    make: Any, pipeline: Pipeline
) -> None:
    other = make()
    # registry= names pipeline.reg, but the layer is added to `other`.
    other.add_layer(OpenTelemetryLayer(pipeline.provider, registry=pipeline.reg))

    def work() -> None:
        with pipeline.reg.span("decoy"), other.span("here") as here:
            other.event("lost")
            other.event("lost too")
            with other.span("after", parent=None) as after:
                after.follows_from(here)

    with pytest.warns(ConfigurationWarning, match="registry=") as w:
        work()
    assert len(w) == 1
    spans = pipeline.spans()
    assert list(spans["here"].events) == []
    assert list(spans["after"].links) == []
    assert list(spans["decoy"].events) == []  # nothing went to the wrong span
    assert other.layer_errors == 0


# === R15 ===


def test_odd_values_never_raise(pipeline: Pipeline, unraisable: Any) -> None:
    class Loud:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    reg = pipeline.reg
    with reg.span("odd", huge=10**5000, level_=Level.WARN, loud=Loud()) as span:
        span.record(**{"exception.type": 3, "exception.message": 10**5000})
        reg.event("odd event", huge=-(10**5000), lone="\ud800")
    assert reg.layer_errors == 0
    assert unraisable.seen == []
    odd = pipeline.spans()["odd"]
    attrs = odd.attributes
    assert attrs is not None
    assert isinstance(attrs["huge"], str)
    assert attrs["huge"].startswith("0x")  # past Python's digit limit
    assert odd.status.status_code is StatusCode.ERROR
    assert odd.status.description is not None
    assert odd.status.description.startswith("0x")
    (event, exception) = odd.events
    assert (event.attributes or {})["lone"] == "\ufffd\ufffd\ufffd"
    assert exception.name == "exception"
    assert (exception.attributes or {})["exception.type"] == "3"


def test_without_opentelemetry_the_package_imports_and_otel_says_what_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys

        class NoOpenTelemetry:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoOpenTelemetry())
        import pykregistry
        with pykregistry.Registry().span("fine"):
            pass
        try:
            import pykregistry.otel
        except ImportError as e:
            print(e)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install pykregistry[otel]" in done.stdout
    assert "opentelemetry" in done.stdout


# === Through the real OTLP exporters, beside the native one ===


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_through_the_sdks_otlp_exporter_as_the_native_exporter_sends_it(
    transport: str, receiver: Receiver, grpc_receiver: Receiver, make: Any
) -> None:
    """The same spans, sent by the SDK's OTLP exporter (HTTP, or gRPC to
    the gRPC receiver) through this layer and by the native exporter (always
    OTLP/HTTP), arrive the same."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": "sdk"}), shutdown_on_exit=False
    )
    if transport == "grpc":
        sdk_exporter: Any = otlp_grpc.OTLPSpanExporter(endpoint=grpc_receiver.url, insecure=True)
    else:
        sdk_exporter = otlp_http.OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(sdk_exporter))
    native = OtlpExporter(receiver.url, service_name="native")
    reg = make()
    layer = OpenTelemetryLayer(provider, registry=reg)
    reg.add_layer(layer)
    reg.add_layer(native)
    try:
        with reg.span("outer", target="app.db", level="debug", rows=3, tags=["a", "b"]) as outer:
            outer_ids = (outer.ref.trace_id, outer.ref.span_id)
            with reg.span("inner", ratio=0.5, big=2**70, flag=True, pair=(1, 2)) as inner:
                reg.event("cache miss", level="warn", key="k")
                inner.follows_from(outer)
            with pytest.raises(KeyError), reg.span("failing"):
                raise KeyError("gone")
        assert layer.force_flush(10_000)
        assert native.flush(10)
    finally:
        provider.shutdown()
        native.shutdown(1)

    # Each service's spans came by the way it was sent.
    by_grpc = {r.resource["service.name"] for r in grpc_receiver.spans()}
    by_http = {r.resource["service.name"] for r in receiver.spans()}
    assert (by_grpc, by_http) == (
        ({"sdk"}, {"native"}) if transport == "grpc" else (set(), {"sdk", "native"})
    )
    got: dict[str, dict[str, Any]] = {"sdk": {}, "native": {}}
    for r in receiver.spans() + grpc_receiver.spans():
        got[r.resource["service.name"]][r.span.name] = r
    assert sorted(got["sdk"]) == sorted(got["native"]) == ["failing", "inner", "outer"]
    outer_sdk = got["sdk"]["outer"].span
    assert outer_sdk.trace_id.hex() == f"{outer_ids[0]:032x}"
    assert outer_sdk.span_id.hex() == f"{outer_ids[1]:016x}"
    assert got["sdk"]["outer"].resource["telemetry.sdk.name"] == "opentelemetry"

    for name in ("outer", "inner", "failing"):
        assert shape(got["sdk"][name]) == shape(got["native"][name]), name
    inner_attrs = attrs(got["sdk"]["inner"].span.attributes)
    assert inner_attrs["pair"] == [1, 2]
    assert inner_attrs["big"] == str(2**70)
    assert got["sdk"]["failing"].span.status.message == "'gone'"


def test_spans_from_many_threads_all_arrive(pipeline: Pipeline) -> None:
    reg = pipeline.reg
    barrier = threading.Barrier(4)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(50):
            with reg.span(f"t{n}-{i}"):
                reg.event("tick", i=i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    spans = pipeline.spans()
    assert len(spans) == 200
    assert all([e.name for e in s.events] == ["tick"] for s in spans.values())
    assert pipeline.layer._pending == {}


# === Any field value exports (R15) ===

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.sampled_from(["\ud800", "a\udcffb", "\udfff\ud800"]),  # lone surrogates
    st.binary(max_size=8),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner) | st.tuples(inner, inner), max_leaves=6
)


@settings(deadline=None)  # examples: the hypothesis profile (conftest.py)
@given(fields=st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=6))
def test_any_field_values_export_through_the_otlp_encoder(fields: dict[str, Any]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reg = Registry(strict=True)
    reg.add_layer(OpenTelemetryLayer(provider, registry=reg))
    # Fields go in by record(): any str is a key there, "level" too; an
    # event's keywords parent, target and level are not fields.
    event_fields = {k: v for k, v in fields.items() if k not in ("parent", "target", "level")}
    with reg.span("any") as span:
        span.record(**fields)
        reg.event("any event", **event_fields)
    assert reg.layer_errors == 0
    (exported,) = exporter.get_finished_spans()
    # The encoder logs and skips an attribute it cannot encode: none is.
    body = encoder.encode_spans([exported]).SerializeToString()
    request = ExportTraceServiceRequest.FromString(body)
    encoded = request.resource_spans[0].scope_spans[0].spans[0]
    assert len(encoded.attributes) == len(exported.attributes or {})
    assert len(encoded.events[0].attributes) == len(exported.events[0].attributes or {})
    provider.shutdown()
