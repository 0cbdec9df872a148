"""``pykregistry run``: run a Python program, unchanged, with the default
registry writing its spans where the options say.

The program runs in this interpreter as ``python script.py`` or ``python -m
module`` would run it: its ``sys.argv``, its ``__main__`` module, its
``sys.path[0]`` (the script's directory, or the current one for ``-m``) and
its exit status are its own; an exception that leaves it is printed by
``sys.excepthook`` and exits with status 1, as Python does. The outputs are
layers added to :func:`pykregistry.default_registry` before the program
starts, so every span the program makes through the module-level helpers
(``pykregistry.span``, ``@pykregistry.instrument``, the logging
integration) or ``default_registry()`` is seen; a ``Registry()`` the program
makes itself is not.

They are written out when the interpreter exits, after the program's own
``atexit`` handlers and its threads: spans still open then are closed
(children first), and each file is flushed, whatever way the program ended,
except ``os._exit()``, which skips all of it. Nothing here waits for longer
than the exporters' own deadlines (``OtlpExporter``'s ``exit_timeout``), so
the program never hangs on its tracer (R15).
"""

from __future__ import annotations

import argparse
import atexit
import builtins
import contextlib
import importlib.machinery
import importlib.util
import io
import os
import re
import runpy
import sys
import traceback
import types
from collections.abc import Callable, Sequence
from typing import Any

import pykregistry
from pykregistry import _default, _native
from pykregistry.tree import TreeRecorder, wants_color

__all__ = ["add_arguments", "run", "split_arguments"]

USAGE = "%(prog)s [options] (script.py | -m module) [args ...]"

# The options that take a value (the next argument, or after "=").
_VALUE_OPTIONS = frozenset({"--jsonl", "--perfetto", "--flamegraph", "--filter"})
# What --otlp takes as its URL when it is given as the next argument: a
# scheme, so that `--otlp app.py` runs app.py with the default endpoint.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``run``, for parsing and for ``--help``."""
    parser.add_argument(
        "--jsonl", metavar="FILE", help="write the spans and events to FILE as JSON lines"
    )
    parser.add_argument(
        "--perfetto",
        metavar="FILE",
        help="write a Chrome trace to FILE, for Perfetto (ui.perfetto.dev) or chrome://tracing",
    )
    parser.add_argument(
        "--flamegraph",
        metavar="FILE",
        help="write a flame graph of busy time to FILE (.svg, or .folded for folded stacks)",
    )
    parser.add_argument(
        "--otlp",
        metavar="URL",
        nargs="?",
        const="",
        help=(
            "send the spans to an OpenTelemetry collector over OTLP/HTTP: URL, or with no URL "
            "the OTEL_EXPORTER_OTLP_* environment, or http://localhost:4318 (as --otlp=URL, "
            "or as --otlp URL when URL starts with a scheme such as http://)"
        ),
    )
    parser.add_argument(
        "--tree",
        action="store_true",
        help="print the span tree, with durations, on standard error when the program ends",
    )
    parser.add_argument(
        "--filter",
        metavar="DIRECTIVES",
        help=(
            "which spans to record, as EnvFilter directives (e.g. 'info,app.db=debug'); "
            "the same as setting PYKREGISTRY_FILTER, which child processes inherit"
        ),
    )
    parser.add_argument(
        "program",
        nargs="*",
        metavar="script.py | -m module",
        help="the program to run, then its own arguments",
    )


def split_arguments(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Splits what follows ``run`` into pykregistry's options and the
    program with its arguments: the program starts at the first argument
    that is not an option (or an option's value), at ``-m``, or after
    ``--``. What follows it is the program's, even ``--tree``."""
    options: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return options, list(args[i + 1 :])
        if arg == "-m":
            return options, list(args[i:])
        if arg.startswith("-m") and not arg.startswith("--"):  # -mmodule, as python takes it
            return options, ["-m", arg[2:], *args[i + 1 :]]
        if not arg.startswith("-") or arg == "-":
            return options, list(args[i:])
        options.append(arg)
        i += 1
        if i < len(args) and (
            arg in _VALUE_OPTIONS or (arg == "--otlp" and _URL.match(args[i]) is not None)
        ):
            options.append(args[i])
            i += 1
    return options, []


def run(args: argparse.Namespace) -> int:
    """Runs the program that ``args.program`` names, traced as ``args``
    say; returns its exit status (a ``SystemExit`` it raises passes
    through)."""
    program: list[str] = args.program
    error = _check_program(program)
    if error is not None:
        print(f"pykregistry run: {error}", file=sys.stderr)
        return 2
    if args.filter is not None:
        try:
            _default.set_default_filter(args.filter)
        except ValueError as e:
            print(f"pykregistry run: bad --filter {args.filter!r}: {e}", file=sys.stderr)
            return 2
    registry = pykregistry.default_registry()
    try:
        layers = _layers(args)
    except _OutputError as e:
        print(f"pykregistry run: {e}", file=sys.stderr)
        return e.status
    for layer in layers:
        registry.add_layer(layer)
    if args.tree:
        recorder = TreeRecorder()
        registry.add_layer(recorder)
        # atexit runs its handlers last registered first: this one after
        # the program's own (registered later) and the threading module's
        # join of its threads, before pykregistry's (registered at import)
        # that close open spans and flush the files.
        atexit.register(_print_tree, recorder, os.getpid())
    return _run_program(program)


# === the outputs ===


class _OutputError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _layers(args: argparse.Namespace) -> list[object]:
    """The layers the options ask for, each file opened (and truncated)."""
    layers: list[object] = []
    files: list[tuple[Callable[[str], object], str | None]] = [
        (pykregistry.JsonLines, args.jsonl),
        (pykregistry.ChromeTrace, args.perfetto),
        (pykregistry.FlameGraph, args.flamegraph),
    ]
    for layer_class, path in files:
        if path is None:
            continue
        try:
            layers.append(layer_class(path))
        except OSError as e:
            raise _OutputError(f"cannot write {path}: {os_reason(e)}", 1) from None
    if args.otlp is not None:
        try:
            layers.append(pykregistry.OtlpExporter(endpoint=args.otlp or None))
        except ValueError as e:
            raise _OutputError(f"bad --otlp {args.otlp!r}: {e}", 2) from None
    return layers


def _print_tree(recorder: TreeRecorder, pid: int) -> None:
    """At exit: closes the spans still open, so that the tree is whole, and
    prints it on standard error."""
    if os.getpid() != pid:  # a child forked by the program
        return
    _native._close_open_spans()
    stream = sys.stderr
    if stream is None:
        return
    text = recorder.render(color=wants_color(stream), ascii_only=not can_encode(stream, "└├│•✗µ"))
    with contextlib.suppress(OSError, ValueError):  # standard error closed or gone
        stream.write(f"{text}\n" if text else "(no spans)\n")
        stream.flush()


# === running the program ===


def _check_program(program: Sequence[str]) -> str | None:
    """What is wrong with the program named, or None: a script that cannot
    be opened, ``-m`` without a module, nothing at all."""
    if not program:
        return "no program to run: give a script (pykregistry run app.py) or -m module"
    if program[0] == "-m":
        if len(program) < 2 or not program[1]:
            return "-m needs a module name (pykregistry run -m http.server)"
        return None
    script = program[0]
    if os.path.isdir(script):
        if not os.path.isfile(os.path.join(script, "__main__.py")):
            return f"cannot run {script}: a directory without a __main__.py"
        return None
    try:
        with open(script, "rb"):
            pass
    except OSError as e:
        return f"cannot run {script}: {os_reason(e)}"
    return None


def _run_program(program: list[str]) -> int:
    """Runs the program as ``python`` would, in this interpreter."""
    safe_path = getattr(sys.flags, "safe_path", False)  # python -P (3.11)
    run_it: Callable[[], Any]
    if program[0] == "-m":
        module = program[1]
        # As `python -m`: "-m" while the module is looked for, then its
        # file (run_module's alter_sys); the current directory first.
        sys.argv = ["-m", *program[2:]]
        if not safe_path:
            sys.path[0] = os.getcwd()
        error = _find_module(module)
        if error is not None:
            print(f"pykregistry run: {error}", file=sys.stderr)
            return 1
        run_it = lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)  # noqa: E731
    else:
        script = program[0]
        sys.argv = list(program)
        if os.path.isdir(script) or (not script.endswith(".py") and _is_zip(script)):
            if not safe_path:
                del sys.path[0]  # run_path puts the directory or zip file there
            run_it = lambda: runpy.run_path(script, run_name="__main__")  # noqa: E731
        else:
            if not safe_path:
                sys.path[0] = os.path.dirname(os.path.realpath(script))
            run_it = lambda: _run_script(script)  # noqa: E731
    try:
        run_it()
    except SystemExit:
        raise
    except BaseException as e:  # the program's: printed as Python would
        _print_exception(e)
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    return 0


def _run_script(script: str) -> None:
    """Runs a Python source file as ``python script`` does: in a new
    ``__main__`` module (where pickle and ``multiprocessing`` look for the
    program's classes), with ``__file__`` absolute (as since Python 3.9)
    and ``sys.argv[0]`` left as given, which ``runpy.run_path`` would make
    the path it was given."""
    path = os.path.abspath(script)
    with io.open_code(path) as f:
        source = f.read()
    main = types.ModuleType("__main__")
    main.__dict__.update(
        __file__=path,
        __cached__=None,
        __loader__=importlib.machinery.SourceFileLoader("__main__", path),
        __builtins__=builtins,
    )
    sys.modules["__main__"] = main
    code = compile(source, path, "exec", dont_inherit=True)
    exec(code, main.__dict__)


def _find_module(name: str) -> str | None:
    """Why ``python -m name`` would not find anything to run, or None."""
    try:
        spec = importlib.util.find_spec(name)
        if (
            spec is not None
            and spec.submodule_search_locations is not None
            and importlib.util.find_spec(f"{name}.__main__") is None
        ):
            return f"{name!r} is a package without a __main__ module: cannot run it"
    except (ImportError, ValueError) as e:
        return f"cannot find module {name!r}: {e}"
    if spec is None:
        return f"no module named {name!r}"
    return None


def _is_zip(path: str) -> bool:
    import zipfile

    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


# The frames of the machinery between `pykregistry run` and the program.
_OWN_FILES = frozenset({__file__, runpy.__file__, "<frozen runpy>"})


def _print_exception(error: BaseException) -> None:
    """Prints an exception that left the program as Python would (through
    ``sys.excepthook``), without the frames of ``pykregistry run`` and
    ``runpy`` above the program's."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _OWN_FILES:
        tb = tb.tb_next
    error.__traceback__ = tb
    try:
        sys.excepthook(type(error), error, tb)
    except BaseException:  # as Python does when its hook fails
        print("Error in sys.excepthook:", file=sys.stderr)
        traceback.print_exc()
        print("\nOriginal exception was:", file=sys.stderr)
        traceback.print_exception(type(error), error, tb)


# === shared with the other commands ===


def os_reason(error: OSError) -> str:
    """The system's words for ``error``: its strerror, or, for an error
    that carries only a message ending in Rust's ``(os error N)``, those of
    errno N."""
    if error.strerror:
        return error.strerror
    found = re.search(r"\(os error (\d+)\)$", str(error))
    return os.strerror(int(found[1])) if found else str(error)


def can_encode(stream: Any, text: str) -> bool:
    """Whether ``stream``'s encoding can write ``text``."""
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
