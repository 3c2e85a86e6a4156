//! The C API from C: compiles `ior_integration/tests/c_api_test.c` against the header and the
//! built `libbenchfs.so` with AddressSanitizer and UBSan, and runs it against a TCP cluster.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Cluster, Options, Transport};

/// The directory holding `libbenchfs.so`: the parent of the test executable's `deps`.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

#[test]
fn c_program_passes_against_a_cluster() {
    let root = env!("CARGO_MANIFEST_DIR");
    let lib = library_dir();
    assert!(
        lib.join("libbenchfs.so").exists(),
        "libbenchfs.so is not built"
    );
    let out_dir = tempfile::tempdir().unwrap();
    let exe = out_dir.path().join("c_api_test");
    let build = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
        .arg("-fsanitize=address,undefined")
        .arg(format!("-I{root}/include"))
        .arg(format!("{root}/ior_integration/tests/c_api_test.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg("-lbenchfs")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .output()
        .expect("cc runs");
    assert!(
        build.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    let run = Command::new(&exe)
        .env("BENCHFS_REGISTRY", cluster.registry())
        .envs(Transport::Tcp.env())
        // UCX keeps some allocations until exit by design; leak reports would only list those.
        .env("ASAN_OPTIONS", "detect_leaks=0")
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        .output()
        .expect("c_api_test runs");
    assert!(
        run.status.success(),
        "c_api_test failed ({}):\n{}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("c_api_test: all passed"),
        "c_api_test did not reach its end"
    );
}
