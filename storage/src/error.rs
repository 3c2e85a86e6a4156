//! The one error type of `benchfs-storage`.
//!
//! Syscalls inside the crate return `io::Result`; at the crate boundary they are wrapped in
//! [`Error::Io`] together with the operation and, where there is one, the path, so a log line
//! says what failed where. Environment problems found at start-up carry the fix in their
//! message.

use std::io;
use std::path::PathBuf;

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{op}{}: {source}", path_suffix(.path))]
    Io {
        /// What was being done, e.g. "open chunk file".
        op: &'static str,
        /// The file or directory concerned, if any.
        path: Option<PathBuf>,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },

    /// The data directory cannot do O_DIRECT I/O.
    #[error("data dir {} {reason}; use a directory on a disk-backed file system (ext4, xfs)", .dir.display())]
    NoDirectIo {
        /// The directory that was checked.
        dir: PathBuf,
        /// Why, e.g. "is on tmpfs, which has no O_DIRECT".
        reason: String,
    },

    /// The locked-memory limit is below what the slab needs to be registered.
    #[error(
        "the slab needs {needed_bytes} bytes of locked memory but RLIMIT_MEMLOCK is \
         {limit_bytes} bytes; raise it (ulimit -l unlimited, or memlock in \
         /etc/security/limits.conf) or configure a smaller slab"
    )]
    MemlockTooLow {
        /// Bytes the slab will pin.
        needed_bytes: u64,
        /// The current soft limit.
        limit_bytes: u64,
    },

    /// io_uring cannot be used in this process.
    #[error("io_uring is unavailable: {reason}")]
    IoUringUnavailable {
        /// The cause and its fix.
        reason: String,
    },

    /// The kernel's io_uring lacks an operation the engine uses.
    #[error("the kernel's io_uring does not support {opcode}; BenchFS needs Linux 5.6 or newer")]
    OpcodeUnsupported {
        /// Name of the missing operation.
        opcode: &'static str,
    },

    /// A caller passed an argument outside what the engine accepts.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Every slot of the slab is in use; the caller should retry once one is released.
    #[error("no free slot in the slab")]
    NoFreeSlot,

    /// The submission queue is full of operations that have not completed yet.
    #[error("too many operations in flight ({in_flight}); reap completions first")]
    QueueFull {
        /// Operations currently in flight.
        in_flight: usize,
    },

    /// On-disk data failed a consistency check that recovery cannot repair.
    #[error("{} is corrupt at byte {offset}: {reason}", .path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

fn path_suffix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" {}", p.display()),
        None => String::new(),
    }
}

impl Error {
    /// Wraps an `io::Error` with the operation and path it concerns.
    pub fn io(op: &'static str, path: impl Into<Option<PathBuf>>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The errno this error corresponds to, for callers that must report POSIX codes.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::NoDirectIo { .. } => libc::EINVAL,
            Error::MemlockTooLow { .. } => libc::ENOMEM,
            Error::IoUringUnavailable { .. } | Error::OpcodeUnsupported { .. } => libc::ENOSYS,
            Error::InvalidArgument(_) => libc::EINVAL,
            Error::NoFreeSlot | Error::QueueFull { .. } => libc::EAGAIN,
            Error::Corrupt { .. } => libc::EIO,
        }
    }
}
