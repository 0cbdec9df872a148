//! The core of pykregistry: a lock-free span registry on
//! [`sharded_slab::Pool`] with `tracing-core` semantics.
//!
//! - [`Registry`] stores spans, counts their references and closes them
//!   deterministically, cascading to parents iteratively.
//! - [`SpanStack`] is a context's stack of entered spans.
//! - [`next_span_id`] and [`new_trace_id`] give every span an identity that,
//!   unlike its registry [`Id`], never recurs (R13).
//! - `Registry` implements [`tracing_core::Subscriber`], so the `tracing`
//!   macros drive it too.
//! - [`traceparent`] reads and writes W3C trace context headers; a span
//!   with a [`RemoteParent`] continues a trace from another process.
//!
//! This crate has no Python dependency; the bindings live in
//! `rust/python`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod field;
mod filter;
mod identity;
mod level;
mod registry;
mod seat;
mod span;
mod stack;
mod subscriber;
mod sync;
pub mod traceparent;

pub use error::{Error, Op};
pub use field::{Fields, Value};
pub use filter::{Admission, FieldLookup, Filter, FilterError, Interest};
pub use identity::{new_trace_id, next_span_id, reseed};
pub use level::Level;
#[cfg(not(loom))]
pub use registry::WeakRegistry;
pub use registry::{Attrs, Hooks, Id, NoHooks, Parent, Registry, TraceParent, MAX_REFS};
pub use sharded_slab::{Config, DefaultConfig};
pub use span::{Scope, SpanData, SpanRef};
pub use stack::SpanStack;
pub use traceparent::RemoteParent;
