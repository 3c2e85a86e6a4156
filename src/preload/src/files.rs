//! Descriptors of BenchFS files: open in its variants, I/O, seek, dup, fcntl, fsync, truncate,
//! close; and the descriptor calls BenchFS cannot serve, answered with a clear error.

use std::ffi::{c_char, c_int, c_uint, c_void};

use benchfs::client::OpenFlags;
use libc::{iovec, off_t, size_t, ssize_t};

use crate::state::{self, Desc, Errno, What};
use crate::target::{route, route_fd};
use crate::{guard, real, Result};

/// The status flags a description keeps (what `F_GETFL` reports and `F_SETFL` may change).
pub(crate) const STATUS_FLAGS: c_int =
    libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME;

/// The process's file mode creation mask.
pub fn umask() -> u32 {
    // SAFETY: umask only swaps the mask; it is set back at once.
    let mask = unsafe { libc::umask(0o022) };
    // SAFETY: as above.
    unsafe { libc::umask(mask) };
    mask
}

/// Reserves a descriptor number from the kernel: an `O_PATH` descriptor of `/dev/null`, on
/// which every I/O call made around this library fails with `EBADF`.
fn reserve(cloexec: bool) -> Result<c_int> {
    let flags = libc::O_PATH | if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: a NUL-terminated literal path.
    let fd = unsafe { real::open(c"/dev/null".as_ptr(), flags, 0) };
    if fd < 0 {
        return Err(Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EMFILE),
        ));
    }
    if fd >= state::FD_LIMIT {
        // SAFETY: closes the descriptor just opened.
        unsafe { real::close(fd) };
        return Err(Errno(libc::EMFILE));
    }
    Ok(fd)
}

/// Opens BenchFS `path` with `open(2)` flags; returns the new descriptor.
pub fn open_path(path: String, flags: c_int, mode: c_uint) -> Result<c_int> {
    if flags & libc::O_TMPFILE == libc::O_TMPFILE {
        return Err(Errno(libc::EOPNOTSUPP));
    }
    let fd = reserve(flags & libc::O_CLOEXEC != 0)?;
    let opened = open_desc(path, flags, mode);
    match opened {
        Ok(desc) => {
            state::lock().insert(fd, desc);
            Ok(fd)
        }
        Err(e) => {
            // SAFETY: closes the reserved descriptor, which nothing else knows.
            unsafe { real::close(fd) };
            Err(e)
        }
    }
}

fn open_desc(path: String, flags: c_int, mode: c_uint) -> Result<Desc> {
    let access = flags & libc::O_ACCMODE;
    let keep = access | (flags & STATUS_FLAGS);
    let dir = |path: String| Desc {
        refs: 1,
        flags: keep,
        offset: 0,
        what: What::Dir(path),
    };
    let mut state = state::lock();
    let client = state.client()?;
    if flags & (libc::O_DIRECTORY | libc::O_PATH) != 0 {
        let st = client.stat(&path)?;
        if st.mode & libc::S_IFMT == libc::S_IFDIR {
            if access != libc::O_RDONLY && flags & libc::O_PATH == 0 {
                return Err(Errno(libc::EISDIR));
            }
            return Ok(dir(path));
        }
        if flags & libc::O_DIRECTORY != 0 {
            return Err(Errno(libc::ENOTDIR));
        }
    }
    let open = OpenFlags {
        read: access != libc::O_WRONLY && flags & libc::O_PATH == 0,
        write: access != libc::O_RDONLY && flags & libc::O_PATH == 0,
        create: flags & libc::O_CREAT != 0,
        exclusive: flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0,
    };
    let mode = mode & 0o7777 & !umask();
    let mut file = match client.open(&path, open, mode) {
        Ok(file) => file,
        Err(e) if e.errno() == libc::EISDIR && !open.create && !open.write => {
            return Ok(dir(path));
        }
        Err(e) => return Err(e.into()),
    };
    if flags & libc::O_TRUNC != 0 && open.write && file.size() > 0 {
        client.truncate_file(&mut file, 0)?;
    }
    Ok(Desc {
        refs: 1,
        flags: keep,
        offset: 0,
        what: What::File(file),
    })
}

/// Closes BenchFS descriptor `fd` (the file when it was its last descriptor).
fn close_fd(fd: c_int) -> Result<c_int> {
    let result = state::lock().release(fd);
    // SAFETY: the placeholder of `fd` is closed after the table forgot it.
    unsafe { real::close(fd) };
    result.map(|()| 0)
}

/// Reads up to `n` bytes at `at` (the offset when `None`, which then advances).
fn read_fd(fd: c_int, buf: *mut c_void, n: size_t, at: Option<u64>) -> Result<usize> {
    let mut state = state::lock();
    let (client, desc) = state.client_and_desc(fd)?;
    let What::File(file) = &desc.what else {
        return Err(Errno(libc::EISDIR));
    };
    if n == 0 {
        return Ok(0);
    }
    if buf.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: the caller of read(2) hands over `n` writable bytes at `buf`.
    let slice = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n) };
    let offset = at.unwrap_or(desc.offset);
    let got = client.read_at(file, slice, offset)?;
    if at.is_none() {
        desc.offset = offset + got as u64;
    }
    Ok(got)
}

/// Writes `n` bytes at `at` (the offset, or the end with `O_APPEND`, when `None`).
fn write_fd(fd: c_int, buf: *const c_void, n: size_t, at: Option<u64>) -> Result<usize> {
    let mut state = state::lock();
    let (client, desc) = state.client_and_desc(fd)?;
    let append = desc.flags & libc::O_APPEND != 0;
    let What::File(file) = &mut desc.what else {
        return Err(Errno(libc::EISDIR));
    };
    if !file.flags().write {
        return Err(Errno(libc::EBADF));
    }
    if n == 0 {
        return Ok(0);
    }
    if buf.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: the caller of write(2) hands over `n` readable bytes at `buf`.
    let slice = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), n) };
    let offset = match at {
        Some(at) => at,
        None if append => file.size(),
        None => desc.offset,
    };
    let wrote = client.write_at(file, slice, offset)?;
    if at.is_none() {
        desc.offset = offset + wrote as u64;
    }
    Ok(wrote)
}

fn position(off: off_t) -> Result<Option<u64>> {
    u64::try_from(off)
        .map(Some)
        .map_err(|_| Errno(libc::EINVAL))
}

/// The iovec array of a vectored call.
///
/// # Safety
/// `iov` points to `count` iovecs when `count` is positive.
unsafe fn iovecs<'a>(iov: *const iovec, count: c_int) -> Result<&'a [iovec]> {
    if !(0..=libc::UIO_MAXIOV).contains(&count) {
        return Err(Errno(libc::EINVAL));
    }
    if count == 0 {
        return Ok(&[]);
    }
    if iov.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: `count` iovecs at `iov` by the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(iov, count as usize) })
}

/// A vectored read or write: each buffer in turn, stopping at a short transfer.
fn vectored(
    iov: &[iovec],
    mut at: Option<u64>,
    mut each: impl FnMut(*mut c_void, usize, Option<u64>) -> Result<usize>,
) -> Result<isize> {
    let mut total = 0usize;
    for v in iov {
        let n = match each(v.iov_base, v.iov_len, at) {
            Ok(n) => n,
            Err(_) if total > 0 => break,
            Err(e) => return Err(e),
        };
        total += n;
        at = at.map(|a| a + n as u64);
        if n < v.iov_len {
            break;
        }
    }
    Ok(total as isize)
}

fn seek_fd(fd: c_int, off: off_t, whence: c_int) -> Result<off_t> {
    let mut state = state::lock();
    let desc = state.desc(fd)?;
    let size = match &desc.what {
        What::File(f) => f.size() as i128,
        What::Dir(_) => 0,
    };
    let (off, cur) = (off as i128, desc.offset as i128);
    let new = match whence {
        libc::SEEK_SET => off,
        libc::SEEK_CUR => cur + off,
        libc::SEEK_END => size + off,
        libc::SEEK_DATA if off >= 0 && off < size => off,
        libc::SEEK_HOLE if off >= 0 && off < size => size,
        libc::SEEK_DATA | libc::SEEK_HOLE => return Err(Errno(libc::ENXIO)),
        _ => return Err(Errno(libc::EINVAL)),
    };
    let new = off_t::try_from(new)
        .ok()
        .filter(|n| *n >= 0)
        .ok_or(Errno(libc::EINVAL))?;
    desc.offset = new as u64;
    Ok(new)
}

fn fsync_fd(fd: c_int) -> Result<c_int> {
    let mut state = state::lock();
    let (client, desc) = state.client_and_desc(fd)?;
    if let What::File(file) = &mut desc.what {
        client.fsync(file)?;
    }
    Ok(0)
}

fn truncate_fd(fd: c_int, len: off_t) -> Result<c_int> {
    let len = u64::try_from(len).map_err(|_| Errno(libc::EINVAL))?;
    let mut state = state::lock();
    let (client, desc) = state.client_and_desc(fd)?;
    match &mut desc.what {
        What::File(file) if file.flags().write => client.truncate_file(file, len)?,
        What::File(_) => return Err(Errno(libc::EINVAL)),
        What::Dir(_) => return Err(Errno(libc::EISDIR)),
    }
    Ok(0)
}

// ---- exported: open ----

/// `open(2)`. The mode is read as the third integer argument, where the x86-64 and AArch64
/// calling conventions put a variadic `mode_t`; it is used only with `O_CREAT`.
///
/// # Safety
/// As for `open(2)`.
#[no_mangle]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: the caller's path is passed on unchanged.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::open(p, flags, mode),
            |p| open_path(p, flags, mode),
        )
    }
}

/// `open64(2)`: the same as [`open`] on 64-bit Linux.
///
/// # Safety
/// As for `open(2)`.
#[no_mangle]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: same contract.
    unsafe { open(path, flags, mode) }
}

/// `openat(2)`.
///
/// # Safety
/// As for `openat(2)`.
#[no_mangle]
pub unsafe extern "C" fn openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    // SAFETY: the caller's arguments are passed on unchanged.
    unsafe {
        route(
            dirfd,
            path,
            |d, p| real::openat(d, p, flags, mode),
            |p| open_path(p, flags, mode),
        )
    }
}

/// `openat64(2)`.
///
/// # Safety
/// As for `openat(2)`.
#[no_mangle]
pub unsafe extern "C" fn openat64(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    // SAFETY: same contract.
    unsafe { openat(dirfd, path, flags, mode) }
}

/// `creat(2)`.
///
/// # Safety
/// As for `creat(2)`.
#[no_mangle]
pub unsafe extern "C" fn creat(path: *const c_char, mode: libc::mode_t) -> c_int {
    // SAFETY: same contract as open with these flags.
    unsafe { open(path, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, mode) }
}

/// `creat64(2)`.
///
/// # Safety
/// As for `creat(2)`.
#[no_mangle]
pub unsafe extern "C" fn creat64(path: *const c_char, mode: libc::mode_t) -> c_int {
    // SAFETY: same contract.
    unsafe { creat(path, mode) }
}

/// glibc's checked `open` (`_FORTIFY_SOURCE`), called without a mode.
///
/// # Safety
/// As for `open(2)` without `O_CREAT`.
#[no_mangle]
pub unsafe extern "C" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: same contract; no mode is read without O_CREAT.
    unsafe { open(path, flags, 0) }
}

/// glibc's checked `open64`.
///
/// # Safety
/// As for `open(2)` without `O_CREAT`.
#[no_mangle]
pub unsafe extern "C" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: same contract.
    unsafe { open(path, flags, 0) }
}

/// glibc's checked `openat`.
///
/// # Safety
/// As for `openat(2)` without `O_CREAT`.
#[no_mangle]
pub unsafe extern "C" fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: same contract.
    unsafe { openat(dirfd, path, flags, 0) }
}

/// glibc's checked `openat64`.
///
/// # Safety
/// As for `openat(2)` without `O_CREAT`.
#[no_mangle]
pub unsafe extern "C" fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: same contract.
    unsafe { openat(dirfd, path, flags, 0) }
}

// ---- exported: close, read, write ----

/// `close(2)`.
///
/// # Safety
/// As for `close(2)`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    // SAFETY: a plain descriptor call.
    route_fd(fd, || unsafe { real::close(fd) }, || close_fd(fd))
}

/// `close_range(2)`: BenchFS descriptors in the range are closed first.
///
/// # Safety
/// As for `close_range(2)`.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    guard(|| {
        // A child on its parent's memory (vfork) leaves the table alone: its descriptors are
        // its own copies, the table is the parent's.
        if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 && !state::borrowed_memory() {
            let (lo, hi) = (
                first.min(i32::MAX as u32) as c_int,
                last.min(i32::MAX as u32) as c_int,
            );
            let fds = state::lock().fds_in(lo, hi);
            for fd in fds {
                let _ = close_fd(fd);
            }
        }
        // SAFETY: a plain descriptor call.
        unsafe { real::close_range(first, last, flags) }
    })
}

/// `read(2)`.
///
/// # Safety
/// As for `read(2)`.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on unchanged.
        || unsafe { real::read(fd, buf, n) },
        || read_fd(fd, buf, n, None).map(|n| n as ssize_t),
    )
}

/// glibc's checked `read` (`_FORTIFY_SOURCE`).
///
/// # Safety
/// As for `read(2)`; `buflen` is the size of `buf`.
#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen {
        crate::diag::fatal("buffer overflow detected in read");
    }
    // SAFETY: same contract.
    unsafe { read(fd, buf, n) }
}

/// `write(2)`.
///
/// # Safety
/// As for `write(2)`.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on unchanged.
        || unsafe { real::write(fd, buf, n) },
        || write_fd(fd, buf, n, None).map(|n| n as ssize_t),
    )
}

/// `pread(2)`.
///
/// # Safety
/// As for `pread(2)`.
#[no_mangle]
pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on unchanged.
        || unsafe { real::pread(fd, buf, n, off) },
        || read_fd(fd, buf, n, position(off)?).map(|n| n as ssize_t),
    )
}

/// `pread64(2)`.
///
/// # Safety
/// As for `pread(2)`.
#[no_mangle]
pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t {
    // SAFETY: same contract.
    unsafe { pread(fd, buf, n, off) }
}

/// glibc's checked `pread`.
///
/// # Safety
/// As for `pread(2)`; `buflen` is the size of `buf`.
#[no_mangle]
pub unsafe extern "C" fn __pread_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    off: off_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen {
        crate::diag::fatal("buffer overflow detected in pread");
    }
    // SAFETY: same contract.
    unsafe { pread(fd, buf, n, off) }
}

/// glibc's checked `pread64`.
///
/// # Safety
/// As for `pread(2)`; `buflen` is the size of `buf`.
#[no_mangle]
pub unsafe extern "C" fn __pread64_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    off: off_t,
    buflen: size_t,
) -> ssize_t {
    // SAFETY: same contract.
    unsafe { __pread_chk(fd, buf, n, off, buflen) }
}

/// `pwrite(2)`.
///
/// # Safety
/// As for `pwrite(2)`.
#[no_mangle]
pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on unchanged.
        || unsafe { real::pwrite(fd, buf, n, off) },
        || write_fd(fd, buf, n, position(off)?).map(|n| n as ssize_t),
    )
}

/// `pwrite64(2)`.
///
/// # Safety
/// As for `pwrite(2)`.
#[no_mangle]
pub unsafe extern "C" fn pwrite64(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    // SAFETY: same contract.
    unsafe { pwrite(fd, buf, n, off) }
}

/// `readv(2)`.
///
/// # Safety
/// As for `readv(2)`.
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on unchanged.
        || unsafe { real::readv(fd, iov, count) },
        || {
            // SAFETY: the caller's iovecs.
            let list = unsafe { iovecs(iov, count)? };
            vectored(list, None, |b, n, at| read_fd(fd, b, n, at))
        },
    )
}

/// `writev(2)`.
///
/// # Safety
/// As for `writev(2)`.
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on unchanged.
        || unsafe { real::writev(fd, iov, count) },
        || {
            // SAFETY: the caller's iovecs.
            let list = unsafe { iovecs(iov, count)? };
            vectored(list, None, |b, n, at| write_fd(fd, b, n, at))
        },
    )
}

/// `preadv(2)`.
///
/// # Safety
/// As for `preadv(2)`.
#[no_mangle]
pub unsafe extern "C" fn preadv(fd: c_int, iov: *const iovec, count: c_int, off: off_t) -> ssize_t {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on unchanged.
        || unsafe { real::preadv(fd, iov, count, off) },
        || {
            // SAFETY: the caller's iovecs.
            let list = unsafe { iovecs(iov, count)? };
            vectored(list, position(off)?, |b, n, at| read_fd(fd, b, n, at))
        },
    )
}

/// `preadv64(2)`.
///
/// # Safety
/// As for `preadv(2)`.
#[no_mangle]
pub unsafe extern "C" fn preadv64(
    fd: c_int,
    iov: *const iovec,
    count: c_int,
    off: off_t,
) -> ssize_t {
    // SAFETY: same contract.
    unsafe { preadv(fd, iov, count, off) }
}

/// `pwritev(2)`.
///
/// # Safety
/// As for `pwritev(2)`.
#[no_mangle]
pub unsafe extern "C" fn pwritev(
    fd: c_int,
    iov: *const iovec,
    count: c_int,
    off: off_t,
) -> ssize_t {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on unchanged.
        || unsafe { real::pwritev(fd, iov, count, off) },
        || {
            // SAFETY: the caller's iovecs.
            let list = unsafe { iovecs(iov, count)? };
            vectored(list, position(off)?, |b, n, at| write_fd(fd, b, n, at))
        },
    )
}

/// `pwritev64(2)`.
///
/// # Safety
/// As for `pwritev(2)`.
#[no_mangle]
pub unsafe extern "C" fn pwritev64(
    fd: c_int,
    iov: *const iovec,
    count: c_int,
    off: off_t,
) -> ssize_t {
    // SAFETY: same contract.
    unsafe { pwritev(fd, iov, count, off) }
}

// ---- exported: seek, sync, truncate ----

/// `lseek(2)`, with `SEEK_DATA` and `SEEK_HOLE` (BenchFS reports no holes).
///
/// # Safety
/// As for `lseek(2)`.
#[no_mangle]
pub unsafe extern "C" fn lseek(fd: c_int, off: off_t, whence: c_int) -> off_t {
    // SAFETY: a plain descriptor call.
    route_fd(
        fd,
        || unsafe { real::lseek(fd, off, whence) },
        || seek_fd(fd, off, whence),
    )
}

/// `lseek64(2)`.
///
/// # Safety
/// As for `lseek(2)`.
#[no_mangle]
pub unsafe extern "C" fn lseek64(fd: c_int, off: off_t, whence: c_int) -> off_t {
    // SAFETY: same contract.
    unsafe { lseek(fd, off, whence) }
}

/// `fsync(2)`: the file's data and size durable on every target it was written to.
///
/// # Safety
/// As for `fsync(2)`.
#[no_mangle]
pub unsafe extern "C" fn fsync(fd: c_int) -> c_int {
    // SAFETY: a plain descriptor call.
    route_fd(fd, || unsafe { real::fsync(fd) }, || fsync_fd(fd))
}

/// `fdatasync(2)`: as [`fsync`] (the size is part of what must be durable).
///
/// # Safety
/// As for `fdatasync(2)`.
#[no_mangle]
pub unsafe extern "C" fn fdatasync(fd: c_int) -> c_int {
    // SAFETY: a plain descriptor call.
    route_fd(fd, || unsafe { real::fdatasync(fd) }, || fsync_fd(fd))
}

/// `ftruncate(2)`.
///
/// # Safety
/// As for `ftruncate(2)`.
#[no_mangle]
pub unsafe extern "C" fn ftruncate(fd: c_int, len: off_t) -> c_int {
    // SAFETY: a plain descriptor call.
    route_fd(
        fd,
        || unsafe { real::ftruncate(fd, len) },
        || truncate_fd(fd, len),
    )
}

/// `ftruncate64(2)`.
///
/// # Safety
/// As for `ftruncate(2)`.
#[no_mangle]
pub unsafe extern "C" fn ftruncate64(fd: c_int, len: off_t) -> c_int {
    // SAFETY: same contract.
    unsafe { ftruncate(fd, len) }
}

/// `truncate(2)`.
///
/// # Safety
/// As for `truncate(2)`.
#[no_mangle]
pub unsafe extern "C" fn truncate(path: *const c_char, len: off_t) -> c_int {
    // SAFETY: the caller's path is passed on unchanged.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::truncate(p, len),
            |p| {
                let len = u64::try_from(len).map_err(|_| Errno(libc::EINVAL))?;
                state::lock().client()?.truncate(&p, len)?;
                Ok(0)
            },
        )
    }
}

/// `truncate64(2)`.
///
/// # Safety
/// As for `truncate(2)`.
#[no_mangle]
pub unsafe extern "C" fn truncate64(path: *const c_char, len: off_t) -> c_int {
    // SAFETY: same contract.
    unsafe { truncate(path, len) }
}

/// `posix_fallocate(3)` (returns the error number): on BenchFS, extends the size.
///
/// # Safety
/// As for `posix_fallocate(3)`.
#[no_mangle]
pub unsafe extern "C" fn posix_fallocate(fd: c_int, off: off_t, len: off_t) -> c_int {
    if !state::is_ours(fd) {
        // SAFETY: a plain descriptor call.
        return unsafe { real::posix_fallocate(fd, off, len) };
    }
    match allocate(fd, 0, off, len) {
        Ok(()) => 0,
        Err(e) => e.0,
    }
}

/// `posix_fallocate64(3)`.
///
/// # Safety
/// As for `posix_fallocate(3)`.
#[no_mangle]
pub unsafe extern "C" fn posix_fallocate64(fd: c_int, off: off_t, len: off_t) -> c_int {
    // SAFETY: same contract.
    unsafe { posix_fallocate(fd, off, len) }
}

/// `fallocate(2)`: mode 0 extends the size on BenchFS; other modes are `EOPNOTSUPP`.
///
/// # Safety
/// As for `fallocate(2)`.
#[no_mangle]
pub unsafe extern "C" fn fallocate(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int {
    route_fd(
        fd,
        // SAFETY: a plain descriptor call.
        || unsafe { real::fallocate(fd, mode, off, len) },
        || allocate(fd, mode, off, len).map(|()| 0),
    )
}

/// `fallocate64(2)`.
///
/// # Safety
/// As for `fallocate(2)`.
#[no_mangle]
pub unsafe extern "C" fn fallocate64(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int {
    // SAFETY: same contract.
    unsafe { fallocate(fd, mode, off, len) }
}

fn allocate(fd: c_int, mode: c_int, off: off_t, len: off_t) -> Result<()> {
    if mode != 0 {
        return Err(Errno(libc::EOPNOTSUPP));
    }
    if off < 0 || len <= 0 {
        return Err(Errno(libc::EINVAL));
    }
    let end = (off as u64)
        .checked_add(len as u64)
        .ok_or(Errno(libc::EFBIG))?;
    let mut state = state::lock();
    let (client, desc) = state.client_and_desc(fd)?;
    match &mut desc.what {
        What::File(file) if !file.flags().write => Err(Errno(libc::EBADF)),
        What::File(file) if file.size() < end => Ok(client.truncate_file(file, end)?),
        What::File(_) => Ok(()),
        What::Dir(_) => Err(Errno(libc::ENODEV)),
    }
}

/// `posix_fadvise(2)` (returns the error number): advice on BenchFS files is accepted and
/// has no effect.
///
/// # Safety
/// As for `posix_fadvise(2)`.
#[no_mangle]
pub unsafe extern "C" fn posix_fadvise(fd: c_int, off: off_t, len: off_t, advice: c_int) -> c_int {
    if state::is_ours(fd) {
        return 0;
    }
    // SAFETY: a plain descriptor call.
    unsafe { real::posix_fadvise(fd, off, len, advice) }
}

/// `posix_fadvise64(2)`.
///
/// # Safety
/// As for `posix_fadvise(2)`.
#[no_mangle]
pub unsafe extern "C" fn posix_fadvise64(
    fd: c_int,
    off: off_t,
    len: off_t,
    advice: c_int,
) -> c_int {
    // SAFETY: same contract.
    unsafe { posix_fadvise(fd, off, len, advice) }
}
