/* `with span:` without a bound method per block.
 *
 * The `with` statement looks `__enter__` and `__exit__` up on the class and
 * binds them: for methods that is a new bound-method object each, created
 * and freed on every block (CPython 3.10-3.13; 3.14 binds without one). A
 * `WithMethod` is a descriptor whose binding is the instance itself, which
 * `Span` makes callable: `span()` enters, `span(exc_type, exc, tb)` exits.
 * Reached through the class (`Span.__enter__(span)`, as `contextlib.
 * ExitStack` does), a `WithMethod` calls the instance with the arguments
 * that follow it. */
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    /* The class whose instances it binds to (borrowed: the class keeps it). */
    PyTypeObject *owner;
    /* Arguments the method takes besides self: 0 for __enter__, 3 for __exit__. */
    Py_ssize_t nargs;
    PyObject *name;
    PyObject *doc;
    vectorcallfunc vectorcall;
} WithMethod;

static PyObject *with_method_get(PyObject *self, PyObject *obj, PyObject *type) {
    (void)type;
    return Py_NewRef(obj == NULL ? self : obj);
}

static PyObject *with_method_vectorcall(PyObject *callable, PyObject *const *args,
                                        size_t nargsf, PyObject *kwnames) {
    WithMethod *m = (WithMethod *)callable;
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        PyErr_Format(PyExc_TypeError, "%U() takes no keyword arguments", m->name);
        return NULL;
    }
    if (n != m->nargs + 1) {
        PyErr_Format(PyExc_TypeError, "%U() takes %zd positional arguments (%zd given)",
                     m->name, m->nargs + 1, n);
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], m->owner)) {
        PyErr_Format(PyExc_TypeError, "%U() needs a '%s' instance, not '%s'", m->name,
                     m->owner->tp_name, Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    return PyObject_Vectorcall(args[0], args + 1, n - 1, NULL);
}

static void with_method_dealloc(PyObject *self) {
    WithMethod *m = (WithMethod *)self;
    Py_XDECREF(m->name);
    Py_XDECREF(m->doc);
    Py_TYPE(self)->tp_free(self);
}

static PyMemberDef with_method_members[] = {
    {"__name__", T_OBJECT, offsetof(WithMethod, name), READONLY, NULL},
    {"__doc__", T_OBJECT, offsetof(WithMethod, doc), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject WithMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pykregistry._WithMethod",
    .tp_basicsize = sizeof(WithMethod),
    .tp_dealloc = with_method_dealloc,
    .tp_vectorcall_offset = offsetof(WithMethod, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "A with-statement method of a span: binds to the span itself.",
    .tp_members = with_method_members,
    .tp_descr_get = with_method_get,
};

/* A new WithMethod of `owner`, taking `nargs` arguments besides self; NULL
 * with an exception set on failure. */
PyObject *pykregistry_with_method(PyTypeObject *owner, Py_ssize_t nargs, const char *name,
                                  const char *doc) {
    if (PyType_Ready(&WithMethodType) < 0) {
        return NULL;
    }
    WithMethod *m = PyObject_New(WithMethod, &WithMethodType);
    if (m == NULL) {
        return NULL;
    }
    m->owner = owner;
    m->nargs = nargs;
    m->vectorcall = with_method_vectorcall;
    m->name = PyUnicode_FromString(name);
    m->doc = PyUnicode_FromString(doc);
    if (m->name == NULL || m->doc == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    return (PyObject *)m;
}

/* Makes instances of `type` callable through the function pointer stored
 * `offset` bytes into each (vectorcall). 0, or -1 with an exception set. */
int pykregistry_make_callable(PyTypeObject *type, Py_ssize_t offset) {
    if (offset <= 0 || offset + (Py_ssize_t)sizeof(vectorcallfunc) > type->tp_basicsize) {
        PyErr_SetString(PyExc_SystemError, "pykregistry: bad vectorcall offset");
        return -1;
    }
    type->tp_vectorcall_offset = offset;
    type->tp_call = PyVectorcall_Call;
    type->tp_flags |= Py_TPFLAGS_HAVE_VECTORCALL;
    PyType_Modified(type);
    return 0;
}
