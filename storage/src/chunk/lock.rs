//! Byte-range locks per chunk, for serialising overlapping operations inside one shard.
//!
//! Every read holds its aligned window shared and every write or truncate holds its aligned
//! window exclusively, from before its first I/O until its completion. Two writes whose aligned
//! windows share a block therefore never run their read-modify-write at the same time, which is
//! what keeps interleaved unaligned records (IOR hard) intact.
//!
//! Fairness: requests are granted in arrival order among those that conflict; a request waits
//! if it conflicts with a held range or with an earlier waiting request, so a stream of readers
//! cannot starve a writer and overlapping writes apply in the order they were submitted.
//! Non-overlapping requests never wait for each other.

use std::collections::{HashMap, VecDeque};

use super::layout::ChunkKey;

/// A byte range `[start, end)` of a chunk held or wanted by operation `op`.
#[derive(Debug, Clone, Copy)]
struct Range {
    op: u32,
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
    /// Asks for `[start, end)` of `key` on behalf of `op`. Returns `true` when granted at once;
    /// otherwise the request waits and [`RangeLocks::release`] reports it when granted.
    pub fn acquire(
        &mut self,
        key: ChunkKey,
        op: u32,
        start: u64,
        end: u64,
        exclusive: bool,
    ) -> bool {
        debug_assert!(start < end, "empty lock range");
        let want = Range {
            op,
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

    /// Releases the range held by `op` on `key` and appends to `granted` every waiting
    /// operation that now holds its range.
    pub fn release(&mut self, key: ChunkKey, op: u32, granted: &mut Vec<u32>) {
        let Some(locks) = self.chunks.get_mut(&key) else {
            debug_assert!(false, "release of a chunk with no locks");
            return;
        };
        let before = locks.held.len();
        locks.held.retain(|h| h.op != op);
        debug_assert_eq!(locks.held.len() + 1, before, "op {op} held no range");
        let mut still_waiting = VecDeque::with_capacity(locks.waiting.len());
        while let Some(w) = locks.waiting.pop_front() {
            let blocked = locks.held.iter().any(|h| h.conflicts(&w))
                || still_waiting.iter().any(|e: &Range| e.conflicts(&w));
            if blocked {
                still_waiting.push_back(w);
            } else {
                locks.held.push(w);
                granted.push(w.op);
            }
        }
        locks.waiting = still_waiting;
        if locks.held.is_empty() && locks.waiting.is_empty() {
            self.chunks.remove(&key);
        }
    }

    /// Whether an operation other than `op` holds or waits for an exclusive range of `key`.
    pub fn other_writers(&self, key: ChunkKey, op: u32) -> bool {
        self.chunks.get(&key).is_some_and(|locks| {
            locks
                .held
                .iter()
                .chain(locks.waiting.iter())
                .any(|r| r.exclusive && r.op != op)
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
        assert!(locks.acquire(K, 1, 0, 4096, false));
        assert!(!locks.acquire(K, 2, 0, 4096, true));
        assert!(!locks.acquire(K, 3, 0, 4096, false));
        assert!(locks.other_writers(K, 1));
        locks.release(K, 1, &mut granted);
        assert_eq!(granted, vec![2]);
        granted.clear();
        locks.release(K, 2, &mut granted);
        assert_eq!(granted, vec![3]);
    }
}
