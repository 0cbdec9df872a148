//! Contexts: one stack of entered spans per thread and per asyncio task
//! (SPEC section 3, R5, R6, R9, R11).
//!
//! # The model
//!
//! Every registry keeps its stacks in one `contextvars.ContextVar`, shared
//! by all registries (P14: a variable set in a context can never be removed
//! from it, so one per registry would leak). Its value is the top [`Entry`]
//! of an immutable linked list. A copied context (an asyncio task, a
//! `call_soon` handle, `copy_context()`) shares the very same entries, and
//! the moment of a copy cannot be observed; so the stack must be right in
//! the variable at every moment, and an entry records who made it.
//!
//! - An entry's *owner* is the `contextvars.Context` that made it, told
//!   apart from later contexts at the same address through a weak
//!   reference ([`Owner`]). Only the owner's entries hold references: a
//!   copy sees what it inherited but keeps none of it alive (R5, R9).
//! - The first entry of a span by an owner holds one reference (`HELD`); a
//!   further entry of it while that one is unexited is a duplicate and
//!   holds none. Whether an owner holds a span is kept with the span
//!   ([`SpanExt::claim`](crate::ext::SpanExt)), so entering is O(1) in the
//!   depth of the stack (P13).
//! - Exiting marks the entry `EXITED` wherever it is seen, and releases its
//!   reference if it held one. A `with` block exits the very entry it made,
//!   from whatever context its exit runs in (a generator closed by another
//!   task). The variable is a view: entries the calling context exited are
//!   skipped when it is read, and trimmed off its top. So an update of the
//!   variable lost to a garbage-collection finalizer that ran in the middle
//!   of another enter or exit can hide an entry, but never resurrect one,
//!   nor change a count.
//! - When a context ends, the references its unexited entries hold are
//!   released (R11) by the weak reference's callback.
//! - A context's current span (R6) is its topmost entry that is not a
//!   duplicate nor an exit of its own. An inherited entry names its span by
//!   identity (span and trace id, R13): once that span has closed, or its
//!   entry was exited, it stops being current, but new spans there keep it
//!   as their parent in the trace.
//!
//! Nothing here uses `ContextVar.reset(token)`.
//!
//! # Concurrency
//!
//! The module is declared `gil_used`: every function here runs holding the
//! GIL, and the per-owner list ([`GilCell`]) is only touched in short
//! sections that run no Python code and drop no Python object.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};

use pykregistry_core::{Id, Op, RemoteParent, TraceParent};
use pyo3::ffi;
use pyo3::prelude::*;

use crate::errors::RegistryError;
use crate::gil::GilCell;
use crate::layers::{release, Core, Interval};
use crate::stack_var::{self, context_address};

/// The entry holds one reference on its span.
const HELD: u8 = 1;
/// The entry is the one its span records as held by its owner.
const PRIMARY: u8 = 2;
/// The entry was exited (or its owner ended): it no longer counts.
const EXITED: u8 = 4;
/// The entry is a duplicate: its owner held the span already.
const DUP: u8 = 8;

/// One entry of a context's stack: a span entered by one context.
///
/// Immutable but for its flags; shared by every context copied from the
/// one that pushed it.
#[pyclass(name = "_Entry", module = "pykregistry", frozen)]
pub(crate) struct Entry {
    core: Core,
    id: Id,
    span_id: u64,
    trace_id: u128,
    owner: Arc<Owner>,
    flags: AtomicU8,
    /// The entry below; an owned reference, set once before the entry is
    /// published (so that nothing runs between reading the stack and
    /// pushing on it).
    next: AtomicPtr<ffi::PyObject>,
    /// A copy made when another context removed an entry below it from
    /// its own view: its state lives in the original.
    alias: Option<Py<Entry>>,
    /// The entry the same guard (`Span` or `Entered`) made before this
    /// one and has not exited yet; an owned reference or null.
    pub(crate) guard_prev: AtomicPtr<ffi::PyObject>,
    /// Set on an entry of another tracer's context (see [`enter_foreign`]);
    /// its `id` then names no span.
    foreign: Option<Box<Foreign>>,
}

/// What an entry of another tracer's context carries: OpenTelemetry's
/// `Context` object as it was attached, and the span current in it.
struct Foreign {
    context: Py<PyAny>,
    span: Option<RemoteParent>,
}

/// A `contextvars.Context` that has made entries.
pub(crate) struct Owner {
    serial: u64,
    /// The context's address; meaningful only while `alive`.
    ctx: usize,
    /// Cleared by the weak reference's callback when the context ends.
    alive: AtomicBool,
    /// The weak reference to the context, whose callback ends the owner.
    weak: Option<Py<PyAny>>,
    /// The owner's entries that hold a reference.
    held: GilCell<Vec<Py<Entry>>>,
}

/// `a.swap(new)` for a pointer only touched holding the GIL: a load and a
/// store, which no other thread can come between (the module is
/// `gil_used`), without the bus lock that `swap` takes.
#[inline]
fn gil_swap(a: &AtomicPtr<ffi::PyObject>, new: *mut ffi::PyObject) -> *mut ffi::PyObject {
    let old = a.load(Ordering::Relaxed);
    a.store(new, Ordering::Relaxed);
    old
}

/// `flags.fetch_or(bits)` for flags only touched holding the GIL; see
/// [`gil_swap`].
#[inline]
fn gil_set(flags: &AtomicU8, bits: u8) -> u8 {
    let old = flags.load(Ordering::Relaxed);
    flags.store(old | bits, Ordering::Relaxed);
    old
}

/// The callback of an owner's weak reference: the context ended.
#[pyclass(name = "_ContextEnd", module = "pykregistry", frozen)]
struct ContextEnd {
    owner: Weak<Owner>,
}

/// Where a new span's contextual parent comes from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Contextual {
    /// The registry parent: the current span, if it is live.
    pub(crate) id: Option<Id>,
    /// The current entry's span by identity, live or not (R13).
    pub(crate) trace: Option<TraceParent>,
    /// Another tracer's span current above the current span (see
    /// [`enter_foreign`]): the parent in the trace of a span made here.
    pub(crate) foreign: Option<RemoteParent>,
}

static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// Every context that has made entries and has not ended, by address.
static OWNERS: GilCell<Option<HashMap<usize, Arc<Owner>>>> = GilCell(RefCell::new(None));

thread_local! {
    /// The owner this thread used last: most calls come from the context
    /// that made the previous entry.
    static LAST_OWNER: RefCell<Weak<Owner>> = const { RefCell::new(Weak::new()) };
    /// Entries waiting to be dropped by an outer `Entry::drop` on this
    /// thread, so that freeing a deep stack is a loop, not a recursion.
    static DEFERRED: RefCell<Option<Vec<*mut ffi::PyObject>>> = const { RefCell::new(None) };
}

// === the view ===

/// The top of the calling context's stack. Anything but an `Entry` in the
/// variable (it can be reached, and set, through `copy_context()`) reads
/// as the empty stack.
fn top(py: Python<'_>) -> PyResult<Option<Bound<'_, Entry>>> {
    Ok(stack_var::get(py)?.and_then(|v| v.cast_into::<Entry>().ok()))
}

/// Sets the calling context's view of its stack (see [`stack_var::set`]).
fn set_top(py: Python<'_>, top: Option<&Bound<'_, Entry>>) -> PyResult<()> {
    stack_var::set(py, top.map(Bound::as_any))
}

// === impl Owner ===

impl Owner {
    fn is(&self, ctx: usize) -> bool {
        self.ctx == ctx && self.alive.load(Ordering::Relaxed)
    }

    /// The calling context's owner, made on its first entry.
    fn calling(py: Python<'_>) -> PyResult<Arc<Owner>> {
        let ctx = context_address();
        let cached = LAST_OWNER
            .try_with(|last| last.borrow().upgrade().filter(|o| o.is(ctx)))
            .ok()
            .flatten();
        if let Some(owner) = cached {
            return Ok(owner);
        }
        if ctx == 0 {
            // The thread has not touched a context variable yet: copying
            // the current context makes its own, as setting one would.
            // SAFETY: a new reference or NULL with an exception set.
            drop(unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent())? });
            if context_address() == 0 {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "pykregistry: this thread has no context",
                ));
            }
            return Self::calling(py);
        }
        let known = OWNERS
            .0
            .borrow()
            .as_ref()
            .and_then(|owners| owners.get(&ctx).filter(|o| o.is(ctx)).cloned());
        let owner = if let Some(owner) = known {
            owner
        } else {
            let owner = Self::new(py, ctx)?;
            let old = OWNERS
                .0
                .borrow_mut()
                .get_or_insert_with(HashMap::new)
                .insert(ctx, Arc::clone(&owner));
            drop(old);
            owner
        };
        let _ = LAST_OWNER.try_with(|last| *last.borrow_mut() = Arc::downgrade(&owner));
        Ok(owner)
    }

    fn new(py: Python<'_>, ctx: usize) -> PyResult<Arc<Owner>> {
        let owner = Arc::new_cyclic(|me: &Weak<Owner>| {
            let weak = Self::watch(py, ctx, me.clone());
            Owner {
                serial: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
                ctx,
                alive: AtomicBool::new(weak.is_some()),
                weak,
                held: GilCell(RefCell::new(Vec::new())),
            }
        });
        if owner.weak.is_none() {
            return Err(PyErr::take(py).unwrap_or_else(|| {
                pyo3::exceptions::PyRuntimeError::new_err("cannot watch the calling context")
            }));
        }
        Ok(owner)
    }

    /// A weak reference to the context at `ctx` whose callback ends `owner`.
    /// `None` with the exception set, if one cannot be made.
    fn watch(py: Python<'_>, ctx: usize, owner: Weak<Owner>) -> Option<Py<PyAny>> {
        let callback = Bound::new(py, ContextEnd { owner }).ok()?;
        // SAFETY: `ctx` is the calling thread's current context, alive while
        // this runs; the result is a new reference or NULL with an exception.
        let weak = unsafe { ffi::PyWeakref_NewRef(ctx as *mut ffi::PyObject, callback.as_ptr()) };
        // SAFETY: as above.
        unsafe { Bound::from_owned_ptr_or_opt(py, weak) }.map(Bound::unbind)
    }

    /// Whether this owner holds `id` of `core` through one of its entries.
    fn holds(&self, core: &Core, id: Id) -> bool {
        self.held.0.borrow().iter().any(|e| {
            let e = e.get();
            e.id == id && e.core.uid() == core.uid() && e.flags.load(Ordering::Relaxed) & HELD != 0
        })
    }

    fn forget(&self, entry: &Entry) -> Option<Py<Entry>> {
        let mut held = self.held.0.borrow_mut();
        let at = held.iter().rposition(|e| ptr::eq(e.get(), entry))?;
        Some(held.remove(at))
    }
}

#[pymethods]
impl ContextEnd {
    /// The context ended: its entries stop counting and release what they
    /// hold (R11).
    fn __call__(&self, _weak: &Bound<'_, PyAny>) {
        let Some(owner) = self.owner.upgrade() else {
            return;
        };
        owner.alive.store(false, Ordering::Relaxed);
        let held = std::mem::take(&mut *owner.held.0.borrow_mut());
        for entry in held.iter().rev() {
            let e = entry.get();
            let flags = gil_set(&e.flags, EXITED);
            if flags & EXITED == 0 {
                e.let_go(flags);
            }
        }
        drop(held);
        let removed = {
            let mut owners = OWNERS.0.borrow_mut();
            let owners = owners.as_mut();
            owners.and_then(|o| match o.get(&owner.ctx) {
                Some(o2) if Arc::ptr_eq(o2, &owner) => o.remove(&owner.ctx),
                _ => None,
            })
        };
        drop(removed);
    }
}

// === impl Entry ===

impl Entry {
    /// The entry whose state this is: itself, or the original of a copy.
    fn state(&self) -> &Entry {
        match &self.alias {
            Some(original) => original.get(),
            None => self,
        }
    }

    fn next<'py>(&self, py: Python<'py>) -> Option<Bound<'py, Entry>> {
        let next = self.next.load(Ordering::Relaxed);
        // SAFETY: `next` is null or an owned reference to an `Entry`, which
        // this entry keeps alive.
        (!next.is_null())
            .then(|| unsafe { Bound::from_borrowed_ptr(py, next).cast_into_unchecked::<Entry>() })
    }

    /// Whether the calling context (at `ctx`) made this entry.
    fn own(&self, ctx: usize) -> bool {
        self.owner.is(ctx)
    }

    fn trace_parent(&self) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            span_id: self.span_id,
        }
    }

    /// The span, if it is still the one this entry names (R13: a registry
    /// ID can come back after its slot is reused).
    fn live(&self) -> bool {
        self.core
            .get(self.id)
            .is_some_and(|s| s.span_id() == self.span_id && s.ref_count() > 0)
    }

    /// What the entry gives up as it stops counting (its flags were
    /// `flags` before `EXITED` was set): the span's timing, the owner's
    /// claim, and its reference, which may close the span.
    fn let_go(&self, flags: u8) {
        if flags & HELD != 0 {
            let now = self.flags.load(Ordering::Relaxed);
            self.flags.store(now & !HELD, Ordering::Relaxed);
        }
        let_go(&self.core, self.id, self.span_id, flags, self.owner.serial);
    }
}

/// What an entry of span `id` (by identity, `span_id`) with `flags` gives
/// up as it stops counting: see [`Entry::let_go`].
fn let_go(core: &Core, id: Id, span_id: u64, flags: u8, owner: u64) {
    let held = flags & HELD != 0;
    match core.get(id) {
        Some(span) if span.span_id() == span_id => {
            let ext = span.ext();
            ext.on_exit();
            let hooks = core.hooks();
            if hooks.wants_intervals() {
                hooks.exit_interval(Interval {
                    core,
                    id,
                    span: &span,
                    owner,
                    at: crate::ext::wall(crate::ext::now()),
                });
            }
            if held {
                ext.unclaim(flags & PRIMARY != 0);
                // The reference this entry held: released through the same
                // lookup.
                let _ = span.try_close();
            }
        }
        // Not the span it was (released by hand too often, R12): the count
        // is already what it should be.
        _ => {}
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let prev = std::mem::replace(self.guard_prev.get_mut(), ptr::null_mut());
        if !prev.is_null() {
            defer_decref(prev);
        }
        let next = std::mem::replace(self.next.get_mut(), ptr::null_mut());
        if !next.is_null() {
            defer_decref(next);
        }
    }
}

/// Releases an owned reference to an entry. The outermost drop on this
/// thread drains the queue; drops inside it only queue, so freeing a chain
/// of a million entries is a loop, not a recursion. If thread-local storage
/// is gone (thread teardown), the reference goes at once.
fn defer_decref(obj: *mut ffi::PyObject) {
    // SAFETY: `obj` is an owned reference, so it is alive.
    if unsafe { ffi::Py_REFCNT(obj) } > 1 {
        // Not the last reference: nothing is freed, nothing recurses.
        // SAFETY: an owned reference, released with the GIL held.
        unsafe { ffi::Py_DECREF(obj) };
        return;
    }
    let queued = DEFERRED.try_with(|d| {
        if let Some(pending) = d.borrow_mut().as_mut() {
            pending.push(obj);
            return true;
        }
        false
    });
    match queued {
        Ok(true) => {}
        Ok(false) => {
            let _ = DEFERRED.try_with(|d| *d.borrow_mut() = Some(Vec::new()));
            // SAFETY: an owned reference, released with the GIL held (entries
            // are only dropped by the interpreter or under the GIL).
            unsafe { ffi::Py_DECREF(obj) };
            while let Some(next) = DEFERRED
                .try_with(|d| d.borrow_mut().as_mut().and_then(Vec::pop))
                .ok()
                .flatten()
            {
                // SAFETY: as above.
                unsafe { ffi::Py_DECREF(next) };
            }
            let _ = DEFERRED.try_with(|d| d.borrow_mut().take());
        }
        // SAFETY: as above.
        Err(_) => unsafe { ffi::Py_DECREF(obj) },
    }
}

#[pymethods]
impl Entry {
    fn __repr__(&self) -> String {
        let s = self.state();
        let flags = s.flags.load(Ordering::Relaxed);
        if s.foreign.is_some() {
            let exited = if flags & EXITED != 0 { "True" } else { "False" };
            return format!("_Entry(foreign=True, exited={exited})");
        }
        format!(
            "_Entry(id={}, duplicate={}, exited={})",
            s.id.into_u64(),
            if flags & DUP != 0 { "True" } else { "False" },
            if flags & EXITED != 0 { "True" } else { "False" },
        )
    }
}

// === the operations ===

/// R5: enters span `id` of `core` in the calling context. The first entry
/// of a span by a context takes a reference; entering it again while that
/// entry is unexited takes none. An ID that is not live is an error and
/// pushes nothing. Returns the entry, for the guard that exits it.
pub(crate) fn enter<'py>(py: Python<'py>, core: &Core, id: Id) -> PyResult<Bound<'py, Entry>> {
    let owner = Owner::calling(py)?;
    let serial = owner.serial;
    // Python code runs to find the track: before the span is looked up.
    let track = core
        .hooks()
        .wants_intervals()
        .then(|| crate::tracks::current(py));
    let (flags, span_id, trace_id) = {
        // One lookup takes the reference a first entry holds; a duplicate
        // (rare) gives it back.
        let span = core.clone_span_ref(id).map_err(|e| {
            RegistryError(match e {
                pykregistry_core::Error::NotLive { id, .. } => {
                    pykregistry_core::Error::NotLive { id, op: Op::Enter }
                }
                e => e,
            })
        })?;
        let ext = span.ext();
        let duplicate = ext.claimed_by(owner.serial) || (ext.shared() && owner.holds(core, id));
        let flags = if duplicate {
            DUP
        } else {
            HELD | if ext.claim(owner.serial) { PRIMARY } else { 0 }
        };
        ext.on_enter();
        if let Some(track) = &track {
            core.hooks().enter_interval(
                Interval {
                    core,
                    id,
                    span: &span,
                    owner: serial,
                    at: crate::ext::wall(crate::ext::now()),
                },
                track,
            );
        }
        let identity = (flags, span.span_id(), span.trace_id());
        drop(span);
        if duplicate {
            release(core, id);
        }
        identity
    };
    let made = Bound::new(
        py,
        Entry {
            core: core.clone(),
            id,
            span_id,
            trace_id,
            owner,
            flags: AtomicU8::new(flags),
            next: AtomicPtr::new(ptr::null_mut()),
            alias: None,
            guard_prev: AtomicPtr::new(ptr::null_mut()),
            foreign: None,
        },
    );
    let entry = match made {
        Ok(entry) => entry,
        Err(e) => {
            // Undo what the entry would have held.
            let_go(core, id, span_id, flags, serial);
            return Err(e);
        }
    };
    // Nothing runs between reading the top and linking to it. Exits the
    // view could not show (see `set_top`) go now. The owner is the calling
    // context, so its address needs no second look.
    if let Some(below) = trimmed(py, top(py)?, entry.get().owner.ctx) {
        entry.get().next.store(below.into_ptr(), Ordering::Relaxed);
    }
    if flags & HELD != 0 {
        entry
            .get()
            .owner
            .held
            .0
            .borrow_mut()
            .push(entry.clone().unbind());
    }
    if let Err(e) = set_top(py, Some(&entry)) {
        exit_entry(py, &entry);
        return Err(e);
    }
    Ok(entry)
}

/// Exits `entry` wherever it was made (a `with` block's own entry, R5): it
/// stops counting and stops being current wherever it is seen, and leaves
/// the calling context's view if it is there. `None` if it was exited
/// already. Its reference is released by the caller, through
/// [`Exited::finish`], after layers have seen the exit.
pub(crate) fn exit_entry(py: Python<'_>, entry: &Bound<'_, Entry>) -> Option<Exited> {
    let state = entry.get().state();
    let flags = gil_set(&state.flags, EXITED);
    if flags & EXITED != 0 {
        return None;
    }
    let held = if flags & HELD != 0 {
        state.owner.forget(state)
    } else {
        None
    };
    // The view is only a view: if it cannot be updated, the flag rules.
    let _ = remove_from_view(py, state);
    Some(Exited {
        flags,
        entry: held.unwrap_or_else(|| entry.clone().unbind()),
    })
}

/// An exited entry whose reference is not released yet.
pub(crate) struct Exited {
    flags: u8,
    entry: Py<Entry>,
}

impl Exited {
    /// The span the entry was of, if it is still that span.
    pub(crate) fn span(&self, py: Python<'_>) -> Option<Id> {
        let e = self.entry.bind(py).get().state();
        if e.foreign.is_some() {
            return None;
        }
        e.core
            .get(e.id)
            .is_some_and(|s| s.span_id() == e.span_id)
            .then_some(e.id)
    }

    /// Releases what the entry held; may close the span.
    pub(crate) fn finish(self, py: Python<'_>) {
        let e = self.entry.bind(py).get().state();
        if e.foreign.is_none() {
            e.let_go(self.flags);
        }
    }
}

/// Removes `target` (an entry's state) from the calling context's view, if
/// it is there, along with the context's own exited entries that end up on
/// top. Entries above it are replaced by copies that share their state, so
/// that guards still find them; contexts copied earlier keep their view.
fn remove_from_view(py: Python<'_>, target: &Entry) -> PyResult<()> {
    let Some(top) = top(py)? else { return Ok(()) };
    let ctx = context_address();
    let mut above: Vec<Bound<'_, Entry>> = Vec::new();
    let mut node = Some(top.clone());
    let mut base = loop {
        let Some(n) = node else {
            // Not in this view (exited from another context): keep the view.
            above.clear();
            break Some(top.clone());
        };
        if ptr::eq(n.get().state(), target) {
            break n.get().next(py);
        }
        node = n.get().next(py);
        above.push(n);
    };
    if above.is_empty() {
        base = trimmed(py, base, ctx);
    }
    for a in above.iter().rev() {
        let original = match &a.get().alias {
            Some(o) => o.clone_ref(py),
            None => a.clone().unbind(),
        };
        let o = original.get();
        let copy = Bound::new(
            py,
            Entry {
                core: o.core.clone(),
                id: o.id,
                span_id: o.span_id,
                trace_id: o.trace_id,
                owner: Arc::clone(&o.owner),
                flags: AtomicU8::new(0),
                next: AtomicPtr::new(base.map_or(ptr::null_mut(), Bound::into_ptr)),
                alias: Some(original),
                guard_prev: AtomicPtr::new(ptr::null_mut()),
                foreign: None,
            },
        )?;
        base = Some(copy);
    }
    if base.as_ref().is_none_or(|b| !b.is(&top)) {
        set_top(py, base.as_ref())?;
    }
    Ok(())
}

/// `node` without the calling context's own exited entries on its top.
fn trimmed<'py>(
    py: Python<'py>,
    mut node: Option<Bound<'py, Entry>>,
    ctx: usize,
) -> Option<Bound<'py, Entry>> {
    while let Some(n) = &node {
        let s = n.get().state();
        if s.flags.load(Ordering::Relaxed) & EXITED == 0 || !s.own(ctx) {
            break;
        }
        node = n.get().next(py);
    }
    node
}

/// R5: `exit(id)` of the integer-ID API: removes the most recent entry of
/// `id` in the calling context. Its own entry is exited (see
/// [`exit_entry`]); an entry it inherited is only removed from its own
/// view (it held nothing). `None` when the span is not on its stack.
pub(crate) fn exit_id(py: Python<'_>, core: &Core, id: Id) -> PyResult<Option<Exited>> {
    let ctx = context_address();
    let mut node = top(py)?;
    while let Some(n) = node {
        let s = n.get().state();
        let own = s.own(ctx);
        let exited = s.flags.load(Ordering::Relaxed) & EXITED != 0;
        if !(own && exited) && s.foreign.is_none() && s.id == id && s.core.uid() == core.uid() {
            if own {
                return Ok(exit_entry(py, &n));
            }
            remove_from_view(py, s)?;
            return Ok(None);
        }
        node = n.get().next(py);
    }
    Ok(None)
}

/// R6: the calling context's current span in `core`, and its identity;
/// and another tracer's span, if one is current above it.
pub(crate) fn current(py: Python<'_>, core: &Core) -> PyResult<Contextual> {
    let mut node = top(py)?;
    let ctx = context_address();
    let uid = core.uid();
    let mut foreign = None;
    while let Some(n) = node {
        let s = n.get().state();
        let flags = s.flags.load(Ordering::Relaxed);
        if s.core.uid() == uid && flags & DUP == 0 && (flags & EXITED == 0 || !s.own(ctx)) {
            if let Some(f) = &s.foreign {
                // Another tracer's context with no span in it is no parent
                // of anything: look through it.
                if foreign.is_none() && flags & EXITED == 0 {
                    foreign.clone_from(&f.span);
                }
            } else {
                let live = flags & EXITED == 0 && s.live();
                return Ok(Contextual {
                    id: live.then_some(s.id),
                    trace: Some(s.trace_parent()),
                    foreign,
                });
            }
        }
        node = n.get().next(py);
    }
    Ok(Contextual {
        foreign,
        ..Contextual::default()
    })
}

// === another tracer's contexts ===

/// OpenTelemetry's `attach(context)` through the bridge (`pykregistry.otel`):
/// pushes an entry of `core` that carries `context` and the span current in
/// it, if any, in the calling context. It holds no reference, and is exited
/// like a span's entry ([`exit_entry`]): by identity, from any context. A
/// span made above it takes that span as its parent in the trace.
pub(crate) fn enter_foreign<'py>(
    py: Python<'py>,
    core: &Core,
    context: Py<PyAny>,
    span: Option<RemoteParent>,
) -> PyResult<Bound<'py, Entry>> {
    let owner = Owner::calling(py)?;
    let ids = span.as_ref().map(|s| s.trace_parent);
    let entry = Bound::new(
        py,
        Entry {
            core: core.clone(),
            // Names no span: every reader checks `foreign` first.
            id: Id::from_u64(u64::MAX).map_err(RegistryError)?,
            span_id: ids.map_or(0, |t| t.span_id),
            trace_id: ids.map_or(0, |t| t.trace_id),
            owner,
            flags: AtomicU8::new(0),
            next: AtomicPtr::new(ptr::null_mut()),
            alias: None,
            guard_prev: AtomicPtr::new(ptr::null_mut()),
            foreign: Some(Box::new(Foreign { context, span })),
        },
    )?;
    if let Some(below) = trimmed(py, top(py)?, entry.get().owner.ctx) {
        entry.get().next.store(below.into_ptr(), Ordering::Relaxed);
    }
    set_top(py, Some(&entry))?;
    Ok(entry)
}

/// [`foreign_current`]'s answer: the registry's span (its ID and identity)
/// and the nearest foreign context.
pub(crate) type ForeignCurrent<'py> = (Option<(Id, TraceParent)>, Option<Bound<'py, PyAny>>);

/// What another tracer sees as current in `core`: the innermost of the
/// registry's current span (its identity) and the foreign contexts above
/// it; and the nearest foreign context, which is all of it when it is
/// innermost, and what the span is current in otherwise.
pub(crate) fn foreign_current<'py>(py: Python<'py>, core: &Core) -> PyResult<ForeignCurrent<'py>> {
    let mut node = top(py)?;
    let ctx = context_address();
    let uid = core.uid();
    let mut ours = None;
    while let Some(n) = node {
        let s = n.get().state();
        let flags = s.flags.load(Ordering::Relaxed);
        // Seen here as in `current`: an entry inherited from a context that
        // exited it still names its span by identity (R13); a foreign one
        // stops counting once detached.
        if s.core.uid() == uid && flags & DUP == 0 && (flags & EXITED == 0 || !s.own(ctx)) {
            match &s.foreign {
                Some(f) if flags & EXITED == 0 => {
                    return Ok((ours, Some(f.context.bind(py).clone())));
                }
                Some(_) => {}
                None => {
                    ours = ours.or(Some((s.id, s.trace_parent())));
                }
            }
        }
        node = n.get().next(py);
    }
    Ok((ours, None))
}

/// OpenTelemetry's `detach(token)` through the bridge: exits the foreign
/// entry wherever it was made. Anything else, or an entry already exited,
/// is ignored: detaching never fails (R15).
pub(crate) fn exit_foreign(py: Python<'_>, token: &Bound<'_, PyAny>) {
    let Ok(entry) = token.cast::<Entry>() else {
        return;
    };
    if entry.get().state().foreign.is_some() {
        if let Some(exited) = exit_entry(py, entry) {
            exited.finish(py);
        }
    }
}

// === guards ===

/// The entries a guard (`Span`, `Entered`) made and has not exited: the
/// latest here, earlier ones chained through `Entry::guard_prev`.
#[derive(Default)]
pub(crate) struct GuardSlot(AtomicPtr<ffi::PyObject>);

impl GuardSlot {
    /// Remembers `entry` as the guard's latest.
    pub(crate) fn push(&self, entry: Bound<'_, Entry>) {
        let prev = self.0.load(Ordering::Relaxed);
        entry.get().guard_prev.store(prev, Ordering::Relaxed);
        self.0.store(entry.into_ptr(), Ordering::Relaxed);
    }

    /// The guard's latest entry, forgotten here.
    pub(crate) fn pop<'py>(&self, py: Python<'py>) -> Option<Bound<'py, Entry>> {
        let latest = self.0.load(Ordering::Relaxed);
        if latest.is_null() {
            return None;
        }
        // SAFETY: an owned reference to an `Entry`, now ours.
        let latest = unsafe { Bound::from_owned_ptr(py, latest).cast_into_unchecked::<Entry>() };
        let prev = gil_swap(&latest.get().guard_prev, ptr::null_mut());
        self.0.store(prev, Ordering::Relaxed);
        Some(latest)
    }
}

impl Drop for GuardSlot {
    fn drop(&mut self) {
        let latest = std::mem::replace(self.0.get_mut(), ptr::null_mut());
        if !latest.is_null() {
            defer_decref(latest);
        }
    }
}
