//! The `JsonLines` format: one JSON object per line, a span at its end
//! (R14) or an event. The bindings' `JsonLines` layer fills a [`SpanLine`]
//! or an [`EventLine`] from the registry and writes the bytes these give;
//! [`jsonl`](crate::jsonl) reads them back.

use pykregistry_core::{Fields, Level};

use crate::json::{push_fields, push_hex, push_opt_str, push_opt_u64, push_str, push_u64};

/// A span at its end, as its line names it.
#[derive(Debug, Clone, Copy)]
pub struct SpanLine<'a> {
    /// Its registry ID (which recurs in a long trace: link lines by ids).
    pub id: u64,
    /// Its registry parent's ID.
    pub parent_id: Option<u64>,
    /// R13: its trace id, span id and parent span id.
    pub trace_id: u128,
    /// Its span id.
    pub span_id: u64,
    /// Its parent's span id in the trace.
    pub parent_span_id: Option<u64>,
    /// Its name.
    pub name: &'a str,
    /// Its target.
    pub target: &'a str,
    /// Its level.
    pub level: Level,
    /// Wall-clock start and end, ns since the Unix epoch.
    pub start_time_ns: u64,
    /// See `start_time_ns`.
    pub end_time_ns: u64,
    /// Time entered, and not, in ns.
    pub busy_ns: u64,
    /// See `busy_ns`.
    pub idle_ns: u64,
    /// Its fields.
    pub fields: &'a Fields,
    /// The thread that made it (`threading.get_ident()`).
    pub thread_id: u64,
    /// The asyncio task that made it, by name, if any.
    pub task: Option<&'a str>,
    /// Whether it was made on the thread and task of its registry parent
    /// (`None` without one). What a flame graph's self time needs of the
    /// parent, said by the child: a conversion then keeps one number per
    /// open span, not one per track its children ran on.
    pub on_parent_track: Option<bool>,
}

/// An event, as its line names it.
#[derive(Debug, Clone, Copy)]
pub struct EventLine<'a> {
    /// Wall-clock time, ns since the Unix epoch.
    pub time_ns: u64,
    /// Its message.
    pub message: &'a str,
    /// Its target.
    pub target: &'a str,
    /// Its level.
    pub level: Level,
    /// Its parent span's registry ID.
    pub parent_id: Option<u64>,
    /// Its parent span's trace id and span id (R13).
    pub trace: Option<(u128, u64)>,
    /// Its fields.
    pub fields: &'a Fields,
    /// The thread that emitted it.
    pub thread_id: u64,
    /// The asyncio task that emitted it, by name, if any.
    pub task: Option<&'a str>,
}

/// Appends the span's line, newline included, to `out`.
pub fn write_span(out: &mut Vec<u8>, span: &SpanLine<'_>) {
    out.extend_from_slice(b"{\"type\":\"span\",\"id\":");
    push_u64(out, span.id);
    out.extend_from_slice(b",\"parent_id\":");
    push_opt_u64(out, span.parent_id);
    out.extend_from_slice(b",\"trace_id\":");
    push_hex(out, Some(span.trace_id), 32);
    out.extend_from_slice(b",\"span_id\":");
    push_hex(out, Some(span.span_id.into()), 16);
    out.extend_from_slice(b",\"parent_span_id\":");
    push_hex(out, span.parent_span_id.map(u128::from), 16);
    out.extend_from_slice(b",\"name\":");
    push_str(out, span.name);
    out.extend_from_slice(b",\"target\":");
    push_str(out, span.target);
    out.extend_from_slice(b",\"level\":");
    push_str(out, span.level.as_str());
    out.extend_from_slice(b",\"start_time_ns\":");
    push_u64(out, span.start_time_ns);
    out.extend_from_slice(b",\"end_time_ns\":");
    push_u64(out, span.end_time_ns);
    out.extend_from_slice(b",\"busy_ns\":");
    push_u64(out, span.busy_ns);
    out.extend_from_slice(b",\"idle_ns\":");
    push_u64(out, span.idle_ns);
    out.extend_from_slice(b",\"fields\":");
    push_fields(out, span.fields);
    out.extend_from_slice(b",\"thread_id\":");
    push_u64(out, span.thread_id);
    out.extend_from_slice(b",\"task\":");
    push_opt_str(out, span.task);
    out.extend_from_slice(b",\"on_parent_track\":");
    out.extend_from_slice(match span.on_parent_track {
        Some(true) => b"true",
        Some(false) => b"false",
        None => b"null",
    });
    out.extend_from_slice(b"}\n");
}

/// Appends the event's line, newline included, to `out`.
pub fn write_event(out: &mut Vec<u8>, event: &EventLine<'_>) {
    out.extend_from_slice(b"{\"type\":\"event\",\"time_ns\":");
    push_u64(out, event.time_ns);
    out.extend_from_slice(b",\"message\":");
    push_str(out, event.message);
    out.extend_from_slice(b",\"target\":");
    push_str(out, event.target);
    out.extend_from_slice(b",\"level\":");
    push_str(out, event.level.as_str());
    out.extend_from_slice(b",\"parent_id\":");
    push_opt_u64(out, event.parent_id);
    out.extend_from_slice(b",\"trace_id\":");
    push_hex(out, event.trace.map(|t| t.0), 32);
    out.extend_from_slice(b",\"span_id\":");
    push_hex(out, event.trace.map(|t| t.1.into()), 16);
    out.extend_from_slice(b",\"fields\":");
    push_fields(out, event.fields);
    out.extend_from_slice(b",\"thread_id\":");
    push_u64(out, event.thread_id);
    out.extend_from_slice(b",\"task\":");
    push_opt_str(out, event.task);
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use pykregistry_core::Value;

    use super::*;
    use crate::jsonl;

    /// What is written reads back through the conversions' reader, as the
    /// same span.
    #[test]
    fn a_span_line_is_one_json_object_the_reader_takes() {
        let fields: Fields = vec![
            ("path".into(), Value::Str("/\"x\"".into())),
            ("n".into(), Value::F64(f64::NAN)),
        ];
        let span = SpanLine {
            id: 3,
            parent_id: None,
            trace_id: 0xabc,
            span_id: 0xdef,
            parent_span_id: Some(1),
            name: "req",
            target: "app",
            level: Level::Info,
            start_time_ns: 10,
            end_time_ns: 20,
            busy_ns: 7,
            idle_ns: 3,
            fields: &fields,
            thread_id: 42,
            task: Some("Task-1 main"),
            on_parent_track: Some(false),
        };
        let mut out = Vec::new();
        write_span(&mut out, &span);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["trace_id"], "00000000000000000000000000000abc");
        assert_eq!(v["span_id"], "0000000000000def");
        assert_eq!(v["parent_span_id"], "0000000000000001");
        assert_eq!(v["fields"]["path"], "/\"x\"");
        assert!(v["fields"]["n"].is_null());
        assert_eq!(v["task"], "Task-1 main");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["on_parent_track"], false);
        let jsonl::Record::Span {
            span_id,
            parent,
            line,
            ..
        } = jsonl::parse(&out[..out.len() - 1]).unwrap()
        else {
            panic!("not read back as a span")
        };
        assert_eq!((span_id, parent), (0xdef, Some(1)));
        assert_eq!(line.on_parent_track, Some(false));
    }

    #[test]
    fn an_event_line_names_its_span_by_identity() {
        let fields = Fields::default();
        let mut out = Vec::new();
        write_event(
            &mut out,
            &EventLine {
                time_ns: 5,
                message: "hi",
                target: "app",
                level: Level::Warn,
                parent_id: Some(2),
                trace: Some((1, 2)),
                fields: &fields,
                thread_id: 1,
                task: None,
            },
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["span_id"], "0000000000000002");
        assert!(v["task"].is_null());
        assert_eq!(v["level"], "WARN");
    }
}
