"""R13 identity: every span has a 64-bit ``span_id`` and a 128-bit
``trace_id`` that never recur within a process nor across a fork (unlike
registry IDs, R1); a child shares its parent's trace; exports link spans by
the identity."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pykregistry import JsonLines, SpanClosedError

HEX16 = re.compile(r"[0-9a-f]{16}")
HEX32 = re.compile(r"[0-9a-f]{32}")


def test_r13_a_child_shares_its_parents_trace(make: Any) -> None:
    reg = make()
    with reg.span("parent") as p, reg.span("child") as c:
        parent, child = reg.get(p.id), reg.get(c.id)
        assert child.trace_id == parent.trace_id
        assert child.parent_span_id == parent.span_id
        assert child.span_id != parent.span_id
        assert parent.parent_span_id is None
        explicit = reg.new_span("explicit", parent=p.id)
        assert reg.get(explicit).trace_id == parent.trace_id
        assert reg.get(explicit).parent_span_id == parent.span_id
        assert reg.try_close(explicit)


def test_r13_a_root_starts_a_new_trace(make: Any) -> None:
    reg = make()
    with reg.span("a") as a:
        b = reg.new_span("b", parent=None)
        ra, rb = reg.get(a.id), reg.get(b)
        assert rb.trace_id != ra.trace_id
        assert rb.parent_span_id is None
        first = ra.trace_id
        assert reg.try_close(b)
    with reg.span("c") as c:
        assert reg.get(c.id).trace_id != first


def test_r13_ids_are_in_range_and_nonzero(make: Any) -> None:
    reg = make()
    with reg.span("s") as s:
        ref = reg.get(s.id)
        assert 0 < ref.span_id < 2**64
        assert 0 < ref.trace_id < 2**128
    with pytest.raises(SpanClosedError):
        _ = ref.span_id
    with pytest.raises(SpanClosedError):
        _ = ref.trace_id
    with pytest.raises(SpanClosedError):
        _ = ref.parent_span_id


def test_r13_a_million_spans_never_repeat_a_span_id(make: Any) -> None:
    reg = make()
    new_span, get, try_close = reg.new_span, reg.get, reg.try_close
    seen = set()
    ids = set()
    for _ in range(1_000_000):
        sid = new_span("x", parent=None)
        seen.add(get(sid).span_id)
        ids.add(sid)
        try_close(sid)
    assert len(seen) == 1_000_000
    assert 0 not in seen
    assert len(ids) < 1_000_000, "registry IDs recurred meanwhile (R1)"


FORK = r"""
import json, os, sys
from pykregistry import Registry

reg = Registry()

def draw(n):
    out = []
    for _ in range(n):
        sid = reg.new_span("x", parent=None)
        out.append(reg.get(sid).span_id)
        reg.try_close(sid)
    return out

before = draw(1000)
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # the child leaves through os._exit, whatever happens
    status = 1
    try:
        os.close(read)
        with os.fdopen(write, "w") as w:
            json.dump(draw(1000), w)
        status = 0
    finally:
        os._exit(status)
os.close(write)
parent = draw(1000)
with os.fdopen(read) as r:
    child = json.load(r)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
json.dump({"before": before, "parent": parent, "child": child}, sys.stdout)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_r13_a_forked_child_makes_span_ids_its_parent_does_not() -> None:
    # Without a new key, parent and child would both continue the counter
    # from the fork and make the same ids. In a fresh interpreter: forking
    # the test process would copy pytest's threads.
    done = subprocess.run(
        [sys.executable, "-c", FORK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    drawn = json.loads(done.stdout)
    before, parent, child = (set(drawn[k]) for k in ("before", "parent", "child"))
    assert len(parent) == len(child) == len(before) == 1000
    assert not parent & child, "the child repeated its parent's ids"
    assert not before & child


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_r13_json_lines_rebuild_the_trees_by_identity_alone(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "trace.jsonl"
    pairs = 50_000
    with JsonLines(path, events=False) as out:
        reg = make(layers=[out])
        for i in range(pairs):
            with reg.span("req", i=i), reg.span("child", i=i):
                pass
    spans = lines(path)
    assert len(spans) == 2 * pairs
    for line in spans:
        assert HEX32.fullmatch(line["trace_id"]), line
        assert HEX16.fullmatch(line["span_id"]), line
        assert line["parent_span_id"] is None or HEX16.fullmatch(line["parent_span_id"])
    by_span_id = Counter(line["span_id"] for line in spans)
    assert max(by_span_id.values()) == 1, "a span_id repeated"
    reqs = {line["span_id"]: line for line in spans if line["name"] == "req"}
    children = [line for line in spans if line["name"] == "child"]
    assert len(reqs) == len(children) == pairs
    assert all(req["parent_span_id"] is None for req in reqs.values())
    adopted: Counter[str] = Counter()
    for c in children:
        req = reqs[c["parent_span_id"]]
        assert req["trace_id"] == c["trace_id"]
        assert req["fields"]["i"] == c["fields"]["i"], "the right tree"
        adopted[req["span_id"]] += 1
    assert set(adopted.values()) == {1}, "each req has exactly one child"
    assert len({req["trace_id"] for req in reqs.values()}) == pairs, "a trace per req"
    # What the identity is for: the registry IDs recurred meanwhile.
    assert len({line["id"] for line in spans}) < len(spans)


def test_r13_json_lines_events_carry_their_spans_identity(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "trace.jsonl"
    with JsonLines(path) as out:
        reg = make(layers=[out])
        with reg.span("s"):
            reg.event("inside")
        reg.event("outside")
    inside, span, outside = lines(path)
    assert inside["trace_id"] == span["trace_id"]
    assert inside["span_id"] == span["span_id"]
    assert outside["trace_id"] is None
    assert outside["span_id"] is None


def test_r13_events_seen_by_layers_carry_their_spans_identity(make: Any) -> None:
    seen: list[tuple[int | None, int | None]] = []

    class Layer:
        def on_event(self, event: Any) -> None:
            seen.append((event.trace_id, event.span_id))

    reg = make(layers=[Layer()])
    with reg.span("s") as s:
        ref = reg.get(s.id)
        expected = (ref.trace_id, ref.span_id)
        reg.event("inside")
    reg.event("outside")
    assert seen == [expected, (None, None)]
