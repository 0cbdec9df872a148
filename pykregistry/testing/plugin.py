"""The pytest plugin: the ``span_registry`` fixture, and the hook that tells
it whether its test passed. ``pytest_plugins = ["pykregistry.testing"]``
loads both: the package re-exports them, as pytest looks for a plugin's
fixtures and hooks in the module it names.

(PYTEST_DONT_REWRITE, as the whole of :mod:`pykregistry.testing`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pykregistry import Registry
from pykregistry.testing.leaks import LiveSpans, assert_no_leaks

_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Notes whether each test passed, so that ``span_registry`` checks
    for leaks only after a test that passed."""
    report = yield
    if report.when == "call":
        item.stash[_PASSED] = report.passed
    return report


@pytest.fixture
def span_registry(request: pytest.FixtureRequest) -> Iterator[Registry]:
    """A fresh :class:`~pykregistry.Registry` with a :class:`LiveSpans`
    layer; a test that passes but leaves spans live fails at teardown
    with :func:`leak_report`. Enable it with ``pytest_plugins =
    ["pykregistry.testing"]`` in your root ``conftest.py``. It is
    strict: a handle used after its block ended, or a closed parent,
    raises instead of warning (SPEC R15)."""
    registry = Registry(layers=[LiveSpans()], strict=True)
    yield registry
    # Without the plugin's hook (the fixture imported by hand), check anyway.
    if request.node.stash.get(_PASSED, True):
        try:
            assert_no_leaks(registry)
        except AssertionError as e:
            report = str(e)
        else:
            return
        pytest.fail(f"{request.node.nodeid}: {report}", pytrace=False)
