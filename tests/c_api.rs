//! The C API from C, against the library as users install it: `scripts/install.sh` puts the
//! library, header and `benchfs.pc` under a prefix, and every C program here is compiled and
//! linked with `pkg-config --cflags --libs benchfs` alone.
//!
//! - `c_api_test.c`: every function and the bad-input table, built with AddressSanitizer and
//!   UBSan, against a cluster over TCP, over shared memory and on other hosts (network
//!   namespaces);
//! - `mpi_patterns_test.c`: IOR's patterns from `mpirun -np 4` ranks, every byte verified;
//! - `embedded_test.c`: `mpirun -np 2` ranks that are servers and clients at once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{Cluster, Options, Transport};

/// The prefix that `scripts/install.sh` installed into, once per test run.
fn installed() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let prefix = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-api-prefix");
        let _ = std::fs::remove_dir_all(&prefix);
        let root = env!("CARGO_MANIFEST_DIR");
        let out = Command::new("bash")
            .arg(Path::new(root).join("scripts/install.sh"))
            .arg(&prefix)
            .output()
            .expect("install.sh runs");
        assert!(out.status.success(), "install.sh failed:\n{}", text(&out));
        prefix
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `pkg-config --cflags --libs benchfs` of the installed library.
fn pkg_config_flags() -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(["--cflags", "--libs", "benchfs"])
        .env("PKG_CONFIG_PATH", installed().join("lib/pkgconfig"))
        .output()
        .expect("pkg-config runs (scripts/setup.sh installs it)");
    assert!(out.status.success(), "pkg-config: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Compiles `ior_integration/tests/<name>.c` with `compiler` into `dir`.
fn compile(compiler: &str, name: &str, sanitize: bool, dir: &Path) -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let exe = dir.join(name);
    let mut cc = Command::new(compiler);
    cc.args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-g", "-O1"]);
    if sanitize {
        cc.arg("-fsanitize=address,undefined")
            .arg("-fno-omit-frame-pointer");
    }
    let out = cc
        .arg(format!("{root}/ior_integration/tests/{name}.c"))
        .arg("-o")
        .arg(&exe)
        .args(pkg_config_flags())
        .output()
        .unwrap_or_else(|e| panic!("{compiler} runs (scripts/setup.sh installs it): {e}"));
    assert!(out.status.success(), "{compiler} failed:\n{}", text(&out));
    exe
}

fn sanitizer_env(cmd: &mut Command) -> &mut Command {
    // UCX keeps some allocations until exit by design; leak reports would only list those.
    cmd.env("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1")
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
}

fn c_program_against(transport: Transport) {
    let dir = common::disk_tempdir();
    let exe = compile("cc", "c_api_test", true, dir.path());
    let cluster = Cluster::start(Options::new(transport));
    let run = sanitizer_env(&mut cluster.client_command(&exe))
        .output()
        .expect("c_api_test runs");
    assert!(
        run.status.success(),
        "c_api_test failed ({}):\n{}\nserver 0:\n{}",
        run.status,
        text(&run),
        cluster.log(0)
    );
    assert!(
        text(&run).contains("c_api_test: all passed"),
        "c_api_test did not reach its end:\n{}",
        text(&run)
    );
}

#[test]
fn c_program_passes_against_a_tcp_cluster() {
    c_program_against(Transport::Tcp);
}

#[test]
fn c_program_passes_against_a_shared_memory_cluster() {
    c_program_against(Transport::Shm);
}

#[test]
fn c_program_passes_against_servers_on_other_hosts() {
    c_program_against(Transport::Hosts);
}

/// `mpirun` with what running as root on a small machine needs, the transport's variables
/// exported to every rank.
fn mpirun(ranks: u32, transport: Transport) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--oversubscribe", "-np", &ranks.to_string()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .envs(transport.env());
    for (name, _) in transport.env() {
        cmd.args(["-x", &name]);
    }
    cmd
}

#[test]
fn mpi_ranks_run_ior_patterns_through_the_c_api() {
    let dir = common::disk_tempdir();
    let exe = compile("mpicc", "mpi_patterns_test", true, dir.path());
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    let run = sanitizer_env(&mut mpirun(4, Transport::Tcp))
        .args([
            "-x",
            "BENCHFS_REGISTRY",
            "-x",
            "ASAN_OPTIONS",
            "-x",
            "UBSAN_OPTIONS",
        ])
        .env("BENCHFS_REGISTRY", cluster.registry())
        .arg(&exe)
        .arg("/mpi")
        .output()
        .expect("mpirun runs (scripts/setup.sh installs openmpi-bin)");
    assert!(
        run.status.success() && text(&run).contains("mpi_patterns_test: 4 ranks, all passed"),
        "mpi_patterns_test failed ({}):\n{}\nserver 0:\n{}",
        run.status,
        text(&run),
        cluster.log(0)
    );
}

#[test]
fn two_processes_are_servers_and_clients_at_once() {
    let _turn = common::exclusive();
    let dir = common::disk_tempdir();
    let exe = compile("mpicc", "embedded_test", true, dir.path());
    let run = sanitizer_env(&mut mpirun(2, Transport::Tcp))
        .args(["-x", "ASAN_OPTIONS", "-x", "UBSAN_OPTIONS"])
        .arg(&exe)
        .arg(dir.path())
        .output()
        .expect("mpirun runs (scripts/setup.sh installs openmpi-bin)");
    assert!(
        run.status.success() && text(&run).contains("embedded_test: 2 server ranks, all passed"),
        "embedded_test failed ({}):\n{}",
        run.status,
        text(&run)
    );
    // Both embedded servers wrote their data and left the registry empty when they stopped.
    for rank in 0..2 {
        let data = dir.path().join(format!("data/server-{rank}"));
        assert!(data.is_dir(), "{} missing", data.display());
    }
    let registry = benchfs::registry::Registry::open_existing(&dir.path().join("registry"))
        .expect("the embedded servers made the registry");
    assert!(
        registry.list().unwrap().is_empty(),
        "the stopped servers unpublished"
    );
}
