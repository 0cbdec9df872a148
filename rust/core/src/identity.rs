//! R13: span and trace identity — a 64-bit span id and a 128-bit trace id
//! (the sizes of W3C trace context) that, unlike registry IDs (R1), never
//! recur within a process.
//!
//! # How ids are made
//!
//! Ids are a process-wide counter run through keyed permutations of `u64`:
//!
//! - a permutation is a bijection, so distinct counter values give distinct
//!   ids: within a process (while the key is unchanged) no id recurs, which
//!   random draws alone could not promise;
//! - the key is drawn from the operating system, so ids look random, differ
//!   from run to run and say nothing about order or about how many spans a
//!   process made (to a casual reader: this is not cryptography);
//! - each thread takes its counter values in blocks of [`BLOCK`] from one
//!   global atomic, so threads do not contend for a cache line per id.
//!
//! # Fork
//!
//! A forked child inherits its parent's counter and key, and would repeat
//! the ids its parent makes after the fork. [`reseed`] draws a new key: call
//! it in the child (the Python bindings do, through
//! `os.register_at_fork(after_in_child=...)`). From then on an id of the
//! child equals one of the parent only by chance, as two random 64-bit
//! numbers would.
//!
//! # Why the permutation is a bijection
//!
//! [`Permutation::apply`] composes steps that are each bijections of
//! `u64`, and a composition of bijections is a bijection:
//!
//! - `x ^ k` (xor with a key) is its own inverse;
//! - `x ^ (x >> s)` for `s >= 1` keeps the top `s` bits, from which the
//!   next `s` bits are recovered, and so on down: it is inverted by
//!   repeating `y ^ (x >> s)` until every bit is known;
//! - `x * m` modulo `2**64` for an odd `m` is inverted by multiplying with
//!   `m`'s inverse modulo `2**64`, which exists because `m` is odd.
//!
//! The unit tests below invert it step by step and check the round trip.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many counter values a thread takes from the global counter at once.
const BLOCK: u64 = 1024;

/// The next counter value not yet handed to a thread. At a billion ids per
/// second it would wrap after 584 years.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The key every permutation is derived from; 0 until first used.
static SEED: AtomicU64 = AtomicU64::new(0);

/// Domains: one permutation per use of the counter, keyed differently.
const SPAN: u64 = 0x5350_414e_5f49_4430; // "SPAN_ID0"
const TRACE_HIGH: u64 = 0x5452_4143_455f_4849; // "TRACE_HI"
const TRACE_LOW: u64 = 0x5452_4143_455f_4c4f; // "TRACE_LO"

/// A keyed bijection of `u64` that looks random: two rounds of xoring a key
/// and mixing (see the module docs for why it is a bijection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Permutation([u64; 2]);

/// What a thread keeps: its block of counter values, and the permutations
/// for the key they were derived from.
#[derive(Clone, Copy)]
struct Local {
    /// The next counter value of the block; `end` when the block is used up.
    next: u64,
    end: u64,
    /// The [`SEED`] the permutations below were derived from (0: none yet).
    seed: u64,
    span: Permutation,
    trace_high: Permutation,
    trace_low: Permutation,
}

thread_local! {
    // Const-initialized and without a destructor: usable at any time,
    // including from other thread-locals' destructors as the thread ends.
    static LOCAL: Cell<Local> = const { Cell::new(Local::EMPTY) };
}

/// R13: a new span id: never 0, and never the same as another span id of
/// this process, on any thread, unless [`reseed`] ran in between (then equal
/// only by chance, as two random 64-bit numbers are).
#[must_use]
pub fn next_span_id() -> u64 {
    with_local(|local| loop {
        // Exactly one counter value maps to 0; it is skipped.
        let id = local.span.apply(local.take());
        if id != 0 {
            return id;
        }
    })
}

/// R13: a new trace id, for a root that starts a trace: never 0, and never
/// the same as another trace id this function returned in this process
/// (with the same caveat about [`reseed`] as [`next_span_id`]).
///
/// Its high and low halves are one fresh counter value through two
/// differently keyed permutations; the high half alone is already unique.
#[must_use]
pub fn new_trace_id() -> u128 {
    with_local(|local| loop {
        let n = local.take();
        let id =
            (u128::from(local.trace_high.apply(n)) << 64) | u128::from(local.trace_low.apply(n));
        if id != 0 {
            return id;
        }
    })
}

/// R13: draws a new key from the operating system. Call it in a forked child
/// (before it starts threads), so that the child's ids and its parent's
/// differ: they then collide only as two random 64-bit numbers would.
///
/// Calling it at any other time is harmless but weakens the guarantee the
/// same way: ids made under the old key and under the new one are distinct
/// only with overwhelming probability, not by construction.
pub fn reseed() {
    SEED.store(draw_seed(), Ordering::Relaxed);
}

/// Runs `f` on this thread's block and permutations, refreshed if the key
/// changed. Without the thread-local (never, in practice), one counter value
/// at a time.
fn with_local<R>(f: impl Fn(&mut Local) -> R) -> R {
    let seed = seed();
    LOCAL
        .try_with(|cell| {
            let mut local = cell.get();
            if local.seed != seed {
                local.rekey(seed);
            }
            let r = f(&mut local);
            cell.set(local);
            r
        })
        .unwrap_or_else(|_| {
            let mut local = Local::EMPTY;
            local.rekey(seed);
            local.next = COUNTER.fetch_add(1, Ordering::Relaxed);
            local.end = local.next + 1;
            f(&mut local)
        })
}

/// The current key, drawn on first use. Lock-free, so that it cannot
/// deadlock in a child forked while another thread was drawing: the thread
/// that publishes first wins, and every thread uses its key.
#[inline]
fn seed() -> u64 {
    match SEED.load(Ordering::Relaxed) {
        0 => first_seed(),
        seed => seed,
    }
}

#[cold]
fn first_seed() -> u64 {
    let drawn = draw_seed();
    match SEED.compare_exchange(0, drawn, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => drawn,
        Err(published) => published,
    }
}

/// A nonzero key from the operating system's random source. Should that
/// fail, a key from the clock, the process and thread and `std`'s
/// randomly seeded hasher: unique ids still, only less unpredictable.
fn draw_seed() -> u64 {
    let seed = getrandom::u64().unwrap_or_else(|_| {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        std::time::SystemTime::now().hash(&mut h);
        std::time::Instant::now().hash(&mut h);
        std::process::id().hash(&mut h);
        std::thread::current().id().hash(&mut h);
        COUNTER.load(Ordering::Relaxed).hash(&mut h);
        h.finish()
    });
    if seed == 0 {
        SPAN
    } else {
        seed
    }
}

// === impl Local ===

impl Local {
    const EMPTY: Local = Local {
        next: 0,
        end: 0,
        seed: 0,
        span: Permutation([0; 2]),
        trace_high: Permutation([0; 2]),
        trace_low: Permutation([0; 2]),
    };

    fn rekey(&mut self, seed: u64) {
        self.seed = seed;
        self.span = Permutation::derive(seed, SPAN);
        self.trace_high = Permutation::derive(seed, TRACE_HIGH);
        self.trace_low = Permutation::derive(seed, TRACE_LOW);
    }

    /// The next counter value of this thread's block, taking a new block
    /// when it is used up. Every value is handed out once in the process.
    #[inline]
    fn take(&mut self) -> u64 {
        if self.next == self.end {
            self.next = COUNTER.fetch_add(BLOCK, Ordering::Relaxed);
            self.end = self.next + BLOCK;
        }
        let n = self.next;
        self.next += 1;
        n
    }
}

// === impl Permutation ===

impl Permutation {
    /// The permutation of `domain` under `seed`: round keys that differ
    /// unpredictably between domains and seeds.
    fn derive(seed: u64, domain: u64) -> Self {
        let k0 = mix(seed ^ domain);
        Permutation([k0, mix(k0 ^ domain.rotate_left(32))])
    }

    /// Applies the permutation: a bijection of `u64`.
    #[inline]
    fn apply(self, x: u64) -> u64 {
        let [k0, k1] = self.0;
        mix(mix(x ^ k0) ^ k1)
    }
}

/// A bijective mixer with good avalanche: xorshifts and odd multipliers (the
/// constants of Stafford's "Mix13" variant, as used by `SplitMix64`).
#[inline]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(M1);
    x ^= x >> 27;
    x = x.wrapping_mul(M2);
    x ^ (x >> 31)
}

const M1: u64 = 0xbf58_476d_1ce4_e5b9;
const M2: u64 = 0x94d0_49bb_1331_11eb;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The inverse of `x ^ (x >> s)`: the top `s` bits are right, and each
    /// pass fixes `s` more.
    fn unshift(y: u64, s: u32) -> u64 {
        let mut x = y;
        for _ in 0..64 / s {
            x = y ^ (x >> s);
        }
        x
    }

    /// The inverse of an odd `m` modulo `2**64`, by Newton's iteration:
    /// `m * m == 1 (mod 8)`, and each step doubles the correct low bits.
    fn inverse(m: u64) -> u64 {
        let mut inv = m;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(inv)));
        }
        inv
    }

    fn unmix(mut x: u64) -> u64 {
        x = unshift(x, 31);
        x = x.wrapping_mul(inverse(M2));
        x = unshift(x, 27);
        x = x.wrapping_mul(inverse(M1));
        unshift(x, 30)
    }

    fn invert(p: Permutation, y: u64) -> u64 {
        let [k0, k1] = p.0;
        unmix(unmix(y) ^ k1) ^ k0
    }

    #[test]
    fn r13_multiplier_inverses_are_inverses() {
        assert_eq!(M1.wrapping_mul(inverse(M1)), 1);
        assert_eq!(M2.wrapping_mul(inverse(M2)), 1);
    }

    #[test]
    fn r13_domains_key_differently() {
        let seed = 0x1234_5678_9abc_def0;
        let (a, b, c) = (
            Permutation::derive(seed, SPAN),
            Permutation::derive(seed, TRACE_HIGH),
            Permutation::derive(seed, TRACE_LOW),
        );
        assert!(a != b && b != c && a != c);
        assert_ne!(a, Permutation::derive(seed + 1, SPAN));
    }

    #[test]
    fn r13_block_hands_out_consecutive_values_then_a_new_block() {
        let mut local = Local::EMPTY;
        let first = local.take();
        for i in 1..BLOCK {
            assert_eq!(local.take(), first + i);
        }
        let next = local.take();
        assert!(next >= first + BLOCK, "a new block, not an overlap");
        assert_eq!(next % BLOCK, 0);
    }

    #[test]
    fn r13_reseed_changes_the_stream() {
        let _ = next_span_id();
        let before = LOCAL.with(Cell::get);
        let mut next = before;
        let would_be = next.span.apply(next.take());
        reseed();
        let id = next_span_id();
        assert_ne!(id, would_be, "the old key's id for the next counter value");
        let after = LOCAL.with(Cell::get);
        assert_ne!(after.seed, before.seed);
        assert_ne!(after.span, before.span);
        assert_eq!(id, after.span.apply(after.next - 1), "the new key's");
    }

    proptest! {
        #[test]
        fn r13_permutation_round_trips(seed: u64, domain: u64, x: u64) {
            let p = Permutation::derive(seed, domain);
            prop_assert_eq!(invert(p, p.apply(x)), x);
            prop_assert_eq!(unmix(mix(x)), x);
        }

        #[test]
        fn r13_permutation_is_injective(seed: u64, xs in prop::collection::hash_set(any::<u64>(), 2..64)) {
            let p = Permutation::derive(seed, SPAN);
            let ys: std::collections::HashSet<u64> = xs.iter().map(|&x| p.apply(x)).collect();
            prop_assert_eq!(ys.len(), xs.len());
        }

        #[test]
        fn r13_permutation_of_consecutive_inputs_differs_in_about_half_the_bits(seed: u64, x in 0..u64::MAX) {
            let p = Permutation::derive(seed, SPAN);
            let flipped = (p.apply(x) ^ p.apply(x + 1)).count_ones();
            // Not a statistical test: a gross failure of mixing (an identity-
            // like permutation) would flip one or two bits.
            prop_assert!((8..=56).contains(&flipped), "{} bits", flipped);
        }
    }
}
