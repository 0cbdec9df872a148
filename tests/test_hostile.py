"""A hypothesis fuzz of the ergonomic API with hostile values (issue 9):
values whose `__repr__`, `__eq__`, `__hash__` or `__str__` raise, strings with
lone surrogates, ints past Python's decimal limit, odd exception classes and
containers of all of these, passed as fields, records, `@instrument`
arguments and return values, and raised out of spans.

Whatever happens, the function runs, the user's exception propagates
unchanged (the very object), and nothing stays live (R10, R15)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pykregistry
from pykregistry import Registry


class Raises(Exception):
    pass


class Hostile:
    """An object whose dunders raise."""

    def __repr__(self) -> str:
        raise Raises("repr")

    def __str__(self) -> str:
        raise Raises("str")

    def __eq__(self, other: object) -> bool:
        raise Raises("eq")

    def __hash__(self) -> int:
        raise Raises("hash")


class IntSub(int):
    def __repr__(self) -> str:
        raise Raises("int repr")


class StrSub(str):
    def __repr__(self) -> str:
        raise Raises("str repr")


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    # Built by a map: hypothesis's own repr of a strategy holding an int
    # past the decimal limit would fail.
    st.sampled_from([1, -1]).map(lambda sign: sign * 10**5000),
    st.sampled_from([2**64, -(2**63) - 1]),
    st.floats(allow_nan=True),
    st.text(),
    st.sampled_from([os.fsdecode(b"caf\xe9.txt"), "\udc80", "\ud800x", "a\x00b"]),
)
HOSTILE = st.one_of(
    st.builds(Hostile),
    st.builds(IntSub, st.integers()),
    st.builds(StrSub, st.text()),
)
VALUES = st.recursive(
    st.one_of(SCALARS, HOSTILE),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
    ),
    max_leaves=8,
)
FIELDS = st.dictionaries(
    st.text(alphabet="abcdefgh_", min_size=1, max_size=6).filter(
        lambda k: k not in ("level", "target", "parent")
    ),
    VALUES,
    max_size=4,
)


def odd_exception(module: Any) -> BaseException:
    cls = type("Odd", (Exception,), {"__module__": module})
    return cls("boom")


EXCEPTIONS = st.one_of(
    st.sampled_from([None, 42, "", "builtins", "deep.module"]).map(odd_exception),
    st.builds(Raises, st.text()),
    st.just(ValueError(Hostile())),
)


@settings(max_examples=150, deadline=None)
@given(fields=FIELDS, records=FIELDS, args=st.lists(VALUES, max_size=3), ret=VALUES)
def test_hostile_values_never_reach_the_program(
    fields: dict[str, Any], records: dict[str, Any], args: list[Any], ret: Any
) -> None:
    reg = Registry()
    ran: list[Any] = []

    @pykregistry.instrument(registry=reg, ret=True)
    def f(*a: Any, **kw: Any) -> Any:
        ran.append((a, kw))
        return ret

    with reg.span("s", **fields) as s:
        s.record(**records)
        for key, value in records.items():
            s.record(key, value)
        assert f(*args, **fields) is ret
        reg.event("e", **fields)
    assert len(ran) == 1
    assert len(reg) == 0


@settings(max_examples=100, deadline=None)
@given(exc=EXCEPTIONS, fields=FIELDS)
def test_user_exceptions_leave_spans_unchanged(exc: BaseException, fields: dict[str, Any]) -> None:
    reg = Registry()

    @pykregistry.instrument(registry=reg)
    def g() -> None:
        raise exc

    with pytest.raises(type(exc)) as info, reg.span("s", **fields):
        raise exc
    assert info.value is exc
    with pytest.raises(type(exc)) as info2:
        g()
    assert info2.value is exc
    assert len(reg) == 0
