"""The native core of pykregistry (written in Rust, built by maturin).

Import the public names from :mod:`pykregistry`, which re-exports them; this
module is private. These stubs are written by hand and checked against the
compiled module by ``python -m mypy.stubtest pykregistry._native``.
"""

import os
import pathlib
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import (
    Any,
    Final,
    Literal,
    TypeAlias,
    TypedDict,
    TypeVar,
    final,
    overload,
    type_check_only,
)

from typing_extensions import Self, disjoint_base

from pykregistry.level import Level

__all__ = [
    "CURRENT",
    "GENERATIONS",
    "Callsite",
    "ChromeTrace",
    "DisabledSpan",
    "Entered",
    "Event",
    "FlameGraph",
    "JsonLines",
    "OtlpExporter",
    "Registry",
    "RemoteParent",
    "Span",
    "SpanRef",
    "_SpanStack",
    "_close_open_spans",
    "_close_pictures",
    "_flush_json_lines",
    "_flush_pictures",
    "_gc_phase",
    "_json_lines_forked",
    "_jsonl_to_chrome",
    "_jsonl_to_flamegraph",
    "_otel_attach",
    "_otel_current",
    "_otel_detach",
    "_otlp_forked",
    "_reseed_ids",
    "_shift_wall_clock",
    "_shutdown_otlp_exporters",
    "inject",
]

_LevelLike: TypeAlias = Level | str | int
"""A :class:`Level`, its case-insensitive name (``"debug"``) or its value (1-5)."""

_ParentLike: TypeAlias = _Current | Span | SpanRef | int | RemoteParent | None
"""Where a new span or event hangs: ``CURRENT``, ``None``, a live span's ID,
a ``Span``/``SpanRef`` of a live span, or a :class:`RemoteParent` (the new
span is then a root here that continues the remote trace)."""

_F = TypeVar("_F", bound=Callable[..., Any])

@final
@type_check_only
class _Current:
    """The type of :data:`CURRENT`: there is exactly one instance."""

CURRENT: Final[_Current]
"""As a ``parent=``: the current span of the calling thread or asyncio task
(the default). If nothing is current, or the current span has closed, the
new span is a root."""

GENERATIONS: Final[int]
"""How many times a slot can be reused before a span ID recurs (8191 on
64-bit targets). IDs are unique among live spans and never handed to the
very next span; keep your own counter if historical IDs must be unique."""

@final
class Registry:
    """A span registry: spans, their reference counts, one stack of entered
    spans per thread and per asyncio task, and the layers that see it all.

    Many registries may coexist; each is independent. ``len(registry)`` is
    the number of live spans.
    """

    def __new__(
        cls,
        *,
        level: _LevelLike | None = None,
        filter: str | None = None,
        layers: Iterable[object] | None = None,
        strict: bool = False,
    ) -> Self:
        """A new, empty registry.

        ``level`` (a level, or ``"off"``) enables spans and events up to that
        verbosity; ``filter`` is a ``tracing-subscriber`` EnvFilter-style
        directive string (``"info,app.db=debug"``), with ``level`` as its
        default. Without either, everything is enabled. ``layers`` are
        called, in order, for every lifecycle step. A malformed filter
        raises ``ValueError``.

        ``strict``: the ergonomic API (``span``, ``Span`` handles, call
        sites, ``@instrument``, the shortcuts) raises a
        :class:`RegistryError` for timing mistakes, a handle used after its
        block ended or a parent that closed, instead of warning with
        :class:`SpanUsageWarning` and going on (SPEC R15). Tests want it.
        """

    @property
    def strict(self) -> bool:
        """Whether the ergonomic API raises for timing mistakes."""

    def enabled(self, level: _LevelLike, target: str = "") -> bool:
        """Whether the filter enables ``level`` for ``target`` (span
        directives aside: they depend on the spans a call is made in)."""

    def callsite(
        self,
        name: str,
        /,
        *,
        target: str | None = None,
        level: _LevelLike | None = None,
        fields: Iterable[str] | None = None,
    ) -> Callsite:
        """A :class:`Callsite` of this registry: name, target, level and
        field names fixed once, with the filter's decision cached."""

    @overload
    def instrument(
        self,
        func: _F,
        /,
        *,
        name: str | None = None,
        target: str | None = None,
        level: _LevelLike = ...,
        fields: Mapping[str, object] | None = None,
        skip: Iterable[str] = (),
        args: bool = True,
        ret: bool = False,
        err: bool = True,
    ) -> _F: ...
    @overload
    def instrument(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        target: str | None = None,
        level: _LevelLike = ...,
        fields: Mapping[str, object] | None = None,
        skip: Iterable[str] = (),
        args: bool = True,
        ret: bool = False,
        err: bool = True,
    ) -> Callable[[_F], _F]:
        """:func:`pykregistry.instrument` with ``registry=self``: a span
        around every call of the decorated function."""

    def add_layer(self, layer: object) -> None:
        """Adds a layer; it sees every step from now on.

        A layer is any object with some of ``on_new_span(span)``,
        ``on_record(span, values)``, ``on_follows_from(span, follows_id)``,
        ``on_event(event)``, ``on_enter(span)``, ``on_exit(span)``,
        ``on_end(span)`` and ``on_close(span)``, where ``span`` is a
        :class:`SpanRef`. ``on_end`` comes once per span at its end (the end
        of its block, or the release of the handle that made it), before
        ``on_close``, which comes with its last reference. Methods are
        looked up once, here. Raises ``TypeError`` if one is not callable.
        """

    @property
    def layers(self) -> list[object]:
        """The layers, in the order they are called."""

    @property
    def layer_errors(self) -> int:
        """How many times a layer raised. Each failure also goes to
        :func:`sys.unraisablehook`; it never reaches the caller."""

    def new_span(
        self,
        name: str,
        /,
        *,
        target: str | None = None,
        level: _LevelLike | None = None,
        parent: _ParentLike = ...,
        fields: Mapping[str, object] | None = None,
    ) -> int:
        """Creates a span with reference count 1 and returns its ID; the
        caller owns that reference and releases it with :meth:`try_close`.

        ``target`` defaults to the calling module's ``__name__``, ``level``
        to ``Level.INFO`` and ``parent`` to ``CURRENT``. An explicit parent
        that is not live raises :class:`~pykregistry.SpanNotFoundError` and
        creates nothing. A :class:`RemoteParent` makes a root here that
        continues the remote trace.
        """

    def clone_span(self, id: int) -> int:
        """Takes one more reference on a live span and returns its ID.
        Raises :class:`~pykregistry.SpanNotFoundError` (changing nothing) if
        the span is not live."""

    def try_close(self, id: int) -> bool:
        """Releases one reference. Returns ``True`` exactly when this call
        closed the span: layers' ``on_close`` ran, the span was cleared, and
        its reference on its parent was released (which may close the parent
        in turn). Raises :class:`~pykregistry.SpanNotFoundError` if the span
        is not live."""

    def enter(self, id: int) -> None:
        """Pushes a live span on the calling thread's or task's stack. Its
        first entry there takes a reference; re-entering while it is on the
        stack takes none. Raises :class:`~pykregistry.SpanNotFoundError`
        (pushing nothing) if the span is not live."""

    def exit(self, id: int) -> None:
        """Removes the most recent entry of ``id`` from the calling
        context's stack, even if it is not on top, releasing the reference
        that entry held. Exiting a span that is not on this context's stack
        does nothing."""

    def current_span(self) -> int | None:
        """The ID of the calling thread's or task's current span: the
        topmost entry of its stack that is not a re-entry."""

    def get(self, id: int) -> SpanRef | None:
        """A read-only view of a live span; ``None`` for any other int
        (closed, never issued, stale, out of range)."""

    def ref_count(self, id: int) -> int:
        """The span's reference count: open handles + live children +
        stack entries. 0 when it is not live."""

    def __len__(self) -> int:
        """The number of live spans."""

    def __contains__(self, id: object, /) -> bool:
        """Whether ``id`` is the ID of a live span."""

    def record(self, id: int, /, **fields: object) -> None:
        """Records (adds or replaces) fields on a live span and tells the
        layers. ``bool``, ``int``, ``float``, ``str`` and ``None`` read back
        exactly; anything else is stored as its ``repr()``."""

    def follows_from(self, id: int, follows: int) -> None:
        """Notes that span ``id`` follows from span ``follows`` (a causal
        link that is not a parent) and tells the layers."""

    def event(
        self,
        message: str,
        /,
        *,
        target: str | None = None,
        level: _LevelLike | None = None,
        parent: _ParentLike = ...,
        **fields: object,
    ) -> None:
        """Emits an event: a point in time that layers' ``on_event`` sees as
        an :class:`Event`. ``parent`` works as in :meth:`new_span`."""

    def span(
        self,
        name: str,
        /,
        *,
        target: str | None = None,
        level: _LevelLike | None = None,
        parent: _ParentLike = ...,
        **fields: object,
    ) -> Span:
        """Creates a span and returns a :class:`Span` handle owning its one
        reference. Not entered: use it as ``with registry.span(...):`` to
        enter it for the block and release it at the end, or call
        :meth:`Span.entered`. If the filter turns the span away, returns
        the disabled span, on which everything does nothing."""

@disjoint_base
class Span:
    """A handle on a span, owning exactly one reference to it.

    ``with registry.span(...) as s:`` creates, enters, and at the end of the
    block exits and releases; an exception leaving the block is recorded on
    the span (``error=True``, ``exception.type``, ``exception.message``) and
    propagates. :meth:`close` releases the handle's reference; a handle
    garbage-collected unreleased releases it too.

    A span that a filter turned away is *disabled*: it has no ID, and
    everything on it does nothing.
    """

    @property
    def id(self) -> int | None:
        """The span's ID; ``None`` when disabled."""

    @property
    def closed(self) -> bool:
        """Whether this handle has been released (by :meth:`close` or at the
        end of its ``with`` block). Always true when disabled."""

    @property
    def disabled(self) -> bool:
        """Whether a filter turned this span away."""

    @property
    def ref(self) -> SpanRef | None:
        """A read-only view of the span; ``None`` when disabled. Raises
        :class:`~pykregistry.SpanClosedError` once the handle is closed."""

    @overload
    def record(self, name: str, value: object, /, **fields: object) -> None: ...
    @overload
    def record(self, /, **fields: object) -> None:
        """Records (adds or replaces) fields on the span, as
        :meth:`Registry.record`: ``span.record("key", value)`` as
        ``tracing``'s ``Span::record`` (any name, ``"return"`` too), or
        ``span.record(key=value, ...)``, or both. Does nothing on the disabled
        span; ``SpanClosedError`` once this handle is closed."""

    def follows_from(self, other: Span | SpanRef | int) -> None:
        """Notes that this span follows from ``other``."""

    def clone(self) -> Span:
        """A second handle on the same span, with a reference of its own
        (the disabled span itself when disabled)."""

    def close(self) -> None:
        """Releases this handle's reference. A second call does nothing."""

    def entered(self) -> Entered:
        """A reusable context manager that enters the span on ``__enter__``
        and exits it on ``__exit__``, without releasing the handle."""

    def __enter__(self) -> Self:
        """Enters the span on the calling thread's or task's stack."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Literal[False]:
        """Records an exception leaving the block, exits the span and
        releases this handle. Never swallows the exception."""

@final
class DisabledSpan(Span):
    """The type of the one disabled span (a span a filter turned away): a
    :class:`Span` whose ``__enter__`` and ``__exit__`` are plain builtin
    functions, so that ``with`` on it allocates nothing."""

    @staticmethod
    def __enter__() -> DisabledSpan:
        """Returns the disabled span; enters nothing."""

    @staticmethod
    def __exit__(
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Literal[False]:
        """Exits nothing; never swallows the exception."""

@final
class Entered:
    """The context manager :meth:`Span.entered` returns: enters on
    ``__enter__``, exits on ``__exit__``, and can be used again."""

    def __enter__(self) -> Span:
        """Enters the span and returns its handle."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Literal[False]:
        """Records an exception leaving the block and exits the span. Never
        swallows the exception."""

@final
class SpanRef:
    """A read-only view of a span, by ID.

    A view never keeps its span alive nor its slot from being reused. Every
    read looks the span up: once it has closed, reads other than ``id``,
    ``ref_count`` and ``closed`` raise :class:`~pykregistry.SpanClosedError`
    (never another span's data: a reused slot has a new ID). Copy what you
    need while the span is live, e.g. in a layer's ``on_close``.
    """

    @property
    def id(self) -> int:
        """The span's ID."""

    @property
    def name(self) -> str:
        """The span's name."""

    @property
    def target(self) -> str:
        """The span's target (by default the creating module's name)."""

    @property
    def level(self) -> Level:
        """The span's level."""

    @property
    def fields(self) -> dict[str, object]:
        """A copy of the span's fields."""

    @property
    def parent_id(self) -> int | None:
        """The parent's ID, or ``None`` for a root."""

    @property
    def span_id(self) -> int:
        """The span's 64-bit id (R13): random-looking, never 0, and unlike
        :attr:`id` never repeated within the process, nor across a fork.
        Exports link spans by it."""

    @property
    def trace_id(self) -> int:
        """The 128-bit id of the span's trace: its parent's, or a new one for
        a root that continues no trace."""

    @property
    def parent_span_id(self) -> int | None:
        """The :attr:`span_id` of the span's parent in its trace, kept even
        when that parent has closed; ``None`` for a root of a new trace."""

    @property
    def parent_is_remote(self) -> bool:
        """Whether the span's parent in its trace is in another process: the
        span continues a :class:`RemoteParent`. A parent that closed here,
        or another tracer's span in this process (the OpenTelemetry
        bridge), is not remote."""

    @property
    def thread_id(self) -> int:
        """The thread that made the span, as ``threading.get_ident()``
        names it there."""

    @property
    def task_name(self) -> str | None:
        """The name of the asyncio task that made the span (``Task-3``, or
        the name it was given), ``None`` outside a task. Looking the task up
        costs a little, so it is recorded only while a layer that needs it
        is attached (:class:`ChromeTrace`, :class:`FlameGraph`,
        :class:`JsonLines`); otherwise ``None``."""

    @property
    def trace_flags(self) -> int:
        """The W3C trace flags of the span's trace: those of the
        :class:`RemoteParent` its trace continues, else ``0x01`` (sampled:
        the registry records every span)."""

    @property
    def tracestate(self) -> str | None:
        """The W3C ``tracestate`` of the :class:`RemoteParent` the span's
        trace continues, if it had one; :func:`inject` passes it on."""

    @property
    def parent(self) -> SpanRef | None:
        """A view of the parent, or ``None`` for a root."""

    @property
    def start_time_ns(self) -> int:
        """Wall-clock time the span was created, in ns since the epoch."""

    @property
    def end_time_ns(self) -> int | None:
        """Wall-clock time the span ended (R14), in ns since the epoch;
        ``None`` until it ends (a layer's ``on_end`` already sees it)."""

    @property
    def busy_ns(self) -> int:
        """Time the span has been entered in some context, in ns, up to its
        end."""

    @property
    def idle_ns(self) -> int:
        """Time the span has been live but entered nowhere, in ns, up to its
        end."""

    @property
    def extensions(self) -> dict[str, Any]:
        """A dict for layers and users to keep data with the span; dropped
        when the span closes."""

    @property
    def ref_count(self) -> int:
        """The span's current reference count; 0 once it has closed."""

    @property
    def closed(self) -> bool:
        """Whether the span has closed."""

    def scope(self) -> list[SpanRef]:
        """The span, its parent, and so on to the root (leaf to root)."""

    def from_root(self) -> list[SpanRef]:
        """The root, its child, and so on down to this span."""

    def __eq__(self, other: object, /) -> bool:
        """Views are equal when they name the same span of the same
        registry."""

    def __hash__(self) -> int: ...

@final
class Event:
    """What a layer's ``on_event`` receives: a point in time with a message,
    level, target, fields and parent span."""

    @property
    def message(self) -> str:
        """The event's message."""

    @property
    def level(self) -> Level:
        """The event's level."""

    @property
    def target(self) -> str:
        """The event's target (by default the emitting module's name)."""

    @property
    def parent_id(self) -> int | None:
        """The parent span's ID, or ``None``."""

    @property
    def trace_id(self) -> int | None:
        """The parent span's :attr:`SpanRef.trace_id` (a remote parent's
        :attr:`RemoteParent.trace_id`), or ``None``."""

    @property
    def span_id(self) -> int | None:
        """The parent span's :attr:`SpanRef.span_id` (a remote parent's
        :attr:`RemoteParent.span_id`), or ``None``."""

    @property
    def time_ns(self) -> int:
        """When it was emitted, ns since the epoch; in a live span, on that
        span's clock (between its ``start_time_ns`` and ``end_time_ns``),
        the same for every layer and exporter."""

    @property
    def fields(self) -> dict[str, object]:
        """A copy of the event's fields."""

@final
class JsonLines:
    """A built-in layer that writes every span at its end, and every event,
    as one JSON object per line (JSON Lines). Add it like any layer:
    ``Registry(layers=[JsonLines("trace.jsonl")])``.

    Spans: ``{"type": "span", "id", "parent_id", "trace_id", "span_id",
    "parent_span_id", "name", "target", "level", "start_time_ns",
    "end_time_ns", "busy_ns", "idle_ns", "fields", "thread_id", "task",
    "on_parent_track"}``; events: ``{"type": "event", "time_ns", "message",
    "target", "level", "parent_id", "trace_id", "span_id", "fields",
    "thread_id", "task"}`` (``thread_id``: ``threading.get_ident()`` of the
    thread that made the span or event; ``task``: its asyncio task's name,
    or ``null``; ``on_parent_track``: whether the span was made on its
    parent's thread and task, ``null`` without a parent). ``trace_id`` (32 hex digits),
    ``span_id`` and ``parent_span_id`` (16) link spans and events into trees
    (an event's are its parent span's); they are ``null`` where there is
    none. The registry's ``id`` and ``parent_id`` recur after slot reuse:
    link by the identity. Times are ns since the epoch, durations ns;
    levels are ``"TRACE"`` .. ``"ERROR"``; integers of any size are numbers,
    NaN and infinities ``null``. It is native: no Python object is made per
    span. Lines are buffered (64 KiB): :meth:`flush` writes them out,
    :meth:`close` (or leaving a ``with`` block) flushes and closes, and what
    is buffered when the layer is dropped, at interpreter exit or before
    ``os.fork()`` is flushed then; in a child process the parent's layers
    write nothing. A failed write is counted in :attr:`write_errors` (the
    first is reported to ``sys.unraisablehook``), drops what the buffer
    held, and never raises into the program; the next line starts on a
    line of its own.
    """

    def __new__(
        cls, path: str | os.PathLike[str], /, *, append: bool = False, events: bool = True
    ) -> JsonLines:
        """Opens ``path`` for writing, truncating it unless ``append``;
        ``events=False`` writes spans only. ``OSError`` if it cannot be
        opened."""

    def flush(self) -> None:
        """Writes buffered lines to the file."""

    def close(self) -> None:
        """Flushes and closes the file; later spans and events are not
        written. A second call does nothing."""

    @property
    def path(self) -> pathlib.Path:
        """The file's path."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""

    @property
    def events(self) -> bool:
        """Whether events are written."""

    @property
    def write_errors(self) -> int:
        """How many writes failed (a failed write may lose up to a buffer
        of lines)."""

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Literal[False]: ...

@final
class ChromeTrace:
    """A built-in layer that writes the Chrome trace event format, which
    Perfetto (https://ui.perfetto.dev) and ``chrome://tracing`` open:
    ``Registry(layers=[ChromeTrace("trace.json")])``.

    Each busy interval of a span (enter to exit) is a slice (a complete
    event, ``"ph": "X"``) on the track of the thread or asyncio task it ran
    in; its ``args`` hold ``span_id``, ``trace_id`` and ``parent_span_id``
    (hex), ``level``, ``thread_id`` and the ``fields`` as they were at the
    enter. Each thread and each task is a track of its own, named after the
    thread, or the task and its coroutine (``"Task-3 handle_request"``).
    Events are instants on the track they happen in. A parent on another
    track, and ``follows_from``, are flow arrows. Slices on one track
    always nest: an exit out of order (a generator closed elsewhere) ends
    the slices above it and starts them again.

    The file is the JSON array form: readable (unterminated) after
    :meth:`flush`, one complete JSON document after :meth:`close`, the end
    of its ``with`` block, or interpreter exit (slices still open end
    then). Before ``os.fork()`` it writes out what it holds; in a child the
    parent's layers write nothing. A failed write is counted in
    :attr:`write_errors` (the first goes to ``sys.unraisablehook``) and
    never raises into the program."""

    def __new__(cls, path: str | os.PathLike[str], /, *, events: bool = True) -> ChromeTrace:
        """Opens ``path`` for writing (truncating it); ``events=False``
        leaves events out. ``OSError`` if it cannot be opened."""

    def flush(self) -> None:
        """Writes what is buffered to the file."""

    def close(self) -> None:
        """Ends the slices still open, completes the document and closes the
        file. A second call does nothing."""

    @property
    def path(self) -> pathlib.Path:
        """The file's path."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""

    @property
    def events(self) -> bool:
        """Whether events are written."""

    @property
    def write_errors(self) -> int:
        """How many writes failed."""

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Literal[False]: ...

@final
class FlameGraph:
    """A built-in layer that draws a flame graph of *self busy time*: per
    stack of span names (root to leaf), the time spans were entered less the
    busy time of their children on the same thread or task, never below 0.
    Children on other threads or tasks ran concurrently and are not
    subtracted, so no instant is counted twice.
    ``Registry(layers=[FlameGraph("profile.svg")])``.

    It is drawn at :meth:`flush`, :meth:`close` (or the end of its ``with``
    block), before ``os.fork()`` and at interpreter exit: an interactive SVG
    (by the ``inferno`` crate, CDDL-1.0: click to zoom, Ctrl-F to search),
    or folded stacks (``root;child;leaf 1234``, ns, one line per stack,
    what ``inferno``/``flamegraph.pl`` read) if ``format="folded"`` or,
    without ``format``, if ``path`` ends in ``.folded``. In a child process
    the parent's layers draw nothing. A failed write is counted in
    :attr:`write_errors` when it happens at exit or fork (the first goes to
    ``sys.unraisablehook``); :meth:`flush` and :meth:`close` raise it."""

    def __new__(
        cls,
        path: str | os.PathLike[str],
        /,
        *,
        format: Literal["svg", "folded"] | None = None,
        title: str | None = None,
    ) -> FlameGraph:
        """Creates ``path`` now (``OSError`` if it cannot be written);
        ``title`` heads the SVG."""

    def flush(self) -> None:
        """Draws the intervals that ended so far."""

    def close(self) -> None:
        """Ends the intervals still open, draws, and stops. A second call
        does nothing."""

    def folded(self) -> dict[str, int]:
        """The self time (ns) per stack so far, ``{"root;child": ns}``."""

    @property
    def path(self) -> pathlib.Path:
        """The file's path."""

    @property
    def format(self) -> Literal["svg", "folded"]:
        """What it draws."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""

    @property
    def write_errors(self) -> int:
        """How many writes failed."""

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Literal[False]: ...

@final
class OtlpExporter:
    """A built-in layer that sends every span at its end to an OpenTelemetry
    collector over OTLP/HTTP (protobuf): ``Registry(layers=[OtlpExporter()])``.

    At a span's end the application's thread only copies what the span
    carries and queues it; a background thread batches, encodes and sends
    with the GIL released, retrying with backoff (connection errors, 429,
    502, 503, 504) until ``timeout``. Fields become attributes (lists and
    tuples as arrays), the target the instrumentation scope, ``level``,
    ``busy_ns`` and ``idle_ns`` attributes; a recorded error becomes status
    ERROR and an ``exception`` event; events inside a span become its span
    events, ``follows_from`` its links; ids are the spans' ``trace_id`` and
    ``span_id``. Nothing blocks or raises into the program: a full queue
    (2048 spans) or a collector that is down drops spans and counts them.
    At interpreter exit the exporter sends what it holds within
    ``exit_timeout`` seconds; in a child process after ``os.fork()`` it
    starts afresh and never sends the parent's spans.
    """

    def __new__(
        cls,
        endpoint: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        service_name: str | None = None,
        resource_attributes: Mapping[str, object] | None = None,
        exit_timeout: float = 2.0,
    ) -> OtlpExporter:
        """Starts the background thread.

        ``endpoint`` is the collector's base URL (``/v1/traces`` is appended
        unless the path ends with it); without it,
        ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as is),
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` appended) or
        ``http://localhost:4318/v1/traces``. ``headers`` add to (and replace)
        those of ``OTEL_EXPORTER_OTLP_HEADERS``. The resource is
        ``OTEL_RESOURCE_ATTRIBUTES``, then ``OTEL_SERVICE_NAME``,
        ``resource_attributes`` and ``service_name``, later ones winning.
        ``ValueError`` for an endpoint that is not ``http://`` (``https://``
        needs a build with the ``tls`` feature) or a negative timeout.
        """

    @property
    def endpoint(self) -> str:
        """The URL spans are sent to."""

    @property
    def resource(self) -> dict[str, object]:
        """The resource's attributes (``service.name`` among them)."""

    @property
    def exported(self) -> int:
        """Spans the collector accepted."""

    @property
    def dropped(self) -> int:
        """Spans never sent: the queue was full, the exporter was shut down,
        or a flush or shutdown ran out of time before trying them."""

    @property
    def failed(self) -> int:
        """Spans sent and not accepted once retries ran out (the collector
        unreachable or refusing them)."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` has run."""

    def flush(self, timeout: float | None = None) -> bool:
        """Sends the spans ended so far, waiting at most ``timeout`` seconds
        (the exporter's ``timeout`` by default); whether all were handled
        (exported or counted as failed) in time."""

    def shutdown(self, timeout: float | None = None) -> bool:
        """Sends the spans ended so far and stops; later spans are dropped.
        Waits at most ``timeout`` seconds (the exporter's ``timeout`` by
        default); whether that was done in time."""

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Literal[False]: ...

def _close_open_spans() -> None:
    """Registered with ``atexit`` (to run before :func:`_flush_json_lines`):
    every span still open ends and closes, children first, so that layers
    and exporters see it (R15)."""

def _close_pictures() -> None:
    """Registered with ``atexit`` (to run after :func:`_close_open_spans`):
    every open :class:`ChromeTrace` and :class:`FlameGraph` is finished."""

def _flush_pictures() -> None:
    """Run before ``os.fork()``: every open :class:`ChromeTrace` and
    :class:`FlameGraph` writes out what it holds."""

class _Conversion(TypedDict):
    lines: int
    spans: int
    events: int
    bytes: int
    errors: list[tuple[int, str]]
    error_count: int

def _jsonl_to_chrome(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    /,
    progress: Callable[[int], object] | None = None,
) -> _Conversion:
    """Converts the :class:`JsonLines` file ``src`` into a Chrome trace at
    ``dst``, streaming, in memory bounded by the spans open at each point of
    the file (the file is read twice: first for its earliest time). Each
    span is one slice from its start to its end on the track of its thread
    or task (a JSON-lines file holds spans, not each busy interval); events
    are instants; a child on another track than its parent gets an arrow
    (one per parent and track). Bad or cut-short lines are skipped and
    reported: ``errors`` keeps the first 1,000 as ``(line_no, message)``,
    ``error_count`` counts all. ``progress(bytes_read)`` is called about
    every MiB; an exception it raises (or Ctrl-C) stops the conversion.
    ``OSError`` if a file cannot be opened or written."""

def _jsonl_to_flamegraph(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    /,
    progress: Callable[[int], object] | None = None,
) -> _Conversion:
    """Converts the :class:`JsonLines` file ``src`` into a flame graph of
    self busy time at ``dst`` (folded stacks if it ends in ``.folded``, else
    an SVG), streaming, as :func:`_jsonl_to_chrome` does. A span's self
    time is its ``busy_ns`` less that of its children on its own thread and
    task."""

def _flush_json_lines() -> None:
    """Flushes every open :class:`JsonLines` (registered with ``atexit`` and
    to run before ``os.fork()``)."""

@final
class _SpanStack:
    """The Rust core's per-thread stack (``SpanStack``, which its
    ``Subscriber`` runs on), by span ID: for the test that checks it and the
    context stack against the same model."""

    def push(self, id: int) -> bool:
        """R5: pushes ``id``; whether this entry holds a reference."""

    def pop(self, id: int) -> bool:
        """R5: removes the most recent entry of ``id``; whether it held a
        reference."""

    def current(self) -> int | None:
        """R6: the current span's ID."""

    def drain_held(self) -> list[int]:
        """R11: empties the stack; the IDs its entries held, bottom first."""

def _gc_phase(phase: str, _info: object) -> None:
    """In ``gc.callbacks``: counts collections in progress, during which
    pykregistry leaves its context variable alone (see the README's
    Contexts section)."""

def _json_lines_forked() -> None:
    """Run in a child process after ``os.fork()``: the parent's
    :class:`JsonLines` stop writing there."""

_SpanIds: TypeAlias = tuple[int, int, int, str | None]
"""A span's trace id, span id, trace flags and ``tracestate`` header."""

def _otel_attach(registry: Registry, context: object, span: _SpanIds | None) -> object:
    """OpenTelemetry's ``attach(context)`` through the bridge
    (``pykregistry._otel_context``): pushes an entry that carries
    ``context`` (whose current span is ``span``) on ``registry``'s stack in
    the calling context; returns it, the token ``_otel_detach`` takes."""

def _otel_current(registry: Registry) -> tuple[_SpanIds | None, object | None]:
    """What OpenTelemetry sees as current: the registry's span, if it is
    current above every attached context, and the nearest attached
    context."""

def _otel_detach(token: object) -> None:
    """OpenTelemetry's ``detach(token)`` through the bridge: exits the entry
    ``_otel_attach`` made, from whatever context; ignores anything else."""

def _otlp_forked() -> None:
    """Run in a child process after ``os.fork()``: each
    :class:`OtlpExporter` made in the parent starts afresh there."""

def _shift_wall_clock(shift_ns: int) -> None:
    """Tests: from now on the wall clock reads ``shift_ns`` later (earlier
    when negative), as if it had been stepped while the program ran."""

def _reseed_ids() -> None:
    """Run in a child process after ``os.fork()``: draws a new key for span
    and trace ids, so that the child's ids and its parent's differ."""

@final
class RemoteParent:
    """A span in another process, as W3C trace context headers name it:
    ``traceparent`` (its trace id, its span id and the trace flags) and
    ``tracestate``. :func:`pykregistry.extract` reads one from a carrier;
    given as ``parent=`` (to :meth:`Registry.span`, :meth:`Callsite.span`,
    :meth:`Registry.event`, ...), the new span is a root in the registry
    that continues the remote trace: its ``trace_id`` is this
    ``trace_id`` and its ``parent_span_id`` this ``span_id``, and its
    descendants and :func:`inject` carry the flags and ``tracestate`` on.

    Immutable and hashable; equal when every field is. Pickles (to hand to
    a ``multiprocessing`` worker, say).
    """

    def __new__(
        cls,
        trace_id: int,
        span_id: int,
        trace_flags: int = 1,
        tracestate: str | None = None,
    ) -> Self:
        """``trace_id`` in ``[1, 2**128)``, ``span_id`` in ``[1, 2**64)``
        (W3C forbids all-zero ids), ``trace_flags`` of the bits ``0x01``
        (sampled) and ``0x02`` (random trace id) only; ``tracestate`` is
        normalized as :meth:`from_headers` does, and ``ValueError`` if it
        is malformed."""

    @staticmethod
    def from_headers(traceparent: object, tracestate: object = None) -> RemoteParent | None:
        """The remote parent a ``traceparent`` header and a ``tracestate``
        header (str or bytes; several ``tracestate`` fields joined with
        ``,``) name; ``None`` unless the ``traceparent`` is valid. Never
        raises.

        Valid, as W3C Trace Context (Level 2) says: after optional spaces
        and tabs, ``version-traceid-parentid-flags`` in lowercase hex (2, 32,
        16 and 2 digits); version ``ff``, an all-zero trace id or parent id
        are invalid; version ``00`` ends after the flags, a later version may
        continue after a ``-``. Flags other than sampled and random are
        reserved and cleared. A ``tracestate`` is kept normalized (members
        joined by ``,`` without whitespace; of a repeated key the left-most);
        a malformed member or more than 32 drops it (not the
        ``traceparent``); longer than 512 characters, whole members are
        removed, those over 128 characters first, then from the right."""

    @property
    def trace_id(self) -> int:
        """The 128-bit trace id."""

    @property
    def span_id(self) -> int:
        """The remote span's 64-bit id: the ``parent_span_id`` of the spans
        that continue it."""

    @property
    def trace_flags(self) -> int:
        """The W3C trace flags: ``0x01`` sampled, ``0x02`` random trace
        id."""

    @property
    def sampled(self) -> bool:
        """Whether the remote caller may have recorded the trace."""

    @property
    def tracestate(self) -> str | None:
        """The ``tracestate``, normalized; ``None`` without one."""

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` header (version ``00``) naming the remote
        span."""

    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __reduce__(self) -> tuple[type[RemoteParent], tuple[int, int, int, str | None]]: ...

def inject(
    carrier: Any,
    span: Span | SpanRef | int | RemoteParent | None = None,
    *,
    registry: Registry | None = None,
) -> None:
    """Writes W3C trace context headers naming ``span`` into ``carrier``
    (anything with ``__setitem__``: a dict of HTTP headers, ``os.environ``
    or an environment dict for a child process, ...), so that the process
    that receives them continues the trace (:func:`pykregistry.extract`).

    ``traceparent`` always (version ``00``); ``tracestate`` when the span's
    trace continues a remote parent that had one. The trace flags are those
    of the remote parent the trace continues, else ``01`` (sampled: the
    registry records every span; the random-trace-id flag is not set, as
    trace ids are unique by construction rather than random draws).

    ``span``: ``None`` (the default) for the current span of ``registry``
    (by default :func:`pykregistry.default_registry`) in the calling
    thread or task, or one that closed but that this context inherited
    (then named by its identity, with flags ``01`` and no ``tracestate``);
    a :class:`Span` or :class:`SpanRef` (of its own registry); a span ID
    of ``registry``; or a :class:`RemoteParent`, passed on as it is.

    Writes nothing when there is no current span, for the disabled span,
    and (R15) for a span that has closed: that warns with
    :class:`~pykregistry.SpanUsageWarning`, or raises on a strict registry.
    """

@final
class Callsite:
    """A call site: a span's name, target, level and field names, and the
    filter's decision, fixed when it is made. ``callsite.span(**fields)`` is
    the fastest way to make a span; :func:`pykregistry.instrument` makes one
    per decorated function.
    """

    def __new__(
        cls,
        name: str,
        /,
        *,
        target: str | None = None,
        level: _LevelLike | None = None,
        fields: Iterable[str] | None = None,
        registry: Registry | None = None,
    ) -> Self:
        """A call site of ``registry`` (by default
        :func:`pykregistry.default_registry`). ``fields`` names the fields
        its spans may take (a sequence of str, not one str); ``target``
        defaults to ``""`` and ``level`` to ``Level.INFO``."""

    def span(self, **fields: object) -> Span:
        """A new span of this call site, not entered (the disabled span if
        the filter turns it away). Keywords are the declared fields, and
        ``parent`` (``CURRENT``, ``None``, an ID, a ``Span``, a ``SpanRef``
        or a :class:`RemoteParent`, as for :meth:`Registry.span`); any
        other raises ``TypeError``."""

    @property
    def enabled(self) -> bool:
        """Whether spans of this call site can be enabled."""

    @property
    def name(self) -> str:
        """The spans' name."""

    @property
    def target(self) -> str:
        """The spans' target."""

    @property
    def level(self) -> Level:
        """The spans' level."""

    @property
    def fields_tuple(self) -> tuple[str, ...]:
        """The declared field names."""

    @property
    def registry(self) -> Registry:
        """The registry the spans go to."""

def _shutdown_otlp_exporters() -> None:
    """Registered with ``atexit`` (to run after :func:`_close_open_spans`):
    each :class:`OtlpExporter` sends what it holds within its
    ``exit_timeout``."""
