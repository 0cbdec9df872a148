/* The calling thread's current contextvars.Context, for telling the context
 * that made a stack entry from contexts that merely inherited it (SPEC
 * section 3). `PyThreadState.context` is CPython's own field (3.10-3.13),
 * outside the limited API: reading it here, against Python.h, avoids
 * mirroring the struct's layout in Rust. */
#include <Python.h>

/* Borrowed; NULL until the thread first touches a context variable. */
PyObject *pykregistry_current_context(void) {
    return PyThreadState_Get()->context;
}
