"""Call sites: `pykregistry.Callsite(...)` and `reg.callsite(...)` fix a
span's metadata, its field names and the filter's decision (`Interest`) once.

README "Call sites, timings, exceptions"; issue 4 item 6.
"""

from __future__ import annotations

from typing import Any

import pytest

import pykregistry
from pykregistry import CURRENT, Callsite, Level, Span


class NewSpans:
    """A layer recording the spans it sees created."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []

    def on_new_span(self, span: pykregistry.SpanRef) -> None:
        self.spans.append(
            {
                "id": span.id,
                "name": span.name,
                "target": span.target,
                "level": span.level,
                "fields": span.fields,
                "parent_id": span.parent_id,
            }
        )


# --- construction and metadata ----------------------------------------------


def test_callsite_on_the_default_registry() -> None:
    default = pykregistry.default_registry()
    before = len(default)
    cs = Callsite("db.query", target="app.db", level="debug", fields=("sql", "rows"))
    assert cs.registry is default
    assert cs.name == "db.query"
    assert cs.target == "app.db"
    assert cs.level is Level.DEBUG
    assert cs.fields_tuple == ("sql", "rows")
    assert cs.enabled
    with cs.span(sql="select 1", rows=3) as span:
        view = default.get(span.id)
        assert view is not None
        assert (view.name, view.target, view.level) == ("db.query", "app.db", Level.DEBUG)
        assert view.fields == {"sql": "select 1", "rows": 3}
        assert default.current_span() == span.id
    assert span.closed
    assert default.get(span.id) is None
    assert len(default) == before


def test_callsite_follows_the_swapped_default_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The native constructor asks ``pykregistry._default`` for the default
    registry at each call, as the shortcuts do: one place holds it."""
    swapped = pykregistry.Registry()
    monkeypatch.setattr(pykregistry._default, "_DEFAULT", swapped)
    assert pykregistry.default_registry() is swapped
    cs = Callsite("db.query")
    assert cs.registry is swapped
    with cs.span() as span:
        assert swapped.current_span() == span.id
    assert len(swapped) == 0


def test_callsite_with_registry_keyword(make: Any) -> None:
    reg = make()
    cs = Callsite("x", registry=reg)
    assert cs.registry is reg
    with cs.span() as span:
        assert reg.get(span.id).name == "x"


def test_reg_callsite_makes_spans_in_that_registry(make: Any) -> None:
    layer = NewSpans()
    reg = make(layers=[layer])
    cs = reg.callsite("job", target="app.jobs", level=Level.WARN, fields=("kind",))
    assert isinstance(cs, Callsite)
    assert cs.registry is reg
    with cs.span(kind="email") as span:
        assert len(reg) == 1
    assert layer.spans == [
        {
            "id": span.id,
            "name": "job",
            "target": "app.jobs",
            "level": Level.WARN,
            "fields": {"kind": "email"},
            "parent_id": None,
        }
    ]


def test_callsite_defaults_target_empty_level_info_no_fields(make: Any) -> None:
    reg = make()
    cs = reg.callsite("plain")
    assert cs.target == ""
    assert cs.level is Level.INFO
    assert cs.fields_tuple == ()
    with cs.span() as span:
        assert span.ref.target == ""
        assert span.ref.level is Level.INFO
        assert span.ref.fields == {}


def test_callsite_accepts_level_in_any_spelling(make: Any) -> None:
    reg = make()
    for level in (Level.TRACE, "trace", "TRACE", int(Level.TRACE)):
        assert reg.callsite("x", level=level).level is Level.TRACE
    with pytest.raises(ValueError, match="loud"):
        reg.callsite("x", level="loud")


def test_callsite_fields_from_any_iterable_of_str(make: Any) -> None:
    reg = make()
    assert reg.callsite("x", fields=["a", "b"]).fields_tuple == ("a", "b")
    assert reg.callsite("x", fields=iter(("c",))).fields_tuple == ("c",)


def test_callsite_span_is_created_not_entered(make: Any) -> None:
    reg = make()
    cs = reg.callsite("x", fields=("a",))
    span = cs.span(a=1)
    try:
        assert isinstance(span, Span)
        assert not span.closed
        assert not span.disabled
        assert reg.current_span() is None
        assert reg.ref_count(span.id) == 1
        with span.entered():
            assert reg.current_span() == span.id
    finally:
        span.close()


def test_each_call_makes_a_new_span(make: Any) -> None:
    reg = make()
    cs = reg.callsite("x")
    with cs.span() as a, cs.span() as b:
        assert a.id != b.id
        assert b.ref.parent_id == a.id


def test_some_declared_fields_may_be_omitted(make: Any) -> None:
    reg = make()
    cs = reg.callsite("x", fields=("a", "b"))
    with cs.span(b=2) as span:
        assert span.ref.fields == {"b": 2}


def test_non_primitive_field_values_are_stored_as_repr(make: Any) -> None:
    reg = make()
    cs = reg.callsite("x", fields=("obj", "arr"))
    with cs.span(obj={"k": 1}, arr=[1, 2]) as span:
        assert span.ref.fields == {"obj": "{'k': 1}", "arr": [1, 2]}


# --- undeclared fields, bad field declarations ------------------------------


def test_undeclared_field_raises_type_error_and_creates_nothing(make: Any) -> None:
    layer = NewSpans()
    reg = make(layers=[layer])
    cs = reg.callsite("db.query", fields=("sql",))
    with pytest.raises(TypeError, match="rows"):
        cs.span(sql="q", rows=1)
    assert len(reg) == 0
    assert layer.spans == []


def test_no_fields_declared_rejects_any_field(make: Any) -> None:
    reg = make()
    cs = reg.callsite("x")
    with pytest.raises(TypeError, match="a"):
        cs.span(a=1)
    assert len(reg) == 0


def test_fields_given_as_a_single_str_is_a_type_error(make: Any) -> None:
    reg = make()
    with pytest.raises(TypeError, match="sequence"):
        reg.callsite("x", fields="sql")
    with pytest.raises(TypeError):
        Callsite("x", fields="sql", registry=reg)


def test_field_names_must_be_str(make: Any) -> None:
    reg = make()
    with pytest.raises(TypeError):
        reg.callsite("x", fields=("ok", 1))
    with pytest.raises(TypeError):
        reg.callsite("x", fields=42)


# --- parent= ------------------------------------------------------------------


def test_parent_defaults_to_the_current_span(make: Any) -> None:
    reg = make()
    cs = reg.callsite("child")
    with reg.span("outer") as outer, cs.span() as child:
        assert child.ref.parent_id == outer.id


def test_parent_current(make: Any) -> None:
    reg = make()
    cs = reg.callsite("child")
    with reg.span("outer") as outer, cs.span(parent=CURRENT) as child:
        assert child.ref.parent_id == outer.id


def test_parent_none_makes_a_root(make: Any) -> None:
    reg = make()
    cs = reg.callsite("child")
    with reg.span("outer"), cs.span(parent=None) as child:
        assert child.ref.parent_id is None


def test_parent_explicit_by_id_span_or_ref(make: Any) -> None:
    reg = make()
    cs = reg.callsite("child", fields=("n",))
    with reg.span("a") as a, reg.span("b", parent=None):
        for parent in (a.id, a, a.ref):
            with cs.span(parent=parent, n=1) as child:
                assert child.ref.parent_id == a.id
                assert child.ref.fields == {"n": 1}


def test_explicit_parent_not_live_raises_and_creates_nothing(make: Any) -> None:
    reg = make()
    cs = reg.callsite("child")
    span = reg.span("gone")
    gone = span.id
    span.close()
    with pytest.raises(pykregistry.SpanNotFoundError):
        cs.span(parent=gone)
    assert len(reg) == 0


def test_parent_of_the_wrong_type_is_a_type_error(make: Any) -> None:
    reg = make()
    cs = reg.callsite("child")
    with pytest.raises(TypeError):
        cs.span(parent="outer")
    assert len(reg) == 0


# --- Interest: Always, Never, Sometimes ----------------------------------------


def test_interest_always_without_a_filter(make: Any) -> None:
    reg = make()
    cs = reg.callsite("x", level="trace")
    assert cs.enabled
    with cs.span() as span:
        assert not span.disabled


def test_interest_always_when_the_filter_enables_the_callsite(make: Any) -> None:
    reg = make(filter="warn,app.db=debug")
    cs = reg.callsite("q", target="app.db.pool", level="debug")
    assert cs.enabled
    with cs.span() as span:
        assert not span.disabled


def test_interest_never_returns_the_disabled_span(make: Any) -> None:
    layer = NewSpans()
    reg = make(level="info", layers=[layer])
    cs = reg.callsite("q", target="app", level="debug", fields=("sql",))
    assert not cs.enabled
    span = cs.span(sql="x")
    assert span.disabled
    assert span.id is None
    assert span is reg.span("other", level="trace")  # the one disabled span
    with reg.span("outer", target="app"), cs.span(sql="y") as inner:
        assert inner.disabled
    assert [s["name"] for s in layer.spans] == ["outer"]


def test_interest_never_for_an_unmatched_target(make: Any) -> None:
    reg = make(filter="app=trace")
    cs = reg.callsite("x", target="lib", level="error")
    assert not cs.enabled
    assert cs.span().disabled


def test_interest_never_when_level_off(make: Any) -> None:
    reg = make(level="off")
    assert not reg.callsite("x", level="error").enabled


def test_interest_sometimes_decides_per_call_by_span_directives(make: Any) -> None:
    reg = make(filter="warn,[request]=trace")
    cs = reg.callsite("parse", target="app", level="debug")
    assert cs.enabled  # some spans may enable it
    assert cs.span().disabled  # ... not outside a request
    with reg.span("request", target="app") as request, cs.span() as parse:
        assert not parse.disabled
        assert parse.ref.parent_id == request.id
    assert cs.span().disabled


def test_interest_sometimes_callsite_matching_a_span_directive_itself(make: Any) -> None:
    reg = make(filter="warn,[request]=trace")
    cs = reg.callsite("request", target="app", level="info")
    assert cs.enabled
    with cs.span() as request:
        assert not request.disabled
        assert reg.current_span() == request.id


def test_interest_sometimes_with_field_directive(make: Any) -> None:
    reg = make(filter="warn,[{user=42}]=debug")
    cs = reg.callsite("session", target="app", level="debug", fields=("user",))
    assert cs.enabled
    with cs.span(user=42) as matched:
        assert not matched.disabled
    with cs.span(user=7) as other:
        assert other.disabled


def test_always_callsite_still_carries_span_directive_scope(make: Any) -> None:
    reg = make(filter="warn,[request]=trace")
    request_site = reg.callsite("request", target="app", level="warn")
    assert request_site.enabled
    with request_site.span():
        assert not reg.span("child", target="app", level="trace").disabled


def test_child_of_never_callsite_span_attaches_to_current(make: Any) -> None:
    reg = make(level="info")
    cs = reg.callsite("hidden", level="debug")
    with reg.span("outer") as outer, cs.span(), reg.span("inner") as inner:
        assert inner.ref.parent_id == outer.id


# --- repr -------------------------------------------------------------------------


def test_repr(make: Any) -> None:
    reg = make()
    cs = reg.callsite("db.query", target="app.db", level="debug", fields=("sql", "rows"))
    assert (
        repr(cs)
        == "Callsite('db.query', target='app.db', level=Level.DEBUG, fields=('sql', 'rows'))"
    )
    assert repr(reg.callsite("x")) == "Callsite('x', target='', level=Level.INFO, fields=())"
