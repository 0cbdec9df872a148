"""Carrying the current span to other threads: thread pools, executors,
``threading.Thread`` targets.

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> import pykregistry
    >>> reg = pykregistry.Registry()
    >>> def work():
    ...     with reg.span("work") as w:
    ...         return w.ref.parent_id
    >>> with reg.span("batch") as batch, ThreadPoolExecutor() as pool:
    ...     pool.submit(pykregistry.in_current_span(work)).result() == batch.id
    True

A new thread starts with nothing current (SPEC section 3); a thread runs
with the spans current where a call was wrapped only if it runs a copy of
that context, which is what :func:`in_current_span` arranges, as
``asyncio.to_thread`` does for its own call.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from pykregistry._native import Registry

__all__ = ["in_current_span"]

P = ParamSpec("P")
R = TypeVar("R")


def in_current_span(fn: Callable[P, R], /, *, registry: Registry | None = None) -> Callable[P, R]:
    """``fn`` wrapped so that, wherever it is called — a
    ``ThreadPoolExecutor.submit``, ``loop.run_in_executor``, a
    ``threading.Thread`` target — it runs with the spans that were current
    where it was wrapped: ``tracing``'s ``in_current_span``.

    - While the span current at wrap time lives, the spans ``fn`` makes are
      its children (``parent_id`` is its ID).
    - Once that span has ended, they are roots in the registry that keep it
      as their parent in the trace: same ``trace_id``, ``parent_span_id``
      its ``span_id`` (R13), as in an asyncio task that outlives its
      creator's span.
    - The wrapper does not keep that span open: the span ends and closes
      with its own ``with`` block, however long the wrapper lives (R5,
      R11). A worker's span that is still open holds its parent, as any
      child does (R2), but does not stretch its end (R14).

    Each call runs ``fn`` in a fresh copy of the context captured when
    ``in_current_span`` was called (``contextvars.copy_context()``), so
    the same wrapper can run in several threads at once, or re-entrantly.
    Every context variable is carried, not only the span stack (as with
    ``asyncio.to_thread``), and what ``fn`` sets in them is gone when it
    returns; spans it leaves entered are exited then, their references
    released (R11). The thread that calls the wrapper sees no difference:
    its own current span is not ``fn``'s parent, and is current again
    after the call.

    ``registry``: every registry keeps its stack in one context variable
    (P14), so the wrapper carries the current span of every registry, and
    ``registry`` changes nothing; it is accepted, like the other entry
    points' ``registry=``, and must be a :class:`~pykregistry.Registry` or
    ``None`` (the default registry).

    The wrapper returns what ``fn`` returns and raises what ``fn`` raises,
    nothing else; it keeps ``fn``'s ``__name__``, ``__doc__`` and
    ``__wrapped__`` (``functools.wraps``). It is for plain callables: a
    coroutine function's or generator's body runs later, in the context of
    whoever awaits or iterates it (an asyncio task already starts with its
    creator's current span), so those are rejected with ``TypeError``. It
    cannot be pickled, so it does not cross to a ``ProcessPoolExecutor``:
    send a ``traceparent`` there (:func:`~pykregistry.inject`).
    """
    if registry is not None and not isinstance(registry, Registry):
        raise TypeError(
            f"registry must be a pykregistry.Registry or None, not {type(registry).__name__}"
        )
    if not callable(fn):
        raise TypeError(f"in_current_span() takes a callable, not {type(fn).__name__}")
    if _runs_later(fn):
        raise TypeError(
            f"in_current_span() takes a plain callable; {_name(fn)} is a coroutine or "
            "generator function, whose body runs where it is awaited or iterated, not "
            "where it is called (an asyncio task already starts with its creator's "
            "current span: pass the function itself)"
        )
    captured = contextvars.copy_context()

    def in_captured_context(*args: P.args, **kwargs: P.kwargs) -> R:
        # A copy per call: a Context can be entered by one thread at a time.
        return captured.copy().run(fn, *args, **kwargs)

    try:
        functools.update_wrapper(in_captured_context, fn)
    except Exception:
        # R15: metadata is a nicety; a callable whose attributes raise still
        # gets wrapped.
        in_captured_context.__wrapped__ = fn  # type: ignore[attr-defined]
    return in_captured_context


def _runs_later(fn: object) -> bool:
    """Whether calling ``fn`` only makes a coroutine, generator or async
    generator, whose body runs in another context."""
    try:
        return (
            inspect.iscoroutinefunction(fn)
            or inspect.isgeneratorfunction(fn)
            or inspect.isasyncgenfunction(fn)
        )
    except Exception:
        return False  # a callable whose attributes raise: wrap it as it is


def _name(fn: object) -> str:
    try:
        return repr(getattr(fn, "__qualname__", fn))
    except Exception:
        return f"this {type(fn).__name__}"
