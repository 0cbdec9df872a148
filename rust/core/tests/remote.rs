//! W3C trace context in the registry: a span whose parent is in another
//! process (a [`RemoteParent`]) is a root here that continues the remote
//! trace, and its descendants carry the trace's flags and `tracestate`.

mod common;

use std::sync::Arc;

use common::{attrs, child, root, span};
use pykregistry_core::traceparent::{DEFAULT_FLAGS, RANDOM_TRACE_ID, SAMPLED};
use pykregistry_core::{Attrs, Id, Parent, Registry, RemoteParent, TraceParent};

/// The specification's example: `00-4bf9...4736-00f0...02b7-01` with
/// `tracestate: congo=t61rcWkgMzE`.
fn remote(tracestate: Option<&str>, flags: u8) -> RemoteParent {
    RemoteParent {
        trace_parent: TraceParent {
            trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            span_id: 0x00f0_67aa_0ba9_02b7,
        },
        trace_flags: flags,
        tracestate: tracestate.map(Arc::from),
    }
}

fn under<'a>(name: &'a str, remote: &'a RemoteParent) -> Attrs<'a> {
    Attrs {
        remote_parent: Some(remote),
        foreign_parent: None,
        ..attrs(name)
    }
}

fn context(registry: &Registry, id: Id) -> RemoteParent {
    registry.get(id).expect("live").as_remote_parent()
}

#[test]
fn a_span_with_a_remote_parent_is_a_root_that_continues_its_trace() {
    let registry = Registry::new();
    let r = remote(Some("congo=t61rcWkgMzE"), SAMPLED | RANDOM_TRACE_ID);
    for parent in [Parent::Root, Parent::Contextual(None)] {
        let s = registry
            .new_span(&under("server", &r), parent, |_, ()| {})
            .unwrap();
        let view = registry.get(s).unwrap();
        assert_eq!(view.parent_id(), None, "a root in the registry");
        assert_eq!(view.trace_id(), r.trace_parent.trace_id);
        assert_eq!(view.parent_span_id(), Some(r.trace_parent.span_id));
        assert_ne!(view.span_id(), r.trace_parent.span_id);
        assert_eq!(view.trace_flags(), SAMPLED | RANDOM_TRACE_ID);
        assert_eq!(view.tracestate().as_deref(), Some("congo=t61rcWkgMzE"));
        assert!(view.parent_is_remote(), "its parent is in another process");
    }
}

#[test]
fn descendants_carry_the_remote_trace_its_flags_and_tracestate() {
    let registry = Registry::new();
    let r = remote(Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"), 0);
    let server = registry
        .new_span(&under("server", &r), Parent::Root, |_, ()| {})
        .unwrap();
    let db = child(&registry, "db", server);
    let query = span(&registry, "query", Parent::Contextual(Some(db)));
    for (s, parent) in [(db, server), (query, db)] {
        let c = context(&registry, s);
        assert_eq!(c.trace_parent.trace_id, r.trace_parent.trace_id);
        assert_eq!(
            registry.get(s).unwrap().parent_span_id(),
            Some(registry.get(parent).unwrap().span_id())
        );
        assert_eq!(
            c.trace_flags, 0,
            "an unsampled remote trace stays unsampled"
        );
        assert_eq!(c.tracestate, r.tracestate);
        assert!(!registry.get(s).unwrap().parent_is_remote());
    }
    // What a process continuing `query` is told.
    let c = context(&registry, query);
    assert_eq!(
        c.trace_parent,
        registry.get(query).unwrap().as_trace_parent()
    );
}

#[test]
fn a_trace_started_here_has_the_default_flags_and_no_tracestate() {
    let registry = Registry::new();
    let p = root(&registry, "p");
    let c = child(&registry, "c", p);
    for s in [p, c] {
        let ctx = context(&registry, s);
        assert_eq!(ctx.trace_flags, DEFAULT_FLAGS);
        assert_eq!(DEFAULT_FLAGS, SAMPLED);
        assert_eq!(ctx.tracestate, None);
    }
}

#[test]
fn a_remote_parent_without_tracestate_gives_none() {
    let registry = Registry::new();
    let r = remote(None, SAMPLED);
    let s = registry
        .new_span(&under("s", &r), Parent::Root, |_, ()| {})
        .unwrap();
    let c = child(&registry, "c", s);
    assert_eq!(context(&registry, c).tracestate, None);
    assert_eq!(context(&registry, c).trace_flags, SAMPLED);
}

#[test]
fn a_registry_parent_wins_over_a_remote_parent() {
    let registry = Registry::new();
    let r = remote(Some("congo=1"), 0);
    let p = root(&registry, "p");
    for parent in [Parent::Explicit(p), Parent::Contextual(Some(p))] {
        // A contextual parent is taken only for the span the trace parent
        // names; the remote parent names another, so the span is a root.
        let s = registry
            .new_span(&under("s", &r), parent, |_, ()| {})
            .unwrap();
        let view = registry.get(s).unwrap();
        if let Parent::Explicit(_) = parent {
            assert_eq!(view.parent_id(), Some(p));
            assert_eq!(view.trace_id(), registry.get(p).unwrap().trace_id());
            assert_eq!(view.trace_flags(), DEFAULT_FLAGS, "the parent's flags");
            assert_eq!(view.tracestate(), None);
        } else {
            assert_eq!(view.parent_id(), None);
            assert_eq!(view.trace_id(), r.trace_parent.trace_id);
            assert_eq!(view.tracestate().as_deref(), Some("congo=1"));
        }
    }
}

#[test]
fn the_tracestate_goes_with_its_root_and_never_reaches_a_later_span() {
    let registry = Registry::new();
    let r = remote(Some("congo=1"), SAMPLED);
    let s = registry
        .new_span(&under("s", &r), Parent::Root, |_, ()| {})
        .unwrap();
    let c = child(&registry, "c", s);
    assert_eq!(registry.try_close(s), Ok(false), "the child holds it");
    assert_eq!(context(&registry, c).tracestate.as_deref(), Some("congo=1"));
    assert_eq!(registry.try_close(c), Ok(true));
    assert!(registry.is_empty());
    // Slots are reused: nothing of the closed spans shows on new ones.
    for _ in 0..64 {
        let later = root(&registry, "later");
        let later_child = child(&registry, "later_child", later);
        assert_eq!(context(&registry, later_child).tracestate, None);
        assert_eq!(context(&registry, later_child).trace_flags, DEFAULT_FLAGS);
        registry.try_close(later_child).unwrap();
        registry.try_close(later).unwrap();
    }
}

#[test]
fn many_remote_roots_keep_their_own_tracestate() {
    let registry = Registry::new();
    let remotes: Vec<RemoteParent> = (0..100)
        .map(|i| remote(Some(&format!("k=v{i}")), SAMPLED))
        .collect();
    let spans: Vec<(Id, Id)> = remotes
        .iter()
        .map(|r| {
            let s = registry
                .new_span(&under("s", r), Parent::Root, |_, ()| {})
                .unwrap();
            (s, child(&registry, "c", s))
        })
        .collect();
    for (i, &(s, c)) in spans.iter().enumerate() {
        assert_eq!(
            context(&registry, c).tracestate.as_deref(),
            Some(&*format!("k=v{i}"))
        );
        registry.try_close(c).unwrap();
        if i % 2 == 0 {
            assert_eq!(registry.try_close(s), Ok(true));
        }
    }
    for (i, &(s, _)) in spans.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        assert_eq!(
            context(&registry, s).tracestate.as_deref(),
            Some(&*format!("k=v{i}"))
        );
        registry.try_close(s).unwrap();
    }
    assert!(registry.is_empty());
}

/// A span made under a foreign parent (another tracer's span, current above
/// the registry's current span: the bindings' OpenTelemetry bridge) keeps
/// its registry parent, and takes the foreign span as its parent in the
/// trace, with its flags and `tracestate`; its children inherit them. An
/// explicit parent wins.
#[test]
fn a_foreign_parent_is_the_trace_parent_and_keeps_the_registry_parent() {
    let registry = Registry::new();
    let with = |foreign| Attrs {
        foreign_parent: foreign,
        ..attrs("s")
    };
    let outer = registry
        .new_span(&with(None), Parent::Root, |_, ()| {})
        .unwrap();
    let (outer_trace, outer_span) = {
        let v = registry.get(outer).unwrap();
        (v.trace_id(), v.span_id())
    };
    let foreign = RemoteParent {
        trace_parent: TraceParent {
            trace_id: 7,
            span_id: 9,
        },
        trace_flags: 0,
        tracestate: Some("vendor=x".into()),
    };
    let inner = registry
        .new_span(
            &with(Some(&foreign)),
            Parent::Contextual(Some(outer)),
            |_, ()| {},
        )
        .unwrap();
    let view = registry.get(inner).unwrap();
    assert_eq!(view.parent().map(|p| p.id()), Some(outer));
    assert_eq!((view.trace_id(), view.parent_span_id()), (7, Some(9)));
    assert_eq!(view.trace_flags(), 0);
    assert_eq!(view.tracestate().as_deref(), Some("vendor=x"));
    assert!(
        !view.parent_is_remote(),
        "another tracer's span in this process is not remote"
    );
    let child = registry
        .new_span(&with(None), Parent::Explicit(inner), |_, ()| {})
        .unwrap();
    let child = registry.get(child).unwrap();
    assert_eq!((child.trace_id(), child.trace_flags()), (7, 0));
    assert_eq!(child.tracestate().as_deref(), Some("vendor=x"));
    // No tracestate on the foreign parent: none, not an ancestor's.
    let bare = RemoteParent {
        tracestate: None,
        ..foreign.clone()
    };
    let under_bare = registry
        .new_span(
            &with(Some(&bare)),
            Parent::Contextual(Some(inner)),
            |_, ()| {},
        )
        .unwrap();
    assert_eq!(registry.get(under_bare).unwrap().tracestate(), None);
    // An explicit parent wins over a foreign one.
    let explicit = registry
        .new_span(&with(Some(&foreign)), Parent::Explicit(outer), |_, ()| {})
        .unwrap();
    let explicit = registry.get(explicit).unwrap();
    assert_eq!(
        (explicit.trace_id(), explicit.parent_span_id()),
        (outer_trace, Some(outer_span))
    );
}
