"""W3C trace context: traces that cross process boundaries.

    >>> import pykregistry
    >>> reg = pykregistry.Registry()
    >>> headers = {}
    >>> with reg.span("client") as client:
    ...     pykregistry.inject(headers, registry=reg)
    >>> remote = pykregistry.extract(headers)
    >>> remote.traceparent == headers["traceparent"]
    True
    >>> with reg.span("server", parent=remote) as server:
    ...     server.ref.parent_span_id == remote.span_id
    True

:func:`inject` writes the ``traceparent`` (and ``tracestate``) headers of a
span into a carrier; :func:`extract` reads them back as a
:class:`~pykregistry.RemoteParent`, which ``parent=`` accepts. The headers
are parsed and written natively, following the W3C Trace Context
specification (Level 2); no OpenTelemetry package is needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import TYPE_CHECKING

from pykregistry._native import RemoteParent, inject

if TYPE_CHECKING:
    from pykregistry._native import Registry

__all__ = ["RemoteParent", "extract", "inject"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# A carrier's entries looked at when searching it for a header name in
# another case: enough for any request's headers or a process's
# environment, and a bound on what a strange carrier can make us read.
_MAX_ENTRIES = 4096

# Methods that return every value of a repeated header: `email.message`
# and `http.client` (`get_all`), multidict/aiohttp (`getall`), werkzeug,
# Starlette and Django's QueryDict (`getlist`).
_GET_ALL = ("get_all", "getall", "getlist")


def extract(carrier: object, *, registry: Registry | None = None) -> RemoteParent | None:
    """The remote parent that a carrier's ``traceparent`` and ``tracestate``
    headers name, or ``None`` if there is no valid ``traceparent``. Give it
    as ``parent=`` to continue the remote trace.

    Never raises (``KeyboardInterrupt`` and ``SystemExit`` aside): whatever
    the carrier is or does, the answer is a :class:`RemoteParent` or
    ``None``.

    The carrier may be:

    - a mapping of header names to values (a dict, ``os.environ``, the
      headers of ``http.server``, ``requests``, Django, Starlette, aiohttp
      or werkzeug), values being str or bytes, or lists of them;
    - a list or tuple of ``(name, value)`` pairs, str or bytes (ASGI's
      ``scope["headers"]``, WSGI's response headers);
    - a WSGI environ: ``HTTP_TRACEPARENT`` and ``HTTP_TRACESTATE`` count.

    Header names are matched case-insensitively (``Traceparent``,
    ``TRACEPARENT`` as in an environment). More than one ``traceparent``
    makes it invalid; several ``tracestate`` values are combined, in order.
    Validity is the W3C specification's: see :class:`RemoteParent` and the
    README.

    ``registry`` is accepted for symmetry with :func:`inject` and not used:
    a remote parent belongs to no registry.
    """
    del registry
    try:
        traceparent = _header(carrier, TRACEPARENT)
        if len(traceparent) != 1 or traceparent[0] is None:
            return None
        tracestate = _header(carrier, TRACESTATE)
        state = None
        if tracestate and None not in tracestate:
            state = ",".join(_text(v) for v in tracestate if v is not None)
        return RemoteParent.from_headers(traceparent[0], state)
    except Exception:
        # R15: the carrier is the application's; nothing it does raises here.
        return None


# A header's values: str or bytes as given, None for a value of another type
# (which makes the header invalid).
_Values = list[str | bytes | None]


def _header(carrier: object, name: str) -> _Values:
    """Every value of header ``name`` in ``carrier``, in order."""
    if isinstance(carrier, (list, tuple)):
        return _from_pairs(carrier, name)
    for method in _GET_ALL:
        found = _call(carrier, method, name)
        if isinstance(found, (list, tuple)) and found:
            return _values(found)
    # `get` where there is one: `__getitem__` may add the key (defaultdict).
    found = _call(carrier, "get" if _has(carrier, "get") else "__getitem__", name)
    if found is not None:
        return _values(found)
    items = _call(carrier, "items")
    if not isinstance(items, Iterable):
        return []
    return _from_pairs(items, name)


def _call(obj: object, method: str, *args: object) -> object:
    """``obj.method(*args)``; ``None`` if it has no such method or the call
    fails (a missing header, whatever the carrier says)."""
    try:
        return getattr(obj, method)(*args)
    except Exception:
        return None


def _has(obj: object, name: str) -> bool:
    try:
        return hasattr(obj, name)
    except Exception:
        return False


def _from_pairs(pairs: Iterable[object], name: str) -> _Values:
    """The values of the ``(name, value)`` pairs whose name is ``name`` in
    any case, or ``HTTP_`` and ``name`` (a WSGI environ)."""
    wsgi = "http_" + name
    values: _Values = []
    for pair in islice(pairs, _MAX_ENTRIES):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            continue
        key, value = pair
        if isinstance(key, (bytes, bytearray)):
            key = bytes(key).decode("latin-1")
        if isinstance(key, str) and str.lower(key) in (name, wsgi):
            values.extend(_values(value))
    return values


def _values(value: object) -> _Values:
    """A header value as a list: str and bytes as they are, the items of a
    list or tuple, anything else invalid (None)."""
    items = value if isinstance(value, (list, tuple)) else (value,)
    return [
        bytes(v) if isinstance(v, bytearray) else v if isinstance(v, (str, bytes)) else None
        for v in islice(items, _MAX_ENTRIES)
    ]


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else bytes.decode(value, "latin-1")
