//! Which calls are for BenchFS: the path a program passes, resolved against a directory
//! descriptor or the current directory, either names BenchFS or not.

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::atomic::Ordering;

use crate::paths::{self, inside, join, outside};
use crate::state::{self, What, CWD_INSIDE};
use crate::{fail, guard, serve, Errno, Result, Ret};

/// Where a path points.
#[derive(Debug)]
pub enum Target {
    /// A BenchFS path.
    Ours(String),
    /// Not BenchFS: libc gets the call as the program made it.
    Real,
    /// Not BenchFS, but only after resolution against a BenchFS current directory: libc gets
    /// this absolute path instead.
    Local(CString),
}

/// Resolves `path` (relative to `dirfd` or the current directory). In a child that runs on
/// its parent's memory ([`state::borrowed_memory`]) nothing is BenchFS.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
pub unsafe fn target(dirfd: c_int, path: *const c_char) -> Result<Target> {
    // SAFETY: the caller's promise on `path` is passed on.
    match unsafe { resolve(dirfd, path) }? {
        Target::Ours(_) if state::borrowed_memory() => Ok(Target::Real),
        found => Ok(found),
    }
}

/// [`target`] without the check of borrowed memory.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
unsafe fn resolve(dirfd: c_int, path: *const c_char) -> Result<Target> {
    if path.is_null() {
        return Ok(Target::Real);
    }
    // SAFETY: non-null and NUL-terminated by the caller's promise.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    if bytes.first() == Some(&b'/') {
        if !paths::maybe_inside(bytes) {
            return Ok(Target::Real);
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Ok(Target::Real);
        };
        let normal = paths::normalize(text);
        return Ok(match inside(&normal) {
            Some(p) => Target::Ours(p),
            // `/benchfs/..`: through the prefix and out again, to where the kernel would go
            // had the prefix been a directory.
            None if paths::through_mount(text) => {
                CString::new(normal).map_or(Target::Real, Target::Local)
            }
            None => Target::Real,
        });
    }
    let base = if dirfd == libc::AT_FDCWD {
        if !CWD_INSIDE.load(Ordering::Acquire) {
            return Ok(Target::Real);
        }
        match state::lock().cwd.clone() {
            Some(cwd) => cwd,
            None => return Ok(Target::Real),
        }
    } else if state::is_ours(dirfd) {
        match &state::lock().desc(dirfd)?.what {
            What::Dir(p) => p.clone(),
            What::File(_) => return Err(Errno(libc::ENOTDIR)),
        }
    } else {
        return Ok(Target::Real);
    };
    if bytes.is_empty() {
        return Err(Errno(libc::ENOENT));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(Errno(libc::EINVAL));
    };
    let full = join(&outside(&base), text);
    match inside(&full) {
        Some(p) => Ok(Target::Ours(p)),
        None => CString::new(full)
            .map(Target::Local)
            .map_err(|_| Errno(libc::EINVAL)),
    }
}

/// Calls `ours` with the BenchFS path of (`dirfd`, `path`), or `real` with the descriptor and
/// path libc should get; behind a panic guard.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
pub unsafe fn route<R: Ret>(
    dirfd: c_int,
    path: *const c_char,
    real: impl FnOnce(c_int, *const c_char) -> R,
    ours: impl FnOnce(String) -> Result<R>,
) -> R {
    guard(|| {
        // SAFETY: the caller's promise on `path` is passed on.
        match unsafe { target(dirfd, path) } {
            Ok(Target::Real) => real(dirfd, path),
            Ok(Target::Local(local)) => real(libc::AT_FDCWD, local.as_ptr()),
            Ok(Target::Ours(p)) => serve(|| ours(p)),
            Err(e) => fail(e),
        }
    })
}

/// Calls `ours` when `fd` is a BenchFS descriptor, else `real`; behind a panic guard.
pub fn route_fd<R: Ret>(
    fd: c_int,
    real: impl FnOnce() -> R,
    ours: impl FnOnce() -> Result<R>,
) -> R {
    if !state::is_ours(fd) {
        return real();
    }
    guard(|| serve(ours))
}
