"""Garbage-collection pressure (issue 9, "How to prove it"; SPEC R10, R15).

The public API runs under ``gc.set_threshold(1)``, so that a collection, and
the finalizers it runs, can start at nearly every allocation the collector
tracks, inside pykregistry's own calls too. The garbage is a steady supply
of *finalizer bombs*: objects in reference cycles (only the collector frees
them) whose ``__del__`` calls back into the registry: it records on live
spans, makes, enters, exits and closes spans (handles, ``entered()``, call
sites, ``@instrument``, the integer-ID API), reads the current span's
fields and extensions, emits events, and leaves more bombs. Every layer
hook and every conversion dunder of a field value (``__repr__`` & co.)
calls back and litters bombs too, so that finalizers also run inside hooks
and conversions.

Each scenario runs in a fresh interpreter (this file, run as a script) with
``faulthandler``: a hang or a crash fails its test with every thread's
stack. The child asserts that the traced program ran unchanged (results,
exceptions by identity, parents, current spans, reference counts), that
nothing raised out of pykregistry into the program, a finalizer or a hook,
that a correct program got no ``SpanUsageWarning`` (nor any warning), and
that once the bombs are collected nothing is live (``assert_no_leaks``);
it prints a JSON summary, in which the test checks that the callbacks ran.

    python tests/test_gc_pressure.py nesting     # one scenario, by hand
"""

from __future__ import annotations

import asyncio
import contextvars
import faulthandler
import functools
import gc
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import traceback
import warnings
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Generator
from pathlib import Path
from typing import Any

import pytest

import pykregistry
from pykregistry import JsonLines, Registry, Span, SpanRef, SpanUsageWarning
from pykregistry.logs import SpanFilter, SpanHandler
from pykregistry.testing import LiveSpans, assert_no_leaks, leak_report
from pykregistry.tree import TreeRecorder, render_tree

# How long a child may run before faulthandler dumps its stacks and ends
# it (unless the test gives it longer); the parent's own timeout is a
# backstop.
HANG_AFTER = 60.0
HANG_AFTER_VAR = "GC_PRESSURE_HANG_AFTER"

SURROGATES = os.fsdecode(b"caf\xe9.txt")  # 'caf\udce9.txt'
LIMIT = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
HUGE = -(10 ** (LIMIT + 10))  # past the decimal limit: repr() raises

# How many bombs may wait for the collector at once: every finalizer
# litters (through the hooks its calls run, too), so without a cap their
# number would grow at every collection.
BOMBS = 4
# How deep callbacks may nest and still call back into the registry: a
# hook run by a finalizer's call, or by a hook's own, only litters.
DEPTH = 1


def ref(span: Span) -> SpanRef:
    """The view of a handle's span (which the program knows is live)."""
    view = span.ref
    assert view is not None
    return view


def get(reg: Registry, sid: int | None) -> SpanRef:
    """The view of a span the program knows is live."""
    assert sid is not None
    view = reg.get(sid)
    assert view is not None, sid
    return view


def ident(span: Span) -> int:
    assert span.id is not None
    return span.id


# === the child: finalizer bombs and what they call back into ===


class Callbacks(threading.local):
    """Per thread: how deep callbacks nest, and the innermost one."""

    depth = 0
    # Strings, not a list: the collector does not track them, so this
    # bookkeeping starts no collection of its own.
    where = "program"


class World:
    """What every finalizer, hook and conversion calls back into: one
    registry, a long-lived span to record on, and counts that show the
    callbacks ran.

    ``handles``: each bomb holds a span handle of its own (released by its
    finalizer or by the collector); off where every live span is counted.
    ``id_enter``: finalizers also enter and exit by integer ID (see "found
    by the harness" below). ``actions``: the names of the
    finalizer actions to cycle through (all by default)."""

    def __init__(
        self,
        reg: Registry,
        *,
        handles: bool = True,
        id_enter: bool = False,
        actions: list[str] | None = None,
    ) -> None:
        self.reg = reg
        self.handles = handles
        self.id_enter = id_enter
        self.actions = [ACTIONS[a] for a in actions] if actions else list(ACTIONS.values())
        self.anchor = reg.span("anchor", parent=None, anchor=True)
        self.site = reg.callsite("fin.site", fields=("n", "v"))
        self.active = False
        self.made = itertools.count()
        # The bombs made and not yet finalized (a set's add and discard are
        # atomic under the GIL, and allocate nothing the collector tracks).
        self.bombs: set[int] = set()
        self.runs: Counter[str] = Counter()
        self.errors: list[str] = []
        self.callbacks = Callbacks()
        # A field value that finalizers grow and shrink as it is converted.
        self.shared: list[int] = [10**30, -(10**30), 7]
        self.instrumented = reg.instrument(name="fin.instrumented", ret=True)(_double)

    # --- where callbacks run ---

    def where(self) -> str:
        """The innermost callback running on this thread, or "program"."""
        return self.callbacks.where.rpartition("/")[2]

    def begin(self, where: str) -> bool:
        """A callback starts; whether it may call back into the registry."""
        self.callbacks.depth += 1
        self.callbacks.where += "/" + where
        return self.callbacks.depth <= DEPTH

    def end(self) -> None:
        self.callbacks.depth -= 1
        self.callbacks.where = self.callbacks.where.rpartition("/")[0]

    def failed(self, where: str) -> None:
        """Keeps what raised out of a callback (for the child to report)."""
        self.errors.append(f"in {where}:\n{traceback.format_exc()}")

    # --- bombs ---

    def litter(self, n: int = 1) -> None:
        """Leaves up to `n` bombs for the collector."""
        for _ in range(n):
            if not self.active or len(self.bombs) >= BOMBS:
                return
            n = next(self.made)
            # Counted first: making the handle runs hooks that litter too.
            self.bombs.add(n)
            handle = self.reg.span("bomb", parent=None, n=n) if self.handles else None
            Bomb(self, n, handle)

    def detonate(self, bomb: Bomb) -> None:
        """A bomb's finalizer: one action, then more bombs."""
        self.bombs.discard(bomb.n)
        if not self.active:
            if bomb.handle is not None:
                bomb.handle.close()
            return
        self.runs["finalizer in " + self.where()] += 1
        action = self.actions[bomb.n % len(self.actions)]
        if self.begin("finalizer"):
            try:
                action(self, bomb)
                self.runs[action.__name__] += 1
            except BaseException:
                self.failed(f"finalizer {action.__name__}")
        self.end()
        self.litter(2)

    def arm(self) -> None:
        self.active = True
        self.litter(BOMBS)

    def disarm(self) -> None:
        """Stops making bombs, finalizes those left, closes the anchor."""
        self.active = False
        for _ in range(20):
            if not gc.collect():
                break
        assert not self.bombs, f"{len(self.bombs)} bombs were never finalized"
        self.anchor.close()

    # --- callbacks from conversions ---

    def convert(self, dunder: str) -> None:
        """A field value's dunder: calls back, and litters last, so that the
        next collection runs in the conversion code that called it."""
        self.runs["convert " + dunder] += 1
        if self.begin("convert"):
            try:
                self.anchor.record(**{"fin.convert": dunder})
                self.reg.current_span()
            except BaseException:
                self.failed(f"convert {dunder}")
        self.end()
        self.litter()


class Bomb:
    """Garbage in a reference cycle whose finalizer calls back into the
    registry."""

    def __init__(self, world: World, n: int, handle: Span | None) -> None:
        # The handle is made before the bomb (by `litter`): a collection run
        # by an allocation inside `__init__` would find the bomb still
        # reachable from this frame and promote it to an older generation,
        # which collects it far less often.
        self.world = world
        self.n = n
        self.handle = handle
        self.cycle = self

    def __del__(self) -> None:
        self.world.detonate(self)


class Stashed:
    """Kept in a span's extensions: its finalizer runs (by reference
    counting, inside the registry) when the span closes or the key is
    replaced."""

    def __init__(self, world: World) -> None:
        self.world = world

    def __del__(self) -> None:
        world = self.world
        if not world.active:
            return
        if world.begin("stashed"):
            try:
                with world.reg.span("fin.stashed", parent=None) as s:
                    s.record(seen=True)
                world.reg.event("fin.stashed")
            except BaseException:
                world.failed("stashed")
        world.end()
        world.litter()


def _double(n: int, v: object) -> int:
    return 2 * n


# --- what a finalizer does ---


def fin_record(world: World, bomb: Bomb) -> None:
    """Records on the long-lived span, and on the current span."""
    reg, n = world.reg, bomb.n
    world.anchor.record(fin=n, big=HUGE, text=SURROGATES, shared=world.shared)
    reg.record(ident(world.anchor), **{"fin.id": n})
    current = reg.current_span()
    if current is not None:
        reg.record(current, **{"fin.current": n})


def fin_span(world: World, bomb: Bomb) -> None:
    """A span in a ``with`` block, re-entered, with events and a link."""
    reg, n = world.reg, bomb.n
    with reg.span("fin.span", n=n, v=world.shared, big=HUGE) as s:
        s.record("fin.rec", n)
        reg.event("fin.event", n=n)
        s.follows_from(world.anchor)
        with s.entered():
            reg.event("fin.entered")


def fin_ids(world: World, bomb: Bomb) -> None:
    """The integer-ID API, every count checked."""
    reg, n = world.reg, bomb.n
    sid = reg.new_span("fin.ids", parent=None, fields={"n": n})
    assert reg.clone_span(sid) == sid
    assert reg.ref_count(sid) == 2
    reg.record(sid, k=n, v=world.shared)
    reg.follows_from(sid, ident(world.anchor))
    if world.id_enter:
        reg.enter(sid)
        reg.exit(sid)
        current = reg.current_span()
        if current is not None:
            reg.enter(current)
            reg.exit(current)
    assert reg.try_close(sid) is False
    assert reg.try_close(sid) is True
    assert reg.get(sid) is None


def _current_or_anchor(world: World) -> SpanRef:
    current = world.reg.current_span()
    view = world.reg.get(current) if current is not None else None
    return view if view is not None else ref(world.anchor)


def fin_read(world: World, bomb: Bomb) -> None:
    """Reads the current span (or the anchor) every way a view allows."""
    reg, n = world.reg, bomb.n
    view = _current_or_anchor(world)
    assert isinstance(view.fields, dict)
    view.extensions[f"fin.{n % 4}"] = [n]
    assert view.scope()[0] == view
    assert view.from_root()[-1] == view
    repr(view)
    _ = (view.name, view.target, view.level, view.parent, view.span_id, view.trace_id)
    assert ref(world.anchor).fields["anchor"] is True
    assert len(reg) > 0
    if n % 16 == 0:
        leak_report(reg)


def fin_child(world: World, bomb: Bomb) -> None:
    """Children of the anchor, by handle and by call site."""
    with world.reg.span("fin.child", parent=world.anchor) as c:
        c.record(n=bomb.n)
        assert ref(c).parent_id == world.anchor.id
    with world.site.span(n=bomb.n, v=world.shared, parent=world.anchor):
        pass


def fin_clone(world: World, bomb: Bomb) -> None:
    """A clone of the anchor, recorded on and closed twice."""
    clone = world.anchor.clone()
    clone.record(clone=bomb.n)
    clone.close()
    clone.close()


def fin_stash(world: World, bomb: Bomb) -> None:
    """Puts a finalizer in the current span's (or the anchor's) extensions,
    replacing (and so finalizing) the one there."""
    _current_or_anchor(world).extensions["fin.stash"] = Stashed(world)


def fin_instrument(world: World, bomb: Bomb) -> None:
    """An ``@instrument``-ed call."""
    assert world.instrumented(bomb.n, world.shared) == 2 * bomb.n


def fin_handle(world: World, bomb: Bomb) -> None:
    """Closes the bomb's own handle, twice (the bombs of other actions leave
    theirs to the collector)."""
    if bomb.handle is not None:
        bomb.handle.close()
        bomb.handle.close()


def fin_shared(world: World, bomb: Bomb) -> None:
    """Grows or shrinks a list that the program converts as a field value."""
    if (bomb.n // 10) % 2 and len(world.shared) < 8:
        world.shared.append(10**40 + bomb.n)
    elif len(world.shared) > 1:
        world.shared.pop()


ACTIONS: dict[str, Callable[[World, Bomb], None]] = {
    f.__name__: f
    for f in (
        fin_record,
        fin_span,
        fin_ids,
        fin_read,
        fin_child,
        fin_clone,
        fin_stash,
        fin_instrument,
        fin_handle,
        fin_shared,
    )
}


# --- field values whose conversion runs finalizers ---


class Noisy:
    """A field value whose dunders call back and litter; recorded as its
    ``repr()``."""

    def __init__(self, world: World, text: str) -> None:
        self.world = world
        self.text = text

    def __repr__(self) -> str:
        self.world.convert("repr")
        return f"Noisy({self.text!r})"

    def __str__(self) -> str:
        self.world.convert("str")
        return self.text

    def __eq__(self, other: object) -> bool:
        self.world.convert("eq")
        return self is other

    def __hash__(self) -> int:
        self.world.convert("hash")
        return id(self)

    def __index__(self) -> int:
        self.world.convert("index")
        return 7

    def __float__(self) -> float:
        self.world.convert("float")
        return 7.0


class Raising(Noisy):
    """Noisy, and every dunder raises once it has called back and
    littered: recorded as a placeholder naming its type."""

    def __repr__(self) -> str:
        super().__repr__()
        raise RuntimeError("repr")

    def __str__(self) -> str:
        super().__str__()
        raise RuntimeError("str")

    def __eq__(self, other: object) -> bool:
        super().__eq__(other)
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        super().__hash__()
        raise RuntimeError("hash")

    def __index__(self) -> int:
        super().__index__()
        raise RuntimeError("index")


class NoisyInt(int):
    """An int (read back as one) whose dunders call back and raise."""

    world: World

    def __repr__(self) -> str:
        self.world.convert("int repr")
        raise RuntimeError("int repr")

    def __index__(self) -> int:
        self.world.convert("int index")
        raise RuntimeError("int index")


class NoisyStr(str):
    """A str (read back as one; also a field name) whose dunders call back."""

    world: World

    def __repr__(self) -> str:
        self.world.convert("str repr")
        raise RuntimeError("str repr")

    def __hash__(self) -> int:
        self.world.convert("str hash")
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        self.world.convert("str eq")
        return str.__eq__(self, other)


class NoisyFloat(float):
    """A float (read back as one) whose ``__repr__`` calls back and raises."""

    world: World

    def __repr__(self) -> str:
        self.world.convert("float repr")
        raise RuntimeError("float repr")


class NoisyTuple(tuple[int, ...]):
    """Not exactly a tuple: recorded as its ``repr()``, which calls back."""

    world: World

    def __repr__(self) -> str:
        self.world.convert("tuple repr")
        return "NoisyTuple"


def field_values(world: World) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Field values of every kind, by field name: (given, those read back
    as values, those read back as text)."""
    for cls in (NoisyInt, NoisyStr, NoisyFloat, NoisyTuple):
        cls.world = world
    exact: dict[str, Any] = {
        "none": None,
        "flag": True,
        "small": -7,
        "u64": 2**64 - 1,
        "big": 10**40,
        "huge": HUGE,
        "real": 2.5,
        "text": "héllo",
        "surrogates": SURROGATES,
        "lone": "\udc80",
        "nul": "a\x00b",
        "ints": [1, 2**70, -(2**70)],
        "huges": (HUGE, 1),
        "strs": ("a", SURROGATES),
        "floats": [0.5, float("inf")],
        "bools": (True, False),
        "empty": [],
    }
    subclasses: dict[str, Any] = {
        "int_sub": NoisyInt(12),
        "str_sub": NoisyStr("sub"),
        "float_sub": NoisyFloat(1.5),
        "int_subs": [NoisyInt(1), NoisyInt(2)],
        NoisyStr("noisy_name"): 1,
    }
    back = {
        **exact,
        "int_sub": 12,
        "str_sub": "sub",
        "float_sub": 1.5,
        "int_subs": [1, 2],
        "noisy_name": 1,
    }
    as_text: dict[str, tuple[object, str]] = {
        "noisy": (Noisy(world, "n"), "Noisy('n')"),
        "raising": (Raising(world, "r"), "<unrepresentable Raising>"),
        "tuple_sub": (NoisyTuple((1, 2)), "NoisyTuple"),
        "mixed": ([1, Noisy(world, "m")], "[1, Noisy('m')]"),
        "nested": ((Noisy(world, "a"), (Noisy(world, "b"),)), "(Noisy('a'), (Noisy('b'),))"),
        "mapping": ({"k": Noisy(world, "v")}, "{'k': Noisy('v')}"),
        "bytes": (b"\x00\xff", "b'\\x00\\xff'"),
        "raising_in_list": ([Raising(world, "x")], "<unrepresentable list>"),
    }
    given = {**exact, **subclasses, **{k: v for k, (v, _) in as_text.items()}}
    return given, back, {k: text for k, (_, text) in as_text.items()}


def own(fields: dict[str, object]) -> dict[str, object]:
    """A span's fields less those finalizers and hooks recorded."""
    return {k: v for k, v in fields.items() if not k.startswith(("fin", "hook"))}


def assert_read_back(got: dict[str, object], back: dict[str, Any], text: dict[str, str]) -> None:
    got = own(got)
    assert sorted(got) == sorted([*back, *text])
    for key, value in back.items():
        assert got[key] == value, (key, got[key], value)
        assert type(got[key]) is type(value), (key, got[key])
        if isinstance(value, (list, tuple)):
            items = got[key]
            assert isinstance(items, (list, tuple))
            assert [type(v) for v in items] == [type(v) for v in value], key
    for key, shown in text.items():
        assert got[key] == shown, (key, got[key], shown)


# --- a layer whose every hook calls back and litters ---


class LitteringLayer:
    """Every hook calls back into the registry (records on its span while
    that is live, reads it, makes and closes a span, emits an event,
    records on the anchor) and litters. Keeps what the checks need: the
    fields of the program's events, and of spans at their end."""

    def __init__(self) -> None:
        self.world: World | None = None
        self.events: dict[str, dict[str, object]] = {}
        self.parents: dict[str, int | None] = {}
        self.ended: dict[str, dict[str, object]] = {}

    def _hook(self, name: str, span: SpanRef | None = None) -> None:
        world = self.world
        if world is None or not world.active:
            return
        world.runs["hook " + name] += 1
        if world.begin("hook"):
            try:
                reg = world.reg
                if span is not None:
                    assert isinstance(span.fields, dict)
                    span.extensions.setdefault("hooks", []).append(name)
                    repr(span)
                    if name in ("on_new_span", "on_enter", "on_exit") and span.ref_count:
                        reg.record(span.id, **{f"hook.{name}": True})
                with reg.span("hook.span", parent=None, hook=name) as s:
                    s.record(v=world.shared)
                reg.event("hook.event", hook=name)
                world.anchor.record(hook=name)
            except BaseException:
                world.failed(f"hook {name}")
        world.end()
        # Last, so that the next collection runs in the dispatch that
        # called the hook.
        world.litter()

    def on_new_span(self, span: SpanRef) -> None:
        self._hook("on_new_span", span)

    def on_record(self, span: SpanRef, values: dict[str, object]) -> None:
        self._hook("on_record", span)

    def on_follows_from(self, span: SpanRef, follows: int) -> None:
        self._hook("on_follows_from", span)

    def on_event(self, event: pykregistry.Event) -> None:
        if not event.message.startswith(("fin", "hook")):
            self.events[event.message] = event.fields
            self.parents[event.message] = event.parent_id
        self._hook("on_event")

    def on_enter(self, span: SpanRef) -> None:
        self._hook("on_enter", span)

    def on_exit(self, span: SpanRef) -> None:
        self._hook("on_exit", span)

    def on_end(self, span: SpanRef) -> None:
        if not span.name.startswith(("fin", "hook", "bomb")):
            self.ended[span.name] = span.fields
        self._hook("on_end", span)

    def on_close(self, span: SpanRef) -> None:
        self._hook("on_close", span)


HOOKS = [
    "on_new_span",
    "on_record",
    "on_follows_from",
    "on_event",
    "on_enter",
    "on_exit",
    "on_end",
    "on_close",
]


def littering(world: World) -> LitteringLayer:
    layer = world.reg.layers[0]
    assert isinstance(layer, LitteringLayer)
    return layer


# --- the traced program's own exceptions ---


class UserError(Exception):
    """The program's exception; its ``__str__`` (which the span records)
    calls back and litters."""

    world: World

    def __str__(self) -> str:
        self.world.convert("exception str")
        return "user error"


class OddError(Exception):
    """An exception whose class has an odd ``__module__`` and whose
    ``__str__`` raises."""

    __module__ = None  # type: ignore[assignment]
    world: World

    def __str__(self) -> str:
        self.world.convert("odd str")
        raise RuntimeError("no str")


def raises_unchanged(exc: BaseException, body: Callable[[], object]) -> None:
    """`body()` raises `exc`: the very object comes out of it."""
    with pytest.raises(type(exc)) as info:
        body()
    assert info.value is exc


# === scenarios: the traced program ===


def scenario_values(world: World) -> dict[str, Any]:
    """Fields of every kind at creation, by record (both forms), on events,
    through the integer-ID API, a call site and ``@instrument``: each reads
    back exactly, or as its text, whatever the collector runs in between.
    Shape errors still raise, and create nothing."""
    reg = world.reg
    given, back, text = field_values(world)
    layer = littering(world)
    site = reg.callsite("values.site", fields=tuple(given))
    seen: list[dict[str, object]] = []

    @reg.instrument(ret=True)
    def echo(**kw: object) -> object:
        seen.append(kw)
        return kw["noisy"]

    for _ in range(12):
        with reg.span("values", **given) as s:
            assert_read_back(ref(s).fields, back, text)
            s.record(**given)
            for key, value in given.items():
                s.record(key, value)
            assert_read_back(ref(s).fields, back, text)
            reg.event("values.event", **given)
            assert_read_back(layer.events["values.event"], back, text)
            s.record(shared=world.shared)
            shared = ref(s).fields["shared"]  # a list of ints, or its repr
            assert isinstance(shared, (list, str)), shared
        sid = reg.new_span("values.ids", fields=given)
        reg.record(sid, **given)
        assert_read_back(get(reg, sid).fields, back, text)
        assert reg.try_close(sid) is True
        with site.span(**given) as c:
            assert_read_back(ref(c).fields, back, text)
        seen.clear()
        assert echo(**given) is given["noisy"]
        assert len(seen) == 1
        assert all(seen[0][k] is v for k, v in given.items())
        before = len(reg)
        with pytest.raises(TypeError):
            reg.span("s", level=Noisy(world, "level"))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            reg.get(Noisy(world, "id"))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            reg.enter(Raising(world, "id"))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            reg.span(Noisy(world, "name"))  # type: ignore[arg-type]
        assert len(reg) == before
    return {}


def scenario_nesting(world: World) -> dict[str, Any]:
    """Nested ``with`` blocks, ``entered()`` (re-entered), the integer-ID
    API, explicit and root parents, call sites, shortcuts: every parent,
    current span and reference count is the program's, and the program's
    exceptions come out unchanged, recorded on their spans."""
    reg = world.reg
    site = reg.callsite("nesting.site", fields=("i",))
    UserError.world = OddError.world = world
    ended = littering(world).ended
    for i in range(40):
        with reg.span("outer", i=i) as outer:
            oid = ident(outer)
            assert reg.current_span() == oid
            with reg.span("mid") as mid:
                assert ref(mid).parent_id == oid
                assert reg.ref_count(oid) == 3  # its handle, its entry, mid
                inner = reg.span("inner", level="debug")
                with inner.entered():
                    assert reg.current_span() == inner.id
                    assert ref(inner).parent_id == mid.id
                    with inner.entered():
                        assert reg.current_span() == inner.id
                        assert reg.ref_count(ident(inner)) == 2  # a re-entry holds none
                    assert reg.current_span() == inner.id
                assert reg.current_span() == mid.id
                assert reg.ref_count(ident(inner)) == 1
                inner.close()
                sid = reg.new_span("ids")
                assert get(reg, sid).parent_id == mid.id
                reg.enter(sid)
                assert reg.current_span() == sid
                reg.enter(sid)
                assert reg.ref_count(sid) == 2
                reg.exit(sid)
                reg.exit(sid)
                assert reg.current_span() == mid.id
                assert reg.try_close(sid) is True
                with site.span(i=i) as c:
                    assert ref(c).parent_id == mid.id
                with reg.span("explicit", parent=outer) as e:
                    assert ref(e).parent_id == oid
                    assert reg.current_span() == e.id
                with reg.span("root", parent=None) as r:
                    assert ref(r).parent_id is None
                # R6: re-entering outer leaves mid current.
                assert pykregistry.in_scope(outer, reg.current_span) == mid.id
                current = pykregistry.current(reg)
                assert current is not None
                assert current.id == mid.id
                reg.event("tick", i=i)
                mid.follows_from(outer)
                clone = outer.clone()
                assert reg.ref_count(oid) == 4  # and the clone
                clone.close()
            assert reg.ref_count(oid) == 2
            # The module-level shortcuts, on the default registry.
            with pykregistry.info_span("shortcut", i=i) as short:
                pykregistry.info("shortcut.tick", noisy=Noisy(world, "s"))
                shown = pykregistry.current()
                assert shown is not None
                assert shown.id == short.id
            assert len(pykregistry.default_registry()) == 0
            exc = UserError()
            raises_unchanged(exc, functools.partial(_raise_in_span, reg, "user", exc))
            assert own(ended["user"]) == {
                "error": True,
                "exception.type": f"{__name__}.UserError",
                "exception.message": "user error",
            }
            odd = OddError()
            raises_unchanged(odd, functools.partial(_raise_in_span, reg, "odd", odd))
            assert own(ended["odd"]) == {
                "error": True,
                "exception.type": "OddError",
                "exception.message": "",
            }
            assert reg.current_span() == oid
        assert reg.current_span() is None
        assert reg.get(oid) is None
    return {}


def _raise_in_span(reg: Registry, name: str, exc: BaseException) -> None:
    with reg.span(name):
        raise exc


def scenario_generators(world: World) -> dict[str, Any]:
    """Generators and async generators holding spans across ``yield``: run
    to the end, closed early, or left suspended in cycles for the collector
    to finalize in the middle of the program's enters and exits."""
    reg = world.reg

    def gen(n: int) -> Generator[int, None, None]:
        with reg.span("gen", n=n):
            for k in range(3):
                assert get(reg, reg.current_span()).name == "gen"
                yield n + k

    def abandon(n: int) -> None:
        g = gen(n)
        next(g)
        cycle: list[Any] = [g]
        cycle.append(cycle)

    async def agen(n: int) -> AsyncGenerator[int, None]:
        with reg.span("agen", n=n):
            for k in range(3):
                await asyncio.sleep(0)
                yield n + k

    async def consume(n: int) -> list[int]:
        out = [x async for x in agen(n)]
        early = agen(n)
        out.append(await early.__anext__())
        await early.aclose()
        return out

    def parent_is(sid: int, want: int | None) -> bool:
        got = get(reg, sid).parent_id
        if got == want:
            return True
        # A generator abandoned while entered here stays current until the
        # collector finalizes it: the program's spans may hang there.
        view = reg.get(got) if got is not None else None
        return view is not None and view.name == "gen"

    for i in range(25):
        with reg.span("outer", i=i) as outer:
            assert list(gen(i)) == [i, i + 1, i + 2]
            g = gen(i)
            assert next(g) == i
            g.close()
            abandon(i)
            with reg.span("after") as after:
                assert parent_is(ident(after), outer.id)
            assert asyncio.run(consume(i)) == [i, i + 1, i + 2, i]
        abandon(i)
        with reg.span("top") as top:
            assert parent_is(ident(top), None)
    gc.collect()
    assert reg.current_span() is None
    return {}


def scenario_asyncio(world: World) -> dict[str, Any]:
    """Tasks made inside a span (their spans are its children), ``gather``,
    a task cancelled inside a span, async ``@instrument``."""
    reg = world.reg
    rounds = 15

    @reg.instrument(ret=True)
    async def fetch(n: int, noisy: object) -> int:
        await asyncio.sleep(0)
        mine = reg.current_span()
        assert get(reg, mine).name.endswith("fetch")
        with reg.span("fetch.inner") as s:
            await asyncio.sleep(0)
            assert ref(s).parent_id == mine
        return n * 3

    async def child(parent: int, n: int) -> int:
        assert reg.current_span() == parent
        with reg.span("child", n=n) as c:
            assert ref(c).parent_id == parent
            await asyncio.sleep(0)
            assert reg.current_span() == c.id
            got: int = await fetch(n, Noisy(world, "arg"))
        return got

    async def stuck() -> None:
        with reg.span("stuck"):
            await asyncio.sleep(3600)

    async def main() -> list[int]:
        out: list[int] = []
        for i in range(rounds):
            with reg.span("request", i=i) as request:
                tasks = [asyncio.create_task(child(ident(request), n)) for n in range(3)]
                out.extend(await asyncio.gather(*tasks))
                hung = asyncio.create_task(stuck())
                await asyncio.sleep(0)
                hung.cancel()
                try:
                    await hung
                except asyncio.CancelledError:
                    pass
                else:
                    raise AssertionError("not cancelled")
                assert reg.current_span() == request.id
            assert reg.current_span() is None
        return out

    assert asyncio.run(main()) == [n * 3 for _ in range(rounds) for n in range(3)]
    return {}


def scenario_threads(world: World) -> dict[str, Any]:
    """Three threads start together (``threading.Barrier``) and nest spans
    while finalizers run on each of them (and let the GIL go)."""
    reg = world.reg
    start = threading.Barrier(3)
    failures: list[str] = []
    done: list[int] = []

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(40):
                with reg.span("thread", t=t, i=i) as outer:
                    with reg.span("inner") as inner:
                        assert ref(inner).parent_id == outer.id
                        assert reg.current_span() == inner.id
                        world.anchor.record(**{f"t{t}": i})
                        reg.event("thread.tick", t=t)
                    assert reg.ref_count(ident(outer)) == 2
                assert reg.current_span() is None
            done.append(t)
        except BaseException:
            failures.append(traceback.format_exc())

    threads = [threading.Thread(target=work, args=(t,)) for t in (1, 2)]
    for th in threads:
        th.start()
    work(0)
    for th in threads:
        th.join()
    assert failures == [], failures
    assert sorted(done) == [0, 1, 2]
    return {}


def scenario_instrument(world: World) -> dict[str, Any]:
    """``@instrument`` on functions, methods, generators, coroutines and
    async generators, with arguments and return values recorded (hostile
    ones too), ``err=False``: every function runs once per call, returns
    what it returns, and its exceptions come out unchanged."""
    reg = world.reg
    UserError.world = world
    ran: Counter[str] = Counter()

    @reg.instrument(ret=True)
    def add(a: int, b: object = None, *rest: object, **kw: object) -> int:
        ran["add"] += 1
        assert get(reg, reg.current_span()).name.endswith("add")
        return a + 1

    @reg.instrument(ret=True)
    def noisy(a: object) -> object:
        ran["noisy"] += 1
        return a

    @reg.instrument
    def fails(exc: BaseException) -> None:
        ran["fails"] += 1
        raise exc

    @reg.instrument(err=False, ret=True)
    def quiet(exc: BaseException | None) -> int:
        ran["quiet"] += 1
        if exc is not None:
            raise exc
        return 5

    @reg.instrument(ret=True)
    def counted(n: int) -> Generator[int, None, int]:
        ran["gen"] += 1
        yield from range(n)
        return n

    @reg.instrument(ret=True)
    async def coro(n: int, noisy: object) -> int:
        ran["coro"] += 1
        await asyncio.sleep(0)
        return n

    @reg.instrument
    async def agen(n: int) -> AsyncGenerator[int, None]:
        ran["agen"] += 1
        for k in range(n):
            await asyncio.sleep(0)
            yield k

    class Service:
        @reg.instrument(ret=True)
        def method(self, x: int) -> int:
            ran["method"] += 1
            return x

    async def run_async(n: int) -> tuple[int, list[int]]:
        return await coro(n, Noisy(world, "c")), [k async for k in agen(n)]

    rounds = 20
    for i in range(rounds):
        assert add(i, Noisy(world, "b"), Raising(world, "r"), HUGE, k=SURROGATES) == i + 1
        value = Raising(world, "ret")
        assert noisy(value) is value
        exc = UserError()
        raises_unchanged(exc, functools.partial(fails, exc))
        raises_unchanged(exc, functools.partial(quiet, exc))
        assert quiet(None) == 5
        assert list(counted(3)) == [0, 1, 2]
        assert asyncio.run(run_async(3)) == (3, [0, 1, 2])
        assert Service().method(i) == i
    kinds = ["add", "noisy", "fails", "quiet", "gen", "coro", "agen", "method"]
    assert {k: ran[k] for k in kinds} == {**dict.fromkeys(kinds, rounds), "quiet": 2 * rounds}
    return {}


def scenario_logging(world: World) -> dict[str, Any]:
    """The logging integration: ``SpanHandler`` turns records (hostile
    arguments, extras and exceptions included) into events on the current
    span, and ``SpanFilter`` puts the current span on each record."""
    reg = world.reg
    layer = littering(world)
    OddError.world = world
    logger = logging.getLogger("gc_pressure")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(SpanHandler(reg))
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    keep = Keep()
    keep.addFilter(SpanFilter(reg))
    logger.addHandler(keep)
    for i in range(20):
        with reg.span("request", i=i) as request, reg.span("db") as db:
            logger.info(
                "got %s", Noisy(world, "arg"), extra={"noisy": Noisy(world, "x"), "n": HUGE}
            )
            fields = own(layer.events["got arg"])
            assert (fields["noisy"], fields["n"], fields["log.level"]) == (
                "Noisy('x')",
                HUGE,
                "INFO",
            )
            assert layer.parents["got arg"] == db.id
            try:
                raise OddError()
            except OddError:
                logger.exception("failed")
            fields = own(layer.events["failed"])
            assert fields["exception.type"] == "OddError"
            assert fields["exception.message"] == ""
            assert layer.parents["failed"] == db.id
            record = kept[-1]
            assert record.span_id == db.id  # type: ignore[attr-defined]
            assert record.span_path == "request>db"  # type: ignore[attr-defined]
            assert request.id is not None
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    return {}


def scenario_layers(world: World) -> dict[str, Any]:
    """``TreeRecorder`` and ``LiveSpans`` added while the collector runs,
    beside the littering layer, with their readers called under pressure:
    the program's tree is recorded whole, and nothing stays open."""
    reg = world.reg
    rounds = 15
    tree = TreeRecorder()
    live = LiveSpans()
    reg.add_layer(tree)
    reg.add_layer(live)
    for i in range(rounds):
        with reg.span("request", i=i) as request:
            with reg.span("db", i=i):
                reg.event("query", i=i)
            request.record(status=200, huge=HUGE)
            request.follows_from(world.anchor)
        assert isinstance(live.spans, list)
        if i % 5 == 0:
            leak_report(reg)
    mine = [s for s in tree.spans if s.name in ("request", "db")]
    assert len(mine) == 2 * rounds
    by_seq = {s.seq: s for s in tree.spans}
    for s in mine:
        if s.name == "db":
            assert s.parent_seq is not None
            assert by_seq[s.parent_seq].name == "request"
            assert by_seq[s.parent_seq].fields["i"] == s.fields["i"]
        else:
            assert own(s.fields) == {"i": s.fields["i"], "status": 200, "huge": HUGE}
        assert s.closed_seq is not None
    assert len([e for e in tree.events if e.message == "query"]) == rounds
    # The program's part of the tree: finalizers and hooks made many more
    # spans, and every line drawn under this pressure makes more.
    drawn = render_tree(mine, [])
    names = Counter(line.lstrip("│├└─ ").split("  ")[0] for line in drawn.splitlines())
    assert names == {"request": rounds, "db": rounds}
    assert drawn.count(f"huge={hex(HUGE)}") == rounds
    world.disarm()
    assert live.spans == []
    assert tree.open_spans == []
    return {}


def scenario_jsonlines(world: World, path: str) -> dict[str, Any]:
    """JSON lines written while the collector runs: every line parses, the
    trees rebuild by ``span_id`` and ``parent_span_id``, and the program's
    own tree is there whole."""
    reg = world.reg
    rounds = 30
    sink = JsonLines(path)
    reg.add_layer(sink)
    ids: dict[int, int] = {}
    for i in range(rounds):
        with reg.span("request", i=i, huge=HUGE, file=SURROGATES) as request:
            ids[i] = ref(request).span_id
            with reg.span("db", i=i):
                reg.event("hit", i=i)
            with reg.span("cache", i=i):
                pass
    world.disarm()
    sink.close()
    assert sink.write_errors == 0
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    span_lines = [line for line in lines if line["type"] == "span"]
    spans = {line["span_id"]: line for line in span_lines}
    assert len(spans) == len(span_lines)  # each span written once
    for line in spans.values():
        parent = line["parent_span_id"]
        if parent is not None:
            assert parent in spans, line
            assert spans[parent]["trace_id"] == line["trace_id"], line
    for line in spans.values():  # no cycles: every chain reaches a root
        seen = set()
        while line["parent_span_id"] is not None:
            assert line["span_id"] not in seen
            seen.add(line["span_id"])
            line = spans[line["parent_span_id"]]
    requests = {line["fields"]["i"]: line for line in span_lines if line["name"] == "request"}
    assert sorted(requests) == list(range(rounds))
    for i, line in requests.items():
        assert int(line["span_id"], 16) == ids[i]
        assert int(line["fields"]["huge"], 0) == HUGE
        assert line["fields"]["file"] == SURROGATES
        assert line["parent_span_id"] is None
        kids = sorted(
            k["name"]
            for k in span_lines
            if k["parent_span_id"] == line["span_id"] and not k["name"].startswith("fin")
        )
        assert kids == ["cache", "db"], (i, kids)
    db = {line["span_id"]: line for line in span_lines if line["name"] == "db"}
    hits = [line for line in lines if line["type"] == "event" and line["message"] == "hit"]
    assert len(hits) == rounds
    for hit in hits:
        assert db[hit["span_id"]]["fields"]["i"] == hit["fields"]["i"]
    return {"lines": len(lines), "spans": len(spans)}


def scenario_programs(examples: int) -> dict[str, Any]:
    """Random programs of the integer-ID API (``pykregistry.testing``'s
    strategy, in three contexts), each step checked against the reference
    model (counts, parents, current spans, ``len``), in a strict registry,
    while finalizers run a random choice of actions. Bombs hold no handle
    here, and finalizers close what they open, so the counts are exact at
    every step."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from pykregistry.testing import run_program, span_programs

    runs: Counter[str] = Counter()

    # A failing example is reported as drawn (programs are short):
    # shrinking it under this pressure would outlast the hang timeout.
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        program=span_programs(contexts=3, max_size=30),
        actions=st.lists(st.sampled_from(sorted(ACTIONS)), min_size=1, max_size=5),
        threshold=st.integers(1, 3),
    )
    def random_programs(program: list[Any], actions: list[str], threshold: int) -> None:
        layer = LitteringLayer()
        reg = Registry(layers=[layer], strict=True)
        world = layer.world = World(reg, handles=False, actions=actions)
        with Pressure(world, threshold):
            run_program(reg, program, contexts=3)
        world.disarm()
        assert_no_leaks(reg)
        assert world.errors == [], "\n".join(world.errors[:5])
        assert reg.layer_errors == 0
        runs.update(world.runs)

    random_programs()
    return {"runs": runs}


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "values": scenario_values,
    "nesting": scenario_nesting,
    "generators": scenario_generators,
    "asyncio": scenario_asyncio,
    "threads": scenario_threads,
    "instrument": scenario_instrument,
    "logging": scenario_logging,
    "layers": scenario_layers,
    "jsonlines": scenario_jsonlines,
}


class Pressure:
    """A collection at (nearly) every tracked allocation, and bombs to
    collect."""

    def __init__(self, world: World, threshold: int = 1) -> None:
        self.world = world
        self.threshold = threshold

    def __enter__(self) -> World:
        gc.collect()
        gc.set_threshold(self.threshold)
        self.world.arm()
        return self.world

    def __exit__(self, *exc: object) -> None:
        gc.set_threshold(700, 10, 10)


def child(scenario: str, *args: str) -> None:
    """Runs one scenario under pressure, checks that the program noticed
    nothing, and prints the JSON summary."""
    faulthandler.enable()
    faulthandler.dump_traceback_later(float(os.environ.get(HANG_AFTER_VAR, HANG_AFTER)), exit=True)
    # What reaches sys.unraisablehook (a layer that raised, an exception in
    # a finalizer pykregistry runs), and every warning.
    unraisable: list[str] = []
    sys.unraisablehook = lambda u: unraisable.append(
        f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}"
    )
    shown: list[str] = []
    warnings.simplefilter("always")
    warnings.filterwarnings("error", category=SpanUsageWarning)
    warnings.showwarning = lambda message, *rest, **kw: shown.append(str(message))

    if scenario == "programs":
        result = scenario_programs(int(args[0]))
    else:
        id_enter = "--id-enter" in args
        args = tuple(a for a in args if a != "--id-enter")
        layer = LitteringLayer()
        reg = Registry(layers=[layer])
        world = layer.world = World(reg, id_enter=id_enter)
        with Pressure(world):
            result = SCENARIOS[scenario](world, *args)
        if not world.anchor.closed:
            world.disarm()
        assert_no_leaks(reg)
        assert world.errors == [], "\n".join(world.errors[:5])
        assert reg.layer_errors == 0
        result = {"live": len(reg), "runs": world.runs, **result}
    assert unraisable == [], unraisable[:5]
    assert shown == [], shown[:5]
    print(json.dumps(result))


# === the tests ===


def run_child(*args: str, hang_after: float = HANG_AFTER) -> dict[str, Any]:
    """Runs this file as a script with `args`; returns the summary it
    printed. A crash, a hang (nothing printed after `hang_after` seconds) or
    a failed assertion fails with the child's output (faulthandler's stacks
    for a crash or a hang)."""
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", __file__, *args],
        capture_output=True,
        text=True,
        timeout=hang_after + 60,
        check=False,
        env={**os.environ, "PYTHONFAULTHANDLER": "1", HANG_AFTER_VAR: str(hang_after)},
    )
    out = f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-8000:]}"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}"
    assert proc.stderr == "", out
    summary: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary


def assert_pressure(summary: dict[str, Any], *, conversions: bool = False) -> None:
    """Finalizers ran every action, in the program and inside hooks; every
    hook ran; with `conversions`, field values' dunders ran too."""
    runs = summary["runs"]
    assert summary.get("live", 0) == 0
    assert [a for a in ACTIONS if not runs.get(a)] == [], runs
    assert [h for h in HOOKS if not runs.get("hook " + h)] == [], runs
    assert runs.get("finalizer in program", 0) > 0, runs
    assert runs.get("finalizer in hook", 0) > 0, runs
    if conversions:
        assert any(k.startswith("convert ") for k in runs), runs


@pytest.mark.parametrize(
    ("scenario", "conversions"),
    [
        ("values", True),
        ("nesting", True),
        ("generators", False),
        ("asyncio", True),
        ("threads", False),
        ("instrument", True),
        ("logging", True),
        ("layers", False),
    ],
)
def test_r15_public_api_under_gc_pressure(scenario: str, conversions: bool) -> None:
    """What runs: the scenario's docstring; the child checks the program."""
    assert_pressure(run_child(scenario), conversions=conversions)


def test_r15_json_lines_under_gc_pressure(tmp_path: Path) -> None:
    summary = run_child("jsonlines", str(tmp_path / "trace.jsonl"))
    assert_pressure(summary)
    # 30 requests of 3 spans and 1 event, and what finalizers and hooks made.
    assert summary["spans"] > 90
    assert summary["lines"] > 120


def test_r9_random_programs_under_gc_pressure() -> None:
    """The hypothesis variant (``scenario_programs``), with as many examples
    as the hypothesis profile asks for (about 0.1 s each here)."""
    from hypothesis import settings

    examples = settings().max_examples
    runs = run_child("programs", str(examples), hang_after=max(HANG_AFTER, examples))["runs"]
    assert runs.get("finalizer in program", 0) > 0, runs
    assert sum(runs.get(a, 0) for a in ACTIONS) > 0, runs


# === found by the harness: entering by ID in a finalizer ===
#
# While a collection runs, pykregistry leaves the context variable alone
# (`set_top` in rust/python/src/context.rs: CPython's ContextVar.set is not
# safe against a finalizer that sets a variable of the same context), and
# keeps the view a finalizer makes in a per-thread overlay instead: what
# `enter(id)` makes in a finalizer, `exit(id)` finds there, and a finalizer's
# own re-entry is what it exits, not the program's entry. These failed
# before the overlay.


class Finalizer:
    """Garbage in a cycle whose finalizer runs `action`."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.cycle = self

    def __del__(self) -> None:
        self.action()


def in_fresh_context(run: Callable[[], Any]) -> Any:
    """`run()` in a context of its own, whose end releases the entries it
    left (R11): a failure leaks nothing into other tests."""
    return contextvars.Context().run(run)


def test_r9_enter_and_exit_by_id_in_a_finalizer_leave_nothing_live() -> None:
    reg = Registry()
    closed: list[bool] = []

    def action() -> None:
        sid = reg.new_span("in finalizer", parent=None)
        reg.enter(sid)
        reg.exit(sid)
        closed.append(reg.try_close(sid))

    def run() -> tuple[int, list[bool]]:
        Finalizer(action)
        gc.collect()
        return len(reg), closed

    assert in_fresh_context(run) == (0, [True])


def test_r5_enter_and_exit_by_id_in_a_finalizer_leave_the_programs_entry() -> None:
    reg = Registry()

    def action() -> None:
        current = reg.current_span()
        assert current is not None
        reg.enter(current)  # a re-entry of the program's span
        reg.exit(current)  # exits that re-entry, not the program's entry

    def run() -> tuple[bool, int]:
        outer = reg.new_span("outer")
        reg.enter(outer)
        Finalizer(action)
        gc.collect()
        seen = (reg.current_span() == outer, reg.ref_count(outer))
        reg.exit(outer)
        reg.try_close(outer)
        return seen

    assert in_fresh_context(run) == (True, 2)


def test_r5_finalizers_entering_by_id_under_gc_pressure() -> None:
    """The harness, with finalizers also entering and exiting by ID their
    own span and the current one."""
    assert_pressure(run_child("nesting", "--id-enter"))


if __name__ == "__main__":
    child(*sys.argv[1:])
