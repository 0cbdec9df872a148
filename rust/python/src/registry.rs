//! `pykregistry.Registry`: the integer-ID API of SPEC section 4.

use pykregistry_core::{Admission, Attrs, Fields, Filter, Id, Level, Op, Parent};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::context;
use crate::convert;
use crate::errors::RegistryError;
use crate::event::Event;
use crate::layers::Step;
use crate::propagation::RemoteParent;
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

/// The keyword arguments shared by `new_span`, `span` and `event`, read by
/// `args`.
pub(crate) struct SpanArgs<'py> {
    pub(crate) target: Option<Bound<'py, PyString>>,
    pub(crate) level: Level,
    pub(crate) parent: ParentArg<'py>,
    pub(crate) fields: RawFields<'py>,
}

/// A `parent=` argument, classified (`args::parent`).
pub(crate) enum ParentArg<'py> {
    /// `CURRENT`, or no `parent=`: the calling context's current span.
    Current,
    /// `None`, or the disabled span: a root.
    Root,
    /// A span of this registry: its ID, `Span` or `SpanRef`.
    Explicit(Id),
    /// W3C trace context: a span of another process is no parent here; the
    /// new span is a root that continues its trace.
    Remote(Bound<'py, RemoteParent>),
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

/// The ID a parent choice names, if any.
fn parent_id(parent: Parent) -> Option<Id> {
    match parent {
        Parent::Root | Parent::Contextual(None) => None,
        Parent::Contextual(Some(id)) | Parent::Explicit(id) => Some(id),
    }
}

impl PyRegistry {
    /// `pykregistry.default_registry()`, looked up in `pykregistry._default`,
    /// the small module under the ergonomic layer that holds it.
    pub(crate) fn default_registry(py: Python<'_>) -> PyResult<Bound<'_, PyRegistry>> {
        Ok(py
            .import(pyo3::intern!(py, "pykregistry._default"))?
            .getattr(pyo3::intern!(py, "default_registry"))?
            .call0()?
            .cast_into::<PyRegistry>()?)
    }

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

    /// Whether the filter turns a span of `level` away whatever its target,
    /// name, fields and parent (only when `filtered`: the integer-ID API
    /// creates unfiltered).
    pub(crate) fn refuses(&self, level: Level, filtered: bool) -> bool {
        filtered && self.filter.as_ref().is_some_and(|f| !f.could_enable(level))
    }

    /// The parent a new span gets, and, when it is the current span, the
    /// identity of that span and of another tracer's span current above it
    /// (`contextual`, see [`context::current`]). `ergonomic`: see
    /// [`Self::create`].
    fn parent(
        &self,
        py: Python<'_>,
        arg: &ParentArg<'_>,
        ergonomic: bool,
        contextual: &mut context::Contextual,
    ) -> PyResult<Parent> {
        let parent = match *arg {
            ParentArg::Root | ParentArg::Remote(_) => Parent::Root,
            ParentArg::Explicit(id) => Parent::Explicit(id),
            ParentArg::Current => {
                *contextual = context::current(py, &self.core)?;
                Parent::Contextual(contextual.id)
            }
        };
        if let Parent::Explicit(p) = parent {
            // R15: the ergonomic API makes a child of a parent that closed a
            // root of a new trace, with a warning (or raises, if strict).
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
        if self.refuses(args.level, filtered) {
            return Ok(None);
        }
        let target = args.target.or_else(|| caller_module(py));
        let target = match &target {
            Some(t) => t.to_str()?,
            None => "",
        };
        let mut contextual = context::Contextual::default();
        let remote = match &args.parent {
            ParentArg::Remote(remote) => Some(remote),
            _ => None,
        };
        let mut parent_of = || self.parent(py, &args.parent, ergonomic, &mut contextual);
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
            trace_parent: contextual.trace,
            remote_parent: remote.map(|r| &r.get().0),
            foreign_parent: contextual.foreign.as_ref(),
        };
        let live = self.core.hooks().live();
        let thread_id = crate::tracks::thread_ident();
        let task = if self.core.hooks().wants_tracks() {
            crate::tracks::current(py).task
        } else {
            None
        };
        let at = live.reserve();
        let made = self.core.new_span(&attrs, parent, move |f, ext| {
            *f = fields;
            ext.start(scope, thread_id, task);
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
    pub(crate) fn emit(
        &self,
        py: Python<'_>,
        message: &Bound<'_, PyString>,
        args: SpanArgs<'_>,
    ) -> PyResult<()> {
        let hooks = self.core.hooks();
        let wanted = hooks.hooks(Step::Event) || hooks.sinks_want_events();
        let current = || -> PyResult<Option<Id>> {
            if wanted {
                Ok(context::current(py, &self.core)?.id)
            } else {
                Ok(None)
            }
        };
        // W3C trace context: an event under a remote parent has no parent
        // here, and that span's identity.
        let (parent, remote) = match args.parent {
            ParentArg::Current => (Parent::Contextual(current()?), None),
            ParentArg::Root => (Parent::Root, None),
            ParentArg::Explicit(id) => (Parent::Explicit(id), None),
            ParentArg::Remote(remote) => (Parent::Root, Some(remote)),
        };
        let parent = match parent {
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
        // Its time, once for every layer and sink: in a live parent, on
        // the parent's clock (its start plus its life so far), so that it
        // always falls inside the span's own start and end.
        let (trace, time_ns) = match remote {
            Some(r) => (Some(r.get().0.trace_parent), None),
            None => match parent.and_then(|p| self.core.get(p)) {
                Some(span) => {
                    let t = span.ext().timings();
                    let within = t
                        .end_time_ns
                        .is_none()
                        .then(|| t.start_time_ns.saturating_add(t.busy_ns + t.idle_ns));
                    (Some(span.as_trace_parent()), within)
                }
                None => (None, None),
            },
        };
        let event = Event {
            message: message.clone().unbind(),
            level: args.level,
            target,
            parent_id: parent,
            trace,
            fields: convert::fields_from_items(args.fields)?,
            time_ns: time_ns.unwrap_or_else(|| crate::ext::wall(crate::ext::now())),
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
