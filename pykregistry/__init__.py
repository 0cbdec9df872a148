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

from typing import TYPE_CHECKING

from pykregistry._default import default_registry
from pykregistry._native import (
    CURRENT,
    GENERATIONS,
    Callsite,
    ChromeTrace,
    Entered,
    Event,
    FlameGraph,
    JsonLines,
    OtlpExporter,
    Registry,
    RemoteParent,
    Span,
    SpanRef,
    inject,
)
from pykregistry.contexts import in_current_span
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
from pykregistry.propagation import extract
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

__all__ = [
    "CURRENT",
    "GENERATIONS",
    "Callsite",
    "CapacityError",
    "ChromeTrace",
    "ConfigurationWarning",
    "Entered",
    "Event",
    "FlameGraph",
    "InvalidSpanIdError",
    "JsonLines",
    "Level",
    "OtlpExporter",
    "Registry",
    "RegistryError",
    "RemoteParent",
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
    "extract",
    "in_current_span",
    "in_scope",
    "info",
    "info_span",
    "inject",
    "instrument",
    "span",
    "trace",
    "trace_span",
    "warn",
    "warn_span",
]

if TYPE_CHECKING:
    __version__: str
else:
    # The version is the installed distribution's, which the build takes from
    # Cargo.toml. Read on first use: importing importlib.metadata costs about
    # as much as importing the rest of pykregistry.

    def __getattr__(name: str) -> str:
        if name != "__version__":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("pykregistry")
        except PackageNotFoundError:
            raise AttributeError(
                "pykregistry.__version__ is unknown: this pykregistry is not installed "
                "(no distribution metadata); pip install it, or pip install -e the checkout"
            ) from None
        globals()["__version__"] = found
        return found

    def __dir__() -> list[str]:
        return sorted({*globals(), "__version__"})
