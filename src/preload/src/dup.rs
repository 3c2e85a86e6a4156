//! Duplicated descriptors: `dup`, `dup2`, `dup3` and `fcntl` on BenchFS descriptors. A
//! duplicate is a new kernel descriptor made from the placeholder, sharing the open
//! description (offset, status flags) like the kernel's duplicates do; close-on-exec belongs
//! to each (real) descriptor.

use std::ffi::{c_int, c_ulong};

use crate::files::STATUS_FLAGS;
use crate::state::{self, Errno};
use crate::target::route_fd;
use crate::{done, fail, guard, real, Result};

/// Makes `to` (a new kernel descriptor made from `fd`'s placeholder) share `fd`'s description.
fn adopt(fd: c_int, to: c_int) -> Result<c_int> {
    if to < 0 {
        return Err(Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EBADF),
        ));
    }
    if to >= state::FD_LIMIT {
        // SAFETY: closes the descriptor the dup just made.
        unsafe { real::close(to) };
        return Err(Errno(libc::EMFILE));
    }
    state::lock().share(fd, to)?;
    Ok(to)
}

/// `dup2`/`dup3` onto `to`: a BenchFS descriptor there is closed first, like the kernel does.
fn dup_onto(fd: c_int, to: c_int, flags: c_int) -> c_int {
    guard(|| {
        let ours = state::is_ours(fd);
        if fd == to {
            // dup2 of a descriptor onto itself changes nothing (dup3 refuses it).
            return if flags == -1 {
                to
            } else {
                fail(Errno(libc::EINVAL))
            };
        }
        if ours {
            // What the program wrote to the standard stream so far goes where it pointed.
            crate::stdio::flush_standard(to);
        }
        if state::is_ours(to) {
            if let Err(e) = state::lock().release(to) {
                crate::diag::say(&format!("closing descriptor {to} for dup2: {e:?}"));
            }
        }
        // SAFETY: plain descriptor calls; `fd` is the caller's or our placeholder.
        let new = unsafe {
            if flags == -1 {
                real::dup2(fd, to)
            } else {
                real::dup3(fd, to, flags)
            }
        };
        if !ours || new < 0 {
            return new;
        }
        let new = done(adopt(fd, new));
        if new >= 0 {
            crate::stdio::standard_now_benchfs(new);
        }
        new
    })
}

fn fcntl_ours(fd: c_int, cmd: c_int, arg: c_ulong) -> Result<c_int> {
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            // SAFETY: duplicates the placeholder of `fd`.
            let new = unsafe { real::fcntl(fd, cmd, arg) };
            adopt(fd, new)
        }
        // Close-on-exec belongs to the (real) placeholder descriptor.
        libc::F_GETFD | libc::F_SETFD => {
            // SAFETY: as fcntl(2) on the placeholder.
            let rc = unsafe { real::fcntl(fd, cmd, arg) };
            if rc < 0 {
                return Err(Errno(libc::EBADF));
            }
            Ok(rc)
        }
        libc::F_GETFL => Ok(state::lock().desc(fd)?.flags | libc::O_LARGEFILE),
        libc::F_SETFL => {
            let mut state = state::lock();
            let desc = state.desc(fd)?;
            desc.flags = (desc.flags & !STATUS_FLAGS) | (arg as c_int & STATUS_FLAGS);
            Ok(0)
        }
        libc::F_GETLK
        | libc::F_SETLK
        | libc::F_SETLKW
        | libc::F_OFD_GETLK
        | libc::F_OFD_SETLK
        | libc::F_OFD_SETLKW => Err(Errno(libc::ENOLCK)),
        _ => Err(Errno(libc::EINVAL)),
    }
}

// ---- exported: dup, fcntl ----

/// `dup(2)`: the new descriptor shares the BenchFS description.
///
/// # Safety
/// As for `dup(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    route_fd(
        fd,
        // SAFETY: a plain descriptor call.
        || unsafe { real::dup(fd) },
        // SAFETY: duplicates the placeholder of `fd`.
        || adopt(fd, unsafe { real::dup(fd) }),
    )
}

/// `dup2(2)`.
///
/// # Safety
/// As for `dup2(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    if !state::is_ours(fd) && !state::is_ours(to) {
        // SAFETY: a plain descriptor call.
        let rc = unsafe { real::dup2(fd, to) };
        if rc >= 0 && state::borrowed_memory() {
            crate::exec::note_borrowed_dup(fd, to);
        }
        return rc;
    }
    dup_onto(fd, to, -1)
}

/// `dup3(2)`.
///
/// # Safety
/// As for `dup3(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    if !state::is_ours(fd) && !state::is_ours(to) {
        // SAFETY: a plain descriptor call.
        let rc = unsafe { real::dup3(fd, to, flags) };
        if rc >= 0 && state::borrowed_memory() {
            crate::exec::note_borrowed_dup(fd, to);
        }
        return rc;
    }
    dup_onto(fd, to, flags)
}

/// `fcntl(2)`: on BenchFS descriptors, duplication, descriptor flags, status flags; locks
/// are `ENOLCK`, other commands `EINVAL`. The argument is read as the third integer argument
/// (see [`crate::files::open`]).
///
/// # Safety
/// As for `fcntl(2)`.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    route_fd(
        fd,
        // SAFETY: the caller's arguments are passed on unchanged.
        || unsafe { real::fcntl(fd, cmd, arg) },
        || fcntl_ours(fd, cmd, arg),
    )
}

/// `fcntl64(2)`.
///
/// # Safety
/// As for `fcntl(2)`.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: same contract.
    unsafe { fcntl(fd, cmd, arg) }
}
