//! Scale: a million live spans and the million after them in the same
//! memory, create/close cycles with flat resident memory (SPEC P9), and 64
//! threads of random operations that end with nothing live (R9, R11).
//!
//! Resident memory is read from `/proc/self/status`; the tests that measure
//! it hold [`QUIET`] so that no other test of this binary allocates
//! meanwhile. The slow variant is ignored by default and meant for release
//! builds:
//!
//! ```text
//! cargo test -p pykregistry-core --test scale -- --nocapture
//! cargo test -p pykregistry-core --release --test scale -- --ignored --nocapture
//! ```

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex, MutexGuard, PoisonError};
use std::thread;

use common::{attrs, root, XorShift};
use pykregistry_core::{
    Config, DefaultConfig, Hooks, Id, NoHooks, Parent, Registry, SpanData, SpanStack, Value,
};
use tracing_core::dispatcher::{self, Dispatch};

/// Held by every test here, so that memory is measured while nothing else
/// in this binary runs.
static QUIET: Mutex<()> = Mutex::new(());

fn quiet() -> MutexGuard<'static, ()> {
    QUIET.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process's resident memory, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

const MIB: usize = 1024 * 1024;

/// The slot part of an ID: the key without its generation (the key's top
/// bits, sharded-slab's layout with `DefaultConfig`).
fn slot_of(id: Id) -> u64 {
    let generation_bits = Registry::<NoHooks, DefaultConfig>::GENERATIONS.count_ones();
    let slot_bits = 64 - DefaultConfig::RESERVED_BITS as u32 - generation_bits;
    (id.into_u64() - 1) & ((1 << slot_bits) - 1)
}

/// Creates `ids.len()` live spans with a field each, every tenth a child of
/// the one before, into `ids` (already resident, so filling it allocates
/// nothing).
fn fill(registry: &Registry, ids: &mut [u64]) {
    for i in 0..ids.len() {
        let parent = if i % 10 == 9 {
            Parent::Explicit(Id::from_u64(ids[i - 1]).unwrap())
        } else {
            Parent::Root
        };
        let id = registry
            .new_span(&attrs("million"), parent, |fields, ()| {
                fields.push(("i".into(), Value::I64(i64::try_from(i).unwrap())));
            })
            .expect("new_span");
        ids[i] = id.into_u64();
    }
}

/// Closes every handle in `ids`.
fn close(registry: &Registry, ids: &[u64]) {
    for &id in ids {
        registry
            .try_close(Id::from_u64(id).unwrap())
            .expect("a held handle");
    }
}

#[test]
fn a_million_live_spans_then_the_next_million_in_the_same_memory() {
    const N: usize = 1_000_000;
    let _quiet = quiet();
    let registry = Registry::new();
    // Touched up front (not zeroed pages, which stay unmapped until written).
    let mut first = vec![1u64; N];
    let mut second = vec![1u64; N];

    let before_first = rss();
    fill(&registry, &mut first);
    assert_eq!(registry.len(), N);
    let grown_by_first = rss().saturating_sub(before_first);
    close(&registry, &first);
    assert_eq!(registry.len(), 0, "all closed");

    let before_second = rss();
    fill(&registry, &mut second);
    assert_eq!(registry.len(), N);
    let grown_by_second = rss().saturating_sub(before_second);
    eprintln!(
        "1,000,000 live spans: first million +{} KiB resident, second million +{} KiB",
        grown_by_first / 1024,
        grown_by_second / 1024,
    );

    // The second million took slots the first freed, with new generations.
    let first_slots: HashSet<u64> = first
        .iter()
        .map(|&id| slot_of(Id::from_u64(id).unwrap()))
        .collect();
    assert_eq!(first_slots.len(), N, "a million distinct slots");
    let old: HashSet<u64> = first.iter().copied().collect();
    for &id in &second {
        assert!(
            first_slots.contains(&slot_of(Id::from_u64(id).unwrap())),
            "{id} is in a slot the first million did not use: the slab grew"
        );
        assert!(!old.contains(&id), "{id} was reissued");
    }
    assert!(
        grown_by_first > 50 * MIB,
        "the first million should have cost memory ({grown_by_first} bytes): is RSS measured?"
    );
    assert!(
        grown_by_second <= 2 * MIB,
        "the second million grew resident memory by {grown_by_second} bytes"
    );

    close(&registry, &second);
    assert_eq!(registry.len(), 0);
}

/// Runs `n` cycles of a root, a child with a field, enter and exit of the
/// child on a stack, record, and closes, and returns resident memory growth
/// after a warm-up of `n / 10` cycles.
fn cycles(n: usize) -> usize {
    let registry = Registry::new();
    let mut stack = SpanStack::default();
    let cycle = |stack: &mut SpanStack| {
        let parent = root(&registry, "cycle");
        let child = registry
            .new_span(&attrs("child"), Parent::Explicit(parent), |fields, ()| {
                fields.push(("k".into(), Value::Str("v".into())));
            })
            .unwrap();
        if stack.push(child) {
            registry.clone_span(child).unwrap();
        }
        registry.record(child, [("k", Value::I64(1))]).unwrap();
        assert_eq!(registry.try_close(parent), Ok(false));
        assert_eq!(registry.try_close(child), Ok(false));
        assert!(stack.pop(child));
        assert_eq!(
            registry.try_close(child),
            Ok(true),
            "closes child and parent"
        );
    };
    for _ in 0..n / 10 {
        cycle(&mut stack);
    }
    let before = rss();
    for _ in n / 10..n {
        cycle(&mut stack);
    }
    assert!(registry.is_empty());
    rss().saturating_sub(before)
}

#[test]
fn a_million_create_close_cycles_keep_resident_memory_flat() {
    let _quiet = quiet();
    let grown = cycles(1_000_000);
    eprintln!("1,000,000 cycles: resident memory +{grown} bytes");
    assert!(grown <= MIB, "resident memory grew by {grown} bytes");
}

#[test]
#[ignore = "10,000,000 cycles: run in release (see the module docs)"]
fn ten_million_create_close_cycles_keep_resident_memory_flat() {
    let _quiet = quiet();
    let grown = cycles(10_000_000);
    eprintln!("10,000,000 cycles: resident memory +{grown} bytes");
    assert!(grown <= MIB, "P9: resident memory grew by {grown} bytes");
}

// === 64 threads ===

/// Counts spans created and closed.
#[derive(Debug, Default)]
struct Counts {
    closed: AtomicUsize,
}

impl Hooks for Counts {
    type Ext = ();

    fn on_close<C: Config + 'static>(&self, _: &Registry<Self, C>, _: Id, _: &SpanData<()>) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One thread's random operations through `tracing-core` (so entering uses
/// the thread's own stack): create with every kind of parent, clone, close,
/// enter, exit, record; handles move between threads through `pool`. Some
/// threads end with spans still entered, which their end must release
/// (R11). Returns how many spans it created.
fn worker(registry: &Registry<Counts>, pool: &Mutex<Vec<Id>>, seed: u64, ops: usize) -> usize {
    let dispatch = Dispatch::new(registry.clone());
    dispatcher::with_default(&dispatch, || {
        let mut rng = XorShift::new(seed);
        let mut handles: Vec<Id> = Vec::new();
        let mut entered: Vec<Id> = Vec::new();
        let mut created = 0;
        let meta = attrs("thread");
        for _ in 0..ops {
            let pick = |rng: &mut XorShift, v: &[Id]| v[rng.below(v.len())];
            match rng.below(14) {
                0 | 1 => {
                    let parent = match rng.below(3) {
                        0 => Parent::Root,
                        1 => Parent::Contextual(registry.thread_current()),
                        _ if !handles.is_empty() => Parent::Explicit(pick(&mut rng, &handles)),
                        _ => Parent::Root,
                    };
                    handles.push(
                        registry
                            .new_span(&meta, parent, |_, ()| {})
                            .expect("new_span"),
                    );
                    created += 1;
                }
                2 if !handles.is_empty() => {
                    let id = pick(&mut rng, &handles);
                    handles.push(registry.clone_span(id).expect("a held span is live"));
                }
                3..=5 if !handles.is_empty() => {
                    let id = handles.swap_remove(rng.below(handles.len()));
                    registry.try_close(id).expect("a held handle");
                }
                6 | 7 if !handles.is_empty() => {
                    let id = pick(&mut rng, &handles);
                    dispatch.enter(&id.into());
                    entered.push(id);
                }
                8 | 9 if !entered.is_empty() => {
                    let id = entered.swap_remove(rng.below(entered.len()));
                    dispatch.exit(&id.into());
                }
                10 if !handles.is_empty() => {
                    let id = pick(&mut rng, &handles);
                    registry.record(id, [("n", Value::I64(1))]).expect("live");
                }
                11 if !handles.is_empty() => {
                    let id = handles.swap_remove(rng.below(handles.len()));
                    pool.lock().unwrap().push(id);
                }
                12 => {
                    let mut pool = pool.lock().unwrap();
                    if !pool.is_empty() {
                        let at = rng.below(pool.len());
                        handles.push(pool.swap_remove(at));
                    }
                }
                _ => {}
            }
        }
        for id in handles {
            registry.try_close(id).expect("a held handle");
        }
        // Half the threads exit what they entered; the others end with it
        // entered, for the thread's end to release.
        if seed % 2 == 0 {
            for id in entered.into_iter().rev() {
                dispatch.exit(&id.into());
            }
        }
        created
    })
}

#[test]
fn sixty_four_threads_of_random_operations_end_with_nothing_live() {
    const THREADS: usize = 64;
    const OPS: usize = 3_000;
    let _quiet = quiet();
    let registry = Registry::with_hooks(Counts::default());
    let pool = Mutex::new(Vec::new());
    let start = Barrier::new(THREADS);
    let created: usize = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (registry, pool, start) = (&registry, &pool, &start);
                s.spawn(move || {
                    start.wait();
                    worker(registry, pool, t as u64, OPS)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    // Handles left in the pool are released here, on another thread.
    for id in pool.into_inner().unwrap() {
        registry.try_close(id).expect("a pooled handle");
    }
    eprintln!("64 threads: {created} spans created");
    assert!(created > THREADS * OPS / 10, "the threads did work");
    assert_eq!(registry.len(), 0, "R9/R11: nothing held, nothing live");
    assert_eq!(
        registry.hooks().closed.load(Ordering::Relaxed),
        created,
        "every span closed exactly once"
    );
}
