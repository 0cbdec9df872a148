//! `pykregistry.Registry` as Python sees it: its methods, including those
//! that take `**fields` through vectorcall (`span`, `event`, `record`). The
//! work they do is the registry's (`registry`); this file reads their
//! arguments (`args`) and makes the handles (`span`) they return.

use std::ffi::CStr;

use pykregistry_core::{Filter, Id, Level};
use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::{PyTraverseError, PyVisit};

use crate::args::{self, str_arg, RawParent};
use crate::context;
use crate::convert;
use crate::errors::RegistryError;
use crate::fastcall::{is_keyword_quick, Args, FastMethod};
use crate::layers::{Core, Layers, Sink};
use crate::registry::PyRegistry;
use crate::span::Span;
use crate::span_ref::SpanRef;

/// The sink a native layer writes through, if `layer` is one.
fn sink_of(layer: &Bound<'_, PyAny>) -> Option<std::sync::Arc<dyn Sink>> {
    if let Ok(otlp) = layer.cast::<crate::otlp::OtlpExporter>() {
        return Some(otlp.get().sink.clone());
    }
    if let Ok(chrome) = layer.cast::<crate::pictures::ChromeTrace>() {
        return Some(chrome.get().sink.clone());
    }
    if let Ok(flame) = layer.cast::<crate::pictures::FlameGraph>() {
        return Some(flame.get().sink.clone());
    }
    let json = layer.cast::<crate::jsonlines::JsonLines>().ok()?;
    Some(json.get().sink.clone())
}

#[pymethods]
impl PyRegistry {
    #[new]
    #[pyo3(signature = (*, level = None, filter = None, layers = None, strict = false))]
    fn new(
        level: Option<&Bound<'_, PyAny>>,
        filter: Option<&str>,
        layers: Option<&Bound<'_, PyAny>>,
        strict: bool,
    ) -> PyResult<Self> {
        let level = level.map(|l| -> PyResult<Option<Level>> {
            if let Ok(s) = l.cast::<PyString>() {
                if s.to_str()?.eq_ignore_ascii_case("off") {
                    return Ok(None);
                }
            }
            convert::level(l).map(Some)
        });
        let level = level.transpose()?;
        let filter = match (filter, level) {
            (Some(f), default) => Some(
                Filter::parse(f, default)
                    .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?,
            ),
            (None, Some(default)) => Some(Filter::from_level(default)),
            (None, None) => None,
        };
        let registry = PyRegistry {
            core: Core::with_hooks(Layers::default()),
            filter,
            strict,
        };
        registry.core.hooks().bind(&registry.core);
        crate::registries::track(&registry.core);
        if let Some(layers) = layers {
            for layer in layers.try_iter()? {
                let layer = layer?;
                registry.core.hooks().add(&layer, sink_of(&layer))?;
            }
        }
        Ok(registry)
    }

    /// Whether the filter enables `level` for `target` (span directives
    /// aside: they depend on the spans a call is made in).
    #[pyo3(signature = (level, target = ""))]
    fn enabled(&self, level: &Bound<'_, PyAny>, target: &str) -> PyResult<bool> {
        let level = convert::level(level)?;
        Ok(self
            .filter
            .as_ref()
            .is_none_or(|f| f.enabled(level, target)))
    }

    /// `pykregistry.instrument(..., registry=self)`: see its documentation
    /// (`pykregistry/instrumentation.py`).
    #[pyo3(signature = (*args, **kwargs))]
    fn instrument<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, pyo3::types::PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let kwargs = match kwargs {
            Some(k) => k.copy()?,
            None => PyDict::new(py),
        };
        kwargs.set_item("registry", slf)?;
        // Set there by `pykregistry.instrumentation`: no import reaches up.
        py.import("pykregistry._default")?
            .getattr("instrument")?
            .call(args, Some(&kwargs))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.core.hooks().traverse(&visit)?;
        crate::registries::traverse(&self.core, &visit)
    }

    fn __clear__(&self, py: Python<'_>) {
        crate::registries::clear(py, &self.core);
        self.core.hooks().clear();
    }

    /// Adds a layer; it sees every step from now on.
    fn add_layer(&self, layer: &Bound<'_, PyAny>) -> PyResult<()> {
        self.core.hooks().add(layer, sink_of(layer))
    }

    /// The layers, in the order they are called.
    #[getter]
    fn layers<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyAny>> {
        self.core.hooks().objects(py)
    }

    /// How many times a layer raised.
    #[getter]
    fn layer_errors(&self) -> u64 {
        self.core.hooks().errors()
    }

    #[pyo3(signature = (name, /, *, target = None, level = None, parent = RawParent(None), fields = None))]
    fn new_span<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyString>,
        target: Option<Bound<'py, PyString>>,
        level: Option<&Bound<'py, PyAny>>,
        parent: RawParent<'py>,
        fields: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<u64> {
        let fields = match fields {
            Some(f) if !f.is_none() => Some(
                f.cast::<PyDict>()
                    .map_err(|_| PyTypeError::new_err("fields must be a dict of str to values"))?,
            ),
            _ => None,
        };
        let args = args::span_args(self.core.uid(), target, level, parent, fields)?;
        let id = self.create(py, name, args, false, false)?;
        Ok(id.expect("unfiltered creation always creates").into_u64())
    }

    fn clone_span(&self, id: &Bound<'_, PyAny>) -> PyResult<u64> {
        let id = convert::span_id(id)?;
        Ok(self.core.clone_span(id).map_err(RegistryError)?.into_u64())
    }

    fn try_close(&self, id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = convert::span_id(id)?;
        let closed = self.core.try_close(id).map_err(RegistryError)?;
        crate::layers::raise_interrupt()?;
        Ok(closed)
    }

    fn enter(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<()> {
        self.enter_id(py, convert::span_id(id)?).map(drop)
    }

    fn exit(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<()> {
        self.exit_id(py, convert::span_id(id)?)
    }

    fn current_span(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        Ok(context::current(py, &self.core)?.id.map(Id::into_u64))
    }

    fn get(&self, id: &Bound<'_, PyAny>) -> PyResult<Option<SpanRef>> {
        Ok(convert::lookup_id(id)?
            .filter(|id| self.core.get(*id).is_some())
            .map(|id| SpanRef::new(self.core.clone(), id)))
    }

    fn ref_count(&self, id: &Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(convert::lookup_id(id)?.map_or(0, |id| self.core.ref_count(id)))
    }

    fn __len__(&self) -> usize {
        self.core.len()
    }

    fn __contains__(&self, id: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(convert::lookup_id(id)?.is_some_and(|id| self.core.ref_count(id) > 0))
    }

    fn follows_from(
        &self,
        py: Python<'_>,
        id: &Bound<'_, PyAny>,
        follows: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = convert::span_id(id)?;
        let follows = convert::span_id(follows)?;
        self.follows_from_id(py, id, follows)
    }

    /// Whether the ergonomic API raises for timing mistakes (see
    /// `SpanUsageWarning`).
    #[getter]
    fn strict(&self) -> bool {
        self.strict
    }

    fn __repr__(&self) -> String {
        format!("Registry(len={})", self.core.len())
    }
}

/// `Registry.event(message, /, *, target=None, level=None, parent=CURRENT, **fields)`.
pub(crate) struct EventMethod;

impl FastMethod for EventMethod {
    const NAME: &'static CStr = c"event";
    const QUALNAME: &'static str = "Registry.event";
    const DOC: &'static CStr =
        c"event($self, message, /, *, target=None, level=None, parent=..., **fields)
--

Emits an event: a point in time that layers' `on_event` sees.";

    type Class = PyRegistry;

    fn call<'py>(
        slf: &Bound<'py, PyRegistry>,
        args: &Args<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let message = str_arg(args, "message")?;
        let span_args = args::from_keywords(args, slf.get(), false)?;
        slf.get().emit(slf.py(), &message, span_args)?;
        Ok(slf.py().None().into_bound(slf.py()))
    }
}

/// `Registry.record(id, /, **fields)`.
pub(crate) struct RecordMethod;

impl FastMethod for RecordMethod {
    const NAME: &'static CStr = c"record";
    const QUALNAME: &'static str = "Registry.record";
    const DOC: &'static CStr = c"record($self, id, /, **fields)
--

Records (adds or replaces) fields on a live span.";

    type Class = PyRegistry;

    fn call<'py>(
        slf: &Bound<'py, PyRegistry>,
        args: &Args<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let [id] = args.positional(["id"])?;
        let id = convert::span_id(&id)?;
        let values = convert::fields_from_items(
            args.keywords()
                .map(|(k, v)| (k.to_owned().into_any(), v.to_owned())),
        )?;
        slf.get().record_id(slf.py(), id, values)?;
        Ok(slf.py().None().into_bound(slf.py()))
    }
}

/// `Registry.span(name, /, *, target=None, level=None, parent=CURRENT, **fields)`:
/// a method of `Registry`, defined with the handles it makes.
pub(crate) struct RegistrySpanMethod;

impl FastMethod for RegistrySpanMethod {
    const NAME: &'static CStr = c"span";
    const QUALNAME: &'static str = "Registry.span";
    const DOC: &'static CStr =
        c"span($self, name, /, *, target=None, level=None, parent=..., **fields)
--

Creates a span and returns a handle owning its one reference (or the
disabled span, if the filter turns it away).";

    type Class = PyRegistry;

    fn call<'py>(
        slf: &Bound<'py, PyRegistry>,
        args: &Args<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = str_arg(args, "name")?;
        let span_args = args::from_keywords(args, slf.get(), true)?;
        Ok(Span::make(slf, &name, span_args, true)?.into_any())
    }

    /// A well-formed call whose level no directive can enable: the disabled
    /// span, having read only the level (and checked the name and target
    /// types, which the full call reports).
    fn refuse<'py>(
        slf: &Bound<'py, PyRegistry>,
        args: &Args<'_, 'py>,
    ) -> Option<Bound<'py, PyAny>> {
        let py = slf.py();
        let filter = slf.get().filter.as_ref()?;
        let mut positional = args.positional_values();
        if positional.len() != 1 || !positional.next()?.is_instance_of::<PyString>() {
            return None;
        }
        let mut level = Level::Info;
        for (key, value) in args.keywords() {
            if is_keyword_quick(key, intern!(py, "level"), c"level") {
                if !value.is_none() {
                    level = convert::level_by_identity(value)?;
                }
            } else if is_keyword_quick(key, intern!(py, "target"), c"target")
                && !(value.is_none() || value.is_instance_of::<PyString>())
            {
                return None;
            }
        }
        if filter.could_enable(level) {
            return None;
        }
        Some(Span::disabled_span_if_made(py)?.into_any())
    }
}
