//! `pykregistry.SpanRef`: a read-only view of a span.

use pykregistry_core::Id;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert;
use crate::errors::closed;
use crate::layers::Core;

/// A read-only view of a span, by ID.
///
/// A view never keeps its span alive nor its slot from being reused. Every
/// read looks the span up: once it has closed, reads other than `id` raise
/// `SpanClosedError` (never another span's data: a reused slot has a new
/// ID).
#[pyclass(name = "SpanRef", module = "pykregistry", frozen)]
pub(crate) struct SpanRef {
    core: Core,
    pub(crate) id: Id,
}

impl SpanRef {
    pub(crate) fn new(core: Core, id: Id) -> Self {
        SpanRef { core, id }
    }

    pub(crate) fn registry_uid(&self) -> usize {
        self.core.uid()
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&pykregistry_core::SpanRef<'_, crate::layers::Layers>) -> R,
    ) -> PyResult<R> {
        match self.core.get(self.id) {
            Some(span) => Ok(f(&span)),
            None => Err(closed(
                self.id.into_u64(),
                "its SpanRef can no longer read it",
            )),
        }
    }
}

#[pymethods]
impl SpanRef {
    #[getter]
    fn id(&self) -> u64 {
        self.id.into_u64()
    }

    #[getter]
    fn name(&self) -> PyResult<String> {
        self.with(|s| s.name().to_owned())
    }

    #[getter]
    fn target(&self) -> PyResult<String> {
        self.with(|s| s.target().to_owned())
    }

    #[getter]
    fn level<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::level_to_py(py, self.with(|s| s.level())?)
    }

    /// A copy of the fields, as a dict.
    #[getter]
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // R15: copied out under the lock, built into a dict after: building
        // allocates, and a finalizer run by the collector there may record
        // on this very span.
        let fields = self.with(|s| s.lock_fields().clone())?;
        convert::fields_to_py(py, &fields)
    }

    #[getter]
    fn parent_id(&self) -> PyResult<Option<u64>> {
        self.with(|s| s.parent_id().map(Id::into_u64))
    }

    /// R13: the span's 64-bit id, unique in the process (unlike `id`).
    #[getter]
    fn span_id(&self) -> PyResult<u64> {
        self.with(|s| s.span_id())
    }

    /// R13: the 128-bit id of the span's trace, shared with its parent.
    #[getter]
    fn trace_id(&self) -> PyResult<u128> {
        self.with(|s| s.trace_id())
    }

    /// R13: the span id of the span's parent in its trace, even if that
    /// parent has closed; `None` for a root of a new trace.
    #[getter]
    fn parent_span_id(&self) -> PyResult<Option<u64>> {
        self.with(|s| s.parent_span_id())
    }

    /// Whether the span's parent in its trace is in another process: it
    /// continues a `RemoteParent` (OpenTelemetry's `SpanContext.is_remote`
    /// of its parent).
    #[getter]
    fn parent_is_remote(&self) -> PyResult<bool> {
        self.with(|s| s.parent_is_remote())
    }

    /// W3C trace context: the flags of the span's trace: those of the
    /// remote parent it continues, else `0x01` (sampled).
    #[getter]
    fn trace_flags(&self) -> PyResult<u8> {
        self.with(|s| s.trace_flags())
    }

    /// W3C trace context: the `tracestate` of the remote parent the span's
    /// trace continues, if it had one.
    #[getter]
    fn tracestate(&self) -> PyResult<Option<String>> {
        self.with(|s| s.tracestate().map(|t| t.to_string()))
    }

    /// `threading.get_ident()` of the thread that made the span.
    #[getter]
    fn thread_id(&self) -> PyResult<u64> {
        self.with(|s| s.ext().thread_id)
    }

    /// The name of the asyncio task that made the span, if a layer that
    /// needs it (`ChromeTrace`, `FlameGraph`, `JsonLines`) was attached.
    #[getter]
    fn task_name(&self) -> PyResult<Option<String>> {
        self.with(|s| s.ext().task.as_deref().map(str::to_owned))
    }

    #[getter]
    fn parent(&self) -> PyResult<Option<SpanRef>> {
        Ok(self
            .with(|s| s.parent_id())?
            .filter(|p| self.core.get(*p).is_some())
            .map(|p| SpanRef::new(self.core.clone(), p)))
    }

    /// Wall-clock time the span was created, in ns since the epoch.
    #[getter]
    fn start_time_ns(&self) -> PyResult<u64> {
        self.with(|s| s.ext().timings().start_time_ns)
    }

    /// R14: wall-clock time the span ended, in ns since the epoch; `None`
    /// until it ends (layers' `on_end` already sees it). Busy and idle time
    /// stop counting then too.
    #[getter]
    fn end_time_ns(&self) -> PyResult<Option<u64>> {
        self.with(|s| s.ext().timings().end_time_ns)
    }

    /// Time the span has been entered in some context, in ns (monotonic),
    /// up to its end.
    #[getter]
    fn busy_ns(&self) -> PyResult<u64> {
        self.with(|s| s.ext().timings().busy_ns)
    }

    /// Time the span has been live but entered nowhere, in ns (monotonic),
    /// up to its end.
    #[getter]
    fn idle_ns(&self) -> PyResult<u64> {
        self.with(|s| s.ext().timings().idle_ns)
    }

    /// A dict for layers and users to keep data with the span; dropped
    /// when the span closes.
    #[getter]
    fn extensions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.with(|s| s.ext().extensions(py))
    }

    /// The span's current reference count; 0 once it has closed.
    #[getter]
    fn ref_count(&self) -> usize {
        self.core.ref_count(self.id)
    }

    /// Whether the span has closed.
    #[getter]
    fn closed(&self) -> bool {
        self.core.get(self.id).is_none()
    }

    /// The span, its parent, and so on to the root.
    fn scope(&self) -> PyResult<Vec<SpanRef>> {
        self.with(|s| {
            s.scope()
                .map(|a| SpanRef::new(self.core.clone(), a.id()))
                .collect()
        })
    }

    /// The root, its child, and so on down to this span.
    #[allow(clippy::wrong_self_convention)] // the name is the Python API's
    fn from_root(&self) -> PyResult<Vec<SpanRef>> {
        let mut scope = self.scope()?;
        scope.reverse();
        Ok(scope)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<SpanRef>()
            .is_ok_and(|o| o.get().id == self.id && o.get().core.uid() == self.core.uid())
    }

    fn __hash__(&self) -> u64 {
        self.id.into_u64() ^ (self.core.uid() as u64).rotate_left(48)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let id = self.id.into_u64();
        match self.core.get(self.id) {
            Some(s) => format!(
                "SpanRef(id={id}, name={}, target={}, level=Level.{}, parent={})",
                convert::quote(py, s.name()),
                convert::quote(py, s.target()),
                s.level(),
                s.parent_id()
                    .map_or("None".to_owned(), |p| p.into_u64().to_string())
            ),
            None => format!("SpanRef(id={id}, closed=True)"),
        }
    }
}
