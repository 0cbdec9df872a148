//! The registry driven by the `tracing` macros through its
//! `tracing_core::Subscriber` impl: parents, per-thread current span and
//! stack references (R2, R5, R6, R9), fields (R10), and threads that end
//! with spans entered (R11).

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::{fields, root, Recorder};
use pykregistry_core::{Id, Registry, Value};
use tracing::subscriber::with_default;
use tracing::{field, info_span, Subscriber};

/// The registry ID of a `tracing` span.
fn sid(span: &tracing::Span) -> Id {
    Id::from(&span.id().expect("the registry enables every span"))
}

fn parent_of<H: pykregistry_core::Hooks>(
    registry: &Registry<H>,
    span: &tracing::Span,
) -> Option<Id> {
    registry.get(sid(span)).expect("live").parent_id()
}

#[test]
fn r2_tracing_spans_have_contextual_explicit_or_no_parents() {
    let registry = Registry::new();
    with_default(registry.clone(), || {
        let outer = info_span!("outer");
        let other = info_span!("other");
        assert_eq!(registry.thread_current(), None);
        assert_eq!(
            parent_of(&registry, &outer),
            None,
            "nothing entered: a root"
        );
        {
            let _in_outer = outer.enter();
            assert_eq!(registry.thread_current(), Some(sid(&outer)));
            assert_eq!(
                tracing::Span::current().id().map(|i| Id::from(&i)),
                Some(sid(&outer))
            );
            let inner = info_span!("inner");
            let rooted = info_span!(parent: None, "rooted");
            let explicit = info_span!(parent: &other, "explicit");
            assert_eq!(
                parent_of(&registry, &inner),
                Some(sid(&outer)),
                "contextual"
            );
            assert_eq!(parent_of(&registry, &rooted), None, "parent: None");
            assert_eq!(
                parent_of(&registry, &explicit),
                Some(sid(&other)),
                "explicit"
            );
            // outer: its handle, its stack entry and child inner.
            assert_eq!(registry.ref_count(sid(&outer)), 3);
            assert_eq!(registry.ref_count(sid(&other)), 2);
            {
                let _in_inner = inner.enter();
                assert_eq!(registry.thread_current(), Some(sid(&inner)));
                let innermost = info_span!("innermost");
                assert_eq!(parent_of(&registry, &innermost), Some(sid(&inner)));
                let scope: Vec<Id> = registry
                    .get(sid(&innermost))
                    .unwrap()
                    .scope()
                    .map(|s| s.id())
                    .collect();
                assert_eq!(
                    scope,
                    [sid(&innermost), sid(&inner), sid(&outer)],
                    "R8 through tracing"
                );
            }
            assert_eq!(registry.thread_current(), Some(sid(&outer)));
            assert_eq!(registry.len(), 5);
        }
        assert_eq!(registry.thread_current(), None);
        assert_eq!(
            registry.ref_count(sid(&outer)),
            1,
            "its children and its entry are gone"
        );
        assert_eq!(registry.len(), 2);
    });
    assert_eq!(registry.len(), 0);
}

#[test]
fn r3_span_clones_are_references() {
    let registry = Registry::new();
    with_default(registry.clone(), || {
        let a = info_span!("a");
        let id = sid(&a);
        let copies: Vec<tracing::Span> = (0..3).map(|_| a.clone()).collect();
        assert_eq!(registry.ref_count(id), 4);
        assert!(copies.iter().all(|c| sid(c) == id));
        drop(a);
        assert_eq!(registry.ref_count(id), 3);
        // A clone dropped on another thread releases its reference there.
        let mut copies = copies.into_iter();
        let moved = copies.next().unwrap();
        thread::spawn(move || drop(moved)).join().unwrap();
        assert_eq!(registry.ref_count(id), 2);
        drop(copies);
        assert!(registry.get(id).is_none());
    });
    assert_eq!(registry.len(), 0);
}

#[test]
fn r5_entering_takes_one_reference_and_duplicate_entries_none() {
    let registry = Registry::new();
    with_default(registry.clone(), || {
        let a = info_span!("a");
        let id = sid(&a);
        let first = a.enter();
        assert_eq!(registry.ref_count(id), 2);
        let again = a.enter();
        assert_eq!(
            registry.ref_count(id),
            2,
            "a duplicate entry takes no reference"
        );
        assert_eq!(registry.thread_current(), Some(id));
        drop(again);
        assert_eq!(
            registry.ref_count(id),
            2,
            "the first entry still holds its reference"
        );
        assert_eq!(registry.thread_current(), Some(id));
        drop(first);
        assert_eq!(registry.ref_count(id), 1);
        assert_eq!(registry.thread_current(), None);
    });
    assert_eq!(registry.len(), 0);
}

#[test]
fn r5_a_span_lives_while_entered_and_closes_at_exit() {
    let registry = Recorder::registry();
    with_default(registry.clone(), || {
        let a = info_span!("a");
        let id = sid(&a);
        let tracing_id = a.id().unwrap();
        std::mem::forget(a.enter());
        drop(a);
        assert_eq!(registry.ref_count(id), 1, "held by the stack entry only");
        assert_eq!(registry.thread_current(), Some(id));
        assert!(registry.hooks().closed().is_empty());
        Subscriber::exit(&registry, &tracing_id);
        assert_eq!(
            registry.hooks().closed_ids(),
            [id],
            "exit released the last reference"
        );
        assert_eq!(registry.thread_current(), None);
    });
    assert_eq!(registry.len(), 0);
}

#[test]
fn r5_exit_removes_the_latest_entry_anywhere_and_ignores_unknown_spans() {
    let registry = Registry::new();
    let [a, b, c, x] = ["a", "b", "c", "x"].map(|n| root(&registry, n));
    let [ta, tb, tc, tx]: [tracing::Id; 4] = [a, b, c, x].map(Into::into);
    for t in [&ta, &tb, &tc] {
        Subscriber::enter(&registry, t);
    }
    assert_eq!(registry.thread_current(), Some(c));
    assert_eq!([a, b, c].map(|s| registry.ref_count(s)), [2, 2, 2]);
    Subscriber::exit(&registry, &tb);
    assert_eq!(registry.thread_current(), Some(c), "b was not on top");
    assert_eq!(registry.ref_count(b), 1);
    Subscriber::exit(&registry, &tx);
    Subscriber::exit(&registry, &tb);
    assert_eq!(
        [a, b, c, x].map(|s| registry.ref_count(s)),
        [2, 1, 2, 1],
        "nothing changed"
    );
    assert_eq!(registry.thread_current(), Some(c));
    Subscriber::exit(&registry, &tc);
    assert_eq!(registry.thread_current(), Some(a));
    Subscriber::exit(&registry, &ta);
    assert_eq!(registry.thread_current(), None);
    for s in [a, b, c, x] {
        assert_eq!(registry.try_close(s), Ok(true));
    }
    assert_eq!(registry.len(), 0);
}

#[test]
fn r5_entering_a_span_that_is_not_live_leaves_the_stack_as_it_was() {
    let registry = Registry::new();
    let a = root(&registry, "a");
    let gone = root(&registry, "gone");
    assert_eq!(registry.try_close(gone), Ok(true));
    let reused = root(&registry, "reused");
    Subscriber::enter(&registry, &a.into());
    for bad in [gone, common::id(12_345)] {
        Subscriber::enter(&registry, &bad.into());
        assert_eq!(registry.thread_current(), Some(a));
        assert_eq!(
            registry.ref_count(reused),
            1,
            "the slot's new span took nothing"
        );
        // Exiting it finds no entry either.
        Subscriber::exit(&registry, &bad.into());
        assert_eq!(registry.thread_current(), Some(a));
    }
    assert_eq!(registry.ref_count(a), 2);
    Subscriber::exit(&registry, &a.into());
    assert_eq!(registry.thread_current(), None);
    assert_eq!(registry.try_close(a), Ok(true));
    assert_eq!(registry.try_close(reused), Ok(true));
    assert_eq!(registry.len(), 0);
}

#[test]
fn r6_reentering_the_root_leaves_the_leaf_current() {
    let registry = Registry::new();
    with_default(registry.clone(), || {
        let root = info_span!("root");
        let _in_root = root.enter();
        let leaf = info_span!("leaf");
        let _in_leaf = leaf.enter();
        let again = root.enter();
        assert_eq!(registry.thread_current(), Some(sid(&leaf)));
        let next = info_span!("next");
        assert_eq!(
            parent_of(&registry, &next),
            Some(sid(&leaf)),
            "new spans are the leaf's children"
        );
        assert_eq!(
            registry.ref_count(sid(&root)),
            3,
            "handle + one entry + leaf"
        );
        drop(again);
        assert_eq!(registry.thread_current(), Some(sid(&leaf)));
    });
    assert_eq!(registry.len(), 0);
}

#[test]
fn r6_spans_entered_on_one_thread_are_not_current_on_another() {
    let registry = Registry::new();
    with_default(registry.clone(), || {
        let a = info_span!("a");
        let _in_a = a.enter();
        let r = registry.clone();
        let (there, parent) = thread::spawn(move || {
            with_default(r.clone(), || {
                let b = info_span!("b");
                (r.thread_current(), r.get(sid(&b)).unwrap().parent_id())
            })
        })
        .join()
        .unwrap();
        assert_eq!(there, None);
        assert_eq!(parent, None, "a span made on another thread is a root");
        assert_eq!(registry.thread_current(), Some(sid(&a)));
    });
    assert_eq!(registry.len(), 0);
}

#[test]
fn r9_ref_count_counts_handles_children_and_stack_entries() {
    let registry = Registry::new();
    with_default(registry.clone(), || {
        let a = info_span!("a");
        let id = sid(&a);
        let handle2 = a.clone();
        let g1 = a.enter();
        let kid1 = info_span!("kid1");
        let kid2 = info_span!(parent: &a, "kid2");
        let g2 = a.enter();
        // 2 handles + 2 children + 1 non-duplicate entry.
        assert_eq!(registry.ref_count(id), 5);
        drop(g2);
        drop(kid1);
        assert_eq!(registry.ref_count(id), 4);
        drop(g1);
        drop(handle2);
        assert_eq!(registry.ref_count(id), 2);
        drop(a);
        assert_eq!(registry.ref_count(id), 1, "kid2 keeps it live");
        assert_eq!(registry.len(), 2);
        drop(kid2);
    });
    assert_eq!(registry.len(), 0);
}

#[test]
fn r10_fields_given_at_creation_and_recorded_read_back() {
    let registry = Registry::new();
    with_default(registry.clone(), || {
        let s = info_span!(
            "fields",
            neg = -3i64,
            small = 5u64,
            huge = u64::MAX,
            flag = true,
            x = 1.5f64,
            text = "hi",
            dbg = ?vec![1, 2],
            later = field::Empty,
        );
        let id = sid(&s);
        let expect = |later: Option<Value>| {
            let mut f = vec![
                ("neg".to_owned(), Value::I64(-3)),
                ("small".to_owned(), Value::I64(5)),
                ("huge".to_owned(), Value::U64(u64::MAX)),
                ("flag".to_owned(), Value::Bool(true)),
                ("x".to_owned(), Value::F64(1.5)),
                ("text".to_owned(), Value::Str("hi".into())),
                ("dbg".to_owned(), Value::Str("[1, 2]".into())),
            ];
            f.extend(later.map(|v| ("later".to_owned(), v)));
            f
        };
        assert_eq!(
            fields(&registry, id).unwrap(),
            expect(None),
            "Empty is not recorded"
        );
        s.record("later", "now");
        assert_eq!(
            fields(&registry, id).unwrap(),
            expect(Some(Value::Str("now".into())))
        );
        s.record("neg", 4);
        assert_eq!(
            fields(&registry, id).unwrap()[0],
            ("neg".to_owned(), Value::I64(4)),
            "replaced in place"
        );
        let meta = registry
            .get(id)
            .unwrap()
            .metadata()
            .expect("tracing metadata");
        assert_eq!(meta.name(), "fields");
        assert_eq!(
            registry.get(id).unwrap().level(),
            pykregistry_core::Level::Info
        );
        assert_eq!(registry.get(id).unwrap().target(), module_path!());
    });
    assert_eq!(registry.len(), 0);
}

#[test]
fn r10_events_and_follows_from_change_no_count() {
    let registry = Registry::new();
    with_default(registry.clone(), || {
        let a = info_span!("a");
        let b = info_span!("b");
        let _in_a = a.enter();
        let before = (
            registry.len(),
            registry.ref_count(sid(&a)),
            registry.ref_count(sid(&b)),
        );
        tracing::info!(k = 1, "contextual event");
        tracing::warn!(parent: &b, "explicit event");
        tracing::error!(parent: None, "root event");
        b.follows_from(&a);
        let after = (
            registry.len(),
            registry.ref_count(sid(&a)),
            registry.ref_count(sid(&b)),
        );
        assert_eq!(before, after);
    });
    assert_eq!(registry.len(), 0);
}

/// Runs `body` on a new thread with `registry` as its default subscriber,
/// and joins it.
fn on_thread<R: Send + 'static>(
    registry: &Registry<Recorder>,
    body: impl FnOnce(&Registry<Recorder>) -> R + Send + 'static,
) -> R {
    let r = registry.clone();
    thread::spawn(move || with_default(r.clone(), || body(&r)))
        .join()
        .expect("the thread ends cleanly")
}

#[test]
fn r11_a_thread_ending_inside_its_span_releases_it() {
    let registry = Recorder::registry();
    let id = on_thread(&registry, |r| {
        let span = info_span!("entered at exit");
        std::mem::forget(span.enter());
        let id = sid(&span);
        drop(span);
        assert_eq!(r.ref_count(id), 1, "only the thread's stack holds it");
        id
    });
    assert_eq!(
        registry.hooks().closed_ids(),
        [id],
        "closed when the thread ended"
    );
    assert_eq!(registry.len(), 0);
}

#[test]
fn r11_a_thread_ending_with_a_nested_stack_releases_every_entry() {
    let registry = Recorder::registry();
    let ids = on_thread(&registry, |r| {
        let mut ids = Vec::new();
        for name in ["outer", "middle", "inner"] {
            let span = info_span!("nested", which = name);
            std::mem::forget(span.enter());
            ids.push(sid(&span));
        }
        // Re-entering the outer span adds a duplicate entry on top.
        Subscriber::enter(r, &ids[0].into());
        assert_eq!(r.thread_current(), Some(ids[2]));
        assert_eq!(
            ids.iter().map(|&i| r.ref_count(i)).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        ids
    });
    let mut leaf_first = ids;
    leaf_first.reverse();
    assert_eq!(
        registry.hooks().closed_ids(),
        leaf_first,
        "each closed once, leaf first"
    );
    assert_eq!(registry.len(), 0);
}

#[test]
fn r11_a_thread_entering_a_span_made_elsewhere_gives_its_reference_back() {
    let registry = Recorder::registry();
    let keep = root(&registry, "kept by the main thread");
    let entered = Arc::new(Barrier::new(2));
    let ended = {
        let r = registry.clone();
        let entered = Arc::clone(&entered);
        thread::spawn(move || {
            // No `new_span` on this thread: only the stack touches the registry.
            Subscriber::enter(&r, &keep.into());
            entered.wait();
            entered.wait();
        })
    };
    entered.wait();
    assert_eq!(
        registry.ref_count(keep),
        2,
        "the other thread's entry holds one"
    );
    assert_eq!(
        registry.thread_current(),
        None,
        "and it is not current here"
    );
    entered.wait();
    ended.join().unwrap();
    assert_eq!(registry.ref_count(keep), 1);
    assert!(registry.hooks().closed().is_empty());
    assert_eq!(registry.try_close(keep), Ok(true));
    assert_eq!(registry.len(), 0);
}

#[test]
fn r11_a_span_made_by_the_core_api_then_entered_is_released_at_thread_end() {
    let registry = Recorder::registry();
    let id = on_thread(&registry, |r| {
        // The core API first, then the subscriber's stack.
        let id = root(r, "core first");
        Subscriber::enter(r, &id.into());
        assert_eq!(r.try_close(id), Ok(false));
        id
    });
    assert_eq!(registry.hooks().closed_ids(), [id]);
    assert_eq!(registry.len(), 0);
}

#[test]
fn r11_a_later_thread_does_not_inherit_entered_spans() {
    let registry = Recorder::registry();
    let first = on_thread(&registry, |r| {
        let span = info_span!("first");
        std::mem::forget(span.enter());
        let id = sid(&span);
        // Keep a handle open, so the span outlives the thread.
        std::mem::forget(span);
        assert_eq!(r.ref_count(id), 2);
        id
    });
    assert_eq!(
        registry.ref_count(first),
        1,
        "the stack's reference was released"
    );
    for _ in 0..4 {
        let (current, parent) = on_thread(&registry, |r| {
            let span = info_span!("later");
            (r.thread_current(), r.get(sid(&span)).unwrap().parent_id())
        });
        assert_eq!(current, None);
        assert_eq!(parent, None, "a later thread's span is a root");
    }
    assert_eq!(
        registry.try_close(first),
        Ok(true),
        "the forgotten handle's reference"
    );
    assert_eq!(registry.len(), 0);
}
