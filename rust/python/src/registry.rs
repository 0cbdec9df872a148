//! `pykregistry.Registry`: the integer-ID API of SPEC section 4.

use std::ffi::CStr;

use pykregistry_core::{Admission, Attrs, Fields, Filter, Id, Level, Op, Parent};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::context;
use crate::convert::{self, ParentArg};
use crate::errors::RegistryError;
use crate::event::Event;
use crate::fastcall::{is_keyword, Args, FastMethod};
use crate::layers::{Layers, Step};
use crate::span_ref::SpanRef;

pub(crate) use crate::layers::{release, Core};

/// A span registry: spans, their reference counts, one stack of entered
/// spans per thread and asyncio task, and the layers that see it all.
#[pyclass(name = "Registry", module = "pykregistry", frozen)]
pub(crate) struct PyRegistry {
    pub(crate) core: Core,
    /// `None`: everything is enabled.
    pub(crate) filter: Option<Filter>,
    /// R15: whether the ergonomic API raises for timing mistakes (a closed
    /// handle or parent) instead of warning.
    pub(crate) strict: bool,
}

/// Field arguments as given: `(name, value)` pairs, converted only once a
/// span is let through (a filtered-out span never reads its values).
pub(crate) type RawFields<'py> = Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>;

/// The keyword arguments shared by `new_span`, `span` and `event`.
pub(crate) struct SpanArgs<'py> {
    pub(crate) target: Option<Bound<'py, PyString>>,
    pub(crate) level: Level,
    pub(crate) parent: Option<Bound<'py, PyAny>>,
    pub(crate) fields: RawFields<'py>,
}

impl<'py> SpanArgs<'py> {
    /// The arguments as pyo3 extracted them (`new_span`: fields in a dict).
    fn new(
        target: Option<Bound<'py, PyString>>,
        level: Option<&Bound<'py, PyAny>>,
        parent: ParentArg<'py>,
        fields: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Self> {
        Ok(SpanArgs {
            target,
            level: level.map_or(Ok(Level::Info), convert::level)?,
            parent: parent.0,
            fields: fields.map(|f| f.iter().collect()).unwrap_or_default(),
        })
    }

    /// `target=`, `level=` and `parent=` from a vectorcall's keywords; every
    /// other keyword is a field.
    pub(crate) fn from_keywords(args: &Args<'_, 'py>) -> PyResult<Self> {
        let mut out = SpanArgs {
            target: None,
            level: Level::Info,
            parent: None,
            fields: Vec::new(),
        };
        for (key, value) in args.keywords() {
            let py = key.py();
            if is_keyword(key, intern!(py, "level"), "level")? {
                if !value.is_none() {
                    out.level = convert::level(&value)?;
                }
            } else if is_keyword(key, intern!(py, "target"), "target")? {
                if !value.is_none() {
                    let target = value.cast::<PyString>().map_err(|_| {
                        PyTypeError::new_err(format!(
                            "{}(): target is a str, not {}",
                            args.method(),
                            convert::type_name(&value)
                        ))
                    })?;
                    out.target = Some(target.to_owned());
                }
            } else if is_keyword(key, intern!(py, "parent"), "parent")? {
                out.parent = Some(value.to_owned());
            } else {
                out.fields
                    .push((key.to_owned().into_any(), value.to_owned()));
            }
        }
        Ok(out)
    }
}

/// The first positional argument of `span`/`event`, which must be a str.
pub(crate) fn str_arg<'py>(args: &Args<'_, 'py>, what: &str) -> PyResult<Bound<'py, PyString>> {
    let [arg] = args.positional([what])?;
    arg.cast::<PyString>().map(Borrowed::to_owned).map_err(|_| {
        PyTypeError::new_err(format!(
            "{}(): {what} is a str, not {}",
            args.method(),
            convert::type_name(&arg)
        ))
    })
}

/// The calling frame's module name: the default target, as `tracing` uses
/// `module_path!()`.
fn caller_module(py: Python<'_>) -> Option<Bound<'_, PyString>> {
    // SAFETY: a borrowed reference to the running frame's globals, or NULL.
    let globals = unsafe { pyo3::ffi::PyEval_GetGlobals() };
    if globals.is_null() {
        return None;
    }
    // SAFETY: borrowed from the running frame, which outlives this call.
    let globals = unsafe { Bound::from_borrowed_ptr(py, globals) };
    let globals = globals.cast::<PyDict>().ok()?;
    globals
        .get_item(pyo3::intern!(py, "__name__"))
        .ok()
        .flatten()?
        .cast_into::<PyString>()
        .ok()
}

/// The sink a native layer writes through, if `layer` is one.
fn sink_of(layer: &Bound<'_, PyAny>) -> Option<std::sync::Arc<dyn crate::layers::Sink>> {
    if let Ok(otlp) = layer.cast::<crate::otlp::OtlpExporter>() {
        return Some(otlp.get().sink.clone());
    }
    let json = layer.cast::<crate::jsonlines::JsonLines>().ok()?;
    Some(json.get().sink.clone())
}

/// The ID a parent choice names, if any.
fn parent_id(parent: Parent) -> Option<Id> {
    match parent {
        Parent::Root | Parent::Contextual(None) => None,
        Parent::Contextual(Some(id)) | Parent::Explicit(id) => Some(id),
    }
}

impl PyRegistry {
    /// The span-directive level a new span or event under `parent` inherits.
    fn scope_of(&self, parent: Option<Id>) -> Option<Level> {
        self.core.get(parent?)?.ext().scope
    }

    /// The filter's decision (`Filter::admit`) for a span or event under
    /// `parent`; everything passes without a filter.
    fn admit<V: std::borrow::Borrow<pykregistry_core::Value>>(
        &self,
        level: Level,
        target: &str,
        parent: Option<Id>,
        span: Option<(&str, pykregistry_core::FieldLookup<'_, V>)>,
    ) -> Admission {
        self.filter.as_ref().map_or(Admission::ALL, |f| {
            f.admit(level, target, || self.scope_of(parent), span)
        })
    }

    /// Creates a span from parsed arguments; the caller owns its reference.
    /// `None` when `filtered` and the filter turns it away (nothing is then
    /// created). The integer-ID API creates unfiltered: it is the
    /// `tracing-core`-shaped layer under the filters, as `Subscriber::new_span`
    /// is only called once a call site is enabled; its callers ask `enabled()`.
    /// `ergonomic`: a closed explicit parent warns and makes a root (R15)
    /// instead of raising, as the integer-ID API does.
    pub(crate) fn create(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        args: SpanArgs<'_>,
        filtered: bool,
        ergonomic: bool,
    ) -> PyResult<Option<Id>> {
        // The cheapest refusal first, on the level alone: no caller lookup,
        // no field conversion, no parent lookup, no context read.
        let filter = self.filter.as_ref().filter(|_| filtered);
        if filter.is_some_and(|f| !f.could_enable(args.level)) {
            return Ok(None);
        }
        let target = args.target.or_else(|| caller_module(py));
        let target = match &target {
            Some(t) => t.to_str()?,
            None => "",
        };
        let mut trace_parent = None;
        // W3C trace context: a span of another process is no parent here;
        // the new span is a root that continues its trace.
        let remote = crate::propagation::remote(args.parent.as_ref());
        let mut parent_of = || -> PyResult<Parent> {
            if remote.is_some() {
                return Ok(Parent::Root);
            }
            let parent = convert::parent(args.parent.as_ref(), self.core.uid(), || {
                let current = context::current(py, &self.core)?;
                trace_parent = current.trace;
                Ok(current.id)
            })?;
            if let Parent::Explicit(p) = parent {
                // R15: the ergonomic API makes a child of a parent that
                // closed a root of a new trace, with a warning (or raises,
                // if strict).
                if ergonomic && self.core.ref_count(p) == 0 {
                    crate::errors::misuse(
                        py,
                        self.strict,
                        RegistryError(pykregistry_core::Error::NotLive {
                            id: p.into_u64(),
                            op: Op::Parent,
                        })
                        .into(),
                    )?;
                    return Ok(Parent::Root);
                }
            }
            Ok(parent)
        };
        let name = name.to_str()?;
        // The filter decides once, before any field is converted: span
        // directives read the values they name (and the parent's scope), so
        // the parent is found first only then.
        let (parent, scope) = match &self.filter {
            None => (parent_of()?, None),
            Some(f) => {
                let parent = f.has_span_directives().then(&mut parent_of).transpose()?;
                let lookup = |n: &str| {
                    args.fields
                        .iter()
                        .find(|(k, _)| {
                            k.cast::<PyString>()
                                .is_ok_and(|k| k.to_str().ok() == Some(n))
                        })
                        .map(|(_, v)| convert::value(v))
                };
                let admission = self.admit(
                    args.level,
                    target,
                    parent.and_then(parent_id),
                    Some((name, &lookup)),
                );
                if filtered && !admission.enabled {
                    return Ok(None);
                }
                let parent = match parent {
                    Some(p) => p,
                    None => parent_of()?,
                };
                (parent, admission.scope)
            }
        };
        let fields = convert::fields_from_items(args.fields)?;
        let attrs = Attrs {
            name,
            target,
            level: args.level,
            metadata: None,
            trace_parent,
            remote_parent: remote.map(|r| &r.get().0),
        };
        let live = self.core.hooks().live();
        let at = live.reserve();
        let made = self.core.new_span(&attrs, parent, move |f, ext| {
            *f = fields;
            ext.start(scope);
            ext.live_at = at;
        });
        let id = match made {
            Ok(id) => {
                live.fill(at, id);
                id
            }
            Err(e) => {
                live.unreserve(at);
                return Err(RegistryError(e).into());
            }
        };
        self.core.hooks().dispatch(py, Step::NewSpan, || {
            Ok((Bound::new(py, SpanRef::new(self.core.clone(), id))?,))
        });
        if let Err(interrupt) = crate::layers::raise_interrupt() {
            // Nobody will hold the new span: it closes as it is refused.
            release(&self.core, id);
            return Err(interrupt);
        }
        Ok(Some(id))
    }

    /// `Registry.event`'s work. Without a layer to see it, an event only
    /// checks its parent: no context read, no caller lookup, no filter, and
    /// its field values are never read.
    fn emit(
        &self,
        py: Python<'_>,
        message: &Bound<'_, PyString>,
        args: SpanArgs<'_>,
    ) -> PyResult<()> {
        let hooks = self.core.hooks();
        let wanted = hooks.hooks(Step::Event) || hooks.sinks_want_events();
        let current = || {
            if wanted {
                Ok(context::current(py, &self.core)?.id)
            } else {
                Ok(None)
            }
        };
        // W3C trace context: an event under a remote parent has no parent
        // here, and that span's identity.
        let remote = crate::propagation::remote(args.parent.as_ref());
        let parent = match remote.map_or_else(
            || convert::parent(args.parent.as_ref(), self.core.uid(), current),
            |_| Ok(Parent::Root),
        )? {
            Parent::Root | Parent::Contextual(None) => None,
            Parent::Contextual(Some(id)) => Some(id),
            Parent::Explicit(id) => {
                self.core.live_slot(id, Op::Event).map_err(RegistryError)?;
                Some(id)
            }
        };
        if !wanted {
            return Ok(());
        }
        let target = match args.target {
            Some(t) => t.to_str()?.to_owned(),
            None => caller_module(py).map(|t| t.to_string()).unwrap_or_default(),
        };
        if !self
            .admit::<pykregistry_core::Value>(args.level, &target, parent, None)
            .enabled
        {
            return Ok(());
        }
        let event = Event {
            message: message.clone().unbind(),
            level: args.level,
            target,
            parent_id: parent,
            trace: match remote {
                Some(r) => Some(r.get().0.trace_parent),
                None => parent.and_then(|p| Some(self.core.get(p)?.as_trace_parent())),
            },
            fields: convert::fields_from_items(args.fields)?,
        };
        hooks.write_event(py, &event);
        hooks.dispatch(py, Step::Event, || Ok((Bound::new(py, event)?,)));
        crate::layers::raise_interrupt()
    }

    /// R5: enters `id` in the calling context; returns the entry made.
    pub(crate) fn enter_id<'py>(
        &self,
        py: Python<'py>,
        id: Id,
    ) -> PyResult<Bound<'py, context::Entry>> {
        let entry = context::enter(py, &self.core, id)?;
        self.core.hooks().dispatch(py, Step::Enter, || {
            Ok((Bound::new(py, SpanRef::new(self.core.clone(), id))?,))
        });
        if let Err(interrupt) = crate::layers::raise_interrupt() {
            // A failed `__enter__` gets no `__exit__`: undo the entry.
            if let Some(exited) = context::exit_entry(py, &entry) {
                exited.finish(py);
            }
            return Err(interrupt);
        }
        Ok(entry)
    }

    /// R5: `exit(id)` in the calling context.
    pub(crate) fn exit_id(&self, py: Python<'_>, id: Id) -> PyResult<()> {
        if let Some(exited) = context::exit_id(py, &self.core, id)? {
            self.exited(py, exited);
        }
        crate::layers::raise_interrupt()
    }

    /// Tells layers of an exit, then releases what the entry held: they
    /// see the exit before any close it causes, and can still read the span.
    pub(crate) fn exited(&self, py: Python<'_>, exited: context::Exited) {
        let hooks = self.core.hooks();
        if hooks.hooks(Step::Exit) {
            if let Some(id) = exited.span(py) {
                hooks.dispatch(py, Step::Exit, || {
                    Ok((Bound::new(py, SpanRef::new(self.core.clone(), id))?,))
                });
            }
        }
        exited.finish(py);
    }

    pub(crate) fn record_id(&self, py: Python<'_>, id: Id, values: Fields) -> PyResult<()> {
        let layers_want = self.core.hooks().hooks(Step::Record);
        let dict = if layers_want {
            Some(convert::fields_to_py(py, &values)?)
        } else {
            None
        };
        self.core
            .record(id, values.iter().map(|(k, v)| (&**k, v.clone())))
            .map_err(RegistryError)?;
        if let Some(dict) = dict {
            self.core.hooks().dispatch(py, Step::Record, || {
                Ok((Bound::new(py, SpanRef::new(self.core.clone(), id))?, dict))
            });
        }
        crate::layers::raise_interrupt()
    }

    pub(crate) fn follows_from_id(&self, py: Python<'_>, id: Id, follows: Id) -> PyResult<()> {
        let span = self
            .core
            .live_slot(id, Op::FollowsFrom)
            .map_err(RegistryError)?;
        if let Some(other) = self.core.get(follows) {
            self.core
                .hooks()
                .write_follows_from(&span, other.as_trace_parent());
        }
        drop(span);
        self.core.hooks().dispatch(py, Step::FollowsFrom, || {
            Ok((
                Bound::new(py, SpanRef::new(self.core.clone(), id))?,
                follows.into_u64(),
            ))
        });
        crate::layers::raise_interrupt()
    }
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

    #[pyo3(signature = (name, /, *, target = None, level = None, parent = ParentArg(None), fields = None))]
    fn new_span<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyString>,
        target: Option<Bound<'py, PyString>>,
        level: Option<&Bound<'py, PyAny>>,
        parent: ParentArg<'py>,
        fields: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<u64> {
        let fields = match fields {
            Some(f) if !f.is_none() => Some(
                f.cast::<PyDict>()
                    .map_err(|_| PyTypeError::new_err("fields must be a dict of str to values"))?,
            ),
            _ => None,
        };
        let args = SpanArgs::new(target, level, parent, fields)?;
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
        let span_args = SpanArgs::from_keywords(args)?;
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
