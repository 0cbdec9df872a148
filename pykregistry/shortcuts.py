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
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar

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
_F = TypeVar("_F", bound=Callable[..., object])
_R_co = TypeVar("_R_co", covariant=True)


# Each shortcut asks `default_registry()` per call (tests swap the default
# registry) and finds its caller's module with `sys._getframe(1)`: the
# default target, as `Registry.span` finds it for its own caller. Inline, as
# a helper's call would cost as much as the lookup.


# === at any level ===


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


# === one per level ===
#
# `span` and `event` with the level fixed, as tracing's macros: the same
# body for every level, made by `_span_at` and `_event_at`. Their type is
# declared once, as the protocol below, which mypy checks each generated
# function against (and stubtest each runtime signature).


class _AtLevel(Protocol[_R_co]):
    def __call__(
        self,
        name: str,
        /,
        *,
        target: str | None = None,
        parent: _ParentLike = CURRENT,
        **fields: object,
    ) -> _R_co: ...


def _span_at(level: Level) -> _AtLevel[Span]:
    # The level as a plain int (which every level argument accepts):
    # converting an int is cheaper than converting the enum member.
    at = int(level)

    def level_span(
        name: str, /, *, target: str | None = None, parent: _ParentLike = CURRENT, **fields: object
    ) -> Span:
        if target is None:
            target = sys._getframe(1).f_globals.get("__name__", "")
        return default_registry().span(name, target=target, level=at, parent=parent, **fields)

    return _named(level_span, level, f"{level.name.lower()}_span", "span")


def _event_at(level: Level) -> _AtLevel[None]:
    at = int(level)

    def level_event(
        message: str,
        /,
        *,
        target: str | None = None,
        parent: _ParentLike = CURRENT,
        **fields: object,
    ) -> None:
        if target is None:
            target = sys._getframe(1).f_globals.get("__name__", "")
        default_registry().event(message, level=at, target=target, parent=parent, **fields)

    return _named(level_event, level, level.name.lower(), "event")


def _named(func: _F, level: Level, name: str, what: str) -> _F:
    """`func` as the module's function `name`, down to the name of its code
    object, which tracebacks and profilers show."""
    article = "An" if level.name[0] in "AEIOU" else "A"
    func.__doc__ = (
        f"{article} ``{level.name}`` {what} on the default registry (``tracing``'s ``{name}!``)."
    )
    func.__name__ = func.__qualname__ = name
    if sys.version_info >= (3, 11):
        func.__code__ = func.__code__.replace(co_name=name, co_qualname=name)
    else:  # pragma: no cover - the interpreter
        func.__code__ = func.__code__.replace(co_name=name)
    return func


trace_span = _span_at(Level.TRACE)
debug_span = _span_at(Level.DEBUG)
info_span = _span_at(Level.INFO)
warn_span = _span_at(Level.WARN)
error_span = _span_at(Level.ERROR)

trace = _event_at(Level.TRACE)
debug = _event_at(Level.DEBUG)
info = _event_at(Level.INFO)
warn = _event_at(Level.WARN)
error = _event_at(Level.ERROR)


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
