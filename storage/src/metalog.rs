//! The on-disk metadata store of one shard: a checksummed, append-only log of key/value
//! mutations, replayed into an ordered in-memory map at open and compacted when mostly dead.
//!
//! [`MetaLog`] owns one directory and the file `meta.log` in it. Keys and values are opaque
//! byte strings; the live state is a `BTreeMap`, so lookups and ordered range or prefix scans
//! never touch the disk. Every mutation is appended to the log before it becomes visible.
//!
//! # File format (version 1, all integers little-endian)
//!
//! ```text
//! file header, 16 bytes:  magic "BFS-MLOG" (8) | version u32 = 1 | reserved u32 = 0
//! then records, back to back, each:
//!   crc32 u32 | kind u8 | key_len u32 | value_len u32 | payload (13-byte header)
//! ```
//!
//! `crc32` is CRC-32 (IEEE, `crc32fast`) over everything after the crc field: the other nine
//! header bytes and the payload. Kinds:
//!
//! - `1` put: payload = key (`key_len` bytes) then value (`value_len` bytes).
//! - `2` delete: payload = key; `value_len` is 0.
//! - `3` batch: `key_len` holds the number of operations (at least 1), `value_len` the payload
//!   length; the payload is that many operations back to back, each `kind u8 (1 or 2) |
//!   key_len u32 | value_len u32 | key | value` (a 9-byte header, no crc of its own).
//!
//! Limits: keys up to [`MAX_KEY_BYTES`], values up to [`MAX_VALUE_BYTES`], batch payloads up to
//! [`MAX_BATCH_BYTES`]. Larger mutations are refused with [`Error::InvalidArgument`]; a record
//! claiming more is damage at replay, which also bounds what replay allocates.
//!
//! # Crash consistency
//!
//! Each `put`, `delete` or `apply` is encoded into one buffer and handed to the kernel with one
//! positioned write before the call returns, so a killed process (`kill -9`) loses nothing that
//! was acknowledged. Power loss can lose what was not [`MetaLog::sync`]ed (fdatasync), and may
//! leave the last record torn or filled with garbage; it cannot damage records before it,
//! because the file is only ever appended to. Replay therefore reads records in order and stops
//! at the first one that is incomplete, fails its checksum, has an unknown kind or impossible
//! lengths; everything before it is the recovered state, and the file is truncated there
//! (ftruncate + fsync) so that new records follow the last good one. What was cut is reported by
//! [`MetaLog::last_recovery`]. The trade-off is deliberate: the log cannot tell a torn tail from
//! damage in the middle, so a bad record in the middle also ends replay there.
//!
//! A batch is one record under one checksum, so replay applies it whole or not at all: this is
//! how a rename (remove the old entry, add the new one) stays atomic.
//!
//! A header with another magic, version or non-zero reserved field is refused with
//! [`Error::Corrupt`] and the file is left untouched: it is not ours to repair. A file shorter
//! than the header whose bytes are a prefix of our header (in particular an empty file) is an
//! interrupted initialisation and gets a fresh header.
//!
//! # Compaction
//!
//! [`MetaLog::compact`] writes one put record per live key to `meta.log.tmp` in the same
//! directory, fsyncs it, renames it over `meta.log` and fsyncs the directory. A crash before the
//! rename leaves the old log intact (the temporary file is removed at the next open); a crash
//! after it leaves either log, and both hold the same live state. Compaction runs by itself after
//! a mutation when the file is larger than [`MetaLogOptions::compact_min_bytes`] and its dead
//! bytes exceed its live bytes. A failed automatic compaction does not fail the mutation that
//! triggered it (that mutation is already in the log): it is kept for
//! [`MetaLog::take_compaction_error`] and not retried until the file has grown by another
//! `compact_min_bytes`.
//!
//! # Invariants
//!
//! - The file is `FILE_HEADER_LEN` bytes of header followed by whole, valid records up to the
//!   tracked length; the in-memory map equals the replay of those records.
//! - A mutation is applied to the map only after its write succeeded; a failed write is cut off
//!   again (best effort), and the next record is written at the tracked length in any case, so
//!   a fragment can only lie beyond the last good record, where replay drops it.
//! - `live_bytes` is the size the live entries take as put records, i.e. the size of the log
//!   right after a compaction, minus the header.
//! - Deleting an absent key writes nothing (replaying such a delete would change nothing);
//!   deletes inside a batch are always written.
//! - One `MetaLog` per directory: the log takes no lock, so the owner (the shard) must ensure no
//!   other process opens the same directory.

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::{Bound, RangeBounds};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the log file inside the directory given to [`MetaLog::open`].
pub const LOG_FILE_NAME: &str = "meta.log";
/// Name of the file a compaction writes before renaming it over the log.
pub const TEMP_FILE_NAME: &str = "meta.log.tmp";

/// First eight bytes of every metadata log.
pub const FILE_MAGIC: [u8; 8] = *b"BFS-MLOG";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const VERSION_AT: usize = 8;
const RESERVED_AT: usize = 12;
/// Size of the file header: magic, version, reserved.
pub const FILE_HEADER_LEN: usize = RESERVED_AT + 4;

const CRC_LEN: usize = 4;
/// Disk space kept allocated past the end of the log (fallocate, size unchanged), so that
/// mutations, unlinks first of all, still go in when the chunk files filled the disk.
pub const SPACE_RESERVE_BYTES: u64 = 1 << 20;
// Offsets inside an operation header (a record header without its crc).
const OP_KIND_AT: usize = 0;
const OP_KEY_LEN_AT: usize = 1;
const OP_VALUE_LEN_AT: usize = 5;
const OP_HEADER_LEN: usize = OP_VALUE_LEN_AT + 4;
/// Size of a record header: crc32, kind, key_len, value_len.
pub const RECORD_HEADER_LEN: usize = CRC_LEN + OP_HEADER_LEN;

/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 64 << 10;
/// Longest value accepted.
pub const MAX_VALUE_BYTES: usize = 16 << 20;
/// Longest batch payload accepted (sum of its operations' headers, keys and values).
pub const MAX_BATCH_BYTES: usize = 64 << 20;

// The layout documented above, pinned.
const _: () = assert!(FILE_HEADER_LEN == 16);
const _: () = assert!(OP_HEADER_LEN == 9);
const _: () = assert!(RECORD_HEADER_LEN == 13);
// Any single accepted operation fits in a batch, and every length fits its u32 field.
const _: () = assert!(OP_HEADER_LEN + MAX_KEY_BYTES + MAX_VALUE_BYTES <= MAX_BATCH_BYTES);
const _: () = assert!(MAX_BATCH_BYTES <= u32::MAX as usize);

const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_BATCH: u8 = 3;

const IO_BUFFER_BYTES: usize = 1 << 20;
/// The append buffer is dropped after a call that grew it beyond this.
const SCRATCH_KEEP_BYTES: usize = 1 << 20;

/// Tuning of a [`MetaLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaLogOptions {
    /// Automatic compaction only runs once the file is larger than this.
    pub compact_min_bytes: u64,
    /// Whether mutations (and open) compact by themselves when the thresholds are crossed.
    pub auto_compact: bool,
}

impl Default for MetaLogOptions {
    fn default() -> Self {
        MetaLogOptions {
            compact_min_bytes: 64 << 20,
            auto_compact: true,
        }
    }
}

/// What the replay at open found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records replayed (a batch counts as one).
    pub records: u64,
    /// Bytes cut from the end of the file because they did not hold valid records.
    pub truncated_bytes: u64,
    /// Why replay stopped before the end of the file, if it did.
    pub truncated_reason: Option<&'static str>,
}

/// One mutation of a [`Batch`]; a delete of an absent key does nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BatchOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// Mutations applied in order and made durable all together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<BatchOp>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put of `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.ops.push(BatchOp::Put { key, value });
        self
    }

    /// Adds a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        self.ops.push(BatchOp::Delete { key: key.to_vec() });
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Ordered iterator over `(key, value)` pairs of a [`MetaLog`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    inner: Option<btree_map::Range<'a, Vec<u8>, Vec<u8>>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (key, value) = self.inner.as_mut()?.next()?;
        Some((key.as_slice(), value.as_slice()))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let (key, value) = self.inner.as_mut()?.next_back()?;
        Some((key.as_slice(), value.as_slice()))
    }
}

/// The live map and its size as put records.
#[derive(Default)]
struct State {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    live_bytes: u64,
}

impl State {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        let key_len = key.len();
        self.live_bytes += record_len(key_len, value.len());
        if let Some(old) = self.map.insert(key, value) {
            self.live_bytes -= record_len(key_len, old.len());
        }
    }

    fn delete(&mut self, key: &[u8]) -> bool {
        match self.map.remove(key) {
            Some(old) => {
                self.live_bytes -= record_len(key.len(), old.len());
                true
            }
            None => false,
        }
    }

    fn apply(&mut self, op: BatchOp) {
        match op {
            BatchOp::Put { key, value } => self.put(key, value),
            BatchOp::Delete { key } => {
                self.delete(&key);
            }
        }
    }
}

/// The metadata store of one shard. See the [module documentation](self) for the format.
pub struct MetaLog {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Length of the valid prefix of the file; the next record is written here.
    file_len: u64,
    state: State,
    options: MetaLogOptions,
    recovery: RecoveryReport,
    /// Encoding buffer of the current mutation, reused between calls.
    scratch: Vec<u8>,
    /// A compaction renamed the log but fsyncing the directory failed; `sync` retries it.
    dir_sync_pending: bool,
    /// Automatic compaction is not attempted while the file is shorter than this.
    auto_compact_from: u64,
    compaction_error: Option<Error>,
    /// The file's blocks are allocated up to here (see [`SPACE_RESERVE_BYTES`]).
    reserved_until: u64,
}

impl fmt::Debug for MetaLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaLog")
            .field("path", &self.path)
            .field("entries", &self.state.map.len())
            .field("file_bytes", &self.file_len)
            .field("live_bytes", &self.state.live_bytes)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl MetaLog {
    /// Opens (or creates) the log in `dir` with default options, replaying it.
    pub fn open(dir: &Path) -> Result<MetaLog> {
        Self::open_with(dir, MetaLogOptions::default())
    }

    /// Opens (or creates) the log in `dir`, replaying it and cutting off a damaged tail.
    pub fn open_with(dir: &Path, options: MetaLogOptions) -> Result<MetaLog> {
        fs::create_dir_all(dir).map_err(|e| Error::io("create metadata dir", dir.to_owned(), e))?;
        let temp = dir.join(TEMP_FILE_NAME);
        match fs::remove_file(&temp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io("remove leftover metadata temp file", temp, e));
            }
            _ => {}
        }
        let path = dir.join(LOG_FILE_NAME);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_log(dir, &path)?.0,
            Err(e) => return Err(Error::io("open metadata log", path, e)),
        };
        let (state, recovery, file_len) = recover(&file, &path)?;
        let mut log = MetaLog {
            dir: dir.to_owned(),
            path,
            file,
            file_len,
            state,
            options,
            recovery,
            scratch: Vec::new(),
            dir_sync_pending: false,
            auto_compact_from: 0,
            compaction_error: None,
            reserved_until: 0,
        };
        log.keep_reserve();
        log.maybe_compact();
        Ok(log)
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.state.map.get(key).map(Vec::as_slice)
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.state.map.len()
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.state.map.is_empty()
    }

    /// All entries in key order.
    pub fn iter(&self) -> Iter<'_> {
        self.range(..)
    }

    /// Entries whose key lies in `range`, in key order. An empty or inverted range yields
    /// nothing (it does not panic).
    pub fn range<R: RangeBounds<[u8]>>(&self, range: R) -> Iter<'_> {
        let (start, end) = (range.start_bound(), range.end_bound());
        let valid = match (start, end) {
            (Bound::Excluded(s), Bound::Excluded(e)) => s < e,
            (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
                s <= e
            }
            _ => true,
        };
        let inner = valid.then(|| self.state.map.range::<[u8], _>((start, end)));
        Iter { inner }
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Iter<'_> {
        let successor = prefix_successor(prefix);
        let end = successor
            .as_deref()
            .map_or(Bound::Unbounded, Bound::Excluded);
        self.range((Bound::Included(prefix), end))
    }

    /// Sets `key` to `value`; the record reaches the kernel before this returns.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        check_op(key, value.len())?;
        self.scratch.clear();
        encode_op(&mut self.scratch, KIND_PUT, key, value);
        self.append()?;
        self.state.put(key.to_vec(), value.to_vec());
        self.maybe_compact();
        Ok(())
    }

    /// Removes `key`; returns whether it was present. Deleting an absent key writes nothing.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        check_op(key, 0)?;
        if !self.state.map.contains_key(key) {
            return Ok(false);
        }
        self.scratch.clear();
        encode_op(&mut self.scratch, KIND_DELETE, key, &[]);
        self.append()?;
        self.state.delete(key);
        self.maybe_compact();
        Ok(true)
    }

    /// Applies the operations of `batch` in order, written as one record: after a crash either
    /// all of them are replayed or none. An empty batch writes nothing.
    pub fn apply(&mut self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.scratch.clear();
        encode_batch(&mut self.scratch, &batch.ops)?;
        self.append()?;
        batch.ops.into_iter().for_each(|op| self.state.apply(op));
        self.maybe_compact();
        Ok(())
    }

    /// Makes every record appended so far durable (fdatasync), and a past compaction's rename.
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync metadata log", self.path.clone(), e))?;
        self.sync_dir_if_pending()
    }

    /// Rewrites the log with only the live entries (see the module documentation). An error
    /// from the final directory fsync comes after the switch to the compacted log; the next
    /// [`sync`](Self::sync) retries that fsync.
    pub fn compact(&mut self) -> Result<()> {
        let temp = self.dir.join(TEMP_FILE_NAME);
        let (file, file_len) = match write_snapshot(&temp, &self.state.map) {
            Ok(done) => done,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
        };
        if let Err(e) = fs::rename(&temp, &self.path) {
            let _ = fs::remove_file(&temp);
            return Err(Error::io(
                "rename compacted metadata log",
                self.path.clone(),
                e,
            ));
        }
        self.file = file;
        self.file_len = file_len;
        self.auto_compact_from = 0;
        self.reserved_until = 0;
        self.keep_reserve();
        self.dir_sync_pending = true;
        self.sync_dir_if_pending()
    }

    /// Whether the thresholds of automatic compaction are crossed.
    pub fn needs_compaction(&self) -> bool {
        let dead_bytes = self.log_bytes().saturating_sub(self.state.live_bytes);
        self.file_len > self.options.compact_min_bytes && dead_bytes > self.state.live_bytes
    }

    /// The error of the last failed automatic compaction, if any, clearing it.
    pub fn take_compaction_error(&mut self) -> Option<Error> {
        self.compaction_error.take()
    }

    /// What the replay at open found.
    pub fn last_recovery(&self) -> RecoveryReport {
        self.recovery
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current length of the log file, header included.
    pub fn file_bytes(&self) -> u64 {
        self.file_len
    }

    /// Bytes the live entries take as records: the file length after a compaction, minus the
    /// header.
    pub fn live_bytes(&self) -> u64 {
        self.state.live_bytes
    }

    fn log_bytes(&self) -> u64 {
        self.file_len - FILE_HEADER_LEN as u64
    }

    /// Writes the encoded mutation in `scratch` at the end of the log.
    fn append(&mut self) -> Result<()> {
        let written = self.file.write_all_at(&self.scratch, self.file_len);
        let appended = self.scratch.len() as u64;
        if self.scratch.capacity() > SCRATCH_KEEP_BYTES {
            self.scratch = Vec::new();
        }
        match written {
            Ok(()) => {
                self.file_len += appended;
                self.keep_reserve();
                Ok(())
            }
            Err(e) => {
                // Cut off any fragment; if that fails too, replay drops it as a damaged tail.
                let _ = self.file.set_len(self.file_len);
                Err(Error::io("append to metadata log", self.path.clone(), e))
            }
        }
    }

    /// Tops the allocated space past the end up to [`SPACE_RESERVE_BYTES`] once half of it is
    /// used. When the disk is full this fails, and appends use what is left of the reserve.
    fn keep_reserve(&mut self) {
        if self.file_len + SPACE_RESERVE_BYTES / 2 <= self.reserved_until {
            return;
        }
        // SAFETY: fallocate on the log's open descriptor with KEEP_SIZE allocates blocks
        // beyond the end without changing the file's size or contents; no memory is involved.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                self.file_len as libc::off_t,
                SPACE_RESERVE_BYTES as libc::off_t,
            )
        };
        if rc == 0 {
            self.reserved_until = self.file_len + SPACE_RESERVE_BYTES;
        }
    }

    fn maybe_compact(&mut self) {
        if !self.options.auto_compact
            || self.file_len < self.auto_compact_from
            || !self.needs_compaction()
        {
            return;
        }
        if let Err(e) = self.compact() {
            self.auto_compact_from = self.file_len + self.options.compact_min_bytes.max(1);
            self.compaction_error = Some(e);
        }
    }

    fn sync_dir_if_pending(&mut self) -> Result<()> {
        if self.dir_sync_pending {
            sync_dir(&self.dir)?;
            self.dir_sync_pending = false;
        }
        Ok(())
    }
}

fn record_len(key_len: usize, value_len: usize) -> u64 {
    (RECORD_HEADER_LEN + key_len + value_len) as u64
}

/// The smallest byte string greater than every string starting with `prefix`, if any.
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != u8::MAX)?;
    let mut successor = prefix[..=last].to_vec();
    successor[last] += 1;
    Some(successor)
}

fn too_long(what: &str, len: usize, limit: usize) -> Error {
    Error::InvalidArgument(format!(
        "metadata {what} of {len} bytes exceeds the {limit}-byte limit"
    ))
}

fn check_op(key: &[u8], value_len: usize) -> Result<()> {
    if key.len() > MAX_KEY_BYTES {
        return Err(too_long("key", key.len(), MAX_KEY_BYTES));
    }
    if value_len > MAX_VALUE_BYTES {
        return Err(too_long("value", value_len, MAX_VALUE_BYTES));
    }
    Ok(())
}

fn op_parts(op: &BatchOp) -> (u8, &[u8], &[u8]) {
    match op {
        BatchOp::Put { key, value } => (KIND_PUT, key, value),
        BatchOp::Delete { key } => (KIND_DELETE, key, &[]),
    }
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("lengths are checked against the format limits")
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut header = [0u8; FILE_HEADER_LEN];
    header[..VERSION_AT].copy_from_slice(&FILE_MAGIC);
    header[VERSION_AT..RESERVED_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header
}

fn write_op_header(dst: &mut [u8], kind: u8, key_len: usize, value_len: usize) {
    dst[OP_KIND_AT] = kind;
    dst[OP_KEY_LEN_AT..OP_VALUE_LEN_AT].copy_from_slice(&len_u32(key_len).to_le_bytes());
    dst[OP_VALUE_LEN_AT..OP_HEADER_LEN].copy_from_slice(&len_u32(value_len).to_le_bytes());
}

/// Reserves a record header at the end of `buf`; returns where the record starts.
fn begin_record(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.resize(start + RECORD_HEADER_LEN, 0);
    start
}

/// Fills in the header of the record that starts at `start` and runs to the end of `buf`.
fn finish_record(buf: &mut [u8], start: usize, kind: u8, key_len: usize, value_len: usize) {
    write_op_header(&mut buf[start + CRC_LEN..], kind, key_len, value_len);
    let crc = crc32fast::hash(&buf[start + CRC_LEN..]);
    buf[start..start + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one put or delete record.
fn encode_op(buf: &mut Vec<u8>, kind: u8, key: &[u8], value: &[u8]) {
    let start = begin_record(buf);
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    finish_record(buf, start, kind, key.len(), value.len());
}

/// Appends one batch record holding `ops`, after checking every limit.
fn encode_batch(buf: &mut Vec<u8>, ops: &[BatchOp]) -> Result<()> {
    let mut body_len = 0;
    for op in ops {
        let (_, key, value) = op_parts(op);
        check_op(key, value.len())?;
        body_len += OP_HEADER_LEN + key.len() + value.len();
    }
    if body_len > MAX_BATCH_BYTES {
        return Err(too_long("batch", body_len, MAX_BATCH_BYTES));
    }
    let start = begin_record(buf);
    for op in ops {
        let (kind, key, value) = op_parts(op);
        let at = buf.len();
        buf.resize(at + OP_HEADER_LEN, 0);
        write_op_header(&mut buf[at..], kind, key.len(), value.len());
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
    }
    finish_record(buf, start, KIND_BATCH, ops.len(), body_len);
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync metadata dir", dir.to_owned(), e))
}

/// Creates a new log atomically (temporary file, fsync, rename, fsync of the directory).
fn create_log(dir: &Path, path: &Path) -> Result<(File, u64)> {
    let temp = dir.join(TEMP_FILE_NAME);
    let created = write_snapshot(&temp, &BTreeMap::new())?;
    fs::rename(&temp, path)
        .map_err(|e| Error::io("rename new metadata log", path.to_owned(), e))?;
    sync_dir(dir)?;
    Ok(created)
}

/// Writes a complete log holding one put per entry of `map` to `path` and fsyncs it.
fn write_snapshot(path: &Path, map: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<(File, u64)> {
    let write = || -> io::Result<(File, u64)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let mut out = BufWriter::with_capacity(IO_BUFFER_BYTES, &file);
        out.write_all(&file_header())?;
        let mut file_len = FILE_HEADER_LEN as u64;
        let mut record = Vec::new();
        for (key, value) in map {
            record.clear();
            encode_op(&mut record, KIND_PUT, key, value);
            out.write_all(&record)?;
            file_len += record.len() as u64;
        }
        out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        Ok((file, file_len))
    };
    write().map_err(|e| Error::io("write metadata log snapshot", path.to_owned(), e))
}

/// Validates the header, replays the records and truncates a damaged tail. Returns the state,
/// the report and the length of the valid file.
fn recover(file: &File, path: &Path) -> Result<(State, RecoveryReport, u64)> {
    let read_err = |e| Error::io("read metadata log", path.to_owned(), e);
    let file_len = file.metadata().map_err(read_err)?.len();
    let mut handle = file;
    handle.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut reader = BufReader::with_capacity(IO_BUFFER_BYTES, handle);
    if file_len < FILE_HEADER_LEN as u64 {
        let mut start = Vec::new();
        reader.read_to_end(&mut start).map_err(read_err)?;
        init_header(file, path, &start)?;
        return Ok((
            State::default(),
            RecoveryReport::default(),
            FILE_HEADER_LEN as u64,
        ));
    }
    let mut header = [0u8; FILE_HEADER_LEN];
    reader.read_exact(&mut header).map_err(read_err)?;
    check_file_header(&header, path)?;
    let (mut state, mut report) = (State::default(), RecoveryReport::default());
    let mut valid_len = FILE_HEADER_LEN as u64;
    loop {
        match next_record(&mut reader, file_len - valid_len).map_err(read_err)? {
            Step::End => break,
            Step::Stop(reason) => {
                report.truncated_reason = Some(reason);
                break;
            }
            Step::Record { ops, bytes } => {
                ops.into_iter().for_each(|op| state.apply(op));
                valid_len += bytes;
                report.records += 1;
            }
        }
    }
    if valid_len < file_len {
        file.set_len(valid_len)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("truncate damaged metadata log tail", path.to_owned(), e))?;
        report.truncated_bytes = file_len - valid_len;
    }
    Ok((state, report, valid_len))
}

/// Writes the header into a file that holds only `start`, which must be a prefix of it: an empty
/// file, or one whose initialisation was interrupted.
fn init_header(file: &File, path: &Path, start: &[u8]) -> Result<()> {
    if !file_header().starts_with(start) {
        return Err(corrupt(path, 0, "shorter than a metadata log header"));
    }
    file.write_all_at(&file_header(), 0)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("initialise metadata log", path.to_owned(), e))
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        offset,
        reason: reason.into(),
    }
}

fn check_file_header(header: &[u8; FILE_HEADER_LEN], path: &Path) -> Result<()> {
    if header[..VERSION_AT] != FILE_MAGIC {
        return Err(corrupt(path, 0, "not a BenchFS metadata log (wrong magic)"));
    }
    let version = le_u32(header, VERSION_AT);
    if version != FORMAT_VERSION {
        let reason = format!(
            "metadata log format version {version} is not supported (this build reads \
             version {FORMAT_VERSION})"
        );
        return Err(corrupt(path, VERSION_AT as u64, reason));
    }
    if le_u32(header, RESERVED_AT) != 0 {
        return Err(corrupt(
            path,
            RESERVED_AT as u64,
            "reserved field is not zero",
        ));
    }
    Ok(())
}

/// A decoding result whose error says why replay stops.
type Parsed<T> = std::result::Result<T, &'static str>;

/// The outcome of reading one record during replay.
enum Step {
    /// The file ends exactly here.
    End,
    /// A valid record of `bytes` bytes holding `ops`.
    Record { ops: Vec<BatchOp>, bytes: u64 },
    /// The record here is damaged or torn; replay ends before it.
    Stop(&'static str),
}

/// Lengths of the two payload parts of a record (or batch operation) whose header holds `kind`,
/// `a` (`key_len`, or a batch's count) and `b` (`value_len`), if the header is possible.
fn payload_lens(kind: u8, a: u32, b: u32) -> Parsed<(usize, usize)> {
    let (a, b) = (a as usize, b as usize);
    match kind {
        KIND_PUT if a <= MAX_KEY_BYTES && b <= MAX_VALUE_BYTES => Ok((a, b)),
        KIND_DELETE if a <= MAX_KEY_BYTES && b == 0 => Ok((a, 0)),
        KIND_BATCH if a > 0 && b <= MAX_BATCH_BYTES && a * OP_HEADER_LEN <= b => Ok((0, b)),
        KIND_PUT | KIND_DELETE | KIND_BATCH => Err("impossible lengths"),
        _ => Err("unknown record kind"),
    }
}

fn next_record(reader: &mut impl Read, remaining: u64) -> io::Result<Step> {
    if remaining == 0 {
        return Ok(Step::End);
    }
    if remaining < RECORD_HEADER_LEN as u64 {
        return Ok(Step::Stop("torn record header"));
    }
    let mut header = [0u8; RECORD_HEADER_LEN];
    reader.read_exact(&mut header)?;
    let op_header = &header[CRC_LEN..];
    let kind = op_header[OP_KIND_AT];
    let (a, b) = (
        le_u32(op_header, OP_KEY_LEN_AT),
        le_u32(op_header, OP_VALUE_LEN_AT),
    );
    let (first_len, second_len) = match payload_lens(kind, a, b) {
        Ok(lens) => lens,
        Err(reason) => return Ok(Step::Stop(reason)),
    };
    let bytes = (RECORD_HEADER_LEN + first_len + second_len) as u64;
    if bytes > remaining {
        return Ok(Step::Stop("torn record"));
    }
    let mut first = vec![0u8; first_len];
    reader.read_exact(&mut first)?;
    let mut second = vec![0u8; second_len];
    reader.read_exact(&mut second)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(op_header);
    crc.update(&first);
    crc.update(&second);
    if crc.finalize() != le_u32(&header, 0) {
        return Ok(Step::Stop("checksum mismatch"));
    }
    let ops = match kind {
        KIND_PUT => vec![BatchOp::Put {
            key: first,
            value: second,
        }],
        KIND_DELETE => vec![BatchOp::Delete { key: first }],
        _ => match decode_batch(&second, a as usize) {
            Ok(ops) => ops,
            Err(reason) => return Ok(Step::Stop(reason)),
        },
    };
    Ok(Step::Record { ops, bytes })
}

/// Splits a batch body whose checksum matched into exactly `count` operations.
fn decode_batch(mut body: &[u8], count: usize) -> Parsed<Vec<BatchOp>> {
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        if body.len() < OP_HEADER_LEN {
            return Err("malformed batch");
        }
        let kind = body[OP_KIND_AT];
        let (a, b) = (le_u32(body, OP_KEY_LEN_AT), le_u32(body, OP_VALUE_LEN_AT));
        if kind == KIND_BATCH {
            return Err("batch nested in a batch");
        }
        let (key_len, value_len) = payload_lens(kind, a, b)?;
        body = &body[OP_HEADER_LEN..];
        if body.len() < key_len + value_len {
            return Err("malformed batch");
        }
        let (key, rest) = body.split_at(key_len);
        let (value, rest) = rest.split_at(value_len);
        body = rest;
        ops.push(match kind {
            KIND_PUT => BatchOp::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            },
            _ => BatchOp::Delete { key: key.to_vec() },
        });
    }
    if body.is_empty() {
        Ok(ops)
    } else {
        Err("malformed batch")
    }
}
