//! The rules under concurrency: threads released together by a `Barrier`
//! create, clone and close spans on each other's slab shards.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;

use common::{child, root, span, XorShift};
use pykregistry_core::{Config, Hooks, Id, Parent, Registry, SpanData};

const THREADS: usize = 8;

/// Counts closes.
#[derive(Debug, Default)]
struct CloseCount {
    closes: AtomicUsize,
}

impl Hooks for CloseCount {
    type Ext = ();

    fn on_close<C: Config + 'static>(&self, _: &Registry<Self, C>, _: Id, _: &SpanData<()>) {
        self.closes.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn r1_ids_are_unique_among_live_spans_across_threads() {
    const PER_THREAD: usize = 2_000;
    let registry = Registry::new();
    let start = Barrier::new(THREADS);
    let ids: Vec<Id> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (registry, start) = (&registry, &start);
                s.spawn(move || {
                    start.wait();
                    let mut mine = Vec::with_capacity(PER_THREAD);
                    let mut rng = XorShift::new(t as u64);
                    for i in 0..PER_THREAD {
                        let parent = if i == 0 || rng.below(2) == 0 {
                            Parent::Root
                        } else {
                            Parent::Explicit(mine[rng.below(mine.len())])
                        };
                        mine.push(span(registry, "t", parent));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(ids.iter().all(|id| id.into_u64() != 0));
    let distinct: HashSet<Id> = ids.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        THREADS * PER_THREAD,
        "two live spans shared an ID"
    );
    assert_eq!(registry.len(), THREADS * PER_THREAD);
    // Close them all from this thread: every other thread's shard.
    for id in ids {
        registry.try_close(id).unwrap();
    }
    assert_eq!(registry.len(), 0);
}

#[test]
fn r1_ids_closed_on_another_thread_are_not_reissued() {
    // Fill a page on one thread, close everything from another (the slots go
    // to the page's remote free list), then create again on both: the slots
    // are reused with new generations, so no old ID comes back.
    const N: usize = 64;
    let registry = Registry::new();
    let (tx_ids, rx_ids) = std::sync::mpsc::channel::<Vec<Id>>();
    let (tx_go, rx_go) = std::sync::mpsc::channel::<()>();
    let r = registry.clone();
    let owner = thread::spawn(move || {
        let first: Vec<Id> = (0..N).map(|_| root(&r, "first")).collect();
        tx_ids.send(first).unwrap();
        rx_go.recv().unwrap();
        (0..N).map(|_| root(&r, "second")).collect::<Vec<Id>>()
    });
    let first = rx_ids.recv().unwrap();
    let closer = {
        let r = registry.clone();
        let first = first.clone();
        thread::spawn(move || {
            for id in first {
                assert_eq!(r.try_close(id), Ok(true));
            }
        })
    };
    closer.join().unwrap();
    assert_eq!(registry.len(), 0);
    tx_go.send(()).unwrap();
    let second = owner.join().unwrap();
    let r = registry.clone();
    let third = thread::spawn(move || (0..N).map(|_| root(&r, "third")).collect::<Vec<Id>>())
        .join()
        .unwrap();
    let old: HashSet<Id> = first.iter().copied().collect();
    for id in second.iter().chain(&third) {
        assert!(!old.contains(id), "{id:?} was reissued");
        assert!(registry.get(*id).is_some());
    }
    let all: HashSet<Id> = second.iter().chain(&third).copied().collect();
    assert_eq!(all.len(), 2 * N);
    for id in second.into_iter().chain(third) {
        assert_eq!(registry.try_close(id), Ok(true));
    }
    assert_eq!(registry.len(), 0);
}

#[test]
fn r4_concurrent_closes_return_true_exactly_once() {
    const ROUNDS: usize = 300;
    let registry = Registry::<CloseCount>::with_hooks(CloseCount::default());
    let start = Barrier::new(THREADS + 1);
    let end = Barrier::new(THREADS + 1);
    let target = Mutex::new(None::<Id>);
    let trues = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    start.wait();
                    let id = target.lock().unwrap().unwrap();
                    // Each thread owns one of the span's THREADS references.
                    if registry.try_close(id).unwrap() {
                        trues.fetch_add(1, Ordering::Relaxed);
                    }
                    end.wait();
                }
            });
        }
        for round in 0..ROUNDS {
            let id = root(&registry, "contended");
            for _ in 1..THREADS {
                registry.clone_span(id).unwrap();
            }
            *target.lock().unwrap() = Some(id);
            start.wait();
            end.wait();
            assert_eq!(
                trues.load(Ordering::Relaxed),
                round + 1,
                "exactly one true per span"
            );
            assert!(registry.get(id).is_none());
            assert!(registry.try_close(id).is_err());
        }
    });
    assert_eq!(registry.hooks().closes.load(Ordering::Relaxed), ROUNDS);
    assert_eq!(registry.len(), 0);
}

#[test]
fn r3_clone_racing_the_last_close_never_revives_a_span() {
    const ROUNDS: usize = 500;
    let registry = Registry::<CloseCount>::with_hooks(CloseCount::default());
    let start = Barrier::new(2);
    let end = Barrier::new(2);
    let target = Mutex::new(None::<Id>);
    let trues = AtomicUsize::new(0);
    thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..ROUNDS {
                start.wait();
                let id = target.lock().unwrap().unwrap();
                // No reference held here: the clone either wins, and then the
                // span lives until this thread closes it too, or it fails.
                if registry.clone_span(id).is_ok() {
                    assert!(registry.get(id).is_some());
                    if registry.try_close(id).unwrap() {
                        trues.fetch_add(1, Ordering::Relaxed);
                    }
                }
                end.wait();
            }
        });
        for round in 0..ROUNDS {
            let id = root(&registry, "racing");
            *target.lock().unwrap() = Some(id);
            start.wait();
            if registry.try_close(id).unwrap() {
                trues.fetch_add(1, Ordering::Relaxed);
            }
            end.wait();
            assert_eq!(
                trues.load(Ordering::Relaxed),
                round + 1,
                "exactly one close was the last"
            );
            assert!(registry.get(id).is_none());
            assert_eq!(registry.len(), 0);
        }
    });
    assert_eq!(
        registry.hooks().closes.load(Ordering::Relaxed),
        ROUNDS,
        "each span closed once"
    );
}

/// One thread's share of the stress test: random operations on handles it
/// owns, handing some to other threads through `pool`.
/// Returns the handles it still owns and how many spans it created.
fn stress_worker<H: Hooks>(
    registry: &Registry<H>,
    pool: &Mutex<Vec<Id>>,
    seed: u64,
    ops: usize,
) -> (Vec<Id>, usize) {
    let mut rng = XorShift::new(seed);
    let mut handles: Vec<Id> = Vec::new();
    let mut created = 0;
    for _ in 0..ops {
        let pick = |rng: &mut XorShift, handles: &[Id]| handles[rng.below(handles.len())];
        match rng.below(12) {
            0 | 1 => {
                handles.push(root(registry, "root"));
                created += 1;
            }
            2 | 3 if !handles.is_empty() => {
                let parent = pick(&mut rng, &handles);
                handles.push(child(registry, "child", parent));
                created += 1;
            }
            4 if !handles.is_empty() => {
                let current = pick(&mut rng, &handles);
                let id = span(registry, "ctx", Parent::Contextual(Some(current)));
                assert_eq!(registry.get(id).unwrap().parent_id(), Some(current));
                handles.push(id);
                created += 1;
            }
            5 if !handles.is_empty() => {
                let id = pick(&mut rng, &handles);
                assert_eq!(registry.clone_span(id), Ok(id), "a held span is live");
                handles.push(id);
            }
            6..=9 if !handles.is_empty() => {
                let id = handles.swap_remove(rng.below(handles.len()));
                registry.try_close(id).expect("a held reference closes");
            }
            10 if !handles.is_empty() => {
                let id = handles.swap_remove(rng.below(handles.len()));
                pool.lock().unwrap().push(id);
            }
            11 => {
                let taken = {
                    let mut pool = pool.lock().unwrap();
                    let n = pool.len();
                    (n > 0).then(|| pool.swap_remove(rng.below(n)))
                };
                if let Some(id) = taken {
                    let view = registry
                        .get(id)
                        .expect("a handle in the pool keeps its span live");
                    let _ = view.scope().count();
                    drop(view);
                    handles.push(id);
                }
            }
            _ => {}
        }
    }
    (handles, created)
}

#[test]
fn r9_stress_on_8_threads_keeps_counts_exact_and_ends_empty() {
    const OPS: usize = 20_000;
    let registry = Registry::<CloseCount>::with_hooks(CloseCount::default());
    let pool = Mutex::new(Vec::new());
    let start = Barrier::new(THREADS);
    let (mut handles, created) = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (registry, pool, start) = (&registry, &pool, &start);
                s.spawn(move || {
                    start.wait();
                    stress_worker(registry, pool, 100 + t as u64, OPS)
                })
            })
            .collect();
        let mut handles = Vec::new();
        let mut created = 0;
        for w in workers {
            let (h, n) = w.join().unwrap();
            handles.extend(h);
            created += n;
        }
        (handles, created)
    });
    handles.extend(pool.into_inner().unwrap());
    {
        // Quiescent: check R9 for every live span, from handles and parents.
        let mut expected: HashMap<Id, usize> = HashMap::new();
        for &h in &handles {
            *expected.entry(h).or_default() += 1;
        }
        let mut todo: Vec<Id> = expected.keys().copied().collect();
        let mut live: HashSet<Id> = todo.iter().copied().collect();
        while let Some(id) = todo.pop() {
            if let Some(p) = registry.get(id).expect("live").parent_id() {
                *expected.entry(p).or_default() += 1;
                if live.insert(p) {
                    todo.push(p);
                }
            }
        }
        assert_eq!(registry.len(), live.len(), "len counts live spans");
        for (&id, &n) in &expected {
            assert_eq!(registry.ref_count(id), n, "R9 for {id:?}");
        }

        // Release everything from this thread, in a shuffled order.
        let mut rng = XorShift::new(5);
        for i in (1..handles.len()).rev() {
            handles.swap(i, rng.below(i + 1));
        }
        assert_eq!(
            registry.hooks().closes.load(Ordering::Relaxed) + live.len(),
            created,
            "every span created is either live or closed once"
        );
        for h in handles {
            registry.try_close(h).unwrap();
        }
    }
    assert_eq!(registry.len(), 0);
    assert_eq!(
        registry.hooks().closes.load(Ordering::Relaxed),
        created,
        "every span closed exactly once"
    );
}
