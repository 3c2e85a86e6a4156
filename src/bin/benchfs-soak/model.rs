//! The model of what the cluster acknowledged, the counters of a run and the random choices
//! of the soak clients.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use benchfs::client::Error;
use benchfs::placement::mix64;
use serde::{Deserialize, Serialize};

/// Seeds are kept below 2^62 so that they fit a TOML integer.
pub(crate) const SEED_MASK: u64 = (1 << 62) - 1;
/// Extents a file may have before writes into it stop (the model stays cheap to evaluate).
pub(crate) const MAX_EXTENTS: usize = 8;
/// Subdirectories a client keeps at most.
pub(crate) const MAX_DIRS: usize = 6;
/// Pause of a client after an error caused by a fault.
pub(crate) const FAULT_PAUSE: Duration = Duration::from_millis(250);
/// Age after which an uncertain path is settled: whatever a stopped or cut-off server
/// received before its fault was healed has been executed by then.
pub(crate) const SETTLE_AFTER: Duration = Duration::from_secs(15);

/// A range of a file written from one seed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Extent {
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) seed: u64,
}

/// What a certain file holds: zeros, then each extent over the previous ones, up to `size`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FileModel {
    pub(crate) size: u64,
    pub(crate) extents: Vec<Extent>,
}

impl FileModel {
    pub(crate) fn written(offset: u64, len: u64, seed: u64) -> FileModel {
        let extents = if len == 0 {
            Vec::new()
        } else {
            vec![Extent { offset, len, seed }]
        };
        FileModel {
            size: offset + len,
            extents,
        }
    }

    /// The file after `len` bytes of `seed` were written at `offset` (sizes only grow).
    pub(crate) fn write(&mut self, offset: u64, len: u64, seed: u64) {
        if len > 0 {
            self.extents.push(Extent { offset, len, seed });
        }
        self.size = self.size.max(offset + len);
    }

    /// The file after a truncate to `size`: bytes beyond are gone (a later growth reads zeros).
    pub(crate) fn truncate(&mut self, size: u64) {
        self.extents.retain(|e| e.offset < size);
        for e in &mut self.extents {
            e.len = e.len.min(size - e.offset);
        }
        self.size = size;
    }

    /// The expected bytes of `[offset, offset + buf.len())`, all within the size.
    pub(crate) fn expected(&self, offset: u64, buf: &mut [u8]) {
        buf.fill(0);
        let end = offset + buf.len() as u64;
        for e in &self.extents {
            let (from, to) = (e.offset.max(offset), (e.offset + e.len).min(end));
            if from < to {
                let range = (from - offset) as usize..(to - offset) as usize;
                fill(&mut buf[range], e.seed, from);
            }
        }
    }
}

/// The byte at absolute `offset` of data written from `seed`.
pub(crate) fn byte_at(seed: u64, offset: u64) -> u8 {
    (mix64((offset / 8) ^ seed) >> ((offset % 8) * 8)) as u8
}

/// Fills `buf` with the bytes of `seed` from absolute `offset`.
pub(crate) fn fill(buf: &mut [u8], seed: u64, offset: u64) {
    let mut i = 0usize;
    while i < buf.len() && (offset + i as u64) % 8 != 0 {
        buf[i] = byte_at(seed, offset + i as u64);
        i += 1;
    }
    while i + 8 <= buf.len() {
        let word = mix64(((offset + i as u64) / 8) ^ seed);
        buf[i..i + 8].copy_from_slice(&word.to_le_bytes());
        i += 8;
    }
    while i < buf.len() {
        buf[i] = byte_at(seed, offset + i as u64);
        i += 1;
    }
}

/// SplitMix64: random choices reproducible from a seed.
#[derive(Debug)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    pub(crate) fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len() as u64) as usize)
    }
}

/// Counters of a run, summed over clients and phases.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub(crate) ops: BTreeMap<String, u64>,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) unexpected: u64,
    pub(crate) bytes_written: u64,
    pub(crate) bytes_verified: u64,
    pub(crate) files_verified: u64,
    pub(crate) lost_files: u64,
    pub(crate) lost_bytes: u64,
    /// Directory entries left without their inode by failed operations.
    pub(crate) dangling: u64,
}

impl Counters {
    pub(crate) fn add(&mut self, other: &Counters) {
        for (k, v) in &other.ops {
            *self.ops.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.unexpected += other.unexpected;
        self.bytes_written += other.bytes_written;
        self.bytes_verified += other.bytes_verified;
        self.files_verified += other.files_verified;
        self.lost_files += other.lost_files;
        self.lost_bytes += other.lost_bytes;
        self.dangling += other.dangling;
    }

    pub(crate) fn total_ops(&self) -> u64 {
        self.ops.values().sum()
    }

    pub(crate) fn summary(&self, uncertain: usize) -> String {
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            kinds.join(",")
        };
        format!(
            "ops={} errors={errors} unexpected={} dangling={} bytes_written={} \
             bytes_verified={} files_verified={} uncertain={uncertain} lost_bytes={} LOST={}",
            self.total_ops(),
            self.unexpected,
            self.dangling,
            self.bytes_written,
            self.bytes_verified,
            self.files_verified,
            self.lost_bytes,
            self.lost_files
        )
    }
}

/// The model of every client and the counters, as `run` saves them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) counters: Counters,
    pub(crate) dirs: Vec<String>,
    pub(crate) uncertain: Vec<String>,
    pub(crate) files: Vec<SavedFile>,
    /// Files found lost during the run.
    pub(crate) lost: Vec<SavedFile>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SavedFile {
    pub(crate) path: String,
    pub(crate) size: u64,
    /// `[offset, len, seed]` triples.
    pub(crate) extents: Vec<[u64; 3]>,
}

impl From<(String, FileModel)> for SavedFile {
    fn from((path, m): (String, FileModel)) -> SavedFile {
        let extents = m
            .extents
            .iter()
            .map(|e| [e.offset, e.len, e.seed])
            .collect();
        SavedFile {
            path,
            size: m.size,
            extents,
        }
    }
}

impl From<&SavedFile> for FileModel {
    fn from(saved: &SavedFile) -> FileModel {
        let extents = saved
            .extents
            .iter()
            .map(|&[offset, len, seed]| Extent { offset, len, seed })
            .collect();
        FileModel {
            size: saved.size,
            extents,
        }
    }
}

/// The errno name of `errno`, for the error counts.
pub(crate) fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EIO => "EIO",
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::EBUSY => "EBUSY",
        libc::ENOSPC => "ENOSPC",
        libc::ENOMEM => "ENOMEM",
        libc::ENOTCONN => "ENOTCONN",
        libc::ECONNRESET => "ECONNRESET",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ESTALE => "ESTALE",
        other => return format!("errno{other}"),
    };
    name.to_string()
}

/// How an error bears on the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A server said the path does not exist.
    Missing,
    /// What faults cause: a deadline, a broken or refused connection, an I/O error.
    Fault,
    /// Anything else.
    Unexpected,
}

pub(crate) fn classify(e: &Error) -> Failure {
    match e {
        Error::Remote { errno, .. } if *errno == libc::ENOENT => Failure::Missing,
        Error::Remote { errno, .. }
            if matches!(*errno, libc::EIO | libc::ETIMEDOUT | libc::EAGAIN) =>
        {
            Failure::Fault
        }
        Error::Remote { .. } | Error::Invalid(_) | Error::BadHandle(_) | Error::Path(_) => {
            Failure::Unexpected
        }
        Error::TimedOut { .. } | Error::Transport { .. } | Error::Local(_) => Failure::Fault,
        Error::Registry(_) => Failure::Fault,
    }
}

/// Totals shared with the progress printer.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) ops: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) lost: AtomicU64,
}
