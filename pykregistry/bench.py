"""Side-by-side timings of a span's with-block, as ratios in one run.

    python -m pykregistry bench [--rounds 15] [--number 100000]

Each case is timed in interleaved rounds (every case once per round, so
machine noise hits all of them alike); the table gives the median ns per
operation and its ratios to an empty ``with CM():`` over a Python class, to
P1 (``with reg.span("x"):``) and to a plain function call, all measured in
the same rounds. The OpenTelemetry SDK row appears when ``opentelemetry-sdk``
is installed. Memory per live span is the growth of resident memory while
200,000 handles are held (Linux: read from ``/proc``). The test suite runs
this only to check the table's shape: timings belong in benchmarks, never in
assertions.
"""

from __future__ import annotations

import argparse
import contextvars
import gc
import importlib
import itertools
import os
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Sequence
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


# --- cases -------------------------------------------------------------------


def cases(
    after_round: list[Callable[[], None]], at_end: list[Callable[[], None]]
) -> dict[str, Callable[[], None]]:
    """The timed cases; ``after_round`` and ``at_end`` get what must run
    between rounds and once they are done."""
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

    out = {
        "empty with CM()": empty_with,
        "P1 with reg.span('x')": p1_span,
        "P2 3 nested": p2_nested3,
        "enter/exit of a held span": enter_exit_only,
        "int API new/enter/exit/close": int_api,
        "callsite.span()": callsite_span,
        "P3 filtered out, callsite": p3_filtered_callsite,
        "P3 filtered out, reg.span(level=str)": p3_filtered_span,
        "P3 filtered out, level=Level.TRACE": p3_filtered_span_enum,
        "plain call f()": plain_call,
        "P4 @instrument f()": p4_instrumented_call,
        "P4 @instrument(ret=True) f()": p4_instrumented_ret,
        "P4 @instrument f(x), x recorded": p4_instrumented_arg,
        "P4 @instrument f(), filtered out": p4_filtered_instrumented_call,
        "P8 JsonLines layer writing a file": p8_json_lines,
        "pure-Python registry": pure_python,
    }
    try:
        # Optional, and untyped where it is missing: imported by name.
        sdk_trace: Any = importlib.import_module("opentelemetry.sdk.trace")
        tracer = sdk_trace.TracerProvider().get_tracer("bench")

        def otel() -> None:
            with tracer.start_as_current_span("x"):
                pass

        out["OpenTelemetry SDK, no processor"] = otel
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


def run(args: argparse.Namespace) -> int:
    """Times every case and prints the table."""
    if args.rounds < 1 or args.number < 20:
        print("bench: --rounds must be >= 1 and --number >= 20", file=sys.stderr)
        return 2
    after_round: list[Callable[[], None]] = []
    at_end: list[Callable[[], None]] = []
    timed = cases(after_round, at_end)
    samples: dict[str, list[float]] = {name: [] for name in timed}
    try:
        for _ in range(args.rounds):
            for name, fn in timed.items():
                number = args.number // 20 if name.startswith("OpenTelemetry") else args.number
                samples[name].append(timeit.timeit(fn, number=number) / number * 1e9)
            for step in after_round:
                step()
    finally:
        for step in at_end:
            step()

    base = statistics.median(samples["empty with CM()"])
    p1 = statistics.median(samples["P1 with reg.span('x')"])
    call = statistics.median(samples["plain call f()"])
    print(f"CPython {sys.version.split()[0]}, {args.rounds} interleaved rounds\n")
    print(f"{'case':36} {'median ns':>10} {'x CM()':>8} {'x P1':>7} {'x f()':>7}")
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"{name:36} {med:10.0f} {med / base:8.2f} {med / p1:7.2f} {med / call:7.2f}")

    reg = pykregistry.Registry()
    shallow = nested_ns_per_span(reg, 10, max(args.rounds, 5) * 200)
    deep = nested_ns_per_span(reg, 20_000, max(args.rounds, 5))
    print("\ntargets (SPEC section 6):")
    print(f"  P1  with reg.span('x') / with CM()      {p1 / base:6.2f}x   target <= 2.00x")
    print(
        f"  P13 per span at 20,000 nested / at 10   {deep / shallow:6.2f}x   target <= 2.00x"
        f"  ({deep:.0f} vs {shallow:.0f} ns)"
    )
    if os.path.exists(f"/proc/{os.getpid()}/statm"):
        per_span = bytes_per_live_span(lambda: reg.span("x"))
        pure = PurePythonRegistry()
        per_pure = bytes_per_live_span(lambda: pure.span("x"))
        print(
            f"  P5  memory per live span (handle)       {per_span:6.0f} B   target <= 160 B"
            f"  (pure-Python: {per_pure:.0f} B)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
