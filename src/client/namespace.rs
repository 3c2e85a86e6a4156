//! Directories, rename, truncate and access: the namespace operations of the client.
//!
//! Every operation costs a fixed number of requests whatever the number of servers: a name is
//! added or removed with one request to its parent's target (which indexes the directory's
//! entries) and one to its own target (its inode); readdir is one request per page to the
//! directory's target. The order makes failures safe: entries are added before inodes (a
//! missing parent fails before anything exists) and removed after them.
//!
//! Rename of a file moves its inode (its data is keyed by file id and does not move): the new
//! name is made to point at the inode in one step, atomically for readers of the new name,
//! then the old name goes. Renaming a directory moves the inodes and entries of its whole
//! subtree (paths place inodes), so it costs requests in proportion to the subtree and is not
//! atomic to readers inside it.
//!
//! # Limits
//!
//! There are no transactions across targets, and shards do not track open files. So:
//! - the data of an unlinked or replaced file is freed at once, even while it is open: an open
//!   handle then reads zeros where the data was;
//! - a file's size is published by path at close, so closing a file renamed or unlinked while
//!   open fails with `ENOENT`: the size it wrote is not published, and chunks written after an
//!   unlink are never freed;
//! - sizes only grow at close, so a truncate made while another handle has the file open for
//!   writing is undone by that handle's close when it wrote beyond the new size;
//! - an unlink racing a create of the same name may leave the inode without its entry (stat
//!   finds the file, readdir does not list it).

use crate::placement;
use crate::proto::{self, Op, WireInode};
use crate::server::dirs::{DT_DIR, DT_REG};

use super::{Client, Error, Result};

/// The kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
}

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name (no slash).
    pub name: String,
    /// What it names.
    pub kind: EntryKind,
}

pub(crate) fn parent_of(path: &str) -> Option<&str> {
    match path.rfind('/') {
        _ if path == "/" => None,
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

fn op_of(error: &Error) -> &'static str {
    match error {
        Error::Remote { op, .. } | Error::TimedOut { op, .. } | Error::Transport { op, .. } => op,
        _ => "lookup",
    }
}

fn is_dir(inode: &WireInode) -> bool {
    inode.mode & libc::S_IFMT == libc::S_IFDIR
}

impl Client {
    /// An error of `op` on `path` decided without asking a server.
    pub(crate) fn local_error(&self, op: &'static str, path: &str, errno: i32) -> Error {
        Error::Remote {
            op,
            what: path.to_string(),
            errno,
            target: "this client".into(),
        }
    }

    /// The data of a reply, received now if the transport sent it by rendezvous.
    pub(crate) fn reply_data(&mut self, message: crate::rdma::Incoming) -> Result<Vec<u8>> {
        if let Some(data) = message.data() {
            return Ok(data.to_vec());
        }
        let mut buf = vec![0u8; message.data_len()];
        // SAFETY: `buf` holds `data_len` bytes and is not touched until the receive completed
        // (waited for here; on a timeout the request is cancelled before `buf` is dropped).
        let request = unsafe { message.receive_into(buf.as_mut_ptr(), buf.len()) }?;
        request.wait(self.config.request_timeout)?;
        Ok(buf)
    }

    /// Turns `ENOENT` for `path` into `ENOTDIR` when the nearest existing ancestor is a file
    /// (as POSIX says for a path that goes through a file). Costs requests only on failure.
    pub(crate) fn explain_missing(&mut self, path: &str, error: Error) -> Error {
        if error.errno() != libc::ENOENT {
            return error;
        }
        let mut at = parent_of(path);
        while let Some(ancestor) = at {
            let target = placement::inode_target(ancestor, self.target_count());
            match self.meta_call_at(target, Op::Lookup, ancestor, |_| {}, Vec::new()) {
                Ok((reply, _)) if is_dir(&reply.inode) => return error,
                Ok(_) => return self.local_error(op_of(&error), path, libc::ENOTDIR),
                Err(e) if e.errno() == libc::ENOENT => at = parent_of(ancestor),
                Err(_) => return error,
            }
        }
        error
    }

    /// Requests sent so far (each retry counts).
    pub fn requests_sent(&self) -> u64 {
        self.requests_sent
    }

    /// Adds the entry of `path` to its parent; the kind of an entry already there.
    pub(crate) fn add_entry(&mut self, path: &str, kind: u8) -> Result<Option<u8>> {
        let Some(parent) = parent_of(path) else {
            return Err(self.local_error("create", path, libc::EEXIST));
        };
        let target = placement::inode_target(parent, self.target_count());
        let (reply, _) = self.meta_call_at(
            target,
            Op::AddEntry,
            path,
            |w| w.mode = kind.into(),
            Vec::new(),
        )?;
        Ok((reply.flags & proto::REPLY_EXISTED != 0).then_some(reply.value as u8))
    }

    /// Removes the entry of `path` from its parent (a missing entry is fine: the inode was
    /// the authority).
    pub(crate) fn remove_entry(&mut self, path: &str) -> Result<()> {
        self.remove_entry_of_kind(path, 0)
    }

    /// Removes the entry of `path` if it is of `kind` (any kind for 0).
    pub(crate) fn remove_entry_of_kind(&mut self, path: &str, kind: u8) -> Result<()> {
        let Some(parent) = parent_of(path) else {
            return Ok(());
        };
        let target = placement::inode_target(parent, self.target_count());
        let set_kind = |w: &mut proto::WireRequest| w.mode = kind.into();
        match self.meta_call_at(target, Op::RemoveEntry, path, set_kind, Vec::new()) {
            Err(e) if e.errno() == libc::ENOENT => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Creates directory `path`; its parent must exist. The inode comes first, so a
    /// directory is usable as soon as anyone is told it exists (a racing mkdir gets `EEXIST`
    /// only once the inode is there); then its entry. An entry of a file under that name
    /// without its inode (left by a create that lost the race for the name) is replaced.
    pub fn mkdir(&mut self, path: &str, mode: u32) -> Result<()> {
        let path = crate::path::normalize(path)?;
        let inode = self.meta_call(Op::Mkdir, &path, |w| w.mode = mode)?.0.inode;
        let mut added = self.add_entry(&path, DT_DIR);
        if let Ok(Some(DT_REG)) = added {
            self.remove_entry_of_kind(&path, DT_REG)?;
            added = self.add_entry(&path, DT_DIR);
        }
        match added {
            Ok(None) | Ok(Some(DT_DIR)) => Ok(()),
            failed => {
                // No entry could be made (no parent, parent not a directory): undo the inode.
                let _ = self.meta_call(Op::DeleteInode, &path, |w| w.file_id = inode.file_id);
                let error = failed
                    .err()
                    .unwrap_or_else(|| self.local_error("mkdir", &path, libc::EEXIST));
                Err(self.explain_missing(&path, error))
            }
        }
    }

    /// Creates directory `path` and its missing ancestors (as `mkdir -p`); existing
    /// directories are fine.
    pub fn mkdir_all(&mut self, path: &str, mode: u32) -> Result<()> {
        let path = crate::path::normalize(path)?;
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at.push('/');
            at.push_str(part);
            match self.mkdir(&at, mode) {
                Err(e) if e.errno() == libc::EEXIST => {
                    let inode = self.meta_call(Op::Lookup, &at, |_| {})?.0.inode;
                    if !is_dir(&inode) {
                        return Err(self.local_error("mkdir", &at, libc::ENOTDIR));
                    }
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Removes the empty directory `path`.
    pub fn rmdir(&mut self, path: &str) -> Result<()> {
        let path = crate::path::normalize(path)?;
        self.meta_call(Op::Rmdir, &path, |_| {})?;
        self.remove_entry(&path)
    }

    /// One page of the entries of directory `path` after the name `after` ("" for the
    /// first), in name order; and whether more follow.
    pub fn readdir_page(&mut self, path: &str, after: &str) -> Result<(Vec<DirEntry>, bool)> {
        let path = crate::path::normalize(path)?;
        let target = placement::inode_target(&path, self.target_count());
        let cursor = after.as_bytes().to_vec();
        let (reply, message) = match self.meta_call_at(target, Op::Readdir, &path, |_| {}, cursor) {
            Ok(answer) => answer,
            Err(e) => return Err(self.explain_missing(&path, e)),
        };
        let data = self.reply_data(message.message)?;
        let entries = proto::decode_entries(&data)
            .map_err(|e| Error::Invalid(format!("readdir {path}: malformed reply: {e}")))?;
        let entries = entries
            .into_iter()
            .map(|(kind, name)| DirEntry {
                name,
                kind: if kind == DT_DIR {
                    EntryKind::Directory
                } else {
                    EntryKind::File
                },
            })
            .collect();
        Ok((entries, reply.flags & proto::REPLY_MORE != 0))
    }

    /// Every entry of directory `path`, in name order.
    pub fn readdir(&mut self, path: &str) -> Result<Vec<DirEntry>> {
        let mut all: Vec<DirEntry> = Vec::new();
        loop {
            let after = all.last().map_or(String::new(), |e| e.name.clone());
            let (page, more) = self.readdir_page(path, &after)?;
            all.extend(page);
            if !more {
                return Ok(all);
            }
        }
    }

    /// Checks that `path` exists and allows `mode` (`F_OK`, or `R_OK | W_OK | X_OK` bits,
    /// checked against the owner's permission bits).
    pub fn access(&mut self, path: &str, mode: i32) -> Result<()> {
        if mode & !(libc::R_OK | libc::W_OK | libc::X_OK) != 0 {
            return Err(Error::Invalid(format!("access mode {mode:#o}")));
        }
        let path = crate::path::normalize(path)?;
        let inode = self.meta_call(Op::Lookup, &path, |_| {})?.0.inode;
        let owner = (inode.mode >> 6) & 0o7;
        let wanted = ((mode & libc::R_OK != 0) as u32) << 2
            | ((mode & libc::W_OK != 0) as u32) << 1
            | (mode & libc::X_OK != 0) as u32;
        if owner & wanted != wanted {
            return Err(self.local_error("access", &path, libc::EACCES));
        }
        Ok(())
    }

    /// Changes the permission bits (`mode & 0o7777`), atime and mtime (ns since the epoch) of
    /// the file or directory `path` where given; its ctime becomes now. Returns the result.
    pub fn set_attr(
        &mut self,
        path: &str,
        mode: Option<u32>,
        atime_ns: Option<i64>,
        mtime_ns: Option<i64>,
    ) -> Result<crate::client::Stat> {
        let path = crate::path::normalize(path)?;
        let reply = self.meta_call(Op::SetAttr, &path, |w| {
            if let Some(mode) = mode {
                w.flags |= proto::FLAG_SET_MODE;
                w.mode = mode & 0o7777;
            }
            if let Some(atime) = atime_ns {
                w.flags |= proto::FLAG_SET_ATIME;
                w.offset = atime as u64;
            }
            if let Some(mtime) = mtime_ns {
                w.flags |= proto::FLAG_SET_MTIME;
                w.len = mtime as u64;
            }
        })?;
        Ok(reply.0.inode.into())
    }

    /// Sets the size of file `path`: shrinking frees the data beyond on every target that
    /// holds some; growing reads as zeros.
    pub fn truncate(&mut self, path: &str, size: u64) -> Result<()> {
        let path = crate::path::normalize(path)?;
        let before = self
            .meta_call(Op::Truncate, &path, |w| w.offset = size)?
            .0
            .inode;
        if size >= before.size || before.chunk_size == 0 {
            return Ok(());
        }
        let chunk = before.chunk_size;
        let (first, cut) = (size / chunk, size % chunk);
        let last = (before.size - 1) / chunk;
        let n = self.target_count();
        let mut targets: Vec<usize> = (first..=last.min(first + n as u64 - 1))
            .map(|i| placement::chunk_target(before.file_id, i, n))
            .collect();
        targets.sort_unstable();
        targets.dedup();
        self.send_to_targets("truncate", Op::TruncateChunks, &targets, |w| {
            w.file_id = before.file_id;
            w.chunk_index = first;
            w.offset = cut;
        })
    }

    /// Renames `from` to `to`, replacing a file (or an empty directory, for a directory) of
    /// that name. A directory cannot move into its own subtree (`EINVAL`).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (crate::path::normalize(from)?, crate::path::normalize(to)?);
        if from == "/" || to == "/" {
            return Err(self.local_error("rename", &from, libc::EBUSY));
        }
        let inode = self.meta_call(Op::Lookup, &from, |_| {})?.0.inode;
        if from == to {
            return Ok(());
        }
        if is_dir(&inode) {
            if to.starts_with(&format!("{from}/")) {
                return Err(self.local_error("rename", &to, libc::EINVAL));
            }
            return self.rename_dir(&from, &to, inode);
        }
        self.rename_file(&from, &to, inode)
    }

    fn rename_file(&mut self, from: &str, to: &str, inode: WireInode) -> Result<()> {
        if self.add_entry(to, DT_REG)? == Some(DT_DIR) {
            return Err(self.local_error("rename", to, libc::EISDIR));
        }
        let replaced = self.put_inode(to, &inode)?;
        self.remove_entry(from)?;
        self.delete_inode(from, inode.file_id)?;
        if let Some(old) = replaced {
            self.free_chunks(&old)?;
        }
        Ok(())
    }

    fn put_inode(&mut self, path: &str, inode: &WireInode) -> Result<Option<WireInode>> {
        let target = placement::inode_target(path, self.target_count());
        let data = bytemuck::bytes_of(inode).to_vec();
        let (reply, _) = self.meta_call_at(target, Op::PutInode, path, |_| {}, data)?;
        Ok((reply.flags & proto::REPLY_EXISTED != 0).then_some(reply.inode))
    }

    fn delete_inode(&mut self, path: &str, file_id: u64) -> Result<()> {
        self.meta_call(Op::DeleteInode, path, |w| w.file_id = file_id)
            .map(|_| ())
    }

    /// Removes the chunks of a file whose inode is gone, on every target that can hold some.
    pub(crate) fn free_chunks(&mut self, inode: &WireInode) -> Result<()> {
        let targets = placement::chunk_targets(
            inode.file_id,
            inode.size,
            inode.chunk_size,
            self.target_count(),
        );
        let id = inode.file_id;
        self.send_to_targets("remove chunks", Op::RemoveChunks, &targets, |w| {
            w.file_id = id
        })
    }

    /// Moves directory `from` with its subtree to `to` (which may be an empty directory).
    fn rename_dir(&mut self, from: &str, to: &str, inode: WireInode) -> Result<()> {
        match self.meta_call(Op::Lookup, to, |_| {}) {
            Ok((existing, _)) if !is_dir(&existing.inode) => {
                return Err(self.local_error("rename", to, libc::ENOTDIR))
            }
            Ok(_) if !self.readdir_page(to, "")?.0.is_empty() => {
                return Err(self.local_error("rename", to, libc::ENOTEMPTY))
            }
            Ok(_) => {}
            Err(e) if e.errno() == libc::ENOENT => {
                if self.add_entry(to, DT_DIR)? == Some(DT_REG) {
                    return Err(self.local_error("rename", to, libc::ENOTDIR));
                }
            }
            Err(e) => return Err(e),
        }
        let mut tree = vec![(String::new(), inode)];
        let mut i = 0;
        while i < tree.len() {
            let (rel, node) = tree[i].clone();
            i += 1;
            if !is_dir(&node) {
                continue;
            }
            for entry in self.readdir(&format!("{from}{rel}"))? {
                let child = format!("{rel}/{}", entry.name);
                let child_inode = self
                    .meta_call(Op::Lookup, &format!("{from}{child}"), |_| {})?
                    .0
                    .inode;
                tree.push((child, child_inode));
            }
        }
        // Make the new tree top-down (directories count their subdirectories again as their
        // entries are added), then remove the old one bottom-up.
        for (rel, node) in &tree {
            let mut moved = *node;
            if is_dir(&moved) {
                moved.nlink = 2;
            }
            self.put_inode(&format!("{to}{rel}"), &moved)?;
            if !rel.is_empty() {
                let kind = if is_dir(node) { DT_DIR } else { DT_REG };
                self.add_entry(&format!("{to}{rel}"), kind)?;
            }
        }
        for (rel, node) in tree.iter().rev() {
            if !rel.is_empty() {
                self.remove_entry(&format!("{from}{rel}"))?;
            }
            self.delete_inode(&format!("{from}{rel}"), node.file_id)?;
        }
        self.remove_entry(from)
    }
}
