"""The host comes first (SPEC R15): nothing pykregistry does may hang,
crash or raise into the program it traces, whatever the garbage collector,
a value's methods or an exception's class do.

Anything that could crash or hang runs in a subprocess with a timeout and
`faulthandler` stacks, so a failure reports instead of killing or stalling
the suite."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

import pykregistry
from pykregistry import Level, Registry, SpanClosedError, SpanNotFoundError, SpanRef

ROOT = Path(__file__).resolve().parent.parent


def run_isolated(code: str, timeout: float = 60) -> str:
    """Runs `code` in a fresh interpreter; returns its stdout. A crash or a
    hang fails with the child's stderr (faulthandler dumps stacks at the
    timeout)."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    wrapped = (
        "import faulthandler, sys\n"
        f"faulthandler.dump_traceback_later({timeout - 5}, exit=True)\n" + textwrap.dedent(code)
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapped],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-4000:]}"
    return done.stdout


# === hangs: no lock held while Python code may run ===


def test_r15_fields_read_while_a_finalizer_records_on_the_span() -> None:
    """`SpanRef.fields` builds its dict outside the span's field lock: the
    allocation may run a finalizer that records on the same span. The
    collection threshold is swept so that some collection lands inside the
    dict's construction (the old code hung here)."""
    out = run_isolated(
        """
        import gc
        from pykregistry import Registry

        reg = Registry()
        span = reg.span("s", **{f"k{i}": "v" * i for i in range(50)})
        view = span.ref

        class Records:
            def __del__(self):
                span.record(seen=1)

        for _ in range(5):
            for threshold in range(2, 150):
                gc.collect()
                gc.set_threshold(threshold)
                r = Records(); cycle = [r]; cycle.append(cycle); del r, cycle
                assert len(view.fields) >= 50
        gc.set_threshold(700, 10, 10)
        gc.collect()
        span.close()
        print(len(reg))
        """
    )
    assert out.split() == ["0"]


def test_r15_first_extensions_read_while_a_finalizer_reads_them() -> None:
    """The first read of `SpanRef.extensions` makes the dict outside any
    once-lock: a finalizer run by that allocation may read them too. (Whether
    a collection lands inside that allocation depends on CPython's dict free
    list; this sweeps thresholds to give it chances, and fails by timeout if
    it ever hangs.)"""
    out = run_isolated(
        """
        import gc
        from pykregistry import Registry

        reg = Registry()

        class Touches:
            def __init__(self, view):
                self.view = view
            def __del__(self):
                self.view.extensions["by"] = "finalizer"

        seen = set()
        for _ in range(5):
            for threshold in range(1, 40):
                span = reg.span("s")
                view = span.ref
                gc.collect()
                # Empty the dict free list, so that making the extensions
                # dict is an allocation that can start a collection.
                hold = [{} for _ in range(200)]
                gc.set_threshold(threshold)
                t = Touches(view); cycle = [t]; cycle.append(cycle); del t, cycle
                seen.add(view.extensions.setdefault("by", "reader"))
                gc.set_threshold(700, 10, 10)
                del hold
                span.close()
        gc.collect()
        print(len(reg), sorted(seen))
        """
    )
    assert out.split()[0] == "0"


# === crashes from pure Python ===


@pytest.mark.parametrize("value", ["12345", "'a string'", "object()", "None", "[1, 2]"])
def test_r15_tampered_context_variable_cannot_crash(value: str) -> None:
    """The stack's `ContextVar` is reachable through `copy_context()`; any
    value put there reads as an empty stack."""
    out = run_isolated(
        f"""
        import contextvars
        from pykregistry import Registry

        reg = Registry()
        with reg.span("first"):
            pass
        (var,) = [v for v in contextvars.copy_context() if v.name == "pykregistry.stack"]

        def tampered():
            var.set({value})
            assert reg.current_span() is None
            with reg.span("s") as s:
                assert reg.current_span() == s.id
            assert reg.current_span() is None
            sid = reg.new_span("ids")
            reg.enter(sid)
            reg.exit(sid)
            reg.try_close(sid)

        contextvars.copy_context().run(tampered)
        print(len(reg))
        """
    )
    assert out.split() == ["0"]


# === raising into the application ===


def test_r15_exception_with_odd_module_propagates_unchanged(reg: Registry) -> None:
    seen: dict[str, object] = {}

    class Keep:
        def on_end(self, span: SpanRef) -> None:
            seen.update(span.fields)

    reg.add_layer(Keep())
    for module in (None, 42, "builtins", "app.errors"):
        odd = type("Odd", (Exception,), {"__module__": module})
        with pytest.raises(odd) as info, reg.span("s"):
            raise odd("boom")
        assert type(info.value) is odd
        assert seen["exception.message"] == "boom"
        expected = "app.errors.Odd" if module == "app.errors" else "Odd"
        assert seen["exception.type"] == expected
    assert len(reg) == 0


def test_r15_exception_whose_str_raises_propagates(reg: Registry) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    with pytest.raises(Unprintable), reg.span("s"):
        raise Unprintable
    assert len(reg) == 0


class Interrupts:
    def __init__(self, step: str, exc: type[BaseException]) -> None:
        self.exc = exc
        setattr(self, step, self.raise_)

    def raise_(self, *args: object) -> None:
        raise self.exc


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("step", ["on_new_span", "on_enter", "on_exit", "on_end", "on_close"])
def test_r15_interrupts_raised_in_a_layer_propagate(step: str, exc: type[BaseException]) -> None:
    """`KeyboardInterrupt` and `SystemExit` are never swallowed, not even in
    a layer; the registry stays consistent."""
    reg = Registry(layers=[Interrupts(step, exc)])
    with pytest.raises(exc), reg.span("s"):
        pass
    assert len(reg) == 0
    assert reg.current_span() is None


def test_r15_interrupt_in_a_layer_through_the_id_api(reg: Registry) -> None:
    reg.add_layer(Interrupts("on_close", KeyboardInterrupt))
    sid = reg.new_span("s")
    with pytest.raises(KeyboardInterrupt):
        reg.try_close(sid)
    assert len(reg) == 0


# === levels from the stdlib ===


@pytest.mark.parametrize(
    ("given", "level"),
    [
        (logging.DEBUG, Level.DEBUG),
        (logging.INFO, Level.INFO),
        (logging.WARNING, Level.WARN),
        (logging.ERROR, Level.ERROR),
        (logging.CRITICAL, Level.ERROR),
        (25, Level.INFO),
        ("warning", Level.WARN),
        ("CRITICAL", Level.ERROR),
    ],
)
def test_stdlib_logging_levels_are_accepted(reg: Registry, given: object, level: Level) -> None:
    with reg.span("s", level=given) as s:
        assert s.ref.level is level


@pytest.mark.parametrize("bad", [0, 6, 9, -10, 51, 255])
def test_levels_between_the_two_scales_are_refused(reg: Registry, bad: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        reg.span("s", level=bad)


# === the pinned pyo3 ===


def test_hand_bound_methods_run_on_the_pinned_pyo3_0_29_3() -> None:
    """`fastcall.rs` binds `Registry.span` & co. inside pyo3's hidden
    trampoline, so pyo3 is pinned exactly; bump the pin and this test
    together, after `tests/test_calls.py` passes on the new version."""
    manifest = (ROOT / "rust" / "python" / "Cargo.toml").read_text()
    assert re.search(
        r'^pyo3 = \{ version = "=0\.29\.3"(, features = \[[^\]]*\])? \}', manifest, re.M
    ), manifest
    lock = (ROOT / "Cargo.lock").read_text()
    assert '[[package]]\nname = "pyo3"\nversion = "0.29.3"' in lock


# === timing mistakes warn (SpanUsageWarning), or raise when strict ===


def lenient() -> Registry:
    return Registry()


def test_r15_record_after_the_block_warns_and_is_dropped() -> None:
    reg = lenient()
    with reg.span("s") as s:
        pass
    with pytest.warns(pykregistry.SpanUsageWarning, match="record"):
        s.record(late=1)
    with pytest.warns(pykregistry.SpanUsageWarning):
        s.record("late", 1)
    with pytest.warns(pykregistry.SpanUsageWarning):
        assert s.ref is None
    with pytest.warns(pykregistry.SpanUsageWarning):
        s.follows_from(s)
    with pytest.warns(pykregistry.SpanUsageWarning):
        assert s.clone().disabled
    with pytest.warns(pykregistry.SpanUsageWarning), s.entered():
        assert reg.current_span() is None
    assert len(reg) == 0


def test_r15_closed_parent_makes_a_root_of_a_new_trace_with_a_warning() -> None:
    reg = lenient()
    with reg.span("parent") as parent:
        pid = parent.id
        trace = parent.ref.trace_id
    for given in (pid, parent):
        with pytest.warns(pykregistry.SpanUsageWarning, match="parent"):
            orphan = reg.span("orphan", parent=given)
        ref = orphan.ref
        assert ref.parent_id is None
        assert ref.parent_span_id is None
        assert ref.trace_id != trace
        orphan.close()
    assert len(reg) == 0


def test_r15_worker_given_a_closed_span_id_goes_on() -> None:
    reg = lenient()
    with reg.span("request") as request:
        rid = request.id
    done: list[Any] = []

    def worker() -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with reg.span("task", parent=rid) as task:
                done.append(task.ref.parent_id)
        done.append([w.category for w in caught])

    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert done == [None, [pykregistry.SpanUsageWarning]]


def test_r15_strict_registry_raises_for_the_same_mistakes() -> None:
    reg = Registry(strict=True)
    assert reg.strict
    with reg.span("s") as s:
        pass
    with pytest.raises(SpanClosedError, match="handle was closed"):
        s.record(late=1)
    with pytest.raises(SpanNotFoundError), reg.span("orphan", parent=s.id):
        pass
    assert len(reg) == 0


def test_r15_the_integer_api_keeps_raising_on_ids_that_are_not_live() -> None:
    reg = lenient()
    sid = reg.new_span("s")
    reg.try_close(sid)
    for call in (
        lambda: reg.new_span("x", parent=sid),
        lambda: reg.clone_span(sid),
        lambda: reg.try_close(sid),
        lambda: reg.enter(sid),
        lambda: reg.record(sid, k=1),
        lambda: reg.follows_from(sid, sid),
        lambda: reg.event("e", parent=sid),
    ):
        with pytest.raises(SpanNotFoundError):
            call()


def test_r15_shape_errors_raise_in_every_mode() -> None:
    for reg in (lenient(), Registry(strict=True)):
        with pytest.raises(ValueError, match="unknown level"):
            reg.span("s", level="loud")
        with pytest.raises(TypeError):
            reg.span(42)  # type: ignore[arg-type]
        site = reg.callsite("c", fields=("a",))
        with pytest.raises(TypeError):
            site.span(b=1)
        assert len(reg) == 0


def test_json_lines_open_errors_name_the_errno_and_the_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "such" / "x.jsonl")
    with pytest.raises(FileNotFoundError) as info:
        pykregistry.JsonLines(missing)
    assert (info.value.errno, info.value.filename) == (2, missing)
    assert "No such file or directory" in str(info.value)
    with pytest.raises(IsADirectoryError) as info2:
        pykregistry.JsonLines(str(tmp_path))
    assert info2.value.filename == str(tmp_path)
