"""What a user installs: the license that ``pyproject.toml`` declares is
there and ships, and the package's types (the hand-written stubs of the
native module and the Python modules' annotations) agree with what runs."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_license_file_is_the_mit_license_pyproject_declares() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the pykregistry authors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "MIT"
    assert pyproject["project"]["license-files"] == ["LICENSE"]
    # PEP 639's license and license-files reach both the wheel and the sdist
    # from maturin 1.9.3 on.
    assert pyproject["build-system"]["requires"] == ["maturin>=1.9.3,<2"]


def test_installed_metadata_names_the_license() -> None:
    metadata = importlib.metadata.metadata("pykregistry")
    assert metadata["License-Expression"] == "MIT"
    assert "LICENSE" in (metadata.get_all("License-File") or [])


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
