//! Writes `benchfs.pc`, the pkg-config file of the BenchFS library, next to the built library
//! (`target/<profile>/benchfs.pc`), so C programs (IOR's backend among them) can be built
//! against an uninstalled tree with `PKG_CONFIG_PATH=target/release`.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // The shared library carries a SONAME with the major version, so programs linked against
    // an installed copy keep working across compatible updates (scripts/install.sh makes the
    // libbenchfs.so.0 link).
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets it");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libbenchfs.so.{major}");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    // OUT_DIR is <target>/<profile>/build/benchfs-<hash>/out: the profile dir is three up.
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        return;
    };
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets it");
    let pc = pkg_config(&manifest_dir.join("include"), profile_dir, &version);
    std::fs::write(out_dir.join("benchfs.pc"), &pc).expect("write benchfs.pc to OUT_DIR");
    // Best effort: the profile directory is where users look for the library itself.
    let _ = std::fs::write(profile_dir.join("benchfs.pc"), &pc);
    // Programs linked against the uninstalled library look for its SONAME there: a link
    // (dangling until the library is built) makes them find it.
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets it");
    let soname = profile_dir.join(format!("libbenchfs.so.{major}"));
    if std::fs::symlink_metadata(&soname).is_err() {
        let _ = std::os::unix::fs::symlink("libbenchfs.so", &soname);
    }
}

fn pkg_config(include_dir: &Path, lib_dir: &Path, version: &str) -> String {
    format!(
        "includedir={}\nlibdir={}\n\nName: benchfs\nDescription: BenchFS client library\n\
         Version: {version}\nCflags: -I${{includedir}}\n\
         Libs: -L${{libdir}} -Wl,-rpath,${{libdir}} -lbenchfs\n",
        include_dir.display(),
        lib_dir.display(),
    )
}
