//! Spans as an OTLP `ExportTraceServiceRequest` (opentelemetry-proto's
//! prost messages), the body of a POST to `/v1/traces`.
//!
//! The mapping, as `tracing-opentelemetry` and OpenTelemetry's SDK make it:
//!
//! - a span's fields are its attributes (lists and tuples as `ArrayValue`s),
//!   plus `level`, `busy_ns` and `idle_ns`;
//! - its target is the instrumentation scope (spans are grouped by it);
//! - a recorded error (`error=True` or an `exception.type` field) is status
//!   ERROR, with `exception.message` as the status message, plus an
//!   `exception` span event at the span's end;
//! - events are span events (name: the message; attributes: the fields,
//!   `level` and a non-empty `target`), with their times;
//! - spans it follows from are links;
//! - ids are the span's identity (R13), never its recurring registry id.
//!
//! Values: integers beyond `i64` and Python's big integers are strings of
//! their digits; strings holding lone surrogates have them replaced by
//! U+FFFD; `None` is an empty `AnyValue`.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use pykregistry_core::{Fields, Value};

use crate::record::{EventRecord, SpanRecord};

/// The request body for `spans`, sent as one resource.
#[must_use]
pub fn encode(resource: &[(String, Value)], spans: Vec<SpanRecord>) -> Vec<u8> {
    request(resource, spans).encode_to_vec()
}

/// The request for `spans`: one resource, one scope per target, in the
/// order targets first appear.
#[must_use]
pub fn request(resource: &[(String, Value)], spans: Vec<SpanRecord>) -> ExportTraceServiceRequest {
    let mut scopes: Vec<ScopeSpans> = Vec::new();
    let mut by_target: HashMap<Box<str>, usize> = HashMap::new();
    for record in spans {
        let at = *by_target.entry(record.target.clone()).or_insert_with(|| {
            scopes.push(ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: record.target.to_string(),
                    ..InstrumentationScope::default()
                }),
                ..ScopeSpans::default()
            });
            scopes.len() - 1
        });
        scopes[at].spans.push(span(record));
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource
                    .iter()
                    .map(|(k, v)| key_value(k.clone(), v))
                    .collect(),
                ..Resource::default()
            }),
            scope_spans: scopes,
            ..ResourceSpans::default()
        }],
    }
}

/// One span's message.
/// OTLP's `Span.flags`: the trace flags in bits 0-7, and bits 8-9 saying
/// that whether the parent is remote is known, and whether it is.
fn span_flags(trace_flags: u8, parent_is_remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(trace_flags) | HAS_IS_REMOTE | if parent_is_remote { IS_REMOTE } else { 0 }
}

fn span(record: SpanRecord) -> Span {
    let error = record.fields.iter().any(|(k, v)| {
        (&**k == "error" && matches!(v, Value::Bool(true))) || &**k == "exception.type"
    });
    let mut attributes = attributes(&record.fields);
    attributes.push(key_value(
        "level".into(),
        &Value::Str(record.level.as_str().into()),
    ));
    attributes.push(int("busy_ns", record.busy_ns));
    attributes.push(int("idle_ns", record.idle_ns));
    let mut events: Vec<span::Event> = record.events.iter().map(event).collect();
    let status = if error {
        let text = |name: &str| {
            record
                .fields
                .iter()
                .find(|(k, _)| &**k == name)
                .map(|(_, v)| v.to_string())
        };
        let message = text("exception.message").unwrap_or_default();
        let mut exception = Vec::new();
        for name in [
            "exception.type",
            "exception.message",
            "exception.stacktrace",
        ] {
            if let Some(value) = text(name) {
                exception.push(key_value(name.into(), &Value::Str(value.into())));
            }
        }
        events.push(span::Event {
            time_unix_nano: record.end_time_ns,
            name: "exception".into(),
            attributes: exception,
            dropped_attributes_count: 0,
        });
        Some(Status {
            message,
            code: status::StatusCode::Error as i32,
        })
    } else {
        None
    };
    Span {
        trace_id: record.trace_id.to_be_bytes().to_vec(),
        span_id: record.span_id.to_be_bytes().to_vec(),
        parent_span_id: record
            .parent_span_id
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        name: record.name.into(),
        flags: span_flags(record.trace_flags, record.parent_is_remote),
        trace_state: record.trace_state.as_deref().unwrap_or_default().into(),
        kind: span::SpanKind::Internal as i32,
        start_time_unix_nano: record.start_time_ns,
        end_time_unix_nano: record.end_time_ns,
        attributes,
        events,
        links: record
            .links
            .iter()
            .map(|l| span::Link {
                trace_id: l.trace_id.to_be_bytes().to_vec(),
                span_id: l.span_id.to_be_bytes().to_vec(),
                ..span::Link::default()
            })
            .collect(),
        status,
        ..Span::default()
    }
}

fn event(e: &EventRecord) -> span::Event {
    let mut attributes = attributes(&e.fields);
    attributes.push(key_value(
        "level".into(),
        &Value::Str(e.level.as_str().into()),
    ));
    if !e.target.is_empty() {
        attributes.push(key_value("target".into(), &Value::Str(e.target.clone())));
    }
    span::Event {
        time_unix_nano: e.time_ns,
        name: e.message.to_string(),
        attributes,
        dropped_attributes_count: 0,
    }
}

fn attributes(fields: &Fields) -> Vec<KeyValue> {
    fields
        .iter()
        .map(|(k, v)| key_value(k.to_string(), v))
        .collect()
}

fn key_value(key: String, value: &Value) -> KeyValue {
    KeyValue {
        key,
        value: Some(any_value(value)),
        ..KeyValue::default()
    }
}

fn int(key: &str, n: u64) -> KeyValue {
    key_value(
        key.into(),
        &Value::I64(i64::try_from(n).unwrap_or(i64::MAX)),
    )
}

/// A field value as an OTLP `AnyValue`.
#[must_use]
pub fn any_value(value: &Value) -> AnyValue {
    use any_value::Value as V;
    let value = match value {
        Value::None => None,
        Value::Bool(b) => Some(V::BoolValue(*b)),
        Value::I64(n) => Some(V::IntValue(*n)),
        Value::U64(n) => Some(V::StringValue(n.to_string())),
        Value::BigInt(s) | Value::Str(s) => Some(V::StringValue(s.to_string())),
        Value::F64(x) => Some(V::DoubleValue(*x)),
        Value::Surrogates(bytes) => {
            Some(V::StringValue(String::from_utf8_lossy(bytes).into_owned()))
        }
        Value::Array { items, .. } => Some(V::ArrayValue(ArrayValue {
            values: items.iter().map(any_value).collect(),
        })),
    };
    AnyValue { value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Link;
    use pykregistry_core::Level;

    fn record() -> SpanRecord {
        SpanRecord {
            trace_id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            span_id: 0xfedc_ba98_7654_3210,
            parent_span_id: Some(7),
            trace_flags: 1,
            parent_is_remote: true,
            trace_state: Some("congo=t61rcWkgMzE".into()),
            name: "db.query".into(),
            target: "app.db".into(),
            level: Level::Debug,
            start_time_ns: 1_000,
            end_time_ns: 5_000,
            busy_ns: 3_000,
            idle_ns: 1_000,
            fields: vec![
                ("rows".into(), Value::I64(-3)),
                ("big".into(), Value::U64(u64::MAX)),
                ("ok".into(), Value::Bool(true)),
                ("ratio".into(), Value::F64(0.5)),
                ("nothing".into(), Value::None),
                (
                    "odd".into(),
                    Value::Surrogates(b"a\xed\xb3\xbfb".to_vec().into()),
                ),
                (
                    "tags".into(),
                    Value::Array {
                        tuple: false,
                        items: vec![Value::Str("x".into()), Value::Str("y".into())].into(),
                    },
                ),
            ],
            links: vec![Link {
                trace_id: 9,
                span_id: 10,
            }],
            events: vec![EventRecord {
                time_ns: 2_000,
                message: "hit".into(),
                target: "app.cache".into(),
                level: Level::Info,
                fields: vec![("key".into(), Value::Str("k".into()))],
            }],
        }
    }

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn round_trip_through_prost_decode() {
        use any_value::Value as V;
        let resource = vec![("service.name".to_owned(), Value::Str("svc".into()))];
        let body = encode(&resource, vec![record()]);
        let decoded = ExportTraceServiceRequest::decode(&body[..]).expect("decodes");
        let rs = &decoded.resource_spans[0];
        let res = rs.resource.as_ref().unwrap();
        assert_eq!(
            attr(&res.attributes, "service.name"),
            Some(&any_value::Value::StringValue("svc".into()))
        );
        let scope = &rs.scope_spans[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "app.db");
        let s = &scope.spans[0];
        assert_eq!(s.name, "db.query");
        assert_eq!(
            s.trace_id,
            0x0123_4567_89ab_cdef_0011_2233_4455_6677_u128.to_be_bytes()
        );
        assert_eq!(s.span_id, 0xfedc_ba98_7654_3210_u64.to_be_bytes());
        assert_eq!(s.parent_span_id, 7_u64.to_be_bytes());
        // Sampled, and the parent's remoteness known (0x100) and true (0x200).
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.trace_state, "congo=t61rcWkgMzE");
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (1_000, 5_000)
        );
        assert_eq!(attr(&s.attributes, "rows"), Some(&V::IntValue(-3)));
        assert_eq!(
            attr(&s.attributes, "big"),
            Some(&V::StringValue(u64::MAX.to_string()))
        );
        assert_eq!(attr(&s.attributes, "ok"), Some(&V::BoolValue(true)));
        assert_eq!(attr(&s.attributes, "ratio"), Some(&V::DoubleValue(0.5)));
        assert_eq!(attr(&s.attributes, "nothing"), None);
        assert_eq!(
            attr(&s.attributes, "odd"),
            Some(&V::StringValue("a\u{fffd}\u{fffd}\u{fffd}b".into()))
        );
        let Some(V::ArrayValue(tags)) = attr(&s.attributes, "tags") else {
            panic!("tags is an array");
        };
        assert_eq!(
            tags.values,
            vec![
                AnyValue {
                    value: Some(V::StringValue("x".into()))
                },
                AnyValue {
                    value: Some(V::StringValue("y".into()))
                }
            ]
        );
        assert_eq!(
            attr(&s.attributes, "level"),
            Some(&V::StringValue("DEBUG".into()))
        );
        assert_eq!(attr(&s.attributes, "busy_ns"), Some(&V::IntValue(3_000)));
        assert_eq!(attr(&s.attributes, "idle_ns"), Some(&V::IntValue(1_000)));
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "hit");
        assert_eq!(s.events[0].time_unix_nano, 2_000);
        assert_eq!(
            attr(&s.events[0].attributes, "key"),
            Some(&V::StringValue("k".into()))
        );
        assert_eq!(
            attr(&s.events[0].attributes, "target"),
            Some(&V::StringValue("app.cache".into()))
        );
        assert_eq!(s.links.len(), 1);
        assert_eq!(s.links[0].span_id, 10_u64.to_be_bytes());
        assert_eq!(s.status, None);
        assert_eq!(s.kind, span::SpanKind::Internal as i32);
    }

    #[test]
    fn a_root_has_no_parent_bytes() {
        let mut r = record();
        r.parent_span_id = None;
        let decoded = request(&[], vec![r]);
        assert!(decoded.resource_spans[0].scope_spans[0].spans[0]
            .parent_span_id
            .is_empty());
    }

    #[test]
    fn an_error_is_status_error_and_an_exception_event() {
        let mut r = record();
        r.events.clear();
        r.fields.push(("error".into(), Value::Bool(true)));
        r.fields
            .push(("exception.type".into(), Value::Str("ValueError".into())));
        r.fields
            .push(("exception.message".into(), Value::Str("bad".into())));
        let body = encode(&[], vec![r]);
        let decoded = ExportTraceServiceRequest::decode(&body[..]).unwrap();
        let s = &decoded.resource_spans[0].scope_spans[0].spans[0];
        let status = s.status.as_ref().unwrap();
        assert_eq!(status.code, status::StatusCode::Error as i32);
        assert_eq!(status.message, "bad");
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "exception");
        assert_eq!(s.events[0].time_unix_nano, 5_000);
        assert_eq!(
            attr(&s.events[0].attributes, "exception.type"),
            Some(&any_value::Value::StringValue("ValueError".into()))
        );
    }

    #[test]
    fn spans_are_grouped_by_target_in_order_of_appearance() {
        let mut a = record();
        a.target = "a".into();
        let mut b = record();
        b.target = "b".into();
        let decoded = request(&[], vec![a.clone(), b, a]);
        let scopes = &decoded.resource_spans[0].scope_spans;
        let names: Vec<_> = scopes
            .iter()
            .map(|s| (s.scope.as_ref().unwrap().name.clone(), s.spans.len()))
            .collect();
        assert_eq!(names, vec![("a".to_owned(), 2), ("b".to_owned(), 1)]);
    }
}
