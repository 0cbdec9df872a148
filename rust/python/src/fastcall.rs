//! Methods that take `**fields`, called through the `vectorcall` protocol
//! (`METH_FASTCALL | METH_KEYWORDS`).
//!
//! pyo3 calls a method whose signature has `**kwargs` with a tuple and a
//! dict built for each call (`METH_VARARGS | METH_KEYWORDS`), and matches
//! keywords by walking the dict. On `reg.span("x", level="trace")` that is
//! most of what a filtered-out span costs. Here the caller's own arrays are
//! read in place: positional values, keyword values, and the tuple of
//! keyword names (the interned names of the source, compared by identity
//! first). Each method is a [`FastMethod`]; [`install`] puts it in its class
//! as a method descriptor, as `#[pymethods]` would, with the same
//! `__text_signature__`.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::impl_::trampoline::{fastcall_cfunction_with_keywords, MethodDef};
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use pyo3::PyClass;

/// The arguments of one call, borrowed from the caller for its duration.
pub(crate) struct Args<'a, 'py> {
    py: Python<'py>,
    /// The method's name, for error messages.
    method: &'static str,
    /// Positional values, then keyword values.
    values: &'a [*mut ffi::PyObject],
    nargs: usize,
    kwnames: Option<Borrowed<'a, 'py, PyTuple>>,
}

/// One keyword argument: its name and value.
pub(crate) type Keyword<'a, 'py> = (Borrowed<'a, 'py, PyString>, Borrowed<'a, 'py, PyAny>);

impl<'a, 'py> Args<'a, 'py> {
    fn value(&self, i: usize) -> Borrowed<'a, 'py, PyAny> {
        // SAFETY: the caller keeps every argument alive during the call.
        unsafe { Borrowed::from_ptr(self.py, self.values[i]) }
    }

    /// Exactly `N` positional arguments, named `names` in the message when
    /// the count is wrong.
    pub(crate) fn positional<const N: usize>(
        &self,
        names: [&str; N],
    ) -> PyResult<[Borrowed<'a, 'py, PyAny>; N]> {
        if self.nargs != N {
            return Err(PyTypeError::new_err(match N {
                0 => format!(
                    "{}() takes no positional arguments ({} given)",
                    self.method, self.nargs
                ),
                _ => format!(
                    "{}() takes {N} positional argument{} ({}) but {} {} given",
                    self.method,
                    if N == 1 { "" } else { "s" },
                    names.join(", "),
                    self.nargs,
                    if self.nargs == 1 { "was" } else { "were" }
                ),
            }));
        }
        Ok(std::array::from_fn(|i| self.value(i)))
    }

    /// The positional arguments, however many were given.
    pub(crate) fn positional_values(
        &self,
    ) -> impl ExactSizeIterator<Item = Borrowed<'a, 'py, PyAny>> + '_ {
        (0..self.nargs).map(|i| self.value(i))
    }

    /// The keyword arguments, in the caller's order.
    pub(crate) fn keywords(&self) -> impl Iterator<Item = Keyword<'a, 'py>> + '_ {
        self.kwnames.into_iter().flat_map(move |names| {
            (0..names.len()).map(move |i| {
                // SAFETY: `i` is in range, and CPython passes keyword names
                // as a tuple of `str` that outlives the call.
                #[allow(clippy::cast_possible_wrap)] // i < len(names) <= isize::MAX
                let name = unsafe {
                    let item = ffi::PyTuple_GET_ITEM(names.as_ptr(), i as ffi::Py_ssize_t);
                    Borrowed::from_ptr(self.py, item).cast_unchecked()
                };
                (name, self.value(self.nargs + i))
            })
        })
    }

    /// The method's name, for error messages.
    pub(crate) fn method(&self) -> &'static str {
        self.method
    }
}

/// Whether the keyword `key` is `name`, whose interned string is `interned`.
/// Keywords written in source arrive interned, so identity usually answers.
pub(crate) fn is_keyword(
    key: Borrowed<'_, '_, PyString>,
    interned: &Bound<'_, PyString>,
    name: &str,
) -> PyResult<bool> {
    Ok(key.is(interned) || key.to_str()? == name)
}

/// A method called with vectorcall's arrays.
pub(crate) trait FastMethod {
    /// The class the method is installed in.
    type Class: PyClass;
    /// The attribute name, as Python sees it.
    const NAME: &'static CStr;
    /// `Class.name`, for error messages.
    const QUALNAME: &'static str;
    /// The docstring, headed by the text signature (`name($self, ...)\n--\n\n`).
    const DOC: &'static CStr;

    fn call<'py>(
        slf: &Bound<'py, Self::Class>,
        args: &Args<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>>;

    /// The answer to a call that can be given at once, before pyo3's
    /// trampoline: a span the filter refuses. It runs on a thread pyo3 does
    /// not know is attached, so it must drop no `Py<T>` and make no `PyErr`
    /// (pyo3 would leak them): it reads borrowed arguments only, and
    /// answers `None` — the full `call` decides — on anything unusual,
    /// including every argument error.
    fn refuse<'py>(
        _slf: &Bound<'py, Self::Class>,
        _args: &Args<'_, 'py>,
    ) -> Option<Bound<'py, PyAny>> {
        None
    }
}

/// Whether the keyword `key` is `name`: identity with the interned name,
/// else `PyUnicode_CompareWithASCIIString`, which never raises.
pub(crate) fn is_keyword_quick(
    key: Borrowed<'_, '_, PyString>,
    interned: &Bound<'_, PyString>,
    name: &CStr,
) -> bool {
    // SAFETY: `key` is a str and `name` a NUL-terminated ASCII string.
    key.is(interned)
        || unsafe { ffi::PyUnicode_CompareWithASCIIString(key.as_ptr(), name.as_ptr()) == 0 }
}

/// The C entry point of `M`: [`FastMethod::refuse`], else the method
/// through pyo3's trampoline.
unsafe extern "C" fn entry<M: FastMethod>(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let quick = catch_unwind(|| {
        // SAFETY: CPython calls methods from a thread attached to it, with
        // the arguments `body` describes.
        unsafe {
            let py = Python::assume_attached();
            with_args::<M, _>(py, slf, args, nargs, kwnames, |slf, args| {
                M::refuse(slf, args).map(Bound::into_ptr)
            })
        }
    });
    match quick {
        Ok(Some(done)) => done,
        // A panic there is a bug; the full call reports it if it recurs.
        Ok(None) | Err(_) => {
            // SAFETY: as above.
            unsafe { fastcall_cfunction_with_keywords::<Entry<M>>(slf, args, nargs, kwnames) }
        }
    }
}

/// `M` as pyo3's trampolines call a method body: pyo3's entry point marks
/// the thread attached (so references dropped inside are released at once),
/// turns an error into the raised exception and a panic into a
/// `PanicException`. Those trampolines are `pyo3::impl_` (public, hidden)
/// and the version is pinned (`~0.29.3`, and `Cargo.lock`).
struct Entry<M>(PhantomData<M>);

impl<M: FastMethod> MethodDef<fastcall_cfunction_with_keywords::Func> for Entry<M> {
    const METH: fastcall_cfunction_with_keywords::Func = body::<M>;
}

/// # Safety
///
/// Called by pyo3's trampoline with the arguments `CPython` passes a
/// `METH_FASTCALL | METH_KEYWORDS` method: `kwnames` is NULL or a tuple of
/// `str`, and `args` holds `nargs` positional then `len(kwnames)` keyword
/// values, all alive for the call; `slf` is an instance of `M::Class` (a
/// method descriptor checks it before calling).
unsafe fn body<M: FastMethod>(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: see the function's contract.
    unsafe {
        with_args::<M, _>(py, slf, args, nargs, kwnames, |slf, args| {
            M::call(slf, args).map(Bound::into_ptr)
        })
    }
}

/// Runs `f` on the call's receiver and arguments.
///
/// # Safety
///
/// As [`body`].
unsafe fn with_args<M: FastMethod, R>(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
    f: impl for<'a, 'py> FnOnce(&Bound<'py, M::Class>, &Args<'a, 'py>) -> R,
) -> R {
    // SAFETY: see the function's contract.
    let kwnames = (!kwnames.is_null())
        .then(|| unsafe { Borrowed::from_ptr(py, kwnames).cast_unchecked::<PyTuple>() });
    let nargs = usize::try_from(nargs).unwrap_or(0);
    let total = nargs + kwnames.map_or(0, |names| names.len());
    let values = if total == 0 {
        &[][..]
    } else {
        // SAFETY: see the function's contract.
        unsafe { std::slice::from_raw_parts(args, total) }
    };
    // SAFETY: see the function's contract.
    let slf = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<M::Class>() };
    let args = Args {
        py,
        method: M::QUALNAME,
        values,
        nargs,
        kwnames,
    };
    f(&slf, &args)
}

/// Runs the body of a C entry point *without* pyo3's trampoline, for
/// bodies that drop no Python reference when they succeed (pyo3 releases a
/// `Py<T>` dropped on a thread it does not know is attached only through its
/// reference pool, which this crate disables: it would leak). An error is
/// raised, and a panic becomes a `PanicException`, from inside
/// `Python::attach`, which does that bookkeeping. Saves pyo3's per-call
/// bookkeeping (~10 ns) where every nanosecond shows: the disabled span's
/// `__enter__`/`__exit__`.
pub(crate) fn light_guard(
    body: impl FnOnce() -> PyResult<*mut ffi::PyObject>,
) -> *mut ffi::PyObject {
    let err = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(result)) => return result,
        Ok(Err(err)) => err,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a Rust panic".to_owned());
            PanicException::new_err(message)
        }
    };
    Python::attach(|py| err.restore(py));
    std::ptr::null_mut()
}

/// A builtin function (`PyCFunction`) for a C entry point, for class
/// attributes that must not bind to an instance. Its `PyMethodDef` is
/// leaked, as [`install`]'s.
pub(crate) fn builtin<'py>(
    py: Python<'py>,
    name: &'static CStr,
    meth: ffi::PyMethodDefPointer,
    flags: std::ffi::c_int,
    doc: &'static CStr,
) -> PyResult<Bound<'py, PyAny>> {
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: meth,
        ml_flags: flags,
        ml_doc: doc.as_ptr(),
    }));
    // SAFETY: `def` is never freed; no self, no module.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyCFunction_NewEx(def, std::ptr::null_mut(), std::ptr::null_mut()),
        )
    }
}

/// Adds `M` to the class `ty` as a method. Its `PyMethodDef` must outlive
/// the class, so it is leaked: once per method, at module initialization.
pub(crate) fn install<M: FastMethod>(py: Python<'_>) -> PyResult<()> {
    let ty = py.get_type::<M::Class>();
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: M::NAME.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: entry::<M>,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: M::DOC.as_ptr(),
    }));
    // SAFETY: `ty` is a live type object and `def` is never freed.
    let descr =
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(ty.as_type_ptr(), def))? };
    let name = M::NAME
        .to_str()
        .expect("method names are ASCII identifiers");
    ty.setattr(PyString::intern(py, name), descr)
}
