//! Where chunk files live on disk.
//!
//! A chunk is named by [`ChunkKey`] = (file id, chunk index). Its file is
//!
//! ```text
//! <data dir>/chunks/<fan>/<file id: 16 hex digits>.<chunk index: 16 hex digits>
//! ```
//!
//! where `<fan>` is two hex digits: the top byte of [`mix64`] of the file id. All chunks of one
//! file share a fan-out directory; files spread evenly over the 256 directories, so no
//! directory grows with the number of servers' files times 256. The names depend only on the
//! key and on [`mix64`], which is defined here and never changes, so they are stable across
//! builds, Rust versions and machines.

use std::path::{Path, PathBuf};

/// Number of fan-out directories under `chunks/`.
pub const FAN_OUT: usize = 256;

/// Identity of one chunk: the file it belongs to and its index in that file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkKey {
    /// Cluster-wide unique file id, assigned when the file is created.
    pub file_id: u64,
    /// Chunk index: byte offset in the file divided by the file's chunk size.
    pub index: u64,
}

impl ChunkKey {
    /// A key.
    pub fn new(file_id: u64, index: u64) -> ChunkKey {
        ChunkKey { file_id, index }
    }
}

/// A fixed 64-bit mixing function (the SplitMix64 finaliser): a bijection on `u64` whose output
/// bits each depend on every input bit. Stable forever: on-disk names depend on it.
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The fan-out directory index of a file.
pub fn fan_of(file_id: u64) -> usize {
    (mix64(file_id) >> 56) as usize
}

/// Paths of the chunk tree under one data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `data_dir`.
    pub fn new(data_dir: &Path) -> Layout {
        Layout {
            root: data_dir.join("chunks"),
        }
    }

    /// `<data dir>/chunks`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The fan-out directory with index `fan`.
    pub fn fan_dir(&self, fan: usize) -> PathBuf {
        self.root.join(format!("{fan:02x}"))
    }

    /// The file of `key`.
    pub fn chunk_path(&self, key: ChunkKey) -> PathBuf {
        self.fan_dir(fan_of(key.file_id)).join(file_name(key))
    }
}

/// The file name of `key` inside its fan-out directory.
pub fn file_name(key: ChunkKey) -> String {
    format!("{:016x}.{:016x}", key.file_id, key.index)
}

/// Parses a chunk file name; `None` for anything else (temporary files, strays).
pub fn parse_file_name(name: &str) -> Option<ChunkKey> {
    let (file, index) = name.split_once('.')?;
    if file.len() != 16 || index.len() != 16 {
        return None;
    }
    Some(ChunkKey {
        file_id: u64::from_str_radix(file, 16).ok()?,
        index: u64::from_str_radix(index, 16).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix64_is_pinned() {
        // On-disk names depend on these values; a change here strands existing data.
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
        assert_eq!(fan_of(1), 0x56);
    }

    #[test]
    fn names_round_trip_and_are_stable() {
        let key = ChunkKey::new(0x0123_4567_89ab_cdef, 42);
        assert_eq!(file_name(key), "0123456789abcdef.000000000000002a");
        assert_eq!(parse_file_name(&file_name(key)), Some(key));
        assert_eq!(parse_file_name("0123.tmp"), None);
        assert_eq!(parse_file_name("0123456789abcdef.00000000000000zz"), None);
        let layout = Layout::new(Path::new("/d"));
        let path = layout.chunk_path(key);
        assert!(path.starts_with("/d/chunks"));
        assert_eq!(
            path.file_name().unwrap(),
            "0123456789abcdef.000000000000002a"
        );
    }

    #[test]
    fn fan_out_spreads_sequential_ids() {
        let mut counts = [0u32; FAN_OUT];
        for id in 0..(FAN_OUT as u64 * 64) {
            counts[fan_of(id)] += 1;
        }
        let max = *counts.iter().max().unwrap();
        let min = *counts.iter().min().unwrap();
        assert!(
            min >= 32 && max <= 110,
            "uneven fan-out: min {min} max {max}"
        );
    }
}
