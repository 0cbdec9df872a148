//! The native module `pykregistry._native`: thin `PyO3` bindings over
//! `pykregistry-core`. The public surface is curated in
//! `pykregistry/__init__.py`.

mod args;
mod bridge;
mod callsite;
mod close;
mod context;
mod convert;
mod core_stack;
mod entry;
mod errors;
mod event;
mod ext;
mod fastcall;
mod file_layer;
mod gil;
mod inject;
mod jsonl_convert;
mod jsonlines;
mod layers;
mod live;
mod otlp;
mod pictures;
mod propagation;
mod registries;
mod registry;
mod registry_api;
mod span;
mod span_ref;
mod stack_var;
mod tracks;

use pyo3::prelude::*;

/// R13: draws a new key for span and trace ids; runs in a child process
/// after `os.fork()` (registered when the module loads), so that the child's
/// ids and its parent's differ.
#[pyfunction]
fn _reseed_ids() {
    pykregistry_core::reseed();
}

/// `gil_used`: the bindings rely on the GIL to serialize their bookkeeping
/// (`context::GilCell`, the timings in `ext`). No free-threaded build has
/// tested them yet; on one, importing the module turns the GIL back on.
#[pymodule(gil_used = true)]
mod _native {
    use super::{convert, Bound, PyModule, PyModuleMethods, PyResult};
    use crate::fastcall::install;
    use pyo3::types::PyAnyMethods;

    #[pymodule_export]
    use super::_reseed_ids;
    #[pymodule_export]
    use crate::bridge::{_otel_attach, _otel_current, _otel_detach};
    #[pymodule_export]
    use crate::callsite::Callsite;
    #[pymodule_export]
    use crate::core_stack::PySpanStack;
    #[pymodule_export]
    use crate::event::Event;
    #[pymodule_export]
    use crate::ext::_shift_wall_clock;
    #[pymodule_export]
    use crate::inject::inject;
    #[pymodule_export]
    use crate::jsonl_convert::{_jsonl_to_chrome, _jsonl_to_flamegraph};
    #[pymodule_export]
    use crate::jsonlines::{_flush_json_lines, _json_lines_forked, JsonLines};
    #[pymodule_export]
    use crate::otlp::{_otlp_forked, _shutdown_otlp_exporters, OtlpExporter};
    #[pymodule_export]
    use crate::pictures::{_close_pictures, _flush_pictures, ChromeTrace, FlameGraph};
    #[pymodule_export]
    use crate::propagation::RemoteParent;
    #[pymodule_export]
    use crate::registries::_close_open_spans;
    #[pymodule_export]
    use crate::registry::PyRegistry;
    #[pymodule_export]
    use crate::span::{DisabledSpan, Entered, Span};
    #[pymodule_export]
    use crate::span_ref::SpanRef;
    #[pymodule_export]
    use crate::stack_var::_gc_phase;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        let py = m.py();
        m.add("CURRENT", convert::current_sentinel(py)?.clone_ref(py))?;
        m.add("GENERATIONS", crate::registry::Core::GENERATIONS)?;
        // The methods that take `**fields`, through vectorcall (see `fastcall`).
        install::<crate::registry_api::RegistrySpanMethod>(py)?;
        install::<crate::callsite::RegistryCallsiteMethod>(py)?;
        install::<crate::registry_api::EventMethod>(py)?;
        install::<crate::registry_api::RecordMethod>(py)?;
        install::<crate::span::RecordMethod>(py)?;
        install::<crate::callsite::SpanMethod>(py)?;
        // `with span:` without a bound method object (see `span`).
        crate::span::install_with(py)?;
        // Lines still buffered at exit, or when the process forks, are
        // written then; a child stops writing its parent's files.
        // Collections in progress: the context stack's view is not set then.
        py.import("gc")?
            .getattr("callbacks")?
            .call_method1("append", (m.getattr("_gc_phase")?,))?;
        let flush = m.getattr("_flush_json_lines")?;
        let atexit = py.import("atexit")?;
        atexit.getattr("register")?.call1((&flush,))?;
        // P12: exporters send what they hold, each within its exit_timeout.
        atexit
            .getattr("register")?
            .call1((m.getattr("_shutdown_otlp_exporters")?,))?;
        // Pictures are finished (their documents completed) after open
        // spans close, so registered before that.
        atexit
            .getattr("register")?
            .call1((m.getattr("_close_pictures")?,))?;
        // Registered after the flush, so it runs before it (R15): spans
        // still open at exit end and close, leaves first, and are written.
        atexit
            .getattr("register")?
            .call1((m.getattr("_close_open_spans")?,))?;
        let os = py.import("os")?;
        if let Some(register_at_fork) = os.getattr_opt("register_at_fork")? {
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("before", &flush)?;
            kwargs.set_item("after_in_child", m.getattr("_json_lines_forked")?)?;
            register_at_fork.call((), Some(&kwargs))?;
            // Pictures write out what they hold; in a child they stop
            // (through the same fork count as `JsonLines`).
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("before", m.getattr("_flush_pictures")?)?;
            register_at_fork.call((), Some(&kwargs))?;
            // A child never sends its parent's spans.
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("after_in_child", m.getattr("_otlp_forked")?)?;
            register_at_fork.call((), Some(&kwargs))?;
            // R13: a child's span and trace ids must not repeat its parent's.
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("after_in_child", m.getattr("_reseed_ids")?)?;
            register_at_fork.call((), Some(&kwargs))?;
        }
        Ok(())
    }
}
