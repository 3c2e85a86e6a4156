//! The cluster [`Secret`]: its file `secret` in the registry, created once by whichever
//! server gets there first, its permission checks, and the kernel's random bytes.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process;

use super::files::{check_owner, sync_dir, write_private_file};
use super::{decode_hex, encode_hex, io_error, Registry, RegistryError, Result};

/// Number of bytes in the cluster secret.
pub const SECRET_LEN: usize = 16;
/// Name of the secret file inside the registry.
const SECRET_FILE: &str = "secret";

/// The per-cluster shared secret.
///
/// Comparison takes the same time whatever the contents, and `Debug` does not
/// show the bytes.
#[derive(Clone, Copy, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// A fresh secret from the kernel's random source.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; SECRET_LEN];
        fill_random(&mut bytes).map_err(|source| RegistryError::Random { source })?;
        Ok(Self(bytes))
    }

    fn parse(text: &str) -> Result<Self, String> {
        let digits = text.strip_suffix('\n').unwrap_or(text);
        if digits.len() != 2 * SECRET_LEN {
            return Err(format!(
                "expected {} hexadecimal digits, found {} characters",
                2 * SECRET_LEN,
                digits.len()
            ));
        }
        let bytes = decode_hex(digits).ok_or("not hexadecimal")?;
        let mut secret = [0u8; SECRET_LEN];
        secret.copy_from_slice(&bytes);
        Ok(Self(secret))
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

impl Registry {
    fn secret_path(&self) -> PathBuf {
        self.dir.join(SECRET_FILE)
    }

    /// The cluster secret, created by the first server that asks for it.
    pub fn secret(&self) -> Result<Secret> {
        if let Some(secret) = self.load_secret()? {
            return Ok(secret);
        }
        let fresh = Secret::generate()?;
        let temp = self.dir.join(format!(
            ".{SECRET_FILE}.tmp-{}-{}",
            process::id(),
            random_suffix()?
        ));
        let text = format!("{}\n", encode_hex(fresh.as_bytes()));
        if let Err(e) = write_private_file(&temp, text.as_bytes(), true) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        let path = self.secret_path();
        let linked = fs::hard_link(&temp, &path);
        let removed = fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                removed.map_err(io_error("remove", &temp))?;
                sync_dir(&self.dir)?;
                Ok(fresh)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.read_secret(),
            Err(e) => Err(io_error("link secret to", &path)(e)),
        }
    }

    /// The cluster secret, for clients: it must already exist.
    pub fn read_secret(&self) -> Result<Secret> {
        self.load_secret()?
            .ok_or_else(|| RegistryError::MissingSecret {
                path: self.secret_path(),
            })
    }

    fn load_secret(&self) -> Result<Option<Secret>> {
        let path = self.secret_path();
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        let file = match opened {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            other => other.map_err(io_error("open", &path))?,
        };
        let meta = file.metadata().map_err(io_error("inspect", &path))?;
        check_secret_file(&path, &meta)?;
        let mut text = String::new();
        file.take(64)
            .read_to_string(&mut text)
            .map_err(|e| RegistryError::MalformedSecret {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let secret = Secret::parse(&text)
            .map_err(|reason| RegistryError::MalformedSecret { path, reason })?;
        Ok(Some(secret))
    }
}

fn check_secret_file(path: &Path, meta: &fs::Metadata) -> Result<()> {
    if !meta.is_file() {
        return Err(RegistryError::MalformedSecret {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    check_owner(path, meta)?;
    let mode = meta.mode() & 0o7777;
    if mode & !0o600 != 0 {
        return Err(RegistryError::SecretPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn random_suffix() -> Result<String> {
    let mut bytes = [0u8; 4];
    fill_random(&mut bytes).map_err(|source| RegistryError::Random { source })?;
    Ok(encode_hex(&bytes))
}

/// Fills `buf` from getrandom(2), or from /dev/urandom on kernels without it.
fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a live, exclusively borrowed buffer of `rest.len()`
        // bytes, which is exactly the region the kernel may write.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if let Ok(got) = usize::try_from(got) {
            filled += got;
            continue;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::ENOSYS) => return File::open("/dev/urandom")?.read_exact(buf),
            _ => return Err(err),
        }
    }
    Ok(())
}
