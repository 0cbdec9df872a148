"""R15: the Python layers shipped with pykregistry (``TreeRecorder``,
``testing.LiveSpans``) never hang when the garbage collector runs inside one
of their hooks or readers and frees a span handle held in a cycle, so that a
hook of the same layer runs again on the same thread.

Each case runs in a fresh interpreter under ``gc.set_threshold(1)``, with
``faulthandler.dump_traceback_later``: a hang fails the test with every
thread's stack instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

# How long the child may run before it dumps its stacks and exits; the
# parent's own timeout is a backstop.
HANG_AFTER = 60.0


def run_guarded(script: str, *args: str) -> dict[str, Any]:
    """Runs `script` in a fresh interpreter that dumps every thread's stack
    and exits if it runs longer than ``HANG_AFTER``; returns the JSON object
    it prints last."""
    preamble = f"import faulthandler; faulthandler.dump_traceback_later({HANG_AFTER}, exit=True)\n"
    proc = subprocess.run(
        [sys.executable, "-c", preamble + textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=HANG_AFTER + 60,
        check=False,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-6000:]}"
    assert proc.stderr == "", proc.stderr[-6000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# Garbage cycles holding span handles, freed at every point of the layers'
# hooks and readers: gc.set_threshold(1) collects at (nearly) every
# allocation of a tracked object, and a random number of allocations between
# a cycle's creation, its drop and the next call moves the collection that
# frees it around (a cycle that survived one collection waits in an older
# generation for a later one). Two more threads run the same workload.
GC_PRESSURE = """
    import gc, json, random, sys, threading
    import pykregistry
    from pykregistry.testing import LiveSpans, leak_report
    from pykregistry.tree import TreeRecorder

    kind, iterations = sys.argv[1], int(sys.argv[2])
    layer = TreeRecorder() if kind == "tree" else LiveSpans()
    reg = pykregistry.Registry(layers=[layer])

    def garbage(rnd, worker, i):
        h = reg.span("garbage", worker=worker, i=i)
        if i % 2:
            with h.entered():
                pass
        cycle = [h]
        cycle.append(cycle)
        del h
        pad = [[] for _ in range(rnd.randrange(8))]
        del cycle, pad
        return [[] for _ in range(rnd.randrange(3))]

    def read(i):
        if kind == "live":
            layer.spans, repr(layer)
            if i % 10 == 0:
                leak_report(reg)
        elif i % 25 == 0:
            layer.open_spans, layer.events, repr(layer)

    def workload(worker):
        rnd = random.Random(worker)
        for i in range(iterations):
            garbage(rnd, worker, i)
            read(i)
            garbage(rnd, worker, i)
            with reg.span("outer", worker=worker, i=i) as outer:
                with reg.span("inner", level="debug"):
                    reg.event("tick", k=i)
                outer.record(done=True)

    gc.set_threshold(1)
    threads = [threading.Thread(target=workload, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    workload(0)
    for t in threads:
        t.join()
    gc.set_threshold(700)
    gc.collect()

    result = {"live": len(reg)}
    if kind == "tree":
        spans = layer.spans
        result["spans"] = len(spans)
        result["open"] = len(layer.open_spans)
        result["seqs"] = [s.seq for s in spans] == list(range(len(spans)))
        closed = sorted(s.closed_seq for s in spans)
        result["closed_seqs"] = closed == list(range(len(spans)))
        result["events"] = len(layer.events)
        result["render_lines"] = len(layer.render().splitlines())
        # Each record links to its parent's record (the registry chose the
        # parent; the recorder must find its record, open at the time).
        result["parents_linked"] = all(
            s.parent_seq is not None and spans[s.parent_seq].id == s.parent_id
            for s in spans if s.parent_id is not None
        )
    else:
        result["tracked"] = len(layer.spans)
        result["report"] = leak_report(reg).splitlines()[0]
    print(json.dumps(result))
"""


def test_tree_recorder_survives_collections_inside_its_hooks() -> None:
    """TreeRecorder: each thread makes 4 spans and 1 event per iteration;
    every span is recorded once, closed once, numbered densely, and drawn."""
    iterations = 1500
    result = run_guarded(GC_PRESSURE, "tree", str(iterations))
    n = 3 * iterations
    assert result == {
        "live": 0,
        "spans": 4 * n,
        "open": 0,
        "seqs": True,
        "closed_seqs": True,
        "events": n,
        "render_lines": 5 * n,
        "parents_linked": True,
    }


def test_live_spans_survives_collections_inside_its_hooks_and_readers() -> None:
    """LiveSpans, with its readers (``spans``, ``leak_report``) called at
    every iteration: they allocate, so a collection can run in them too."""
    result = run_guarded(GC_PRESSURE, "live", "5000")
    assert result["live"] == 0
    assert result["tracked"] == 0
    assert result["report"].startswith("0 spans live in Registry(")
