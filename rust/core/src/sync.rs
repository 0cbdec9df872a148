//! The synchronization primitives of the reference-count and close protocol:
//! std's, or loom's when built with `--cfg loom`, so that loom's model
//! checker sees every atomic the protocol uses (span counts, the live-span
//! count, the orphan flag and list) and explores their interleavings
//! (`tests/loom.rs`).
//!
//! Deliberately left on std under loom:
//!
//! - the seat counter and the live-count stripe picker (`seat.rs`,
//!   `registry.rs`): sharded-slab's thread registration is std's here (see
//!   `tests/loom.rs` for why), so every loom thread is one slab thread, and
//!   one seat is the faithful model of that;
//! - a span's field lock: it is never held across another synchronizing
//!   operation, so it adds no interleaving worth exploring, and it is part
//!   of the public API ([`crate::SpanData::lock_fields`]).
//! - the registry's `tracestate` table: the same holds for its lock, which
//!   only spans continuing a remote parent with a `tracestate` take.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicBool, AtomicIsize, AtomicU32, AtomicUsize},
    Arc, Mutex,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicBool, AtomicIsize, AtomicU32},
    Arc, Mutex,
};

/// Under loom, a synchronizing step that loom can see, taken just before
/// each slab operation: sharded-slab runs on std atomics here (see
/// `tests/loom.rs`), so without it loom would not know that a lookup and
/// the close that clears the same slot conflict, and would not explore both
/// orders. The steps are relaxed: they tell loom where the slab is touched
/// without lending the protocol any ordering it does not make itself.
/// Outside loom it is empty and costs nothing.
#[derive(Debug, Default)]
pub(crate) struct SlabSteps {
    #[cfg(loom)]
    step: AtomicUsize,
}

impl SlabSteps {
    /// Before a slab operation that only reads (a lookup).
    #[inline]
    #[cfg_attr(not(loom), allow(clippy::unused_self))]
    pub(crate) fn read(&self) {
        #[cfg(loom)]
        self.step.load(std::sync::atomic::Ordering::Relaxed);
    }

    /// Before a slab operation that writes (creating or clearing a slot).
    #[inline]
    #[cfg_attr(not(loom), allow(clippy::unused_self))]
    pub(crate) fn write(&self) {
        #[cfg(loom)]
        self.step.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
