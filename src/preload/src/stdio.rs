//! stdio streams of BenchFS files: `fopen` and `fdopen` return a `fopencookie` stream whose
//! reads, writes, seeks and close go through this library's descriptor calls, so `fread`,
//! `fwrite`, `fprintf`, `fgets`, `fseek` and `fclose` work unchanged. glibc knows no
//! descriptor behind a cookie stream; `fileno` (interposed here) gives the BenchFS one, as
//! programs that check `fileno(fp) == STDOUT_FILENO` or `fstat(fileno(fp))` expect.
//!
//! The standard streams: glibc's `stdin`, `stdout` and `stderr` read and write descriptors 0,
//! 1 and 2 with calls of its own that this library cannot see. When a BenchFS descriptor is
//! put in place of one of them (`dup2`, as `sort -o` or a shell's redirection of a builtin
//! does), the stream is replaced by a cookie stream over that descriptor number, which serves
//! BenchFS and, through this library's pass-through, whatever the number later points to
//! again (`stderr` stays unbuffered; the others become fully buffered).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

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
    static mut stdin: *mut FILE;
    static mut stdout: *mut FILE;
    static mut stderr: *mut FILE;
}

/// The variable of standard stream `fd` (0, 1, 2).
fn standard_slot(fd: c_int) -> Option<*mut *mut FILE> {
    match fd {
        0 => Some(&raw mut stdin),
        1 => Some(&raw mut stdout),
        2 => Some(&raw mut stderr),
        _ => None,
    }
}

/// Flushes the standard output stream of descriptor `fd` (1 or 2), before the descriptor is
/// replaced.
pub fn flush_standard(fd: c_int) {
    if let Some(slot) = standard_slot(fd).filter(|_| fd != 0) {
        // SAFETY: the slot is glibc's stream variable; fflush of a live stream.
        unsafe { libc::fflush(*slot) };
    }
}

/// Replaces standard stream `fd` (0, 1, 2) by a cookie stream over that descriptor number,
/// once, after a BenchFS descriptor was put there.
pub fn standard_now_benchfs(fd: c_int) {
    static REPLACED: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];
    let Some(slot) = standard_slot(fd) else {
        return;
    };
    if REPLACED[fd as usize].swap(true, Ordering::AcqRel) {
        return;
    }
    let mode = if fd == 0 { c"r" } else { c"w" };
    let Ok(file) = stream(fd, mode.as_ptr()) else {
        REPLACED[fd as usize].store(false, Ordering::Release);
        crate::diag::say(&format!("cannot make a stream for descriptor {fd}"));
        return;
    };
    if fd == 2 {
        // SAFETY: a stream just made, before any I/O on it.
        unsafe { libc::setvbuf(file, std::ptr::null_mut(), libc::_IONBF, 0) };
    }
    // SAFETY: glibc's stream variable; programs read it at each use. The stream it held stays
    // allocated (a program may still hold its address) and is not used by this library again.
    unsafe { *slot = file };
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
    let fd = fd_of(cookie);
    forget_stream(fd);
    // SAFETY: the stream owns its descriptor.
    unsafe { crate::files::close(fd) }
}

/// Streams made here, by `FILE *` address, with their descriptors.
static STREAMS: Mutex<Vec<(usize, c_int)>> = Mutex::new(Vec::new());
static ANY_STREAM: AtomicBool = AtomicBool::new(false);

/// The locked registry of streams made here.
pub type StreamsGuard = std::sync::MutexGuard<'static, Vec<(usize, c_int)>>;

fn streams() -> StreamsGuard {
    STREAMS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks the stream registry (held across `fork`, so the child never inherits it locked).
pub fn lock_streams() -> StreamsGuard {
    streams()
}

fn forget_stream(fd: c_int) {
    let mut all = streams();
    all.retain(|&(_, d)| d != fd);
    ANY_STREAM.store(!all.is_empty(), Ordering::Release);
}

/// The descriptor behind a stream made here.
fn stream_fd(file: *mut FILE) -> Option<c_int> {
    if !ANY_STREAM.load(Ordering::Acquire) || state::borrowed_memory() {
        return None;
    }
    let all = streams();
    all.iter()
        .find(|&&(f, _)| f == file as usize)
        .map(|&(_, fd)| fd)
}

/// `fileno(3)`: the descriptor of a stream made here, else glibc's answer.
///
/// # Safety
/// As for `fileno(3)`.
#[no_mangle]
pub unsafe extern "C" fn fileno(file: *mut FILE) -> c_int {
    match stream_fd(file) {
        Some(fd) => fd,
        // SAFETY: the caller's stream.
        None => unsafe { real::fileno(file) },
    }
}

/// `fileno_unlocked(3)`.
///
/// # Safety
/// As for `fileno(3)`.
#[no_mangle]
pub unsafe extern "C" fn fileno_unlocked(file: *mut FILE) -> c_int {
    match stream_fd(file) {
        Some(fd) => fd,
        // SAFETY: the caller's stream.
        None => unsafe { real::fileno_unlocked(file) },
    }
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
    streams().push((file as usize, fd));
    ANY_STREAM.store(true, Ordering::Release);
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
