"""Test OTLP receivers on 127.0.0.1 (issue 11: "a test OTLP receiver (HTTP
and gRPC, decoding with opentelemetry-proto's own messages) ... started by
the test fixtures").

Both transports feed one :class:`Receiver`, which keeps every
``ExportTraceServiceRequest`` it decoded, so a test reads spans the same way
whichever way they came. The fixtures ``receiver`` (OTLP/HTTP) and
``grpc_receiver`` (OTLP/gRPC) in ``conftest.py`` start one per test with
:func:`serve_http` and :func:`serve_grpc`; each start and stop is bounded.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

# opentelemetry-proto ships the service's gRPC bindings beside its messages.
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_service
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_service_grpc

ExportTraceServiceRequest = trace_service.ExportTraceServiceRequest
ExportTraceServiceResponse = trace_service.ExportTraceServiceResponse

# How long a receiver may take to come up or go down before the test fails.
START_STOP_TIMEOUT = 10.0


# === What came in ===


@dataclass
class Received:
    """A span as the receiver decoded it, with where it came in."""

    span: Any  # trace_pb2.Span
    scope: str
    resource: dict[str, Any]


@dataclass
class Receiver:
    """An OTLP traces receiver's record: each request decoded with
    opentelemetry-proto's ``ExportTraceServiceRequest``, with its headers
    (HTTP headers or gRPC metadata, keys lower-cased).

    ``url`` is ``http://127.0.0.1:<port>``: the base URL for OTLP/HTTP, the
    endpoint for OTLP/gRPC (``insecure=True``). ``status`` is the HTTP
    status the HTTP receiver answers (200 unless a test changes it); the
    gRPC receiver always answers OK."""

    url: str = ""
    status: int = 200
    requests: list[Any] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def record(self, request: Any, headers: dict[str, str]) -> None:
        with self.lock:
            self.requests.append(request)
            self.headers.append(headers)
            self.lock.notify_all()

    def spans(self) -> list[Received]:
        with self.lock:  # reentrant: wait_for calls it holding the lock
            requests = list(self.requests)
        out = []
        for request in requests:
            for rs in request.resource_spans:
                resource = attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    out.extend(Received(s, ss.scope.name, resource) for s in ss.spans)
        return out

    def by_name(self) -> dict[str, Any]:
        return {r.span.name: r.span for r in self.spans()}

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Received]:
        """The spans, once at least ``n`` came (a hang bound, not a timing)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.spans()) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.lock.wait(left)
        return self.spans()


def value(v: Any) -> Any:
    """An ``AnyValue`` as Python: scalars, arrays as lists, empty as None."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind)


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


def shape(r: Received) -> dict[str, Any]:
    """What two exporters of the same span must agree on: all of it but the
    resource (each exporter has its own) and event times (an event carries
    no time: each layer reads the span's clock when it gets the event, so
    two layers differ by microseconds)."""
    s = r.span
    return {
        "scope": r.scope,
        "ids": (s.trace_id, s.span_id, s.parent_span_id),
        "name": s.name,
        "kind": s.kind,
        "times": (s.start_time_unix_nano, s.end_time_unix_nano),
        "attributes": attrs(s.attributes),
        "events": [(e.name, attrs(e.attributes)) for e in s.events],
        "links": [(link.trace_id, link.span_id) for link in s.links],
        "status": (s.status.code, s.status.message),
    }


def closed_port() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# === OTLP/HTTP ===


@contextmanager
def serve_http() -> Iterator[Receiver]:
    """A receiver taking ``POST /v1/traces`` (protobuf) on a free port."""
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = rec.status
            if self.path != "/v1/traces":
                status = 404
            elif status == 200:
                headers = {k.lower(): v for k, v in self.headers.items()}
                rec.record(ExportTraceServiceRequest.FromString(body), headers)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    # Listening once constructed: no wait for readiness.
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(START_STOP_TIMEOUT)
        assert not thread.is_alive(), "the OTLP/HTTP receiver did not stop"


# === OTLP/gRPC ===


class _TraceService(trace_service_grpc.TraceServiceServicer):  # type: ignore[misc]
    """``opentelemetry.proto.collector.trace.v1.TraceService/Export``; grpc
    decodes the request with the generated message class."""

    def __init__(self, rec: Receiver) -> None:
        self.rec = rec

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        headers = {k.lower(): v for k, v in context.invocation_metadata()}
        self.rec.record(request, headers)
        return ExportTraceServiceResponse()


@contextmanager
def serve_grpc() -> Iterator[Receiver]:
    """A grpcio server implementing the OTLP trace service on a free port
    (plaintext: the SDK's exporter with ``insecure=True``)."""
    rec = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_grpc.add_TraceServiceServicer_to_server(_TraceService(rec), server)
    port = server.add_insecure_port("127.0.0.1:0")  # 0: the system picks a free one
    assert port != 0, "the OTLP/gRPC receiver could not bind 127.0.0.1"
    rec.url = f"http://127.0.0.1:{port}"
    server.start()
    try:
        # Up when a channel to it connects.
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=START_STOP_TIMEOUT)
        yield rec
    finally:
        # No grace: a test is over once it asserted what came in.
        stopped = server.stop(grace=None)
        assert stopped.wait(START_STOP_TIMEOUT), "the OTLP/gRPC receiver did not stop"
