//! Rendezvous of servers and clients through a directory on a shared file system.
//!
//! Every `benchfsd` process runs several shards; one (server rank, shard index)
//! pair is a *target*. Each target publishes its UCX worker address in a
//! registry directory that all nodes can see, and clients wait until every
//! target of the cluster is present.
//!
//! # Layout
//!
//! ```text
//! <registry>/                       mode 0700, owned by the user running BenchFS
//!     secret                        16 random bytes as 32 hex digits, mode 0600
//!     targets/                      mode 0700
//!         target-000000-000.toml    rank 0, shard 0
//!         target-000000-001.toml    rank 0, shard 1
//!         target-000001-000.toml    rank 1, shard 0
//!         .target-000001-001.toml.tmp-4242   being written, ignored by readers
//! ```
//!
//! An entry is a small TOML document (see [`TargetEntry`]) whose `address`
//! holds the binary worker address as hexadecimal text. Every entry also
//! states how many servers the cluster has and how many shards its own rank
//! runs, so a reader can tell from the entries alone whether the cluster is
//! complete ([`Cluster::from_entries`]).
//!
//! # Atomicity
//!
//! * An entry is written to `.<name>.tmp-<pid>` in `targets/`, flushed with
//!   `fsync`, and renamed over its final name. Readers therefore see either
//!   no entry or a whole one; names starting with a dot are never read.
//! * The secret is created by whichever server gets there first: each
//!   candidate writes its own temporary file (named after its process id and a
//!   random suffix), flushes it and hard-links it to `secret`. `link` fails
//!   with `EEXIST` for every server but one; those read the winner's secret.
//!   The file named `secret` thus only ever appears complete.
//!
//! # Permissions
//!
//! Whoever can write into the registry can point clients at servers of their
//! own, so the registry and its `targets/` directory must belong to the
//! effective user of the process and must not be writable by group or others.
//! The secret must belong to that user and have no permission bits beyond
//! `0600`. Violations are refused with an error that names the path and the
//! command that fixes it.
//!
//! # Modules
//!
//! This module holds the [`Registry`] handle and its errors, and publishes, scans and waits
//! for entries. Its submodules own the rest: `entry` the [`TargetEntry`] and its TOML file,
//! `cluster` the completeness check ([`Cluster`], [`Status`]), `secret` the [`Secret`] and
//! its file, and `files` the creation and checks of private files and directories.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod cluster;
mod entry;
mod files;
mod secret;
#[cfg(test)]
mod tests;

pub use cluster::{Cluster, Completeness, Incomplete, Inconsistency, Missing, Status};
pub use entry::{EntryProblem, Scan, TargetEntry};
pub use secret::{Secret, SECRET_LEN};

use entry::{entry_file_name, parse_entry_name, problem, read_entry};
use files::{
    check_private_dir, create_private_dir, remove_if_present, sync_dir, write_private_file,
};

/// Longest pause between two looks at the directory in [`Registry::wait`].
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Name of the subdirectory that holds the target entries.
const TARGETS_DIR: &str = "targets";

/// Result type of this module.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Everything that can go wrong while using the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A system call on `path` failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done, e.g. "read" or "create directory".
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A client looked for a registry that does not exist.
    #[error("no registry at {path}: start the servers first or check --registry")]
    Missing {
        /// The registry directory that was expected.
        path: PathBuf,
    },
    /// A client looked for the secret before any server created it.
    #[error("no secret at {path}: start the servers first or check --registry")]
    MissingSecret {
        /// The secret file that was expected.
        path: PathBuf,
    },
    /// The registry path (or its `targets/` directory) is not a directory.
    #[error("{path} is not a directory; point --registry at a directory")]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },
    /// A registry directory can be written by users other than its owner.
    #[error(
        "registry directory {path} is writable by group or others (mode {mode:04o}), so \
         other users could redirect clients; fix it with `chmod 700 {path}`"
    )]
    InsecureDirectory {
        /// The offending directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A registry file or directory belongs to another user.
    #[error(
        "{path} is owned by uid {owner}, but this process runs as uid {euid}; use a registry \
         of your own, or fix it with `chown {euid} {path}` and `chmod 700` (directories) or \
         `chmod 600` (the secret)"
    )]
    ForeignOwner {
        /// The offending path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of this process.
        euid: u32,
    },
    /// The secret file can be read or written by someone besides its owner.
    #[error(
        "secret file {path} has mode {mode:04o}, but only its owner may access it; \
         fix it with `chmod 600 {path}`"
    )]
    SecretPermissions {
        /// The secret file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The secret file does not hold 32 hexadecimal digits.
    #[error("secret file {path} is malformed ({reason}); stop the servers and delete it")]
    MalformedSecret {
        /// The secret file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A target entry in the registry cannot be used.
    #[error("target entry {path} is malformed: {reason}")]
    MalformedEntry {
        /// The entry file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An entry given to [`Registry::publish`] is not self-consistent.
    #[error("refusing to publish rank {rank} shard {shard}: {reason}")]
    InvalidEntry {
        /// Rank of the entry.
        rank: u32,
        /// Shard of the entry.
        shard: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// An entry could not be encoded as TOML.
    #[error("cannot encode target entry {path}: {source}")]
    Encode {
        /// The entry file that was to be written.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: toml::ser::Error,
    },
    /// The kernel did not provide random bytes.
    #[error("cannot get random bytes from the kernel: {source}")]
    Random {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The entries contradict each other or the caller's expectation.
    #[error(
        "registry {dir} is inconsistent: {detail}; it probably holds stale entries of another \
         cluster: stop all servers, then run `rm -f {dir}/targets/target-*.toml`"
    )]
    Inconsistent {
        /// The registry directory.
        dir: PathBuf,
        /// What contradicts what.
        detail: Inconsistency,
    },
    /// The cluster did not become complete before the deadline.
    #[error("cluster in registry {dir} not complete after {waited:.1?}: {status}")]
    Timeout {
        /// The registry directory.
        dir: PathBuf,
        /// How long the caller waited.
        waited: Duration,
        /// The last state seen.
        status: Box<Status>,
    },
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RegistryError + 'a {
    move |source| RegistryError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A registry directory; see the module documentation.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    targets: PathBuf,
}

impl Registry {
    /// Opens the registry for a server, creating it (mode 0700) if missing.
    pub fn open(dir: &Path) -> Result<Self> {
        create_private_dir(dir, true)?;
        let registry = Self::at(dir);
        check_private_dir(dir, &fs::metadata(dir).map_err(io_error("inspect", dir))?)?;
        registry.ensure_targets_dir()?;
        Ok(registry)
    }

    /// Opens an existing registry for a client; nothing is created.
    pub fn open_existing(dir: &Path) -> Result<Self> {
        let meta = match fs::metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RegistryError::Missing {
                    path: dir.to_path_buf(),
                })
            }
            other => other.map_err(io_error("inspect", dir))?,
        };
        check_private_dir(dir, &meta)?;
        let registry = Self::at(dir);
        match fs::symlink_metadata(&registry.targets) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => check_private_dir(
                &registry.targets,
                &other.map_err(io_error("inspect", &registry.targets))?,
            )?,
        }
        Ok(registry)
    }

    fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            targets: dir.join(TARGETS_DIR),
        }
    }

    /// The registry directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ensure_targets_dir(&self) -> Result<()> {
        create_private_dir(&self.targets, false)?;
        let meta =
            fs::symlink_metadata(&self.targets).map_err(io_error("inspect", &self.targets))?;
        check_private_dir(&self.targets, &meta)
    }

    /// Publishes (or replaces) the entry of one target, atomically.
    pub fn publish(&self, entry: &TargetEntry) -> Result<()> {
        entry
            .check()
            .map_err(|reason| RegistryError::InvalidEntry {
                rank: entry.rank,
                shard: entry.shard,
                reason,
            })?;
        self.ensure_targets_dir()?;
        let name = entry_file_name(entry.rank, entry.shard);
        let path = self.targets.join(&name);
        let text = entry.to_toml().map_err(|source| RegistryError::Encode {
            path: path.clone(),
            source,
        })?;
        let temp = self.targets.join(format!(".{name}.tmp-{}", process::id()));
        let written = write_private_file(&temp, text.as_bytes(), false)
            .and_then(|()| fs::rename(&temp, &path).map_err(io_error("rename into", &path)));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        sync_dir(&self.targets)
    }

    /// Removes the entry of one target; a missing entry is not an error.
    pub fn unpublish(&self, rank: u32, shard: u32) -> Result<()> {
        remove_if_present(&self.targets.join(entry_file_name(rank, shard)))
    }

    /// Removes every entry of `rank`, and temporary files left by a server of
    /// that rank. Returns the number of entries removed.
    pub fn unpublish_rank(&self, rank: u32) -> Result<usize> {
        let mut removed = 0;
        for name in self.target_file_names()? {
            let Some(text) = name.to_str() else { continue };
            let (base, temporary) = match text.strip_prefix('.') {
                Some(hidden) => match hidden.split_once(".tmp-") {
                    Some((base, _)) => (base, true),
                    None => continue,
                },
                None => (text, false),
            };
            if parse_entry_name(base).is_some_and(|(r, _)| r == rank) {
                remove_if_present(&self.targets.join(&name))?;
                removed += usize::from(!temporary);
            }
        }
        Ok(removed)
    }

    fn target_file_names(&self) -> Result<Vec<std::ffi::OsString>> {
        let dir = match fs::read_dir(&self.targets) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other.map_err(io_error("list", &self.targets))?,
        };
        dir.map(|item| item.map(|item| item.file_name()))
            .collect::<io::Result<_>>()
            .map_err(io_error("list", &self.targets))
    }

    /// Reads every entry; unusable files are returned as problems.
    pub fn scan(&self) -> Result<Scan> {
        let mut scan = Scan::default();
        for name in self.target_file_names()? {
            let path = self.targets.join(&name);
            let Some(text) = name.to_str() else {
                scan.problems.push(problem(path, "file name is not UTF-8"));
                continue;
            };
            if text.starts_with('.') {
                continue;
            }
            match parse_entry_name(text) {
                None => scan.problems.push(problem(
                    path,
                    "unexpected file name (entries are named target-<rank:06>-<shard:03>.toml)",
                )),
                Some((rank, shard)) => match read_entry(&path, rank, shard) {
                    Ok(Some(entry)) => scan.entries.push(entry),
                    Ok(None) => {}
                    Err(reason) => scan.problems.push(problem(path, &reason)),
                },
            }
        }
        scan.entries.sort_by_key(|e| (e.rank, e.shard));
        scan.problems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(scan)
    }

    /// Reads every entry, sorted by (rank, shard); fails on the first file
    /// that is not a usable entry, naming it.
    pub fn list(&self) -> Result<Vec<TargetEntry>> {
        let mut scan = self.scan()?;
        if scan.problems.is_empty() {
            return Ok(scan.entries);
        }
        let EntryProblem { path, reason } = scan.problems.swap_remove(0);
        Err(RegistryError::MalformedEntry { path, reason })
    }

    /// The current state of the cluster.
    pub fn status(&self, expected_servers: Option<u32>) -> Result<Status> {
        let Scan { entries, problems } = self.scan()?;
        Ok(Status {
            completeness: Cluster::from_entries(entries, expected_servers),
            problems,
        })
    }

    /// Waits until the cluster is complete and returns its entries, sorted by
    /// (rank, shard); fails at `deadline` with a description of what is missing.
    pub fn wait(
        &self,
        expected_servers: Option<u32>,
        deadline: Instant,
    ) -> Result<Vec<TargetEntry>> {
        self.wait_with(expected_servers, deadline, |_| {})
    }

    /// Like [`Registry::wait`], and calls `observe` with each state that
    /// differs from the previous one, so a client can report progress.
    pub fn wait_with<F: FnMut(&Status)>(
        &self,
        expected_servers: Option<u32>,
        deadline: Instant,
        mut observe: F,
    ) -> Result<Vec<TargetEntry>> {
        let started = Instant::now();
        let mut interval = Duration::from_millis(1);
        let mut previous: Option<Status> = None;
        loop {
            let Status {
                completeness,
                problems,
            } = self.status(expected_servers)?;
            let completeness = match completeness {
                Completeness::Complete(cluster) => return Ok(cluster.into_entries()),
                other => other,
            };
            let status = Status {
                completeness,
                problems,
            };
            if previous.as_ref() != Some(&status) {
                observe(&status);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.wait_failed(status, now - started));
            }
            previous = Some(status);
            thread::sleep(interval.min(deadline - now));
            interval = (interval * 2).min(MAX_POLL_INTERVAL);
        }
    }

    fn wait_failed(&self, status: Status, waited: Duration) -> RegistryError {
        match status.completeness {
            Completeness::Inconsistent(detail) => RegistryError::Inconsistent {
                dir: self.dir.clone(),
                detail,
            },
            _ => RegistryError::Timeout {
                dir: self.dir.clone(),
                waited,
                status: Box::new(status),
            },
        }
    }
}

/// Milliseconds since the Unix epoch, for [`TargetEntry::started_unix_ms`].
pub fn now_unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}
