"""Scale: a million live spans and the memory they leave for the next
million; many create/close cycles with flat resident memory; 64 threads of
random operations, each checked against a model of its own spans.

The 1,000,000-deep chain closed from its leaf (R4's iterative cascade) is
``test_r4_chain_of_a_million_spans_closes_iteratively`` in test_rules.py;
it is not repeated here. 10,000,000 create/close cycles (SPEC P9) are
``python tests/benchmarks/rss_cycles.py``: too slow for every run, so
``test_create_close_cycles_keep_rss_flat`` runs that script with 1,000,000.

Resident memory is read from ``/proc/self/statm`` (Linux).
"""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path

import pytest

from pykregistry import Registry
from pykregistry.testing import ProgramChecker, perform_step, random_program

MIB = 2**20
RSS_CYCLES = Path(__file__).parent / "benchmarks" / "rss_cycles.py"


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_million_live_spans_then_the_next_million_reuses_the_memory(reg: Registry) -> None:
    n = 1_000_000
    ids = array("Q", bytes(8 * n))  # no int objects kept: only the slab grows
    gc.collect()
    before = rss()
    for i in range(n):
        ids[i] = reg.new_span("s", parent=None)
    first = rss()
    assert len(reg) == n
    assert len(set(ids)) == n  # R1: unique among live spans
    assert reg.ref_count(ids[0]) == 1
    assert reg.ref_count(ids[n - 1]) == 1
    for sid in ids:
        assert reg.try_close(sid) is True
    assert len(reg) == 0
    assert reg.get(ids[n // 2]) is None
    old = set(ids)
    closed = rss()
    for i in range(n):
        ids[i] = reg.new_span("s", parent=None)
    second = rss()
    assert len(reg) == n
    # R1: no span of the second million has the ID of one of the first.
    assert old.isdisjoint(ids)
    del old
    for sid in ids:
        reg.try_close(sid)
    assert len(reg) == 0
    grown_first = first - before
    grown_second = second - closed
    print(
        f"RSS: {before / MIB:.1f} MiB, {first / MIB:.1f} with 1,000,000 live "
        f"(+{grown_first / MIB:.1f}), {closed / MIB:.1f} all closed, {second / MIB:.1f} with "
        f"the next 1,000,000 (+{grown_second / MIB:.1f})"
    )
    # The first million visibly grew the slab (at least 16 bytes a span)...
    assert grown_first >= 16 * n, f"{grown_first / MIB:.1f} MiB: is RSS measured?"
    # ...and the second fits in the slots the first left, give or take
    # allocator noise.
    assert grown_second <= max(4 * MIB, grown_first // 20), (
        f"the next million grew RSS by {grown_second / MIB:.1f} MiB "
        f"(the first by {grown_first / MIB:.1f} MiB): closed slots not reused"
    )


@pytest.mark.slow
def test_create_close_cycles_keep_rss_flat() -> None:
    """1,000,000 cycles of each of rss_cycles.py's ways, in a fresh
    interpreter: resident memory grows by at most 1 MiB."""
    proc = subprocess.run(
        [sys.executable, str(RSS_CYCLES), "--cycles", "1000000", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    results = out["results"]
    assert set(results) == {"ids", "handles", "children"}
    for way, r in results.items():
        assert r["cycles"] == 1_000_000
        assert r["growth_kib"] <= 1024, f"{way}: RSS grew {r['growth_kib']:.0f} KiB"
    assert proc.returncode == 0


# === 64 threads ===

THREADS = 64
OPS = 300
ANCHORS = 4


@pytest.mark.parametrize("seed", [1, 2])
def test_64_threads_of_random_operations(reg: Registry, seed: int) -> None:
    """64 threads, released together by a barrier, each run 300 random
    operations on its own spans and on 4 shared anchors (cloning them,
    entering them, making children of them), each checked against a model
    of that thread's own spans. When all are done, each anchor's count must
    be its holder's reference plus what every thread's model says that
    thread holds on it, and ``len`` the anchors plus every thread's live
    spans. The threads then close what they hold and end with spans still
    entered (R11); the anchors are back to 1; closing them leaves 0."""
    anchors = [reg.span(f"anchor{i}", parent=None) for i in range(ANCHORS)]
    barrier = threading.Barrier(THREADS + 1, timeout=120)
    done: dict[int, tuple[list[int], int, int]] = {}
    errors: list[str] = []

    def worker(t: int) -> None:
        try:
            checker = ProgramChecker(reg, check_all=False)
            checker.add_context(t)
            shared = [
                checker.add_shared_span(a.id, f"anchor{i}")  # type: ignore[arg-type]
                for i, a in enumerate(anchors)
            ]
            rng = random.Random(seed * 1000 + t)
            program = random_program(rng, OPS)
            barrier.wait()
            for n, op in enumerate(program):
                step = checker.plan(t, op)
                checker.check(t, step, perform_step(reg, step), full=n % 10 == 9)
                if rng.random() < 0.5:
                    # Give up the GIL: operations of all threads interleave
                    # (about every other operation changes thread), rather
                    # than each thread running a whole program in one slice.
                    time.sleep(0)
            checker.check_registry()
            own_live = sum(1 for s in checker.model.live() if s not in checker.shared)
            done[t] = (
                [checker.contribution(s) for s in shared],
                own_live,
                len(checker.model.stacks[t]),
            )
            barrier.wait()  # all done: the main thread checks the totals
            barrier.wait()
            checker.release_all()
            checker.check_registry()
        except threading.BrokenBarrierError:
            pass
        except BaseException as e:
            errors.append(f"thread {t}: {type(e).__name__}: {e}")
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    try:
        barrier.wait()  # go
        barrier.wait()  # done
        for i, a in enumerate(anchors):
            held = sum(contrib[i] for contrib, _, _ in done.values())
            assert reg.ref_count(a.id) == 1 + held, f"anchor{i}"
        assert len(reg) == ANCHORS + sum(live for _, live, _ in done.values())
        barrier.wait()  # release
    except threading.BrokenBarrierError:
        pass  # a thread failed: its error is reported below
    except BaseException:
        barrier.abort()
        raise
    finally:
        for th in threads:
            th.join(timeout=120)
    assert not errors, "\n".join(errors[:5])
    assert len(done) == THREADS
    # The schedule did what it is meant to: threads held anchors and ended
    # with spans entered.
    assert sum(1 for contrib, _, _ in done.values() if any(contrib)) > THREADS // 4
    assert sum(1 for *_, depth in done.values() if depth) > THREADS // 4
    assert [reg.ref_count(a.id) for a in anchors] == [1] * ANCHORS
    assert len(reg) == ANCHORS
    for a in anchors:
        a.close()
    assert len(reg) == 0
