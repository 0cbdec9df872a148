"""The process-wide state that the native module and the ergonomic layer
share: the default registry, and the decorator behind ``Registry.instrument``.

It sits just above the native module and imports nothing of the ergonomic
layer, so that the native code, which looks both up here by name, never
reaches up into ``shortcuts``, ``instrumentation`` or the package itself.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

from pykregistry._native import Registry
from pykregistry.exceptions import ConfigurationWarning


def _registry_from_env() -> Registry:
    # R15: a typo in the environment must not stop the traced program from
    # importing its tracer; warn and fall back to the default filter.
    directives = os.environ.get("PYKREGISTRY_FILTER") or None
    try:
        return Registry(filter=directives)
    except ValueError as e:
        warnings.warn(
            f"PYKREGISTRY_FILTER={directives!r} is ignored: {e}; "
            "the default registry uses the default filter (everything enabled)",
            ConfigurationWarning,
            stacklevel=2,
        )
        return Registry()


_DEFAULT = _registry_from_env()


def default_registry() -> Registry:
    """The process-wide registry that the module-level helpers use."""
    return _DEFAULT


def set_default_filter(directives: str) -> Registry:
    """For ``pykregistry run --filter``: makes the default registry again
    with the filter ``directives``, as if ``PYKREGISTRY_FILTER`` had said
    so at import, and sets ``PYKREGISTRY_FILTER`` for child processes. Meant
    to be called before any span is made on the default registry (the old
    one keeps those it has). ``ValueError`` for malformed directives, and
    then nothing changes."""
    global _DEFAULT
    registry = Registry(filter=directives)
    os.environ["PYKREGISTRY_FILTER"] = directives
    _DEFAULT = registry
    return registry


instrument: Callable[..., Any] | None = None
"""``pykregistry.instrument``, which ``Registry.instrument`` calls with
``registry=self``. Set by :mod:`pykregistry.instrumentation` when it is
imported: the package imports it, so it is set before any code outside
pykregistry runs."""
