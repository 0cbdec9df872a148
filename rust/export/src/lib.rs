//! Exporters of pykregistry's spans, in pure Rust (no Python dependency):
//! the bindings copy each span at its end into a [`SpanRecord`] and hand it
//! to an [`Exporter`], whose background thread does the rest.
//!
//! - [`SpanRecord`] and [`EventRecord`]: what a span or an event carries,
//!   owned, so that nothing of the registry is touched after the copy.
//! - [`otlp`]: their encoding as an OTLP `ExportTraceServiceRequest`.
//! - [`Config`]: where and how to send, from arguments and the
//!   `OTEL_*` environment variables.
//! - [`Exporter`]: a bounded queue, one background thread that batches,
//!   encodes and POSTs to the collector, retrying with backoff; it never
//!   blocks the thread that hands it spans.
//! - Pictures: [`timeline`] (busy intervals per thread or task, always
//!   nested), [`chrome`] (the Chrome trace event format Perfetto opens) and
//!   [`flame`] (folded stacks of self time, SVG by `inferno`), with
//!   streaming conversions of a `JsonLines` file ([`jsonl`]).
//! - [`json_lines`]: the `JsonLines` format's lines, written with the JSON
//!   of [`json`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chrome;
mod chrome_tracks;
mod config;
mod exporter;
pub mod flame;
pub mod json;
pub mod json_lines;
pub mod jsonl;
pub mod otlp;
mod record;
pub mod timeline;

pub use config::{parse_key_values, Config};
pub use exporter::{Counts, Exporter};
pub use record::{EventRecord, Link, SpanRecord};
