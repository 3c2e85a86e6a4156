//! [`ChunkStore`]: chunk files under one data directory, read and written with O_DIRECT through
//! the fixed buffers of one ring.
//!
//! # Model
//!
//! A chunk is a byte range of a file, `chunk_size_bytes` long at most, stored in its own file
//! (see [`layout`]). The store is driven from its owner's poll loop: `submit_*` calls queue
//! operations and never block on I/O; [`ChunkStore::poll`] hands queued work to the kernel and
//! collects finished operations as [`Completion`]s; [`ChunkStore::wait`] blocks until some
//! finish. Operations complete in any order; each carries the caller's `tag`.
//!
//! # Buffers
//!
//! Data lives in slots of the store's [`Slab`]. The caller takes a slot with
//! [`ChunkStore::acquire_slot`], hands it to a write or read, and gets it back in the
//! completion: while an operation is in flight the kernel owns the slot. For a write of `len`
//! bytes at chunk offset `offset`, the data must be at
//! `slot[data_offset(offset) .. data_offset(offset) + len]`: the slot mirrors the aligned window
//! of the chunk that covers the range, so the write goes to disk from the slot as it is. A read
//! returns its data at `slot[data_offset .. data_offset + len]` in the same way. A transport
//! that lands network data at that position therefore moves it to and from disk with no copy.
//!
//! # Alignment
//!
//! All disk I/O is in whole [`BLOCK_SIZE`] blocks at block-aligned offsets (O_DIRECT). A write
//! whose start or end is not aligned is a read-modify-write of its partial first and last
//! blocks: they are read into the slot's edge area, their bytes outside the written range are
//! copied into the slot (at most `2 * (BLOCK_SIZE - 1)` bytes, counted in
//! [`Counters::bytes_copied`]), and written back; the whole blocks between them go to disk
//! straight from the slot. Blocks past the end of the file are zeros and need no read. Each of
//! these pieces holds a range lock on its own blocks only (see `write` and `lock`), so
//! neighbouring unaligned records written concurrently serialise on the one block they share
//! and never lose bytes, while the rest of their data goes to disk in parallel. Aligned writes
//! and all reads copy nothing.
//!
//! # Lengths
//!
//! A chunk's length is the end of its furthest write (or its truncated length). The padding an
//! unaligned write adds to the file's last block is zeros and is trimmed from the file with
//! `ftruncate` once no other write to the chunk is pending. Reads report the chunk's length so
//! the caller can compute the end of file; bytes past it and holes read as zeros. After a crash
//! between a write and its trim, a chunk file may be up to one block longer than its data; the
//! metadata service holds the authoritative file size.
//!
//! # Blocking calls
//!
//! Opening a chunk file (once per cache miss), `ftruncate` (trims and truncates) and unlink
//! (removals) are direct system calls on the poll loop's thread; all data transfers and syncs
//! go through the ring.
//!
//! # Teardown
//!
//! Dropping the store waits for every operation in flight in the kernel, then closes files,
//! the ring (which unregisters the fixed buffers) and finally unmaps the slab.

pub mod layout;

mod files;
mod lock;
mod ops;
mod read;
mod sync;
mod write;

#[cfg(test)]
mod fault_tests;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use io_uring::squeue;

use crate::checks;
use crate::error::{Error, Result};
use crate::ring::Ring;
use crate::slab::{Slab, Slot};
use crate::BLOCK_SIZE;

use files::ChunkFiles;
use layout::{ChunkKey, Layout};
use lock::RangeLocks;
use ops::{Kind, Op, Pieces, Span, SyncState};

/// Settings of a chunk store.
#[derive(Debug, Clone)]
pub struct ChunkStoreConfig {
    /// Directory that holds the chunk tree; must be on a file system with O_DIRECT.
    pub data_dir: PathBuf,
    /// Largest chunk, in bytes; a multiple of [`BLOCK_SIZE`]. Default 4 MiB.
    pub chunk_size_bytes: usize,
    /// Slots in the slab, each `chunk_size_bytes` of data area. Default 16.
    pub slot_count: usize,
    /// Submission queue entries of the ring. Default 128.
    pub ring_entries: u32,
    /// Chunk files kept open at most (more while many are in use at once). Default 1024.
    pub open_files_max: usize,
}

impl ChunkStoreConfig {
    /// Defaults for a store under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> ChunkStoreConfig {
        ChunkStoreConfig {
            data_dir: data_dir.into(),
            chunk_size_bytes: 4 << 20,
            slot_count: 16,
            ring_entries: 128,
            open_files_max: 1024,
        }
    }

    fn validate(&self) -> Result<()> {
        let chunk = self.chunk_size_bytes;
        if chunk == 0 || chunk % BLOCK_SIZE != 0 || chunk > (1 << 30) {
            return Err(Error::InvalidArgument(format!(
                "chunk size {chunk} must be a non-zero multiple of {BLOCK_SIZE} of at most 1 GiB"
            )));
        }
        if self.open_files_max == 0 {
            return Err(Error::InvalidArgument(
                "open_files_max must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What a finished operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A write stored `len` bytes.
    Written {
        /// Bytes written (the requested length).
        len: usize,
    },
    /// A read placed `len` bytes at `slot[data_offset..data_offset + len]`; bytes past
    /// `chunk_len` (the chunk's length) are zeros.
    Read {
        /// Where the data starts in the slot.
        data_offset: usize,
        /// Bytes of data (the requested length).
        len: usize,
        /// Length of the chunk: 0 for a chunk never written.
        chunk_len: u64,
    },
    /// The requested chunks are durable.
    Synced,
    /// The chunk now has the requested length.
    Truncated,
}

/// A finished operation.
#[derive(Debug)]
pub struct Completion {
    /// The caller's tag, as given at submission.
    pub tag: u64,
    /// The slot the operation used, returned to the caller.
    pub slot: Option<Slot>,
    /// What happened.
    pub result: Result<Outcome>,
}

/// Running totals of a store, for statistics and for proving the data path copies nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes written by completed writes (requested bytes, not padding).
    pub bytes_written: u64,
    /// Bytes returned by completed reads.
    pub bytes_read: u64,
    /// Bytes the CPU copied between buffers (edges of unaligned writes only).
    pub bytes_copied: u64,
    /// Partial blocks read for read-modify-write.
    pub edge_reads: u64,
    /// Padding trims (`ftruncate` after an unaligned write extended a chunk).
    pub trims: u64,
}

/// Space figures for statfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Size of the file system holding the data directory, in bytes.
    pub total_bytes: u64,
    /// Bytes free on it.
    pub free_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
    /// Chunk files stored.
    pub chunk_files: u64,
}

/// The store. Not `Sync`: one thread (a shard's poll loop) drives it.
pub struct ChunkStore {
    // Field order is drop order: the ring goes before the files it names and the slab whose
    // memory it has registered.
    ring: Ring,
    files: ChunkFiles,
    slab: Slab,
    config: ChunkStoreConfig,
    locks: RangeLocks,
    ops: Vec<Option<Op>>,
    free_ops: Vec<u32>,
    backlog: VecDeque<squeue::Entry>,
    done: Vec<Completion>,
    counters: Counters,
    /// Reused buffer of ring completions being routed.
    cqe_scratch: Vec<crate::ring::Completion>,
    /// Test hook: results that replace the next ring completions of the given request kinds.
    #[cfg(test)]
    faults: Vec<(u64, i32)>,
    /// Test hook: lengths that cap the next transfers of the given request kinds.
    #[cfg(test)]
    caps: Vec<(u64, u32)>,
}

impl std::fmt::Debug for ChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStore")
            .field("data_dir", &self.config.data_dir)
            .field("ring", &self.ring)
            .field("slab", &self.slab)
            .field("counters", &self.counters)
            .finish()
    }
}

impl ChunkStore {
    /// Checks the environment (O_DIRECT on the data directory, locked-memory limit, io_uring),
    /// creates the chunk tree if needed, indexes it, maps and first-touches the slab on the
    /// calling thread and registers it with a new ring.
    pub fn open(config: ChunkStoreConfig) -> Result<ChunkStore> {
        config.validate()?;
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create data dir", dir.clone(), e))?;
        checks::check_data_dir(dir)?;
        let slab_bytes = (config.chunk_size_bytes + 2 * BLOCK_SIZE) * config.slot_count;
        checks::check_memlock(slab_bytes as u64)?;
        let mut ring = Ring::new(config.ring_entries)?;
        let files = ChunkFiles::open(Layout::new(dir), config.open_files_max)?;
        let slab = Slab::new(config.chunk_size_bytes, config.slot_count)?;
        // SAFETY: the slab is stored next to the ring in the ChunkStore, and the ring is dropped
        // (unregistering the buffers) before the slab is unmapped: field order and Drop below.
        unsafe { ring.register_buffers(&slab.iovecs()) }?;
        Ok(ChunkStore {
            ring,
            files,
            slab,
            config,
            locks: RangeLocks::default(),
            ops: Vec::new(),
            free_ops: Vec::new(),
            backlog: VecDeque::new(),
            done: Vec::new(),
            counters: Counters::default(),
            cqe_scratch: Vec::new(),
            #[cfg(test)]
            faults: Vec::new(),
            #[cfg(test)]
            caps: Vec::new(),
        })
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &ChunkStoreConfig {
        &self.config
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The slab, e.g. to register its region with a transport.
    pub fn slab(&self) -> &Slab {
        &self.slab
    }

    /// Takes a free slot, or `None` when all are in use.
    pub fn acquire_slot(&mut self) -> Option<Slot> {
        self.slab.acquire()
    }

    /// Gives a slot back.
    pub fn release_slot(&mut self, slot: Slot) {
        self.slab.release(slot);
    }

    /// The data area of a slot the caller holds.
    pub fn slot_data(&self, slot: &Slot) -> &[u8] {
        self.slab.data(slot)
    }

    /// The data area of a slot the caller holds, writable.
    pub fn slot_data_mut(&mut self, slot: &mut Slot) -> &mut [u8] {
        self.slab.data_mut(slot)
    }

    /// Where in a slot the data of a write at chunk offset `offset` must be placed, and where a
    /// read at `offset` places its data.
    pub fn data_offset(offset: u64) -> usize {
        (offset % BLOCK_SIZE as u64) as usize
    }

    /// Running totals.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Operations submitted and not yet returned by [`ChunkStore::poll`].
    pub fn pending(&self) -> usize {
        self.ops.len() - self.free_ops.len() + self.done.len()
    }

    /// Chunk files currently open.
    pub fn open_files(&self) -> usize {
        self.files.open_count()
    }

    /// Queues a write of `len` bytes at `offset` in chunk `key` from `slot` (data placed at
    /// [`ChunkStore::data_offset`]). The chunk file is created if needed.
    pub fn submit_write(&mut self, tag: u64, key: ChunkKey, offset: u64, len: usize, slot: Slot) {
        if let Err(e) = self.check_range(offset, len) {
            return self.done.push(Completion {
                tag,
                slot: Some(slot),
                result: Err(e),
            });
        }
        if len == 0 {
            return self.done.push(Completion {
                tag,
                slot: Some(slot),
                result: Ok(Outcome::Written { len: 0 }),
            });
        }
        let span = Span::new(key, offset, len);
        let pieces = Pieces::new(&span);
        self.start(Op::new(tag, Kind::Write { span, pieces }, Some(slot)));
    }

    /// Queues a read of `len` bytes at `offset` in chunk `key` into `slot`.
    pub fn submit_read(&mut self, tag: u64, key: ChunkKey, offset: u64, len: usize, slot: Slot) {
        if let Err(e) = self.check_range(offset, len) {
            return self.done.push(Completion {
                tag,
                slot: Some(slot),
                result: Err(e),
            });
        }
        let kind = Kind::Read {
            span: Span::new(key, offset, len),
            read_end: 0,
            done: 0,
        };
        self.start(Op::new(tag, kind, Some(slot)));
    }

    /// Queues an fdatasync of every chunk of `file_id` written since its last sync (or only of
    /// chunk `index`), including the directory entries of chunks created since.
    pub fn submit_sync(&mut self, tag: u64, file_id: u64, index: Option<u64>) {
        let kind = Kind::Sync(SyncState::new(file_id, index));
        self.start(Op::new(tag, kind, None));
    }

    /// Queues setting chunk `key` to `len` bytes: shrinking drops data past `len`, growing
    /// reads as zeros, and 0 removes the chunk file. Waits for overlapping I/O in flight.
    pub fn submit_truncate(&mut self, tag: u64, key: ChunkKey, len: u64) {
        if len > self.config.chunk_size_bytes as u64 {
            return self.done.push(Completion {
                tag,
                slot: None,
                result: Err(Error::InvalidArgument(format!(
                    "length {len} exceeds the chunk size {}",
                    self.config.chunk_size_bytes
                ))),
            });
        }
        self.start(Op::new(tag, Kind::Truncate { key, len }, None));
    }

    /// Removes every chunk of `file_id`; returns how many files were removed. Fails with
    /// `EBUSY` while an operation on a chunk of the file is in flight.
    pub fn remove_file(&mut self, file_id: u64) -> Result<u64> {
        self.remove_chunks_where(file_id, |_| true)
    }

    /// Removes the chunks of `file_id` with an index above `index` (truncation); returns how
    /// many files were removed. Fails with `EBUSY` while an operation on a chunk of the file
    /// is in flight.
    pub fn remove_chunks_after(&mut self, file_id: u64, index: u64) -> Result<u64> {
        self.remove_chunks_where(file_id, |i| i > index)
    }

    fn remove_chunks_where(&mut self, file_id: u64, keep_out: impl Fn(u64) -> bool) -> Result<u64> {
        if self.locks.file_busy(file_id) {
            return Err(Error::io(
                "remove chunks",
                None,
                std::io::Error::from_raw_os_error(libc::EBUSY),
            ));
        }
        let mut removed = 0;
        for key in self.files.chunks_of(file_id) {
            if keep_out(key.index) {
                removed += u64::from(self.files.remove(key)?);
            }
        }
        Ok(removed)
    }

    /// Has the kernel signal `eventfd` whenever completions are queued, so an idle poll loop
    /// can sleep on it (see [`crate::Ring::register_eventfd`]).
    pub fn register_eventfd(&mut self, eventfd: std::os::fd::RawFd) -> Result<()> {
        self.ring.register_eventfd(eventfd)
    }

    /// The ids of files with chunks written since their last sync.
    pub fn dirty_files(&self) -> Vec<u64> {
        self.files.dirty_files()
    }

    /// Whether chunk `key` has a file.
    pub fn chunk_exists(&self, key: ChunkKey) -> bool {
        self.files.exists(key)
    }

    /// Space figures of the data directory's file system and the number of chunk files.
    pub fn usage(&self) -> Result<Usage> {
        let root = self.files.root();
        let st = statvfs(root).map_err(|e| Error::io("statvfs data dir", root.to_path_buf(), e))?;
        let frsize = st.f_frsize as u64;
        Ok(Usage {
            total_bytes: st.f_blocks as u64 * frsize,
            free_bytes: st.f_bfree as u64 * frsize,
            available_bytes: st.f_bavail as u64 * frsize,
            chunk_files: self.files.chunk_count(),
        })
    }

    /// Submits queued work, collects finished operations into `out` without blocking, and
    /// returns how many were added.
    pub fn poll(&mut self, out: &mut Vec<Completion>) -> Result<usize> {
        let before = out.len();
        loop {
            self.flush_backlog()?;
            self.ring.submit()?;
            if self.reap_ring() == 0 {
                break;
            }
        }
        out.append(&mut self.done);
        Ok(out.len() - before)
    }

    /// Like [`ChunkStore::poll`] but blocks until at least `min` operations have finished or
    /// none is pending any more. Enters the kernel once per wait: queued work is submitted by
    /// the same system call that waits.
    pub fn wait(&mut self, out: &mut Vec<Completion>, min: usize) -> Result<usize> {
        let before = out.len();
        loop {
            self.flush_backlog()?;
            while self.reap_ring() > 0 {
                self.flush_backlog()?;
            }
            let got = out.len() - before + self.done.len();
            if got >= min || self.ring.in_flight() == 0 {
                self.ring.submit()?;
                break;
            }
            // Every pending operation needs at least one more ring completion to finish, so
            // waiting for `min - got` of them never waits longer than necessary.
            self.ring.submit_and_wait(min - got)?;
        }
        out.append(&mut self.done);
        Ok(out.len() - before)
    }

    /// Routes every ring completion that is ready to its operation, without entering the
    /// kernel; returns how many there were.
    fn reap_ring(&mut self) -> usize {
        let mut cqes = std::mem::take(&mut self.cqe_scratch);
        self.ring.reap(|c| cqes.push(c));
        let count = cqes.len();
        for cqe in cqes.drain(..) {
            self.on_cqe(cqe);
        }
        self.cqe_scratch = cqes;
        count
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<()> {
        let chunk = self.config.chunk_size_bytes as u64;
        match offset.checked_add(len as u64) {
            Some(end) if end <= chunk => Ok(()),
            _ => Err(Error::InvalidArgument(format!(
                "range {offset}+{len} exceeds the chunk size {chunk}"
            ))),
        }
    }

    /// Pushes an entry, or keeps it for later when the ring is at capacity.
    ///
    /// # Safety
    ///
    /// As for [`Ring::push`]: the entry's buffers and files stay valid until its completion.
    unsafe fn push(&mut self, entry: squeue::Entry) -> Result<()> {
        if self.backlog.is_empty() && self.ring.has_room() {
            // SAFETY: forwarded from the caller.
            unsafe { self.ring.push(&entry) }
        } else {
            self.backlog.push_back(entry);
            Ok(())
        }
    }

    fn flush_backlog(&mut self) -> Result<()> {
        while self.ring.has_room() {
            let Some(entry) = self.backlog.pop_front() else {
                break;
            };
            // SAFETY: entries in the backlog were built by the op code under the same duty as
            // `push`; their slots and files are owned by ops that have not completed.
            unsafe { self.ring.push(&entry) }?;
        }
        Ok(())
    }
}

impl Drop for ChunkStore {
    fn drop(&mut self) {
        // Requests in the kernel still use slab memory and chunk fds: let them finish.
        self.backlog.clear();
        while self.ring.in_flight() > 0 {
            if self.ring.submit_and_wait(1).is_err() {
                break;
            }
            self.ring.reap(|_| {});
        }
    }
}

fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: c_path is NUL-terminated and st is a writable statvfs.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    Ok(unsafe { st.assume_init() })
}
