//! The one `contextvars.ContextVar` that holds every context's stack of
//! entered spans (shared by all registries, P14), read and written safely
//! whatever the garbage collector does. What the value means is
//! `context`'s business.

use std::cell::{Cell, RefCell};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

extern "C" {
    /// `PyThreadState_Get()->context`, borrowed; see `csrc/context.c`.
    fn pykregistry_current_context() -> *mut ffi::PyObject;
}

static VAR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The one `ContextVar` of every registry.
fn var(py: Python<'_>) -> PyResult<&Py<PyAny>> {
    VAR.get_or_try_init(py, || {
        // SAFETY: the name is a NUL-terminated literal; a NULL default means
        // "no value", which `top` reads as the empty stack.
        let var = unsafe { ffi::PyContextVar_New(c"pykregistry.stack".as_ptr(), ptr::null_mut()) };
        // SAFETY: a new reference or NULL with an exception set.
        Ok(unsafe { Bound::from_owned_ptr_or_err(py, var)? }.unbind())
    })
}

/// The calling context's value of the variable: its stack's top, as last
/// set (the overlay first, while a collection runs here); `None` if unset.
pub(crate) fn get(py: Python<'_>) -> PyResult<Option<Bound<'_, PyAny>>> {
    if let Some(view) = overlay_get(py) {
        return Ok(view);
    }
    let var = var(py)?;
    let mut value: *mut ffi::PyObject = ptr::null_mut();
    // SAFETY: `var` is a ContextVar; `value` receives a new reference or NULL.
    if unsafe { ffi::PyContextVar_Get(var.as_ptr(), ptr::null_mut(), &raw mut value) } < 0 {
        return Err(PyErr::fetch(py));
    }
    if value.is_null() {
        return Ok(None);
    }
    // SAFETY: a new reference.
    Ok(Some(unsafe { Bound::from_owned_ptr(py, value) }))
}

/// Sets the calling context's value of the variable (its stack's top;
/// `None`, the empty stack), unless that could corrupt the interpreter.
///
/// Load-bearing, for `CPython` (3.11 checked) itself: `ContextVar.set` builds
/// the context's new mapping from a borrowed pointer to the old one, and the
/// allocation can run the garbage collector. A finalizer that sets a context
/// variable of the same context in there frees the old mapping under the
/// outer set: a use-after-free that corrupts or crashes the process. So our
/// set runs with the collector disabled (no finalizer runs inside it), and
/// while a collection is running (we may be inside someone else's set) the
/// view is left as it is: entries' flags, not the view, decide what counts
/// and what is current, and the next enter or exit there trims the view.
pub(crate) fn set(py: Python<'_>, top: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    if collecting_here() {
        overlay_set(py, top);
        return Ok(());
    }
    let var = var(py)?;
    let value = top.map_or_else(|| py.None().into_bound(py), Clone::clone);
    // SAFETY: plain calls with the GIL held.
    let was_enabled = unsafe { ffi::PyGC_Disable() };
    // SAFETY: `var` is a ContextVar and `value` a live object. The token (a
    // new reference) holds the old value; dropping it at once lets the old
    // top go as soon as no context holds it.
    let token = unsafe { ffi::PyContextVar_Set(var.as_ptr(), value.as_ptr()) };
    if was_enabled != 0 {
        // SAFETY: as above.
        unsafe { ffi::PyGC_Enable() };
    }
    // SAFETY: a new reference or NULL with an exception set.
    drop(unsafe { Bound::from_owned_ptr_or_err(py, token)? });
    Ok(())
}

thread_local! {
    /// Garbage collections in progress on this thread (see [`set`]).
    /// Per thread: the collector runs finalizers on the thread that started
    /// it, and other threads (which may run meanwhile, when a finalizer
    /// lets the GIL go) set their own contexts' variables safely.
    static COLLECTING: Cell<u32> = const { Cell::new(0) };
    /// While a collection runs on this thread: the views `set` could
    /// not write to the variable, by context address (`None`: the empty
    /// stack). Read first by `get`, so that what a finalizer enters it can
    /// exit by ID, and sees as current; dropped when the collection ends.
    static OVERLAY: RefCell<Vec<(usize, Option<Py<PyAny>>)>> = const { RefCell::new(Vec::new()) };
}

/// The calling context's view kept in [`OVERLAY`], if a collection is
/// running and set one: `Some(None)` for an empty stack.
#[allow(clippy::option_option)]
fn overlay_get(py: Python<'_>) -> Option<Option<Bound<'_, PyAny>>> {
    if !collecting_here() {
        return None;
    }
    let ctx = context_address();
    OVERLAY
        .try_with(|o| {
            o.borrow()
                .iter()
                .find(|(c, _)| *c == ctx)
                .map(|(_, e)| e.as_ref().map(|e| e.bind(py).clone()))
        })
        .ok()
        .flatten()
}

fn overlay_set(py: Python<'_>, top: Option<&Bound<'_, PyAny>>) {
    let ctx = context_address();
    let value = top.map(|t| t.clone().unbind());
    let old = OVERLAY.try_with(|o| {
        let mut o = o.borrow_mut();
        if let Some(slot) = o.iter_mut().find(|(c, _)| *c == ctx) {
            std::mem::replace(&mut slot.1, value)
        } else {
            o.push((ctx, value));
            None
        }
    });
    // Dropped outside the borrow: an entry's drop runs no Python code, but
    // keep the cell free anyway.
    drop(old);
    let _ = py;
}

/// Collections in progress on any thread: zero almost always, which spares
/// the hot path the thread-local read. Only touched holding the GIL (the
/// collector's callbacks and finalizers run with it), so a relaxed load
/// sees every update that matters to this thread.
static ANY_COLLECTING: AtomicU32 = AtomicU32::new(0);

/// Whether a collection is running on this thread (see [`set`]).
#[inline]
fn collecting_here() -> bool {
    ANY_COLLECTING.load(Ordering::Relaxed) > 0 && COLLECTING.try_with(Cell::get).unwrap_or(0) > 0
}

/// `gc.callbacks` entry: counts this thread's collections in progress.
#[pyfunction]
pub(crate) fn _gc_phase(phase: &str, _info: &Bound<'_, PyAny>) {
    let ended = COLLECTING
        .try_with(|n| match phase {
            "start" => {
                n.set(n.get() + 1);
                let any = ANY_COLLECTING.load(Ordering::Relaxed);
                ANY_COLLECTING.store(any + 1, Ordering::Relaxed);
                false
            }
            "stop" => {
                if n.get() > 0 {
                    let any = ANY_COLLECTING.load(Ordering::Relaxed);
                    ANY_COLLECTING.store(any.saturating_sub(1), Ordering::Relaxed);
                }
                n.set(n.get().saturating_sub(1));
                n.get() == 0
            }
            _ => false,
        })
        .unwrap_or(false);
    if ended {
        let views = OVERLAY.try_with(|o| std::mem::take(&mut *o.borrow_mut()));
        drop(views);
    }
}

/// The calling context's address; 0 if the thread has none yet.
pub(crate) fn context_address() -> usize {
    // SAFETY: called with the GIL held; returns a borrowed pointer or NULL.
    unsafe { pykregistry_current_context() as usize }
}
