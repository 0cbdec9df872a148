//! The exporter against a tiny OTLP/HTTP receiver in the test (std's
//! `TcpListener` on 127.0.0.1:0), and against a collector that is down.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use pykregistry_core::{Level, Value};
use pykregistry_export::{Config, Counts, EventRecord, Exporter, Link, SpanRecord};

/// A request's headers (names lowercased).
type Headers = Vec<(String, String)>;

/// What the receiver got: each request's headers and decoded body.
#[derive(Default)]
struct Received {
    requests: Mutex<Vec<(Headers, ExportTraceServiceRequest)>>,
}

/// Answers the first `failures` requests with 503, the rest with 200.
fn receiver(failures: usize) -> (String, Arc<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Received::default());
    let seen = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let r = Arc::clone(&r);
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || serve(stream, &r, &seen, failures));
        }
    });
    (url, received)
}

fn serve(stream: TcpStream, received: &Received, seen: &AtomicUsize, failures: usize) {
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let status = if seen.fetch_add(1, Ordering::SeqCst) < failures {
            "503 Service Unavailable"
        } else {
            let request = ExportTraceServiceRequest::decode(&body[..]).unwrap();
            received.requests.lock().unwrap().push((headers, request));
            "200 OK"
        };
        write!(out, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").unwrap();
    }
}

fn config(endpoint: &str) -> Config {
    Config::new(
        Some(endpoint),
        vec![("x-api-key".into(), "secret".into())],
        Duration::from_secs(10),
        Some("svc"),
        vec![("team".into(), Value::I64(7))],
        |_| None,
    )
}

fn span(i: u64) -> SpanRecord {
    SpanRecord {
        trace_id: 0xabc,
        span_id: i,
        parent_span_id: (i > 1).then_some(1),
        trace_flags: 1,
        parent_is_remote: false,
        trace_state: None,
        name: format!("span{i}").into(),
        target: "app".into(),
        level: Level::Info,
        start_time_ns: 1,
        end_time_ns: 2,
        busy_ns: 1,
        idle_ns: 0,
        fields: vec![("i".into(), Value::I64(i64::try_from(i).unwrap()))],
        links: vec![],
        events: vec![],
    }
}

/// A port nothing listens on: bound, then closed.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[test]
fn spans_events_and_links_reach_the_receiver() {
    let (url, received) = receiver(0);
    let exporter = Exporter::new(config(&url)).unwrap();
    exporter.event(
        2,
        EventRecord {
            time_ns: 5,
            message: "hello".into(),
            target: String::new().into(),
            level: Level::Warn,
            fields: vec![],
        },
    );
    exporter.link(
        2,
        Link {
            trace_id: 0xdef,
            span_id: 99,
        },
    );
    for i in 1..=3 {
        exporter.export(span(i));
    }
    assert!(exporter.flush(Duration::from_secs(10)));
    assert_eq!(
        exporter.counts(),
        Counts {
            exported: 3,
            dropped: 0,
            failed: 0
        }
    );
    let requests = received.requests.lock().unwrap();
    let (headers, request) = &requests[0];
    assert!(headers.contains(&("x-api-key".into(), "secret".into())));
    assert!(headers.contains(&("content-type".into(), "application/x-protobuf".into())));
    let rs = &request.resource_spans[0];
    let service = rs
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name");
    assert!(format!("{service:?}").contains("svc"));
    let spans: Vec<_> = requests
        .iter()
        .flat_map(|(_, r)| r.resource_spans[0].scope_spans[0].spans.clone())
        .collect();
    let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["span1", "span2", "span3"]);
    assert_eq!(spans[1].events.len(), 1);
    assert_eq!(spans[1].events[0].name, "hello");
    assert_eq!(spans[1].links[0].span_id, 99_u64.to_be_bytes());
    assert!(spans[0].events.is_empty());
}

#[test]
fn retryable_statuses_are_retried() {
    let (url, received) = receiver(2);
    let exporter = Exporter::new(config(&url)).unwrap();
    exporter.export(span(1));
    assert!(exporter.flush(Duration::from_secs(20)));
    assert_eq!(exporter.counts().exported, 1);
    assert_eq!(received.requests.lock().unwrap().len(), 1);
}

#[test]
fn a_full_queue_drops_and_counts() {
    // A collector that accepts connections and never answers: the thread
    // is stuck sending the first span while the queue fills.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (accepted, connections) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = accepted.send(stream);
        }
    });
    let mut c = config(&url);
    c.queue_size = 4;
    c.batch_size = 1;
    let exporter = Exporter::new(c).unwrap();
    exporter.export(span(1));
    let _held = connections.recv_timeout(Duration::from_secs(10)).unwrap();
    for i in 2..=100 {
        exporter.export(span(i));
    }
    assert_eq!(exporter.counts().dropped, 100 - 1 - 4);
    // The request in flight keeps its own timeout; shutdown does not wait
    // for it beyond its own.
    let start = Instant::now();
    let _ = exporter.shutdown(Duration::from_millis(200));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(exporter.counts().exported, 0);
}

#[test]
fn a_down_collector_counts_failures_and_shutdown_keeps_its_deadline() {
    let exporter = Exporter::new(config(&closed_port())).unwrap();
    for i in 1..=10 {
        exporter.export(span(i));
    }
    let start = Instant::now();
    let done = exporter.shutdown(Duration::from_millis(500));
    // A generous bound: the point is that it does not wait for the
    // exporter's own 10 s timeout.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(done);
    let counts = exporter.counts();
    assert_eq!(counts.exported, 0);
    assert_eq!(counts.failed + counts.dropped, 10);
    assert!(counts.failed > 0);
    // Shut down: later spans are dropped and counted.
    exporter.export(span(11));
    assert_eq!(exporter.counts().dropped, counts.dropped + 1);
    assert!(exporter.shutdown(Duration::from_millis(100)));
}

#[test]
fn a_refused_batch_fails_without_retrying() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line.trim().is_empty() {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let mut out = stream;
            out.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        }
    });
    let exporter = Exporter::new(config(&url)).unwrap();
    exporter.export(span(1));
    assert!(exporter.flush(Duration::from_secs(10)));
    assert_eq!(exporter.counts().failed, 1);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn a_batch_leaves_when_its_delay_is_up_without_a_flush() {
    let (url, received) = receiver(0);
    let mut c = config(&url);
    c.delay = Duration::from_millis(50);
    let exporter = Exporter::new(c).unwrap();
    exporter.export(span(1));
    // A hang bound, not a timing.
    let until = Instant::now() + Duration::from_secs(30);
    while exporter.counts().exported == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(received.requests.lock().unwrap().len(), 1);
    assert_eq!(exporter.counts().exported, 1);
}

#[test]
fn a_dropped_exporter_sends_what_it_held() {
    let (url, received) = receiver(0);
    let exporter = Exporter::new(config(&url)).unwrap();
    exporter.export(span(1));
    drop(exporter);
    let until = Instant::now() + Duration::from_secs(30);
    while received.requests.lock().unwrap().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(received.requests.lock().unwrap().len(), 1);
}
