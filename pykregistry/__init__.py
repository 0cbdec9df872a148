"""pykregistry: a span registry for Python with a lock-free Rust core.

Spans with names, levels, targets and fields; parent/child trees; a current
span per thread and per asyncio task; reference-counted lifetimes that close
spans deterministically; and layers that see every step.

    >>> import pykregistry
    >>> reg = pykregistry.Registry()
    >>> with reg.span("request", path="/") as request:
    ...     with reg.span("db.query") as query:
    ...         assert reg.get(query.id).parent_id == request.id
    >>> len(reg)
    0
"""

from __future__ import annotations

import os
import warnings

from pykregistry._native import (
    CURRENT,
    GENERATIONS,
    Callsite,
    Entered,
    Event,
    JsonLines,
    Registry,
    Span,
    SpanRef,
)
from pykregistry.exceptions import (
    CapacityError,
    ConfigurationWarning,
    InvalidSpanIdError,
    RegistryError,
    SpanClosedError,
    SpanNotFoundError,
    SpanUsageWarning,
)
from pykregistry.instrumentation import instrument
from pykregistry.level import Level
from pykregistry.shortcuts import (
    current,
    debug,
    debug_span,
    error,
    error_span,
    event,
    in_scope,
    info,
    info_span,
    span,
    trace,
    trace_span,
    warn,
    warn_span,
)

__version__ = "0.1.0"

__all__ = [
    "CURRENT",
    "GENERATIONS",
    "Callsite",
    "CapacityError",
    "ConfigurationWarning",
    "Entered",
    "Event",
    "InvalidSpanIdError",
    "JsonLines",
    "Level",
    "Registry",
    "RegistryError",
    "Span",
    "SpanClosedError",
    "SpanNotFoundError",
    "SpanRef",
    "SpanUsageWarning",
    "__version__",
    "current",
    "debug",
    "debug_span",
    "default_registry",
    "error",
    "error_span",
    "event",
    "in_scope",
    "info",
    "info_span",
    "instrument",
    "span",
    "trace",
    "trace_span",
    "warn",
    "warn_span",
]


def _default_registry_from_env() -> Registry:
    # R15: a typo in the environment must not stop the traced program from
    # importing its tracer; warn and fall back to the default filter.
    directives = os.environ.get("PYKREGISTRY_FILTER") or None
    try:
        return Registry(filter=directives)
    except ValueError as e:
        warnings.warn(
            f"PYKREGISTRY_FILTER={directives!r} is ignored: {e}; "
            "the default registry uses the default filter (everything enabled)",
            ConfigurationWarning,
            stacklevel=2,
        )
        return Registry()


_DEFAULT = _default_registry_from_env()


def default_registry() -> Registry:
    """The process-wide registry that the module-level helpers use."""
    return _DEFAULT
