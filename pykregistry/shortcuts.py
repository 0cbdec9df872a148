"""Module-level shortcuts on the default registry, in the words of
``tracing``: ``info_span!`` is :func:`info_span`, ``warn!`` is :func:`warn`.

    >>> import pykregistry
    >>> with pykregistry.info_span("request", path="/"):
    ...     pykregistry.debug("cache miss", key="user:1")
    ...     pykregistry.current().name
    'request'

Each call uses :func:`pykregistry.default_registry`. As with
``Registry.span``, ``target`` defaults to the calling module's ``__name__``.
These are conveniences: on hot paths a :class:`~pykregistry.Callsite` is
faster (its metadata and filter decision are fixed once).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from pykregistry._default import default_registry
from pykregistry._native import CURRENT, Registry, Span
from pykregistry.level import Level

if TYPE_CHECKING:
    from pykregistry._native import SpanRef, _ParentLike

__all__ = [
    "current",
    "debug",
    "debug_span",
    "error",
    "error_span",
    "event",
    "in_scope",
    "info",
    "info_span",
    "span",
    "trace",
    "trace_span",
    "warn",
    "warn_span",
]

P = ParamSpec("P")
R = TypeVar("R")


# The levels as plain ints (which every level argument accepts): converting
# an int is cheaper than converting the enum member.
_TRACE, _DEBUG, _INFO, _WARN, _ERROR = (
    int(Level.TRACE),
    int(Level.DEBUG),
    int(Level.INFO),
    int(Level.WARN),
    int(Level.ERROR),
)


# Each shortcut asks `default_registry()` per call (tests swap the default
# registry) and finds its caller's module with `sys._getframe(1)`: the
# default target, as `Registry.span` finds it for its own caller. Inline, as
# a helper's call would cost as much as the lookup.


# === spans ===


def span(
    name: str,
    /,
    *,
    target: str | None = None,
    level: Level | str | int = Level.INFO,
    parent: _ParentLike = CURRENT,
    **fields: object,
) -> Span:
    """A span on the default registry: ``Registry.span`` with the same
    arguments. Use it as ``with span("name", key=value):``."""
    if target is None:
        target = sys._getframe(1).f_globals.get("__name__", "")
    return default_registry().span(name, target=target, level=level, parent=parent, **fields)


def trace_span(
    name: str, /, *, target: str | None = None, parent: _ParentLike = CURRENT, **fields: object
) -> Span:
    """A ``TRACE`` span on the default registry (``tracing``'s ``trace_span!``)."""
    if target is None:
        target = sys._getframe(1).f_globals.get("__name__", "")
    return default_registry().span(name, target=target, level=_TRACE, parent=parent, **fields)


def debug_span(
    name: str, /, *, target: str | None = None, parent: _ParentLike = CURRENT, **fields: object
) -> Span:
    """A ``DEBUG`` span on the default registry (``tracing``'s ``debug_span!``)."""
    if target is None:
        target = sys._getframe(1).f_globals.get("__name__", "")
    return default_registry().span(name, target=target, level=_DEBUG, parent=parent, **fields)


def info_span(
    name: str, /, *, target: str | None = None, parent: _ParentLike = CURRENT, **fields: object
) -> Span:
    """An ``INFO`` span on the default registry (``tracing``'s ``info_span!``)."""
    if target is None:
        target = sys._getframe(1).f_globals.get("__name__", "")
    return default_registry().span(name, target=target, level=_INFO, parent=parent, **fields)


def warn_span(
    name: str, /, *, target: str | None = None, parent: _ParentLike = CURRENT, **fields: object
) -> Span:
    """A ``WARN`` span on the default registry (``tracing``'s ``warn_span!``)."""
    if target is None:
        target = sys._getframe(1).f_globals.get("__name__", "")
    return default_registry().span(name, target=target, level=_WARN, parent=parent, **fields)


def error_span(
    name: str, /, *, target: str | None = None, parent: _ParentLike = CURRENT, **fields: object
) -> Span:
    """An ``ERROR`` span on the default registry (``tracing``'s ``error_span!``)."""
    if target is None:
        target = sys._getframe(1).f_globals.get("__name__", "")
    return default_registry().span(name, target=target, level=_ERROR, parent=parent, **fields)


# === events ===


def event(
    message: str,
    /,
    *,
    level: Level | str | int = Level.INFO,
    target: str | None = None,
    parent: _ParentLike = CURRENT,
    **fields: object,
) -> None:
    """An event on the default registry: ``Registry.event`` with the same
    arguments. Its parent is the current span unless ``parent`` says
    otherwise."""
    if target is None:
        target = sys._getframe(1).f_globals.get("__name__", "")
    default_registry().event(message, level=level, target=target, parent=parent, **fields)


def trace(
    message: str, /, *, target: str | None = None, parent: _ParentLike = CURRENT, **fields: object
) -> None:
    """A ``TRACE`` event on the default registry (``tracing``'s ``trace!``)."""
    if target is None:
        target = sys._getframe(1).f_globals.get("__name__", "")
    default_registry().event(message, level=_TRACE, target=target, parent=parent, **fields)


def debug(
    message: str, /, *, target: str | None = None, parent: _ParentLike = CURRENT, **fields: object
) -> None:
    """A ``DEBUG`` event on the default registry (``tracing``'s ``debug!``)."""
    if target is None:
        target = sys._getframe(1).f_globals.get("__name__", "")
    default_registry().event(message, level=_DEBUG, target=target, parent=parent, **fields)


def info(
    message: str, /, *, target: str | None = None, parent: _ParentLike = CURRENT, **fields: object
) -> None:
    """An ``INFO`` event on the default registry (``tracing``'s ``info!``)."""
    if target is None:
        target = sys._getframe(1).f_globals.get("__name__", "")
    default_registry().event(message, level=_INFO, target=target, parent=parent, **fields)


def warn(
    message: str, /, *, target: str | None = None, parent: _ParentLike = CURRENT, **fields: object
) -> None:
    """A ``WARN`` event on the default registry (``tracing``'s ``warn!``)."""
    if target is None:
        target = sys._getframe(1).f_globals.get("__name__", "")
    default_registry().event(message, level=_WARN, target=target, parent=parent, **fields)


def error(
    message: str, /, *, target: str | None = None, parent: _ParentLike = CURRENT, **fields: object
) -> None:
    """An ``ERROR`` event on the default registry (``tracing``'s ``error!``)."""
    if target is None:
        target = sys._getframe(1).f_globals.get("__name__", "")
    default_registry().event(message, level=_ERROR, target=target, parent=parent, **fields)


# === the current span ===


def current(registry: Registry | None = None) -> SpanRef | None:
    """A view of the calling thread's or task's current span on
    ``registry`` (the default registry unless given), or ``None``."""
    reg = registry if registry is not None else default_registry()
    if not isinstance(reg, Registry):
        raise TypeError(f"registry must be a pykregistry.Registry, not {type(reg).__name__}")
    sid = reg.current_span()
    return None if sid is None else reg.get(sid)


def in_scope(span: Span, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Calls ``fn(*args, **kwargs)`` with ``span`` entered, and returns what
    it returns: ``tracing``'s ``Span::in_scope``. The span is entered for
    the call only (``with span.entered():``); the handle stays open. An
    exception leaving ``fn`` is recorded on the span and propagates."""
    if not isinstance(span, Span):
        raise TypeError(f"in_scope() takes a pykregistry.Span, not {type(span).__name__}")
    if not callable(fn):
        raise TypeError(f"in_scope() takes a callable, not {type(fn).__name__}")
    with span.entered():
        return fn(*args, **kwargs)
