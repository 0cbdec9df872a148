"""OpenTelemetry: pykregistry's spans through OpenTelemetry's SDK, and the
two tracers' spans in one tree.

:func:`install` (or ``OTEL_PYTHON_CONTEXT=pykregistry``) makes
OpenTelemetry keep its context on the registry's stack, so that the spans
of OpenTelemetry's instrumentations (requests, httpx, Django...) nest under
pykregistry's and the other way round; see :mod:`pykregistry._otel_context`
and the docs' OpenTelemetry page.

:class:`OpenTelemetryLayer` is a layer that hands every span, when it ends
(R14), to the span processors of OpenTelemetry's SDK, and through them to
its exporters (``BatchSpanProcessor``, ``SimpleSpanProcessor``; OTLP over
HTTP or gRPC, the console, in memory, or any other). It needs the
``otel`` extra: ``pip install pykregistry[otel]``. For OTLP/HTTP alone,
:class:`pykregistry.OtlpExporter` does the same natively, with less work on
the application's thread.

The exported span is the registry's span as the native exporter sends it:

- ids: its ``trace_id`` and ``span_id`` (R13), its parent's
  ``parent_span_id``, and the trace flags and ``tracestate`` of its trace
  (:attr:`~pykregistry.SpanRef.trace_flags`); the parent is remote when
  the span continues a :class:`~pykregistry.RemoteParent`
  (:attr:`~pykregistry.SpanRef.parent_is_remote`), not when its parent
  closed here or is an OpenTelemetry span of this process;
- name and times: the span's name, ``start_time_ns`` and ``end_time_ns``;
  kind ``INTERNAL``;
- attributes: its fields (lists and tuples stay arrays; integers beyond
  64 bits and strings with lone surrogates become strings, as the native
  exporter writes them; ``None`` is left out, as OpenTelemetry does), plus
  ``level`` (``"INFO"``), ``busy_ns`` and ``idle_ns``;
- instrumentation scope: its target;
- events: the events emitted in it while it ran (name: the message;
  attributes: the fields, ``level`` and a non-empty ``target``), timed when
  they were emitted, on the clock of the span's own times;
- links: the spans it follows from
  (:meth:`~pykregistry.Span.follows_from`), while they are live;
- status: a recorded error (``error=True`` or an ``exception.type`` field,
  as ``with`` blocks record) makes it ERROR, described by
  ``exception.message``, with an ``exception`` event at the span's end
  carrying ``exception.type``, ``exception.message`` and
  ``exception.stacktrace``.

Where spans go, and with which resource:

- ``OpenTelemetryLayer()`` uses the global tracer provider
  (:func:`opentelemetry.trace.get_tracer_provider`), which must be the SDK's
  ``TracerProvider``: set it first with
  :func:`opentelemetry.trace.set_tracer_provider`. ``tracer_provider=``
  names one instead. Spans go to the provider's own span processors (those
  added with ``add_span_processor``, before or after the layer was made),
  and carry the provider's resource: the same object its own spans carry,
  read at every span, never built per span.
- ``span_processor=`` sends spans to that processor only. Their resource
  is then the provider's (``tracer_provider=``, else the global one if it
  is the SDK's), or else one default ``Resource.create()`` (which reads
  ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``) made with the
  layer.

The registry records every span, so the provider's sampler is not asked.
Spans whose trace is not sampled (a remote parent's flags said so) are
dropped by the SDK's processors, as spans of theirs would be. Processors
see ``on_end`` only: a span is handed over once, ended.

Events and links are matched to their span through ``registry``, which
must be the registry the layer is a layer of (by default
:func:`pykregistry.default_registry`)::

    reg = Registry()
    reg.add_layer(OpenTelemetryLayer(registry=reg))

The layer never raises into the program (SPEC R15): odd values are
converted, and anything unexpected is reported by the registry to
:func:`sys.unraisablehook` like any layer's error.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

try:
    from opentelemetry import trace as trace_api
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event as OtelEvent
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import (
        DEFAULT_TRACE_STATE,
        Link,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TraceFlags,
        TraceState,
    )
    from opentelemetry.util.types import AttributeValue
except ImportError:  # pragma: no cover - exercised without the extra
    # Not `as e`: that name is deleted after the block, and type checkers
    # (stubtest) would see a module attribute the module does not have.
    _missing = sys.exc_info()[1]
    raise ImportError(
        f"pykregistry.otel needs OpenTelemetry's API and SDK ({_missing}): "
        "pip install pykregistry[otel]"
    ) from _missing

from pykregistry._default import default_registry
from pykregistry._otel_context import RuntimeContext, install
from pykregistry.exceptions import ConfigurationWarning
from pykregistry.level import Level

if TYPE_CHECKING:
    from pykregistry._native import Event, Registry, SpanRef

__all__ = ["OpenTelemetryLayer", "RuntimeContext", "install"]

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
# By value: indexing a list with an IntEnum is a C call, hashing one runs
# Enum.__hash__ in Python (~0.3 us a span).
_LEVEL_NAMES = [""] * (max(Level) + 1)
for _level in Level:
    _LEVEL_NAMES[_level] = _level.name
del _level
# The flags W3C defines (sampled, random trace id); others are cleared by
# the registry's parser, but any byte is served.
_TRACE_FLAGS = [TraceFlags(flags) for flags in range(256)]
_UNSET = Status(StatusCode.UNSET)
_INTERNAL = SpanKind.INTERNAL
# Parsed tracestate headers kept at most (a trace carries one on to all its
# spans, so few are live at a time).
_MAX_TRACE_STATES = 1024

# An event waiting for its span's end: (time ns, name, attributes).
_PendingEvent = tuple[int, str, dict[str, AttributeValue]]


class OpenTelemetryLayer:
    """A layer that hands every span, at its end, to OpenTelemetry's SDK
    span processors (see the module's documentation for the mapping).

    ``tracer_provider``: an SDK ``TracerProvider`` (by default the global
    one, which must be the SDK's; ``TypeError`` otherwise). Its span
    processors get the spans, and its resource is theirs.
    ``span_processor``: send spans to this processor instead.
    ``registry``: the registry this layer is added to (by default
    :func:`pykregistry.default_registry`); events and follows-from links
    are looked up there.

        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        ...     InMemorySpanExporter,
        ... )
        >>> from pykregistry import Registry
        >>> exporter = InMemorySpanExporter()
        >>> provider = TracerProvider()
        >>> provider.add_span_processor(SimpleSpanProcessor(exporter))
        >>> reg = Registry()
        >>> reg.add_layer(OpenTelemetryLayer(provider, registry=reg))
        >>> with reg.span("request", target="app", path="/") as request:
        ...     reg.event("cache miss", key="user:1")
        ...     ids = request.ref.trace_id, request.ref.span_id
        >>> [span] = exporter.get_finished_spans()
        >>> span.name, span.instrumentation_scope.name, span.attributes["path"]
        ('request', 'app', '/')
        >>> (span.context.trace_id, span.context.span_id) == ids
        True
        >>> [event.name for event in span.events]
        ['cache miss']
    """

    __slots__ = (
        "_lock",
        "_pending",
        "_processor",
        "_provider",
        "_registry",
        "_resource",
        "_scopes",
        "_trace_states",
        "_warned",
    )

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        span_processor: SpanProcessor | None = None,
        *,
        registry: Registry | None = None,
    ) -> None:
        provider: object = tracer_provider
        if provider is None:
            provider = trace_api.get_tracer_provider()
            if not isinstance(provider, TracerProvider):
                if span_processor is None:
                    raise TypeError(
                        "OpenTelemetryLayer() exports through the global tracer provider, "
                        f"which is not the SDK's TracerProvider but {provider!r}: call "
                        "opentelemetry.trace.set_tracer_provider(TracerProvider(...)) "
                        "first, or pass tracer_provider= or span_processor="
                    )
                provider = None
        elif not isinstance(provider, TracerProvider):
            raise TypeError(
                "tracer_provider= must be opentelemetry.sdk.trace.TracerProvider "
                f"(the SDK's, whose span processors export), not {provider!r}"
            )
        self._provider: TracerProvider | None = provider
        if span_processor is None and provider is not None:
            # The SDK keeps its processors in this multi-processor, and has
            # no public accessor for it: the one place a private name is used.
            span_processor = cast("SpanProcessor", provider._active_span_processor)
        if span_processor is None:  # pragma: no cover - a TypeError above
            raise TypeError("OpenTelemetryLayer needs a tracer provider or a span processor")
        self._processor: SpanProcessor = span_processor
        # Made once: building a Resource costs ~1 ms.
        self._resource: Resource | None = None if provider is not None else Resource.create()
        self._registry: Registry = default_registry() if registry is None else registry
        self._scopes: dict[str, InstrumentationScope] = {}
        self._trace_states: dict[str, TraceState] = {}
        # Events and links of spans still running, by span_id (unique, R13).
        self._pending: dict[int, list[_PendingEvent | Link]] = {}
        self._lock = threading.Lock()
        self._warned = False

    def __repr__(self) -> str:
        return f"OpenTelemetryLayer(span_processor={self._processor!r})"

    @property
    def span_processor(self) -> SpanProcessor:
        """The processor spans are handed to."""
        return self._processor

    @property
    def resource(self) -> Resource:
        """The resource the spans carry (the provider's, when there is
        one)."""
        return (
            self._provider.resource
            if self._provider is not None
            else cast(Resource, self._resource)
        )

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Exports what the processor holds (for a ``BatchSpanProcessor``),
        waiting at most ``timeout_millis``; whether it finished in time."""
        return bool(self._processor.force_flush(timeout_millis))

    # === Layer hooks ===

    def on_end(self, span: SpanRef) -> None:
        """R14: the span has ended, its times are final; hand it over."""
        span_id = span.span_id
        trace_id = span.trace_id
        trace_flags = _TRACE_FLAGS[span.trace_flags & 0xFF]
        header = span.tracestate
        trace_state = DEFAULT_TRACE_STATE if header is None else self._trace_state(header)
        parent_span_id = span.parent_span_id
        parent = (
            None
            if parent_span_id is None
            else SpanContext(
                trace_id, parent_span_id, span.parent_is_remote, trace_flags, trace_state
            )
        )
        start = span.start_time_ns
        end = span.end_time_ns
        if end is None:  # pragma: no cover - on_end comes after the end (R14)
            end = time.time_ns()
        fields = span.fields
        attributes = _attributes(fields)
        attributes["level"] = _LEVEL_NAMES[span.level]
        attributes["busy_ns"] = span.busy_ns
        attributes["idle_ns"] = span.idle_ns
        events: list[OtelEvent] = []
        links: list[Link] = []
        with self._lock:
            pending = self._pending.pop(span_id, None)
        if pending is not None:
            for item in pending:
                if isinstance(item, Link):
                    links.append(item)
                else:
                    at, name, event_attributes = item
                    # Busy and idle are whole ns, summed stretch by
                    # stretch: an event stays within its span regardless.
                    events.append(OtelEvent(name, event_attributes, min(max(at, start), end)))
        status = _UNSET
        if fields.get("error") is True or "exception.type" in fields:
            status, exception = _error(fields, end)
            events.append(exception)
        target = span.target
        scope = self._scopes.get(target)
        if scope is None:
            scope = self._scopes.setdefault(target, InstrumentationScope(target))
        provider = self._provider
        self._processor.on_end(
            ReadableSpan(
                name=span.name,
                context=SpanContext(trace_id, span_id, False, trace_flags, trace_state),
                parent=parent,
                resource=provider.resource if provider is not None else self._resource,
                attributes=attributes,
                events=events,
                links=links,
                kind=_INTERNAL,
                status=status,
                start_time=start,
                end_time=end,
                instrumentation_scope=scope,
            )
        )

    def on_event(self, event: Event) -> None:
        """An event in a span becomes one of its span events, timed now
        (events are dispatched as they are emitted)."""
        parent_id = event.parent_id
        if parent_id is None:
            # Outside any span of ours (or under a remote parent only):
            # OpenTelemetry has no span to put it on.
            return
        span = self._registry.get(parent_id)
        span_id = event.span_id
        if span is None or span_id is None or span.span_id != span_id:
            self._wrong_registry()
            return
        # Event.time_ns is on the span's own clock (its start plus its
        # life so far), so the event falls inside the span.
        at = event.time_ns
        attributes = _attributes(event.fields)
        attributes["level"] = _LEVEL_NAMES[event.level]
        target = event.target
        if target:
            attributes["target"] = target
        self._add(span, span_id, (at, event.message, attributes))

    def on_follows_from(self, span: SpanRef, follows_id: int) -> None:
        """A follows-from becomes a link to that span, if it is live."""
        if self._registry.get(span.id) != span:
            self._wrong_registry()
            return
        follows = self._registry.get(follows_id)
        if follows is None:
            return
        header = follows.tracestate
        link = Link(
            SpanContext(
                follows.trace_id,
                follows.span_id,
                False,
                _TRACE_FLAGS[follows.trace_flags & 0xFF],
                DEFAULT_TRACE_STATE if header is None else self._trace_state(header),
            )
        )
        self._add(span, span.span_id, link)

    # === Helpers ===

    def _add(self, span: SpanRef, span_id: int, item: _PendingEvent | Link) -> None:
        # Under the lock that on_end pops under: either the span has not
        # ended and its on_end will find the item, or it has and the item
        # is dropped (it came too late for the exported span). Nothing is
        # left behind for a span that will never end again.
        with self._lock:
            if span.end_time_ns is None:
                self._pending.setdefault(span_id, []).append(item)

    def _trace_state(self, header: str) -> TraceState:
        state = self._trace_states.get(header)
        if state is None:
            if len(self._trace_states) >= _MAX_TRACE_STATES:
                self._trace_states.clear()
            state = TraceState.from_header([header])
            self._trace_states[header] = state
        return state

    def _wrong_registry(self) -> None:
        if self._warned:
            return
        self._warned = True
        warnings.warn(
            "OpenTelemetryLayer: an event or follows_from came from a registry other "
            f"than its registry= ({self._registry!r}); events and links are dropped. "
            "Pass registry= the registry the layer is added to.",
            ConfigurationWarning,
            stacklevel=2,
        )


def _attributes(values: dict[str, object]) -> dict[str, AttributeValue]:
    """``values`` (a copy the layer owns) as OpenTelemetry attributes,
    converted in place; plain values are left as they are."""
    odd: list[str] | None = None
    for key, value in values.items():
        kind = type(value)
        if kind is str:
            plain = cast(str, value).isascii()
        elif kind is int:
            plain = _I64_MIN <= cast(int, value) <= _I64_MAX
        else:
            plain = kind is bool or kind is float
        if plain:
            continue
        if odd is None:
            odd = []
        odd.append(key)
    if odd is not None:
        for key in odd:
            converted = _value(values[key])
            if converted is None:
                del values[key]
            else:
                values[key] = converted
    return cast("dict[str, AttributeValue]", values)


def _value(value: object) -> AttributeValue:
    """An attribute value: arrays kept (their items converted), ``None``
    as ``None`` (left out by the caller), anything else as :func:`_scalar`."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_scalar(item) for item in value]
    return _scalar(value)


def _scalar(value: object) -> str | bool | int | float:
    """A scalar the SDK's exporters encode: integers beyond 64 bits and
    strings with lone surrogates as strings (as the native exporter sends
    them), anything else as its ``repr()``."""
    kind = type(value)
    if kind is bool or kind is float:
        return cast("bool | float", value)
    if kind is int:
        number = cast(int, value)
        return number if _I64_MIN <= number <= _I64_MAX else _digits(number)
    if kind is str:
        return _text(cast(str, value))
    try:
        return _text(repr(value))
    except Exception:  # R15: a value's repr never breaks the export
        return f"<{kind.__qualname__}>"


def _text(text: str) -> str:
    """``text``, with each lone surrogate's bytes replaced by U+FFFD (as
    Rust's ``from_utf8_lossy``, which the native exporter uses)."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _digits(number: int) -> str:
    """A big integer's decimal digits, or ``0x...`` past Python's limit on
    digits (as JSON lines writes it)."""
    try:
        return str(number)
    except ValueError:
        return hex(number)


def _error(fields: Mapping[str, object], end: int) -> tuple[Status, OtelEvent]:
    """The status and ``exception`` event of a span that recorded an
    error."""
    exception: dict[str, AttributeValue] = {}
    for name in ("exception.type", "exception.message", "exception.stacktrace"):
        if name in fields:
            exception[name] = _text_of(fields[name])
    message = exception.get("exception.message")
    status = Status(StatusCode.ERROR, cast(str, message) if message is not None else None)
    return status, OtelEvent("exception", exception, end)


def _text_of(value: object) -> str:
    """A value as the text of a status or an ``exception`` attribute."""
    scalar = _scalar(value)
    return scalar if isinstance(scalar, str) else str(scalar)
