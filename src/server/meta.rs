//! The metadata of one shard: the inodes placed on it, kept in its [`MetaLog`].
//!
//! Keys of the log:
//!
//! - `i` + normalised path: the file's or directory's [`WireInode`] (56 bytes, little-endian);
//! - `e` + directory path + NUL + name: an entry of a directory placed on this shard (see
//!   [`super::dirs`]);
//! - `n`: the next file-id sequence number of this shard (8 bytes).
//!
//! A file id is `rank << 48 | shard << 40 | sequence`: unique cluster-wide without any
//! coordination, and never reused, because the sequence is stored in the same batch as the
//! inode that takes it. Every mutation is written to the log before it is answered, so a
//! killed server loses nothing it acknowledged; [`MetaService::sync`] makes it durable
//! against power loss too (fsync of a file, or close after it, asks for it).
//!
//! Semantics: create of an existing path returns the existing inode untouched (IOR creates a
//! shared file from every rank at once: none may fail and none may truncate), unless the
//! request is exclusive. The size only grows here (writers report the end of what they wrote
//! at close or fsync); truncation comes with the namespace operations.

use std::path::Path;

use crate::proto::WireInode;
use crate::storage::metalog::Batch;
use crate::storage::MetaLog;

use super::Failure;

const KEY_NEXT_ID: &[u8] = b"n";
const SEQUENCE_BITS: u32 = 40;

/// The inode store of one shard.
#[derive(Debug)]
pub struct MetaService {
    pub(super) log: MetaLog,
    id_prefix: u64,
    next_sequence: u64,
}

pub(super) fn inode_key(path: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + path.len());
    key.push(b'i');
    key.extend_from_slice(path.as_bytes());
    key
}

pub(super) fn decode_inode(bytes: &[u8]) -> Result<WireInode, Failure> {
    if bytes.len() != std::mem::size_of::<WireInode>() {
        return Err(Failure::new(libc::EIO, "damaged inode record"));
    }
    Ok(bytemuck::pod_read_unaligned(bytes))
}

/// Wall-clock time in ns since the epoch.
pub fn now_ns() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl MetaService {
    /// Opens (replaying) the log in `dir` for shard `shard` of server `rank`.
    pub fn open(dir: &Path, rank: u32, shard: u32) -> crate::storage::Result<MetaService> {
        assert!(
            rank < (1 << 16) && shard < (1 << 8),
            "rank or shard out of range"
        );
        let log = MetaLog::open(dir)?;
        let next_sequence = log
            .get(KEY_NEXT_ID)
            .and_then(|v| v.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(1);
        Ok(MetaService {
            log,
            id_prefix: (u64::from(rank) << 48) | (u64::from(shard) << SEQUENCE_BITS),
            next_sequence,
        })
    }

    /// Inodes stored.
    pub fn inode_count(&self) -> u64 {
        self.log.scan_prefix(b"i").count() as u64
    }

    /// The inode of `path` (the root directory exists from the start).
    pub fn lookup(&self, path: &str) -> Result<WireInode, Failure> {
        match self.log.get(&inode_key(path)) {
            Some(bytes) => decode_inode(bytes),
            None if path == "/" => Ok(super::dirs::root_inode()),
            None => Err(Failure::new(libc::ENOENT, "no such file")),
        }
    }

    /// Creates `path` (or returns its existing inode, with `true`, unless `exclusive`).
    pub fn create(
        &mut self,
        path: &str,
        mode: u32,
        chunk_size: u64,
        exclusive: bool,
    ) -> Result<(WireInode, bool), Failure> {
        if let Some(bytes) = self.log.get(&inode_key(path)) {
            let existing = decode_inode(bytes)?;
            if existing.mode & libc::S_IFMT == libc::S_IFDIR {
                return Err(Failure::new(libc::EISDIR, "a directory has that name"));
            }
            if exclusive {
                return Err(Failure::new(libc::EEXIST, "file exists"));
            }
            return Ok((existing, true));
        }
        if self.next_sequence >= 1 << SEQUENCE_BITS {
            return Err(Failure::new(
                libc::ENOSPC,
                "file ids of this shard exhausted",
            ));
        }
        let now = now_ns();
        let inode = WireInode {
            file_id: self.id_prefix | self.next_sequence,
            size: 0,
            chunk_size,
            mode: (mode & 0o7777) | libc::S_IFREG,
            nlink: 1,
            atime_ns: now,
            mtime_ns: now,
            ctime_ns: now,
        };
        let next = self.next_sequence + 1;
        let mut batch = Batch::new();
        batch
            .put(&inode_key(path), bytemuck::bytes_of(&inode))
            .put(KEY_NEXT_ID, &next.to_le_bytes());
        self.log.apply(batch).map_err(Failure::storage)?;
        self.next_sequence = next;
        Ok((inode, false))
    }

    /// Takes the next file id and the batch update that records it.
    pub(super) fn take_id(&mut self, batch: &mut Batch) -> Result<u64, Failure> {
        if self.next_sequence >= 1 << SEQUENCE_BITS {
            return Err(Failure::new(
                libc::ENOSPC,
                "file ids of this shard exhausted",
            ));
        }
        let id = self.id_prefix | self.next_sequence;
        self.next_sequence += 1;
        batch.put(KEY_NEXT_ID, &self.next_sequence.to_le_bytes());
        Ok(id)
    }

    /// Removes the inode of the file `path` and returns it.
    pub fn unlink(&mut self, path: &str) -> Result<WireInode, Failure> {
        let inode = self.lookup(path)?;
        if inode.mode & libc::S_IFMT == libc::S_IFDIR {
            return Err(Failure::new(libc::EISDIR, "unlink of a directory"));
        }
        self.log
            .delete(&inode_key(path))
            .map_err(Failure::storage)?;
        Ok(inode)
    }

    /// Raises the size of `path` (which must still be file `file_id`) to at least `size` and
    /// moves its mtime and ctime forward to `mtime_ns`.
    pub fn set_size(
        &mut self,
        path: &str,
        file_id: u64,
        size: u64,
        mtime_ns: i64,
    ) -> Result<WireInode, Failure> {
        let mut inode = self.lookup(path)?;
        if inode.file_id != file_id {
            return Err(Failure::new(
                libc::ESTALE,
                "the path names another file now",
            ));
        }
        if size <= inode.size && mtime_ns <= inode.mtime_ns {
            return Ok(inode);
        }
        inode.size = inode.size.max(size);
        inode.mtime_ns = inode.mtime_ns.max(mtime_ns);
        inode.ctime_ns = inode.ctime_ns.max(mtime_ns);
        self.log
            .put(&inode_key(path), bytemuck::bytes_of(&inode))
            .map_err(Failure::storage)?;
        Ok(inode)
    }

    /// Sets the permission bits (`mode & 0o7777`), atime and mtime of `path` where given; the
    /// ctime becomes now. The root directory has no stored inode and refuses (`EPERM`).
    pub fn set_attr(
        &mut self,
        path: &str,
        mode: Option<u32>,
        atime_ns: Option<i64>,
        mtime_ns: Option<i64>,
    ) -> Result<WireInode, Failure> {
        if path == "/" {
            return Err(Failure::new(
                libc::EPERM,
                "the root directory's attributes are fixed",
            ));
        }
        let mut inode = self.lookup(path)?;
        if let Some(mode) = mode {
            inode.mode = (inode.mode & libc::S_IFMT) | (mode & 0o7777);
        }
        inode.atime_ns = atime_ns.unwrap_or(inode.atime_ns);
        inode.mtime_ns = mtime_ns.unwrap_or(inode.mtime_ns);
        inode.ctime_ns = now_ns();
        self.log
            .put(&inode_key(path), bytemuck::bytes_of(&inode))
            .map_err(Failure::storage)?;
        Ok(inode)
    }

    /// Makes every mutation so far durable (fdatasync of the log).
    pub fn sync(&mut self) -> Result<(), Failure> {
        self.log.sync().map_err(Failure::storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_idempotent_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = MetaService::open(dir.path(), 3, 1).unwrap();
        let (a, existed) = meta.create("/f", 0o644, 4096, false).unwrap();
        assert!(!existed);
        assert_eq!(a.file_id >> 48, 3);
        assert_eq!((a.file_id >> 40) & 0xff, 1);
        assert_eq!(a.mode, libc::S_IFREG | 0o644);
        meta.set_size("/f", a.file_id, 100, a.mtime_ns + 1).unwrap();
        let (again, existed) = meta.create("/f", 0o600, 8192, false).unwrap();
        assert!(existed);
        assert_eq!(
            (again.file_id, again.size, again.chunk_size),
            (a.file_id, 100, 4096)
        );
        assert_eq!(
            meta.create("/f", 0o644, 4096, true).unwrap_err().errno,
            libc::EEXIST
        );
        let (b, _) = meta.create("/g", 0o644, 4096, false).unwrap();
        drop(meta);
        let mut meta = MetaService::open(dir.path(), 3, 1).unwrap();
        assert_eq!(meta.lookup("/f").unwrap().size, 100);
        let (c, _) = meta.create("/h", 0o644, 4096, false).unwrap();
        assert!(
            c.file_id > b.file_id,
            "file ids are never reused after a restart"
        );
        assert_eq!(meta.inode_count(), 3);
    }

    #[test]
    fn size_only_grows_and_unlink_removes() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = MetaService::open(dir.path(), 0, 0).unwrap();
        let (f, _) = meta.create("/f", 0o644, 4096, false).unwrap();
        meta.set_size("/f", f.file_id, 500, 0).unwrap();
        assert_eq!(meta.set_size("/f", f.file_id, 100, 0).unwrap().size, 500);
        let err = meta.set_size("/f", f.file_id + 1, 1, 0).unwrap_err();
        assert_eq!(err.errno, libc::ESTALE);
        assert_eq!(meta.unlink("/f").unwrap().file_id, f.file_id);
        assert_eq!(meta.lookup("/f").unwrap_err().errno, libc::ENOENT);
        assert_eq!(meta.unlink("/f").unwrap_err().errno, libc::ENOENT);
    }

    #[test]
    fn set_attr_changes_only_what_is_given_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = MetaService::open(dir.path(), 0, 0).unwrap();
        let (f, _) = meta.create("/f", 0o644, 4096, false).unwrap();
        let after = meta.set_attr("/f", Some(0o100_600), None, Some(7)).unwrap();
        assert_eq!(after.mode, libc::S_IFREG | 0o600, "the file type stays");
        assert_eq!((after.atime_ns, after.mtime_ns), (f.atime_ns, 7));
        assert!(after.ctime_ns >= f.ctime_ns);
        let after = meta.set_attr("/f", None, Some(5), None).unwrap();
        assert_eq!(
            (after.mode & 0o7777, after.atime_ns, after.mtime_ns),
            (0o600, 5, 7)
        );
        assert_eq!(
            meta.set_attr("/g", Some(0o600), None, None)
                .unwrap_err()
                .errno,
            libc::ENOENT
        );
        assert_eq!(
            meta.set_attr("/", Some(0o700), None, None)
                .unwrap_err()
                .errno,
            libc::EPERM
        );
        drop(meta);
        let meta = MetaService::open(dir.path(), 0, 0).unwrap();
        let again = meta.lookup("/f").unwrap();
        assert_eq!(
            (again.mode, again.atime_ns, again.mtime_ns),
            (libc::S_IFREG | 0o600, 5, 7)
        );
    }
}
