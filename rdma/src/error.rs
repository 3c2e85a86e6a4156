//! The one error type of `benchfs-rdma`, and the one place where UCX status codes are mapped.

use std::ffi::CStr;

use ucx1_sys::{ucs_status_ptr_t, ucs_status_string, ucs_status_t};

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A UCX status code other than success, kept as its number so that codes unknown to this
/// build are still reported faithfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub i8);

impl Status {
    /// `UCS_ERR_BUSY`.
    pub const BUSY: Status = Status(ucs_status_t::UCS_ERR_BUSY as i8);

    /// UCX's own description of the code.
    pub fn description(self) -> String {
        let Some(code) = status_enum(self.0) else {
            return format!("unknown UCX status {}", self.0);
        };
        // SAFETY: ucs_status_string has no preconditions for a valid code.
        let text = unsafe { ucs_status_string(code) };
        // SAFETY: it returns a static NUL-terminated string for every valid code.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }

    /// The errno closest in meaning, for callers that report POSIX codes.
    pub fn errno(self) -> i32 {
        use ucs_status_t::*;
        match status_enum(self.0) {
            Some(UCS_ERR_NO_MEMORY) => libc::ENOMEM,
            Some(UCS_ERR_INVALID_PARAM) => libc::EINVAL,
            Some(UCS_ERR_TIMED_OUT | UCS_ERR_ENDPOINT_TIMEOUT) => libc::ETIMEDOUT,
            Some(UCS_ERR_CANCELED) => libc::ECANCELED,
            Some(UCS_ERR_BUSY | UCS_ERR_NO_RESOURCE) => libc::EAGAIN,
            Some(UCS_ERR_UNREACHABLE) => libc::EHOSTUNREACH,
            Some(UCS_ERR_CONNECTION_RESET) => libc::ECONNRESET,
            Some(UCS_ERR_NOT_CONNECTED) => libc::ENOTCONN,
            Some(UCS_ERR_REJECTED) => libc::ECONNREFUSED,
            Some(UCS_ERR_UNSUPPORTED) => libc::EOPNOTSUPP,
            Some(UCS_ERR_MESSAGE_TRUNCATED) => libc::EMSGSIZE,
            _ => libc::EIO,
        }
    }
}

/// The `ucs_status_t` with code `code`, if this build knows it. Codes are compared as numbers,
/// never transmuted, so an unknown code cannot produce an invalid enum value.
fn status_enum(code: i8) -> Option<ucs_status_t> {
    use ucs_status_t::*;
    const KNOWN: [ucs_status_t; 16] = [
        UCS_ERR_NO_MESSAGE,
        UCS_ERR_NO_RESOURCE,
        UCS_ERR_IO_ERROR,
        UCS_ERR_NO_MEMORY,
        UCS_ERR_INVALID_PARAM,
        UCS_ERR_UNREACHABLE,
        UCS_ERR_MESSAGE_TRUNCATED,
        UCS_ERR_NO_ELEM,
        UCS_ERR_BUSY,
        UCS_ERR_CANCELED,
        UCS_ERR_TIMED_OUT,
        UCS_ERR_UNSUPPORTED,
        UCS_ERR_REJECTED,
        UCS_ERR_NOT_CONNECTED,
        UCS_ERR_CONNECTION_RESET,
        UCS_ERR_ENDPOINT_TIMEOUT,
    ];
    KNOWN.into_iter().find(|s| *s as i8 == code)
}

/// Everything that can go wrong in the transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A UCX call failed.
    #[error("{op}: {} (UCX status {})", .status.description(), .status.0)]
    Ucx {
        /// What was being done, e.g. "create worker".
        op: &'static str,
        /// The status UCX returned.
        status: Status,
    },

    /// The endpoint's peer died or its link broke; no request on it can succeed any more.
    #[error("endpoint to the peer failed: {}", .status.description())]
    EndpointFailed {
        /// The status UCX reported to the error handler.
        status: Status,
    },

    /// A request did not complete before its deadline (it was cancelled).
    #[error("{op} did not complete within its deadline")]
    TimedOut {
        /// What was being waited for.
        op: &'static str,
    },

    /// A caller passed an argument outside what the transport accepts.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error the kernel returned.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The errno this error corresponds to.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Ucx { status, .. } => status.errno(),
            Error::EndpointFailed { .. } => libc::EIO,
            Error::TimedOut { .. } => libc::ETIMEDOUT,
            Error::InvalidArgument(_) => libc::EINVAL,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// Maps a returned status: `UCS_OK` is success, anything else an [`Error::Ucx`].
pub(crate) fn check(op: &'static str, status: ucs_status_t) -> Result<()> {
    match status as i8 {
        0 => Ok(()),
        code => Err(Error::Ucx {
            op,
            status: Status(code),
        }),
    }
}

/// What a `ucs_status_ptr_t` returned by a `*_nbx` call says.
pub(crate) enum PtrStatus {
    /// Completed at once with success.
    Done,
    /// In progress: the request handle.
    Request(*mut std::ffi::c_void),
    /// Failed at once.
    Failed(Status),
}

/// Decodes a status pointer as UCX's `UCS_PTR_IS_ERR`/`UCS_PTR_IS_PTR` macros do.
pub(crate) fn ptr_status(ptr: ucs_status_ptr_t) -> PtrStatus {
    let raw = ptr as isize;
    // Error codes are small negative numbers (greater than UCS_ERR_LAST = -100) cast to a
    // pointer; every other non-null value is a request.
    if raw == 0 {
        PtrStatus::Done
    } else if (-100..0).contains(&raw) {
        PtrStatus::Failed(Status(raw as i8))
    } else {
        PtrStatus::Request(ptr)
    }
}
