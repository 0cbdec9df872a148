//! The one place where core errors become Python exceptions. The exception
//! classes are defined in `pykregistry/exceptions.py` and imported here.

use pykregistry_core::Error;
use pyo3::prelude::*;

pyo3::import_exception!(pykregistry.exceptions, SpanNotFoundError);
pyo3::import_exception!(pykregistry.exceptions, SpanClosedError);
pyo3::import_exception!(pykregistry.exceptions, InvalidSpanIdError);
pyo3::import_exception!(pykregistry.exceptions, CapacityError);
pyo3::import_exception!(pykregistry.exceptions, SpanUsageWarning);

/// A core error on its way to Python: `?` turns it into the matching
/// `pykregistry.exceptions` class.
#[derive(Debug)]
pub(crate) struct RegistryError(pub(crate) Error);

impl From<Error> for RegistryError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl From<RegistryError> for PyErr {
    fn from(RegistryError(e): RegistryError) -> PyErr {
        let msg = e.to_string();
        match e {
            Error::NotLive { .. } => SpanNotFoundError::new_err(msg),
            Error::ZeroId => InvalidSpanIdError::new_err(msg),
            Error::SlabFull | Error::TooManyThreads | Error::TooManyRefs { .. } => {
                CapacityError::new_err(msg)
            }
        }
    }
}

/// The error for using a handle or view after its span closed.
pub(crate) fn closed(id: u64, what: &str) -> PyErr {
    SpanClosedError::new_err(format!(
        "span {id} has closed: {what} (a SpanRef is a view; copy what you need while the span is live, e.g. in on_close)"
    ))
}

/// The error for using a `Span` handle after it was released.
pub(crate) fn handle_closed(id: u64, what: &str) -> PyErr {
    SpanClosedError::new_err(format!(
        "span {id}'s handle was closed (its `with` block ended, or close() was called): {what}"
    ))
}

/// R15: the ergonomic API's answer to a timing mistake: `err` itself on a
/// strict registry, else `Ok(())` after warning with `SpanUsageWarning`
/// (which the warning filters may turn into an error again).
pub(crate) fn misuse(py: Python<'_>, strict: bool, err: PyErr) -> PyResult<()> {
    if strict {
        return Err(err);
    }
    let message = err.value(py).str()?;
    PyErr::warn(
        py,
        &py.get_type::<SpanUsageWarning>(),
        &std::ffi::CString::new(message.to_string_lossy().replace('\0', "?")).unwrap_or_default(),
        1,
    )
}
