//! The C types and constants of `include/benchfs_c_api.h`, laid out as the header has them.

#![allow(non_camel_case_types)]

use std::ffi::c_int;

/// `BENCHFS_API_VERSION`.
pub const BENCHFS_API_VERSION: c_int = 1;

/// Read only.
pub const BENCHFS_O_RDONLY: c_int = 0x0;
/// Write only.
pub const BENCHFS_O_WRONLY: c_int = 0x1;
/// Read and write.
pub const BENCHFS_O_RDWR: c_int = 0x2;
/// Create when missing.
pub const BENCHFS_O_CREAT: c_int = 0x40;
/// With create: fail when it exists.
pub const BENCHFS_O_EXCL: c_int = 0x80;
/// Truncate to 0 after opening.
pub const BENCHFS_O_TRUNC: c_int = 0x200;

/// Existence.
pub const BENCHFS_F_OK: c_int = 0;
/// Execute permission.
pub const BENCHFS_X_OK: c_int = 1;
/// Write permission.
pub const BENCHFS_W_OK: c_int = 2;
/// Read permission.
pub const BENCHFS_R_OK: c_int = 4;

/// A directory entry that is a directory.
pub const BENCHFS_DT_DIR: c_int = 4;
/// A directory entry that is a regular file.
pub const BENCHFS_DT_REG: c_int = 8;

/// An open file as C sees it: never defined, only pointed to.
#[repr(C)]
#[derive(Debug)]
pub struct benchfs_file {
    _opaque: [u8; 0],
}

/// An open directory listing as C sees it: never defined, only pointed to.
#[repr(C)]
#[derive(Debug)]
pub struct benchfs_dir {
    _opaque: [u8; 0],
}

/// `benchfs_stat_t`: the client's [`crate::client::Stat`], whose `#[repr(C)]` layout is the
/// header's.
pub type benchfs_stat_t = crate::client::Stat;

const _: () = assert!(std::mem::size_of::<benchfs_stat_t>() == 64);

/// `benchfs_statfs_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct benchfs_statfs_t {
    /// Capacity.
    pub total_bytes: u64,
    /// Free.
    pub free_bytes: u64,
    /// Free for unprivileged users.
    pub available_bytes: u64,
    /// Inodes stored.
    pub files: u64,
    /// Shards of the cluster.
    pub targets: u64,
}

impl From<crate::client::StatFs> for benchfs_statfs_t {
    fn from(s: crate::client::StatFs) -> Self {
        benchfs_statfs_t {
            total_bytes: s.total_bytes,
            free_bytes: s.free_bytes,
            available_bytes: s.available_bytes,
            files: s.files,
            targets: s.targets,
        }
    }
}
