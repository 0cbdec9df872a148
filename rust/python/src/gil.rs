//! State that only code holding the GIL touches. The module is declared
//! `gil_used`, so one thread at a time runs here.

use std::cell::RefCell;

/// A `RefCell` shared between threads that only touch it holding the GIL.
pub(crate) struct GilCell<T>(pub(crate) RefCell<T>);

// SAFETY: the module is declared `gil_used`, so every access happens with
// the GIL held, one thread at a time; borrows never span Python code (which
// could release the GIL).
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        GilCell(RefCell::new(value))
    }
}
