//! The Chrome trace event format (the JSON array form), which Perfetto and
//! `chrome://tracing` open.
//!
//! A document is `[`, events separated by `,\n`, and `]`. Until its `]` is
//! written the array is unterminated, which both viewers accept (the
//! format allows it so that a trace cut short still opens); after
//! [`ChromeDoc::FOOTER`] it is one complete JSON document.
//!
//! Times (`ts`, `dur`) are microseconds with three decimals (exact
//! nanoseconds), counted from the document's origin (a wall-clock time in
//! ns since the epoch, given in the process's metadata as
//! `args.origin_unix_ns`): small numbers, so that a reader parsing them as
//! doubles keeps every nanosecond and slices that nest still nest.
//! Each event's `dur` is the difference of its rounded end and start, for
//! the same reason.

use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};

use crate::chrome_tracks::{
    PendingArrows, TrackKey, Tracks, MAX_ARROWS, MAX_ARROWS_PER_PARENT, MAX_SLICES, MAX_TRACKS,
};
use crate::json::push_str;
use crate::jsonl::{self, Record, Report};

/// A document being written: the separator state, the process id and the
/// origin of times.
#[derive(Debug, Clone)]
pub struct ChromeDoc {
    events: u64,
    pid: u32,
    origin_ns: u64,
}

/// Where a flow arrow starts or ends: a track (`tid`) and a time (ns since
/// the epoch) inside a slice of that track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEnd {
    /// The track.
    pub tid: u32,
    /// The time.
    pub at_ns: u64,
}

impl ChromeDoc {
    /// What a document starts with.
    pub const HEADER: &'static [u8] = b"[\n";
    /// What completes it.
    pub const FOOTER: &'static [u8] = b"\n]\n";

    /// A document for process `pid` whose times count from `origin_ns`.
    #[must_use]
    pub fn new(pid: u32, origin_ns: u64) -> Self {
        ChromeDoc {
            events: 0,
            pid,
            origin_ns,
        }
    }

    /// How many events were written.
    #[must_use]
    pub fn events(&self) -> u64 {
        self.events
    }

    fn begin(&mut self, out: &mut Vec<u8>, ph: &str) {
        if self.events > 0 {
            out.extend_from_slice(b",\n");
        }
        self.events += 1;
        let _ = write!(out, "{{\"ph\":\"{ph}\",\"pid\":{}", self.pid);
    }

    fn push_time(&self, out: &mut Vec<u8>, key: &str, ns: u64) {
        let rel = ns.saturating_sub(self.origin_ns);
        let _ = write!(out, ",\"{key}\":{}.{:03}", rel / 1000, rel % 1000);
    }

    fn push_ts(&self, out: &mut Vec<u8>, ns: u64) {
        self.push_time(out, "ts", ns);
    }

    /// The process's name, with the origin of times in its args.
    pub fn process_name(&mut self, out: &mut Vec<u8>, name: &str) {
        self.begin(out, "M");
        out.extend_from_slice(b",\"tid\":0,\"name\":\"process_name\",\"args\":{\"name\":");
        push_str(out, name);
        let _ = write!(out, ",\"origin_unix_ns\":{}}}}}", self.origin_ns);
    }

    /// Names track `tid` (`thread_name`) and orders it by `sort_index`.
    pub fn track_name(&mut self, out: &mut Vec<u8>, tid: u32, name: &str, sort_index: u32) {
        self.begin(out, "M");
        let _ = write!(
            out,
            ",\"tid\":{tid},\"name\":\"thread_name\",\"args\":{{\"name\":"
        );
        push_str(out, name);
        out.extend_from_slice(b"}}");
        self.begin(out, "M");
        let _ = write!(
            out,
            ",\"tid\":{tid},\"name\":\"thread_sort_index\",\"args\":{{\"sort_index\":{sort_index}}}}}"
        );
    }

    /// A complete event (a slice) on track `tid` from `start_ns` to
    /// `end_ns`; `args` is a JSON object.
    pub fn complete(
        &mut self,
        out: &mut Vec<u8>,
        tid: u32,
        (start_ns, end_ns): (u64, u64),
        name: &str,
        cat: &str,
        args: &[u8],
    ) {
        self.begin(out, "X");
        let _ = write!(out, ",\"tid\":{tid}");
        self.push_ts(out, start_ns);
        let start = start_ns.saturating_sub(self.origin_ns);
        let end = end_ns.saturating_sub(self.origin_ns).max(start);
        let dur = end - start;
        let _ = write!(out, ",\"dur\":{}.{:03}", dur / 1000, dur % 1000);
        Self::name_cat_args(out, name, cat, args);
    }

    /// An instant event on track `tid`.
    pub fn instant(
        &mut self,
        out: &mut Vec<u8>,
        tid: u32,
        at_ns: u64,
        name: &str,
        cat: &str,
        args: &[u8],
    ) {
        self.begin(out, "i");
        let _ = write!(out, ",\"tid\":{tid},\"s\":\"t\"");
        self.push_ts(out, at_ns);
        Self::name_cat_args(out, name, cat, args);
    }

    /// A flow arrow `id` from the slice enclosing `from` to the slice
    /// enclosing `to` (flow events `s` and `f`, both bound to their
    /// enclosing slice), named `name`.
    pub fn flow(&mut self, out: &mut Vec<u8>, id: u64, from: FlowEnd, to: FlowEnd, name: &str) {
        for (ph, end) in [("s", from), ("f", to)] {
            self.begin(out, ph);
            let _ = write!(out, ",\"tid\":{},\"id\":{id},\"bp\":\"e\"", end.tid);
            self.push_ts(out, end.at_ns);
            out.extend_from_slice(b",\"cat\":\"flow\",\"name\":");
            push_str(out, name);
            out.push(b'}');
        }
    }

    fn name_cat_args(out: &mut Vec<u8>, name: &str, cat: &str, args: &[u8]) {
        out.extend_from_slice(b",\"name\":");
        push_str(out, name);
        out.extend_from_slice(b",\"cat\":");
        push_str(out, if cat.is_empty() { "span" } else { cat });
        out.extend_from_slice(b",\"args\":");
        out.extend_from_slice(if args.is_empty() { b"{}" } else { args });
        out.push(b'}');
    }
}

/// The args of a span's slice or an event: its ids as lowercase hex (R13),
/// its level, and its fields (`fields`, a JSON object, or empty).
pub fn push_args(
    out: &mut Vec<u8>,
    ids: (u64, u128, Option<u64>),
    level: &str,
    fields: &[u8],
    extra: &[(&str, u64)],
) {
    let (span_id, trace_id, parent) = ids;
    let _ = write!(
        out,
        "{{\"span_id\":\"{span_id:016x}\",\"trace_id\":\"{trace_id:032x}\",\"parent_span_id\":"
    );
    match parent {
        Some(p) => {
            let _ = write!(out, "\"{p:016x}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"level\":");
    push_str(out, level);
    for (key, value) in extra {
        let _ = write!(out, ",\"{key}\":{value}");
    }
    out.extend_from_slice(b",\"fields\":");
    out.extend_from_slice(if fields.is_empty() { b"{}" } else { fields });
    out.push(b'}');
}

// === JSON lines to Chrome trace ===

struct Converter<W: Write> {
    doc: ChromeDoc,
    dst: W,
    buf: Vec<u8>,
    tracks: Tracks,
    /// Per parent (by span id) not yet read: the tracks its children were
    /// on, with the earliest child's start there (one arrow per track).
    children_on: PendingArrows,
    flows: u64,
}

/// Converts a `JsonLines` file into a Chrome trace, streaming: each span is
/// one slice from its start to its end on the track of the thread or task
/// it was made in (a JSON-lines file holds spans, not each busy interval),
/// each event an instant there, and a child on another track than its
/// parent gets an arrow from it (one per parent and track). Memory is
/// bounded whatever the file's size: the tables of tracks and of arrows
/// waiting for their parent are capped (see `chrome_tracks.rs`).
///
/// `src` is read twice: once for the earliest time (the document's
/// origin), once to convert. Bad lines are reported in the returned
/// [`Report`] and skipped.
pub fn jsonl_to_chrome<R: BufRead + Seek, W: Write>(
    mut src: R,
    dst: W,
    pid: u32,
    progress: &mut dyn FnMut(u64) -> bool,
) -> io::Result<Report> {
    let start = src.stream_position()?;
    let origin = earliest_time(&mut src)?;
    src.seek(SeekFrom::Start(start))?;
    let mut c = Converter {
        doc: ChromeDoc::new(pid, origin),
        dst,
        buf: Vec::with_capacity(1 << 16),
        tracks: Tracks::new(MAX_TRACKS, MAX_SLICES),
        children_on: PendingArrows::new(MAX_ARROWS, MAX_ARROWS_PER_PARENT),
        flows: 0,
    };
    c.buf.extend_from_slice(ChromeDoc::HEADER);
    c.doc
        .process_name(&mut c.buf, "pykregistry (from JSON lines)");
    let mut report = Report::default();
    let mut failed: Option<io::Error> = None;
    jsonl::lines(src, &mut report, progress, |report, line_no, bytes| {
        if failed.is_some() {
            return;
        }
        match jsonl::parse(bytes) {
            Ok(record) => {
                match &record {
                    Record::Span { .. } => report.spans += 1,
                    Record::Event { .. } => report.events += 1,
                }
                c.record(&record);
                if c.buf.len() >= 1 << 16 {
                    if let Err(e) = c.dst.write_all(&c.buf) {
                        failed = Some(e);
                    }
                    c.buf.clear();
                }
            }
            Err(e) => report.error(line_no, e),
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    c.buf.extend_from_slice(ChromeDoc::FOOTER);
    c.dst.write_all(&c.buf)?;
    c.dst.flush()?;
    Ok(report)
}

/// The earliest start or event time in the file (0 if none): a scan for
/// the numbers, without parsing the lines.
fn earliest_time(src: &mut impl BufRead) -> io::Result<u64> {
    let mut earliest = u64::MAX;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if Read::take(&mut *src, jsonl::MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        for key in [&b"\"start_time_ns\":"[..], &b"\"time_ns\":"[..]] {
            if let Some(at) = find(&buf, key) {
                let digits = &buf[at + key.len()..];
                let end = digits
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .unwrap_or(digits.len());
                if let Some(n) = std::str::from_utf8(&digits[..end])
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    earliest = earliest.min(n);
                }
            }
        }
    }
    Ok(if earliest == u64::MAX { 0 } else { earliest })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl<W: Write> Converter<W> {
    fn record(&mut self, record: &Record<'_>) {
        match record {
            Record::Span {
                line,
                span_id,
                parent,
                start,
                end,
            } => {
                let key = TrackKey {
                    thread: line.thread_id,
                    task: line.task.as_deref().map(str::to_owned),
                };
                let placed = self.tracks.span(&key, *start, *end);
                let tid = self.named(placed.tid, placed.new_name.as_deref());
                let mut args = Vec::with_capacity(128);
                let trace = line
                    .trace_id
                    .as_deref()
                    .and_then(|t| u128::from_str_radix(t, 16).ok())
                    .unwrap_or(0);
                push_args(
                    &mut args,
                    (*span_id, trace, *parent),
                    line.level.as_deref().unwrap_or(""),
                    line.fields.map_or(&b""[..], |f| f.get().as_bytes()),
                    &[("busy_ns", line.busy_ns.unwrap_or(0))],
                );
                self.doc.complete(
                    &mut self.buf,
                    tid,
                    (*start, *end),
                    line.name.as_deref().unwrap_or(""),
                    line.target.as_deref().unwrap_or(""),
                    &args,
                );
                // Arrows to this span's children on other tracks.
                for (child_serial, child_tid, child_start) in self.children_on.take(*span_id) {
                    {
                        if child_serial != placed.serial {
                            self.flows += 1;
                            self.doc.flow(
                                &mut self.buf,
                                self.flows,
                                FlowEnd { tid, at_ns: *start },
                                FlowEnd {
                                    tid: child_tid,
                                    at_ns: child_start,
                                },
                                "parent",
                            );
                        }
                    }
                }
                if let Some(parent) = parent {
                    self.children_on.note(*parent, (placed.serial, tid, *start));
                }
            }
            Record::Event { line, time } => {
                let key = TrackKey {
                    thread: line.thread_id,
                    task: line.task.as_deref().map(str::to_owned),
                };
                let placed = self.tracks.event(&key);
                let tid = self.named(placed.tid, placed.new_name.as_deref());
                let mut args = Vec::with_capacity(128);
                let trace = line
                    .trace_id
                    .as_deref()
                    .and_then(|t| u128::from_str_radix(t, 16).ok())
                    .unwrap_or(0);
                let span = line
                    .span_id
                    .as_deref()
                    .and_then(|t| u64::from_str_radix(t, 16).ok())
                    .unwrap_or(0);
                push_args(
                    &mut args,
                    (span, trace, None),
                    line.level.as_deref().unwrap_or(""),
                    line.fields.map_or(&b""[..], |f| f.get().as_bytes()),
                    &[],
                );
                self.doc.instant(
                    &mut self.buf,
                    tid,
                    *time,
                    line.message.as_deref().unwrap_or(""),
                    line.target.as_deref().unwrap_or(""),
                    &args,
                );
            }
        }
    }

    /// `tid`, named first if `name` is given.
    fn named(&mut self, tid: u32, name: Option<&str>) -> u32 {
        if let Some(name) = name {
            self.doc.track_name(&mut self.buf, tid, name, tid);
        }
        tid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn span(
        name: &str,
        id: u64,
        parent: Option<u64>,
        times: (u64, u64),
        thread: u64,
        task: Option<&str>,
    ) -> String {
        format!(
            r#"{{"type":"span","trace_id":"{:032x}","span_id":"{id:016x}","parent_span_id":{},"name":"{name}","target":"app","level":"INFO","start_time_ns":{},"end_time_ns":{},"busy_ns":1,"idle_ns":0,"fields":{{"n":{id}}},"thread_id":{thread},"task":{}}}"#,
            1,
            parent.map_or("null".to_owned(), |p| format!("\"{p:016x}\"")),
            times.0,
            times.1,
            task.map_or("null".to_owned(), |t| format!("\"{t}\"")),
        )
    }

    fn convert(text: &str) -> (serde_json::Value, Report) {
        let mut out = Vec::new();
        let report = jsonl_to_chrome(io::Cursor::new(text.as_bytes()), &mut out, 42, &mut |_| {
            true
        })
        .unwrap();
        (
            serde_json::from_slice(&out).expect("one JSON document"),
            report,
        )
    }

    #[test]
    fn spans_become_slices_on_their_tracks_with_arrows_across() {
        let text = [
            span("child", 2, Some(1), (2000, 3000), 7, Some("Task-1 work")),
            r#"{"type":"event","time_ns":2500,"message":"hi","target":"app","level":"INFO","trace_id":null,"span_id":null,"fields":{},"thread_id":7,"task":"Task-1 work"}"#.to_owned(),
            span("root", 1, None, (1000, 5000), 7, None),
        ]
        .join("\n");
        let (doc, report) = convert(&text);
        assert_eq!((report.spans, report.events, report.error_count), (2, 1, 0));
        let events = doc.as_array().unwrap();
        let names: HashMap<u64, &str> = events
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .map(|e| {
                (
                    e["tid"].as_u64().unwrap(),
                    e["args"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        let slice = |n: &str| {
            events
                .iter()
                .find(|e| e["ph"] == "X" && e["name"] == n)
                .unwrap()
        };
        assert_eq!(
            names[&slice("child").get("tid").unwrap().as_u64().unwrap()],
            "Task-1 work"
        );
        assert_eq!(
            names[&slice("root").get("tid").unwrap().as_u64().unwrap()],
            "Thread 7"
        );
        assert_eq!(slice("root")["ts"], 0.0);
        assert_eq!(slice("root")["dur"], 4.0);
        assert_eq!(slice("child")["args"]["fields"]["n"], 2);
        let s = events.iter().find(|e| e["ph"] == "s").unwrap();
        let f = events.iter().find(|e| e["ph"] == "f").unwrap();
        assert_eq!(
            (s["tid"].clone(), s["ts"].clone()),
            (slice("root")["tid"].clone(), 0.0.into())
        );
        assert_eq!(
            (f["tid"].clone(), f["ts"].clone()),
            (slice("child")["tid"].clone(), 1.0.into())
        );
        assert_eq!(s["id"], f["id"]);
        assert!(events.iter().any(|e| e["ph"] == "i" && e["name"] == "hi"));
    }

    #[test]
    fn crossing_spans_go_to_another_lane() {
        let text = [
            span("a", 1, None, (0, 10), 1, None),
            span("b", 2, None, (5, 20), 1, None),
            span("c", 3, None, (0, 30), 1, None),
        ]
        .join("\n");
        let (doc, _) = convert(&text);
        let events = doc.as_array().unwrap();
        let tid = |n: &str| {
            events
                .iter()
                .find(|e| e["ph"] == "X" && e["name"] == n)
                .unwrap()["tid"]
                .as_u64()
        };
        assert_ne!(tid("a"), tid("b"));
        assert_eq!(tid("a"), tid("c"));
    }

    #[test]
    fn a_cut_file_converts_as_far_as_it_is_good() {
        let good = span("a", 1, None, (0, 10), 1, None);
        let text = format!("{good}\n{}", &good[..50]);
        let (doc, report) = convert(&text);
        assert_eq!(report.spans, 1);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].0, 2);
        assert!(doc.as_array().unwrap().iter().any(|e| e["name"] == "a"));
    }
}
