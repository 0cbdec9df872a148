//! The conversions of a recorded `JsonLines` file to a Chrome trace and to a
//! flame graph, for `pykregistry perfetto` and `pykregistry flamegraph`:
//! streamed by `pykregistry_export` with the GIL released.

use std::fs::File;
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use pykregistry_export::jsonl::Report;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::jsonlines::os_error;
use crate::pictures::folded_format;

/// Runs a conversion with the GIL released; `progress(bytes_read)` is
/// called about every MiB if given, and signals are checked then (Ctrl-C
/// stops it). Returns `{"lines", "spans", "events", "bytes", "errors":
/// [(line_no, message)], "error_count"}`.
fn convert_file(
    py: Python<'_>,
    src: &Path,
    dst: &Path,
    progress: Option<&Bound<'_, PyAny>>,
    run: impl FnOnce(BufReader<File>, File, &mut dyn FnMut(u64) -> bool) -> io::Result<Report> + Send,
) -> PyResult<Py<PyDict>> {
    let input = File::open(src).map_err(|e| os_error(&e, src))?;
    let output = File::create(dst).map_err(|e| os_error(&e, dst))?;
    let progress = progress.map(|p| p.clone().unbind());
    let mut stopped: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut tick = |bytes: u64| -> bool {
            Python::attach(|py| {
                let called = match &progress {
                    Some(p) => p.bind(py).call1((bytes,)).map(drop),
                    None => Ok(()),
                };
                match called.and_then(|()| py.check_signals()) {
                    Ok(()) => true,
                    Err(e) => {
                        stopped = Some(e);
                        false
                    }
                }
            })
        };
        run(BufReader::with_capacity(1 << 16, input), output, &mut tick)
    });
    if let Some(e) = stopped {
        return Err(e);
    }
    let report = result.map_err(|e| os_error(&e, dst))?;
    let dict = PyDict::new(py);
    dict.set_item("lines", report.lines)?;
    dict.set_item("spans", report.spans)?;
    dict.set_item("events", report.events)?;
    dict.set_item("bytes", report.bytes)?;
    dict.set_item("errors", report.errors)?;
    dict.set_item("error_count", report.error_count)?;
    Ok(dict.unbind())
}

/// Converts the `JsonLines` file `src` to a Chrome trace at `dst`,
/// streaming (see `pykregistry_export::chrome::jsonl_to_chrome`).
#[pyfunction]
#[pyo3(signature = (src, dst, /, progress = None))]
pub(crate) fn _jsonl_to_chrome(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyDict>> {
    convert_file(py, &src, &dst, progress, |input, output, tick| {
        pykregistry_export::chrome::jsonl_to_chrome(
            input,
            BufWriter::with_capacity(1 << 16, output),
            std::process::id(),
            tick,
        )
    })
}

/// Converts the `JsonLines` file `src` to a flame graph at `dst`: folded
/// stacks if `dst` ends in `.folded`, else an SVG.
#[pyfunction]
#[pyo3(signature = (src, dst, /, progress = None))]
pub(crate) fn _jsonl_to_flamegraph(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyDict>> {
    let folded_out = folded_format(None, &dst)?;
    let title = format!(
        "pykregistry: self busy time ({})",
        src.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    convert_file(py, &src, &dst, progress, move |input, output, tick| {
        let (folded, report) = pykregistry_export::flame::jsonl_to_folded(input, tick)?;
        let out = BufWriter::new(output);
        if folded_out {
            folded.write_folded(out)?;
        } else {
            folded.write_svg(&title, out)?;
        }
        Ok(report)
    })
}
