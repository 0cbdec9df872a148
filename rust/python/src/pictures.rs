//! `pykregistry.ChromeTrace` and `pykregistry.FlameGraph`: built-in layers
//! that draw where time went (the conversions of a `JsonLines` file to both
//! are `jsonl_convert`'s). The drawing is `pykregistry_export`'s (`timeline`, `chrome`,
//! `flame`); this file feeds it each busy interval (enter to exit, R5) on
//! the track (thread or asyncio task, `tracks`) where it ran.
//!
//! Like `JsonLines`, each has `flush()` and `close()`, closes at the end of
//! its `with` block, is written out before a fork and finished at
//! interpreter exit (after open spans close), and writes nothing of its
//! parent's in a child process. A write that fails is counted in
//! `write_errors` and the first one goes to `sys.unraisablehook` (R15):
//! never raised into the traced program.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use pykregistry_core::{Id, SpanData, TraceParent};
use pykregistry_export::chrome::{push_args, ChromeDoc, FlowEnd};
use pykregistry_export::flame::{frame, Folded};
use pykregistry_export::timeline::Timeline;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert;
use crate::event::Event;
use crate::ext::SpanExt;
use crate::jsonlines::{forks, os_error};
use crate::layers::{Core, Interval, Sink};
use crate::tracks::{self, Track};
use pykregistry_export::json::push_fields;

const BUFFER: usize = 64 * 1024;

/// What the exit and fork hooks reach: every picture still alive.
trait Picture: Send + Sync {
    fn flush(&self) -> io::Result<()>;
    fn close(&self) -> io::Result<()>;
    fn failed(&self, err: &io::Error);
}

static OPEN: Mutex<Vec<Weak<dyn Picture>>> = Mutex::new(Vec::new());

fn register(picture: Weak<dyn Picture>) {
    let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    open.retain(|s| s.strong_count() > 0);
    open.push(picture);
}

fn open_pictures() -> Vec<Arc<dyn Picture>> {
    let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    open.retain(|s| s.strong_count() > 0);
    open.iter().filter_map(Weak::upgrade).collect()
}

/// Before `os.fork()`: every picture writes out what it has.
#[pyfunction]
pub(crate) fn _flush_pictures(py: Python<'_>) {
    each_picture(py, |p| p.flush());
}

/// At interpreter exit, after open spans have closed: every picture is
/// finished (one complete document each).
#[pyfunction]
pub(crate) fn _close_pictures(py: Python<'_>) {
    each_picture(py, |p| p.close());
}

/// Runs `op` on every open picture with the GIL released, then reports
/// each failure (Python code: the unraisable hook) holding it.
fn each_picture(py: Python<'_>, op: fn(&dyn Picture) -> io::Result<()>) {
    let open = open_pictures();
    let failures: Vec<_> = py.detach(|| {
        open.iter()
            .filter_map(|p| op(&**p).err().map(|e| (Arc::clone(p), e)))
            .collect()
    });
    for (p, e) in failures {
        p.failed(&e);
    }
}

/// Counts a failed write; the first goes to `sys.unraisablehook`. Called
/// with no lock held: the hook is Python code.
fn report_failure(errors: &AtomicU64, what: &str, err: &io::Error) {
    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
        Python::try_attach(|py| {
            pyo3::exceptions::PyOSError::new_err(format!(
                "pykregistry.{what} could not write: {err}"
            ))
            .write_unraisable(py, None);
        });
    }
}

fn wall_now() -> u64 {
    crate::ext::wall(crate::ext::now())
}

// === ChromeTrace ===

/// What a slice shows.
struct Slice {
    name: Box<str>,
    cat: Box<str>,
    args: Vec<u8>,
}

struct ChromeState {
    /// `None` once closed.
    out: Option<BufWriter<File>>,
    doc: ChromeDoc,
    buf: Vec<u8>,
    timeline: Timeline<Slice>,
    /// Tracks named in this document.
    named: HashSet<u32>,
    /// The tracks of the open entries, by span id and the context that made
    /// them (an exit can come from anywhere).
    entries: HashMap<(u64, u64), Vec<u32>>,
    /// Spans entered and not ended: where their latest slice started (an
    /// arrow's start).
    seen: HashMap<u64, FlowEnd>,
    /// Arrows (`follows_from`) waiting for their span's first slice.
    waiting: HashMap<u64, Vec<FlowEnd>>,
    flows: u64,
}

/// The file a `ChromeTrace` writes, shared with the registries it is a
/// layer of.
pub(crate) struct ChromeSink {
    state: Mutex<ChromeState>,
    open: AtomicBool,
    errors: AtomicU64,
    events: bool,
    forks: u64,
}

impl ChromeState {
    fn name_track(&mut self, track: &Track) {
        if self.named.insert(track.id) {
            self.doc
                .track_name(&mut self.buf, track.id, &track.label, track.id);
        }
    }

    fn flow(&mut self, from: FlowEnd, to: FlowEnd, name: &str) {
        self.flows += 1;
        self.doc.flow(&mut self.buf, self.flows, from, to, name);
    }

    /// Writes the buffer out once it is full (or `now`).
    fn write_out(&mut self, now: bool) -> io::Result<()> {
        if !now && self.buf.len() < BUFFER {
            return Ok(());
        }
        let Some(out) = self.out.as_mut() else {
            self.buf.clear();
            return Ok(());
        };
        let result = out.write_all(&self.buf);
        // What could not be written is dropped: the document goes on.
        self.buf.clear();
        result
    }
}

impl ChromeSink {
    #[inline]
    fn writing(&self) -> bool {
        self.open.load(Ordering::Acquire) && self.forks == forks()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChromeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn done(&self, result: io::Result<()>) {
        if let Err(e) = result {
            self.failed(&e);
        }
    }
}

impl Sink for ChromeSink {
    fn writes_events(&self) -> bool {
        self.events
    }

    /// R14: the span ended: no arrow starts from it any more.
    fn write_span(&self, _core: &Core, _id: Id, span: &SpanData<SpanExt>) {
        if !self.writing() {
            return;
        }
        let mut s = self.lock();
        s.seen.remove(&span.span_id());
        s.waiting.remove(&span.span_id());
    }

    fn write_event(&self, py: Python<'_>, event: &Event) {
        if !self.writing() {
            return;
        }
        let track = tracks::current(py);
        let message = event.message.bind(py).to_string_lossy().into_owned();
        let mut fields = Vec::with_capacity(64);
        push_fields(&mut fields, &event.fields);
        let mut args = Vec::with_capacity(128);
        let parent = event.trace.unwrap_or(TraceParent {
            trace_id: 0,
            span_id: 0,
        });
        push_args(
            &mut args,
            (parent.span_id, parent.trace_id, None),
            event.level.as_str(),
            &fields,
            &[],
        );
        let result = {
            let mut s = self.lock();
            s.name_track(&track);
            let ChromeState { doc, buf, .. } = &mut *s;
            doc.instant(buf, track.id, event.time_ns, &message, &event.target, &args);
            s.write_out(false)
        };
        self.done(result);
    }

    fn write_follows_from(&self, span: &SpanData<SpanExt>, follows: TraceParent) {
        if !self.writing() {
            return;
        }
        let mut s = self.lock();
        let Some(&from) = s.seen.get(&follows.span_id) else {
            return;
        };
        match s.seen.get(&span.span_id()).copied() {
            Some(to) => s.flow(from, to, "follows_from"),
            None => s.waiting.entry(span.span_id()).or_default().push(from),
        }
    }

    fn wants_tracks(&self) -> bool {
        true
    }

    fn wants_intervals(&self) -> bool {
        true
    }

    fn enter(&self, i: Interval<'_>, track: &Track) {
        if !self.writing() {
            return;
        }
        let span = i.span;
        let mut fields = Vec::with_capacity(64);
        push_fields(&mut fields, &span.lock_fields());
        let mut args = Vec::with_capacity(160);
        push_args(
            &mut args,
            (span.span_id(), span.trace_id(), span.parent_span_id()),
            span.level().as_str(),
            &fields,
            &[("thread_id", span.ext().thread_id)],
        );
        let slice = Slice {
            name: span.name().into(),
            cat: span.target().into(),
            args,
        };
        let span_id = span.span_id();
        let result = {
            let mut s = self.lock();
            s.name_track(track);
            let start = s.timeline.enter(track.id, span_id, i.at, slice);
            s.entries
                .entry((span_id, i.owner))
                .or_default()
                .push(track.id);
            let here = FlowEnd {
                tid: track.id,
                at_ns: start,
            };
            // A parent on another track: an arrow from its slice.
            if !s.seen.contains_key(&span_id) {
                if let Some(from) = span.parent_span_id().and_then(|p| s.seen.get(&p).copied()) {
                    if from.tid != track.id {
                        s.flow(from, here, "parent");
                    }
                }
            }
            s.seen.insert(span_id, here);
            if let Some(sources) = s.waiting.remove(&span_id) {
                for from in sources {
                    s.flow(from, here, "follows_from");
                }
            }
            s.write_out(false)
        };
        self.done(result);
    }

    fn exit(&self, i: Interval<'_>) {
        if !self.writing() {
            return;
        }
        let span_id = i.span.span_id();
        let result = {
            let mut s = self.lock();
            let key = (span_id, i.owner);
            let Some(track) = s.entries.get_mut(&key).and_then(Vec::pop) else {
                return;
            };
            if s.entries.get(&key).is_some_and(Vec::is_empty) {
                s.entries.remove(&key);
            }
            let ChromeState {
                timeline, doc, buf, ..
            } = &mut *s;
            timeline.exit(track, span_id, i.at, |c| {
                let p = c.payload;
                doc.complete(buf, c.track, (c.start, c.end), &p.name, &p.cat, &p.args);
            });
            s.write_out(false)
        };
        self.done(result);
    }
}

impl Picture for ChromeSink {
    fn flush(&self) -> io::Result<()> {
        if self.forks != forks() {
            return Ok(());
        }
        let mut s = self.lock();
        s.write_out(true)?;
        match s.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }

    fn close(&self) -> io::Result<()> {
        if self.forks != forks() || !self.open.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let mut s = self.lock();
        // Slices still open end here, so that the document is complete.
        let at = wall_now();
        let ChromeState {
            timeline, doc, buf, ..
        } = &mut *s;
        timeline.close_all(at, |c| {
            let p = c.payload;
            doc.complete(buf, c.track, (c.start, c.end), &p.name, &p.cat, &p.args);
        });
        s.buf.extend_from_slice(ChromeDoc::FOOTER);
        let result = s.write_out(true);
        let flushed = match s.out.take() {
            Some(mut out) => out.flush(),
            None => Ok(()),
        };
        s.entries.clear();
        s.seen.clear();
        s.waiting.clear();
        result.and(flushed)
    }

    fn failed(&self, err: &io::Error) {
        report_failure(&self.errors, "ChromeTrace", err);
    }
}

impl Drop for ChromeSink {
    fn drop(&mut self) {
        let s = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if self.forks != forks() {
            // A parent's sink in a child: its buffer is the parent's.
            if let Some(out) = s.out.take() {
                drop(out.into_parts());
            }
        } else if s.out.is_some() {
            // Dropped unclosed: finish the document.
            drop(Picture::close(self));
        }
    }
}

/// A layer that writes the Chrome trace event format (Perfetto,
/// `chrome://tracing`): each busy interval a slice on its thread's or
/// task's track.
#[pyclass(name = "ChromeTrace", module = "pykregistry", frozen)]
pub(crate) struct ChromeTrace {
    pub(crate) sink: Arc<ChromeSink>,
    path: PathBuf,
}

crate::file_layer::file_layer!(ChromeTrace);

#[pymethods]
impl ChromeTrace {
    /// Opens `path` for writing (truncating it). `events=False` leaves
    /// events out.
    #[new]
    #[pyo3(signature = (path, /, *, events = true))]
    fn new(path: PathBuf, events: bool) -> PyResult<Self> {
        let file = File::create(&path).map_err(|e| os_error(&e, &path))?;
        let origin = wall_now();
        let mut doc = ChromeDoc::new(std::process::id(), origin);
        let mut buf = Vec::with_capacity(BUFFER);
        buf.extend_from_slice(ChromeDoc::HEADER);
        doc.process_name(&mut buf, "pykregistry");
        let sink = Arc::new(ChromeSink {
            state: Mutex::new(ChromeState {
                out: Some(BufWriter::with_capacity(BUFFER, file)),
                doc,
                buf,
                timeline: Timeline::new(),
                named: HashSet::new(),
                entries: HashMap::new(),
                seen: HashMap::new(),
                waiting: HashMap::new(),
                flows: 0,
            }),
            open: AtomicBool::new(true),
            errors: AtomicU64::new(0),
            events,
            forks: forks(),
        });
        let weak: Weak<dyn Picture> = Arc::downgrade(&(Arc::clone(&sink) as Arc<dyn Picture>));
        register(weak);
        Ok(ChromeTrace { sink, path })
    }

    /// Writes what is buffered to the file (a valid trace, unterminated).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        Ok(py.detach(|| self.sink.flush())?)
    }

    /// Ends the slices still open, completes the document and closes the
    /// file. A second call does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        Ok(py.detach(|| Picture::close(&*self.sink))?)
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    #[getter]
    fn events(&self) -> bool {
        self.sink.events
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "ChromeTrace({}{})",
            convert::quote(py, &self.path.to_string_lossy()),
            if self.closed() { ", closed=True" } else { "" }
        )
    }
}

// === FlameGraph ===

struct FlameState {
    timeline: Timeline<Arc<str>>,
    entries: HashMap<(u64, u64), Vec<u32>>,
    folded: Folded,
}

/// Self times a `FlameGraph` draws, shared with its registries.
pub(crate) struct FlameSink {
    state: Mutex<FlameState>,
    open: AtomicBool,
    errors: AtomicU64,
    forks: u64,
    path: PathBuf,
    folded_format: bool,
    title: String,
}

impl FlameSink {
    #[inline]
    fn writing(&self) -> bool {
        self.open.load(Ordering::Acquire) && self.forks == forks()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FlameState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the whole picture, from a copy taken under the lock.
    fn render(&self) -> io::Result<()> {
        let folded = self.lock().folded.clone();
        write_flame(&folded, &self.path, self.folded_format, &self.title)
    }
}

fn write_flame(folded: &Folded, path: &Path, folded_format: bool, title: &str) -> io::Result<()> {
    let out = BufWriter::new(File::create(path)?);
    if folded_format {
        folded.write_folded(out)
    } else {
        folded.write_svg(title, out)
    }
}

impl Sink for FlameSink {
    fn writes_events(&self) -> bool {
        false
    }

    fn write_span(&self, _core: &Core, _id: Id, _span: &SpanData<SpanExt>) {}

    fn write_event(&self, _py: Python<'_>, _event: &Event) {}

    fn wants_intervals(&self) -> bool {
        true
    }

    fn enter(&self, i: Interval<'_>, track: &Track) {
        if !self.writing() {
            return;
        }
        // The stack: the span's names from its root.
        let mut names: Vec<String> = match i.core.get(i.id) {
            Some(span) => span.scope().map(|s| frame(s.name()).into_owned()).collect(),
            None => vec![frame(i.span.name()).into_owned()],
        };
        names.reverse();
        let path: Arc<str> = names.join(";").into();
        let mut s = self.lock();
        s.timeline.enter(track.id, i.span.span_id(), i.at, path);
        s.entries
            .entry((i.span.span_id(), i.owner))
            .or_default()
            .push(track.id);
    }

    fn exit(&self, i: Interval<'_>) {
        if !self.writing() {
            return;
        }
        let span_id = i.span.span_id();
        let mut s = self.lock();
        let key = (span_id, i.owner);
        let Some(track) = s.entries.get_mut(&key).and_then(Vec::pop) else {
            return;
        };
        if s.entries.get(&key).is_some_and(Vec::is_empty) {
            s.entries.remove(&key);
        }
        let FlameState {
            timeline, folded, ..
        } = &mut *s;
        timeline.exit(track, span_id, i.at, |c| folded.add(c.payload, c.self_time));
    }
}

impl Picture for FlameSink {
    fn flush(&self) -> io::Result<()> {
        if self.forks != forks() || !self.open.load(Ordering::Acquire) {
            return Ok(());
        }
        self.render()
    }

    fn close(&self) -> io::Result<()> {
        if self.forks != forks() || !self.open.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        {
            let mut s = self.lock();
            let FlameState {
                timeline, folded, ..
            } = &mut *s;
            timeline.close_all(wall_now(), |c| folded.add(c.payload, c.self_time));
            s.entries.clear();
        }
        self.render()
    }

    fn failed(&self, err: &io::Error) {
        report_failure(&self.errors, "FlameGraph", err);
    }
}

/// Whether `format` (or, without one, `path`'s suffix) asks for folded
/// stacks rather than an SVG.
pub(crate) fn folded_format(format: Option<&str>, path: &Path) -> PyResult<bool> {
    match format {
        Some("svg") => Ok(false),
        Some("folded") => Ok(true),
        Some(other) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "format must be 'svg' or 'folded', not {other:?}"
        ))),
        None => Ok(path.extension().is_some_and(|e| e == "folded")),
    }
}

/// A layer that draws a flame graph of self busy time per stack of spans:
/// an SVG (by `inferno`) or folded stacks.
#[pyclass(name = "FlameGraph", module = "pykregistry", frozen)]
pub(crate) struct FlameGraph {
    pub(crate) sink: Arc<FlameSink>,
}

crate::file_layer::file_layer!(FlameGraph);

#[pymethods]
impl FlameGraph {
    /// Draws to `path` at `flush()`, `close()` and exit: an SVG, or folded
    /// stacks if `format="folded"` or, without `format`, if `path` ends in
    /// `.folded`.
    #[new]
    #[pyo3(signature = (path, /, *, format = None, title = None))]
    fn new(path: PathBuf, format: Option<&str>, title: Option<String>) -> PyResult<Self> {
        let folded = folded_format(format, &path)?;
        // Fail now, as `open()` would, if the file cannot be written.
        File::create(&path).map_err(|e| os_error(&e, &path))?;
        let sink = Arc::new(FlameSink {
            state: Mutex::new(FlameState {
                timeline: Timeline::new(),
                entries: HashMap::new(),
                folded: Folded::new(),
            }),
            open: AtomicBool::new(true),
            errors: AtomicU64::new(0),
            forks: forks(),
            path,
            folded_format: folded,
            title: title.unwrap_or_else(|| "pykregistry: self busy time".to_owned()),
        });
        let weak: Weak<dyn Picture> = Arc::downgrade(&(Arc::clone(&sink) as Arc<dyn Picture>));
        register(weak);
        Ok(FlameGraph { sink })
    }

    /// Draws what was busy so far (intervals still open are not in it).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let path = self.sink.path.clone();
        py.detach(|| Picture::flush(&*self.sink))
            .map_err(|e| os_error(&e, &path))
    }

    /// Ends the intervals still open, draws, and stops. A second call does
    /// nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let path = self.sink.path.clone();
        py.detach(|| Picture::close(&*self.sink))
            .map_err(|e| os_error(&e, &path))
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.sink.path.clone()
    }

    /// `"svg"` or `"folded"`.
    #[getter]
    fn format(&self) -> &'static str {
        if self.sink.folded_format {
            "folded"
        } else {
            "svg"
        }
    }

    /// The folded stacks so far: `{"root;child": self_ns}`.
    fn folded<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let lines = self.sink.lock().folded.lines();
        let dict = PyDict::new(py);
        for line in lines {
            if let Some((stack, n)) = line.rsplit_once(' ') {
                dict.set_item(stack, n.parse::<u64>().unwrap_or(0))?;
            }
        }
        Ok(dict)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "FlameGraph({}, format={}{})",
            convert::quote(py, &self.sink.path.to_string_lossy()),
            convert::quote(py, self.format()),
            if self.closed() { ", closed=True" } else { "" }
        )
    }
}
