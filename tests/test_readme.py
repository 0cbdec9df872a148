"""The examples of the README and of the docs site run, and where a page
shows what one prints, it prints exactly that (issue 9: examples that were
not checked had drifted; issue 10: every code block of the README and the
docs runs in the test suite).

The rules, the same on every page (``README.md`` and ``docs/**/*.md``):

- every ``python`` block runs, in a fresh interpreter in an empty directory;
- a ``python`` block followed by a line that says exactly ``prints`` and a
  ``text`` block must print exactly that text (``prints (times vary)`` and
  other wordings show output without comparing it), except that a duration
  as a span tree shows it (``1.2 ms``, and ``(busy ..., idle ...)`` after
  it or not) stands for any duration;
- a block written as several files (it has a ``# conftest.py`` line) is not
  run here: tests/test_testing.py checks the code it stands for.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]

# A python block, then optionally "prints" and the text block it prints.
BLOCK = re.compile(
    r"```python\n(?P<code>.*?)```(?:\n\n(?P<says>[^\n`]*)\n\n```text\n(?P<out>.*?)```)?", re.S
)
# A duration as pykregistry.tree.format_duration writes it, with the busy
# and idle times that the tree adds when a span waited: times vary from run
# to run, so one stands for any.
DURATION = re.compile(
    r"\b\d+(?:\.\d+)? (?:ns|µs|us|ms|s|min|h)(?: \(busy [^,()]+, idle [^,()]+\))?(?=  |$)", re.M
)


def any_duration(text: str) -> str:
    return DURATION.sub("<duration>", text)


# Blocks that stand for several files (# app/db.py, # conftest.py) are
# checked by tests/test_testing.py.
SEVERAL_FILES = "# conftest.py"


def examples(page: Path) -> list[tuple[str, str | None, str | None]]:
    """The python blocks of ``page`` that run: (code, what the page says of
    its output, the output shown)."""
    return [
        (m.group("code"), m.group("says"), m.group("out"))
        for m in BLOCK.finditer(page.read_text())
        if SEVERAL_FILES not in m.group("code")
    ]


def name(page: Path) -> str:
    return page.relative_to(ROOT).with_suffix("").as_posix()


EXAMPLES = [
    (f"{name(page)}-{i}", *example) for page in PAGES for i, example in enumerate(examples(page))
]


def test_readme_has_examples() -> None:
    readme = examples(README)
    assert len(readme) >= 3
    assert sum(says == "prints" for _, says, _ in readme) >= 2


def test_docs_have_examples() -> None:
    # The README's 17 examples moved into the guides (issue 10), and more.
    assert len(EXAMPLES) >= 15
    assert sum(says == "prints" for _, _, says, _ in EXAMPLES) >= 2
    docs = [e for e in EXAMPLES if e[0].startswith("docs/")]
    assert len(docs) >= 17
    for guide in ("spans", "contexts", "instrument", "filters", "layers", "export", "testing"):
        assert any(e[0].startswith(f"docs/{guide}-") for e in docs), guide


@pytest.mark.parametrize("page", PAGES, ids=[name(p) for p in PAGES])
def test_every_python_block_is_run_or_marked(page: Path) -> None:
    """No python block escapes: the pattern above finds every one that the
    page opens, and the only ones not run are marked as several files."""
    text = page.read_text()
    opened = text.count("```python\n")
    found = list(BLOCK.finditer(text))
    assert len(found) == opened
    skipped = [m for m in found if SEVERAL_FILES in m.group("code")]
    assert len(examples(page)) + len(skipped) == opened
    # A text block right after a python block is what it prints, said so.
    for m in found:
        if m.group("out") is not None:
            assert m.group("says").startswith(("prints", "writes")), m.group("says")


def test_readme_links_to_the_docs_pages() -> None:
    """The README is the door to docs/: its relative links work on GitHub
    too, and it links every guide."""
    text = README.read_text()
    links = re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", text)
    assert links
    for link in links:
        assert (ROOT / link).exists(), link
    for guide in ("spans", "contexts", "instrument", "filters", "layers", "export", "testing"):
        assert f"docs/{guide}.md" in links, guide
    for page in ("semantics", "safety", "performance"):
        assert f"docs/{page}.md" in links, page


def test_readme_is_what_a_newcomer_needs() -> None:
    """Under 20 KB (the rest is in docs/), with the two quick-start commands
    as they are."""
    text = README.read_text()
    assert len(text.encode()) < 20_000
    assert (
        "```sh\n"
        "pip install -e . && python -m pykregistry demo   "
        "# build, install, run the demo workload\n"
        "make test                                        "
        "# install, then cargo test --workspace and pytest\n"
        "```\n"
    ) in text


@pytest.mark.parametrize(
    ("code", "says", "out"),
    [e[1:] for e in EXAMPLES],
    ids=[e[0] for e in EXAMPLES],
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
        assert any_duration(done.stdout) == any_duration(out)


def test_a_duration_stands_for_any() -> None:
    shown = "request  1.2 ms  app INFO\n└── db  340 µs (busy 1 µs, idle 339 µs)  app INFO  n=5"
    printed = "request  2.01 s  app INFO\n└── db  850 ns  app INFO  n=5"
    assert any_duration(shown) == any_duration(printed)
    # Nothing else: not a field's value, not a span without a duration.
    assert any_duration("x  1.2 ms  app INFO  n=5") != any_duration("x  1.2 ms  app INFO  n=6")
    assert any_duration("x  1.2 ms  app INFO") != any_duration("x  app INFO")


# The API reference shows the docstrings, examples included: those run too.
DOCTESTED = sorted(
    path
    for path in (ROOT / "pykregistry").rglob("*.py")
    if re.search(r"^\s*>>> ", path.read_text(), re.M)
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_docstring_examples_are_found() -> None:
    assert {module_name(p) for p in DOCTESTED} >= {
        "pykregistry",
        "pykregistry.tree",
        "pykregistry.logs",
        "pykregistry.shortcuts",
        "pykregistry.instrumentation",
    }
    # The stubs' docstrings are the native classes' reference, and cannot
    # be doctested (the compiled classes carry their own): no examples there.
    assert ">>> " not in (ROOT / "pykregistry" / "_native.pyi").read_text()


@pytest.mark.parametrize("path", DOCTESTED, ids=[module_name(p) for p in DOCTESTED])
def test_docstring_examples_run(tmp_path: Path, path: Path) -> None:
    """Every ``>>>`` line of the module's docstrings runs, in a fresh
    interpreter, and shows what the docstring says it shows."""
    module = module_name(path)
    code = (
        "import doctest, importlib, sys\n"
        f"result = doctest.testmod(importlib.import_module({module!r}))\n"
        "print(result.attempted)\n"
        "sys.exit(1 if result.failed else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    examples = len(re.findall(r"^\s*>>> ", path.read_text(), re.M))
    assert done.stdout.splitlines()[-1] == str(examples)
