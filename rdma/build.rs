//! `ucx1-sys` links only `libucp`; the transport also calls `libucs` (status strings) and
//! `libucm` (memory hooks), which live beside it in the UCX build that `ucx1-sys` makes and,
//! at run time, in the system's or the site's UCX.

fn main() {
    println!("cargo:rustc-link-lib=dylib=ucs");
    println!("cargo:rustc-link-lib=dylib=ucm");
}
