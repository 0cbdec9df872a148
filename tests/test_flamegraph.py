"""The flame graph layer (issue 12 part 2): folded stacks of self busy time
(busy time less that of children on the same thread or task), an SVG by
inferno or folded text, drawn at flush, close and exit, nothing of the
parent's in a child; and the conversion of a JsonLines file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pykregistry import FlameGraph, JsonLines
from pykregistry._native import _jsonl_to_flamegraph

MS = 1_000_000


def folded_file(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, n = line.rsplit(" ", 1)
        out[stack] = int(n)
    return out


def known_program(reg: Any) -> None:
    """root: 20 ms alone, 30 ms in `child` (same thread), 50 ms waiting for
    `other` (another thread, concurrent: not subtracted)."""

    def in_thread() -> None:
        with reg.span("other", parent=root):
            time.sleep(0.05)

    with reg.span("root") as root:
        time.sleep(0.02)
        with reg.span("child"):
            time.sleep(0.03)
        t = threading.Thread(target=in_thread)
        t.start()
        t.join()


def test_self_times_of_a_known_program(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "p.folded"
    with FlameGraph(path) as out:
        assert out.format == "folded"
        reg = make(layers=[out])
        known_program(reg)
    stacks = folded_file(path)
    assert set(stacks) == {"root", "root;child", "root;other"}
    assert 30 * MS <= stacks["root;child"] < 45 * MS
    assert 50 * MS <= stacks["root;other"] < 70 * MS
    # root's own 20 ms plus the 50 ms it spent joining: its child on the
    # same thread is subtracted, the one on the other thread is not.
    assert 70 * MS <= stacks["root"] < 95 * MS
    assert out.folded() == stacks


def test_self_time_is_never_counted_twice_across_tasks(tmp_path: Path, make: Any) -> None:
    out = FlameGraph(tmp_path / "p.folded")
    reg = make(layers=[out])

    async def work() -> None:
        with reg.span("work"):  # entered across the await: busy 30 ms
            time.sleep(0.01)
            await asyncio.sleep(0.02)

    async def main() -> None:
        with reg.span("main"):
            await asyncio.gather(work(), work())

    t0 = time.perf_counter_ns()
    asyncio.run(main())
    wall = time.perf_counter_ns() - t0
    out.close()
    stacks = out.folded()
    assert set(stacks) == {"main", "main;work"}
    assert 60 * MS <= stacks["main;work"] < 90 * MS  # two tasks x 30 ms
    # main is busy throughout on its own task (about 40 ms); work's 60 ms
    # are on other tracks, concurrent, and not subtracted from it.
    assert 30 * MS <= stacks["main"] <= wall


def test_svg_names_the_spans(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "p.svg"
    out = FlameGraph(path, title="my profile")
    assert out.format == "svg"
    reg = make(layers=[out])
    known_program(reg)
    out.flush()
    svg = path.read_text(encoding="utf-8")
    assert svg.startswith("<?xml")
    assert "<svg" in svg
    assert "</svg>" in svg
    assert "my profile" in svg
    for name in ("root", "child", "other"):
        assert f"<title>{name} (" in svg, name
    out.close()
    out.close()
    assert out.closed


def test_format_argument_and_bad_format(tmp_path: Path) -> None:
    assert FlameGraph(tmp_path / "x.txt", format="folded").format == "folded"
    assert FlameGraph(tmp_path / "x.folded", format="svg").format == "svg"
    with pytest.raises(ValueError, match="format must be"):
        FlameGraph(tmp_path / "x.svg", format="png")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        FlameGraph(tmp_path / "no" / "dir.svg")


def test_open_intervals_count_at_close(tmp_path: Path, make: Any) -> None:
    out = FlameGraph(tmp_path / "p.folded")
    reg = make(layers=[out])
    with reg.span("long"):
        time.sleep(0.005)
        out.flush()
        assert out.folded() == {}
        out.close()
    assert out.folded()["long"] >= 5 * MS


def test_drawn_at_interpreter_exit(tmp_path: Path) -> None:
    path = tmp_path / "p.folded"
    program = (
        "import pykregistry\n"
        f"out = pykregistry.FlameGraph({str(path)!r})\n"
        "reg = pykregistry.Registry(layers=[out])\n"
        "with reg.span('a'):\n"
        "    with reg.span('b'):\n"
        "        pass\n"
        "s = reg.span('still open')\n"
        "s.__enter__()\n"
        "KEEP = (reg, out, s)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert set(folded_file(path)) == {"a", "a;b", "still open"}


FORK = """
import os, sys
from pykregistry import FlameGraph, Registry
path = sys.argv[1]
out = FlameGraph(path)
reg = Registry(layers=[out])
with reg.span("before fork"):
    pass
pid = os.fork()
if pid == 0:
    status = 1
    try:
        with reg.span("in child"):
            pass
        out.close()  # the parent's: draws nothing here
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
def test_fork_child_draws_nothing_of_the_parent(tmp_path: Path) -> None:
    path = tmp_path / "p.folded"
    done = subprocess.run(
        [sys.executable, "-c", FORK, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert set(folded_file(path)) == {"before fork", "after fork"}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_write_error_at_exit_is_reported_once_never_raised(tmp_path: Path) -> None:
    program = (
        "import sys, pykregistry\n"
        "seen = []\n"
        "sys.unraisablehook = lambda u: seen.append(u.exc_value)\n"
        "out = pykregistry.FlameGraph('/dev/full')\n"
        "reg = pykregistry.Registry(layers=[out])\n"
        "with reg.span('a', pad='x' * 100000):\n"
        "    pass\n"
        "pykregistry._native._close_pictures()\n"  # what atexit runs
        "pykregistry._native._close_pictures()\n"  # closed: nothing more
        "print(out.write_errors, len(seen), type(seen[0]).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "OSError"]


def test_jsonl_converts_to_folded_and_svg(tmp_path: Path, make: Any) -> None:
    src = tmp_path / "t.jsonl"
    with JsonLines(src) as jl:
        reg = make(layers=[jl])
        known_program(reg)
    folded_path, svg_path = tmp_path / "t.folded", tmp_path / "t.svg"
    report = _jsonl_to_flamegraph(src, folded_path)
    assert report["spans"] == 3
    assert report["error_count"] == 0
    stacks = folded_file(folded_path)
    assert set(stacks) == {"root", "root;child", "root;other"}
    assert 70 * MS <= stacks["root"] < 95 * MS
    _jsonl_to_flamegraph(src, svg_path)
    svg = svg_path.read_text(encoding="utf-8")
    assert "<title>child (" in svg
    assert "t.jsonl" in svg  # the title names the source


def test_jsonl_flamegraph_reports_bad_lines(tmp_path: Path) -> None:
    src, dst = tmp_path / "t.jsonl", tmp_path / "t.folded"
    src.write_text('{"type":"span"}\n\n{"type":"span","span_id":"zz"}\n')
    report = _jsonl_to_flamegraph(src, dst)
    assert report["spans"] == 0
    assert [n for n, _ in report["errors"]] == [1, 3]
    assert "span_id" in report["errors"][1][1]
    assert dst.read_text() == ""
