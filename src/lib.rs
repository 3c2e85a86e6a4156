//! BenchFS: an ad-hoc distributed file system for HPC I/O benchmarking.
//!
//! Storage nodes keep file data in O_DIRECT chunk files written through io_uring, and move it
//! over UCX without intermediate copies. This crate ties the pieces together; the storage
//! engine lives in [`storage`] (package `benchfs-storage`), the UCX transport in [`rdma`]
//! (package `benchfs-rdma`).

pub mod client;
pub mod config;
pub mod ffi;
pub mod launcher;
pub mod logging;
pub mod path;
pub mod placement;
pub mod proto;
pub mod registry;
pub mod server;
pub mod topology;

pub use benchfs_rdma as rdma;
pub use benchfs_storage as storage;

/// Version of the BenchFS library.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
