//! R12: the one error type of the core. The Python bindings map it to exception
//! classes in a single place (`rust/python/src/errors.rs`).

use std::fmt;

use crate::Id;

/// What the registry was asked to do when an [`Error`] happened; used to make
/// messages point at the likely mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `clone_span`.
    Clone,
    /// `try_close`.
    Close,
    /// `enter`.
    Enter,
    /// `new_span` with an explicit parent.
    Parent,
    /// `record`.
    Record,
    /// `follows_from`.
    FollowsFrom,
    /// An event with an explicit parent.
    Event,
}

/// Everything that can go wrong in the registry. Every variant leaves the
/// registry exactly as it was before the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The ID does not name a live span: it closed, it was never issued, or
    /// its slot has since been reused by a span of a later generation.
    NotLive {
        /// The ID that was asked for.
        id: u64,
        /// The operation that failed.
        op: Op,
    },
    /// Zero is never a span ID.
    ZeroId,
    /// Every slot the slab can address is in use.
    SlabFull,
    /// More threads are alive than the slab has shards for.
    TooManyThreads,
    /// The span holds [`crate::MAX_REFS`] references already.
    TooManyRefs {
        /// The span asked to take one more.
        id: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotLive { id, op } => {
                let hint = match op {
                    Op::Clone => "tried to clone a span that is not live — was it held open across an await point, or closed by another handle?",
                    Op::Close => "tried to close a span that is not live — was it closed twice (a second try_close on the same reference)?",
                    Op::Enter => "tried to enter a span that is not live — the span closed before it was entered",
                    Op::Parent => "the explicit parent is not live — it closed before its child was created",
                    Op::Record => "tried to record on a span that is not live — it closed before the record",
                    Op::FollowsFrom => "tried to add follows_from to a span that is not live",
                    Op::Event => "the explicit parent of the event is not live",
                };
                write!(f, "span {id} {hint}")
            }
            Error::ZeroId => f.write_str("0 is never a span ID: span IDs are in [1, 2**64)"),
            Error::SlabFull => f.write_str(
                "the span slab is full: every addressable slot holds a live span — are spans being leaked (handles never closed)?",
            ),
            Error::TooManyThreads => f.write_str(
                "too many live threads have used the span registry at once: the slab has one shard per thread",
            ),
            Error::TooManyRefs { id } => write!(
                f,
                "span {id} holds {} references, the most a span can — are references taken in a loop and never released?",
                crate::MAX_REFS
            ),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    pub(crate) fn not_live(id: Id, op: Op) -> Self {
        Error::NotLive {
            id: id.into_u64(),
            op,
        }
    }
}
