//! The storage server: shards that serve files from chunk stores over UCX.
//!
//! A server process runs one or more shards ([`shard`]), each on its own thread pinned to the
//! cores of one NUMA node. A shard owns its ring, slab, chunk directory, metadata log
//! ([`meta`]) and UCX worker, and shares nothing with the other shards on the data path; the
//! only shared state is the [`Control`] block that asks every shard to stop. `benchfsd` and the
//! embedded server of the C API are this same code.

pub mod dirs;
pub mod meta;
pub mod process;
pub mod shard;

mod data;
mod ns_ops;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

pub use shard::{run_shard, ShardConfig, ShardHooks, ShardSummary};

/// An error answered to a client: an errno and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The positive errno value.
    pub errno: i32,
    /// What failed, for the log.
    pub why: String,
}

impl Failure {
    /// A failure with `errno` and a description.
    pub fn new(errno: i32, why: impl Into<String>) -> Failure {
        Failure {
            errno,
            why: why.into(),
        }
    }

    /// A failure of the storage layer.
    pub fn storage(e: crate::storage::Error) -> Failure {
        Failure::new(e.errno(), e.to_string())
    }

    /// A failure of the transport.
    pub fn rdma(e: crate::rdma::Error) -> Failure {
        Failure::new(e.errno(), e.to_string())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({})",
            self.why,
            std::io::Error::from_raw_os_error(self.errno)
        )
    }
}

/// What the shards of one process share: the request to stop, and an eventfd that wakes every
/// sleeping shard when it is made.
#[derive(Debug)]
pub struct Control {
    stop: AtomicBool,
    wake: OwnedFd,
}

impl Control {
    /// A control block with no stop requested.
    pub fn new() -> std::io::Result<Control> {
        // SAFETY: eventfd has no memory preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Control {
            stop: AtomicBool::new(false),
            wake,
        })
    }

    /// Asks every shard to stop gracefully. Async-signal-safe (an atomic store and a write).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. The eventfd stays readable
        // (it is never read), so every shard polling it wakes; a full counter cannot happen.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The eventfd that becomes readable once a stop is requested.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }
}
