"""The standard library's :mod:`logging`, joined to spans.

- :class:`SpanFilter` puts the current span on each ``LogRecord``
  (``span_id``, ``span_name``, ``span_path``), for formatters:
  ``"%(span_path)s %(message)s"``.
- :class:`SpanHandler` turns log records into events on the current span,
  so layers see them with the spans' own events.

    >>> import logging
    >>> from pykregistry import Registry
    >>> from pykregistry.logs import SpanFilter
    >>> reg = Registry()
    >>> handler = logging.StreamHandler()
    >>> handler.addFilter(SpanFilter(reg))
    >>> handler.setFormatter(logging.Formatter("%(span_path)s: %(message)s"))
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pykregistry import _default
from pykregistry.exceptions import RegistryError
from pykregistry.level import Level

if TYPE_CHECKING:
    from pykregistry._native import Registry

__all__ = ["SpanFilter", "SpanHandler", "level_of"]


def level_of(levelno: int) -> Level:
    """The span level for a :mod:`logging` level number: ``DEBUG``,
    ``INFO``, ``WARNING`` (``WARN``) and ``ERROR`` map to their namesakes,
    ``CRITICAL`` to ``ERROR``, anything below ``DEBUG`` to ``TRACE``; a
    level between two standard ones maps like the one below it."""
    if levelno >= logging.ERROR:
        return Level.ERROR
    if levelno >= logging.WARNING:
        return Level.WARN
    if levelno >= logging.INFO:
        return Level.INFO
    if levelno >= logging.DEBUG:
        return Level.DEBUG
    return Level.TRACE


class SpanFilter(logging.Filter):
    """A :class:`logging.Filter` that never rejects a record: it sets, on
    each record, the current span of the thread or asyncio task logging it.

    - ``span_id``: the span's ID (``int``), or ``None`` outside any span;
    - ``span_name``: its name, or ``""``;
    - ``span_path``: the names from the root down, joined by ``>``
      (``"request>db.query"``), or ``""``.

    Attach it to a handler (``handler.addFilter(SpanFilter())``) to
    annotate every record that handler formats, or to a logger for records
    logged there. ``registry`` defaults to the default registry (looked up
    on each record).
    """

    def __init__(self, registry: Registry | None = None, name: str = "") -> None:
        super().__init__(name)
        self.registry = registry

    def filter(self, record: logging.LogRecord) -> bool:
        """Sets ``span_id``, ``span_name`` and ``span_path`` on ``record``;
        always ``True``."""
        registry = self.registry if self.registry is not None else _default.default_registry()
        record.span_id = None
        record.span_name = ""
        record.span_path = ""
        try:
            sid = registry.current_span()
            view = None if sid is None else registry.get(sid)
            if view is not None:
                scope = view.from_root()
                record.span_id = sid
                record.span_name = scope[-1].name
                record.span_path = ">".join([s.name for s in scope])
        except RegistryError:
            # An ancestor closed while we read it (another thread released
            # it): the record goes out with what was set.
            pass
        return True


# The attributes every LogRecord has; any other attribute came from
# `extra=` and is recorded as a field.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "span_id", "span_name", "span_path", "taskName"}
)


# Keywords of `Registry.event` itself: extras of these names are recorded as
# `extra.<name>`.
_RESERVED = frozenset({"level", "target", "parent"})


class SpanHandler(logging.Handler):
    """A :class:`logging.Handler` that emits each record as an event on the
    current span of ``registry`` (the default registry unless given).

    The event's message is ``record.getMessage()`` (or the handler's
    formatter's output, if one is set), its level :func:`level_of` the
    record's, its target the logger's name (so filter directives such as
    ``"warn,app.db=debug"`` apply to logger names), and its fields:

    - ``log.level`` (``"WARNING"``), ``log.module``, ``log.file``,
      ``log.line``, ``log.function`` (the names ``tracing-log`` uses);
    - for a record with an exception (``logger.exception(...)``):
      ``exception.type``, ``exception.message`` and
      ``exception.stacktrace``, as OpenTelemetry names them;
    - every attribute given with ``extra={...}`` (``level``, ``target``
      and ``parent``, which name the event's own arguments, as
      ``extra.level`` and so on).

    Events a layer emits while handling one (a layer that logs to this
    handler) are dropped rather than looping.
    """

    def __init__(self, registry: Registry | None = None, level: int | str = logging.NOTSET) -> None:
        super().__init__(level)
        self.registry = registry
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        """Emits ``record`` as an event."""
        local = self._local
        if getattr(local, "emitting", False):
            return
        local.emitting = True
        try:
            registry = self.registry if self.registry is not None else _default.default_registry()
            message = self.format(record) if self.formatter is not None else record.getMessage()
            fields: dict[str, Any] = {
                "log.level": record.levelname,
                "log.module": record.module,
                "log.file": record.pathname,
                "log.line": record.lineno,
                "log.function": record.funcName,
            }
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                fields["exception.type"] = _exception_type(type(exc))
                fields["exception.message"] = _text(lambda: str(exc)) or ""
                fields["exception.stacktrace"] = record.exc_text or logging.Formatter(
                    "%(message)s"
                ).formatException(record.exc_info)
            for key, value in record.__dict__.items():
                if key not in _STANDARD:
                    fields[f"extra.{key}" if key in _RESERVED else key] = value
            registry.event(message, level=level_of(record.levelno), target=record.name, **fields)
        except Exception:
            self.handleError(record)
        finally:
            local.emitting = False


def _exception_type(cls: type[BaseException]) -> str:
    """R15: an exception's type as a span records it, whatever its class
    looks like: ``module.QualName``, or the name alone for builtins and a
    ``__module__`` that is not a str."""
    name = _text(lambda: cls.__qualname__) or _text(lambda: cls.__name__) or "?"
    module = _text(lambda: cls.__module__)
    return name if module is None or module == "builtins" else f"{module}.{name}"


def _text(get: Callable[[], object]) -> str | None:
    """What `get()` gives, if that is a str; ``None`` if it is not, or raises
    (an exception's ``__str__``, a class's odd ``__module__``)."""
    try:
        value = get()
    except Exception:
        return None
    return value if isinstance(value, str) else None
