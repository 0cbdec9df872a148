//! W3C trace context: `pykregistry.RemoteParent`, a span in another process
//! that spans here can continue (`inject` writes a span's headers). Headers are read
//! and written by the core (`pykregistry_core::traceparent`);
//! `pykregistry.extract`, which finds them in a carrier, is Python
//! (`pykregistry/propagation.py`).

use std::panic::{catch_unwind, AssertUnwindSafe};

use pykregistry_core::traceparent::{self, KNOWN_FLAGS, SAMPLED};
use pykregistry_core::TraceParent;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyInt, PyString, PyTuple};

use crate::convert;

/// A span in another process, as `traceparent` and `tracestate` headers
/// name it: give it as `parent=` and the new span continues its trace.
#[pyclass(name = "RemoteParent", module = "pykregistry", frozen, eq, hash)]
#[derive(PartialEq, Eq, Hash)]
pub(crate) struct RemoteParent(pub(crate) pykregistry_core::RemoteParent);

/// The remote parent `parent` names, if it is one: a `parent=` argument.
pub(crate) fn remote<'a, 'py>(
    parent: Option<&'a Bound<'py, PyAny>>,
) -> Option<&'a Bound<'py, RemoteParent>> {
    parent?.cast::<RemoteParent>().ok()
}

// === impl RemoteParent ===

#[pymethods]
impl RemoteParent {
    #[new]
    #[pyo3(
        signature = (trace_id, span_id, trace_flags = None, tracestate = None),
        text_signature = "(trace_id, span_id, trace_flags=1, tracestate=None)"
    )]
    fn new(
        trace_id: &Bound<'_, PyAny>,
        span_id: &Bound<'_, PyAny>,
        trace_flags: Option<&Bound<'_, PyAny>>,
        tracestate: Option<&Bound<'_, PyString>>,
    ) -> PyResult<Self> {
        let trace_id = nonzero_int::<u128>(trace_id, "trace_id", "2**128")?;
        let span_id = nonzero_int::<u64>(span_id, "span_id", "2**64")?;
        let flags = match trace_flags {
            Some(f) => int::<u8>(f, "trace_flags", "[0, 256)")?,
            None => SAMPLED,
        };
        if flags & !KNOWN_FLAGS != 0 {
            return Err(PyValueError::new_err(format!(
                "trace_flags {flags:#04x} sets reserved bits: only sampled (0x01) and \
                 random-trace-id (0x02) are defined, the others must be zero"
            )));
        }
        let tracestate = match tracestate {
            None => None,
            Some(s) => {
                let text = s.to_str()?;
                if text.bytes().all(|c| matches!(c, b' ' | b'\t' | b',')) {
                    None
                } else {
                    Some(
                        traceparent::parse_tracestate(text.as_bytes())
                            .ok_or_else(|| {
                                PyValueError::new_err(format!(
                                    "tracestate {} is malformed: W3C trace context wants \
                                     'key=value' members separated by ',' (at most 32; keys \
                                     of lowercase letters, digits and _-*/@; values of \
                                     printable ASCII but ',' and '=')",
                                    convert::quote(s.py(), text)
                                ))
                            })?
                            .into(),
                    )
                }
            }
        };
        Ok(RemoteParent(pykregistry_core::RemoteParent {
            trace_parent: TraceParent { trace_id, span_id },
            trace_flags: flags,
            tracestate,
        }))
    }

    /// The remote parent a `traceparent` header and a `tracestate` header
    /// (str or bytes) name; `None` if the `traceparent` is not valid. A
    /// malformed `tracestate` is dropped. Never raises.
    #[staticmethod]
    #[pyo3(signature = (traceparent, tracestate = None))]
    fn from_headers(
        traceparent: &Bound<'_, PyAny>,
        tracestate: Option<&Bound<'_, PyAny>>,
    ) -> Option<Self> {
        let header = header_bytes(traceparent)?;
        let state = tracestate.and_then(header_bytes);
        // The parser does not panic (its property tests say so); should it
        // ever, a missing header is the answer, not an exception.
        catch_unwind(AssertUnwindSafe(|| {
            pykregistry_core::RemoteParent::from_headers(&header, state.as_deref())
        }))
        .ok()
        .flatten()
        .map(RemoteParent)
    }

    /// The 128-bit trace id.
    #[getter]
    fn trace_id(&self) -> u128 {
        self.0.trace_parent.trace_id
    }

    /// The 64-bit span id of the remote span: the `parent_span_id` of the
    /// spans that continue it.
    #[getter]
    fn span_id(&self) -> u64 {
        self.0.trace_parent.span_id
    }

    /// The W3C trace flags: `0x01` sampled, `0x02` random trace id.
    #[getter]
    fn trace_flags(&self) -> u8 {
        self.0.trace_flags
    }

    /// Whether the remote caller may have recorded the trace.
    #[getter]
    fn sampled(&self) -> bool {
        self.0.trace_flags & SAMPLED != 0
    }

    /// The `tracestate`, normalized; `None` without one.
    #[getter]
    fn tracestate(&self) -> Option<&str> {
        self.0.tracestate.as_deref()
    }

    /// The `traceparent` header (version `00`) naming the remote span.
    #[getter]
    fn traceparent(&self) -> String {
        self.0.traceparent()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let tp = self.0.trace_parent;
        let state = match &self.0.tracestate {
            Some(s) => format!(", tracestate={}", convert::quote(py, s)),
            None => String::new(),
        };
        format!(
            "RemoteParent(trace_id=0x{:032x}, span_id=0x{:016x}, trace_flags=0x{:02x}{state})",
            tp.trace_id, tp.span_id, self.0.trace_flags
        )
    }

    /// Pickled (for `multiprocessing`, say) as its constructor call.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let this = &slf.get().0;
        let args = (
            this.trace_parent.trace_id,
            this.trace_parent.span_id,
            this.trace_flags,
            this.tracestate.as_deref(),
        )
            .into_pyobject(py)?;
        Ok((slf.get_type().into_any(), args))
    }
}

/// A header value's bytes: a str's (UTF-8) or a bytes-like's; `None` for
/// anything else, or a str that cannot be UTF-8 (lone surrogates).
fn header_bytes(value: &Bound<'_, PyAny>) -> Option<Vec<u8>> {
    if let Ok(s) = value.cast::<PyString>() {
        s.to_str().ok().map(|s| s.as_bytes().to_vec())
    } else if let Ok(b) = value.cast::<PyBytes>() {
        Some(b.as_bytes().to_vec())
    } else if let Ok(b) = value.cast::<PyByteArray>() {
        Some(b.to_vec())
    } else {
        None
    }
}

/// An int argument that fits `T`: `TypeError` for other types (and bools),
/// `ValueError` out of range.
fn int<'py, T>(obj: &Bound<'py, PyAny>, what: &str, range: &str) -> PyResult<T>
where
    T: for<'a> FromPyObject<'a, 'py>,
{
    if !obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{what} is an int, not {}",
            convert::type_name(obj)
        )));
    }
    obj.extract::<T>()
        .map_err(|_| PyValueError::new_err(format!("{what} must be in {range}")))
}

/// A W3C id: an int in `[1, 2**bits)`.
fn nonzero_int<'py, T>(obj: &Bound<'py, PyAny>, what: &str, limit: &str) -> PyResult<T>
where
    T: for<'a> FromPyObject<'a, 'py> + Default + PartialEq,
{
    let range = format!("[1, {limit}) (W3C trace context forbids all-zero ids)");
    match int::<T>(obj, what, &range)? {
        n if n == T::default() => Err(PyValueError::new_err(format!("{what} must be in {range}"))),
        n => Ok(n),
    }
}
