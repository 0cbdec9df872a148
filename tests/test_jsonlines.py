"""The built-in JSON Lines layer (SPEC section 5): one JSON object per
closed span and per event, written natively, whole lines only, flushed on
close, at garbage collection and at interpreter exit, never raising into
the program it observes."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pykregistry import JsonLines, Level, Registry

SPAN_KEYS = [
    "type",
    "id",
    "parent_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "target",
    "level",
    "start_time_ns",
    "end_time_ns",
    "busy_ns",
    "idle_ns",
    "fields",
    "thread_id",
    "task",
    "on_parent_track",
]
EVENT_KEYS = [
    "type",
    "time_ns",
    "message",
    "target",
    "level",
    "parent_id",
    "trace_id",
    "span_id",
    "fields",
    "thread_id",
    "task",
]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class Thing:
    def __repr__(self) -> str:
        return "Thing()"


def test_jsonlines_writes_spans_as_they_close_and_events(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "trace.jsonl"
    with JsonLines(path) as out:
        reg = make(layers=[out])
        assert reg.layers == [out]
        with (
            reg.span("outer", target="app", user='u"1\n\u00e9', big=2**70, thing=Thing()) as o,
            reg.span("inner", level="debug", nan=float("nan"), ok=True) as i,
        ):
            i.record("return", 1.5)
            reg.event("hello", level=Level.WARN, target="app.ev", k=None, n=-3)
        outer_id, inner_id = o.id, i.id
    assert out.closed
    event, inner, outer = lines(path)
    assert list(inner) == SPAN_KEYS
    assert list(event) == EVENT_KEYS
    assert event == {
        **event,
        "type": "event",
        "message": "hello",
        "target": "app.ev",
        "level": "WARN",
        "parent_id": inner_id,
        "fields": {"k": None, "n": -3},
    }
    assert inner == {
        **inner,
        "type": "span",
        "id": inner_id,
        "parent_id": outer_id,
        "name": "inner",
        "target": __name__,
        "level": "DEBUG",
        "fields": {"nan": None, "ok": True, "return": 1.5},
    }
    assert outer["fields"] == {"user": 'u"1\n\u00e9', "big": 2**70, "thing": "Thing()"}
    assert (outer["id"], outer["parent_id"], outer["level"]) == (outer_id, None, "INFO")
    for span in (inner, outer):
        assert span["start_time_ns"] <= span["end_time_ns"]
        assert span["busy_ns"] >= 0
        assert span["idle_ns"] >= 0
    # The outer span was open around the inner one.
    assert outer["start_time_ns"] <= inner["start_time_ns"] <= inner["end_time_ns"]
    assert inner["end_time_ns"] <= outer["end_time_ns"]
    assert event["time_ns"] >= inner["start_time_ns"]


def test_jsonlines_says_whether_a_span_ran_on_its_parents_track(tmp_path: Path, make: Any) -> None:
    # What a flame graph's self time needs (docs/cli.md): the child says it,
    # so a conversion keeps one number per open span, not one per track.
    path = tmp_path / "trace.jsonl"
    with JsonLines(path) as out:
        reg = make(layers=[out])

        async def spawned() -> None:
            with reg.span("in_task"), reg.span("nested"):
                pass

        async def main() -> None:
            with reg.span("root") as root:
                with reg.span("inline"):
                    pass
                await asyncio.gather(spawned())
                thread = threading.Thread(target=lambda: reg.span("in_thread", parent=root).close())
                thread.start()
                thread.join()

        asyncio.run(main())
    said = {span["name"]: span["on_parent_track"] for span in lines(path)}
    assert said == {
        "root": None,  # no parent
        "inline": True,
        "nested": True,  # same task as its parent in_task
        "in_task": False,  # another asyncio task
        "in_thread": False,  # another thread
    }


def test_jsonlines_options_and_closing(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("old\n")
    out = JsonLines(str(path), events=False)
    assert (out.path, out.events, out.closed, out.write_errors) == (path, False, False, 0)
    reg = make(layers=[out])
    with reg.span("a"):
        reg.event("not written")
    out.flush()
    assert [line["name"] for line in lines(path)] == ["a"]  # truncated, no event
    out.close()
    out.close()  # a second close does nothing
    with reg.span("after close"):
        pass
    assert [line["name"] for line in lines(path)] == ["a"]
    assert repr(out) == f"JsonLines({str(path)!r}, closed=True)"

    appended = JsonLines(path, append=True)
    reg.add_layer(appended)
    with reg.span("b"):
        pass
    appended.close()
    assert [line["name"] for line in lines(path)] == ["a", "b"]


def test_jsonlines_bad_path_is_os_error_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        JsonLines(tmp_path / "missing" / "t.jsonl")
    with pytest.raises(IsADirectoryError):
        JsonLines(tmp_path)
    with pytest.raises(TypeError):
        JsonLines(3)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_jsonlines_skips_filtered_out_spans_and_events(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "t.jsonl"
    with JsonLines(path) as out:
        reg = make(level="info", layers=[out])
        with reg.span("kept"), reg.span("dropped", level="debug"):
            reg.event("quiet", level="trace")
            reg.event("loud", level="error")
    assert [line.get("name", line.get("message")) for line in lines(path)] == ["loud", "kept"]


def test_jsonlines_beside_python_layers(tmp_path: Path, make: Any) -> None:
    closed: list[str] = []

    class Names:
        def on_close(self, span: Any) -> None:
            closed.append(span.name)

    path = tmp_path / "t.jsonl"
    with JsonLines(path) as out:
        reg = make(layers=[Names(), out])
        with reg.span("a"), reg.span("b"):
            pass
    assert closed == ["b", "a"]
    assert [line["name"] for line in lines(path)] == ["b", "a"]


def test_jsonlines_threads_write_whole_lines(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "t.jsonl"
    threads, per_thread = 4, 500
    barrier = threading.Barrier(threads)
    with JsonLines(path) as out:
        reg = make(layers=[out])

        def work(n: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                with reg.span("w", worker=n, i=i, pad="x" * (i % 200)):
                    reg.event("e", worker=n)

        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    written = lines(path)  # every line parses: none interleaved
    spans = [line for line in written if line["type"] == "span"]
    events = [line for line in written if line["type"] == "event"]
    assert len(spans) == len(events) == threads * per_thread
    for n in range(threads):
        mine = [s["fields"]["i"] for s in spans if s["fields"]["worker"] == n]
        assert mine == list(range(per_thread))  # each thread's spans in order


def test_jsonlines_flushed_when_collected(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"

    def run() -> None:
        reg = Registry(layers=[JsonLines(path)])
        with reg.span("a"):
            pass

    run()
    gc.collect()
    assert [line["name"] for line in lines(path)] == ["a"]


def test_jsonlines_flushed_at_interpreter_exit(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    program = (
        "import pykregistry\n"
        f"out = pykregistry.JsonLines({str(path)!r})\n"
        "reg = pykregistry.Registry(layers=[out])\n"
        "with reg.span('a'):\n"
        "    pass\n"
        "KEEP = (reg, out)\n"  # alive until the end: only the exit flush writes
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert [line["name"] for line in lines(path)] == ["a"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_jsonlines_write_errors_are_counted_never_raised(make: Any, unraisable: Any) -> None:
    out = JsonLines("/dev/full", append=True)
    reg = make(layers=[out])
    for _ in range(2000):  # more than the 64 KiB buffer
        with reg.span("s", pad="x" * 100):
            pass
    assert out.write_errors > 0
    assert len(unraisable.exceptions) == 1  # the first failure is reported
    assert isinstance(unraisable.exceptions[0], OSError)
    for _ in range(2):  # the second lands in a buffer emptied by a failure
        with reg.span("s"):
            pass
    with pytest.raises(OSError, match="No space left"):
        out.close()
    assert out.closed


FORK = """
import os, sys
from pykregistry import JsonLines, Registry
parent_path, child_path = sys.argv[1:3]
out = JsonLines(parent_path)
reg = Registry(layers=[out])
with reg.span("before fork"):
    pass
pid = os.fork()
if pid == 0:  # the child leaves through os._exit, whatever happens
    status = 1
    try:
        with reg.span("in child"):
            pass
        out.flush()
        mine = JsonLines(child_path)
        reg.add_layer(mine)
        with reg.span("child's own"):
            pass
        mine.close()
        status = 0
    finally:
        os._exit(status)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
with reg.span("after fork"):
    pass
out.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_jsonlines_fork_writes_each_line_once(tmp_path: Path) -> None:
    # Buffered lines are flushed before the fork; in the child the parent's
    # layer writes nothing (its buffer and file offset are the parent's),
    # and a layer made in the child writes as usual. In a fresh interpreter:
    # forking the test process would copy pytest's threads.
    path, child_path = tmp_path / "parent.jsonl", tmp_path / "child.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", FORK, str(path), str(child_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [line["name"] for line in lines(path)] == ["before fork", "after fork"]
    assert [line["name"] for line in lines(child_path)] == ["child's own"]
