//! Loom models of the races the reference-count and close protocol must win
//! (SPEC R3, R4, R2 with an explicit or contextual parent, R1 slot reuse).
//! Loom runs each model under every interleaving of its threads'
//! synchronizing operations, up to a preemption bound, with the C11 memory
//! model's weak orderings. Each model also checks that the interleavings it
//! explored reached every outcome of its race.
//!
//! Built only with `--cfg loom`, in release mode:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test -p pykregistry-core --test loom --release -- --test-threads=1 --nocapture
//! ```
//!
//! `CARGO_TARGET_DIR` keeps the loom build from invalidating the normal one;
//! `LOOM_MAX_PREEMPTIONS` defaults to 3 here when unset (under a second for
//! all models); `LOOM_MAX_PREEMPTIONS=100` makes every model exhaustive
//! (about 20 s, nearly all of it the three-thread model); `--nocapture`
//! prints each model's interleavings, outcomes and time.
//!
//! # What loom sees, and what it does not
//!
//! Under `--cfg loom` the core takes its atomics, `Arc` and `Mutex` from
//! loom (`src/sync.rs`): every span's count, the `DEAD` mark, the acquire
//! fence before `on_close`, the live-span count and the orphan list are
//! explored. sharded-slab's own loom instrumentation cannot be switched on
//! from this crate: loom depends on `tracing-subscriber`, which depends on
//! sharded-slab, so enabling `sharded-slab/loom` makes a dependency cycle
//! that Cargo rejects. The slab therefore runs on std atomics, and since
//! loom runs its threads on one OS thread, each slab call (create, get,
//! clear) is one indivisible step, and all model threads are one slab
//! thread (one shard, one seat: the seat counter stays std's, and the
//! orphan path for threads without a seat is not reached). A relaxed loom
//! step taken before each slab call (`SlabSteps` in `src/sync.rs`) tells
//! loom which calls conflict, so it orders lookups against clears and
//! creations both ways. Dropping a view, which may clear a slot whose span
//! closed under it, is not such a step. The models thus check our protocol
//! over a linearizable slab; the slab's internal orderings are
//! sharded-slab's own loom suite's business (its `src/tests/loom_*.rs`), and
//! a span's plain fields (name, parent) are not loom cells, so a missing
//! fence before reading them would go unseen.
#![cfg(loom)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Mutex as StdMutex, PoisonError};
use std::time::Instant;

use common::attrs;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use pykregistry_core::{Config, Error, Hooks, Id, Op, Parent, Registry, SpanData};

/// Small pages, so that a model reuses slots quickly; the default thread
/// count, because the slab's thread registration is process-wide.
#[derive(Debug)]
struct LoomConfig;

impl Config for LoomConfig {
    const INITIAL_PAGE_SIZE: usize = 2;
    const MAX_PAGES: usize = 4;
}

/// Hooks recording the order of closes. `on_close` also checks that the span
/// is still readable and cannot be revived.
#[derive(Debug, Default)]
struct Closes {
    /// Bumped with a loom atomic, so that loom orders it with the protocol.
    count: AtomicUsize,
    /// Not a loom object: pushing never yields to another model thread.
    order: StdMutex<Vec<Id>>,
}

impl Closes {
    fn order(&self) -> Vec<Id> {
        self.order
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Hooks for Closes {
    type Ext = ();

    fn on_close<C: Config + 'static>(
        &self,
        registry: &Registry<Self, C>,
        id: Id,
        span: &SpanData<()>,
    ) {
        assert_eq!(span.ref_count(), 0, "on_close for a span with references");
        assert!(
            registry.get(id).is_some(),
            "on_close: the span must still be readable"
        );
        assert!(
            registry.clone_span(id).is_err(),
            "on_close: a closing span came back to life"
        );
        self.count.fetch_add(1, Ordering::SeqCst);
        self.order
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
    }
}

type Reg = Registry<Closes, LoomConfig>;

fn registry() -> Reg {
    Registry::with_hooks(Closes::default())
}

fn span(registry: &Reg, name: &str, parent: Parent) -> Result<Id, Error> {
    registry.new_span(&attrs(name), parent, |_, ()| {})
}

/// Runs `model` under loom with the preemption bound from
/// `LOOM_MAX_PREEMPTIONS` (3 when unset), prints how many interleavings it
/// explored and how long that took, and checks that the interleavings
/// explored led to every outcome in `outcomes` (the labels the model
/// returns): a model that never reaches one side of its race proves nothing
/// about it.
fn check(
    name: &str,
    outcomes: &[&'static str],
    model: impl Fn() -> &'static str + Sync + Send + 'static,
) {
    let seen = std::sync::Arc::new(StdMutex::new(BTreeMap::<&'static str, usize>::new()));
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    let bound = builder.preemption_bound;
    let start = Instant::now();
    {
        let seen = seen.clone();
        builder.check(move || {
            let outcome = model();
            *seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(outcome)
                .or_default() += 1;
        });
    }
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    eprintln!(
        "loom model {name:?}: preemption bound {bound:?}, {} interleavings in {:.2?}, outcomes {seen:?}",
        seen.values().sum::<usize>(),
        start.elapsed()
    );
    for outcome in outcomes {
        assert!(
            seen.contains_key(outcome),
            "{name}: no interleaving led to {outcome:?}; saw {seen:?}"
        );
    }
    assert!(
        seen.keys().all(|o| outcomes.contains(o)),
        "{name}: unexpected outcomes {seen:?}"
    );
}

#[test]
fn r3_clone_racing_the_last_close() {
    // One thread closes the only reference; another, holding none, tries to
    // clone the same ID. Either the clone wins and the span lives until the
    // cloner closes it, or it fails and the span closes exactly once.
    let outcomes = [
        "clone won, cloner closed last",
        "clone won, creator closed last",
        "clone failed",
    ];
    check("clone_span vs try_close", &outcomes, || {
        let registry = registry();
        let id = span(&registry, "racing", Parent::Root).unwrap();
        let cloner = {
            let registry = registry.clone();
            thread::spawn(move || match registry.clone_span(id) {
                Ok(same) => {
                    assert_eq!(same, id);
                    assert!(registry.get(id).is_some(), "a cloned span is live");
                    assert!(registry.ref_count(id) >= 1);
                    assert!(registry.hooks().order().is_empty(), "closed under a clone");
                    Some(registry.try_close(id).expect("a cloned reference closes"))
                }
                Err(e) => {
                    assert_eq!(
                        e,
                        Error::NotLive {
                            id: id.into_u64(),
                            op: Op::Clone
                        }
                    );
                    None
                }
            })
        };
        let creator_closed = registry
            .try_close(id)
            .expect("the creator's reference closes");
        if creator_closed {
            assert!(
                registry.get(id).is_none(),
                "a closed span is gone from lookups at once"
            );
        }
        let cloner_closed = cloner.join().unwrap();
        assert_eq!(registry.hooks().order(), [id], "closed exactly once");
        assert!(registry.get(id).is_none());
        assert_eq!(registry.ref_count(id), 0);
        assert!(registry.try_close(id).is_err(), "no second close");
        assert!(registry.clone_span(id).is_err(), "no revival");
        assert_eq!(registry.len(), 0);
        match cloner_closed {
            None => {
                assert!(creator_closed, "a failed clone, yet the span did not close");
                "clone failed"
            }
            Some(there) => {
                assert!(creator_closed ^ there, "exactly one last close");
                if there {
                    "clone won, cloner closed last"
                } else {
                    "clone won, creator closed last"
                }
            }
        }
    });
}

#[test]
fn r4_two_last_closes() {
    // Two threads each release one of the span's two references: exactly one
    // call returns true, on_close runs once, and nothing is left.
    check(
        "two last try_close",
        &["this thread closed", "other thread closed"],
        || {
            let registry = registry();
            let id = span(&registry, "shared", Parent::Root).unwrap();
            registry.clone_span(id).unwrap();
            let other = {
                let registry = registry.clone();
                thread::spawn(move || registry.try_close(id).unwrap())
            };
            let here = registry.try_close(id).unwrap();
            let there = other.join().unwrap();
            assert!(here ^ there, "exactly one try_close returns true");
            assert_eq!(registry.hooks().count(), 1, "on_close ran once");
            assert!(registry.get(id).is_none());
            assert!(registry.try_close(id).is_err());
            assert_eq!(registry.len(), 0);
            if here {
                "this thread closed"
            } else {
                "other thread closed"
            }
        },
    );
}

#[test]
fn r3_clone_racing_two_closes_on_three_threads() {
    // Two threads release the span's two references while a third, holding
    // none, clones it and releases its clone: one try_close in all returns
    // true, and a clone never succeeds on a span that has closed.
    let outcomes = ["clone failed", "clone won"];
    check("clone_span vs two try_close", &outcomes, || {
        let registry = registry();
        let id = span(&registry, "shared", Parent::Root).unwrap();
        registry.clone_span(id).unwrap();
        let spawn = |clone_first: bool| {
            let registry = registry.clone();
            thread::spawn(move || {
                if clone_first && registry.clone_span(id).is_err() {
                    return (false, 0);
                }
                (clone_first, usize::from(registry.try_close(id).unwrap()))
            })
        };
        let plain = spawn(false);
        let cloning = spawn(true);
        let here = usize::from(registry.try_close(id).unwrap());
        let (_, plain_trues) = plain.join().unwrap();
        let (cloned, cloning_trues) = cloning.join().unwrap();
        assert_eq!(
            here + plain_trues + cloning_trues,
            1,
            "exactly one last close"
        );
        assert_eq!(registry.hooks().order(), [id]);
        assert!(registry.get(id).is_none());
        assert_eq!(registry.len(), 0);
        if cloned {
            "clone won"
        } else {
            "clone failed"
        }
    });
}

#[test]
fn r4_two_last_closes_of_children_cascade_to_the_parent_once() {
    // Two children of one parent (which holds no handle) close at once on
    // two threads: each cascade releases one reference on the parent, and
    // exactly one of them closes it, after both children.
    let outcomes = ["a closed first", "b closed first"];
    check("two cascades into one parent", &outcomes, || {
        let registry = registry();
        let parent = span(&registry, "parent", Parent::Root).unwrap();
        let a = span(&registry, "a", Parent::Explicit(parent)).unwrap();
        let b = span(&registry, "b", Parent::Explicit(parent)).unwrap();
        assert!(!registry.try_close(parent).unwrap());
        assert_eq!(registry.ref_count(parent), 2);
        let other = {
            let registry = registry.clone();
            thread::spawn(move || registry.try_close(b).unwrap())
        };
        assert!(registry.try_close(a).unwrap());
        assert!(other.join().unwrap());
        let order = registry.hooks().order();
        assert_eq!(order.len(), 3, "every span closed once: {order:?}");
        assert_eq!(order[2], parent, "the parent closes last: {order:?}");
        assert!(registry.get(parent).is_none());
        assert_eq!(registry.len(), 0);
        if order[0] == a {
            "a closed first"
        } else {
            "b closed first"
        }
    });
}

#[test]
fn r2_new_child_racing_the_close_cascade_of_its_parent() {
    // The parent's only reference is held by child `a`. One thread closes
    // `a`, cascading to the parent; another creates a child of the parent
    // with an explicit parent. Either the new child is created while the
    // parent is live, and holds it open with the right count, or it fails
    // with NotLive, nothing is created and nothing leaks.
    let outcomes = ["child created", "parent not live"];
    check("close cascade vs new explicit child", &outcomes, || {
        let registry = registry();
        let parent = span(&registry, "parent", Parent::Root).unwrap();
        let a = span(&registry, "a", Parent::Explicit(parent)).unwrap();
        assert!(!registry.try_close(parent).unwrap());
        let creator = {
            let registry = registry.clone();
            thread::spawn(move || {
                let made = span(&registry, "b", Parent::Explicit(parent));
                if let Ok(b) = made {
                    let view = registry.get(b).expect("the new child is live");
                    assert_eq!(view.parent_id(), Some(parent));
                    assert!(registry.get(parent).is_some(), "its parent is live");
                }
                made
            })
        };
        assert!(registry.try_close(a).unwrap(), "a's only reference");
        let outcome = match creator.join().unwrap() {
            Ok(b) => {
                assert_eq!(registry.hooks().order(), [a], "the parent survived");
                assert_eq!(registry.ref_count(parent), 1, "held by b alone");
                assert_eq!(registry.len(), 2);
                assert!(registry.try_close(b).unwrap());
                assert_eq!(registry.hooks().order(), [a, b, parent]);
                "child created"
            }
            Err(e) => {
                assert_eq!(
                    e,
                    Error::NotLive {
                        id: parent.into_u64(),
                        op: Op::Parent
                    }
                );
                assert_eq!(registry.hooks().order(), [a, parent]);
                "parent not live"
            }
        };
        assert!(registry.get(parent).is_none());
        assert_eq!(registry.len(), 0, "nothing leaked");
        outcome
    });
}

#[test]
fn r2_new_contextual_child_racing_the_close_cascade_of_its_parent() {
    // As above with a contextual parent that may close meanwhile: the new
    // span is either the parent's child (and holds it) or a root.
    let outcomes = ["child of the parent", "root"];
    check("close cascade vs new contextual child", &outcomes, || {
        let registry = registry();
        let parent = span(&registry, "parent", Parent::Root).unwrap();
        let a = span(&registry, "a", Parent::Explicit(parent)).unwrap();
        assert!(!registry.try_close(parent).unwrap());
        let creator = {
            let registry = registry.clone();
            thread::spawn(move || {
                let b = span(&registry, "b", Parent::Contextual(Some(parent))).unwrap();
                let parent_of_b = registry.get(b).unwrap().parent_id();
                (b, parent_of_b)
            })
        };
        assert!(registry.try_close(a).unwrap());
        let (b, parent_of_b) = creator.join().unwrap();
        let outcome = if parent_of_b == Some(parent) {
            assert_eq!(registry.hooks().order(), [a]);
            assert_eq!(registry.ref_count(parent), 1);
            "child of the parent"
        } else {
            assert_eq!(
                parent_of_b, None,
                "a contextual parent that closed makes a root"
            );
            assert_eq!(registry.hooks().order(), [a, parent]);
            "root"
        };
        assert!(registry.try_close(b).unwrap());
        assert_eq!(registry.len(), 0, "nothing leaked");
        assert_eq!(registry.hooks().count(), 3);
        outcome
    });
}

#[test]
fn r1_slot_reuse_gives_a_new_generation() {
    // One thread closes `old` while another creates `new` (which may take
    // `old`'s slot) and looks `old` up meanwhile. The new span never gets
    // `old`'s ID, and `old`'s ID never resolves to the new span: a view of
    // `old` shows `old` or nothing.
    let outcomes = ["new reused old's slot", "new took another slot"];
    check("slot reuse vs stale lookups", &outcomes, || {
        let registry = registry();
        let old = span(&registry, "old", Parent::Root).unwrap();
        let creator = {
            let registry = registry.clone();
            thread::spawn(move || {
                let new = span(&registry, "new", Parent::Root).unwrap();
                assert_ne!(new, old, "a live span's ID was handed out again");
                if let Some(view) = registry.get(old) {
                    assert_eq!(view.name(), "old", "a stale ID resolved to another span");
                }
                assert_eq!(registry.get(new).unwrap().name(), "new");
                new
            })
        };
        if let Some(view) = registry.get(old) {
            assert_eq!(view.name(), "old");
        }
        assert!(registry.try_close(old).unwrap());
        assert!(
            registry.get(old).is_none(),
            "a closed span is gone from lookups at once"
        );
        let new = creator.join().unwrap();
        // `old`'s slot is free by now: the next span may take it, never with
        // a generation that brings `old` back.
        let next = span(&registry, "next", Parent::Root).unwrap();
        for id in [new, next] {
            assert_ne!(id, old);
            assert!(registry.get(id).is_some());
        }
        assert!(registry.get(old).is_none());
        assert!(registry.clone_span(old).is_err());
        assert!(registry.try_close(old).is_err());
        assert!(registry.try_close(new).unwrap());
        assert!(registry.try_close(next).unwrap());
        assert_eq!(registry.hooks().order(), [old, new, next]);
        assert_eq!(registry.len(), 0);
        if same_slot(old, new) {
            "new reused old's slot"
        } else {
            "new took another slot"
        }
    });
}

#[test]
fn r1_a_view_held_across_the_close_delays_the_reuse_of_its_slot() {
    // A thread holds a view of `old` while another closes it and creates a
    // span: the slot cannot be reused under the view, and the view shows
    // `old`'s data only.
    let outcomes = ["view held across the close", "no view: closed first"];
    check("view held across close and reuse", &outcomes, || {
        let registry = registry();
        let old = span(&registry, "old", Parent::Root).unwrap();
        let reader = {
            let registry = registry.clone();
            thread::spawn(move || {
                let view = registry.get(old)?;
                // Let the close (and the creation) run under the view.
                thread::yield_now();
                assert_eq!(view.name(), "old");
                assert_eq!(view.id(), old);
                Some(registry.get(old).is_none())
            })
        };
        assert!(registry.try_close(old).unwrap());
        assert!(
            registry.get(old).is_none(),
            "a closed span is gone from lookups at once, even while a view delays clearing its slot"
        );
        let new = span(&registry, "new", Parent::Root).unwrap();
        assert_ne!(new, old);
        assert_eq!(registry.get(new).unwrap().name(), "new");
        let seen = reader.join().unwrap();
        assert!(registry.get(old).is_none());
        assert!(registry.try_close(new).unwrap());
        assert_eq!(registry.len(), 0);
        match seen {
            Some(_) => "view held across the close",
            None => "no view: closed first",
        }
    });
}

/// Whether two IDs name the same slot (with different generations): the
/// slot's address and thread index are the key's low bits, below the
/// generation (sharded-slab's layout for `LoomConfig`).
fn same_slot(a: Id, b: Id) -> bool {
    let generation_shift = usize::BITS
        - Registry::<Closes, LoomConfig>::GENERATIONS.count_ones()
        - LoomConfig::RESERVED_BITS as u32;
    let mask = (1u64 << generation_shift) - 1;
    (a.into_u64() - 1) & mask == (b.into_u64() - 1) & mask
}
