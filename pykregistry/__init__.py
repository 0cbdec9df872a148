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

from pykregistry._native import (
    CURRENT,
    GENERATIONS,
    Entered,
    Event,
    Registry,
    Span,
    SpanRef,
)
from pykregistry.exceptions import (
    CapacityError,
    InvalidSpanIdError,
    RegistryError,
    SpanClosedError,
    SpanNotFoundError,
)
from pykregistry.level import Level

__version__ = "0.1.0"

__all__ = [
    "CURRENT",
    "GENERATIONS",
    "CapacityError",
    "Entered",
    "Event",
    "InvalidSpanIdError",
    "Level",
    "Registry",
    "RegistryError",
    "Span",
    "SpanClosedError",
    "SpanNotFoundError",
    "SpanRef",
    "__version__",
    "default_registry",
]

_DEFAULT = Registry()


def default_registry() -> Registry:
    """The process-wide registry that the module-level helpers use."""
    return _DEFAULT
