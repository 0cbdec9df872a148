"""Timings and extensions: `SpanRef.start_time_ns`, `end_time_ns`,
`busy_ns`, `idle_ns` and `extensions`.

Only semantic checks: times are ordered and never negative, busy time grows
while a span is entered and idle time while it is not, and busy + idle adds
up to the span's lifetime. Nothing here measures how fast anything is.

README "Call sites, timings, exceptions"; issue 4 items 4 and 7.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import pykregistry
from pykregistry import Registry, SpanClosedError

MS = 1_000_000
SLEEP = 0.02  # 20 ms
AT_LEAST = 15 * MS  # what a 20 ms sleep counts for at the very least
WINDOW = 5_000_000_000  # 5 s: how far a wall-clock reading may be from time.time_ns()
SLACK = 5 * MS  # busy + idle against end - start (same clock, different roundings)


class CloseTimes:
    """A layer copying a span's timings (and extensions) in `on_close`."""

    def __init__(self) -> None:
        self.closed: dict[str, dict[str, Any]] = {}

    def on_close(self, span: pykregistry.SpanRef) -> None:
        self.closed[span.name] = {
            "start": span.start_time_ns,
            "end": span.end_time_ns,
            "busy": span.busy_ns,
            "idle": span.idle_ns,
            "extensions": dict(span.extensions),
            "wall_now": time.time_ns(),
        }


@pytest.fixture
def layer() -> CloseTimes:
    return CloseTimes()


@pytest.fixture
def treg(layer: CloseTimes) -> Iterator[Registry]:
    registry = Registry(layers=[layer])
    yield registry
    gc.collect()
    assert len(registry) == 0, f"spans leaked: {registry!r}"


def assert_consistent(t: dict[str, Any]) -> None:
    """A closed span's timings: ordered, non-negative, busy + idle = lifetime."""
    assert t["end"] is not None
    assert t["end"] >= t["start"]
    assert t["busy"] >= 0
    assert t["idle"] >= 0
    lifetime = t["end"] - t["start"]
    assert abs((t["busy"] + t["idle"]) - lifetime) <= SLACK, t


# --- start and end -------------------------------------------------------------


def test_start_time_is_wall_clock_ns_at_creation(treg: Registry) -> None:
    before = time.time_ns()
    with treg.span("s") as span:
        start = span.ref.start_time_ns
    after = time.time_ns()
    assert isinstance(start, int)
    assert before - WINDOW <= start <= after + WINDOW


def test_start_time_is_fixed_at_creation_not_at_entry(treg: Registry) -> None:
    span = treg.span("s")
    try:
        start = span.ref.start_time_ns
        time.sleep(SLEEP)
        with span.entered():
            assert span.ref.start_time_ns == start
        assert span.ref.start_time_ns == start
    finally:
        span.close()


def test_wall_times_follow_the_wall_clock_when_it_is_stepped() -> None:
    # NTP steps and slews the wall clock under a running program, and the
    # TSC's rate is known only to a few parts per million: a span's start
    # must follow time.time_ns() as it is when the span is made, not as it
    # was when the module loaded. Its end is its start plus its life on the
    # monotonic clock, so a step during its life does not make it an hour
    # long. (A subprocess: the shift is process-wide.)
    program = textwrap.dedent(
        """
        import time
        import pykregistry
        from pykregistry import _native

        class Ends:
            def on_close(self, span):
                life = span.end_time_ns - span.start_time_ns
                print(span.name, life == span.busy_ns + span.idle_ns, life < 10**10)

        reg = pykregistry.Registry(layers=[Ends()])
        early = reg.span("early")
        early_start = early.ref.start_time_ns
        hour = 3600 * 10**9
        _native._shift_wall_clock(hour)  # the clock is stepped an hour on
        time.sleep(1.2)  # past the life of the anchor taken at import
        before = time.time_ns() + hour
        late = reg.span("late")
        late_start = late.ref.start_time_ns
        after = time.time_ns() + hour
        late.close()
        # The late span starts on the stepped clock; the early one keeps the
        # start it was given.
        print("late_start", before - 10**9 <= late_start <= after + 10**9)
        print("early_start", early.ref.start_time_ns == early_start)
        early.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "late True True",
        "late_start True",
        "early_start True",
        "early True True",
    ]


def test_start_and_end_never_change_once_given(treg: Registry, layer: CloseTimes) -> None:
    span = treg.span("s")
    start = span.ref.start_time_ns
    span.close()
    assert layer.closed["s"]["start"] == start
    assert layer.closed["s"]["end"] >= start


def test_later_spans_start_later(treg: Registry) -> None:
    with treg.span("first") as first:
        time.sleep(SLEEP)
        with treg.span("second") as second:
            assert second.ref.start_time_ns - first.ref.start_time_ns >= AT_LEAST


def test_end_time_is_none_while_live(treg: Registry) -> None:
    span = treg.span("s")
    try:
        assert span.ref.end_time_ns is None
        with span.entered():
            assert span.ref.end_time_ns is None
        assert span.ref.end_time_ns is None
    finally:
        span.close()


def test_end_time_is_set_in_on_close(treg: Registry, layer: CloseTimes) -> None:
    with treg.span("s"):
        time.sleep(SLEEP)
    t = layer.closed["s"]
    assert t["end"] is not None
    assert t["end"] - t["start"] >= AT_LEAST
    assert abs(t["end"] - t["wall_now"]) <= WINDOW
    assert_consistent(t)


def test_timings_unreadable_after_close(treg: Registry) -> None:
    with treg.span("s") as span:
        view = span.ref
    for attr in ("start_time_ns", "end_time_ns", "busy_ns", "idle_ns"):
        with pytest.raises(SpanClosedError):
            getattr(view, attr)


# --- busy and idle ---------------------------------------------------------------


def test_busy_grows_while_entered(treg: Registry) -> None:
    with treg.span("s") as span:
        busy_before = span.ref.busy_ns
        time.sleep(SLEEP)
        busy_after = span.ref.busy_ns
    assert busy_after - busy_before >= AT_LEAST


def test_idle_grows_while_not_entered(treg: Registry) -> None:
    span = treg.span("s")
    try:
        idle_before = span.ref.idle_ns
        time.sleep(SLEEP)
        assert span.ref.idle_ns - idle_before >= AT_LEAST
        assert span.ref.busy_ns == 0  # never entered
    finally:
        span.close()


def test_idle_does_not_grow_while_entered(treg: Registry) -> None:
    span = treg.span("s")
    try:
        with span.entered():
            idle = span.ref.idle_ns
            time.sleep(SLEEP)
            assert span.ref.idle_ns == idle
    finally:
        span.close()


def test_busy_does_not_grow_while_not_entered(treg: Registry) -> None:
    span = treg.span("s")
    try:
        with span.entered():
            pass
        busy = span.ref.busy_ns
        time.sleep(SLEEP)
        assert span.ref.busy_ns == busy
    finally:
        span.close()


def test_busy_and_idle_alternate_and_add_up(treg: Registry, layer: CloseTimes) -> None:
    span = treg.span("s")
    time.sleep(SLEEP)  # idle
    with span.entered():
        time.sleep(SLEEP)  # busy
    time.sleep(SLEEP)  # idle
    with span.entered():
        time.sleep(SLEEP)  # busy
    span.close()
    t = layer.closed["s"]
    assert t["busy"] >= 2 * AT_LEAST
    assert t["idle"] >= 2 * AT_LEAST
    assert_consistent(t)


def test_busy_plus_idle_tracks_lifetime_while_live(treg: Registry) -> None:
    span = treg.span("s")
    try:
        with span.entered():
            time.sleep(SLEEP)
        time.sleep(SLEEP)
        view = span.ref
        total = view.busy_ns + view.idle_ns
        elapsed = time.time_ns() - view.start_time_ns
        assert total >= 2 * AT_LEAST
        assert abs(total - elapsed) <= WINDOW
    finally:
        span.close()


def test_re_entry_does_not_double_count_busy(treg: Registry, layer: CloseTimes) -> None:
    with treg.span("s") as span:
        with span.entered():  # a duplicate entry on the same stack
            time.sleep(SLEEP)
        time.sleep(SLEEP)  # still entered once: still busy
    t = layer.closed["s"]
    assert t["busy"] >= 2 * AT_LEAST
    assert_consistent(t)


def test_span_entered_in_two_asyncio_tasks(treg: Registry, layer: CloseTimes) -> None:
    async def work(span: pykregistry.Span) -> None:
        with span.entered():
            await asyncio.sleep(SLEEP)

    async def main() -> None:
        span = treg.span("shared")
        try:
            await asyncio.gather(work(span), work(span))
            assert span.ref.busy_ns >= AT_LEAST
            idle = span.ref.idle_ns
            await asyncio.sleep(SLEEP)  # entered in no task now
            assert span.ref.idle_ns - idle >= AT_LEAST
        finally:
            span.close()

    asyncio.run(main())
    t = layer.closed["shared"]
    assert t["busy"] >= AT_LEAST
    assert t["idle"] >= AT_LEAST
    # overlapping entries count once: busy + idle is still the lifetime
    assert_consistent(t)


def test_span_entered_in_one_task_while_another_waits(treg: Registry, layer: CloseTimes) -> None:
    async def main() -> None:
        span = treg.span("s")
        entered = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            with span.entered():
                entered.set()
                await release.wait()

        task = asyncio.create_task(holder())
        await entered.wait()
        # not entered in this task, but entered in `holder`: busy
        busy = span.ref.busy_ns
        idle = span.ref.idle_ns
        await asyncio.sleep(SLEEP)
        assert span.ref.busy_ns - busy >= AT_LEAST
        assert span.ref.idle_ns == idle
        release.set()
        await task
        span.close()

    asyncio.run(main())
    assert_consistent(layer.closed["s"])


def test_span_entered_on_two_threads(treg: Registry, layer: CloseTimes) -> None:
    span = treg.span("s")
    barrier = threading.Barrier(2)

    def work() -> None:
        with span.entered():
            barrier.wait()
            time.sleep(SLEEP)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    span.close()
    t = layer.closed["s"]
    assert t["busy"] >= AT_LEAST
    assert_consistent(t)


def test_span_closed_while_entered_counts_as_busy(treg: Registry, layer: CloseTimes) -> None:
    sid = treg.new_span("s")
    treg.enter(sid)
    time.sleep(SLEEP)
    treg.try_close(sid)  # the stack entry keeps it alive
    treg.exit(sid)  # ... and this closes it, entered until then
    t = layer.closed["s"]
    assert t["busy"] >= AT_LEAST
    assert_consistent(t)


def test_durations_never_negative_over_many_spans(treg: Registry, layer: CloseTimes) -> None:
    seen = []

    class Collect:
        def on_close(self, span: pykregistry.SpanRef) -> None:
            seen.append((span.start_time_ns, span.end_time_ns, span.busy_ns, span.idle_ns))

    treg.add_layer(Collect())
    for _ in range(200):
        with treg.span("a"), treg.span("b"):
            pass
        treg.span("idle").close()
    assert len(seen) == 600
    for start, end, busy, idle in seen:
        assert busy >= 0
        assert idle >= 0
        assert end is not None
        assert end >= start
        assert abs(busy + idle - (end - start)) <= SLACK


# --- extensions --------------------------------------------------------------------


def test_extensions_is_a_dict_that_persists_while_live(treg: Registry) -> None:
    with treg.span("s") as span:
        ext = span.ref.extensions
        assert isinstance(ext, dict)
        assert ext == {}
        ext["k"] = [1, 2]
        assert span.ref.extensions == {"k": [1, 2]}
        assert span.ref.extensions is ext
        assert treg.get(span.id).extensions["k"] is ext["k"]


def test_extensions_are_per_span(treg: Registry) -> None:
    with treg.span("a") as a, treg.span("b") as b:
        a.ref.extensions["who"] = "a"
        assert b.ref.extensions == {}
        b.ref.extensions["who"] = "b"
        assert a.ref.extensions == {"who": "a"}
        assert a.ref.extensions is not b.ref.extensions


def test_extensions_readable_in_on_close(treg: Registry, layer: CloseTimes) -> None:
    class Tagger:
        def on_new_span(self, span: pykregistry.SpanRef) -> None:
            span.extensions["tag"] = f"{span.name}!"

    treg.add_layer(Tagger())
    with treg.span("s") as span:
        span.ref.extensions["user"] = 1
    assert layer.closed["s"]["extensions"] == {"tag": "s!", "user": 1}


def test_extensions_gone_after_close(reg: Registry) -> None:
    class Payload:
        pass

    with reg.span("s") as span:
        view = span.ref
        payload = Payload()
        view.extensions["payload"] = payload
        alive = weakref.ref(payload)
        del payload
    gc.collect()
    assert alive() is None  # dropped with the span
    with pytest.raises(SpanClosedError):
        view.extensions  # noqa: B018


def test_extensions_of_a_reused_slot_start_empty(treg: Registry) -> None:
    for i in range(50):
        with treg.span("s") as span:
            assert span.ref.extensions == {}, i
            span.ref.extensions["i"] = i


def test_extensions_shared_across_handles_and_views(treg: Registry) -> None:
    with treg.span("s") as span:
        other = span.clone()
        try:
            span.ref.extensions["x"] = 1
            assert other.ref.extensions == {"x": 1}
        finally:
            other.close()


def test_an_events_time_is_inside_its_span_and_the_same_for_every_layer(
    tmp_path: Any, layer: CloseTimes
) -> None:
    class Events:
        def __init__(self) -> None:
            self.times: list[int] = []

        def on_event(self, event: pykregistry.Event) -> None:
            self.times.append(event.time_ns)

    events = Events()
    path = tmp_path / "t.jsonl"
    with pykregistry.JsonLines(path) as out:
        reg = Registry(layers=[layer, events, out])
        before = time.time_ns()
        reg.event("outside")
        with reg.span("s"):
            time.sleep(SLEEP)
            reg.event("inside")
            time.sleep(SLEEP)
        after = time.time_ns()
    outside, inside = events.times
    assert before - WINDOW <= outside <= after + WINDOW
    span = layer.closed["s"]
    assert span["start"] + AT_LEAST <= inside <= span["end"] - AT_LEAST
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["time_ns"] for line in written if line["type"] == "event"] == events.times
