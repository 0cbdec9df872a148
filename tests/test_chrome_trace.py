"""The Chrome trace layer (issue 12 part 1): busy intervals as slices on the
track of their thread or asyncio task, events as instants, arrows across
tracks, slices that always nest, a complete JSON document after close or
exit, nothing of the parent's written in a child; and the conversion of a
JsonLines file."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pykregistry import ChromeTrace, JsonLines, Registry
from pykregistry._native import _jsonl_to_chrome


def load(path: Path) -> list[dict[str, Any]]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(doc, list)
    return doc


def track_names(events: list[dict[str, Any]]) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}


def slices(events: list[dict[str, Any]], name: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["ph"] == "X" and (name is None or e["name"] == name)]


def assert_nested(events: list[dict[str, Any]]) -> None:
    """Perfetto's rule: complete events on one track nest (in ns, as read)."""
    by_track: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for e in slices(events):
        start = round(e["ts"] * 1000)
        by_track[e["tid"]].append((start, start + round(e["dur"] * 1000)))
    for spans in by_track.values():
        for i, (s1, e1) in enumerate(spans):
            for s2, e2 in spans[i + 1 :]:
                assert e1 <= s2 or e2 <= s1 or (s1 <= s2 and e2 <= e1) or (s2 <= s1 and e1 <= e2), (
                    (s1, e1),
                    (s2, e2),
                )


def test_slices_tracks_instants_and_args(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "trace.json"
    with ChromeTrace(path) as out:
        reg = make(layers=[out])
        with reg.span("request", target="app", path="/"), reg.span("db", rows=3):
            reg.event("cache miss", key="k")
        assert not out.closed
    assert out.closed
    events = load(path)
    names = track_names(events)
    (request,) = slices(events, "request")
    (db,) = slices(events, "db")
    assert names[request["tid"]] == threading.current_thread().name
    assert db["tid"] == request["tid"]
    assert request["cat"] == "app"
    assert request["args"]["fields"] == {"path": "/"}
    assert db["args"]["parent_span_id"] == request["args"]["span_id"]
    assert db["args"]["trace_id"] == request["args"]["trace_id"]
    assert len(db["args"]["span_id"]) == 16
    assert request["pid"] == os.getpid()
    assert request["ts"] <= db["ts"]
    assert db["ts"] + db["dur"] <= request["ts"] + request["dur"] + 1e-9
    (miss,) = [e for e in events if e["ph"] == "i"]
    assert miss["name"] == "cache miss"
    assert miss["tid"] == db["tid"]
    assert miss["args"]["span_id"] == db["args"]["span_id"]
    assert miss["args"]["fields"] == {"key": "k"}


def test_each_enter_is_a_slice(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "trace.json"
    out = ChromeTrace(path)
    reg = make(layers=[out])
    s = reg.span("worker")
    for _ in range(3):
        with s.entered():
            pass
    s.close()
    out.close()
    assert len(slices(load(path), "worker")) == 3


def test_threads_and_tasks_are_tracks_with_arrows_from_parents(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "trace.json"
    out = ChromeTrace(path)
    reg = make(layers=[out])

    async def handle_request(n: int) -> None:
        with reg.span("handle", n=n):
            await asyncio.sleep(0.001)
            with reg.span("inner"):
                await asyncio.sleep(0)

    async def main() -> None:
        with reg.span("main"):
            await asyncio.gather(*(handle_request(n) for n in range(2)))

    def in_thread() -> None:
        with reg.span("threaded", parent=root_span):
            pass

    with reg.span("root") as root_span:
        asyncio.run(main())
        t = threading.Thread(target=in_thread, name="worker-thread")
        t.start()
        t.join()
    out.close()
    events = load(path)
    names = track_names(events)
    handles = slices(events, "handle")
    assert len({e["tid"] for e in handles}) == 2  # one track per task
    for h in handles:
        label = names[h["tid"]]
        assert label.startswith("Task-"), label
        assert label.endswith("handle_request"), label
    (threaded,) = slices(events, "threaded")
    assert names[threaded["tid"]] == "worker-thread"
    (main_slice,) = slices(events, "main")
    # Arrows: from the parent's slice to the first slice of each child on
    # another track.
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert starts.keys() == ends.keys()
    arrows = {(starts[i]["tid"], ends[i]["tid"]) for i in starts}
    for h in handles:
        assert (main_slice["tid"], h["tid"]) in arrows
    (root,) = slices(events, "root")
    assert (root["tid"], threaded["tid"]) in arrows
    for i, s in starts.items():
        assert s["ts"] <= ends[i]["ts"]
        assert s["bp"] == ends[i]["bp"] == "e"
    # The spans' thread and task, read back.
    assert_nested(events)


def test_span_ref_thread_id_and_task_name(tmp_path: Path, make: Any) -> None:
    out = ChromeTrace(tmp_path / "t.json")
    reg = make(layers=[out])
    seen: dict[str, tuple[int, str | None]] = {}

    def look(sid: int, key: str) -> None:
        ref = reg.get(sid)
        assert ref is not None
        seen[key] = (ref.thread_id, ref.task_name)

    async def job() -> None:
        with reg.span("in task") as s:
            look(s.id, "task")

    async def main() -> None:
        await asyncio.create_task(job(), name="my-job")

    with reg.span("outside") as s:
        look(s.id, "outside")
    asyncio.run(main())
    t = threading.Thread(target=lambda: look(reg.span("t").id, "thread"))
    out.close()
    assert seen["outside"] == (threading.get_ident(), None)
    assert seen["task"] == (threading.get_ident(), "my-job")
    del t
    # Without a layer that needs tasks, none is looked up (P1's hot path).
    bare = make()
    with bare.span("x") as s:
        ref = bare.get(s.id)
        assert ref is not None
        assert ref.thread_id == threading.get_ident()
        assert ref.task_name is None


def test_a_thread_span_records_its_thread(make: Any) -> None:
    reg = make()
    got: list[int] = []

    def run() -> None:
        with reg.span("t") as s:
            ref = reg.get(s.id)
            assert ref is not None
            got.append(ref.thread_id)
            got.append(threading.get_ident())

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert got[0] == got[1] != threading.get_ident()


def test_follows_from_is_an_arrow(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "trace.json"
    out = ChromeTrace(path)
    reg = make(layers=[out])
    with reg.span("cause") as cause:
        pass
    later = reg.span("effect")
    with later.entered():
        later.follows_from(cause)  # cause has ended: no arrow from it
    later.close()
    with reg.span("a") as a, reg.span("b") as b:
        b.follows_from(a)
    out.close()
    events = load(path)
    flows = [e for e in events if e["ph"] in "sf" and e["name"] == "follows_from"]
    assert len(flows) == 2
    (a_slice,) = slices(events, "a")
    (b_slice,) = slices(events, "b")
    s = next(e for e in flows if e["ph"] == "s")
    f = next(e for e in flows if e["ph"] == "f")
    assert s["ts"] == a_slice["ts"]
    assert f["ts"] == b_slice["ts"]


def test_out_of_order_exit_still_nests(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "trace.json"
    out = ChromeTrace(path)
    reg = make(layers=[out])

    def gen() -> Any:
        with reg.span("gen"):
            yield 1
            yield 2

    g = gen()
    next(g)
    with reg.span("caller"):
        g.close()  # "gen" exits below "caller"
    out.close()
    events = load(path)
    assert len(slices(events, "gen")) == 1
    assert len(slices(events, "caller")) == 2  # split at gen's exit
    assert_nested(events)


def test_open_slices_end_at_close_and_later_spans_are_dropped(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "trace.json"
    out = ChromeTrace(path)
    reg = make(layers=[out])
    with reg.span("open"):
        out.flush()
        text = path.read_text(encoding="utf-8")
        assert text.startswith("[\n")  # unterminated until close
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        out.close()
        out.close()  # a second close does nothing
    with reg.span("after"):
        pass
    events = load(path)
    assert [e["name"] for e in slices(events)] == ["open"]
    assert "closed=True" in repr(out)


@settings(max_examples=40, deadline=None)
@given(
    programs=st.lists(
        st.lists(st.sampled_from(["enter", "exit", "await", "span"]), max_size=12),
        min_size=1,
        max_size=4,
    )
)
def test_random_programs_of_tasks_always_nest(tmp_path_factory: Any, programs: Any) -> None:
    """Random programs of nested spans across tasks, with generators closed
    out of order: every track's slices nest, and each span is drawn."""
    path = tmp_path_factory.mktemp("prop") / "trace.json"
    out = ChromeTrace(path)
    reg = Registry(layers=[out])
    made = 0
    names: list[str] = []

    def gen(name: str) -> Any:
        with reg.span(name):
            yield

    async def task(program: list[str]) -> None:
        nonlocal made
        open_gens: list[Any] = []
        for step in program:
            if step == "enter":
                g = gen(f"g{made}")
                names.append(f"g{made}")
                made += 1
                next(g)
                open_gens.append(g)
            elif step == "exit" and open_gens:
                open_gens.pop(0).close()  # the oldest: out of order
            elif step == "await":
                await asyncio.sleep(0)
            else:
                names.append(f"s{made}")
                with reg.span(f"s{made}"):
                    made += 1
                    await asyncio.sleep(0)
        for g in open_gens:
            g.close()

    async def main() -> None:
        await asyncio.gather(*(task(p) for p in programs))

    asyncio.run(main())
    out.close()
    events = load(path)
    assert_nested(events)
    assert {e["name"] for e in slices(events)} == set(names)
    assert len(reg) == 0


def test_written_at_interpreter_exit(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    program = (
        "import pykregistry\n"
        f"out = pykregistry.ChromeTrace({str(path)!r})\n"
        "reg = pykregistry.Registry(layers=[out])\n"
        "with reg.span('a'):\n"
        "    pass\n"
        "s = reg.span('still open')\n"
        "s.__enter__()\n"
        "KEEP = (reg, out, s)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    events = load(path)  # one complete document
    assert sorted(e["name"] for e in slices(events)) == ["a", "still open"]


FORK = """
import json, os, sys
from pykregistry import ChromeTrace, Registry
parent_path, child_path = sys.argv[1:3]
out = ChromeTrace(parent_path)
reg = Registry(layers=[out])
with reg.span("before fork"):
    pass
pid = os.fork()
if pid == 0:
    status = 1
    try:
        with reg.span("in child"):
            pass
        out.flush()
        out.close()
        mine = ChromeTrace(child_path)
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
def test_fork_writes_each_slice_once(tmp_path: Path) -> None:
    path, child_path = tmp_path / "parent.json", tmp_path / "child.json"
    done = subprocess.run(
        [sys.executable, "-c", FORK, str(path), str(child_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [e["name"] for e in slices(load(path))] == ["before fork", "after fork"]
    assert [e["name"] for e in slices(load(child_path))] == ["child's own"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_write_errors_are_counted_never_raised(make: Any, unraisable: Any) -> None:
    out = ChromeTrace("/dev/full")
    reg = make(layers=[out])
    for _ in range(2000):  # more than the 64 KiB buffer
        with reg.span("s", pad="x" * 100):
            pass
    assert out.write_errors > 0
    assert len(unraisable.exceptions) == 1
    assert isinstance(unraisable.exceptions[0], OSError)
    with pytest.raises(OSError, match="No space left"):
        out.close()
    assert out.closed


def test_bad_path_is_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ChromeTrace(tmp_path / "no" / "such" / "dir.json")


# === JsonLines conversion ===


def test_jsonl_converts_to_one_slice_per_span(tmp_path: Path, make: Any) -> None:
    src, dst = tmp_path / "t.jsonl", tmp_path / "t.json"
    with JsonLines(src) as jl:
        reg = make(layers=[jl])

        async def handle_request() -> None:
            with reg.span("handle"):
                reg.event("inside")
                await asyncio.sleep(0)

        async def main() -> None:
            with reg.span("main"):
                await asyncio.create_task(handle_request(), name="Task-req")

        asyncio.run(main())
    lines = [json.loads(x) for x in src.read_text().splitlines()]
    handle_line = next(x for x in lines if x.get("name") == "handle")
    assert handle_line["thread_id"] == threading.get_ident()
    assert handle_line["task"] == "Task-req"
    seen: list[int] = []
    report = _jsonl_to_chrome(src, dst, progress=seen.append)
    assert report["spans"] == 2
    assert report["events"] == 1
    assert report["errors"] == []
    assert report["error_count"] == 0
    assert seen[-1] == src.stat().st_size == report["bytes"]
    events = load(dst)
    names = track_names(events)
    (handle,) = slices(events, "handle")
    (main,) = slices(events, "main")
    assert names[handle["tid"]] == "Task-req"
    assert handle["args"]["parent_span_id"] == main["args"]["span_id"]
    assert {e["ph"] for e in events if e.get("name") == "parent"} == {"s", "f"}
    assert any(e["ph"] == "i" and e["name"] == "inside" for e in events)
    assert_nested(events)


def test_jsonl_conversion_reports_bad_lines_and_goes_on(tmp_path: Path) -> None:
    src, dst = tmp_path / "t.jsonl", tmp_path / "t.json"
    good = (
        '{"type":"span","trace_id":"0000000000000000000000000000000a","span_id":"000000000000000b",'
        '"parent_span_id":null,"name":"ok","target":"t","level":"INFO","start_time_ns":1000,'
        '"end_time_ns":2000,"busy_ns":1000,"idle_ns":0,"fields":{},"thread_id":1,"task":null}'
    )
    src.write_text(f"{good}\nnot json\n{good.replace('ok', 'ok2')}\n{good[:60]}")
    report = _jsonl_to_chrome(src, dst)
    assert report["spans"] == 2
    assert report["lines"] == 4
    assert [n for n, _ in report["errors"]] == [2, 4]
    assert "cut short" in report["errors"][1][1]
    assert sorted(e["name"] for e in slices(load(dst))) == ["ok", "ok2"]


def test_jsonl_conversion_progress_can_stop_it(tmp_path: Path) -> None:
    src, dst = tmp_path / "t.jsonl", tmp_path / "t.json"
    src.write_text("")

    def stop(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _jsonl_to_chrome(src, dst, progress=stop)
    with pytest.raises(FileNotFoundError):
        _jsonl_to_chrome(tmp_path / "missing.jsonl", dst)
