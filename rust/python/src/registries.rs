//! Every registry, for what must reach all of them and their open spans
//! (R15): the garbage collector, which must see what spans' extensions
//! hold, and the interpreter's exit, where open spans close in order,
//! children first, so that layers and exporters see them.

use std::collections::HashMap;

use pykregistry_core::{Id, WeakRegistry};
use pyo3::prelude::*;

use crate::gil::GilCell;
use crate::layers::{Core, Layers};

/// Every registry made, weakly.
static REGISTRIES: GilCell<Vec<WeakRegistry<Layers>>> = GilCell::new(Vec::new());

/// Remembers a new registry, so that its open spans close at exit.
pub(crate) fn track(core: &Core) {
    if let Ok(mut all) = REGISTRIES.0.try_borrow_mut() {
        if all.len().is_power_of_two() {
            all.retain(WeakRegistry::is_alive);
        }
        all.push(core.downgrade());
    }
}

/// R15: at interpreter exit (an `atexit` hook that runs before the sinks'
/// last flush), every span still open ends and closes, children before
/// their parents, so that every layer sees it end and close. References
/// that handles and entries still hold are given up for them: a handle
/// released later finds its span gone and does nothing.
#[pyfunction]
pub(crate) fn _close_open_spans() {
    let registries: Vec<Core> = REGISTRIES
        .0
        .try_borrow()
        .map(|all| all.iter().filter_map(WeakRegistry::upgrade).collect())
        .unwrap_or_default();
    for core in &registries {
        close_all(core);
    }
}

/// Closes every open span of `core`, leaves first.
fn close_all(core: &Core) {
    // Each span with its identity and parent, and how many open children
    // each has; then Kahn's order: a span closes once its children have.
    let spans: HashMap<Id, (u64, Option<Id>)> = core
        .hooks()
        .live()
        .ids()
        .into_iter()
        .filter_map(|id| {
            let span = core.get(id)?;
            Some((id, (span.span_id(), span.parent_id())))
        })
        .collect();
    let mut children: HashMap<Id, usize> = HashMap::new();
    for (_, parent) in spans.values() {
        if let Some(p) = parent.filter(|p| spans.contains_key(p)) {
            *children.entry(p).or_default() += 1;
        }
    }
    let mut ready: Vec<Id> = spans
        .keys()
        .filter(|id| !children.contains_key(id))
        .copied()
        .collect();
    while let Some(id) = ready.pop() {
        let (span_id, parent) = spans[&id];
        close_now(core, id, span_id);
        if let Some(p) = parent {
            if let Some(n) = children.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    ready.push(p);
                }
            }
        }
    }
}

/// Releases every reference span `id` (by identity, `span_id`) still has,
/// so that it ends and closes now.
fn close_now(core: &Core, id: Id, span_id: u64) {
    while core.get(id).is_some_and(|s| s.span_id() == span_id) {
        if !matches!(core.try_close(id), Ok(false)) {
            break;
        }
    }
}

/// Lets the garbage collector see what the open spans' extensions hold: a
/// handle kept in its own span's extensions is then a cycle it can collect.
pub(crate) fn traverse(
    core: &Core,
    visit: &pyo3::PyVisit<'_>,
) -> Result<(), pyo3::PyTraverseError> {
    for id in core.hooks().live().ids() {
        if let Some(span) = core.get(id) {
            if let Some(dict) = span.ext().extensions_if_made() {
                visit.call(dict)?;
            }
        }
    }
    Ok(())
}

/// The collector breaking a cycle through the registry: the open spans'
/// extensions are emptied first, while the layers are still there to see
/// what that closes (a handle kept in its own span's extensions).
pub(crate) fn clear(py: Python<'_>, core: &Core) {
    let dicts: Vec<Py<pyo3::types::PyDict>> = core
        .hooks()
        .live()
        .ids()
        .into_iter()
        .filter_map(|id| Some(core.get(id)?.ext().extensions_if_made()?.clone_ref(py)))
        .collect();
    // Cleared outside every slab guard: finalizers run here.
    for dict in dicts {
        dict.bind(py).clear();
    }
}
