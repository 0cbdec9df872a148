//! Tracks: where code runs, as the pictures draw it. One track per thread
//! and one per asyncio task, numbered from 1 in the order they are first
//! seen (numbers are never reused in a process), each with a label:
//! the thread's name, or the task's name and its coroutine's
//! (`"Task-3 handle_request"`).
//!
//! Looking up the current task costs a call or two into `_asyncio`, so it
//! is only done when a layer that needs tracks is attached (the registry's
//! `Layers::wants_tracks`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyWeakrefReference;

use crate::gil::GilCell;

/// A thread or an asyncio task.
#[derive(Debug, Clone)]
pub(crate) struct Track {
    /// Its number, from 1.
    pub(crate) id: u32,
    /// What the picture calls it.
    pub(crate) label: Arc<str>,
    /// The task's name, for a task.
    pub(crate) task: Option<Arc<str>>,
}

static NEXT: AtomicU32 = AtomicU32::new(1);

thread_local! {
    static THREAD: RefCell<Option<Track>> = const { RefCell::new(None) };
}

/// A task's track, by the task's address; `weak` tells a reused address
/// from the task that made the entry.
struct TaskTrack {
    weak: Py<PyWeakrefReference>,
    track: Track,
}

static TASKS: GilCell<Option<HashMap<usize, TaskTrack>>> = GilCell::new(None);
/// `TASKS`' size after its last sweep of finished tasks.
static SWEPT: AtomicU32 = AtomicU32::new(0);

static GET_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static CURRENT_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `threading.get_ident()` of the calling thread.
pub(crate) fn thread_ident() -> u64 {
    // SAFETY: takes no argument, reads the calling thread's id; any thread.
    unsafe { PyThread_get_thread_ident() }
}

extern "C" {
    fn PyThread_get_thread_ident() -> std::ffi::c_ulong;
}

/// The asyncio task running on this thread, if any: `None` without a
/// running loop, at the cost of one call.
fn current_task(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
    let get_loop = GET_LOOP
        .get_or_try_init(py, || -> PyResult<_> {
            Ok(py.import("asyncio")?.getattr("_get_running_loop")?.unbind())
        })
        .ok()?;
    let running = get_loop.bind(py).call0().ok()?;
    if running.is_none() {
        return None;
    }
    let current = CURRENT_TASK
        .get_or_try_init(py, || -> PyResult<_> {
            Ok(py.import("asyncio")?.getattr("current_task")?.unbind())
        })
        .ok()?;
    current
        .bind(py)
        .call1((running,))
        .ok()
        .filter(|t| !t.is_none())
}

/// The calling thread's track.
fn thread_track(py: Python<'_>) -> Track {
    // `try_with`: during the thread's teardown its storage is gone; a panic
    // must never reach Python (R15), the track is then made afresh.
    if let Some(t) = THREAD.try_with(|t| t.borrow().clone()).ok().flatten() {
        return t;
    }
    let name = py
        .import("threading")
        .and_then(|m| m.getattr("current_thread")?.call0()?.getattr("name"))
        .and_then(|n| n.extract::<String>())
        .unwrap_or_else(|_| format!("Thread {}", thread_ident()));
    let track = Track {
        id: NEXT.fetch_add(1, Ordering::Relaxed),
        label: name.into(),
        task: None,
    };
    let _ = THREAD.try_with(|t| *t.borrow_mut() = Some(track.clone()));
    track
}

/// The track of `task`, made on first sight.
fn task_track(py: Python<'_>, task: &Bound<'_, PyAny>) -> Track {
    let key = task.as_ptr() as usize;
    {
        let tasks = TASKS.0.borrow();
        if let Some(t) = tasks.as_ref().and_then(|m| m.get(&key)) {
            if t.weak.bind(py).upgrade().is_some_and(|o| o.is(task)) {
                return t.track.clone();
            }
        }
    }
    // Python code runs here (names, a weak reference): no borrow held.
    let name = task
        .call_method0("get_name")
        .and_then(|n| n.extract::<String>())
        .unwrap_or_else(|_| "Task".to_owned());
    let coro = task
        .call_method0("get_coro")
        .and_then(|c| c.getattr("__qualname__").or_else(|_| c.getattr("__name__")))
        .and_then(|n| n.extract::<String>())
        .ok();
    let name: Arc<str> = name.into();
    let label: Arc<str> = match coro {
        Some(coro) => format!("{name} {coro}").into(),
        None => name.clone(),
    };
    let track = Track {
        id: NEXT.fetch_add(1, Ordering::Relaxed),
        label,
        task: Some(name),
    };
    if let Ok(weak) = PyWeakrefReference::new(task) {
        let weak = weak.unbind();
        let mut tasks = TASKS.0.borrow_mut();
        let map = tasks.get_or_insert_with(HashMap::new);
        if map.len() as u32 > 2 * SWEPT.load(Ordering::Relaxed) + 64 {
            map.retain(|_, t| t.weak.bind(py).upgrade().is_some());
            SWEPT.store(map.len() as u32, Ordering::Relaxed);
        }
        // An entry replaced here is dropped after the borrow ends.
        let old = map.insert(
            key,
            TaskTrack {
                weak,
                track: track.clone(),
            },
        );
        drop(tasks);
        drop(old);
    }
    track
}

/// The track of the calling thread or task.
pub(crate) fn current(py: Python<'_>) -> Track {
    match current_task(py) {
        Some(task) => task_track(py, &task),
        None => thread_track(py),
    }
}
