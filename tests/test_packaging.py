"""What a user installs: the package's types (the hand-written stubs of the
native module and the Python modules' annotations) agree with what runs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_stubtest_passes_on_the_whole_package() -> None:
    """``python -m mypy.stubtest pykregistry`` (``make lint-stubtest``):
    e.g. a module-level ``except ImportError as e`` once left a name ``e``
    that type checkers saw and the module did not have."""
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is a lint extra: pip install -e '.[lint]'")
    done = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "pykregistry"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
