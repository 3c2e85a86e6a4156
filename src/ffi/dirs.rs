//! Namespace calls (remove, stat, size, access, mkdir, rmdir, rename, truncate, statfs) and
//! directory listings (opendir, readdir, closedir; the whole listing is read at opendir).

use std::ffi::{c_char, c_int};

use super::args::{mode_arg, non_null, path_arg};
use super::errors::{guard, Fail, FfiResult};
use super::handles::{from_ptr, to_ptr, with_local};
use super::types::*;
use crate::client::{Client, DirEntry, EntryKind};

/// A directory listing being read.
#[derive(Debug)]
pub struct Listing {
    entries: Vec<DirEntry>,
    next: usize,
}

/// Runs `op` with the thread's client on the checked path at `path`; returns 0.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
unsafe fn path_call(
    name: &str,
    path: *const c_char,
    op: impl FnOnce(&mut Client, &str) -> crate::client::Result<()>,
) -> i32 {
    guard(name, || {
        // SAFETY: the caller promises `path` is NULL or NUL-terminated.
        let path = unsafe { path_arg(path, "path") }?;
        with_local(|local| {
            op(local.client()?, &path)?;
            Ok(0)
        })
    })
}

/// Removes file `path`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn benchfs_remove(path: *const c_char) -> i32 {
    // SAFETY: the caller's promise about `path` is passed on.
    unsafe { path_call("benchfs_remove", path, |c, p| c.unlink(p)) }
}

/// Removes the empty directory `path`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn benchfs_rmdir(path: *const c_char) -> i32 {
    // SAFETY: the caller's promise about `path` is passed on.
    unsafe { path_call("benchfs_rmdir", path, |c, p| c.rmdir(p)) }
}

/// Checks that `path` exists and allows `mode` (BENCHFS_*_OK).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn benchfs_access(path: *const c_char, mode: c_int) -> i32 {
    // SAFETY: the caller's promise about `path` is passed on.
    unsafe { path_call("benchfs_access", path, |c, p| c.access(p, mode)) }
}

/// Makes directory `path`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn benchfs_mkdir(path: *const c_char, mode: u32) -> i32 {
    if let Err(fail) = mode_arg(mode) {
        return guard("benchfs_mkdir", || Err::<i32, _>(fail));
    }
    // SAFETY: the caller's promise about `path` is passed on.
    unsafe { path_call("benchfs_mkdir", path, |c, p| c.mkdir(p, mode)) }
}

/// Sets the size of file `path`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn benchfs_truncate(path: *const c_char, size: u64) -> i32 {
    if size > i64::MAX as u64 {
        let fail = Fail::invalid(format!("size {size} is beyond the largest file"));
        return guard("benchfs_truncate", || Err::<i32, _>(fail));
    }
    // SAFETY: the caller's promise about `path` is passed on.
    unsafe { path_call("benchfs_truncate", path, |c, p| c.truncate(p, size)) }
}

/// Renames `from` to `to`.
///
/// # Safety
/// `from` and `to` are each NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn benchfs_rename(from: *const c_char, to: *const c_char) -> i32 {
    guard("benchfs_rename", || {
        // SAFETY: the caller promises `from` is NULL or NUL-terminated.
        let from = unsafe { path_arg(from, "from") }?;
        // SAFETY: the same for `to`.
        let to = unsafe { path_arg(to, "to") }?;
        with_local(|local| {
            local.client()?.rename(&from, &to)?;
            Ok(0)
        })
    })
}

/// The attributes of `path`, written to `out`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn benchfs_stat(path: *const c_char, out: *mut benchfs_stat_t) -> i32 {
    guard("benchfs_stat", || {
        // SAFETY: the caller promises `path` is NULL or NUL-terminated.
        let path = unsafe { path_arg(path, "path") }?;
        non_null(out, "out")?;
        let stat = with_local(|local| Ok(local.client()?.stat(&path)?))?;
        // SAFETY: `out` is non-null and the caller promises it is writable.
        unsafe { out.write(stat) };
        Ok(0)
    })
}

/// The size of `path` in bytes.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn benchfs_get_file_size(path: *const c_char) -> i64 {
    guard("benchfs_get_file_size", || {
        // SAFETY: the caller promises `path` is NULL or NUL-terminated.
        let path = unsafe { path_arg(path, "path") }?;
        let stat = with_local(|local| Ok(local.client()?.stat(&path)?))?;
        Ok(stat.size as i64)
    })
}

/// The cluster's capacity and use, written to `out`.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn benchfs_statfs(out: *mut benchfs_statfs_t) -> i32 {
    guard("benchfs_statfs", || {
        non_null(out, "out")?;
        let fs = with_local(|local| Ok(local.client()?.statfs()?))?;
        // SAFETY: `out` is non-null and the caller promises it is writable.
        unsafe { out.write(fs.into()) };
        Ok(0)
    })
}

/// Reads the listing of directory `path`; its handle goes to `out`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn benchfs_opendir(path: *const c_char, out: *mut *mut benchfs_dir) -> i32 {
    guard("benchfs_opendir", || {
        // SAFETY: the caller promises `path` is NULL or NUL-terminated.
        let path = unsafe { path_arg(path, "path") }?;
        non_null(out, "out")?;
        with_local(|local| {
            let entries = local.client()?.readdir(&path)?;
            let id = local.dirs.insert(Listing { entries, next: 0 });
            // SAFETY: `out` is non-null and the caller promises it is writable.
            unsafe { out.write(to_ptr(id)) };
            Ok(0)
        })
    })
}

fn next_entry(listing: &mut Listing, room: usize) -> FfiResult<Option<(&str, c_int)>> {
    let Some(entry) = listing.entries.get(listing.next) else {
        return Ok(None);
    };
    if entry.name.len() >= room {
        return Err(Fail::new(
            libc::ENAMETOOLONG,
            format!("entry {:?} does not fit in {room} bytes", entry.name),
        ));
    }
    listing.next += 1;
    let kind = match entry.kind {
        EntryKind::Directory => BENCHFS_DT_DIR,
        EntryKind::File => BENCHFS_DT_REG,
    };
    Ok(Some((&entry.name, kind)))
}

/// The next entry of `dir`: 1 with `name` and `type` filled, 0 at the end.
///
/// # Safety
/// `name` is NULL or valid for writes of `name_len` bytes; `kind` is NULL or valid for a
/// write; `dir` is never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn benchfs_readdir(
    dir: *mut benchfs_dir,
    name: *mut c_char,
    name_len: usize,
    kind: *mut c_int,
) -> i32 {
    guard("benchfs_readdir", || {
        let id = from_ptr(dir)?;
        non_null(name, "name")?;
        non_null(kind, "type")?;
        with_local(|local| {
            let Some((entry, t)) = next_entry(local.dirs.get_mut(id)?, name_len)? else {
                return Ok(0);
            };
            let name = name.cast::<u8>();
            // SAFETY: `name` has room for `name_len` > entry.len() bytes (checked by
            // next_entry) and the caller promises it is writable.
            let terminator = unsafe { name.add(entry.len()) };
            // SAFETY: as above; the entry is not in the caller's buffer.
            unsafe { std::ptr::copy_nonoverlapping(entry.as_ptr(), name, entry.len()) };
            // SAFETY: `terminator` is within the `name_len` bytes, as above.
            unsafe { terminator.write(0) };
            // SAFETY: `kind` is non-null and the caller promises it is writable.
            unsafe { kind.write(t) };
            Ok(1)
        })
    })
}

/// Frees the listing `dir`.
///
/// # Safety
/// `dir` is any value; it is looked up, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn benchfs_closedir(dir: *mut benchfs_dir) -> i32 {
    guard("benchfs_closedir", || {
        let id = from_ptr(dir)?;
        with_local(|local| {
            local.dirs.remove(id)?;
            Ok(0)
        })
    })
}
