"""Resident memory across many span create/close cycles (SPEC P9).

    python tests/benchmarks/rss_cycles.py [--cycles 10000000] [--limit-mib 1]

Runs `cycles` create/close cycles in three ways — the integer-ID API
(``try_close(new_span(...))``), a handle in a ``with`` block (create, enter,
exit, release), and a child span under a long-lived parent with a field —
and prints resident memory (from ``/proc/self/statm``) before and after each,
after a warm-up that lets the slab, the allocator and the interpreter reach
their steady state. Exits 1 if any way grows resident memory by more than
``--limit-mib`` (P9: 10,000,000 cycles, ≤ 1 MiB). Slow (3 to 15 s per way
for 10,000,000 cycles on 2 cores), so not part of the test suite;
tests/test_scale.py runs it with 1,000,000.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable

import pykregistry

MIB = 2**20


def rss() -> int:
    """Resident memory of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ids(reg: pykregistry.Registry, n: int) -> None:
    new_span, try_close = reg.new_span, reg.try_close
    for _ in range(n):
        try_close(new_span("cycle", parent=None))


def handles(reg: pykregistry.Registry, n: int) -> None:
    span = reg.span
    for _ in range(n):
        with span("cycle"):
            pass


def children(reg: pykregistry.Registry, n: int) -> None:
    with reg.span("parent", parent=None):
        span = reg.span
        for i in range(n):
            with span("child", i=i):
                pass


WAYS: dict[str, Callable[[pykregistry.Registry, int], None]] = {
    "ids": ids,
    "handles": handles,
    "children": children,
}


def measure(way: str, cycles: int, warmup: int) -> dict[str, float]:
    reg = pykregistry.Registry()
    run = WAYS[way]
    run(reg, warmup)
    gc.collect()
    before = rss()
    start = time.perf_counter()
    run(reg, cycles)
    elapsed = time.perf_counter() - start
    gc.collect()
    after = rss()
    assert len(reg) == 0, f"{len(reg)} spans live after {way}"
    return {
        "cycles": cycles,
        "before_mib": before / MIB,
        "after_mib": after / MIB,
        "growth_kib": (after - before) / 1024,
        "seconds": elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10_000_000)
    parser.add_argument("--warmup", type=int, default=200_000)
    parser.add_argument("--limit-mib", type=float, default=1.0)
    parser.add_argument(
        "--ways", default=",".join(WAYS), help="comma-separated: " + ", ".join(WAYS)
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = {way: measure(way, args.cycles, args.warmup) for way in args.ways.split(",")}
    worst = max(r["growth_kib"] for r in results.values()) / 1024
    if args.json:
        print(json.dumps({"results": results, "limit_mib": args.limit_mib}))
    else:
        header = ("way", "cycles", "RSS before", "RSS after", "growth", "time")
        print("{:<10} {:>12} {:>13} {:>13} {:>10} {:>8}".format(*header))
        for way, r in results.items():
            print(
                f"{way:<10} {r['cycles']:>12,} {r['before_mib']:>9.2f} MiB "
                f"{r['after_mib']:>9.2f} MiB {r['growth_kib']:>6.0f} KiB {r['seconds']:>7.1f}s"
            )
        print(f"worst growth {worst:.3f} MiB (limit {args.limit_mib} MiB)")
    return 0 if worst <= args.limit_mib else 1


if __name__ == "__main__":
    sys.exit(main())
