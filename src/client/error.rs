//! Errors of the client, each mapped to the errno a POSIX call would give.

use std::time::Duration;

use thiserror::Error;

/// Why a client operation failed.
#[derive(Debug, Error)]
pub enum Error {
    /// The server answered with an error.
    #[error("{op} {what}: {} (from {target})", std::io::Error::from_raw_os_error(*errno))]
    Remote {
        /// The operation.
        op: &'static str,
        /// What it was applied to (a path, a chunk).
        what: String,
        /// The server's errno.
        errno: i32,
        /// The target that answered.
        target: String,
    },
    /// No answer before the deadline.
    #[error("{op}: {target} did not answer within {timeout:?}")]
    TimedOut {
        /// The operation.
        op: &'static str,
        /// The silent target.
        target: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The transport failed (peer died, link broke).
    #[error("{op}: {target}: {source}")]
    Transport {
        /// The operation.
        op: &'static str,
        /// The target concerned.
        target: String,
        /// The transport's error.
        source: crate::rdma::Error,
    },
    /// The registry could not be used.
    #[error("registry: {0}")]
    Registry(#[from] crate::registry::RegistryError),
    /// The path was refused.
    #[error(transparent)]
    Path(#[from] crate::path::PathError),
    /// The transport could not be set up locally.
    #[error("UCX: {0}")]
    Local(#[from] crate::rdma::Error),
    /// A bad argument or a malformed answer.
    #[error("{0}")]
    Invalid(String),
    /// The file handle does not allow the operation.
    #[error("{0}")]
    BadHandle(&'static str),
}

impl Error {
    /// The positive errno for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Remote { errno, .. } => *errno,
            Error::TimedOut { .. } => libc::ETIMEDOUT,
            Error::Transport { source, .. } => match source {
                crate::rdma::Error::TimedOut { .. } => libc::ETIMEDOUT,
                _ => libc::EIO,
            },
            Error::Registry(_) => libc::ENOENT,
            Error::Path(e) => e.errno(),
            Error::Local(_) => libc::EIO,
            Error::Invalid(_) => libc::EINVAL,
            Error::BadHandle(_) => libc::EBADF,
        }
    }
}

/// Results of the client.
pub type Result<T> = std::result::Result<T, Error>;
