//! `pykregistry.Span`: a handle that owns exactly one reference.

use std::sync::atomic::{AtomicBool, Ordering};

use pykregistry_core::Id;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert;
use crate::errors::closed;
use crate::registry::{release, PyRegistry};
use crate::span_ref::SpanRef;

/// A handle on a span, owning one reference to it.
///
/// `with registry.span(...) as s:` creates, enters, and at the end of the
/// block exits and releases. A handle released by `close()` or garbage
/// collected unreleased gives up its reference.
#[pyclass(name = "Span", module = "pykregistry", frozen)]
pub(crate) struct Span {
    registry: Py<PyRegistry>,
    pub(crate) id: Id,
    closed: AtomicBool,
}

/// The context manager `Span.entered()` returns: enters on `__enter__`,
/// exits on `__exit__`, and can be used again.
#[pyclass(name = "Entered", module = "pykregistry", frozen)]
pub(crate) struct Entered {
    span: Py<Span>,
}

// === impl Span ===

impl Span {
    pub(crate) fn new(registry: Py<PyRegistry>, id: Id) -> Self {
        Span {
            registry,
            id,
            closed: AtomicBool::new(false),
        }
    }

    fn registry(&self) -> &PyRegistry {
        self.registry.get()
    }

    pub(crate) fn registry_uid(&self) -> usize {
        self.registry().core.uid()
    }

    fn check_open(&self, what: &str) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(closed(self.id.into_u64(), what))
        } else {
            Ok(())
        }
    }

    /// Releases this handle's reference, once.
    fn release(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            release(&self.registry().core, self.id);
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.release();
    }
}

#[pymethods]
impl Span {
    /// The span's ID.
    #[getter]
    fn id(&self) -> u64 {
        self.id.into_u64()
    }

    /// Whether this handle has been released.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The registry this span belongs to.
    #[getter]
    fn registry_(&self, py: Python<'_>) -> Py<PyRegistry> {
        self.registry.clone_ref(py)
    }

    /// A read-only view of the span.
    #[getter]
    #[pyo3(name = "ref")]
    fn view(&self) -> PyResult<SpanRef> {
        self.check_open("the handle was closed")?;
        Ok(SpanRef::new(self.registry().core.clone(), self.id))
    }

    #[pyo3(signature = (**fields))]
    fn record(&self, py: Python<'_>, fields: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        self.check_open("cannot record on a closed handle")?;
        let values = match fields {
            Some(f) => convert::fields_from_items(f.iter())?,
            None => Vec::new(),
        };
        self.registry().record_id(py, self.id, values)
    }

    fn follows_from(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_open("cannot add follows_from to a closed handle")?;
        let other = match convert::span_of(other, self.registry_uid())? {
            Some(id) => id,
            None => convert::span_id(other)?,
        };
        self.registry().follows_from_id(py, self.id, other)
    }

    /// A second handle on the same span (+1).
    fn clone(&self, py: Python<'_>) -> PyResult<Span> {
        self.check_open("cannot clone a closed handle")?;
        let core = &self.registry().core;
        core.clone_span(self.id)
            .map_err(crate::errors::RegistryError)?;
        Ok(Span::new(self.registry.clone_ref(py), self.id))
    }

    /// Releases this handle's reference. A second call does nothing.
    fn close(&self) {
        self.release();
    }

    /// A reusable context manager that enters and exits the span.
    fn entered(slf: &Bound<'_, Self>) -> PyResult<Entered> {
        slf.get()
            .check_open("cannot enter through a closed handle")?;
        Ok(Entered {
            span: slf.clone().unbind(),
        })
    }

    fn __enter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        let span = slf.get();
        span.check_open("cannot enter through a closed handle")?;
        span.registry().enter_id(slf.py(), span.id)?;
        Ok(slf.clone())
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _ty: &Bound<'_, PyAny>,
        _value: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let exited = self.registry().exit_id(py, self.id);
        self.release();
        exited.map(|()| false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let id = self.id.into_u64();
        if self.closed() {
            return format!("Span(id={id}, closed=True)");
        }
        match self.registry().core.get(self.id) {
            Some(span) => match span.parent_id() {
                Some(p) => format!(
                    "Span(id={id}, name={}, parent={})",
                    convert::quote(py, span.name()),
                    p.into_u64()
                ),
                None => format!(
                    "Span(id={id}, name={}, parent=None)",
                    convert::quote(py, span.name())
                ),
            },
            None => format!("Span(id={id}, closed=True)"),
        }
    }
}

// === impl Entered ===

#[pymethods]
impl Entered {
    fn __enter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, Span>> {
        let span = self.span.bind(py);
        let s = span.get();
        s.check_open("cannot enter through a closed handle")?;
        s.registry().enter_id(py, s.id)?;
        Ok(span.clone())
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _ty: &Bound<'_, PyAny>,
        _value: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let s = self.span.get();
        s.registry().exit_id(py, s.id)?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("Entered({})", self.span.bind(py).get().__repr__(py))
    }
}
