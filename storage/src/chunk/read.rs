//! Reads: the aligned window covering the range goes from disk into the slot with fixed reads,
//! holding the window's range shared, so a read sees every write submitted before it that
//! overlaps its window and none submitted after.
//!
//! Only the part of the window below the end of the file is read; the rest, and any byte past
//! the chunk's length (the zero padding of an unaligned last write), is zero-filled in the slot.

use super::ops::{slot_of, Kind, Span, BLOCK, REQ_READ};
use super::{ChunkStore, Outcome};
use crate::error::Result;

impl ChunkStore {
    /// Starts read `id`, whose window is now held.
    pub(super) fn begin_read(&mut self, id: u32) -> Result<Option<Outcome>> {
        let span = self.read_span(id);
        if span.len == 0 {
            return Ok(Some(read_outcome(span, 0)));
        }
        if !self.files.pin(span.key, false)? {
            // No such chunk: it reads as zeros and has length 0.
            self.slab.whole_mut(slot_of(&self.ops, id))[..span.window_len()].fill(0);
            self.counters.bytes_read += span.len as u64;
            return Ok(Some(read_outcome(span, 0)));
        }
        self.op(id).pinned = true;
        let file = self.files.get(span.key);
        let (chunk_len, disk_len) = (file.len, file.disk_len);
        let read_end = span.end.min(disk_len.div_ceil(BLOCK) * BLOCK);
        if read_end <= span.start {
            self.slab.whole_mut(slot_of(&self.ops, id))[..span.window_len()].fill(0);
            self.counters.bytes_read += span.len as u64;
            return Ok(Some(read_outcome(span, chunk_len)));
        }
        if let Kind::Read { read_end: r, .. } = &mut self.op(id).kind {
            *r = read_end;
        }
        self.push_read_rest(id)?;
        Ok(None)
    }

    fn read_span(&mut self, id: u32) -> Span {
        self.read_state(id).0
    }

    /// Span, end of the disk read and bytes read so far of read `id`.
    fn read_state(&mut self, id: u32) -> (Span, u64, u64) {
        match self.op(id).kind {
            Kind::Read {
                span,
                read_end,
                done,
            } => (span, read_end, done),
            _ => unreachable!("not a read"),
        }
    }

    fn push_read_rest(&mut self, id: u32) -> Result<()> {
        let (span, read_end, done) = self.read_state(id);
        let slot_index = self.slot_index(id);
        let buf = self.slab.data_addr(slot_index).wrapping_add(done as usize);
        let len = (read_end - span.start - done) as usize;
        self.push_read(
            id,
            REQ_READ,
            span.key,
            buf,
            len,
            span.start + done,
            slot_index,
        )
    }

    /// A transfer of read `id` completed: read on, or zero what lies past the end and finish.
    pub(super) fn on_read(&mut self, id: u32, result: i32) -> Result<Option<Outcome>> {
        let (span, read_end, done) = self.read_state(id);
        if result < 0 {
            return Err(self.cqe_error("read chunk", span.key, result));
        }
        let done = done + result as u64;
        if let Kind::Read { done: d, .. } = &mut self.op(id).kind {
            *d = done;
        }
        if self.op(id).error.is_some() {
            return Ok(None);
        }
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
        Ok(Some(read_outcome(span, chunk_len)))
    }
}

fn read_outcome(span: Span, chunk_len: u64) -> Outcome {
    Outcome::Read {
        data_offset: span.data_offset(),
        len: span.len,
        chunk_len,
    }
}
