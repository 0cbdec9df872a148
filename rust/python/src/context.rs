//! Contexts: one stack of entered spans per thread and per asyncio task.
//!
//! The stack is an immutable linked list of [`StackNode`]s held in a
//! `contextvars.ContextVar` private to each registry. Threads get their own
//! context; an asyncio task gets a copy of its creator's, so it shares the
//! creator's nodes: the span current where it was created is its current
//! span, and stays alive while the task's context holds the node.
//!
//! Each non-duplicate node owns one reference on its span, released when the
//! node is freed — that is, when no context holds it any more. Nothing here
//! uses `ContextVar.reset(token)`: entering and exiting only read the
//! calling context's stack and set a new one, so a span exited from another
//! context (a generator closed from another task) is simply not found there.

use std::cell::RefCell;
use std::ptr;

use pykregistry_core::Id;
use pyo3::ffi;
use pyo3::prelude::*;

use crate::errors::RegistryError;
use crate::registry::Core;

/// One entry of a context's stack. Immutable once made.
#[pyclass(name = "_StackNode", module = "pykregistry", frozen)]
pub(crate) struct StackNode {
    pub(crate) id: Id,
    /// The topmost non-duplicate entry from here down.
    current: Id,
    /// Whether this is the span's first entry on this stack, which holds a
    /// reference.
    owns_ref: bool,
    next: Option<Py<StackNode>>,
    core: Core,
}

/// The `ContextVar` holding a registry's stacks.
pub(crate) struct ContextStack {
    var: Py<PyAny>,
}

// === impl ContextStack ===

impl ContextStack {
    pub(crate) fn new(py: Python<'_>) -> PyResult<Self> {
        // SAFETY: the name is a NUL-terminated literal; a NULL default means
        // "no value", which `top` reads as the empty stack.
        let var = unsafe { ffi::PyContextVar_New(c"pykregistry.stack".as_ptr(), ptr::null_mut()) };
        // SAFETY: a new reference or NULL with an exception set.
        let var = unsafe { Bound::from_owned_ptr_or_err(py, var)? };
        Ok(Self { var: var.unbind() })
    }

    /// The top of the calling context's stack.
    pub(crate) fn top<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, StackNode>>> {
        let mut value: *mut ffi::PyObject = ptr::null_mut();
        // SAFETY: `var` is a ContextVar; `value` receives a new reference or NULL.
        if unsafe { ffi::PyContextVar_Get(self.var.as_ptr(), ptr::null_mut(), &raw mut value) } < 0
        {
            return Err(PyErr::fetch(py));
        }
        if value.is_null() {
            return Ok(None);
        }
        // SAFETY: a new reference; only `set` writes this private variable, and
        // it stores a `StackNode` or `None`.
        let value = unsafe { Bound::from_owned_ptr(py, value) };
        if value.is_none() {
            Ok(None)
        } else {
            // SAFETY: see above.
            Ok(Some(unsafe { value.cast_into_unchecked::<StackNode>() }))
        }
    }

    fn set(&self, py: Python<'_>, top: Option<&Bound<'_, StackNode>>) -> PyResult<()> {
        let value = top.map_or_else(|| py.None().into_bound(py), |n| n.clone().into_any());
        // SAFETY: `var` is a ContextVar and `value` a live object. The token
        // (a new reference) holds the old value; dropping it at once lets the
        // old top node go as soon as no context holds it.
        let token = unsafe { ffi::PyContextVar_Set(self.var.as_ptr(), value.as_ptr()) };
        // SAFETY: a new reference or NULL with an exception set.
        drop(unsafe { Bound::from_owned_ptr_or_err(py, token)? });
        Ok(())
    }

    /// The calling context's current span.
    pub(crate) fn current(&self, py: Python<'_>) -> PyResult<Option<Id>> {
        Ok(self.top(py)?.map(|n| n.get().current))
    }

    /// Pushes `id` on the calling context's stack. Its first entry there
    /// takes a reference; an ID that is not live is an error and pushes
    /// nothing.
    pub(crate) fn enter(&self, py: Python<'_>, core: &Core, id: Id) -> PyResult<()> {
        let top = self.top(py)?;
        let duplicate = iter(top.as_ref()).any(|n| n.get().id == id);
        // The span's timings learn of the entry through the same lookup that
        // checks it (and, for a first entry, takes its reference).
        if duplicate {
            // Duplicates are entries of a span this stack already holds, so
            // it is live; check anyway so a bookkeeping bug can't push junk.
            core.live_slot(id, pykregistry_core::Op::Enter)
                .map_err(RegistryError)?
                .ext()
                .on_enter();
        } else {
            core.clone_span_ref(id)
                .map_err(|e| {
                    RegistryError(match e {
                        pykregistry_core::Error::NotLive { id, .. } => {
                            pykregistry_core::Error::NotLive {
                                id,
                                op: pykregistry_core::Op::Enter,
                            }
                        }
                        e => e,
                    })
                })?
                .ext()
                .on_enter();
        }
        let current = match (&top, duplicate) {
            (Some(t), true) => t.get().current,
            _ => id,
        };
        let node = StackNode {
            id,
            current,
            owns_ref: !duplicate,
            next: top.map(Bound::unbind),
            core: core.clone(),
        };
        // If allocating the node fails, dropping `node` releases the reference.
        let node = Bound::new(py, node)?;
        self.set(py, Some(&node))
    }

    /// Removes the most recent entry of `id` from the calling context's
    /// stack, even if it is not on top. Entries above it are copied (the
    /// copies take references of their own; the originals release theirs
    /// when no context holds them). Returns the removed entry, if one was
    /// found: while the caller holds it, its reference is not yet released,
    /// so layers can be told of the exit before the span may close.
    pub(crate) fn exit<'py>(
        &self,
        py: Python<'py>,
        id: Id,
    ) -> PyResult<Option<Bound<'py, StackNode>>> {
        let Some(top) = self.top(py)? else {
            return Ok(None);
        };
        if top.get().id == id {
            let below = top.get().next.as_ref().map(|n| n.bind(py).clone());
            self.set(py, below.as_ref())?;
            return Ok(Some(top));
        }
        let mut above = Vec::new();
        let mut found = None;
        for node in iter(Some(&top)) {
            if node.get().id == id {
                found = Some(node);
                break;
            }
            above.push(node);
        }
        let Some(found) = found else {
            return Ok(None);
        };
        let mut base = found.get().next.as_ref().map(|n| n.bind(py).clone());
        for node in above.iter().rev() {
            let n = node.get();
            if n.owns_ref {
                n.core.clone_span(n.id).map_err(RegistryError)?;
            }
            let current = match (&base, n.owns_ref) {
                (Some(b), false) => b.get().current,
                _ => n.id,
            };
            base = Some(Bound::new(
                py,
                StackNode {
                    id: n.id,
                    current,
                    owns_ref: n.owns_ref,
                    next: base.map(Bound::unbind),
                    core: n.core.clone(),
                },
            )?);
        }
        self.set(py, base.as_ref())?;
        Ok(Some(found))
    }
}

/// The nodes from `top` down.
fn iter<'py>(top: Option<&Bound<'py, StackNode>>) -> impl Iterator<Item = Bound<'py, StackNode>> {
    let mut next = top.cloned();
    std::iter::from_fn(move || {
        let node = next.take()?;
        next = node.get().next.as_ref().map(|n| n.bind(node.py()).clone());
        Some(node)
    })
}

// === impl StackNode ===

thread_local! {
    /// Nodes waiting to be dropped by an outer `StackNode::drop` on this
    /// thread, so that freeing a deep stack is a loop, not a recursion.
    static DEFERRED: RefCell<Option<Vec<Py<StackNode>>>> = const { RefCell::new(None) };
}

impl Drop for StackNode {
    fn drop(&mut self) {
        if self.owns_ref {
            crate::registry::release(&self.core, self.id);
        }
        let Some(next) = self.next.take() else { return };
        // The outermost drop on this thread owns the queue and drains it;
        // drops inside it only queue their successor. If thread-local
        // storage is gone (thread teardown), `next` drops right here.
        let outermost = DEFERRED.try_with(|d| {
            let mut d = d.borrow_mut();
            if let Some(pending) = d.as_mut() {
                pending.push(next);
                None
            } else {
                *d = Some(Vec::new());
                Some(next)
            }
        });
        if let Ok(Some(next)) = outermost {
            drop(next);
            while let Some(node) = DEFERRED
                .try_with(|d| d.borrow_mut().as_mut().and_then(Vec::pop))
                .ok()
                .flatten()
            {
                drop(node);
            }
            let _ = DEFERRED.try_with(|d| d.borrow_mut().take());
        }
    }
}

#[pymethods]
impl StackNode {
    fn __repr__(&self) -> String {
        format!(
            "_StackNode(id={}, current={}, duplicate={})",
            self.id.into_u64(),
            self.current.into_u64(),
            if self.owns_ref { "False" } else { "True" }
        )
    }
}
