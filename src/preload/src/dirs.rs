//! Directory streams of BenchFS directories: `opendir`, `fdopendir`, `readdir` and the rest.
//!
//! A BenchFS `DIR *` is the address of a [`DirStream`] kept in the state; every directory
//! call first checks whether its argument is one (no lock while none is open). The stream
//! reads the directory page by page as the program advances (one request per page), lists
//! `.` and `..` first, and owns a BenchFS descriptor of the directory (`dirfd`). Entries
//! carry their type (`DT_DIR`, `DT_REG`), so walkers need no stat to tell directories; the
//! inode number of an entry is a hash of its path (readdir does not fetch inodes): stat gives
//! the file id.

use std::ffi::{c_char, c_int, c_long};
use std::sync::atomic::Ordering;

use benchfs::client::{DirEntry, EntryKind};
use libc::DIR;

use crate::state::{self, Errno, What, DIRS_OPEN};
use crate::target::route;
use crate::{done, guard, real, serve, Result};

/// An open BenchFS directory stream.
#[derive(Debug)]
pub struct DirStream {
    fd: c_int,
    path: String,
    entries: Vec<DirEntry>,
    more: bool,
    /// Index of the next entry to return, counting `.` and `..` as 0 and 1.
    next: usize,
    entry: libc::dirent64,
}

impl DirStream {
    fn new(fd: c_int, path: String) -> DirStream {
        DirStream {
            fd,
            path,
            entries: Vec::new(),
            more: true,
            next: 0,
            // SAFETY: all-zero is a valid dirent.
            entry: unsafe { std::mem::zeroed() },
        }
    }
}

/// FNV-1a of `path`, never 0 (some programs skip entries with inode 0).
fn entry_inode(path: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

fn is_ours(dir: *mut DIR) -> bool {
    DIRS_OPEN.load(Ordering::Acquire)
        && !state::borrowed_memory()
        && state::lock().dirs.contains_key(&(dir as usize))
}

/// Opens a stream on BenchFS descriptor `fd` (a directory), which the stream then owns.
fn stream_on(fd: c_int) -> Result<*mut DIR> {
    let mut state = state::lock();
    let path = match &state.desc(fd)?.what {
        What::Dir(p) => p.clone(),
        What::File(_) => return Err(Errno(libc::ENOTDIR)),
    };
    let stream = Box::new(DirStream::new(fd, path));
    let address = &*stream as *const DirStream as usize;
    state.dirs.insert(address, stream);
    DIRS_OPEN.store(true, Ordering::Release);
    Ok(address as *mut DIR)
}

fn open_dir(path: String) -> Result<*mut DIR> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let fd = crate::files::open_path(path, flags, 0)?;
    stream_on(fd).inspect_err(|_| {
        // SAFETY: closes the descriptor just opened by this function.
        unsafe { crate::files::close(fd) };
    })
}

/// The next entry of `dir` into its `entry`, or `None` at the end.
fn next_entry(dir: *mut DIR) -> Result<Option<*mut libc::dirent64>> {
    let mut state = state::lock();
    let mut stream = state
        .dirs
        .remove(&(dir as usize))
        .ok_or(Errno(libc::EBADF))?;
    let result = advance(&mut state, &mut stream);
    state.dirs.insert(dir as usize, stream);
    let found = result?;
    let Some(stream) = state.dirs.get_mut(&(dir as usize)) else {
        return Err(Errno(libc::EBADF));
    };
    Ok(found.then_some(&mut stream.entry as *mut libc::dirent64))
}

fn advance(state: &mut state::State, s: &mut DirStream) -> Result<bool> {
    let (name, kind) = match s.next {
        0 => (".".to_string(), libc::DT_DIR),
        1 => ("..".to_string(), libc::DT_DIR),
        n => {
            let i = n - 2;
            while i >= s.entries.len() && s.more {
                let after = s.entries.last().map(|e| e.name.clone()).unwrap_or_default();
                let (page, more) = state.client()?.readdir_page(&s.path, &after)?;
                s.more = more && !page.is_empty();
                s.entries.extend(page);
            }
            let Some(e) = s.entries.get(i) else {
                return Ok(false);
            };
            let kind = match e.kind {
                EntryKind::Directory => libc::DT_DIR,
                EntryKind::File => libc::DT_REG,
            };
            (e.name.clone(), kind)
        }
    };
    s.next += 1;
    let full = crate::paths::join(&s.path, &name);
    let entry = &mut s.entry;
    entry.d_ino = entry_inode(&full);
    entry.d_off = s.next as i64;
    entry.d_reclen = std::mem::size_of::<libc::dirent64>() as u16;
    entry.d_type = kind;
    let bytes = name.as_bytes();
    let n = bytes.len().min(entry.d_name.len() - 1);
    for (dst, src) in entry.d_name.iter_mut().zip(&bytes[..n]) {
        *dst = *src as c_char;
    }
    entry.d_name[n] = 0;
    Ok(true)
}

fn close_stream(dir: *mut DIR) -> Result<c_int> {
    let stream = {
        let mut state = state::lock();
        let stream = state
            .dirs
            .remove(&(dir as usize))
            .ok_or(Errno(libc::EBADF))?;
        DIRS_OPEN.store(!state.dirs.is_empty(), Ordering::Release);
        stream
    };
    // SAFETY: closes the stream's own descriptor.
    let rc = unsafe { crate::files::close(stream.fd) };
    Ok(rc)
}

fn with_stream<R>(dir: *mut DIR, f: impl FnOnce(&mut DirStream) -> R) -> Result<R> {
    let mut state = state::lock();
    let stream = state
        .dirs
        .get_mut(&(dir as usize))
        .ok_or(Errno(libc::EBADF))?;
    Ok(f(stream))
}

// ---- exported ----

/// `opendir(3)`.
///
/// # Safety
/// As for `opendir(3)`.
#[no_mangle]
pub unsafe extern "C" fn opendir(path: *const c_char) -> *mut DIR {
    // SAFETY: the caller's path is passed on.
    unsafe { route(libc::AT_FDCWD, path, |_, p| real::opendir(p), open_dir) }
}

/// `fdopendir(3)`: on a BenchFS directory descriptor, which the stream then owns.
///
/// # Safety
/// As for `fdopendir(3)`.
#[no_mangle]
pub unsafe extern "C" fn fdopendir(fd: c_int) -> *mut DIR {
    crate::target::route_fd(
        fd,
        // SAFETY: a plain descriptor call.
        || unsafe { real::fdopendir(fd) },
        || stream_on(fd),
    )
}

/// `readdir(3)`: NULL at the end (errno unchanged) or on failure (errno set).
///
/// # Safety
/// As for `readdir(3)`.
#[no_mangle]
pub unsafe extern "C" fn readdir64(dir: *mut DIR) -> *mut libc::dirent64 {
    if !is_ours(dir) {
        // SAFETY: the caller's stream, which is libc's.
        return unsafe { real::readdir64(dir) };
    }
    guard(|| serve(|| Ok(next_entry(dir)?.unwrap_or(std::ptr::null_mut()))))
}

/// `readdir(3)` (the same layout as `readdir64` on 64-bit Linux).
///
/// # Safety
/// As for `readdir(3)`.
#[no_mangle]
pub unsafe extern "C" fn readdir(dir: *mut DIR) -> *mut libc::dirent {
    if !is_ours(dir) {
        // SAFETY: the caller's stream, which is libc's.
        return unsafe { real::readdir(dir) };
    }
    // SAFETY: same contract; `dirent` and `dirent64` have one layout here.
    unsafe { readdir64(dir) }.cast()
}

/// `readdir_r(3)`.
///
/// # Safety
/// As for `readdir_r(3)`.
#[no_mangle]
pub unsafe extern "C" fn readdir_r(
    dir: *mut DIR,
    entry: *mut libc::dirent,
    result: *mut *mut libc::dirent,
) -> c_int {
    if !is_ours(dir) {
        // SAFETY: the caller's arguments are passed on.
        return unsafe { real::readdir_r(dir, entry, result) };
    }
    if entry.is_null() || result.is_null() {
        return libc::EFAULT;
    }
    match guard(|| match next_entry(dir) {
        Ok(found) => found.map_or(0, |e| e as usize as isize),
        Err(e) => -(e.0 as isize),
    }) {
        0 => {
            // SAFETY: `result` is writable by the caller's promise.
            unsafe { *result = std::ptr::null_mut() };
            0
        }
        n if n < 0 => (-n) as c_int,
        address => {
            // SAFETY: `address` is the stream's entry; `entry` has room for a dirent.
            unsafe {
                std::ptr::copy_nonoverlapping(address as *const libc::dirent, entry, 1);
                *result = entry;
            }
            0
        }
    }
}

/// `readdir64_r(3)`.
///
/// # Safety
/// As for `readdir_r(3)`.
#[no_mangle]
pub unsafe extern "C" fn readdir64_r(
    dir: *mut DIR,
    entry: *mut libc::dirent,
    result: *mut *mut libc::dirent,
) -> c_int {
    // SAFETY: same contract.
    unsafe { readdir_r(dir, entry, result) }
}

/// `closedir(3)`.
///
/// # Safety
/// As for `closedir(3)`.
#[no_mangle]
pub unsafe extern "C" fn closedir(dir: *mut DIR) -> c_int {
    if !is_ours(dir) {
        // SAFETY: the caller's stream, which is libc's.
        return unsafe { real::closedir(dir) };
    }
    guard(|| done(close_stream(dir)))
}

/// `dirfd(3)`.
///
/// # Safety
/// As for `dirfd(3)`.
#[no_mangle]
pub unsafe extern "C" fn dirfd(dir: *mut DIR) -> c_int {
    if !is_ours(dir) {
        // SAFETY: the caller's stream, which is libc's.
        return unsafe { real::dirfd(dir) };
    }
    guard(|| done(with_stream(dir, |s| s.fd)))
}

/// `rewinddir(3)`: the directory is read again from its start.
///
/// # Safety
/// As for `rewinddir(3)`.
#[no_mangle]
pub unsafe extern "C" fn rewinddir(dir: *mut DIR) {
    if !is_ours(dir) {
        // SAFETY: the caller's stream, which is libc's.
        return unsafe { real::rewinddir(dir) };
    }
    guard(|| {
        let _ = with_stream(dir, |s| {
            s.entries.clear();
            s.more = true;
            s.next = 0;
        });
    })
}

/// `telldir(3)`: the number of entries returned so far.
///
/// # Safety
/// As for `telldir(3)`.
#[no_mangle]
pub unsafe extern "C" fn telldir(dir: *mut DIR) -> c_long {
    if !is_ours(dir) {
        // SAFETY: the caller's stream, which is libc's.
        return unsafe { real::telldir(dir) };
    }
    guard(|| done(with_stream(dir, |s| s.next as c_long)))
}

/// `seekdir(3)`: back to a position `telldir` gave.
///
/// # Safety
/// As for `seekdir(3)`.
#[no_mangle]
pub unsafe extern "C" fn seekdir(dir: *mut DIR, at: c_long) {
    if !is_ours(dir) {
        // SAFETY: the caller's stream, which is libc's.
        return unsafe { real::seekdir(dir, at) };
    }
    guard(|| {
        let _ = with_stream(dir, |s| s.next = at.max(0) as usize);
    })
}
