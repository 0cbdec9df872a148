"""R14: a span ends when the code that made it is done with it.

Its end is the end of its `with` block, the release of the handle that
created it, or its close if no handle made it. Its end time and durations are
fixed then, whatever still holds a reference; every layer's `on_end` runs
exactly once, at the end, before `on_close` (which comes with the last
reference, possibly later); `JsonLines` writes the span at its end.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from pykregistry import JsonLines, Registry, SpanRef


class Steps:
    """Records (step, name) for on_end, on_close and on_record."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.ends: dict[str, dict[str, Any]] = {}

    def on_end(self, span: SpanRef) -> None:
        self.seen.append(("end", span.name))
        self.ends[span.name] = {
            "end": span.end_time_ns,
            "busy": span.busy_ns,
            "idle": span.idle_ns,
            "fields": dict(span.fields),
        }

    def on_close(self, span: SpanRef) -> None:
        self.seen.append(("close", span.name))

    def on_record(self, span: SpanRef, values: dict[str, Any]) -> None:
        self.seen.append(("record", span.name))


def test_r14_with_block_ends_the_span_once_before_close() -> None:
    steps = Steps()
    reg = Registry(layers=[steps])
    with reg.span("a"), reg.span("b"):
        pass
    assert steps.seen == [("end", "b"), ("close", "b"), ("end", "a"), ("close", "a")]


def test_r14_a_clone_does_not_stretch_the_span() -> None:
    steps = Steps()
    reg = Registry(layers=[steps])
    with reg.span("job") as job:
        worker = job.clone()
    # The block is over: the span has ended, though the clone keeps it live.
    assert steps.seen == [("end", "job")]
    assert len(reg) == 1
    ref = worker.ref
    ended = ref.end_time_ns
    assert ended is not None
    busy, idle = ref.busy_ns, ref.idle_ns
    time.sleep(0.01)
    with worker.entered():  # entering after the end changes no duration
        time.sleep(0.01)
    assert (ref.end_time_ns, ref.busy_ns, ref.idle_ns) == (ended, busy, idle)
    worker.record(late=1)  # reaches on_record ...
    assert steps.seen[-1] == ("record", "job")
    assert "late" not in steps.ends["job"]["fields"]  # ... not what had ended
    worker.close()
    assert steps.seen == [("end", "job"), ("record", "job"), ("close", "job")]
    assert len(reg) == 0


def test_r14_worker_thread_spans_are_children_ending_later() -> None:
    steps = Steps()
    reg = Registry(layers=[steps])
    started, release = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def work(parent: Any) -> None:
        started.set()
        release.wait(10)
        with reg.span("task", parent=parent) as task:
            seen["parent"] = task.ref.parent_id
        parent.close()

    with reg.span("request") as request:
        t = threading.Thread(target=work, args=(request.clone(),))
        t.start()
        started.wait(10)
        rid = request.id
    assert steps.seen == [("end", "request")]
    release.set()
    t.join(10)
    assert seen["parent"] == rid
    assert steps.seen == [
        ("end", "request"),
        ("end", "task"),
        ("close", "task"),
        ("close", "request"),
    ]


def test_r14_handle_close_ends_it() -> None:
    steps = Steps()
    reg = Registry(layers=[steps])
    span = reg.span("s")
    other = span.clone()
    span.close()
    assert steps.seen == [("end", "s")]
    span.close()  # a second close is a no-op: still one end
    other.close()
    assert steps.seen == [("end", "s"), ("close", "s")]


def test_r14_without_a_handle_the_close_ends_it() -> None:
    steps = Steps()
    reg = Registry(layers=[steps])
    sid = reg.new_span("ids")
    reg.enter(sid)
    reg.exit(sid)
    assert steps.seen == []
    assert reg.get(sid).end_time_ns is None
    assert reg.try_close(sid) is True
    assert steps.seen == [("end", "ids"), ("close", "ids")]


def test_r14_garbage_collected_creating_handle_ends_it() -> None:
    steps = Steps()
    reg = Registry(layers=[steps])
    span = reg.span("dropped")
    keep = span.clone()
    del span
    assert steps.seen == [("end", "dropped")]
    keep.close()
    assert steps.seen == [("end", "dropped"), ("close", "dropped")]


def test_r14_json_lines_writes_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    out = JsonLines(str(path))
    reg = Registry(layers=[out])
    with reg.span("job", k=1) as job:
        worker = job.clone()
    out.flush()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["name"], line["fields"]) for line in lines] == [("job", {"k": 1})]
    assert lines[0]["end_time_ns"] >= lines[0]["start_time_ns"]
    worker.record(late=2)
    worker.close()
    out.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 1  # written once, at its end, without the late record
