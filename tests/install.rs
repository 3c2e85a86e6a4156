//! `scripts/install.sh PREFIX`: the library with its SONAME links, the header, `benchfs.pc`
//! and the programs land under the prefix, and a C program builds and runs with nothing but
//! `pkg-config --cflags --libs benchfs`.

mod common;

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

const PROGRAM: &str = r#"
#include <benchfs_c_api.h>
#include <stdio.h>
#include <string.h>
int main(void) {
    if (benchfs_api_version() != BENCHFS_API_VERSION) return 1;
    if (strncmp(benchfs_version(), "benchfs ", 8) != 0) return 2;
    /* Without a cluster, init fails cleanly with an error message. */
    if (benchfs_init("/nonexistent/registry", NULL) >= 0) return 3;
    if (benchfs_strerror()[0] == '\0') return 4;
    puts(benchfs_version());
    return 0;
}
"#;

#[test]
fn installed_library_links_with_pkg_config_flags_alone() {
    let root = env!("CARGO_MANIFEST_DIR");
    let prefix = common::disk_tempdir();
    run(Command::new("bash")
        .arg(Path::new(root).join("scripts/install.sh"))
        .arg(prefix.path()));
    let lib = prefix.path().join("lib");
    for name in ["libbenchfs.so", "libbenchfs.so.0", "libbenchfs_preload.so"] {
        assert!(lib.join(name).exists(), "{name} missing");
    }
    let dynamic = run(Command::new("readelf")
        .arg("-d")
        .arg(lib.join("libbenchfs.so")));
    assert!(
        dynamic.contains("[libbenchfs.so.0]"),
        "no SONAME:\n{dynamic}"
    );
    for program in ["benchfsd", "benchfsctl", "benchfs-load"] {
        assert!(
            prefix.path().join("bin").join(program).exists(),
            "{program} missing"
        );
    }
    let flags = run(Command::new("pkg-config")
        .args(["--cflags", "--libs", "benchfs"])
        .env("PKG_CONFIG_PATH", lib.join("pkgconfig")));
    let source = prefix.path().join("prog.c");
    std::fs::write(&source, PROGRAM).unwrap();
    let exe = prefix.path().join("prog");
    run(Command::new("cc")
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace()));
    let out = run(&mut Command::new(&exe));
    assert!(out.contains("benchfs "), "{out}");
}
