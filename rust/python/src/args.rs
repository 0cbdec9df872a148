//! The arguments that `Registry.span`, `Registry.event`, `Registry.new_span`
//! and `Callsite.span` share, read from Python: the name, `target=`,
//! `level=`, `parent=` and the fields.
//!
//! It sits above the handles (`span`), because a `parent=` may be one, and
//! hands the registry's code ([`SpanArgs`]) a parent already classified.

use pykregistry_core::Level;
use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyString};

use crate::convert::{self, CurrentParent};
use crate::fastcall::{is_keyword, Args};
use crate::propagation::RemoteParent;
use crate::registry::{ParentArg, PyRegistry, SpanArgs};
use crate::span::{span_of, SpanArg};

/// A `parent=` keyword as given; missing means `CURRENT` (a Python `None`
/// is kept, and means "no parent").
pub(crate) struct RawParent<'py>(pub(crate) Option<Bound<'py, PyAny>>);

impl<'a, 'py> FromPyObject<'a, 'py> for RawParent<'py> {
    type Error = PyErr;

    fn extract(obj: pyo3::Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(RawParent(Some(obj.to_owned())))
    }
}

/// A parent argument of the registry whose uid is `registry`: `CURRENT`
/// (or missing), `None`, a span ID, a `Span` or `SpanRef` of that registry,
/// or a `RemoteParent`.
pub(crate) fn parent(obj: Option<Bound<'_, PyAny>>, registry: usize) -> PyResult<ParentArg<'_>> {
    let Some(obj) = obj else {
        return Ok(ParentArg::Current);
    };
    if obj.is_none() {
        return Ok(ParentArg::Root);
    }
    if obj.is_instance_of::<CurrentParent>() {
        return Ok(ParentArg::Current);
    }
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        return Ok(ParentArg::Explicit(convert::span_id(&obj)?));
    }
    match span_of(&obj, registry)? {
        SpanArg::Span(id) => Ok(ParentArg::Explicit(id)),
        // A disabled span is nobody's parent: as tracing's `parent: None`.
        SpanArg::Disabled => Ok(ParentArg::Root),
        SpanArg::NotASpan => match obj.cast_into::<RemoteParent>() {
            Ok(remote) => Ok(ParentArg::Remote(remote)),
            Err(e) => Err(PyTypeError::new_err(format!(
                "parent must be CURRENT, None, a span ID, a Span, a SpanRef or a RemoteParent, not {}",
                convert::type_name(&e.into_inner())
            ))),
        },
    }
}

/// `new_span`'s arguments as pyo3 extracted them (fields in a dict).
pub(crate) fn span_args<'py>(
    registry: usize,
    target: Option<Bound<'py, PyString>>,
    level: Option<&Bound<'py, PyAny>>,
    parent_arg: RawParent<'py>,
    fields: Option<&Bound<'py, PyDict>>,
) -> PyResult<SpanArgs<'py>> {
    Ok(SpanArgs {
        target,
        level: level.map_or(Ok(Level::Info), convert::level)?,
        parent: parent(parent_arg.0, registry)?,
        fields: fields.map(|f| f.iter().collect()).unwrap_or_default(),
    })
}

/// `target=`, `level=` and `parent=` from a vectorcall's keywords; every
/// other keyword is a field. A span whose level `registry`'s filter refuses
/// (`filtered`) is not made: its parent is not read.
pub(crate) fn from_keywords<'py>(
    args: &Args<'_, 'py>,
    registry: &PyRegistry,
    filtered: bool,
) -> PyResult<SpanArgs<'py>> {
    let mut target = None;
    let mut level = Level::Info;
    let mut parent_arg = None;
    let mut fields = Vec::new();
    for (key, value) in args.keywords() {
        let py = key.py();
        if is_keyword(key, intern!(py, "level"), "level")? {
            if !value.is_none() {
                level = convert::level(&value)?;
            }
        } else if is_keyword(key, intern!(py, "target"), "target")? {
            if !value.is_none() {
                let t = value.cast::<PyString>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "{}(): target is a str, not {}",
                        args.method(),
                        convert::type_name(&value)
                    ))
                })?;
                target = Some(t.to_owned());
            }
        } else if is_keyword(key, intern!(py, "parent"), "parent")? {
            parent_arg = Some(value.to_owned());
        } else {
            fields.push((key.to_owned().into_any(), value.to_owned()));
        }
    }
    Ok(SpanArgs {
        target,
        level,
        parent: if registry.refuses(level, filtered) {
            ParentArg::Root
        } else {
            parent(parent_arg, registry.core.uid())?
        },
        fields,
    })
}

/// The first positional argument of `span`/`event`, which must be a str.
pub(crate) fn str_arg<'py>(args: &Args<'_, 'py>, what: &str) -> PyResult<Bound<'py, PyString>> {
    let [arg] = args.positional([what])?;
    arg.cast::<PyString>()
        .map(pyo3::Borrowed::to_owned)
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{}(): {what} is a str, not {}",
                args.method(),
                convert::type_name(&arg)
            ))
        })
}
