//! Placement: which target holds a file's inode and which holds each of its chunks.
//!
//! A *target* is one shard of one server, numbered `0..targets` in (rank, shard) order. The
//! functions here are pure and stable across builds and platforms, because their results name
//! data on disk and must agree between every client and server of a cluster:
//!
//! - the inode of a file lives at `hash64(normalised path) % targets`;
//! - chunk `i` of the file with id `f` lives at `(mix64(f) + i) % targets`: round robin from a
//!   start derived from the file id, so sequential I/O of one file spreads evenly over all
//!   targets and files start at different targets.
//!
//! `hash64` is 64-bit FNV-1a over the bytes followed by the SplitMix64 finaliser ([`mix64`]),
//! which spreads FNV's weak low bits; both are fixed by their published constants. The
//! standard library's `DefaultHasher` is deliberately not used: its output may change between
//! Rust releases.

pub use crate::storage::chunk::layout::mix64;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The stable 64-bit hash of `bytes` (FNV-1a, then [`mix64`]).
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix64(h)
}

/// The target of the inode of the (normalised) `path` among `targets` targets.
pub fn inode_target(path: &str, targets: usize) -> usize {
    assert!(targets > 0, "a cluster has at least one target");
    (hash64(path.as_bytes()) % targets as u64) as usize
}

/// The target of chunk `index` of file `file_id` among `targets` targets.
pub fn chunk_target(file_id: u64, index: u64, targets: usize) -> usize {
    assert!(targets > 0, "a cluster has at least one target");
    let n = targets as u64;
    ((mix64(file_id) % n + index % n) % n) as usize
}

/// The targets that may hold chunks of a file of `size_bytes` with `chunk_size_bytes` chunks,
/// each once: the first `min(chunks, targets)` targets of its round robin.
pub fn chunk_targets(
    file_id: u64,
    size_bytes: u64,
    chunk_size_bytes: u64,
    targets: usize,
) -> Vec<usize> {
    let chunks = size_bytes.div_ceil(chunk_size_bytes.max(1));
    let count = chunks.min(targets as u64);
    (0..count)
        .map(|i| chunk_target(file_id, i, targets))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_pinned() {
        // These values place data: a change here is a format change. They were computed
        // independently from the published FNV-1a and SplitMix64 constants.
        assert_eq!(hash64(b""), mix64(FNV_OFFSET));
        assert_eq!(hash64(b"/a"), hash64(b"/a"));
        assert_ne!(hash64(b"/file.1"), hash64(b"/file.2"));
        let pinned = [hash64(b"/"), hash64(b"/ior/testfile")];
        assert_eq!(
            pinned,
            [9_199_978_375_115_263_101, 7_516_667_322_762_240_042]
        );
    }

    #[test]
    fn similar_names_spread_over_targets() {
        let mut counts = [0usize; 8];
        for i in 0..8000 {
            counts[inode_target(&format!("/mdtest/dir.0/file.mdtest.{i}.0"), 8)] += 1;
        }
        for c in counts {
            assert!(
                (800..1200).contains(&c),
                "uneven inode placement: {counts:?}"
            );
        }
    }

    #[test]
    fn chunks_go_round_robin() {
        let first = chunk_target(42, 0, 5);
        for i in 0..20u64 {
            assert_eq!(chunk_target(42, i, 5), (first + i as usize) % 5);
        }
        assert_eq!(chunk_targets(42, 0, 4096, 5), Vec::<usize>::new());
        assert_eq!(chunk_targets(42, 1, 4096, 5).len(), 1);
        let all = chunk_targets(42, 100 * 4096, 4096, 5);
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
    }
}
