//! Byte-range locks per chunk, for serialising overlapping operations inside one shard.
//!
//! Ranges are held by *owners*: one per piece of an operation (`(op id << 2) | piece`). A read
//! holds its aligned window shared, a truncate the whole chunk exclusively, and each piece of a
//! write its own blocks exclusively (see `write`), from before their first I/O until they are
//! done. Two writes that share a block therefore never run their read-modify-write of it at the
//! same time, which is what keeps interleaved unaligned records (IOR hard) intact.
//!
//! Fairness: requests are granted in arrival order among those that conflict; a request waits
//! if it conflicts with a held range or with an earlier waiting request, so a stream of readers
//! cannot starve a writer and overlapping writes apply in the order they were submitted.
//! Non-overlapping requests never wait for each other.

use std::collections::{HashMap, VecDeque};

use super::layout::ChunkKey;

/// A byte range `[start, end)` of a chunk held or wanted by `owner`.
#[derive(Debug, Clone, Copy)]
struct Range {
    owner: u32,
    start: u64,
    end: u64,
    exclusive: bool,
}

impl Range {
    fn conflicts(&self, other: &Range) -> bool {
        (self.exclusive || other.exclusive) && self.start < other.end && other.start < self.end
    }
}

#[derive(Debug, Default)]
struct ChunkLocks {
    held: Vec<Range>,
    waiting: VecDeque<Range>,
}

/// The lock table of one chunk store. Chunks without held or waiting ranges have no entry.
#[derive(Debug, Default)]
pub(crate) struct RangeLocks {
    chunks: HashMap<ChunkKey, ChunkLocks>,
}

impl RangeLocks {
    /// Asks for `[start, end)` of `key` on behalf of `owner`. Returns `true` when granted at
    /// once; otherwise the request waits and [`RangeLocks::release`] reports it when granted.
    pub fn acquire(
        &mut self,
        key: ChunkKey,
        owner: u32,
        start: u64,
        end: u64,
        exclusive: bool,
    ) -> bool {
        debug_assert!(start < end, "empty lock range");
        let want = Range {
            owner,
            start,
            end,
            exclusive,
        };
        let locks = self.chunks.entry(key).or_default();
        let blocked = locks.held.iter().any(|h| h.conflicts(&want))
            || locks.waiting.iter().any(|w| w.conflicts(&want));
        if blocked {
            locks.waiting.push_back(want);
            false
        } else {
            locks.held.push(want);
            true
        }
    }

    /// Releases the range held or awaited by `owner` on `key` and appends to `granted` every
    /// waiting owner that now holds its range.
    pub fn release(&mut self, key: ChunkKey, owner: u32, granted: &mut Vec<u32>) {
        let Some(locks) = self.chunks.get_mut(&key) else {
            debug_assert!(false, "release of a chunk with no locks");
            return;
        };
        let before = locks.held.len() + locks.waiting.len();
        locks.held.retain(|h| h.owner != owner);
        locks.waiting.retain(|w| w.owner != owner);
        let after = locks.held.len() + locks.waiting.len();
        debug_assert_eq!(after + 1, before, "owner {owner} had no range");
        let mut still_waiting = VecDeque::with_capacity(locks.waiting.len());
        while let Some(w) = locks.waiting.pop_front() {
            let blocked = locks.held.iter().any(|h| h.conflicts(&w))
                || still_waiting.iter().any(|e: &Range| e.conflicts(&w));
            if blocked {
                still_waiting.push_back(w);
            } else {
                locks.held.push(w);
                granted.push(w.owner);
            }
        }
        locks.waiting = still_waiting;
        if locks.held.is_empty() && locks.waiting.is_empty() {
            self.chunks.remove(&key);
        }
    }

    /// Whether a piece of an operation other than `op_id` holds or waits for an exclusive
    /// range of `key`.
    pub fn other_writers(&self, key: ChunkKey, op_id: u32) -> bool {
        self.chunks.get(&key).is_some_and(|locks| {
            locks
                .held
                .iter()
                .chain(locks.waiting.iter())
                .any(|r| r.exclusive && r.owner >> 2 != op_id)
        })
    }

    /// Whether any operation holds or waits for a range of a chunk of `file_id`.
    pub fn file_busy(&self, file_id: u64) -> bool {
        self.chunks.keys().any(|k| k.file_id == file_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: ChunkKey = ChunkKey {
        file_id: 1,
        index: 0,
    };

    #[test]
    fn disjoint_and_shared_ranges_do_not_wait() {
        let mut locks = RangeLocks::default();
        assert!(locks.acquire(K, 1, 0, 4096, true));
        assert!(locks.acquire(K, 2, 4096, 8192, true));
        assert!(locks.acquire(K, 3, 8192, 16384, false));
        assert!(locks.acquire(K, 4, 8192, 16384, false));
    }

    #[test]
    fn overlapping_writes_are_granted_in_order() {
        let mut locks = RangeLocks::default();
        let mut granted = Vec::new();
        assert!(locks.acquire(K, 1, 0, 49152, true));
        assert!(!locks.acquire(K, 2, 45056, 94208, true));
        // Disjoint from 1 but overlapping the waiting 2: waits behind it.
        assert!(!locks.acquire(K, 3, 90112, 143360, true));
        // Disjoint from everything: proceeds.
        assert!(locks.acquire(K, 4, 200_000, 204_800, true));
        locks.release(K, 1, &mut granted);
        assert_eq!(granted, vec![2]);
        granted.clear();
        locks.release(K, 2, &mut granted);
        assert_eq!(granted, vec![3]);
        granted.clear();
        locks.release(K, 3, &mut granted);
        locks.release(K, 4, &mut granted);
        assert!(granted.is_empty());
        assert!(locks.chunks.is_empty());
    }

    #[test]
    fn readers_do_not_starve_a_writer() {
        let mut locks = RangeLocks::default();
        let mut granted = Vec::new();
        assert!(locks.acquire(K, 1 << 2, 0, 4096, false));
        assert!(!locks.acquire(K, 2 << 2, 0, 4096, true));
        assert!(!locks.acquire(K, 3 << 2, 0, 4096, false));
        assert!(locks.other_writers(K, 1));
        assert!(
            !locks.other_writers(K, 2),
            "an op's own pieces are not other writers"
        );
        locks.release(K, 1 << 2, &mut granted);
        assert_eq!(granted, vec![2 << 2]);
        granted.clear();
        locks.release(K, 2 << 2, &mut granted);
        assert_eq!(granted, vec![3 << 2]);
    }

    #[test]
    fn releasing_a_waiting_range_unblocks_those_behind_it() {
        let mut locks = RangeLocks::default();
        let mut granted = Vec::new();
        assert!(locks.acquire(K, 1, 0, 8192, true));
        assert!(!locks.acquire(K, 2, 4096, 12288, true));
        // Waits behind 2 only (disjoint from 1).
        assert!(!locks.acquire(K, 3, 8192, 16384, true));
        locks.release(K, 2, &mut granted);
        assert_eq!(granted, vec![3]);
        granted.clear();
        locks.release(K, 1, &mut granted);
        locks.release(K, 3, &mut granted);
        assert!(granted.is_empty());
        assert!(locks.chunks.is_empty());
    }
}
