"""The registry's rules, SPEC section 1: one group of tests per rule, each
test named after its rule (``test_r4_...``).

R12 (errors) lives in ``test_errors.py``; contexts (SPEC section 3) in
``test_contexts.py``. The ``reg`` fixture checks on teardown that nothing
leaked, so every test here ends with every handle released and every entered
span exited.
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import pykregistry
from pykregistry import (
    CURRENT,
    Level,
    Registry,
    SpanClosedError,
    SpanNotFoundError,
)

# Ints that can never be span IDs, and ints that could be but were never issued
# by a fresh registry (IDs are neither dense nor small: these are arbitrary).
OUT_OF_RANGE_IDS = [0, -1, -(2**63), -(2**70), 2**64, 2**64 + 1, 2**100]
NEVER_ISSUED_IDS = [2**63 + 12345, 2**64 - 1, 987_654_321_987]


def state(reg: Registry, *ids: int) -> tuple[Any, ...]:
    """Everything a rejected call must leave unchanged."""
    return (len(reg), reg.current_span(), tuple(reg.ref_count(i) for i in ids))


# === R1 IDs ===


def test_r1_ids_are_ints_in_range(reg: Registry) -> None:
    ids = [reg.new_span("n", parent=None) for _ in range(200)]
    handles = [reg.span("s", parent=None) for _ in range(50)]
    for i in [*ids, *(h.id for h in handles)]:
        assert type(i) is int
        assert 1 <= i < 2**64
    for i in ids:
        assert reg.try_close(i) is True
    for h in handles:
        h.close()


def test_r1_ids_unique_among_live_spans_across_threads(reg: Registry) -> None:
    threads, per_thread = 8, 300
    barrier = threading.Barrier(threads)
    made: list[list[int]] = [[] for _ in range(threads)]

    def work(n: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            made[n].append(reg.new_span(f"t{n}", parent=None))

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    all_ids = [i for ids in made for i in ids]
    assert len(all_ids) == threads * per_thread
    assert len(set(all_ids)) == len(all_ids)
    assert len(reg) == len(all_ids)
    # Each ID names the span its thread made.
    for n, ids in enumerate(made):
        for i in ids:
            assert reg.get(i).name == f"t{n}"
    # Closing from another thread than the creator's works too.
    for i in all_ids:
        assert reg.try_close(i) is True


def test_r1_closed_id_not_reused_on_same_thread(reg: Registry) -> None:
    seen = set()
    for _ in range(500):
        sid = reg.new_span("x", parent=None)
        assert sid not in seen
        seen.add(sid)
        assert reg.try_close(sid) is True


def test_r1_closed_id_not_reused_across_threads(reg: Registry) -> None:
    seen: set[int] = set()

    def fresh(sid: int) -> int:
        assert sid not in seen, f"ID {sid} was handed out again"
        seen.add(sid)
        return sid

    # One long-lived worker thread, so that its slab shard is reused.
    with ThreadPoolExecutor(max_workers=1) as worker:

        def on_worker(fn: Any, *args: Any, **kwargs: Any) -> Any:
            return worker.submit(fn, *args, **kwargs).result()

        for _ in range(100):
            # Made on the worker, closed here; then both threads make one.
            sid = fresh(on_worker(reg.new_span, "w", parent=None))
            assert reg.try_close(sid) is True
            from_worker = fresh(on_worker(reg.new_span, "w", parent=None))
            from_here = fresh(reg.new_span("m", parent=None))
            # Each closed on the other thread; then both threads make one.
            assert on_worker(reg.try_close, from_here) is True
            assert reg.try_close(from_worker) is True
            last_here = fresh(reg.new_span("m", parent=None))
            last_worker = fresh(on_worker(reg.new_span, "w", parent=None))
            assert on_worker(reg.try_close, last_here) is True
            assert reg.try_close(last_worker) is True
    assert len(seen) == 500


def test_r1_generations_exposed_and_ids_recur_after_that_many_reuses(reg: Registry) -> None:
    generations = pykregistry.GENERATIONS
    assert type(generations) is int
    assert generations >= 2
    first = reg.new_span("slot", parent=None)
    assert reg.try_close(first) is True
    # On one thread with nothing else live, each new span reuses the slot just
    # cleared; every reuse advances the slot's generation.
    later = []
    for _ in range(generations):
        sid = reg.new_span("slot", parent=None)
        later.append(sid)
        assert reg.try_close(sid) is True
    assert first not in later[:-1]
    assert len(set(later)) == generations
    assert later[-1] == first, "an ID recurs after GENERATIONS reuses of its slot"


# === R2 new_span ===


def test_r2_new_span_has_count_one(reg: Registry) -> None:
    sid = reg.new_span("a")
    assert reg.ref_count(sid) == 1
    assert reg.get(sid).ref_count == 1
    with reg.span("b") as s:
        # The handle's reference plus the stack entry's.
        assert reg.ref_count(s.id) == 2
    h = reg.span("c")
    assert reg.ref_count(h.id) == 1
    h.close()
    assert reg.try_close(sid) is True


def test_r2_parent_defaults_to_current_span(reg: Registry) -> None:
    p = reg.new_span("p")
    reg.enter(p)
    default = reg.new_span("default")
    explicit_current = reg.new_span("current", parent=CURRENT)
    reg.exit(p)
    assert reg.get(default).parent_id == p
    assert reg.get(explicit_current).parent_id == p
    assert [r.id for r in reg.get(default).scope()] == [default, p]
    for sid in (default, explicit_current, p):
        reg.try_close(sid)


def test_r2_no_current_span_makes_a_root(reg: Registry) -> None:
    assert reg.current_span() is None
    sid = reg.new_span("root")
    assert reg.get(sid).parent_id is None
    assert reg.get(sid).parent is None
    assert reg.try_close(sid) is True


def test_r2_explicit_int_parent_overrides_current(reg: Registry) -> None:
    p = reg.new_span("p", parent=None)
    other = reg.new_span("other", parent=None)
    reg.enter(other)
    child = reg.new_span("child", parent=p)
    reg.exit(other)
    assert reg.get(child).parent_id == p
    assert reg.ref_count(other) == 1
    for sid in (child, p, other):
        reg.try_close(sid)


def test_r2_parent_none_makes_root_even_inside_a_span(reg: Registry) -> None:
    with reg.span("outer") as outer:
        before = reg.ref_count(outer.id)
        root = reg.new_span("root", parent=None)
        assert reg.get(root).parent_id is None
        assert reg.ref_count(outer.id) == before
        with reg.span("root2", parent=None) as root2:
            assert reg.get(root2.id).parent_id is None
        assert reg.try_close(root) is True


def test_r2_parent_given_as_span_or_span_ref(reg: Registry) -> None:
    handle = reg.span("p", parent=None)
    by_span = reg.new_span("by_span", parent=handle)
    by_ref = reg.new_span("by_ref", parent=reg.get(handle.id))
    with reg.span("kw", parent=handle) as kw:
        assert reg.get(kw.id).parent_id == handle.id
    assert reg.get(by_span).parent_id == handle.id
    assert reg.get(by_ref).parent_id == handle.id
    assert reg.ref_count(handle.id) == 3
    reg.try_close(by_span)
    reg.try_close(by_ref)
    assert reg.ref_count(handle.id) == 1
    handle.close()


def test_r2_child_holds_one_reference_on_parent(reg: Registry) -> None:
    p = reg.new_span("p", parent=None)
    children = [reg.new_span("c", parent=p) for _ in range(3)]
    assert reg.ref_count(p) == 4
    # The parent's own reference goes; its children keep it live.
    assert reg.try_close(p) is False
    assert reg.get(p) is not None
    assert reg.ref_count(p) == 3
    for n, c in enumerate(children):
        assert reg.try_close(c) is True
        assert reg.ref_count(p) == 2 - n
    assert reg.get(p) is None
    assert len(reg) == 0


@pytest.mark.parametrize("kind", ["closed", "never_issued", "stale", "closed_span", "closed_ref"])
def test_r2_explicit_parent_not_live_is_an_error_and_changes_nothing(
    reg: Registry, recorder: Any, kind: str
) -> None:
    reg.add_layer(recorder)
    keep = reg.new_span("keep", parent=None)
    reg.enter(keep)
    if kind == "never_issued":
        parent: Any = NEVER_ISSUED_IDS[0]
    else:
        handle = reg.span("gone", parent=None)
        view = reg.get(handle.id)
        gone = handle.id
        handle.close()
        parent = {"closed": gone, "closed_span": handle, "closed_ref": view}.get(kind, gone)
        if kind == "stale":
            # The slot is reused by a later span; the old ID is stale.
            reused = reg.new_span("reused", parent=None)
            assert reused != gone
    recorder.calls.clear()
    before = state(reg, keep)
    with pytest.raises(SpanNotFoundError) as info:
        reg.new_span("child", parent=parent)
    assert isinstance(info.value, KeyError)
    with pytest.raises(KeyError):
        reg.span("child", parent=parent)
    assert state(reg, keep) == before
    assert recorder.of("new_span") == []
    reg.exit(keep)
    reg.try_close(keep)
    if kind == "stale":
        reg.try_close(reused)


def test_r2_contextual_parent_no_longer_live_makes_a_root(reg: Registry) -> None:
    a = reg.new_span("a", parent=None)
    reg.enter(a)
    # Misuse: releasing the stack entry's reference as well closes `a` while
    # it is still on the stack.
    assert reg.try_close(a) is False
    assert reg.try_close(a) is True
    assert reg.get(a) is None
    child = reg.new_span("child")
    assert reg.get(child).parent_id is None
    assert len(reg) == 1
    # Exiting the closed span must not crash nor close anything else.
    reg.exit(a)
    assert reg.ref_count(child) == 1
    assert reg.try_close(child) is True


# === R3 clone_span ===


def test_r3_clone_span_adds_one_and_returns_same_id(reg: Registry) -> None:
    sid = reg.new_span("a")
    assert reg.clone_span(sid) == sid
    assert reg.clone_span(sid) == sid
    assert reg.ref_count(sid) == 3
    assert reg.try_close(sid) is False
    assert reg.try_close(sid) is False
    assert reg.try_close(sid) is True


@pytest.mark.parametrize("kind", ["closed", "never_issued", "stale"])
def test_r3_clone_span_not_live_raises_and_changes_nothing(reg: Registry, kind: str) -> None:
    keep = reg.new_span("keep")
    if kind == "never_issued":
        target = NEVER_ISSUED_IDS[1]
    else:
        target = reg.new_span("gone")
        reg.try_close(target)
    if kind == "stale":
        reused = reg.new_span("reused")
    before = state(reg, keep, target)
    with pytest.raises(SpanNotFoundError):
        reg.clone_span(target)
    assert state(reg, keep, target) == before
    # Still closed: a clone did not bring it back (the seed increments first).
    assert reg.get(target) is None
    assert reg.ref_count(target) == 0
    reg.try_close(keep)
    if kind == "stale":
        assert reg.ref_count(reused) == 1
        reg.try_close(reused)


# === R4 try_close ===


def test_r4_try_close_true_exactly_once(reg: Registry) -> None:
    sid = reg.new_span("a")
    reg.clone_span(sid)
    assert reg.try_close(sid) is False
    assert reg.try_close(sid) is True
    for _ in range(3):
        with pytest.raises(SpanNotFoundError):
            reg.try_close(sid)
    assert len(reg) == 0


def test_r4_second_try_close_raises_even_after_slot_reuse(reg: Registry) -> None:
    sid = reg.new_span("a")
    assert reg.try_close(sid) is True
    other = reg.new_span("b")
    with pytest.raises(SpanNotFoundError):
        reg.try_close(sid)
    # The span now in the slot was not touched.
    assert reg.ref_count(other) == 1
    assert reg.try_close(other) is True


def test_r4_on_close_sees_span_readable_then_cleared_then_parent_released(
    reg: Registry,
) -> None:
    seen: list[Any] = []

    class Layer:
        def on_close(self, span: pykregistry.SpanRef) -> None:
            looked_up = reg.get(span.id)
            parent = reg.get(span.parent_id) if span.parent_id else None
            seen.append(
                {
                    "id": span.id,
                    "lookup_works": looked_up is not None and looked_up.name == span.name,
                    "name": span.name,
                    "fields": span.fields,
                    "parent_live": parent is not None,
                    "parent_name": parent.name if parent else None,
                    "parent_refs": reg.ref_count(span.parent_id) if span.parent_id else None,
                    "scope": [s.name for s in span.scope()],
                }
            )

    reg.add_layer(Layer())
    p = reg.new_span("parent", parent=None)
    c = reg.new_span("child", parent=p, fields={"k": "v"})
    assert reg.try_close(p) is False
    assert reg.try_close(c) is True
    assert seen == [
        {
            "id": c,
            "lookup_works": True,
            "name": "child",
            "fields": {"k": "v"},
            "parent_live": True,
            "parent_name": "parent",
            # The child still holds its reference on the parent.
            "parent_refs": 1,
            "scope": ["child", "parent"],
        },
        {
            "id": p,
            "lookup_works": True,
            "name": "parent",
            "fields": {},
            "parent_live": False,
            "parent_name": None,
            "parent_refs": None,
            "scope": ["parent"],
        },
    ]
    assert reg.get(c) is None
    assert reg.get(p) is None
    assert reg.layer_errors == 0


def test_r4_cleared_before_parent_released(reg: Registry) -> None:
    # While the parent closes (released by the child's close), the child is
    # no longer readable: its slot was cleared first.
    seen: dict[str, Any] = {}
    c = 0

    class Layer:
        def on_close(self, span: pykregistry.SpanRef) -> None:
            if span.name == "parent":
                seen["child_lookup"] = reg.get(c)
                seen["len"] = len(reg)

    reg.add_layer(Layer())
    p = reg.new_span("parent", parent=None)
    c = reg.new_span("child", parent=p)
    reg.try_close(p)
    assert reg.try_close(c) is True
    assert seen == {"child_lookup": None, "len": 1}


@pytest.mark.parametrize("depth", [1, 3])
def test_r4_cascade_closes_leaf_to_root_in_order(reg: Registry, recorder: Any, depth: int) -> None:
    reg.add_layer(recorder)
    chain = [reg.new_span("s0", parent=None)]
    for n in range(1, depth):
        chain.append(reg.new_span(f"s{n}", parent=chain[-1]))
    for sid in chain[:-1]:
        assert reg.try_close(sid) is False
    assert len(reg) == depth
    assert recorder.of("close") == []
    assert reg.try_close(chain[-1]) is True
    assert [c[1]["id"] for c in recorder.of("close")] == chain[::-1]
    assert len(reg) == 0


def test_r4_cascade_stops_at_a_parent_still_held(reg: Registry, recorder: Any) -> None:
    reg.add_layer(recorder)
    root = reg.new_span("root", parent=None)
    mid = reg.new_span("mid", parent=root)
    leaf = reg.new_span("leaf", parent=mid)
    reg.try_close(mid)
    # `root` keeps its own reference: the cascade stops below it.
    assert reg.try_close(leaf) is True
    assert [c[1]["name"] for c in recorder.of("close")] == ["leaf", "mid"]
    assert reg.ref_count(root) == 1
    assert reg.try_close(root) is True


def test_r4_chain_of_a_million_spans_closes_iteratively(reg: Registry) -> None:
    n = 1_000_000
    prev = reg.new_span("c", parent=None)
    top = prev
    for _ in range(n - 1):
        prev = reg.new_span("c", parent=prev)
    leaf = prev
    assert len(reg) == n
    # Release every span's own reference from the root down, without closing
    # anything: each is still held by its child. Walking parent links from
    # the leaf gives the chain without keeping a million-element list.
    walked = 0
    sid: int | None = leaf
    while sid is not None:
        nxt = reg.get(sid).parent_id
        if sid != leaf:
            assert reg.try_close(sid) is False
        walked += 1
        sid = nxt
    assert walked == n
    assert reg.ref_count(top) == 1
    # Closing the leaf cascades through the whole chain.
    assert reg.try_close(leaf) is True
    assert len(reg) == 0
    assert reg.get(top) is None


def test_r4_parent_with_many_children(reg: Registry) -> None:
    p = reg.new_span("p", parent=None)
    kids = [reg.new_span("k", parent=p) for _ in range(10_000)]
    assert reg.ref_count(p) == 10_001
    assert reg.try_close(p) is False
    for k in kids[:-1]:
        assert reg.try_close(k) is True
    assert reg.ref_count(p) == 1
    assert reg.try_close(kids[-1]) is True
    assert reg.get(p) is None
    assert len(reg) == 0


# === R5 enter/exit ===


def test_r5_enter_takes_a_reference_exit_releases_it(reg: Registry) -> None:
    a = reg.new_span("a")
    reg.enter(a)
    assert reg.ref_count(a) == 2
    assert reg.current_span() == a
    reg.exit(a)
    assert reg.ref_count(a) == 1
    assert reg.current_span() is None
    assert reg.try_close(a) is True


def test_r5_duplicate_enter_takes_no_reference(reg: Registry) -> None:
    a = reg.new_span("a")
    reg.enter(a)
    reg.enter(a)
    reg.enter(a)
    assert reg.ref_count(a) == 2
    reg.exit(a)
    reg.exit(a)
    assert reg.ref_count(a) == 2
    assert reg.current_span() == a
    reg.exit(a)
    assert reg.ref_count(a) == 1
    assert reg.current_span() is None
    assert reg.try_close(a) is True


def test_r5_exit_keeps_span_alive_until_last_entry(reg: Registry) -> None:
    a = reg.new_span("a")
    reg.enter(a)
    assert reg.try_close(a) is False  # the handle's reference
    assert reg.get(a) is not None
    reg.enter(a)  # duplicate
    reg.exit(a)
    assert reg.get(a) is not None
    reg.exit(a)  # the non-duplicate entry: its reference was the last
    assert reg.get(a) is None
    assert len(reg) == 0


def test_r5_exit_removes_most_recent_entry_even_if_not_on_top(reg: Registry) -> None:
    a, b, c = (reg.new_span(n, parent=None) for n in "abc")
    reg.enter(a)
    reg.enter(b)
    reg.enter(c)
    reg.exit(b)  # not on top
    assert reg.current_span() == c
    assert reg.ref_count(b) == 1
    assert reg.ref_count(a) == 2
    assert reg.ref_count(c) == 2
    reg.exit(c)
    assert reg.current_span() == a
    reg.exit(a)
    assert reg.current_span() is None
    for sid in (a, b, c):
        assert reg.ref_count(sid) == 1
        assert reg.try_close(sid) is True


def test_r5_exit_removes_duplicate_above_other_span_first(reg: Registry) -> None:
    a, b = (reg.new_span(n, parent=None) for n in "ab")
    reg.enter(a)
    reg.enter(b)
    reg.enter(a)  # duplicate, on top; `b` stays current (R6)
    assert reg.current_span() == b
    reg.exit(a)  # the most recent entry of `a`: the duplicate
    assert reg.current_span() == b
    assert reg.ref_count(a) == 2
    reg.exit(a)  # now the first entry, below `b`
    assert reg.current_span() == b
    assert reg.ref_count(a) == 1
    reg.exit(b)
    assert reg.current_span() is None
    for sid in (a, b):
        assert reg.ref_count(sid) == 1
        assert reg.try_close(sid) is True


def test_r5_exit_below_top_then_top_still_releases_correctly(reg: Registry) -> None:
    a, b = (reg.new_span(n, parent=None) for n in "ab")
    reg.enter(a)
    reg.enter(b)
    reg.enter(b)  # duplicate of b
    reg.exit(a)  # bottom entry: b and its duplicate remain
    assert reg.current_span() == b
    assert reg.ref_count(a) == 1
    assert reg.ref_count(b) == 2
    reg.exit(b)
    assert reg.current_span() == b
    assert reg.ref_count(b) == 2
    reg.exit(b)
    assert reg.current_span() is None
    assert reg.ref_count(b) == 1
    for sid in (a, b):
        assert reg.try_close(sid) is True


def test_r5_exit_of_span_not_entered_is_a_noop(reg: Registry, recorder: Any) -> None:
    reg.add_layer(recorder)
    a = reg.new_span("a")
    b = reg.new_span("b")
    reg.enter(a)
    recorder.calls.clear()
    before = state(reg, a, b)
    reg.exit(b)
    reg.exit(NEVER_ISSUED_IDS[0])
    assert state(reg, a, b) == before
    assert recorder.of("exit") == []
    reg.exit(a)
    reg.exit(a)  # second exit: no longer on the stack
    assert reg.ref_count(a) == 1
    reg.try_close(a)
    reg.try_close(b)
    # Exiting a closed span changes nothing either.
    reg.exit(a)
    assert len(reg) == 0


@pytest.mark.parametrize("kind", ["closed", "never_issued", "stale"])
def test_r5_enter_not_live_raises_and_leaves_stack_unchanged(reg: Registry, kind: str) -> None:
    a = reg.new_span("a")
    reg.enter(a)
    if kind == "never_issued":
        bad = NEVER_ISSUED_IDS[2]
    else:
        bad = reg.new_span("gone")
        reg.try_close(bad)
    if kind == "stale":
        reused = reg.new_span("reused", parent=None)
    before = state(reg, a)
    with pytest.raises(SpanNotFoundError):
        reg.enter(bad)
    assert state(reg, a) == before
    # Nothing was pushed: one exit of `a` empties the stack.
    reg.exit(bad)
    reg.exit(a)
    assert reg.current_span() is None
    assert reg.ref_count(a) == 1
    reg.try_close(a)
    if kind == "stale":
        reg.try_close(reused)


def test_r5_span_entered_is_reusable(reg: Registry) -> None:
    s = reg.span("s")
    entered = s.entered()
    for _ in range(3):
        with entered as inside:
            assert inside is s
            assert reg.current_span() == s.id
            assert reg.ref_count(s.id) == 2
        assert reg.current_span() is None
        assert reg.ref_count(s.id) == 1
    with s.entered(), s.entered():
        assert reg.ref_count(s.id) == 2
    assert reg.ref_count(s.id) == 1
    assert not s.closed
    s.close()


# === R6 current span ===


def test_r6_duplicate_root_entry_leaves_leaf_current(reg: Registry) -> None:
    root = reg.new_span("root", parent=None)
    leaf = reg.new_span("leaf", parent=root)
    reg.enter(root)
    reg.enter(leaf)
    reg.enter(root)
    assert reg.current_span() == leaf
    # New spans are children of the current span, not of the duplicate.
    child = reg.new_span("child")
    assert reg.get(child).parent_id == leaf
    reg.exit(root)
    assert reg.current_span() == leaf
    reg.exit(leaf)
    assert reg.current_span() == root
    reg.exit(root)
    assert reg.current_span() is None
    for sid in (child, leaf, root):
        reg.try_close(sid)


def test_r6_with_blocks_nest(reg: Registry) -> None:
    with reg.span("a") as a:
        assert reg.current_span() == a.id
        with reg.span("b") as b:
            assert reg.current_span() == b.id
            with a.entered():
                assert reg.current_span() == b.id
            assert reg.current_span() == b.id
        assert reg.current_span() == a.id
    assert reg.current_span() is None


# === R7 lookup ===


def test_r7_get_returns_view_of_live_span(reg: Registry) -> None:
    sid = reg.new_span("n", target="t", level="debug", fields={"a": 1})
    view = reg.get(sid)
    assert isinstance(view, pykregistry.SpanRef)
    assert (view.id, view.name, view.target, view.level, view.fields) == (
        sid,
        "n",
        "t",
        Level.DEBUG,
        {"a": 1},
    )
    assert view.parent_id is None
    assert not view.closed
    reg.try_close(sid)


@pytest.mark.parametrize("bad", OUT_OF_RANGE_IDS + NEVER_ISSUED_IDS)
def test_r7_get_returns_none_for_ints_that_name_no_span(reg: Registry, bad: int) -> None:
    keep = reg.new_span("keep")
    assert reg.get(bad) is None
    assert reg.ref_count(bad) == 0
    assert bad not in reg
    reg.try_close(keep)


def test_r7_get_returns_none_for_closed_and_stale_ids(reg: Registry) -> None:
    old = reg.new_span("old")
    reg.try_close(old)
    assert reg.get(old) is None
    new = reg.new_span("new")
    assert reg.get(old) is None
    assert reg.ref_count(old) == 0
    assert old not in reg
    assert reg.get(new).name == "new"
    assert new in reg
    reg.try_close(new)


@pytest.mark.parametrize("bad", ["x", "1", 1.0, None, b"1", [1]])
def test_r7_get_with_non_int_is_type_error(reg: Registry, bad: Any) -> None:
    with pytest.raises(TypeError):
        reg.get(bad)


def test_r7_view_after_close_raises_span_closed_error(reg: Registry) -> None:
    p = reg.new_span("p", parent=None)
    sid = reg.new_span("gone", parent=p, fields={"secret": 1})
    view = reg.get(sid)
    reg.try_close(p)
    reg.try_close(sid)
    assert view.id == sid
    assert view.closed
    assert view.ref_count == 0
    for read in (
        lambda: view.name,
        lambda: view.target,
        lambda: view.level,
        lambda: view.fields,
        lambda: view.parent_id,
        lambda: view.parent,
        view.scope,
        view.from_root,
    ):
        with pytest.raises(SpanClosedError) as info:
            read()
        assert isinstance(info.value, SpanNotFoundError)
        assert isinstance(info.value, KeyError)


def test_r7_view_never_shows_another_spans_data_after_slot_reuse(reg: Registry) -> None:
    sid = reg.new_span("first", fields={"who": "first"})
    view = reg.get(sid)
    reg.try_close(sid)
    # Reuse the slot many times over (the slot just cleared is reused first).
    later = [reg.new_span("second", fields={"who": "second"}) for _ in range(50)]
    assert sid not in later
    with pytest.raises(SpanClosedError):
        _ = view.name
    with pytest.raises(SpanClosedError):
        _ = view.fields
    assert view.closed
    for s in later:
        reg.try_close(s)


def test_r7_view_does_not_keep_the_span_or_slot(reg: Registry) -> None:
    sid = reg.new_span("a")
    views = [reg.get(sid) for _ in range(3)]
    assert reg.ref_count(sid) == 1
    assert reg.try_close(sid) is True
    assert len(reg) == 0
    assert reg.get(sid) is None
    assert all(v.closed for v in views)


# === R8 scope ===


def test_r8_scope_leaf_to_root_and_from_root(reg: Registry) -> None:
    root = reg.new_span("root", parent=None)
    mid = reg.new_span("mid", parent=root)
    leaf = reg.new_span("leaf", parent=mid)
    view = reg.get(leaf)
    scope = view.scope()
    assert all(isinstance(s, pykregistry.SpanRef) for s in scope)
    assert [s.id for s in scope] == [leaf, mid, root]
    assert [s.name for s in scope] == ["leaf", "mid", "root"]
    assert [s.id for s in view.from_root()] == [root, mid, leaf]
    assert [s.id for s in reg.get(root).scope()] == [root]
    assert [s.id for s in reg.get(root).from_root()] == [root]
    assert view.parent.id == mid
    assert view.parent.parent.id == root
    assert view.parent.parent.parent is None
    for sid in (root, mid, leaf):
        reg.try_close(sid)


def test_r8_scope_of_contextual_children(reg: Registry) -> None:
    with reg.span("a") as a, reg.span("b") as b, reg.span("c") as c:
        assert [s.id for s in reg.get(c.id).scope()] == [c.id, b.id, a.id]
        assert [s.name for s in reg.get(c.id).from_root()] == ["a", "b", "c"]


# === R9 counting ===


def test_r9_handles_children_and_entries_add_up(reg: Registry) -> None:
    s = reg.span("s", parent=None)
    assert reg.ref_count(s.id) == 1
    clone = s.clone()
    assert reg.ref_count(s.id) == 2
    child = reg.new_span("child", parent=s)
    assert reg.ref_count(s.id) == 3
    reg.enter(s.id)
    reg.enter(s.id)  # duplicate: not counted
    assert reg.ref_count(s.id) == 4
    reg.clone_span(s.id)
    assert reg.ref_count(s.id) == 5
    reg.try_close(s.id)
    reg.exit(s.id)
    reg.exit(s.id)
    assert reg.ref_count(s.id) == 3
    reg.try_close(child)
    assert reg.ref_count(s.id) == 2
    clone.close()
    assert reg.ref_count(s.id) == 1
    s.close()
    assert reg.ref_count(s.id) == 0
    assert len(reg) == 0


def test_r9_entries_in_two_threads_count_twice(reg: Registry) -> None:
    s = reg.span("s", parent=None)
    entered = threading.Event()
    release = threading.Event()
    seen: list[int] = []

    def other() -> None:
        with s.entered():
            seen.append(reg.ref_count(s.id))
            entered.set()
            release.wait()

    t = threading.Thread(target=other)
    with s.entered():
        t.start()
        entered.wait()
        assert reg.ref_count(s.id) == 3  # handle + one entry per thread
        release.set()
        t.join()
        assert reg.ref_count(s.id) == 2
    assert seen == [3]
    assert reg.ref_count(s.id) == 1
    s.close()


def test_r9_task_inheriting_current_span_counts_it_once(reg: Registry) -> None:
    seen: dict[str, int] = {}

    async def child_task(sid: int) -> None:
        seen["inherited_current"] = reg.current_span() == sid
        seen["in_task"] = reg.ref_count(sid)
        with reg.span("in_task") as inner:
            seen["with_child"] = reg.ref_count(sid)
            seen["inner_parent"] = reg.get(inner.id).parent_id == sid

    async def main() -> None:
        with reg.span("outer") as outer:
            assert reg.ref_count(outer.id) == 2
            task = asyncio.create_task(child_task(outer.id))
            await task
            seen["after_task"] = reg.ref_count(outer.id)
            del task
            await asyncio.sleep(0)
            gc.collect()
            seen["after_collect"] = reg.ref_count(outer.id)

    asyncio.run(main())
    assert seen == {
        "inherited_current": True,
        "in_task": 2,
        "with_child": 3,
        "inner_parent": True,
        "after_task": 2,
        "after_collect": 2,
    }


def test_r9_task_inheriting_a_span_does_not_keep_it_alive(reg: Registry) -> None:
    async def main() -> None:
        go = asyncio.Event()
        results: list[Any] = []

        async def worker() -> None:
            await go.wait()
            # The creator's block has ended: the entry this task inherited
            # held nothing, so the span closed and is not current here.
            results.append(reg.current_span())

        with reg.span("outer") as outer:
            sid = outer.id
            task = asyncio.create_task(worker())
        assert reg.ref_count(sid) == 0
        assert reg.get(sid) is None
        assert reg.current_span() is None
        go.set()
        await task
        assert results == [None]
        assert len(reg) == 0

    asyncio.run(main())


def test_r9_len_counts_live_spans(reg: Registry) -> None:
    assert len(reg) == 0
    ids = [reg.new_span("x", parent=None) for _ in range(10)]
    assert len(reg) == 10
    reg.clone_span(ids[0])
    assert len(reg) == 10
    reg.try_close(ids[0])
    assert len(reg) == 10
    for sid in ids:
        reg.try_close(sid)
    assert len(reg) == 0


# === R10 fields, records, events ===

EXACT_VALUES = [
    True,
    False,
    0,
    1,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    2**200,
    -(2**200),
    1.5,
    -0.0,
    1e308,
    5e-324,
    math.inf,
    -math.inf,
    "",
    "plain",
    "ünïcødé ✓ 🎉 \x00 \n",
    None,
]


def same_value(got: Any, want: Any) -> bool:
    if type(got) is not type(want):
        return False
    if isinstance(want, float):
        return math.copysign(1, got) == math.copysign(1, want) and got == want
    return bool(got == want)


@pytest.mark.parametrize("value", EXACT_VALUES, ids=repr)
def test_r10_values_read_back_exactly(reg: Registry, value: Any) -> None:
    sid = reg.new_span("a", fields={"v": value})
    assert same_value(reg.get(sid).fields["v"], value)
    with reg.span("b", v=value) as b:
        assert same_value(reg.get(b.id).fields["v"], value)
        b.record(w=value)
        assert same_value(reg.get(b.id).fields["w"], value)
    reg.record(sid, w=value)
    assert same_value(reg.get(sid).fields["w"], value)
    reg.try_close(sid)


def test_r10_nan_reads_back_as_nan(reg: Registry) -> None:
    sid = reg.new_span("a", fields={"v": math.nan})
    got = reg.get(sid).fields["v"]
    assert type(got) is float
    assert math.isnan(got)
    reg.try_close(sid)


def test_r10_bool_stays_bool(reg: Registry) -> None:
    sid = reg.new_span("a", fields={"t": True, "f": False, "one": 1})
    fields = reg.get(sid).fields
    assert fields["t"] is True
    assert fields["f"] is False
    assert type(fields["one"]) is int
    reg.try_close(sid)


def test_r10_huge_string_reads_back(reg: Registry) -> None:
    huge = "ß" * 500_000 + "x" * 1_000_000
    sid = reg.new_span("a", fields={"big": huge})
    assert reg.get(sid).fields["big"] == huge
    reg.record(sid, big2=huge)
    assert reg.get(sid).fields["big2"] == huge
    reg.try_close(sid)


class Custom:
    def __repr__(self) -> str:
        return "Custom<42>"


@pytest.mark.parametrize(
    "value",
    [[1, "a"], (1, "a"), [[1]], {"k": 1}, b"bytes", Custom(), 1 + 2j, frozenset(), Level.INFO],
    ids=repr,
)
def test_r10_other_values_are_recorded_as_repr(reg: Registry, value: Any) -> None:
    # Lists and tuples of one scalar type are arrays (below); mixed or
    # nested ones are other values.
    if isinstance(value, int):
        # An int subclass (an IntEnum) is an int: it reads back as one.
        expected: Any = int(value)
    else:
        expected = repr(value)
    sid = reg.new_span("a", fields={"v": value})
    reg.record(sid, w=value)
    fields = reg.get(sid).fields
    assert fields == {"v": expected, "w": expected}
    assert type(fields["v"]) is type(expected)
    reg.try_close(sid)


class ReprFails(Exception):
    pass


class BadRepr:
    def __repr__(self) -> str:
        raise ReprFails("no repr")


@pytest.mark.parametrize(
    "value", [[1, 2], (1, 2), ["a", "b"], (True,), [0.5, 2.0], [2**70], []], ids=repr
)
def test_r10_lists_and_tuples_of_one_scalar_type_read_back(reg: Registry, value: Any) -> None:
    sid = reg.new_span("a", fields={"v": value})
    reg.record(sid, w=value)
    fields = reg.get(sid).fields
    assert fields == {"v": value, "w": value}
    assert type(fields["v"]) is type(value)
    reg.try_close(sid)


def test_r10_failing_repr_is_a_placeholder_naming_its_type(reg: Registry, recorder: Any) -> None:
    """R10/R15: data never raises; a value whose repr() raises is recorded
    as a placeholder naming its type, in spans, records and events."""
    reg.add_layer(recorder)
    placeholder = "<unrepresentable BadRepr>"
    sid = reg.new_span("a", fields={"ok": 1, "bad": BadRepr()})
    assert reg.get(sid).fields == {"ok": 1, "bad": placeholder}
    reg.record(sid, x=2, bad=BadRepr())
    assert reg.get(sid).fields == {"ok": 1, "bad": placeholder, "x": 2}
    with reg.span("b", bad=BadRepr()) as b:
        b.record(z=BadRepr())
        assert reg.get(b.id).fields == {"bad": placeholder, "z": placeholder}
    reg.event("m", bad=BadRepr())
    assert recorder.of("event")[0][1]["fields"] == {"bad": placeholder}
    reg.try_close(sid)


def test_r10_record_replaces_and_appends_and_notifies(reg: Registry, recorder: Any) -> None:
    reg.add_layer(recorder)
    sid = reg.new_span("a", fields={"x": 1, "y": "two"})
    reg.record(sid, y=2, z=None)
    assert reg.get(sid).fields == {"x": 1, "y": 2, "z": None}
    assert list(reg.get(sid).fields) == ["x", "y", "z"]
    reg.record(sid, x=True)
    assert reg.get(sid).fields == {"x": True, "y": 2, "z": None}
    records = recorder.of("record")
    assert [(r[1]["id"], r[2]) for r in records] == [(sid, {"y": 2, "z": None}), (sid, {"x": True})]
    # The layer saw the span with the new values recorded.
    assert records[0][1]["fields"] == {"x": 1, "y": 2, "z": None}
    reg.try_close(sid)
    with pytest.raises(SpanNotFoundError):
        reg.record(sid, x=1)


def test_r10_follows_from(reg: Registry, recorder: Any) -> None:
    reg.add_layer(recorder)
    a = reg.new_span("a")
    b = reg.new_span("b")
    reg.follows_from(a, b)
    with reg.span("c") as c:
        c.follows_from(reg.get(b))
        handle = reg.span("d")
        c.follows_from(handle)
        c.follows_from(a)
    got = [(f[1]["id"], f[2]) for f in recorder.of("follows_from")]
    assert got == [(a, b), (c.id, b), (c.id, handle.id), (c.id, a)]
    assert all(type(f[2]) is int for f in recorder.of("follows_from"))
    handle.close()
    reg.try_close(b)
    before = len(recorder.calls)
    with pytest.raises(SpanNotFoundError):
        reg.follows_from(b, a)
    assert len(recorder.calls) == before
    assert reg.ref_count(a) == 1
    reg.try_close(a)


def test_r10_events_reach_layers(reg: Registry, recorder: Any) -> None:
    reg.add_layer(recorder)
    with reg.span("s") as s:
        reg.event("contextual", level="warn", target="app.x", k=1, b=True, o=[1])
        reg.event("explicit", parent=s.id, level=Level.ERROR)
        reg.event("rootless", parent=None)
        reg.event("by_handle", parent=s)
    reg.event("outside")
    events = [e[1] for e in recorder.of("event")]
    assert events == [
        {
            "message": "contextual",
            "level": Level.WARN,
            "target": "app.x",
            "parent_id": s.id,
            "fields": {"k": 1, "b": True, "o": [1]},
        },
        {
            "message": "explicit",
            "level": Level.ERROR,
            "target": __name__,
            "parent_id": s.id,
            "fields": {},
        },
        {
            "message": "rootless",
            "level": Level.INFO,
            "target": __name__,
            "parent_id": None,
            "fields": {},
        },
        {
            "message": "by_handle",
            "level": Level.INFO,
            "target": __name__,
            "parent_id": s.id,
            "fields": {},
        },
        {
            "message": "outside",
            "level": Level.INFO,
            "target": __name__,
            "parent_id": None,
            "fields": {},
        },
    ]
    assert all(e[1]["level"] is not None for e in recorder.of("event"))


def test_r10_event_explicit_parent_not_live_raises(reg: Registry, recorder: Any) -> None:
    reg.add_layer(recorder)
    gone = reg.new_span("gone")
    reg.try_close(gone)
    keep = reg.new_span("keep")
    before = state(reg, keep)
    with pytest.raises(SpanNotFoundError):
        reg.event("m", parent=gone)
    with pytest.raises(SpanNotFoundError):
        reg.event("m", parent=NEVER_ISSUED_IDS[0])
    assert state(reg, keep) == before
    assert recorder.of("event") == []
    reg.try_close(keep)


def test_r10_event_without_layers_still_checks_parent(reg: Registry) -> None:
    gone = reg.new_span("gone")
    reg.try_close(gone)
    with pytest.raises(SpanNotFoundError):
        reg.event("m", parent=gone)
    reg.event("fine", k=1)


def test_r10_default_target_is_callers_module(reg: Registry) -> None:
    sid = reg.new_span("a")
    assert reg.get(sid).target == __name__
    reg.try_close(sid)
    with reg.span("b", target="explicit") as b:
        assert reg.get(b.id).target == "explicit"


# === R11 threads and tasks ending ===


def test_r11_thread_ending_with_spans_entered_releases_them(reg: Registry, recorder: Any) -> None:
    reg.add_layer(recorder)
    keep = reg.span("keep", parent=None)
    made: list[int] = []

    def leaves_spans_entered() -> None:
        a = reg.new_span("a", parent=None)
        b = reg.new_span("b", parent=a)
        made.extend([a, b])
        reg.enter(a)
        reg.enter(b)
        reg.enter(a)  # duplicate
        reg.enter(keep.id)
        # Release the handles; only the stack holds them now.
        reg.try_close(a)
        reg.try_close(b)

    t = threading.Thread(target=leaves_spans_entered)
    t.start()
    t.join()
    assert len(reg) == 1
    assert reg.ref_count(keep.id) == 1
    assert all(reg.get(sid) is None for sid in made)
    assert sorted(c[1]["id"] for c in recorder.of("close")) == sorted(made)
    assert reg.layer_errors == 0

    # A later thread does not inherit anything.
    seen: list[Any] = []

    def later() -> None:
        seen.append(reg.current_span())
        fresh = reg.new_span("fresh")
        seen.append(reg.get(fresh).parent_id)
        reg.try_close(fresh)

    t2 = threading.Thread(target=later)
    t2.start()
    t2.join()
    assert seen == [None, None]
    assert len(reg) == 1
    keep.close()


def test_r11_many_threads_ending_leak_nothing(reg: Registry) -> None:
    def work(n: int) -> None:
        spans = [reg.span(f"s{n}") for _ in range(5)]
        for s in spans:
            s.__enter__()
        for s in spans[::2]:
            s.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    assert len(reg) == 0


def test_r11_thread_ending_with_a_deep_stack_releases_it(reg: Registry) -> None:
    # Entering is linear in the stack's depth (duplicates are looked for), so
    # the stack is only moderately deep; the thread's native stack is made
    # small instead, so that freeing the stack's nodes recursively would
    # overflow it.
    depth = 20_000

    def deep() -> None:
        prev = None
        for _ in range(depth):
            prev = reg.new_span("d", parent=prev)
            reg.enter(prev)
            reg.try_close(prev)
        assert reg.current_span() == prev
        assert len(reg) == depth

    old = threading.stack_size(256 * 1024)
    try:
        t = threading.Thread(target=deep)
        t.start()
    finally:
        threading.stack_size(old)
    t.join()
    assert len(reg) == 0


def test_r5_exit_of_bottom_entry_of_a_deep_stack(reg: Registry) -> None:
    depth = 20_000
    ids = [reg.new_span("d", parent=None) for _ in range(depth)]
    for sid in ids:
        reg.enter(sid)
    reg.exit(ids[0])
    assert reg.current_span() == ids[-1]
    assert reg.ref_count(ids[0]) == 1
    assert reg.ref_count(ids[1]) == 2
    for sid in reversed(ids[1:]):
        reg.exit(sid)
    assert reg.current_span() is None
    for sid in ids:
        assert reg.try_close(sid) is True


def test_r11_task_ending_with_span_entered_releases_it(reg: Registry) -> None:
    async def leaves_span_entered() -> int:
        sid = reg.new_span("in_task", parent=None)
        reg.enter(sid)
        reg.try_close(sid)
        return sid

    async def later() -> Any:
        return reg.current_span()

    async def main() -> None:
        task = asyncio.create_task(leaves_span_entered())
        sid = await task
        # The finished task's context still holds the entry until collected.
        assert reg.current_span() is None
        del task
        await asyncio.sleep(0)
        gc.collect()
        assert reg.get(sid) is None
        assert len(reg) == 0
        assert await asyncio.create_task(later()) is None

    asyncio.run(main())


def test_r11_threads_do_not_inherit_current_span_of_creator(reg: Registry) -> None:
    seen: list[Any] = []
    with reg.span("outer"):
        t = threading.Thread(target=lambda: seen.append(reg.current_span()))
        t.start()
        t.join()
    assert seen == [None]
