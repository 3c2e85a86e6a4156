//! `benchfs-soak`: the clients of the soak test (`scripts/soak.sh`), a verified random mix of
//! every client operation that keeps a model of what the cluster acknowledged as durable.
//!
//! `run` starts `--clients` threads, each with its own [`Client`] and its own directory
//! (`<dir>/c<i>`), so that no two clients race on a name (the races BenchFS documents as
//! limits cannot happen). Until the deadline each thread picks at random: create and write a
//! file (sizes from empty to several chunks, unaligned ones included, written in pieces in any
//! order, sometimes with a hole first, sometimes fsynced), write into an existing file (with an
//! fsync between two writes at times), read a whole file or a range and compare every byte,
//! stat, rename (to a new name or over another file), unlink, truncate (shrink or grow),
//! mkdir, readdir, rmdir and rename of a directory. Names are never used twice.
//!
//! # The model
//!
//! A file is *certain* once `close` or `fsync` returned Ok: from then on its size and bytes
//! are known (a list of extents, each written from a seed; the byte at offset `o` of an extent
//! is a function of its seed and `o`, so a misplaced byte is caught). A namespace operation that
//! returned Ok updates the model. An operation that failed leaves every path it touched
//! *uncertain*: it may or may not have happened, in part or in full, even later (a stopped
//! server executes what it received when it resumes). Uncertain paths are never checked and
//! never touched again, and directories with uncertain entries are not removed or renamed.
//!
//! A certain file that is missing (the server says `ENOENT`) or whose size or bytes differ is
//! LOST, counted once, with its size as lost bytes. Errors that faults cause (deadlines,
//! broken connections) are counted by errno name; other errors are *unexpected* and printed.
//!
//! `run` saves the model and the counters to `--state` (TOML). After the faults are healed and
//! every server is up, `verify` reads every certain file in full and lists every certain
//! directory, adds what it finds to the counters and prints the summary line:
//! `ops=<n> errors=<errno:n,...> unexpected=<n> bytes_written=<n> bytes_verified=<n>
//! files_verified=<n> uncertain=<n> lost_bytes=<n> LOST=<n>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use benchfs::client::{Client, ClientConfig, EntryKind, Error, OpenFlags};
use benchfs::placement::mix64;
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

#[derive(Debug, Parser)]
#[command(
    name = "benchfs-soak",
    about = "Clients of the BenchFS soak test: a verified random mix of operations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the clients until the deadline and save the model to the state file.
    Run(RunArgs),
    /// Check every file and directory of the state file, print the summary line.
    Verify(VerifyArgs),
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Registry directory of the cluster.
    #[arg(long, env = "BENCHFS_REGISTRY")]
    registry: PathBuf,
    /// Client threads, each with its own client and directory.
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Seconds to run (after every client is ready).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Where to save the model and the counters.
    #[arg(long)]
    state: PathBuf,
    /// A file created once every client is connected and has its directory.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Seed of the random choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Deadline of each request, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// Chunk size of the files created (suffixes k, m, g).
    #[arg(long, default_value = "1m", value_parser = size)]
    chunk_size: u64,
    /// Bytes of certain files a client keeps at most (it unlinks beyond).
    #[arg(long, default_value = "48m", value_parser = size)]
    budget: u64,
    /// Directory of the clients' directories.
    #[arg(long, default_value = "/soak")]
    dir: String,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 60)]
    progress: u64,
}

#[derive(Debug, Clone, Args)]
struct VerifyArgs {
    /// Registry directory of the cluster.
    #[arg(long, env = "BENCHFS_REGISTRY")]
    registry: PathBuf,
    /// The state file `run` saved.
    #[arg(long)]
    state: PathBuf,
    /// Deadline of each request, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Seconds a file that fails for a transient reason (deadline, connection) is retried.
    #[arg(long, default_value_t = 60)]
    patience: u64,
}

fn size(s: &str) -> Result<u64, String> {
    benchfs::config::parse_size(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => run(&args),
        Command::Verify(args) => verify(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("benchfs-soak: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Seeds are kept below 2^62 so that they fit a TOML integer.
const SEED_MASK: u64 = (1 << 62) - 1;
/// Extents a file may have before writes into it stop (the model stays cheap to evaluate).
const MAX_EXTENTS: usize = 8;
/// Subdirectories a client keeps at most.
const MAX_DIRS: usize = 6;
/// Pause of a client after an error caused by a fault.
const FAULT_PAUSE: Duration = Duration::from_millis(250);
/// Age after which an uncertain path is settled: whatever a stopped or cut-off server
/// received before its fault was healed has been executed by then.
const SETTLE_AFTER: Duration = Duration::from_secs(15);

/// A range of a file written from one seed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Extent {
    offset: u64,
    len: u64,
    seed: u64,
}

/// What a certain file holds: zeros, then each extent over the previous ones, up to `size`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FileModel {
    size: u64,
    extents: Vec<Extent>,
}

impl FileModel {
    fn written(offset: u64, len: u64, seed: u64) -> FileModel {
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
    fn write(&mut self, offset: u64, len: u64, seed: u64) {
        if len > 0 {
            self.extents.push(Extent { offset, len, seed });
        }
        self.size = self.size.max(offset + len);
    }

    /// The file after a truncate to `size`: bytes beyond are gone (a later growth reads zeros).
    fn truncate(&mut self, size: u64) {
        self.extents.retain(|e| e.offset < size);
        for e in &mut self.extents {
            e.len = e.len.min(size - e.offset);
        }
        self.size = size;
    }

    /// The expected bytes of `[offset, offset + buf.len())`, all within the size.
    fn expected(&self, offset: u64, buf: &mut [u8]) {
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
fn byte_at(seed: u64, offset: u64) -> u8 {
    (mix64((offset / 8) ^ seed) >> ((offset % 8) * 8)) as u8
}

/// Fills `buf` with the bytes of `seed` from absolute `offset`.
fn fill(buf: &mut [u8], seed: u64, offset: u64) {
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
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len() as u64) as usize)
    }
}

/// Counters of a run, summed over clients and phases.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Counters {
    ops: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    unexpected: u64,
    bytes_written: u64,
    bytes_verified: u64,
    files_verified: u64,
    lost_files: u64,
    lost_bytes: u64,
    /// Directory entries left without their inode by failed operations.
    dangling: u64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
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

    fn total_ops(&self) -> u64 {
        self.ops.values().sum()
    }

    fn summary(&self, uncertain: usize) -> String {
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
struct State {
    counters: Counters,
    dirs: Vec<String>,
    uncertain: Vec<String>,
    files: Vec<SavedFile>,
    /// Files found lost during the run.
    lost: Vec<SavedFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedFile {
    path: String,
    size: u64,
    /// `[offset, len, seed]` triples.
    extents: Vec<[u64; 3]>,
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
fn errno_name(errno: i32) -> String {
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
enum Failure {
    /// A server said the path does not exist.
    Missing,
    /// What faults cause: a deadline, a broken or refused connection, an I/O error.
    Fault,
    /// Anything else.
    Unexpected,
}

fn classify(e: &Error) -> Failure {
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
struct Progress {
    ops: AtomicU64,
    errors: AtomicU64,
    lost: AtomicU64,
}

/// One client thread: its client, its part of the model and its counters.
struct Worker<'a> {
    client: Client,
    id: u32,
    root: String,
    files: BTreeMap<String, FileModel>,
    /// Certain directories, the root included.
    dirs: BTreeSet<String>,
    /// Uncertain paths and since when.
    uncertain: BTreeMap<String, Instant>,
    /// Paths found lost, with what they should have held (looked at again by `verify`).
    lost: BTreeMap<String, FileModel>,
    /// Uncertain paths removed since (unlink or rmdir succeeded or found nothing).
    settled: BTreeSet<String>,
    /// Settled paths that directories still list: entries without an inode.
    dangling: BTreeSet<String>,
    /// Uncertain directories that hold entries nobody knows of (they are left alone).
    stuck: BTreeSet<String>,
    next_name: u64,
    counters: Counters,
    rng: Rng,
    budget: u64,
    chunk: u64,
    buf: Vec<u8>,
    check: Vec<u8>,
    progress: &'a Progress,
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("/", |(p, _)| p)
}

fn connect(registry: &PathBuf, timeout_ms: u64, chunk: u64) -> Result<Client, String> {
    let mut config = ClientConfig::from_env(registry).map_err(|e| e.to_string())?;
    config.request_timeout = Duration::from_millis(timeout_ms.max(1));
    config.connect_timeout = Duration::from_secs(60);
    config.chunk_size_bytes = chunk;
    Client::connect(config).map_err(|e| format!("connecting: {e}"))
}

impl Worker<'_> {
    fn op(&mut self, name: &str) {
        *self.counters.ops.entry(name.to_string()).or_default() += 1;
        self.progress.ops.fetch_add(1, Ordering::Relaxed);
    }

    fn fresh_name(&mut self, dir: &str, prefix: &str) -> String {
        self.next_name += 1;
        format!("{dir}/{prefix}{}", self.next_name)
    }

    /// Counts `e` of `op`; prints it when it is unexpected.
    fn error(&mut self, op: &str, e: &Error) -> Failure {
        let kind = classify(e);
        *self
            .counters
            .errors
            .entry(errno_name(e.errno()))
            .or_default() += 1;
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        match kind {
            Failure::Unexpected => self.unexpected(&format!("{op}: {e}")),
            // As an application would, wait a little before going on: a server that is down
            // fails requests at once, which would otherwise make every path uncertain.
            Failure::Fault => std::thread::sleep(FAULT_PAUSE),
            Failure::Missing => {}
        }
        kind
    }

    /// Counts an unexpected outcome; the first few are printed.
    fn unexpected(&mut self, what: &str) {
        self.counters.unexpected += 1;
        if self.counters.unexpected <= 20 {
            eprintln!("benchfs-soak: client {}: unexpected: {what}", self.id);
        }
    }

    /// Records certain file `path` as lost (missing or wrong) and drops it from the model.
    fn lost(&mut self, path: &str, why: &str) {
        let model = self.files.remove(path).unwrap_or_default();
        let size = model.size;
        self.dirs.remove(path);
        self.lost.insert(path.to_string(), model);
        self.counters.lost_files += 1;
        self.counters.lost_bytes += size.max(1);
        self.progress.lost.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "benchfs-soak: client {}: LOST {path} ({size} bytes): {why}",
            self.id
        );
    }

    fn forget(&mut self, path: &str) {
        self.files.remove(path);
        self.dirs.remove(path);
        self.uncertain.insert(path.to_string(), Instant::now());
    }

    /// After a failed operation: `changed` (the paths it may have changed) become uncertain;
    /// when a server said a path is missing, each certain path of `changed` and `context`
    /// (the directories it relied on) is looked up again, and those missing are lost.
    fn failed(&mut self, op: &str, e: &Error, changed: &[&str], context: &[&str]) {
        let kind = self.error(op, e);
        let mut gone = BTreeSet::new();
        if kind == Failure::Missing {
            for &path in changed.iter().chain(context) {
                let certain = self.files.contains_key(path) || self.dirs.contains(path);
                if !certain {
                    continue;
                }
                if let Err(e2) = self.client.stat(path) {
                    if classify(&e2) == Failure::Missing {
                        self.lost(path, &format!("{op}: {e}"));
                        gone.insert(path);
                    }
                }
            }
        }
        for &path in changed {
            if !gone.contains(path) {
                self.forget(path);
            }
        }
    }

    fn live_bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    fn random_file(&mut self) -> Option<String> {
        let n = self.files.len() as u64;
        let i = self.rng.below(n) as usize;
        self.files.keys().nth(i).cloned()
    }

    fn random_dir(&mut self) -> String {
        let i = self.rng.below(self.dirs.len() as u64) as usize;
        self.dirs
            .iter()
            .nth(i)
            .cloned()
            .unwrap_or(self.root.clone())
    }

    /// A size: empty, tiny, around a page, IOR hard's record, around a chunk, several chunks.
    fn random_size(&mut self) -> u64 {
        let c = self.chunk;
        match self.rng.below(12) {
            0 => 0,
            1 => 1 + self.rng.below(100),
            2 => 4096,
            3 => 4095 + self.rng.below(3),
            4 => 47008,
            5 => 65536 + self.rng.below(2) * 333,
            6 => c,
            7 => c - 1 + self.rng.below(3),
            8 => 2 * c + self.rng.below(c) + 1,
            9 => 3 * c + 17,
            _ => 1 + self.rng.below(c),
        }
    }

    /// Fills `self.buf` with `len` bytes of `seed` from `offset`.
    fn data(&mut self, seed: u64, offset: u64, len: u64) {
        self.buf.resize(len as usize, 0);
        fill(&mut self.buf, seed, offset);
    }

    /// One random operation.
    fn step(&mut self) {
        let over = self.live_bytes() > self.budget || self.files.len() > 64;
        let roll = self.rng.below(100);
        match roll {
            _ if over && roll < 50 => self.unlink(),
            0..=21 => self.create(),
            22..=31 => self.overwrite(),
            32..=51 => self.read(),
            52..=59 => self.stat(),
            60..=67 => self.rename(),
            68..=76 => self.unlink(),
            77..=81 => self.truncate(),
            82..=85 => self.mkdir(),
            86..=91 => self.readdir(),
            92..=94 => self.rmdir(),
            95 => self.rename_dir(),
            _ => self.settle(),
        }
    }

    /// Writes `(offset, len)` pieces of `seed` into `file`; false (and the path uncertain)
    /// when one fails.
    fn write_pieces(
        &mut self,
        file: &mut benchfs::client::File,
        pieces: &[(u64, u64)],
        seed: u64,
    ) -> bool {
        for &(offset, len) in pieces {
            self.data(seed, offset, len);
            let buf = std::mem::take(&mut self.buf);
            let result = self.client.write_at(file, &buf, offset);
            self.buf = buf;
            if let Err(e) = result {
                let path = file.path().to_string();
                self.failed("write", &e, &[&path], &[]);
                return false;
            }
            self.counters.bytes_written += len;
        }
        true
    }

    /// Create, write (in pieces, in any order, maybe after a hole), maybe fsync, close.
    fn create(&mut self) {
        let dir = self.random_dir();
        let path = self.fresh_name(&dir, "f");
        let len = self.random_size();
        let hole = if len > 0 && self.rng.percent(10) {
            self.rng.below(2 * self.chunk)
        } else {
            0
        };
        let seed = self.rng.next() & SEED_MASK;
        self.op("create");
        let mut file = match self.client.create(&path, 0o644) {
            Ok(f) => f,
            Err(e) => return self.failed("create", &e, &[&path], &[&dir]),
        };
        // Nothing is written for an empty file (a write of no bytes is not a write).
        let mut pieces = if len == 0 {
            Vec::new()
        } else {
            vec![(hole, len)]
        };
        if len > 1 && self.rng.percent(40) {
            let cut = 1 + self.rng.below(len - 1);
            pieces = vec![(hole, cut), (hole + cut, len - cut)];
            if self.rng.percent(50) {
                pieces.reverse();
            }
        }
        self.op("write");
        if !self.write_pieces(&mut file, &pieces, seed) {
            let _ = self.client.close(file);
            return;
        }
        let model = FileModel::written(hole, len, seed);
        self.finish(file, model, None);
    }

    /// Maybe fsync, then close `file`, whose content is `model` once both succeed. With
    /// `fsynced`, the file was already durable with that content.
    fn finish(
        &mut self,
        mut file: benchfs::client::File,
        model: FileModel,
        fsynced: Option<FileModel>,
    ) {
        let path = file.path().to_string();
        let mut durable = fsynced;
        if self.rng.percent(30) {
            self.op("fsync");
            match self.client.fsync(&mut file) {
                Ok(()) => durable = Some(model.clone()),
                Err(e) => {
                    self.failed("fsync", &e, &[&path], &[]);
                    let _ = self.client.close(file);
                    return;
                }
            }
        }
        self.op("close");
        match self.client.close(file) {
            Ok(()) => {
                self.uncertain.remove(&path);
                self.files.insert(path, model);
            }
            Err(e) => {
                // Durable after an fsync even if the close fails (nothing was written since).
                let synced_last = durable.as_ref().is_some_and(|d| d.size == model.size)
                    && durable.as_ref().map(|d| d.extents.len()) == Some(model.extents.len());
                self.failed("close", &e, &[&path], &[]);
                if synced_last {
                    if let Some(d) = durable {
                        self.uncertain.remove(&path);
                        self.files.insert(path, d);
                    }
                }
            }
        }
    }

    /// Write into an existing file (maybe beyond its end), maybe fsync between two writes.
    fn overwrite(&mut self) {
        let Some(path) = self.random_file() else {
            return self.create();
        };
        if self.files[&path].extents.len() >= MAX_EXTENTS {
            return self.read();
        }
        self.op("open");
        let mut file = match self.client.open(&path, OpenFlags::READ_WRITE, 0) {
            Ok(f) => f,
            Err(e) => {
                // Opening changes nothing: the file stays certain unless it is missing.
                if self.error("open", &e) == Failure::Missing {
                    self.lost(&path, &format!("open: {e}"));
                }
                return;
            }
        };
        let mut model = self.files[&path].clone();
        let mut fsynced = None;
        let writes = 1 + self.rng.below(2);
        for n in 0..writes {
            let offset = self.rng.below(model.size + self.chunk / 4);
            let len = 1 + self.rng.below(self.chunk + self.chunk / 2);
            let seed = self.rng.next() & SEED_MASK;
            self.op("write");
            if !self.write_pieces(&mut file, &[(offset, len)], seed) {
                let _ = self.client.close(file);
                return;
            }
            model.write(offset, len, seed);
            if n + 1 < writes {
                self.op("fsync");
                match self.client.fsync(&mut file) {
                    Ok(()) => fsynced = Some(model.clone()),
                    Err(e) => {
                        self.failed("fsync", &e, &[&path], &[]);
                        let _ = self.client.close(file);
                        return;
                    }
                }
            }
        }
        // From the first write on, the file is what the last acknowledged step made it.
        self.files.remove(&path);
        self.uncertain.insert(path.clone(), Instant::now());
        if let Some(synced) = &fsynced {
            self.uncertain.remove(&path);
            self.files.insert(path.clone(), synced.clone());
        }
        self.finish(file, model, fsynced);
    }

    /// Read a whole file or a range of it and compare every byte.
    fn read(&mut self) {
        let Some(path) = self.random_file() else {
            return self.create();
        };
        let model = self.files[&path].clone();
        self.op("read");
        let file = match self.client.open(&path, OpenFlags::READ, 0) {
            Ok(f) => f,
            Err(e) => {
                if self.error("open", &e) == Failure::Missing {
                    self.lost(&path, &format!("open: {e}"));
                }
                return;
            }
        };
        if file.size() != model.size {
            let why = format!("size {} at open, {} acknowledged", file.size(), model.size);
            return self.lost(&path, &why);
        }
        let (offset, len) = if model.size == 0 || self.rng.percent(50) {
            (0, model.size)
        } else {
            let offset = self.rng.below(model.size);
            (offset, 1 + self.rng.below(model.size - offset))
        };
        self.buf.resize(len as usize, 0);
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.client.read_at(&file, &mut buf, offset);
        self.buf = buf;
        match result {
            Ok(n) if n as u64 != len => {
                self.lost(&path, &format!("short read at {offset}: {n} of {len}"))
            }
            Ok(_) => self.compare(&path, &model, offset),
            Err(e) => {
                if self.error("read", &e) == Failure::Missing {
                    self.lost(&path, &format!("read: {e}"));
                }
            }
        }
    }

    /// Compares `self.buf` (read at `offset`) with the model of `path`.
    fn compare(&mut self, path: &str, model: &FileModel, offset: u64) {
        self.check.resize(self.buf.len(), 0);
        model.expected(offset, &mut self.check);
        let Some(i) = first_difference(&self.buf, &self.check) else {
            self.counters.bytes_verified += self.buf.len() as u64;
            return;
        };
        // Tell damage on the servers from a read that returned wrong bytes: read again into
        // a fresh buffer.
        let mut again = vec![0u8; self.buf.len()];
        let second = match self.client.open(path, OpenFlags::READ, 0) {
            Ok(file) => match self.client.read_at(&file, &mut again, offset) {
                Ok(_) if again == self.check => "intact".to_string(),
                Ok(_) => "wrong too".to_string(),
                Err(e) => format!("failed: {e}"),
            },
            Err(e) => format!("failed: {e}"),
        };
        let why = format!(
            "read of {} bytes at {offset}: wrong byte at offset {} (read again: {second})",
            self.buf.len(),
            offset + i as u64
        );
        self.lost(path, &why);
    }

    fn stat(&mut self) {
        let dir_instead = self.rng.percent(20);
        let path = match self.random_file() {
            Some(p) if !dir_instead => p,
            _ => self.random_dir(),
        };
        self.op("stat");
        match self.client.stat(&path) {
            Ok(st) => {
                let is_dir = st.mode & libc::S_IFMT == libc::S_IFDIR;
                match self.files.get(&path) {
                    Some(m) if is_dir || st.size != m.size => {
                        let why = format!("stat: size {}, {} acknowledged", st.size, m.size);
                        self.lost(&path, &why);
                    }
                    None if !is_dir => self.lost(&path, "stat: not a directory"),
                    _ => {}
                }
            }
            Err(e) => {
                if self.error("stat", &e) == Failure::Missing {
                    self.lost(&path, &format!("stat: {e}"));
                }
            }
        }
    }

    /// Rename a file to a new name or over another file.
    fn rename(&mut self) {
        let Some(from) = self.random_file() else {
            return self.create();
        };
        let to = match self.random_file() {
            Some(other) if other != from && self.rng.percent(30) => other,
            _ => {
                let dir = self.random_dir();
                self.fresh_name(&dir, "f")
            }
        };
        self.op("rename");
        match self.client.rename(&from, &to) {
            Ok(()) => {
                let model = self.files.remove(&from).expect("certain");
                self.files.insert(to, model);
            }
            Err(e) => {
                let (pf, pt) = (parent_of(&from).to_string(), parent_of(&to).to_string());
                self.failed("rename", &e, &[&from, &to], &[&pf, &pt]);
            }
        }
    }

    fn unlink(&mut self) {
        let Some(path) = self.random_file() else {
            return self.create();
        };
        self.unlink_path(&path);
    }

    fn unlink_path(&mut self, path: &str) -> bool {
        self.op("unlink");
        match self.client.unlink(path) {
            Ok(()) => {
                self.files.remove(path);
                true
            }
            Err(e) => {
                self.failed("unlink", &e, &[path], &[parent_of(path)]);
                false
            }
        }
    }

    /// Shrink, grow, or cut at a chunk boundary.
    fn truncate(&mut self) {
        let Some(path) = self.random_file() else {
            return self.create();
        };
        let old = self.files[&path].size;
        let size = match self.rng.below(4) {
            0 | 1 => self.rng.below(old + 1),
            2 => old + 1 + self.rng.below(self.chunk),
            _ => (self.rng.below(3) * self.chunk + self.rng.below(3)).saturating_sub(1),
        };
        self.op("truncate");
        match self.client.truncate(&path, size) {
            Ok(()) => {
                if let Some(m) = self.files.get_mut(&path) {
                    m.truncate(size);
                }
            }
            Err(e) => self.failed("truncate", &e, &[&path], &[]),
        }
    }

    fn mkdir(&mut self) {
        if self.dirs.len() > MAX_DIRS {
            return self.readdir();
        }
        let root = self.root.clone();
        let path = self.fresh_name(&root, "d");
        self.op("mkdir");
        match self.client.mkdir(&path, 0o755) {
            Ok(()) => {
                self.dirs.insert(path);
            }
            Err(e) => self.failed("mkdir", &e, &[&path], &[&root]),
        }
    }

    /// Removes an old uncertain path (a file, or a directory without uncertain entries):
    /// once that succeeds or finds nothing, the path is known to be absent.
    fn settle(&mut self) {
        let now = Instant::now();
        let old: Vec<String> = self
            .uncertain
            .iter()
            .filter(|(_, since)| now.duration_since(**since) > SETTLE_AFTER)
            .map(|(path, _)| path.clone())
            .collect();
        let old: Vec<String> = old
            .into_iter()
            .filter(|p| !self.stuck.contains(p))
            .collect();
        let Some(path) = self.rng.pick(&old).cloned() else {
            return self.readdir();
        };
        let is_dir = path
            .rsplit_once('/')
            .is_some_and(|(_, n)| n.starts_with('d'));
        if is_dir && !self.children(&path).1.is_empty() {
            return self.readdir();
        }
        self.op("settle");
        let result = if is_dir {
            self.client.rmdir(&path)
        } else {
            self.client.unlink(&path)
        };
        match result {
            Ok(()) => {
                self.uncertain.remove(&path);
                self.settled.insert(path);
            }
            Err(e) if e.errno() == libc::ENOTEMPTY => {
                // Entries left inside by failed operations (see `dangling`).
                *self.counters.errors.entry("ENOTEMPTY".into()).or_default() += 1;
                self.stuck.insert(path);
            }
            Err(e) => {
                if self.error("settle", &e) == Failure::Missing {
                    self.uncertain.remove(&path);
                    self.settled.insert(path);
                } else {
                    self.uncertain.insert(path, Instant::now());
                }
            }
        }
    }

    /// Certain and uncertain paths right under `dir`.
    fn children(&self, dir: &str) -> (Vec<String>, Vec<String>) {
        let under = |p: &&String| parent_of(p) == dir;
        let certain = self
            .files
            .keys()
            .chain(self.dirs.iter())
            .filter(under)
            .cloned()
            .collect();
        // Entries without inodes count as uncertain: they keep a directory from going.
        let uncertain = self
            .uncertain
            .keys()
            .chain(self.dangling.iter())
            .filter(under)
            .cloned()
            .collect();
        (certain, uncertain)
    }

    /// List a directory: every certain entry is there with its kind, nothing unknown is.
    fn readdir(&mut self) {
        let dir = self.random_dir();
        self.op("readdir");
        let entries = match self.client.readdir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                if self.error("readdir", &e) == Failure::Missing {
                    self.lost(&dir, &format!("readdir: {e}"));
                }
                return;
            }
        };
        let listed: BTreeMap<String, EntryKind> = entries
            .into_iter()
            .map(|e| (format!("{dir}/{}", e.name), e.kind))
            .collect();
        let (certain, uncertain) = self.children(&dir);
        for path in &certain {
            let want = if self.dirs.contains(path) {
                EntryKind::Directory
            } else {
                EntryKind::File
            };
            match listed.get(path) {
                Some(&kind) if kind == want => {}
                Some(kind) => self.lost(path, &format!("readdir lists it as {kind:?}")),
                None => self.lost(path, "readdir does not list it"),
            }
        }
        for path in listed.keys() {
            if certain.contains(path) || uncertain.contains(path) || self.lost.contains_key(path) {
                continue;
            }
            if self.settled.contains(path) {
                // Left by a failed operation whose undo could not reach the entry's target.
                if self.dangling.insert(path.clone()) {
                    self.counters.dangling += 1;
                    eprintln!(
                        "benchfs-soak: client {}: readdir {dir} lists {path}, which unlink or \
                         rmdir found missing (an entry without its inode)",
                        self.id
                    );
                }
            } else {
                self.unexpected(&format!("readdir {dir} lists {path}, never acknowledged"));
            }
        }
    }

    /// Empty a subdirectory (unlinking its files) and remove it.
    fn rmdir(&mut self) {
        let subdirs: Vec<String> = self
            .dirs
            .iter()
            .filter(|d| **d != self.root)
            .cloned()
            .collect();
        let Some(dir) = self.rng.pick(&subdirs).cloned() else {
            return self.mkdir();
        };
        let (certain, uncertain) = self.children(&dir);
        if !uncertain.is_empty() {
            return self.readdir();
        }
        for path in &certain {
            if !self.unlink_path(path) {
                return;
            }
        }
        self.op("rmdir");
        match self.client.rmdir(&dir) {
            Ok(()) => {
                self.dirs.remove(&dir);
            }
            Err(e) => {
                let root = self.root.clone();
                self.failed("rmdir", &e, &[&dir], &[&root]);
            }
        }
    }

    /// Rename a subdirectory (with its files) to a new name.
    fn rename_dir(&mut self) {
        let subdirs: Vec<String> = self
            .dirs
            .iter()
            .filter(|d| **d != self.root)
            .cloned()
            .collect();
        let Some(from) = self.rng.pick(&subdirs).cloned() else {
            return self.mkdir();
        };
        let (certain, uncertain) = self.children(&from);
        if !uncertain.is_empty() {
            return self.readdir();
        }
        let root = self.root.clone();
        let to = self.fresh_name(&root, "d");
        self.op("rename_dir");
        match self.client.rename(&from, &to) {
            Ok(()) => {
                self.dirs.remove(&from);
                self.dirs.insert(to.clone());
                for path in certain {
                    if let Some(m) = self.files.remove(&path) {
                        let name = path.rsplit_once('/').map_or("", |(_, n)| n);
                        self.files.insert(format!("{to}/{name}"), m);
                    }
                }
            }
            Err(e) => {
                let mut paths = vec![from.clone(), to.clone()];
                for path in certain {
                    let name = path.rsplit_once('/').map_or("", |(_, n)| n).to_string();
                    paths.push(format!("{to}/{name}"));
                    paths.push(path);
                }
                let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                self.failed("rename_dir", &e, &refs, &[&root]);
            }
        }
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or(Some(a.len().min(b.len())))
}

/// What a client thread hands back.
struct Outcome {
    files: BTreeMap<String, FileModel>,
    dirs: BTreeSet<String>,
    uncertain: Vec<String>,
    lost: BTreeMap<String, FileModel>,
    counters: Counters,
}

/// A client thread: connect, make its directory, wait for the others, run until `until`.
fn client_thread(
    args: &RunArgs,
    id: u32,
    seed: u64,
    ready: &Barrier,
    until: &std::sync::OnceLock<Instant>,
    progress: &Progress,
) -> Result<Outcome, String> {
    let prepared = (|| {
        let mut client = connect(&args.registry, args.timeout_ms, args.chunk_size)?;
        let root = format!("{}/c{id}", args.dir.trim_end_matches('/'));
        let give_up = Instant::now() + Duration::from_secs(60);
        while let Err(e) = client.mkdir_all(&root, 0o755) {
            if Instant::now() > give_up {
                return Err(format!("mkdir {root}: {e}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok((client, root))
    })();
    ready.wait();
    ready.wait();
    let (client, root) = prepared?;
    let until = *until.get().expect("set before the second barrier");
    let mut worker = Worker {
        client,
        id,
        root: root.clone(),
        files: BTreeMap::new(),
        dirs: BTreeSet::from([root]),
        uncertain: BTreeMap::new(),
        lost: BTreeMap::new(),
        settled: BTreeSet::new(),
        dangling: BTreeSet::new(),
        stuck: BTreeSet::new(),
        next_name: 0,
        counters: Counters::default(),
        rng: Rng(seed ^ mix64(u64::from(id) + 1)),
        budget: args.budget,
        chunk: args.chunk_size,
        buf: Vec::new(),
        check: Vec::new(),
        progress,
    };
    while Instant::now() < until {
        worker.step();
    }
    Ok(Outcome {
        files: worker.files,
        dirs: worker.dirs,
        uncertain: worker.uncertain.into_keys().collect(),
        lost: worker.lost,
        counters: worker.counters,
    })
}

fn run(args: &RunArgs) -> Result<ExitCode, String> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!(
        "benchfs-soak: {} clients for {} s, seed {seed}",
        args.clients, args.seconds
    );
    let progress = Progress::default();
    // Two rounds: every client connected (or failed), then the deadline is set.
    let ready = Barrier::new(args.clients as usize + 1);
    let until = std::sync::OnceLock::new();
    let outcomes = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..args.clients)
            .map(|id| {
                let (ready, until, progress) = (&ready, &until, &progress);
                scope.spawn(move || client_thread(args, id, seed, ready, until, progress))
            })
            .collect();
        ready.wait();
        let started = Instant::now();
        let _ = until.set(started + Duration::from_secs(args.seconds));
        ready.wait();
        if let Some(file) = &args.ready_file {
            if let Err(e) = std::fs::write(file, b"ready\n") {
                eprintln!("benchfs-soak: {}: {e}", file.display());
            }
        }
        report_progress(args, &progress, started, &threads);
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err("a client panicked".into())))
            .collect::<Vec<_>>()
    });
    let mut state = State::default();
    let mut uncertain = 0;
    for outcome in outcomes {
        let outcome = outcome?;
        state.counters.add(&outcome.counters);
        uncertain += outcome.uncertain.len();
        state.dirs.extend(outcome.dirs);
        state.uncertain.extend(outcome.uncertain);
        state
            .files
            .extend(outcome.files.into_iter().map(SavedFile::from));
        state
            .lost
            .extend(outcome.lost.into_iter().map(SavedFile::from));
    }
    let text = toml::to_string(&state).map_err(|e| format!("saving the state: {e}"))?;
    std::fs::write(&args.state, text).map_err(|e| format!("{}: {e}", args.state.display()))?;
    println!("run: {}", state.counters.summary(uncertain));
    let kinds: Vec<String> = state
        .counters
        .ops
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("run: ops by kind: {}", kinds.join(" "));
    Ok(ExitCode::SUCCESS)
}

/// Prints a progress line every `--progress` seconds until every thread finished.
fn report_progress<T>(
    args: &RunArgs,
    progress: &Progress,
    started: Instant,
    threads: &[std::thread::ScopedJoinHandle<'_, T>],
) {
    let mut next = Duration::from_secs(args.progress);
    while !threads.iter().all(|t| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if args.progress > 0 && started.elapsed() >= next {
            eprintln!(
                "benchfs-soak: {:>5} s: ops={} errors={} LOST={}",
                next.as_secs(),
                progress.ops.load(Ordering::Relaxed),
                progress.errors.load(Ordering::Relaxed),
                progress.lost.load(Ordering::Relaxed)
            );
            next += Duration::from_secs(args.progress);
        }
    }
}

/// Retries `f` while it fails for a transient reason, until `until`.
fn patiently<T>(until: Instant, mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    loop {
        match f() {
            Err(e) if classify(&e) == Failure::Fault && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Reads all of `saved.path` (retrying transient failures until `until`) and compares it
/// with its model; why it differs.
fn check_file(client: &mut Client, until: Instant, saved: &SavedFile) -> Result<(), String> {
    let model = FileModel::from(saved);
    let (size, data) =
        patiently(until, || read_whole(client, &saved.path)).map_err(|e| e.to_string())?;
    if size != model.size || data.len() as u64 != model.size {
        return Err(format!(
            "size {size} ({} read), {} acknowledged",
            data.len(),
            model.size
        ));
    }
    let mut want = vec![0u8; data.len()];
    model.expected(0, &mut want);
    match first_difference(&data, &want) {
        Some(i) => Err(format!("wrong byte at offset {i}")),
        None => Ok(()),
    }
}

/// Reads all of `path`; its bytes.
fn read_whole(client: &mut Client, path: &str) -> Result<(u64, Vec<u8>), Error> {
    let file = client.open(path, OpenFlags::READ, 0)?;
    let mut buf = vec![0u8; file.size() as usize];
    let n = client.read_at(&file, &mut buf, 0)?;
    buf.truncate(n);
    let size = file.size();
    client.close(file)?;
    Ok((size, buf))
}

fn verify(args: &VerifyArgs) -> Result<ExitCode, String> {
    let text = std::fs::read_to_string(&args.state)
        .map_err(|e| format!("{}: {e}", args.state.display()))?;
    let state: State =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", args.state.display()))?;
    let mut client = connect(&args.registry, args.timeout_ms, 0)?;
    let until = Instant::now() + Duration::from_secs(args.patience);
    let mut found = Counters::default();
    let lost = |found: &mut Counters, path: &str, size: u64, why: String| {
        found.lost_files += 1;
        found.lost_bytes += size.max(1);
        eprintln!("benchfs-soak: verify: LOST {path} ({size} bytes): {why}");
    };
    for saved in &state.files {
        *found.ops.entry("verify".into()).or_default() += 1;
        match check_file(&mut client, until, saved) {
            Ok(()) => {
                found.files_verified += 1;
                found.bytes_verified += saved.size;
            }
            Err(why) => lost(&mut found, &saved.path, saved.size, why),
        }
    }
    // A second look at what was found lost during the run (already counted), to tell damage
    // on the servers from reads that returned wrong bytes.
    for saved in &state.lost {
        let now = match check_file(&mut client, until, saved) {
            Ok(()) => "intact".to_string(),
            Err(why) => why,
        };
        eprintln!(
            "benchfs-soak: verify: {} (lost during the run) now: {now}",
            saved.path
        );
    }
    let files: BTreeSet<&str> = state.files.iter().map(|f| f.path.as_str()).collect();
    let dirs: BTreeSet<&str> = state.dirs.iter().map(String::as_str).collect();
    for dir in &state.dirs {
        *found.ops.entry("verify_dir".into()).or_default() += 1;
        match patiently(until, || client.readdir(dir)) {
            Ok(entries) => {
                let listed: BTreeSet<String> = entries
                    .iter()
                    .map(|e| format!("{dir}/{}", e.name))
                    .collect();
                for path in files.iter().chain(dirs.iter()) {
                    if parent_of(path) == dir && !listed.contains(*path) {
                        lost(&mut found, path, 0, format!("not listed in {dir}"));
                    }
                }
            }
            Err(e) => lost(&mut found, dir, 0, format!("readdir: {e}")),
        }
    }
    let mut total = state.counters.clone();
    total.add(&found);
    println!("{}", total.summary(state.uncertain.len()));
    Ok(if total.lost_files == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
