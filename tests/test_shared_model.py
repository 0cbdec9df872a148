"""R5, R6 and R11 have two implementations: the Rust core's per-thread
``SpanStack``, which its ``tracing`` ``Subscriber`` runs on, and the
bindings' context stack, which Python code runs on. Rather than trusting
that they agree, this test runs both through the same operations, next to
the model of ``pykregistry.testing.model``, and checks after every step
that all three agree on the current span (R6), on which entries hold a
reference (R5) and on the reference counts, and at the end of the context
on what is released (R11).
"""

from __future__ import annotations

import contextvars
import gc

from hypothesis import given
from hypothesis import strategies as st

from pykregistry import Registry
from pykregistry._native import _SpanStack
from pykregistry.testing.model import ModelEntry, RegistryModel

SPANS = 4
KEY = "ctx"

ops = st.lists(
    st.tuples(st.sampled_from(["enter", "exit"]), st.integers(0, SPANS - 1)),
    max_size=40,
)


def the_entry_exit_removes(model: RegistryModel, span: object) -> ModelEntry | None:
    """The entry ``model.exit(KEY, span)`` will remove, if any."""
    for e in reversed(model.stacks[KEY]):
        if e.exited and e.owner == KEY:
            continue
        if e.span is span:
            return e
    return None


@given(ops)
def test_r5_r6_r11_the_core_stack_and_the_context_stack_follow_one_model(
    steps: list[tuple[str, int]],
) -> None:
    reg = Registry()
    ids = [reg.new_span(f"s{i}") for i in range(SPANS)]
    model = RegistryModel()
    model.new_context(KEY)
    spans = [model.new_span(f"s{i}", sid, None) for i, sid in enumerate(ids)]
    core = _SpanStack()
    context = contextvars.Context()

    def agree(context: contextvars.Context) -> None:
        expected = model.current(KEY)
        expected_id = None if expected is None else expected.id
        assert context.run(reg.current_span) == expected_id  # R6, bindings
        assert core.current() == expected_id  # R6, core
        counts = model.counts()
        assert [reg.ref_count(i) for i in ids] == [counts[s] for s in spans]

    for op, i in steps:
        if op == "enter":
            assert model.enter(KEY, spans[i])
            entry = model.made[KEY][-1]
            context.run(reg.enter, ids[i])
            # R5: the first entry of a span holds a reference; a further
            # entry while it is unexited holds none.
            assert core.push(ids[i]) is entry.holds
        else:
            entry_ = the_entry_exit_removes(model, spans[i])
            held = entry_ is not None and entry_.holds
            assert model.exit(KEY, spans[i]) is (entry_ is not None)
            context.run(reg.exit, ids[i])
            # R5: exiting releases what the removed entry held, if anything.
            assert core.pop(ids[i]) is held
        agree(context)

    # R11: the context ends; what its entries held is released.
    held = [e.span.id for e in model.made[KEY] if e.holds]
    assert core.drain_held() == held
    model.drop_context(KEY)
    del context
    gc.collect()
    counts = model.counts()
    assert [reg.ref_count(i) for i in ids] == [counts[s] for s in spans] == [1] * SPANS
