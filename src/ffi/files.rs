//! File handles: create, open, close, positional read and write, fsync and sync.

use std::ffi::{c_char, c_int, c_void};

use super::args::{mode_arg, non_null, path_arg, range_arg, size_arg};
use super::errors::{guard, Fail, FfiResult};
use super::handles::{from_ptr, to_ptr, with_local, Local};
use super::types::*;
use crate::client::{Client, File, OpenFlags};

/// The flags of `flags` (BENCHFS_O_*), and whether to truncate.
fn open_flags(flags: c_int) -> FfiResult<(OpenFlags, bool)> {
    let known = 0x3 | BENCHFS_O_CREAT | BENCHFS_O_EXCL | BENCHFS_O_TRUNC;
    if flags & !known != 0 {
        return Err(Fail::invalid(format!("unknown open flags {flags:#x}")));
    }
    let (read, write) = match flags & 0x3 {
        BENCHFS_O_RDONLY => (true, false),
        BENCHFS_O_WRONLY => (false, true),
        BENCHFS_O_RDWR => (true, true),
        _ => return Err(Fail::invalid("open flags give no access mode")),
    };
    let truncate = flags & BENCHFS_O_TRUNC != 0;
    if truncate && !write {
        return Err(Fail::invalid("BENCHFS_O_TRUNC needs write access"));
    }
    let open = OpenFlags {
        read,
        write,
        create: flags & BENCHFS_O_CREAT != 0,
        exclusive: flags & BENCHFS_O_EXCL != 0,
    };
    Ok((open, truncate))
}

/// Stores `file` in the calling thread's table and writes its handle to `out`.
///
/// # Safety
/// `out` is valid for a write.
unsafe fn hand_out(local: &mut Local, file: File, out: *mut *mut benchfs_file) -> i32 {
    let id = local.files.insert(file);
    // SAFETY: the caller checked `out` is non-null and promises it is writable.
    unsafe { out.write(to_ptr(id)) };
    0
}

/// The file of `handle` and the thread's client.
fn file_and_client(local: &mut Local, handle: u64) -> FfiResult<(&mut File, &mut Client)> {
    let file = local.files.get_mut(handle)?;
    let client = local
        .client
        .as_mut()
        .ok_or_else(|| Fail::new(libc::EIO, "no connection"))?;
    Ok((file, client))
}

/// Creates `path` if missing (never truncating), read-write; the handle goes to `out`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn benchfs_create(
    path: *const c_char,
    mode: u32,
    out: *mut *mut benchfs_file,
) -> i32 {
    guard("benchfs_create", || {
        // SAFETY: the caller promises `path` is NULL or NUL-terminated.
        let path = unsafe { path_arg(path, "path") }?;
        non_null(out, "out")?;
        let mode = mode_arg(mode)?;
        with_local(|local| {
            let file = local.client()?.create(&path, mode)?;
            // SAFETY: `out` is non-null and the caller promises it is writable.
            Ok(unsafe { hand_out(local, file, out) })
        })
    })
}

/// Opens `path` with BENCHFS_O_* `flags` (`mode` with BENCHFS_O_CREAT).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn benchfs_open(
    path: *const c_char,
    flags: c_int,
    mode: u32,
    out: *mut *mut benchfs_file,
) -> i32 {
    guard("benchfs_open", || {
        // SAFETY: the caller promises `path` is NULL or NUL-terminated.
        let path = unsafe { path_arg(path, "path") }?;
        non_null(out, "out")?;
        let mode = mode_arg(mode)?;
        let (flags, truncate) = open_flags(flags)?;
        with_local(|local| {
            let client = local.client()?;
            let file = client.open(&path, flags, mode)?;
            if truncate {
                client.truncate(&path, 0)?;
            }
            // SAFETY: `out` is non-null and the caller promises it is writable.
            Ok(unsafe { hand_out(local, file, out) })
        })
    })
}

/// Publishes the size written and frees the handle (also on failure).
///
/// # Safety
/// `file` is any value; it is looked up, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn benchfs_close(file: *mut benchfs_file) -> i32 {
    guard("benchfs_close", || {
        let id = from_ptr(file)?;
        with_local(|local| {
            let file = local.files.remove(id)?;
            local.client()?.close(file)?;
            Ok(0)
        })
    })
}

/// Writes all `len` bytes of `buf` at `offset`; returns `len`.
///
/// # Safety
/// `buf` is NULL or valid for reads of `len` bytes; `file` is never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn benchfs_pwrite(
    file: *mut benchfs_file,
    buf: *const c_void,
    len: u64,
    offset: u64,
) -> i64 {
    guard("benchfs_pwrite", || {
        let id = from_ptr(file)?;
        non_null(buf, "buf")?;
        let len = size_arg(len, "len")?;
        range_arg(offset, len)?;
        // SAFETY: `buf` is non-null and the caller promises `len` readable bytes there.
        let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
        with_local(|local| {
            let (file, client) = file_and_client(local, id)?;
            Ok(client.write_at(file, data, offset)? as i64)
        })
    })
}

/// Reads up to `len` bytes at `offset` into `buf` (fewer at end of file); returns the count.
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes; `file` is never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn benchfs_pread(
    file: *mut benchfs_file,
    buf: *mut c_void,
    len: u64,
    offset: u64,
) -> i64 {
    guard("benchfs_pread", || {
        let id = from_ptr(file)?;
        non_null(buf, "buf")?;
        let len = size_arg(len, "len")?;
        range_arg(offset, len)?;
        // SAFETY: `buf` is non-null and the caller promises `len` writable bytes there.
        let data = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
        with_local(|local| {
            let (file, client) = file_and_client(local, id)?;
            Ok(client.read_at(file, data, offset)? as i64)
        })
    })
}

/// Makes the file's data and size durable.
///
/// # Safety
/// `file` is any value; it is looked up, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn benchfs_fsync(file: *mut benchfs_file) -> i32 {
    guard("benchfs_fsync", || {
        let id = from_ptr(file)?;
        with_local(|local| {
            let (file, client) = file_and_client(local, id)?;
            client.fsync(file)?;
            Ok(0)
        })
    })
}

/// Makes everything written through the calling thread's open handles durable.
///
/// # Safety
/// Always safe to call; `unsafe` only for symmetry with the rest of the interface.
#[no_mangle]
pub unsafe extern "C" fn benchfs_sync() -> i32 {
    guard("benchfs_sync", || {
        with_local(|local| {
            let Some(client) = local.client.as_mut() else {
                return Ok(0);
            };
            let mut result = Ok(0);
            for file in local.files.values_mut() {
                if let Err(e) = client.fsync(file) {
                    result = result.and(Err(Fail::from(e)));
                }
            }
            result
        })
    })
}
