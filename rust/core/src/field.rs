//! Span and event field values.

use std::fmt;

/// A recorded field value.
///
/// R10: the bindings map Python's `None`, `bool`, `int` (any size), `float`
/// and `str` (any, lone surrogates included) onto these exactly, and lists
/// and tuples whose items are all scalars of one of those types onto
/// [`Value::Array`]; any other Python value is recorded as its `repr()` in
/// [`Value::Str`] (or, if that raises, a placeholder naming its type).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value (Python `None`).
    None,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer above `i64::MAX`.
    U64(u64),
    /// An integer outside both 64-bit ranges: its decimal digits, or, past
    /// what Python converts to decimal (4,300 digits by default), `0x` and
    /// its hexadecimal digits (after the `-` of a negative number).
    BigInt(Box<str>),
    /// A float.
    F64(f64),
    /// A string.
    Str(Box<str>),
    /// A string holding lone surrogates (as `os.fsdecode` makes of bytes
    /// that do not decode), which Rust strings cannot hold: its UTF-8 with
    /// each surrogate encoded as if it were a character (Python's
    /// `"surrogatepass"`).
    Surrogates(Box<[u8]>),
    /// A list (`tuple: false`) or tuple of scalars of one type.
    Array {
        /// Whether it was a tuple.
        tuple: bool,
        /// The items, each a scalar of the same variant.
        items: Box<[Value]>,
    },
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::I64(n) => write!(f, "{n}"),
            Value::U64(n) => write!(f, "{n}"),
            Value::BigInt(s) | Value::Str(s) => f.write_str(s),
            Value::F64(x) => write!(f, "{x}"),
            Value::Surrogates(bytes) => f.write_str(&String::from_utf8_lossy(bytes)),
            Value::Array { items, .. } => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A span's fields: names in the order they were first given, each with its
/// latest value.
pub type Fields = Vec<(Box<str>, Value)>;

/// Sets `name` to `value` in `fields`, replacing an earlier value of the same
/// name in place.
pub(crate) fn upsert(fields: &mut Fields, name: &str, value: Value) {
    if let Some(slot) = fields.iter_mut().find(|(n, _)| &**n == name) {
        slot.1 = value;
    } else {
        fields.push((name.into(), value));
    }
}

/// A `tracing_core` visitor that collects field values.
pub(crate) struct Collector<'a>(pub(crate) &'a mut Fields);

impl tracing_core::field::Visit for Collector<'_> {
    fn record_f64(&mut self, field: &tracing_core::Field, value: f64) {
        upsert(self.0, field.name(), Value::F64(value));
    }
    fn record_i64(&mut self, field: &tracing_core::Field, value: i64) {
        upsert(self.0, field.name(), Value::I64(value));
    }
    fn record_u64(&mut self, field: &tracing_core::Field, value: u64) {
        let v = i64::try_from(value).map_or(Value::U64(value), Value::I64);
        upsert(self.0, field.name(), v);
    }
    fn record_bool(&mut self, field: &tracing_core::Field, value: bool) {
        upsert(self.0, field.name(), Value::Bool(value));
    }
    fn record_str(&mut self, field: &tracing_core::Field, value: &str) {
        upsert(self.0, field.name(), Value::Str(value.into()));
    }
    fn record_debug(&mut self, field: &tracing_core::Field, value: &dyn fmt::Debug) {
        upsert(
            self.0,
            field.name(),
            Value::Str(format!("{value:?}").into()),
        );
    }
}
