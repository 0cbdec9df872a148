"""Side-by-side timings of a span's with-block, as ratios in one run.

    python -m pykregistry bench [--rounds 15] [--number 100000] [--markdown]

Each case is timed in interleaved rounds (every case once per round, so
machine noise hits all of them alike); the table gives the median ns per
operation and its ratios to an empty ``with CM():`` over a Python class, to
P1 (``with reg.span("x"):``) and to a plain function call, all measured in
the same rounds. The OpenTelemetry SDK row appears when ``opentelemetry-sdk``
is installed, and P11's SDK row (BatchSpanProcessor and the OTLP/HTTP
exporter) when ``opentelemetry-exporter-otlp-proto-http`` is too; P11 sends
to a collector on loopback, a receiver in a subprocess that accepts every
request. Memory per live span is the growth of resident memory while
200,000 handles are held (Linux: read from ``/proc``). Each target of the
specification that this measures (P1-P5, P8, P11, P13) is shown beside its
measure, met or not. ``--markdown`` prints the same as Markdown tables after a
line saying when, how and on what machine they were measured: the docs'
figures page is that output (``docs/figures.md``). The test suite runs this
only to check the tables' shape: timings belong in benchmarks, never in
assertions.
"""

from __future__ import annotations

import argparse
import contextvars
import datetime
import gc
import importlib
import importlib.metadata
import itertools
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pykregistry

# --- baselines ---------------------------------------------------------------


class CM:
    def __enter__(self) -> CM:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class PurePythonRegistry:
    """A minimal dict registry with a per-task stack in a ContextVar: what a
    careful pure-Python implementation costs."""

    def __init__(self) -> None:
        self.spans: dict[int, list[object]] = {}
        self.ids = itertools.count(1)
        self.stack: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar(
            "stack", default=()
        )

    def span(self, name: str) -> PurePythonSpan:
        stack = self.stack.get()
        sid = next(self.ids)
        self.spans[sid] = [name, stack[-1] if stack else None, 1]
        return PurePythonSpan(self, sid)


class PurePythonSpan:
    __slots__ = ("reg", "sid", "token")

    def __init__(self, reg: PurePythonRegistry, sid: int) -> None:
        self.reg = reg
        self.sid = sid

    def __enter__(self) -> PurePythonSpan:
        self.token = self.reg.stack.set((*self.reg.stack.get(), self.sid))
        return self

    def __exit__(self, *exc: object) -> None:
        self.reg.stack.reset(self.token)
        del self.reg.spans[self.sid]


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def nested_ns_per_span(reg: pykregistry.Registry, depth: int, rounds: int) -> float:
    """Median ns per span of `depth` nested spans, entered then exited (P13)."""
    per: list[float] = []
    for _ in range(rounds):
        spans = []
        start = time.perf_counter_ns()
        for _ in range(depth):
            s = reg.span("deep")
            s.__enter__()
            spans.append(s)
        while spans:
            spans.pop().__exit__(None, None, None)
        per.append((time.perf_counter_ns() - start) / depth)
    return statistics.median(per)


def bytes_per_live_span(make: Callable[[], object], n: int = 200_000) -> float:
    gc.collect()
    before = rss_bytes()
    held = [make() for _ in range(n)]
    after = rss_bytes()
    per = (after - before) / n
    del held
    return per


# A collector on loopback for P11: accepts every POST and discards it.
LOOPBACK_COLLECTOR = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def loopback_collector(at_end: list[Callable[[], None]]) -> str:
    """Starts the P11 collector in a subprocess (stopped at the end); its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LOOPBACK_COLLECTOR], stdout=subprocess.PIPE, text=True
    )

    def stop() -> None:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    at_end.append(stop)
    assert proc.stdout is not None
    return f"http://127.0.0.1:{int(proc.stdout.readline())}"


# --- cases -------------------------------------------------------------------

# The cases the targets are computed from, by name.
BASELINE = "empty with CM()"
P1 = "P1 with reg.span('x')"
P2 = "P2 3 nested"
CALL = "plain call f()"
P8 = "P8 JsonLines layer writing a file"
P8_CHROME = "P8 ChromeTrace layer writing a file"
P8_FLAME = "P8 FlameGraph layer"
OTEL = "OpenTelemetry SDK, no processor"
P11 = "P11 OtlpExporter, loopback"
P11_SDK = "OpenTelemetry SDK+Batch+OTLP HTTP"
# Their words in the targets' table, with `code` marked.
P3_CASES = {
    "P3 filtered out, callsite": "`with callsite.span():`",
    "P3 filtered out, reg.span(level=str)": '`with reg.span("x", level="trace"):`',
    "P3 filtered out, level=Level.TRACE": '`with reg.span("x", level=Level.TRACE):`',
}
P4_CASES = {
    "P4 @instrument f()": "`@instrument` `f()`",
    "P4 @instrument(ret=True) f()": "`@instrument(ret=True)` `f()`",
    "P4 @instrument f(x), x recorded": "`@instrument` `f(x)`, `x` recorded",
}


def cases(
    after_round: list[Callable[[], None]],
    at_end: list[Callable[[], None]],
    notes: dict[str, str] | None = None,
) -> dict[str, Callable[[], None]]:
    """The timed cases; ``after_round`` and ``at_end`` get what must run
    between rounds and once they are done; ``notes`` what the targets say
    besides the timings (set once ``at_end`` has run)."""
    notes = {} if notes is None else notes
    reg = pykregistry.Registry()
    pure = PurePythonRegistry()
    held = reg.span("held")
    entered = held.entered()

    def empty_with() -> None:
        with CM():
            pass

    def p1_span() -> None:
        with reg.span("x"):
            pass

    def p2_nested3() -> None:
        with reg.span("a"), reg.span("b"), reg.span("c"):
            pass

    def enter_exit_only() -> None:
        with entered:
            pass

    def int_api() -> None:
        sid = reg.new_span("x")
        reg.enter(sid)
        reg.exit(sid)
        reg.try_close(sid)

    filtered = pykregistry.Registry(level="info")
    trace_site = filtered.callsite("x", level="trace")
    info_site = reg.callsite("x")

    def p3_filtered_callsite() -> None:
        with trace_site.span():
            pass

    def p3_filtered_span() -> None:
        with filtered.span("x", level="trace"):
            pass

    def p3_filtered_span_enum() -> None:
        # On CPython < 3.12 the enum's metaclass `__getattr__` makes
        # `Level.TRACE` itself cost ~55 ns; the row shows it.
        with filtered.span("x", level=pykregistry.Level.TRACE):
            pass

    def callsite_span() -> None:
        with info_site.span():
            pass

    def plain() -> None:
        return None

    def plain1(x: int) -> int:
        return x

    instrumented = pykregistry.instrument(registry=reg)(plain)
    instrumented_ret = pykregistry.instrument(registry=reg, ret=True)(plain)
    instrumented_arg = pykregistry.instrument(registry=reg)(plain1)
    filtered_instrumented = pykregistry.instrument(registry=filtered, level="trace")(plain)

    def plain_call() -> None:
        plain()

    def p4_instrumented_call() -> None:
        instrumented()

    def p4_instrumented_ret() -> None:
        instrumented_ret()

    def p4_instrumented_arg() -> None:
        instrumented_arg(1)

    def p4_filtered_instrumented_call() -> None:
        filtered_instrumented()

    def pure_python() -> None:
        with pure.span("x"):
            pass

    # P8: a real file, opened for appending so that emptying it after each
    # round keeps it small (a round writes ~25 MB at the default number).
    fd, path = tempfile.mkstemp(prefix="pykregistry-bench-", suffix=".jsonl")
    os.close(fd)
    json_lines = pykregistry.JsonLines(path, append=True)
    json_reg = pykregistry.Registry(layers=[json_lines])

    def emptied() -> None:
        json_lines.flush()
        os.truncate(path, 0)

    after_round.append(emptied)
    at_end.append(json_lines.close)
    at_end.append(lambda: os.remove(path))

    def p8_json_lines() -> None:
        with json_reg.span("x"):
            pass

    # Issue 12: the pictures, measured like P8. ChromeTrace writes a slice
    # per interval (its file emptied after each round, as above: it stays
    # an unterminated array); FlameGraph only adds to its folded stacks.
    fd, chrome_path = tempfile.mkstemp(prefix="pykregistry-bench-", suffix=".json")
    os.close(fd)
    chrome = pykregistry.ChromeTrace(chrome_path)
    chrome_reg = pykregistry.Registry(layers=[chrome])

    def chrome_emptied() -> None:
        chrome.flush()
        os.truncate(chrome_path, 0)

    after_round.append(chrome_emptied)
    at_end.append(chrome.close)
    at_end.append(lambda: os.remove(chrome_path))

    def p8_chrome() -> None:
        with chrome_reg.span("x"):
            pass

    fd, flame_path = tempfile.mkstemp(prefix="pykregistry-bench-", suffix=".folded")
    os.close(fd)
    flame = pykregistry.FlameGraph(flame_path)
    flame_reg = pykregistry.Registry(layers=[flame])
    at_end.append(flame.close)
    at_end.append(lambda: os.remove(flame_path))

    def p8_flame() -> None:
        with flame_reg.span("x"):
            pass

    # P11: the native OTLP exporter, sending to a collector on loopback.
    url = loopback_collector(at_end)
    otlp = pykregistry.OtlpExporter(url, exit_timeout=0.5)
    otlp_reg = pykregistry.Registry(layers=[otlp])

    def otlp_counts() -> None:
        otlp.shutdown(5)
        notes[P11] = f"exported {otlp.exported}, dropped {otlp.dropped}, failed {otlp.failed}"

    at_end.insert(0, otlp_counts)

    def p11_otlp() -> None:
        with otlp_reg.span("x"):
            pass

    out = {
        BASELINE: empty_with,
        P1: p1_span,
        P2: p2_nested3,
        "enter/exit of a held span": enter_exit_only,
        "int API new/enter/exit/close": int_api,
        "callsite.span()": callsite_span,
        "P3 filtered out, callsite": p3_filtered_callsite,
        "P3 filtered out, reg.span(level=str)": p3_filtered_span,
        "P3 filtered out, level=Level.TRACE": p3_filtered_span_enum,
        CALL: plain_call,
        "P4 @instrument f()": p4_instrumented_call,
        "P4 @instrument(ret=True) f()": p4_instrumented_ret,
        "P4 @instrument f(x), x recorded": p4_instrumented_arg,
        "P4 @instrument f(), filtered out": p4_filtered_instrumented_call,
        P8: p8_json_lines,
        P8_CHROME: p8_chrome,
        P8_FLAME: p8_flame,
        P11: p11_otlp,
        "pure-Python registry": pure_python,
    }
    try:
        # Optional, and untyped where it is missing: imported by name.
        sdk_trace: Any = importlib.import_module("opentelemetry.sdk.trace")
        tracer = sdk_trace.TracerProvider().get_tracer("bench")

        def otel() -> None:
            with tracer.start_as_current_span("x"):
                pass

        out[OTEL] = otel
    except ImportError:
        pass
    try:
        sdk_trace = importlib.import_module("opentelemetry.sdk.trace")
        sdk_export: Any = importlib.import_module("opentelemetry.sdk.trace.export")
        otlp_http: Any = importlib.import_module(
            "opentelemetry.exporter.otlp.proto.http.trace_exporter"
        )
        provider = sdk_trace.TracerProvider()
        provider.add_span_processor(
            sdk_export.BatchSpanProcessor(otlp_http.OTLPSpanExporter(endpoint=f"{url}/v1/traces"))
        )
        otel_tracer = provider.get_tracer("bench")
        at_end.insert(0, provider.shutdown)

        def otel_otlp() -> None:
            with otel_tracer.start_as_current_span("x"):
                pass

        out[P11_SDK] = otel_otlp
    except ImportError:
        pass
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the table; ``argv`` as for ``python -m pykregistry bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m pykregistry bench", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m pykregistry bench``."""
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--number", type=int, default=100_000, help="operations per case per round")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the targets and every case as Markdown tables, with a line saying how, "
        "when and where they were measured (docs/figures.md is this output)",
    )


# --- the targets -------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One target of SPEC section 6 beside its measure in this run."""

    rule: str
    """``"P1"`` .. ``"P13"``."""
    what: str
    """What is measured, in words."""
    measured: str
    """The measure as shown, with the figures it comes from."""
    target: str
    """The target as shown (``"<= 2.00x"``)."""
    met: bool | None
    """Whether the measure meets the target; ``None`` when not measured."""


@dataclass(frozen=True)
class Results:
    """What one run measured: every case's ns per operation, per round."""

    samples: dict[str, list[float]]
    nested_10_ns: float
    nested_20000_ns: float
    bytes_per_span: float | None
    bytes_per_pure_span: float | None
    notes: dict[str, str] = field(default_factory=dict)
    """What cases said besides their timings (P11's counts)."""

    def median(self, case: str) -> float:
        """The case's median ns per operation."""
        return statistics.median(self.samples[case])


def at_most(rule: str, what: str, value: float, limit: float, unit: str, detail: str) -> Target:
    """A target met when ``value <= limit``."""
    shown = f"{value:.2f}{unit}" if unit == "x" else f"{value:,.0f} {unit}"
    limit_shown = f"{limit:.2f}{unit}" if unit == "x" else f"{limit:,.0f} {unit}"
    return Target(rule, what, f"{shown} ({detail})", f"<= {limit_shown}", value <= limit)


def targets(results: Results) -> list[Target]:
    """The targets of SPEC section 6 that this command measures (P1-P5, P8,
    P11, P13), each beside its measure."""
    base = results.median(BASELINE)
    p1 = results.median(P1)
    call = results.median(CALL)
    out = [
        at_most(
            "P1",
            '`with reg.span("x"):` / `with CM():`',
            p1 / base,
            1.5 if sys.version_info >= (3, 14) else 2.0,
            "x",
            f"{p1:,.0f} vs {base:,.0f} ns",
        )
    ]
    if OTEL in results.samples:
        otel = results.median(OTEL)
        out.append(
            Target(
                "P1",
                "OpenTelemetry SDK `start_as_current_span`, no processor / P1",
                f"{otel / p1:.2f}x ({otel:,.0f} vs {p1:,.0f} ns)",
                ">= 30x",
                otel / p1 >= 30,
            )
        )
    else:
        out.append(
            Target(
                "P1",
                "OpenTelemetry SDK `start_as_current_span`, no processor / P1",
                "not measured: opentelemetry-sdk is not installed",
                ">= 30x",
                None,
            )
        )
    p2 = results.median(P2)
    out.append(at_most("P2", "3 nested / P1", p2 / p1, 3.5, "x", f"{p2:,.0f} ns"))
    for case, what in P3_CASES.items():
        ns = results.median(case)
        out.append(at_most("P3", f"{what} / `with CM():`", ns / base, 0.5, "x", f"{ns:,.0f} ns"))
    for case, what in P4_CASES.items():
        ns = results.median(case)
        out.append(
            at_most(
                "P4",
                f"{what}: (instrumented - plain call) / P1",
                (ns - call) / p1,
                2.0,
                "x",
                f"{ns:,.0f} vs {call:,.0f} ns",
            )
        )
    if results.bytes_per_span is not None:
        out.append(
            at_most(
                "P5",
                "memory per live span (handle)",
                results.bytes_per_span,
                160,
                "B",
                f"pure-Python: {results.bytes_per_pure_span:,.0f} B",
            )
        )
    json_lines = results.median(P8)
    out.append(
        at_most(
            "P8",
            "`JsonLines` layer writing a file / P1",
            json_lines / p1,
            3.0,
            "x",
            f"{json_lines:,.0f} ns",
        )
    )
    for case, what in (
        (P8_CHROME, "`ChromeTrace` layer writing a file / P1"),
        (P8_FLAME, "`FlameGraph` layer / P1"),
    ):
        picture = results.median(case)
        out.append(at_most("P8", what, picture / p1, 3.0, "x", f"{picture:,.0f} ns"))
    p11 = results.median(P11)
    out.append(
        at_most(
            "P11",
            "`OtlpExporter` to a collector on loopback / P1",
            p11 / p1,
            1.5,
            "x",
            f"{p11:,.0f} ns; {results.notes.get(P11, '')}",
        )
    )
    what = "OpenTelemetry SDK + BatchSpanProcessor + OTLP/HTTP / P11, per span"
    if P11_SDK in results.samples:
        sdk = results.median(P11_SDK)
        out.append(
            Target(
                "P11",
                what,
                f"{sdk / p11:.1f}x ({sdk:,.0f} vs {p11:,.0f} ns)",
                ">= 20x",
                sdk / p11 >= 20,
            )
        )
    else:
        out.append(
            Target(
                "P11",
                what,
                "not measured: opentelemetry-sdk or opentelemetry-exporter-otlp-proto-http"
                " is not installed",
                ">= 20x",
                None,
            )
        )
    deep, shallow = results.nested_20000_ns, results.nested_10_ns
    out.append(
        at_most(
            "P13",
            "per span at 20,000 nested / at 10",
            deep / shallow,
            2.0,
            "x",
            f"{deep:,.0f} vs {shallow:,.0f} ns",
        )
    )
    return out


# --- running and printing ----------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Times every case and prints the table (as Markdown with
    ``--markdown``)."""
    if args.rounds < 1 or args.number < 20:
        print("bench: --rounds must be >= 1 and --number >= 20", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.timezone.utc)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results = measure(args.rounds, args.number)
    if args.markdown:
        print_markdown(results, args, started, load)
    else:
        print_text(results, args)
    return 0


def measure(rounds: int, number: int) -> Results:
    """Runs every case ``rounds`` times, interleaved, ``number`` operations
    each, then the nesting (P13) and memory (P5) measures."""
    after_round: list[Callable[[], None]] = []
    at_end: list[Callable[[], None]] = []
    notes: dict[str, str] = {}
    timed = cases(after_round, at_end, notes)
    samples: dict[str, list[float]] = {name: [] for name in timed}
    try:
        for _ in range(rounds):
            for name, fn in timed.items():
                n = number // 20 if name in (OTEL, P11_SDK) else number
                samples[name].append(timeit.timeit(fn, number=n) / n * 1e9)
            for step in after_round:
                step()
    finally:
        for step in at_end:
            step()

    reg = pykregistry.Registry()
    shallow = nested_ns_per_span(reg, 10, max(rounds, 5) * 200)
    deep = nested_ns_per_span(reg, 20_000, max(rounds, 5))
    per_span = per_pure = None
    if os.path.exists(f"/proc/{os.getpid()}/statm"):
        per_span = bytes_per_live_span(lambda: reg.span("x"))
        pure = PurePythonRegistry()
        per_pure = bytes_per_live_span(lambda: pure.span("x"))
    return Results(samples, shallow, deep, per_span, per_pure, notes)


def print_text(results: Results, args: argparse.Namespace) -> None:
    """The table for a terminal."""
    base, p1, call = (results.median(c) for c in (BASELINE, P1, CALL))
    print(f"CPython {sys.version.split()[0]}, {args.rounds} interleaved rounds\n")
    print(f"{'case':36} {'median ns':>10} {'x CM()':>8} {'x P1':>7} {'x f()':>7}")
    for name in results.samples:
        med = results.median(name)
        print(f"{name:36} {med:10.0f} {med / base:8.2f} {med / p1:7.2f} {med / call:7.2f}")
    print("\ntargets (SPEC section 6):")
    for t in targets(results):
        met = {True: "met", False: "NOT MET", None: "not measured"}[t.met]
        what = t.what.replace("`", "")
        print(f"  {t.rule:<4}{what:60} {t.measured}   target {t.target}   {met}")


def print_markdown(
    results: Results, args: argparse.Namespace, started: datetime.datetime, load: float | None
) -> None:
    """The tables as Markdown, after a line saying how, when and where."""
    base, p1, call = (results.median(c) for c in (BASELINE, P1, CALL))
    print(
        f"Generated by `python -m pykregistry bench --markdown` on "
        f"{started:%Y-%m-%d %H:%M} UTC: {args.rounds} interleaved round"
        f"{'s' if args.rounds != 1 else ''} of "
        f"{args.number:,} operations per case, medians; {machine(load)}. "
        "Do not edit by hand: regenerate it."
    )
    print()
    print("| # | what | measured | target | met |")
    print("| --- | --- | --- | --- | --- |")
    for t in targets(results):
        met = {True: "met", False: "**not met**", None: "not measured"}[t.met]
        print(f"| {t.rule} | {cell(t.what)} | {cell(t.measured)} | {cell(t.target)} | {met} |")
    print()
    times = "\N{MULTIPLICATION SIGN}"
    print(f"| case | median ns | {times} `with CM():` | {times} P1 | {times} `f()` |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in results.samples:
        med = results.median(name)
        print(
            f"| {cell(name)} | {med:,.0f} | {med / base:.2f} | {med / p1:.2f} | {med / call:.2f} |"
        )


def cell(text: str) -> str:
    """``text`` as the content of a Markdown table cell: ``<=``, ``>=`` and
    ratios' ``x`` as signs, pipes escaped."""
    text = text.replace("|", "\\|").replace("<=", "≤").replace(">=", "≥")
    return re.sub(r"(\d)x\b", "\\1\N{MULTIPLICATION SIGN}", text)


def machine(load: float | None) -> str:
    """The interpreter and machine, in words."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if models:
            cpu = models[0]
    except OSError:
        pass
    try:
        otel = f"opentelemetry-sdk {importlib.metadata.version('opentelemetry-sdk')}"
    except importlib.metadata.PackageNotFoundError:
        otel = "without opentelemetry-sdk"
    loaded = f", load average {load:.1f} at the start" if load is not None else ""
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs ({cpu}){loaded}; {otel}"
    )


if __name__ == "__main__":
    sys.exit(main())
