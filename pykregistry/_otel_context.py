"""OpenTelemetry's runtime context on pykregistry's stack: the bridge that
:func:`pykregistry.otel.install` and ``OTEL_PYTHON_CONTEXT=pykregistry``
select.

OpenTelemetry keeps its current ``Context`` in a runtime context, an object
with ``attach``, ``get_current`` and ``detach``. This one keeps it on the
registry's own stack (one per thread and asyncio task, SPEC section 3):

- ``attach(context)`` pushes an entry that carries ``context`` and returns
  it as the token; ``detach(token)`` exits that very entry, from whatever
  thread, task or generator it runs in (R5), and never fails (no
  ``ContextVar.reset``, so no "Failed to detach context").
- ``get_current()`` is the attached context when it is innermost; when a
  span of the registry was entered after it (or nothing was attached), it
  is that context (or an empty one) with that span as OpenTelemetry's
  current span, a ``NonRecordingSpan`` with the span's ids. So a span made
  by any OpenTelemetry instrumentation inside ``with reg.span(...)`` is its
  child, and the ``traceparent`` it sends carries the registry's ids.
- A span of the registry made where an OpenTelemetry span is innermost
  takes it as its parent in the trace (its trace id and parent span id),
  while its registry parent (``parent_id``) stays the registry's current
  span; an explicit ``parent=`` wins.

This module is imported while ``opentelemetry.context`` itself is still
being imported (the entry point is loaded then), so it imports nothing of
OpenTelemetry but the ``context`` submodule at the top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from opentelemetry.context.context import Context, _RuntimeContext

from pykregistry import _native
from pykregistry._default import default_registry

if TYPE_CHECKING:
    from contextvars import Token

    from pykregistry._native import Registry

__all__ = ["RuntimeContext", "install"]

_NOTHING_ATTACHED = object()
"""The token of an ``attach`` that could not push its entry."""


class RuntimeContext(_RuntimeContext):
    """OpenTelemetry's runtime context kept on ``registry``'s stack (the
    default registry if ``None``). Select it with
    ``OTEL_PYTHON_CONTEXT=pykregistry`` (the ``opentelemetry_context`` entry
    point, which uses the default registry) or
    :func:`pykregistry.otel.install`."""

    def __init__(self, registry: Registry | None = None) -> None:
        self._registry = default_registry() if registry is None else registry
        # Filled on first use: importing opentelemetry.trace here would
        # import opentelemetry.context, which is importing this module.
        self._trace: Any = None

    @property
    def registry(self) -> Registry:
        """The registry whose stack holds OpenTelemetry's contexts."""
        return self._registry

    def attach(self, context: Context) -> Token[Context]:
        """Makes ``context`` current; the token ``detach`` takes. Never
        raises (R15): should the entry not be made, ``context`` is not
        made current and the token detaches nothing."""
        try:
            entry = _native._otel_attach(self._registry, context, self._span_ids(context))
        except Exception:
            entry = _NOTHING_ATTACHED
        # Not a contextvars Token (no ContextVar.reset here): the entry
        # itself, which callers only hand back to detach().
        return cast("Token[Context]", entry)

    def get_current(self) -> Context:
        """The innermost of the attached contexts and the registry's current
        span (see the module's documentation)."""
        try:
            ours, attached = _native._otel_current(self._registry)
        except Exception:  # R15: never raised into the instrumented code
            return Context()
        context = Context() if attached is None else cast("Context", attached)
        if ours is None:
            return context
        trace = self._otel_trace()
        trace_id, span_id, flags, state = ours
        span_context = trace.SpanContext(
            trace_id,
            span_id,
            is_remote=False,
            trace_flags=trace.TraceFlags(flags),
            trace_state=trace.TraceState.from_header([state]) if state else None,
        )
        return cast(
            "Context", trace.set_span_in_context(trace.NonRecordingSpan(span_context), context)
        )

    def detach(self, token: Token[Context]) -> None:
        """Exits the entry ``attach`` made, wherever it is; never fails."""
        _native._otel_detach(token)

    def _span_ids(self, context: Context) -> tuple[int, int, int, str | None] | None:
        """The ids of the span current in ``context``, if it is valid."""
        span_context = self._otel_trace().get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return None
        state = span_context.trace_state.to_header() if span_context.trace_state else None
        return (
            span_context.trace_id,
            span_context.span_id,
            int(span_context.trace_flags),
            state or None,
        )

    def _otel_trace(self) -> Any:
        trace = self._trace
        if trace is None:
            import opentelemetry.trace as trace

            self._trace = trace
        return trace


def install(registry: Registry | None = None) -> RuntimeContext:
    """Makes OpenTelemetry keep its context on ``registry``'s stack (the
    default registry if ``None``) from now on, as
    ``OTEL_PYTHON_CONTEXT=pykregistry`` does from the start; returns the
    runtime context installed. Contexts attached before it stay where they
    were (detaching them does nothing): install it before any span starts,
    at start-up."""
    import opentelemetry.context as otel_context

    runtime = RuntimeContext(registry)
    otel_context._RUNTIME_CONTEXT = runtime
    return runtime
