//! Metadata and namespace calls on BenchFS paths and descriptors: stat in every variant,
//! access, unlink, mkdir, rmdir, rename, chmod, chown, utimes, statfs, extended attributes,
//! links, readlink, realpath, chdir, getcwd.
//!
//! What stat reports: the inode number is the file id (the root directory, which has none,
//! is `u64::MAX`), the device is [`DEVICE`], the owner is the calling user and group (BenchFS
//! stores none), the block size is the file's chunk size.

use std::ffi::{c_char, c_int, c_uint, c_void};

use benchfs::client::Stat;
use libc::{mode_t, size_t, ssize_t, timespec};

use crate::state::{self, Errno, What};
use crate::target::{route, route_fd, target, Target};
use crate::{done, fail, guard, real, Result};

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
unsafe fn empty_path(dirfd: c_int, path: *const c_char, flags: c_int) -> bool {
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

// ---- exported: access and the namespace ----

/// `access(2)`: existence, and the owner's permission bits.
///
/// # Safety
/// As for `access(2)`.
#[no_mangle]
pub unsafe extern "C" fn access(path: *const c_char, mode: c_int) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::access(p, mode),
            |p| Ok(state::lock().client()?.access(&p, mode).map(|()| 0)?),
        )
    }
}

/// `faccessat(2)`.
///
/// # Safety
/// As for `faccessat(2)`.
#[no_mangle]
pub unsafe extern "C" fn faccessat(
    dirfd: c_int,
    path: *const c_char,
    mode: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            dirfd,
            path,
            |d, p| real::faccessat(d, p, mode, flags),
            |p| Ok(state::lock().client()?.access(&p, mode).map(|()| 0)?),
        )
    }
}

fn unlink_path(path: &str, remove_dir: bool) -> Result<c_int> {
    let mut state = state::lock();
    let client = state.client()?;
    if remove_dir {
        client.rmdir(path)?;
    } else {
        client.unlink(path)?;
    }
    Ok(0)
}

/// `unlink(2)`.
///
/// # Safety
/// As for `unlink(2)`.
#[no_mangle]
pub unsafe extern "C" fn unlink(path: *const c_char) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::unlink(p),
            |p| unlink_path(&p, false),
        )
    }
}

/// `unlinkat(2)` (`AT_REMOVEDIR` removes a directory).
///
/// # Safety
/// As for `unlinkat(2)`.
#[no_mangle]
pub unsafe extern "C" fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            dirfd,
            path,
            |d, p| real::unlinkat(d, p, flags),
            |p| unlink_path(&p, flags & libc::AT_REMOVEDIR != 0),
        )
    }
}

/// `rmdir(2)`.
///
/// # Safety
/// As for `rmdir(2)`.
#[no_mangle]
pub unsafe extern "C" fn rmdir(path: *const c_char) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::rmdir(p),
            |p| unlink_path(&p, true),
        )
    }
}

fn mkdir_path(path: &str, mode: mode_t) -> Result<c_int> {
    let mode = mode & 0o7777 & !crate::files::umask();
    state::lock().client()?.mkdir(path, mode)?;
    Ok(0)
}

/// `mkdir(2)`.
///
/// # Safety
/// As for `mkdir(2)`.
#[no_mangle]
pub unsafe extern "C" fn mkdir(path: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::mkdir(p, mode),
            |p| mkdir_path(&p, mode),
        )
    }
}

/// `mkdirat(2)`.
///
/// # Safety
/// As for `mkdirat(2)`.
#[no_mangle]
pub unsafe extern "C" fn mkdirat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            dirfd,
            path,
            |d, p| real::mkdirat(d, p, mode),
            |p| mkdir_path(&p, mode),
        )
    }
}

/// Renames between (`from_dir`, `from`) and (`to_dir`, `to`): both BenchFS, both not (libc),
/// or one of each (`EXDEV`: programs then copy and remove).
///
/// # Safety
/// Both paths are NULL or NUL-terminated.
unsafe fn rename_any(
    from_dir: c_int,
    from: *const c_char,
    to_dir: c_int,
    to: *const c_char,
    flags: c_uint,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise on both paths.
        let (a, b) = match unsafe { (target(from_dir, from), target(to_dir, to)) } {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return fail(e),
        };
        let local = |t: &Target, dir: c_int, path: *const c_char| match t {
            Target::Local(c) => (libc::AT_FDCWD, c.as_ptr()),
            _ => (dir, path),
        };
        match (&a, &b) {
            (Target::Ours(a), Target::Ours(b)) => done(rename_ours(a, b, flags)),
            (Target::Ours(_), _) | (_, Target::Ours(_)) => fail(Errno(libc::EXDEV)),
            _ => {
                let ((fd1, p1), (fd2, p2)) = (local(&a, from_dir, from), local(&b, to_dir, to));
                // SAFETY: libc gets the caller's paths (or their resolved absolute forms).
                unsafe { real::renameat2(fd1, p1, fd2, p2, flags) }
            }
        }
    })
}

fn rename_ours(from: &str, to: &str, flags: c_uint) -> Result<c_int> {
    let mut state = state::lock();
    let client = state.client()?;
    match flags {
        0 => {}
        libc::RENAME_NOREPLACE => match client.stat(to) {
            Ok(_) => return Err(Errno(libc::EEXIST)),
            Err(e) if e.errno() == libc::ENOENT => {}
            Err(e) => return Err(e.into()),
        },
        _ => return Err(Errno(libc::EINVAL)),
    }
    client.rename(from, to)?;
    Ok(0)
}

/// `rename(2)`.
///
/// # Safety
/// As for `rename(2)`.
#[no_mangle]
pub unsafe extern "C" fn rename(from: *const c_char, to: *const c_char) -> c_int {
    // SAFETY: same contract.
    unsafe { rename_any(libc::AT_FDCWD, from, libc::AT_FDCWD, to, 0) }
}

/// `renameat(2)`.
///
/// # Safety
/// As for `renameat(2)`.
#[no_mangle]
pub unsafe extern "C" fn renameat(
    from_dir: c_int,
    from: *const c_char,
    to_dir: c_int,
    to: *const c_char,
) -> c_int {
    // SAFETY: same contract.
    unsafe { renameat2(from_dir, from, to_dir, to, 0) }
}

/// `renameat2(2)`: `RENAME_NOREPLACE` is honoured on BenchFS, `RENAME_EXCHANGE` is `EINVAL`.
///
/// # Safety
/// As for `renameat2(2)`.
#[no_mangle]
pub unsafe extern "C" fn renameat2(
    from_dir: c_int,
    from: *const c_char,
    to_dir: c_int,
    to: *const c_char,
    flags: c_uint,
) -> c_int {
    // SAFETY: same contract.
    unsafe { rename_any(from_dir, from, to_dir, to, flags) }
}

// ---- exported: attributes ----

fn chmod_path(path: &str, mode: mode_t) -> Result<c_int> {
    state::lock()
        .client()?
        .set_attr(path, Some(mode), None, None)?;
    Ok(0)
}

fn fd_path(fd: c_int) -> Result<String> {
    Ok(state::lock().desc(fd)?.path().to_string())
}

/// `chmod(2)`.
///
/// # Safety
/// As for `chmod(2)`.
#[no_mangle]
pub unsafe extern "C" fn chmod(path: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::chmod(p, mode),
            |p| chmod_path(&p, mode),
        )
    }
}

/// `fchmod(2)`.
///
/// # Safety
/// As for `fchmod(2)`.
#[no_mangle]
pub unsafe extern "C" fn fchmod(fd: c_int, mode: mode_t) -> c_int {
    route_fd(
        fd,
        // SAFETY: a plain descriptor call.
        || unsafe { real::fchmod(fd, mode) },
        || chmod_path(&fd_path(fd)?, mode),
    )
}

/// `fchmodat(2)`.
///
/// # Safety
/// As for `fchmodat(2)`.
#[no_mangle]
pub unsafe extern "C" fn fchmodat(
    dirfd: c_int,
    path: *const c_char,
    mode: mode_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            dirfd,
            path,
            |d, p| real::fchmodat(d, p, mode, flags),
            |p| chmod_path(&p, mode),
        )
    }
}

/// Owners: BenchFS files belong to whoever looks, so a change to the caller's own ids (or
/// -1, unchanged) succeeds once the file is found, and any other is `EPERM`.
fn chown_path(path: &str, uid: libc::uid_t, gid: libc::gid_t) -> Result<c_int> {
    stat_path(path)?;
    // SAFETY: plain identity queries.
    let (me, my_group) = unsafe { (libc::geteuid(), libc::getegid()) };
    if (uid == u32::MAX || uid == me) && (gid == u32::MAX || gid == my_group) {
        Ok(0)
    } else {
        Err(Errno(libc::EPERM))
    }
}

/// `chown(2)`: BenchFS files belong to whoever looks; a change to the caller's own ids (or
/// -1) succeeds once the file is found, any other is `EPERM`.
///
/// # Safety
/// As for `chown(2)`.
#[no_mangle]
pub unsafe extern "C" fn chown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::chown(p, uid, gid),
            |p| chown_path(&p, uid, gid),
        )
    }
}

/// `lchown(2)`.
///
/// # Safety
/// As for `lchown(2)`.
#[no_mangle]
pub unsafe extern "C" fn lchown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::lchown(p, uid, gid),
            |p| chown_path(&p, uid, gid),
        )
    }
}

/// `fchown(2)`.
///
/// # Safety
/// As for `fchown(2)`.
#[no_mangle]
pub unsafe extern "C" fn fchown(fd: c_int, uid: libc::uid_t, gid: libc::gid_t) -> c_int {
    route_fd(
        fd,
        // SAFETY: a plain descriptor call.
        || unsafe { real::fchown(fd, uid, gid) },
        || chown_path(&fd_path(fd)?, uid, gid),
    )
}

/// `fchownat(2)`.
///
/// # Safety
/// As for `fchownat(2)`.
#[no_mangle]
pub unsafe extern "C" fn fchownat(
    dirfd: c_int,
    path: *const c_char,
    uid: libc::uid_t,
    gid: libc::gid_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        if empty_path(dirfd, path, flags) {
            return fchown(dirfd, uid, gid);
        }
        route(
            dirfd,
            path,
            |d, p| real::fchownat(d, p, uid, gid, flags),
            |p| chown_path(&p, uid, gid),
        )
    }
}

/// The (atime, mtime) a `utimensat` times array asks for (`None`: leave unchanged).
///
/// # Safety
/// `times` is NULL or points to two timespecs.
unsafe fn wanted_times(times: *const timespec) -> Result<(Option<i64>, Option<i64>)> {
    let now = benchfs::server::meta::now_ns();
    if times.is_null() {
        return Ok((Some(now), Some(now)));
    }
    // SAFETY: two timespecs by the caller's promise.
    let pair = unsafe { std::slice::from_raw_parts(times, 2) };
    let one = |t: &timespec| match t.tv_nsec {
        libc::UTIME_OMIT => Ok(None),
        libc::UTIME_NOW => Ok(Some(now)),
        ns if (0..1_000_000_000).contains(&ns) => Ok(Some(t.tv_sec * 1_000_000_000 + ns)),
        _ => Err(Errno(libc::EINVAL)),
    };
    Ok((one(&pair[0])?, one(&pair[1])?))
}

/// Sets the times of `path`; the files of this process open on it then close without
/// moving the modification time again (tar sets the times before it closes).
fn set_times(path: &str, (atime, mtime): (Option<i64>, Option<i64>)) -> Result<c_int> {
    let mut state = state::lock();
    let client = state.client()?;
    if atime.is_none() && mtime.is_none() {
        client.stat(path)?;
        return Ok(0);
    }
    let st = client.set_attr(path, None, atime, mtime)?;
    if mtime.is_some() {
        state.each_file(|file| {
            if file.file_id() == st.ino {
                file.times_were_set();
            }
        });
    }
    Ok(0)
}

/// `utimensat(2)`.
///
/// # Safety
/// As for `utimensat(2)`.
#[no_mangle]
pub unsafe extern "C" fn utimensat(
    dirfd: c_int,
    path: *const c_char,
    times: *const timespec,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        if path.is_null() && state::is_ours(dirfd) {
            return futimens(dirfd, times);
        }
        route(
            dirfd,
            path,
            |d, p| real::utimensat(d, p, times, flags),
            |p| set_times(&p, wanted_times(times)?),
        )
    }
}

/// `futimens(3)`.
///
/// # Safety
/// As for `futimens(3)`.
#[no_mangle]
pub unsafe extern "C" fn futimens(fd: c_int, times: *const timespec) -> c_int {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on.
        || unsafe { real::futimens(fd, times) },
        // SAFETY: the caller's times array.
        || set_times(&fd_path(fd)?, unsafe { wanted_times(times)? }),
    )
}

/// `utimes(2)`.
///
/// # Safety
/// As for `utimes(2)`.
#[no_mangle]
pub unsafe extern "C" fn utimes(path: *const c_char, times: *const libc::timeval) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::utimes(p, times),
            |p| {
                if times.is_null() {
                    return set_times(&p, wanted_times(std::ptr::null())?);
                }
                // SAFETY: two timevals by the caller's promise.
                let tv = std::slice::from_raw_parts(times, 2);
                let ns = |t: &libc::timeval| Some(t.tv_sec * 1_000_000_000 + t.tv_usec * 1000);
                set_times(&p, (ns(&tv[0]), ns(&tv[1])))
            },
        )
    }
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
    // SAFETY: the caller's arguments are passed on.
    route_fd(
        fd,
        || unsafe { real::fstatfs(fd, buf) },
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
    // SAFETY: the caller's arguments are passed on.
    route_fd(
        fd,
        || unsafe { real::fstatvfs(fd, buf) },
        || unsafe { fill_statvfs(buf) },
    )
}

stat_aliases! {
    statfs64 => statfs(path: *const c_char, buf: *mut libc::statfs);
    fstatfs64 => fstatfs(fd: c_int, buf: *mut libc::statfs);
    statvfs64 => statvfs(path: *const c_char, buf: *mut libc::statvfs);
    fstatvfs64 => fstatvfs(fd: c_int, buf: *mut libc::statvfs);
}

// ---- exported: extended attributes, links ----

macro_rules! not_supported_on_paths {
    ($($name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty, $errno:expr;)*) => {
        $(
            /// Passed to libc, except on BenchFS paths, which answer with an error of their own
            /// (BenchFS has no extended attributes and no links).
            ///
            /// # Safety
            /// As for the libc call of this name.
            #[no_mangle]
            pub unsafe extern "C" fn $name(path: *const c_char, $($arg: $ty),*) -> $ret {
                // SAFETY: the caller's arguments are passed on.
                unsafe {
                    route(
                        libc::AT_FDCWD,
                        path,
                        |_, p| real::$name(p, $($arg),*),
                        |p| {
                            stat_path(&p)?;
                            Err(Errno($errno))
                        },
                    )
                }
            }
        )*
    };
}

not_supported_on_paths! {
    getxattr(name: *const c_char, value: *mut c_void, size: size_t) -> ssize_t, libc::ENOTSUP;
    lgetxattr(name: *const c_char, value: *mut c_void, size: size_t) -> ssize_t, libc::ENOTSUP;
    listxattr(list: *mut c_char, size: size_t) -> ssize_t, libc::ENOTSUP;
    llistxattr(list: *mut c_char, size: size_t) -> ssize_t, libc::ENOTSUP;
    setxattr(
        name: *const c_char, value: *const c_void, size: size_t, flags: c_int
    ) -> c_int, libc::ENOTSUP;
    lsetxattr(
        name: *const c_char, value: *const c_void, size: size_t, flags: c_int
    ) -> c_int, libc::ENOTSUP;
    removexattr(name: *const c_char) -> c_int, libc::ENOTSUP;
    lremovexattr(name: *const c_char) -> c_int, libc::ENOTSUP;
    readlink(buf: *mut c_char, size: size_t) -> ssize_t, libc::EINVAL;
}

/// `fgetxattr(2)`: `ENOTSUP` on BenchFS descriptors.
///
/// # Safety
/// As for `fgetxattr(2)`.
#[no_mangle]
pub unsafe extern "C" fn fgetxattr(
    fd: c_int,
    name: *const c_char,
    value: *mut c_void,
    size: size_t,
) -> ssize_t {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on.
        || unsafe { real::fgetxattr(fd, name, value, size) },
        || Err(Errno(libc::ENOTSUP)),
    )
}

/// `flistxattr(2)`: `ENOTSUP` on BenchFS descriptors.
///
/// # Safety
/// As for `flistxattr(2)`.
#[no_mangle]
pub unsafe extern "C" fn flistxattr(fd: c_int, list: *mut c_char, size: size_t) -> ssize_t {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on.
        || unsafe { real::flistxattr(fd, list, size) },
        || Err(Errno(libc::ENOTSUP)),
    )
}

/// `fsetxattr(2)`: `ENOTSUP` on BenchFS descriptors (ACL tools then fall back to chmod).
///
/// # Safety
/// As for `fsetxattr(2)`.
#[no_mangle]
pub unsafe extern "C" fn fsetxattr(
    fd: c_int,
    name: *const c_char,
    value: *const c_void,
    size: size_t,
    flags: c_int,
) -> c_int {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on.
        || unsafe { real::fsetxattr(fd, name, value, size, flags) },
        || Err(Errno(libc::ENOTSUP)),
    )
}

/// `fremovexattr(2)`: `ENOTSUP` on BenchFS descriptors.
///
/// # Safety
/// As for `fremovexattr(2)`.
#[no_mangle]
pub unsafe extern "C" fn fremovexattr(fd: c_int, name: *const c_char) -> c_int {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on.
        || unsafe { real::fremovexattr(fd, name) },
        || Err(Errno(libc::ENOTSUP)),
    )
}

/// `readlinkat(2)`: nothing on BenchFS is a symbolic link (`EINVAL`).
///
/// # Safety
/// As for `readlinkat(2)`.
#[no_mangle]
pub unsafe extern "C" fn readlinkat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    size: size_t,
) -> ssize_t {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            dirfd,
            path,
            |d, p| real::readlinkat(d, p, buf, size),
            |p| {
                stat_path(&p)?;
                Err(Errno(libc::EINVAL))
            },
        )
    }
}

/// Links between (`from_dir`, `from`) and (`to_dir`, `to`): `EPERM` when the new name is on
/// BenchFS (no hard or symbolic links there), `EXDEV` across.
///
/// # Safety
/// Both paths are NULL or NUL-terminated.
unsafe fn link_any(
    from_dir: c_int,
    from: *const c_char,
    to_dir: c_int,
    to: *const c_char,
    real_link: impl FnOnce() -> c_int,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise on both paths.
        let (a, b) = match unsafe { (target(from_dir, from), target(to_dir, to)) } {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return fail(e),
        };
        match (a, b) {
            (_, Target::Ours(_)) => fail(Errno(libc::EPERM)),
            (Target::Ours(_), _) => fail(Errno(libc::EXDEV)),
            _ => real_link(),
        }
    })
}

/// `link(2)`.
///
/// # Safety
/// As for `link(2)`.
#[no_mangle]
pub unsafe extern "C" fn link(from: *const c_char, to: *const c_char) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        link_any(libc::AT_FDCWD, from, libc::AT_FDCWD, to, || {
            real::link(from, to)
        })
    }
}

/// `linkat(2)`.
///
/// # Safety
/// As for `linkat(2)`.
#[no_mangle]
pub unsafe extern "C" fn linkat(
    from_dir: c_int,
    from: *const c_char,
    to_dir: c_int,
    to: *const c_char,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        link_any(from_dir, from, to_dir, to, || {
            real::linkat(from_dir, from, to_dir, to, flags)
        })
    }
}

/// `symlink(2)`: `EPERM` when the link would be on BenchFS.
///
/// # Safety
/// As for `symlink(2)`.
#[no_mangle]
pub unsafe extern "C" fn symlink(target_path: *const c_char, path: *const c_char) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            libc::AT_FDCWD,
            path,
            |_, p| real::symlink(target_path, p),
            |_| Err(Errno(libc::EPERM)),
        )
    }
}

/// `symlinkat(2)`.
///
/// # Safety
/// As for `symlinkat(2)`.
#[no_mangle]
pub unsafe extern "C" fn symlinkat(
    target_path: *const c_char,
    dirfd: c_int,
    path: *const c_char,
) -> c_int {
    // SAFETY: the caller's arguments are passed on.
    unsafe {
        route(
            dirfd,
            path,
            |d, p| real::symlinkat(target_path, d, p),
            |_| Err(Errno(libc::EPERM)),
        )
    }
}

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
