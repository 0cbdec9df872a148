//! W3C Trace Context: the `traceparent` and `tracestate` headers that carry
//! a trace from one process to another
//! (<https://www.w3.org/TR/trace-context-2/>, whose test suite's cases are
//! the unit tests below).
//!
//! A [`RemoteParent`] is what a `traceparent` header names: a span in
//! another process (its trace id and span id, R13), with the trace's flags
//! and its `tracestate`. A span created with a remote parent
//! ([`crate::Attrs::remote_parent`]) continues that trace.
//!
//! # Guarantees
//!
//! - Parsing never panics and accepts exactly what the specification does;
//!   anything else is `None` (a caller then starts a new trace).
//! - What [`format_traceparent`] writes parses back to the same ids and
//!   flags, and what [`parse_tracestate`] returns parses back to itself.
//!
//! # Choices where the specification leaves room
//!
//! - Surrounding spaces and tabs (HTTP's optional whitespace) are ignored,
//!   in `traceparent` as in each `tracestate` member.
//! - Trace flags keep the bits this version of the specification defines,
//!   [`SAMPLED`] and [`RANDOM_TRACE_ID`]; the others are reserved and
//!   "vendors MUST set those to zero", so they are cleared when parsed.
//! - A `tracestate` is kept normalized: its members in order, joined by
//!   `,` with no whitespace, empty members dropped, and of a key given more
//!   than once only the left-most (most recent) member. A malformed member,
//!   or more than [`MAX_TRACESTATE_MEMBERS`] members, drops the whole
//!   header, as the test suite expects. Longer than
//!   [`MAX_TRACESTATE_LEN`] characters, whole members are removed as the
//!   specification says: first those longer than 128 characters (right-most
//!   first), then from the right.

use std::sync::Arc;

use crate::TraceParent;

/// Trace flag: the caller may have recorded the trace.
pub const SAMPLED: u8 = 0x01;
/// Trace flag (Trace Context Level 2): at least the right-most 7 bytes of
/// the trace id are random.
pub const RANDOM_TRACE_ID: u8 = 0x02;
/// The trace flags this version of the specification defines. The others
/// are reserved, and sent as zero.
pub const KNOWN_FLAGS: u8 = SAMPLED | RANDOM_TRACE_ID;
/// The trace flags of a trace this process starts: [`SAMPLED`], since the
/// registry records every span (layers and filters decide what leaves the
/// process). Not [`RANDOM_TRACE_ID`]: trace ids are unique by construction
/// (R13), not uniformly random draws.
pub const DEFAULT_FLAGS: u8 = SAMPLED;
/// The longest `tracestate` kept, in characters: the 512 the specification
/// asks vendors to propagate at least.
pub const MAX_TRACESTATE_LEN: usize = 512;
/// The most members a `tracestate` may have.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The length of a version `00` `traceparent`, and the least length of any.
const TRACEPARENT_LEN: usize = 55;
/// The longest key, and the longest value, of a `tracestate` member.
const MAX_KEY_LEN: usize = 256;
const MAX_VALUE_LEN: usize = 256;
/// Members longer than this go first when a `tracestate` is too long.
const LONG_MEMBER: usize = 128;

/// A span in another process that spans here can continue: what a
/// `traceparent` header (and its `tracestate`) names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteParent {
    /// Its trace id and span id; neither is 0.
    pub trace_parent: TraceParent,
    /// The trace flags; only [`KNOWN_FLAGS`] bits.
    pub trace_flags: u8,
    /// The `tracestate`, normalized (see [`parse_tracestate`]); `None` when
    /// there was none, or it was malformed.
    pub tracestate: Option<Arc<str>>,
}

// === impl RemoteParent ===

impl RemoteParent {
    /// The remote parent a `traceparent` header and the `tracestate`
    /// header (all of its fields, combined with `,`) name, or `None` if the
    /// `traceparent` is invalid (the caller then starts a new trace). A
    /// malformed `tracestate` is dropped; it never invalidates the
    /// `traceparent`, and it is not read when the `traceparent` is invalid.
    #[must_use]
    pub fn from_headers(traceparent: &[u8], tracestate: Option<&[u8]>) -> Option<Self> {
        let (span, flags) = parse_traceparent(traceparent)?;
        Some(RemoteParent {
            trace_parent: span,
            trace_flags: flags,
            tracestate: tracestate.and_then(parse_tracestate).map(Arc::from),
        })
    }

    /// The `traceparent` header naming this span (version `00`).
    #[must_use]
    pub fn traceparent(&self) -> String {
        format_traceparent(self.trace_parent, self.trace_flags)
    }
}

/// Parses a `traceparent` header: its trace id, parent (span) id, and trace
/// flags (only the [`KNOWN_FLAGS`] bits), or `None` if it is invalid.
///
/// Valid: after optional surrounding spaces and tabs, a version of two
/// lowercase hex digits other than `ff`, then `-`, 32 lowercase hex digits
/// (the trace id, not all zero), `-`, 16 (the parent id, not all zero),
/// `-`, 2 (the flags). Version `00` ends there; a later version may go on,
/// after a `-`, with fields this version does not know (and ignores).
#[must_use]
pub fn parse_traceparent(header: &[u8]) -> Option<(TraceParent, u8)> {
    let header = trim_ows(header);
    if header.len() < TRACEPARENT_LEN
        || header[2] != b'-'
        || header[35] != b'-'
        || header[52] != b'-'
    {
        return None;
    }
    let version = hex(&header[..2])?;
    let trace_id = hex(&header[3..35])?;
    let span_id = hex(&header[36..52])?;
    let flags = hex(&header[53..55])?;
    let more = header.get(TRACEPARENT_LEN);
    let valid = match (version, more) {
        (0xff, _) | (0, Some(_)) => false,
        (_, None) => true,
        (_, Some(&c)) => c == b'-',
    };
    if !valid || trace_id == 0 || span_id == 0 {
        return None;
    }
    // The slices are 32, 16 and 2 digits long: the values fit.
    Some((
        TraceParent {
            trace_id,
            span_id: span_id as u64,
        },
        flags as u8 & KNOWN_FLAGS,
    ))
}

/// The version `00` `traceparent` header for a span and trace flags.
#[must_use]
pub fn format_traceparent(span: TraceParent, flags: u8) -> String {
    format!(
        "00-{:032x}-{:016x}-{:02x}",
        span.trace_id, span.span_id, flags
    )
}

/// Parses and normalizes a `tracestate` header (several fields combined
/// with `,`): `None` if it is malformed or has no members. See the module
/// docs for how it is normalized and shortened.
///
/// A member is `key=value`: a key of 1 to 256 characters, the first a
/// lowercase letter or a digit, the others lowercase letters, digits, `_`,
/// `-`, `*`, `/` or `@`; a value of 1 to 256 printable ASCII characters
/// other than `,` and `=`, not ending with a space.
#[must_use]
pub fn parse_tracestate(header: &[u8]) -> Option<String> {
    let mut members: Vec<&[u8]> = Vec::new();
    let mut count = 0;
    for member in header.split(|&c| c == b',') {
        let member = trim_ows(member);
        if member.is_empty() {
            continue;
        }
        count += 1;
        if count > MAX_TRACESTATE_MEMBERS {
            return None;
        }
        let eq = member.iter().position(|&c| c == b'=')?;
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        if !valid_key(key) || !valid_value(value) {
            return None;
        }
        // A key given again: keep the left-most, the most recent.
        if !members.iter().any(|m| key_of(m) == key) {
            members.push(member);
        }
    }
    let mut len = members.iter().map(|m| m.len() + 1).sum::<usize>();
    while len > MAX_TRACESTATE_LEN + 1 {
        let long = members.iter().rposition(|m| m.len() > LONG_MEMBER);
        let removed = members.remove(long.unwrap_or(members.len() - 1));
        len -= removed.len() + 1;
    }
    if members.is_empty() {
        return None;
    }
    // Every byte kept is printable ASCII.
    String::from_utf8(members.join(&b","[..])).ok()
}

/// `s` without HTTP's optional whitespace (spaces and tabs) around it.
fn trim_ows(s: &[u8]) -> &[u8] {
    let ows = |c: &u8| *c == b' ' || *c == b'\t';
    let start = s.iter().position(|c| !ows(c)).unwrap_or(s.len());
    let end = s.iter().rposition(|c| !ows(c)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// The value of at most 32 lowercase hex digits; `None` for any other byte.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |n, &c| {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u128::from(digit))
    })
}

fn key_of(member: &[u8]) -> &[u8] {
    member.split(|&c| c == b'=').next().unwrap_or(member)
}

fn valid_key(key: &[u8]) -> bool {
    let first = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let rest = |c: &u8| first(c) || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@');
    match key.split_first() {
        Some((head, tail)) => key.len() <= MAX_KEY_LEN && first(head) && tail.iter().all(rest),
        None => false,
    }
}

fn valid_value(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE_LEN
        && value
            .iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && value.last() != Some(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TP: &str = "00-12345678901234567890123456789012-1234567890123456-01";
    const TRACE: u128 = 0x1234_5678_9012_3456_7890_1234_5678_9012;
    const SPAN: u64 = 0x1234_5678_9012_3456;

    fn parse(s: &str) -> Option<(u128, u64, u8)> {
        parse_traceparent(s.as_bytes()).map(|(tp, f)| (tp.trace_id, tp.span_id, f))
    }

    fn state(s: &str) -> Option<String> {
        parse_tracestate(s.as_bytes())
    }

    // === traceparent: the W3C test suite's cases (test/test.py) ===

    #[test]
    fn traceparent_valid() {
        assert_eq!(parse(TP), Some((TRACE, SPAN, 0x01)));
        assert_eq!(
            parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            Some((
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                0x00f0_67aa_0ba9_02b7,
                0
            ))
        );
    }

    #[test]
    fn traceparent_ows_is_ignored() {
        for s in [
            format!(" {TP}"),
            format!("\t{TP}"),
            format!("{TP} "),
            format!("{TP}\t"),
            format!("\t {TP} \t"),
        ] {
            assert_eq!(parse(&s), Some((TRACE, SPAN, 1)), "{s:?}");
        }
    }

    #[test]
    fn traceparent_version_00_takes_nothing_after_the_flags() {
        assert_eq!(parse(&format!("{TP}.")), None);
        assert_eq!(parse(&format!("{TP}-what-the-future-will-be-like")), None);
    }

    #[test]
    fn traceparent_future_versions_are_read_by_their_first_four_fields() {
        let future = TP.replacen("00", "cc", 1);
        assert_eq!(parse(&future), Some((TRACE, SPAN, 1)));
        assert_eq!(
            parse(&format!("{future}-what-the-future-will-be-like")),
            Some((TRACE, SPAN, 1))
        );
        assert_eq!(
            parse(&format!("{future}.what-the-future-will-be-like")),
            None
        );
        assert_eq!(parse(&format!("{future}-")), Some((TRACE, SPAN, 1)));
    }

    #[test]
    fn traceparent_version_ff_is_invalid() {
        assert_eq!(parse(&TP.replacen("00", "ff", 1)), None);
    }

    #[test]
    fn traceparent_invalid_cases() {
        for s in [
            // version: illegal characters, too long, too short
            ".0-12345678901234567890123456789012-1234567890123456-01",
            "0.-12345678901234567890123456789012-1234567890123456-01",
            "000-12345678901234567890123456789012-1234567890123456-01",
            "0000-12345678901234567890123456789012-1234567890123456-01",
            "0-12345678901234567890123456789012-1234567890123456-01",
            // trace id: all zero, illegal characters, too long, too short
            "00-00000000000000000000000000000000-1234567890123456-01",
            "00-.2345678901234567890123456789012-1234567890123456-01",
            "00-1234567890123456789012345678901.-1234567890123456-01",
            "00-123456789012345678901234567890123-1234567890123456-01",
            "00-1234567890123456789012345678901-1234567890123456-01",
            // parent id: all zero, illegal characters, too long, too short
            "00-12345678901234567890123456789012-0000000000000000-01",
            "00-12345678901234567890123456789012-.234567890123456-01",
            "00-12345678901234567890123456789012-123456789012345.-01",
            "00-12345678901234567890123456789012-12345678901234567-01",
            "00-12345678901234567890123456789012-123456789012345-01",
            // flags: illegal characters, too long, too short
            "00-12345678901234567890123456789012-1234567890123456-.0",
            "00-12345678901234567890123456789012-1234567890123456-0.",
            "00-12345678901234567890123456789012-1234567890123456-001",
            "00-12345678901234567890123456789012-1234567890123456-1",
            // uppercase hex (HEXDIGLC)
            "00-1234567890123456789012345678901A-1234567890123456-01",
            "00-12345678901234567890123456789012-123456789012345A-01",
            "00-12345678901234567890123456789012-1234567890123456-0A",
            "0A-12345678901234567890123456789012-1234567890123456-01",
            // empty, whitespace only, other delimiters
            "",
            " \t ",
            "00_12345678901234567890123456789012_1234567890123456_01",
            "00-12345678901234567890123456789012-1234567890123456-01\n",
        ] {
            assert_eq!(parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn traceparent_reserved_flags_are_cleared() {
        assert_eq!(parse(&TP.replace("-01", "-ff")), Some((TRACE, SPAN, 0x03)));
        assert_eq!(parse(&TP.replace("-01", "-04")), Some((TRACE, SPAN, 0x00)));
        assert_eq!(parse(&TP.replace("-01", "-02")), Some((TRACE, SPAN, 0x02)));
    }

    #[test]
    fn traceparent_formats_as_version_00() {
        let tp = TraceParent {
            trace_id: 1,
            span_id: 2,
        };
        assert_eq!(
            format_traceparent(tp, SAMPLED),
            "00-00000000000000000000000000000001-0000000000000002-01"
        );
    }

    // === tracestate: the W3C test suite's cases ===

    #[test]
    fn tracestate_members_are_kept_in_order() {
        assert_eq!(state("foo=1,bar=2").as_deref(), Some("foo=1,bar=2"));
        // Several header fields, combined with `,`.
        assert_eq!(
            state("foo=1,bar=2,rojo=1,congo=2,baz=3").as_deref(),
            Some("foo=1,bar=2,rojo=1,congo=2,baz=3")
        );
    }

    #[test]
    fn tracestate_empty_is_none_and_empty_members_are_dropped() {
        assert_eq!(state(""), None);
        assert_eq!(state(" , \t,"), None);
        assert_eq!(state("foo=1,").as_deref(), Some("foo=1"));
        assert_eq!(state(",foo=1").as_deref(), Some("foo=1"));
    }

    #[test]
    fn tracestate_ows_is_ignored_around_members() {
        for s in [
            "foo=1 \t , \t bar=2, \t baz=3",
            "foo=1\t \t,\t \tbar=2,\t \tbaz=3",
        ] {
            assert_eq!(state(s).as_deref(), Some("foo=1,bar=2,baz=3"), "{s:?}");
        }
        for s in [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"] {
            assert_eq!(state(s).as_deref(), Some("foo=1"), "{s:?}");
        }
        // Leading spaces are part of a value.
        assert_eq!(state("foo= 1").as_deref(), Some("foo= 1"));
    }

    #[test]
    fn tracestate_duplicate_keys_keep_the_left_most() {
        assert_eq!(state("foo=1,foo=1").as_deref(), Some("foo=1"));
        assert_eq!(state("foo=1,foo=2").as_deref(), Some("foo=1"));
        assert_eq!(state("foo=1,bar=2,foo=3").as_deref(), Some("foo=1,bar=2"));
    }

    #[test]
    fn tracestate_all_allowed_characters() {
        let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
        let value: String = (0x20u8..=0x7e)
            .filter(|&c| c != b',' && c != b'=')
            .map(char::from)
            .collect();
        let member = format!("{key}={value}");
        assert_eq!(state(&member), Some(member.clone()));
        let member = format!("{key}@a-z0-9_-*/={value}");
        assert_eq!(state(&member), Some(member.clone()));
    }

    #[test]
    fn tracestate_malformed_members_drop_the_header() {
        for s in [
            "foo =1",
            "FOO=1",
            "foo.bar=1",
            "@foo=1,bar=2",
            "foo=bar=baz",
            "foo=,bar=3",
            "foo",
            "=1",
            "foo=1\t2",
            "foo=\u{e9}",
            "foo=1,bar",
        ] {
            assert_eq!(state(s), None, "{s:?}");
        }
    }

    #[test]
    fn tracestate_keys_may_hold_at_signs() {
        assert_eq!(state("foo@=1,bar=2").as_deref(), Some("foo@=1,bar=2"));
        assert_eq!(
            state("foo@@bar=1,bar=2").as_deref(),
            Some("foo@@bar=1,bar=2")
        );
        assert_eq!(
            state("foo@bar@baz=1,bar=2").as_deref(),
            Some("foo@bar@baz=1,bar=2")
        );
    }

    #[test]
    fn tracestate_has_at_most_32_members() {
        let members = |n: usize| {
            (1..=n)
                .map(|i| format!("bar{i:02}={i:02}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(state(&members(32)), Some(members(32)));
        assert_eq!(state(&members(33)), None);
    }

    #[test]
    fn tracestate_key_length_limit() {
        for key in [
            "z".repeat(256),
            format!("{}@{}", "t".repeat(241), "v".repeat(14)),
            format!("{}@v", "t".repeat(242)),
            format!("t@{}", "v".repeat(15)),
        ] {
            // As the suite sends them: beside a short member (and within
            // 512 characters).
            let s = format!("foo=1,{key}=1");
            assert_eq!(state(&s), Some(s.clone()), "{key}");
        }
        assert_eq!(state(&format!("foo=1,{}=1", "z".repeat(257))), None);
    }

    #[test]
    fn tracestate_value_length_limit() {
        let s = format!("foo={}", "v".repeat(256));
        assert_eq!(state(&s), Some(s.clone()));
        assert_eq!(state(&format!("foo={}", "v".repeat(257))), None);
    }

    #[test]
    fn tracestate_longer_than_512_loses_long_members_first_then_the_right_most() {
        let long = format!("long={}", "x".repeat(200));
        let short: Vec<String> = (0..40)
            .map(|i| format!("k{i:02}={}", "y".repeat(10)))
            .collect();
        // 6 short members (84 chars), a long one (205) and 6 more short
        // ones: 1 + 84 + ... = 379 characters, kept whole.
        let fits = [&short[..6], std::slice::from_ref(&long), &short[6..12]]
            .concat()
            .join(",");
        assert!(fits.len() <= 512);
        assert_eq!(state(&fits), Some(fits.clone()));
        // 20 short members and the long one: 20 * 15 - 1 + 206 = 505.
        let s = [std::slice::from_ref(&long), &short[..20]]
            .concat()
            .join(",");
        assert_eq!(state(&s), Some(s.clone()));
        // 30 short members and the long one: the long one goes, 30 stay.
        let s = [&short[..15], std::slice::from_ref(&long), &short[15..30]]
            .concat()
            .join(",");
        assert_eq!(state(&s), Some(short[..30].join(",")));
        // 32 members of 16 characters (543 with the commas): the right-most
        // go until 512 fit: 30 * 17 - 1 = 509.
        let short16: Vec<String> = (0..32)
            .map(|i| format!("k{i:02}={}", "z".repeat(12)))
            .collect();
        assert_eq!(state(&short16.join(",")), Some(short16[..30].join(",")));
    }

    #[test]
    fn remote_parent_from_headers() {
        let remote = RemoteParent::from_headers(TP.as_bytes(), Some(b"congo=t61rcWkgMzE")).unwrap();
        assert_eq!(
            remote.trace_parent,
            TraceParent {
                trace_id: TRACE,
                span_id: SPAN
            }
        );
        assert_eq!(remote.trace_flags, SAMPLED);
        assert_eq!(remote.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(remote.traceparent(), TP);
        // A malformed tracestate does not invalidate the traceparent.
        let remote = RemoteParent::from_headers(TP.as_bytes(), Some(b"FOO=1")).unwrap();
        assert_eq!(remote.tracestate, None);
        // An invalid traceparent leaves the tracestate unread.
        assert_eq!(RemoteParent::from_headers(b"00-00", Some(b"foo=1")), None);
    }

    // === properties ===

    /// A `traceparent` built by hand, without `format_traceparent`.
    fn by_hand(version: u8, trace_id: u128, span_id: u64, flags: u8) -> String {
        let hex = |n: u128, digits: usize| {
            (0..digits)
                .rev()
                .map(|i| char::from(b"0123456789abcdef"[(n >> (4 * i)) as usize & 0xf]))
                .collect::<String>()
        };
        format!(
            "{}-{}-{}-{}",
            hex(version.into(), 2),
            hex(trace_id, 32),
            hex(span_id.into(), 16),
            hex(flags.into(), 2)
        )
    }

    fn member() -> impl Strategy<Value = String> {
        (
            "[a-z0-9][a-z0-9_*/@-]{0,20}",
            "[ -+\\--<>-~]{0,20}[!-+\\--<>-~]",
        )
            .prop_map(|(k, v)| format!("{k}={v}"))
    }

    /// Property tests: natively only (`make test`); `make proofs` skips them
    /// under miri, where each takes minutes and the parsers hold no unsafe
    /// code nor any concurrency.
    mod props {
        use super::*;

        proptest! {
            #[test]
            fn parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
                let _ = parse_traceparent(&bytes);
                let _ = parse_tracestate(&bytes);
                let _ = RemoteParent::from_headers(&bytes, Some(&bytes));
            }

            #[test]
            fn near_traceparents_never_panic(
                s in "[ \t]{0,2}[0-9a-fA-F.-]{2}-[0-9a-f-]{30,34}-[0-9a-f-]{14,18}-[0-9a-f.-]{1,3}[-.a-z]{0,5}[ \t]{0,2}"
            ) {
                let _ = parse_traceparent(s.as_bytes());
            }

            #[test]
            fn traceparent_round_trips(trace_id in 1..=u128::MAX, span_id in 1..=u64::MAX, flags: u8) {
                let tp = TraceParent { trace_id, span_id };
                let header = format_traceparent(tp, flags);
                prop_assert_eq!(&header, &by_hand(0, trace_id, span_id, flags));
                prop_assert_eq!(parse_traceparent(header.as_bytes()), Some((tp, flags & KNOWN_FLAGS)));
            }

            #[test]
            fn traceparent_is_valid_exactly_as_the_grammar_says(
                version: u8, trace_id: u128, span_id: u64, flags: u8,
                tail in prop::option::of("[-.a-z0-9]{0,8}"),
            ) {
                let mut header = by_hand(version, trace_id, span_id, flags);
                if let Some(tail) = &tail {
                    header.push_str(tail);
                }
                let tail_ok = match tail.as_deref() {
                    None | Some("") => true,
                    Some(t) => version != 0 && t.starts_with('-'),
                };
                let valid = version != 0xff && trace_id != 0 && span_id != 0 && tail_ok;
                let expected = valid.then_some((TraceParent { trace_id, span_id }, flags & KNOWN_FLAGS));
                prop_assert_eq!(parse_traceparent(header.as_bytes()), expected);
            }

            #[test]
            fn traceparent_with_any_byte_changed_is_valid_only_if_still_well_formed(
                trace_id in 1..=u128::MAX, span_id in 1..=u64::MAX, flags: u8,
                at in 0..55usize, byte: u8,
            ) {
                let mut header = by_hand(0, trace_id, span_id, flags).into_bytes();
                let dash = matches!(at, 2 | 35 | 52);
                header[at] = byte;
                let parsed = parse_traceparent(&header);
                let hexdig = byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte);
                if (dash && byte != b'-') || (!dash && !hexdig) {
                    // Whitespace at either end is trimmed, which leaves 54
                    // characters: invalid too.
                    prop_assert_eq!(parsed, None);
                } else if at >= 3 {
                    let s = std::str::from_utf8(&header).unwrap();
                    let t = u128::from_str_radix(&s[3..35], 16).unwrap();
                    let p = u64::from_str_radix(&s[36..52], 16).unwrap();
                    let f = u8::from_str_radix(&s[53..55], 16).unwrap();
                    let expected = (t != 0 && p != 0).then_some((TraceParent { trace_id: t, span_id: p }, f & KNOWN_FLAGS));
                    prop_assert_eq!(parsed, expected);
                } else {
                    let v = u8::from_str_radix(std::str::from_utf8(&header[..2]).unwrap(), 16).unwrap();
                    prop_assert_eq!(parsed.is_some(), v != 0xff);
                }
            }

            #[test]
            fn tracestate_of_valid_members_keeps_them(members in prop::collection::vec(member(), 1..=32)) {
                let header = members.join(" , ");
                let parsed = parse_tracestate(header.as_bytes());
                let mut seen = Vec::new();
                for m in &members {
                    let key = m.split('=').next().unwrap();
                    if !seen.iter().any(|s: &String| s.split('=').next().unwrap() == key) {
                        seen.push(m.clone());
                    }
                }
                let joined = seen.join(",");
                if joined.len() <= MAX_TRACESTATE_LEN {
                    prop_assert_eq!(parsed, Some(joined));
                } else {
                    // No member is longer than 128 characters: the right-most
                    // go, until what is left fits.
                    let parsed = parsed.unwrap();
                    let kept = parsed.split(',').count();
                    prop_assert_eq!(&parsed, &seen[..kept].join(","));
                    prop_assert!(parsed.len() <= MAX_TRACESTATE_LEN);
                    prop_assert!(seen[..=kept].join(",").len() > MAX_TRACESTATE_LEN);
                }
            }

            #[test]
            fn tracestate_normalized_parses_to_itself(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
                if let Some(s) = parse_tracestate(&bytes) {
                    prop_assert!(!s.is_empty() && s.len() <= MAX_TRACESTATE_LEN);
                    prop_assert!(s.split(',').count() <= MAX_TRACESTATE_MEMBERS);
                    prop_assert_eq!(parse_tracestate(s.as_bytes()), Some(s.clone()));
                }
            }

            #[test]
            fn tracestate_with_a_malformed_member_is_dropped(
                members in prop::collection::vec(member(), 0..8),
                at in 0..8usize,
                bad in prop_oneof![
                    "[A-Z][a-z]{0,5}=1",
                    "[a-z]{1,5}",
                    "[a-z]{1,5}=",
                    "[a-z]{1,5}=[a-z]*=[a-z]*",
                    "[a-z]{1,5}=[a-z]*[\t\n\u{80}-\u{10ffff}][a-z]+",
                    "[_*/@-][a-z]{0,5}=1",
                ],
            ) {
                let mut members = members;
                members.insert(at.min(members.len()), bad);
                prop_assert_eq!(parse_tracestate(members.join(",").as_bytes()), None);
            }
        }
    }
}
