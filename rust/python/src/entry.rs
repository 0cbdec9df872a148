//! The entries of the context stacks and who makes them: an [`Entry`] (a
//! span entered by one context, or another tracer's context attached), its
//! [`Owner`] (the `contextvars.Context` that made it, watched so that its
//! entries let go when it ends, R11), and the [`GuardSlot`] a `with` block
//! keeps its entries in. The operations on the stacks, and the model they
//! follow, are in `context`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};

use pykregistry_core::{Id, RemoteParent, TraceParent};
use pyo3::ffi;
use pyo3::prelude::*;

use crate::gil::GilCell;
use crate::layers::{Core, Interval};
use crate::stack_var::context_address;

/// The entry holds one reference on its span.
pub(crate) const HELD: u8 = 1;
/// The entry is the one its span records as held by its owner.
pub(crate) const PRIMARY: u8 = 2;
/// The entry was exited (or its owner ended): it no longer counts.
pub(crate) const EXITED: u8 = 4;
/// The entry is a duplicate: its owner held the span already.
pub(crate) const DUP: u8 = 8;

/// One entry of a context's stack: a span entered by one context.
///
/// Immutable but for its flags; shared by every context copied from the
/// one that pushed it.
#[pyclass(name = "_Entry", module = "pykregistry", frozen)]
pub(crate) struct Entry {
    pub(crate) core: Core,
    pub(crate) id: Id,
    pub(crate) span_id: u64,
    pub(crate) trace_id: u128,
    pub(crate) owner: Arc<Owner>,
    pub(crate) flags: AtomicU8,
    /// The entry below; an owned reference, set once before the entry is
    /// published (so that nothing runs between reading the stack and
    /// pushing on it).
    pub(crate) next: AtomicPtr<ffi::PyObject>,
    /// A copy made when another context removed an entry below it from
    /// its own view: its state lives in the original.
    pub(crate) alias: Option<Py<Entry>>,
    /// The entry the same guard (`Span` or `Entered`) made before this
    /// one and has not exited yet; an owned reference or null.
    pub(crate) guard_prev: AtomicPtr<ffi::PyObject>,
    /// Set on an entry of another tracer's context (see [`enter_foreign`]);
    /// its `id` then names no span.
    pub(crate) foreign: Option<Box<Foreign>>,
}

/// What an entry of another tracer's context carries: OpenTelemetry's
/// `Context` object as it was attached, and the span current in it.
pub(crate) struct Foreign {
    pub(crate) context: Py<PyAny>,
    pub(crate) span: Option<RemoteParent>,
}

/// A `contextvars.Context` that has made entries.
pub(crate) struct Owner {
    pub(crate) serial: u64,
    /// The context's address; meaningful only while `alive`.
    pub(crate) ctx: usize,
    /// Cleared by the weak reference's callback when the context ends.
    pub(crate) alive: AtomicBool,
    /// The weak reference to the context, whose callback ends the owner.
    pub(crate) weak: Option<Py<PyAny>>,
    /// The owner's entries that hold a reference.
    pub(crate) held: GilCell<Vec<Py<Entry>>>,
}

/// `a.swap(new)` for a pointer only touched holding the GIL: a load and a
/// store, which no other thread can come between (the module is
/// `gil_used`), without the bus lock that `swap` takes.
#[inline]
pub(crate) fn gil_swap(
    a: &AtomicPtr<ffi::PyObject>,
    new: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let old = a.load(Ordering::Relaxed);
    a.store(new, Ordering::Relaxed);
    old
}

/// `flags.fetch_or(bits)` for flags only touched holding the GIL; see
/// [`gil_swap`].
#[inline]
pub(crate) fn gil_set(flags: &AtomicU8, bits: u8) -> u8 {
    let old = flags.load(Ordering::Relaxed);
    flags.store(old | bits, Ordering::Relaxed);
    old
}

/// The callback of an owner's weak reference: the context ended.
#[pyclass(name = "_ContextEnd", module = "pykregistry", frozen)]
struct ContextEnd {
    owner: Weak<Owner>,
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

// === impl Owner ===

impl Owner {
    pub(crate) fn is(&self, ctx: usize) -> bool {
        self.ctx == ctx && self.alive.load(Ordering::Relaxed)
    }

    /// The calling context's owner, made on its first entry.
    pub(crate) fn calling(py: Python<'_>) -> PyResult<Arc<Owner>> {
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
    pub(crate) fn holds(&self, core: &Core, id: Id) -> bool {
        self.held.0.borrow().iter().any(|e| {
            let e = e.get();
            e.id == id && e.core.uid() == core.uid() && e.flags.load(Ordering::Relaxed) & HELD != 0
        })
    }

    pub(crate) fn forget(&self, entry: &Entry) -> Option<Py<Entry>> {
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
    pub(crate) fn state(&self) -> &Entry {
        match &self.alias {
            Some(original) => original.get(),
            None => self,
        }
    }

    pub(crate) fn next<'py>(&self, py: Python<'py>) -> Option<Bound<'py, Entry>> {
        let next = self.next.load(Ordering::Relaxed);
        // SAFETY: `next` is null or an owned reference to an `Entry`, which
        // this entry keeps alive.
        (!next.is_null())
            .then(|| unsafe { Bound::from_borrowed_ptr(py, next).cast_into_unchecked::<Entry>() })
    }

    /// Whether the calling context (at `ctx`) made this entry.
    pub(crate) fn own(&self, ctx: usize) -> bool {
        self.owner.is(ctx)
    }

    pub(crate) fn trace_parent(&self) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            span_id: self.span_id,
        }
    }

    /// The span, if it is still the one this entry names (R13: a registry
    /// ID can come back after its slot is reused).
    pub(crate) fn live(&self) -> bool {
        self.core
            .get(self.id)
            .is_some_and(|s| s.span_id() == self.span_id && s.ref_count() > 0)
    }

    /// What the entry gives up as it stops counting (its flags were
    /// `flags` before `EXITED` was set): the span's timing, the owner's
    /// claim, and its reference, which may close the span.
    pub(crate) fn let_go(&self, flags: u8) {
        if flags & HELD != 0 {
            let now = self.flags.load(Ordering::Relaxed);
            self.flags.store(now & !HELD, Ordering::Relaxed);
        }
        let_go(&self.core, self.id, self.span_id, flags, self.owner.serial);
    }
}

/// What an entry of span `id` (by identity, `span_id`) with `flags` gives
/// up as it stops counting: see [`Entry::let_go`].
pub(crate) fn let_go(core: &Core, id: Id, span_id: u64, flags: u8, owner: u64) {
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
pub(crate) fn defer_decref(obj: *mut ffi::PyObject) {
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
