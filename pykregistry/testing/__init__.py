"""Property-test span lifecycles: a reference model of the registry's rules,
hypothesis strategies and a state machine built on it, and leak checks.

Needs `hypothesis <https://hypothesis.readthedocs.io>`_ (``pip install
hypothesis``, or ``pip install 'pykregistry[test]'``); importing
:mod:`pykregistry` itself never imports it. ``pytest`` is optional: without
it, everything but the fixture is available.

What is here:

- :class:`RegistryModel` — the reference model of the rules R2-R9: the
  references a test holds on each span, parents, and each context's stack of
  entries, with every span's expected reference count derived from R9 and
  spans closing (cascading to their parents) when it reaches 0.
  :func:`assert_matches_model` compares a registry with it.
- :func:`span_programs` / :func:`span_ops` — hypothesis strategies for
  programs of span operations (create with a root, contextual or explicit
  parent; clone; close; enter; exit; record; across several contexts), and
  :func:`run_program`, which runs one in ``contextvars.Context`` objects,
  checking every step against the model. :class:`ProgramChecker` checks a
  program whose steps you run yourself (on threads, in asyncio tasks).
- :class:`SpanLifecycleMachine` — a hypothesis ``RuleBasedStateMachine``
  over spans, handles and contexts, checking counts, parents, ``len`` and
  every context's current span after every step. Subclass it and add rules
  that call your own instrumented code.
- :func:`assert_no_leaks` — fails with a report of every span still live:
  ID, name, target, parent, reference count and what may hold it. Add a
  :class:`LiveSpans` layer to the registry for the full report.
- the ``span_registry`` pytest fixture: a fresh registry per test that fails
  the test if it leaves spans live. Enable it in your root ``conftest.py``::

      pytest_plugins = ["pykregistry.testing"]

A property test of your own code in a few lines::

    from hypothesis import given
    from pykregistry import Registry
    from pykregistry.testing import run_program, span_programs

    @given(span_programs(contexts=3))
    def test_rules_hold(program):
        run_program(Registry(), program, contexts=3)

Every name here is importable from :mod:`pykregistry.testing` itself; the
modules behind them are ``model`` (the reference model), ``programs``
(strategies, steps and their runners), ``machine`` (the state machine),
``leaks`` (the report and the ``LiveSpans`` layer) and ``plugin`` (the
pytest fixture and its hook).

(PYTEST_DONT_REWRITE: the assertions here carry their own messages, so pytest
need not rewrite this package, and it may be imported before pytest loads it
as a plugin. Each module of the package says so too: pytest would rewrite
the ones it imports after loading the plugin.)
"""

from __future__ import annotations

import importlib.util

# Checked before importing, rather than by catching the ImportError: a
# hypothesis that is installed but broken shows its own error, and no name
# of the handler lingers in the module (stubtest checks it).
if importlib.util.find_spec("hypothesis") is None:  # pragma: no cover - the environment
    raise ImportError(
        "pykregistry.testing needs hypothesis: pip install hypothesis "
        "(or pip install 'pykregistry[test]')",
        name="hypothesis",
    )

from pykregistry.testing.leaks import LiveSpans, TrackedSpan, assert_no_leaks, leak_report
from pykregistry.testing.machine import MachineContext, SpanLifecycleMachine
from pykregistry.testing.model import (
    NEVER_ISSUED,
    ModelEntry,
    ModelSpan,
    RegistryModel,
    assert_matches_model,
    model_mismatches,
)
from pykregistry.testing.programs import (
    INDEX,
    OP_KINDS,
    VALUE,
    ProgramChecker,
    SpanOp,
    Step,
    perform_step,
    predict_step,
    random_program,
    resolve_op,
    run_program,
    span_ops,
    span_programs,
)
from pykregistry.testing.programs import Outcome as Outcome

# The pytest plugin, where pytest is installed (without it, everything but
# the fixture is here). `pytest_plugins = ["pykregistry.testing"]` names this
# package, and pytest finds a plugin's fixtures and hooks in the module it
# names: hence these two, not in __all__ (a star import would bring a hook
# into a test module).
if importlib.util.find_spec("pytest") is not None:
    from pykregistry.testing.plugin import pytest_runtest_makereport as pytest_runtest_makereport
    from pykregistry.testing.plugin import span_registry as span_registry

__all__ = [
    "INDEX",
    "NEVER_ISSUED",
    "OP_KINDS",
    "VALUE",
    "LiveSpans",
    "MachineContext",
    "ModelEntry",
    "ModelSpan",
    "ProgramChecker",
    "RegistryModel",
    "SpanLifecycleMachine",
    "SpanOp",
    "Step",
    "TrackedSpan",
    "assert_matches_model",
    "assert_no_leaks",
    "leak_report",
    "model_mismatches",
    "perform_step",
    "predict_step",
    "random_program",
    "resolve_op",
    "run_program",
    "span_ops",
    "span_programs",
]
