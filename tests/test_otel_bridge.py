"""The OpenTelemetry context bridge (issue 11 part 2): OpenTelemetry's
runtime context kept on the registry's stack, so that each tracer's spans
nest under the other's, whoever made the innermost one.

Each test runs with the bridge installed on its own registry and restores
OpenTelemetry's runtime context afterwards.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import opentelemetry.context as otel_context
import pytest
import requests
from opentelemetry import trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pykregistry
from pykregistry import Registry
from pykregistry.otel import RuntimeContext, install


@pytest.fixture
def reg() -> Iterator[Registry]:
    before = otel_context._RUNTIME_CONTEXT  # type: ignore[attr-defined]
    registry = Registry()
    install(registry)
    try:
        yield registry
    finally:
        otel_context._RUNTIME_CONTEXT = before  # type: ignore[attr-defined]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("theirs")


def finished(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def test_inside_our_span_opentelemetry_current_span_is_ours(reg: Registry) -> None:
    with reg.span("ours") as ours:
        ctx = trace.get_current_span().get_span_context()
        assert ctx.is_valid
        assert (ctx.trace_id, ctx.span_id) == (ours.ref.trace_id, ours.ref.span_id)
        assert ctx.trace_flags == ours.ref.trace_flags
        assert not ctx.is_remote
    assert not trace.get_current_span().get_span_context().is_valid


def test_an_opentelemetry_span_in_ours_is_its_child(
    reg: Registry, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    with reg.span("ours") as ours:
        ids = (ours.ref.trace_id, ours.ref.span_id)
        with tracer.start_as_current_span("theirs"):
            pass
    theirs = finished(exporter)["theirs"]
    assert theirs.parent is not None
    assert (theirs.context.trace_id, theirs.parent.span_id) == ids


def test_nesting_interleaves_ours_theirs_ours_theirs(
    reg: Registry, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    with reg.span("ours1") as ours1:
        o1 = ours1.ref
        o1_ids = (o1.trace_id, o1.span_id)
        with tracer.start_as_current_span("theirs1") as theirs1:
            t1 = theirs1.get_span_context()
            with reg.span("ours2") as ours2:
                o2 = ours2.ref
                # The trace parent is theirs1, the innermost span where ours2
                # was made; the registry parent stays ours1.
                assert o2.parent_id == ours1.id
                assert (o2.trace_id, o2.parent_span_id) == (t1.trace_id, t1.span_id)
                o2_span_id = o2.span_id
                with tracer.start_as_current_span("theirs2"):
                    pass
    spans = finished(exporter)
    assert spans["theirs1"].context.trace_id == o1_ids[0]
    assert spans["theirs1"].parent is not None
    assert spans["theirs1"].parent.span_id == o1_ids[1]
    assert spans["theirs2"].parent is not None
    assert spans["theirs2"].parent.span_id == o2_span_id
    assert spans["theirs2"].context.trace_id == o1_ids[0]
    assert len(reg) == 0


def test_an_opentelemetry_root_becomes_the_trace_parent_of_our_root(
    reg: Registry, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("theirs") as theirs:
        t = theirs.get_span_context()
        with reg.span("ours") as ours:
            r = ours.ref
            assert r.parent_id is None  # a root in the registry
            assert (r.trace_id, r.parent_span_id) == (t.trace_id, t.span_id)
            # Its children follow it, in the registry and in the trace.
            with reg.span("child") as child:
                assert child.ref.parent_id == ours.id
                assert child.ref.parent_span_id == r.span_id
                assert child.ref.trace_id == t.trace_id


def test_an_explicit_parent_wins_over_an_opentelemetry_span(
    reg: Registry, tracer: trace.Tracer
) -> None:
    with reg.span("outer") as outer:
        outer_ids = (outer.ref.trace_id, outer.ref.span_id)
        with (
            tracer.start_as_current_span("theirs", context=otel_context.Context()),
            reg.span("explicit", parent=outer) as explicit,
        ):
            assert (explicit.ref.trace_id, explicit.ref.parent_span_id) == outer_ids
        with reg.span("root", parent=None) as root:
            assert root.ref.parent_span_id is None


def test_the_sampled_flag_and_tracestate_of_their_span_carry_over(
    reg: Registry, tracer: trace.Tracer
) -> None:
    remote = trace.SpanContext(
        0xABC,
        0xDEF,
        is_remote=True,
        trace_flags=trace.TraceFlags(0),
        trace_state=trace.TraceState([("vendor", "v1")]),
    )
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(remote)))
    try:
        with reg.span("ours") as ours:
            r = ours.ref
            assert (r.trace_id, r.parent_span_id) == (0xABC, 0xDEF)
            assert r.trace_flags == 0
            assert r.tracestate == "vendor=v1"
            headers: dict[str, str] = {}
            pykregistry.inject(headers, registry=reg)
            assert headers["traceparent"].endswith("-00")
            assert headers["tracestate"] == "vendor=v1"
            # And OpenTelemetry sees our span with them.
            seen = trace.get_current_span().get_span_context()
            assert (seen.trace_id, seen.span_id) == (0xABC, r.span_id)
            assert seen.trace_state.get("vendor") == "v1"
    finally:
        otel_context.detach(token)


def test_attach_keeps_the_context_and_detach_restores_the_one_before(reg: Registry) -> None:
    key = otel_context.create_key("k")
    outer = otel_context.set_value(key, "outer")
    t1 = otel_context.attach(outer)
    t2 = otel_context.attach(otel_context.set_value(key, "inner"))
    assert otel_context.get_value(key) == "inner"
    otel_context.detach(t2)
    assert otel_context.get_value(key) == "outer"
    otel_context.detach(t1)
    assert otel_context.get_value(key) is None
    # A detach twice, or of a foreign token, is ignored, never raised nor
    # logged as "Failed to detach context".
    otel_context.detach(t1)
    otel_context.detach(object())  # type: ignore[arg-type]


def test_our_span_on_top_keeps_the_attached_context_values(reg: Registry) -> None:
    key = otel_context.create_key("baggage-ish")
    token = otel_context.attach(otel_context.set_value(key, "v"))
    try:
        with reg.span("ours") as ours:
            assert otel_context.get_value(key) == "v"
            assert trace.get_current_span().get_span_context().span_id == ours.ref.span_id
    finally:
        otel_context.detach(token)


def test_a_generator_detached_in_another_task_leaves_both_stacks_right(
    reg: Registry, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    # OpenTelemetry's own runtime context fails here ("Failed to detach
    # context", opentelemetry-python#2606): the generator's span is attached
    # in one task and detached where the generator is closed, in another.
    def gen() -> Iterator[int]:
        with tracer.start_as_current_span("in-generator"):
            yield 1
            yield 2

    async def main() -> None:
        g = gen()
        with reg.span("task-a"):
            assert await asyncio.create_task(first(g)) == 1
        await asyncio.create_task(close(g))
        # Nothing of it is current anywhere now.
        assert not trace.get_current_span().get_span_context().is_valid

    async def first(g: Iterator[int]) -> int:
        return next(g)

    async def close(g: Iterator[int]) -> None:
        g.close()  # type: ignore[attr-defined]

    errors: list[Any] = []
    handler = _ErrorsTo(errors)
    otel_context.logger.addHandler(handler)
    try:
        asyncio.run(main())
    finally:
        otel_context.logger.removeHandler(handler)
    assert errors == []
    assert "in-generator" in finished(exporter)
    assert len(reg) == 0


class _ErrorsTo:
    """A logging handler that keeps what it is given (duck-typed)."""

    level = 0

    def __init__(self, sink: list[Any]) -> None:
        self.sink = sink

    def handle(self, record: Any) -> None:
        self.sink.append(record)


def test_tasks_each_see_their_own_innermost_span(
    reg: Registry, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    async def worker(name: str, barrier: asyncio.Barrier) -> tuple[int, int]:
        with tracer.start_as_current_span(name) as theirs:
            await barrier.wait()
            with reg.span(name + ".ours") as ours:
                await barrier.wait()
                return ours.ref.parent_span_id or 0, theirs.get_span_context().span_id

    async def main() -> list[tuple[int, int]]:
        barrier = asyncio.Barrier(3)
        with reg.span("root"):
            return list(await asyncio.gather(*(worker(f"w{i}", barrier) for i in range(3))))

    for parent_span_id, their_span_id in asyncio.run(main()):
        assert parent_span_id == their_span_id


def test_threads_start_empty_and_in_current_span_carries_both(
    reg: Registry, tracer: trace.Tracer
) -> None:
    def current_ids() -> tuple[bool, int]:
        ctx = trace.get_current_span().get_span_context()
        return ctx.is_valid, ctx.span_id

    barrier = threading.Barrier(2)

    def both() -> tuple[bool, int]:
        barrier.wait(timeout=10)
        return current_ids()

    with tracer.start_as_current_span("theirs") as theirs, ThreadPoolExecutor(2) as pool:
        plain = pool.submit(both)
        wrapped = pool.submit(pykregistry.in_current_span(both))
        assert plain.result(timeout=10) == (False, 0)
        assert wrapped.result(timeout=10) == (True, theirs.get_span_context().span_id)


def test_our_spans_without_opentelemetry_are_unaffected(reg: Registry) -> None:
    # Nothing attached: the registry's current span and parents are its own.
    with reg.span("a") as a, reg.span("b") as b:
        assert b.ref.parent_id == a.id
        assert b.ref.parent_span_id == a.ref.span_id
        assert reg.current_span() == b.id


def test_other_registries_do_not_see_the_bridged_contexts(
    reg: Registry, tracer: trace.Tracer
) -> None:
    other = Registry()
    with tracer.start_as_current_span("theirs"), other.span("elsewhere") as s:
        assert s.ref.parent_span_id is None


def test_runtime_context_names_its_registry(reg: Registry) -> None:
    runtime = otel_context._RUNTIME_CONTEXT  # type: ignore[attr-defined]
    assert isinstance(runtime, RuntimeContext)
    assert runtime.registry is reg
    assert RuntimeContext().registry is pykregistry.default_registry()


def test_otel_python_context_selects_the_bridge_on_the_default_registry() -> None:
    code = textwrap.dedent(
        """
        import pykregistry
        from opentelemetry import context, trace
        from pykregistry.otel import RuntimeContext
        assert isinstance(context._RUNTIME_CONTEXT, RuntimeContext), context._RUNTIME_CONTEXT
        with pykregistry.span("ours") as ours:
            ctx = trace.get_current_span().get_span_context()
            assert ctx.span_id == ours.ref.span_id, (ctx, ours.ref.span_id)
        """
    )
    env = {**os.environ, "OTEL_PYTHON_CONTEXT": "pykregistry"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (self.headers.get("traceparent") or "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_requests_instrumentation_sends_our_ids(
    reg: Registry, exporter: InMemorySpanExporter
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with reg.span("handler") as handler:
            ids = (handler.ref.trace_id, handler.ref.span_id)
            url = f"http://127.0.0.1:{server.server_address[1]}/"
            sent = requests.get(url, timeout=10).text
    finally:
        instrumentor.uninstrument()
        server.shutdown()
        server.server_close()
    (client,) = exporter.get_finished_spans()
    assert client.parent is not None
    assert (client.context.trace_id, client.parent.span_id) == ids
    # The header the server got names the requests span, in our trace.
    assert sent == f"00-{ids[0]:032x}-{client.context.span_id:016x}-01"


def test_r15_a_bridge_that_fails_never_raises_into_opentelemetry_callers(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pykregistry._otel_context as bridge

    def broken(*args: object) -> object:
        raise RuntimeError("no entry")

    monkeypatch.setattr(bridge._native, "_otel_attach", broken)
    monkeypatch.setattr(bridge._native, "_otel_current", broken)
    key = otel_context.create_key("k")
    token = otel_context.attach(otel_context.set_value(key, "v"))
    assert otel_context.get_value(key) is None  # not attached, and no error
    otel_context.detach(token)
