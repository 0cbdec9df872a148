"""R10: field values read back exactly, whatever they are, and never raise
(R15: data never raises), in every API: spans, records, events, call sites,
`@instrument` arguments and return values, and JSON lines."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import pykregistry
from pykregistry import JsonLines, Registry
from pykregistry.tree import TreeRecorder

SURROGATE_NAME = os.fsdecode(b"caf\xe9.txt")  # 'caf\udce9.txt'
LIMIT = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
HUGE = -(10 ** (LIMIT + 700))


class RaisingRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


EXACT: dict[str, Any] = {
    "none": None,
    "flag": True,
    "small": -7,
    "u64": 2**64 - 1,
    "big": 10**40,
    "past_the_str_limit": HUGE,
    "real": 2.5,
    "text": "héllo",
    "surrogates": SURROGATE_NAME,
    "lone": "\udc80",
    "nul": "a\x00b",
    "ints": [1, 2, 3],
    "strs": ("a", SURROGATE_NAME),
    "floats": [0.5, 1.5],
    "bools": (True, False),
    "bigs": [2**70, -(2**70)],
    "empty": [],
}


def assert_exact(got: dict[str, Any], want: dict[str, Any]) -> None:
    for key, value in want.items():
        assert got[key] == value, key
        assert type(got[key]) is type(value), key
        if isinstance(value, (list, tuple)):
            assert [type(v) for v in got[key]] == [type(v) for v in value], key


def test_r10_values_read_back_exactly(reg: Registry) -> None:
    with reg.span("s", **EXACT) as s:
        assert_exact(s.ref.fields, EXACT)


def test_r10_records_read_back_exactly(reg: Registry) -> None:
    with reg.span("s") as s:
        s.record(**EXACT)
        for key, value in EXACT.items():
            s.record(key, value)
        assert_exact(s.ref.fields, EXACT)


def test_r10_other_values_are_their_repr_or_a_placeholder(reg: Registry) -> None:
    with reg.span("s", mixed=[1, "a"], nested=[[1]], obj=RaisingRepr(), d={"k": 1}) as s:
        fields = s.ref.fields
    assert fields["mixed"] == "[1, 'a']"
    assert fields["nested"] == "[[1]]"
    assert fields["d"] == "{'k': 1}"
    assert fields["obj"] == "<unrepresentable RaisingRepr>"


def test_r15_instrument_always_runs_the_function(reg: Registry) -> None:
    @pykregistry.instrument(registry=reg, ret=True)
    def f(x: Any) -> Any:
        return x

    for arg in (RaisingRepr(), SURROGATE_NAME, HUGE, [1, 2]):
        assert f(arg) is arg
    assert len(reg) == 0


def test_r10_events_carry_exact_values(reg: Registry) -> None:
    seen: list[dict[str, Any]] = []

    class Keep:
        def on_event(self, event: Any) -> None:
            seen.append(dict(event.fields))

    reg.add_layer(Keep())
    reg.event("e", **EXACT)
    assert_exact(seen[0], EXACT)


def test_r10_json_lines_write_every_value(tmp_path: Path) -> None:
    path = tmp_path / "values.jsonl"
    with JsonLines(str(path)) as out:
        reg = Registry(layers=[out])
        with reg.span("s", **EXACT):
            pass
    (line,) = [json.loads(text) for text in path.read_text().splitlines()]
    fields = line["fields"]
    assert fields["surrogates"] == SURROGATE_NAME  # \udce9 escaped, read back by json
    assert fields["lone"] == "\udc80"
    assert fields["nul"] == "a\x00b"
    assert fields["ints"] == [1, 2, 3]
    assert fields["strs"] == ["a", SURROGATE_NAME]
    assert fields["big"] == 10**40  # a JSON number of any size
    # Past Python's decimal limit: hexadecimal, as a string int(s, 0) reads.
    assert int(fields["past_the_str_limit"], 0) == HUGE
    assert fields["empty"] == []


@given(value=st.one_of(st.text(), st.integers(), st.lists(st.text()), st.tuples(st.integers())))
def test_r10_property_text_and_ints_read_back(value: Any) -> None:
    reg = Registry()
    with reg.span("s", v=value) as s:
        got = s.ref.fields["v"]
    assert got == value
    assert type(got) is type(value)


def test_r10_tree_recorder_renders_every_value(reg: Registry) -> None:
    """`repr()` of an int past the decimal limit raises ValueError, so
    `TreeRecorder.render()` raised on a span holding one (found by the
    garbage-collection pressure harness): it shows such ints in hex."""
    recorder = TreeRecorder()
    reg.add_layer(recorder)
    with reg.span("s", **EXACT), reg.span("inner", one=(HUGE,), few=[HUGE, 1]):
        reg.event("e", huge=HUGE)
    drawn = recorder.render()
    assert f"past_the_str_limit={hex(HUGE)}" in drawn
    assert f"one=({hex(HUGE)},)" in drawn
    assert f"few=[{hex(HUGE)}, 1]" in drawn
    assert f"huge={hex(HUGE)}" in drawn
    assert "surrogates='caf\\udce9.txt'" in drawn
    assert "bools=(True, False)" in drawn
    assert "empty=[]" in drawn
