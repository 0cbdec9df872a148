//! Helpers shared by the integration tests: span constructors, a recording
//! `Hooks`, a small slab configuration and a seeded pseudo-random generator.
//! Each test binary uses a part of them.
#![allow(dead_code)]

use std::cell::Cell;
use std::sync::{Mutex, PoisonError};

use pykregistry_core::{Attrs, Config, Hooks, Id, Level, Parent, Registry, SpanData, Value};

/// Attributes with the given name and a fixed target and level.
pub fn attrs(name: &str) -> Attrs<'_> {
    Attrs {
        name,
        target: "tests",
        level: Level::Info,
        metadata: None,
        trace_parent: None,
        remote_parent: None,
        foreign_parent: None,
    }
}

/// A new span with no fields; panics if the registry refuses.
pub fn span<H: Hooks, C: Config + 'static>(
    registry: &Registry<H, C>,
    name: &str,
    parent: Parent,
) -> Id {
    registry
        .new_span(&attrs(name), parent, |_, _| {})
        .unwrap_or_else(|e| panic!("new_span({name:?}, {parent:?}) failed: {e}"))
}

/// A new root span.
pub fn root<H: Hooks, C: Config + 'static>(registry: &Registry<H, C>, name: &str) -> Id {
    span(registry, name, Parent::Root)
}

/// A new span whose explicit parent is `parent`.
pub fn child<H: Hooks, C: Config + 'static>(
    registry: &Registry<H, C>,
    name: &str,
    parent: Id,
) -> Id {
    span(registry, name, Parent::Explicit(parent))
}

/// The ID with this value.
pub fn id(n: u64) -> Id {
    Id::from_u64(n).expect("nonzero")
}

/// A span's fields as owned pairs, or `None` if it is not live.
pub fn fields<H: Hooks, C: Config + 'static>(
    registry: &Registry<H, C>,
    id: Id,
) -> Option<Vec<(String, Value)>> {
    let span = registry.get(id)?;
    let fields = span.lock_fields();
    Some(
        fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect(),
    )
}

/// The name of a live span.
pub fn name<H: Hooks, C: Config + 'static>(registry: &Registry<H, C>, id: Id) -> Option<String> {
    registry.get(id).map(|s| s.name().to_owned())
}

/// One page of 32 slots per thread, and reserved key bits that leave the
/// generation 4 bits wide: small enough to fill and to cycle in a test.
#[derive(Debug)]
pub struct Small;

impl Config for Small {
    const MAX_PAGES: usize = 1;
    const INITIAL_PAGE_SIZE: usize = 32;
    const RESERVED_BITS: usize = 40;
}

/// xorshift64: deterministic, no dependency.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// What [`Recorder`] saw when a span closed.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub id: Id,
    /// Read through the `SpanData` passed to `on_close`.
    pub name: String,
    pub fields: Vec<(String, Value)>,
    pub parent: Option<Id>,
    pub ref_count: usize,
    /// The name read through `registry.get(id)` inside `on_close`.
    pub name_via_get: Option<String>,
    /// The parent's reference count inside `on_close` (0 if not live).
    pub parent_ref_count: Option<usize>,
    /// Whether `clone_span(id)` succeeded inside `on_close` (it must not).
    pub revived: bool,
    /// Whether `try_close(id)` succeeded inside `on_close` (it must not).
    pub reclosed: bool,
}

/// Hooks that record every close, looking at the closing span both through
/// the data passed in and through the registry.
#[derive(Debug, Default)]
pub struct Recorder {
    closed: Mutex<Vec<Closed>>,
}

impl Recorder {
    /// A registry calling a new `Recorder`.
    pub fn registry() -> Registry<Recorder> {
        Registry::with_hooks(Recorder::default())
    }

    /// Every close so far, in order.
    pub fn closed(&self) -> Vec<Closed> {
        lock(&self.closed).clone()
    }

    /// The IDs closed so far, in order.
    pub fn closed_ids(&self) -> Vec<Id> {
        lock(&self.closed).iter().map(|c| c.id).collect()
    }
}

impl Hooks for Recorder {
    type Ext = ();

    fn on_close<C: Config + 'static>(
        &self,
        registry: &Registry<Self, C>,
        id: Id,
        span: &SpanData<()>,
    ) {
        let mut closed = Closed {
            id,
            name: span.name().to_owned(),
            fields: span
                .lock_fields()
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
            parent: span.parent_id(),
            ref_count: span.ref_count(),
            name_via_get: registry.get(id).map(|s| s.name().to_owned()),
            parent_ref_count: span.parent_id().map(|p| registry.ref_count(p)),
            revived: false,
            reclosed: false,
        };
        // Probe whether the closing span can be cloned or closed again; not
        // from a close that such a probe caused, so that a registry that
        // wrongly allows it fails the test instead of recursing.
        thread_local!(static PROBING: Cell<bool> = const { Cell::new(false) });
        if !PROBING.replace(true) {
            closed.revived = registry.clone_span(id).is_ok();
            closed.reclosed = registry.try_close(id).is_ok();
            PROBING.set(false);
        }
        lock(&self.closed).push(closed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
