//! What BenchFS does not have, answered with a clear error on BenchFS paths and descriptors
//! (everything else passes to libc): extended attributes (`ENOTSUP`), hard and symbolic links
//! (`EPERM`, `EXDEV` across file systems), `readlink` (nothing is a link: `EINVAL`), memory
//! mapping (`ENODEV`), ioctls (`ENOTTY`), locks (`ENOLCK`), and the kernel's copy paths
//! `copy_file_range` (`EXDEV`) and `sendfile` (`EINVAL`), after which programs copy with read
//! and write.

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void};

use libc::{off_t, size_t, ssize_t};

use crate::stat::stat_path;
use crate::state::{self, Errno};
use crate::target::{route, route_fd, target, Target};
use crate::{fail, guard, real};

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

// ---- exported: descriptor calls ----

/// `ioctl(2)`: no ioctl applies to a BenchFS file (`ENOTTY`).
///
/// # Safety
/// As for `ioctl(2)`.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: c_ulong) -> c_int {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on unchanged.
        || unsafe { real::ioctl(fd, request, arg) },
        || Err(Errno(libc::ENOTTY)),
    )
}

/// `isatty(3)`: a BenchFS file is no terminal.
///
/// # Safety
/// As for `isatty(3)`.
#[no_mangle]
pub unsafe extern "C" fn isatty(fd: c_int) -> c_int {
    if state::is_ours(fd) {
        crate::set_errno(libc::ENOTTY);
        return 0;
    }
    // SAFETY: a plain descriptor call.
    unsafe { real::isatty(fd) }
}

/// `flock(2)`: BenchFS has no locks (`ENOLCK`).
///
/// # Safety
/// As for `flock(2)`.
#[no_mangle]
pub unsafe extern "C" fn flock(fd: c_int, op: c_int) -> c_int {
    // SAFETY: a plain descriptor call.
    route_fd(
        fd,
        || unsafe { real::flock(fd, op) },
        || Err(Errno(libc::ENOLCK)),
    )
}

/// `mmap(2)`: BenchFS files cannot be mapped (`ENODEV`). Once the client is connected, UCX's
/// memory hooks patch the `mmap` of every loaded object and the kernel answers instead
/// (`EBADF` for the placeholder descriptor): the mapping fails either way.
///
/// # Safety
/// As for `mmap(2)`.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    if flags & libc::MAP_ANONYMOUS == 0 && state::is_ours(fd) {
        crate::set_errno(libc::ENODEV);
        return libc::MAP_FAILED;
    }
    // SAFETY: the caller's arguments are passed on unchanged.
    unsafe { real::mmap(addr, len, prot, flags, fd, off) }
}

/// `mmap64(2)`.
///
/// # Safety
/// As for `mmap(2)`.
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    // SAFETY: same contract.
    unsafe { mmap(addr, len, prot, flags, fd, off) }
}

/// `copy_file_range(2)`: across BenchFS and anything else, `EXDEV` (programs then copy with
/// read and write).
///
/// # Safety
/// As for `copy_file_range(2)`.
#[no_mangle]
pub unsafe extern "C" fn copy_file_range(
    fd_in: c_int,
    off_in: *mut i64,
    fd_out: c_int,
    off_out: *mut i64,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    if state::is_ours(fd_in) || state::is_ours(fd_out) {
        return fail(Errno(libc::EXDEV));
    }
    // SAFETY: the caller's arguments are passed on unchanged.
    unsafe { real::copy_file_range(fd_in, off_in, fd_out, off_out, len, flags) }
}

/// `sendfile(2)`: not for BenchFS descriptors (`EINVAL`, after which programs copy with
/// read and write).
///
/// # Safety
/// As for `sendfile(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendfile(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut off_t,
    count: size_t,
) -> ssize_t {
    if state::is_ours(out_fd) || state::is_ours(in_fd) {
        return fail(Errno(libc::EINVAL));
    }
    // SAFETY: the caller's arguments are passed on unchanged.
    unsafe { real::sendfile(out_fd, in_fd, offset, count) }
}

/// `sendfile64(2)`.
///
/// # Safety
/// As for `sendfile(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendfile64(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut off_t,
    count: size_t,
) -> ssize_t {
    // SAFETY: same contract.
    unsafe { sendfile(out_fd, in_fd, offset, count) }
}
