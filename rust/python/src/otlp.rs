//! `pykregistry.OtlpExporter`: a built-in layer that sends every span at
//! its end to an OpenTelemetry collector over OTLP/HTTP (protobuf).
//!
//! At a span's end (R14) the application's thread only copies what the span
//! carries into a [`SpanRecord`] (no Python object is made) and queues it;
//! `pykregistry-export`'s background thread batches, encodes and sends,
//! with no GIL. Events become span events of their parent span, and
//! `follows_from` becomes links, both sent with the span at its end.
//!
//! R15: nothing here blocks the application's thread or raises into it: a
//! full queue or a collector that is down drops spans and counts them
//! (`exported`, `dropped`, `failed`). At interpreter exit each exporter
//! sends what it holds within its `exit_timeout` (P12), and a child process
//! never sends its parent's spans: after `os.fork()` an exporter starts
//! afresh in the child, with a new queue and thread, the first time the
//! child ends a span.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use pykregistry_core::{Id, SpanData, TraceParent, Value};
use pykregistry_export::{Config, EventRecord, Exporter, Link, SpanRecord};
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::convert;
use crate::event::Event;
use crate::ext::SpanExt;
use crate::gil::GilCell;
use crate::layers::{Core, Sink};

/// What the Python object and the registries it was added to (as their
/// [`Sink`]) share.
pub(crate) struct OtlpSink {
    config: Config,
    exit_timeout: Duration,
    /// Touched only holding the GIL (`write_span` and `write_event` run
    /// under it), so that a fork, which happens holding it, never finds it
    /// half-changed.
    state: GilCell<State>,
}

struct State {
    /// `None` if a child process could not start its thread.
    exporter: Option<Arc<Exporter>>,
    /// The process's [`FORKS`] when `exporter` was started.
    forks: u64,
}

/// A layer that sends each span at its end to an OTLP/HTTP collector.
#[pyclass(name = "OtlpExporter", module = "pykregistry", frozen)]
pub(crate) struct OtlpExporter {
    pub(crate) sink: Arc<OtlpSink>,
}

/// Exporters to shut down at interpreter exit.
static OPEN: GilCell<Vec<Weak<OtlpSink>>> = GilCell::new(Vec::new());

/// How many forks led to this process (counted in each child).
static FORKS: AtomicU64 = AtomicU64::new(0);

// === impl OtlpSink ===

impl OtlpSink {
    /// Hands `f` the exporter of this process: in a child after a fork, a
    /// new one (the parent's, whose thread does not exist here, is left
    /// untouched: its queue holds the parent's spans, and its locks may be
    /// held by threads that did not survive the fork). `f` runs no Python
    /// code.
    fn with_exporter(&self, f: impl FnOnce(&Exporter)) {
        let forks = FORKS.load(Ordering::Relaxed);
        let mut state = self.state.0.borrow_mut();
        if state.forks != forks {
            std::mem::forget(state.exporter.take());
            state.exporter = Exporter::new(self.config.clone()).ok().map(Arc::new);
            state.forks = forks;
        }
        if let Some(exporter) = state.exporter.as_deref() {
            f(exporter);
        }
    }

    /// The exporter, if this process started it (no new one is started).
    fn exporter_here(&self) -> Option<Arc<Exporter>> {
        let state = self.state.0.borrow();
        (state.forks == FORKS.load(Ordering::Relaxed))
            .then(|| state.exporter.clone())
            .flatten()
    }
}

impl Sink for OtlpSink {
    fn writes_events(&self) -> bool {
        true
    }

    fn write_span(&self, core: &Core, _id: Id, span: &SpanData<SpanExt>) {
        let timings = span.ext().timings();
        let record = SpanRecord {
            trace_id: span.trace_id(),
            span_id: span.span_id(),
            parent_span_id: span.parent_span_id(),
            trace_flags: span.trace_flags(),
            parent_is_remote: span.parent_is_remote(),
            // Looked up (up the tree) only in a trace that came with one.
            trace_state: core.tracestate_of(span),
            name: span.name().into(),
            target: span.target().into(),
            level: span.level(),
            start_time_ns: timings.start_time_ns,
            end_time_ns: timings.end_time_ns.unwrap_or(timings.start_time_ns),
            busy_ns: timings.busy_ns,
            idle_ns: timings.idle_ns,
            fields: span.lock_fields().clone(),
            links: Vec::new(),
            events: Vec::new(),
        };
        self.with_exporter(|e| e.export(record));
    }

    fn write_event(&self, py: Python<'_>, event: &Event) {
        // Events outside any span have no span to go in.
        let Some(parent) = event.trace else { return };
        let record = EventRecord {
            time_ns: event.time_ns,
            message: event.message.bind(py).to_string_lossy().into(),
            target: event.target.as_str().into(),
            level: event.level,
            fields: event.fields.clone(),
        };
        self.with_exporter(|e| e.event(parent.span_id, record));
    }

    fn write_follows_from(&self, span: &SpanData<SpanExt>, follows: TraceParent) {
        let link = Link {
            trace_id: follows.trace_id,
            span_id: follows.span_id,
        };
        self.with_exporter(|e| e.link(span.span_id(), link));
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        // A parent's exporter in a child: see `OtlpSink::exporter`.
        let state = self.state.0.get_mut();
        if state.forks != FORKS.load(Ordering::Relaxed) {
            std::mem::forget(state.exporter.take());
        }
        // Otherwise dropping the exporter lets its thread send what is
        // left (within its timeout) and end.
    }
}

/// A duration in seconds from Python: finite and not negative.
fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a finite number of seconds >= 0, not {value}"
        ))
    })
}

/// `(key, value)` pairs of a mapping of `str` keys.
fn pairs<'py>(
    name: &str,
    mapping: Option<&Bound<'py, PyAny>>,
) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
    let Some(mapping) = mapping else {
        return Ok(Vec::new());
    };
    let dict = mapping
        .call_method0(pyo3::intern!(mapping.py(), "items"))
        .map_err(|_| PyTypeError::new_err(format!("{name} must be a mapping")))?;
    let mut out = Vec::new();
    for item in dict.try_iter()? {
        let (k, v): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
        let k = k
            .cast_into::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("{name} keys must be str")))?;
        out.push((k.to_string_lossy().into_owned(), v));
    }
    Ok(out)
}

/// Shuts every exporter of this process down, each within its
/// `exit_timeout` (P12): registered with `atexit` when the module loads,
/// to run after spans still open have ended.
#[pyfunction]
pub(crate) fn _shutdown_otlp_exporters(py: Python<'_>) {
    let exporters: Vec<(Arc<Exporter>, Duration)> = {
        let mut open = OPEN.0.borrow_mut();
        open.retain(|s| s.strong_count() > 0);
        open.iter()
            .filter_map(Weak::upgrade)
            .filter_map(|s| Some((s.exporter_here()?, s.exit_timeout)))
            .collect()
    };
    py.detach(|| {
        let start = Instant::now();
        for (exporter, timeout) in &exporters {
            // One deadline for all: the longest exit_timeout from now.
            let _ = exporter.shutdown(timeout.saturating_sub(start.elapsed()));
        }
    });
}

/// Runs in a child process after `os.fork()`: exporters made in the parent
/// start afresh here (see `OtlpSink::exporter`).
#[pyfunction]
pub(crate) fn _otlp_forked() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

// === impl OtlpExporter ===

#[pymethods]
impl OtlpExporter {
    /// Starts the exporter's background thread. Arguments left `None` come
    /// from the `OTEL_*` environment variables (see `Config::new`).
    #[new]
    #[pyo3(signature = (
        endpoint = None, *, headers = None, timeout = 10.0, service_name = None,
        resource_attributes = None, exit_timeout = 2.0,
    ))]
    fn new(
        endpoint: Option<&str>,
        headers: Option<&Bound<'_, PyAny>>,
        timeout: f64,
        service_name: Option<&str>,
        resource_attributes: Option<&Bound<'_, PyAny>>,
        exit_timeout: f64,
    ) -> PyResult<Self> {
        let timeout = seconds("timeout", timeout)?;
        let exit_timeout = seconds("exit_timeout", exit_timeout)?;
        let headers = pairs("headers", headers)?
            .into_iter()
            .map(|(k, v)| {
                let v = v
                    .cast_into::<PyString>()
                    .map_err(|_| PyTypeError::new_err("headers values must be str"))?;
                Ok((k, v.to_string_lossy().into_owned()))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let resource: Vec<(String, Value)> = pairs("resource_attributes", resource_attributes)?
            .into_iter()
            .map(|(k, v)| (k, convert::value(&v)))
            .collect();
        let config = Config::new(endpoint, headers, timeout, service_name, resource, |k| {
            std::env::var(k).ok()
        });
        let scheme_ok = config.endpoint.starts_with("http://")
            || (cfg!(feature = "tls") && config.endpoint.starts_with("https://"));
        if !scheme_ok {
            return Err(PyValueError::new_err(format!(
                "OtlpExporter sends to http:// endpoints{}, not {:?}",
                if cfg!(feature = "tls") {
                    " and https:// ones"
                } else {
                    " (this build has no TLS: build with the `tls` feature for https://)"
                },
                config.endpoint
            )));
        }
        let exporter = Exporter::new(config.clone()).map_err(|e| {
            PyOSError::new_err(format!("OtlpExporter could not start its thread: {e}"))
        })?;
        let sink = Arc::new(OtlpSink {
            config,
            exit_timeout,
            state: GilCell(RefCell::new(State {
                exporter: Some(Arc::new(exporter)),
                forks: FORKS.load(Ordering::Relaxed),
            })),
        });
        let mut open = OPEN.0.borrow_mut();
        open.retain(|s| s.strong_count() > 0);
        open.push(Arc::downgrade(&sink));
        Ok(OtlpExporter { sink })
    }

    /// The URL spans are sent to.
    #[getter]
    fn endpoint(&self) -> &str {
        &self.sink.config.endpoint
    }

    /// The resource's attributes.
    #[getter]
    fn resource<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (k, v) in &self.sink.config.resource {
            dict.set_item(k, convert::value_to_py(py, v)?)?;
        }
        Ok(dict)
    }

    /// Spans the collector accepted.
    #[getter]
    fn exported(&self) -> u64 {
        self.counts().exported
    }

    /// Spans never sent: the queue was full, the exporter was shut down,
    /// or a flush or shutdown ran out of time first.
    #[getter]
    fn dropped(&self) -> u64 {
        self.counts().dropped
    }

    /// Spans sent and not accepted, once retries ran out.
    #[getter]
    fn failed(&self) -> u64 {
        self.counts().failed
    }

    /// Whether `shutdown()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.sink.exporter_here().is_some_and(|e| e.is_shut_down())
    }

    /// Sends the spans ended so far, waiting at most `timeout` seconds (the
    /// exporter's `timeout` by default); whether all were handled in time.
    #[pyo3(signature = (timeout = None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = timeout.map_or(Ok(self.sink.config.timeout), |t| seconds("timeout", t))?;
        let Some(exporter) = self.sink.exporter_here() else {
            return Ok(true);
        };
        Ok(py.detach(|| exporter.flush(timeout)))
    }

    /// Sends the spans ended so far and stops; later spans are dropped.
    /// Waits at most `timeout` seconds (the exporter's `timeout` by
    /// default); whether all were handled in time.
    #[pyo3(signature = (timeout = None))]
    fn shutdown(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = timeout.map_or(Ok(self.sink.config.timeout), |t| seconds("timeout", t))?;
        let Some(exporter) = self.sink.exporter_here() else {
            return Ok(true);
        };
        Ok(py.detach(|| exporter.shutdown(timeout)))
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _ty: &Bound<'_, PyAny>,
        _value: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.shutdown(py, None)?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "OtlpExporter({}{})",
            convert::quote(py, &self.sink.config.endpoint),
            if self.closed() { ", closed=True" } else { "" }
        )
    }
}

impl OtlpExporter {
    fn counts(&self) -> pykregistry_export::Counts {
        self.sink
            .exporter_here()
            .map(|e| e.counts())
            .unwrap_or_default()
    }
}
