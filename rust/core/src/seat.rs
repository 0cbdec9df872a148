//! Seats: how many threads may use the slab at once.
//!
//! sharded-slab gives each thread that touches a pool an index into its
//! shards. Past `MAX_SHARDS` live threads it still hands out indices its
//! shards cannot hold (the operation then panics), and once those threads
//! end it recycles the bad indices to *later* threads, which then fail
//! forever (hawkw/sharded-slab#62). So the registry takes a seat for a
//! thread before that thread's first slab operation, and refuses a seat
//! while too many are taken: the slab never hands out a bad index, a refused
//! thread gets [`Error::TooManyThreads`], and the thread indices freed when
//! threads end stay good.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use sharded_slab::Config;

use crate::Error;

/// Seats taken, across every registry: sharded-slab's thread indices are
/// process-wide.
static TAKEN: AtomicUsize = AtomicUsize::new(0);

struct Seat(Cell<bool>);

impl Drop for Seat {
    fn drop(&mut self) {
        if self.0.get() {
            TAKEN.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

thread_local! {
    static SEAT: Seat = const { Seat(Cell::new(false)) };
}

/// How many seats a slab of configuration `C` allows. sharded-slab keeps one
/// freed index back and thread-local destructors run in no set order, so a
/// few indices beyond the seats taken may be in use: leave a margin.
pub(crate) const fn seats<C: Config>() -> usize {
    let shards = (C::MAX_THREADS - 1).next_power_of_two();
    let margin = if shards / 4 < 16 { shards / 4 } else { 16 };
    let margin = if margin == 0 { 1 } else { margin };
    shards.saturating_sub(margin + 1)
}

/// Takes a seat for the calling thread if it has none.
pub(crate) fn take<C: Config>() -> Result<(), Error> {
    SEAT.try_with(|seat| {
        if seat.0.get() {
            return Ok(());
        }
        let taken = TAKEN.fetch_add(1, Ordering::AcqRel);
        if taken >= seats::<C>() {
            TAKEN.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::TooManyThreads);
        }
        seat.0.set(true);
        Ok(())
    })
    // The thread is ending and its seat is gone: it may not register anew.
    .unwrap_or(Err(Error::TooManyThreads))
}

/// Whether the calling thread holds a seat, without taking one.
pub(crate) fn held() -> bool {
    SEAT.try_with(|seat| seat.0.get()).unwrap_or(false)
}
