"""``pykregistry tree`` in bounded memory: past ``held_in_memory`` spans,
the trees waiting for their root move to a temporary SQLite file
(``pykregistry.spilled_trees``), and they are drawn from there with the
very lines memory would have drawn."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pykregistry.trace_file import SpanTrees
from pykregistry.tree import TreeStyle

TRACE = "0af7651916cd43dd8448eb211c80319c"


def span(i: int, parent: int | None, start: int, *, remote: bool = False) -> dict[str, Any]:
    return {
        "type": "span",
        "id": i,
        "parent_id": None if parent is None or remote else 1,
        "trace_id": TRACE,
        "span_id": f"{i:016x}",
        "parent_span_id": None if parent is None else f"{parent:016x}",
        "name": f"s{i}",
        "target": "app",
        "level": "INFO",
        "start_time_ns": start,
        "end_time_ns": start + 1,
        "busy_ns": 1,
        "idle_ns": 0,
        "fields": {},
    }


def event(span_id: int | None, time: int) -> dict[str, Any]:
    return {
        "type": "event",
        "time_ns": time,
        "message": f"at {time} in {span_id}",
        "target": "app",
        "level": "INFO",
        "trace_id": None if span_id is None else TRACE,
        "span_id": None if span_id is None else f"{span_id:016x}",
        "fields": {},
    }


def draw(records: Iterable[dict[str, Any]], held_in_memory: int) -> tuple[list[str], int]:
    """The lines drawn, and how many records were on disk at most."""
    lines: list[str] = []
    most = 0
    with SpanTrees(TreeStyle(times=False), held_in_memory=held_in_memory) as trees:
        for record in records:
            lines += trees.add(record)
            assert trees.held <= held_in_memory
            most = max(most, trees.spilled)
        for tree in trees.finish():
            lines += tree
        assert (trees.held, trees.spilled) == (0, 0)
    return lines, most


def end_order(parents: list[int | None]) -> list[int]:
    """Spans in the order JsonLines writes them: each after its children."""
    kids: dict[int | None, list[int]] = {}
    for i, p in enumerate(parents):
        kids.setdefault(p, []).append(i)
    order: list[int] = []
    todo: list[tuple[int, bool]] = [(i, False) for i in reversed(kids.get(None, []))]
    while todo:
        i, done = todo.pop()
        if done:
            order.append(i)
            continue
        todo.append((i, True))
        todo.extend((k, False) for k in reversed(kids.get(i, [])))
    return order


@st.composite
def traces(draw_: st.DrawFn) -> list[dict[str, Any]]:
    """Forests written in end order, then disturbed as real files are: a
    span moved after its parent (it ended later), a span left out (its
    children wait for it to the end), a root whose parent is remote,
    events in spans and outside; start times few, so that siblings tie."""
    n = draw_(st.integers(1, 40))
    parents: list[int | None] = [None]
    for i in range(1, n):
        parents.append(draw_(st.one_of(st.none(), st.integers(0, i - 1))))
    starts = [draw_(st.integers(0, 3)) for _ in range(n)]
    order = end_order(parents)
    for _ in range(draw_(st.integers(0, 3))):  # children that end late
        i = draw_(st.sampled_from(order))
        order.remove(i)
        order.insert(draw_(st.integers(0, len(order))), i)
    left_out = set(draw_(st.lists(st.sampled_from(order), max_size=3)))
    remote = set(draw_(st.lists(st.sampled_from(order), max_size=2)))
    records: list[dict[str, Any]] = []
    for i in order:
        for _ in range(draw_(st.integers(0, 1))):
            records.append(event(draw_(st.sampled_from([None, i])), draw_(st.integers(0, 3))))
        if i not in left_out:
            parent = parents[i] if parents[i] is not None or i not in remote else 10_000
            records.append(span(i, parent, starts[i], remote=i in remote))
    return records


@settings(max_examples=300, deadline=None)
@given(traces(), st.sampled_from([1, 2, 3, 5, 8]))
def test_trees_drawn_from_disk_are_the_trees_drawn_from_memory(
    records: list[dict[str, Any]], held_in_memory: int
) -> None:
    in_memory, spilled = draw(records, 1_000_000)
    assert spilled == 0
    from_disk, _ = draw(records, held_in_memory)
    assert from_disk == in_memory


def test_a_tree_larger_than_memory_holds_is_drawn_whole() -> None:
    """A root with a wide and deep tree under it, 3,001 spans, while memory
    holds 100: most of it waits on disk, and it comes out whole."""
    parents: list[int | None] = [None]
    for i in range(1, 3001):
        parents.append(0 if i % 3 == 1 else i - 1)
    records = [span(i, parents[i], i % 7) for i in end_order(parents)]
    in_memory, _ = draw(records, 1_000_000)
    from_disk, spilled = draw(records, 100)
    assert spilled > 2000
    assert from_disk == in_memory
    assert len(from_disk) == 3001
    assert from_disk[0] == "s0  app INFO"


def test_the_temporary_file_is_deleted() -> None:
    trees = SpanTrees(TreeStyle(times=False), held_in_memory=1)
    for i in (3, 2):
        assert list(trees.add(span(i, 1, i))) == []
    disk = trees._disk
    assert disk is not None
    assert os.path.exists(disk.path)
    trees.close()
    assert not os.path.exists(disk.path)


def test_siblings_that_started_at_once_keep_their_order_across_memory_and_disk() -> None:
    """``a`` waits in memory for its parent; then ``b``, whose child waits
    on disk, joins that child there. ``a`` arrived first, so it is drawn
    first, as memory would draw it, though ``b`` went to disk first."""
    records = [
        span(10, 90, 0),
        span(11, 90, 0),
        span(4, 2, 5),  # held: 3 > 2, all goes to disk
        span(3, 1, 5),  # a, in memory
        span(2, 1, 5),  # b, to disk with its child
        span(1, None, 0),
    ]
    in_memory, _ = draw(records, 1_000_000)
    from_disk, spilled = draw(records, 2)
    assert spilled
    assert in_memory[:4] == [
        "s1  app INFO",
        "├── s3  app INFO",
        "└── s2  app INFO",
        "    └── s4  app INFO",
    ]
    assert from_disk == in_memory
