//! Flame graphs of self busy time: folded stacks (`root;child;leaf 1234`,
//! one line per stack, counts in nanoseconds), rendered to an interactive
//! SVG by the `inferno` crate (CDDL-1.0).
//!
//! A span's self time is its busy time less the busy time of its children
//! on the same track (thread or asyncio task), never below 0: children on
//! other tracks ran concurrently, so nothing is counted twice (see
//! [`crate::timeline`]). A stack is the span's names from its root down.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, Write};

use crate::jsonl::{self, Record, Report};

/// Self time per stack.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Folded {
    stacks: HashMap<String, u64>,
}

/// A span name as one frame of a stack: `;` separates frames and a line
/// ends the stack, so they become `:` and a space; an empty name is `?`.
#[must_use]
pub fn frame(name: &str) -> std::borrow::Cow<'_, str> {
    if name.is_empty() {
        return "?".into();
    }
    if name.contains([';', '\n', '\r']) {
        return name.replace(';', ":").replace(['\n', '\r'], " ").into();
    }
    name.into()
}

impl Folded {
    /// Nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `ns` of self time to `stack` (frames joined by `;`).
    pub fn add(&mut self, stack: &str, ns: u64) {
        if let Some(n) = self.stacks.get_mut(stack) {
            *n += ns;
        } else {
            self.stacks.insert(stack.to_owned(), ns);
        }
    }

    /// The self time of `stack`.
    #[must_use]
    pub fn get(&self, stack: &str) -> u64 {
        self.stacks.get(stack).copied().unwrap_or(0)
    }

    /// Whether nothing was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// The folded lines, sorted, stacks with no time left out.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .stacks
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(stack, n)| format!("{stack} {n}"))
            .collect();
        lines.sort_unstable();
        lines
    }

    /// Writes the folded lines.
    pub fn write_folded(&self, mut out: impl Write) -> io::Result<()> {
        for line in self.lines() {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Renders an interactive SVG (search, zoom) titled `title`. With no
    /// time recorded yet, an SVG that says so.
    pub fn write_svg(&self, title: &str, mut out: impl Write) -> io::Result<()> {
        let lines = self.lines();
        if lines.is_empty() {
            out.write_all(
                br#"<?xml version="1.0" standalone="no"?><svg version="1.1" width="1200" height="60" xmlns="http://www.w3.org/2000/svg"><text x="600" y="30" text-anchor="middle">no spans were busy yet</text></svg>"#,
            )?;
            return out.flush();
        }
        let mut options = inferno::flamegraph::Options::default();
        title.clone_into(&mut options.title);
        options.subtitle = Some("self busy time per stack of spans".to_owned());
        "ns".clone_into(&mut options.count_name);
        "Span:".clone_into(&mut options.name_type);
        inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut out)
            .map_err(|e| io::Error::other(e.to_string()))?;
        out.flush()
    }
}

// === JSON lines to folded stacks ===

/// Ended spans remembered by span id, for children that end after their
/// parent (their stack goes through it); older ones are forgotten.
const REMEMBERED: usize = 1 << 16;

/// A line's thread and task.
type TrackKey = (Option<u64>, Option<String>);

#[derive(Debug, Default)]
struct Pending {
    /// Busy time of children read so far that say they ran on this span's
    /// track (`on_parent_track`, which `JsonLines` writes).
    busy_on_track: u64,
    /// Busy time of children that do not say, per track: only for files
    /// without `on_parent_track` (older versions, other writers), where it
    /// grows with the tracks under one open span.
    busy_by_track: HashMap<TrackKey, u64>,
    /// Their stacks (relative to this span) and self times.
    stacks: HashMap<String, u64>,
}

/// Folds a `JsonLines` file's spans into self times per stack, streaming.
///
/// Lines come as spans end, children (mostly) before their parents, so a
/// span's stack is only known when its root is read: until then its
/// children's stacks wait with it (memory bounded by the tree of spans
/// still open, and the number of distinct stacks). A span's self time is
/// its `busy_ns` less that of its children on its own thread and task,
/// which each child's `on_parent_track` says; so an open span costs one
/// entry, however many tasks its children ran on.
/// Spans whose parent never appears (a file cut short, a remote parent)
/// are stacks of their own at the end.
pub fn jsonl_to_folded(
    src: impl BufRead,
    progress: &mut dyn FnMut(u64) -> bool,
) -> io::Result<(Folded, Report)> {
    let mut folded = Folded::new();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut seen: HashMap<u64, (String, Option<u64>)> = HashMap::new();
    let mut seen_order: VecDeque<u64> = VecDeque::new();
    let mut report = Report::default();
    jsonl::lines(src, &mut report, progress, |report, line_no, bytes| {
        match jsonl::parse(bytes) {
            Ok(Record::Span {
                line,
                span_id,
                parent,
                ..
            }) => {
                report.spans += 1;
                let name = frame(line.name.as_deref().unwrap_or("")).into_owned();
                let track = (line.thread_id, line.task.as_deref().map(str::to_owned));
                let mine = pending.remove(&span_id).unwrap_or_default();
                let busy = line.busy_ns.unwrap_or(0);
                let children =
                    mine.busy_on_track + mine.busy_by_track.get(&track).copied().unwrap_or(0);
                let mut stacks = mine.stacks;
                let relative: Vec<(String, u64)> =
                    std::iter::once((name.clone(), busy.saturating_sub(children)))
                        .chain(stacks.drain().map(|(s, n)| (format!("{name};{s}"), n)))
                        .collect();
                // Up through the ancestors already read (this span ended
                // after them), to the first still open, or to the root.
                let mut prefix = String::new();
                let mut up = parent;
                let mut direct = true;
                while let Some(p) = up {
                    let Some((pname, pparent)) = seen.get(&p) else {
                        break;
                    };
                    prefix = if prefix.is_empty() {
                        pname.clone()
                    } else {
                        format!("{pname};{prefix}")
                    };
                    up = *pparent;
                    direct = false;
                }
                let full = |s: &str| {
                    if prefix.is_empty() {
                        s.to_owned()
                    } else {
                        format!("{prefix};{s}")
                    }
                };
                match up {
                    Some(p) => {
                        let waiting = pending.entry(p).or_default();
                        if direct {
                            match line.on_parent_track {
                                Some(true) => waiting.busy_on_track += busy,
                                Some(false) => {}
                                None => *waiting.busy_by_track.entry(track).or_insert(0) += busy,
                            }
                        }
                        for (s, n) in relative {
                            *waiting.stacks.entry(full(&s)).or_insert(0) += n;
                        }
                    }
                    None => {
                        for (s, n) in relative {
                            folded.add(&full(&s), n);
                        }
                    }
                }
                seen.insert(span_id, (name, parent));
                seen_order.push_back(span_id);
                if seen_order.len() > REMEMBERED {
                    if let Some(old) = seen_order.pop_front() {
                        seen.remove(&old);
                    }
                }
            }
            Ok(Record::Event { .. }) => report.events += 1,
            Err(e) => report.error(line_no, e),
        }
    })?;
    // Parents never read: their children's stacks start below them.
    for (_, waiting) in pending {
        for (s, n) in waiting.stacks {
            folded.add(&s, n);
        }
    }
    Ok((folded, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(name: &str, id: u64, parent: Option<u64>, busy: u64, task: Option<&str>) -> String {
        format!(
            r#"{{"type":"span","span_id":"{id:016x}","parent_span_id":{},"name":"{name}","start_time_ns":0,"end_time_ns":1,"busy_ns":{busy},"thread_id":1,"task":{}}}"#,
            parent.map_or("null".to_owned(), |p| format!("\"{p:016x}\"")),
            task.map_or("null".to_owned(), |t| format!("\"{t}\"")),
        )
    }

    #[test]
    fn self_time_subtracts_children_on_the_same_track_only() {
        let text = [
            span("db", 3, Some(2), 30, None),
            span("handler", 2, Some(1), 50, None),
            span("worker", 4, Some(1), 70, Some("Task-2")),
            span("request", 1, None, 100, None),
        ]
        .join("\n");
        let (folded, report) = jsonl_to_folded(text.as_bytes(), &mut |_| true).unwrap();
        assert_eq!(report.spans, 4);
        assert_eq!(folded.get("request;handler;db"), 30);
        assert_eq!(folded.get("request;handler"), 20);
        assert_eq!(folded.get("request;worker"), 70);
        assert_eq!(folded.get("request"), 50);
    }

    /// With `on_parent_track` (as `JsonLines` writes it) the child says
    /// whether it counts against its parent's self time; its own track is
    /// not compared.
    #[test]
    fn a_childs_on_parent_track_decides_what_its_parent_loses() {
        let said = |line: String, on: bool| {
            line.replacen('}', &format!(r#","on_parent_track":{on}}}"#), 1)
        };
        let text = [
            said(span("inline", 2, Some(1), 30, Some("Task-2")), true),
            said(span("spawned", 3, Some(1), 20, None), false),
            span("root", 1, None, 100, None),
        ]
        .join("\n");
        let (folded, _) = jsonl_to_folded(text.as_bytes(), &mut |_| true).unwrap();
        assert_eq!(folded.get("root"), 70);
        assert_eq!(folded.get("root;inline"), 30);
        assert_eq!(folded.get("root;spawned"), 20);
    }

    #[test]
    fn a_child_ending_after_its_parent_keeps_its_stack() {
        let text = [
            span("parent", 2, Some(1), 10, None),
            span("late", 3, Some(2), 5, Some("Task-9")),
            span("root", 1, None, 40, None),
        ]
        .join("\n");
        let (folded, _) = jsonl_to_folded(text.as_bytes(), &mut |_| true).unwrap();
        assert_eq!(folded.get("root;parent;late"), 5);
        assert_eq!(folded.get("root;parent"), 10);
        assert_eq!(folded.get("root"), 30);
    }

    #[test]
    fn names_are_made_safe_as_frames() {
        assert_eq!(frame("a;b\nc"), "a:b c");
        assert_eq!(frame(""), "?");
    }

    #[test]
    fn the_svg_names_the_frames() {
        let mut folded = Folded::new();
        folded.add("request;db", 30);
        folded.add("request", 20);
        let mut svg = Vec::new();
        folded.write_svg("t", &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains("<svg"));
        assert!(svg.contains("request"));
        assert!(svg.contains("db"));
    }
}
