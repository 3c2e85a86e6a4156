//! Checking what C passes in: paths, sizes and output pointers, each refused with the errno
//! the header documents before any work is done.

use std::ffi::{c_char, CStr};

use super::errors::{Fail, FfiResult};
use crate::path::PATH_MAX_BYTES;

/// Longest path accepted from C, in bytes without the NUL (as Linux's `PATH_MAX` minus one).
const RAW_PATH_MAX: usize = PATH_MAX_BYTES;

/// The normalised path at `path`.
///
/// # Safety
/// `path` is NULL or points to a NUL-terminated string.
pub unsafe fn path_arg(path: *const c_char, what: &str) -> FfiResult<String> {
    if path.is_null() {
        return Err(Fail::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    if bytes.len() > RAW_PATH_MAX {
        return Err(Fail::new(
            libc::ENAMETOOLONG,
            format!("{what} is {} bytes long", bytes.len()),
        ));
    }
    Ok(crate::path::normalize_bytes(bytes)?)
}

/// `len` as a `usize` no larger than the largest object (`isize::MAX`).
pub fn size_arg(len: u64, what: &str) -> FfiResult<usize> {
    match usize::try_from(len) {
        Ok(n) if n <= isize::MAX as usize => Ok(n),
        _ => Err(Fail::invalid(format!("{what} {len} is too large"))),
    }
}

/// Checks that `offset + len` stays within the largest file offset (`i64::MAX`).
pub fn range_arg(offset: u64, len: usize) -> FfiResult<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(Fail::invalid(format!(
            "offset {offset} + length {len} is beyond the largest file"
        ))),
    }
}

/// Refuses a NULL pointer argument.
pub fn non_null<T>(ptr: *const T, what: &str) -> FfiResult<()> {
    if ptr.is_null() {
        Err(Fail::invalid(format!("{what} is NULL")))
    } else {
        Ok(())
    }
}

/// Refuses permission bits outside `0o7777`.
pub fn mode_arg(mode: u32) -> FfiResult<u32> {
    if mode & !0o7777 != 0 {
        return Err(Fail::invalid(format!(
            "mode {mode:#o} has bits beyond 0o7777"
        )));
    }
    Ok(mode)
}
