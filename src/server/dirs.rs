//! Directories and the namespace operations of a shard's metadata.
//!
//! A directory `D` has its inode at the target of `D` (like a file) and the index of its
//! entries on the same target, under the keys `e` + `D` + NUL + name (the value: one byte of
//! type, [`DT_DIR`] or [`DT_REG`]). One target therefore answers a whole readdir (paginated by
//! name) and checks "exists, is a directory, is empty" atomically, since the shard's thread
//! serialises its requests. Creating or removing a name touches two targets, each once: the
//! entry at the parent's target, the inode at the name's target; clients do the entry first
//! when adding (so a missing parent fails before anything is made) and last when removing.
//!
//! The root directory exists from the start; its inode is stored the first time it changes.
//! A directory's `nlink` is 2 plus its subdirectories; its mtime and ctime move when entries
//! are added or removed.

use crate::proto::WireInode;
use crate::storage::metalog::Batch;

use super::meta::{decode_inode, inode_key, now_ns, MetaService};
use super::Failure;

/// Entry type of a directory (as `d_type`).
pub const DT_DIR: u8 = 4;
/// Entry type of a regular file (as `d_type`).
pub const DT_REG: u8 = 8;

/// The inode of the root before anything changed it.
pub fn root_inode() -> WireInode {
    WireInode {
        file_id: 0,
        size: 0,
        chunk_size: 0,
        mode: libc::S_IFDIR | 0o755,
        nlink: 2,
        ..WireInode::default()
    }
}

/// `(parent, name)` of a normalised path other than the root.
pub fn split(path: &str) -> Result<(&str, &str), Failure> {
    match path.rfind('/') {
        Some(_) if path == "/" => Err(Failure::new(libc::EBUSY, "the root has no parent")),
        Some(0) => Ok(("/", &path[1..])),
        Some(i) => Ok((&path[..i], &path[i + 1..])),
        None => Err(Failure::new(libc::EINVAL, "path is not absolute")),
    }
}

fn entry_prefix(dir: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + dir.len());
    key.push(b'e');
    key.extend_from_slice(dir.as_bytes());
    key.push(0);
    key
}

fn entry_key(dir: &str, name: &str) -> Vec<u8> {
    let mut key = entry_prefix(dir);
    key.extend_from_slice(name.as_bytes());
    key
}

fn is_dir(inode: &WireInode) -> bool {
    inode.mode & libc::S_IFMT == libc::S_IFDIR
}

/// One name of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// [`DT_DIR`] or [`DT_REG`].
    pub kind: u8,
    /// The name.
    pub name: String,
}

impl MetaService {
    /// The directory inode of `dir`, or `ENOENT`/`ENOTDIR`.
    fn directory(&self, dir: &str) -> Result<WireInode, Failure> {
        let inode = self.lookup(dir)?;
        if !is_dir(&inode) {
            return Err(Failure::new(libc::ENOTDIR, "not a directory"));
        }
        Ok(inode)
    }

    /// Adds the entry of `path` (kind [`DT_DIR`] or [`DT_REG`]) to its parent, which lives on
    /// this shard. Returns the kind of an entry already there, and then changes nothing. A
    /// directory gains a link per subdirectory.
    pub fn add_entry(&mut self, path: &str, kind: u8) -> Result<Option<u8>, Failure> {
        let (dir, name) = split(path)?;
        let mut parent = self.directory(dir)?;
        let key = entry_key(dir, name);
        if let Some(existing) = self.log.get(&key).map(|v| v.first().copied().unwrap_or(0)) {
            return Ok(Some(existing));
        }
        let now = now_ns();
        parent.mtime_ns = now;
        parent.ctime_ns = now;
        if kind == DT_DIR {
            parent.nlink += 1;
        }
        let mut batch = Batch::new();
        batch
            .put(&key, &[kind])
            .put(&inode_key(dir), bytemuck::bytes_of(&parent));
        self.log.apply(batch).map_err(Failure::storage)?;
        Ok(None)
    }

    /// Removes the entry of `path` from its parent (on this shard) if it is of kind `only`
    /// (any kind for 0); returns its kind.
    pub fn remove_entry(&mut self, path: &str, only: u8) -> Result<u8, Failure> {
        let (dir, name) = split(path)?;
        let mut parent = self.directory(dir)?;
        let key = entry_key(dir, name);
        let kind = self.log.get(&key).map(|v| v.first().copied().unwrap_or(0));
        let Some(kind) = kind.filter(|&k| only == 0 || k == only) else {
            return Err(Failure::new(libc::ENOENT, "no such entry"));
        };
        let now = now_ns();
        parent.mtime_ns = now;
        parent.ctime_ns = now;
        if kind == DT_DIR {
            parent.nlink = parent.nlink.saturating_sub(1).max(2);
        }
        let mut batch = Batch::new();
        batch
            .delete(&key)
            .put(&inode_key(dir), bytemuck::bytes_of(&parent));
        self.log.apply(batch).map_err(Failure::storage)?;
        Ok(kind)
    }

    /// Creates the inode of directory `path` (its entry is added at the parent separately).
    pub fn mkdir(&mut self, path: &str, mode: u32) -> Result<WireInode, Failure> {
        if path == "/" || self.log.get(&inode_key(path)).is_some() {
            return Err(Failure::new(libc::EEXIST, "exists"));
        }
        let now = now_ns();
        let mut batch = Batch::new();
        let inode = WireInode {
            file_id: self.take_id(&mut batch)?,
            size: 0,
            chunk_size: 0,
            mode: (mode & 0o7777) | libc::S_IFDIR,
            nlink: 2,
            atime_ns: now,
            mtime_ns: now,
            ctime_ns: now,
        };
        batch.put(&inode_key(path), bytemuck::bytes_of(&inode));
        self.log.apply(batch).map_err(Failure::storage)?;
        Ok(inode)
    }

    /// Whether directory `dir` has entries.
    pub fn has_entries(&self, dir: &str) -> bool {
        self.log.scan_prefix(&entry_prefix(dir)).next().is_some()
    }

    /// Removes the inode of the empty directory `path`.
    pub fn rmdir(&mut self, path: &str) -> Result<WireInode, Failure> {
        if path == "/" {
            return Err(Failure::new(libc::EBUSY, "the root cannot be removed"));
        }
        let inode = self.directory(path)?;
        if self.has_entries(path) {
            return Err(Failure::new(libc::ENOTEMPTY, "directory not empty"));
        }
        self.log
            .delete(&inode_key(path))
            .map_err(Failure::storage)?;
        Ok(inode)
    }

    /// Entries of `dir` after the name `after` (all from the start when empty), in name
    /// order, up to about `max_bytes` of names; and whether more follow.
    pub fn readdir(
        &self,
        dir: &str,
        after: &str,
        max_bytes: usize,
    ) -> Result<(Vec<Entry>, bool), Failure> {
        self.directory(dir)?;
        let prefix = entry_prefix(dir);
        let start = entry_key(dir, after);
        let mut out = Vec::new();
        let mut bytes = 0;
        let range = (
            std::ops::Bound::Excluded(&start[..]),
            std::ops::Bound::Unbounded,
        );
        let entries = self
            .log
            .range::<(std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>)>(range);
        for (key, value) in entries {
            if !key.starts_with(&prefix) {
                break;
            }
            let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            if bytes + name.len() + 3 > max_bytes && !out.is_empty() {
                return Ok((out, true));
            }
            bytes += name.len() + 3;
            out.push(Entry {
                kind: value.first().copied().unwrap_or(0),
                name,
            });
        }
        Ok((out, false))
    }

    /// Stores `inode` at `path`, replacing what is there (for rename); returns the replaced
    /// inode. A directory replaces only an empty directory, a file only a file.
    pub fn put_inode(
        &mut self,
        path: &str,
        inode: &WireInode,
    ) -> Result<Option<WireInode>, Failure> {
        let old = match self.log.get(&inode_key(path)) {
            Some(bytes) => Some(decode_inode(bytes)?),
            None => None,
        };
        if let Some(old) = &old {
            match (is_dir(old), is_dir(inode)) {
                (true, false) => return Err(Failure::new(libc::EISDIR, "target is a directory")),
                (false, true) => {
                    return Err(Failure::new(libc::ENOTDIR, "target is not a directory"))
                }
                (true, true) if old.file_id != inode.file_id && self.has_entries(path) => {
                    return Err(Failure::new(libc::ENOTEMPTY, "target directory not empty"))
                }
                _ => {}
            }
        }
        let mut moved = *inode;
        moved.ctime_ns = now_ns();
        self.log
            .put(&inode_key(path), bytemuck::bytes_of(&moved))
            .map_err(Failure::storage)?;
        Ok(old.filter(|o| o.file_id != inode.file_id))
    }

    /// Removes the inode at `path` if it is still `file_id` (for rename).
    pub fn delete_inode(&mut self, path: &str, file_id: u64) -> Result<(), Failure> {
        let inode = self.lookup(path)?;
        if inode.file_id != file_id {
            return Err(Failure::new(
                libc::ESTALE,
                "the path names another file now",
            ));
        }
        self.log
            .delete(&inode_key(path))
            .map_err(Failure::storage)?;
        Ok(())
    }

    /// Sets the size of file `path` to exactly `size`; returns the inode before.
    pub fn truncate(&mut self, path: &str, size: u64) -> Result<WireInode, Failure> {
        let before = self.lookup(path)?;
        if is_dir(&before) {
            return Err(Failure::new(libc::EISDIR, "truncate of a directory"));
        }
        let mut inode = before;
        let now = now_ns();
        inode.size = size;
        inode.mtime_ns = now;
        inode.ctime_ns = now;
        self.log
            .put(&inode_key(path), bytemuck::bytes_of(&inode))
            .map_err(Failure::storage)?;
        Ok(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_indexed_at_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = MetaService::open(dir.path(), 0, 0).unwrap();
        assert_eq!(meta.add_entry("/d", DT_DIR).unwrap(), None);
        assert_eq!(meta.add_entry("/d", DT_DIR).unwrap(), Some(DT_DIR));
        meta.mkdir("/d", 0o755).unwrap();
        assert_eq!(meta.lookup("/").unwrap().nlink, 3);
        for name in ["b", "a", "c"] {
            assert_eq!(meta.add_entry(&format!("/d/{name}"), DT_REG).unwrap(), None);
        }
        let (all, more) = meta.readdir("/d", "", 1 << 16).unwrap();
        let names: Vec<_> = all.iter().map(|e| e.name.as_str()).collect();
        assert_eq!((names, more), (vec!["a", "b", "c"], false));
        let (page, more) = meta.readdir("/d", "a", 4).unwrap();
        assert_eq!((page.len(), more), (1, true));
        assert_eq!(page[0].name, "b");
        assert_eq!(meta.rmdir("/d").unwrap_err().errno, libc::ENOTEMPTY);
        for name in ["a", "b", "c"] {
            assert_eq!(meta.remove_entry(&format!("/d/{name}"), 0).unwrap(), DT_REG);
        }
        meta.rmdir("/d").unwrap();
        assert_eq!(
            meta.remove_entry("/d", DT_REG).unwrap_err().errno,
            libc::ENOENT
        );
        meta.remove_entry("/d", DT_DIR).unwrap();
        assert_eq!(meta.lookup("/").unwrap().nlink, 2);
        assert_eq!(meta.readdir("/d", "", 100).unwrap_err().errno, libc::ENOENT);
        let (f, _) = meta.create("/f", 0o644, 4096, false).unwrap();
        assert_eq!(
            meta.readdir("/f", "", 100).unwrap_err().errno,
            libc::ENOTDIR
        );
        assert_eq!(
            meta.add_entry("/f/x", DT_REG).unwrap_err().errno,
            libc::ENOTDIR
        );
        assert_eq!(meta.truncate("/f", 10).unwrap().size, 0);
        assert_eq!(meta.lookup("/f").unwrap().size, 10);
        let moved = meta.put_inode("/g", &meta.lookup("/f").unwrap()).unwrap();
        assert_eq!(moved, None);
        meta.delete_inode("/f", f.file_id).unwrap();
        assert_eq!(meta.lookup("/g").unwrap().file_id, f.file_id);
    }
}
