//! Unit tests of `registry` that need its private parts.

mod refs {
    use super::super::*;

    #[test]
    fn r3_a_span_holding_max_refs_refuses_one_more() {
        let id = Id::from_u64(7).unwrap();
        let count = AtomicU32::new(MAX_REFS);
        assert_eq!(
            increment(&count, id),
            Err(Error::TooManyRefs { id: 7 }),
            "a capacity error, not a wrap to DEAD"
        );
        assert_eq!(count.load(Ordering::Relaxed), MAX_REFS, "unchanged");
        let count = AtomicU32::new(MAX_REFS - 1);
        assert_eq!(increment(&count, id), Ok(()));
        assert_eq!(decrement(&count), Some(false));
    }
}

mod tracestates {
    use super::super::*;

    /// A root that continues a remote parent with a `tracestate` keeps it
    /// in the registry's table until it closes, and no longer.
    #[test]
    fn the_table_holds_a_tracestate_while_its_root_lives() {
        let registry = Registry::new();
        let remote = RemoteParent {
            trace_parent: TraceParent {
                trace_id: 1,
                span_id: 2,
            },
            trace_flags: 1,
            tracestate: Some("congo=1".into()),
        };
        let attrs = Attrs {
            name: "s",
            target: "",
            level: Level::Info,
            metadata: None,
            trace_parent: None,
            remote_parent: Some(&remote),
            foreign_parent: None,
        };
        let s = registry.new_span(&attrs, Parent::Root, |_, ()| {}).unwrap();
        let c = registry
            .new_span(&attrs, Parent::Explicit(s), |_, ()| {})
            .unwrap();
        assert_eq!(registry.lock_tracestates().len(), 1, "the root's only");
        registry.try_close(s).unwrap();
        assert_eq!(registry.lock_tracestates().len(), 1);
        registry.try_close(c).unwrap();
        assert!(registry.lock_tracestates().is_empty());
    }
}
