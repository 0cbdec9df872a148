"""The command line, ``python -m pykregistry``: what it prints and returns
(never how fast: the bench's numbers are only checked for their shape)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pykregistry.__main__ import main


def test_cli_demo_prints_the_tree_and_no_leak(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--ascii"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pykregistry demo: ")
    assert "live spans after the workload: len(registry) = 0" in out


def test_cli_demo_writes_its_trace_as_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "demo.jsonl"
    assert main(["demo", "--ascii", "--jsonl", str(path)]) == 0
    out = capsys.readouterr().out
    header = re.search(r"demo: (\d+) spans, (\d+) event", out)
    assert header is not None
    written = [json.loads(line) for line in path.read_text().splitlines()]
    spans = [w for w in written if w["type"] == "span"]
    events = [w for w in written if w["type"] == "event"]
    assert (len(spans), len(events)) == (int(header[1]), int(header[2]))
    assert f"trace written to {path} as JSON lines ({len(written)} lines)" in out
    # The same roots as the printed tree; every other span's parent is a
    # span of the trace; the workload's root closes last.
    ids = {s["id"] for s in spans}
    roots = [s["name"] for s in spans if s["parent_id"] is None]
    assert roots
    for name in roots:
        assert re.search(rf"^{re.escape(name)}  ", out, re.M), name
    assert all(s["parent_id"] in ids for s in spans if s["parent_id"] is not None)
    assert spans[-1]["name"] == "demo"


def test_cli_bench_prints_every_case_with_its_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--rounds", "1", "--number", "40"]) == 0
    out = capsys.readouterr().out
    rows = {
        m.group(1).strip(): [float(x) for x in m.group(2, 3, 4, 5)]
        for m in re.finditer(r"^(.{36}) +(\d+) +([\d.]+) +([\d.]+) +([\d.]+)$", out, re.M)
    }
    for case in (
        "empty with CM()",
        "P1 with reg.span('x')",
        "P3 filtered out, callsite",
        "P3 filtered out, reg.span(level=str)",
        "P4 @instrument(ret=True) f()",
        "P8 JsonLines layer writing a file",
        "P8 ChromeTrace layer writing a file",
        "P8 FlameGraph layer",
        "P11 OtlpExporter, loopback",
        "plain call f()",
    ):
        assert case in rows, f"no row for {case!r} in:\n{out}"
    # Each row's ratios are its own median over the three baselines.
    for case, values in rows.items():
        assert all(v > 0 for v in values), case
    assert rows["empty with CM()"][1] == 1.0
    assert rows["P1 with reg.span('x')"][2] == 1.0
    assert rows["plain call f()"][3] == 1.0
    # Every target it measures, each beside its measure and whether it is met.
    targets: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith("  P"):
            targets.setdefault(line.split()[0], []).append(line)
    assert set(targets) == RULES, out
    assert len(targets["P11"]) == 2  # the ratio to P1, and the SDK's to it
    assert any("target <= 2.00x" in line for line in targets["P1"])
    assert any("target >= 30x" in line for line in targets["P1"])
    assert "target <= 2.00x" in targets["P13"][0]
    assert "target <= 160 B" in targets["P5"][0]
    assert len(targets["P3"]) == 3
    assert len(targets["P4"]) == 3
    for line in (line for lines in targets.values() for line in lines):
        assert line.endswith(("   met", "   NOT MET", "   not measured")), line


MARKDOWN_ROW = re.compile(r"^\|(?: [^|]*(?:\\\|[^|]*)* \|)+$")


def markdown_tables(text: str) -> list[list[list[str]]]:
    """The Markdown tables of ``text``, each a list of rows of cells (the
    header first, the separator row left out); fails on a malformed one."""
    tables: list[list[list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("|"):
            i += 1
            continue
        header = lines[i]
        separator = lines[i + 1]
        assert MARKDOWN_ROW.match(header), header
        width = header.count(" | ") + 1
        assert re.fullmatch(rf"\|(?: -{{3,}}:? \|){{{width}}}", separator), separator
        rows = [[c.strip() for c in re.split(r"(?<!\\)\|", header)[1:-1]]]
        i += 2
        while i < len(lines) and lines[i].startswith("|"):
            assert MARKDOWN_ROW.match(lines[i]), lines[i]
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", lines[i])[1:-1]]
            assert len(cells) == width, lines[i]
            assert all(cells), lines[i]
            rows.append(cells)
            i += 1
        tables.append(rows)
    return tables


# The targets the bench measures.
RULES = {"P1", "P2", "P3", "P4", "P5", "P8", "P11", "P13"}


def check_figures(text: str, rules: set[str] = RULES) -> None:
    """``text`` is what ``bench --markdown`` prints: the line saying how,
    when and where, then the targets' table (a row for each of ``rules``)
    and the cases' table."""
    first = text.splitlines()[0]
    assert first.startswith("Generated by `python -m pykregistry bench --markdown` on "), first
    assert re.search(r" on \d{4}-\d\d-\d\d \d\d:\d\d UTC: \d+ interleaved rounds? of ", first)
    assert re.search(r"CPython 3\.\d+\.\d+, .*\d+ CPUs", first), first
    targets, timed = markdown_tables(text)
    assert targets[0] == ["#", "what", "measured", "target", "met"]
    assert {row[0] for row in targets[1:]} == rules
    for rule, _what, measured, target, met in targets[1:]:
        assert re.match(r"[≤≥] [\d.,]+ ?(\N{MULTIPLICATION SIGN}|B)$", target), (rule, target)
        assert met in {"met", "**not met**", "not measured"}, (rule, met)
        if met != "not measured":
            assert re.match(r"[\d.,]+ ?(\N{MULTIPLICATION SIGN}|B) \(", measured), (rule, measured)
    assert timed[0][:2] == ["case", "median ns"]
    names = [row[0] for row in timed[1:]]
    assert names[:2] == ["empty with CM()", "P1 with reg.span('x')"]
    assert "P8 JsonLines layer writing a file" in names
    base = next(row for row in timed[1:] if row[0] == "empty with CM()")
    assert base[2] == "1.00"
    for row in timed[1:]:
        assert float(row[1].replace(",", "")) > 0, row


def test_cli_bench_markdown_prints_the_figures_page(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--rounds", "1", "--number", "20", "--markdown"]) == 0
    out = capsys.readouterr().out
    check_figures(out)
    assert " 1 interleaved round of 20 operations per case" in out.splitlines()[0]


def test_the_docs_figures_are_the_bench_output() -> None:
    """docs/figures.md is generated by ``bench --markdown`` (with the
    default rounds), not written by hand: same shape, same rows."""
    figures = Path(__file__).resolve().parent.parent / "docs" / "figures.md"
    text = figures.read_text()
    # P11 once the page is regenerated with it.
    check_figures(text, RULES if "| P11 |" in text else RULES - {"P11"})
    assert " 15 interleaved rounds of 100,000 operations per case" in text.splitlines()[0]


def test_cli_bench_refuses_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--rounds", "0"]) == 2
    assert "--rounds must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--number", "many"])
    assert exited.value.code == 2


def test_cli_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pykregistry", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "demo" in done.stdout
    assert "bench" in done.stdout


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_cli_stops_quietly_when_its_reader_has_gone(buffered: bool) -> None:
    """``python -m pykregistry demo | head``: a reader that closed the pipe
    early gives exit status 1 and nothing on stderr (no BrokenPipeError
    traceback, no "Exception ignored" at exit), whether stdout is buffered
    (the error comes at the final flush) or not (at the first print)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pykregistry", "demo"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 1


def test_cli_reader_that_reads_one_line_then_closes() -> None:
    """The same through a reader that takes one line and closes the pipe:
    whether the demo still writes after that is a race, so it may end 0 or
    1, but never with a traceback."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-m", "pykregistry", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read()
        status = proc.wait(timeout=60)
    assert first.startswith(b"pykregistry demo: ")
    assert err == b""
    assert status in (0, 1)


@pytest.mark.parametrize("where", ["missing dir", "a directory"])
def test_cli_demo_says_which_trace_file_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """``demo --jsonl PATH`` that cannot be opened: one line on stderr with
    the path and the system's reason, status 1, no traceback, no demo."""
    path = tmp_path / "no" / "such" / "x.jsonl" if where == "missing dir" else tmp_path
    reason = "No such file or directory" if where == "missing dir" else "Is a directory"
    assert main(["demo", "--jsonl", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"pykregistry: cannot write {path}: {reason}\n"


def test_cli_cannot_write_runs_as_a_module_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "no" / "x.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "pykregistry", "demo", "--jsonl", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"pykregistry: cannot write {path}: No such file or directory\n"


# === run: a program traced, as python would run it ===

PROGRAM = """
import atexit, json, os, pickle, sys, threading
import pykregistry


class Point:
    def __init__(self, x):
        self.x = x


def report():
    print(json.dumps({
        "name": __name__,
        "argv": sys.argv,
        "path0": sys.path[0],
        "file": __file__,
        "main_is_me": sys.modules["__main__"].__dict__ is globals(),
        "pickles": pickle.loads(pickle.dumps(Point(3))).x == 3,
        "filter": os.environ.get("PYKREGISTRY_FILTER"),
    }), flush=True)


@pykregistry.instrument
def work(n):
    with pykregistry.span("step", n=n):
        pass


def main(args):
    report()
    if "open" in args:  # a span nobody closes: closed at exit
        globals()["kept"] = pykregistry.span("kept")
    if "atexit" in args:
        atexit.register(lambda: pykregistry.span("at_exit").close())
    if "daemon" in args:  # a thread stuck inside a span for ever
        ready = threading.Event()
        def stuck():
            with pykregistry.span("stuck"):
                ready.set()
                threading.Event().wait()
        threading.Thread(target=stuck, daemon=True).start()
        ready.wait()
    with pykregistry.span("main", args=len(args)):
        work(1)
        thread = threading.Thread(target=work, args=(2,))
        thread.start()
        thread.join()
        pykregistry.info("hello", where="main")
        with pykregistry.debug_span("detail"):
            pass
        for arg in args:
            if arg.startswith("exit="):
                code = arg[5:]
                sys.exit(int(code) if code.lstrip("-").isdigit() else code)
        if "raise" in args:
            raise ValueError("boom")


main(sys.argv[1:])
"""


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m pykregistry ARGS`` in ``cwd``, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "pykregistry", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """What the program reported about itself (its first line)."""
    return json.loads(done.stdout.splitlines()[0])


def spans_of(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if line["type"] == "span"]


@pytest.fixture
def program(tmp_path: Path) -> Path:
    """The program, in a directory of its own under ``tmp_path``."""
    path = tmp_path / "prog" / "app.py"
    path.parent.mkdir()
    path.write_text(PROGRAM)
    return path


def test_run_a_script_with_its_own_argv_main_and_path(program: Path, tmp_path: Path) -> None:
    """Options after the script are the script's (--tree here), sys.argv[0]
    is the script as given, __main__ is the script (pickle finds its
    classes), sys.path[0] its directory, __file__ absolute."""
    done = cli("run", "prog/app.py", "a", "--tree", "-m", "x", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # --tree was the program's: no tree printed
    seen = report(done)
    assert seen["name"] == "__main__"
    assert seen["argv"] == ["prog/app.py", "a", "--tree", "-m", "x"]
    assert seen["path0"] == str(program.parent.resolve())
    assert seen["file"] == str(program.resolve())
    assert seen["main_is_me"] is True
    assert seen["pickles"] is True


def test_run_a_script_after_double_dash(program: Path, tmp_path: Path) -> None:
    done = cli("run", "--jsonl", "t.jsonl", "--", "prog/app.py", "--jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert report(done)["argv"] == ["prog/app.py", "--jsonl"]
    assert (tmp_path / "t.jsonl").exists()


def test_run_a_module_as_python_m(program: Path, tmp_path: Path) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(PROGRAM)
    (tmp_path / "mymod.py").write_text(PROGRAM)
    for target, file in (("mypkg", package / "__main__.py"), ("mymod", tmp_path / "mymod.py")):
        done = cli("run", "--jsonl", "t.jsonl", "-m", target, "x", "--tree", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        seen = report(done)
        assert seen["name"] == "__main__"
        assert seen["argv"] == [str(file), "x", "--tree"]
        assert seen["path0"] == str(tmp_path)
        assert seen["main_is_me"] is True
        assert "main" in {s["name"] for s in spans_of(tmp_path / "t.jsonl")}


@pytest.mark.parametrize(
    ("arg", "status", "stderr"),
    [("exit=7", 7, ""), ("exit=0", 0, ""), ("exit=bye", 1, "bye\n"), ("exit=-1", 255, "")],
)
def test_run_passes_the_programs_exit_status_through(
    program: Path, tmp_path: Path, arg: str, status: int, stderr: str
) -> None:
    done = cli("run", "--jsonl", "t.jsonl", str(program), arg, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (status, stderr)
    # The spans the exit left are written, closed by the with blocks.
    names = [s["name"] for s in spans_of(tmp_path / "t.jsonl")]
    assert names[-1] == "main"
    assert names.count("step") == 2


def test_run_prints_an_exception_as_python_does_and_exits_1(program: Path, tmp_path: Path) -> None:
    done = cli("run", "--jsonl", "t.jsonl", str(program), "raise", cwd=tmp_path)
    assert done.returncode == 1
    plain = subprocess.run(
        [sys.executable, str(program), "raise"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert plain.returncode == 1
    # The same traceback as without pykregistry: none of its frames, nor runpy's.
    assert done.stderr == plain.stderr
    assert done.stderr.startswith("Traceback (most recent call last):\n")
    assert f'  File "{program}", line ' in done.stderr
    assert done.stderr.endswith("ValueError: boom\n")
    (main,) = [s for s in spans_of(tmp_path / "t.jsonl") if s["name"] == "main"]
    assert main["fields"]["error"] is True
    assert main["fields"]["exception.type"] == "ValueError"


def test_run_jsonl_has_the_programs_spans_linked(program: Path, tmp_path: Path) -> None:
    """Spans of the main thread and of a thread, an event, a span left open
    (closed at exit) and one made by the program's atexit handler."""
    done = cli("run", "--jsonl", "t.jsonl", str(program), "open", "atexit", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    spans = {s["span_id"]: s for s in lines if s["type"] == "span"}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in spans.values():
        by_name.setdefault(s["name"], []).append(s)
    assert sorted(by_name) == ["at_exit", "detail", "kept", "main", "step", "work"]
    (main,) = by_name["main"]
    assert main["fields"] == {"args": 2}
    # work(1) in main's block; work(2) in a new thread, where nothing is
    # current: a root of its own trace.
    works = sorted(by_name["work"], key=lambda w: w["start_time_ns"])
    assert [w["parent_span_id"] for w in works] == [main["span_id"], None]
    assert works[1]["trace_id"] != main["trace_id"]
    for step in by_name["step"]:
        assert spans[step["parent_span_id"]]["name"] == "work"
    (event,) = [e for e in lines if e["type"] == "event"]
    assert (event["message"], event["span_id"]) == ("hello", main["span_id"])


def test_run_tree_prints_the_tree_with_times_on_stderr_at_the_end(
    program: Path, tmp_path: Path
) -> None:
    done = cli("run", "--tree", str(program), "raise", "open", cwd=tmp_path)
    assert done.returncode == 1
    traceback_end = done.stderr.index("ValueError: boom\n") + len("ValueError: boom\n")
    tree = done.stderr[traceback_end:]
    assert "\x1b[" not in tree  # not a terminal: plain text
    duration = r"\d+(?:\.\d+)? (?:ns|µs|ms|s)"
    assert re.search(rf"^✗ main  {duration}.*  __main__ INFO  args=2 error=True", tree, re.M)
    assert re.search(rf"^├── work  {duration}.*  __main__ INFO  n=1$", tree, re.M)
    assert re.search(rf"^│   └── step  {duration}.*  __main__ INFO  n=1$", tree, re.M)
    assert re.search(r"^├── • INFO hello  where='main'$", tree, re.M)
    # The span left open was closed at exit, before the tree was drawn.
    assert re.search(rf"^kept  {duration}.*  __main__ INFO$", tree, re.M)
    assert "(open)" not in tree


def test_run_filter_applies_to_the_default_registry_and_children(
    program: Path, tmp_path: Path
) -> None:
    done = cli("run", "--filter", "info", "--jsonl", "t.jsonl", str(program), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    names = {s["name"] for s in spans_of(tmp_path / "t.jsonl")}
    assert "main" in names
    assert "detail" not in names  # a debug span
    assert report(done)["filter"] == "info"
    unfiltered = cli("run", "--jsonl", "u.jsonl", str(program), cwd=tmp_path)
    assert unfiltered.returncode == 0, unfiltered.stderr
    assert "detail" in {s["name"] for s in spans_of(tmp_path / "u.jsonl")}


NO_FILE = "No such file or directory"
ERRORS = [
    (["run", "nosuch.py"], 2, f"pykregistry run: cannot run nosuch.py: {NO_FILE}\n"),
    (["run", "-m", "nosuch_xyz"], 1, "pykregistry run: no module named 'nosuch_xyz'\n"),
    (["run", "--tree"], 2, "pykregistry run: no program to run: give a script"),
    (
        ["run", "--jsonl", "no/such/dir/t.jsonl", "prog/app.py"],
        1,
        f"pykregistry run: cannot write no/such/dir/t.jsonl: {NO_FILE}\n",
    ),
    (["run", "--filter", "info,=[", "prog/app.py"], 2, "pykregistry run: bad --filter 'info,=[': "),
    (["run", "--otlp=ftp://x", "prog/app.py"], 2, "pykregistry run: bad --otlp 'ftp://x': "),
    (["run", "--bogus", "prog/app.py"], 2, "error: unrecognized arguments: --bogus\n"),
    (["tree", "nosuch.jsonl"], 1, f"pykregistry tree: cannot read nosuch.jsonl: {NO_FILE}\n"),
    (["tree", "prog"], 1, "pykregistry tree: cannot read prog: Is a directory\n"),
    (["perfetto", "nosuch.jsonl"], 1, "pykregistry perfetto: "),
    (["flamegraph", "nosuch.jsonl", "-o", "x.svg"], 1, "pykregistry flamegraph: "),
    (["tree"], 2, "error: the following arguments are required: FILE.jsonl\n"),
]


@pytest.mark.parametrize(("args", "status", "message"), ERRORS)
def test_errors_name_the_file_and_the_cause_without_traceback(
    program: Path, tmp_path: Path, args: list[str], status: int, message: str
) -> None:
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == status
    assert done.stdout == ""  # the program did not run
    assert "Traceback" not in done.stderr
    assert message in done.stderr
    assert len(done.stderr.splitlines()) <= 5, done.stderr  # argparse: usage, then the error


def test_run_unknown_layer_fails_clearly_or_writes(program: Path, tmp_path: Path) -> None:
    """--perfetto and --flamegraph need pykregistry.ChromeTrace and
    FlameGraph (issue 12 parts 1 and 2): where the build has them, they
    write their file; where it has not, the flag fails before the program
    runs, saying what is missing."""
    import pykregistry

    for option, name, out in (
        ("--perfetto", "ChromeTrace", "t.json"),
        ("--flamegraph", "FlameGraph", "t.svg"),
    ):
        done = cli("run", option, out, str(program), cwd=tmp_path)
        if hasattr(pykregistry, name):
            assert done.returncode == 0, done.stderr
            assert (tmp_path / out).stat().st_size > 0
        else:
            assert done.returncode == 2
            assert done.stdout == ""
            assert done.stderr == (
                f"pykregistry run: {option} needs pykregistry.{name}, "
                "which this build of pykregistry does not have\n"
            )


class Collector:
    """An OTLP/HTTP endpoint on loopback that keeps each request's body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                collector.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_run_otlp_sends_the_spans_to_the_collector(program: Path, tmp_path: Path) -> None:
    collector = Collector()
    try:
        done = cli("run", "--otlp", collector.url, str(program), cwd=tmp_path)
    finally:
        collector.close()
    assert done.returncode == 0, done.stderr
    body = b"".join(collector.bodies)
    for name in (b"main", b"work", b"step", b"detail"):
        assert name in body
    # Without a URL: the OTEL_EXPORTER_OTLP_* environment.
    collector = Collector()
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
        done = cli("run", "--otlp", str(program), cwd=tmp_path, env=env)
    finally:
        collector.close()
    assert done.returncode == 0, done.stderr
    assert b"main" in b"".join(collector.bodies)


def test_run_never_hangs_the_program(program: Path, tmp_path: Path) -> None:
    """R15: a thread stuck inside a span for ever and a collector that
    never answers: the program still ends, promptly, with its outputs."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections into the backlog, never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        start = time.monotonic()
        done = cli(
            "run", "--otlp", url, "--tree", "--jsonl", "t.jsonl", str(program), "daemon",
            cwd=tmp_path,
            timeout=60,
        )  # fmt: skip
        took = time.monotonic() - start
    finally:
        silent.close()
    assert done.returncode == 0, done.stderr
    assert took < 20
    assert "stuck" in {s["name"] for s in spans_of(tmp_path / "t.jsonl")}
    assert re.search(r"^stuck  ", done.stderr, re.M)


def test_the_console_script_is_the_command_line() -> None:
    """pyproject's [project.scripts] names a function that runs the
    command line, which then calls itself ``pykregistry``."""
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.scripts\]\n((?:[^\[\n].*\n)+)", text, re.M)
    assert section is not None
    entries = dict(re.findall(r'^(\S+) = "([^"]+)"$', section[1], re.M))
    assert list(entries) == ["pykregistry"]
    module, function = entries["pykregistry"].split(":")
    code = (
        f"import sys; from {module} import {function} as main\n"
        "sys.argv = ['/venv/bin/pykregistry', 'run', '--help']\n"
        "sys.exit(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: pykregistry run [options] (script.py | -m module)")


# === tree, flamegraph, perfetto: a recorded trace, streamed ===


@pytest.fixture(scope="module")
def demo_trace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo's trace as JSON lines, and the tree the demo printed."""
    path = tmp_path_factory.mktemp("demo") / "trace.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "pykregistry", "demo", "--jsonl", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    tree = done.stdout.split("\n\n")[1]
    return path, tree


def blocks(tree: str) -> list[str]:
    """The trees of a drawing, one string each, sorted."""
    found: list[list[str]] = []
    for line in tree.splitlines():
        if line[:1] not in ("├", "└", "│", " ") or not found:
            found.append([])
        found[-1].append(line)
    return sorted("\n".join(b) for b in found)


def test_tree_of_a_file_is_the_tree_the_program_drew(
    demo_trace: tuple[Path, str], tmp_path: Path
) -> None:
    """Times included: the file has the spans' busy and idle times. Each
    tree is printed when its root arrives, so the roots come in the order
    they ended."""
    path, printed = demo_trace
    done = cli("tree", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert blocks(done.stdout) == blocks(printed)
    assert done.stdout.splitlines()[0].startswith("cache.refresh  ")  # it ended first
    assert "\x1b[" not in done.stdout
    plain = cli("tree", "--no-times", "--ascii", "--color=always", str(path), cwd=tmp_path)
    assert "\x1b[" in plain.stdout
    assert re.search(r"^\S*\|-- \S*http\.request\S*  \S*demo\.http", plain.stdout, re.M)
    assert " ms" not in plain.stdout
    assert " µs" not in plain.stdout


def test_tree_of_a_file_cut_short(demo_trace: tuple[Path, str], tmp_path: Path) -> None:
    """The last line (the demo's root) cut in the middle: the line is
    reported, the rest drawn, its children under a line naming the root."""
    path, printed = demo_trace
    data = path.read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[: len(data) - 40])
    lines = data.count(b"\n")
    root = json.loads(data.splitlines()[-1])
    assert root["name"] == "demo"
    done = cli("tree", "cut.jsonl", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        f"pykregistry tree: cut.jsonl:{lines}: cut short: the file ends inside this line\n"
        "pykregistry tree: cut.jsonl: 1 bad line left out; the trees were drawn from the rest\n"
    )
    drawn = done.stdout.splitlines()
    missing = drawn.index(f"? {root['span_id']}  (no line for this span before its children)")
    # The demo's tree, but for its root's line.
    demo_block = next(b for b in blocks(printed) if b.startswith("demo  "))
    assert drawn[missing + 1 :] == demo_block.splitlines()[1:]


def test_tree_of_a_file_with_bad_lines(demo_trace: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = demo_trace
    good = cli("tree", str(path), cwd=tmp_path).stdout
    lines = path.read_bytes().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(
        b"".join([*lines[:2], b"garbage\n", *lines[2:5], b'{"type": "span"}\n', *lines[5:]])
    )
    done = cli("tree", "bad.jsonl", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        "pykregistry tree: bad.jsonl:3: not JSON: Expecting value (column 1)\n"
        'pykregistry tree: bad.jsonl:7: a span without "trace_id"\n'
        "pykregistry tree: bad.jsonl: 2 bad lines left out; the trees were drawn from the rest\n"
    )
    assert done.stdout == good


def test_tree_reports_the_first_bad_lines_and_counts_the_rest(tmp_path: Path) -> None:
    (tmp_path / "junk.jsonl").write_text("not json\n" * 100)
    done = cli("tree", "junk.jsonl", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    err = done.stderr.splitlines()
    assert len(err) == 21
    assert err[0] == "pykregistry tree: junk.jsonl:1: not JSON: Expecting value (column 1)"
    assert err[19].startswith("pykregistry tree: junk.jsonl:20: ")
    assert err[20] == (
        "pykregistry tree: junk.jsonl: 100 bad lines left out (80 not shown); "
        "the trees were drawn from the rest"
    )


@pytest.fixture(scope="module")
def big_trace(demo_trace: tuple[Path, str]) -> Path:
    """The demo's trace 5000 times over: long enough to convert (a second
    or more) for a progress bar to show."""
    path, _ = demo_trace
    big = path.parent / "big.jsonl"
    big.write_bytes(path.read_bytes() * 5000)
    return big


def test_no_progress_bar_when_stderr_is_not_a_terminal(big_trace: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pykregistry", "tree", str(big_trace)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0
    assert done.stderr == ""


def test_progress_bar_on_a_terminal(big_trace: Path, tmp_path: Path) -> None:
    """Standard error on a pseudo-terminal: the bar is drawn in place, and
    erased at the end; the tree on standard output is untouched."""
    import pty

    controller, terminal = pty.openpty()
    out = tmp_path / "out.txt"
    with out.open("wb") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pykregistry", "tree", str(big_trace)],
            stdout=stdout,
            stderr=terminal,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
        )
    os.close(terminal)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal's last writer closed it
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert proc.wait(timeout=300) == 0
    text = shown.decode()
    assert re.search(r"\rtree big\.jsonl \[[#-]+\] +\d+%  [\d.]+ [KMG]?B / [\d.]+ MB", text), text
    assert text.endswith("\r\x1b[K")  # erased
    assert b"\r" not in out.read_bytes()
    assert out.read_text().count("\ndemo  ") == 5000


# flamegraph and perfetto run pykregistry._native's streaming converters
# (issue 12 parts 1 and 2, built on another branch): first the command
# line's part, with a stand-in converter; then the real one, where the
# build has it.


def fake_converter(calls: list[tuple[str, str]], bad: list[tuple[int, str]], count: int) -> Any:
    """A stand-in for the native converters: it writes ``dst``, reports
    progress once, and returns what they return."""

    def convert(src: str, dst: str, /, progress: Any = None) -> dict[str, Any]:
        calls.append((src, dst))
        Path(dst).write_text("converted")
        if progress is not None:
            progress(10)
        return {
            "lines": 1,
            "spans": 0,
            "events": 0,
            "bytes": 3,
            "errors": bad,
            "error_count": count,
        }

    return convert


@pytest.mark.parametrize(
    ("command", "function", "suffix"),
    [("perfetto", "_jsonl_to_chrome", ".json"), ("flamegraph", "_jsonl_to_flamegraph", ".svg")],
)
def test_convert_commands_run_the_native_converter(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    function: str,
    suffix: str,
) -> None:
    from pykregistry import _native

    src = tmp_path / "t.jsonl"
    src.write_text("{}\n")
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(_native, function, fake_converter(calls, [], 0), raising=False)
    assert main([command, str(src)]) == 0
    assert calls == [(str(src), str(tmp_path / f"t{suffix}"))]
    assert capsys.readouterr() == ("", "")
    # Bad lines: reported with their numbers, the output still written.
    # Bad lines: reported with their numbers (the first 20 of those the
    # converter kept), counted, the output still written.
    bad = [(3, "not JSON: Expecting value (column 1)"), (9, "cut short")]
    monkeypatch.setattr(_native, function, fake_converter(calls, bad, 2), raising=False)
    assert main([command, str(src), "-o", str(tmp_path / "x")]) == 1
    assert (tmp_path / "x").read_text() == "converted"
    assert capsys.readouterr().err == (
        f"pykregistry {command}: {src}:3: not JSON: Expecting value (column 1)\n"
        f"pykregistry {command}: {src}:9: cut short\n"
        f"pykregistry {command}: {src}: 2 bad lines left out; {tmp_path / 'x'} was written "
        "from the rest\n"
    )
    many = [(n, "not JSON") for n in range(1, 1001)]
    monkeypatch.setattr(_native, function, fake_converter(calls, many, 5000), raising=False)
    assert main([command, str(src), "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 21
    assert err[-1] == (
        f"pykregistry {command}: {src}: 5000 bad lines left out (4980 not shown); "
        f"{tmp_path / 'x'} was written from the rest"
    )

    # A file it cannot write: the file and the cause.
    def refuses(src: str, dst: str, /, progress: Any = None) -> None:
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(_native, function, refuses, raising=False)
    assert main([command, str(src), "-o", "/nope/x"]) == 1
    assert capsys.readouterr().err == (
        f"pykregistry {command}: cannot convert /nope/x: Permission denied\n"
    )
    # Never over the trace itself.
    assert main([command, str(src), "-o", str(src)]) == 2
    assert "is the trace itself" in capsys.readouterr().err
    assert src.read_text() == "{}\n"


@pytest.mark.parametrize(
    ("command", "function"),
    [("perfetto", "_jsonl_to_chrome"), ("flamegraph", "_jsonl_to_flamegraph")],
)
def test_convert_a_recorded_trace(
    demo_trace: tuple[Path, str], tmp_path: Path, command: str, function: str
) -> None:
    """The real converter on the demo's trace, whole, cut short and with a
    bad line; where the build has no converter, the command says so."""
    from pykregistry import _native

    path, _ = demo_trace
    data = path.read_bytes()
    (tmp_path / "cut.jsonl").write_bytes(data[:-40])
    lines = data.splitlines(keepends=True)
    (tmp_path / "bad.jsonl").write_bytes(b"".join([*lines[:2], b"garbage\n", *lines[2:]]))
    if not hasattr(_native, function):
        done = cli(command, str(path), "-o", "out", cwd=tmp_path)
        assert done.returncode == 1
        assert done.stderr == (
            f"pykregistry {command}: this build of pykregistry cannot convert traces "
            f"(pykregistry._native.{function} is missing)\n"
        )
        return
    done = cli(command, str(path), "-o", "whole", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert (tmp_path / "whole").stat().st_size > 0
    done = cli(command, "cut.jsonl", "-o", "cut", cwd=tmp_path)
    assert done.returncode == 1
    assert f"cut.jsonl:{len(lines)}: " in done.stderr
    assert (tmp_path / "cut").stat().st_size > 0
    done = cli(command, "bad.jsonl", "-o", "bad", cwd=tmp_path)
    assert done.returncode == 1
    assert "bad.jsonl:3: " in done.stderr
    assert (tmp_path / "bad").stat().st_size > 0
    assert "Traceback" not in done.stderr
