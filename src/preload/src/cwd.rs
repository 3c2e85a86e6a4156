//! Paths as a program sees them: `realpath`, and the current directory (`chdir`, `fchdir`,
//! `getcwd`). A BenchFS current directory is kept here (the kernel's stays where it was) and
//! relative paths resolve against it ([`crate::target`]).

use std::ffi::{c_char, c_int};

use libc::size_t;

use crate::stat::stat_path;
use crate::state::{self, Errno, What};
use crate::target::{route, route_fd};
use crate::{done, guard, real, Result};

// ---- exported: realpath, current directory ----

/// Copies `text` into `buf` (`size` bytes, `ERANGE` when too small) or, with a NULL `buf`,
/// into memory from `malloc` that the caller frees.
fn give_string(text: &str, buf: *mut c_char, size: usize) -> Result<*mut c_char> {
    let bytes = text.as_bytes();
    let out = if buf.is_null() {
        // SAFETY: plain allocation; the caller owns the result.
        let p = unsafe { libc::malloc(bytes.len() + 1) }.cast::<c_char>();
        if p.is_null() {
            return Err(Errno(libc::ENOMEM));
        }
        p
    } else {
        if size < bytes.len() + 1 {
            return Err(Errno(libc::ERANGE));
        }
        buf
    };
    // SAFETY: `out` has room for the bytes and the NUL (checked or allocated above).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.cast::<u8>(), bytes.len());
        *out.add(bytes.len()) = 0;
    }
    Ok(out)
}

/// `realpath(3)`: a BenchFS path resolves lexically and must exist.
///
/// # Safety
/// As for `realpath(3)`.
#[no_mangle]
pub unsafe extern "C" fn realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::realpath(p, resolved),
            |p| {
                stat_path(&p)?;
                give_string(
                    &crate::paths::outside(&p),
                    resolved,
                    libc::PATH_MAX as usize,
                )
            },
        )
    }
}

/// glibc's checked `realpath`.
///
/// # Safety
/// As for `realpath(3)`.
#[no_mangle]
pub unsafe extern "C" fn __realpath_chk(
    path: *const c_char,
    resolved: *mut c_char,
    _resolved_len: size_t,
) -> *mut c_char {
    // SAFETY: same contract.
    unsafe { realpath(path, resolved) }
}

/// `canonicalize_file_name(3)`.
///
/// # Safety
/// As for `canonicalize_file_name(3)`.
#[no_mangle]
pub unsafe extern "C" fn canonicalize_file_name(path: *const c_char) -> *mut c_char {
    // SAFETY: same contract.
    unsafe { realpath(path, std::ptr::null_mut()) }
}

fn enter(dir: Option<String>) {
    let mut state = state::lock();
    state::CWD_INSIDE.store(dir.is_some(), std::sync::atomic::Ordering::Release);
    state.cwd = dir;
}

fn enter_ours(path: String) -> Result<c_int> {
    let st = stat_path(&path)?;
    if st.mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Errno(libc::ENOTDIR));
    }
    enter(Some(path));
    Ok(0)
}

/// `chdir(2)`: into a BenchFS directory, the process keeps its kernel directory and this
/// library resolves relative paths against the BenchFS one.
///
/// # Safety
/// As for `chdir(2)`.
#[no_mangle]
pub unsafe extern "C" fn chdir(path: *const c_char) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| {
                let rc = real::chdir(p);
                if rc == 0 {
                    enter(None);
                }
                rc
            },
            enter_ours,
        )
    }
}

/// `fchdir(2)`.
///
/// # Safety
/// As for `fchdir(2)`.
#[no_mangle]
pub unsafe extern "C" fn fchdir(fd: c_int) -> c_int {
    route_fd(
        fd,
        || {
            // SAFETY: a plain descriptor call.
            let rc = unsafe { real::fchdir(fd) };
            if rc == 0 {
                enter(None);
            }
            rc
        },
        || {
            let path = match &state::lock().desc(fd)?.what {
                What::Dir(p) => p.clone(),
                What::File(_) => return Err(Errno(libc::ENOTDIR)),
            };
            enter_ours(path)
        },
    )
}

/// `getcwd(3)`: the BenchFS directory (under the prefix) after a chdir into one.
///
/// # Safety
/// As for `getcwd(3)`.
#[no_mangle]
pub unsafe extern "C" fn getcwd(buf: *mut c_char, size: size_t) -> *mut c_char {
    if !state::CWD_INSIDE.load(std::sync::atomic::Ordering::Acquire) {
        // SAFETY: the caller's arguments are passed on.
        return unsafe { real::getcwd(buf, size) };
    }
    guard(|| {
        let cwd = state::lock().cwd.clone();
        match cwd {
            Some(dir) => {
                let size = if buf.is_null() && size == 0 {
                    usize::MAX
                } else {
                    size
                };
                done(give_string(&crate::paths::outside(&dir), buf, size))
            }
            // SAFETY: the caller's arguments are passed on.
            None => unsafe { real::getcwd(buf, size) },
        }
    })
}
