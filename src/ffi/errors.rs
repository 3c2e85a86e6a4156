//! Failures at the C boundary: the negative-errno convention, the calling thread's last
//! failure message (for `benchfs_strerror`), and the panic boundary every exported function
//! runs its body in.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::client::Error;

/// A failure to report to C: a positive errno and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    /// The positive errno (returned negated).
    pub errno: i32,
    /// The message `benchfs_strerror` gives.
    pub message: String,
}

impl Fail {
    /// A failure with `errno` and `message`.
    pub fn new(errno: i32, message: impl Into<String>) -> Fail {
        Fail {
            errno,
            message: message.into(),
        }
    }

    /// `EINVAL` with `message`.
    pub fn invalid(message: impl Into<String>) -> Fail {
        Fail::new(libc::EINVAL, message)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::new(e.errno(), e.to_string())
    }
}

impl From<crate::path::PathError> for Fail {
    fn from(e: crate::path::PathError) -> Fail {
        Fail::new(e.errno(), e.to_string())
    }
}

/// Results of the FFI helpers.
pub type FfiResult<T> = Result<T, Fail>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as the calling thread's last failure.
pub fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|last| *last.borrow_mut() = text);
}

/// The calling thread's last failure message; valid until the thread's next failure.
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().as_ptr())
}

/// Runs `body` behind the panic boundary: a value is returned as is, a failure is recorded
/// and returned as its negative errno, and a panic becomes `-EIO` with its message.
pub fn guard<T, F>(name: &str, body: F) -> T
where
    T: From<i32>,
    F: FnOnce() -> FfiResult<T>,
{
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value,
        Ok(Err(fail)) => {
            set_last_error(&format!("{name}: {}", fail.message));
            T::from(-fail.errno)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            set_last_error(&format!("{name}: internal error: {what}"));
            T::from(-libc::EIO)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_eio_with_its_message() {
        let rc: i32 = guard("benchfs_test", || -> FfiResult<i32> { panic!("boom") });
        assert_eq!(rc, -libc::EIO);
        // SAFETY: the pointer is to the thread's NUL-terminated message.
        let text = unsafe { std::ffi::CStr::from_ptr(last_error_ptr()) };
        assert_eq!(text.to_str().unwrap(), "benchfs_test: internal error: boom");
    }

    #[test]
    fn a_failure_is_its_negative_errno() {
        let rc: i64 = guard("f", || Err(Fail::new(libc::ENOENT, "gone")));
        assert_eq!(rc, -(libc::ENOENT as i64));
    }
}
