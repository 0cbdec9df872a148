"""W3C trace context (issue 11, part 1): `inject` writes `traceparent` and
`tracestate`, `extract` reads them back as a `RemoteParent` and never
raises, and a span with a remote parent continues the remote trace, also in
another process.

The validity cases are those of the W3C test suite (w3c/trace-context,
`test/test.py`), through `extract` as a server would see the headers."""

from __future__ import annotations

import asyncio
import email.message
import http.client
import io
import json
import multiprocessing
import os
import pickle
import re
import subprocess
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pykregistry
from pykregistry import (
    Callsite,
    JsonLines,
    Registry,
    RemoteParent,
    SpanClosedError,
    SpanNotFoundError,
    SpanUsageWarning,
    extract,
    inject,
)

TRACE = 0x12345678901234567890123456789012
SPAN = 0x1234567890123456
TP = "00-12345678901234567890123456789012-1234567890123456-01"

# The specification's example.
CONGO = RemoteParent(
    0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 0x01, "congo=t61rcWkgMzE"
)


def remote(tp: str, *tracestate: str) -> RemoteParent | None:
    """What `extract` makes of these headers, sent as a server gets them."""
    headers = [("traceparent", tp)] + [("tracestate", ts) for ts in tracestate]
    return extract(headers)


def ids(r: RemoteParent | None) -> tuple[int, int, int] | None:
    return None if r is None else (r.trace_id, r.span_id, r.trace_flags)


def found(r: RemoteParent | None) -> RemoteParent:
    assert r is not None
    return r


def view(span: pykregistry.Span) -> pykregistry.SpanRef:
    ref = span.ref
    assert ref is not None
    return ref


# === extract: traceparent ===


def test_extract_reads_a_valid_traceparent() -> None:
    r = extract({"traceparent": TP})
    assert r is not None
    assert (r.trace_id, r.span_id, r.trace_flags, r.sampled) == (TRACE, SPAN, 1, True)
    assert r.tracestate is None
    assert r.traceparent == TP
    assert ids(remote(TP.replace("-01", "-00"))) == (TRACE, SPAN, 0)
    assert found(remote(TP.replace("-01", "-00"))).sampled is False


@pytest.mark.parametrize(
    "header",
    [
        f" {TP}",
        f"\t{TP}",
        f"{TP} ",
        f"{TP}\t",
        f"\t {TP} \t",
    ],
)
def test_extract_ignores_surrounding_whitespace(header: str) -> None:
    assert ids(remote(header)) == (TRACE, SPAN, 1)


@pytest.mark.parametrize(
    "header",
    [
        # version 00 takes nothing after the flags
        f"{TP}.",
        f"{TP}-what-the-future-will-be-like",
        # version ff is forbidden
        TP.replace("00", "ff", 1),
        # version: illegal characters, too long, too short
        ".0-12345678901234567890123456789012-1234567890123456-01",
        "0.-12345678901234567890123456789012-1234567890123456-01",
        "000-12345678901234567890123456789012-1234567890123456-01",
        "0-12345678901234567890123456789012-1234567890123456-01",
        # trace id: all zero, illegal characters, too long, too short
        "00-00000000000000000000000000000000-1234567890123456-01",
        "00-.2345678901234567890123456789012-1234567890123456-01",
        "00-1234567890123456789012345678901.-1234567890123456-01",
        "00-123456789012345678901234567890123-1234567890123456-01",
        "00-1234567890123456789012345678901-1234567890123456-01",
        # parent id: all zero, illegal characters, too long, too short
        "00-12345678901234567890123456789012-0000000000000000-01",
        "00-12345678901234567890123456789012-.234567890123456-01",
        "00-12345678901234567890123456789012-123456789012345.-01",
        "00-12345678901234567890123456789012-12345678901234567-01",
        "00-12345678901234567890123456789012-123456789012345-01",
        # flags: illegal characters, too long, too short
        "00-12345678901234567890123456789012-1234567890123456-.0",
        "00-12345678901234567890123456789012-1234567890123456-0.",
        "00-12345678901234567890123456789012-1234567890123456-001",
        "00-12345678901234567890123456789012-1234567890123456-1",
        # uppercase hex
        "00-1234567890123456789012345678901A-1234567890123456-01",
        "00-12345678901234567890123456789012-1234567890123456-0A",
        # nothing
        "",
        "   ",
    ],
)
def test_extract_rejects_what_the_specification_calls_invalid(header: str) -> None:
    assert remote(header) is None
    assert remote(header, "foo=1") is None, "a tracestate alone is no parent"


def test_extract_reads_future_versions_by_their_first_four_fields() -> None:
    future = TP.replace("00", "cc", 1)
    assert ids(remote(future)) == (TRACE, SPAN, 1)
    assert ids(remote(future + "-what-the-future-will-be-like")) == (TRACE, SPAN, 1)
    assert remote(future + ".what-the-future-will-be-like") is None
    # Passed on as the version this implementation knows.
    assert found(remote(future)).traceparent == TP


def test_extract_clears_reserved_flags_and_keeps_random() -> None:
    assert ids(remote(TP.replace("-01", "-ff"))) == (TRACE, SPAN, 0x03)
    assert ids(remote(TP.replace("-01", "-02"))) == (TRACE, SPAN, 0x02)
    assert ids(remote(TP.replace("-01", "-04"))) == (TRACE, SPAN, 0x00)


def test_two_traceparent_headers_are_invalid() -> None:
    other = TP.replace("9012-", "9011-", 1)
    assert extract([("traceparent", other), ("traceparent", TP)]) is None
    assert extract({"traceparent": [other, TP]}) is None
    assert extract({"Traceparent": TP, "TRACEPARENT": TP}) is None


# === extract: header names and carriers ===


@pytest.mark.parametrize("name", ["traceparent", "TraceParent", "TrAcEpArEnT", "TRACEPARENT"])
def test_header_names_are_case_insensitive(name: str) -> None:
    assert ids(extract({name: TP})) == (TRACE, SPAN, 1)
    assert ids(extract([(name, TP)])) == (TRACE, SPAN, 1)
    assert ids(extract([(name.encode(), TP.encode())])) == (TRACE, SPAN, 1)


@pytest.mark.parametrize("name", ["trace-parent", "trace.parent", "trace_parent", "x-traceparent"])
def test_other_names_are_not_the_header(name: str) -> None:
    assert extract({name: TP}) is None


def test_carriers_servers_and_clients_give() -> None:
    expected = (TRACE, SPAN, 1)
    # ASGI: scope["headers"], bytes pairs.
    asgi = [(b"host", b"example.com"), (b"traceparent", TP.encode()), (b"tracestate", b"a=1")]
    assert ids(extract(asgi)) == expected
    assert found(extract(asgi)).tracestate == "a=1"
    # WSGI: the environ.
    environ = {"REQUEST_METHOD": "GET", "HTTP_TRACEPARENT": TP, "HTTP_TRACESTATE": "a=1"}
    assert ids(extract(environ)) == expected
    assert found(extract(environ)).tracestate == "a=1"
    # http.server / http.client: an email message, case-insensitive, with
    # repeated headers.
    message = http.client.parse_headers(
        io.BytesIO(f"Traceparent: {TP}\r\nTracestate: a=1\r\nTracestate: b=2\r\n\r\n".encode())
    )
    assert ids(extract(message)) == expected
    assert found(extract(message)).tracestate == "a=1,b=2"
    twice = email.message.Message()
    twice["traceparent"] = TP
    twice["traceparent"] = TP
    assert extract(twice) is None
    # A process's environment, bytes values, lists of values, tuples.
    assert ids(extract({"PATH": "/bin", "TRACEPARENT": TP})) == expected
    assert ids(extract({"traceparent": TP.encode()})) == expected
    assert ids(extract({"traceparent": bytearray(TP.encode())})) == expected
    assert ids(extract({"traceparent": [TP]})) == expected
    assert ids(extract((("traceparent", TP),))) == expected


def test_a_defaultdict_carrier_is_not_changed() -> None:
    carrier: defaultdict[str, str] = defaultdict(str)
    assert extract(carrier) is None
    assert dict(carrier) == {}


def test_the_environment_of_this_process_works_as_a_carrier() -> None:
    os.environ["TRACEPARENT"] = TP
    try:
        assert ids(extract(os.environ)) == (TRACE, SPAN, 1)
    finally:
        del os.environ["TRACEPARENT"]


# === extract: tracestate ===


def test_tracestate_headers_are_combined_in_order() -> None:
    r = remote(TP, "foo=1,bar=2", "rojo=1,congo=2", "baz=3")
    assert r is not None
    assert r.tracestate == "foo=1,bar=2,rojo=1,congo=2,baz=3"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([""], None),
        (["foo=1", ""], "foo=1"),
        (["", "foo=1"], "foo=1"),
        (["foo=1 \t , \t bar=2, \t baz=3"], "foo=1,bar=2,baz=3"),
        (["\t foo=1 \t"], "foo=1"),
        (["foo=1,foo=2"], "foo=1"),
        (["foo=1", "foo=2"], "foo=1"),
        (["foo@=1,bar=2"], "foo@=1,bar=2"),
        (["foo@bar@baz=1,bar=2"], "foo@bar@baz=1,bar=2"),
        # Malformed: dropped whole; the traceparent stands.
        (["foo =1"], None),
        (["FOO=1"], None),
        (["foo.bar=1"], None),
        (["@foo=1,bar=2"], None),
        (["foo=bar=baz"], None),
        (["foo=,bar=3"], None),
        (["foo=1", "z" * 257 + "=1"], None),
        ([",".join(f"bar{i:02}={i:02}" for i in range(1, 34))], None),
    ],
)
def test_tracestate_as_the_specification_says(headers: list[str], expected: str | None) -> None:
    r = found(remote(TP, *headers))
    assert ids(r) == (TRACE, SPAN, 1)
    assert r.tracestate == expected


def test_tracestate_of_32_members_is_kept() -> None:
    members = ",".join(f"bar{i:02}={i:02}" for i in range(1, 33))
    assert found(remote(TP, members)).tracestate == members


def test_tracestate_longer_than_512_loses_whole_members_from_the_right() -> None:
    members = [f"k{i:02}={'z' * 12}" for i in range(32)]  # 16 characters each
    r = found(remote(TP, ",".join(members)))
    assert r.tracestate == ",".join(members[:30])
    assert len(r.tracestate) <= 512


def test_a_tracestate_of_another_type_is_dropped() -> None:
    assert found(extract({"traceparent": TP, "tracestate": 5})).tracestate is None
    assert found(extract({"traceparent": TP, "tracestate": b"a=1"})).tracestate == "a=1"


# === extract never raises ===


class Boom(Exception):
    pass


class RaisingMapping:
    """Every way of reading it raises."""

    def get(self, key: object, default: object = None) -> object:
        raise Boom("get")

    def __getitem__(self, key: object) -> object:
        raise Boom("getitem")

    def items(self) -> object:
        raise Boom("items")


class RaisingAttributes:
    def __getattr__(self, name: str) -> object:
        raise Boom(name)


class EndlessItems:
    """A mapping whose items never end."""

    def get(self, key: object, default: object = None) -> object:
        return None

    def items(self) -> Iterator[tuple[str, str]]:
        while True:
            yield ("x", "y")


class RaisingMidway:
    def items(self) -> Iterator[tuple[str, str]]:
        yield ("traceparent", TP)
        raise Boom("midway")


class Anything:
    """Answers every question with itself."""

    def __getattr__(self, name: str) -> Any:
        return self

    def __call__(self, *args: object) -> Any:
        return self

    def __iter__(self) -> Iterator[Any]:
        return iter([self, self])


class WeirdStr(str):
    def lower(self) -> str:
        raise Boom("lower")

    def __str__(self) -> str:
        raise Boom("str")


@pytest.mark.parametrize(
    "carrier",
    [
        None,
        0,
        TP,
        TP.encode(),
        object(),
        RaisingMapping(),
        RaisingAttributes(),
        EndlessItems(),
        RaisingMidway(),
        Anything(),
        {"traceparent": None},
        {"traceparent": 5},
        {"traceparent": object()},
        {"traceparent": "\udcff"},
        {"traceparent": [None]},
        {"traceparent": TP + "\udcff"},
        {1: TP, None: TP, (): TP},
        [None, 1, ("traceparent",), ("a", "b", "c"), (1, TP)],
        [("traceparent", TP, "extra")],
    ],
    ids=repr,
)
def test_extract_never_raises(carrier: Any) -> None:
    assert extract(carrier) is None


def test_a_strange_tracestate_never_costs_the_traceparent() -> None:
    for tracestate in [RaisingAttributes(), Anything(), [None], "\udcff", "a=\udcff"]:
        r = found(extract({"traceparent": TP, "tracestate": tracestate}))
        assert ids(r) == (TRACE, SPAN, 1)
        assert r.tracestate is None


def test_extract_reads_str_subclasses_by_their_text() -> None:
    assert ids(extract([(WeirdStr("Traceparent"), WeirdStr(TP))])) == (TRACE, SPAN, 1)


def test_extract_lets_keyboard_interrupt_through() -> None:
    class Interrupting:
        def get(self, key: object) -> object:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(Interrupting())


header_names = st.sampled_from(
    ["traceparent", "TRACEPARENT", "tracestate", "Tracestate", "HTTP_TRACEPARENT", "x"]
)
header_values = st.one_of(
    st.text(),
    st.binary(),
    st.from_regex(r"\A[ \t]?[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?\Z"),
    st.none(),
    st.integers(),
)
carriers = st.recursive(
    st.one_of(
        st.dictionaries(st.one_of(header_names, st.text(), st.binary()), header_values),
        st.lists(st.tuples(st.one_of(header_names, st.binary()), header_values)),
        header_values,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(header_names, inner, max_size=4)
    ),
    max_leaves=12,
)


@given(carriers)
def test_extract_never_raises_for_any_carrier(carrier: Any) -> None:
    r = extract(carrier)
    assert r is None or isinstance(r, RemoteParent)


# An oracle written from the specification's text, independent of the
# native parser.
TRACEPARENT_RE = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-.*)?",
    re.S,
)


def oracle(header: str) -> tuple[int, int, int] | None:
    m = TRACEPARENT_RE.fullmatch(header.strip(" \t"))
    if m is None or m["version"] == "ff" or (m["version"] == "00" and m["rest"] is not None):
        return None
    trace, span = int(m["trace"], 16), int(m["span"], 16)
    if trace == 0 or span == 0:
        return None
    return trace, span, int(m["flags"], 16) & 0x03


near_traceparents = st.one_of(
    st.text(),
    st.from_regex(
        r"\A[ \t]{0,2}[0-9a-fA-F.x]{2}-[0-9a-f0]{31,33}-[0-9a-fA-F0]{15,17}-[0-9a-f.]{1,3}"
        r"([-.][a-z-]{0,6})?[ \t]{0,2}\Z"
    ),
    st.builds(
        lambda v, t, s, f, rest: f"{v:02x}-{t:032x}-{s:016x}-{f:02x}{rest}",
        st.integers(0, 255),
        st.sampled_from([0, 1, TRACE, 2**128 - 1]),
        st.sampled_from([0, 1, SPAN, 2**64 - 1]),
        st.integers(0, 255),
        st.sampled_from(["", "-", "-x", ".x", " ", "\t-a"]),
    ),
)


@given(near_traceparents)
def test_extract_accepts_exactly_what_the_grammar_does(header: str) -> None:
    assert ids(extract({"traceparent": header})) == oracle(header)


@given(
    st.integers(1, 2**128 - 1),
    st.integers(1, 2**64 - 1),
    st.sampled_from([0, 1, 2, 3]),
    st.one_of(st.none(), st.from_regex(r"\A[a-z][a-z0-9_*/@-]{0,8}=[!-+\--<>-~]{1,8}\Z")),
)
def test_inject_and_extract_round_trip(
    trace_id: int, span_id: int, flags: int, tracestate: str | None
) -> None:
    r = RemoteParent(trace_id, span_id, flags, tracestate)
    carrier: dict[str, str] = {}
    inject(carrier, r)
    assert carrier["traceparent"] == f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
    assert carrier.get("tracestate") == tracestate
    assert extract(carrier) == r
    assert RemoteParent.from_headers(r.traceparent, r.tracestate) == r


# === RemoteParent ===


def test_remote_parent_is_a_value() -> None:
    r = RemoteParent(TRACE, SPAN)
    assert (r.trace_flags, r.tracestate) == (1, None)
    assert r == RemoteParent(TRACE, SPAN, 1, None)
    assert r != RemoteParent(TRACE, SPAN, 0)
    assert r != RemoteParent(TRACE, SPAN, 1, "a=1")
    assert len({r, RemoteParent(TRACE, SPAN), CONGO}) == 2
    assert r != TP
    assert pickle.loads(pickle.dumps(CONGO)) == CONGO
    assert repr(CONGO) == (
        "RemoteParent(trace_id=0x4bf92f3577b34da6a3ce929d0e0e4736, "
        "span_id=0x00f067aa0ba902b7, trace_flags=0x01, tracestate='congo=t61rcWkgMzE')"
    )
    assert eval(repr(CONGO), {"RemoteParent": RemoteParent}) == CONGO
    with pytest.raises(AttributeError):
        CONGO.trace_id = 1  # type: ignore[misc]


def test_remote_parent_normalizes_its_tracestate() -> None:
    assert RemoteParent(TRACE, SPAN, 1, " a=1 , b=2,a=3").tracestate == "a=1,b=2"
    assert RemoteParent(TRACE, SPAN, 1, " , ").tracestate is None


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0, SPAN), ValueError),
        ((TRACE, 0), ValueError),
        ((2**128, SPAN), ValueError),
        ((TRACE, 2**64), ValueError),
        ((-1, SPAN), ValueError),
        ((TRACE, SPAN, 4), ValueError),
        ((TRACE, SPAN, 256), ValueError),
        ((TRACE, SPAN, -1), ValueError),
        ((TRACE, SPAN, 1, "FOO=1"), ValueError),
        ((TRACE, SPAN, 1, 5), TypeError),
        ((True, SPAN), TypeError),
        ((str(TRACE), SPAN), TypeError),
        ((TRACE, 1.0), TypeError),
    ],
)
def test_remote_parent_rejects_what_w3c_cannot_carry(
    args: tuple[Any, ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        RemoteParent(*args)


def test_from_headers_never_raises() -> None:
    assert RemoteParent.from_headers(TP) == RemoteParent(TRACE, SPAN)
    assert RemoteParent.from_headers(TP.encode(), b"a=1") == RemoteParent(TRACE, SPAN, 1, "a=1")
    for bad in [None, 5, object(), "\udcff", [TP], CONGO.traceparent.upper()]:
        assert RemoteParent.from_headers(bad) is None
    assert RemoteParent.from_headers(TP, object()) == RemoteParent(TRACE, SPAN)


# === spans that continue a remote parent ===


def test_a_span_with_a_remote_parent_is_a_root_that_continues_the_trace(reg: Registry) -> None:
    with reg.span("outer"), reg.span("server", parent=CONGO) as server:
        ref = view(server)
        assert ref is not None
        assert ref.parent_id is None, "a root in the registry, even inside outer"
        assert ref.trace_id == CONGO.trace_id
        assert ref.parent_span_id == CONGO.span_id
        assert ref.span_id != CONGO.span_id
        assert (ref.trace_flags, ref.tracestate) == (1, "congo=t61rcWkgMzE")
        with reg.span("db") as db, reg.span("query", parent=db) as query:
            for child, parent in [(db, server), (query, db)]:
                assert view(child).parent_id == parent.id
                assert view(child).trace_id == CONGO.trace_id
                assert view(child).parent_span_id == view(parent).span_id
                assert view(child).tracestate == "congo=t61rcWkgMzE"


def test_every_way_of_making_a_span_takes_a_remote_parent(reg: Registry) -> None:
    unsampled = RemoteParent(TRACE, SPAN, 0)
    site = Callsite("site", registry=reg)
    sid = reg.new_span("new_span", parent=unsampled)
    handles = [site.span(parent=unsampled), reg.span("span", parent=unsampled)]
    for ref in [reg.get(sid), *(view(h) for h in handles)]:
        assert ref is not None
        assert (ref.parent_id, ref.trace_id, ref.parent_span_id) == (None, TRACE, SPAN)
        assert ref.trace_flags == 0
    reg.try_close(sid)
    for h in handles:
        h.close()


def test_the_default_registry_shortcuts_take_a_remote_parent() -> None:
    with pykregistry.info_span("shortcut", parent=CONGO) as s:
        assert view(s).parent_span_id == CONGO.span_id
        assert view(s).trace_id == CONGO.trace_id


def test_an_event_under_a_remote_parent_carries_its_identity(reg: Registry, tmp_path: Path) -> None:
    seen: list[tuple[Any, ...]] = []

    class Layer:
        def on_event(self, event: pykregistry.Event) -> None:
            seen.append((event.parent_id, event.trace_id, event.span_id))

    path = tmp_path / "events.jsonl"
    with JsonLines(path) as out:
        reg.add_layer(Layer())
        reg.add_layer(out)
        reg.event("received", parent=CONGO)
    assert seen == [(None, CONGO.trace_id, CONGO.span_id)]
    (line,) = lines(path)
    assert (line["trace_id"], line["span_id"]) == (f"{CONGO.trace_id:032x}", "00f067aa0ba902b7")


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_json_lines_show_the_remote_parents_ids(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    with JsonLines(path, events=False) as out:
        reg = make(layers=[out])
        with reg.span("server", parent=CONGO), reg.span("db"):
            pass
    db, server = lines(path)
    assert server["trace_id"] == db["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert server["parent_span_id"] == "00f067aa0ba902b7"
    assert server["parent_id"] is None
    assert db["parent_span_id"] == server["span_id"]


def test_a_wrong_parent_names_remote_parents_in_its_message(reg: Registry) -> None:
    with pytest.raises(TypeError, match="RemoteParent"):
        reg.span("x", parent="00-...")  # type: ignore[arg-type]


# === inject ===


def traceparent_of(ref: pykregistry.SpanRef, flags: int = 1) -> str:
    return f"00-{ref.trace_id:032x}-{ref.span_id:016x}-{flags:02x}"


def test_inject_writes_the_current_span(reg: Registry) -> None:
    carrier: dict[str, str] = {}
    with reg.span("client") as client:
        inject(carrier, registry=reg)
        assert carrier == {"traceparent": traceparent_of(view(client))}
        nested: dict[str, str] = {}
        with reg.span("inner") as inner:
            inject(nested, registry=reg)
            expected = traceparent_of(view(inner))
        assert nested == {"traceparent": expected}


def test_inject_without_a_current_span_writes_nothing(reg: Registry) -> None:
    carrier = {"keep": "me"}
    inject(carrier, registry=reg)
    assert carrier == {"keep": "me"}
    # The current span of another registry is not this one's.
    with Registry().span("elsewhere"):
        inject(carrier, registry=reg)
    assert carrier == {"keep": "me"}


def test_inject_takes_a_span_a_view_an_id_or_a_remote_parent(reg: Registry) -> None:
    other = Registry(strict=True)
    with reg.span("a") as a, other.span("b") as b:
        expected = {"traceparent": traceparent_of(view(a))}
        spans: list[pykregistry.Span | pykregistry.SpanRef | int | None] = [a, view(a), a.id]
        for span in spans:
            carrier: dict[str, str] = {}
            inject(carrier, span, registry=reg)
            assert carrier == expected
        # A handle or view names its own registry's span.
        spans = [b, view(b)]
        for span in spans:
            carrier = {}
            inject(carrier, span, registry=reg)
            assert carrier == {"traceparent": traceparent_of(view(b))}
        carrier = {}
        inject(carrier, CONGO)
        assert carrier == {"traceparent": CONGO.traceparent, "tracestate": CONGO.tracestate}


def test_inject_passes_on_the_remote_flags_and_tracestate(reg: Registry) -> None:
    r = RemoteParent(TRACE, SPAN, 0x02, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    with reg.span("server", parent=r), reg.span("client") as client:
        carrier: dict[str, str] = {}
        inject(carrier, registry=reg)
        expected = f"00-{TRACE:032x}-{view(client).span_id:016x}-02"
    assert carrier == {
        "traceparent": expected,
        "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
    }


def test_inject_names_the_span_the_header_is_for(reg: Registry) -> None:
    with reg.span("server", parent=CONGO), reg.span("client") as client:
        carrier: dict[str, str] = {}
        inject(carrier, registry=reg)
        ref = view(client)
        assert ref is not None
        assert carrier["traceparent"] == traceparent_of(ref)
        assert found(extract(carrier)).span_id == ref.span_id


def test_inject_uses_the_default_registry() -> None:
    carrier: dict[str, str] = {}
    with pykregistry.span("default") as s:
        inject(carrier)
        expected = traceparent_of(view(s))
    assert carrier == {"traceparent": expected}


def test_inject_for_a_closed_span_warns_and_writes_nothing() -> None:
    lenient = Registry()
    span = lenient.span("s")
    view, sid = span.ref, span.id
    span.close()
    for closed in [span, view, sid]:
        carrier: dict[str, str] = {}
        with pytest.warns(SpanUsageWarning):
            inject(carrier, closed, registry=lenient)
        assert carrier == {}


def test_inject_for_a_closed_span_raises_on_a_strict_registry(reg: Registry) -> None:
    span = reg.span("s")
    view, sid = span.ref, span.id
    span.close()
    with pytest.raises(SpanClosedError):
        inject({}, span, registry=reg)
    with pytest.raises(SpanClosedError):
        inject({}, view, registry=reg)
    with pytest.raises(SpanNotFoundError):
        inject({}, sid, registry=reg)


def test_inject_for_the_disabled_span_writes_nothing() -> None:
    filtered = Registry(level="warn")
    with filtered.span("debug", level="debug") as disabled:
        carrier: dict[str, str] = {}
        inject(carrier, disabled, registry=filtered)
        inject(carrier, registry=filtered)
    assert carrier == {}


def test_inject_shape_errors_raise(reg: Registry) -> None:
    with pytest.raises(TypeError, match="span must be"):
        inject({}, "00-...", registry=reg)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a span ID"):
        inject({}, 0, registry=reg)
    with pytest.raises(TypeError):
        inject({}, registry="default")  # type: ignore[arg-type]
    with reg.span("s"), pytest.raises(TypeError):
        inject(object(), registry=reg)


def test_a_task_that_outlives_its_span_injects_that_spans_identity(reg: Registry) -> None:
    async def main() -> tuple[dict[str, str], str]:
        started = asyncio.Event()
        release = asyncio.Event()

        async def worker() -> dict[str, str]:
            started.set()
            await release.wait()
            carrier: dict[str, str] = {}
            inject(carrier, registry=reg)
            return carrier

        with reg.span("request") as request:
            task = asyncio.ensure_future(worker())
            await started.wait()
            expected = traceparent_of(view(request))
        release.set()
        return await task, expected

    carrier, expected = asyncio.run(main())
    assert carrier == {"traceparent": expected}


# === across processes ===

CHILD = """
import os, sys
import pykregistry

reg = pykregistry.Registry(layers=[pykregistry.JsonLines(sys.argv[1])])
remote = pykregistry.extract(os.environ)
with reg.span("child", parent=remote) as child, reg.span("grandchild"):
    print(child.ref.tracestate, child.ref.trace_flags)
"""


def test_a_child_process_continues_the_trace(make: Any, tmp_path: Path) -> None:
    parent_path, child_path = tmp_path / "parent.jsonl", tmp_path / "child.jsonl"
    with JsonLines(parent_path) as out:
        reg = make(layers=[out])
        with reg.span("server", parent=CONGO), reg.span("spawn"):
            env = {k: v for k, v in os.environ.items() if k.lower() != "traceparent"}
            inject(env, registry=reg)
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(child_path)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "congo=t61rcWkgMzE 1\n", "the trace's tracestate and flags"
    spawn, server = lines(parent_path)
    grandchild, child = lines(child_path)
    assert {spawn["trace_id"], grandchild["trace_id"], child["trace_id"]} == {server["trace_id"]}
    assert child["parent_span_id"] == spawn["span_id"]
    assert child["parent_id"] is None
    assert grandchild["parent_span_id"] == child["span_id"]
    span_ids = [line["span_id"] for line in (server, spawn, child, grandchild)]
    assert len(set(span_ids)) == 4


MP_CHILD = """
import pykregistry
reg = pykregistry.Registry(layers=[pykregistry.JsonLines(path)])
with reg.span("worker", parent=remote):
    pass
"""


def test_a_multiprocessing_worker_continues_the_trace_from_a_pickled_parent(
    make: Any, tmp_path: Path
) -> None:
    parent_path, child_path = tmp_path / "parent.jsonl", tmp_path / "child.jsonl"
    ctx = multiprocessing.get_context("spawn")
    with JsonLines(parent_path) as out:
        reg = make(layers=[out])
        with reg.span("dispatch") as dispatch:
            carrier: dict[str, str] = {}
            inject(carrier, dispatch)
            remote = extract(carrier)
            # `exec` is found by name in the worker; its arguments (the
            # RemoteParent among them) are pickled.
            worker = ctx.Process(
                target=exec, args=(MP_CHILD, {"path": str(child_path), "remote": remote})
            )
            worker.start()
            worker.join(120)
    assert worker.exitcode == 0
    (dispatched,) = lines(parent_path)
    (worked,) = lines(child_path)
    assert worked["trace_id"] == dispatched["trace_id"]
    assert worked["parent_span_id"] == dispatched["span_id"]


def test_warnings_from_inject_point_at_the_caller() -> None:
    lenient = Registry()
    span = lenient.span("s")
    span.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inject({}, span, registry=lenient)
    (w,) = caught
    assert w.category is SpanUsageWarning
    assert w.filename == __file__
