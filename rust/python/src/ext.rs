//! What the bindings keep with each span besides the core's data: timings
//! and the user's extensions dict.
//!
//! Timings use the TSC through `quanta` where it is reliable (about 10 ns a
//! read, against 25 ns for `clock_gettime`): a span reads the clock when it
//! is created, entered, exited and ended. Its start is converted to
//! wall-clock time once, at creation, from an anchor (a raw reading and the
//! wall time taken together), so it never changes and costs no extra clock
//! read; its end is that start plus its busy and idle time, which are raw
//! differences (a wall clock stepped meanwhile changes neither its duration
//! nor its order). The anchor is taken again when a conversion finds it
//! more than a second old: the TSC's rate is known only to a few parts per
//! million, and the wall clock is slewed and stepped by NTP, so one anchor
//! for the process's life would drift away from `time.time_ns()` (and from
//! the other services' spans a collector puts beside ours).

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use pykregistry_core::Level;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

/// A raw reading and the wall time (ns since the epoch) taken with it.
#[derive(Clone, Copy)]
struct Anchor {
    raw: u64,
    wall_ns: u64,
}

/// How long an anchor serves before conversions take a new one.
const ANCHOR_LIFE_NS: u64 = 1_000_000_000;

struct Clock {
    source: quanta::Clock,
    /// A sequence lock over the current anchor: odd while it is moved (a
    /// conversion that meets it moving takes its own, and never waits).
    seq: AtomicU64,
    raw: AtomicU64,
    wall_ns: AtomicU64,
    /// Added to the wall clock's reading: `_shift_wall_clock`, for tests of
    /// a clock stepped under a running program.
    shift_ns: AtomicU64,
}

static CLOCK: OnceLock<Clock> = OnceLock::new();

fn clock() -> &'static Clock {
    CLOCK.get_or_init(|| {
        let source = quanta::Clock::new();
        let first = paired(&source, 0);
        Clock {
            source,
            seq: AtomicU64::new(0),
            raw: AtomicU64::new(first.raw),
            wall_ns: AtomicU64::new(first.wall_ns),
            shift_ns: AtomicU64::new(0),
        }
    })
}

/// The wall clock, ns since the epoch, plus `shift` (wrapping: a shift
/// back is a large number).
fn system_ns(shift: u64) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .wrapping_add(shift)
}

/// An anchor taken now from `source` and the wall clock (plus `shift`):
/// the wall clock read between two raw readings, paired with their
/// midpoint. A thread preempted in between would pair them tens of
/// microseconds apart, so of three tries the closest pair is kept.
fn paired(source: &quanta::Clock, shift: u64) -> Anchor {
    let take = || {
        let before = source.raw();
        let wall_ns = system_ns(shift);
        let gap = source.raw().saturating_sub(before);
        let raw = before + gap / 2;
        (gap, Anchor { raw, wall_ns })
    };
    let (mut closest, mut best) = take();
    for _ in 1..3 {
        let (gap, anchor) = take();
        if gap < closest {
            (closest, best) = (gap, anchor);
        }
    }
    best
}

impl Clock {
    /// The current anchor, read without a lock or a wait.
    fn anchor(&self) -> Anchor {
        let seq = self.seq.load(Ordering::Acquire);
        let anchor = Anchor {
            raw: self.raw.load(Ordering::Relaxed),
            wall_ns: self.wall_ns.load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        if seq & 1 == 0 && self.seq.load(Ordering::Relaxed) == seq {
            anchor
        } else {
            self.fresh()
        }
    }

    /// An anchor taken now.
    fn fresh(&self) -> Anchor {
        paired(&self.source, self.shift_ns.load(Ordering::Relaxed))
    }

    /// A new anchor, unless another thread is taking one.
    fn reanchor(&self, seq: u64) {
        if seq & 1 != 0
            || self
                .seq
                .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        let Anchor { raw, wall_ns } = self.fresh();
        self.raw.store(raw, Ordering::Relaxed);
        self.wall_ns.store(wall_ns, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }
}

/// A raw monotonic reading.
#[inline]
pub(crate) fn now() -> u64 {
    clock().source.raw()
}

/// Wall-clock time (ns since the epoch) of raw reading `raw`, from the
/// current anchor, or from a new one when `raw` is more than
/// [`ANCHOR_LIFE_NS`] past it.
pub(crate) fn wall(raw: u64) -> u64 {
    let c = clock();
    let seq = c.seq.load(Ordering::Relaxed);
    let mut anchor = c.anchor();
    if raw >= anchor.raw {
        let since = c.source.delta_as_nanos(anchor.raw, raw);
        if since <= ANCHOR_LIFE_NS {
            return anchor.wall_ns.saturating_add(since);
        }
        c.reanchor(seq);
        anchor = c.anchor();
    }
    if raw >= anchor.raw {
        anchor.wall_ns.saturating_add(nanos(anchor.raw, raw))
    } else {
        anchor.wall_ns.saturating_sub(nanos(raw, anchor.raw))
    }
}

/// Tests: from now on the wall clock reads `shift_ns` later (earlier when
/// negative), as if it had been stepped; anchors taken from now on see it.
#[pyfunction]
pub(crate) fn _shift_wall_clock(shift_ns: i64) {
    clock().shift_ns.store(
        u64::from_ne_bytes(shift_ns.to_ne_bytes()),
        Ordering::Relaxed,
    );
}

/// Nanoseconds from raw reading `from` to raw reading `to`, never negative.
fn nanos(from: u64, to: u64) -> u64 {
    if to <= from {
        return 0;
    }
    clock().source.delta_as_nanos(from, to)
}

/// Per-span data of the bindings. Reset to its default when the slot is
/// cleared, which drops the extensions dict.
pub(crate) struct SpanExt {
    /// Wall-clock time at creation, ns since the epoch: converted then, so
    /// that it never changes (see [`wall`]).
    start_wall_ns: u64,
    /// Raw reading at the last change between busy and idle.
    last: AtomicU64,
    /// Live entries in any context; busy while > 0.
    entered: AtomicU32,
    /// Owners (contexts) holding the span through an entry besides
    /// `holder` (see `context`).
    others: AtomicU32,
    /// The serial of a context holding the span through an entry, or 0:
    /// the O(1) duplicate check of R5 (P13).
    holder: AtomicU64,
    busy: AtomicU64,
    idle: AtomicU64,
    /// Raw reading at the span's end (R14); 0 until then.
    ended: AtomicU64,
    extensions: PyOnceLock<Py<PyDict>>,
    /// The most verbose level a filter's span directive enables inside this
    /// span (inherited from its parent, or matched by the span itself).
    pub(crate) scope: Option<Level>,
    /// The span's place among its registry's open spans (`live`).
    pub(crate) live_at: u32,
    /// `threading.get_ident()` of the thread that made the span.
    pub(crate) thread_id: u64,
    /// The name of the asyncio task that made it, when a layer that needs
    /// it was attached (see `tracks`).
    pub(crate) task: Option<std::sync::Arc<str>>,
}

impl Default for SpanExt {
    fn default() -> Self {
        SpanExt {
            start_wall_ns: 0,
            last: AtomicU64::new(0),
            entered: AtomicU32::new(0),
            others: AtomicU32::new(0),
            holder: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            idle: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            extensions: PyOnceLock::new(),
            scope: None,
            live_at: crate::live::NOWHERE,
            thread_id: 0,
            task: None,
        }
    }
}

/// A span's timings, in nanoseconds.
#[derive(Debug, Clone, Copy)]
#[allow(clippy::struct_field_names)] // the names of the Python properties
pub(crate) struct Timings {
    pub(crate) start_time_ns: u64,
    pub(crate) end_time_ns: Option<u64>,
    pub(crate) busy_ns: u64,
    pub(crate) idle_ns: u64,
}

impl SpanExt {
    /// Called with exclusive access when the span is created. `scope` is the
    /// span-directive level its subtree inherits; `thread_id` and `task`
    /// where it is made.
    pub(crate) fn start(
        &mut self,
        scope: Option<Level>,
        thread_id: u64,
        task: Option<std::sync::Arc<str>>,
    ) {
        self.scope = scope;
        self.thread_id = thread_id;
        self.task = task;
        let t = now();
        self.start_wall_ns = wall(t);
        *self.last.get_mut() = t;
    }

    /// A context entered the span. Updates run under the GIL, so plain
    /// loads and stores suffice; atomics make the type `Sync`.
    pub(crate) fn on_enter(&self) {
        let n = self.entered.load(Ordering::Relaxed);
        self.entered.store(n + 1, Ordering::Relaxed);
        if n == 0 {
            self.switch(&self.idle, now());
        }
    }

    /// A context exited the span.
    pub(crate) fn on_exit(&self) {
        let n = self.entered.load(Ordering::Relaxed);
        if n == 0 {
            return;
        }
        self.entered.store(n - 1, Ordering::Relaxed);
        if n == 1 {
            self.switch(&self.busy, now());
        }
    }

    /// R5: whether the context with serial `owner` holds the span through
    /// an entry, as its recorded holder.
    #[inline]
    pub(crate) fn claimed_by(&self, owner: u64) -> bool {
        self.holder.load(Ordering::Relaxed) == owner
    }

    /// Whether contexts besides the recorded holder hold the span (then
    /// the duplicate check asks the context itself).
    #[inline]
    pub(crate) fn shared(&self) -> bool {
        self.others.load(Ordering::Relaxed) > 0
    }

    /// The context `owner` now holds the span; whether it is the recorded
    /// holder.
    pub(crate) fn claim(&self, owner: u64) -> bool {
        if self.holder.load(Ordering::Relaxed) == 0 {
            self.holder.store(owner, Ordering::Relaxed);
            true
        } else {
            let n = self.others.load(Ordering::Relaxed);
            self.others.store(n + 1, Ordering::Relaxed);
            false
        }
    }

    /// A context stopped holding the span.
    pub(crate) fn unclaim(&self, recorded: bool) {
        if recorded {
            self.holder.store(0, Ordering::Relaxed);
        } else {
            let n = self.others.load(Ordering::Relaxed);
            self.others.store(n.saturating_sub(1), Ordering::Relaxed);
        }
    }

    /// R14: the span ends: the current stretch counts as busy or idle,
    /// and its end time and durations are fixed from now on. Whether this
    /// call ended it (a span ends once).
    pub(crate) fn end(&self) -> bool {
        if self.ended.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let t = now();
        let open = if self.entered.load(Ordering::Relaxed) > 0 {
            &self.busy
        } else {
            &self.idle
        };
        self.switch(open, t);
        self.ended.store(t.max(1), Ordering::Relaxed);
        true
    }

    /// Adds the time since the last switch to `total`, and marks `t`.
    fn switch(&self, total: &AtomicU64, t: u64) {
        if self.ended.load(Ordering::Relaxed) != 0 {
            return; // fixed at the end (R14)
        }
        let last = self.last.load(Ordering::Relaxed);
        self.last.store(t, Ordering::Relaxed);
        total.store(
            total.load(Ordering::Relaxed) + nanos(last, t),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn timings(&self) -> Timings {
        let ended = self.ended.load(Ordering::Relaxed);
        let mut busy = self.busy.load(Ordering::Relaxed);
        let mut idle = self.idle.load(Ordering::Relaxed);
        if ended == 0 {
            // Not ended: include the stretch in progress.
            let since = nanos(self.last.load(Ordering::Relaxed), now());
            if self.entered.load(Ordering::Relaxed) > 0 {
                busy += since;
            } else {
                idle += since;
            }
        }
        Timings {
            start_time_ns: self.start_wall_ns,
            // Its start plus its life on the monotonic clock, so that a
            // wall clock stepped meanwhile changes neither its duration nor
            // its order, and end - start is busy + idle.
            end_time_ns: (ended != 0).then(|| self.start_wall_ns.saturating_add(busy + idle)),
            busy_ns: busy,
            idle_ns: idle,
        }
    }

    /// The extensions dict, if it has been made: for the garbage
    /// collector's traversal, which may make nothing.
    pub(crate) fn extensions_if_made(&self) -> Option<&Py<PyDict>> {
        // SAFETY: the collector traverses holding the GIL; this reads a
        // stored pointer and calls no Python API.
        self.extensions.get(unsafe { Python::assume_attached() })
    }

    /// The extensions dict, made on first use. R15: made before it is
    /// stored, not inside a once-initializer: the allocation may run a
    /// finalizer that asks for the same dict (it then makes its own, and the
    /// first one stored wins).
    pub(crate) fn extensions<'py>(&self, py: Python<'py>) -> Bound<'py, PyDict> {
        if let Some(dict) = self.extensions.get(py) {
            return dict.bind(py).clone();
        }
        let made = PyDict::new(py).unbind();
        // `set` fails only if a finalizer stored one meanwhile: use that.
        let _ = self.extensions.set(py, made);
        self.extensions
            .get(py)
            .expect("set just now")
            .bind(py)
            .clone()
    }
}
