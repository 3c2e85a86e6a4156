//! The C API of `include/benchfs_c_api.h`, exported by `libbenchfs.so`.
//!
//! Every exported function checks its arguments, runs behind a panic boundary
//! ([`errors::guard`]) and returns 0 or a count on success, a negative errno on failure (the
//! message is then kept for `benchfs_strerror`). Each calling thread has its own client
//! ([`handles`]); the session shared by threads is in [`init`].
//!
//! - [`init`]: `benchfs_init`, `benchfs_finalize`, the embedded server.
//! - [`files`]: file handles and their I/O.
//! - [`dirs`]: namespace calls and directory listings.
//! - this module: version, error text and buffer registration.

pub mod args;
pub mod dirs;
pub mod errors;
pub mod files;
pub mod handles;
pub mod init;
pub mod options;
pub mod types;

use std::ffi::{c_char, c_int, c_void};

pub use dirs::*;
pub use files::*;
pub use init::{benchfs_finalize, benchfs_init};
pub use types::*;

use args::{non_null, size_arg};
use errors::{guard, Fail};
use handles::with_local;

static VERSION: &str = concat!("benchfs ", env!("CARGO_PKG_VERSION"), "\0");

/// `"benchfs <version>"`, valid for the life of the process.
///
/// # Safety
/// Always safe to call; `unsafe` only for symmetry with the rest of the interface.
#[no_mangle]
pub unsafe extern "C" fn benchfs_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

/// `BENCHFS_API_VERSION` of the library.
///
/// # Safety
/// Always safe to call; `unsafe` only for symmetry with the rest of the interface.
#[no_mangle]
pub unsafe extern "C" fn benchfs_api_version() -> c_int {
    BENCHFS_API_VERSION
}

/// The calling thread's last failure message ("" if none).
///
/// # Safety
/// Always safe to call; the text stays valid until the thread's next failing call.
#[no_mangle]
pub unsafe extern "C" fn benchfs_strerror() -> *const c_char {
    errors::last_error_ptr()
}

/// Checks a buffer argument of register/unregister.
fn buffer_arg(buf: *const c_void, len: u64) -> errors::FfiResult<usize> {
    non_null(buf, "buf")?;
    let len = size_arg(len, "len")?;
    if len == 0 {
        return Err(Fail::invalid("len is 0"));
    }
    if (buf as usize).checked_add(len).is_none() {
        return Err(Fail::invalid("buffer wraps around the address space"));
    }
    Ok(len)
}

/// Pins `len` bytes at `buf` in the calling thread's registration cache ahead of time.
///
/// # Safety
/// `buf` is NULL or the start of `len` bytes of memory the caller owns.
#[no_mangle]
pub unsafe extern "C" fn benchfs_register(buf: *const c_void, len: u64) -> c_int {
    guard("benchfs_register", || {
        let len = buffer_arg(buf, len)?;
        with_local(|local| {
            let cache = local.client()?.regcache_mut();
            cache
                .lookup(buf.cast(), len)
                .map_err(|e| Fail::new(libc::EIO, format!("registration: {e}")))?;
            Ok(0)
        })
    })
}

/// Drops the registration of `len` bytes at `buf` from the calling thread's cache.
///
/// # Safety
/// `buf` is NULL or the start of `len` bytes of memory the caller owns.
#[no_mangle]
pub unsafe extern "C" fn benchfs_unregister(buf: *const c_void, len: u64) -> c_int {
    guard("benchfs_unregister", || {
        let len = buffer_arg(buf, len)?;
        with_local(|local| {
            local.client()?.regcache_mut().invalidate(buf.cast(), len);
            Ok(0)
        })
    })
}
