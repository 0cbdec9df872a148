"""R15: everything a user can build is collectable by the garbage collector,
and at interpreter exit the spans still open end and close in order,
children first, so that layers and exporters see them."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path
from typing import Any

from pykregistry import Registry, SpanRef


class Closes:
    def __init__(self) -> None:
        self.closed: list[str] = []

    def on_close(self, span: SpanRef) -> None:
        self.closed.append(span.name)


def test_r15_handle_in_its_own_extensions_is_collected() -> None:
    """A handle (or an `entered()` guard) kept in its own span's extensions:
    the registry, the handle and the dict form a cycle the collector sees,
    and the span closes with the layers still there to see it."""
    layer = Closes()

    def build() -> None:
        reg = Registry(layers=[layer])
        held = reg.span("self-held")
        held.ref.extensions["me"] = held
        guarded = reg.span("guard-held")
        guard = guarded.entered()
        guarded.ref.extensions["guard"] = guard
        assert len(reg) == 2

    build()
    gc.collect()
    assert sorted(layer.closed) == ["guard-held", "self-held"]


def test_r15_registry_in_a_cycle_through_a_layer_is_collected() -> None:
    """A layer that keeps a handle of its own registry (the registry holds
    the layer, the handle holds the registry) is collected."""

    class Holder:
        handle: Any = None

        def on_close(self, span: SpanRef) -> None:
            pass

    def build() -> weakref.ref[Holder]:
        holder = Holder()
        reg = Registry(layers=[holder])
        holder.handle = reg.span("held-by-layer")
        return weakref.ref(holder)

    gone = build()
    gc.collect()
    assert gone() is None


SCRIPT = """
import sys
import pykregistry

class Show:
    def on_end(self, span):
        print("end", span.name, flush=True)

    def on_close(self, span):
        print("close", span.name, flush=True)

reg = pykregistry.Registry(layers=[Show(), pykregistry.JsonLines(sys.argv[1])])
APP = reg.span("app")
with APP.entered():
    CHILD = reg.span("child")
    with CHILD.entered():
        GRAND = reg.span("grand")
OTHER = reg.span("other")
print("main done", len(reg), flush=True)
"""


def test_r15_open_spans_close_children_first_at_exit(tmp_path: Path) -> None:
    """Module-level handles in `__main__`, beside the layer class their
    registry holds (a cycle the collector never gets to at exit): every span
    ends and closes at exit, children first, and `JsonLines` writes them."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        [sys.executable, str(script), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "main done 4"
    steps = lines[1:]
    assert sorted(steps) == sorted(
        f"{step} {name}" for step in ("end", "close") for name in ("app", "child", "grand", "other")
    )
    for name in ("app", "child", "grand", "other"):
        assert steps.index(f"end {name}") < steps.index(f"close {name}")
    assert steps.index("close grand") < steps.index("close child") < steps.index("close app")
    written = [json.loads(line) for line in out.read_text().splitlines()]
    by_name = {w["name"]: w for w in written}
    assert set(by_name) == {"app", "child", "grand", "other"}
    assert by_name["grand"]["parent_span_id"] == by_name["child"]["span_id"]
    assert by_name["child"]["parent_span_id"] == by_name["app"]["span_id"]
    names = [w["name"] for w in written]
    assert names.index("grand") < names.index("child") < names.index("app")


def test_r15_handles_released_after_the_exit_close_do_nothing() -> None:
    """After the exit hook closed a span, its handle (released later, in the
    module's teardown) finds it gone: no error, no second close, and new
    spans work. In a child process: the hook closes every registry's spans."""
    code = """
        import warnings
        import pykregistry
        from pykregistry import Registry

        warnings.simplefilter("error")
        closed = []

        class Closes:
            def on_close(self, span):
                closed.append(span.name)

        reg = Registry(layers=[Closes()])
        handle = reg.span("late")
        child = reg.span("child", parent=handle)
        pykregistry._native._close_open_spans()
        assert closed == ["child", "late"], closed
        assert len(reg) == 0
        child.close()
        handle.close()
        assert closed == ["child", "late"], closed
        with reg.span("after"):
            pass
        assert closed == ["child", "late", "after"], closed
        print("ok")
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"
