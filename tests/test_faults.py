"""Faults: threads that die with spans entered, interpreter exit with a
thread still holding spans, ``os.fork()`` with spans live and entered, and
running out of threads with spans live.

The fork and capacity tests run in a fresh interpreter (``sys.executable
-c``): forking the test process would copy pytest's threads and state, and
an abort must fail a test, not kill the suite. The plain capacity case (new
spans refused with ``CapacityError``, capacity back once threads end) is
``test_r12_running_out_of_threads_is_a_clear_error_and_recovers`` in
test_errors.py; ``test_capacity_exhaustion_leaves_earlier_spans_intact``
adds what it does not check: spans made before are untouched while the
registry is full, refused threads' calls on them either work exactly or fail
cleanly, and nothing leaks.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

from pykregistry import Registry


def run_script(script: str, timeout: float = 240) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "panicked" not in proc.stderr, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# === threads that die ===


class Died(Exception):
    pass


@pytest.mark.parametrize("how", ["exception", "SystemExit"])
def test_thread_dying_with_spans_entered_releases_them(
    reg: Registry, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A thread that dies — an uncaught exception, or ``sys.exit()`` — with
    spans entered by ID and through handles, a shared span entered and
    cloned, and handles in its frames: once it has died, its stack's
    references are gone (R11) and so are its frames' handles, and the
    shared span is back to its holder's reference."""
    hooked: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: hooked.append(args.exc_type.__name__))
    shared = reg.span("shared", parent=None)
    made: list[int] = []

    def dies() -> None:
        own = reg.new_span("own", parent=None)
        child = reg.span("child", parent=shared.id)
        child.__enter__()  # entered through the handle, never exited
        reg.enter(shared.id)  # type: ignore[arg-type]
        reg.enter(own)
        reg.enter(shared.id)  # type: ignore[arg-type]  # a duplicate
        extra = reg.clone_span(shared.id)  # type: ignore[arg-type]
        made.extend([own, child.id, extra])  # type: ignore[list-item]
        assert reg.current_span() == own
        assert reg.ref_count(shared.id) == 4  # type: ignore[arg-type]
        if how == "exception":
            raise Died
        sys.exit(3)

    t = threading.Thread(target=dies)
    t.start()
    t.join()
    # (The default hook would print the exception, and ignore SystemExit.)
    assert hooked == (["Died"] if how == "exception" else ["SystemExit"])
    # The clone taken by ID is a reference the thread never closed: it
    # belongs to whoever holds the ID, not to the thread, so it stays.
    gc.collect()
    assert reg.ref_count(shared.id) == 2  # type: ignore[arg-type]
    assert len(reg) == 2  # shared, and `own`: its ID was never closed either
    assert reg.ref_count(made[0]) == 1
    assert reg.get(made[1]) is None  # child: handle and entry gone
    assert reg.try_close(made[0]) is True
    assert reg.try_close(shared.id) is False  # type: ignore[arg-type]
    shared.close()
    assert len(reg) == 0


def test_many_threads_dying_while_others_use_the_same_span(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """32 threads die (raising) with a shared span entered and children of
    it entered, while 4 others clone, enter and close it in a loop: the
    count comes back exact."""
    monkeypatch.setattr(threading, "excepthook", lambda args: None)
    shared = reg.span("shared", parent=None)
    sid = shared.id
    assert sid is not None
    start = threading.Barrier(36, timeout=60)
    stop = threading.Event()

    def dies(n: int) -> None:
        start.wait()
        reg.enter(sid)
        for _ in range(n % 5):
            child = reg.span("child")
            child.__enter__()
        raise Died

    def churns() -> None:
        start.wait()
        while not stop.is_set():
            reg.clone_span(sid)
            reg.enter(sid)
            kid = reg.new_span("kid")
            reg.exit(sid)
            assert reg.try_close(kid) is True
            assert reg.try_close(sid) is False

    dying = [threading.Thread(target=dies, args=(n,)) for n in range(32)]
    churning = [threading.Thread(target=churns) for _ in range(4)]
    for th in dying + churning:
        th.start()
    for th in dying:
        th.join()
    stop.set()
    for th in churning:
        th.join()
    gc.collect()
    assert reg.ref_count(sid) == 1
    assert len(reg) == 1
    shared.close()


EXIT_WITH_THREAD_HOLDING_SPANS = """
    import sys, threading, pykregistry

    class Layer:
        def on_close(self, span):
            pass  # called, or not, while the interpreter shuts down

    reg = pykregistry.Registry(layers=[Layer()])
    ready = threading.Event()

    def holds():
        root = reg.span("root", parent=None)
        root.__enter__()
        sid = reg.new_span("child")
        reg.enter(sid)
        ready.set()
        threading.Event().wait()  # forever: a daemon thread

    threading.Thread(target=holds, daemon=True).start()
    ready.wait()
    main = reg.span("main", parent=None)
    main.__enter__()
    print('{"live": %d}' % len(reg))
    sys.stdout.flush()
"""


def test_interpreter_exit_with_a_thread_holding_spans_entered() -> None:
    """The main thread exits while a daemon thread blocks with spans
    entered, and the main thread itself has one entered: the interpreter
    shuts down cleanly (exit 0, no panic, no fatal error)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXIT_WITH_THREAD_HOLDING_SPANS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""
    assert json.loads(proc.stdout) == {"live": 3}


# === fork ===

FORK_SCRIPT = """
    import json, os, threading, pykregistry

    reg = pykregistry.Registry()

    def snapshot(ids):
        return {
            "len": len(reg),
            "current": reg.current_span(),
            "counts": [reg.ref_count(i) for i in ids],
        }

    # A thread that used the registry and ended before the fork.
    t = threading.Thread(target=lambda: reg.try_close(reg.new_span("early")))
    t.start()
    t.join()
    assert threading.active_count() == 1  # no other thread at the fork

    root = reg.span("root", parent=None)
    root.__enter__()                      # entered by handle
    child = reg.new_span("child")         # contextual: root's child
    reg.enter(child)                      # entered by ID: current
    extra = reg.clone_span(child)
    ids = [root.id, child]
    before = snapshot(ids)

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            out = {"inherited": snapshot(ids)}
            # New spans under the inherited current span.
            s = reg.new_span("in child")
            out["new_parent"] = reg.get(s).parent_id
            out["new_is_fresh"] = s not in ids
            out["count_with_new"] = snapshot(ids)
            assert reg.try_close(s) is True
            # A new thread in the child (its first use of the registry).
            seen = []
            def work():
                with reg.span("thread in child", parent=child) as h:
                    seen.append(reg.get(h.id).parent_id)
                seen.append(reg.current_span())
            t = threading.Thread(target=work)
            t.start()
            t.join()
            out["thread"] = seen
            # Tear down the inherited spans, in the child's copy only.
            reg.exit(child)
            reg.try_close(extra)
            out["child_closed"] = reg.try_close(child)
            root.__exit__(None, None, None)
            out["after_cleanup"] = snapshot(ids)
            code = 0
        except BaseException as e:
            out = {"error": repr(e)}
        finally:
            os.write(w, json.dumps(out).encode())
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    _, status = os.waitpid(pid, 0)
    after = snapshot(ids)
    # The parent's own teardown.
    reg.exit(child)
    reg.try_close(extra)
    reg.try_close(child)
    root.__exit__(None, None, None)
    print(json.dumps({
        "ids": ids,
        "before": before,
        "after": after,
        "child": json.loads(data),
        "child_exit": os.waitstatus_to_exitcode(status),
        "parent_len_at_end": len(reg),
    }))
"""


def test_fork_with_spans_live_and_entered() -> None:
    """What the child sees: a copy of the parent's memory, so the parent's
    spans exist in the child's copy with the same counts, and its main
    thread's context is a copy of the forking thread's, so the same span is
    current. The child can create and close spans (also from a new thread)
    and tear down the inherited ones; none of it reaches the parent, whose
    counts are as they were before the fork."""
    result = run_script(FORK_SCRIPT)
    _, child = result["ids"]
    before = result["before"]
    assert before == {"len": 2, "current": child, "counts": [3, 3]}
    got = result["child"]
    assert "error" not in got, got
    assert result["child_exit"] == 0
    assert got["inherited"] == before
    assert got["new_parent"] == child
    assert got["new_is_fresh"] is True
    assert got["count_with_new"] == {"len": 3, "current": child, "counts": [3, 4]}
    assert got["thread"] == [child, None]
    assert got["child_closed"] is True
    assert got["after_cleanup"] == {"len": 0, "current": None, "counts": [0, 0]}
    assert result["after"] == before
    assert result["parent_len_at_end"] == 0


# === capacity ===

CAPACITY_SCRIPT = """
    import json, threading, pykregistry

    threading.stack_size(64 * 1024)
    reg = pykregistry.Registry()

    # Earlier spans, made before the registry fills up.
    root = reg.span("root", parent=None, k=1)
    root.__enter__()
    child = reg.new_span("child", parent=root.id, fields={"a": "x"})
    held = reg.clone_span(child)
    # One span per refused thread, whose last reference that thread closes.
    victims = [reg.new_span("victim", parent=None) for _ in range(8)]
    victims_left = list(victims)

    def state():
        return {
            "len": len(reg) - sum(v in reg for v in victims),
            "root": reg.ref_count(root.id),
            "child": reg.ref_count(child),
            "child_fields": reg.get(child).fields,
            "child_parent": reg.get(child).parent_id,
            "current": reg.current_span(),
        }

    before = state()
    release = threading.Event()
    outcomes = []
    refused_calls = {}

    def attempt(name, call, undo=None):
        try:
            result = call()
        except pykregistry.CapacityError:
            refused_calls.setdefault(name, set()).add("capacity")
            return
        except BaseException as e:
            refused_calls.setdefault(name, set()).add(f"{type(e).__qualname__}: {e}")
            return
        refused_calls.setdefault(name, set()).add("ok")
        if undo is not None:
            undo(result)

    def hold(done):
        try:
            s = reg.new_span("t", parent=root.id)
        except pykregistry.CapacityError:
            outcomes.append("capacity")
            # Refused: what can this thread still do with the earlier spans?
            attempt("clone+close", lambda: reg.clone_span(child), reg.try_close)
            attempt("enter+exit", lambda: reg.enter(child), lambda _: reg.exit(child))
            attempt("record", lambda: reg.record(child, a="x"))
            attempt("get", lambda: reg.get(child).fields)
            attempt("child span", lambda: reg.new_span("c", parent=child), reg.try_close)
            attempt("handle", lambda: reg.span("h", parent=None), lambda h: h.close())
            attempt("event", lambda: reg.event("e", parent=child))
            victim = victims_left.pop()
            attempt("close last reference", lambda: reg.try_close(victim))
            done.set()
            return
        except BaseException as e:
            outcomes.append(f"other: {type(e).__qualname__}: {e}")
            done.set()
            return
        outcomes.append("ok")
        done.set()
        release.wait()
        reg.try_close(s)

    threads = []
    refused = 0
    peak = None
    while len(threads) < 6000 and refused < 8:
        done = threading.Event()
        t = threading.Thread(target=hold, args=(done,))
        t.start()
        threads.append(t)
        done.wait()
        refused += outcomes[-1] == "capacity"
    holding = outcomes.count("ok")
    peak = state()
    release.set()
    for t in threads:
        t.join()
    after = state()
    victims_closed = [reg.get(v) is None for v in victims]
    for v in victims:
        if v in reg:
            reg.try_close(v)
    reg.try_close(held)
    reg.try_close(child)
    root.__exit__(None, None, None)
    print(json.dumps({
        "before": before,
        "peak": peak,
        "holding": holding,
        "after": after,
        "kinds": sorted(set(outcomes)),
        "refused_calls": {k: sorted(v) for k, v in refused_calls.items()},
        "victims_closed": victims_closed,
        "end": len(reg),
    }))
"""


@pytest.mark.slow
def test_capacity_exhaustion_leaves_earlier_spans_intact() -> None:
    result = run_script(CAPACITY_SCRIPT)
    assert result["kinds"] == ["capacity", "ok"]
    before, holding = result["before"], result["holding"]
    assert holding > 100
    # While full: every holder's span is a child of root; nothing else moved.
    assert result["peak"] == {
        **before,
        "len": before["len"] + holding,
        "root": before["root"] + holding,
    }
    # After: as before, the holders' spans closed, the refused threads'
    # attempts undone or never done.
    assert result["after"] == before
    assert result["end"] == 0
    # A refused thread's calls on earlier spans either work (and were
    # undone) or raise CapacityError; nothing else.
    calls = result["refused_calls"]
    for name, kinds in calls.items():
        assert set(kinds) <= {"ok", "capacity"}, (name, kinds)
    # Still full: a second new span is refused too.
    assert calls["child span"] == calls["handle"] == ["capacity"]
    # A span whose last reference a refused thread released closed then
    # (if the thread could release it at all).
    if calls["close last reference"] == ["ok"]:
        assert result["victims_closed"] == [True] * 8
    assert set(calls) == {
        "close last reference",
        "clone+close",
        "enter+exit",
        "record",
        "get",
        "child span",
        "handle",
        "event",
    }
