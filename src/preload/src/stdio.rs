//! stdio streams of BenchFS files: `fopen` and `fdopen` return a `fopencookie` stream whose
//! reads, writes, seeks and close go through this library's descriptor calls, so `fread`,
//! `fwrite`, `fprintf`, `fgets`, `fseek` and `fclose` work unchanged. (`fileno` of such a
//! stream is -1: glibc knows no descriptor behind a cookie stream.)

use std::ffi::{c_char, c_int, c_void, CStr};

use libc::{size_t, ssize_t, FILE};

use crate::state::{self, Errno};
use crate::target::{route, route_fd};
use crate::{real, Result};

type ReadFn = unsafe extern "C" fn(*mut c_void, *mut c_char, size_t) -> ssize_t;
type WriteFn = unsafe extern "C" fn(*mut c_void, *const c_char, size_t) -> ssize_t;
type SeekFn = unsafe extern "C" fn(*mut c_void, *mut i64, c_int) -> c_int;
type CloseFn = unsafe extern "C" fn(*mut c_void) -> c_int;

/// glibc's `cookie_io_functions_t`.
#[repr(C)]
struct CookieFunctions {
    read: Option<ReadFn>,
    write: Option<WriteFn>,
    seek: Option<SeekFn>,
    close: Option<CloseFn>,
}

extern "C" {
    fn fopencookie(cookie: *mut c_void, mode: *const c_char, funcs: CookieFunctions) -> *mut FILE;
}

/// The descriptor a cookie stands for.
fn fd_of(cookie: *mut c_void) -> c_int {
    cookie as usize as c_int
}

unsafe extern "C" fn cookie_read(cookie: *mut c_void, buf: *mut c_char, n: size_t) -> ssize_t {
    // SAFETY: glibc hands over `n` writable bytes.
    unsafe { crate::files::read(fd_of(cookie), buf.cast(), n) }
}

unsafe extern "C" fn cookie_write(cookie: *mut c_void, buf: *const c_char, n: size_t) -> ssize_t {
    // SAFETY: glibc hands over `n` readable bytes.
    let n = unsafe { crate::files::write(fd_of(cookie), buf.cast(), n) };
    // A cookie write returns 0, not -1, on failure.
    n.max(0)
}

unsafe extern "C" fn cookie_seek(cookie: *mut c_void, at: *mut i64, whence: c_int) -> c_int {
    // SAFETY: glibc passes a valid position to read and update.
    unsafe {
        let new = crate::files::lseek(fd_of(cookie), *at, whence);
        if new < 0 {
            return -1;
        }
        *at = new;
    }
    0
}

unsafe extern "C" fn cookie_close(cookie: *mut c_void) -> c_int {
    // SAFETY: the stream owns its descriptor.
    unsafe { crate::files::close(fd_of(cookie)) }
}

/// `open(2)` flags of an `fopen` mode ("r", "w+", "ab", "re", "wx", ...).
fn open_flags(mode: &[u8]) -> Result<c_int> {
    let (first, rest) = mode.split_first().ok_or(Errno(libc::EINVAL))?;
    let plus = rest.contains(&b'+');
    let access = if plus { libc::O_RDWR } else { 0 };
    let mut flags = match (first, plus) {
        (b'r', false) => libc::O_RDONLY,
        (b'r', true) => libc::O_RDWR,
        (b'w', _) => libc::O_CREAT | libc::O_TRUNC | access.max(libc::O_WRONLY),
        (b'a', _) => libc::O_CREAT | libc::O_APPEND | access.max(libc::O_WRONLY),
        _ => return Err(Errno(libc::EINVAL)),
    };
    if rest.contains(&b'x') {
        flags |= libc::O_EXCL;
    }
    if rest.contains(&b'e') {
        flags |= libc::O_CLOEXEC;
    }
    Ok(flags)
}

/// A stream over BenchFS descriptor `fd`; the descriptor is closed when that fails.
fn stream(fd: c_int, mode: *const c_char) -> Result<*mut FILE> {
    let functions = CookieFunctions {
        read: Some(cookie_read),
        write: Some(cookie_write),
        seek: Some(cookie_seek),
        close: Some(cookie_close),
    };
    // SAFETY: `mode` is the caller's NUL-terminated mode; the cookie is a descriptor number.
    let file = unsafe { fopencookie(fd as usize as *mut c_void, mode, functions) };
    if file.is_null() {
        return Err(Errno(libc::ENOMEM));
    }
    Ok(file)
}

fn mode_text<'a>(mode: *const c_char) -> Result<&'a [u8]> {
    if mode.is_null() {
        return Err(Errno(libc::EINVAL));
    }
    // SAFETY: non-null and NUL-terminated by fopen's contract.
    Ok(unsafe { CStr::from_ptr(mode) }.to_bytes())
}

fn fopen_ours(path: String, mode: *const c_char) -> Result<*mut FILE> {
    let flags = open_flags(mode_text(mode)?)?;
    let fd = crate::files::open_path(path, flags, 0o666)?;
    stream(fd, mode).inspect_err(|_| {
        // SAFETY: closes the descriptor opened above.
        unsafe { crate::files::close(fd) };
    })
}

/// `fopen(3)`.
///
/// # Safety
/// As for `fopen(3)`.
#[no_mangle]
pub unsafe extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::fopen(p, mode),
            |p| fopen_ours(p, mode),
        )
    }
}

/// `fopen64(3)`.
///
/// # Safety
/// As for `fopen(3)`.
#[no_mangle]
pub unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: same contract.
    unsafe { fopen(path, mode) }
}

/// `fdopen(3)`: on a BenchFS descriptor, a stream that owns it.
///
/// # Safety
/// As for `fdopen(3)`.
#[no_mangle]
pub unsafe extern "C" fn fdopen(fd: c_int, mode: *const c_char) -> *mut FILE {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on.
        || unsafe { real::fdopen(fd, mode) },
        || {
            mode_text(mode).and_then(open_flags)?;
            if !state::is_ours(fd) {
                return Err(Errno(libc::EBADF));
            }
            stream(fd, mode)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fopen_modes() {
        assert_eq!(open_flags(b"r"), Ok(libc::O_RDONLY));
        assert_eq!(open_flags(b"rb+"), Ok(libc::O_RDWR));
        assert_eq!(
            open_flags(b"w"),
            Ok(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)
        );
        assert_eq!(
            open_flags(b"a+e"),
            Ok(libc::O_RDWR | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC)
        );
        assert_eq!(
            open_flags(b"wx"),
            Ok(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL)
        );
        assert_eq!(open_flags(b"z"), Err(Errno(libc::EINVAL)));
        assert_eq!(open_flags(b""), Err(Errno(libc::EINVAL)));
    }
}
