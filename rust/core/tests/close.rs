//! R4 `try_close`: true exactly once, `on_close` while the span is readable,
//! then the slot cleared, then the parent released; iteratively.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{child, fields, id, name, root, Recorder, XorShift};
use pykregistry_core::{Config, Error, Hooks, Id, NoHooks, Op, Registry, SpanData, Value};

/// Closes every handle in `ids`, expecting each close to be the last one.
fn close_all<H: Hooks, C: Config + 'static>(registry: &Registry<H, C>, ids: &[Id]) {
    for &id in ids {
        assert_eq!(registry.try_close(id), Ok(true), "{id:?}");
    }
}

#[test]
fn r4_try_close_returns_true_exactly_once_then_errors() {
    let registry = Registry::new();
    let s = root(&registry, "s");
    assert_eq!(registry.try_close(s), Ok(true));
    for _ in 0..3 {
        assert_eq!(
            registry.try_close(s),
            Err(Error::NotLive {
                id: s.into_u64(),
                op: Op::Close
            })
        );
    }
    assert_eq!(registry.len(), 0);
}

#[test]
fn r4_try_close_is_true_only_for_the_last_reference() {
    let registry = Registry::new();
    let s = root(&registry, "s");
    registry.clone_span(s).unwrap();
    registry.clone_span(s).unwrap();
    assert_eq!(registry.try_close(s), Ok(false));
    assert_eq!(registry.ref_count(s), 2);
    assert_eq!(registry.try_close(s), Ok(false));
    assert!(registry.get(s).is_some());
    assert_eq!(registry.try_close(s), Ok(true));
    assert!(registry.get(s).is_none());
    assert!(registry.try_close(s).is_err());
}

#[test]
fn r4_second_try_close_is_an_error_even_after_the_slot_is_reused() {
    let registry = Registry::new();
    let parent = root(&registry, "parent");
    let a = child(&registry, "a", parent);
    assert_eq!(registry.try_close(a), Ok(true));
    let b = child(&registry, "b", parent);
    assert_ne!(a, b);
    assert!(registry.try_close(a).is_err(), "never a second true");
    assert!(registry.try_close(a).is_err());
    assert_eq!(registry.ref_count(b), 1, "the slot's new span is untouched");
    assert_eq!(registry.ref_count(parent), 2);
    assert_eq!(registry.len(), 2);
    close_all(&registry, &[b, parent]);
    assert_eq!(registry.len(), 0);
}

#[test]
fn r4_try_close_on_never_issued_ids_is_an_error() {
    let registry = Registry::new();
    let live = root(&registry, "live");
    for n in [12_345, u64::MAX - 1, u64::MAX, live.into_u64() + 1] {
        assert_eq!(
            registry.try_close(id(n)),
            Err(Error::NotLive {
                id: n,
                op: Op::Close
            })
        );
    }
    assert_eq!(registry.ref_count(live), 1);
}

#[test]
fn r4_on_close_sees_the_span_readable_and_its_parent_live() {
    let registry = Recorder::registry();
    let p = root(&registry, "parent");
    let c = child(&registry, "child", p);
    registry.record(c, [("k", Value::I64(7))]).unwrap();
    assert_eq!(registry.try_close(p), Ok(false), "c holds p");
    assert!(registry.hooks().closed().is_empty());
    assert_eq!(registry.try_close(c), Ok(true));
    let closed = registry.hooks().closed();
    assert_eq!(closed.len(), 2);

    let leaf = &closed[0];
    assert_eq!(leaf.id, c);
    assert_eq!(leaf.name, "child", "readable through the SpanData passed");
    assert_eq!(leaf.fields, [("k".to_owned(), Value::I64(7))]);
    assert_eq!(leaf.parent, Some(p));
    assert_eq!(leaf.ref_count, 0);
    assert_eq!(
        leaf.name_via_get.as_deref(),
        Some("child"),
        "and through registry.get"
    );
    assert_eq!(
        leaf.parent_ref_count,
        Some(1),
        "the parent still holds the child's reference"
    );
    assert!(
        !leaf.revived,
        "a closing span cannot be cloned back to life"
    );
    assert!(!leaf.reclosed, "nor closed twice");

    let parent = &closed[1];
    assert_eq!(parent.id, p);
    assert_eq!(parent.name_via_get.as_deref(), Some("parent"));
    assert_eq!(parent.parent, None);
    assert_eq!(parent.parent_ref_count, None);
    assert!(!parent.revived && !parent.reclosed);

    assert!(registry.get(c).is_none() && registry.get(p).is_none());
    assert_eq!(registry.len(), 0);
}

#[test]
fn r4_on_close_runs_leaf_first_in_a_cascade() {
    // One level: closing the only child closes its parent after it.
    let registry = Recorder::registry();
    let parent = root(&registry, "parent");
    let kid = child(&registry, "kid", parent);
    registry.try_close(parent).unwrap();
    assert_eq!(registry.try_close(kid), Ok(true));
    assert_eq!(registry.hooks().closed_ids(), [kid, parent]);

    // Three levels above the leaf.
    let registry = Recorder::registry();
    let top = root(&registry, "top");
    let upper = child(&registry, "upper", top);
    let lower = child(&registry, "lower", upper);
    let leaf = child(&registry, "leaf", lower);
    for s in [top, upper, lower] {
        assert_eq!(registry.try_close(s), Ok(false));
    }
    assert!(registry.hooks().closed().is_empty());
    assert_eq!(registry.try_close(leaf), Ok(true));
    let closed = registry.hooks().closed();
    assert_eq!(registry.hooks().closed_ids(), [leaf, lower, upper, top]);
    for pair in closed.windows(2) {
        assert_eq!(pair[0].parent, Some(pair[1].id));
        assert_eq!(
            pair[0].parent_ref_count,
            Some(1),
            "{:?}: parent still live",
            pair[0].id
        );
    }
    assert_eq!(registry.len(), 0);
}

#[test]
fn r4_cascade_stops_at_a_parent_with_other_references() {
    let registry = Recorder::registry();
    let a = root(&registry, "a");
    let b = child(&registry, "b", a);
    let sibling = child(&registry, "sibling", b);
    let c = child(&registry, "c", b);
    registry.try_close(a).unwrap();
    registry.try_close(b).unwrap();
    assert_eq!(registry.try_close(c), Ok(true));
    assert_eq!(registry.hooks().closed_ids(), [c], "b is held by sibling");
    assert_eq!((registry.ref_count(b), registry.ref_count(a)), (1, 1));
    assert_eq!(registry.try_close(sibling), Ok(true));
    assert_eq!(registry.hooks().closed_ids(), [c, sibling, b, a]);
    assert_eq!(registry.len(), 0);
}

/// Extension data that counts how many instances are alive.
#[derive(Debug, Default)]
struct Tracked(Option<Arc<()>>);

#[derive(Debug, Default)]
struct TrackedHooks {
    /// Whether the extension was still set when `on_close` ran.
    ext_seen: Mutex<Vec<bool>>,
}

impl Hooks for TrackedHooks {
    type Ext = Tracked;

    fn on_close<C: Config + 'static>(
        &self,
        _: &Registry<Self, C>,
        _: Id,
        span: &SpanData<Tracked>,
    ) {
        self.ext_seen.lock().unwrap().push(span.ext().0.is_some());
    }
}

#[test]
fn r4_closing_clears_the_slot_dropping_fields_and_extensions() {
    let registry = Registry::<TrackedHooks>::with_hooks(TrackedHooks::default());
    let token = Arc::new(());
    let a = registry
        .new_span(
            &common::attrs("a"),
            pykregistry_core::Parent::Root,
            |f, ext| {
                f.push(("k".into(), Value::Str("a's".into())));
                ext.0 = Some(Arc::clone(&token));
            },
        )
        .unwrap();
    assert_eq!(Arc::strong_count(&token), 2);
    assert_eq!(registry.try_close(a), Ok(true));
    assert_eq!(
        *registry.hooks().ext_seen.lock().unwrap(),
        [true],
        "on_close ran before the clear"
    );
    assert_eq!(Arc::strong_count(&token), 1, "the extension was dropped");
    assert!(registry.get(a).is_none());

    // The next span reuses the slot and starts from nothing.
    let b = registry
        .new_span(
            &common::attrs("b"),
            pykregistry_core::Parent::Root,
            |f, ext| {
                assert!(f.is_empty(), "fields of the slot's previous span survived");
                assert!(
                    ext.0.is_none(),
                    "extension of the slot's previous span survived"
                );
            },
        )
        .unwrap();
    let view = registry.get(b).unwrap();
    assert_eq!(view.name(), "b");
    assert_eq!(view.target(), "tests");
    assert_eq!(view.parent_id(), None);
    drop(view);
    assert_eq!(fields(&registry, b), Some(vec![]));
    assert_eq!(registry.try_close(b), Ok(true));
    assert_eq!(registry.len(), 0);
}

/// Counts closes and remembers their order, without holding the spans.
#[derive(Debug, Default)]
struct CloseOrder {
    ids: Mutex<Vec<Id>>,
    parent_live: AtomicUsize,
}

impl Hooks for CloseOrder {
    type Ext = ();

    fn on_close<C: Config + 'static>(
        &self,
        registry: &Registry<Self, C>,
        id: Id,
        span: &SpanData<()>,
    ) {
        self.ids.lock().unwrap().push(id);
        if span.parent_id().is_some_and(|p| registry.ref_count(p) > 0) {
            self.parent_live.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn r4_chain_of_1_000_000_spans_closes_from_the_leaf_on_a_small_stack() {
    const DEPTH: usize = 1_000_000;
    // A quarter of a megabyte of stack: a recursive cascade would overflow it
    // long before the root.
    let worker = std::thread::Builder::new()
        .name("chain".into())
        .stack_size(256 * 1024)
        .spawn(|| {
            let registry = Registry::<CloseOrder>::with_hooks(CloseOrder::default());
            let mut chain = Vec::with_capacity(DEPTH);
            let mut leaf = root(&registry, "0");
            chain.push(leaf);
            for _ in 1..DEPTH {
                let next = child(&registry, "n", leaf);
                // Only the child keeps its parent alive.
                assert_eq!(registry.try_close(leaf), Ok(false));
                leaf = next;
                chain.push(leaf);
            }
            assert_eq!(registry.len(), DEPTH);
            assert_eq!(registry.ref_count(chain[0]), 1);
            assert_eq!(registry.try_close(leaf), Ok(true));
            assert_eq!(registry.len(), 0);
            let closed = std::mem::take(&mut *registry.hooks().ids.lock().unwrap());
            chain.reverse();
            assert!(closed == chain, "closed leaf first, root last, each once");
            assert_eq!(
                registry.hooks().parent_live.load(Ordering::Relaxed),
                DEPTH - 1
            );
            assert!(registry.get(chain[DEPTH - 1]).is_none());
        })
        .unwrap();
    worker.join().expect("the chain closes on a 256 KiB stack");
}

#[test]
fn r4_parent_of_10_000_children_closes_after_the_last_child() {
    const CHILDREN: usize = 10_000;
    let registry = Registry::<CloseOrder>::with_hooks(CloseOrder::default());
    let p = root(&registry, "p");
    let mut kids: Vec<Id> = (0..CHILDREN).map(|_| child(&registry, "kid", p)).collect();
    assert_eq!(registry.try_close(p), Ok(false));
    assert_eq!(registry.ref_count(p), CHILDREN);
    let mut rng = XorShift::new(4);
    for i in (1..kids.len()).rev() {
        kids.swap(i, rng.below(i + 1));
    }
    for (closed, &k) in kids.iter().enumerate() {
        assert_eq!(registry.try_close(k), Ok(true));
        let left = CHILDREN - closed - 1;
        assert_eq!(registry.ref_count(p), left);
        assert_eq!(
            name(&registry, p).is_some(),
            left > 0,
            "p lives while a child does"
        );
    }
    let ids = registry.hooks().ids.lock().unwrap().clone();
    assert_eq!(ids.len(), CHILDREN + 1);
    assert_eq!(ids[CHILDREN], p, "the parent closes last");
    assert_eq!(ids[..CHILDREN], kids[..]);
    assert_eq!(registry.len(), 0);
}

#[test]
fn r4_closing_many_trees_leaves_nothing() {
    let registry = Registry::<NoHooks>::new();
    let mut rng = XorShift::new(11);
    for _ in 0..50 {
        let r = root(&registry, "r");
        let mut nodes = vec![r];
        for _ in 0..200 {
            let parent = nodes[rng.below(nodes.len())];
            nodes.push(child(&registry, "n", parent));
        }
        // Release every handle in a random order; each span closes when its
        // last handle and last child are gone.
        for i in (1..nodes.len()).rev() {
            nodes.swap(i, rng.below(i + 1));
        }
        for n in nodes {
            registry.try_close(n).unwrap();
        }
        assert_eq!(registry.len(), 0);
    }
}
