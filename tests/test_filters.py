"""Filters: `Registry(level=...)`, `Registry(filter=...)` with EnvFilter-style
directives, `reg.enabled()`, and the disabled span a filtered-out span is.

README "Filters and disabled spans"; issue 4 item 5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import pykregistry
from pykregistry import CURRENT, Level, Registry, Span

ALL_LEVELS = [Level.TRACE, Level.DEBUG, Level.INFO, Level.WARN, Level.ERROR]


class Events:
    """A layer recording events and new spans."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.spans: list[str] = []

    def on_event(self, event: pykregistry.Event) -> None:
        self.events.append(
            {
                "message": event.message,
                "level": event.level,
                "target": event.target,
                "parent_id": event.parent_id,
                "fields": event.fields,
            }
        )

    def on_new_span(self, span: pykregistry.SpanRef) -> None:
        self.spans.append(span.name)

    def messages(self) -> list[str]:
        return [e["message"] for e in self.events]


def span_enabled(reg: Registry, name: str = "s", **kwargs: Any) -> bool:
    """Creates a span, says whether it was enabled, and releases it."""
    span = reg.span(name, **kwargs)
    try:
        return not span.disabled
    finally:
        span.close()


# --- static directives: targets and levels ---------------------------------


def test_no_filter_enables_every_level_and_target(make: Any) -> None:
    reg = make()
    for level in ALL_LEVELS:
        assert reg.enabled(level, "anything.at.all")
        assert span_enabled(reg, level=level, target="x")


def test_level_alone_enables_up_to_that_level(make: Any) -> None:
    reg = make(level="info")
    assert reg.enabled(Level.ERROR, "a")
    assert reg.enabled(Level.WARN, "b.c")
    assert reg.enabled(Level.INFO, "")
    assert not reg.enabled(Level.DEBUG, "a")
    assert not reg.enabled(Level.TRACE, "a")
    assert span_enabled(reg, level="info", target="anything")
    assert not span_enabled(reg, level="debug", target="anything")


def test_level_accepts_level_member_name_in_any_case_and_int(make: Any) -> None:
    for level in (Level.WARN, "WARN", "Warn", int(Level.WARN)):
        reg = make(level=level)
        assert reg.enabled("warn", "x")
        assert not reg.enabled("info", "x")


def test_level_off_disables_everything(make: Any) -> None:
    reg = make(level="off")
    for level in ALL_LEVELS:
        assert not reg.enabled(level, "x")
        assert not span_enabled(reg, level=level, target="x")


def test_target_prefix_directive_enables_targets_starting_with_it(make: Any) -> None:
    reg = make(filter="warn,app.db=debug")
    assert reg.enabled("debug", "app.db")
    assert reg.enabled("debug", "app.db.pool")
    assert not reg.enabled("trace", "app.db.pool")
    # outside the prefix, the default directive (warn) decides
    assert not reg.enabled("debug", "app.http")
    assert not reg.enabled("info", "app")
    assert reg.enabled("warn", "app.http")
    assert span_enabled(reg, target="app.db.pool", level="debug")
    assert not span_enabled(reg, target="app.http", level="info")


def test_most_specific_target_wins_whatever_the_order(make: Any) -> None:
    for directives in ("app=error,app.db=trace,warn", "warn,app.db=trace,app=error"):
        reg = make(filter=directives)
        assert reg.enabled("trace", "app.db.x"), directives
        assert not reg.enabled("warn", "app.web"), directives
        assert reg.enabled("error", "app.web"), directives
        assert reg.enabled("warn", "lib"), directives
        assert not reg.enabled("info", "lib"), directives


def test_a_more_specific_directive_can_be_less_verbose(make: Any) -> None:
    reg = make(filter="app=trace,app.noisy=error")
    assert reg.enabled("trace", "app.quiet")
    assert not reg.enabled("warn", "app.noisy.sub")
    assert reg.enabled("error", "app.noisy.sub")


def test_unmatched_targets_are_disabled_when_a_filter_is_given(make: Any) -> None:
    reg = make(filter="app=info")
    assert reg.enabled("info", "app.x")
    for level in ALL_LEVELS:
        assert not reg.enabled(level, "lib")
    assert not span_enabled(reg, target="lib", level="error")
    assert span_enabled(reg, target="app", level="error")


def test_off_disables_a_target_and_everything_under_it(make: Any) -> None:
    reg = make(filter="trace,app.noisy=off")
    assert reg.enabled("trace", "app.quiet")
    for level in ALL_LEVELS:
        assert not reg.enabled(level, "app.noisy")
        assert not reg.enabled(level, "app.noisy.deeper")
    assert not span_enabled(reg, target="app.noisy.x", level="error")


def test_off_alone_disables_everything(make: Any) -> None:
    reg = make(filter="off")
    for level in ALL_LEVELS:
        assert not reg.enabled(level, "x")
    assert not span_enabled(reg, target="x", level="error")


def test_bare_target_enables_all_its_levels(make: Any) -> None:
    reg = make(filter="app")
    for level in ALL_LEVELS:
        assert reg.enabled(level, "app.sub")
    assert not reg.enabled("error", "lib")
    assert span_enabled(reg, target="app.x", level="trace")


def test_directive_levels_are_case_insensitive_and_spaces_ignored(make: Any) -> None:
    reg = make(filter=" WARN , app.db = Debug ")
    assert reg.enabled("debug", "app.db")
    assert not reg.enabled("info", "lib")
    assert reg.enabled("warn", "lib")


def test_level_and_filter_combined_level_is_the_default(make: Any) -> None:
    reg = make(level="warn", filter="app=debug")
    assert reg.enabled("debug", "app.x")  # the filter's target directive
    assert not reg.enabled("trace", "app.x")
    assert reg.enabled("warn", "lib")  # the default from level=
    assert not reg.enabled("info", "lib")


def test_level_and_filter_combined_filters_own_default_wins(make: Any) -> None:
    # level= is only the default: a directive without target in the filter
    # says the default itself.
    reg = make(level="trace", filter="error,app=info")
    assert not reg.enabled("warn", "lib")
    assert reg.enabled("error", "lib")
    assert reg.enabled("info", "app")


def test_enabled_target_defaults_to_empty_string(make: Any) -> None:
    reg = make(filter="info,app=trace")
    assert reg.enabled("info")
    assert not reg.enabled("debug")
    assert reg.enabled(Level.ERROR)


def test_enabled_rejects_bad_levels(make: Any) -> None:
    reg = make(level="info")
    with pytest.raises(ValueError, match="loud"):
        reg.enabled("loud", "x")
    with pytest.raises(TypeError):
        reg.enabled(1.5, "x")


def test_enabled_ignores_span_directives(make: Any) -> None:
    # span directives depend on the spans a call is made in: enabled() answers
    # for the static directives alone
    reg = make(filter="warn,[request]=trace")
    assert not reg.enabled("debug", "x")
    with reg.span("request", target="x") as request:
        assert not request.disabled
        assert not reg.enabled("debug", "x")


# --- events under static directives ----------------------------------------


def test_events_are_filtered_by_level_and_target(make: Any) -> None:
    layer = Events()
    reg = make(filter="warn,app.db=debug", layers=[layer])
    reg.event("lib info", target="lib", level="info")
    reg.event("lib warn", target="lib", level="warn")
    reg.event("db debug", target="app.db.pool", level="debug")
    reg.event("db trace", target="app.db.pool", level="trace")
    assert layer.messages() == ["lib warn", "db debug"]


def test_filtered_out_span_reaches_no_layer(make: Any) -> None:
    layer = Events()
    reg = make(level="info", layers=[layer])
    with reg.span("hidden", level="debug", target="x"):
        pass
    with reg.span("shown", level="info", target="x"):
        pass
    assert layer.spans == ["shown"]


# --- span directives --------------------------------------------------------


def test_span_directive_enables_the_matched_span_itself(make: Any) -> None:
    reg = make(filter="warn,[request]=trace")
    with reg.span("request", target="app.http", level="info") as request:
        assert not request.disabled
        assert reg.get(request.id).name == "request"
    with reg.span("request", target="app.http", level="trace") as request:
        assert not request.disabled
    with reg.span("other", target="app.http", level="info") as other:
        assert other.disabled


def test_span_directive_enables_descendant_spans(make: Any) -> None:
    reg = make(filter="warn,[request]=trace")
    with (
        reg.span("request", target="app.http") as request,
        reg.span("parse", target="lib", level="trace") as parse,
        reg.span("deeper", target="other", level="debug") as deeper,
    ):
        assert not parse.disabled
        assert parse.ref.parent_id == request.id
        assert not deeper.disabled
        assert deeper.ref.parent_id == parse.id
        assert [s.name for s in deeper.ref.scope()] == ["deeper", "parse", "request"]


def test_span_directive_scope_ends_with_the_span(make: Any) -> None:
    reg = make(filter="warn,[request]=trace")
    with reg.span("request", target="app.http"):
        assert span_enabled(reg, "inside", level="debug", target="x")
    assert not span_enabled(reg, "after", level="debug", target="x")
    with reg.span("sibling", level="warn", target="x") as sibling:
        assert not sibling.disabled
        assert not span_enabled(reg, "under sibling", level="debug", target="x")


def test_span_directive_scope_follows_explicit_parents(make: Any) -> None:
    reg = make(filter="warn,[request]=trace")
    request = reg.span("request", target="app")
    try:
        # not entered: an explicit parent carries the scope anyway
        assert span_enabled(reg, "child", parent=request, level="trace", target="x")
        assert span_enabled(reg, "child", parent=request.id, level="trace", target="x")
        # ... and a root does not inherit anything
        with request.entered():
            assert not span_enabled(reg, "root", parent=None, level="debug", target="x")
    finally:
        request.close()


def test_span_directive_level_caps_descendants(make: Any) -> None:
    reg = make(filter="error,[request]=info")
    with reg.span("request", target="x", level="info") as request:
        assert not request.disabled
        assert span_enabled(reg, "child", level="info", target="y")
        assert not span_enabled(reg, "child", level="debug", target="y")


def test_span_directive_enables_events_inside_the_span(make: Any) -> None:
    layer = Events()
    reg = make(filter="warn,[request]=trace", layers=[layer])
    reg.event("before", level="debug", target="x")
    with reg.span("request", target="app") as request:
        reg.event("inside", level="trace", target="x")
        with reg.span("child", level="debug", target="y") as child:
            reg.event("in child", level="debug", target="z")
    reg.event("after", level="debug", target="x")
    assert layer.messages() == ["inside", "in child"]
    assert [e["parent_id"] for e in layer.events] == [request.id, child.id]


def test_event_with_an_explicit_parent_inherits_its_scope(make: Any) -> None:
    layer = Events()
    reg = make(filter="warn,[request]=trace", layers=[layer])
    request = reg.span("request", target="app")
    try:
        reg.event("explicit", level="debug", target="x", parent=request.id)
        reg.event("contextual", level="debug", target="x", parent=CURRENT)
        with request.entered():
            reg.event("entered", level="debug", target="x")
            reg.event("root", level="debug", target="x", parent=None)
    finally:
        request.close()
    assert layer.messages() == ["explicit", "entered"]


def test_field_directive_matches_an_int_field(make: Any) -> None:
    reg = make(filter="warn,[{user=42}]=debug")
    assert span_enabled(reg, "any", user=42, level="debug", target="x")
    assert not span_enabled(reg, "any", user=43, level="debug", target="x")
    assert not span_enabled(reg, "any", level="debug", target="x")
    assert not span_enabled(reg, "any", other=42, level="debug", target="x")


def test_field_directive_scope_covers_descendants(make: Any) -> None:
    reg = make(filter="warn,[{user=42}]=debug")
    with reg.span("session", user=42, level="debug", target="x") as session:
        assert not session.disabled
        assert span_enabled(reg, "child", level="debug", target="y")
    with reg.span("session", user=7, level="warn", target="x") as other:
        assert not other.disabled
        assert not span_enabled(reg, "child", level="debug", target="y")


def test_name_and_quoted_string_field_directive(make: Any) -> None:
    reg = make(filter='warn,[job{kind="x"}]=debug')
    assert span_enabled(reg, "job", kind="x", level="debug", target="t")
    assert not span_enabled(reg, "job", kind="y", level="debug", target="t")
    assert not span_enabled(reg, "job", level="debug", target="t")
    assert not span_enabled(reg, "task", kind="x", level="debug", target="t")


def test_field_directive_with_several_fields_needs_all(make: Any) -> None:
    reg = make(filter='warn,[job{id=1,kind="x"}]=debug')
    assert span_enabled(reg, "job", id=1, kind="x", level="debug", target="t")
    assert not span_enabled(reg, "job", id=1, level="debug", target="t")
    assert not span_enabled(reg, "job", id=2, kind="x", level="debug", target="t")


def test_field_directive_without_value_matches_presence(make: Any) -> None:
    reg = make(filter="warn,[{user}]=debug")
    assert span_enabled(reg, "a", user="anyone", level="debug", target="t")
    assert span_enabled(reg, "b", user=None, level="debug", target="t")
    assert not span_enabled(reg, "c", level="debug", target="t")


def test_field_directive_matches_bools(make: Any) -> None:
    reg = make(filter="warn,[{retry=true}]=debug")
    assert span_enabled(reg, "a", retry=True, level="debug", target="t")
    assert not span_enabled(reg, "a", retry=False, level="debug", target="t")


def test_target_and_span_directive(make: Any) -> None:
    reg = make(filter="warn,app[req]=debug")
    assert span_enabled(reg, "req", target="app.web", level="debug")
    assert not span_enabled(reg, "req", target="lib", level="debug")
    assert not span_enabled(reg, "other", target="app.web", level="debug")
    with reg.span("req", target="app") as req:
        assert not req.disabled
        # descendants inherit, whatever their own target
        assert span_enabled(reg, "child", target="lib", level="debug")
        assert not span_enabled(reg, "child", target="lib", level="trace")


def test_most_verbose_matching_span_directive_wins(make: Any) -> None:
    reg = make(filter="error,[req]=info,[{user=1}]=trace")
    with reg.span("req", user=1, target="x") as req:
        assert not req.disabled
        assert span_enabled(reg, "child", level="trace", target="y")


def test_nested_span_directive_raises_the_inherited_level(make: Any) -> None:
    reg = make(filter="error,[outer]=info,[inner]=trace")
    with reg.span("outer", target="x"):
        assert not span_enabled(reg, "c", level="debug", target="y")
        with reg.span("inner", target="x", level="info") as inner:
            assert not inner.disabled
            assert span_enabled(reg, "c", level="trace", target="y")


# --- a disabled span is never a parent --------------------------------------


def test_children_of_a_filtered_out_span_attach_to_the_real_current_span(make: Any) -> None:
    reg = make(level="info")
    with reg.span("outer", target="x") as outer:
        with reg.span("hidden", level="debug", target="x") as hidden:
            assert hidden.disabled
            assert reg.current_span() == outer.id
            with reg.span("inner", target="x") as inner:
                assert inner.ref.parent_id == outer.id
                assert [s.name for s in inner.ref.scope()] == ["inner", "outer"]
        assert reg.ref_count(outer.id) == 2  # the handle and the stack entry


def test_filtered_out_span_at_top_level_leaves_nothing_current(make: Any) -> None:
    reg = make(level="info")
    with reg.span("hidden", level="trace", target="x"):
        assert reg.current_span() is None
        with reg.span("root", target="x") as root:
            assert root.ref.parent_id is None
    assert len(reg) == 0


def test_disabled_span_as_explicit_parent_makes_a_root(make: Any) -> None:
    reg = make(level="info")
    hidden = reg.span("hidden", level="debug", target="x")
    with reg.span("outer", target="x"), reg.span("child", parent=hidden, target="x") as child:
        assert child.ref.parent_id is None


def test_events_in_a_disabled_span_have_the_real_current_span_as_parent(make: Any) -> None:
    layer = Events()
    reg = make(level="info", layers=[layer])
    with reg.span("outer", target="x") as outer, reg.span("hidden", level="debug", target="x"):
        reg.event("e", level="info", target="x")
    assert [e["parent_id"] for e in layer.events] == [outer.id]


# --- the disabled span's API ------------------------------------------------


def test_disabled_span_properties(make: Any) -> None:
    reg = make(level="off")
    span = reg.span("x")
    assert isinstance(span, Span)
    assert span.disabled is True
    assert span.id is None
    assert span.closed is True
    assert span.ref is None
    assert repr(span) == "Span(disabled=True)"


def test_disabled_span_is_one_shared_object(make: Any) -> None:
    a = make(level="off").span("a")
    b = make(filter="app=info").span("b", target="lib")
    assert a is b


def test_disabled_span_operations_are_no_ops(make: Any) -> None:
    layer = Events()
    reg = make(level="error", layers=[layer])
    span = reg.span("x", level="info", target="x")
    assert span.disabled
    with span as entered:
        assert entered is span
        assert reg.current_span() is None
    with span.entered() as entered:
        assert entered is span
        assert reg.current_span() is None
    with span.entered():  # reusable
        pass
    assert span.record(a=1) is None
    assert span.clone() is span
    span.close()
    span.close()
    assert span.disabled
    assert span.closed
    assert span.id is None
    assert len(reg) == 0
    assert layer.spans == []


def test_disabled_span_follows_from_is_a_no_op_both_ways(make: Any) -> None:
    reg = make(level="info")
    hidden = reg.span("hidden", level="debug", target="x")
    with reg.span("live", target="x") as live:
        hidden.follows_from(live)
        live.follows_from(hidden)  # following a disabled span records nothing


def test_exception_propagates_through_a_disabled_span(make: Any) -> None:
    reg = make(level="off")
    err = ValueError("boom")
    with pytest.raises(ValueError, match="boom") as info, reg.span("x"):
        raise err
    assert info.value is err


def test_disabled_span_repr_is_stable_after_use(make: Any) -> None:
    reg = make(level="off")
    span = reg.span("x")
    with span:
        pass
    span.close()
    assert repr(span) == "Span(disabled=True)"
    assert repr(span.entered()).startswith("Entered(")


# --- bad directives ---------------------------------------------------------


@pytest.mark.parametrize(
    "directive",
    ["app=loud", "[request=info", "[a{b=1]=info", "app]=info", "x{y}=info", "app=on"],
)
def test_bad_directive_raises_value_error_naming_it(directive: str) -> None:
    with pytest.raises(ValueError, match="invalid filter directive") as info:
        Registry(filter=f"warn,{directive}")
    assert directive in str(info.value)


@pytest.mark.parametrize("directive", ["app=info=debug", "app==debug"])
def test_directive_with_two_top_level_equals_signs_is_rejected(directive: str) -> None:
    # target[span{field=value}]=level has one `=` outside braces; EnvFilter
    # rejects a second one rather than reading a target named "app=info".
    with pytest.raises(ValueError, match="invalid filter directive") as info:
        Registry(filter=f"warn,{directive}")
    assert directive in str(info.value)


def test_bad_level_keyword_raises_value_error() -> None:
    with pytest.raises(ValueError, match="loud"):
        Registry(level="loud")
    with pytest.raises(ValueError, match="out of range"):
        Registry(level=9)
    with pytest.raises(TypeError):
        Registry(level=1.5)


def test_bad_directive_creates_nothing() -> None:
    class Layer:
        def __init__(self) -> None:
            self.calls = 0

        def on_new_span(self, span: pykregistry.SpanRef) -> None:
            self.calls += 1

    layer = Layer()
    registry = None
    with pytest.raises(ValueError, match="oops"):
        registry = Registry(filter="[oops=info", layers=[layer])
    assert registry is None
    assert layer.calls == 0


def test_filter_must_be_a_str() -> None:
    with pytest.raises(TypeError):
        Registry(filter=42)  # type: ignore[arg-type]


# --- the integer-ID API is not filtered -------------------------------------


def test_new_span_is_not_filtered(make: Any) -> None:
    # A documented decision: new_span is the tracing-core-shaped layer under
    # the filters (as Subscriber::new_span is only called for enabled call
    # sites); its callers ask enabled() first.
    layer = Events()
    reg = make(level="off", layers=[layer])
    assert not reg.enabled("error", "x")
    sid = reg.new_span("raw", level="trace", target="x")
    assert isinstance(sid, int)
    assert reg.get(sid).name == "raw"
    assert reg.ref_count(sid) == 1
    assert layer.spans == ["raw"]
    assert reg.try_close(sid) is True


def test_new_span_children_of_raw_spans_are_still_filtered(make: Any) -> None:
    reg = make(level="info")
    sid = reg.new_span("raw", level="trace", target="x")
    reg.enter(sid)
    try:
        with reg.span("child", level="debug", target="x") as child:
            assert child.disabled
        with reg.span("child", level="info", target="x") as child:
            assert child.ref.parent_id == sid
    finally:
        reg.exit(sid)
        assert reg.try_close(sid) is True


# --- the default registry reads PYKREGISTRY_FILTER --------------------------


def run_python(code: str, env_filter: str | None) -> str:
    env = dict(os.environ)
    env.pop("PYKREGISTRY_FILTER", None)
    if env_filter is not None:
        env["PYKREGISTRY_FILTER"] = env_filter
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


DEFAULT_REGISTRY_PROBE = """
    import pykregistry
    reg = pykregistry.default_registry()
    print(
        reg.enabled("info", "lib"),
        reg.enabled("warn", "lib"),
        reg.enabled("debug", "app.db.pool"),
        pykregistry.info_span("s", target="lib").disabled,
        pykregistry.debug_span("s", target="app.db").disabled,
        pykregistry.Callsite("c", target="lib", level="info").enabled,
    )
"""


def test_default_registry_reads_pykregistry_filter() -> None:
    out = run_python(DEFAULT_REGISTRY_PROBE, "warn,app.db=debug")
    assert out == "False True True True False False"


def test_default_registry_without_pykregistry_filter_enables_everything() -> None:
    out = run_python(DEFAULT_REGISTRY_PROBE, None)
    assert out == "True True True False False True"


def test_default_registry_span_directives_from_env() -> None:
    code = """
        import pykregistry
        with pykregistry.info_span("request", target="lib") as request:
            child = pykregistry.debug_span("child", target="lib")
            print(request.disabled, child.disabled, child.ref.parent_id == request.id)
            child.close()
        print(pykregistry.debug_span("outside", target="lib").disabled)
    """
    assert run_python(code, "warn,[request]=debug").split() == ["False", "False", "True", "True"]


def test_malformed_pykregistry_filter_warns_and_uses_the_default() -> None:
    """R15: a malformed ``PYKREGISTRY_FILTER`` does not make ``import
    pykregistry`` raise: a ``ConfigurationWarning`` names the variable, its
    value and the parse error, and the default registry enables everything."""
    out = run_python(
        """
        import json, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import pykregistry
        reg = pykregistry.default_registry()
        print(json.dumps({
            "warnings": [(w.category.__name__, str(w.message)) for w in caught],
            "is_user_warning": all(issubclass(w.category, UserWarning) for w in caught),
            "exported": pykregistry.ConfigurationWarning.__module__,
            "trace_enabled": reg.enabled("trace", "lib"),
        }))
        """,
        "bogus===",
    )
    result = json.loads(out)
    assert result["is_user_warning"]
    assert result["exported"] == "pykregistry.exceptions"
    assert result["trace_enabled"] is True
    [(category, message)] = result["warnings"]
    assert category == "ConfigurationWarning"
    assert "PYKREGISTRY_FILTER='bogus==='" in message
    assert 'invalid filter directive "bogus==="' in message
    assert "unknown level" in message
    # Shown by Python's default warning filter, and the import goes on.
    env = {**os.environ, "PYKREGISTRY_FILTER": "bogus==="}
    done = subprocess.run(
        [sys.executable, "-c", "import pykregistry; print('imported')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "imported\n"
    assert "ConfigurationWarning: PYKREGISTRY_FILTER='bogus===' is ignored" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_span_its_level_turns_away_reads_no_parent_argument() -> None:
    # The cheapest refusal comes first: a span whose level no directive can
    # enable is never made, so its `parent=` is not read, on the first call
    # (no disabled span made yet in a fresh process) as on every later one,
    # through `Registry.span` and through a call site alike. A span that is
    # let through reads it, and a bad one raises.
    code = textwrap.dedent(
        """
        from pykregistry import Registry
        reg = Registry(level="info")
        site = reg.callsite("quiet", level="trace")
        for _ in range(2):
            assert reg.span("quiet", level="trace", parent="no such span").disabled
            assert site.span(parent="no such span").disabled
        try:
            reg.span("loud", parent="no such span")
        except TypeError as e:
            assert "parent must be" in str(e), e
        else:
            raise AssertionError("a bad parent of an enabled span must raise")
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
