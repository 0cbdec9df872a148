//! Span and event field values.

use std::fmt;

/// A recorded field value.
///
/// The bindings map Python's `None`, `bool`, `int`, `float` and `str` onto
/// these exactly (an `int` outside the 64-bit ranges keeps its decimal digits
/// in [`Value::BigInt`]); any other Python value is recorded as its `repr()`
/// in [`Value::Str`].
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
    /// An integer outside both 64-bit ranges, as its decimal digits.
    BigInt(Box<str>),
    /// A float.
    F64(f64),
    /// A string.
    Str(Box<str>),
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
