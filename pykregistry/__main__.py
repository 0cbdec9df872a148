"""The command line: ``python -m pykregistry COMMAND``, or ``pykregistry
COMMAND`` where the package is installed.

``run`` runs a Python program with the default registry writing its spans
as JSON lines, a Perfetto trace, a flame graph, to an OpenTelemetry
collector or as a tree (:mod:`pykregistry.runner`). ``tree``, ``flamegraph``
and ``perfetto`` draw or convert a trace recorded as JSON lines, streaming
(:mod:`pykregistry.convert`).

``demo`` runs a short instrumented workload — nested spans with fields, two
threads, two asyncio tasks, an exception caught inside a span, a child
process that continues the trace (W3C trace context) — records it
with a :class:`~pykregistry.tree.TreeRecorder` layer and prints the span
tree. It exits non-zero if a span leaked or a layer failed, so it doubles as
a smoke test of an installation.

``bench`` prints the side-by-side performance table
(:mod:`pykregistry.bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

from pykregistry import JsonLines, Level, Registry, Span, convert, inject, runner
from pykregistry import bench as bench_module
from pykregistry.runner import can_encode, os_reason
from pykregistry.tree import TreeRecorder, render_tree

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line with ``argv`` (default: ``sys.argv[1:]``) and
    returns the exit status; ``run`` lets the program's ``SystemExit``
    through."""
    argv = list(sys.argv[1:] if argv is None else argv)
    program: list[str] | None = None
    if argv[:1] == ["run"]:
        # What follows the program's name is the program's, options or not.
        options, program = runner.split_arguments(argv[1:])
        argv = ["run", *options]
    parser = argparse.ArgumentParser(
        prog=_program_name(),
        description="pykregistry: a span registry for Python with a lock-free Rust core.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a Python program, writing its spans where the options say",
        description=(
            "Run a Python script, or a module as python -m does, with the default registry "
            "writing its spans where the options say. sys.argv, __main__ and the exit status "
            "are the program's own. Everything after the program's name is its own argument."
        ),
        usage=runner.USAGE,
        allow_abbrev=False,
    )
    runner.add_arguments(run)
    run.set_defaults(run=runner.run)
    tree = commands.add_parser(
        "tree",
        help="draw the span trees of a trace recorded as JSON lines",
        description=(
            "Draw the span trees of a trace recorded as JSON lines (JsonLines, run --jsonl), "
            "with durations, each tree as soon as its root has been read. Bad lines are "
            "reported as FILE:LINE and left out (exit status 1)."
        ),
    )
    convert.add_tree_arguments(tree)
    tree.set_defaults(run=convert.tree)
    flamegraph = commands.add_parser(
        "flamegraph",
        help="convert a trace recorded as JSON lines to a flame graph (SVG)",
        description=(
            "Write the flame graph of self busy time of a trace recorded as JSON lines, as an "
            "interactive SVG (or folded stacks, for an OUT ending in .folded), streaming."
        ),
    )
    convert.add_convert_arguments(flamegraph, ".svg")
    flamegraph.set_defaults(run=convert.flamegraph)
    perfetto = commands.add_parser(
        "perfetto",
        help="convert a trace recorded as JSON lines to a Chrome trace for Perfetto",
        description=(
            "Write a trace recorded as JSON lines as a Chrome trace (JSON), which Perfetto "
            "(ui.perfetto.dev) and chrome://tracing open, streaming."
        ),
    )
    convert.add_convert_arguments(perfetto, ".json")
    perfetto.set_defaults(run=convert.perfetto)
    demo = commands.add_parser(
        "demo",
        help="run an instrumented workload and print its span tree",
        description=(
            "Run nested spans, two threads, two asyncio tasks and a caught exception "
            "through a registry with a TreeRecorder layer, and print the span tree."
        ),
    )
    demo.add_argument("--ids", action="store_true", help="show span IDs and sequence numbers")
    demo.add_argument("--ascii", action="store_true", help="draw the tree with ASCII only")
    demo.add_argument(
        "--jsonl", metavar="PATH", help="also write the trace to PATH as JSON lines (JsonLines)"
    )
    demo.set_defaults(run=_demo)
    bench = commands.add_parser(
        "bench",
        help="print the side-by-side performance table",
        description=(
            "Time a span's with-block and its variants against an empty `with CM():`, "
            "a plain call and the OpenTelemetry SDK (if installed), as ratios in one run."
        ),
    )
    bench.set_defaults(run=bench_module.run)
    bench_module.add_arguments(bench)
    args = parser.parse_args(argv)
    if program is not None:
        args.program = program
    command: Callable[[argparse.Namespace], int] = args.run
    return command(args)


def _program_name() -> str:
    """``pykregistry`` when run as the console script, else ``python -m
    pykregistry``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "pykregistry" if name in ("pykregistry", "pykregistry.exe") else "python -m pykregistry"


# === demo ===


class PaymentDeclinedError(Exception):
    """What the demo's payment provider raises."""


def _demo(args: argparse.Namespace) -> int:
    recorder = TreeRecorder()
    registry = Registry(layers=[recorder])
    try:
        trace = JsonLines(args.jsonl) if args.jsonl else None
    except OSError as e:
        return _cannot_write(args.jsonl, e)
    if trace is not None:
        registry.add_layer(trace)
    _workload(registry)
    if trace is not None:
        try:
            trace.close()
        except OSError as e:
            return _cannot_write(args.jsonl, e)

    spans, events = recorder.spans, recorder.events
    ascii_only = args.ascii or not can_encode(sys.stdout, "└├│•✗µ")
    print(f"pykregistry demo: {len(spans)} spans, {len(events)} event, recorded by a TreeRecorder")
    print()
    print(render_tree(spans, events, show_ids=args.ids, ascii_only=ascii_only))
    print()
    live, errors = len(registry), registry.layer_errors
    print(f"live spans after the workload: len(registry) = {live}")
    if trace is not None:
        print(f"trace written to {trace.path} as JSON lines ({len(spans) + len(events)} lines)")
    if live or errors or recorder.open_spans:
        print(f"error: {live} span(s) leaked, {errors} layer error(s)", file=sys.stderr)
        return 1
    return 0


def _workload(registry: Registry) -> None:
    # Every span is closed by the end of its `with` block (or by close()),
    # so len(registry) is back to 0 when this returns.
    with registry.span("demo", target="pykregistry.demo", level=Level.INFO, version=1):
        _handle_request(registry, "/orders", rows=2)
        _checkout(registry)
        _threads(registry)
        asyncio.run(_tasks(registry))
        _child_process(registry)
        # parent=None makes a root even though "demo" is current here.
        with registry.span("cache.refresh", target="demo.cache", parent=None, reason="startup"):
            pass


def _handle_request(registry: Registry, path: str, *, rows: int) -> None:
    with registry.span("http.request", target="demo.http", method="GET", path=path) as request:
        with registry.span("auth", target="demo.http", level=Level.DEBUG, user="ada"):
            pass
        for row in range(rows):
            # A level can be given by name, case-insensitively.
            with registry.span("db.query", target="demo.db", level="debug", row=row):
                pass
        # Fields can be recorded after creation; layers see the final values.
        request.record(status=200)


def _checkout(registry: Registry) -> None:
    with registry.span("checkout", target="demo.shop", order=17) as checkout:
        try:
            with registry.span("charge_card", target="demo.payments", amount=42.5):
                raise PaymentDeclinedError("card declined")
        except PaymentDeclinedError as err:
            # charge_card has exited and closed; checkout is current again.
            # Any value that is not None/bool/int/float/str is kept as its repr().
            registry.event("payment failed", level=Level.WARN, target="demo.shop", error=err)
            checkout.record(outcome="declined")


def _threads(registry: Registry) -> None:
    with registry.span("threads", target="demo.threads"):
        # A new thread starts with nothing current, so the worker spans are
        # made here (children of "threads") and handed over; creating them
        # in order keeps the tree's order independent of scheduling.
        workers = [registry.span("worker", target="demo.threads", worker=n) for n in range(2)]
        threads = [
            threading.Thread(target=_work, args=(registry, w), name=f"worker-{n}")
            for n, w in enumerate(workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for worker in workers:
            worker.close()


def _work(registry: Registry, worker: Span) -> None:
    # entered() enters and exits without releasing the handle.
    with worker.entered():
        for step in range(2):
            with registry.span("step", target="demo.threads", level=Level.DEBUG, step=step):
                pass


async def _tasks(registry: Registry) -> None:
    # asyncio.run's task copies the caller's context: "demo" is current here.
    with registry.span("tasks", target="demo.async"):
        await asyncio.gather(_fetch(registry, "a"), _fetch(registry, "b"))


async def _fetch(registry: Registry, key: str) -> None:
    # Each task has its own stack, inherited from where it was created: both
    # fetches are children of "tasks", and neither sees the other's spans
    # although they interleave on one thread.
    with registry.span("fetch", target="demo.async", key=key):
        await asyncio.sleep(0)
        with registry.span("parse", target="demo.async", level=Level.DEBUG):
            await asyncio.sleep(0)


# The child process: it continues the trace that its environment names, and
# prints the ids its span got.
_CHILD = """
import os, pykregistry
with pykregistry.span("child", parent=pykregistry.extract(os.environ)) as s:
    print(f"{s.ref.trace_id:032x} {s.ref.parent_span_id:016x}")
"""


def _child_process(registry: Registry) -> None:
    # W3C trace context: inject() writes the current span's `traceparent`
    # into the child's environment; there extract() reads it back, and the
    # child's span continues this trace, as its parent's child.
    with registry.span("subprocess", target="demo.remote") as call:
        env = dict(os.environ)
        inject(env, registry=registry)
        child = subprocess.run(
            [sys.executable, "-c", _CHILD],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        ref = call.ref
        expected = f"{ref.trace_id:032x} {ref.span_id:016x}" if ref else None
        call.record(continued_in_child=child.stdout.strip() == expected)


def _cannot_write(path: str, error: OSError) -> int:
    print(f"pykregistry: cannot write {path}: {os_reason(error)}", file=sys.stderr)
    return 1


def _run_from_command_line() -> int:
    """``python -m pykregistry``: :func:`main`, stopping quietly when the
    reader of standard output goes away (``python -m pykregistry demo |
    head``)."""
    try:
        status = main()
        # Flush here, so that a reader that went away is noticed inside the
        # try rather than in the interpreter's own flush at exit.
        sys.stdout.flush()
    except BrokenPipeError:
        # As the signal module's docs recommend for SIGPIPE: point stdout at
        # devnull, so that the flush at exit cannot fail again, and exit 1
        # (what Python itself exits with on EPIPE), with no traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":
    sys.exit(_run_from_command_line())
