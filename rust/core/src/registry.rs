//! The registry: span data in a lock-free slab, reference counts, the close
//! cascade.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU64;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};

use sharded_slab::{Config, DefaultConfig, Pool};
use tracing_core::Metadata;

use crate::field::{upsert, Fields, Value};
use crate::span::{marks, Names, SpanData, SpanRef};
use crate::sync::{fence, Arc, AtomicBool, AtomicIsize, AtomicU32, Mutex, SlabSteps};
use crate::traceparent::{RemoteParent, DEFAULT_FLAGS};
use crate::{identity, seat, Error, Level, Op};

/// A span ID: an integer in `[1, 2**64)`.
///
/// # Span ID generation
///
/// An ID is the span's slab key plus one. The key packs the slot's address,
/// the shard (thread) that created it and the slot's *generation*, which the
/// slab advances every time the slot is released. So:
///
/// - no two live spans share an ID, across all threads;
/// - the ID of a span that closed is not handed to the next span created,
///   on any thread: reusing its slot gives a new generation and so a new ID;
/// - an ID recurs only after its slot has been reused
///   [`Registry::GENERATIONS`] times (8,191 with the default configuration on
///   64-bit targets). Keep your own counter if historical data must be
///   unique;
/// - IDs are neither dense nor small, and say nothing about order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(NonZeroU64);

/// Where a new span's parent comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    /// No parent: the span is a root.
    Root,
    /// The current span of the caller's context, looked up by the caller
    /// (`None` when nothing is current). If it is no longer live, the new
    /// span is a root.
    Contextual(Option<Id>),
    /// The given span, which must be live.
    Explicit(Id),
}

/// The name, target and level of a new span, and the parent it continues in
/// its trace, if any.
#[derive(Debug, Clone, Copy)]
pub struct Attrs<'a> {
    /// The span's name.
    pub name: &'a str,
    /// The span's target (usually a module path).
    pub target: &'a str,
    /// The span's level.
    pub level: Level,
    /// `tracing` metadata, when the span came through the `Subscriber` impl.
    /// When given, the span's name and target are the metadata's.
    pub metadata: Option<&'static Metadata<'static>>,
    /// R13: the identity of the span this one continues in its trace, when
    /// that span is not (or may no longer be) a live span of this registry:
    /// a remote parent, or a closed span that a context inherited. See
    /// [`Registry::new_span`] for how it combines with [`Parent`].
    pub trace_parent: Option<TraceParent>,
    /// W3C trace context: a span in another process that this one
    /// continues. Takes the place of `trace_parent`, and gives the trace its
    /// flags and `tracestate` when the span is a root in the registry.
    pub remote_parent: Option<&'a RemoteParent>,
    /// A span of another tracer (OpenTelemetry's, through the bindings'
    /// context bridge) that is current in the caller's context above its
    /// current span: the new span's parent in the trace, whatever its
    /// registry parent; it gives the span its trace flags and `tracestate`.
    /// Ignored with an explicit parent, which always wins.
    pub foreign_parent: Option<&'a RemoteParent>,
}

/// R13: a span's identity as its children see it: the trace it belongs to
/// and its span id. W3C trace context's `trace-id` and `parent-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace's 128-bit id; never 0.
    pub trace_id: u128,
    /// The parent span's 64-bit id; never 0.
    pub span_id: u64,
}

/// What the registry calls back for the steps only it sees: a span closing,
/// including every parent that a close cascades to.
pub trait Hooks: Send + Sync + 'static {
    /// Per-span data owned by the hooks' user (extensions, timings). Reset to
    /// its default when the span's slot is cleared.
    type Ext: Default + Send + Sync + 'static;

    /// Called once for each span whose count reached zero, before its slot is
    /// cleared and before its parent's reference is released: the span is
    /// still fully readable here (also through `registry.get(id)`), and so
    /// is its parent.
    fn on_close<C: Config + 'static>(
        &self,
        registry: &Registry<Self, C>,
        id: Id,
        span: &SpanData<Self::Ext>,
    ) where
        Self: Sized,
    {
        let _ = (registry, id, span);
    }
}

/// Hooks that do nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl Hooks for NoHooks {
    type Ext = ();
}

/// A span registry.
///
/// Cheap to clone: clones share the same spans. It is `Send + Sync`; every
/// operation is lock-free except reading or recording fields, which takes a
/// per-span lock.
///
/// The registry stores spans and counts references. Which span is *current*
/// is the business of the caller's context: the Python bindings keep one
/// stack per thread and asyncio task, the [`tracing_core::Subscriber`] impl
/// keeps one per thread (see [`crate::SpanStack`]).
pub struct Registry<H: Hooks = NoHooks, C: Config = DefaultConfig> {
    shared: Arc<Shared<H, C>>,
}

/// A registry that does not keep it alive ([`Registry::downgrade`]): for
/// whoever must reach every registry without owning any, such as the
/// Python bindings closing open spans at interpreter exit.
#[cfg(not(loom))]
pub struct WeakRegistry<H: Hooks = NoHooks, C: Config = DefaultConfig> {
    shared: std::sync::Weak<Shared<H, C>>,
}

#[cfg(not(loom))]
impl<H: Hooks, C: Config> fmt::Debug for WeakRegistry<H, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakRegistry")
            .field("alive", &self.is_alive())
            .finish()
    }
}

#[cfg(not(loom))]
impl<H: Hooks, C: Config> WeakRegistry<H, C> {
    /// Whether any clone of the registry is still alive.
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.shared.strong_count() > 0
    }

    /// The registry, if any clone of it is still alive.
    #[must_use]
    pub fn upgrade(&self) -> Option<Registry<H, C>> {
        self.shared.upgrade().map(|shared| Registry { shared })
    }
}

struct Shared<H: Hooks, C: Config> {
    spans: Pool<SpanData<H::Ext>, C>,
    /// Spans created minus spans cleared, in [`LIVE_STRIPES`] stripes that
    /// threads pick round-robin, so that counting does not make threads
    /// contend on one cache line. Load-bearing: counting must work from a
    /// thread-local destructor (a thread's stack of entered spans closes them
    /// as the thread ends), which `thread_local::ThreadLocal` cannot promise:
    /// once its own per-thread guard is dropped it panics there, and a panic
    /// in a thread-local destructor aborts the process.
    live: Box<[LiveCount]>,
    /// Keys of closed spans whose slots a thread without a seat could not
    /// clear; cleared by the next span creation.
    orphans: Mutex<Vec<usize>>,
    has_orphans: AtomicBool,
    hooks: H,
    uid: usize,
    /// W3C trace context: the `tracestate` of each live root that continues
    /// a remote parent which had one, by the root's span id. Its
    /// descendants find it through their root (`SpanRef::tracestate`).
    /// Only such roots take the lock, at creation and close.
    tracestates: std::sync::Mutex<HashMap<u64, std::sync::Arc<str>>>,
    /// Marks slab operations for loom; empty otherwise.
    slab_steps: SlabSteps,
}

/// The count of a span that has closed but whose slot may not be cleared
/// yet: lookups treat it as gone, and it never comes back to life.
pub(crate) const DEAD: u32 = u32::MAX;

/// The most references a span can hold; cloning beyond fails with
/// [`Error::TooManyRefs`]. Only a loop of clones never released gets there:
/// a reference per handle, child or entry would take hundreds of gigabytes
/// first.
pub const MAX_REFS: u32 = u32::MAX - 1;

#[derive(Default)]
#[repr(align(128))]
struct LiveCount(AtomicIsize);

/// How many stripes the live-span count has.
const LIVE_STRIPES: usize = 16;

// === impl Id ===

impl Id {
    /// The ID with this integer value, if it is not zero.
    pub fn from_u64(n: u64) -> Result<Id, Error> {
        NonZeroU64::new(n).map(Id).ok_or(Error::ZeroId)
    }

    /// The integer value of this ID.
    #[must_use]
    pub fn into_u64(self) -> u64 {
        self.0.get()
    }

    /// R1: a slab key as an ID: never 0, and unique among live spans (the
    /// key's generation changes with each reuse of the slot).
    fn from_key(key: usize) -> Id {
        // Keys never use all 64 bits (the thread index is at most MAX_THREADS,
        // below its field's maximum), so `key + 1` neither overflows nor is 0.
        Id(NonZeroU64::new(key as u64 + 1).expect("slab keys are below u64::MAX"))
    }

    fn key(self) -> Option<usize> {
        usize::try_from(self.0.get() - 1).ok()
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.0)
    }
}

impl From<Id> for tracing_core::span::Id {
    fn from(id: Id) -> Self {
        tracing_core::span::Id::from_non_zero_u64(id.0)
    }
}

impl From<&tracing_core::span::Id> for Id {
    fn from(id: &tracing_core::span::Id) -> Self {
        Id(id.into_non_zero_u64())
    }
}

// === impl Registry ===

impl Registry {
    /// A registry with no hooks and the default slab configuration.
    #[must_use]
    pub fn new() -> Self {
        Self::with_hooks(NoHooks)
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Hooks, C: Config> Clone for Registry<H, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<H: Hooks, C: Config + 'static> fmt::Debug for Registry<H, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("uid", &self.shared.uid)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<H: Hooks, C: Config + 'static> Registry<H, C> {
    /// How many times a slot can be reused before an ID recurs.
    /// The slab advances a slot's generation modulo `2**bits - 1`.
    pub const GENERATIONS: u64 = (1 << generation_len::<C>()) - 1;

    /// A registry that calls `hooks` back, with slab configuration `C`.
    pub fn with_hooks(hooks: H) -> Self {
        static NEXT_UID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        Self {
            shared: Arc::new(Shared {
                spans: Pool::new_with_config::<C>(),
                live: (0..LIVE_STRIPES).map(|_| LiveCount::default()).collect(),
                orphans: Mutex::new(Vec::new()),
                has_orphans: AtomicBool::new(false),
                hooks,
                uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
                tracestates: std::sync::Mutex::new(HashMap::new()),
                slab_steps: SlabSteps::default(),
            }),
        }
    }

    /// A reference to this registry that does not keep it alive.
    #[cfg(not(loom))]
    #[must_use]
    pub fn downgrade(&self) -> WeakRegistry<H, C> {
        WeakRegistry {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// The hooks this registry calls.
    #[must_use]
    pub fn hooks(&self) -> &H {
        &self.shared.hooks
    }

    /// A number unique to this registry (and its clones) in this process.
    #[must_use]
    pub fn uid(&self) -> usize {
        self.shared.uid
    }

    /// Creates a span with count 1 and returns its ID.
    ///
    /// R2: with [`Parent::Explicit`], the parent must be live (else nothing
    /// is created and no count changes); a [`Parent::Contextual`] parent that
    /// is no longer live makes a root. A span with a parent holds one
    /// reference on it until it closes. `init` fills the new span's fields
    /// and extension data.
    ///
    /// R13: the span gets a new span id, and a trace id and parent span id:
    ///
    /// - a span with a registry parent shares its trace, and its parent span
    ///   id is the parent's span id. An explicit parent always is one
    ///   (`attrs.trace_parent` is then ignored). A contextual parent is one
    ///   if it is live and, when `attrs.trace_parent` is given, is the very
    ///   span it names (same span id): registry IDs recur after slot reuse,
    ///   so a live span with the ID of a closed one is not taken for it;
    /// - otherwise the span is a root in the registry (no parent, no
    ///   reference held); with `attrs.trace_parent` it continues that trace
    ///   under that parent (a remote parent, or a closed one a context
    ///   inherited), and without, it starts a new trace with no parent span.
    ///   `attrs.remote_parent`, when given, is the trace parent instead of
    ///   `attrs.trace_parent`.
    ///
    /// W3C trace context: a span shares its registry parent's trace flags;
    /// a root takes those of its remote parent, and keeps its `tracestate`
    /// ([`SpanRef::tracestate`]); any other root has [`DEFAULT_FLAGS`] and
    /// no `tracestate`.
    pub fn new_span(
        &self,
        attrs: &Attrs<'_>,
        parent: Parent,
        init: impl FnOnce(&mut Fields, &mut H::Ext),
    ) -> Result<Id, Error> {
        // R2, R13: the registry parent (whose reference the new span holds)
        // and the trace parent, and the trace flags that come with it.
        let remote = attrs.remote_parent;
        let trace_parent = remote.map(|r| r.trace_parent).or(attrs.trace_parent);
        let flags = remote.map_or(DEFAULT_FLAGS, |r| r.trace_flags);
        let parent_arg = parent;
        // The last: whether the parent keeps a `tracestate`, or is under one
        // that does.
        let (parent, trace, flags, under_tracestate) = match parent {
            Parent::Explicit(p) => {
                let view = self.clone_span_ref(p).map_err(|e| match e {
                    Error::NotLive { id, .. } => Error::NotLive { id, op: Op::Parent },
                    e => e,
                })?;
                let trace = Some(view.as_trace_parent());
                (Some(p), trace, view.trace_flags, view.may_have_tracestate())
            }
            Parent::Contextual(Some(p)) => match self.clone_contextual(p, trace_parent) {
                Some(view) => {
                    let trace = Some(view.as_trace_parent());
                    (Some(p), trace, view.trace_flags, view.may_have_tracestate())
                }
                None => (None, trace_parent, flags, false),
            },
            Parent::Root | Parent::Contextual(None) => (None, trace_parent, flags, false),
        };
        let foreign = attrs
            .foreign_parent
            .filter(|_| !matches!(parent_arg, Parent::Explicit(_)));
        let (trace, flags) = match foreign {
            Some(f) => (Some(f.trace_parent), f.trace_flags),
            None => (trace, flags),
        };
        let created = seat::take::<C>().and_then(|()| {
            self.shared.slab_steps.write();
            guard_slab(|| self.shared.spans.create())
        });
        let mut slot = match created {
            Ok(Some(slot)) => slot,
            failed => {
                if let Some(p) = parent {
                    self.release(p);
                }
                return Err(failed.err().unwrap_or(Error::SlabFull));
            }
        };
        let data = &mut *slot;
        match (&mut data.names, attrs.metadata) {
            (_, Some(meta)) => data.names = Names::Tracing(meta),
            (Names::Owned { name, target }, None) => {
                name.push_str(attrs.name);
                target.push_str(attrs.target);
            }
            (Names::Tracing(_), None) => data.names = Names::owned(attrs.name, attrs.target),
        }
        data.level = attrs.level;
        data.parent = parent;
        data.span_id = identity::next_span_id();
        let (trace_id, parent_span_id) = match trace {
            Some(tp) => (tp.trace_id, tp.span_id),
            None => (identity::new_trace_id(), 0),
        };
        data.trace_id = [(trace_id >> 64) as u64, trace_id as u64];
        data.parent_span_id = parent_span_id;
        data.trace_flags = flags;
        let mut bits = 0;
        if under_tracestate {
            bits |= marks::UNDER_TRACESTATE;
        }
        if remote.is_some() && parent.is_none() && foreign.is_none() {
            bits |= marks::PARENT_IS_REMOTE;
        }
        data.marks = bits;
        // A root keeps its remote parent's `tracestate`; a span under a
        // foreign parent keeps that one's, or an empty one (none), so that
        // no ancestor's is taken for it (see `SpanRef::tracestate`).
        let tracestate = match foreign {
            Some(f) => Some(f.tracestate.clone().unwrap_or_else(|| "".into())),
            None => remote
                .filter(|_| parent.is_none())
                .and_then(|r| r.tracestate.clone()),
        };
        if let Some(state) = tracestate {
            self.lock_tracestates().insert(data.span_id, state);
            data.marks |= marks::KEEPS_TRACESTATE;
        }
        // A fresh atomic rather than a store: the slot is exclusively ours,
        // and under loom this also starts the count's history anew.
        data.ref_count = AtomicU32::new(1);
        init(
            data.fields
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
            &mut data.ext,
        );
        let id = Id::from_key(slot.key());
        drop(slot);
        self.count_live(1);
        if self.shared.has_orphans.load(Ordering::Acquire) {
            self.clear_orphans();
        }
        Ok(id)
    }

    /// R3: adds a reference to a live span and returns its ID. On any other
    /// ID it fails and changes nothing.
    pub fn clone_span(&self, id: Id) -> Result<Id, Error> {
        self.clone_span_ref(id).map(|_| id)
    }

    /// Like [`clone_span`](Self::clone_span), and returns a view of the
    /// span, saving a second lookup when the caller reads it next.
    pub fn clone_span_ref(&self, id: Id) -> Result<SpanRef<'_, H, C>, Error> {
        let span = self.slot(id).ok_or(Error::not_live(id, Op::Clone))?;
        increment(&span.ref_count, id)?;
        Ok(SpanRef {
            registry: self,
            id,
            data: span,
        })
    }

    /// R13: a reference on a contextual parent, if it is live and, when the
    /// caller names the span it expects by its identity, is that span. The
    /// slot is held from the check to the increment, so it cannot be
    /// reused in between.
    fn clone_contextual(&self, id: Id, expected: Option<TraceParent>) -> Option<SpanRef<'_, H, C>> {
        let span = self.slot(id)?;
        if expected.is_some_and(|tp| tp.span_id != span.span_id) {
            return None;
        }
        increment(&span.ref_count, id).ok()?;
        Some(SpanRef {
            registry: self,
            id,
            data: span,
        })
    }

    /// R4: releases one reference to a live span. Returns `true` exactly when
    /// this call brought the count to zero; the span has then closed: hooks'
    /// `on_close` ran, the slot was cleared, and the reference it held on
    /// its parent was released, closing the parent in turn if that was its
    /// last, and so on up the tree (iteratively: depth costs no stack).
    ///
    /// On an ID that is not live it fails and changes nothing; a span never
    /// closes twice.
    pub fn try_close(&self, id: Id) -> Result<bool, Error> {
        let span = self.slot(id).ok_or(Error::not_live(id, Op::Close))?;
        self.close_slot(id, span)
    }

    pub(crate) fn close_slot<'a>(
        &'a self,
        id: Id,
        span: sharded_slab::pool::Ref<'a, SpanData<H::Ext>, C>,
    ) -> Result<bool, Error> {
        match decrement(&span.ref_count) {
            None => Err(Error::not_live(id, Op::Close)),
            Some(false) => Ok(false),
            Some(true) => {
                self.close_cascade(id, span);
                Ok(true)
            }
        }
    }

    /// Like [`try_close`](Self::try_close) on a reference the caller knows it
    /// holds; an error here is a bookkeeping bug and is ignored.
    pub(crate) fn release(&self, id: Id) {
        let released = self.try_close(id);
        debug_assert!(released.is_ok(), "released a reference not held: {id:?}");
    }

    /// R7: a view of the span, if `id` names a live span.
    #[must_use]
    pub fn get(&self, id: Id) -> Option<SpanRef<'_, H, C>> {
        self.slot(id).map(|data| SpanRef {
            registry: self,
            id,
            data,
        })
    }

    /// R9: the span's reference count; 0 when `id` does not name a live
    /// span.
    #[must_use]
    pub fn ref_count(&self, id: Id) -> usize {
        self.slot(id)
            .map_or(0, |span| span.ref_count.load(Ordering::Acquire) as usize)
    }

    /// The number of live spans.
    #[must_use]
    pub fn len(&self) -> usize {
        let n: isize = self
            .shared
            .live
            .iter()
            .map(|c| c.0.load(Ordering::Acquire))
            .sum();
        usize::try_from(n).unwrap_or(0)
    }

    /// Whether no span is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// R10: records `values` on a live span: each replaces the field of the
    /// same name, or is appended.
    pub fn record<'v>(
        &self,
        id: Id,
        values: impl IntoIterator<Item = (&'v str, Value)>,
    ) -> Result<(), Error> {
        let span = self.live_slot(id, Op::Record)?;
        let mut fields = span.lock_fields();
        for (name, value) in values {
            upsert(&mut fields, name, value);
        }
        Ok(())
    }

    /// A live span, or the error for `op`.
    pub fn live_slot(
        &self,
        id: Id,
        op: Op,
    ) -> Result<sharded_slab::pool::Ref<'_, SpanData<H::Ext>, C>, Error> {
        self.slot(id)
            .filter(|s| s.ref_count.load(Ordering::Acquire) > 0)
            .ok_or(Error::not_live(id, op))
    }

    fn slot(&self, id: Id) -> Option<sharded_slab::pool::Ref<'_, SpanData<H::Ext>, C>> {
        let key = id.key()?;
        self.shared.slab_steps.read();
        self.shared
            .spans
            .get(key)
            .filter(|s| s.ref_count.load(Ordering::Acquire) != DEAD)
    }

    /// W3C trace context: the `tracestate` of `span`'s trace (see
    /// [`SpanRef::tracestate`]). Also for a span that is closing (in
    /// [`Hooks::on_close`]), whose own ID no longer names it.
    pub fn tracestate_of(&self, span: &SpanData<H::Ext>) -> Option<std::sync::Arc<str>> {
        if !span.may_have_tracestate() {
            return None; // most traces: none to look for
        }
        // The nearest span that keeps one: a root under a remote parent,
        // or a span under a foreign parent (whose empty one means none).
        let keeper = if span.keeps_tracestate() {
            span.span_id
        } else {
            let parent = self.get(span.parent?)?;
            let keeper = parent.scope().find(|s| s.keeps_tracestate())?;
            keeper.span_id
        };
        self.lock_tracestates()
            .get(&keeper)
            .filter(|state| !state.is_empty())
            .map(std::sync::Arc::clone)
    }

    pub(crate) fn lock_tracestates(&self) -> MutexGuard<'_, HashMap<u64, std::sync::Arc<str>>> {
        self.shared
            .tracestates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn count_live(&self, delta: isize) {
        self.shared.live[live_stripe()]
            .0
            .fetch_add(delta, Ordering::Release);
    }

    /// Closes `span`, whose count just reached zero, then releases the
    /// reference it held on its parent, and so on: a loop, not recursion.
    fn close_cascade<'a>(
        &'a self,
        mut id: Id,
        mut span: sharded_slab::pool::Ref<'a, SpanData<H::Ext>, C>,
    ) {
        loop {
            // Synchronize with every other release of this span (as
            // `Arc::drop` does) before reading it for the last time.
            fence(Ordering::Acquire);
            self.shared.hooks.on_close(self, id, &span);
            if span.keeps_tracestate() {
                self.lock_tracestates().remove(&span.span_id);
            }
            let parent = span.parent;
            let key = span.key();
            // From here on lookups see the span as closed, even if clearing
            // its slot has to wait (below).
            span.ref_count.store(DEAD, Ordering::Release);
            drop(span);
            self.clear_slot(key);
            self.count_live(-1);
            let Some(parent_id) = parent else { return };
            let Some(parent_span) = self.slot(parent_id) else {
                debug_assert!(false, "a live span's parent was not live: {parent_id:?}");
                return;
            };
            if decrement(&parent_span.ref_count) != Some(true) {
                return;
            }
            id = parent_id;
            span = parent_span;
        }
    }
}

impl<H: Hooks, C: Config + 'static> Registry<H, C> {
    /// Clears a closed span's slot so it can be reused. A thread without a
    /// seat (see [`seat`]) must not touch the slab: its clears wait for the
    /// next span created by a thread with one.
    fn clear_slot(&self, key: usize) {
        if (seat::held() || seat::take::<C>().is_ok())
            && guard_slab(|| {
                self.shared.slab_steps.write();
                self.shared.spans.clear(key)
            })
            .is_ok()
        {
            return;
        }
        self.shared
            .orphans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(key);
        self.shared.has_orphans.store(true, Ordering::Release);
    }

    #[cold]
    fn clear_orphans(&self) {
        let orphans = std::mem::take(
            &mut *self
                .shared
                .orphans
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        self.shared.has_orphans.store(false, Ordering::Release);
        for key in orphans {
            self.clear_slot(key);
        }
    }
}

/// Runs a slab operation that may need to register this thread with the
/// slab; registration panics when more threads are live than the slab has
/// shards, which becomes [`Error::TooManyThreads`].
fn guard_slab<R>(op: impl FnOnce() -> R) -> Result<R, Error> {
    catch_unwind(AssertUnwindSafe(op)).map_err(|_| Error::TooManyThreads)
}

/// This thread's stripe of the live-span count. Works at any time,
/// including from thread-local destructors while the thread ends.
fn live_stripe() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        // Const-initialized and without a destructor: never torn down.
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE
        .try_with(|stripe| {
            if stripe.get() == usize::MAX {
                stripe.set(NEXT.fetch_add(1, Ordering::Relaxed) % LIVE_STRIPES);
            }
            stripe.get()
        })
        .unwrap_or(0)
}

/// Increments the count of a live span: fails if the span is closing (count
/// 0) or closed, or holds [`MAX_REFS`] already.
fn increment(count: &AtomicU32, id: Id) -> Result<(), Error> {
    // Like `Arc::clone`, increments need no ordering; unlike it, a count of
    // 0 means the span is closing and must not come back to life.
    let mut refs = count.load(Ordering::Relaxed);
    loop {
        if refs == 0 || refs == DEAD {
            return Err(Error::not_live(id, Op::Clone));
        }
        if refs == MAX_REFS {
            return Err(Error::TooManyRefs { id: id.into_u64() });
        }
        match count.compare_exchange_weak(refs, refs + 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(now) => refs = now,
        }
    }
}

/// Decrements a count that must not go below zero: `None` if it was already
/// zero, `Some(true)` if this call brought it to zero.
fn decrement(count: &AtomicU32) -> Option<bool> {
    let mut refs = count.load(Ordering::Relaxed);
    loop {
        if refs == 0 || refs == DEAD {
            return None;
        }
        match count.compare_exchange_weak(refs, refs - 1, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return Some(refs == 1),
            Err(now) => refs = now,
        }
    }
}

/// Bits of the slab key that hold the slot generation: every bit above the
/// address and thread index (sharded-slab's layout, low bits first).
const fn generation_len<C: Config>() -> u32 {
    let addr =
        C::MAX_PAGES + C::INITIAL_PAGE_SIZE.next_power_of_two().trailing_zeros() as usize + 1;
    let tid = (C::MAX_THREADS - 1).next_power_of_two().trailing_zeros() as usize + 1;
    (usize::BITS as usize - C::RESERVED_BITS - addr - tid) as u32
}

// The unit tests that need the registry's private parts; the rest are in
// tests/.
#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
