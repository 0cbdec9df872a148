"""Model-based tests of the registry's rules (SPEC R2-R6, R9, R11).

The model and the state machine are the public ones of
:mod:`pykregistry.testing` (``RegistryModel``, ``SpanLifecycleMachine``): this
file runs them, and checks the same model against real threads. A reference
model tracks, for every span the test created: the references the
test holds (explicit IDs from ``new_span``/``clone_span`` and open ``Span``
handles), its parent and whether it is live; and, for every context, its
stack as a list of entries. An entry is a model object with identity: a child
context copied from another shares the very same entries (like an asyncio
task inheriting its creator's stack), and an out-of-order ``exit`` copies the
entries above the removed one, exactly as the bindings do. Each first
(non-duplicate) entry of a span owns one reference, held while any context
still holds the entry. The model derives every span's expected count from
R9::

    ref_count(S) = refs held by the test + live children
                   + distinct live entries of S that own a reference

and closes spans whose count reaches 0, cascading to parents. After every
step the registry must agree with the model on counts, parents, liveness,
``len`` and each context's current span.

``TestRegistryMachine`` drives many ``contextvars.Context`` objects from one
thread. ``test_threads_in_lockstep`` runs the integer-ID operations on 2-4
real threads, one operation per thread per step between two barriers, and
checks that every step is linearizable: some order of its operations,
applied to the model, explains what each thread saw and the state after.

Examples per run: 1,000 machine runs of up to 50 steps and 500 thread
schedules (about 15 s); 10,000 and 5,000 with ``HYPOTHESIS_PROFILE=long``;
20 each with ``HYPOTHESIS_PROFILE=dev``. ``PYKREGISTRY_MACHINE_EXAMPLES`` and
``PYKREGISTRY_THREAD_EXAMPLES`` override either.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import os
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from pykregistry import Registry
from pykregistry.testing import (
    INDEX,
    RegistryModel,
    SpanLifecycleMachine,
    Step,
    assert_matches_model,
    perform_step,
    predict_step,
    resolve_op,
)

# === settings ===

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
_LONG = PROFILE == "long"
try:  # tests/conftest.py registers and loads the shared profiles
    settings.get_profile("long")
except InvalidArgument:
    settings.register_profile("long", max_examples=10_000, deadline=None)
_MACHINE, _THREADS = {"long": (10_000, 5_000), "dev": (20, 20)}.get(PROFILE, (1_000, 500))
MACHINE_EXAMPLES = int(os.environ.get("PYKREGISTRY_MACHINE_EXAMPLES", _MACHINE))
THREAD_EXAMPLES = int(os.environ.get("PYKREGISTRY_THREAD_EXAMPLES", _THREADS))

# Whatever profile tests/conftest.py loads, these tests pin what makes them
# reproducible: no deadline (a gc.collect() or a thread switch may be slow),
# no example database (a stored failure from another checkout would replay
# here), and the failing example printed as a reproducible blob.
_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

# A long run must not hit the project-wide pytest timeout.
_TIMEOUT = pytest.mark.timeout(0 if _LONG else 300)


# === one thread, many contexts ===


class RegistryMachine(SpanLifecycleMachine):
    """Spans, handles and contexts on one thread, against the model: the
    library's machine as it is (its rules and invariants are the checks)."""


RegistryMachine.TestCase.settings = settings(
    max_examples=MACHINE_EXAMPLES, stateful_step_count=50, **_COMMON
)
TestRegistryMachine = _TIMEOUT(RegistryMachine.TestCase)

# === real threads in lockstep ===


OP = st.one_of(
    st.tuples(st.sampled_from(["new_root", "new_current", "new_explicit"]), INDEX),
    st.tuples(
        st.sampled_from(["clone", "close", "close_dead", "enter", "exit", "exit_other", "record"]),
        INDEX,
    ),
)


def registry_matches(reg: Registry, model: RegistryModel) -> str | None:
    try:
        assert_matches_model(reg, model)
    except AssertionError as e:
        return str(e)
    return None


def linearize(
    reg: Registry,
    model: RegistryModel,
    ops: dict[int, Step],
    seen: dict[int, tuple[Any, int | None]],
    likely: tuple[int, ...],
) -> RegistryModel:
    """The model after the first order of `ops` that explains every
    outcome, every thread's current span and the registry's state. The
    order the threads finished in is tried first."""
    failures = []
    orders = itertools.permutations(sorted(ops))
    for order in dict.fromkeys(itertools.chain([likely], orders)):
        trial = copy.deepcopy(model)
        n_before = len(trial.spans)
        mismatch = None
        for t in order:
            predicted = predict_step(trial, t, ops[t], seen[t][0])
            if predicted != seen[t][0]:
                mismatch = f"thread {t} {ops[t]}: saw {seen[t][0]}, model {predicted}"
                break
        if mismatch is None:
            # New spans in thread order, so that indices drawn later agree.
            trial.spans[n_before:] = sorted(trial.spans[n_before:], key=lambda s: int(s.label[1:]))
            for t in ops:
                want = trial.current(t)
                if seen[t][1] != (None if want is None else want.id):
                    mismatch = f"thread {t}: current {seen[t][1]}, model {want}"
                    break
        if mismatch is None:
            mismatch = registry_matches(reg, trial)
        if mismatch is None:
            return trial
        failures.append(f"order {order}: {mismatch}")
    raise AssertionError("no order of the step's operations explains it:\n" + "\n".join(failures))


@_TIMEOUT
@settings(max_examples=THREAD_EXAMPLES, **_COMMON)
@given(data=st.data())
def test_threads_in_lockstep(data: st.DataObject) -> None:
    """Each step, every thread (in its own thread context) runs one
    operation, all released at once by a barrier; after the next barrier
    the registry must match the model for some order of those operations.
    The threads end with spans still entered: joining them must release
    their stacks' references (R11)."""
    n_threads = data.draw(st.integers(2, 4), label="threads")
    schedule = data.draw(
        st.lists(
            st.lists(OP, min_size=n_threads, max_size=n_threads),
            min_size=4,
            max_size=40,
        ),
        label="schedule",
    )
    reg = Registry()
    model = RegistryModel()
    for t in range(n_threads):
        model.new_context(t, None)
    barrier = threading.Barrier(n_threads + 1, timeout=60)
    plan: dict[int, Step] = {}
    finished: list[int] = []
    seen: dict[int, tuple[Any, int | None]] = {}
    stop = False
    n_new = 0

    def worker(t: int) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            while True:
                barrier.wait()
                if stop:
                    return
                if t in plan:
                    seen[t] = perform_step(reg, plan[t])
                    finished.append(t)  # atomic; roughly the order they ran
                barrier.wait()

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(n_threads)]
    for th in threads:
        th.start()
    try:
        for step, drawn in enumerate(schedule):
            budget: dict[int, int] = {}
            plan.clear()
            seen.clear()
            finished.clear()
            for t, (kind, i) in enumerate(drawn):
                op = resolve_op(model, t, kind, i, budget)
                if op.kind == "new":
                    op = dataclasses.replace(op, new_index=n_new)
                    n_new += 1
                plan[t] = op
            barrier.wait()  # go
            barrier.wait()  # done
            note(f"step {step}: {plan} -> {seen}")
            for t, (outcome, _) in seen.items():
                assert outcome[0] != "raised", f"thread {t} {plan[t]}: {outcome}"  # type: ignore[index]
            model = linearize(reg, model, dict(plan), dict(seen), tuple(finished))
        stop = True
        barrier.wait()
    finally:
        barrier.abort()
        for th in threads:
            th.join(timeout=60)
    assert not any(th.is_alive() for th in threads)
    # The threads ended with their stacks as they were: R11.
    for t in range(n_threads):
        model.drop_context(t)
    assert_matches_model(reg, model)
    for s in model.spans:
        for _ in range(s.refs):
            reg.try_close(s.id)
    assert len(reg) == 0
