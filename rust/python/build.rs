//! Compiles `csrc/context.c` against the target interpreter's `Python.h`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=csrc/context.c");
    println!("cargo:rerun-if-changed=csrc/with.c");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    let config = pyo3_build_config::get();
    let python = config
        .executable()
        .map(str::to_owned)
        .or_else(|| std::env::var("PYO3_PYTHON").ok())
        .unwrap_or_else(|| "python3".to_owned());
    let out = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['include'])",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} to find Python.h: {e}"));
    assert!(
        out.status.success(),
        "{python} could not tell where Python.h is: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let include = String::from_utf8(out.stdout).expect("a UTF-8 path");
    cc::Build::new()
        .file("csrc/context.c")
        .file("csrc/with.c")
        .include(include.trim())
        .warnings(true)
        .compile("pykregistry_context");
}
