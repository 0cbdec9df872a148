"""The Phoenix round trip (issue 11): the demo workload sent to a real
collector and UI, read back, and compared with what the run recorded.

    python tests/e2e/phoenix_e2e.py [--fresh] [--venv DIR]      (or: make e2e)

Steps, each with a time bound (``--help`` lists them):

1. Install ``arize-phoenix`` (:data:`PHOENIX`) into a virtualenv of its own.
   Without ``--fresh`` the virtualenv is kept under
   ``${XDG_CACHE_HOME:-~/.cache}/pykregistry/e2e/`` and reused by the
   next run with the same pin and interpreter; ``--fresh`` installs into a
   temporary directory removed at the end. A virtualenv is only reused once
   its install completed.
2. Start ``phoenix serve`` on 127.0.0.1 and free ports, its database in a
   temporary ``PHOENIX_WORKING_DIR``, its telemetry and other outside
   requests turned off, and wait for ``/healthz``.
3. Per run, under a project of its own (the resource attribute
   ``openinference.project.name``): run ``python -m pykregistry demo``'s
   workload through a registry, record every span locally as it ends, and
   send the spans to Phoenix's ``/v1/traces``. ``native`` sends them with
   :class:`pykregistry.OtlpExporter`; ``sdk`` through
   ``pykregistry.otel.OpenTelemetryLayer`` and the OpenTelemetry SDK's
   ``BatchSpanProcessor`` and OTLP/HTTP exporter, with the context bridge
   installed (``pykregistry.otel.install``): there, one of our spans makes
   a request with ``requests`` (instrumented by
   ``opentelemetry-instrumentation-requests``) to a local ``http.server``;
   its span must be our span's child in Phoenix, and the ``traceparent``
   the server got must carry our trace id and the requests span's id.
4. Read the spans back from ``GET /v1/projects/{name}/spans``, polling until
   all have arrived (ingestion is asynchronous), and check each one's name,
   trace id, parent, attributes (the span's fields), events and error
   status against the local record.
5. Stop Phoenix (SIGTERM, then SIGKILL), also when a step failed.

Exits 0 when every run matched, 1 otherwise. Not part of the pytest run: the
file's name does not match pytest's ``test_*.py``, and it needs the network
once to install Phoenix (PyPI) and a few minutes on a cold cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pykregistry import Event, OtlpExporter, Registry, SpanRef
from pykregistry.__main__ import _workload as demo_workload

# The collector under test. 20.26.1 is the version this was written against;
# ~= admits its bug-fix releases only (>= 20.26.1, < 20.27).
PHOENIX = "arize-phoenix~=20.26.1"
# Phoenix 20 requires Python >= 3.11 (pykregistry itself, >= 3.10).
PHOENIX_MIN_PYTHON = (3, 11)

# Time bounds, in seconds. A cold install took 72 s to 250 s on 2 shared,
# busy cores; the rest of a run, 15 s to 25 s.
INSTALL_TIMEOUT = 900.0
START_TIMEOUT = 180.0  # the first start creates and migrates the database: ~25 s
EXPORT_TIMEOUT = 30.0
READ_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
HTTP_TIMEOUT = 5.0

HOST = "127.0.0.1"


class E2EError(Exception):
    """A step failed; the message says which and why."""


# === what the run records locally ===


@dataclass
class SentSpan:
    """A span as the registry ended it: what Phoenix should hold."""

    span_id: str
    """16 hex digits, as OTLP JSON and Phoenix write it."""
    trace_id: str
    """32 hex digits."""
    parent_span_id: str | None
    name: str
    fields: dict[str, object]
    events: list[str] = field(default_factory=list)
    """The messages of the events emitted inside the span, in order."""


class SpanLog:
    """A layer that records every span's ids, name and final fields at its
    end, and the events emitted inside it."""

    def __init__(self) -> None:
        self.spans: list[SentSpan] = []
        # Registry ids of the live spans → their records, for on_event
        # (an event names its parent by registry id).
        self._live: dict[int, SentSpan] = {}

    def on_new_span(self, span: SpanRef) -> None:
        parent = span.parent_span_id
        self._live[span.id] = SentSpan(
            span_id=f"{span.span_id:016x}",
            trace_id=f"{span.trace_id:032x}",
            parent_span_id=None if parent is None else f"{parent:016x}",
            name=span.name,
            fields={},
        )

    def on_event(self, event: Event) -> None:
        parent = self._live.get(event.parent_id) if event.parent_id is not None else None
        if parent is not None:
            parent.events.append(event.message)

    def on_end(self, span: SpanRef) -> None:
        record = self._live.get(span.id)
        if record is not None:
            record.fields = span.fields
            self.spans.append(record)

    def on_close(self, span: SpanRef) -> None:
        self._live.pop(span.id, None)


# === the runs ===


def export_native(base_url: str, project: str) -> list[SentSpan]:
    """Runs the demo workload through a registry whose
    :class:`~pykregistry.OtlpExporter` sends to Phoenix under `project`;
    returns the spans it ended, once all were accepted."""
    log = SpanLog()
    exporter = OtlpExporter(
        base_url,
        resource_attributes={"openinference.project.name": project},
        timeout=EXPORT_TIMEOUT,
    )
    registry = Registry(layers=[log, exporter])
    demo_workload(registry)
    in_time = exporter.shutdown(EXPORT_TIMEOUT)
    sent = len(log.spans)
    if not in_time or (exporter.exported, exporter.dropped, exporter.failed) != (sent, 0, 0):
        raise E2EError(
            f"native export to {exporter.endpoint}: {sent} spans ended, "
            f"exported={exporter.exported} dropped={exporter.dropped} "
            f"failed={exporter.failed}, shutdown in time: {in_time}"
        )
    return log.spans


def export_sdk(base_url: str, project: str) -> list[SentSpan]:
    """Runs the demo workload through a registry whose
    ``pykregistry.otel.OpenTelemetryLayer`` hands its spans to an SDK
    ``TracerProvider`` (``BatchSpanProcessor``, ``OTLPSpanExporter`` over
    HTTP) that sends to Phoenix under `project`, with OpenTelemetry's
    context on the registry's stack (the bridge); then one of our spans
    makes an instrumented ``requests`` call to a local server. Returns the
    spans it ended (the requests span among them), once the provider has
    shut down in time."""
    import opentelemetry.context as otel_context
    import requests
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from pykregistry.otel import OpenTelemetryLayer, install

    provider = TracerProvider(resource=Resource({"openinference.project.name": project}))
    exporter = OTLPSpanExporter(endpoint=f"{base_url}/v1/traces", timeout=EXPORT_TIMEOUT)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    # Every span the provider ends, ours (through the layer) and the
    # requests instrumentation's, to find the latter.
    theirs = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(theirs))
    log = SpanLog()
    registry = Registry(layers=[log])
    registry.add_layer(OpenTelemetryLayer(tracer_provider=provider, registry=registry))
    before = otel_context._RUNTIME_CONTEXT  # type: ignore[attr-defined]
    install(registry)
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        demo_workload(registry)
        with _header_echo() as url, registry.span("e2e.request", url=url):
            header = requests.get(url, timeout=EXPORT_TIMEOUT).text
    finally:
        instrumentor.uninstrument()
        otel_context._RUNTIME_CONTEXT = before  # type: ignore[attr-defined]
    flushed = provider.force_flush(int(EXPORT_TIMEOUT * 1000))
    provider.shutdown()
    if not flushed:
        raise E2EError(f"sdk export to {base_url}/v1/traces: not flushed in {EXPORT_TIMEOUT} s")
    fetch = next(s for s in log.spans if s.name == "e2e.request")
    (request,) = [
        s
        for s in theirs.get_finished_spans()
        if s.instrumentation_scope is not None and "requests" in s.instrumentation_scope.name
    ]
    sent = SentSpan(
        span_id=f"{request.context.span_id:016x}",
        trace_id=f"{request.context.trace_id:032x}",
        parent_span_id=(None if request.parent is None else f"{request.parent.span_id:016x}"),
        name=request.name,
        fields={},
    )
    if (sent.trace_id, sent.parent_span_id) != (fetch.trace_id, fetch.span_id):
        raise E2EError(f"the requests span {sent} is not a child of our span {fetch}")
    if header != f"00-{fetch.trace_id}-{sent.span_id}-01":
        raise E2EError(f"the server got traceparent {header!r}, not our trace and request span")
    print(f"run sdk: requests span {sent.span_id} under our span, traceparent {header}")
    return [*log.spans, sent]


@contextlib.contextmanager
def _header_echo() -> Iterator[str]:
    """A local ``http.server`` on 127.0.0.1 that answers with the
    ``traceparent`` header it got; its URL."""
    import http.server
    import threading

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (self.headers.get("traceparent") or "").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((HOST, 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


RUNS: dict[str, Callable[[str, str], list[SentSpan]]] = {
    "native": export_native,
    "sdk": export_sdk,
}
"""Run name → function sending the workload to Phoenix (base URL, project).
Each run has a project of its own, ``pykregistry-<run name>``."""


# === checking what Phoenix holds ===


def compare(sent: Sequence[SentSpan], found: Sequence[dict[str, Any]]) -> list[str]:
    """What differs between the spans sent and those Phoenix returned
    (empty if nothing)."""
    problems: list[str] = []
    by_id = {s["context"]["span_id"]: s for s in found}
    if len(by_id) != len(found):
        problems.append(f"Phoenix returned {len(found)} spans but {len(by_id)} distinct ids")
    for extra in sorted(by_id.keys() - {s.span_id for s in sent}):
        problems.append(f"span {extra} ({by_id[extra]['name']!r}) was never sent")
    for span in sent:
        where = f"span {span.span_id} ({span.name!r})"
        got = by_id.get(span.span_id)
        if got is None:
            problems.append(f"{where}: not found")
            continue
        checks: list[tuple[str, object, object]] = [
            ("name", got["name"], span.name),
            ("trace id", got["context"]["trace_id"], span.trace_id),
            ("parent", got.get("parent_id"), span.parent_span_id),
        ]
        attributes = got.get("attributes") or {}
        checks.extend(
            (f"attribute {key!r}", attributes.get(key, "<missing>"), value)
            for key, value in span.fields.items()
        )
        # A recorded error is status ERROR plus an "exception" event; other
        # events keep their message as name, in order.
        event_names = [e["name"] for e in got.get("events") or []]
        errored = span.fields.get("error") is True
        checks.append(("status", got.get("status_code"), "ERROR" if errored else "UNSET"))
        checks.append(("events", event_names, [*span.events, *(["exception"] if errored else [])]))
        problems.extend(
            f"{where}: {what} is {actual!r}, sent {expected!r}"
            for what, actual, expected in checks
            if actual != expected
        )
    return problems


def read_spans(base_url: str, project: str, want: set[str], timeout: float) -> list[dict[str, Any]]:
    """Every span of `project`, polled until the ids in `want` are all there
    or `timeout` seconds passed (then what there is)."""
    deadline = time.monotonic() + timeout
    path = f"{base_url}/v1/projects/{urllib.parse.quote(project, safe='')}/spans"
    while True:
        spans: list[dict[str, Any]] = []
        cursor: str | None = None
        try:
            while True:
                query = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
                page = _get_json(f"{path}?{urllib.parse.urlencode(query)}")
                spans.extend(page["data"])
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        except urllib.error.HTTPError as e:
            if e.code != 404:  # 404: the project does not exist until its first span
                raise
        if want <= {s["context"]["span_id"] for s in spans} or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


# === Phoenix ===


def phoenix_python(given: str | None) -> str:
    """An interpreter Phoenix supports: `given`, this one, or a newer
    python3.X on PATH."""
    if given:
        return given
    if sys.version_info >= PHOENIX_MIN_PYTHON:
        return sys.executable
    for minor in range(14, PHOENIX_MIN_PYTHON[1] - 1, -1):
        found = shutil.which(f"python3.{minor}")
        if found:
            return found
    raise E2EError(
        f"{PHOENIX} needs Python >= 3.11 and this is {sys.version.split()[0]}; "
        "give one with --phoenix-python"
    )


def install_phoenix(venv: Path, python: str) -> bool:
    """Makes `venv` a virtualenv with Phoenix installed, unless an earlier
    run completed that install there; whether it installed."""
    # Written last: an interrupted install has none, and is started afresh.
    marker = venv / "pykregistry-e2e-installed"
    stamp = f"{PHOENIX}\n{os.path.realpath(shutil.which(python) or python)}\n"
    if marker.is_file() and marker.read_text() == stamp:
        return False
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + INSTALL_TIMEOUT
    _run([python, "-m", "venv", str(venv)], deadline, "creating the virtualenv")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "--no-input", "-q", PHOENIX], deadline, f"pip install {PHOENIX}")
    marker.write_text(stamp)
    return True


def installed_version(venv: Path) -> str:
    for info in venv.glob("lib/python3*/site-packages/arize_phoenix-*.dist-info"):
        return info.name.removeprefix("arize_phoenix-").removesuffix(".dist-info")
    return "?"


@contextlib.contextmanager
def phoenix_server(venv: Path, workdir: Path) -> Iterator[str]:
    """Runs ``phoenix serve`` on 127.0.0.1 and yields its base URL once
    ``/healthz`` answers; stops it on the way out, whatever happened."""
    http_port, grpc_port = free_ports(2)
    # Nothing inherited that would point Phoenix elsewhere (its own
    # PHOENIX_* settings, an OTel exporter of its own), nothing that goes
    # to the internet: telemetry pixels, web fonts, the agent assistant.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
    env |= {
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_HOST": HOST,
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
        "PHOENIX_ENABLE_MCP_SERVER": "false",
    }
    base_url = f"http://{HOST}:{http_port}"
    log_path = workdir / "phoenix.log"
    with open(log_path, "wb") as log:
        # A session of its own, so that stopping it reaches any process it
        # starts (and a Ctrl-C of ours does not race our own stop).
        server = subprocess.Popen(
            [str(venv / "bin" / "phoenix"), "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        started = time.monotonic()
        deadline = started + START_TIMEOUT
        while True:
            if server.poll() is not None:
                raise E2EError(f"phoenix serve exited with {server.returncode}:\n{_tail(log_path)}")
            with contextlib.suppress(OSError):
                if _get(f"{base_url}/healthz", timeout=1.0) == b"OK":
                    break
            if time.monotonic() > deadline:
                raise E2EError(
                    f"phoenix serve: no /healthz within {START_TIMEOUT:.0f} s:\n{_tail(log_path)}"
                )
            time.sleep(0.25)
        print(f"phoenix serve: up at {base_url} in {time.monotonic() - started:.1f} s")
        yield base_url
    finally:
        stopping = time.monotonic()
        how = stop(server)
        print(f"phoenix serve: {how} in {time.monotonic() - stopping:.1f} s")


def stop(server: subprocess.Popen[bytes]) -> str:
    """Stops `server`'s process group: SIGTERM, then SIGKILL after
    :data:`STOP_TIMEOUT`; how it went."""
    if server.poll() is not None:
        return f"had already exited ({server.returncode})"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(5)
        return f"killed (no exit within {STOP_TIMEOUT:.0f} s of SIGTERM)"
    # The group may outlive its leader; no member of it is wanted now.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    return "stopped"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 just now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]


# === plumbing ===

# Straight to 127.0.0.1, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, timeout: float = HTTP_TIMEOUT) -> bytes:
    with _OPENER.open(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def _get_json(url: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(_get(url))
    return result


def _run(command: list[str], deadline: float, what: str) -> None:
    left = deadline - time.monotonic()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=max(left, 1.0), check=False
        )
    except subprocess.TimeoutExpired as e:
        raise E2EError(f"{what}: not done within {INSTALL_TIMEOUT:.0f} s") from e
    if done.returncode:
        output = (done.stdout + done.stderr)[-4000:]
        raise E2EError(f"{what}: exit status {done.returncode}\n{output}")


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    key = re.sub(r"[^A-Za-z0-9.]+", "-", PHOENIX)
    return Path(root) / "pykregistry" / "e2e" / key


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # `timeout` (as .ci/run uses it) sends SIGTERM: unwind, so that the
    # finally blocks stop Phoenix and remove the temporary directories.
    raise SystemExit(128 + signum)


# === main ===


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=(
            f"Time bounds: install {INSTALL_TIMEOUT:.0f} s, start {START_TIMEOUT:.0f} s, "
            f"export {EXPORT_TIMEOUT:.0f} s and read {READ_TIMEOUT:.0f} s per run, "
            f"stop {STOP_TIMEOUT:.0f} s."
        ),
    )
    parser.add_argument(
        "--venv",
        type=Path,
        help=f"Phoenix's virtualenv, reused if complete (default: {_cache_dir()})",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="install into a temporary virtualenv, removed after"
    )
    parser.add_argument(
        "--phoenix-python",
        help="the interpreter of Phoenix's virtualenv (default: this one if >= 3.11)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # The native exporter's HTTP client honours *_PROXY; 127.0.0.1 is not
    # to go through one.
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), HOST]))

    started = time.monotonic()
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pykregistry-e2e-") as temp:
        try:
            venv = Path(temp) / "phoenix-venv" if args.fresh else (args.venv or _cache_dir())
            python = phoenix_python(args.phoenix_python)
            step = time.monotonic()
            installed = install_phoenix(venv, python)
            print(
                f"{PHOENIX}: {installed_version(venv)} "
                f"{'installed' if installed else 'reused'} in {venv} "
                f"({time.monotonic() - step:.1f} s)"
            )
            workdir = Path(temp) / "phoenix-working-dir"
            workdir.mkdir()
            with phoenix_server(venv, workdir) as base_url:
                for run, export in RUNS.items():
                    try:
                        failures.extend(check_run(base_url, run, export))
                    except E2EError as e:  # the other runs still run
                        failures.append(f"run {run}: {e}")
        except E2EError as e:
            failures.append(str(e))
    print(f"total: {time.monotonic() - started:.1f} s")
    if failures:
        print("FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    print("phoenix e2e: ok")
    return 0


def check_run(base_url: str, run: str, export: Callable[[str, str], list[SentSpan]]) -> list[str]:
    """Sends the workload with `export` under a project named after `run`,
    reads it back, prints what it saw; the problems found."""
    project = f"pykregistry-{run}"
    step = time.monotonic()
    sent = export(base_url, project)
    traces = len({s.trace_id for s in sent})
    print(
        f"run {run}: {len(sent)} spans in {traces} traces sent to project {project!r} "
        f"in {time.monotonic() - step:.2f} s"
    )
    step = time.monotonic()
    found = read_spans(base_url, project, {s.span_id for s in sent}, READ_TIMEOUT)
    problems = compare(sent, found)
    print(
        f"run {run}: {len(found)} spans found in {time.monotonic() - step:.2f} s; "
        f"names, trace ids, parents, attributes, events, status: "
        f"{'ok' if not problems else f'{len(problems)} problem(s)'}"
    )
    return [f"run {run}: {p}" for p in problems]


if __name__ == "__main__":
    sys.exit(main())
