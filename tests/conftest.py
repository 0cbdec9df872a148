"""Shared fixtures for the rule tests.

- ``reg``: a fresh :class:`pykregistry.Registry` per test. When the test
  passed, teardown checks that nothing leaked (R9: once every handle is
  released and every entered span exited, ``len(reg) == 0``), so every test
  also checks the counting rules on its way out.
- ``recorder`` / ``Recorder``: a layer that snapshots every call it gets, so
  tests can compare the sequence of lifecycle steps.
- ``unraisable``: collects what reaches ``sys.unraisablehook`` (where a
  raising layer's exception goes) instead of letting pytest turn it into an
  error.
- ``receiver`` / ``grpc_receiver``: an OTLP/HTTP or OTLP/gRPC traces
  receiver on 127.0.0.1, started for the test and stopped after it
  (``tests/otlp_receivers.py``).

Hypothesis profiles are picked by ``HYPOTHESIS_PROFILE``: ``dev`` (few
examples, quick), ``ci`` (more, no deadline), ``long`` (many; the state
machine also scales its own example counts on it). Unset, hypothesis's
``default`` is used.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

import pykregistry

if TYPE_CHECKING:
    from otlp_receivers import Receiver

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a test extra; the rule tests do not need it
    pass
else:
    settings.register_profile("dev", max_examples=20)
    settings.register_profile(
        "ci",
        max_examples=500,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "long",
        max_examples=5000,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "default")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_PASSED] = report.passed
    return report


_PASSED = pytest.StashKey[bool]()


@pytest.fixture
def make() -> Iterator[Any]:
    """Builds registries (with any `Registry` arguments) and checks at
    teardown that none leaked."""
    made: list[pykregistry.Registry] = []

    def build(**kwargs: Any) -> pykregistry.Registry:
        # Strict, as the testing fixtures are: timing mistakes raise (R15).
        kwargs.setdefault("strict", True)
        registry = pykregistry.Registry(**kwargs)
        made.append(registry)
        return registry

    yield build
    gc.collect()
    for registry in made:
        assert len(registry) == 0, f"spans leaked: {registry!r}"


@pytest.fixture
def reg(request: pytest.FixtureRequest) -> Iterator[pykregistry.Registry]:
    """A strict registry (timing mistakes raise, R15), checked for leaks."""
    registry = pykregistry.Registry(strict=True)
    yield registry
    if request.node.stash.get(_PASSED, False):
        gc.collect()
        assert len(registry) == 0, f"spans leaked: {registry!r}"


def snapshot(span: pykregistry.SpanRef) -> dict[str, Any]:
    """What a view shows now (views raise once their span has closed)."""
    return {
        "id": span.id,
        "name": span.name,
        "target": span.target,
        "level": span.level,
        "fields": span.fields,
        "parent_id": span.parent_id,
    }


@dataclass
class Recorder:
    """A layer recording ``(hook, snapshot, *extra)`` for each call."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def on_new_span(self, span: pykregistry.SpanRef) -> None:
        self.calls.append(("new_span", snapshot(span)))

    def on_record(self, span: pykregistry.SpanRef, values: dict[str, Any]) -> None:
        self.calls.append(("record", snapshot(span), values))

    def on_follows_from(self, span: pykregistry.SpanRef, follows: int) -> None:
        self.calls.append(("follows_from", snapshot(span), follows))

    def on_event(self, event: pykregistry.Event) -> None:
        self.calls.append(
            (
                "event",
                {
                    "message": event.message,
                    "level": event.level,
                    "target": event.target,
                    "parent_id": event.parent_id,
                    "fields": event.fields,
                },
            )
        )

    def on_enter(self, span: pykregistry.SpanRef) -> None:
        self.calls.append(("enter", snapshot(span)))

    def on_exit(self, span: pykregistry.SpanRef) -> None:
        self.calls.append(("exit", snapshot(span)))

    def on_close(self, span: pykregistry.SpanRef) -> None:
        self.calls.append(("close", snapshot(span)))

    def hooks(self) -> list[tuple[str, int | None]]:
        """``(hook, span id)`` per call (``None`` for events)."""
        return [(c[0], c[1].get("id")) for c in self.calls]

    def of(self, hook: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == hook]


@pytest.fixture(name="Recorder")
def recorder_class() -> type[Recorder]:
    return Recorder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@dataclass
class Unraisables:
    seen: list[Any] = field(default_factory=list)

    @property
    def exceptions(self) -> list[BaseException | None]:
        return [u.exc_value for u in self.seen]


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> Unraisables:
    """Collects ``sys.unraisablehook`` calls for the duration of the test."""
    collected = Unraisables()
    monkeypatch.setattr(sys, "unraisablehook", collected.seen.append)
    return collected


# The receivers' module is imported when a test asks for one: it needs
# grpcio and opentelemetry-proto (the test extra), which the rule tests do
# not. A test that asks without them installed fails on the import.


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP traces receiver on 127.0.0.1 (``POST /v1/traces``)."""
    from otlp_receivers import serve_http

    with serve_http() as rec:
        yield rec


@pytest.fixture
def grpc_receiver() -> Iterator[Receiver]:
    """An OTLP/gRPC traces receiver on 127.0.0.1 (``TraceService/Export``)."""
    from otlp_receivers import serve_grpc

    with serve_grpc() as rec:
        yield rec
