//! Syncs and truncates.
//!
//! A sync takes the chunks of a file written since their last sync (all of them, or one) out
//! of the dirty set, opens descriptors of its own for them (duplicates of cached ones, so that
//! eviction or removal cannot close a descriptor the kernel is syncing) and fdatasyncs them
//! all at once through the ring; when a chunk was created since its last sync, the directory
//! holding it is fsynced too, so the new name survives a crash. A failed sync puts the chunks
//! back into the dirty set for the next one. A sync covers the writes that completed before it
//! started; it takes no range lock.
//!
//! A truncate holds the whole chunk exclusively and runs `ftruncate` (or unlinks the chunk
//! file for length 0) directly on the poll loop's thread.

use std::fs::File;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types};

use super::layout::ChunkKey;
use super::ops::{user_data, Kind, REQ_SYNC};
use super::{ChunkStore, Outcome};
use crate::error::{Error, Result};

/// The state of a sync op.
#[derive(Debug)]
pub(super) struct SyncState {
    file_id: u64,
    index: Option<u64>,
    /// The dirty chunks taken, each with whether it was created since its last sync.
    targets: Vec<(ChunkKey, bool)>,
    /// The files being synced, each with whether a data-only sync suffices.
    fds: Vec<(File, bool)>,
}

impl SyncState {
    pub fn new(file_id: u64, index: Option<u64>) -> SyncState {
        SyncState {
            file_id,
            index,
            targets: Vec::new(),
            fds: Vec::new(),
        }
    }
}

impl ChunkStore {
    fn sync_state(&mut self, id: u32) -> &mut SyncState {
        match &mut self.op(id).kind {
            Kind::Sync(state) => state,
            _ => unreachable!("not a sync"),
        }
    }

    /// Starts sync `id`: one fsync request per file, all in flight at once.
    pub(super) fn begin_sync(&mut self, id: u32) -> Result<Option<Outcome>> {
        let (file_id, index) = {
            let state = self.sync_state(id);
            (state.file_id, state.index)
        };
        let targets = self.files.take_dirty(file_id, index);
        let created = targets.iter().any(|(_, created)| *created);
        let files = match self.open_sync_files(file_id, &targets, created) {
            Ok(files) => files,
            Err(e) => {
                self.files.restore_dirty(&targets);
                return Err(e);
            }
        };
        let requests: Vec<(i32, bool)> = files.iter().map(|(f, d)| (f.as_raw_fd(), *d)).collect();
        let state = self.sync_state(id);
        state.targets = targets;
        state.fds = files;
        for (fd, data_only) in requests {
            self.push_fsync(id, fd, data_only)?;
        }
        Ok((self.op(id).pending == 0).then_some(Outcome::Synced))
    }

    /// Descriptors of their own for the chunks to sync, and for their directory when a chunk
    /// was created since its last sync. Chunks removed meanwhile need no sync.
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

    fn push_fsync(&mut self, id: u32, fd: i32, data_only: bool) -> Result<()> {
        let flags = if data_only {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        };
        let entry = opcode::Fsync::new(types::Fd(fd))
            .flags(flags)
            .build()
            .user_data(user_data(REQ_SYNC, id));
        // SAFETY: the fd belongs to a File held in the op's state, which is dropped only when the
        // op finishes, after this completion is reaped.
        unsafe { self.push(entry) }?;
        self.op(id).pending += 1;
        Ok(())
    }

    /// One fsync of sync `id` completed.
    pub(super) fn on_sync(&mut self, id: u32, result: i32) -> Result<Option<Outcome>> {
        if result < 0 {
            let targets = std::mem::take(&mut self.sync_state(id).targets);
            self.files.restore_dirty(&targets);
            let key = targets
                .first()
                .map(|(k, _)| *k)
                .unwrap_or(ChunkKey::new(0, 0));
            return Err(self.cqe_error("sync chunk", key, result));
        }
        Ok((self.op(id).pending == 0).then_some(Outcome::Synced))
    }

    /// Sets chunk `key` to `len` bytes now; 0 removes its file.
    pub(super) fn truncate_now(&mut self, key: ChunkKey, len: u64) -> Result<()> {
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
