//! Writes, in up to three pieces that lock, read and write independently.
//!
//! The data of a write lies in its slot at the position of its aligned window (see the
//! [`ChunkStore`] docs). The window is cut into pieces:
//!
//! - *head*: the first block, when the data starts inside it;
//! - *tail*: the last block, when the data ends inside it;
//! - *body*: the whole blocks between them, written straight from the slot.
//!
//! A window of one block is a single piece. Head and tail are read-modify-write: the block is
//! read from disk into the slot's edge area (head into edge 0, tail into edge 1; a block past
//! the end of the file is zeros and needs no read), the bytes outside the written range are
//! copied around the data, and the whole block is written.
//!
//! Each piece holds an exclusive lock on its own blocks only, and releases it as soon as its
//! block is on disk (the op's last piece keeps it until the op finishes). Two writers of
//! neighbouring unaligned records (IOR hard) therefore serialise only on the one block they
//! share, while their bodies go to disk in parallel; the lock table grants conflicting ranges
//! in submission order, so overlapping writes still apply in the order they were submitted and
//! a read sees every earlier write of its window.
//!
//! The chunk's length grows as each piece lands, by the data that piece holds; the padding an
//! unaligned end leaves in the file's last block is trimmed by the op's last piece when no
//! other op is writing the chunk.

use io_uring::{opcode, types};

use super::ops::{owner, slot_of, user_data, Kind, LockRanges, Span, BLOCK, REQ_EDGE, REQ_WRITE};
use super::{ChunkStore, Outcome};
use crate::error::{Error, Result};
use crate::BLOCK_SIZE;

const HEAD: usize = 0;
const BODY: usize = 1;
const TAIL: usize = 2;

/// One piece of a write.
#[derive(Debug, Clone, Copy)]
pub(super) struct Piece {
    /// Block-aligned range `[start, end)` of the chunk.
    start: u64,
    end: u64,
    /// For a read-modify-write piece (one block), the edge block of the slot its disk block is
    /// read into.
    edge: Option<usize>,
    /// Bytes written so far.
    done: u64,
}

impl Piece {
    fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// The pieces of a write, at fixed positions (head, body, tail).
#[derive(Debug)]
pub(super) struct Pieces {
    list: [Option<Piece>; 3],
    /// Pieces not yet on disk.
    left: u8,
}

impl Pieces {
    /// Cuts the window of `span` (a write of at least one byte) into pieces.
    pub fn new(span: &Span) -> Pieces {
        debug_assert!(span.len > 0, "empty writes have no pieces");
        let piece = |start, end, edge| Piece {
            start,
            end,
            edge,
            done: 0,
        };
        let head_partial = span.data_offset() > 0;
        let tail_partial = span.data_end() < span.window_len();
        let list = if span.window_len() == BLOCK_SIZE {
            let edge = (head_partial || tail_partial).then_some(0);
            let mut list = [None; 3];
            list[HEAD] = Some(piece(span.start, span.end, edge));
            list
        } else {
            let body_start = span.start + if head_partial { BLOCK } else { 0 };
            let body_end = span.end - if tail_partial { BLOCK } else { 0 };
            let mut list = [None; 3];
            list[HEAD] = head_partial.then(|| piece(span.start, span.start + BLOCK, Some(0)));
            list[BODY] = (body_start < body_end).then(|| piece(body_start, body_end, None));
            list[TAIL] = tail_partial.then(|| piece(span.end - BLOCK, span.end, Some(1)));
            list
        };
        let left = list.iter().flatten().count() as u8;
        Pieces { list, left }
    }

    /// The exclusive range of every piece, indexed by piece (submission order).
    pub fn lock_ranges(&self) -> LockRanges {
        self.list.map(|piece| piece.map(|p| (p.start, p.end, true)))
    }
}

/// The bytes of a read-modify-write piece's block that come from disk, as ranges of the slot:
/// before the data (head side) and after it (tail side).
fn kept_ranges(span: &Span, piece: &Piece) -> [Option<(usize, usize)>; 2] {
    let block_at = (piece.start - span.start) as usize;
    let block_end = block_at + BLOCK_SIZE;
    let head = (span.data_offset() > block_at).then(|| (block_at, span.data_offset()));
    let tail = (span.data_end() < block_end).then(|| (span.data_end().max(block_at), block_end));
    [head, tail]
}

impl ChunkStore {
    fn piece(&mut self, id: u32, p: usize) -> (Span, Piece) {
        match &self.op(id).kind {
            Kind::Write { span, pieces } => (*span, pieces.list[p].expect("live piece")),
            _ => unreachable!("not a write"),
        }
    }

    fn piece_mut(&mut self, id: u32, p: usize) -> &mut Piece {
        match &mut self.op(id).kind {
            Kind::Write { pieces, .. } => pieces.list[p].as_mut().expect("live piece"),
            _ => unreachable!("not a write"),
        }
    }

    /// Starts piece `p` of write `id`, whose range is now held.
    pub(super) fn begin_piece(&mut self, id: u32, p: usize) -> Result<Option<Outcome>> {
        let (span, piece) = self.piece(id, p);
        if !self.op(id).pinned {
            self.files.pin(span.key, true)?;
            self.op(id).pinned = true;
        }
        let disk_len = self.files.get(span.key).disk_len;
        match piece.edge {
            Some(edge) if piece.start < disk_len => {
                let slot_index = self.slot_index(id);
                let buf = self
                    .slab
                    .data_addr(slot_index)
                    .wrapping_add(self.slab.slot_size() + edge * BLOCK_SIZE);
                let request = REQ_EDGE + p as u64;
                self.push_read(
                    id,
                    request,
                    span.key,
                    buf,
                    BLOCK_SIZE,
                    piece.start,
                    slot_index,
                )?;
                self.counters.edge_reads += 1;
            }
            Some(_) => {
                // The block lies past the end of the file: what surrounds the data is zeros.
                let whole = self.slab.whole_mut(slot_of(&self.ops, id));
                for (from, to) in kept_ranges(&span, &piece).into_iter().flatten() {
                    whole[from..to].fill(0);
                }
                self.push_piece_write(id, p)?;
            }
            None => self.push_piece_write(id, p)?,
        }
        Ok(None)
    }

    /// The disk block of read-modify-write piece `p` arrived: merge it around the data and
    /// write the block.
    pub(super) fn on_edge_read(
        &mut self,
        id: u32,
        p: usize,
        result: i32,
    ) -> Result<Option<Outcome>> {
        let (span, piece) = self.piece(id, p);
        if result < 0 {
            return Err(self.cqe_error("read chunk block", span.key, result));
        }
        if self.op(id).error.is_some() {
            return Ok(None);
        }
        let edge_at = self.slab.slot_size() + piece.edge.expect("an edge piece") * BLOCK_SIZE;
        let block_at = (piece.start - span.start) as usize;
        let whole = self.slab.whole_mut(slot_of(&self.ops, id));
        // A block that ends past the end of the file reads short: the rest is zeros.
        whole[edge_at + result as usize..edge_at + BLOCK_SIZE].fill(0);
        let mut copied = 0;
        for (from, to) in kept_ranges(&span, &piece).into_iter().flatten() {
            let src = edge_at + (from - block_at);
            whole.copy_within(src..src + (to - from), from);
            copied += to - from;
        }
        self.counters.bytes_copied += copied as u64;
        self.push_piece_write(id, p)?;
        Ok(None)
    }

    fn push_piece_write(&mut self, id: u32, p: usize) -> Result<()> {
        let (span, piece) = self.piece(id, p);
        let slot_index = self.slot_index(id);
        let fd = self.files.get(span.key).fd();
        let at = (piece.start - span.start + piece.done) as usize;
        let buf = self.slab.data_addr(slot_index).wrapping_add(at);
        let request = REQ_WRITE + p as u64;
        let len = self.transfer_len(request, (piece.len() - piece.done) as u32);
        let entry = opcode::WriteFixed::new(types::Fd(fd), buf, len, slot_index as u16)
            .offset(piece.start + piece.done)
            .build()
            .user_data(user_data(request, id));
        // SAFETY: the bytes lie in the slot owned by op `id` and the file is pinned by it until
        // the op finishes, which happens only after this request's completion is reaped.
        unsafe { self.push(entry) }?;
        self.op(id).pending += 1;
        Ok(())
    }

    /// A transfer of piece `p` completed: write the rest, or account for the piece and release
    /// its range; the last piece finishes the write.
    pub(super) fn on_piece_write(
        &mut self,
        id: u32,
        p: usize,
        result: i32,
    ) -> Result<Option<Outcome>> {
        let (span, piece) = self.piece(id, p);
        if result <= 0 {
            let errno = if result == 0 { -libc::EIO } else { result };
            return Err(self.cqe_error("write chunk", span.key, errno));
        }
        let done = piece.done + result as u64;
        self.piece_mut(id, p).done = done;
        if self.op(id).error.is_some() {
            return Ok(None);
        }
        if done < piece.len() {
            self.push_piece_write(id, p)?;
            return Ok(None);
        }
        let data_end = span.offset + span.len as u64;
        let file = self.files.get(span.key);
        file.len = file.len.max(piece.end.min(data_end));
        file.disk_len = file.disk_len.max(piece.end);
        self.files.mark_dirty(span.key);
        let left = match &mut self.op(id).kind {
            Kind::Write { pieces, .. } => {
                pieces.left -= 1;
                pieces.left
            }
            _ => unreachable!("not a write"),
        };
        if left > 0 {
            self.op(id).locks &= !(1 << p);
            self.release_range(span.key, owner(id, p));
            return Ok(None);
        }
        self.trim_padding(id, span)?;
        self.counters.bytes_written += span.len as u64;
        Ok(Some(Outcome::Written { len: span.len }))
    }

    /// Cuts the zero padding of the file's last block once no other op writes the chunk.
    fn trim_padding(&mut self, id: u32, span: Span) -> Result<()> {
        if self.locks.other_writers(span.key, id) {
            return Ok(());
        }
        let file = self.files.get(span.key);
        if file.disk_len > file.len {
            let len = file.len;
            file.set_len(len)
                .map_err(|e| Error::io("trim chunk file", self.files.path(span.key), e))?;
            self.counters.trims += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChunkKey;

    fn ranges(offset: u64, len: usize) -> Vec<(usize, u64, u64, bool)> {
        let pieces = Pieces::new(&Span::new(ChunkKey::new(1, 0), offset, len));
        (0..3)
            .filter_map(|p| pieces.lock_ranges()[p].map(|(start, end, x)| (p, start, end, x)))
            .collect()
    }

    #[test]
    fn windows_are_cut_at_partial_blocks() {
        let b = BLOCK;
        // Aligned: one body piece.
        assert_eq!(ranges(0, 2 * BLOCK_SIZE), vec![(BODY, 0, 2 * b, true)]);
        // Inside one block: a single read-modify-write piece.
        assert_eq!(ranges(5, 10), vec![(HEAD, 0, b, true)]);
        // IOR hard record: head, body and tail.
        assert_eq!(
            ranges(47008, 47008),
            vec![
                (HEAD, 45056, 49152, true),
                (BODY, 49152, 90112, true),
                (TAIL, 90112, 94208, true)
            ]
        );
        // Two partial blocks and no whole block between them.
        assert_eq!(
            ranges(b - 1, 2),
            vec![(HEAD, 0, b, true), (TAIL, b, 2 * b, true)]
        );
        // Aligned start, partial end.
        assert_eq!(
            ranges(0, BLOCK_SIZE + 1),
            vec![(BODY, 0, b, true), (TAIL, b, 2 * b, true)]
        );
    }

    #[test]
    fn kept_bytes_surround_the_data() {
        let span = Span::new(ChunkKey::new(1, 0), 100, 50);
        let pieces = Pieces::new(&span);
        let piece = pieces.list[0].unwrap();
        assert_eq!(
            kept_ranges(&span, &piece),
            [Some((0, 100)), Some((150, BLOCK_SIZE))]
        );
        let span = Span::new(ChunkKey::new(1, 0), BLOCK - 1, 2);
        let pieces = Pieces::new(&span);
        let (head, tail) = (pieces.list[HEAD].unwrap(), pieces.list[TAIL].unwrap());
        assert_eq!(kept_ranges(&span, &head), [Some((0, BLOCK_SIZE - 1)), None]);
        assert_eq!(
            kept_ranges(&span, &tail),
            [None, Some((BLOCK_SIZE + 1, 2 * BLOCK_SIZE))]
        );
    }
}
