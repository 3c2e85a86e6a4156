//! The chunk files of one store: which exist, which are open, which are dirty.
//!
//! - The *index* lists every chunk file on disk. It is built by one scan of the fan-out
//!   directories at open (names only, no stat) and kept current by the store, so removing a
//!   file's chunks or counting them never lists a directory.
//! - The *open-file cache* keeps up to `capacity` chunk files open (O_DIRECT), so requests do
//!   not pay an open and close each. An open file in use by an operation in flight is *pinned*
//!   and never closed under it; when the cache is over capacity the least recently used unpinned
//!   files are closed, an eighth of the capacity at a time to amortise the scan.
//! - The *dirty set* lists chunks written since their last sync, and whether each was created
//!   since then (its directory entry then needs a sync too). It survives eviction of the file.
//!
//! Each open file also tracks two sizes: `len`, the chunk's logical length (the end of the
//! furthest write or the truncated length), and `disk_len`, the file's size on disk, which can
//! exceed `len` by the padding of an unaligned write's last block until the store trims it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::layout::{parse_file_name, ChunkKey, Layout, FAN_OUT};
use crate::error::{Error, Result};

/// One open chunk file.
#[derive(Debug)]
pub(crate) struct OpenChunk {
    file: File,
    /// Logical length of the chunk in bytes.
    pub len: u64,
    /// Size of the file on disk in bytes.
    pub disk_len: u64,
    pins: u32,
    last_use: u64,
    /// The chunk was removed while pinned: close it when the last pin goes.
    doomed: bool,
}

impl OpenChunk {
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Sets the file's size on disk (ftruncate) and both tracked lengths.
    pub fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        self.disk_len = len;
        Ok(())
    }
}

/// Index, open-file cache and dirty set of one chunk store.
#[derive(Debug)]
pub(crate) struct ChunkFiles {
    layout: Layout,
    index: BTreeSet<ChunkKey>,
    open: HashMap<ChunkKey, OpenChunk>,
    capacity: usize,
    clock: u64,
    dirty: BTreeMap<ChunkKey, bool>,
}

impl ChunkFiles {
    /// Creates the fan-out directories if needed and indexes the chunk files present.
    pub fn open(layout: Layout, capacity: usize) -> Result<ChunkFiles> {
        let mut index = BTreeSet::new();
        for fan in 0..FAN_OUT {
            let dir = layout.fan_dir(fan);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io("create chunk dir", dir.clone(), e))?;
            let entries =
                std::fs::read_dir(&dir).map_err(|e| Error::io("list chunk dir", dir.clone(), e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("list chunk dir", dir.clone(), e))?;
                if let Some(key) = entry.file_name().to_str().and_then(parse_file_name) {
                    index.insert(key);
                }
            }
        }
        Ok(ChunkFiles {
            layout,
            index,
            open: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
            dirty: BTreeMap::new(),
        })
    }

    /// Number of chunk files on disk.
    pub fn chunk_count(&self) -> u64 {
        self.index.len() as u64
    }

    /// Whether the chunk file of `key` exists.
    pub fn exists(&self, key: ChunkKey) -> bool {
        self.index.contains(&key)
    }

    /// Opens (or finds open) the file of `key` and pins it. With `create` a missing file is
    /// created; without, a missing file yields `Ok(false)` and nothing is pinned.
    pub fn pin(&mut self, key: ChunkKey, create: bool) -> Result<bool> {
        self.clock += 1;
        if let Some(open) = self.open.get_mut(&key) {
            if open.doomed {
                // Only reachable if a chunk were removed under an operation that holds it; the
                // store's range locks prevent that. Refuse rather than use the unlinked file.
                return Err(Error::io(
                    "open chunk file",
                    self.layout.chunk_path(key),
                    std::io::Error::from_raw_os_error(libc::EBUSY),
                ));
            }
            open.pins += 1;
            open.last_use = self.clock;
            return Ok(true);
        }
        let existed = self.index.contains(&key);
        if !existed && !create {
            return Ok(false);
        }
        let path = self.layout.chunk_path(key);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .mode(0o600)
            .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
            .open(&path);
        let file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => {
                self.index.remove(&key);
                return Ok(false);
            }
            Err(e) => return Err(Error::io("open chunk file", path, e)),
        };
        let disk_len = file
            .metadata()
            .map_err(|e| Error::io("stat chunk file", path.clone(), e))?
            .len();
        if !existed {
            self.index.insert(key);
            self.dirty.insert(key, true);
        }
        self.evict_if_full();
        self.open.insert(
            key,
            OpenChunk {
                file,
                len: disk_len,
                disk_len,
                pins: 1,
                last_use: self.clock,
                doomed: false,
            },
        );
        Ok(true)
    }

    /// The open, pinned file of `key`.
    pub fn get(&mut self, key: ChunkKey) -> &mut OpenChunk {
        self.open.get_mut(&key).expect("chunk file is pinned")
    }

    /// Drops one pin of `key`; a doomed file is closed with its last pin.
    pub fn unpin(&mut self, key: ChunkKey) {
        let open = self
            .open
            .get_mut(&key)
            .expect("unpin of a chunk that is not open");
        debug_assert!(open.pins > 0);
        open.pins -= 1;
        if open.pins == 0 && open.doomed {
            self.open.remove(&key);
        }
    }

    fn evict_if_full(&mut self) {
        if self.open.len() < self.capacity {
            return;
        }
        let mut idle: Vec<(u64, ChunkKey)> = self
            .open
            .iter()
            .filter(|(_, o)| o.pins == 0)
            .map(|(k, o)| (o.last_use, *k))
            .collect();
        let batch = (self.capacity / 8).max(1).min(idle.len());
        if batch == 0 {
            return; // everything is pinned: run over capacity until pins drop
        }
        idle.select_nth_unstable(batch - 1);
        for (_, key) in &idle[..batch] {
            self.open.remove(key);
        }
    }

    /// Records that `key` was written.
    pub fn mark_dirty(&mut self, key: ChunkKey) {
        self.dirty.entry(key).or_insert(false);
    }

    /// The ids of files with dirty chunks, each once, in ascending order.
    pub fn dirty_files(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.dirty.keys().map(|k| k.file_id).collect();
        ids.dedup();
        ids
    }

    /// Removes and returns the dirty chunks of `file_id` (all of them, or only chunk `index`),
    /// each with whether it was created since its last sync.
    pub fn take_dirty(&mut self, file_id: u64, index: Option<u64>) -> Vec<(ChunkKey, bool)> {
        let range = match index {
            Some(i) => ChunkKey::new(file_id, i)..=ChunkKey::new(file_id, i),
            None => ChunkKey::new(file_id, 0)..=ChunkKey::new(file_id, u64::MAX),
        };
        let keys: Vec<(ChunkKey, bool)> = self.dirty.range(range).map(|(k, c)| (*k, *c)).collect();
        for (key, _) in &keys {
            self.dirty.remove(key);
        }
        keys
    }

    /// Puts back dirty entries whose sync failed, so a later sync tries again.
    pub fn restore_dirty(&mut self, keys: &[(ChunkKey, bool)]) {
        for (key, created) in keys {
            let entry = self.dirty.entry(*key).or_insert(false);
            *entry |= *created;
        }
    }

    /// Unlinks the file of `key` and forgets it; returns whether it existed.
    pub fn remove(&mut self, key: ChunkKey) -> Result<bool> {
        if !self.index.remove(&key) {
            return Ok(false);
        }
        self.dirty.remove(&key);
        if let Some(open) = self.open.get_mut(&key) {
            if open.pins == 0 {
                self.open.remove(&key);
            } else {
                open.doomed = true;
            }
        }
        let path = self.layout.chunk_path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove chunk file", path, e)),
        }
    }

    /// The chunk keys of `file_id` that exist on disk.
    pub fn chunks_of(&self, file_id: u64) -> Vec<ChunkKey> {
        self.index
            .range(ChunkKey::new(file_id, 0)..=ChunkKey::new(file_id, u64::MAX))
            .copied()
            .collect()
    }

    /// A descriptor of `key`'s file for a sync, owned by the caller: a duplicate of the cached
    /// one, or a fresh open. `None` when the chunk no longer exists.
    pub fn open_for_sync(&self, key: ChunkKey) -> Result<Option<File>> {
        let path = self.layout.chunk_path(key);
        if let Some(open) = self.open.get(&key) {
            return open
                .file
                .try_clone()
                .map(Some)
                .map_err(|e| Error::io("duplicate chunk file descriptor", path, e));
        }
        match File::open(&path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open chunk file for sync", path, e)),
        }
    }

    /// Opens the fan-out directory of `file_id`, to sync the names created in it.
    pub fn open_fan_dir(&self, file_id: u64) -> Result<File> {
        let dir = self.layout.fan_dir(super::layout::fan_of(file_id));
        File::open(&dir).map_err(|e| Error::io("open chunk dir for sync", dir, e))
    }

    /// The path of `key`'s file, for error messages.
    pub fn path(&self, key: ChunkKey) -> std::path::PathBuf {
        self.layout.chunk_path(key)
    }

    /// Number of files open.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The data directory's root of chunk files.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }
}
