"""The exceptions pykregistry raises, and the warnings it gives.

Every exception is a :class:`RegistryError` and also derives from the
builtin it resembles, so handlers written for ``KeyError``, ``ValueError``
or ``RuntimeError`` keep working. Every warning is a ``UserWarning``, so
Python's default filter shows it once per place. This module is pure Python
and imports nothing native; the Rust core imports these classes and raises
them.
"""

from __future__ import annotations

__all__ = [
    "CapacityError",
    "ConfigurationWarning",
    "InvalidSpanIdError",
    "RegistryError",
    "SpanClosedError",
    "SpanNotFoundError",
    "SpanUsageWarning",
]


class RegistryError(Exception):
    """Base class of every error the registry raises."""


class SpanNotFoundError(RegistryError, KeyError):
    """The ID does not name a live span: it closed, was never issued, or is
    a stale ID whose slot now holds a later span."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a sentence reads better unquoted.
        return str(self.args[0]) if self.args else ""


class SpanClosedError(SpanNotFoundError):
    """A handle or view was used after its span closed (or, for a handle,
    after :meth:`Span.close`)."""


class InvalidSpanIdError(RegistryError, ValueError):
    """An integer that can never be a span ID: span IDs are in ``[1, 2**64)``."""


class CapacityError(RegistryError, RuntimeError):
    """The registry ran out of capacity: every slab slot is in use, or more
    threads are alive than the slab has shards for. Nothing was created."""


class ConfigurationWarning(UserWarning):
    """Configuration from the environment could not be used (a malformed
    ``PYKREGISTRY_FILTER``): pykregistry warns, uses its default instead,
    and goes on, rather than fail the program being traced."""


class SpanUsageWarning(UserWarning):
    """A span was used after the code that made it was done with it: a
    handle recorded on, entered, cloned or read after its block ended or
    its ``close()``, or a span named as a parent after it closed.

    SPEC R15: the ergonomic API never raises into the application for such
    reasons of timing. It warns with this category through
    :func:`warnings.warn` (so Python's default filter shows it once per call
    site), does what it still can (a child of a closed parent becomes a root
    of a new trace; a record on an ended handle is dropped) and goes on.
    ``Registry(strict=True)`` and the testing fixtures raise the matching
    :class:`RegistryError` instead."""
