//! `libbenchfs_preload.so`: unmodified programs on BenchFS through `LD_PRELOAD`.
//!
//! With the library preloaded, every libc file call on a path under the mount prefix
//! (`BENCHFS_MOUNT`, default `/benchfs`) goes to the BenchFS cluster of `BENCHFS_REGISTRY`;
//! everything else goes to libc unchanged. The client connects on the first BenchFS call and
//! disconnects at exit.
//!
//! - [`state`]: the client, the descriptor table (real placeholder descriptors reserved from
//!   the kernel), fork and exit handling, the one lock;
//! - [`target`]: which calls are for BenchFS (absolute paths under the prefix, paths
//!   relative to a BenchFS directory descriptor or current directory);
//! - [`files`]: open, close, read and write in their variants, seek, fsync, truncate,
//!   fallocate, fadvise;
//! - [`dup`]: dup, dup2, dup3, fcntl;
//! - [`stat`]: stat in every variant, statfs;
//! - [`meta`]: access, unlink, mkdir, rmdir, rename, chmod, chown, utimes;
//! - [`cwd`]: realpath, chdir, fchdir, getcwd;
//! - [`unsupported`]: what BenchFS does not have (extended attributes, links, mmap, ioctl,
//!   locks, copy_file_range, sendfile), answered with a clear error;
//! - [`dirs`]: opendir, fdopendir, readdir, closedir and the rest of the directory stream;
//! - [`stdio`]: fopen and fdopen on BenchFS files, as `fopencookie` streams; the standard
//!   streams when a BenchFS descriptor is put on 0, 1 or 2;
//! - [`exec`]: BenchFS descriptors kept open across `exec` go on working in the new program.
//!
//! # Semantics and limits
//!
//! BenchFS is close-to-open consistent: a file's size and data written by another process are
//! seen after that process closed (or fsynced) the file and this one opened it; a process
//! that ends (`exit` or `_exit`) closes its files. File offsets are shared by descriptors made
//! with `dup`, not between processes: a child keeps a copy from `fork`, and a write-only
//! descriptor inherited through `exec` goes on at the end of the file (so sequential writers,
//! `{ a; b; } > f`, append to each other; concurrent ones through one descriptor would not).
//! Owners are always the calling user (`chown` to anyone else is `EPERM`); there are no links
//! (`EPERM`), no locks (`ENOLCK`), no memory mapping (`ENODEV`, or `EBADF` once UCX's memory
//! hooks have patched `mmap`), no extended attributes (`ENOTSUP`). `fsync` of a directory is a
//! no-op. The process's BenchFS calls share one client and are served one at a time. A child
//! made by `vfork` (or `posix_spawn`) runs on its parent's memory: everything it does before
//! its `exec` passes to libc.
//!
//! What does not pass through this library: calls glibc makes internally (`scandir`, `ftw`,
//! glibc's own `fts`), and programs that call the kernel without libc (static or Go binaries,
//! raw `syscall`). The standard streams are replaced by streams of this library when a
//! BenchFS descriptor is put on 0, 1 or 2 ([`stdio`]), so `sort -o` and a shell's redirection
//! of its builtins work. BenchFS descriptors kept open across `execve`, `execv`, `execvp` or
//! `execvpe` go on working in the new program ([`exec`]), so `cmd > /benchfs/f` and
//! `subprocess.run(..., stdout=f)` work; `execl*`, `posix_spawn` and `system` exec from inside
//! glibc, and their programs get unusable placeholders (`EBADF`) instead.
//! A program does inherit a BenchFS current directory, through `PWD`. The descriptors handed
//! out stay below 65536. The library also exports the C API of `libbenchfs.so` (it is built
//! from the same crate): a program that links that library and runs under this one uses this
//! copy. UCX, loaded with the library, installs its handlers of fatal signals (backtraces);
//! `UCX_ERROR_SIGNALS=` (empty) keeps a program's own. Only 64-bit Linux with glibc is
//! supported.

// Each exported function hands the caller's arguments to libc through `target::route`: the
// route call and the libc call in its closure rest on one promise of the caller (the C
// contract of the function), which the SAFETY comment of the block states once.
#![allow(clippy::multiple_unsafe_ops_per_block)]

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!("the preload library supports 64-bit Linux (glibc) only");

pub mod cwd;
pub mod diag;
pub mod dirs;
pub mod dup;
pub mod exec;
pub mod files;
pub mod meta;
pub mod paths;
pub mod real;
pub mod stat;
pub mod state;
pub mod stdio;
pub mod target;
pub mod unsupported;

use std::ffi::c_int;

pub use state::{Errno, Result};

/// A C return type and its failure value (`-1` or NULL, with `errno` set).
pub trait Ret {
    /// The value a failed call returns.
    fn failed() -> Self;
}

impl Ret for c_int {
    fn failed() -> c_int {
        -1
    }
}

impl Ret for isize {
    fn failed() -> isize {
        -1
    }
}

impl Ret for i64 {
    fn failed() -> i64 {
        -1
    }
}

impl<T> Ret for *mut T {
    fn failed() -> *mut T {
        std::ptr::null_mut()
    }
}

impl Ret for () {
    fn failed() {}
}

/// Sets the calling thread's `errno`.
pub fn set_errno(errno: c_int) {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = errno };
}

/// The failure value of `R` with `errno` set to `e`.
pub fn fail<R: Ret>(e: Errno) -> R {
    set_errno(e.0);
    R::failed()
}

/// `r`'s value, or its failure.
pub fn done<R: Ret>(r: Result<R>) -> R {
    r.unwrap_or_else(fail)
}

/// The calling thread's `errno`.
pub fn errno() -> c_int {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Runs a BenchFS call: its value with `errno` as it was before (the transport may have
/// changed it on the way; `readdir` callers, for one, tell the end from a failure by it), or
/// its failure.
pub fn serve<R: Ret>(call: impl FnOnce() -> Result<R>) -> R {
    let before = errno();
    match call() {
        Ok(value) => {
            set_errno(before);
            value
        }
        Err(e) => fail(e),
    }
}

/// Runs `body`; a panic becomes `EIO` (with a message) instead of unwinding into C.
pub fn guard<R: Ret>(body: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            diag::say(&format!("internal error: {text}"));
            fail(Errno(libc::EIO))
        }
    }
}
