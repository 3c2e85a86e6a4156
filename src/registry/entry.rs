//! Target entries: [`TargetEntry`], its TOML file with the address as hexadecimal text, the
//! canonical file names `target-<rank:06>-<shard:03>.toml`, and reading one entry back.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{decode_hex, encode_hex};

/// Version of the entry file format, stored in every entry as `format`.
const ENTRY_FORMAT: u32 = 1;
/// Largest entry file that is read; real entries are far smaller.
const MAX_ENTRY_BYTES: u64 = 1 << 20;

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
    pub(super) fn check(&self) -> Result<(), String> {
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

    /// The entry as the TOML text of its file.
    pub(super) fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(&EntryFile::from(self))
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

/// What [`Registry::scan`](super::Registry::scan) found: the usable entries and the
/// unusable files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Usable entries, sorted by (rank, shard).
    pub entries: Vec<TargetEntry>,
    /// Files in `targets/` that are not usable entries, sorted by path.
    pub problems: Vec<EntryProblem>,
}

pub(super) fn problem(path: PathBuf, reason: &str) -> EntryProblem {
    EntryProblem {
        path,
        reason: reason.to_owned(),
    }
}

pub(super) fn entry_file_name(rank: u32, shard: u32) -> String {
    format!("target-{rank:06}-{shard:03}.toml")
}

/// Parses a canonical entry file name into (rank, shard).
pub(super) fn parse_entry_name(name: &str) -> Option<(u32, u32)> {
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
pub(super) fn read_entry(
    path: &Path,
    rank: u32,
    shard: u32,
) -> Result<Option<TargetEntry>, String> {
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
