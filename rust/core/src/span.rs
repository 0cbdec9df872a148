//! What the registry stores for a span ([`SpanData`]), and the views it
//! lends out ([`SpanRef`], [`Scope`]).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};

use compact_str::CompactString;
use sharded_slab::{Clear, Config, DefaultConfig};
use tracing_core::Metadata;

use crate::field::Fields;
use crate::registry::DEAD;
use crate::registry::{Hooks, Id, NoHooks, Registry, TraceParent};
use crate::sync::AtomicU32;
use crate::traceparent::RemoteParent;
use crate::{Error, Level};

/// What the slab stores for a span. Pooled: when a span closes its slot is
/// cleared in place and reused by a later span, so the `Default` and [`Clear`]
/// impls are load-bearing (they drop fields and extensions, and keep only
/// string and vector capacity).
///
/// Kept within 128 bytes (with no extension data; see the `size` test): the
/// `tracing` metadata shares its space with the name and target (`Names`),
/// and the count is 32 bits wide, next to the level.
pub struct SpanData<X> {
    pub(crate) names: Names,
    pub(crate) level: Level,
    pub(crate) parent: Option<Id>,
    pub(crate) ref_count: AtomicU32,
    /// R13: the identity; 0 stands for none (ids are never 0).
    pub(crate) span_id: u64,
    pub(crate) trace_id: [u64; 2],
    pub(crate) parent_span_id: u64,
    pub(crate) fields: std::sync::Mutex<Fields>,
    pub(crate) ext: X,
    /// W3C trace context: the trace's flags (those of the remote parent it
    /// continues, or [`DEFAULT_FLAGS`]), and the [`marks`] below. In what
    /// was padding after `level`: they cost no room.
    pub(crate) trace_flags: u8,
    pub(crate) marks: u8,
}

/// [`SpanData::marks`]: facts about a span's trace, one bit each.
pub(crate) mod marks {
    /// Its `tracestate` is in [`Shared::tracestates`](crate::registry):
    /// a root under a remote parent, or a span under a foreign parent.
    pub(crate) const KEEPS_TRACESTATE: u8 = 1;
    /// An ancestor keeps a `tracestate`: when neither it nor the span does,
    /// [`SpanRef::tracestate`](super::SpanRef::tracestate) walks nothing.
    pub(crate) const UNDER_TRACESTATE: u8 = 2;
    /// Its parent in the trace is in another process.
    pub(crate) const PARENT_IS_REMOTE: u8 = 4;
}

/// A span's name and target: copied in, or those of its `tracing` metadata,
/// which then costs no copy and no more room than the strings would.
pub(crate) enum Names {
    /// Inline up to 24 bytes, so most names and targets cost no allocation.
    Owned {
        name: CompactString,
        target: CompactString,
    },
    Tracing(&'static Metadata<'static>),
}

/// A read-only view of a live span, borrowed from the registry.
///
/// While a `SpanRef` exists the span's slot cannot be reused; the span may
/// still close meanwhile (its slot is cleared when the last view is dropped).
pub struct SpanRef<'a, H: Hooks = NoHooks, C: Config = DefaultConfig> {
    pub(crate) registry: &'a Registry<H, C>,
    pub(crate) id: Id,
    pub(crate) data: sharded_slab::pool::Ref<'a, SpanData<H::Ext>, C>,
}

/// The span and its ancestors, leaf to root. See [`SpanRef::scope`].
pub struct Scope<'a, H: Hooks = NoHooks, C: Config = DefaultConfig> {
    pub(crate) registry: &'a Registry<H, C>,
    pub(crate) next: Option<Id>,
}

// === impl SpanData ===

impl<X: Default> Default for SpanData<X> {
    fn default() -> Self {
        Self {
            names: Names::owned("", ""),
            level: Level::default(),
            parent: None,
            ref_count: AtomicU32::new(0),
            span_id: 0,
            trace_id: [0; 2],
            parent_span_id: 0,
            fields: std::sync::Mutex::new(Vec::new()),
            ext: X::default(),
            trace_flags: 0,
            marks: 0,
        }
    }
}

impl<X: Default> Clear for SpanData<X> {
    fn clear(&mut self) {
        match &mut self.names {
            Names::Owned { name, target } => {
                name.clear();
                target.clear();
            }
            Names::Tracing(_) => self.names = Names::owned("", ""),
        }
        // The parent's reference was released by the close cascade, not here:
        // releasing from `clear` would recurse, and clears can be deferred to
        // whichever thread drops the last `SpanRef`.
        self.parent = None;
        self.span_id = 0;
        self.trace_id = [0; 2];
        self.parent_span_id = 0;
        self.trace_flags = 0;
        self.marks = 0;
        self.fields
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.ext = X::default();
    }
}

impl<X> SpanData<X> {
    /// The span's name.
    pub fn name(&self) -> &str {
        match &self.names {
            Names::Owned { name, .. } => name,
            Names::Tracing(meta) => meta.name(),
        }
    }

    /// The span's target.
    pub fn target(&self) -> &str {
        match &self.names {
            Names::Owned { target, .. } => target,
            Names::Tracing(meta) => meta.target(),
        }
    }

    /// The span's level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The `tracing` metadata, for spans made through the `Subscriber` impl.
    pub fn metadata(&self) -> Option<&'static Metadata<'static>> {
        match self.names {
            Names::Owned { .. } => None,
            Names::Tracing(meta) => Some(meta),
        }
    }

    /// The parent's ID; `None` for a root.
    pub fn parent_id(&self) -> Option<Id> {
        self.parent
    }

    /// R13: the span's id: never 0, never another span's in this process.
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// R13: the id of the span's trace: its parent's, or a new one for a root
    /// that continues no trace. Never 0.
    pub fn trace_id(&self) -> u128 {
        (u128::from(self.trace_id[0]) << 64) | u128::from(self.trace_id[1])
    }

    /// R13: the span id of the span's parent in its trace: the registry
    /// parent's, or the [`Attrs::trace_parent`] it continued (which may have
    /// closed, or live elsewhere); `None` for a root of a new trace.
    pub fn parent_span_id(&self) -> Option<u64> {
        (self.parent_span_id != 0).then_some(self.parent_span_id)
    }

    /// R13: the span's identity as its children see it: its trace and span
    /// id. Keep it to continue the trace under this span once it has
    /// closed ([`Attrs::trace_parent`]).
    pub fn as_trace_parent(&self) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id(),
            span_id: self.span_id,
        }
    }

    /// Whether the span's parent in its trace is in another process: a
    /// root that continues a remote parent ([`Attrs::remote_parent`](crate::Attrs)).
    /// A parent that closed (R13) or another tracer's span in this process
    /// ([`Attrs::foreign_parent`](crate::Attrs)) is not remote.
    pub fn parent_is_remote(&self) -> bool {
        self.marks & marks::PARENT_IS_REMOTE != 0
    }

    /// Whether the span keeps its trace's `tracestate`.
    pub(crate) fn keeps_tracestate(&self) -> bool {
        self.marks & marks::KEEPS_TRACESTATE != 0
    }

    /// Whether the span's trace may have a `tracestate`: when not,
    /// [`SpanRef::tracestate`] is `None` without a look.
    pub fn may_have_tracestate(&self) -> bool {
        self.marks & (marks::KEEPS_TRACESTATE | marks::UNDER_TRACESTATE) != 0
    }

    /// W3C trace context: the flags of the span's trace (see
    /// [`Registry::new_span`]); only [`crate::traceparent::KNOWN_FLAGS`]
    /// bits.
    pub fn trace_flags(&self) -> u8 {
        self.trace_flags
    }

    /// The current reference count (0 once the span has closed).
    pub fn ref_count(&self) -> usize {
        match self.ref_count.load(Ordering::Acquire) {
            DEAD => 0,
            n => n as usize,
        }
    }

    /// The fields, locked for reading or recording.
    pub fn lock_fields(&self) -> MutexGuard<'_, Fields> {
        self.fields.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hooks' per-span data.
    pub fn ext(&self) -> &X {
        &self.ext
    }
}

impl<X> fmt::Debug for SpanData<X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanData")
            .field("name", &self.name())
            .field("target", &self.target())
            .field("level", &self.level)
            .field("parent", &self.parent)
            .field("span_id", &format_args!("{:016x}", self.span_id))
            .field("trace_id", &format_args!("{:032x}", self.trace_id()))
            .field(
                "parent_span_id",
                &format_args!("{:016x}", self.parent_span_id),
            )
            .field("trace_flags", &format_args!("{:02x}", self.trace_flags))
            .field("ref_count", &self.ref_count())
            .finish_non_exhaustive()
    }
}

// === impl Names ===

impl Names {
    pub(crate) fn owned(name: &str, target: &str) -> Self {
        Names::Owned {
            name: CompactString::new(name),
            target: CompactString::new(target),
        }
    }
}

// === impl SpanRef ===

impl<'a, H: Hooks, C: Config + 'static> SpanRef<'a, H, C> {
    /// The span's ID.
    #[must_use]
    pub fn id(&self) -> Id {
        self.id
    }

    /// R4: [`Registry::try_close`] through this view, saving a lookup: it
    /// releases one reference the caller holds.
    pub fn try_close(self) -> Result<bool, Error> {
        self.registry.close_slot(self.id, self.data)
    }

    /// A view of the parent, if the span has one and it is still live.
    #[must_use]
    pub fn parent(&self) -> Option<SpanRef<'a, H, C>> {
        self.registry.get(self.data.parent?)
    }

    /// W3C trace context: the `tracestate` of the span's trace: that of the
    /// remote parent its root continues, or of the foreign parent
    /// ([`Attrs::foreign_parent`](crate::Attrs)) of the nearest span that
    /// had one. Walks up to that span (or to the root).
    #[must_use]
    pub fn tracestate(&self) -> Option<std::sync::Arc<str>> {
        self.registry.tracestate_of(&self.data)
    }

    /// W3C trace context: this span as a process that continues it sees it:
    /// what `traceparent` and `tracestate` headers name.
    #[must_use]
    pub fn as_remote_parent(&self) -> RemoteParent {
        RemoteParent {
            trace_parent: self.as_trace_parent(),
            trace_flags: self.trace_flags,
            tracestate: self.tracestate(),
        }
    }

    /// R8: the span, its parent, and so on to the root.
    #[must_use]
    pub fn scope(&self) -> Scope<'a, H, C> {
        Scope {
            registry: self.registry,
            next: Some(self.id),
        }
    }
}

impl<H: Hooks, C: Config> std::ops::Deref for SpanRef<'_, H, C> {
    type Target = SpanData<H::Ext>;

    fn deref(&self) -> &Self::Target {
        &self.data
    }
}

impl<H: Hooks, C: Config> fmt::Debug for SpanRef<'_, H, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanRef")
            .field("id", &self.id)
            .field("data", &*self.data)
            .finish()
    }
}

// === impl Scope ===

impl<'a, H: Hooks, C: Config + 'static> Scope<'a, H, C> {
    /// The same spans, root first.
    pub fn from_root(self) -> std::iter::Rev<std::vec::IntoIter<SpanRef<'a, H, C>>> {
        self.collect::<Vec<_>>().into_iter().rev()
    }
}

impl<'a, H: Hooks, C: Config + 'static> Iterator for Scope<'a, H, C> {
    type Item = SpanRef<'a, H, C>;

    fn next(&mut self) -> Option<Self::Item> {
        let span = self.registry.get(self.next?)?;
        self.next = span.parent_id();
        Some(span)
    }
}

impl<H: Hooks, C: Config> fmt::Debug for Scope<'_, H, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope").field("next", &self.next).finish()
    }
}

#[cfg(test)]
mod size {
    /// What a slot costs: printed so memory work has a number to start from.
    #[test]
    fn span_data_size() {
        let size = std::mem::size_of::<super::SpanData<()>>();
        println!("SpanData<()> = {size} bytes");
        assert!(size <= 128, "SpanData grew to {size} bytes");
    }
}
