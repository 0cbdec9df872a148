//! JSON as the file formats write it ([`json_lines`](crate::json_lines),
//! [`chrome`](crate::chrome)): strings, ids as hex, and field values that
//! JSON has no exact form for.

use std::io::Write as _;

use pykregistry_core::{Fields, Value};

/// A JSON string.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A JSON string, or `null`.
pub fn push_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A number.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    let _ = write!(out, "{n}");
}

/// A number, or `null`.
pub fn push_opt_u64(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => push_u64(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

/// An id (R13) as a JSON string of `digits` lowercase hex digits, or `null`.
pub fn push_hex(out: &mut Vec<u8>, id: Option<u128>, digits: usize) {
    match id {
        Some(id) => {
            let _ = write!(out, "\"{id:0digits$x}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// Field values as a JSON object: integers of any size as numbers (those
/// written in hexadecimal, past Python's decimal limit, as `"0x..."`
/// strings), floats that JSON cannot write (NaN, infinities) as `null`,
/// lone surrogates as `\uXXXX` escapes, arrays as arrays.
pub fn push_fields(out: &mut Vec<u8>, fields: &Fields) {
    out.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, name);
        out.push(b':');
        push_value(out, value);
    }
    out.push(b'}');
}

/// One field value (see [`push_fields`]).
pub fn push_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::None => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::I64(n) => {
            let _ = write!(out, "{n}");
        }
        Value::U64(n) => push_u64(out, *n),
        Value::BigInt(digits) if digits.contains('x') => push_str(out, digits),
        Value::BigInt(digits) => out.extend_from_slice(digits.as_bytes()),
        Value::F64(x) => {
            let _ = serde_json::to_writer(&mut *out, x);
        }
        Value::Str(s) => push_str(out, s),
        Value::Surrogates(bytes) => push_surrogates(out, bytes),
        Value::Array { items, .. } => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_value(out, item);
            }
            out.push(b']');
        }
    }
}

/// A string with lone surrogates (UTF-8 with surrogates encoded as if they
/// were characters) as a JSON string, each surrogate as a `\uXXXX` escape.
fn push_surrogates(out: &mut Vec<u8>, mut bytes: &[u8]) {
    // Each valid stretch escaped as JSON (less its quotes), each surrogate
    // (three bytes ED xx xx) as its escape.
    let push_text = |out: &mut Vec<u8>, text: &str| {
        let quoted = serde_json::to_string(text).unwrap_or_default();
        out.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
    };
    out.push(b'"');
    while !bytes.is_empty() {
        match std::str::from_utf8(bytes) {
            Ok(rest) => {
                push_text(out, rest);
                break;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                push_text(out, std::str::from_utf8(valid).unwrap_or_default());
                if let [a @ 0xED, b, c, ..] = *rest {
                    let cp = (u32::from(a & 0x0F) << 12)
                        | (u32::from(b & 0x3F) << 6)
                        | u32::from(c & 0x3F);
                    let _ = write!(out, "\\u{cp:04x}");
                    bytes = &rest[3..];
                } else {
                    out.extend_from_slice("\\ufffd".as_bytes());
                    bytes = &rest[1..];
                }
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(value: Value) -> String {
        let mut out = Vec::new();
        push_value(&mut out, &value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_json_has_no_exact_form_for() {
        assert_eq!(json(Value::F64(f64::NAN)), "null");
        assert_eq!(json(Value::F64(f64::INFINITY)), "null");
        assert_eq!(
            json(Value::BigInt("123456789012345678901234567890".into())),
            "123456789012345678901234567890"
        );
        assert_eq!(json(Value::BigInt("0x1f".into())), "\"0x1f\"");
        // "a" then the lone surrogate U+D800 (ED A0 80) then "b".
        assert_eq!(
            json(Value::Surrogates(b"a\xed\xa0\x80b".to_vec().into())),
            "\"a\\ud800b\""
        );
        assert_eq!(json(Value::Str("quote\"".into())), "\"quote\\\"\"");
    }

    #[test]
    fn ids_are_fixed_width_lowercase_hex() {
        let mut out = Vec::new();
        push_hex(&mut out, Some(0xAB), 16);
        push_hex(&mut out, None, 16);
        assert_eq!(out, b"\"00000000000000ab\"null");
    }
}
