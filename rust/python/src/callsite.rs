//! `pykregistry.Callsite`: metadata and the filter's decision fixed once, for
//! hot paths.

use std::ffi::CStr;

use pykregistry_core::{Interest, Level};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::args::{self, str_arg};
use crate::convert;
use crate::fastcall::{is_keyword, Args, FastMethod};
use crate::registry::{ParentArg, PyRegistry, SpanArgs};
use crate::span::Span;

/// A call site: a span's name, target, level and field names, and the
/// filter's decision, fixed when it is made. `callsite.span(**fields)` is the
/// fastest way to make a span.
#[pyclass(name = "Callsite", module = "pykregistry", frozen)]
pub(crate) struct Callsite {
    registry: Py<PyRegistry>,
    name: Py<PyString>,
    target: Py<PyString>,
    level: Level,
    fields: Vec<Py<PyString>>,
    interest: Interest,
}

impl Callsite {
    pub(crate) fn new(
        registry: &Bound<'_, PyRegistry>,
        name: &Bound<'_, PyString>,
        target: Option<&Bound<'_, PyString>>,
        level: Option<&Bound<'_, PyAny>>,
        fields: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let py = registry.py();
        let level = level
            .map(convert::level)
            .transpose()?
            .unwrap_or(Level::Info);
        let target = match target {
            Some(t) => t.clone(),
            None => PyString::new(py, ""),
        };
        let fields = match fields {
            None => Vec::new(),
            Some(f) if f.is_instance_of::<PyString>() => {
                return Err(PyTypeError::new_err(
                    "fields is a sequence of field names, not one str: fields=(\"sql\",)",
                ))
            }
            Some(f) => f
                .try_iter()?
                .map(|n| {
                    n?.cast_into::<PyString>()
                        .map(Bound::unbind)
                        .map_err(|_| PyTypeError::new_err("field names are str"))
                })
                .collect::<PyResult<_>>()?,
        };
        let interest = match &registry.get().filter {
            None => Interest::Always,
            Some(f) => f.interest(level, target.to_str()?),
        };
        Ok(Callsite {
            registry: registry.clone().unbind(),
            name: name.clone().unbind(),
            target: target.unbind(),
            level,
            fields,
            interest,
        })
    }
}

impl Callsite {
    /// Whether `key` is one of the declared field names (usually the same
    /// interned string).
    fn declares(&self, key: Borrowed<'_, '_, PyString>) -> PyResult<bool> {
        let py = key.py();
        for name in &self.fields {
            if name.bind(py).is(key) || name.bind(py).as_any().eq(key)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[pymethods]
impl Callsite {
    /// A call site held by a layer of its own registry is a cycle.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.registry)
    }

    #[new]
    #[pyo3(signature = (name, /, *, target = None, level = None, fields = None, registry = None))]
    fn py_new(
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        target: Option<&Bound<'_, PyString>>,
        level: Option<&Bound<'_, PyAny>>,
        fields: Option<&Bound<'_, PyAny>>,
        registry: Option<&Bound<'_, PyRegistry>>,
    ) -> PyResult<Self> {
        if let Some(registry) = registry {
            return Callsite::new(registry, name, target, level, fields);
        }
        Callsite::new(
            &PyRegistry::default_registry(py)?,
            name,
            target,
            level,
            fields,
        )
    }

    /// Whether spans of this call site can be enabled.
    #[getter]
    fn enabled(&self) -> bool {
        self.interest != Interest::Never
    }

    #[getter]
    fn name(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    #[getter]
    fn target(&self, py: Python<'_>) -> Py<PyString> {
        self.target.clone_ref(py)
    }

    #[getter]
    fn level<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::level_to_py(py, self.level)
    }

    #[getter]
    fn fields_tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.fields.iter().map(|f| f.bind(py)))
    }

    #[getter]
    fn registry(&self, py: Python<'_>) -> Py<PyRegistry> {
        self.registry.clone_ref(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Callsite({}, target={}, level=Level.{}, fields={})",
            self.name.bind(py).repr()?,
            self.target.bind(py).repr()?,
            self.level,
            self.fields_tuple(py)?.repr()?
        ))
    }
}

/// `Callsite.span(**fields)`: a new span of this call site (the disabled
/// span if filtered out). Keywords are the declared fields, and `parent`.
pub(crate) struct SpanMethod;

impl FastMethod for SpanMethod {
    const NAME: &'static CStr = c"span";
    const QUALNAME: &'static str = "Callsite.span";
    const DOC: &'static CStr = c"span($self, /, **fields)
--

A new span of this call site (the disabled span if filtered out).
Keywords are the declared fields, and `parent`.";

    type Class = Callsite;

    /// A call site no span of which can be enabled: the disabled span, as
    /// the full call answers it (it reads no keyword then).
    fn refuse<'py>(slf: &Bound<'py, Callsite>, args: &Args<'_, 'py>) -> Option<Bound<'py, PyAny>> {
        if slf.get().interest != Interest::Never || args.positional_values().len() != 0 {
            return None;
        }
        Some(Span::disabled_span_if_made(slf.py())?.into_any())
    }

    fn call<'py>(slf: &Bound<'py, Callsite>, args: &Args<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let site = slf.get();
        args.positional([])?;
        if site.interest == Interest::Never {
            return Ok(Span::disabled_span(py)?.into_any());
        }
        let mut parent = None;
        let mut fields = Vec::new();
        for (key, value) in args.keywords() {
            if is_keyword(key, intern!(py, "parent"), "parent")? {
                parent = Some(value.to_owned());
            } else if site.declares(key)? {
                fields.push((key.to_owned().into_any(), value.to_owned()));
            } else {
                return Err(PyTypeError::new_err(format!(
                    "call site {} declares the fields {}; {} is not one of them",
                    site.name.bind(py).repr()?,
                    site.fields_tuple(py)?.repr()?,
                    key.repr()?
                )));
            }
        }
        let registry = site.registry.get();
        let filtered = site.interest != Interest::Always;
        let args = SpanArgs {
            target: Some(site.target.bind(py).clone()),
            level: site.level,
            parent: if registry.refuses(site.level, filtered) {
                ParentArg::Root
            } else {
                args::parent(parent, registry.core.uid())?
            },
            fields,
        };
        let span = Span::make(site.registry.bind(py), site.name.bind(py), args, filtered)?;
        Ok(span.into_any())
    }
}

/// `Registry.callsite(name, /, *, target=None, level=None, fields=None)`: a
/// method of `Registry`, defined with the call sites it makes.
pub(crate) struct RegistryCallsiteMethod;

impl FastMethod for RegistryCallsiteMethod {
    const NAME: &'static CStr = c"callsite";
    const QUALNAME: &'static str = "Registry.callsite";
    const DOC: &'static CStr = c"callsite($self, name, /, *, target=None, level=None, fields=None)
--

A call site: name, target, level and field names fixed once, with the
filter's decision cached.";

    type Class = PyRegistry;

    fn call<'py>(
        slf: &Bound<'py, PyRegistry>,
        args: &Args<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let name = str_arg(args, "name")?;
        let (mut target, mut level, mut fields) = (None, None, None);
        for (key, value) in args.keywords() {
            let value = (!value.is_none()).then(|| value.to_owned());
            if is_keyword(key, intern!(py, "target"), "target")? {
                target = value
                    .map(|v| {
                        v.cast_into::<PyString>().map_err(|e| {
                            PyTypeError::new_err(format!(
                                "Registry.callsite(): target is a str, not {}",
                                convert::type_name(&e.into_inner())
                            ))
                        })
                    })
                    .transpose()?;
            } else if is_keyword(key, intern!(py, "level"), "level")? {
                level = value;
            } else if is_keyword(key, intern!(py, "fields"), "fields")? {
                fields = value;
            } else {
                return Err(PyTypeError::new_err(format!(
                    "Registry.callsite() got an unexpected keyword argument '{}'",
                    key.to_str()?
                )));
            }
        }
        let site = Callsite::new(slf, &name, target.as_ref(), level.as_ref(), fields.as_ref())?;
        Ok(Bound::new(py, site)?.into_any())
    }
}
