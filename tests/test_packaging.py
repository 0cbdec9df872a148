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


def test_license_files_are_the_licenses_pyproject_declares() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the pykregistry authors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    # inferno (FlameGraph's SVG) is compiled in: CDDL-1.0, its text shipped.
    assert pyproject["project"]["license"] == "MIT AND CDDL-1.0"
    assert pyproject["project"]["license-files"] == ["LICENSE", "rust/export/LICENSE-CDDL-1.0.txt"]
    cddl = (ROOT / "rust/export/LICENSE-CDDL-1.0.txt").read_text(encoding="utf-8")
    assert "COMMON DEVELOPMENT AND DISTRIBUTION LICENSE" in cddl
    # PEP 639's license and license-files reach both the wheel and the sdist
    # from maturin 1.9.3 on.
    assert pyproject["build-system"]["requires"] == ["maturin>=1.9.3,<2"]


def test_installed_metadata_names_the_license() -> None:
    metadata = importlib.metadata.metadata("pykregistry")
    assert metadata["License-Expression"] == "MIT AND CDDL-1.0"
    files = metadata.get_all("License-File") or []
    assert "LICENSE" in files
    assert any(f.endswith("LICENSE-CDDL-1.0.txt") for f in files)


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


def test_version_is_the_installed_distributions() -> None:
    """``pykregistry.__version__`` comes from the build: the metadata of the
    installed distribution (editable or wheel), not a constant to bump."""
    import pykregistry

    assert pykregistry.__version__ == importlib.metadata.version("pykregistry")
    assert "__version__" in dir(pykregistry)


def test_the_build_takes_the_version_from_cargo_toml() -> None:
    """maturin sets the distribution's version from the bindings crate,
    whose version is the workspace's: one number to change for a release.
    (A pre-release would differ in spelling: Cargo's ``1.0.0-alpha.1`` is
    PEP 440's ``1.0.0a1``.)"""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    assert importlib.metadata.version("pykregistry") == cargo["workspace"]["package"]["version"]


def test_importing_pykregistry_leaves_importlib_metadata_unimported() -> None:
    """Reading the version costs as much as importing pykregistry; only
    asking for ``__version__`` pays it."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "before = 'importlib.metadata' in sys.modules\n"
            "import pykregistry\n"
            "after = 'importlib.metadata' in sys.modules\n"
            "print(before, after, pykregistry.__version__)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    before, after, version = done.stdout.split()
    if before == "True":
        pytest.skip("this interpreter's start-up imports importlib.metadata")
    assert after == "False"
    assert version == importlib.metadata.version("pykregistry")
