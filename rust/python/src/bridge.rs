//! The native half of the OpenTelemetry context bridge
//! (`pykregistry.otel.install`, `OTEL_PYTHON_CONTEXT=pykregistry`).
//!
//! With the bridge installed, OpenTelemetry's `attach(context)` pushes an
//! entry that carries `context` on the registry's stack, and `detach(token)`
//! exits that very entry: the stack of the calling context then holds both
//! tracers' spans, in the order they were entered, so the innermost span is
//! known with no cost for the registry's own spans ([`context::current`]
//! reads it on the way). No `ContextVar.reset` token is involved: a detach
//! from another context (a generator closed elsewhere) works like a `with`
//! block's exit (R5), and never fails.

use pykregistry_core::traceparent::{parse_tracestate, DEFAULT_FLAGS, KNOWN_FLAGS};
use pykregistry_core::{RemoteParent, TraceParent};
use pyo3::prelude::*;

use crate::context::{self, Entry};
use crate::registry::PyRegistry;

/// A span's identity as OpenTelemetry's `SpanContext` needs it: trace id,
/// span id, trace flags, and the `tracestate` header, if any.
type SpanIds = (u128, u64, u8, Option<String>);

/// `attach(context)`: `span` is the span current in `context`, if it has a
/// valid one. Returns the token that `_otel_detach` takes.
#[pyfunction]
pub(crate) fn _otel_attach<'py>(
    registry: &Bound<'py, PyRegistry>,
    context: Py<PyAny>,
    span: Option<SpanIds>,
) -> PyResult<Bound<'py, Entry>> {
    let span = span
        .filter(|(trace_id, span_id, ..)| *trace_id != 0 && *span_id != 0)
        .map(|(trace_id, span_id, flags, state)| RemoteParent {
            trace_parent: TraceParent { trace_id, span_id },
            trace_flags: flags & KNOWN_FLAGS,
            tracestate: state
                .and_then(|s| parse_tracestate(s.as_bytes()))
                .map(Into::into),
        });
    context::enter_foreign(registry.py(), &registry.get().core, context, span)
}

/// `detach(token)`: exits the entry `_otel_attach` made, from whatever
/// context; anything else is ignored.
#[pyfunction]
pub(crate) fn _otel_detach(token: &Bound<'_, PyAny>) {
    context::exit_foreign(token.py(), token);
}

/// `get_current()`: the registry's span, if it is current above every
/// attached context (its ids), and the nearest attached context.
#[pyfunction]
pub(crate) fn _otel_current<'py>(
    registry: &Bound<'py, PyRegistry>,
) -> PyResult<(Option<SpanIds>, Option<Bound<'py, PyAny>>)> {
    let core = &registry.get().core;
    let (ours, context) = context::foreign_current(registry.py(), core)?;
    let ours = ours.map(|(id, ids)| {
        // A span that has closed is still its children's parent in the
        // trace (R13); it keeps the default flags.
        let (flags, state) = core
            .get(id)
            .filter(|s| s.span_id() == ids.span_id)
            .map_or((DEFAULT_FLAGS, None), |s| {
                (s.trace_flags(), s.tracestate().map(|t| t.to_string()))
            });
        (ids.trace_id, ids.span_id, flags, state)
    });
    Ok((ours, context))
}
