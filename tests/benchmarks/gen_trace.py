"""Writes a large trace as JsonLines writes it (each span at its end,
children first), to measure ``pykregistry tree``, ``perfetto`` and
``flamegraph`` on it (docs/cli.md, "Memory and speed"):

    python tests/benchmarks/gen_trace.py one 1000000 one.jsonl
    python tests/benchmarks/gen_trace.py tasks 1000000 tasks.jsonl

``one``: a single trace, a root with N/5 children of 4 children each, all
on one thread. ``tasks``: a server span on the main thread, under which
asyncio tasks of 7 spans each (N/7 tasks, ~143,000 for a million), 64
running at once, their lines interleaved.
"""

from __future__ import annotations

import json
import sys
from typing import IO

T0 = 1_700_000_000_000_000_000


def line(
    out: IO[str],
    span: int,
    parent: int | None,
    trace: int,
    start: int,
    *,
    name: str,
    task: str | None = None,
    registry_root: bool = False,
) -> None:
    busy = 1000 + span % 997
    record = {
        "type": "span",
        "id": span % 4096 + 1,
        "parent_id": None if registry_root or parent is None else 1,
        "trace_id": f"{trace:032x}",
        "span_id": f"{span:016x}",
        "parent_span_id": None if parent is None else f"{parent:016x}",
        "name": name,
        "target": "bench.app",
        "level": "INFO",
        "start_time_ns": start,
        "end_time_ns": start + busy + 50,
        "busy_ns": busy,
        "idle_ns": 50,
        "fields": {"i": span, "user": "ada"},
        "thread_id": 1,
        "task": task,
    }
    out.write(json.dumps(record) + "\n")


def one(n: int, out: IO[str]) -> None:
    root, span = 1, 1
    while span + 5 <= n:
        child = span + 1
        for k in range(4):
            line(out, child + 1 + k, child, 1, T0 + (child + 1 + k) * 10, name=f"leaf{k}")
        line(out, child, root, 1, T0 + child * 10, name="child")
        span += 5
    line(out, root, None, 1, T0, name="request")


def tasks(n: int, out: IO[str]) -> None:
    server = 1
    per_task = 7
    count = (n - 1) // per_task
    running = 64
    for first in range(0, count, running):
        batch = range(first, min(first + running, count))
        # Each task: a root under the server, 2 children of 2 leaves each,
        # written step by step, the tasks of a batch interleaved.
        for step in range(per_task):
            for t in batch:
                base = 2 + t * per_task
                task = f"Task-{t + 2} handle_request"
                start = T0 + t * 1000 + step * 10
                if step == per_task - 1:
                    line(out, base, server, 1, T0 + t * 1000, name="handle_request", task=task)
                elif step % 3 == 2:
                    line(out, base + 1 + step, base, 1, start, name="db.query", task=task)
                else:
                    parent = base + 1 + step + 2 - step % 3
                    line(out, base + 1 + step, parent, 1, start, name="row", task=task)
    line(out, server, None, 1, T0 - 1, name="serve")


def main() -> None:
    shape, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(path, "w") as out:
        {"one": one, "tasks": tasks}[shape](n, out)


if __name__ == "__main__":
    main()
