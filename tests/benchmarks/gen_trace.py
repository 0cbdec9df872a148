"""Writes a large trace as JsonLines writes it (each span at its end,
children first), to measure ``pykregistry tree``, ``perfetto`` and
``flamegraph`` on it (docs/cli.md, "Memory and speed"):

    python tests/benchmarks/gen_trace.py one 1000000 one.jsonl
    python tests/benchmarks/gen_trace.py tasks 1000000 tasks.jsonl

``one``: a single trace, a root with N/5 children of 4 children each, all
on one thread. ``tasks``: a server span on the main thread, under which
asyncio tasks of 7 spans each (N/7 tasks, ~143,000 for a million), 64
running at once, their lines interleaved. On each track, spans nest in
time (children one after another inside their parent), and each line says
``on_parent_track`` as ``JsonLines`` does.
"""

from __future__ import annotations

import json
import sys
from typing import IO

T0 = 1_700_000_000_000_000_000
GAP = 10  # ns between siblings, and between a parent's edges and its children


def busy_of(span: int) -> int:
    return 1000 + span % 997


def line(
    out: IO[str],
    span: int,
    parent: int | None,
    times: tuple[int, int],
    *,
    name: str,
    task: str | None = None,
    on_parent_track: bool | None = None,
) -> None:
    start, end = times
    record = {
        "type": "span",
        "id": span % 4096 + 1,
        "parent_id": None if parent is None else (parent % 4096 + 1),
        "trace_id": f"{1:032x}",
        "span_id": f"{span:016x}",
        "parent_span_id": None if parent is None else f"{parent:016x}",
        "name": name,
        "target": "bench.app",
        "level": "INFO",
        "start_time_ns": start,
        "end_time_ns": end,
        "busy_ns": end - start,
        "idle_ns": 0,
        "fields": {"i": span, "user": "ada"},
        "thread_id": 1,
        "task": task,
        "on_parent_track": on_parent_track,
    }
    out.write(json.dumps(record) + "\n")


def one(n: int, out: IO[str]) -> None:
    # Children one after another inside the root, leaves inside each child.
    root, span, at = 1, 1, T0 + GAP
    while span + 5 <= n:
        child = span + 1
        child_start = at
        at += GAP
        for k in range(4):
            leaf = child + 1 + k
            line(out, leaf, child, (at, at + busy_of(leaf)), name=f"leaf{k}", on_parent_track=True)
            at += busy_of(leaf) + GAP
        line(out, child, root, (child_start, at), name="child", on_parent_track=True)
        at += GAP
        span += 5
    line(out, root, None, (T0, at), name="request")


def task_lines(t: int) -> list[tuple[int, int | None, tuple[int, int], str]]:
    """One task's 7 spans, in the order they end: handle_request over two
    db.query spans one after the other, each over two rows one after the
    other. The 64 tasks of a batch start 10 ns apart; batches 20 µs apart
    (a task takes at most 9 µs)."""
    base = 2 + t * 7
    start = T0 + (t // 64) * 20_000 + (t % 64) * GAP
    at = start + GAP
    ended = []
    for q in (base + 3, base + 6):
        q_start = at
        at += GAP
        for row in (q - 2, q - 1):
            ended.append((row, q, (at, at + busy_of(row)), "row"))
            at += busy_of(row) + GAP
        ended.append((q, base, (q_start, at), "db.query"))
        at += GAP
    ended.append((base, 1, (start, at), "handle_request"))
    return ended


def tasks(n: int, out: IO[str]) -> None:
    count = (n - 1) // 7
    running = 64  # as task_lines lays them out
    last_end = T0
    for first in range(0, count, running):
        ids = range(first, min(first + running, count))
        batch = [task_lines(t) for t in ids]
        # The tasks of a batch run at once: their lines interleave.
        for step in range(7):
            for t, spans in zip(ids, batch, strict=True):
                span, parent, times, name = spans[step]
                last_end = max(last_end, times[1])
                task = f"Task-{t + 2} handle_request"
                line(
                    out,
                    span,
                    parent,
                    times,
                    name=name,
                    task=task,
                    on_parent_track=parent != 1,  # the server span is on the main thread
                )
    line(out, 1, None, (T0 - 1, last_end + GAP), name="serve")


def main() -> None:
    shape, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(path, "w") as out:
        {"one": one, "tasks": tasks}[shape](n, out)


if __name__ == "__main__":
    main()
