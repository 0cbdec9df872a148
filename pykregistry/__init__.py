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

from pykregistry._default import default_registry
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
