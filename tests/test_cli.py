"""The command line, ``python -m pykregistry``: what it prints and returns
(never how fast: the bench's numbers are only checked for their shape)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

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
