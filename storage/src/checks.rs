//! Start-up checks of the environment, each failing with the fix in its message.
//!
//! A storage node that starts on a directory without O_DIRECT, or with a locked-memory limit
//! too low for its slab, would otherwise fail on the first request of a benchmark, far from the
//! cause. These checks run when a [`crate::ChunkStore`] opens.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Refuses a data directory that cannot do real O_DIRECT I/O: one on tmpfs or ramfs (memory,
/// not a disk, where O_DIRECT is absent or only emulated), or one whose file system rejects
/// O_DIRECT opens.
pub fn check_data_dir(dir: &Path) -> Result<()> {
    let fs_type =
        statfs_type(dir).map_err(|e| Error::io("statfs data dir", dir.to_path_buf(), e))?;
    let memory_fs = match fs_type {
        TMPFS_MAGIC => Some("tmpfs"),
        RAMFS_MAGIC => Some("ramfs"),
        _ => None,
    };
    if let Some(name) = memory_fs {
        return Err(Error::NoDirectIo {
            dir: dir.to_path_buf(),
            reason: format!("is on {name}, which keeps data in memory and has no O_DIRECT"),
        });
    }
    probe_o_direct(dir)
}

fn statfs_type(dir: &Path) -> io::Result<i64> {
    let c_path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: c_path is NUL-terminated and buf is a writable statfs of the right size.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it filled the whole struct.
    let buf = unsafe { buf.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64 and u32/i32 elsewhere
    Ok(buf.f_type as i64)
}

/// Creates, opens with O_DIRECT and removes a probe file in `dir`.
fn probe_o_direct(dir: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join(format!(".benchfs-odirect-probe-{}", std::process::id()));
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let _ = std::fs::remove_file(&probe);
    match opened {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(Error::NoDirectIo {
            dir: dir.to_path_buf(),
            reason: "is on a file system that rejects O_DIRECT".into(),
        }),
        Err(e) => Err(Error::io("create O_DIRECT probe file", probe, e)),
    }
}

/// Refuses to pin `needed_bytes` when the locked-memory limit is lower and the process lacks
/// CAP_IPC_LOCK (which exempts it from the limit).
pub fn check_memlock(needed_bytes: u64) -> Result<()> {
    if has_cap_ipc_lock() {
        return Ok(());
    }
    let limit_bytes = memlock_limit_bytes();
    if limit_bytes < needed_bytes {
        return Err(Error::MemlockTooLow {
            needed_bytes,
            limit_bytes,
        });
    }
    Ok(())
}

/// The soft RLIMIT_MEMLOCK in bytes (`u64::MAX` when unlimited).
pub fn memlock_limit_bytes() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    lim.rlim_cur
}

/// Whether CAP_IPC_LOCK is in the effective capability set (root normally has it).
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_is_refused_with_the_fix() {
        let shm = Path::new("/dev/shm");
        assert!(shm.is_dir(), "this test needs /dev/shm (tmpfs)");
        let err = check_data_dir(shm).expect_err("tmpfs must be refused");
        let msg = err.to_string();
        assert!(msg.contains("tmpfs"), "{msg}");
        assert!(msg.contains("disk-backed"), "{msg}");
    }

    #[test]
    fn memlock_message_names_the_limit() {
        let err = Error::MemlockTooLow {
            needed_bytes: 1 << 30,
            limit_bytes: 8 << 20,
        };
        let msg = err.to_string();
        assert!(
            msg.contains("ulimit -l") && msg.contains("8388608"),
            "{msg}"
        );
        // Within the limit always passes, with or without CAP_IPC_LOCK.
        check_memlock(0).expect("zero bytes always fit");
    }
}
