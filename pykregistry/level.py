"""Verbosity levels, ordered as in Rust's ``tracing``."""

from __future__ import annotations

import enum

__all__ = ["Level"]


class Level(enum.IntEnum):
    """A span's or event's verbosity.

    Ordered as ``tracing`` orders them: more verbose is greater, so
    ``Level.TRACE > Level.DEBUG > Level.INFO > Level.WARN > Level.ERROR``
    (the reverse of :mod:`logging`'s numbers). Wherever a level is taken, its
    case-insensitive name (``"debug"``) is accepted too.
    """

    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4
    TRACE = 5

    def __repr__(self) -> str:
        return f"Level.{self.name}"

    def __str__(self) -> str:
        return self.name
