//! `pykregistry.Event`: what layers' `on_event` receives.

use pykregistry_core::{Fields, Id, Level, TraceParent};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::convert;

/// A point in time with a message, level, target, fields and parent span.
#[pyclass(name = "Event", module = "pykregistry", frozen)]
pub(crate) struct Event {
    pub(crate) message: Py<PyString>,
    pub(crate) level: Level,
    pub(crate) target: String,
    pub(crate) parent_id: Option<Id>,
    /// R13: the trace and span id of the parent span, read while it was
    /// live; exports link the event by these, not by `parent_id`.
    pub(crate) trace: Option<TraceParent>,
    pub(crate) fields: Fields,
    /// When it was emitted, ns since the epoch.
    pub(crate) time_ns: u64,
}

#[pymethods]
impl Event {
    #[getter]
    fn message(&self, py: Python<'_>) -> Py<PyString> {
        self.message.clone_ref(py)
    }

    #[getter]
    fn level<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::level_to_py(py, self.level)
    }

    #[getter]
    fn target(&self) -> &str {
        &self.target
    }

    #[getter]
    fn parent_id(&self) -> Option<u64> {
        self.parent_id.map(Id::into_u64)
    }

    /// R13: the trace id of the parent span; `None` without one.
    #[getter]
    fn trace_id(&self) -> Option<u128> {
        self.trace.map(|t| t.trace_id)
    }

    /// R13: the span id of the parent span; `None` without one.
    #[getter]
    fn span_id(&self) -> Option<u64> {
        self.trace.map(|t| t.span_id)
    }

    /// When it was emitted, ns since the epoch: in a live span, on that
    /// span's clock (between its `start_time_ns` and `end_time_ns`).
    #[getter]
    fn time_ns(&self) -> u64 {
        self.time_ns
    }

    #[getter]
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        convert::fields_to_py(py, &self.fields)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Event({}, level=Level.{}, target={}, parent={})",
            convert::quote(py, &self.message.bind(py).to_string()),
            self.level,
            convert::quote(py, &self.target),
            self.parent_id
                .map_or("None".to_owned(), |p| p.into_u64().to_string())
        )
    }
}
