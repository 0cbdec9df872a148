//! What a span or an event carries, copied out of the registry.

use pykregistry_core::{Fields, Level};

/// A span at its end (R14): its identity (R13), names, final timings and
/// fields, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// The 128-bit trace id.
    pub trace_id: u128,
    /// The 64-bit span id.
    pub span_id: u64,
    /// The parent's span id in the trace, if any.
    pub parent_span_id: Option<u64>,
    /// The W3C trace flags of its trace (bits 0-7 of OTLP's `Span.flags`).
    pub trace_flags: u8,
    /// Whether its parent is in another process (OTLP's `is_remote` bit).
    pub parent_is_remote: bool,
    /// The W3C `tracestate` of its trace, if it came with one.
    pub trace_state: Option<std::sync::Arc<str>>,
    /// The span's name.
    pub name: Box<str>,
    /// Its target: the instrumentation scope.
    pub target: Box<str>,
    /// Its level.
    pub level: Level,
    /// Wall-clock start, ns since the Unix epoch.
    pub start_time_ns: u64,
    /// Wall-clock end, ns since the Unix epoch.
    pub end_time_ns: u64,
    /// Time spent entered, in ns.
    pub busy_ns: u64,
    /// Time spent not entered, in ns.
    pub idle_ns: u64,
    /// Its fields, as recorded up to its end.
    pub fields: Fields,
    /// Spans it follows from.
    pub links: Vec<Link>,
    /// Events inside it, in the order they happened.
    pub events: Vec<EventRecord>,
}

/// A span another follows from (`follows_from`): an OTLP link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The linked span's trace id.
    pub trace_id: u128,
    /// The linked span's span id.
    pub span_id: u64,
}

/// An event: an OTLP span event of its parent span.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Wall-clock time, ns since the Unix epoch.
    pub time_ns: u64,
    /// Its message: the span event's name.
    pub message: Box<str>,
    /// Its target.
    pub target: Box<str>,
    /// Its level.
    pub level: Level,
    /// Its fields.
    pub fields: Fields,
}
