//! Namespace and attribute calls on BenchFS paths and descriptors: access, unlink, mkdir,
//! rmdir, rename, chmod, chown, utimes.

use std::ffi::{c_char, c_int, c_uint};

use libc::{mode_t, timespec};

use crate::stat::{empty_path, stat_path};
use crate::state::{self, Errno};
use crate::target::{route, route_fd, target, Target};
use crate::{done, fail, guard, real, Result};

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
