//! Conversions between Python values and the core's: IDs, levels, field
//! values. (A `parent=` argument, which may be a handle, is read by
//! `args`.)

use pykregistry_core::{Fields, Id, Level, Value};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::InvalidSpanIdError;

/// The sentinel for "the current span of the calling context" as a parent.
#[pyclass(name = "_Current", module = "pykregistry", frozen)]
pub(crate) struct CurrentParent;

#[pymethods]
#[allow(clippy::unused_self)] // Python methods take self
impl CurrentParent {
    fn __repr__(&self) -> &'static str {
        "CURRENT"
    }

    fn __reduce__(&self) -> &'static str {
        "CURRENT"
    }
}

static CURRENT: PyOnceLock<Py<CurrentParent>> = PyOnceLock::new();

/// The `CURRENT` singleton.
pub(crate) fn current_sentinel(py: Python<'_>) -> PyResult<&Py<CurrentParent>> {
    CURRENT.get_or_try_init(py, || Py::new(py, CurrentParent))
}

/// A span ID from a Python int: `TypeError` for non-ints (and bools),
/// `InvalidSpanIdError` (a `ValueError`) outside `[1, 2**64)`.
pub(crate) fn span_id(obj: &Bound<'_, PyAny>) -> PyResult<Id> {
    match lookup_id(obj)? {
        Some(id) => Ok(id),
        None => Err(InvalidSpanIdError::new_err(format!(
            "{} is not a span ID: span IDs are ints in [1, 2**64)",
            obj.repr()?
        ))),
    }
}

/// Like [`span_id`], but `None` for ints that can never be IDs, for lookups
/// that answer "not live" to any int.
pub(crate) fn lookup_id(obj: &Bound<'_, PyAny>) -> PyResult<Option<Id>> {
    if !obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "span IDs are ints, not {}",
            type_name(obj)
        )));
    }
    Ok(obj.extract::<u64>().ok().and_then(|n| Id::from_u64(n).ok()))
}

/// A level from a `Level`, an int 1..=5 or a case-insensitive name.
pub(crate) fn level(obj: &Bound<'_, PyAny>) -> PyResult<Level> {
    // The common cases by identity: the `Level` members, and the lower-case
    // names as literals in source (interned, so the same objects).
    let table = levels(obj.py())?;
    for (i, level) in Level::ALL.into_iter().enumerate() {
        if table.members[i].is(obj) || table.names[i].is(obj) {
            return Ok(level);
        }
    }
    if let Ok(s) = obj.cast::<PyString>() {
        let name = s.to_str()?;
        return Level::from_name(name).ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "unknown level {name:?}: expected one of trace, debug, info, warn, error"
            ))
        });
    }
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        // 1-5: `Level` values; 10, 20, ... 50: stdlib `logging` levels.
        let n = obj.extract::<i64>().ok();
        return n
            .and_then(|n| u8::try_from(n).ok().and_then(Level::from_u8))
            .or_else(|| n.and_then(Level::from_logging))
            .ok_or_else(|| {
                pyo3::exceptions::PyValueError::new_err(format!(
                    "level {} is out of range: Level values are 1 (ERROR) to 5 (TRACE), \
                     stdlib logging levels 10 (DEBUG) to 50 (CRITICAL)",
                    obj.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            });
    }
    Err(PyTypeError::new_err(format!(
        "a level is a pykregistry.Level or its name, not {}",
        type_name(obj)
    )))
}

/// The level `obj` is by identity (a `Level` member, or a lower-case name
/// written as a literal), without raising or building anything: `None` for
/// anything else, or before the table is built.
pub(crate) fn level_by_identity(obj: Borrowed<'_, '_, PyAny>) -> Option<Level> {
    let table = LEVELS.get(obj.py())?;
    Level::ALL
        .into_iter()
        .enumerate()
        .find(|&(i, _)| table.members[i].is(&*obj) || table.names[i].is(&*obj))
        .map(|(_, level)| level)
}

/// The Python objects that stand for each level, in `Level::ALL` order.
struct LevelTable {
    /// The `pykregistry.Level` members.
    members: [Py<PyAny>; 5],
    /// The interned lower-case names.
    names: [Py<PyString>; 5],
}

static LEVELS: PyOnceLock<LevelTable> = PyOnceLock::new();

fn levels(py: Python<'_>) -> PyResult<&LevelTable> {
    LEVELS.get_or_try_init(py, || -> PyResult<_> {
        let cls = py.import("pykregistry.level")?.getattr("Level")?;
        let mut members = Vec::with_capacity(5);
        for level in Level::ALL {
            members.push(cls.call1((level as u8,))?.unbind());
        }
        Ok(LevelTable {
            members: members.try_into().expect("five levels"),
            names: Level::ALL
                .map(|l| PyString::intern(py, &l.as_str().to_ascii_lowercase()).unbind()),
        })
    })
}

/// The `pykregistry.Level` member for `level`.
pub(crate) fn level_to_py(py: Python<'_>, level: Level) -> PyResult<Bound<'_, PyAny>> {
    Ok(levels(py)?.members[level as usize - 1].bind(py).clone())
}

/// R10: a field value. `None`, `bool`, `int` (any size), `float` and `str`
/// (lone surrogates included) exactly; a list or tuple of scalars of one of
/// those types as an array; anything else as its `repr()`, or, if that
/// raises, a placeholder naming its type. Never raises (R15: data never
/// raises).
pub(crate) fn value(obj: &Bound<'_, PyAny>) -> Value {
    if let Some(v) = scalar(obj) {
        return v;
    }
    let tuple = obj.is_exact_instance_of::<PyTuple>();
    if tuple || obj.is_exact_instance_of::<PyList>() {
        if let Some(array) = array(obj, tuple) {
            return array;
        }
    }
    match obj.repr() {
        Ok(text) => string(&text),
        Err(_) => Value::Str(format!("<unrepresentable {}>", type_name(obj)).into()),
    }
}

/// A scalar value, or `None` if `obj` is not one.
fn scalar(obj: &Bound<'_, PyAny>) -> Option<Value> {
    if obj.is_none() {
        Some(Value::None)
    } else if let Ok(b) = obj.cast::<PyBool>() {
        Some(Value::Bool(b.is_true()))
    } else if obj.is_instance_of::<PyInt>() {
        Some(if let Ok(n) = obj.extract::<i64>() {
            Value::I64(n)
        } else if let Ok(n) = obj.extract::<u64>() {
            Value::U64(n)
        } else {
            Value::BigInt(big_int(obj).into())
        })
    } else if let Ok(x) = obj.cast::<PyFloat>() {
        Some(Value::F64(x.value()))
    } else if let Ok(s) = obj.cast::<PyString>() {
        Some(string(s))
    } else {
        None
    }
}

/// A string's value: text, or its surrogates kept (see `Value::Surrogates`).
fn string(s: &Bound<'_, PyString>) -> Value {
    if let Ok(text) = s.to_str() {
        return Value::Str(text.into());
    }
    let py = s.py();
    // SAFETY: `s` is a str; the result is a new reference or NULL with an
    // exception set (which `from_owned_ptr_or_err` takes).
    let bytes = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyUnicode_AsEncodedString(
                s.as_ptr(),
                c"utf-8".as_ptr(),
                c"surrogatepass".as_ptr(),
            ),
        )
    };
    match bytes.ok().and_then(|b| b.cast_into::<PyBytes>().ok()) {
        Some(b) => Value::Surrogates(b.as_bytes().into()),
        None => Value::Str(s.to_string_lossy().into()),
    }
}

/// An int's digits: decimal, or past Python's limit on decimal conversion
/// (`sys.set_int_max_str_digits`), `0x` and hexadecimal, which has none.
fn big_int(obj: &Bound<'_, PyAny>) -> String {
    let py = obj.py();
    let int = py.get_type::<PyInt>();
    if let Ok(digits) = int
        .getattr(pyo3::intern!(py, "__repr__"))
        .and_then(|r| r.call1((obj,)))
        .and_then(|d| d.extract::<String>())
    {
        return digits;
    }
    let hex = int
        .getattr(pyo3::intern!(py, "__format__"))
        .and_then(|f| f.call1((obj, "x")))
        .and_then(|d| d.extract::<String>())
        .unwrap_or_default();
    match hex.strip_prefix('-') {
        Some(magnitude) => format!("-0x{magnitude}"),
        None => format!("0x{hex}"),
    }
}

/// A list or tuple as an array, if its items are scalars of one type.
fn array(obj: &Bound<'_, PyAny>, tuple: bool) -> Option<Value> {
    let items: Vec<Value> = obj
        .try_iter()
        .ok()?
        .map(|item| item.ok().and_then(|i| scalar(&i)))
        .collect::<Option<_>>()?;
    let kind = |v: &Value| match v {
        Value::None => 0,
        Value::Bool(_) => 1,
        Value::I64(_) | Value::U64(_) | Value::BigInt(_) => 2,
        Value::F64(_) => 3,
        Value::Str(_) | Value::Surrogates(_) => 4,
        Value::Array { .. } => 5,
    };
    let first = items.first().map(kind);
    if items.iter().any(|v| Some(kind(v)) != first) || first == Some(0) {
        return None;
    }
    Some(Value::Array {
        tuple,
        items: items.into(),
    })
}

/// A field value back in Python.
pub(crate) fn value_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::None => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::I64(n) => n.into_pyobject(py)?.into_any(),
        Value::U64(n) => n.into_pyobject(py)?.into_any(),
        // Base 0 reads the `0x` form too (hexadecimal has no length limit).
        Value::BigInt(s) => py.get_type::<PyInt>().call1((&**s, 0))?,
        Value::F64(x) => PyFloat::new(py, *x).into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::Surrogates(bytes) => {
            // Allocations never exceed `isize::MAX` bytes.
            let len = pyo3::ffi::Py_ssize_t::try_from(bytes.len())
                .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("string too long"))?;
            // SAFETY: a pointer and length of live bytes; the result is a new
            // reference or NULL with an exception set.
            unsafe {
                Bound::from_owned_ptr_or_err(
                    py,
                    pyo3::ffi::PyUnicode_DecodeUTF8(
                        bytes.as_ptr().cast(),
                        len,
                        c"surrogatepass".as_ptr(),
                    ),
                )?
            }
        }
        Value::Array { tuple, items } => {
            let items = items
                .iter()
                .map(|v| value_to_py(py, v))
                .collect::<PyResult<Vec<_>>>()?;
            if *tuple {
                PyTuple::new(py, items)?.into_any()
            } else {
                PyList::new(py, items)?.into_any()
            }
        }
    })
}

/// Fields as a dict.
pub(crate) fn fields_to_py<'py>(py: Python<'py>, fields: &Fields) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, value) in fields {
        dict.set_item(&**name, value_to_py(py, value)?)?;
    }
    Ok(dict)
}

/// Converts `(name, value)` pairs; fails before anything is recorded.
pub(crate) fn fields_from_items<'py>(
    items: impl IntoIterator<Item = (Bound<'py, PyAny>, Bound<'py, PyAny>)>,
) -> PyResult<Fields> {
    items
        .into_iter()
        .map(|(k, v)| {
            let name = k.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!("field names are str, not {}", type_name(&k)))
            })?;
            Ok((name.to_str()?.into(), value(&v)))
        })
        .collect()
}

/// The name of `obj`'s type, for error messages.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

/// `s` quoted as Python's `repr()` quotes it, for constructor-style reprs.
pub(crate) fn quote(py: Python<'_>, s: &str) -> String {
    PyString::new(py, s)
        .repr()
        .map_or_else(|_| format!("{s:?}"), |r| r.to_string())
}
