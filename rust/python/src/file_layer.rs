//! What the built-in layers that write a file (`JsonLines`, `ChromeTrace`,
//! `FlameGraph`) share as Python sees them: `closed`, `write_errors`, and the
//! context-manager protocol (the end of the `with` block closes the file).
//! Each keeps its sink in `self.sink`, with an `open` flag and an `errors`
//! count, and has a `close(py)` method.

/// Adds the shared methods to a file layer's class (a second `#[pymethods]`
/// block, through pyo3's `multiple-pymethods`).
macro_rules! file_layer {
    ($layer:ty) => {
        #[pyo3::pymethods]
        impl $layer {
            /// Whether `close()` was called (or the `with` block ended).
            #[getter]
            fn closed(&self) -> bool {
                !self.sink.open.load(std::sync::atomic::Ordering::Acquire)
            }

            /// How many writes failed.
            #[getter]
            fn write_errors(&self) -> u64 {
                self.sink.errors.load(std::sync::atomic::Ordering::Relaxed)
            }

            fn __enter__(slf: pyo3::Bound<'_, Self>) -> pyo3::Bound<'_, Self> {
                slf
            }

            fn __exit__(
                &self,
                py: pyo3::Python<'_>,
                _ty: &pyo3::Bound<'_, pyo3::PyAny>,
                _value: &pyo3::Bound<'_, pyo3::PyAny>,
                _tb: &pyo3::Bound<'_, pyo3::PyAny>,
            ) -> pyo3::PyResult<bool> {
                self.close(py)?;
                Ok(false)
            }
        }
    };
}

pub(crate) use file_layer;
