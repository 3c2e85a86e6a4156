//! The operations of a [`ChunkStore`] as explicit state machines.
//!
//! An operation is created by a `submit_*` call, waits for its range lock (reads, writes and
//! truncates), then issues ring requests and advances on each completion until it finishes.
//! Its slot and the files it pinned belong to it until then; [`ChunkStore::finish`] returns the
//! slot in the [`Completion`], unpins the files and releases the lock, which may start waiting
//! operations.
//!
//! A ring request's `user_data` is `(part << 32) | op id`, where the part says which request of
//! the operation completed (main transfer, head edge read, tail edge read, sync).

use std::fs::File;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types};

use super::layout::ChunkKey;
use super::{ChunkStore, Completion, Outcome};
use crate::error::{Error, Result};
use crate::ring::Completion as Cqe;
use crate::slab::Slot;
use crate::BLOCK_SIZE;

const PART_MAIN: u64 = 0;
const PART_HEAD: u64 = 1;
const PART_TAIL: u64 = 2;
const PART_SYNC: u64 = 3;

const BLOCK: u64 = BLOCK_SIZE as u64;

fn user_data(part: u64, id: u32) -> u64 {
    (part << 32) | u64::from(id)
}

/// The slot of op `id`, borrowed from the op table alone so the slab can be borrowed beside it.
fn slot_of(ops: &[Option<Op>], id: u32) -> &Slot {
    ops[id as usize]
        .as_ref()
        .and_then(|op| op.slot.as_ref())
        .expect("op holds a slot")
}

/// A byte range of a chunk together with the aligned window that covers it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    key: ChunkKey,
    offset: u64,
    len: usize,
    /// Aligned window `[start, end)` covering `[offset, offset + len)`.
    start: u64,
    end: u64,
    /// Bytes of the window transferred so far.
    done: u64,
}

impl Span {
    fn new(key: ChunkKey, offset: u64, len: usize) -> Span {
        let start = offset - offset % BLOCK;
        let end = (offset + len as u64).div_ceil(BLOCK) * BLOCK;
        Span {
            key,
            offset,
            len,
            start,
            end,
            done: 0,
        }
    }

    fn window_len(&self) -> usize {
        (self.end - self.start) as usize
    }

    fn data_offset(&self) -> usize {
        (self.offset - self.start) as usize
    }

    fn data_end(&self) -> usize {
        self.data_offset() + self.len
    }
}

#[derive(Debug)]
pub(super) enum Kind {
    Write(Span),
    /// `read_end`: where the disk read of the window stops (end of file, rounded up).
    Read {
        span: Span,
        read_end: u64,
    },
    /// `targets`: the dirty chunks taken, each with whether it was created since its last
    /// sync; `fds`: the files being synced, each with whether a data-only sync suffices.
    Sync {
        file_id: u64,
        index: Option<u64>,
        targets: Vec<(ChunkKey, bool)>,
        fds: Vec<(File, bool)>,
    },
    Truncate {
        key: ChunkKey,
        len: u64,
    },
}

/// One operation of a chunk store.
#[derive(Debug)]
pub(super) struct Op {
    tag: u64,
    kind: Kind,
    slot: Option<Slot>,
    /// The chunk file is pinned by this op (reads and writes).
    pinned: bool,
    /// Holds a range lock on its chunk.
    locked: bool,
    /// Ring requests in flight.
    pending: u32,
    /// Which edge blocks were read: head into edge 0, tail into edge 1.
    edges: (bool, bool),
    error: Option<Error>,
}

impl Op {
    fn new(tag: u64, kind: Kind, slot: Option<Slot>) -> Op {
        Op {
            tag,
            kind,
            slot,
            pinned: false,
            locked: false,
            pending: 0,
            edges: (false, false),
            error: None,
        }
    }

    pub fn write(tag: u64, key: ChunkKey, offset: u64, len: usize, slot: Slot) -> Op {
        Op::new(tag, Kind::Write(Span::new(key, offset, len)), Some(slot))
    }

    pub fn read(tag: u64, key: ChunkKey, offset: u64, len: usize, slot: Slot) -> Op {
        let span = Span::new(key, offset, len);
        Op::new(tag, Kind::Read { span, read_end: 0 }, Some(slot))
    }

    pub fn sync(tag: u64, file_id: u64, index: Option<u64>) -> Op {
        let kind = Kind::Sync {
            file_id,
            index,
            targets: Vec::new(),
            fds: Vec::new(),
        };
        Op::new(tag, kind, None)
    }

    pub fn truncate(tag: u64, key: ChunkKey, len: u64) -> Op {
        Op::new(tag, Kind::Truncate { key, len }, None)
    }

    /// The chunk and the range the op locks, with whether the lock is exclusive.
    fn lock_range(&self) -> Option<(ChunkKey, u64, u64, bool)> {
        match &self.kind {
            Kind::Write(s) => Some((s.key, s.start, s.end.max(s.start + 1), true)),
            Kind::Read { span: s, .. } => Some((s.key, s.start, s.end.max(s.start + 1), false)),
            Kind::Truncate { key, .. } => Some((*key, 0, u64::MAX, true)),
            Kind::Sync { .. } => None,
        }
    }

    fn key(&self) -> Option<ChunkKey> {
        self.lock_range().map(|(key, ..)| key)
    }
}

impl ChunkStore {
    /// Registers a new operation and starts it, or queues it behind its range lock.
    pub(super) fn start(&mut self, mut op: Op) {
        let id = match self.free_ops.pop() {
            Some(id) => id,
            None => {
                self.ops.push(None);
                (self.ops.len() - 1) as u32
            }
        };
        let granted = match op.lock_range() {
            Some((key, start, end, exclusive)) => {
                op.locked = true;
                self.locks.acquire(key, id, start, end, exclusive)
            }
            None => true,
        };
        self.ops[id as usize] = Some(op);
        if granted {
            self.begin(id);
        }
    }

    fn op(&mut self, id: u32) -> &mut Op {
        self.ops[id as usize].as_mut().expect("live op")
    }

    /// First step of an operation that holds its lock.
    fn begin(&mut self, id: u32) {
        let result = match &self.op(id).kind {
            Kind::Write(_) => self.begin_write(id),
            Kind::Read { .. } => self.begin_read(id),
            Kind::Sync { .. } => self.begin_sync(id),
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

    /// Ends an operation: unpins, unlocks (starting operations that were waiting), and queues
    /// its completion.
    pub(super) fn finish(&mut self, id: u32, result: Result<Outcome>) {
        let mut op = self.ops[id as usize].take().expect("live op");
        self.free_ops.push(id);
        if op.pinned {
            self.files.unpin(op.key().expect("pinned ops have a chunk"));
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
        if op.locked {
            let mut granted = Vec::new();
            self.locks
                .release(op.key().expect("locked ops have a chunk"), id, &mut granted);
            for next in granted {
                self.begin(next);
            }
        }
    }

    /// Routes one ring completion to its operation.
    pub(super) fn on_cqe(&mut self, cqe: Cqe) {
        let id = cqe.user_data as u32;
        let part = cqe.user_data >> 32;
        let op = self.op(id);
        op.pending -= 1;
        let step = match (&op.kind, part) {
            (Kind::Write(_), PART_HEAD | PART_TAIL) => self.on_edge_read(id, part, cqe.result),
            (Kind::Write(_), PART_MAIN) => self.on_write(id, cqe.result),
            (Kind::Read { .. }, PART_MAIN) => self.on_read(id, cqe.result),
            (Kind::Sync { .. }, PART_SYNC) => self.on_sync(id, cqe.result),
            _ => unreachable!("completion part {part} does not belong to its op"),
        };
        self.advance(id, step);
    }

    fn cqe_error(&self, what: &'static str, key: ChunkKey, result: i32) -> Error {
        Error::io(
            what,
            self.files.path(key),
            std::io::Error::from_raw_os_error(-result),
        )
    }

    fn span(&mut self, id: u32) -> Span {
        match &self.op(id).kind {
            Kind::Write(s) | Kind::Read { span: s, .. } => *s,
            _ => unreachable!("op has no span"),
        }
    }

    fn set_done(&mut self, id: u32, done: u64) {
        match &mut self.op(id).kind {
            Kind::Write(s) | Kind::Read { span: s, .. } => s.done = done,
            _ => unreachable!("op has no span"),
        }
    }

    fn slot_index(&mut self, id: u32) -> usize {
        self.op(id).slot.as_ref().expect("op holds a slot").index()
    }

    // ----- writes -----

    fn begin_write(&mut self, id: u32) -> Result<Option<Outcome>> {
        let span = self.span(id);
        if span.len == 0 {
            return Ok(Some(Outcome::Written { len: 0 }));
        }
        self.files.pin(span.key, true)?;
        self.op(id).pinned = true;
        let disk_len = self.files.get(span.key).disk_len;
        let head_partial = span.offset > span.start;
        let tail_partial = span.data_end() < span.window_len();
        let tail_block = span.end - BLOCK;
        let read_head = head_partial && span.start < disk_len;
        let same_block = tail_block == span.start;
        let read_tail = tail_partial && tail_block < disk_len && !(same_block && read_head);
        let slot_size = self.slab.slot_size();
        let slot_index = self.slot_index(id);
        let whole = self.slab.whole_mut(slot_of(&self.ops, id));
        if head_partial && !read_head {
            whole[..span.data_offset()].fill(0);
        }
        if tail_partial && tail_block >= disk_len {
            whole[span.data_end()..span.window_len()].fill(0);
        }
        self.op(id).edges = (read_head, read_tail);
        for (wanted, part, block, edge) in [
            (read_head, PART_HEAD, span.start, 0usize),
            (read_tail, PART_TAIL, tail_block, 1),
        ] {
            if wanted {
                let buf = self
                    .slab
                    .data_addr(slot_index)
                    .wrapping_add(slot_size + edge * BLOCK_SIZE);
                self.push_read(id, part, span.key, buf, BLOCK_SIZE, block, slot_index)?;
                self.counters.edge_reads += 1;
            }
        }
        if self.op(id).pending == 0 {
            self.push_write_rest(id)?;
        }
        Ok(None)
    }

    fn on_edge_read(&mut self, id: u32, part: u64, result: i32) -> Result<Option<Outcome>> {
        let span = self.span(id);
        if result < 0 {
            return Err(self.cqe_error("read chunk block", span.key, result));
        }
        // A block that ends past the end of file reads short: the rest is zeros.
        let slot_size = self.slab.slot_size();
        let edge = slot_size + if part == PART_HEAD { 0 } else { BLOCK_SIZE };
        let whole = self.slab.whole_mut(slot_of(&self.ops, id));
        whole[edge + result as usize..edge + BLOCK_SIZE].fill(0);
        let op = self.op(id);
        if op.pending > 0 || op.error.is_some() {
            return Ok(None);
        }
        self.merge_edges(id, span);
        self.push_write_rest(id)?;
        Ok(None)
    }

    /// Copies the bytes of the edge blocks that lie outside the written range into the slot.
    fn merge_edges(&mut self, id: u32, span: Span) {
        let (read_head, read_tail) = self.op(id).edges;
        let slot_size = self.slab.slot_size();
        let window = span.window_len();
        let whole = self.slab.whole_mut(slot_of(&self.ops, id));
        let mut copied = 0;
        if read_head {
            let n = span.data_offset();
            whole.copy_within(slot_size..slot_size + n, 0);
            copied += n;
        }
        let tail_partial = span.data_end() < window;
        let tail_in_head_edge = read_head && window == BLOCK_SIZE;
        if tail_partial && (read_tail || tail_in_head_edge) {
            let edge = if read_tail {
                slot_size + BLOCK_SIZE
            } else {
                slot_size
            };
            let from = span.data_end() - (window - BLOCK_SIZE);
            whole.copy_within(edge + from..edge + BLOCK_SIZE, span.data_end());
            copied += window - span.data_end();
        }
        self.counters.bytes_copied += copied as u64;
    }

    fn push_write_rest(&mut self, id: u32) -> Result<()> {
        let span = self.span(id);
        let slot_index = self.slot_index(id);
        let fd = self.files.get(span.key).fd();
        let buf = self
            .slab
            .data_addr(slot_index)
            .wrapping_add(span.done as usize);
        let len = (span.window_len() - span.done as usize) as u32;
        let entry = opcode::WriteFixed::new(types::Fd(fd), buf, len, slot_index as u16)
            .offset(span.start + span.done)
            .build()
            .user_data(user_data(PART_MAIN, id));
        // SAFETY: the slot is owned by op `id` and the file is pinned by it until the op
        // finishes, which happens only after this request's completion is reaped.
        unsafe { self.push(entry) }?;
        self.op(id).pending += 1;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn push_read(
        &mut self,
        id: u32,
        part: u64,
        key: ChunkKey,
        buf: *mut u8,
        len: usize,
        offset: u64,
        slot_index: usize,
    ) -> Result<()> {
        let fd = self.files.get(key).fd();
        let entry = opcode::ReadFixed::new(types::Fd(fd), buf, len as u32, slot_index as u16)
            .offset(offset)
            .build()
            .user_data(user_data(part, id));
        // SAFETY: `buf..buf + len` lies in the slot (data or edge area) owned by op `id`, and the
        // file is pinned by it, until the op finishes after this completion is reaped.
        unsafe { self.push(entry) }?;
        self.op(id).pending += 1;
        Ok(())
    }

    fn on_write(&mut self, id: u32, result: i32) -> Result<Option<Outcome>> {
        let span = self.span(id);
        if result <= 0 {
            let errno = if result == 0 { -libc::EIO } else { result };
            return Err(self.cqe_error("write chunk", span.key, errno));
        }
        let done = span.done + result as u64;
        self.set_done(id, done);
        if done < span.window_len() as u64 {
            self.push_write_rest(id)?;
            return Ok(None);
        }
        let end = span.offset + span.len as u64;
        let other_writers = self.locks.other_writers(span.key, id);
        let file = self.files.get(span.key);
        file.len = file.len.max(end);
        file.disk_len = file.disk_len.max(span.end);
        if file.disk_len > file.len && !other_writers {
            let len = file.len;
            file.set_len(len)
                .map_err(|e| Error::io("trim chunk file", self.files.path(span.key), e))?;
            self.counters.trims += 1;
        }
        self.files.mark_dirty(span.key);
        self.counters.bytes_written += span.len as u64;
        Ok(Some(Outcome::Written { len: span.len }))
    }

    // ----- reads -----

    fn begin_read(&mut self, id: u32) -> Result<Option<Outcome>> {
        let span = self.span(id);
        if span.len == 0 {
            return Ok(Some(self.read_outcome(span, 0)));
        }
        if !self.files.pin(span.key, false)? {
            self.slab.whole_mut(slot_of(&self.ops, id))[..span.window_len()].fill(0);
            self.counters.bytes_read += span.len as u64;
            return Ok(Some(self.read_outcome(span, 0)));
        }
        self.op(id).pinned = true;
        let file = self.files.get(span.key);
        let (chunk_len, disk_len) = (file.len, file.disk_len);
        let read_end = span.end.min(disk_len.div_ceil(BLOCK) * BLOCK);
        if read_end <= span.start {
            self.slab.whole_mut(slot_of(&self.ops, id))[..span.window_len()].fill(0);
            self.counters.bytes_read += span.len as u64;
            return Ok(Some(self.read_outcome(span, chunk_len)));
        }
        if let Kind::Read { read_end: r, .. } = &mut self.op(id).kind {
            *r = read_end;
        }
        self.push_read_rest(id)?;
        Ok(None)
    }

    fn read_outcome(&self, span: Span, chunk_len: u64) -> Outcome {
        Outcome::Read {
            data_offset: span.data_offset(),
            len: span.len,
            chunk_len,
        }
    }

    fn push_read_rest(&mut self, id: u32) -> Result<()> {
        let Kind::Read { span, read_end } = self.op(id).kind else {
            unreachable!("not a read");
        };
        let slot_index = self.slot_index(id);
        let buf = self
            .slab
            .data_addr(slot_index)
            .wrapping_add(span.done as usize);
        let len = (read_end - span.start - span.done) as usize;
        self.push_read(
            id,
            PART_MAIN,
            span.key,
            buf,
            len,
            span.start + span.done,
            slot_index,
        )
    }

    fn on_read(&mut self, id: u32, result: i32) -> Result<Option<Outcome>> {
        let Kind::Read { span, read_end } = self.op(id).kind else {
            unreachable!("not a read");
        };
        if result < 0 {
            return Err(self.cqe_error("read chunk", span.key, result));
        }
        let done = span.done + result as u64;
        self.set_done(id, done);
        // A read that ends inside a block met the end of the file as it was then: the rest of
        // the window is zeros, even if a concurrent write beyond the window has since grown the
        // file (a resumed read would be unaligned). A short read ending on a block boundary is
        // resumed while the file has more bytes.
        let disk_len = self.files.get(span.key).disk_len;
        if result > 0 && done % BLOCK == 0 && span.start + done < read_end.min(disk_len) {
            self.push_read_rest(id)?;
            return Ok(None);
        }
        // Past the end of the file, and past the chunk's length (zero padding), reads zeros.
        let chunk_len = self.files.get(span.key).len;
        let valid = done.min(chunk_len.saturating_sub(span.start)) as usize;
        let window = span.window_len();
        self.slab.whole_mut(slot_of(&self.ops, id))[valid.min(window)..window].fill(0);
        self.counters.bytes_read += span.len as u64;
        Ok(Some(self.read_outcome(span, chunk_len)))
    }

    // ----- syncs -----

    fn begin_sync(&mut self, id: u32) -> Result<Option<Outcome>> {
        let Kind::Sync { file_id, index, .. } = self.op(id).kind else {
            unreachable!("not a sync");
        };
        let targets = self.files.take_dirty(file_id, index);
        let created = targets.iter().any(|(_, created)| *created);
        match self.open_sync_files(file_id, &targets, created) {
            Ok(files) => {
                if let Kind::Sync {
                    targets: t, fds, ..
                } = &mut self.op(id).kind
                {
                    *t = targets;
                    *fds = files;
                }
            }
            Err(e) => {
                self.files.restore_dirty(&targets);
                return Err(e);
            }
        }
        let count = self.sync_fds(id).len();
        for i in 0..count {
            let (fd, data_only) = self.sync_fds(id)[i];
            self.push_fsync(id, fd, data_only)?;
        }
        Ok((self.op(id).pending == 0).then_some(Outcome::Synced))
    }

    /// Descriptors of their own for the chunks to sync (and their directory when a chunk was
    /// created since the last sync), so that eviction or removal of a cached file cannot close
    /// a descriptor the kernel is syncing. Chunks removed meanwhile need no sync.
    fn open_sync_files(
        &self,
        file_id: u64,
        targets: &[(ChunkKey, bool)],
        created: bool,
    ) -> Result<Vec<(File, bool)>> {
        let mut files = Vec::with_capacity(targets.len() + 1);
        for (key, _) in targets {
            if let Some(file) = self.files.open_for_sync(*key)? {
                files.push((file, true));
            }
        }
        if created {
            files.push((self.files.open_fan_dir(file_id)?, false));
        }
        Ok(files)
    }

    /// The raw descriptors of a sync op, each with whether a data-only sync suffices.
    fn sync_fds(&mut self, id: u32) -> Vec<(i32, bool)> {
        match &self.op(id).kind {
            Kind::Sync { fds, .. } => fds.iter().map(|(f, d)| (f.as_raw_fd(), *d)).collect(),
            _ => unreachable!("not a sync"),
        }
    }

    fn push_fsync(&mut self, id: u32, fd: i32, data_only: bool) -> Result<()> {
        let flags = if data_only {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        };
        let entry = opcode::Fsync::new(types::Fd(fd))
            .flags(flags)
            .build()
            .user_data(user_data(PART_SYNC, id));
        // SAFETY: the fd belongs to a File held in the op's state, which is dropped only when the
        // op finishes, after this completion is reaped.
        unsafe { self.push(entry) }?;
        self.op(id).pending += 1;
        Ok(())
    }

    fn on_sync(&mut self, id: u32, result: i32) -> Result<Option<Outcome>> {
        if result < 0 {
            let targets = match &mut self.op(id).kind {
                Kind::Sync { targets, .. } => std::mem::take(targets),
                _ => unreachable!("not a sync"),
            };
            self.files.restore_dirty(&targets);
            let key = targets
                .first()
                .map(|(k, _)| *k)
                .unwrap_or(ChunkKey::new(0, 0));
            return Err(self.cqe_error("sync chunk", key, result));
        }
        Ok((self.op(id).pending == 0).then_some(Outcome::Synced))
    }

    // ----- truncates -----

    fn truncate_now(&mut self, key: ChunkKey, len: u64) -> Result<()> {
        if len == 0 {
            self.files.remove(key)?;
            return Ok(());
        }
        self.files.pin(key, true)?;
        let result = self
            .files
            .get(key)
            .set_len(len)
            .map_err(|e| Error::io("truncate chunk file", self.files.path(key), e));
        self.files.unpin(key);
        result?;
        self.files.mark_dirty(key);
        Ok(())
    }
}
