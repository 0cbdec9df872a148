"""Tests of :mod:`pykregistry.testing`, the property-testing kit users get.

Each tool is shown to pass on the real registry and to fail on a broken one:
the checks of ``run_program`` and ``SpanLifecycleMachine`` against registries
with a planted bug (a proxy that gets one rule wrong), ``assert_no_leaks``
and the ``span_registry`` fixture against tests that leak.
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test

import pykregistry
from pykregistry import CURRENT, Registry, Span
from pykregistry.testing import (
    INDEX,
    OP_KINDS,
    LiveSpans,
    ModelSpan,
    ProgramChecker,
    RegistryModel,
    SpanLifecycleMachine,
    SpanOp,
    assert_matches_model,
    assert_no_leaks,
    leak_report,
    perform_step,
    random_program,
    run_program,
    span_ops,
    span_programs,
)

pytest_plugins = ["pytester"]

QUICK = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# === run_program and the model ===


@QUICK
@given(span_programs(contexts=3, max_size=40))
def test_run_program_accepts_the_real_registry(program: list[SpanOp]) -> None:
    reg = Registry()
    run_program(reg, program, contexts=3)
    assert len(reg) == 0


class Mutant:
    """A registry with one rule broken, behind the real one's API."""

    def __init__(self, bug: str) -> None:
        self.inner = Registry()
        self.bug = bug

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def __contains__(self, sid: object) -> bool:
        return sid in self.inner

    def __repr__(self) -> str:
        return f"Mutant({self.bug!r})"

    def new_span(self, name: str, **kwargs: Any) -> int:
        if self.bug == "contextual parent ignored" and kwargs.get("parent", CURRENT) is CURRENT:
            kwargs["parent"] = None
        return self.inner.new_span(name, **kwargs)

    def enter(self, sid: int) -> None:
        self.inner.enter(sid)
        if self.bug == "every entry takes a reference":
            self.inner.clone_span(sid)

    def exit(self, sid: int) -> None:
        if self.bug != "exit does nothing":
            self.inner.exit(sid)

    def try_close(self, sid: int) -> bool:
        closed = self.inner.try_close(sid)
        return closed or self.bug == "try_close always true"

    def clone_span(self, sid: int) -> int:
        if self.bug == "clone takes no reference":
            if self.inner.get(sid) is None:
                raise pykregistry.SpanNotFoundError(sid)
            return sid
        return self.inner.clone_span(sid)


BUGS = [
    "contextual parent ignored",
    "every entry takes a reference",
    "exit does nothing",
    "try_close always true",
    "clone takes no reference",
]


def fails(bug: str, program: list[SpanOp]) -> bool:
    try:
        run_program(Mutant(bug), program, contexts=2)  # type: ignore[arg-type]
    except AssertionError:
        return True
    return False


@pytest.mark.parametrize("bug", BUGS)
def test_run_program_finds_a_planted_bug(bug: str) -> None:
    """Hypothesis, with these strategies, finds a program that exposes each
    bug; the shrunk program is small."""
    program = find(
        span_programs(contexts=2, max_size=30),
        lambda p: fails(bug, p),
        settings=settings(max_examples=2000, database=None, deadline=None),
    )
    assert 1 <= len(program) <= 4, program


def test_run_program_report_names_the_step() -> None:
    program = [SpanOp("new_root"), SpanOp("enter"), SpanOp("exit")]
    with pytest.raises(
        AssertionError, match=r"step 3 Step\(kind='exit'.*current span \d+, model None"
    ):
        run_program(Mutant("exit does nothing"), program)  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match=r"after step 2 Step\(kind='enter'.*ref counts"):
        run_program(Mutant("every entry takes a reference"), program)  # type: ignore[arg-type]


def test_span_ops_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown operation kinds"):
        span_ops(kinds=["new_root", "explode"])


def test_span_ops_cover_every_kind_and_context() -> None:
    seen: set[tuple[str, int]] = set()

    @settings(max_examples=100, database=None)
    @given(st.lists(span_ops(contexts=3), min_size=5))
    def draw(ops: list[SpanOp]) -> None:
        seen.update((o.kind, o.context) for o in ops)

    draw()
    assert {kind for kind, _ in seen} == set(OP_KINDS)
    assert {c for _, c in seen} == {0, 1, 2}


def test_random_program_is_reproducible_and_runs() -> None:
    a = random_program(random.Random(7), 200, contexts=3)
    b = random_program(random.Random(7), 200, contexts=3)
    assert a == b
    assert {o.kind for o in a} == set(OP_KINDS)
    assert {o.context for o in a} == {0, 1, 2}
    reg = Registry()
    run_program(reg, a, contexts=3)
    assert len(reg) == 0


def test_model_counts_follow_r9() -> None:
    """The model alone: a child, an entry shared by a copied context, a
    duplicate entry, and the cascade when the last reference goes."""
    m = RegistryModel()
    m.new_context("a")
    root = m.new_span("root", 1, None)
    child = m.new_span("child", 2, root)
    assert m.counts() == {root: 2, child: 1}
    assert m.enter("a", child)
    assert m.enter("a", root)
    assert m.enter("a", child)  # a duplicate: no reference
    m.new_context("b", parent="a")  # shares a's entries
    assert m.counts() == {root: 3, child: 2}
    assert m.current("a") is root  # the duplicate is not current (R6)
    assert m.try_close(child) is False
    assert m.try_close(root) is False
    assert m.current("b") is root  # b sees a's entries ...
    m.drop_context("a")
    # ... but holds none of them: a's end closes both (R5, R11).
    assert not root.live
    assert not child.live
    assert m.counts() == {}
    assert m.current("b") is None
    m.drop_context("b")


def test_model_entry_exited_by_its_guard_elsewhere() -> None:
    """The model alone: a `with` block's exit run in another context exits
    its own entry; the maker then sees what is below, a copy sees nothing
    current (the entry is only a trace parent there)."""
    m = RegistryModel()
    m.new_context("a")
    outer = m.new_span("outer", 1, None, handle=True)
    assert m.enter("a", outer)
    gen = m.new_span("gen", 2, outer, handle=True)
    assert m.enter("a", gen)
    entry = m.stacks["a"][-1]
    m.new_context("copy", parent="a")
    m.new_context("closer")
    m.exit_entry("closer", entry)
    m.release_handle(gen)
    assert not gen.live
    assert m.current("a") is outer
    assert m.current("copy") is None
    assert m.counts() == {outer: 2}


def test_program_checker_with_steps_run_on_threads() -> None:
    """ProgramChecker with each step run on a new thread: the step is
    checked while its thread is alive, then again once it has ended (a
    thread's stack is dropped when it ends, R11)."""
    reg = Registry()
    checker = ProgramChecker(reg)
    program = random_program(random.Random(3), 80, contexts=1)
    checker.add_context("thread")
    entered = 0
    for op in program:
        step = checker.plan("thread", op)
        seen: list[Any] = []
        checked, release = threading.Event(), threading.Event()

        def run(
            step: Any = step,
            seen: list[Any] = seen,
            checked: threading.Event = checked,
            release: threading.Event = release,
        ) -> None:
            seen.append(perform_step(reg, step))
            checked.set()
            release.wait()

        th = threading.Thread(target=run)
        th.start()
        checked.wait()
        checker.check("thread", step, seen[0])
        entered += bool(checker.model.stacks["thread"])
        release.set()
        th.join()
        checker.drop_context("thread")
        checker.add_context("thread")
        checker.check_registry()
    checker.release_all()
    assert len(reg) == 0
    assert entered >= 3  # the program did leave spans entered in its threads


def test_assert_matches_model_catches_a_count_off_by_one() -> None:
    reg = Registry()
    m = RegistryModel()
    sid = reg.new_span("a")
    s = m.new_span("a", sid, None)
    assert_matches_model(reg, m)
    reg.clone_span(sid)
    with pytest.raises(AssertionError, match="ref counts"):
        assert_matches_model(reg, m)
    m.clone_span(s)
    assert_matches_model(reg, m)
    other = reg.new_span("untracked", parent=None)
    with pytest.raises(AssertionError, match=r"len\(registry\) == 2, model has 1 live"):
        assert_matches_model(reg, m)
    assert_matches_model(reg, m, spans=[s])  # only s: len not checked
    assert_matches_model(reg, m, baseline=1)
    reg.try_close(other)
    reg.try_close(sid)
    reg.try_close(sid)


# === the state machine, subclassed as a user would ===


def handle_request(reg: Registry, user: int) -> None:
    """Well-behaved instrumented code: spans within the call."""
    with reg.span("request", user=user):
        with reg.span("db.query"):
            pass
        reg.event("done")


def leaky_handler(reg: Registry, user: int) -> None:
    """Leaves one span behind when user is odd."""
    with reg.span("request", user=user) as s:
        if user % 2:
            _KEEP.append(s.clone())


_KEEP: list[Span] = []


def stays_entered(reg: Registry, user: int) -> None:
    """Enters a span and never exits it, when user is odd."""
    s = reg.span("request", user=user)
    if user % 2:
        reg.enter(s.id)  # type: ignore[arg-type]
    s.close()


def open_session(reg: Registry) -> Span:
    """Hands back a span the caller owns."""
    s = reg.span("session")
    with reg.span("login"):
        pass
    return s


class HandlerMachine(SpanLifecycleMachine):
    handler = staticmethod(handle_request)

    @rule(c=INDEX, user=st.integers(0, 5))
    def request(self, c: int, user: int) -> None:
        self.context(c).run(type(self).handler, self.registry, user)

    @rule(c=INDEX)
    def session(self, c: int) -> None:
        s = self.adopt(self.context(c).run(open_session, self.registry))
        assert isinstance(s, ModelSpan)


MACHINE_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_machine_subclass_passes_well_behaved_code() -> None:
    run_state_machine_as_test(HandlerMachine, settings=MACHINE_SETTINGS)


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (leaky_handler, r"ref counts|len\(registry\) == \d+, model has \d+ live"),
        (stays_entered, r"current_span\(\) == \d+, model|ref counts|len\(registry\)"),
    ],
)
def test_machine_subclass_catches_misbehaving_code(handler: Any, expected: str) -> None:
    class Broken(HandlerMachine):
        pass

    Broken.handler = staticmethod(handler)
    # Finding is the point here, not shrinking.
    no_shrink = settings(MACHINE_SETTINGS, phases=[Phase.generate], max_examples=300)
    with pytest.raises(AssertionError, match=expected):
        run_state_machine_as_test(Broken, settings=no_shrink)
    for s in _KEEP:
        s.close()
    _KEEP.clear()


def test_machine_failure_reports_the_leaked_span() -> None:
    class Leaky(HandlerMachine):
        handler = staticmethod(leaky_handler)

    m = Leaky()
    m.first_context()
    m.request(0, 3)
    with pytest.raises(AssertionError) as info:
        m.agrees_with_model()
    assert "len(registry) == 1, model has 0 live" in str(info.value)
    assert "'request'" in str(info.value)
    assert "created at" in str(info.value)
    for s in _KEEP:
        s.close()
    _KEEP.clear()
    m.teardown()


def test_machine_adopts_ids_and_handles() -> None:
    m = SpanLifecycleMachine()
    m.first_context()
    parent = m.adopt(m.registry.new_span("p", parent=None))
    assert parent.refs == 1
    handle = m.registry.span("h", parent=parent.id)
    child = m.adopt(handle)
    assert child.parent is parent
    assert child.handles == 1
    m.agrees_with_model()
    assert m.adopt(handle.clone()) is child  # a second handle on a known span
    assert child.handles == 2
    m.agrees_with_model()
    orphan = m.registry.new_span("orphan", parent=None)
    unknown_parent = m.registry.new_span("c", parent=orphan)
    with pytest.raises(AssertionError, match="adopt the parent first"):
        m.adopt(unknown_parent)
    m.registry.try_close(orphan)
    assert m.registry.try_close(unknown_parent) is True  # and with it its parent
    m.teardown()
    assert len(m.registry) == 0


# === leak reports ===


def test_assert_no_leaks_passes_when_nothing_is_live() -> None:
    reg = Registry(layers=[LiveSpans()])
    with reg.span("a"), reg.span("b"):
        pass
    assert_no_leaks(reg)


def test_assert_no_leaks_collects_cycles_first() -> None:
    reg = Registry()

    class Holder:
        pass

    h = Holder()
    h.me = h  # type: ignore[attr-defined]
    h.span = reg.span("in a cycle")  # type: ignore[attr-defined]
    del h
    assert len(reg) == 1
    assert_no_leaks(reg)
    assert len(reg) == 0


def test_leak_report_names_every_live_span_and_what_holds_it() -> None:
    reg = Registry(layers=[LiveSpans()])
    request = reg.span("request", target="app.http", parent=None)
    request.__enter__()
    query = reg.new_span("db.query", target="app.db", level="debug")
    other = reg.span("other", parent=None)
    seen: list[int] = []

    def enter_elsewhere() -> None:
        reg.enter(other.id)  # type: ignore[arg-type]
        seen.append(reg.ref_count(other.id))  # type: ignore[arg-type]
        reg.exit(other.id)  # type: ignore[arg-type]
        reg.enter(other.id)  # type: ignore[arg-type]

    with pytest.raises(AssertionError) as info:
        assert_no_leaks(reg)
    report = str(info.value)
    lines = report.splitlines()
    assert lines[0] == "spans leaked: 3 spans live in Registry(len=3)"
    rid, qid, oid = request.id, query, other.id
    assert (
        f"span {rid} 'request' target='app.http' level=INFO root, ref_count=3 = "
        "1 live child + the calling context's entry (its current span) + 1 other" in report
    )
    assert (
        f"span {qid} 'db.query' target='app.db' level=DEBUG parent={rid} ('request'), "
        "ref_count=1 = 1 other" in report
    )
    assert f"span {oid} 'other' target='{__name__}' level=INFO root, ref_count=1" in report
    assert "entered and not exited (enters - exits): thread 'MainThread' (+1)" in report
    assert re.search(
        rf"created at .*test_testing.py:\d+ in {sys._getframe().f_code.co_name}", report
    )
    # The child is indented under its parent.
    q_line = next(line for line in lines if f"span {qid}" in line)
    r_line = next(line for line in lines if f"span {rid}" in line)
    assert len(q_line) - len(q_line.lstrip()) > len(r_line) - len(r_line.lstrip())

    t = threading.Thread(target=enter_elsewhere, name="worker-7")
    t.start()
    t.join()  # the thread ended with `other` entered: R11 released it
    assert seen == [2]
    assert reg.ref_count(oid) == 1  # type: ignore[arg-type]
    report = leak_report(reg)
    # What layers saw stays as a hint; the count is the truth.
    assert "thread 'worker-7' (+1)" in report

    request.__exit__(None, None, None)
    reg.try_close(query)
    other.close()
    assert_no_leaks(reg)


def test_leak_report_in_asyncio_names_the_task() -> None:
    reg = Registry(layers=[LiveSpans()])
    held: list[Span] = []

    async def main() -> None:
        async def work() -> None:
            s = reg.span("in task")
            s.__enter__()
            held.append(s)
            assert "task 'worker'" in leak_report(reg)

        await asyncio.create_task(work(), name="worker")

    asyncio.run(main())
    held[0].close()
    assert_no_leaks(reg)


def test_leak_report_without_live_spans_layer() -> None:
    reg = Registry()
    outer = reg.span("outer", parent=None)
    outer.__enter__()
    inner = reg.new_span("inner")
    reg.enter(inner)
    with pytest.raises(AssertionError) as info:
        assert_no_leaks(reg)
    report = str(info.value)
    assert "add a pykregistry.testing.LiveSpans() layer" in report
    assert f"span {outer.id} 'outer'" in report
    assert f"span {inner} 'inner'" in report
    assert "(the calling context's current span)" in report
    reg.exit(inner)
    reg.try_close(inner)
    outer.__exit__(None, None, None)
    assert_no_leaks(reg)


def test_leak_report_counts_spans_from_before_the_layer() -> None:
    reg = Registry()
    early = reg.span("early")
    tracker = LiveSpans()
    reg.add_layer(tracker)
    late = reg.span("late")
    report = leak_report(reg)
    assert "'late'" in report
    assert "and 1 span created before the LiveSpans layer was added" in report
    assert [t.name for t in tracker.spans] == ["late"]
    early.close()
    late.close()
    assert tracker.spans == []


# === the pytest fixture ===

CONFTEST = 'pytest_plugins = ["pykregistry.testing"]\n'


def test_fixture_fails_a_test_that_leaks(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        textwrap.dedent(
            """
            def test_clean(span_registry):
                with span_registry.span("fine"):
                    pass

            def test_leaks(span_registry):
                span_registry.span("forgotten", target="app").__enter__()

            def test_leaks_an_id(span_registry):
                span_registry.new_span("never closed")

            def test_fails_and_leaks(span_registry):
                span_registry.new_span("also leaked")
                assert False, "the test's own failure"
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1, errors=2)
    out = result.stdout.str()
    assert "spans leaked: 1 span live" in out
    assert "'forgotten' target='app'" in out
    assert "'never closed'" in out
    # A failing test reports its own failure, not a leak on top.
    assert "the test's own failure" in out
    assert "'also leaked'" not in out


def test_fixture_imported_without_the_plugin_still_checks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        textwrap.dedent(
            """
            from pykregistry.testing import span_registry

            def test_leaks(span_registry):
                span_registry.new_span("never closed")
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    assert "'never closed'" in result.stdout.str()


def test_plugin_modules_are_not_rewritten(pytester: pytest.Pytester) -> None:
    """The package and each of its modules opt out of pytest's assertion
    rewriting (their assertions carry their own messages): loading the
    plugin marks every module under it for rewriting, and the modules are
    imported after that."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        textwrap.dedent(
            """
            import sys

            def test_not_rewritten(span_registry):
                names = sorted(n for n in sys.modules if n.startswith("pykregistry.testing"))
                assert len(names) == 6, names
                rewritten = [n for n in names if "@py_builtins" in vars(sys.modules[n])]
                assert rewritten == []
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=1)


def test_every_name_imports_from_the_package() -> None:
    """The package's modules are an implementation detail: what the single
    module ``pykregistry.testing`` defined still imports from it."""
    import pykregistry.testing as testing

    extras = ["Outcome", "span_registry", "pytest_runtest_makereport"]
    for name in [*testing.__all__, *extras]:
        assert hasattr(testing, name), name
    assert testing.span_registry is testing.plugin.span_registry


def test_testing_without_hypothesis_says_what_to_install() -> None:
    """Without hypothesis, importing pykregistry.testing fails with an
    ImportError that says what to install (and pykregistry itself imports)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['hypothesis'] = None\n"
            "import pykregistry\n"
            "try:\n"
            "    import pykregistry.testing\n"
            "except ImportError as e:\n"
            "    print(type(e).__name__, e.name, e)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "ImportError hypothesis pykregistry.testing needs hypothesis: pip install "
        "hypothesis (or pip install 'pykregistry[test]')\n"
    )
