//! `pykregistry.Span`: a handle that owns exactly one reference.

use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};

use pykregistry_core::{Fields, Id, Value};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyString, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::context::{self, GuardSlot};
use crate::convert;
use crate::errors::{handle_closed, misuse, SpanNotFoundError};
use crate::fastcall::{self, Args, FastMethod};
use crate::registry::{PyRegistry, SpanArgs};
use crate::span_ref::SpanRef;
use pyo3::impl_::trampoline::{fastcall_cfunction_with_keywords, MethodDef};

/// A handle on a span, owning one reference to it.
///
/// `with registry.span(...) as s:` creates, enters, and at the end of the
/// block exits and releases. A handle released by `close()` or garbage
/// collected unreleased gives up its reference. A span that a filter turned
/// away is *disabled*: it has no ID, and everything on it does nothing.
#[pyclass(name = "Span", module = "pykregistry", frozen, subclass)]
pub(crate) struct Span {
    /// What calling the span does (vectorcall): the `with` statement's
    /// `__enter__` and `__exit__`, bound to the span itself (see
    /// [`install_with`]).
    call: ffi::vectorcallfunc,
    /// `None` for the disabled span.
    live: Option<Handle>,
    closed: AtomicBool,
    /// The entries its `with` blocks made, each exited by its own block.
    entries: GuardSlot,
}

struct Handle {
    registry: Py<PyRegistry>,
    id: Id,
    /// Whether this handle made the span: its release ends it (R14).
    creator: bool,
}

/// The context manager `Span.entered()` returns: enters on `__enter__`,
/// exits on `__exit__`, and can be used again.
#[pyclass(name = "Entered", module = "pykregistry", frozen)]
pub(crate) struct Entered {
    span: Py<Span>,
    /// The entries its `with` blocks made, each exited by its own block.
    entries: GuardSlot,
}

/// The type of the one disabled span: a `Span` whose `__enter__` and
/// `__exit__` are plain builtin functions in the class, not methods. The
/// `with` statement binds methods (an allocation each), but finds builtin
/// functions as they are, so `with disabled_span:` allocates nothing.
#[pyclass(name = "DisabledSpan", module = "pykregistry", frozen, extends = Span)]
pub(crate) struct DisabledSpan;

#[pymethods]
impl DisabledSpan {
    #[classattr]
    fn __enter__(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        fastcall::builtin(
            py,
            c"__enter__",
            ffi::PyMethodDefPointer {
                PyCFunction: disabled_enter,
            },
            ffi::METH_NOARGS,
            c"__enter__()\n--\n\nThe disabled span.",
        )
    }

    #[classattr]
    fn __exit__(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        fastcall::builtin(
            py,
            c"__exit__",
            ffi::PyMethodDefPointer {
                PyCFunctionFast: disabled_exit,
            },
            ffi::METH_FASTCALL,
            c"__exit__(exc_type, exc, tb, /)\n--\n\nNothing to exit; exceptions propagate.",
        )
    }
}

/// `DisabledSpan.__enter__`: the disabled span. Drops no reference, so it
/// runs under `light_guard`, not pyo3's trampoline.
unsafe extern "C" fn disabled_enter(
    _module: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls functions from a thread attached to it.
    let py = unsafe { Python::assume_attached() };
    fastcall::light_guard(|| Span::disabled_span(py).map(Bound::into_ptr))
}

/// `DisabledSpan.__exit__(exc_type, exc, tb)`: nothing to exit; returns
/// `False`, so exceptions propagate. As `disabled_enter`.
unsafe extern "C" fn disabled_exit(
    _module: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: as in `disabled_enter`.
    let py = unsafe { Python::assume_attached() };
    fastcall::light_guard(|| {
        if nargs == 3 {
            Ok(PyBool::new(py, false).to_owned().into_ptr())
        } else {
            Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "__exit__() takes 3 positional arguments ({nargs} given)"
            )))
        }
    })
}

static DISABLED: PyOnceLock<Py<Span>> = PyOnceLock::new();

// === impl Span ===

impl Span {
    /// A handle on span `id`; `creator` when it made the span, so that
    /// its release ends it (R14).
    pub(crate) fn new(registry: Py<PyRegistry>, id: Id, creator: bool) -> Self {
        Span {
            call: with_call,
            live: Some(Handle {
                registry,
                id,
                creator,
            }),
            closed: AtomicBool::new(false),
            entries: GuardSlot::default(),
        }
    }

    /// A handle on a new span of `slf`, or the disabled span.
    pub(crate) fn make<'py>(
        slf: &Bound<'py, PyRegistry>,
        name: &Bound<'py, PyString>,
        args: SpanArgs<'py>,
        filtered: bool,
    ) -> PyResult<Bound<'py, Span>> {
        match slf.get().create(slf.py(), name, args, filtered, true)? {
            Some(id) => Bound::new(slf.py(), Span::new(slf.clone().unbind(), id, true)),
            None => Span::disabled_span(slf.py()),
        }
    }

    /// The one disabled span.
    pub(crate) fn disabled_span(py: Python<'_>) -> PyResult<Bound<'_, Span>> {
        let span = DISABLED.get_or_try_init(py, || -> PyResult<Py<Span>> {
            let init = pyo3::PyClassInitializer::from(Span {
                call: with_call,
                live: None,
                closed: AtomicBool::new(true),
                entries: GuardSlot::default(),
            })
            .add_subclass(DisabledSpan);
            // A `DisabledSpan` is a `Span`: its base class.
            Ok(Bound::new(py, init)?.into_super().unbind())
        })?;
        Ok(span.bind(py).clone())
    }

    /// The disabled span, if it has been made (never raises, builds
    /// nothing: for `FastMethod::refuse`).
    pub(crate) fn disabled_span_if_made(py: Python<'_>) -> Option<Bound<'_, Span>> {
        DISABLED.get(py).map(|span| span.bind(py).clone())
    }

    /// The span's ID and registry; `None` when disabled.
    pub(crate) fn id(&self) -> Option<Id> {
        self.live.as_ref().map(|h| h.id)
    }

    pub(crate) fn registry_uid(&self) -> Option<usize> {
        self.live.as_ref().map(|h| h.registry.get().core.uid())
    }

    /// The live handle; `None` when disabled (every operation is then a
    /// no-op). Once released (R15): `SpanClosedError` on a strict registry,
    /// else a `SpanUsageWarning`, and `None`: the operation is dropped.
    pub(crate) fn open(&self, py: Python<'_>, what: &str) -> PyResult<Option<(&PyRegistry, Id)>> {
        let Some(h) = &self.live else { return Ok(None) };
        let registry = h.registry.get();
        if self.closed.load(Ordering::Acquire) {
            misuse(py, registry.strict, handle_closed(h.id.into_u64(), what))?;
            Ok(None)
        } else {
            Ok(Some((registry, h.id)))
        }
    }

    /// `__enter__`'s work: enter the span in the calling context, and
    /// remember the entry in `guard` for the matching `leave`.
    fn enter(&self, py: Python<'_>, guard: &GuardSlot) -> PyResult<()> {
        match self.open(py, "cannot enter through it")? {
            Some((registry, id)) => {
                guard.push(registry.enter_id(py, id)?);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// `__exit__`'s work: record an exception, then exit the entry the
    /// matching `enter` made, in whatever context this runs (R5).
    fn leave(
        &self,
        py: Python<'_>,
        guard: &GuardSlot,
        ty: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let Some(h) = &self.live else { return Ok(()) };
        let registry = h.registry.get();
        if !ty.is_none() {
            record_exception(py, registry, h.id, ty, value);
        }
        let exited = match guard.pop(py) {
            Some(entry) => {
                if let Some(exited) = context::exit_entry(py, &entry) {
                    registry.exited(py, exited);
                }
                Ok(())
            }
            // Not entered through this guard (`__exit__` called by hand).
            None => registry.exit_id(py, h.id),
        };
        exited
    }

    /// Releases this handle's reference, once. The handle that made the
    /// span ends it first (R14): the end of its block, its `close()`, or
    /// its collection.
    fn release(&self) {
        if let Some(h) = &self.live {
            // Under the GIL (the module is `gil_used`): no thread comes
            // between the load and the store.
            if !self.closed.load(Ordering::Relaxed) {
                self.closed.store(true, Ordering::Relaxed);
                let core = &h.registry.get().core;
                // One lookup for the end and the release. None: released by
                // hand too often (R12); the count is already what it should be.
                if let Some(span) = core.get(h.id) {
                    if h.creator && span.ext().end() {
                        Python::attach(|py| crate::close::ended(py, core, h.id, &span));
                    }
                    let _ = span.try_close();
                }
            }
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.release();
    }
}

/// Records an exception that is leaving the span: `error=True`,
/// `exception.type` and `exception.message`, with OpenTelemetry's names.
/// Only `Exception` subclasses count: `GeneratorExit`, `KeyboardInterrupt`,
/// `SystemExit` and `asyncio.CancelledError` are ways of stopping, not
/// errors.
fn record_exception(
    py: Python<'_>,
    registry: &PyRegistry,
    id: Id,
    ty: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) {
    // R15: whatever the exception's class looks like, recording it never
    // raises: the user's exception leaves the span unchanged.
    let Ok(ty) = ty.cast::<PyType>() else { return };
    // SAFETY: both are type objects; no Python code runs (unlike
    // `issubclass`, which may call a metaclass's `__subclasscheck__`).
    let is_exception =
        unsafe { ffi::PyType_IsSubtype(ty.as_type_ptr(), ffi::PyExc_Exception.cast()) } != 0;
    if !is_exception {
        return;
    }
    let text = |obj: PyResult<Bound<'_, PyAny>>| {
        obj.ok()
            .and_then(|o| o.cast_into::<PyString>().ok())
            .map(|s| s.to_string_lossy().into_owned())
    };
    let qualname = text(ty.getattr(pyo3::intern!(py, "__qualname__")))
        .or_else(|| text(ty.getattr(pyo3::intern!(py, "__name__"))))
        .unwrap_or_else(|| "?".to_owned());
    // `__module__` may be missing, None or anything else: then the name alone.
    let type_name = match text(ty.getattr(pyo3::intern!(py, "__module__"))) {
        Some(module) if module != "builtins" => format!("{module}.{qualname}"),
        _ => qualname,
    };
    let message = value
        .str()
        .map_or_else(|_| String::new(), |s| s.to_string_lossy().into_owned());
    let fields: Fields = vec![
        ("error".into(), Value::Bool(true)),
        ("exception.type".into(), Value::Str(type_name.into())),
        ("exception.message".into(), Value::Str(message.into())),
    ];
    // The span may have closed meanwhile (its reference released by hand);
    // then there is nothing to record on.
    if registry.core.ref_count(id) > 0 {
        if let Err(e) = registry.record_id(py, id, fields) {
            e.write_unraisable(py, None);
        }
    }
}

#[pymethods]
impl Span {
    /// R15: a handle can sit in a cycle (in its own span's extensions, in
    /// a module with the layer class that its registry holds): the
    /// collector sees its registry through it.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(h) = &self.live {
            visit.call(&h.registry)?;
        }
        Ok(())
    }

    /// The span's ID; `None` when disabled.
    #[getter(id)]
    fn py_id(&self) -> Option<u64> {
        self.id().map(Id::into_u64)
    }

    /// Whether this handle has been released (always true when disabled).
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether a filter turned this span away.
    #[getter]
    fn disabled(&self) -> bool {
        self.live.is_none()
    }

    /// A read-only view of the span; `None` when disabled.
    #[getter]
    #[pyo3(name = "ref")]
    fn view(&self, py: Python<'_>) -> PyResult<Option<SpanRef>> {
        Ok(self
            .open(py, "it can no longer give a view")?
            .map(|(registry, id)| SpanRef::new(registry.core.clone(), id)))
    }

    fn follows_from(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some((registry, id)) = self.open(py, "follows_from() on it is dropped")? else {
            return Ok(());
        };
        let other = match span_of(other, registry.core.uid())? {
            SpanArg::Span(id) => id,
            // Following a disabled span records nothing.
            SpanArg::Disabled => return Ok(()),
            SpanArg::NotASpan => convert::span_id(other)?,
        };
        registry.follows_from_id(py, id, other)
    }

    /// A second handle on the same span (+1).
    fn clone(slf: &Bound<'_, Self>) -> PyResult<Py<Span>> {
        let span = slf.get();
        let Some((registry, id)) = span.open(slf.py(), "clone() gives the disabled span")? else {
            return Ok(Span::disabled_span(slf.py())?.unbind());
        };
        registry
            .core
            .clone_span(id)
            .map_err(crate::errors::RegistryError)?;
        let handle = span.live.as_ref().map(|h| h.registry.clone_ref(slf.py()));
        Py::new(
            slf.py(),
            Span::new(handle.expect("open() found a live handle"), id, false),
        )
    }

    /// Releases this handle's reference. A second call does nothing.
    fn close(&self) -> PyResult<()> {
        self.release();
        crate::layers::raise_interrupt()
    }

    /// A reusable context manager that enters and exits the span.
    fn entered(slf: &Bound<'_, Self>) -> PyResult<Entered> {
        slf.get().open(slf.py(), "cannot enter through it")?;
        Ok(Entered {
            span: slf.clone().unbind(),
            entries: GuardSlot::default(),
        })
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let Some(h) = &self.live else {
            return "Span(disabled=True)".to_owned();
        };
        let id = h.id.into_u64();
        if self.closed() {
            return format!("Span(id={id}, closed=True)");
        }
        match h.registry.get().core.get(h.id) {
            Some(span) => match span.parent_id() {
                Some(p) => format!(
                    "Span(id={id}, name={}, parent={})",
                    convert::quote(py, span.name()),
                    p.into_u64()
                ),
                None => format!(
                    "Span(id={id}, name={}, parent=None)",
                    convert::quote(py, span.name())
                ),
            },
            None => format!("Span(id={id}, closed=True)"),
        }
    }
}

// === the with statement ===

extern "C" {
    /// A descriptor that binds to the instance itself; see `csrc/with.c`.
    fn pykregistry_with_method(
        owner: *mut ffi::PyTypeObject,
        nargs: ffi::Py_ssize_t,
        name: *const std::ffi::c_char,
        doc: *const std::ffi::c_char,
    ) -> *mut ffi::PyObject;
    /// Makes instances callable through the pointer at `offset`.
    fn pykregistry_make_callable(type_: *mut ffi::PyTypeObject, offset: ffi::Py_ssize_t) -> i32;
}

/// Makes `with span:` bind no method object: `Span.__enter__` and
/// `Span.__exit__` are descriptors that bind to the span itself, and
/// calling a span is the protocol: `span()` enters and returns the span,
/// `span(exc_type, exc, tb)` exits. On `CPython` 3.10-3.13 a bound method
/// is an object made and freed twice per block, about a fifth of a span's
/// cost. Through the class (`Span.__enter__(span)`, as `contextlib.ExitStack`
/// calls it) they take the span first, as methods do.
pub(crate) fn install_with(py: Python<'_>) -> PyResult<()> {
    let ty = py.get_type::<Span>();
    // Where `call` lies in a span object: measured on one, since pyo3 does
    // not publish its layout.
    let one = Span::disabled_span(py)?;
    let offset = std::ptr::from_ref(&one.get().call) as usize - one.as_ptr() as usize;
    let offset = ffi::Py_ssize_t::try_from(offset).map_err(|_| {
        pyo3::exceptions::PySystemError::new_err("pykregistry: span layout out of range")
    })?;
    // SAFETY: `ty` is `Span`'s type object, alive for the module's life, and
    // every instance stores a `vectorcallfunc` at `offset` (its `call`).
    if unsafe { pykregistry_make_callable(ty.as_type_ptr(), offset) } < 0 {
        return Err(PyErr::fetch(py));
    }
    for (name, nargs, doc) in [
        (
            c"__enter__",
            0,
            c"__enter__($self, /)\n--\n\nEnters the span in the calling context; returns it.",
        ),
        (
            c"__exit__",
            3,
            c"__exit__($self, exc_type, exc, tb, /)\n--\n\nExits the entry `__enter__` made, records an exception leaving it,\nand releases the handle (R14: the span ends). Returns False.",
        ),
    ] {
        // SAFETY: `ty` outlives the descriptor (which borrows it); the
        // strings are NUL-terminated literals; a new reference or NULL.
        let method = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                pykregistry_with_method(ty.as_type_ptr(), nargs, name.as_ptr(), doc.as_ptr()),
            )?
        };
        ty.setattr(name.to_str().expect("ASCII"), method)?;
    }
    Ok(())
}

/// A span called: the `with` statement (see [`install_with`]), through
/// pyo3's trampoline.
unsafe extern "C" fn with_call(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls from an attached thread, with the arguments of
    // the vectorcall protocol; only spans store this function.
    unsafe {
        fastcall_cfunction_with_keywords::<WithCall>(
            callable,
            args,
            ffi::PyVectorcall_NARGS(nargsf),
            kwnames,
        )
    }
}

struct WithCall;

impl MethodDef<fastcall_cfunction_with_keywords::Func> for WithCall {
    const METH: fastcall_cfunction_with_keywords::Func = with_body;
}

/// # Safety
///
/// `slf` is a `Span`; `args` holds `nargs` positional arguments (then
/// keyword values), alive for the call; `kwnames` is NULL or a tuple.
unsafe fn with_body(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: see the function's contract.
    let slf = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<Span>() };
    // SAFETY: a tuple's size, when there is one.
    if !kwnames.is_null() && unsafe { ffi::PyTuple_GET_SIZE(kwnames) } > 0 {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "a span takes no keyword arguments: call it as `with span:`",
        ));
    }
    let span = slf.get();
    match nargs {
        0 => {
            span.enter(py, &span.entries)?;
            Ok(slf.to_owned().into_ptr())
        }
        3 => {
            // SAFETY: three live arguments (see the contract).
            let (ty, value) = unsafe { (Borrowed::from_ptr(py, *args), Borrowed::from_ptr(py, *args.add(1))) };
            let left = span.leave(py, &span.entries, &ty, &value);
            span.release();
            left?;
            crate::layers::raise_interrupt()?;
            Ok(PyBool::new(py, false).to_owned().into_ptr())
        }
        n => Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "a span is called by the with statement: with no arguments to enter, with (exc_type, exc, tb) to exit ({n} given)"
        ))),
    }
}

// === impl Entered ===

#[pymethods]
impl Entered {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.span)
    }

    fn __enter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, Span>> {
        let span = self.span.bind(py);
        span.get().enter(py, &self.entries)?;
        Ok(span.clone())
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        ty: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.span.get().leave(py, &self.entries, ty, value)?;
        crate::layers::raise_interrupt()?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("Entered({})", self.span.bind(py).get().__repr__(py))
    }
}

/// `Span.record(name, value, /)` as `tracing`'s `Span::record`, or
/// `Span.record(**fields)`; both forms may be combined.
pub(crate) struct RecordMethod;

impl FastMethod for RecordMethod {
    const NAME: &'static CStr = c"record";
    const QUALNAME: &'static str = "Span.record";
    const DOC: &'static CStr = c"record($self, name=..., value=..., /, **fields)
--

Records (adds or replaces) fields on the span: `record(\"key\", value)` or
`record(key=value, ...)`. Does nothing on the disabled span.";

    type Class = Span;

    fn call<'py>(slf: &Bound<'py, Span>, args: &Args<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let span = slf.get();
        let positional = args.positional_values();
        if !matches!(positional.len(), 0 | 2) {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "Span.record() takes a name and a value, or keywords ({} positional arguments given)",
                positional.len()
            )));
        }
        let Some((registry, id)) = span.open(
            py,
            "record() on it is dropped (record before the block ends, or on a clone())",
        )?
        else {
            return Ok(py.None().into_bound(py));
        };
        let mut positional = positional.map(Borrowed::to_owned);
        let pair = positional.next().zip(positional.next());
        let keywords = args
            .keywords()
            .map(|(k, v)| (k.to_owned().into_any(), v.to_owned()));
        let values = convert::fields_from_items(pair.into_iter().chain(keywords))?;
        registry.record_id(py, id, values)?;
        Ok(py.None().into_bound(py))
    }
}

/// What a `Span` or `SpanRef` argument names.
pub(crate) enum SpanArg {
    /// A span of this registry.
    Span(Id),
    /// The disabled span.
    Disabled,
    /// The argument is neither a `Span` nor a `SpanRef`.
    NotASpan,
}

/// The span a `Span` or `SpanRef` of the registry whose uid is `registry`
/// names. A handle or view of another registry names none of this
/// registry's spans: that is an error.
pub(crate) fn span_of(obj: &Bound<'_, PyAny>, registry: usize) -> PyResult<SpanArg> {
    let (id, owner) = if let Ok(span) = obj.cast::<Span>() {
        match (span.get().id(), span.get().registry_uid()) {
            (Some(id), Some(owner)) => (id, owner),
            _ => return Ok(SpanArg::Disabled),
        }
    } else if let Ok(view) = obj.cast::<SpanRef>() {
        (view.get().id, view.get().registry_uid())
    } else {
        return Ok(SpanArg::NotASpan);
    };
    if owner == registry {
        Ok(SpanArg::Span(id))
    } else {
        Err(SpanNotFoundError::new_err(format!(
            "span {} belongs to another registry: a Span or SpanRef names a span only in the registry that made it",
            id.into_u64()
        )))
    }
}
