//! `pykregistry.inject(carrier, span=None, *, registry=None)`: writes a
//! span's W3C trace context (`traceparent`, and `tracestate` when its trace
//! has one) into a carrier. Its counterpart `extract` is Python
//! (`pykregistry/propagation.py`); the remote parent it returns is
//! `propagation::RemoteParent`.

use pykregistry_core::traceparent::DEFAULT_FLAGS;
use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt};

use crate::context;
use crate::convert;
use crate::errors::{closed, misuse, SpanNotFoundError};
use crate::layers::Core;
use crate::propagation::remote;
use crate::registry::PyRegistry;
use crate::span::Span;
use crate::span_ref::SpanRef;

/// `pykregistry.inject(carrier, span=None, *, registry=None)`: see the
/// stubs (`pykregistry/_native.pyi`) for what it promises.
#[pyfunction]
#[pyo3(signature = (carrier, span = None, *, registry = None))]
pub(crate) fn inject(
    py: Python<'_>,
    carrier: &Bound<'_, PyAny>,
    span: Option<&Bound<'_, PyAny>>,
    registry: Option<Bound<'_, PyRegistry>>,
) -> PyResult<()> {
    let registry = match registry {
        Some(r) => r,
        None => PyRegistry::default_registry(py)?,
    };
    let Some(context) = context_of(py, registry.get(), span)? else {
        return Ok(());
    };
    carrier.set_item(intern!(py, "traceparent"), context.traceparent())?;
    if let Some(state) = &context.tracestate {
        carrier.set_item(intern!(py, "tracestate"), &**state)?;
    }
    Ok(())
}

/// What `inject` writes for `span` (see `inject`): `None` for nothing.
fn context_of(
    py: Python<'_>,
    registry: &PyRegistry,
    span: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<pykregistry_core::RemoteParent>> {
    const WHAT: &str = "inject() writes nothing for it";
    let Some(span) = span else {
        // The current span; if it has closed but this context inherited it,
        // its identity, as the spans made here continue it (R13). What its
        // trace carried (flags, tracestate) went with it.
        let current = context::current(py, &registry.core)?;
        let live = current.id.and_then(|id| registry.core.get(id));
        return Ok(match live {
            Some(view) => Some(view.as_remote_parent()),
            None => current
                .trace
                .map(|trace_parent| pykregistry_core::RemoteParent {
                    trace_parent,
                    trace_flags: DEFAULT_FLAGS,
                    tracestate: None,
                }),
        });
    };
    if let Some(remote) = remote(Some(span)) {
        return Ok(Some(remote.get().0.clone()));
    }
    if let Ok(handle) = span.cast::<Span>() {
        // A disabled span is nobody's parent, and a released handle warns.
        let Some((owner, id)) = handle.get().open(py, WHAT)? else {
            return Ok(None);
        };
        return live_context(py, owner.strict, &owner.core, id, || {
            crate::errors::handle_closed(id.into_u64(), WHAT)
        });
    }
    if let Ok(view) = span.cast::<SpanRef>() {
        let (core, id) = (view.get().core(), view.get().id);
        return live_context(py, registry.strict, core, id, || {
            closed(id.into_u64(), WHAT)
        });
    }
    if span.is_instance_of::<PyInt>() && !span.is_instance_of::<PyBool>() {
        let id = convert::span_id(span)?;
        return live_context(py, registry.strict, &registry.core, id, || {
            SpanNotFoundError::new_err(format!(
                "span {} is not live: {WHAT} (was it closed before the request was sent?)",
                id.into_u64()
            ))
        });
    }
    Err(PyTypeError::new_err(format!(
        "span must be None (the current span), a Span, a SpanRef, a span ID or a \
         RemoteParent, not {}",
        convert::type_name(span)
    )))
}

/// The context of span `id` if it is live; else R15: a warning (an error
/// if `strict`) and nothing.
fn live_context(
    py: Python<'_>,
    strict: bool,
    core: &Core,
    id: pykregistry_core::Id,
    error: impl FnOnce() -> PyErr,
) -> PyResult<Option<pykregistry_core::RemoteParent>> {
    if let Some(view) = core.get(id).filter(|v| v.ref_count() > 0) {
        return Ok(Some(view.as_remote_parent()));
    }
    misuse(py, strict, error())?;
    Ok(None)
}
