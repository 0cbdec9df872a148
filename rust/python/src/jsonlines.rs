//! `pykregistry.JsonLines`: a built-in layer that writes every span at its end
//! and every event as one JSON object per line.
//!
//! R13: lines link spans and events by `trace_id`, `span_id` and
//! `parent_span_id` (lowercase hex, as in W3C trace context): the registry's
//! `id` and `parent_id` are kept for readers of a live registry, but recur
//! after slot reuse.
//!
//! It is native: the registry recognizes it when it is added and writes
//! from the span's slot at its end (R14), so no Python object is made per span.
//! Each line is built in a buffer of its own and written whole under a lock,
//! so lines from different threads never interleave. Writes go through a
//! 64 KiB buffer: `flush()` pushes them to the file, `close()` flushes and
//! closes it, and whatever is still buffered when the layer is dropped, the
//! interpreter exits or the process forks is flushed then. In a child
//! process the parent's layers write nothing.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use pykregistry_core::{Id, SpanData};
use pykregistry_export::json_lines::{self, EventLine, SpanLine};
use pyo3::prelude::*;

use crate::convert;
use crate::event::Event;
use crate::ext::SpanExt;
use crate::layers::{Core, Sink};

/// Where lines go. Shared by the Python object and the registries it was
/// added to (as their [`Sink`]).
pub(crate) struct JsonSink {
    /// `None` once closed.
    file: Mutex<Option<Writer>>,
    /// Whether the file is open: checked before a line is even built.
    open: AtomicBool,
    /// Writes that failed.
    errors: AtomicU64,
    /// Whether events are written (spans always are).
    pub(crate) events: bool,
    /// The process's [`FORKS`] when the sink was made: in a child process
    /// the parent's sinks write nothing (see [`_json_lines_forked`]).
    forks: u64,
}

struct Writer {
    out: BufWriter<File>,
    /// A write failed part-way: the next line starts on a line of its own.
    torn: bool,
}

/// Sinks to flush at interpreter exit and before a fork.
static OPEN: Mutex<Vec<Weak<JsonSink>>> = Mutex::new(Vec::new());

/// How many forks led to this process (counted in each child).
static FORKS: AtomicU64 = AtomicU64::new(0);

const BUFFER: usize = 64 * 1024;

impl Sink for JsonSink {
    fn writes_events(&self) -> bool {
        self.events
    }

    fn write_span(&self, core: &Core, id: Id, span: &SpanData<SpanExt>) {
        self.line_of_span(core, id, span);
    }

    fn write_event(&self, py: Python<'_>, event: &Event) {
        self.line_of_event(py, event);
    }

    /// Span lines say which task made the span.
    fn wants_tracks(&self) -> bool {
        true
    }
}

/// How many forks led to this process: a sink made with another count is
/// a parent's, and writes nothing here.
pub(crate) fn forks() -> u64 {
    FORKS.load(Ordering::Relaxed)
}

/// A layer that writes each span at its end, and each event, as one JSON
/// object per line.
#[pyclass(name = "JsonLines", module = "pykregistry", frozen)]
pub(crate) struct JsonLines {
    pub(crate) sink: Arc<JsonSink>,
    path: PathBuf,
}

impl JsonSink {
    /// Whether lines are written: open, and made in this process.
    #[inline]
    fn writing(&self) -> bool {
        self.open.load(Ordering::Acquire) && self.forks == FORKS.load(Ordering::Relaxed)
    }

    /// Writes one line. A failure is counted (`write_errors`) and, the
    /// first time, reported to `sys.unraisablehook`: a layer never breaks
    /// the program it observes. What the buffer held is dropped, so a
    /// failure can cut at most one line short, and the next line starts on
    /// a line of its own.
    fn write_line(&self, line: &[u8]) {
        let result = {
            let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(w) = file.as_mut() else { return };
            let torn = std::mem::take(&mut w.torn);
            let result = if torn { w.out.write_all(b"\n") } else { Ok(()) }
                .and_then(|()| w.out.write_all(line));
            if result.is_err() {
                w.discard();
            }
            result
        };
        if let Err(err) = result {
            self.failed(&err);
        }
    }

    fn failed(&self, err: &std::io::Error) {
        if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
            // `try_attach`: nothing to report to once the interpreter is
            // finalizing.
            Python::try_attach(|py| {
                pyo3::exceptions::PyOSError::new_err(format!(
                    "pykregistry.JsonLines could not write: {err}"
                ))
                .write_unraisable(py, None);
            });
        }
    }

    /// The line for a span at its end (its timings are final, R14).
    fn line_of_span(&self, core: &Core, id: Id, span: &SpanData<SpanExt>) {
        if !self.writing() {
            return;
        }
        let timings = span.ext().timings();
        // Its registry parent is live: the span holds it until it closes.
        let on_parent_track = span.parent_id().and_then(|p| core.get(p)).map(|parent| {
            let (mine, theirs) = (span.ext(), parent.ext());
            mine.thread_id == theirs.thread_id && mine.task == theirs.task
        });
        let mut line = Vec::with_capacity(256);
        json_lines::write_span(
            &mut line,
            &SpanLine {
                id: id.into_u64(),
                parent_id: span.parent_id().map(Id::into_u64),
                trace_id: span.trace_id(),
                span_id: span.span_id(),
                parent_span_id: span.parent_span_id(),
                name: span.name(),
                target: span.target(),
                level: span.level(),
                start_time_ns: timings.start_time_ns,
                end_time_ns: timings.end_time_ns.unwrap_or(0),
                busy_ns: timings.busy_ns,
                idle_ns: timings.idle_ns,
                fields: &span.lock_fields(),
                thread_id: span.ext().thread_id,
                task: span.ext().task.as_deref(),
                on_parent_track,
            },
        );
        self.write_line(&line);
    }

    /// The line for an event.
    fn line_of_event(&self, py: Python<'_>, event: &Event) {
        if !self.writing() {
            return;
        }
        let track = crate::tracks::current(py);
        let mut line = Vec::with_capacity(192);
        json_lines::write_event(
            &mut line,
            &EventLine {
                time_ns: event.time_ns,
                message: &event.message.bind(py).to_string_lossy(),
                target: &event.target,
                level: event.level,
                parent_id: event.parent_id.map(Id::into_u64),
                trace: event.trace.map(|t| (t.trace_id, t.span_id)),
                fields: &event.fields,
                thread_id: crate::tracks::thread_ident(),
                task: track.task.as_deref(),
            },
        );
        self.write_line(&line);
    }

    fn flush(&self) -> std::io::Result<()> {
        if self.forks != FORKS.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(w) = file.as_mut() else {
            return Ok(());
        };
        let result = w.out.flush();
        if result.is_err() {
            w.discard();
        }
        result
    }

    fn close(&self) -> std::io::Result<()> {
        let result = self.flush();
        self.open.store(false, Ordering::Release);
        let file = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = file {
            // Flushed above (or failed, and discarded): nothing to write
            // again on drop.
            drop(w.out.into_parts());
        }
        result
    }
}

impl Writer {
    /// Drops what the buffer holds (after a failed write), keeping the file
    /// (through a duplicate of its descriptor; if even that fails, the
    /// buffer is kept and written again later).
    fn discard(&mut self) {
        if let Ok(file) = self.out.get_ref().try_clone() {
            let old = std::mem::replace(&mut self.out, BufWriter::with_capacity(BUFFER, file));
            drop(old.into_parts());
        }
        self.torn = true;
    }
}

impl Drop for JsonSink {
    fn drop(&mut self) {
        // A sink of the parent process, dropped in a child: what its buffer
        // holds is the parent's to write (it flushed before forking).
        if self.forks != FORKS.load(Ordering::Relaxed) {
            let file = self.file.get_mut().unwrap_or_else(PoisonError::into_inner);
            if let Some(w) = file.take() {
                drop(w.out.into_parts());
            }
        }
    }
}

/// `OSError(errno, strerror, filename)`, which Python turns into the
/// matching subclass (`FileNotFoundError`, `PermissionError`, ...), as
/// `open()` raises it.
pub(crate) fn os_error(err: &std::io::Error, path: &std::path::Path) -> PyErr {
    let message = err.to_string();
    // Without " (os error N)": that is what `errno` says.
    let strerror = message
        .rsplit_once(" (os error ")
        .map_or(message.as_str(), |(text, _)| text)
        .to_owned();
    match err.raw_os_error() {
        Some(errno) => {
            pyo3::exceptions::PyOSError::new_err((errno, strerror, path.as_os_str().to_owned()))
        }
        None => pyo3::exceptions::PyOSError::new_err(format!("{}: {message}", path.display())),
    }
}

/// Flushes every open sink: registered with `atexit`, and to run before
/// `os.fork()`, when the module loads. A failure counts in the sink's
/// `write_errors`.
#[pyfunction]
pub(crate) fn _flush_json_lines(py: Python<'_>) {
    let open: Vec<Arc<JsonSink>> = {
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|s| s.strong_count() > 0);
        open.iter().filter_map(Weak::upgrade).collect()
    };
    py.detach(|| {
        for sink in &open {
            if let Err(err) = sink.flush() {
                sink.failed(&err);
            }
        }
    });
}

/// Runs in a child process after `os.fork()`: the parent's sinks stop
/// writing there (their buffers and file offsets are the parent's); a
/// `JsonLines` made in the child writes as usual.
#[pyfunction]
pub(crate) fn _json_lines_forked() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

crate::file_layer::file_layer!(JsonLines);

#[pymethods]
impl JsonLines {
    /// Opens `path` for writing (truncating it, or appending with
    /// `append=True`). `events=False` writes spans only.
    #[new]
    #[pyo3(signature = (path, /, *, append = false, events = true))]
    fn new(path: PathBuf, append: bool, events: bool) -> PyResult<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .append(append)
            .truncate(!append)
            .open(&path)
            .map_err(|e| os_error(&e, &path))?;
        let sink = Arc::new(JsonSink {
            file: Mutex::new(Some(Writer {
                out: BufWriter::with_capacity(BUFFER, file),
                torn: false,
            })),
            open: AtomicBool::new(true),
            errors: AtomicU64::new(0),
            events,
            forks: FORKS.load(Ordering::Relaxed),
        });
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|s| s.strong_count() > 0);
        open.push(Arc::downgrade(&sink));
        Ok(JsonLines { sink, path })
    }

    /// Writes buffered lines to the file (the GIL released meanwhile).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        Ok(py.detach(|| self.sink.flush())?)
    }

    /// Flushes and closes the file; later spans and events are not written.
    /// A second call does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        Ok(py.detach(|| self.sink.close())?)
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Whether events are written.
    #[getter]
    fn events(&self) -> bool {
        self.sink.events
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "JsonLines({}{})",
            convert::quote(py, &self.path.to_string_lossy()),
            if self.closed() { ", closed=True" } else { "" }
        )
    }
}
