"""The README's examples run, and where the README shows what one prints,
it prints exactly that (issue 9: examples that were not checked had drifted).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()

# A python block, then optionally "prints" and the text block it prints.
BLOCK = re.compile(
    r"```python\n(?P<code>.*?)```(?:\n\n(?P<says>[^\n`]*)\n\n```text\n(?P<out>.*?)```)?", re.S
)
EXAMPLES = [
    (m.group("code"), m.group("says"), m.group("out"))
    for m in BLOCK.finditer(README)
    # Blocks that stand for several files (# app/db.py, # conftest.py) are
    # checked by tests/test_testing.py.
    if "# conftest.py" not in m.group("code")
]


def test_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 15
    assert sum(says == "prints" for _, says, _ in EXAMPLES) >= 2


@pytest.mark.parametrize(
    ("code", "says", "out"),
    EXAMPLES,
    ids=[f"example-{i}" for i in range(len(EXAMPLES))],
)
def test_readme_example_runs_and_prints_what_it_shows(
    tmp_path: Path, code: str, says: str | None, out: str | None
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if says == "prints" and out is not None:
        assert done.stdout == out
