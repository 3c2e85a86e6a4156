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

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeInclusive;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Version of the entry file format, stored in every entry as `format`.
const ENTRY_FORMAT: u32 = 1;
/// Largest entry file that is read; real entries are far smaller.
const MAX_ENTRY_BYTES: u64 = 1 << 20;
/// Number of bytes in the cluster secret.
pub const SECRET_LEN: usize = 16;
/// Longest pause between two looks at the directory in [`Registry::wait`].
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Name of the secret file inside the registry.
const SECRET_FILE: &str = "secret";
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

/// Where one target can be reached, as published by its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetEntry {
    /// Rank of the server, `0..servers`.
    pub rank: u32,
    /// Shard index within the server, `0..shards_of_rank`.
    pub shard: u32,
    /// Number of shards this server runs.
    pub shards_of_rank: u32,
    /// Number of servers in the cluster.
    pub servers: u32,
    /// Host name of the server.
    pub host: String,
    /// Process id of the server.
    pub pid: u32,
    /// UCX worker address of the shard.
    pub address: Vec<u8>,
    /// When the server started, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
}

impl TargetEntry {
    fn check(&self) -> Result<(), String> {
        if self.servers == 0 {
            return Err("servers must be at least 1".into());
        }
        if self.rank >= self.servers {
            return Err(format!(
                "rank {} not below servers {}",
                self.rank, self.servers
            ));
        }
        if self.shard >= self.shards_of_rank {
            return Err(format!(
                "shard {} not below shards_of_rank {}",
                self.shard, self.shards_of_rank
            ));
        }
        if self.address.is_empty() {
            return Err("empty worker address".into());
        }
        Ok(())
    }
}

/// The on-disk form of a [`TargetEntry`].
#[derive(Serialize, Deserialize)]
struct EntryFile {
    format: u32,
    rank: u32,
    shard: u32,
    shards_of_rank: u32,
    servers: u32,
    host: String,
    pid: u32,
    address: String,
    started_unix_ms: u64,
}

impl From<&TargetEntry> for EntryFile {
    fn from(entry: &TargetEntry) -> Self {
        Self {
            format: ENTRY_FORMAT,
            rank: entry.rank,
            shard: entry.shard,
            shards_of_rank: entry.shards_of_rank,
            servers: entry.servers,
            host: entry.host.clone(),
            pid: entry.pid,
            address: encode_hex(&entry.address),
            started_unix_ms: entry.started_unix_ms,
        }
    }
}

impl EntryFile {
    fn into_entry(self) -> Result<TargetEntry, String> {
        if self.format != ENTRY_FORMAT {
            return Err(format!(
                "format {} is not the supported format {ENTRY_FORMAT}",
                self.format
            ));
        }
        let address = decode_hex(&self.address).ok_or("address is not hexadecimal")?;
        let entry = TargetEntry {
            rank: self.rank,
            shard: self.shard,
            shards_of_rank: self.shards_of_rank,
            servers: self.servers,
            host: self.host,
            pid: self.pid,
            address,
            started_unix_ms: self.started_unix_ms,
        };
        entry.check()?;
        Ok(entry)
    }
}

/// An entry file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryProblem {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// What [`Registry::scan`] found: the usable entries and the unusable files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Usable entries, sorted by (rank, shard).
    pub entries: Vec<TargetEntry>,
    /// Files in `targets/` that are not usable entries, sorted by path.
    pub problems: Vec<EntryProblem>,
}

/// A complete cluster: every shard of every rank has an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    servers: u32,
    entries: Vec<TargetEntry>,
}

/// Whether a set of entries forms a complete cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    /// Every target is present.
    Complete(Cluster),
    /// Some targets have not been published yet.
    Incomplete(Incomplete),
    /// The entries contradict each other or the expected server count.
    Inconsistent(Inconsistency),
}

/// What is still missing from a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete {
    /// The number of servers, if known from the entries or the caller.
    pub servers: Option<u32>,
    /// How many ranks have all of their shards published.
    pub ranks_up: u32,
    /// The missing targets, in rank order.
    pub missing: Vec<Missing>,
}

/// A run of missing targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// Ranks of which no shard has been published.
    Ranks(RangeInclusive<u32>),
    /// Shards missing from a rank that published some of its shards.
    Shards {
        /// The rank.
        rank: u32,
        /// The missing shard indices.
        shards: Vec<RangeInclusive<u32>>,
    },
}

/// A contradiction among entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inconsistency {
    /// The caller expects zero servers.
    NoServersExpected,
    /// Entries disagree on the number of servers; the distinct values.
    ServerCounts(Vec<u32>),
    /// The entries agree on a server count that differs from the expected one.
    ExpectedMismatch {
        /// What the caller expects.
        expected: u32,
        /// What the entries say.
        published: u32,
    },
    /// Entries of one rank disagree on its number of shards.
    ShardCounts {
        /// The rank.
        rank: u32,
        /// One value.
        first: u32,
        /// Another value.
        second: u32,
    },
    /// Two entries for the same target.
    Duplicate {
        /// The rank.
        rank: u32,
        /// The shard.
        shard: u32,
    },
    /// An entry whose rank or shard lies outside the declared counts.
    OutOfRange {
        /// The rank.
        rank: u32,
        /// The shard.
        shard: u32,
        /// The server count of the cluster.
        servers: u32,
        /// The shard count the entry declares.
        shards_of_rank: u32,
    },
}

impl Cluster {
    /// Decides whether `entries` form a complete cluster.
    ///
    /// The number of servers comes from the entries, which must agree, and
    /// must equal `expected_servers` when that is given. With no entries and
    /// no expected count the cluster is incomplete with an unknown size.
    pub fn from_entries(
        mut entries: Vec<TargetEntry>,
        expected_servers: Option<u32>,
    ) -> Completeness {
        entries.sort_by_key(|e| (e.rank, e.shard));
        let servers = match agreed_servers(&entries, expected_servers) {
            Ok(Some(servers)) => servers,
            Ok(None) => {
                return Completeness::Incomplete(Incomplete {
                    servers: None,
                    ranks_up: 0,
                    missing: Vec::new(),
                })
            }
            Err(detail) => return Completeness::Inconsistent(detail),
        };
        if let Err(detail) = check_layout(&entries, servers) {
            return Completeness::Inconsistent(detail);
        }
        let (ranks_up, missing) = find_missing(&entries, servers);
        if missing.is_empty() {
            Completeness::Complete(Cluster { servers, entries })
        } else {
            Completeness::Incomplete(Incomplete {
                servers: Some(servers),
                ranks_up,
                missing,
            })
        }
    }

    /// Number of servers.
    pub fn servers(&self) -> u32 {
        self.servers
    }

    /// All entries, sorted by (rank, shard).
    pub fn entries(&self) -> &[TargetEntry] {
        &self.entries
    }

    /// The entry of one target.
    pub fn target(&self, rank: u32, shard: u32) -> Option<&TargetEntry> {
        let index = self
            .entries
            .binary_search_by_key(&(rank, shard), |e| (e.rank, e.shard))
            .ok()?;
        Some(&self.entries[index])
    }

    /// Takes the entries out, sorted by (rank, shard).
    pub fn into_entries(self) -> Vec<TargetEntry> {
        self.entries
    }
}

fn agreed_servers(
    entries: &[TargetEntry],
    expected: Option<u32>,
) -> Result<Option<u32>, Inconsistency> {
    if expected == Some(0) {
        return Err(Inconsistency::NoServersExpected);
    }
    let counts: BTreeSet<u32> = entries.iter().map(|e| e.servers).collect();
    if counts.len() > 1 {
        return Err(Inconsistency::ServerCounts(counts.into_iter().collect()));
    }
    match (counts.first().copied(), expected) {
        (Some(published), Some(expected)) if published != expected => {
            Err(Inconsistency::ExpectedMismatch {
                expected,
                published,
            })
        }
        (Some(published), _) => Ok(Some(published)),
        (None, expected) => Ok(expected),
    }
}

/// Checks sorted entries for targets out of range, duplicates and shard counts
/// that differ within a rank.
fn check_layout(entries: &[TargetEntry], servers: u32) -> Result<(), Inconsistency> {
    for (index, entry) in entries.iter().enumerate() {
        if entry.rank >= servers || entry.shard >= entry.shards_of_rank {
            return Err(Inconsistency::OutOfRange {
                rank: entry.rank,
                shard: entry.shard,
                servers,
                shards_of_rank: entry.shards_of_rank,
            });
        }
        let Some(prev) = index.checked_sub(1).map(|i| &entries[i]) else {
            continue;
        };
        if prev.rank != entry.rank {
            continue;
        }
        if prev.shard == entry.shard {
            return Err(Inconsistency::Duplicate {
                rank: entry.rank,
                shard: entry.shard,
            });
        }
        if prev.shards_of_rank != entry.shards_of_rank {
            return Err(Inconsistency::ShardCounts {
                rank: entry.rank,
                first: prev.shards_of_rank,
                second: entry.shards_of_rank,
            });
        }
    }
    Ok(())
}

/// Lists what is missing from sorted, consistent entries, and counts the
/// ranks that are complete.
fn find_missing(entries: &[TargetEntry], servers: u32) -> (u32, Vec<Missing>) {
    let mut missing = Vec::new();
    let mut ranks_up = 0;
    let mut next_rank = 0;
    for rank_entries in entries.chunk_by(|a, b| a.rank == b.rank) {
        let first = &rank_entries[0];
        if first.rank > next_rank {
            missing.push(Missing::Ranks(next_rank..=first.rank - 1));
        }
        let shards = gaps(rank_entries.iter().map(|e| e.shard), first.shards_of_rank);
        if shards.is_empty() {
            ranks_up += 1;
        } else {
            missing.push(Missing::Shards {
                rank: first.rank,
                shards,
            });
        }
        next_rank = first.rank + 1;
    }
    if next_rank < servers {
        missing.push(Missing::Ranks(next_rank..=servers - 1));
    }
    (ranks_up, missing)
}

/// The runs of `0..end` not in `present`, which is sorted, unique and below `end`.
fn gaps(present: impl Iterator<Item = u32>, end: u32) -> Vec<RangeInclusive<u32>> {
    let mut runs = Vec::new();
    let mut next = 0;
    for value in present {
        if value > next {
            runs.push(next..=value - 1);
        }
        next = value + 1;
    }
    if next < end {
        runs.push(next..=end - 1);
    }
    runs
}

fn write_runs(f: &mut fmt::Formatter<'_>, runs: &[RangeInclusive<u32>]) -> fmt::Result {
    for (index, run) in runs.iter().enumerate() {
        let sep = if index == 0 { "" } else { "," };
        if run.start() == run.end() {
            write!(f, "{sep}{}", run.start())?;
        } else {
            write!(f, "{sep}{}-{}", run.start(), run.end())?;
        }
    }
    Ok(())
}

fn is_single(runs: &[RangeInclusive<u32>]) -> bool {
    runs.len() == 1 && runs[0].start() == runs[0].end()
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Ranks(ranks) => {
                let runs = std::slice::from_ref(ranks);
                f.write_str(if is_single(runs) { "rank " } else { "ranks " })?;
                write_runs(f, runs)
            }
            Missing::Shards { rank, shards } => {
                let word = if is_single(shards) { "shard" } else { "shards" };
                write!(f, "rank {rank} {word} ")?;
                write_runs(f, shards)
            }
        }
    }
}

impl fmt::Display for Incomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(servers) = self.servers else {
            return f.write_str("no targets published yet");
        };
        write!(f, "{} of {servers} servers up; missing ", self.ranks_up)?;
        for (index, missing) in self.missing.iter().enumerate() {
            let sep = if index == 0 { "" } else { ", " };
            write!(f, "{sep}{missing}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoServersExpected => f.write_str("zero servers expected"),
            Self::ServerCounts(counts) => {
                let counts: Vec<String> = counts.iter().map(u32::to_string).collect();
                let counts = counts.join(" vs ");
                write!(f, "entries disagree on the number of servers ({counts})")
            }
            Self::ExpectedMismatch {
                expected,
                published,
            } => write!(
                f,
                "expected {expected} servers, but the entries say {published}"
            ),
            Self::ShardCounts {
                rank,
                first,
                second,
            } => write!(
                f,
                "entries of rank {rank} disagree on its shard count ({first} vs {second})"
            ),
            Self::Duplicate { rank, shard } => {
                write!(f, "two entries for rank {rank} shard {shard}")
            }
            Self::OutOfRange {
                rank,
                shard,
                servers,
                shards_of_rank,
            } => write!(
                f,
                "rank {rank} shard {shard} lies outside {servers} servers \
                 of {shards_of_rank} shards"
            ),
        }
    }
}

impl fmt::Display for Completeness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Complete(cluster) => write!(
                f,
                "all {} servers up ({} targets)",
                cluster.servers,
                cluster.entries.len()
            ),
            Self::Incomplete(incomplete) => incomplete.fmt(f),
            Self::Inconsistent(detail) => write!(
                f,
                "inconsistent registry: {detail} (stale entries of another cluster? stop all \
                 servers and remove the target-*.toml files from the registry)"
            ),
        }
    }
}

/// The state of the cluster as seen in the registry at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Whether the usable entries form a complete cluster.
    pub completeness: Completeness,
    /// Files that are not usable entries.
    pub problems: Vec<EntryProblem>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.completeness.fmt(f)?;
        if !self.problems.is_empty() {
            f.write_str("; unusable entries: ")?;
            for (index, problem) in self.problems.iter().enumerate() {
                let sep = if index == 0 { "" } else { "; " };
                write!(f, "{sep}{problem}")?;
            }
        }
        Ok(())
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

    fn secret_path(&self) -> PathBuf {
        self.dir.join(SECRET_FILE)
    }

    fn ensure_targets_dir(&self) -> Result<()> {
        create_private_dir(&self.targets, false)?;
        let meta =
            fs::symlink_metadata(&self.targets).map_err(io_error("inspect", &self.targets))?;
        check_private_dir(&self.targets, &meta)
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
        let text =
            toml::to_string(&EntryFile::from(entry)).map_err(|source| RegistryError::Encode {
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

fn problem(path: PathBuf, reason: &str) -> EntryProblem {
    EntryProblem {
        path,
        reason: reason.to_owned(),
    }
}

fn entry_file_name(rank: u32, shard: u32) -> String {
    format!("target-{rank:06}-{shard:03}.toml")
}

/// Parses a canonical entry file name into (rank, shard).
fn parse_entry_name(name: &str) -> Option<(u32, u32)> {
    let middle = name.strip_prefix("target-")?.strip_suffix(".toml")?;
    let (rank, shard) = middle.split_once('-')?;
    let number = |text: &str| {
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        digits.then(|| text.parse::<u32>().ok()).flatten()
    };
    let (rank, shard) = (number(rank)?, number(shard)?);
    (entry_file_name(rank, shard) == name).then_some((rank, shard))
}

/// Reads one entry; `Ok(None)` if it vanished meanwhile.
fn read_entry(path: &Path, rank: u32, shard: u32) -> Result<Option<TargetEntry>, String> {
    let file = match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open: {e}")),
        Ok(file) => file,
    };
    let mut text = String::new();
    file.take(MAX_ENTRY_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_ENTRY_BYTES {
        return Err(format!("larger than {MAX_ENTRY_BYTES} bytes"));
    }
    let stored: EntryFile =
        toml::from_str(&text).map_err(|e| format!("invalid entry: {}", e.message().trim()))?;
    let entry = stored.into_entry()?;
    if (entry.rank, entry.shard) != (rank, shard) {
        return Err(format!(
            "holds rank {} shard {}, which does not match its name",
            entry.rank, entry.shard
        ));
    }
    Ok(Some(entry))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", path)(e)),
        _ => Ok(()),
    }
}

fn create_private_dir(path: &Path, parents: bool) -> Result<()> {
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

fn check_private_dir(path: &Path, meta: &fs::Metadata) -> Result<()> {
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

fn check_owner(path: &Path, meta: &fs::Metadata) -> Result<()> {
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
fn write_private_file(path: &Path, bytes: &[u8], exclusive: bool) -> Result<()> {
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
fn sync_dir(path: &Path) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Barrier};

    const CHILD_ENV: &str = "REGISTRY_TEST_SECRET_CHILD";

    fn entry(rank: u32, shard: u32, shards_of_rank: u32, servers: u32) -> TargetEntry {
        TargetEntry {
            rank,
            shard,
            shards_of_rank,
            servers,
            host: format!("node{rank:02}"),
            pid: 1000 + rank,
            address: vec![0, 0xab, rank as u8, shard as u8, 0xff],
            started_unix_ms: 1_700_000_000_000 + u64::from(rank),
        }
    }

    fn cluster_entries(servers: u32, shards: u32) -> Vec<TargetEntry> {
        (0..servers)
            .flat_map(|rank| (0..shards).map(move |shard| entry(rank, shard, shards, servers)))
            .collect()
    }

    fn new_registry() -> (tempfile::TempDir, Registry) {
        let tmp = tempfile::tempdir().unwrap();
        let registry = Registry::open(&tmp.path().join("registry")).unwrap();
        (tmp, registry)
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|item| item.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn open_creates_private_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/registry");
        let registry = Registry::open(&dir).unwrap();
        assert_eq!(registry.dir(), dir);
        assert_eq!(mode_of(&dir), 0o700);
        assert_eq!(mode_of(&dir.join("targets")), 0o700);
        Registry::open(&dir).unwrap();
        Registry::open_existing(&dir).unwrap();
    }

    #[test]
    fn publish_list_round_trip() {
        let (_tmp, registry) = new_registry();
        let mut entries = cluster_entries(12, 2);
        entries.reverse();
        for entry in &entries {
            registry.publish(entry).unwrap();
        }
        entries.reverse();
        assert_eq!(registry.list().unwrap(), entries);
        let path = registry.targets.join("target-000011-001.toml");
        assert_eq!(mode_of(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("address = \"00ab0b01ff\""), "{text}");
        assert!(text.contains("host = \"node11\""), "{text}");
    }

    #[test]
    fn publish_replaces_and_leaves_no_temp_files() {
        let (_tmp, registry) = new_registry();
        let mut first = entry(0, 0, 1, 1);
        registry.publish(&first).unwrap();
        first.address = vec![7; 300];
        registry.publish(&first).unwrap();
        assert_eq!(names_in(&registry.targets), ["target-000000-000.toml"]);
        assert_eq!(registry.list().unwrap(), [first]);
    }

    #[test]
    fn list_ignores_leftover_temp_files() {
        let (_tmp, registry) = new_registry();
        registry.publish(&entry(0, 0, 2, 1)).unwrap();
        let leftover = registry.targets.join(".target-000000-001.toml.tmp-99999");
        fs::write(&leftover, "rank = 0\nshard = 1\nhalf a fi").unwrap();
        assert_eq!(registry.list().unwrap(), [entry(0, 0, 2, 1)]);
        assert!(registry.scan().unwrap().problems.is_empty());
    }

    #[test]
    fn publish_refuses_inconsistent_entry() {
        let (_tmp, registry) = new_registry();
        let err = registry.publish(&entry(2, 0, 1, 2)).unwrap_err();
        assert!(
            matches!(err, RegistryError::InvalidEntry { rank: 2, .. }),
            "{err}"
        );
        let err = registry.publish(&entry(0, 3, 3, 1)).unwrap_err();
        assert!(
            err.to_string()
                .contains("shard 3 not below shards_of_rank 3"),
            "{err}"
        );
    }

    #[test]
    fn malformed_entries_are_reported_by_name() {
        let (_tmp, registry) = new_registry();
        registry.publish(&entry(0, 0, 2, 1)).unwrap();
        let garbage = registry.targets.join("target-000000-001.toml");
        fs::write(&garbage, "this is = = not toml").unwrap();
        let scan = registry.scan().unwrap();
        assert_eq!(scan.entries, [entry(0, 0, 2, 1)]);
        assert_eq!(scan.problems.len(), 1);
        assert_eq!(scan.problems[0].path, garbage);
        let err = registry.list().unwrap_err();
        assert!(matches!(err, RegistryError::MalformedEntry { ref path, .. } if *path == garbage));
        assert!(err.to_string().contains("target-000000-001.toml"), "{err}");
    }

    #[test]
    fn entry_contents_must_match_name() {
        let (_tmp, registry) = new_registry();
        registry.publish(&entry(0, 0, 2, 1)).unwrap();
        let source = registry.targets.join("target-000000-000.toml");
        fs::copy(&source, registry.targets.join("target-000000-001.toml")).unwrap();
        fs::write(registry.targets.join("target-1-0.toml"), "").unwrap();
        let bad_hex = fs::read_to_string(&source).unwrap().replace("00ab", "zz");
        fs::write(registry.targets.join("target-000000-002.toml"), bad_hex).unwrap();
        let problems = registry.scan().unwrap().problems;
        let reasons: Vec<&str> = problems.iter().map(|p| p.reason.as_str()).collect();
        assert_eq!(problems.len(), 3, "{reasons:?}");
        assert!(
            reasons[0].contains("does not match its name"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("not hexadecimal"), "{reasons:?}");
        assert!(reasons[2].contains("unexpected file name"), "{reasons:?}");
    }

    #[test]
    fn secret_is_created_once_and_private() {
        let (_tmp, registry) = new_registry();
        let secret = registry.secret().unwrap();
        assert_eq!(registry.secret().unwrap(), secret);
        assert_eq!(registry.read_secret().unwrap(), secret);
        let path = registry.dir().join("secret");
        assert_eq!(mode_of(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim_end().len(), 32);
        assert!(text.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(names_in(registry.dir()), ["secret", "targets"]);
    }

    #[test]
    fn secret_is_shared_by_racing_threads() {
        let (_tmp, registry) = new_registry();
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (barrier, dir) = (Arc::clone(&barrier), registry.dir().to_path_buf());
                thread::spawn(move || {
                    barrier.wait();
                    Registry::open(&dir).unwrap().secret().unwrap()
                })
            })
            .collect();
        let secrets: Vec<Secret> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(secrets.iter().all(|s| *s == secrets[0]));
        assert_eq!(registry.read_secret().unwrap(), secrets[0]);
        assert_eq!(mode_of(&registry.dir().join("secret")), 0o600);
        assert_eq!(names_in(registry.dir()), ["secret", "targets"]);
    }

    fn secret_child(dir: &Path) {
        let go = dir.parent().unwrap().join("go");
        let give_up = Instant::now() + Duration::from_secs(30);
        while !go.exists() && Instant::now() < give_up {
            thread::sleep(Duration::from_millis(1));
        }
        let secret = Registry::open(dir).unwrap().secret().unwrap();
        println!("secret-hex={}", encode_hex(secret.as_bytes()));
    }

    #[test]
    fn secret_is_shared_by_racing_processes() {
        if let Some(dir) = std::env::var_os(CHILD_ENV) {
            return secret_child(Path::new(&dir));
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("registry");
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, m)| m);
        let test = format!("{module}::secret_is_shared_by_racing_processes");
        let children: Vec<_> = (0..4)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", &test, "--nocapture", "--test-threads=1"])
                    .env(CHILD_ENV, &dir)
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        fs::write(tmp.path().join("go"), "").unwrap();
        let mut secrets = Vec::new();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success());
            let stdout = String::from_utf8(output.stdout).unwrap();
            let printed = stdout
                .split("secret-hex=")
                .nth(1)
                .and_then(|rest| rest.get(..32));
            secrets.push(printed.expect("child printed no secret").to_owned());
        }
        let secret = Registry::open_existing(&dir)
            .unwrap()
            .read_secret()
            .unwrap();
        assert!(
            secrets.iter().all(|s| *s == encode_hex(secret.as_bytes())),
            "{secrets:?}"
        );
        assert_eq!(names_in(&dir), ["secret", "targets"]);
    }

    #[test]
    fn secret_with_wide_mode_is_refused() {
        let (_tmp, registry) = new_registry();
        registry.secret().unwrap();
        let path = registry.dir().join("secret");
        for mode in [0o644, 0o640, 0o700] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = registry.read_secret().unwrap_err();
            assert!(
                matches!(err, RegistryError::SecretPermissions { .. }),
                "{err}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&format!("chmod 600 {}", path.display())),
                "{message}"
            );
            assert!(registry.secret().is_err());
        }
    }

    #[test]
    fn malformed_secret_is_refused() {
        let (_tmp, registry) = new_registry();
        let path = registry.dir().join("secret");
        let bad = [
            "",
            "0123",
            "zz0123456789abcdef0123456789abcd",
            &"ab".repeat(17),
        ];
        for text in bad {
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = registry.read_secret().unwrap_err();
            assert!(
                matches!(err, RegistryError::MalformedSecret { .. }),
                "{text:?}: {err}"
            );
            assert!(registry.secret().is_err());
        }
        fs::write(&path, "00112233445566778899AABBCCDDEEFF").unwrap();
        assert_eq!(registry.read_secret().unwrap().as_bytes()[15], 0xff);
    }

    #[test]
    fn missing_secret_is_reported_to_clients() {
        let (_tmp, registry) = new_registry();
        let err = registry.read_secret().unwrap_err();
        assert!(err.to_string().contains("start the servers first"), "{err}");
    }

    #[test]
    fn secret_debug_hides_bytes_and_eq_compares() {
        let secret = Secret::from_bytes([0x5a; SECRET_LEN]);
        assert_eq!(format!("{secret:?}"), "Secret(<hidden>)");
        assert_eq!(secret, Secret::from_bytes([0x5a; SECRET_LEN]));
        let mut other = [0x5a; SECRET_LEN];
        other[15] = 0x5b;
        assert_ne!(secret, Secret::from_bytes(other));
        assert_ne!(Secret::generate().unwrap(), Secret::generate().unwrap());
    }

    #[test]
    fn writable_registry_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("registry");
        Registry::open(&dir).unwrap();
        for mode in [0o777, 0o770, 0o702] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            for err in [
                Registry::open(&dir).unwrap_err(),
                Registry::open_existing(&dir).unwrap_err(),
            ] {
                assert!(
                    matches!(err, RegistryError::InsecureDirectory { .. }),
                    "{err}"
                );
                let message = err.to_string();
                assert!(
                    message.contains(&format!("chmod 700 {}", dir.display())),
                    "{message}"
                );
            }
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let targets = dir.join("targets");
        fs::set_permissions(&targets, fs::Permissions::from_mode(0o777)).unwrap();
        let err = Registry::open_existing(&dir).unwrap_err();
        assert!(err
            .to_string()
            .contains(&format!("chmod 700 {}", targets.display())));
    }

    #[test]
    fn registry_must_be_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain");
        fs::write(&file, "").unwrap();
        let err = Registry::open_existing(&file).unwrap_err();
        assert!(matches!(err, RegistryError::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn missing_registry_is_reported_to_clients() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nowhere");
        let err = Registry::open_existing(&dir).unwrap_err();
        let expected = format!(
            "no registry at {}: start the servers first or check --registry",
            dir.display()
        );
        assert_eq!(err.to_string(), expected);
        assert!(!dir.exists());
    }

    fn incomplete(completeness: &Completeness) -> &Incomplete {
        match completeness {
            Completeness::Incomplete(incomplete) => incomplete,
            other => panic!("expected an incomplete cluster, got {other:?}"),
        }
    }

    fn inconsistency(completeness: Completeness) -> Inconsistency {
        match completeness {
            Completeness::Inconsistent(detail) => detail,
            other => panic!("expected an inconsistent cluster, got {other:?}"),
        }
    }

    #[test]
    fn complete_cluster() {
        let mut entries = cluster_entries(3, 2);
        entries.push(entry(3, 0, 1, 4));
        for e in &mut entries {
            e.servers = 4;
        }
        entries.swap(0, 5);
        for expected in [None, Some(4)] {
            let Completeness::Complete(cluster) = Cluster::from_entries(entries.clone(), expected)
            else {
                panic!("not complete");
            };
            assert_eq!(cluster.servers(), 4);
            assert_eq!(cluster.entries().len(), 7);
            assert_eq!(cluster.target(3, 0).unwrap().shards_of_rank, 1);
            assert!(cluster.target(3, 1).is_none());
            let order: Vec<_> = cluster
                .entries()
                .iter()
                .map(|e| (e.rank, e.shard))
                .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        }
    }

    #[test]
    fn missing_ranks_and_shards() {
        let mut entries = cluster_entries(6, 2);
        entries.retain(|e| e.rank != 2 && e.rank != 4 && e.rank != 5);
        let completeness = Cluster::from_entries(entries.clone(), None);
        let detail = incomplete(&completeness);
        assert_eq!(detail.ranks_up, 3);
        assert_eq!(
            detail.missing,
            [Missing::Ranks(2..=2), Missing::Ranks(4..=5)]
        );
        assert_eq!(
            completeness.to_string(),
            "3 of 6 servers up; missing rank 2, ranks 4-5"
        );
        entries.retain(|e| (e.rank, e.shard) != (1, 0));
        entries.push(entry(2, 1, 4, 6));
        let completeness = Cluster::from_entries(entries, Some(6));
        assert_eq!(
            completeness.to_string(),
            "2 of 6 servers up; missing rank 1 shard 0, rank 2 shards 0,2-3, ranks 4-5"
        );
    }

    #[test]
    fn empty_cluster() {
        let unknown = Cluster::from_entries(Vec::new(), None);
        assert_eq!(unknown.to_string(), "no targets published yet");
        let known = Cluster::from_entries(Vec::new(), Some(4));
        assert_eq!(known.to_string(), "0 of 4 servers up; missing ranks 0-3");
        let zero = inconsistency(Cluster::from_entries(Vec::new(), Some(0)));
        assert_eq!(zero, Inconsistency::NoServersExpected);
    }

    #[test]
    fn inconsistent_server_counts() {
        let mut entries = cluster_entries(2, 1);
        entries.push(entry(3, 0, 1, 4));
        let completeness = Cluster::from_entries(entries, None);
        let message = completeness.to_string();
        assert!(
            message.contains("disagree on the number of servers (2 vs 4)"),
            "{message}"
        );
        assert!(message.contains("stale entries"), "{message}");
        assert_eq!(
            inconsistency(completeness),
            Inconsistency::ServerCounts(vec![2, 4])
        );
    }

    #[test]
    fn expected_count_mismatch() {
        let detail = inconsistency(Cluster::from_entries(cluster_entries(2, 1), Some(3)));
        assert_eq!(
            detail,
            Inconsistency::ExpectedMismatch {
                expected: 3,
                published: 2
            }
        );
        assert_eq!(
            detail.to_string(),
            "expected 3 servers, but the entries say 2"
        );
    }

    #[test]
    fn inconsistent_layouts() {
        let mut duplicate = cluster_entries(1, 2);
        duplicate.push(entry(0, 1, 2, 1));
        let detail = inconsistency(Cluster::from_entries(duplicate, None));
        assert_eq!(detail, Inconsistency::Duplicate { rank: 0, shard: 1 });
        let shard_counts = vec![entry(0, 0, 2, 1), entry(0, 1, 3, 1)];
        let detail = inconsistency(Cluster::from_entries(shard_counts, None));
        assert!(matches!(detail, Inconsistency::ShardCounts { rank: 0, .. }));
        let out_of_range = vec![entry(0, 0, 1, 1), entry(1, 0, 1, 1)];
        let detail = inconsistency(Cluster::from_entries(out_of_range, None));
        assert!(matches!(detail, Inconsistency::OutOfRange { rank: 1, .. }));
    }

    #[test]
    fn wait_returns_once_entries_appear() {
        let (_tmp, registry) = new_registry();
        let publisher = registry.clone();
        let writer = thread::spawn(move || {
            for e in cluster_entries(3, 2) {
                thread::sleep(Duration::from_millis(15));
                publisher.publish(&e).unwrap();
            }
        });
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let entries = registry
            .wait_with(Some(3), deadline, |status| seen.push(status.to_string()))
            .unwrap();
        writer.join().unwrap();
        assert_eq!(entries, cluster_entries(3, 2));
        assert_eq!(seen[0], "0 of 3 servers up; missing ranks 0-2");
        assert!(seen.windows(2).all(|w| w[0] != w[1]), "{seen:?}");
    }

    #[test]
    fn wait_reports_what_is_missing_at_deadline() {
        let (_tmp, registry) = new_registry();
        for e in cluster_entries(4, 2) {
            if e.rank != 2 {
                registry.publish(&e).unwrap();
            }
        }
        registry.publish(&entry(2, 1, 3, 4)).unwrap();
        let started = Instant::now();
        let err = registry
            .wait(None, started + Duration::from_millis(80))
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(80));
        assert!(matches!(err, RegistryError::Timeout { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(&registry.dir().display().to_string()),
            "{message}"
        );
        assert!(
            message.ends_with("3 of 4 servers up; missing rank 2 shards 0,2"),
            "{message}"
        );
    }

    #[test]
    fn wait_reports_unusable_entries() {
        let (_tmp, registry) = new_registry();
        registry.publish(&entry(0, 0, 1, 2)).unwrap();
        fs::write(registry.targets.join("target-000001-000.toml"), "rank = ").unwrap();
        let err = registry.wait(None, Instant::now()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("missing rank 1; unusable entries: "),
            "{message}"
        );
        assert!(
            message.contains("target-000001-000.toml: invalid entry"),
            "{message}"
        );
    }

    #[test]
    fn wait_reports_stale_registry() {
        let (_tmp, registry) = new_registry();
        registry.publish(&entry(0, 0, 1, 2)).unwrap();
        registry.publish(&entry(1, 0, 1, 3)).unwrap();
        let err = registry.wait(Some(2), Instant::now()).unwrap_err();
        assert!(matches!(err, RegistryError::Inconsistent { .. }), "{err}");
        let message = err.to_string();
        let targets = registry.dir().join("targets");
        assert!(
            message.contains(&format!("rm -f {}/", targets.display())),
            "{message}"
        );
    }

    #[test]
    fn unpublish_removes_entries() {
        let (_tmp, registry) = new_registry();
        for e in cluster_entries(3, 2) {
            registry.publish(&e).unwrap();
        }
        let leftover = registry.targets.join(".target-000001-000.toml.tmp-4242");
        fs::write(&leftover, "partial").unwrap();
        assert_eq!(registry.unpublish_rank(1).unwrap(), 2);
        assert!(!leftover.exists());
        assert_eq!(registry.unpublish_rank(1).unwrap(), 0);
        registry.unpublish(2, 0).unwrap();
        registry.unpublish(2, 0).unwrap();
        let left: Vec<_> = registry
            .list()
            .unwrap()
            .iter()
            .map(|e| (e.rank, e.shard))
            .collect();
        assert_eq!(left, [(0, 0), (0, 1), (2, 1)]);
    }

    #[test]
    fn entry_names_are_canonical() {
        assert_eq!(entry_file_name(12, 3), "target-000012-003.toml");
        assert_eq!(parse_entry_name("target-000012-003.toml"), Some((12, 3)));
        for bad in [
            "target-12-3.toml",
            "target-000012-003.tom",
            "target-+00012-003.toml",
        ] {
            assert_eq!(parse_entry_name(bad), None, "{bad}");
        }
        assert_eq!(
            decode_hex(&encode_hex(&[0, 1, 254, 255])),
            Some(vec![0, 1, 254, 255])
        );
        assert_eq!(decode_hex("+1"), None);
        assert!(now_unix_ms() / 1000 > 1_600_000_000);
    }
}
