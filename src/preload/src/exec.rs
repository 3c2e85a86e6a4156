//! `exec` with BenchFS descriptors open: those without close-on-exec (a shell's redirection
//! `cmd > /benchfs/f` leaves one on descriptor 1) go on working in the new program.
//!
//! The kernel keeps the placeholder descriptors across `exec`; what they stand for (path,
//! status flags, offset) travels in the environment variable [`FDS_ENV`] of the new program,
//! put there by this library's `execve`, `execv`, `execvp` and `execvpe`. The new program's
//! copy of this library takes the variable out of its environment at load, checks that each
//! descriptor is still a placeholder, and reopens the file on first use (a write-only one at
//! the end of the file: offsets are not shared between processes, see the crate docs). Data
//! the old program wrote is made durable and its size published before the `exec`; `_exit`
//! closes files like `exit` does, so a program that ends with it (shells do) publishes what it
//! wrote. A child on its parent's memory (`vfork`) records the duplicates it makes of BenchFS
//! descriptors aside, without touching its parent's table. glibc's `posix_spawn`,
//! `execl*` and `system` exec from inside glibc, out of this library's sight: their children
//! get `EBADF` on inherited BenchFS descriptors, as without this.

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::Mutex;

use crate::state::{self, What};
use crate::{real, Errno};

/// The environment variable that carries inherited BenchFS descriptors.
pub const FDS_ENV: &str = "BENCHFS_PRELOAD_FDS";

/// What an inherited descriptor stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inherited {
    /// A directory (else a file).
    pub dir: bool,
    /// `O_ACCMODE` and status flags.
    pub flags: c_int,
    /// The offset.
    pub offset: u64,
    /// The BenchFS path.
    pub path: String,
}

/// `fd,kind,flags,offset,hex path` entries separated by `;` (hex keeps any byte of a path
/// out of the separators).
pub fn encode(entries: &[(c_int, Inherited)]) -> String {
    let mut out = String::new();
    for (fd, e) in entries {
        if !out.is_empty() {
            out.push(';');
        }
        let hex: String = e.path.bytes().map(|b| format!("{b:02x}")).collect();
        let kind = if e.dir { 'd' } else { 'f' };
        out.push_str(&format!("{fd},{kind},{},{},{hex}", e.flags, e.offset));
    }
    out
}

/// The entries of [`encode`]; malformed ones are skipped.
pub fn decode(text: &str) -> Vec<(c_int, Inherited)> {
    let one = |entry: &str| -> Option<(c_int, Inherited)> {
        let mut parts = entry.split(',');
        let fd = parts.next()?.parse().ok()?;
        let dir = match parts.next()? {
            "d" => true,
            "f" => false,
            _ => return None,
        };
        let flags = parts.next()?.parse().ok()?;
        let offset = parts.next()?.parse().ok()?;
        let hex = parts.next()?;
        if parts.next().is_some() || hex.len() % 2 != 0 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        let path = String::from_utf8(bytes?).ok()?;
        path.starts_with('/').then_some(())?;
        Some((
            fd,
            Inherited {
                dir,
                flags,
                offset,
                path,
            },
        ))
    };
    text.split(';').filter_map(one).collect()
}

/// `FDS_ENV=...` for the BenchFS descriptors that survive an exec, or `None` when there are
/// none. Files written through them are synced first (size published), so the new program
/// sees all of it.
fn survives(fd: c_int) -> bool {
    // SAFETY: F_GETFD on a descriptor number, no memory involved.
    let fd_flags = unsafe { real::fcntl(fd, libc::F_GETFD, 0) };
    fd_flags >= 0 && fd_flags & libc::FD_CLOEXEC == 0
}

fn is_placeholder(fd: c_int) -> bool {
    // SAFETY: F_GETFL on a descriptor number, no memory involved.
    let status = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    status >= 0 && status & libc::O_PATH != 0
}

fn exec_variable() -> Option<CString> {
    let entries = if state::borrowed_memory() {
        borrowed_entries()
    } else {
        owned_entries()
    };
    if entries.is_empty() {
        return None;
    }
    CString::new(format!("{FDS_ENV}={}", encode(&entries))).ok()
}

/// The descriptors of this process that survive the exec; files written through them are
/// synced first.
fn owned_entries() -> Vec<(c_int, Inherited)> {
    let mut state = state::lock();
    // Inherited descriptors not used here are passed on as they came.
    let mut entries: Vec<(c_int, Inherited)> = state
        .inherited()
        .into_iter()
        .filter(|(fd, _)| survives(*fd))
        .collect();
    for fd in state.open_fds() {
        if !survives(fd) {
            continue;
        }
        let Ok((client, desc)) = state.client_and_desc(fd) else {
            continue;
        };
        if let What::File(file) = &mut desc.what {
            if file.flags().write {
                if let Err(e) = client.fsync(file) {
                    crate::diag::say(&format!("before exec, fsync of {}: {e}", file.path()));
                }
            }
        }
        entries.push((fd, desc.inherited()));
    }
    entries
}

/// Duplicates a child made on its parent's memory made of BenchFS descriptors: (child pid,
/// new descriptor, what it stands for). Only that child reads its own; the parent never
/// looks at them, and the list is cut back when it grows.
static BORROWED_DUPS: Mutex<Vec<(u32, c_int, Inherited)>> = Mutex::new(Vec::new());

/// Records, in a child on its parent's memory, that `to` is now a duplicate of BenchFS
/// descriptor `fd` (the dup itself went to the kernel; the parent's table is left alone).
pub fn note_borrowed_dup(fd: c_int, to: c_int) {
    let found = state::lock()
        .snapshot()
        .into_iter()
        .find(|(known, _)| *known == fd);
    let mut dups = BORROWED_DUPS.lock().unwrap_or_else(|e| e.into_inner());
    if dups.len() > 64 {
        dups.clear();
    }
    let pid = std::process::id();
    dups.retain(|(p, d, _)| !(*p == pid && *d == to));
    if let Some((_, inherited)) = found {
        dups.push((pid, to, inherited));
    }
}

/// In a child on its parent's memory: the parent's BenchFS descriptors that are still there
/// and the duplicates this child made of them.
fn borrowed_entries() -> Vec<(c_int, Inherited)> {
    let pid = std::process::id();
    let dups: Vec<(c_int, Inherited)> = BORROWED_DUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(p, _, _)| *p == pid)
        .map(|(_, fd, i)| (*fd, i.clone()))
        .collect();
    let mut entries: Vec<(c_int, Inherited)> = state::lock()
        .snapshot()
        .into_iter()
        .filter(|(fd, _)| !dups.iter().any(|(d, _)| d == fd))
        .collect();
    entries.extend(dups);
    entries.retain(|(fd, _)| survives(*fd) && is_placeholder(*fd));
    entries
}

/// [`exec_variable`] behind a panic guard (a failure there must not stop the exec).
fn variable() -> Option<CString> {
    std::panic::catch_unwind(exec_variable).ok().flatten()
}

/// `envp` without any `FDS_ENV` entry, with `extra` added; NULL-terminated. The pointers
/// borrow from `envp` and `extra`.
///
/// # Safety
/// `envp` is NULL or a NULL-terminated array of NUL-terminated strings.
unsafe fn with_variable(envp: *const *const c_char, extra: &CStr) -> Vec<*const c_char> {
    let mut list = Vec::new();
    let prefix = format!("{FDS_ENV}=");
    let mut at = envp;
    while !at.is_null() {
        // SAFETY: within the NULL-terminated array by the caller's promise.
        let entry = unsafe { *at };
        if entry.is_null() {
            break;
        }
        // SAFETY: a NUL-terminated string of the array.
        if !unsafe { CStr::from_ptr(entry) }
            .to_bytes()
            .starts_with(prefix.as_bytes())
        {
            list.push(entry);
        }
        // SAFETY: the array goes on until its NULL.
        at = unsafe { at.add(1) };
    }
    list.push(extra.as_ptr());
    list.push(std::ptr::null());
    list
}

extern "C" {
    static environ: *const *const c_char;
}

/// `execve(2)`, passing BenchFS descriptors on.
///
/// # Safety
/// As for `execve(2)`.
#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let Some(variable) = variable() else {
        // SAFETY: the caller's arguments are passed on.
        return unsafe { real::execve(path, argv, envp) };
    };
    // SAFETY: the caller's environment array; `variable` outlives the call.
    let list = unsafe { with_variable(envp, &variable) };
    // SAFETY: the caller's path and arguments, an environment array that lives until the
    // call returns (only when it failed).
    unsafe { real::execve(path, argv, list.as_ptr()) }
}

/// `execv(3)`.
///
/// # Safety
/// As for `execv(3)`.
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: the process's environment, as execv passes it.
    unsafe { execve(path, argv, environ) }
}

/// `execvpe(3)`.
///
/// # Safety
/// As for `execvpe(3)`.
#[no_mangle]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let Some(variable) = variable() else {
        // SAFETY: the caller's arguments are passed on.
        return unsafe { real::execvpe(file, argv, envp) };
    };
    // SAFETY: the caller's environment array; `variable` outlives the call.
    let list = unsafe { with_variable(envp, &variable) };
    // SAFETY: as for execve above.
    unsafe { real::execvpe(file, argv, list.as_ptr()) }
}

/// `execvp(3)`.
///
/// # Safety
/// As for `execvp(3)`.
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: the process's environment, as execvp passes it.
    unsafe { execvpe(file, argv, environ) }
}

/// `_exit(2)`: files written through BenchFS are closed first (their sizes published), as at
/// `exit` (shells and forked workers end with `_exit`).
///
/// # Safety
/// As for `_exit(2)`.
#[no_mangle]
pub unsafe extern "C" fn _exit(status: c_int) -> ! {
    let _ = std::panic::catch_unwind(state::close_all_now);
    // SAFETY: ends the process.
    unsafe { real_exit("_exit\0", status) }
}

/// `_Exit(2)`: as [`_exit`].
///
/// # Safety
/// As for `_exit(2)`.
#[no_mangle]
pub unsafe extern "C" fn _Exit(status: c_int) -> ! {
    let _ = std::panic::catch_unwind(state::close_all_now);
    // SAFETY: ends the process.
    unsafe { real_exit("_Exit\0", status) }
}

/// libc's `_exit` or `_Exit` (`name` NUL-terminated).
///
/// # Safety
/// Ends the process.
unsafe fn real_exit(name: &str, status: c_int) -> ! {
    let symbol = CStr::from_bytes_with_nul(name.as_bytes()).expect("NUL-terminated name");
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name only reads the loader's tables.
    let address = unsafe { libc::dlsym(libc::RTLD_NEXT, symbol.as_ptr()) };
    if !address.is_null() {
        // SAFETY: libc's _exit/_Exit have this prototype.
        let f = unsafe {
            std::mem::transmute::<*mut std::ffi::c_void, unsafe extern "C" fn(c_int) -> !>(address)
        };
        // SAFETY: ends the process.
        unsafe { f(status) }
    }
    // SAFETY: the exit_group system call ends the process; no memory is involved.
    unsafe { libc::syscall(libc::SYS_exit_group, status) };
    unreachable!("exit_group returned")
}

/// At load: takes [`FDS_ENV`] out of the environment and records each descriptor that is
/// still a placeholder as inherited (reopened on first use). Standard streams on such
/// descriptors are replaced like after a `dup2`.
pub fn inherit_descriptors() {
    let Some(text) = std::env::var_os(FDS_ENV) else {
        return;
    };
    std::env::remove_var(FDS_ENV);
    let Some(text) = text.to_str() else {
        return;
    };
    let mut standard = Vec::new();
    {
        let mut state = state::lock();
        for (fd, inherited) in decode(text) {
            if !(0..state::FD_LIMIT).contains(&fd) || !is_placeholder(fd) {
                continue;
            }
            state.inherit(fd, inherited);
            if fd <= 2 {
                standard.push(fd);
            }
        }
    }
    for fd in standard {
        crate::stdio::standard_now_benchfs(fd);
    }
}

/// Reopens inherited descriptor `fd` (see [`inherit_descriptors`]) with `client`.
pub fn reopen(client: &mut benchfs::client::Client, inherited: &Inherited) -> Result<What, Errno> {
    if inherited.dir {
        return Ok(What::Dir(inherited.path.clone()));
    }
    let access = inherited.flags & libc::O_ACCMODE;
    let flags = benchfs::client::OpenFlags {
        read: access != libc::O_WRONLY,
        write: access != libc::O_RDONLY,
        create: false,
        exclusive: false,
    };
    Ok(What::File(client.open(&inherited.path, flags, 0)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let entries = vec![
            (
                1,
                Inherited {
                    dir: false,
                    flags: libc::O_WRONLY | libc::O_APPEND,
                    offset: 12345,
                    path: "/a b/c;d,e".to_string(),
                },
            ),
            (
                7,
                Inherited {
                    dir: true,
                    flags: libc::O_RDONLY,
                    offset: 0,
                    path: "/".to_string(),
                },
            ),
        ];
        assert_eq!(decode(&encode(&entries)), entries);
        assert_eq!(decode("1,f,1,0,zz;x;2,q,0,0,2f"), vec![]);
        assert_eq!(decode("3,f,1,0,61"), vec![], "relative paths are refused");
    }
}
