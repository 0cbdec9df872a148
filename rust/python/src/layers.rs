//! Layers: Python objects that see each step of a span's life.
//!
//! A layer may define any of `on_new_span(span)`, `on_record(span, values)`,
//! `on_follows_from(span, follows_id)`, `on_event(event)`, `on_enter(span)`,
//! `on_exit(span)`, `on_end(span)` and `on_close(span)`, where `span` is a
//! `SpanRef`. `on_end` comes once per span, at its end (R14: the end of the
//! block or the release of the handle that made it), before `on_close`,
//! which comes with its last reference. The
//! methods are looked up once, when the layer is added. A layer that raises
//! never breaks the caller nor the registry: the exception goes to
//! `sys.unraisablehook` (pytest reports it) and `Registry.layer_errors`
//! counts it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use pykregistry_core::{Id, SpanData, TraceParent, WeakRegistry};
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::{BoundObject, PyTraverseError, PyVisit};

use crate::event::Event;
use crate::ext::SpanExt;
use crate::live::Live;
use crate::tracks::Track;

/// The core registry as the bindings use it: its hooks are the layers.
pub(crate) type Core = pykregistry_core::Registry<Layers>;

/// Releases a reference this crate holds (a handle's or a stack entry's).
/// Layer failures during the close are reported by the layers; a core error
/// here would be a bookkeeping bug.
pub(crate) fn release(core: &Core, id: Id) {
    // An error means Python code released this reference already (an extra
    // `try_close` on the ID): the count is already right, so ignore it.
    let _ = core.try_close(id);
}

/// A native layer that writes spans and events somewhere (JSON lines, an
/// exporter): handed to [`Layers::add`] beside its Python object, and
/// written to directly, with no Python object made.
pub(crate) trait Sink: Send + Sync {
    /// Whether it writes events (spans it always writes).
    fn writes_events(&self) -> bool;
    /// R14: a span at its end; its timings are final. `core` is its
    /// registry (the span's parent, if any, is still in it).
    fn write_span(&self, core: &Core, id: Id, span: &SpanData<SpanExt>);
    /// An event.
    fn write_event(&self, py: Python<'_>, event: &Event);
    /// R10: `span` follows from the span named `follows` (R13).
    fn write_follows_from(&self, span: &SpanData<SpanExt>, follows: TraceParent) {
        let _ = (span, follows);
    }
    /// Whether it needs each span's task (`SpanExt::task`) and the
    /// calling track of events: the current task is looked up only then.
    fn wants_tracks(&self) -> bool {
        false
    }
    /// Whether it draws busy intervals: [`Sink::enter`] and [`Sink::exit`]
    /// are called only then.
    fn wants_intervals(&self) -> bool {
        false
    }
    /// R5: context `owner` entered span `id` on `track`, at `at` (ns since
    /// the epoch).
    fn enter(&self, interval: Interval<'_>, track: &Track) {
        let _ = (interval, track);
    }
    /// The entry of span `id` that context `owner` made stopped counting
    /// (exited, or its context ended, R11), at `at`.
    fn exit(&self, interval: Interval<'_>) {
        let _ = interval;
    }
}

/// A span's busy interval starting or ending, as [`Sink::enter`] and
/// [`Sink::exit`] see it.
#[derive(Clone, Copy)]
pub(crate) struct Interval<'a> {
    pub(crate) core: &'a Core,
    pub(crate) id: Id,
    pub(crate) span: &'a SpanData<SpanExt>,
    /// The serial of the context that made the entry.
    pub(crate) owner: u64,
    /// Wall-clock time, ns since the epoch.
    pub(crate) at: u64,
}

/// The lifecycle steps a layer can hook.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    NewSpan,
    Record,
    FollowsFrom,
    Event,
    Enter,
    Exit,
    End,
    Close,
}

const STEPS: [(Step, &str); 8] = [
    (Step::NewSpan, "on_new_span"),
    (Step::Record, "on_record"),
    (Step::FollowsFrom, "on_follows_from"),
    (Step::Event, "on_event"),
    (Step::Enter, "on_enter"),
    (Step::Exit, "on_exit"),
    (Step::End, "on_end"),
    (Step::Close, "on_close"),
];

struct Layer {
    object: Py<PyAny>,
    methods: [Option<Py<PyAny>>; 8],
}

/// The registry's layers, as the core's [`Hooks`].
#[derive(Default)]
pub(crate) struct Layers {
    list: RwLock<Arc<Vec<Layer>>>,
    /// Per step, whether any Python layer hooks it: the fast path checks
    /// only this.
    hooked: [AtomicBool; 8],
    errors: AtomicU64,
    /// The built-in native layers (`JsonLines`), written to without any
    /// Python object; also in `list`, so `Registry.layers` shows them.
    sinks: RwLock<Arc<Vec<Arc<dyn Sink>>>>,
    /// Whether `sinks` has any sink, and any that writes events.
    sinks_on: AtomicBool,
    sink_events: AtomicBool,
    /// Whether any sink wants tracks, and any draws busy intervals.
    tracks_on: AtomicBool,
    intervals_on: AtomicBool,
    /// The registry's open spans.
    live: Live,
    /// The registry these are the hooks of ([`Layers::bind`]): what a
    /// closing span's view is made from.
    registry: std::sync::OnceLock<WeakRegistry<Layers>>,
}

impl Layers {
    /// Adds a layer: its Python object, whose hooks it looks up now, and,
    /// for a native layer, the sink it writes through.
    pub(crate) fn add(
        &self,
        object: &Bound<'_, PyAny>,
        sink: Option<Arc<dyn Sink>>,
    ) -> PyResult<()> {
        let mut methods: [Option<Py<PyAny>>; 8] = Default::default();
        for (i, (_, name)) in STEPS.iter().enumerate() {
            if let Some(m) = object.getattr_opt(*name)? {
                if !m.is_callable() {
                    return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                        "layer attribute {name} must be callable"
                    )));
                }
                methods[i] = Some(m.unbind());
            }
        }
        if let Some(sink) = sink {
            let mut sinks = self.sinks.write().unwrap_or_else(PoisonError::into_inner);
            let mut next: Vec<Arc<dyn Sink>> = sinks.iter().cloned().collect();
            if sink.writes_events() {
                self.sink_events.store(true, Ordering::Release);
            }
            if sink.wants_tracks() {
                self.tracks_on.store(true, Ordering::Release);
            }
            if sink.wants_intervals() {
                self.intervals_on.store(true, Ordering::Release);
            }
            next.push(sink);
            *sinks = Arc::new(next);
            self.sinks_on.store(true, Ordering::Release);
        }
        let mut layers = self.list.write().unwrap_or_else(PoisonError::into_inner);
        let mut next: Vec<Layer> = layers
            .iter()
            .map(|l| Layer {
                object: l.object.clone_ref(object.py()),
                methods: l
                    .methods
                    .each_ref()
                    .map(|m| m.as_ref().map(|m| m.clone_ref(object.py()))),
            })
            .collect();
        for (i, m) in methods.iter().enumerate() {
            if m.is_some() {
                self.hooked[i].store(true, Ordering::Release);
            }
        }
        next.push(Layer {
            object: object.clone().unbind(),
            methods,
        });
        *layers = Arc::new(next);
        Ok(())
    }

    /// Visits every layer and hook for the garbage collector, so that a
    /// layer holding its registry (a cycle) can be collected.
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        // `add` and `clear` hold the lock only while swapping lists, never
        // across Python code, so it is free whenever the collector runs; if
        // it were not, skipping one pass would only delay a collection.
        let Ok(list) = self.list.try_read() else {
            return Ok(());
        };
        for layer in list.iter() {
            visit.call(&layer.object)?;
            for method in layer.methods.iter().flatten() {
                visit.call(method)?;
            }
        }
        Ok(())
    }

    /// Removes every layer: the garbage collector breaking a cycle.
    pub(crate) fn clear(&self) {
        let old = std::mem::take(&mut *self.list.write().unwrap_or_else(PoisonError::into_inner));
        for hooked in &self.hooked {
            hooked.store(false, Ordering::Release);
        }
        self.sinks_on.store(false, Ordering::Release);
        self.sink_events.store(false, Ordering::Release);
        self.tracks_on.store(false, Ordering::Release);
        self.intervals_on.store(false, Ordering::Release);
        std::mem::take(&mut *self.sinks.write().unwrap_or_else(PoisonError::into_inner));
        // Dropped with the lock released: a layer's `__del__` may add one.
        drop(old);
    }

    pub(crate) fn objects<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyAny>> {
        let layers = Arc::clone(&self.list.read().unwrap_or_else(PoisonError::into_inner));
        layers.iter().map(|l| l.object.bind(py).clone()).collect()
    }

    /// Tells the hooks which registry they serve; once, as it is made.
    pub(crate) fn bind(&self, core: &Core) {
        let _ = self.registry.set(core.downgrade());
    }

    /// The registry's open spans.
    pub(crate) fn live(&self) -> &Live {
        &self.live
    }

    #[inline]
    pub(crate) fn hooks(&self, step: Step) -> bool {
        self.hooked[step as usize].load(Ordering::Acquire)
    }

    /// Whether a built-in layer writes events.
    #[inline]
    pub(crate) fn sinks_want_events(&self) -> bool {
        self.sink_events.load(Ordering::Acquire)
    }

    /// Whether a built-in layer needs tracks (see [`Sink::wants_tracks`]).
    #[inline]
    pub(crate) fn wants_tracks(&self) -> bool {
        self.tracks_on.load(Ordering::Acquire)
    }

    /// Whether a built-in layer draws busy intervals.
    #[inline]
    pub(crate) fn wants_intervals(&self) -> bool {
        self.intervals_on.load(Ordering::Acquire)
    }

    /// R5: a busy interval starts on `track`: the sinks that draw them see it.
    pub(crate) fn enter_interval(&self, interval: Interval<'_>, track: &Track) {
        let sinks = Arc::clone(&self.sinks.read().unwrap_or_else(PoisonError::into_inner));
        for sink in sinks.iter().filter(|s| s.wants_intervals()) {
            sink.enter(interval, track);
        }
    }

    /// A busy interval ends.
    pub(crate) fn exit_interval(&self, interval: Interval<'_>) {
        let sinks = Arc::clone(&self.sinks.read().unwrap_or_else(PoisonError::into_inner));
        for sink in sinks.iter().filter(|s| s.wants_intervals()) {
            sink.exit(interval);
        }
    }

    /// Hands an event to the built-in layers that write events.
    pub(crate) fn write_event(&self, py: Python<'_>, event: &Event) {
        if !self.sinks_want_events() {
            return;
        }
        let sinks = Arc::clone(&self.sinks.read().unwrap_or_else(PoisonError::into_inner));
        for sink in sinks.iter().filter(|s| s.writes_events()) {
            sink.write_event(py, event);
        }
    }

    /// Tells the built-in layers that `span` follows from `follows`.
    pub(crate) fn write_follows_from(&self, span: &SpanData<SpanExt>, follows: TraceParent) {
        if !self.sinks_on.load(Ordering::Acquire) {
            return;
        }
        let sinks = Arc::clone(&self.sinks.read().unwrap_or_else(PoisonError::into_inner));
        for sink in sinks.iter() {
            sink.write_follows_from(span, follows);
        }
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Calls every layer's hook for `step` with the arguments `args()` makes
    /// (made once, and only if some layer hooks the step).
    pub(crate) fn dispatch<'py, A>(
        &self,
        py: Python<'py>,
        step: Step,
        args: impl FnOnce() -> PyResult<A>,
    ) where
        A: IntoPyObject<'py, Target = pyo3::types::PyTuple>,
        PyErr: From<A::Error>,
    {
        if !self.hooks(step) {
            return;
        }
        let layers = Arc::clone(&self.list.read().unwrap_or_else(PoisonError::into_inner));
        let args = match args().and_then(|a| Ok(a.into_pyobject(py)?.into_bound())) {
            Ok(a) => a,
            Err(e) => return self.failed(py, e, None),
        };
        for layer in layers.iter() {
            if let Some(method) = &layer.methods[step as usize] {
                if let Err(e) = method.bind(py).call1(args.clone()) {
                    self.failed(py, e, Some(layer.object.bind(py)));
                }
            }
        }
    }

    /// R14: a span at its end: the sinks write it.
    pub(crate) fn write_span(&self, core: &Core, id: Id, span: &SpanData<SpanExt>) {
        if self.sinks_on.load(Ordering::Acquire) {
            let sinks = Arc::clone(&self.sinks.read().unwrap_or_else(PoisonError::into_inner));
            for sink in sinks.iter() {
                sink.write_span(core, id, span);
            }
        }
    }

    /// The registry these are the hooks of, while it lives.
    pub(crate) fn registry(&self) -> Option<Core> {
        self.registry.get().and_then(WeakRegistry::upgrade)
    }

    fn failed(&self, py: Python<'_>, err: PyErr, layer: Option<&Bound<'_, PyAny>>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
            interrupted(err);
        } else {
            err.write_unraisable(py, layer);
        }
    }
}

/// A `KeyboardInterrupt` or `SystemExit` a layer raised, on its way to the
/// program (R15: never swallowed, not even in a layer).
static INTERRUPT: Mutex<Option<PyErr>> = Mutex::new(None);

/// Whether [`INTERRUPT`] may hold one: the hot path reads only this.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Keeps `err` for [`raise_interrupt`], which the API call that ran the
/// layer calls as it returns; if nothing does (a handle collected by the
/// garbage collector), the interpreter raises it at its next check for
/// signals, in the main thread.
fn interrupted(err: PyErr) {
    let first = {
        let mut slot = INTERRUPT.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            Some(err) // one is enough: drop this one outside the lock
        } else {
            *slot = Some(err);
            INTERRUPTED.store(true, Ordering::Release);
            None
        }
    };
    if first.is_none() {
        // SAFETY: called with the GIL held; the callback takes no argument.
        unsafe { ffi::Py_AddPendingCall(Some(raise_pending), std::ptr::null_mut()) };
    }
    drop(first);
}

/// The interrupt a layer raised during the current call, if any.
#[inline]
pub(crate) fn raise_interrupt() -> PyResult<()> {
    if !INTERRUPTED.load(Ordering::Acquire) {
        return Ok(());
    }
    let err = {
        let mut slot = INTERRUPT.lock().unwrap_or_else(PoisonError::into_inner);
        INTERRUPTED.store(false, Ordering::Release);
        slot.take()
    };
    err.map_or(Ok(()), Err)
}

extern "C" fn raise_pending(_arg: *mut std::ffi::c_void) -> std::ffi::c_int {
    // Pending calls run in the main thread, attached, between bytecodes.
    match raise_interrupt() {
        Ok(()) => 0,
        Err(err) => {
            // SAFETY: the interpreter runs pending calls with the GIL held.
            err.restore(unsafe { Python::assume_attached() });
            -1
        }
    }
}
