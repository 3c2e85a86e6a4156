//! Private files and directories of the registry: creating them with owner-only modes,
//! refusing ones that others own or can write, flushing them, and removing them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{io_error, RegistryError, Result};

pub(super) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", path)(e)),
        _ => Ok(()),
    }
}

pub(super) fn create_private_dir(path: &Path, parents: bool) -> Result<()> {
    let created = fs::DirBuilder::new()
        .recursive(parents)
        .mode(0o700)
        .create(path);
    match created {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(io_error("create directory", path)(e))
        }
        _ => Ok(()),
    }
}

pub(super) fn check_private_dir(path: &Path, meta: &fs::Metadata) -> Result<()> {
    if !meta.is_dir() {
        return Err(RegistryError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    check_owner(path, meta)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(RegistryError::InsecureDirectory {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

pub(super) fn check_owner(path: &Path, meta: &fs::Metadata) -> Result<()> {
    let euid = effective_uid();
    if meta.uid() != euid {
        return Err(RegistryError::ForeignOwner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            euid,
        });
    }
    Ok(())
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

/// Writes `bytes` to a file of mode 0600 and flushes it to stable storage.
/// With `exclusive`, the file must not exist yet; otherwise it is truncated.
pub(super) fn write_private_file(path: &Path, bytes: &[u8], exclusive: bool) -> Result<()> {
    let mut options = OpenOptions::new();
    options
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if exclusive {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    let mut file = options.open(path).map_err(io_error("create", path))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_error("set the mode of", path))?;
    file.write_all(bytes).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("flush", path))
}

/// Flushes a directory so that a new name in it survives a crash. File
/// systems that cannot flush directories are tolerated.
pub(super) fn sync_dir(path: &Path) -> Result<()> {
    let synced = File::open(path).and_then(|dir| dir.sync_all());
    match synced {
        Err(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Err(io_error("flush directory", path)(e))
        }
        _ => Ok(()),
    }
}
