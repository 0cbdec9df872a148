//! `pykregistry._native._SpanStack`: the core's per-thread stack
//! ([`SpanStack`], which the Rust `Subscriber` runs on) as Python sees it,
//! for one purpose: `tests/test_shared_model.py` runs it and the bindings'
//! context stack (`context`) through the same operations and checks both
//! against the same model (`pykregistry.testing.model`), so that R5, R6 and
//! R11, implemented in both, cannot drift apart.

use pykregistry_core::{Id, SpanStack};
use pyo3::prelude::*;

use crate::convert;
use crate::gil::GilCell;

/// The core's `SpanStack`, by span ID.
#[pyclass(name = "_SpanStack", module = "pykregistry", frozen)]
pub(crate) struct PySpanStack(GilCell<SpanStack>);

#[pymethods]
impl PySpanStack {
    #[new]
    fn new() -> Self {
        PySpanStack(GilCell::new(SpanStack::default()))
    }

    /// R5: pushes `id`; whether this entry holds a reference (it is not a
    /// duplicate).
    fn push(&self, id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = convert::span_id(id)?;
        Ok(self.0 .0.borrow_mut().push(id))
    }

    /// R5: removes the most recent entry of `id`; whether it held a
    /// reference.
    fn pop(&self, id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = convert::span_id(id)?;
        Ok(self.0 .0.borrow_mut().pop(id))
    }

    /// R6: the current span's ID.
    fn current(&self) -> Option<u64> {
        self.0 .0.borrow().current().map(Id::into_u64)
    }

    /// R11: empties the stack (its context ended); the IDs whose references
    /// its entries held, bottom first.
    fn drain_held(&self) -> Vec<u64> {
        self.0
             .0
            .borrow_mut()
            .drain_held()
            .map(Id::into_u64)
            .collect()
    }
}
