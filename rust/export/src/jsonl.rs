//! Reading a `JsonLines` file back, a line at a time, for conversions.
//!
//! Memory stays bounded whatever the file's size: one line is held at a
//! time (a line longer than [`MAX_LINE`] is skipped as an error), and the
//! errors kept are capped ([`Report::errors`]; all are counted). A file cut
//! short or with bad lines is read as far as it is good: each bad line is
//! an error with its line number, and reading goes on.

use std::borrow::Cow;
use std::io::{self, BufRead};

use serde::Deserialize;
use serde_json::value::RawValue;

/// The longest line read (16 MiB); longer ones are skipped as errors.
pub const MAX_LINE: usize = 16 << 20;

/// How many errors a [`Report`] keeps (all are counted).
pub const KEPT_ERRORS: usize = 1000;

/// How often (in bytes read) the progress callback is called.
const PROGRESS_EVERY: u64 = 1 << 20;

/// What a conversion read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Lines read (the last one even if cut short).
    pub lines: u64,
    /// Span lines converted.
    pub spans: u64,
    /// Event lines converted.
    pub events: u64,
    /// Bytes read.
    pub bytes: u64,
    /// The first [`KEPT_ERRORS`] bad lines: line number (from 1) and cause.
    pub errors: Vec<(u64, String)>,
    /// How many lines were bad.
    pub error_count: u64,
}

impl Report {
    /// Notes a bad line.
    pub fn error(&mut self, line: u64, cause: impl Into<String>) {
        self.error_count += 1;
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push((line, cause.into()));
        }
    }
}

/// One line of a `JsonLines` file: a span at its end, or an event. Fields
/// the conversions do not use are skipped; those they need are checked.
#[derive(Debug, Deserialize)]
pub struct Line<'a> {
    /// `"span"` or `"event"`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// A span's name.
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    /// An event's message.
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
    /// The target.
    #[serde(default, borrow)]
    pub target: Option<Cow<'a, str>>,
    /// The level's name.
    #[serde(default, borrow)]
    pub level: Option<Cow<'a, str>>,
    /// A span's start, ns since the epoch.
    #[serde(default)]
    pub start_time_ns: Option<u64>,
    /// A span's end.
    #[serde(default)]
    pub end_time_ns: Option<u64>,
    /// A span's busy time, ns.
    #[serde(default)]
    pub busy_ns: Option<u64>,
    /// An event's time.
    #[serde(default)]
    pub time_ns: Option<u64>,
    /// Hex trace id.
    #[serde(default, borrow)]
    pub trace_id: Option<Cow<'a, str>>,
    /// Hex span id (an event's: its span's).
    #[serde(default, borrow)]
    pub span_id: Option<Cow<'a, str>>,
    /// Hex parent span id.
    #[serde(default, borrow)]
    pub parent_span_id: Option<Cow<'a, str>>,
    /// The fields, as written.
    #[serde(default, borrow)]
    pub fields: Option<&'a RawValue>,
    /// The thread the span was made in (`threading.get_ident()`).
    #[serde(default)]
    pub thread_id: Option<u64>,
    /// The asyncio task it was made in, by name.
    #[serde(default, borrow)]
    pub task: Option<Cow<'a, str>>,
    /// A span's: whether it was made on its parent's thread and task
    /// (absent in files of older versions and other writers).
    #[serde(default)]
    pub on_parent_track: Option<bool>,
}

/// A checked line.
#[derive(Debug)]
pub enum Record<'a> {
    /// A span at its end, with its span id and parent's as numbers.
    Span {
        /// The line.
        line: Line<'a>,
        /// Its span id.
        span_id: u64,
        /// Its parent's span id.
        parent: Option<u64>,
        /// Start and end, ns since the epoch (end never before start).
        start: u64,
        /// End.
        end: u64,
    },
    /// An event at `time`.
    Event {
        /// The line.
        line: Line<'a>,
        /// Its time.
        time: u64,
    },
}

fn hex64(s: Option<&Cow<'_, str>>, what: &str) -> Result<Option<u64>, String> {
    match s {
        None => Ok(None),
        Some(s) => u64::from_str_radix(s, 16)
            .map(Some)
            .map_err(|_| format!("{what} is not 16 hex digits: {s:?}")),
    }
}

/// Parses and checks one line.
pub fn parse(bytes: &[u8]) -> Result<Record<'_>, String> {
    let line: Line<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match &*line.kind {
        "span" => {
            let span_id = hex64(line.span_id.as_ref(), "span_id")?
                .ok_or_else(|| "a span line without span_id".to_owned())?;
            let parent = hex64(line.parent_span_id.as_ref(), "parent_span_id")?;
            let (Some(start), Some(end)) = (line.start_time_ns, line.end_time_ns) else {
                return Err("a span line without start_time_ns and end_time_ns".to_owned());
            };
            if line.name.is_none() {
                return Err("a span line without name".to_owned());
            }
            Ok(Record::Span {
                line,
                span_id,
                parent,
                start,
                end: end.max(start),
            })
        }
        "event" => {
            let time = line
                .time_ns
                .ok_or_else(|| "an event line without time_ns".to_owned())?;
            Ok(Record::Event { line, time })
        }
        other => Err(format!("unknown line type {other:?}")),
    }
}

/// Calls `each(line_no, bytes)` for every line of `src` (without its
/// newline; blank lines skipped), noting in `report` lines too long to read
/// and calling `progress(bytes_read)` about every MiB; when that returns
/// false, reading stops with an [`io::ErrorKind::Interrupted`] error.
pub fn lines(
    mut src: impl BufRead,
    report: &mut Report,
    progress: &mut dyn FnMut(u64) -> bool,
    mut each: impl FnMut(&mut Report, u64, &[u8]),
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut next_progress = PROGRESS_EVERY;
    loop {
        buf.clear();
        let read = io::Read::take(&mut src, MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
        if read == 0 {
            break;
        }
        report.bytes += read as u64;
        report.lines += 1;
        let line_no = report.lines;
        if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
            // Skip the rest of the line.
            loop {
                let chunk = src.fill_buf()?;
                if chunk.is_empty() {
                    break;
                }
                let (used, done) = match chunk.iter().position(|&b| b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (chunk.len(), false),
                };
                src.consume(used);
                report.bytes += used as u64;
                if done {
                    break;
                }
            }
            report.error(
                line_no,
                format!("line longer than {MAX_LINE} bytes, skipped"),
            );
        } else {
            let cut = buf.last() != Some(&b'\n');
            let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if !text.iter().all(u8::is_ascii_whitespace) {
                let errors = report.error_count;
                each(report, line_no, text);
                if cut && report.error_count > errors {
                    // The file ends inside this line: say so.
                    if let Some(last) = report.errors.last_mut() {
                        if last.0 == line_no {
                            last.1 = format!("the file is cut short: {}", last.1);
                        }
                    }
                }
            }
        }
        if report.bytes >= next_progress {
            if !progress(report.bytes) {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "conversion stopped",
                ));
            }
            next_progress = report.bytes + PROGRESS_EVERY;
        }
    }
    progress(report.bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAN: &str = r#"{"type":"span","id":1,"parent_id":null,"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"00f067aa0ba902b7","parent_span_id":null,"name":"a","target":"t","level":"INFO","start_time_ns":10,"end_time_ns":30,"busy_ns":20,"idle_ns":0,"fields":{"k":[1,2]},"thread_id":7,"task":null}"#;

    #[test]
    fn a_span_line_reads_back() {
        let Record::Span {
            line,
            span_id,
            parent,
            start,
            end,
        } = parse(SPAN.as_bytes()).unwrap()
        else {
            panic!("not a span")
        };
        assert_eq!(
            (span_id, parent, start, end),
            (0x00f0_67aa_0ba9_02b7, None, 10, 30)
        );
        assert_eq!(line.fields.unwrap().get(), r#"{"k":[1,2]}"#);
        assert_eq!(line.thread_id, Some(7));
    }

    #[test]
    fn bad_and_cut_lines_are_errors_with_their_numbers() {
        let text = format!("{SPAN}\nnot json\n\n{{\"type\":\"nope\"}}\n{}", &SPAN[..40]);
        let mut report = Report::default();
        let mut good = 0;
        lines(
            text.as_bytes(),
            &mut report,
            &mut |_| true,
            |r, n, bytes| match parse(bytes) {
                Ok(_) => good += 1,
                Err(e) => r.error(n, e),
            },
        )
        .unwrap();
        assert_eq!(good, 1);
        assert_eq!(report.lines, 5);
        let numbers: Vec<u64> = report.errors.iter().map(|e| e.0).collect();
        assert_eq!(numbers, [2, 4, 5]);
        assert!(report.errors[2].1.starts_with("the file is cut short"));
    }

    #[test]
    fn progress_reaches_the_end() {
        let mut seen = Vec::new();
        let mut report = Report::default();
        lines(
            SPAN.as_bytes(),
            &mut report,
            &mut |b| {
                seen.push(b);
                true
            },
            |_, _, _| {},
        )
        .unwrap();
        assert_eq!(seen.last(), Some(&(SPAN.len() as u64)));
    }
}
