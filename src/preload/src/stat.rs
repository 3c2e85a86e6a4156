//! stat in every variant, and statfs: what BenchFS paths and descriptors report.
//!
//! The inode number is the file id (the root directory, which has none, is `u64::MAX`), the
//! device is [`DEVICE`], the owner is the calling user and group (BenchFS stores none), the
//! block size is the file's chunk size. statfs sums the capacity of every target.

use std::ffi::{c_char, c_int, c_uint};

use benchfs::client::Stat;

use crate::state::{self, Errno, What};
use crate::target::{route, route_fd};
use crate::{done, guard, real, Result};

/// The device number BenchFS files report (major 3061, minor 1: no local device has it).
pub const DEVICE: u64 = (0xbf5 << 8) | 1;
/// `f_type` of statfs: "BFS1".
pub const MAGIC: i64 = 0x4246_5331;

/// Stat of BenchFS path `path`.
pub fn stat_path(path: &str) -> Result<Stat> {
    Ok(state::lock().client()?.stat(path)?)
}

/// Stat of BenchFS descriptor `fd`: its path's inode, with the size this handle knows when it
/// wrote more; a file renamed or unlinked since it was opened reports what the handle knows.
pub fn stat_fd(fd: c_int) -> Result<Stat> {
    let mut state = state::lock();
    let (client, desc) = state.client_and_desc(fd)?;
    match &desc.what {
        What::Dir(p) => Ok(client.stat(p)?),
        What::File(file) => match client.stat(file.path()) {
            Ok(st) if st.ino == file.file_id() => Ok(Stat {
                size: st.size.max(file.size()),
                blocks: st.size.max(file.size()).div_ceil(512),
                ..st
            }),
            Ok(_) => Ok(detached(file)),
            Err(e) if e.errno() == libc::ENOENT => Ok(detached(file)),
            Err(e) => Err(e.into()),
        },
    }
}

fn detached(file: &benchfs::client::File) -> Stat {
    Stat {
        ino: file.file_id(),
        mode: libc::S_IFREG | 0o644,
        nlink: 0,
        size: file.size(),
        blocks: file.size().div_ceil(512),
        blksize: file.chunk_size(),
        ..Stat::default()
    }
}

fn inode_number(st: &Stat) -> u64 {
    if st.ino == 0 {
        u64::MAX
    } else {
        st.ino
    }
}

fn split_ns(ns: i64) -> (i64, i64) {
    (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Fills a `struct stat`.
///
/// # Safety
/// `out` points to a writable `struct stat`.
pub unsafe fn fill_stat(out: *mut libc::stat, st: &Stat) -> Result<c_int> {
    if out.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: all-zero is a valid `struct stat`.
    let mut s: libc::stat = unsafe { std::mem::zeroed() };
    s.st_dev = DEVICE;
    s.st_ino = inode_number(st);
    s.st_mode = st.mode;
    s.st_nlink = u64::from(st.nlink);
    // SAFETY: plain identity queries.
    (s.st_uid, s.st_gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    s.st_size = st.size as i64;
    s.st_blksize = st.blksize.max(4096) as i64;
    s.st_blocks = st.blocks as i64;
    (s.st_atime, s.st_atime_nsec) = split_ns(st.atime_ns);
    (s.st_mtime, s.st_mtime_nsec) = split_ns(st.mtime_ns);
    (s.st_ctime, s.st_ctime_nsec) = split_ns(st.ctime_ns);
    // SAFETY: `out` is writable by the caller's promise.
    unsafe { out.write(s) };
    Ok(0)
}

/// Fills a `struct statx` (the basic fields).
///
/// # Safety
/// `out` points to a writable `struct statx`.
unsafe fn fill_statx(out: *mut libc::statx, st: &Stat) -> Result<c_int> {
    if out.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    let stamp = |ns: i64| {
        let (sec, nsec) = split_ns(ns);
        // SAFETY: all-zero is a valid timestamp.
        let mut t: libc::statx_timestamp = unsafe { std::mem::zeroed() };
        t.tv_sec = sec;
        t.tv_nsec = nsec as u32;
        t
    };
    // SAFETY: all-zero is a valid `struct statx`.
    let mut s: libc::statx = unsafe { std::mem::zeroed() };
    s.stx_mask = libc::STATX_BASIC_STATS;
    s.stx_blksize = st.blksize.clamp(4096, u32::MAX as u64) as u32;
    s.stx_nlink = st.nlink;
    // SAFETY: plain identity queries.
    (s.stx_uid, s.stx_gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    s.stx_mode = st.mode as u16;
    s.stx_ino = inode_number(st);
    s.stx_size = st.size;
    s.stx_blocks = st.blocks;
    s.stx_atime = stamp(st.atime_ns);
    s.stx_mtime = stamp(st.mtime_ns);
    s.stx_ctime = stamp(st.ctime_ns);
    s.stx_dev_major = (DEVICE >> 8) as u32;
    s.stx_dev_minor = (DEVICE & 0xff) as u32;
    // SAFETY: `out` is writable by the caller's promise.
    unsafe { out.write(s) };
    Ok(0)
}

/// Whether (`dirfd`, `path`, `flags`) names `dirfd` itself (`AT_EMPTY_PATH` with "").
///
/// # Safety
/// `path` is NULL or NUL-terminated.
pub(crate) unsafe fn empty_path(dirfd: c_int, path: *const c_char, flags: c_int) -> bool {
    // SAFETY: the caller's promise on `path`.
    let empty = path.is_null() || unsafe { *path } == 0;
    flags & libc::AT_EMPTY_PATH != 0 && empty && state::is_ours(dirfd)
}

// ---- exported: stat ----

/// `stat(2)`.
///
/// # Safety
/// As for `stat(2)`.
#[no_mangle]
pub unsafe extern "C" fn stat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::stat(p, buf),
            |p| fill_stat(buf, &stat_path(&p)?),
        )
    }
}

/// `lstat(2)` (BenchFS has no symbolic links: as [`stat`]).
///
/// # Safety
/// As for `lstat(2)`.
#[no_mangle]
pub unsafe extern "C" fn lstat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::lstat(p, buf),
            |p| fill_stat(buf, &stat_path(&p)?),
        )
    }
}

/// `fstat(2)`.
///
/// # Safety
/// As for `fstat(2)`.
#[no_mangle]
pub unsafe extern "C" fn fstat(fd: c_int, buf: *mut libc::stat) -> c_int {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on.
        || unsafe { real::fstat(fd, buf) },
        // SAFETY: the caller's buffer.
        || unsafe { fill_stat(buf, &stat_fd(fd)?) },
    )
}

/// `fstatat(2)`.
///
/// # Safety
/// As for `fstatat(2)`.
#[no_mangle]
pub unsafe extern "C" fn fstatat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        if empty_path(dirfd, path, flags) {
            return fstat(dirfd, buf);
        }
        route(
            dirfd,
            path,
            |d, p| real::fstatat(d, p, buf, flags),
            |p| fill_stat(buf, &stat_path(&p)?),
        )
    }
}

/// `statx(2)`.
///
/// # Safety
/// As for `statx(2)`.
#[no_mangle]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: c_uint,
    buf: *mut libc::statx,
) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        if empty_path(dirfd, path, flags) {
            return guard(|| done(stat_fd(dirfd).and_then(|st| fill_statx(buf, &st))));
        }
        route(
            dirfd,
            path,
            |d, p| real::statx(d, p, flags, mask, buf),
            |p| fill_statx(buf, &stat_path(&p)?),
        )
    }
}

macro_rules! stat_aliases {
    ($($alias:ident => $target:ident ( $($arg:ident : $ty:ty),* );)*) => {
        $(
            /// The 64-bit-offset name of the same call (identical on 64-bit Linux).
            ///
            /// # Safety
            /// As for the call it names.
            #[no_mangle]
            pub unsafe extern "C" fn $alias($($arg: $ty),*) -> c_int {
                // SAFETY: same contract.
                unsafe { $target($($arg),*) }
            }
        )*
    };
}

stat_aliases! {
    stat64 => stat(path: *const c_char, buf: *mut libc::stat);
    lstat64 => lstat(path: *const c_char, buf: *mut libc::stat);
    fstat64 => fstat(fd: c_int, buf: *mut libc::stat);
    fstatat64 => fstatat(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int);
}

/// glibc's pre-2.33 `stat` entry point, used by older binaries.
///
/// # Safety
/// As for `stat(2)`.
#[no_mangle]
pub unsafe extern "C" fn __xstat(_ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { stat(path, buf) }
}

/// glibc's pre-2.33 `lstat` entry point.
///
/// # Safety
/// As for `lstat(2)`.
#[no_mangle]
pub unsafe extern "C" fn __lxstat(_ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { lstat(path, buf) }
}

/// glibc's pre-2.33 `fstat` entry point.
///
/// # Safety
/// As for `fstat(2)`.
#[no_mangle]
pub unsafe extern "C" fn __fxstat(_ver: c_int, fd: c_int, buf: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { fstat(fd, buf) }
}

/// glibc's pre-2.33 `fstatat` entry point.
///
/// # Safety
/// As for `fstatat(2)`.
#[no_mangle]
pub unsafe extern "C" fn __fxstatat(
    _ver: c_int,
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    // SAFETY: same contract.
    unsafe { fstatat(dirfd, path, buf, flags) }
}

stat_aliases! {
    __xstat64 => __xstat(ver: c_int, path: *const c_char, buf: *mut libc::stat);
    __lxstat64 => __lxstat(ver: c_int, path: *const c_char, buf: *mut libc::stat);
    __fxstat64 => __fxstat(ver: c_int, fd: c_int, buf: *mut libc::stat);
    __fxstatat64 => __fxstatat(
        ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int
    );
}

// ---- exported: statfs ----

fn fs_stats() -> Result<benchfs::client::StatFs> {
    Ok(state::lock().client()?.statfs()?)
}

/// Fills a `struct statfs` (`MAGIC` type, 4 KiB blocks).
///
/// # Safety
/// `out` points to a writable `struct statfs`.
unsafe fn fill_statfs(out: *mut libc::statfs) -> Result<c_int> {
    if out.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    let fs = fs_stats()?;
    // SAFETY: all-zero is a valid `struct statfs`.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    s.f_type = MAGIC;
    s.f_bsize = 4096;
    s.f_frsize = 4096;
    s.f_blocks = fs.total_bytes / 4096;
    s.f_bfree = fs.free_bytes / 4096;
    s.f_bavail = fs.available_bytes / 4096;
    s.f_files = fs.files + (1 << 32);
    s.f_ffree = 1 << 32;
    s.f_namelen = benchfs::path::NAME_MAX_BYTES as i64;
    // SAFETY: writable by the caller's promise.
    unsafe { out.write(s) };
    Ok(0)
}

/// Fills a `struct statvfs`.
///
/// # Safety
/// `out` points to a writable `struct statvfs`.
unsafe fn fill_statvfs(out: *mut libc::statvfs) -> Result<c_int> {
    if out.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    let fs = fs_stats()?;
    // SAFETY: all-zero is a valid `struct statvfs`.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    s.f_bsize = 4096;
    s.f_frsize = 4096;
    s.f_blocks = fs.total_bytes / 4096;
    s.f_bfree = fs.free_bytes / 4096;
    s.f_bavail = fs.available_bytes / 4096;
    s.f_files = fs.files + (1 << 32);
    s.f_ffree = 1 << 32;
    s.f_favail = 1 << 32;
    s.f_namemax = benchfs::path::NAME_MAX_BYTES as u64;
    // SAFETY: writable by the caller's promise.
    unsafe { out.write(s) };
    Ok(0)
}

/// `statfs(2)`.
///
/// # Safety
/// As for `statfs(2)`.
#[no_mangle]
pub unsafe extern "C" fn statfs(path: *const c_char, buf: *mut libc::statfs) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::statfs(p, buf),
            |p| {
                stat_path(&p)?;
                fill_statfs(buf)
            },
        )
    }
}

/// `fstatfs(2)`.
///
/// # Safety
/// As for `fstatfs(2)`.
#[no_mangle]
pub unsafe extern "C" fn fstatfs(fd: c_int, buf: *mut libc::statfs) -> c_int {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on.
        || unsafe { real::fstatfs(fd, buf) },
        // SAFETY: the caller's buffer, writable by the contract of fstatfs.
        || unsafe { fill_statfs(buf) },
    )
}

/// `statvfs(3)`.
///
/// # Safety
/// As for `statvfs(3)`.
#[no_mangle]
pub unsafe extern "C" fn statvfs(path: *const c_char, buf: *mut libc::statvfs) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::statvfs(p, buf),
            |p| {
                stat_path(&p)?;
                fill_statvfs(buf)
            },
        )
    }
}

/// `fstatvfs(3)`.
///
/// # Safety
/// As for `fstatvfs(3)`.
#[no_mangle]
pub unsafe extern "C" fn fstatvfs(fd: c_int, buf: *mut libc::statvfs) -> c_int {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on.
        || unsafe { real::fstatvfs(fd, buf) },
        // SAFETY: the caller's buffer, writable by the contract of fstatvfs.
        || unsafe { fill_statvfs(buf) },
    )
}

stat_aliases! {
    statfs64 => statfs(path: *const c_char, buf: *mut libc::statfs);
    fstatfs64 => fstatfs(fd: c_int, buf: *mut libc::statfs);
    statvfs64 => statvfs(path: *const c_char, buf: *mut libc::statvfs);
    fstatvfs64 => fstatvfs(fd: c_int, buf: *mut libc::statvfs);
}
