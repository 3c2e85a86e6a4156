//! The operations of a [`ChunkStore`] as explicit state machines: the common frame here, one
//! file per kind of operation beside it (`write`, `read`, `sync`).
//!
//! An operation is created by a `submit_*` call and enters the lock table with one range per
//! *piece* (see `write`: a write has up to three pieces, other operations one, syncs none).
//! Each piece starts when its range is granted, issues ring requests and advances on each
//! completion. The operation's slot and its pin of the chunk file belong to it until it
//! finishes; [`ChunkStore::finish`] returns the slot in the [`Completion`], unpins the file and
//! releases the ranges still held or awaited, which may start waiting operations.
//!
//! A ring request's `user_data` is `(request << 32) | op id`, where the request says which
//! step of the operation completed (see the `REQ_*` constants). A lock owner is
//! `(op id << 2) | piece`.
//!
//! Errors: the first error is kept; no new request is issued after it, and the operation
//! finishes with it once none of its requests is left in the kernel.

use super::layout::ChunkKey;
use super::{ChunkStore, Completion, Outcome};
use crate::error::{Error, Result};
use crate::ring::Completion as Cqe;
use crate::slab::Slot;
use crate::BLOCK_SIZE;

pub(super) use super::sync::SyncState;
pub(super) use super::write::Pieces;

/// The main transfer of a read.
pub(super) const REQ_READ: u64 = 0;
/// One fsync of a sync.
pub(super) const REQ_SYNC: u64 = 1;
/// The edge block read of write piece `p` is `REQ_EDGE + p`.
pub(super) const REQ_EDGE: u64 = 2;
/// The transfer of write piece `p` is `REQ_WRITE + p`.
pub(super) const REQ_WRITE: u64 = 5;

pub(super) const BLOCK: u64 = BLOCK_SIZE as u64;

/// The lock range of each piece of an operation, indexed by piece: (start, end, exclusive).
pub(super) type LockRanges = [Option<(u64, u64, bool)>; 3];

/// Largest op id: lock owners keep two bits for the piece.
const MAX_OP_ID: u32 = (1 << 30) - 1;

pub(super) fn user_data(request: u64, id: u32) -> u64 {
    (request << 32) | u64::from(id)
}

pub(super) fn owner(id: u32, piece: usize) -> u32 {
    (id << 2) | piece as u32
}

/// The slot of op `id`, borrowed from the op table alone so the slab can be borrowed beside it.
pub(super) fn slot_of(ops: &[Option<Op>], id: u32) -> &Slot {
    ops[id as usize]
        .as_ref()
        .and_then(|op| op.slot.as_ref())
        .expect("op holds a slot")
}

/// A byte range of a chunk together with the aligned window that covers it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub key: ChunkKey,
    pub offset: u64,
    pub len: usize,
    /// Aligned window `[start, end)` covering `[offset, offset + len)`.
    pub start: u64,
    pub end: u64,
}

impl Span {
    pub fn new(key: ChunkKey, offset: u64, len: usize) -> Span {
        let start = offset - offset % BLOCK;
        let end = (offset + len as u64).div_ceil(BLOCK) * BLOCK;
        Span {
            key,
            offset,
            len,
            start,
            end,
        }
    }

    pub fn window_len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Where the data starts in the slot.
    pub fn data_offset(&self) -> usize {
        (self.offset - self.start) as usize
    }

    /// Where the data ends in the slot.
    pub fn data_end(&self) -> usize {
        self.data_offset() + self.len
    }
}

#[derive(Debug)]
pub(super) enum Kind {
    Write {
        span: Span,
        pieces: Pieces,
    },
    /// `read_end`: where the disk read of the window stops (end of file, rounded up);
    /// `done`: bytes of the window read so far.
    Read {
        span: Span,
        read_end: u64,
        done: u64,
    },
    Sync(SyncState),
    Truncate {
        key: ChunkKey,
        len: u64,
    },
}

/// One operation of a chunk store.
#[derive(Debug)]
pub(super) struct Op {
    pub tag: u64,
    pub kind: Kind,
    pub slot: Option<Slot>,
    /// The chunk file is pinned by this op (reads and writes).
    pub pinned: bool,
    /// Pieces whose lock range is still held or awaited, as a bit mask.
    pub locks: u8,
    /// Ring requests in flight.
    pub pending: u32,
    pub error: Option<Error>,
}

impl Op {
    pub fn new(tag: u64, kind: Kind, slot: Option<Slot>) -> Op {
        Op {
            tag,
            kind,
            slot,
            pinned: false,
            locks: 0,
            pending: 0,
            error: None,
        }
    }

    /// The chunk the op works on, if it works on one.
    pub fn key(&self) -> Option<ChunkKey> {
        match &self.kind {
            Kind::Write { span, .. } | Kind::Read { span, .. } => Some(span.key),
            Kind::Truncate { key, .. } => Some(*key),
            Kind::Sync(_) => None,
        }
    }

    /// The lock range of each piece, indexed by piece: (start, end, exclusive).
    fn lock_ranges(&self) -> LockRanges {
        match &self.kind {
            Kind::Write { pieces, .. } => pieces.lock_ranges(),
            Kind::Read { span: s, .. } => {
                [Some((s.start, s.end.max(s.start + 1), false)), None, None]
            }
            Kind::Truncate { .. } => [Some((0, u64::MAX, true)), None, None],
            Kind::Sync(_) => [None; 3],
        }
    }
}

impl ChunkStore {
    /// Registers a new operation and starts each piece whose range is free; the others start
    /// when their range is granted.
    pub(super) fn start(&mut self, mut op: Op) {
        let id = match self.free_ops.pop() {
            Some(id) => id,
            None => {
                self.ops.push(None);
                (self.ops.len() - 1) as u32
            }
        };
        assert!(id <= MAX_OP_ID, "too many operations in flight");
        // Bit `p` set: piece `p` holds its range now (an op without ranges starts piece 0).
        let mut granted = 0u8;
        match op.key() {
            Some(key) => {
                for (piece, range) in op.lock_ranges().into_iter().enumerate() {
                    let Some((start, end, exclusive)) = range else {
                        continue;
                    };
                    op.locks |= 1 << piece;
                    if self
                        .locks
                        .acquire(key, owner(id, piece), start, end, exclusive)
                    {
                        granted |= 1 << piece;
                    }
                }
            }
            None => granted = 1,
        }
        self.ops[id as usize] = Some(op);
        for piece in (0..3).filter(|p| granted & (1 << p) != 0) {
            // An earlier piece may have finished the whole op (an error, say).
            if self.ops[id as usize].is_none() {
                break;
            }
            self.begin(id, piece);
        }
    }

    pub(super) fn op(&mut self, id: u32) -> &mut Op {
        self.ops[id as usize].as_mut().expect("live op")
    }

    /// First step of piece `piece` of op `id`, whose range is now held.
    fn begin(&mut self, id: u32, piece: usize) {
        if self.op(id).error.is_some() {
            // Nothing new starts after an error; the op finishes when its requests are in.
            return self.advance(id, Ok(None));
        }
        let result = match &self.op(id).kind {
            Kind::Write { .. } => self.begin_piece(id, piece),
            Kind::Read { .. } => self.begin_read(id),
            Kind::Sync(_) => self.begin_sync(id),
            Kind::Truncate { key, len } => {
                let (key, len) = (*key, *len);
                self.truncate_now(key, len)
                    .map(|()| Some(Outcome::Truncated))
            }
        };
        self.advance(id, result);
    }

    /// Acts on the result of one step of op `id`: finish with an outcome, keep waiting, or
    /// record an error and finish once no request of the op is left in the kernel.
    fn advance(&mut self, id: u32, step: Result<Option<Outcome>>) {
        let op = self.op(id);
        match step {
            Ok(Some(outcome)) => self.finish(id, Ok(outcome)),
            Ok(None) if op.error.is_some() && op.pending == 0 => {
                // The recorded error replaces the placeholder outcome.
                self.finish(id, Ok(Outcome::Synced));
            }
            Ok(None) => {}
            Err(e) => {
                op.error.get_or_insert(e);
                if op.pending == 0 {
                    self.finish(id, Ok(Outcome::Synced));
                }
            }
        }
    }

    /// Ends an operation: unpins, queues its completion, and releases the ranges it still
    /// holds or awaits (starting operations that were waiting for them).
    pub(super) fn finish(&mut self, id: u32, result: Result<Outcome>) {
        let mut op = self.ops[id as usize].take().expect("live op");
        self.free_ops.push(id);
        let key = op.key();
        if op.pinned {
            self.files.unpin(key.expect("pinned ops have a chunk"));
        }
        let result = match op.error.take() {
            Some(e) => Err(e),
            None => result,
        };
        self.done.push(Completion {
            tag: op.tag,
            slot: op.slot.take(),
            result,
        });
        for piece in 0..3 {
            if op.locks & (1 << piece) != 0 {
                self.release_range(key.expect("locked ops have a chunk"), owner(id, piece));
            }
        }
    }

    /// Releases one lock range and starts every piece that it was holding up.
    pub(super) fn release_range(&mut self, key: ChunkKey, owner: u32) {
        let mut granted = Vec::new();
        self.locks.release(key, owner, &mut granted);
        for next in granted {
            let (id, piece) = (next >> 2, (next & 3) as usize);
            if self.ops[id as usize].is_some() {
                self.begin(id, piece);
            }
        }
    }

    /// Routes one ring completion to its operation.
    pub(super) fn on_cqe(&mut self, cqe: Cqe) {
        #[cfg(test)]
        let cqe = self.inject_fault(cqe);
        let id = cqe.user_data as u32;
        let request = cqe.user_data >> 32;
        let op = self.op(id);
        op.pending -= 1;
        let step = match (&op.kind, request) {
            (Kind::Write { .. }, r) if (REQ_EDGE..REQ_WRITE).contains(&r) => {
                self.on_edge_read(id, (r - REQ_EDGE) as usize, cqe.result)
            }
            (Kind::Write { .. }, r) if (REQ_WRITE..REQ_WRITE + 3).contains(&r) => {
                self.on_piece_write(id, (r - REQ_WRITE) as usize, cqe.result)
            }
            (Kind::Read { .. }, REQ_READ) => self.on_read(id, cqe.result),
            (Kind::Sync(_), REQ_SYNC) => self.on_sync(id, cqe.result),
            _ => unreachable!("completion {request} does not belong to its op"),
        };
        self.advance(id, step);
    }

    /// Test hook: makes the next completion of request kind `request` report `result` (a
    /// negated errno) instead of what the kernel said. The request itself really ran.
    #[cfg(test)]
    pub(super) fn fail_next(&mut self, request: u64, result: i32) {
        self.faults.push((request, result));
    }

    /// Test hook: the next transfer of request kind `request` asks the kernel for at most
    /// `len_max` bytes, so the kernel really transfers less than the operation wants.
    #[cfg(test)]
    pub(super) fn fail_short(&mut self, request: u64, len_max: u32) {
        self.caps.push((request, len_max));
    }

    /// The length to ask the kernel for: `len`, or less under a test's cap.
    pub(super) fn transfer_len(&mut self, request: u64, len: u32) -> u32 {
        #[cfg(test)]
        if let Some(pos) = self.caps.iter().position(|(r, _)| *r == request) {
            return len.min(self.caps.remove(pos).1);
        }
        let _ = request;
        len
    }

    #[cfg(test)]
    fn inject_fault(&mut self, mut cqe: Cqe) -> Cqe {
        let request = cqe.user_data >> 32;
        if let Some(pos) = self.faults.iter().position(|(r, _)| *r == request) {
            cqe.result = self.faults.remove(pos).1;
        }
        cqe
    }

    pub(super) fn cqe_error(&self, what: &'static str, key: ChunkKey, result: i32) -> Error {
        Error::io(
            what,
            self.files.path(key),
            std::io::Error::from_raw_os_error(-result),
        )
    }

    pub(super) fn slot_index(&mut self, id: u32) -> usize {
        self.op(id).slot.as_ref().expect("op holds a slot").index()
    }

    /// Pushes a fixed read of `len` bytes at `offset` of `key`'s file into `buf`, which lies in
    /// the slot (data or edge area) of op `id`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn push_read(
        &mut self,
        id: u32,
        request: u64,
        key: ChunkKey,
        buf: *mut u8,
        len: usize,
        offset: u64,
        slot_index: usize,
    ) -> Result<()> {
        let fd = self.files.get(key).fd();
        let len = self.transfer_len(request, len as u32);
        let entry =
            io_uring::opcode::ReadFixed::new(io_uring::types::Fd(fd), buf, len, slot_index as u16)
                .offset(offset)
                .build()
                .user_data(user_data(request, id));
        // SAFETY: `buf..buf + len` lies in the slot (data or edge area) owned by op `id`, and the
        // file is pinned by it, until the op finishes after this completion is reaped.
        unsafe { self.push(entry) }?;
        self.op(id).pending += 1;
        Ok(())
    }
}
