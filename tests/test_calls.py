"""Argument binding of the methods that take ``**fields``.

``Registry.span``, ``Registry.event``, ``Registry.record``, ``Span.record``
and ``Callsite.span`` read their arguments from the caller's vectorcall
arrays by hand (``rust/python/src/fastcall.rs``). Property: for any call —
positional arguments, keywords named like parameters or not, names written
in source (interned) or built at run time — they bind exactly as Python
binds the documented signature: the same calls raise ``TypeError``, and a
call that binds records the same level, target, parent and fields.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pykregistry import Level, Registry, RegistryError

CALLS = settings(max_examples=3 * settings.default.max_examples, deadline=None)

_MISSING: Any = object()


def span_signature(
    name: object,
    /,
    *,
    target: object = None,
    level: object = None,
    parent: object = _MISSING,
    **fields: object,
) -> tuple[object, object, object, object, dict[str, object]]:
    """What Python makes of a ``Registry.span``/``event`` call."""
    return name, target, level, parent, fields


def fresh(text: str) -> str:
    """The same text as a new, non-interned string."""
    return "".join(list(text)) if text else ""


names = st.sampled_from(["level", "target", "parent", "name", "k", "user.id", "return", "ünï"])
values = st.one_of(
    st.none(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=5),
    st.sampled_from(["trace", "DEBUG", "warn", "loud", Level.ERROR, 3, 9, b"t", 1.5]),
)


levels = st.sampled_from(["trace", "DEBUG", "Warn", "info", "error", "loud", Level.ERROR, 3, 9])


@st.composite
def calls(draw: st.DrawFn) -> tuple[list[object], dict[str, object]]:
    # Half the calls have the one positional argument, a str, of a good call.
    positional = draw(
        st.one_of(
            st.text(max_size=3).map(lambda name: [name]),
            st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=3),
        )
    )
    keywords = {}
    for key in draw(st.lists(names, max_size=5, unique=True)):
        value = draw(
            st.one_of(levels, values)
            if key == "level"
            else st.one_of(st.none(), st.integers(), st.just(b"t"), st.text(max_size=3))
            if key == "target"
            else values
        )
        keywords[fresh(key) if draw(st.booleans()) else key] = value
    return positional, keywords


def stored(value: object) -> object:
    """A field value as it reads back: None, bool, int, float and str as
    they are (int subclasses as ints), anything else as its repr."""
    if value is None or type(value) in (bool, float, str):
        return value
    if isinstance(value, int):
        return int(value)
    return repr(value)


def expected_level(level: object) -> Level | type[Exception]:
    if level is None:
        return Level.INFO
    if isinstance(level, Level):
        return level
    if isinstance(level, str):
        upper = level.upper()
        if level.isascii() and upper in Level.__members__:
            return Level[upper]
        return ValueError
    if isinstance(level, int) and not isinstance(level, bool):
        return Level(level) if 1 <= level <= 5 else ValueError
    return TypeError


@CALLS
@given(call=calls(), method=st.sampled_from(["span", "event"]), filtered=st.booleans())
def test_span_and_event_bind_as_their_signature(
    call: tuple[list[object], dict[str, object]], method: str, filtered: bool
) -> None:
    # With `filtered`, spans and events more verbose than WARN are turned
    # away (spans by the quick refusal before pyo3's trampoline, which must
    # agree with the full call).
    positional, keywords = call
    reg = Registry(level="warn") if filtered else Registry()
    events: list[Any] = []
    reg.add_layer(type("Events", (), {"on_event": lambda self, e: events.append(e)})())
    try:
        name, target, level, parent, fields = span_signature(*positional, **keywords)
    except TypeError:
        with pytest.raises(TypeError):
            getattr(reg, method)(*positional, **keywords)
        assert len(reg) == 0
        assert events == []
        return
    want_level = expected_level(level)
    refused = filtered and isinstance(want_level, Level) and want_level > Level.WARN
    if not isinstance(name, str):
        # The name is checked first.
        with pytest.raises(TypeError):
            getattr(reg, method)(*positional, **keywords)
        assert len(reg) == 0
        return
    problems: list[type[Exception]] = []
    if target is not None and not isinstance(target, str):
        problems.append(TypeError)
    if isinstance(want_level, type):
        problems.append(want_level)
    if parent is not _MISSING and parent is not None and not (refused and method == "span"):
        # Only CURRENT, None, IDs and spans are parents: these values are
        # ints that name no live span, or not parents at all. A span turned
        # away by its level never reads its parent; an event always does.
        problems.append(Exception)
    if problems:
        # Keywords are checked in the caller's order: any of them may be
        # the one reported.
        with pytest.raises(tuple(problems)):
            getattr(reg, method)(*positional, **keywords)
        assert len(reg) == 0
        assert events == []
        return
    assert isinstance(want_level, Level)
    want_fields = {k: stored(v) for k, v in fields.items()}
    if refused:
        if method == "span":
            with reg.span(*positional, **keywords) as s:  # type: ignore[arg-type]
                assert s.disabled
        else:
            reg.event(*positional, **keywords)  # type: ignore[arg-type]
            assert events == []
    elif method == "span":
        with reg.span(*positional, **keywords) as s:  # type: ignore[arg-type]
            view = s.ref
            assert view is not None
            assert (view.name, view.level, view.parent_id) == (name, want_level, None)
            assert view.target == (target if target is not None else __name__)
            assert view.fields == want_fields
    else:
        reg.event(*positional, **keywords)  # type: ignore[arg-type]
        (event,) = events
        assert (event.message, event.level) == (name, want_level)
        assert event.target == (target if target is not None else __name__)
        assert event.fields == want_fields
    assert len(reg) == 0


@CALLS
@given(call=calls())
def test_records_and_callsites_bind_as_their_signatures(
    call: tuple[list[object], dict[str, object]],
) -> None:
    positional, keywords = call
    reg = Registry()
    with reg.span("s") as s:
        view = s.ref
        assert view is not None
        # Span.record(name, value, /, **fields) or Span.record(**fields).
        if len(positional) in (0, 2) and (not positional or isinstance(positional[0], str)):
            s.record(*positional, **keywords)  # type: ignore[arg-type]
            want: dict[str, object] = {}
            if positional:
                want[str(positional[0])] = stored(positional[1])
            want.update({k: stored(v) for k, v in keywords.items()})
            assert view.fields == want
        else:
            with pytest.raises(TypeError):
                s.record(*positional, **keywords)  # type: ignore[arg-type]
            assert view.fields == {}
        # Registry.record(id, /, **fields): exactly one positional, the ID.
        if positional:
            with pytest.raises((TypeError, ValueError, RegistryError)):
                reg.record(*positional, **keywords)  # type: ignore[arg-type]
        reg.record(s.id, **keywords)  # type: ignore[arg-type]
        for key, value in keywords.items():
            assert view.fields[key] == stored(value)
    # Callsite.span(**fields): the declared fields (declared here with equal,
    # not identical, names) and `parent`.
    declared = {k: v for k, v in keywords.items() if k != "parent"}
    site = reg.callsite("c", fields=tuple(fresh(k) for k in declared))
    if positional:
        with pytest.raises(TypeError):
            site.span(*positional, **keywords)
    elif keywords.get("parent") is None:
        with site.span(**keywords) as c:
            assert c.ref is not None
            assert c.ref.fields == {k: stored(v) for k, v in declared.items()}
            assert c.ref.parent_id is None
        with pytest.raises(TypeError, match="not one of them"):
            site.span(**keywords, undeclared=1)
    assert len(reg) == 0


def test_filtered_out_calls_are_checked_as_the_full_call_checks_them() -> None:
    # The quick refusal (before pyo3's trampoline) must answer exactly as
    # the full call: argument errors raised, the disabled span otherwise.
    reg = Registry(level="warn")
    site = reg.callsite("never", level="trace", fields=("x",))
    assert not site.enabled
    bad: list[tuple[type[Exception], Any]] = [
        (TypeError, lambda: reg.span(1, level="trace")),  # type: ignore[arg-type]
        (TypeError, lambda: reg.span("x", "y", level="trace")),  # type: ignore[call-arg]
        (TypeError, lambda: reg.span("x", level="trace", target=b"t")),  # type: ignore[arg-type]
        (TypeError, lambda: reg.span("x", level="trace", **{fresh("target"): 3})),
        (ValueError, lambda: reg.span("x", level="loud")),
        (TypeError, lambda: reg.span("x", level=1.5)),  # type: ignore[arg-type]
        (TypeError, lambda: site.span(1)),  # type: ignore[call-arg]
    ]
    for error, call in bad:
        with pytest.raises(error):
            call()
    disabled = [
        lambda: reg.span("x", level="trace"),
        lambda: reg.span("x", level=Level.DEBUG, target=None, parent=12345, k=Thing()),
        lambda: reg.span("x", level="TRACE"),  # not by identity: the full call
        lambda: reg.span("x", **{fresh("level"): "info"}),
        lambda: reg.span(fresh("x"), level=5),
        lambda: site.span(x=1, y=2),  # a call site never enabled reads no keyword
    ]
    for call in disabled:
        span = call()
        assert span.disabled
    with reg.span("x", level="warn") as kept:
        assert not kept.disabled
    assert len(reg) == 0


class Thing:
    def __repr__(self) -> str:
        raise AssertionError("a filtered-out span reads no field")


def test_rejected_calls_release_everything_they_made() -> None:
    # The hand-bound methods run inside pyo3's trampoline, so references
    # dropped inside them (a failed int conversion's exception, a raised
    # error's message) are released, not leaked. Each leaked exception
    # would keep a reference on its class.
    import contextlib
    import gc
    import sys

    from pykregistry import InvalidSpanIdError

    reg = Registry()
    span = reg.span("s")
    calls = [
        lambda: span.record("n", 2**64),  # i64 conversion fails, u64 works
        lambda: span.record("n", 2**80),  # both fail: digits
        lambda: reg.record(-1),  # not an ID
        lambda: reg.span(1),  # type: ignore[arg-type]
        lambda: reg.event("e", level="loud"),
        lambda: reg.callsite("c").span(x=1),
    ]
    classes = [OverflowError, InvalidSpanIdError, TypeError, ValueError]
    for call in calls:
        gc.collect()
        before = [sys.getrefcount(c) for c in classes]
        for _ in range(1000):
            with contextlib.suppress(TypeError, ValueError):
                call()
        gc.collect()
        grown = [sys.getrefcount(c) - b for c, b in zip(classes, before, strict=True)]
        assert max(grown) < 10, (call, grown)
    span.close()
    assert len(reg) == 0
