//! R13 identity: span ids and trace ids that never recur within a process,
//! and how `new_span` gives a span its trace for each kind of parent,
//! including a contextual parent whose registry ID was reused.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use common::{attrs, child, root, span, Small};
use pykregistry_core::{
    new_trace_id, next_span_id, Attrs, Id, NoHooks, Parent, Registry, TraceParent,
};
use tracing::info_span;
use tracing::subscriber::with_default;

/// Attributes naming `tp` as the trace parent.
fn attrs_under(name: &str, tp: TraceParent) -> Attrs<'_> {
    Attrs {
        trace_parent: Some(tp),
        ..attrs(name)
    }
}

/// A remote parent, as a W3C `traceparent` header would carry it.
const REMOTE: TraceParent = TraceParent {
    trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
    span_id: 0x00f0_67aa_0ba9_02b7,
};

/// The identity of a live span: (trace id, span id, parent span id).
fn identity<C: pykregistry_core::Config + 'static>(
    registry: &Registry<NoHooks, C>,
    id: Id,
) -> (u128, u64, Option<u64>) {
    let s = registry.get(id).expect("live");
    (s.trace_id(), s.span_id(), s.parent_span_id())
}

fn trace_parent<C: pykregistry_core::Config + 'static>(
    registry: &Registry<NoHooks, C>,
    id: Id,
) -> TraceParent {
    registry.get(id).expect("live").as_trace_parent()
}

// === ids ===

#[test]
fn r13_a_million_span_ids_are_nonzero_and_never_repeat() {
    let mut seen = HashSet::with_capacity(1_000_000);
    for _ in 0..1_000_000 {
        let id = next_span_id();
        assert_ne!(id, 0);
        assert!(seen.insert(id), "span id {id:#x} repeated");
    }
}

#[test]
fn r13_trace_ids_are_nonzero_and_never_repeat() {
    let mut seen = HashSet::new();
    for _ in 0..200_000 {
        let id = new_trace_id();
        assert_ne!(id, 0);
        assert!(seen.insert(id), "trace id {id:#x} repeated");
        assert!(seen.insert(id >> 64), "the high halves alone are unique");
    }
}

#[test]
fn r13_threads_drawing_at_once_get_disjoint_span_ids() {
    const PER_THREAD: usize = 300_000;
    let barrier = Arc::new(Barrier::new(2));
    let draws: Vec<Vec<u64>> = (0..2)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                (0..PER_THREAD).map(|_| next_span_id()).collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("no panic"))
        .collect();
    let all: HashSet<u64> = draws.iter().flatten().copied().collect();
    assert_eq!(all.len(), 2 * PER_THREAD, "an id repeated across threads");
    assert!(!all.contains(&0));
}

#[test]
fn r13_ids_do_not_count_up() {
    // They look random: consecutive ids share no long run of high bits, as
    // a counter's would.
    let ids: Vec<u64> = (0..1000).map(|_| next_span_id()).collect();
    let close = ids
        .windows(2)
        .filter(|w| (w[0] ^ w[1]).leading_zeros() >= 16)
        .count();
    assert!(
        close < 5,
        "{close} of 999 consecutive ids share 16 high bits"
    );
}

// === new_span: roots ===

#[test]
fn r13_a_root_starts_a_new_trace() {
    let registry = Registry::new();
    let a = root(&registry, "a");
    let b = span(&registry, "b", Parent::Contextual(None));
    let (trace_a, span_a, parent_a) = identity(&registry, a);
    let (trace_b, span_b, parent_b) = identity(&registry, b);
    assert_ne!(trace_a, trace_b);
    assert_ne!(span_a, span_b);
    assert!(trace_a != 0 && span_a != 0);
    assert_eq!((parent_a, parent_b), (None, None));
}

#[test]
fn r13_a_root_with_a_trace_parent_continues_that_trace() {
    let registry = Registry::new();
    for parent in [Parent::Root, Parent::Contextual(None)] {
        let s = registry
            .new_span(&attrs_under("server", REMOTE), parent, |_, ()| {})
            .unwrap();
        let (trace, span_id, parent_span) = identity(&registry, s);
        assert_eq!(trace, REMOTE.trace_id);
        assert_eq!(parent_span, Some(REMOTE.span_id));
        assert_ne!(span_id, REMOTE.span_id, "a span id of its own");
        assert_eq!(registry.get(s).unwrap().parent_id(), None);
    }
}

// === new_span: explicit parents ===

#[test]
fn r13_a_child_shares_its_parents_trace() {
    let registry = Registry::new();
    let p = root(&registry, "p");
    let c = child(&registry, "c", p);
    let g = child(&registry, "g", c);
    let (trace_p, span_p, _) = identity(&registry, p);
    let (trace_c, span_c, parent_c) = identity(&registry, c);
    let (trace_g, _, parent_g) = identity(&registry, g);
    assert_eq!(trace_c, trace_p);
    assert_eq!(trace_g, trace_p);
    assert_eq!(parent_c, Some(span_p));
    assert_eq!(parent_g, Some(span_c));
}

#[test]
fn r13_an_explicit_parent_wins_over_the_trace_parent() {
    let registry = Registry::new();
    let p = root(&registry, "p");
    let c = registry
        .new_span(&attrs_under("c", REMOTE), Parent::Explicit(p), |_, ()| {})
        .unwrap();
    assert_eq!(registry.get(c).unwrap().parent_id(), Some(p));
    let (trace_c, _, parent_c) = identity(&registry, c);
    assert_eq!(trace_c, identity(&registry, p).0);
    assert_eq!(parent_c, Some(identity(&registry, p).1));
}

#[test]
fn r13_a_closed_explicit_parent_creates_nothing() {
    let registry = Registry::new();
    let p = root(&registry, "p");
    assert_eq!(registry.try_close(p), Ok(true));
    assert!(registry
        .new_span(&attrs_under("c", REMOTE), Parent::Explicit(p), |_, ()| {})
        .is_err());
    assert!(registry.is_empty());
}

// === new_span: contextual parents ===

#[test]
fn r13_a_live_contextual_parent_is_the_parent() {
    let registry = Registry::new();
    let p = root(&registry, "p");
    let c = span(&registry, "c", Parent::Contextual(Some(p)));
    assert_eq!(registry.get(c).unwrap().parent_id(), Some(p));
    assert_eq!(identity(&registry, c).0, identity(&registry, p).0);
    assert_eq!(identity(&registry, c).2, Some(identity(&registry, p).1));
    assert_eq!(registry.ref_count(p), 2, "the child holds a reference");
}

#[test]
fn r13_a_contextual_parent_with_its_own_identity_is_the_parent() {
    let registry = Registry::new();
    let p = root(&registry, "p");
    let tp = trace_parent(&registry, p);
    let c = registry
        .new_span(
            &attrs_under("c", tp),
            Parent::Contextual(Some(p)),
            |_, ()| {},
        )
        .unwrap();
    assert_eq!(registry.get(c).unwrap().parent_id(), Some(p));
    assert_eq!(identity(&registry, c).0, tp.trace_id);
    assert_eq!(identity(&registry, c).2, Some(tp.span_id));
    assert_eq!(registry.ref_count(p), 2);
}

#[test]
fn r13_a_contextual_parent_with_another_identity_is_not_the_parent() {
    let registry = Registry::new();
    let p = root(&registry, "p");
    let c = registry
        .new_span(
            &attrs_under("c", REMOTE),
            Parent::Contextual(Some(p)),
            |_, ()| {},
        )
        .unwrap();
    assert_eq!(registry.get(c).unwrap().parent_id(), None, "a root");
    assert_eq!(registry.ref_count(p), 1, "no reference taken on p");
    assert_eq!(identity(&registry, c).0, REMOTE.trace_id);
    assert_eq!(identity(&registry, c).2, Some(REMOTE.span_id));
}

#[test]
fn r13_a_closed_contextual_parent_stays_the_parent_in_the_trace() {
    let registry = Registry::new();
    let p = root(&registry, "p");
    let tp = trace_parent(&registry, p);
    assert_eq!(registry.try_close(p), Ok(true));
    let c = registry
        .new_span(
            &attrs_under("c", tp),
            Parent::Contextual(Some(p)),
            |_, ()| {},
        )
        .unwrap();
    assert_eq!(registry.get(c).unwrap().parent_id(), None, "a root");
    assert_eq!(identity(&registry, c).0, tp.trace_id);
    assert_eq!(identity(&registry, c).2, Some(tp.span_id));
    assert!(
        !registry.get(c).unwrap().parent_is_remote(),
        "a parent that closed in this process is not remote"
    );
}

#[test]
fn r13_a_closed_contextual_parent_without_identity_makes_a_new_trace() {
    let registry = Registry::new();
    let p = root(&registry, "p");
    let old_trace = identity(&registry, p).0;
    assert_eq!(registry.try_close(p), Ok(true));
    let c = span(&registry, "c", Parent::Contextual(Some(p)));
    assert_eq!(registry.get(c).unwrap().parent_id(), None);
    let (trace, _, parent_span) = identity(&registry, c);
    assert_ne!(trace, old_trace);
    assert_eq!(parent_span, None);
}

/// The registry ID of a closed span comes back on a new, unrelated span
/// after `GENERATIONS` reuses of its slot. A context that still names the
/// closed span by that ID, with the closed span's identity, must not get the
/// new span as parent.
#[test]
fn r13_a_reused_registry_id_is_not_taken_for_the_closed_span() {
    let registry = Registry::<NoHooks, Small>::with_hooks(NoHooks);
    let old = root(&registry, "old");
    let old_identity = trace_parent(&registry, old);
    assert_eq!(registry.try_close(old), Ok(true));
    let generations = usize::try_from(Registry::<NoHooks, Small>::GENERATIONS).unwrap();
    for _ in 0..generations - 1 {
        let id = root(&registry, "cycle");
        assert_eq!(registry.try_close(id), Ok(true));
    }
    let new = root(&registry, "new");
    assert_eq!(new, old, "the slot's registry ID came back");
    assert_ne!(
        trace_parent(&registry, new),
        old_identity,
        "but not its identity"
    );

    let c = registry
        .new_span(
            &attrs_under("c", old_identity),
            Parent::Contextual(Some(old)),
            |_, ()| {},
        )
        .unwrap();
    assert_eq!(registry.get(c).unwrap().parent_id(), None, "a root");
    assert_eq!(registry.ref_count(new), 1, "the new span gained nothing");
    let (trace, _, parent_span) = identity(&registry, c);
    assert_eq!(trace, old_identity.trace_id);
    assert_eq!(parent_span, Some(old_identity.span_id));
}

#[test]
fn r13_span_ids_never_recur_when_slots_are_reused() {
    let registry = Registry::<NoHooks, Small>::with_hooks(NoHooks);
    let generations = usize::try_from(Registry::<NoHooks, Small>::GENERATIONS).unwrap();
    let mut ids = HashSet::new();
    let mut span_ids = HashSet::new();
    for _ in 0..4 * generations {
        let id = root(&registry, "cycle");
        ids.insert(id);
        span_ids.insert(identity(&registry, id).1);
        assert_eq!(registry.try_close(id), Ok(true));
    }
    assert_eq!(ids.len(), generations, "registry IDs recurred");
    assert_eq!(span_ids.len(), 4 * generations, "span ids did not");
}

// === the `tracing` side ===

#[test]
fn r13_tracing_spans_get_identities_too() {
    let registry = Registry::new();
    with_default(registry.clone(), || {
        let outer = info_span!("outer");
        let _entered = outer.enter();
        let inner = info_span!("inner");
        let get = |s: &tracing::Span| registry.get(Id::from(&s.id().unwrap())).unwrap();
        let (o, i) = (get(&outer), get(&inner));
        assert_eq!(i.trace_id(), o.trace_id());
        assert_eq!(i.parent_span_id(), Some(o.span_id()));
        assert_eq!(o.parent_span_id(), None);
        assert_eq!((o.name(), i.name()), ("outer", "inner"));
        assert!(o.metadata().is_some());
    });
}
