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

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};
use std::sync::Arc;

use pykregistry_core::{Id, Op, RemoteParent, TraceParent};
use pyo3::prelude::*;

use crate::errors::RegistryError;
use crate::layers::{release, Core, Interval};
use crate::stack_var::{self, context_address};

use crate::entry::{gil_set, let_go, Foreign, Owner, DUP, EXITED, HELD, PRIMARY};
pub(crate) use crate::entry::{Entry, GuardSlot};

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
