//! The registry's rules (SPEC section 1) on the core API, one thread at a
//! time: R1 IDs, R2 `new_span`, R3 `clone_span`, R7 lookup, R8 scope,
//! R9 counting, R10 fields and R12 errors. Closing (R4) is in `close.rs`,
//! concurrency in `threads.rs`, the `tracing` side in `subscriber.rs`.

mod common;

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::{attrs, child, fields, id, name, root, span, Small, XorShift};
use pykregistry_core::{
    Config, DefaultConfig, Error, Hooks, Id, NoHooks, Op, Parent, Registry, Value,
};

/// IDs of spans created and closed one after the other on this thread, `n`
/// times: each reuses the slot the previous one freed.
fn create_close_cycle<C: Config + 'static>(registry: &Registry<NoHooks, C>, n: usize) -> Vec<Id> {
    (0..n)
        .map(|_| {
            let id = root(registry, "cycle");
            assert_eq!(registry.try_close(id), Ok(true));
            id
        })
        .collect()
}

/// Checks that the first ID recurs after exactly `GENERATIONS` reuses of its
/// slot, and that no ID recurs before.
fn assert_ids_recur_after_generations<C: Config + 'static>() {
    let registry = Registry::<NoHooks, C>::with_hooks(NoHooks);
    let generations = usize::try_from(Registry::<NoHooks, C>::GENERATIONS).unwrap();
    let ids = create_close_cycle(&registry, 2 * generations + 1);
    let first_lap: HashSet<Id> = ids[..generations].iter().copied().collect();
    assert_eq!(
        first_lap.len(),
        generations,
        "an ID recurred before GENERATIONS reuses"
    );
    assert_eq!(
        ids[generations], ids[0],
        "the ID recurs after exactly GENERATIONS reuses"
    );
    assert_eq!(
        ids[generations..2 * generations],
        ids[..generations],
        "and the cycle repeats"
    );
    assert!(registry.is_empty());
}

/// Ref counts of the given spans, for before/after comparisons.
fn counts<H: Hooks, C: Config + 'static>(registry: &Registry<H, C>, ids: &[Id]) -> Vec<usize> {
    ids.iter().map(|&id| registry.ref_count(id)).collect()
}

// === R1 IDs ===

#[test]
fn r1_ids_are_nonzero_and_unique_among_live_spans() {
    let registry = Registry::new();
    let mut rng = XorShift::new(1);
    let mut live: Vec<Id> = Vec::new();
    let mut ever = HashSet::new();
    for _ in 0..6000 {
        if live.is_empty() || rng.below(3) != 0 {
            let parent = if live.is_empty() || rng.below(2) == 0 {
                Parent::Root
            } else {
                Parent::Explicit(live[rng.below(live.len())])
            };
            let id = span(&registry, "s", parent);
            assert_ne!(id.into_u64(), 0);
            assert!(!live.contains(&id), "{id:?} was given to two live spans");
            // Fewer than GENERATIONS closes happen here, so no ID may recur at all.
            assert!(ever.insert(id), "{id:?} recurred before GENERATIONS reuses");
            live.push(id);
        } else {
            let at = rng.below(live.len());
            registry.try_close(live.swap_remove(at)).unwrap();
        }
    }
    for id in live {
        registry.try_close(id).unwrap();
    }
    assert_eq!(registry.len(), 0);
}

#[test]
fn r1_closed_id_is_not_given_to_the_next_span_on_the_same_thread() {
    let registry = Registry::new();
    let keep = root(&registry, "keep");
    let a = root(&registry, "a");
    assert_eq!(registry.try_close(a), Ok(true));
    let b = root(&registry, "b");
    assert_ne!(a, b);
    assert_ne!(keep, b);
    assert!(registry.get(a).is_none());
    assert_eq!(name(&registry, b).as_deref(), Some("b"));
}

#[test]
fn r1_closed_id_is_not_given_to_the_next_span_on_another_thread() {
    let registry = Registry::new();
    let a = root(&registry, "a");
    assert_eq!(registry.try_close(a), Ok(true));
    let r = registry.clone();
    let b = std::thread::spawn(move || root(&r, "b")).join().unwrap();
    assert_ne!(a, b);
    assert!(registry.get(a).is_none());
    assert_eq!(name(&registry, b).as_deref(), Some("b"));
    assert_eq!(registry.try_close(b), Ok(true));
    assert_eq!(registry.len(), 0);
}

#[cfg(target_pointer_width = "64")]
#[test]
fn r1_generations_is_8191_with_the_default_config() {
    assert_eq!(Registry::<NoHooks, DefaultConfig>::GENERATIONS, 8191);
    assert_eq!(Registry::<NoHooks, Small>::GENERATIONS, 15);
}

#[test]
fn r1_id_recurs_after_exactly_generations_reuses_of_a_slot() {
    assert_ids_recur_after_generations::<DefaultConfig>();
}

#[test]
fn r1_id_recurs_after_exactly_generations_reuses_with_reserved_bits() {
    assert_ids_recur_after_generations::<Small>();
}

#[test]
fn r1_recurring_id_names_the_new_span_only() {
    let registry = Registry::<NoHooks, Small>::with_hooks(NoHooks);
    let old = root(&registry, "old");
    registry
        .record(old, [("k", Value::Str("old".into()))])
        .unwrap();
    assert_eq!(registry.try_close(old), Ok(true));
    let generations = usize::try_from(Registry::<NoHooks, Small>::GENERATIONS).unwrap();
    create_close_cycle(&registry, generations - 1);
    let new = root(&registry, "new");
    assert_eq!(new, old, "the slot's ID came back");
    assert_eq!(name(&registry, new).as_deref(), Some("new"));
    assert_eq!(
        fields(&registry, new),
        Some(vec![]),
        "no field of the old span survives"
    );
    assert_eq!(registry.ref_count(new), 1);
}

// === R2 new_span ===

#[test]
fn r2_new_span_has_count_one_and_the_given_attributes() {
    let registry = Registry::new();
    let s = registry
        .new_span(
            &pykregistry_core::Attrs {
                name: "db.query",
                target: "app.db",
                level: pykregistry_core::Level::Debug,
                metadata: None,
                trace_parent: None,
                remote_parent: None,
                foreign_parent: None,
            },
            Parent::Root,
            |f, ()| f.push(("table".into(), Value::Str("users".into()))),
        )
        .unwrap();
    assert_eq!(registry.ref_count(s), 1);
    assert_eq!(registry.len(), 1);
    let view = registry.get(s).unwrap();
    assert_eq!(view.id(), s);
    assert_eq!(view.name(), "db.query");
    assert_eq!(view.target(), "app.db");
    assert_eq!(view.level(), pykregistry_core::Level::Debug);
    assert_eq!(view.parent_id(), None);
    assert!(view.metadata().is_none());
    drop(view);
    assert_eq!(
        fields(&registry, s),
        Some(vec![("table".to_owned(), Value::Str("users".into()))])
    );
}

#[test]
fn r2_contextual_parent_is_the_given_current_span() {
    let registry = Registry::new();
    let current = root(&registry, "current");
    let c = span(&registry, "c", Parent::Contextual(Some(current)));
    assert_eq!(registry.get(c).unwrap().parent_id(), Some(current));
    assert_eq!(
        registry.ref_count(current),
        2,
        "the child holds one reference"
    );
    assert_eq!(registry.ref_count(c), 1);
}

#[test]
fn r2_contextual_without_current_span_is_a_root() {
    let registry = Registry::new();
    let c = span(&registry, "c", Parent::Contextual(None));
    assert_eq!(registry.get(c).unwrap().parent_id(), None);
    assert_eq!(registry.ref_count(c), 1);
}

#[test]
fn r2_explicit_parent_and_root() {
    let registry = Registry::new();
    let p = root(&registry, "p");
    let other = root(&registry, "other");
    let e = child(&registry, "e", p);
    let r = span(&registry, "r", Parent::Root);
    assert_eq!(registry.get(e).unwrap().parent_id(), Some(p));
    assert_eq!(registry.get(r).unwrap().parent_id(), None);
    assert_eq!(counts(&registry, &[p, other, e, r]), [2, 1, 1, 1]);
    assert_eq!(registry.len(), 4);
}

#[test]
fn r2_child_holds_one_reference_on_its_parent_while_it_lives() {
    let registry = Registry::new();
    let p = root(&registry, "p");
    let kids: Vec<Id> = (0..5).map(|_| child(&registry, "kid", p)).collect();
    assert_eq!(registry.ref_count(p), 6);
    for (i, &k) in kids.iter().enumerate() {
        assert_eq!(registry.try_close(k), Ok(true));
        assert_eq!(registry.ref_count(p), 5 - i);
    }
    assert_eq!(registry.try_close(p), Ok(true));
    assert_eq!(registry.len(), 0);
}

#[test]
fn r2_explicit_parent_not_live_is_an_error_and_creates_nothing() {
    let registry = Registry::new();
    let bystander = root(&registry, "bystander");
    let closed = root(&registry, "closed");
    assert_eq!(registry.try_close(closed), Ok(true));
    // The closed span's slot is reused: its stale ID must not reach the new span.
    let reused = root(&registry, "reused");
    for bad in [closed, id(12_345), id(u64::MAX - 1), id(u64::MAX)] {
        let before = (registry.len(), counts(&registry, &[bystander, reused]));
        let mut init_ran = false;
        let result = registry.new_span(&attrs("orphan"), Parent::Explicit(bad), |_, ()| {
            init_ran = true;
        });
        assert_eq!(
            result,
            Err(Error::NotLive {
                id: bad.into_u64(),
                op: Op::Parent
            })
        );
        assert!(!init_ran, "nothing is created");
        assert_eq!(
            (registry.len(), counts(&registry, &[bystander, reused])),
            before
        );
    }
    assert_eq!(counts(&registry, &[bystander, reused]), [1, 1]);
}

#[test]
fn r2_contextual_parent_not_live_makes_a_root() {
    let registry = Registry::new();
    let gone = root(&registry, "gone");
    assert_eq!(registry.try_close(gone), Ok(true));
    let reused = root(&registry, "reused");
    for stale in [gone, id(12_345), id(u64::MAX - 1)] {
        let c = span(&registry, "c", Parent::Contextual(Some(stale)));
        assert_eq!(registry.get(c).unwrap().parent_id(), None);
        assert_eq!(registry.ref_count(c), 1);
        assert_eq!(
            registry.ref_count(reused),
            1,
            "no count changes on the slot's new span"
        );
        assert_eq!(registry.try_close(c), Ok(true));
    }
    assert_eq!(registry.len(), 1);
}

// === R3 clone_span ===

#[test]
fn r3_clone_span_adds_one_and_returns_the_same_id() {
    let registry = Registry::new();
    let s = root(&registry, "s");
    for n in 2..=4 {
        assert_eq!(registry.clone_span(s), Ok(s));
        assert_eq!(registry.ref_count(s), n);
    }
    for _ in 0..3 {
        assert_eq!(registry.try_close(s), Ok(false));
    }
    assert_eq!(registry.try_close(s), Ok(true));
    assert_eq!(registry.len(), 0);
}

#[test]
fn r3_clone_span_on_a_span_that_is_not_live_is_an_error_and_changes_no_count() {
    let registry = Registry::new();
    let parent = root(&registry, "parent");
    let closed = child(&registry, "closed", parent);
    assert_eq!(registry.try_close(closed), Ok(true));
    let reused = root(&registry, "reused");
    for bad in [
        closed,
        id(1 << 40),
        id(12_345),
        id(u64::MAX - 1),
        id(u64::MAX),
    ] {
        assert_eq!(
            registry.clone_span(bad),
            Err(Error::NotLive {
                id: bad.into_u64(),
                op: Op::Clone
            })
        );
        assert_eq!(counts(&registry, &[parent, reused]), [1, 1]);
        assert_eq!(registry.len(), 2);
    }
    // Both still close with their single reference: nothing was incremented.
    assert_eq!(registry.try_close(reused), Ok(true));
    assert_eq!(registry.try_close(parent), Ok(true));
    assert_eq!(registry.len(), 0);
}

// === R7 lookup ===

#[test]
fn r7_get_is_none_for_a_closed_span() {
    let registry = Registry::new();
    let s = root(&registry, "s");
    assert!(registry.get(s).is_some());
    assert_eq!(registry.try_close(s), Ok(true));
    assert!(registry.get(s).is_none());
    assert_eq!(registry.ref_count(s), 0);
}

#[test]
fn r7_get_is_none_for_never_issued_ids() {
    let registry = Registry::new();
    let live = root(&registry, "live");
    for n in [2, 3, 12_345, 1 << 32, 1 << 63, u64::MAX - 1, u64::MAX] {
        let never = id(n);
        assert_ne!(never, live);
        assert!(registry.get(never).is_none(), "{n}");
        assert_eq!(registry.ref_count(never), 0);
    }
    let empty = Registry::new();
    assert!(empty.get(live).is_none(), "an ID of another registry");
}

#[test]
fn r7_get_is_none_for_a_stale_generation() {
    let registry = Registry::new();
    let old = root(&registry, "old");
    assert_eq!(registry.try_close(old), Ok(true));
    let new = root(&registry, "new");
    assert_ne!(old, new);
    assert!(registry.get(old).is_none());
    assert_eq!(name(&registry, new).as_deref(), Some("new"));
}

#[test]
fn r7_zero_is_never_an_id() {
    assert_eq!(Id::from_u64(0), Err(Error::ZeroId));
    assert_eq!(Id::from_u64(1).map(Id::into_u64), Ok(1));
    assert_eq!(Id::from_u64(u64::MAX).map(Id::into_u64), Ok(u64::MAX));
}

#[test]
fn r7_a_view_outliving_its_span_shows_only_that_span() {
    let registry = Registry::new();
    let a = root(&registry, "a");
    registry.record(a, [("k", Value::I64(1))]).unwrap();
    let view = registry.get(a).unwrap();
    assert_eq!(registry.try_close(a), Ok(true));
    assert!(
        registry.get(a).is_none(),
        "closed even though a view exists"
    );
    assert_eq!(registry.len(), 0);
    let b = root(&registry, "b");
    registry.record(b, [("k", Value::I64(2))]).unwrap();
    assert_ne!(a, b);
    assert_eq!(view.name(), "a", "the view never shows another span's data");
    assert_eq!(view.lock_fields()[0].1, Value::I64(1));
    drop(view);
    // Once the view is gone the slot is free again: a full create/close lap
    // still never hands out `a`.
    for _ in 0..100 {
        let c = root(&registry, "c");
        assert_ne!(c, a);
        assert_eq!(registry.try_close(c), Ok(true));
    }
    assert_eq!(registry.len(), 1);
}

#[test]
fn r7_random_ids_never_panic_nor_touch_live_spans() {
    let registry = Registry::new();
    let mut live = vec![root(&registry, "root")];
    for i in 0..200 {
        live.push(child(&registry, "kid", live[i / 4]));
    }
    // Close some, so that freed slots and stale generations exist too.
    let closed: Vec<Id> = (0..40).map(|_| root(&registry, "gone")).collect();
    for &c in &closed {
        assert_eq!(registry.try_close(c), Ok(true));
    }
    let live_set: HashSet<Id> = live.iter().copied().collect();
    let before = counts(&registry, &live);
    let len = registry.len();

    let mut rng = XorShift::new(7);
    let mut probes = 0;
    for round in 0..60_000 {
        let n = match round % 4 {
            0 => rng.next_u64(),
            // Near a live ID: other slots, other threads, other generations.
            1 => live[rng.below(live.len())].into_u64() ^ (1 << rng.below(64)),
            2 => live[rng.below(live.len())]
                .into_u64()
                .wrapping_add(rng.next_u64() % 64),
            _ => closed[rng.below(closed.len())].into_u64(),
        };
        let Ok(probe) = Id::from_u64(n) else { continue };
        if live_set.contains(&probe) {
            continue;
        }
        probes += 1;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            assert!(registry.get(probe).is_none(), "{n:#x}");
            assert_eq!(registry.ref_count(probe), 0);
            assert!(registry.clone_span(probe).is_err());
            assert!(registry.try_close(probe).is_err());
            assert!(registry.record(probe, [("x", Value::None)]).is_err());
            assert!(registry
                .new_span(&attrs("x"), Parent::Explicit(probe), |_, ()| {})
                .is_err());
        }));
        assert!(outcome.is_ok(), "probe {n:#x} panicked");
    }
    assert!(probes > 40_000, "most probes were not live IDs: {probes}");
    assert_eq!(counts(&registry, &live), before);
    assert_eq!(registry.len(), len);
}

// === R8 scope ===

#[test]
fn r8_scope_lists_leaf_to_root_and_from_root_reverses_it() {
    let registry = Registry::new();
    let a = root(&registry, "a");
    let b = child(&registry, "b", a);
    let c = child(&registry, "c", b);
    let d = child(&registry, "d", c);
    let _sibling = child(&registry, "sibling", b);
    let leaf = registry.get(d).unwrap();
    let up: Vec<Id> = leaf.scope().map(|s| s.id()).collect();
    assert_eq!(up, [d, c, b, a]);
    let names: Vec<String> = leaf.scope().map(|s| s.name().to_owned()).collect();
    assert_eq!(names, ["d", "c", "b", "a"]);
    let down: Vec<Id> = leaf.scope().from_root().map(|s| s.id()).collect();
    assert_eq!(down, [a, b, c, d]);
    assert_eq!(leaf.parent().map(|p| p.id()), Some(c));

    let top = registry.get(a).unwrap();
    assert_eq!(top.scope().map(|s| s.id()).collect::<Vec<_>>(), [a]);
    assert_eq!(
        top.scope().from_root().map(|s| s.id()).collect::<Vec<_>>(),
        [a]
    );
    assert!(top.parent().is_none());
}

#[test]
fn r8_scope_follows_the_tree_after_handles_are_released() {
    let registry = Registry::new();
    let a = root(&registry, "a");
    let b = child(&registry, "b", a);
    let c = child(&registry, "c", b);
    // Only c's handle remains; its ancestors live through their children.
    assert_eq!(registry.try_close(a), Ok(false));
    assert_eq!(registry.try_close(b), Ok(false));
    let scope: Vec<Id> = registry.get(c).unwrap().scope().map(|s| s.id()).collect();
    assert_eq!(scope, [c, b, a]);
    assert_eq!(registry.try_close(c), Ok(true));
    assert_eq!(registry.len(), 0);
}

// === R9 counting ===

#[test]
fn r9_ref_count_is_handles_plus_live_children() {
    let registry = Registry::new();
    let r = root(&registry, "r");
    registry.clone_span(r).unwrap();
    registry.clone_span(r).unwrap();
    let c1 = child(&registry, "c1", r);
    let c2 = span(&registry, "c2", Parent::Contextual(Some(r)));
    let g = child(&registry, "g", c1);
    // r: 3 handles + 2 children; grandchildren do not count on r.
    assert_eq!(counts(&registry, &[r, c1, c2, g]), [5, 2, 1, 1]);
    assert_eq!(registry.len(), 4);

    assert_eq!(registry.try_close(c1), Ok(false), "g still holds c1");
    assert_eq!(counts(&registry, &[r, c1, c2, g]), [5, 1, 1, 1]);
    assert_eq!(registry.try_close(g), Ok(true), "closes g, then c1");
    assert_eq!(counts(&registry, &[r, c1, c2, g]), [4, 0, 1, 0]);
    assert_eq!(registry.len(), 2);

    for _ in 0..3 {
        assert_eq!(registry.try_close(r), Ok(false));
    }
    assert_eq!(counts(&registry, &[r, c2]), [1, 1]);
    assert_eq!(
        registry.try_close(c2),
        Ok(true),
        "the last reference on r was c2's"
    );
    assert_eq!(registry.ref_count(r), 0);
    assert_eq!(registry.len(), 0);
    assert!(registry.is_empty());
}

#[test]
fn r9_len_counts_live_spans() {
    let registry = Registry::new();
    assert_eq!(registry.len(), 0);
    let mut rng = XorShift::new(9);
    let mut handles: Vec<Id> = Vec::new();
    // The model: each live span's handles and parent.
    let mut model: HashMap<Id, (usize, Option<Id>)> = HashMap::new();
    for _ in 0..3000 {
        match rng.below(4) {
            0 | 1 => {
                let parent = (!handles.is_empty() && rng.below(2) == 0)
                    .then(|| handles[rng.below(handles.len())]);
                let id = span(
                    &registry,
                    "s",
                    parent.map_or(Parent::Root, Parent::Explicit),
                );
                model.insert(id, (1, parent));
                handles.push(id);
            }
            2 if !handles.is_empty() => {
                let id = handles[rng.below(handles.len())];
                registry.clone_span(id).unwrap();
                model.get_mut(&id).unwrap().0 += 1;
                handles.push(id);
            }
            _ if !handles.is_empty() => {
                let id = handles.swap_remove(rng.below(handles.len()));
                registry.try_close(id).unwrap();
                model.get_mut(&id).unwrap().0 -= 1;
            }
            _ => {}
        }
        // Drop from the model every span with no handle and no child.
        loop {
            let children: HashSet<Id> = model.values().filter_map(|&(_, p)| p).collect();
            let dead: Vec<Id> = model
                .iter()
                .filter(|(id, (h, _))| *h == 0 && !children.contains(id))
                .map(|(&id, _)| id)
                .collect();
            if dead.is_empty() {
                break;
            }
            for d in dead {
                model.remove(&d);
            }
        }
        assert_eq!(registry.len(), model.len());
    }
    let children: Vec<Id> = model.values().filter_map(|&(_, p)| p).collect();
    for (&id, &(h, _)) in &model {
        let kids = children.iter().filter(|&&c| c == id).count();
        assert_eq!(registry.ref_count(id), h + kids, "R9 for {id:?}");
    }
    for id in handles {
        registry.try_close(id).unwrap();
    }
    assert_eq!(registry.len(), 0);
}

// === R10 fields ===

#[test]
fn r10_record_replaces_a_field_in_place_and_appends_new_ones() {
    let registry = Registry::new();
    let s = registry
        .new_span(&attrs("s"), Parent::Root, |f, ()| {
            f.push(("a".into(), Value::I64(1)));
            f.push(("b".into(), Value::Str("x".into())));
        })
        .unwrap();
    registry
        .record(s, [("a", Value::I64(2)), ("c", Value::Bool(true))])
        .unwrap();
    registry.record(s, [("b", Value::None)]).unwrap();
    assert_eq!(
        fields(&registry, s).unwrap(),
        [
            ("a".to_owned(), Value::I64(2)),
            ("b".to_owned(), Value::None),
            ("c".to_owned(), Value::Bool(true)),
        ]
    );
}

#[test]
fn r10_every_value_variant_reads_back_exactly() {
    let registry = Registry::new();
    let values = [
        ("none", Value::None),
        ("yes", Value::Bool(true)),
        ("no", Value::Bool(false)),
        ("min", Value::I64(i64::MIN)),
        ("max", Value::I64(i64::MAX)),
        ("umax", Value::U64(u64::MAX)),
        (
            "big",
            Value::BigInt("-340282366920938463463374607431768211456".into()),
        ),
        ("pi", Value::F64(std::f64::consts::PI)),
        ("neg0", Value::F64(-0.0)),
        ("inf", Value::F64(f64::NEG_INFINITY)),
        ("empty", Value::Str("".into())),
        ("text", Value::Str("héllo\0wörld ✓".into())),
    ];
    let s = root(&registry, "s");
    registry.record(s, values.iter().cloned()).unwrap();
    let back = fields(&registry, s).unwrap();
    assert_eq!(back.len(), values.len());
    for ((name, value), (n, v)) in values.iter().zip(&back) {
        assert_eq!(name, n);
        assert_eq!(value, v);
        if let (Value::F64(x), Value::F64(y)) = (value, v) {
            assert_eq!(x.to_bits(), y.to_bits(), "{name}: the exact float");
        }
    }
    registry.record(s, [("nan", Value::F64(f64::NAN))]).unwrap();
    let nan = fields(&registry, s).unwrap().pop().unwrap();
    assert!(matches!(nan, (ref n, Value::F64(x)) if n == "nan" && x.is_nan()));
    assert_eq!(Value::U64(u64::MAX).to_string(), u64::MAX.to_string());
    assert_eq!(Value::None.to_string(), "None");
}

#[test]
fn r10_record_on_a_span_that_is_not_live_is_an_error() {
    let registry = Registry::new();
    let s = root(&registry, "s");
    assert_eq!(registry.try_close(s), Ok(true));
    let reused = root(&registry, "reused");
    assert_eq!(
        registry.record(s, [("k", Value::I64(1))]),
        Err(Error::NotLive {
            id: s.into_u64(),
            op: Op::Record
        })
    );
    assert_eq!(
        fields(&registry, reused),
        Some(vec![]),
        "the slot's new span is untouched"
    );
}

// === R12 errors ===

#[test]
fn r12_errors_are_values_and_leave_the_registry_as_it_was() {
    let registry = Registry::new();
    let p = root(&registry, "p");
    let c = child(&registry, "c", p);
    let closed = root(&registry, "closed");
    assert_eq!(registry.try_close(closed), Ok(true));
    let snapshot = || {
        (
            registry.len(),
            counts(&registry, &[p, c]),
            fields(&registry, c),
        )
    };
    let before = snapshot();
    let n = closed.into_u64();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        assert_eq!(
            registry.clone_span(closed),
            Err(Error::NotLive {
                id: n,
                op: Op::Clone
            })
        );
        assert_eq!(
            registry.try_close(closed),
            Err(Error::NotLive {
                id: n,
                op: Op::Close
            })
        );
        assert_eq!(
            registry.record(closed, [("k", Value::None)]),
            Err(Error::NotLive {
                id: n,
                op: Op::Record
            })
        );
        assert_eq!(
            registry.new_span(&attrs("x"), Parent::Explicit(closed), |_, ()| {}),
            Err(Error::NotLive {
                id: n,
                op: Op::Parent
            })
        );
        assert!(registry.live_slot(closed, Op::Enter).is_err());
        assert_eq!(Id::from_u64(0), Err(Error::ZeroId));
    }));
    assert!(outcome.is_ok());
    assert_eq!(snapshot(), before);
}

#[test]
fn r12_error_messages_name_the_id_and_the_likely_mistake() {
    let twice = Error::NotLive {
        id: 42,
        op: Op::Close,
    }
    .to_string();
    assert!(
        twice.contains("42") && twice.contains("closed twice"),
        "{twice}"
    );
    let dead_clone = Error::NotLive {
        id: 7,
        op: Op::Clone,
    }
    .to_string();
    assert!(
        dead_clone.contains("span 7") && dead_clone.contains("clone"),
        "{dead_clone}"
    );
    let parent = Error::NotLive {
        id: 9,
        op: Op::Parent,
    }
    .to_string();
    assert!(parent.contains("parent"), "{parent}");
    assert!(Error::ZeroId.to_string().contains("0 is never a span ID"));
    assert!(Error::SlabFull.to_string().contains("full"));
    assert!(Error::TooManyThreads.to_string().contains("threads"));
    let boxed: Box<dyn std::error::Error> = Box::new(Error::ZeroId);
    assert!(!boxed.to_string().is_empty());
}

#[test]
fn r12_a_full_slab_is_an_error_and_changes_no_count() {
    let registry = Registry::<NoHooks, Small>::with_hooks(NoHooks);
    let p = root(&registry, "p");
    // One page of 32 slots per thread: p and 31 children fill it.
    let kids: Vec<Id> = (0..31).map(|_| child(&registry, "kid", p)).collect();
    assert_eq!(registry.ref_count(p), 32);
    for parent in [
        Parent::Explicit(p),
        Parent::Contextual(Some(p)),
        Parent::Root,
    ] {
        let result = registry.new_span(&attrs("overflow"), parent, |_, ()| {});
        assert_eq!(result, Err(Error::SlabFull));
        assert_eq!(
            registry.ref_count(p),
            32,
            "the parent's reference was given back"
        );
        assert_eq!(registry.len(), 32);
    }
    // Closing frees a slot for the next span.
    assert_eq!(registry.try_close(kids[0]), Ok(true));
    let again = child(&registry, "again", p);
    assert_eq!(registry.ref_count(p), 32);
    for k in kids[1..].iter().chain([&again, &p]) {
        registry.try_close(*k).unwrap();
    }
    assert_eq!(registry.len(), 0);
}

/// Allows 4 threads per registry.
#[derive(Debug)]
struct FewThreads;

impl Config for FewThreads {
    const MAX_THREADS: usize = 4;
}

#[test]
fn r12_too_many_threads_is_an_error_not_a_panic() {
    // Eight threads live at once have eight distinct slab thread indices, so
    // at least four are out of this registry's range. (sharded-slab's panic
    // message for those is printed, then caught.)
    const THREADS: usize = 8;
    let registry = Registry::<NoHooks, FewThreads>::with_hooks(NoHooks);
    let start = std::sync::Barrier::new(THREADS);
    let done = std::sync::Barrier::new(THREADS);
    let results: Vec<Result<Id, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let result = registry.new_span(&attrs("t"), Parent::Root, |_, ()| {});
                    done.wait();
                    result
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created: Vec<Id> = results.iter().filter_map(|r| r.clone().ok()).collect();
    let refused = results
        .iter()
        .filter(|r| **r == Err(Error::TooManyThreads))
        .count();
    assert_eq!(created.len() + refused, THREADS, "{results:?}");
    assert!(refused >= THREADS - 4, "{results:?}");
    assert_eq!(registry.len(), created.len());
    for id in created {
        assert_eq!(registry.try_close(id), Ok(true));
    }
    assert_eq!(registry.len(), 0);
}

/// A weak registry reaches the registry while a clone lives, and keeps
/// nothing alive: what the bindings use to close every registry's open
/// spans at interpreter exit (R15).
#[test]
fn weak_registry_reaches_it_while_a_clone_lives() {
    let registry = Registry::new();
    let id = root(&registry, "r");
    let weak = registry.downgrade();
    assert!(weak.is_alive());
    let again = weak.upgrade().expect("a clone is alive");
    assert_eq!(again.uid(), registry.uid());
    assert_eq!(again.ref_count(id), 1);
    drop(again);
    drop(registry);
    assert!(!weak.is_alive());
    assert!(weak.upgrade().is_none());
}
