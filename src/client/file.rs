//! File operations of the client: metadata at the inode's target, data spread over the chunks'
//! targets.
//!
//! Consistency is close-to-open: a [`File`] remembers the size seen at open and the end of
//! what it wrote; [`Client::close`] and [`Client::fsync`] report that end to the inode, which
//! only grows, so after every writer closed, every client that opens (or stats) the file sees
//! its exact size. Reads stop at the larger of the two sizes a handle knows; holes read as
//! zeros.

use std::collections::BTreeSet;

use crate::placement;
use crate::proto::{self, Op, WireInode};

use super::{Client, Error, Outgoing, Result};

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenFlags {
    /// Reads allowed.
    pub read: bool,
    /// Writes allowed.
    pub write: bool,
    /// Create the file when missing.
    pub create: bool,
    /// With `create`: fail with `EEXIST` when it exists.
    pub exclusive: bool,
}

impl OpenFlags {
    /// Read only.
    pub const READ: OpenFlags = OpenFlags {
        read: true,
        write: false,
        create: false,
        exclusive: false,
    };
    /// Read and write.
    pub const READ_WRITE: OpenFlags = OpenFlags {
        read: true,
        write: true,
        create: false,
        exclusive: false,
    };
}

/// An open file.
#[derive(Debug, Clone)]
pub struct File {
    path: String,
    inode: WireInode,
    flags: OpenFlags,
    written_end: u64,
    wrote: bool,
    /// Times were set explicitly after the last write: close leaves the mtime alone.
    times_set: bool,
    dirty_targets: BTreeSet<usize>,
}

impl File {
    /// The normalised path it was opened by.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The cluster-wide file id.
    pub fn file_id(&self) -> u64 {
        self.inode.file_id
    }

    /// The file's chunk size.
    pub fn chunk_size(&self) -> u64 {
        self.inode.chunk_size
    }

    /// The size this handle knows: the size at open or the end of its own writes.
    pub fn size(&self) -> u64 {
        self.inode.size.max(self.written_end)
    }

    /// Whether the handle allows reads and writes.
    pub fn flags(&self) -> OpenFlags {
        self.flags
    }

    /// Records that the file's times were set explicitly (utimes): its close then publishes
    /// the size it wrote without moving the modification time past them, unless it writes
    /// again first.
    pub fn times_were_set(&mut self) {
        self.times_set = true;
    }

    /// Records that the file was truncated to `size` (by [`Client::truncate_file`]): what this
    /// handle wrote beyond is gone, so its close must not raise the size again.
    fn truncated(&mut self, size: u64) {
        self.inode.size = size;
        self.written_end = self.written_end.min(size);
    }
}

/// What stat returns. The layout is C's (`benchfs_stat_t` of the C API is this type), so the
/// field order and types must match `include/benchfs_c_api.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    /// Inode number (the file id).
    pub ino: u64,
    /// Mode bits with the file type.
    pub mode: u32,
    /// Link count.
    pub nlink: u32,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks.
    pub blocks: u64,
    /// Preferred I/O size (the chunk size).
    pub blksize: u64,
    /// Access time, ns since the epoch.
    pub atime_ns: i64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
}

impl From<WireInode> for Stat {
    fn from(i: WireInode) -> Stat {
        Stat {
            ino: i.file_id,
            mode: i.mode,
            nlink: i.nlink,
            size: i.size,
            blocks: i.size.div_ceil(512),
            blksize: i.chunk_size,
            atime_ns: i.atime_ns,
            mtime_ns: i.mtime_ns,
            ctime_ns: i.ctime_ns,
        }
    }
}

/// What statfs returns: the sums over all targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatFs {
    /// Bytes of the data file systems.
    pub total_bytes: u64,
    /// Bytes free.
    pub free_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
    /// Files (inodes) stored.
    pub files: u64,
    /// Targets of the cluster.
    pub targets: u64,
}

/// One piece of a transfer: a range of one chunk.
struct Piece {
    target: usize,
    index: u64,
    offset_in_chunk: u64,
    len: usize,
    buf_offset: usize,
}

fn pieces(file: &File, offset: u64, len: usize, targets: usize, piece_bytes: u64) -> Vec<Piece> {
    let chunk = file.inode.chunk_size;
    let piece_max = piece_bytes.clamp(1, chunk);
    let mut out = Vec::with_capacity(len / chunk as usize + 2);
    let mut done = 0usize;
    while done < len {
        let at = offset + done as u64;
        let index = at / chunk;
        let offset_in_chunk = at % chunk;
        let to_boundary = piece_max - offset_in_chunk % piece_max;
        let n = ((chunk - offset_in_chunk).min(to_boundary) as usize).min(len - done);
        out.push(Piece {
            target: placement::chunk_target(file.inode.file_id, index, targets),
            index,
            offset_in_chunk,
            len: n,
            buf_offset: done,
        });
        done += n;
    }
    out
}

impl Client {
    pub(crate) fn meta_call(
        &mut self,
        op: Op,
        path: &str,
        edit: impl FnOnce(&mut proto::WireRequest),
    ) -> Result<(proto::WireReply, usize)> {
        let target = placement::inode_target(path, self.target_count());
        match self.meta_call_at(target, op, path, edit, Vec::new()) {
            Ok((reply, _)) => Ok((reply, target)),
            Err(e) => Err(self.explain_missing(path, e)),
        }
    }

    /// A metadata request about `path` to `target`, with `payload` as its data.
    pub(crate) fn meta_call_at(
        &mut self,
        target: usize,
        op: Op,
        path: &str,
        edit: impl FnOnce(&mut proto::WireRequest),
        payload: Vec<u8>,
    ) -> Result<(proto::WireReply, crate::rdma::rpc::Reply)> {
        let (mut wire, _) = self.prepare(target, op)?;
        edit(&mut wire);
        let mut out = Outgoing::simple(target, wire);
        out.path = path.as_bytes().to_vec();
        out.payload = payload;
        let name = op_name(op);
        match self.call_one(name, out) {
            Ok(answer) => Ok(answer),
            Err(Error::Remote { errno, target, .. }) => Err(Error::Remote {
                op: name,
                what: path.to_string(),
                errno,
                target,
            }),
            Err(e) => Err(e),
        }
    }

    /// Opens `path` (creating it with `mode` if `flags.create`; its parent directory must
    /// exist). Directories cannot be opened as files (`EISDIR`).
    pub fn open(&mut self, path: &str, flags: OpenFlags, mode: u32) -> Result<File> {
        let path = crate::path::normalize(path)?;
        let inode = if flags.create {
            self.create_inode(&path, mode, flags.exclusive)?
        } else {
            self.meta_call(Op::Lookup, &path, |_| {})?.0.inode
        };
        if inode.mode & libc::S_IFMT == libc::S_IFDIR {
            return Err(self.local_error("open", &path, libc::EISDIR));
        }
        if inode.chunk_size == 0 {
            return Err(Error::Invalid(format!(
                "{path}: inode without a chunk size"
            )));
        }
        Ok(File {
            path,
            inode,
            flags,
            written_end: 0,
            wrote: false,
            times_set: false,
            dirty_targets: BTreeSet::new(),
        })
    }

    /// Adds the entry of `path` at its parent's target and creates its inode at its own
    /// target, both requests in flight at once (a create costs one round trip). When the
    /// entry cannot be added (no parent, parent not a directory), an inode the create made is
    /// removed again.
    fn create_inode(&mut self, path: &str, mode: u32, exclusive: bool) -> Result<WireInode> {
        let Some(parent) = crate::client::namespace::parent_of(path) else {
            return Err(self.local_error("open", path, libc::EISDIR));
        };
        let n = self.target_count();
        let targets = [
            placement::inode_target(parent, n),
            placement::inode_target(path, n),
        ];
        let chunk = self.config.chunk_size_bytes;
        let mut replies: [Option<proto::WireReply>; 2] = [None, None];
        let result = self.batch(
            "create",
            2,
            |c, i| {
                let op = if i == 0 { Op::AddEntry } else { Op::Create };
                let (mut wire, _) = c.prepare(targets[i], op)?;
                if i == 0 {
                    wire.mode = u32::from(crate::server::dirs::DT_REG);
                } else {
                    wire.mode = mode;
                    wire.len = chunk;
                    if exclusive {
                        wire.flags |= proto::FLAG_EXCL;
                    }
                }
                let mut out = Outgoing::simple(targets[i], wire);
                out.path = path.as_bytes().to_vec();
                Ok(out)
            },
            |i, wire, _| {
                replies[i] = Some(wire);
                Ok(())
            },
        );
        let [entry, inode] = replies;
        let existed = |r: &proto::WireReply| r.flags & proto::REPLY_EXISTED != 0;
        let entry_is_dir = entry
            .as_ref()
            .is_some_and(|r| existed(r) && r.value == u64::from(crate::server::dirs::DT_DIR));
        if let (Ok(()), Some(inode), false) = (&result, &inode, entry_is_dir) {
            return Ok(inode.inode);
        }
        // Undo what this call made, so a failed create leaves nothing behind.
        if let Some(r) = inode.filter(|r| !existed(r)) {
            let _ = self.meta_call(Op::DeleteInode, path, |w| w.file_id = r.inode.file_id);
        }
        if entry.is_some_and(|r| !existed(&r)) {
            let _ = self.remove_entry_of_kind(path, crate::server::dirs::DT_REG);
        }
        let error = match result {
            Ok(()) => self.local_error("create", path, libc::EISDIR),
            Err(Error::Remote { errno, target, .. }) => Error::Remote {
                op: "create",
                what: path.to_string(),
                errno,
                target,
            },
            Err(other) => other,
        };
        Err(self.explain_missing(path, error))
    }

    /// Creates `path` if missing (an existing file is opened, never truncated), read-write.
    pub fn create(&mut self, path: &str, mode: u32) -> Result<File> {
        let flags = OpenFlags {
            create: true,
            ..OpenFlags::READ_WRITE
        };
        self.open(path, flags, mode)
    }

    /// Closes `file`, publishing the size it wrote.
    pub fn close(&mut self, file: File) -> Result<()> {
        self.publish_size(&file, false)
    }

    fn publish_size(&mut self, file: &File, sync: bool) -> Result<()> {
        if !file.wrote && !sync {
            return Ok(());
        }
        let (id, end) = (file.inode.file_id, file.written_end);
        // A zero mtime leaves the inode's times as they are (the server only moves them on).
        let now = if file.times_set {
            0
        } else {
            crate::server::meta::now_ns()
        };
        self.meta_call(Op::SetSize, &file.path, |w| {
            w.file_id = id;
            w.offset = end;
            w.len = now as u64;
            if sync {
                w.flags |= proto::FLAG_SYNC;
            }
        })?;
        Ok(())
    }

    /// Makes the data and size of `file` durable on every target it wrote to.
    pub fn fsync(&mut self, file: &mut File) -> Result<()> {
        let targets: Vec<usize> = file.dirty_targets.iter().copied().collect();
        let id = file.inode.file_id;
        self.send_to_targets("fsync", Op::Fsync, &targets, |w| w.file_id = id)?;
        self.publish_size(file, true)?;
        file.dirty_targets.clear();
        Ok(())
    }

    /// Writes all of `buf` at `offset`; returns its length.
    pub fn write_at(&mut self, file: &mut File, buf: &[u8], offset: u64) -> Result<usize> {
        if !file.flags.write {
            return Err(Error::BadHandle("file not open for writing"));
        }
        offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| Error::Invalid("write beyond the largest file size".into()))?;
        let parts = pieces(
            file,
            offset,
            buf.len(),
            self.target_count(),
            self.config.piece_bytes,
        );
        self.transfer(Op::Write, file, &parts, buf.as_ptr().cast_mut(), buf.len())?;
        for p in &parts {
            file.dirty_targets.insert(p.target);
        }
        file.wrote = true;
        file.times_set = false;
        file.written_end = file.written_end.max(offset + buf.len() as u64);
        Ok(buf.len())
    }

    /// Reads into `buf` from `offset`, up to the end of file; returns the bytes read.
    pub fn read_at(&mut self, file: &File, buf: &mut [u8], offset: u64) -> Result<usize> {
        if !file.flags.read {
            return Err(Error::BadHandle("file not open for reading"));
        }
        let size = file.size();
        if offset >= size {
            return Ok(0);
        }
        let len = buf
            .len()
            .min((size - offset).min(usize::MAX as u64) as usize);
        let parts = pieces(
            file,
            offset,
            len,
            self.target_count(),
            self.config.piece_bytes,
        );
        self.transfer(Op::Read, file, &parts, buf.as_mut_ptr(), len)?;
        Ok(len)
    }

    /// Moves the pieces of one transfer between `buf` (`len` bytes) and their targets.
    fn transfer(
        &mut self,
        op: Op,
        file: &File,
        parts: &[Piece],
        buf: *mut u8,
        len: usize,
    ) -> Result<()> {
        // The handle keeps the registration alive until every piece is answered.
        let mut region: Option<crate::rdma::CachedRegion> = None;
        let file_id = file.inode.file_id;
        let name = op_name(op);
        let timeout = self.config.request_timeout;
        // Targets whose reply data could not be received in full (see below).
        let abandoned = std::cell::RefCell::new(Vec::new());
        let result = self.batch(
            name,
            parts.len(),
            |c, i| {
                let p = &parts[i];
                let (mut wire, inline_max) = c.prepare(p.target, op)?;
                wire.file_id = file_id;
                wire.chunk_index = p.index;
                wire.offset = p.offset_in_chunk;
                wire.len = p.len as u64;
                let mut out = Outgoing::simple(p.target, wire);
                let at = buf.wrapping_add(p.buf_offset);
                let message_path = c.config.data_path == super::DataPath::Message;
                if p.len as u64 <= inline_max || (message_path && op == Op::Write) {
                    out.wire.flags |= proto::FLAG_INLINE;
                    if op == Op::Write && p.len as u64 <= inline_max {
                        // SAFETY: `at..at + p.len` lies inside the caller's buffer of `len`
                        // bytes, borrowed for the whole transfer.
                        out.payload = unsafe { std::slice::from_raw_parts(at, p.len) }.to_vec();
                    } else if op == Op::Write {
                        out.raw = Some((at.cast_const(), p.len));
                    }
                    return Ok(out);
                }
                if message_path {
                    out.wire.flags |= proto::FLAG_REPLY_DATA;
                    return Ok(out);
                }
                if region.is_none() {
                    region = Some(c.regcache.lookup(buf, len)?);
                }
                out.wire.addr = at as u64;
                out.rkey = region.as_ref().expect("just set").rkey().to_vec();
                Ok(out)
            },
            |i, reply, message| {
                let p = &parts[i];
                if reply.value != p.len as u64 {
                    return Err(Error::Invalid(format!(
                        "{name}: short transfer of chunk {}",
                        p.index
                    )));
                }
                if op == Op::Read && message.message.data_len() > 0 {
                    receive_inline(
                        message.message,
                        buf.wrapping_add(p.buf_offset),
                        p.len,
                        timeout,
                    )
                    .map_err(|e| match e {
                        // A transport failure (a deadline, a dead server) is EIO/ETIMEDOUT,
                        // not a bad argument. UCX cannot cancel a rendezvous receive that has
                        // started: its data could still land in the caller's buffer after
                        // this call returned, so the connection is aborted before that.
                        Received::Failed(source) => Error::Transport {
                            op: "read",
                            target: format!("target {} (data of chunk {})", p.target, p.index),
                            source,
                        },
                        Received::Malformed(why) => {
                            Error::Invalid(format!("{name}: inline data: {why}"))
                        }
                    })
                    .inspect_err(|e| {
                        if matches!(e, Error::Transport { .. }) {
                            abandoned.borrow_mut().push(p.target);
                        }
                    })?;
                }
                Ok(())
            },
        );
        for target in abandoned.into_inner() {
            self.abort_conn(target);
        }
        if result.is_err() && region.is_some() {
            // A piece that failed (a deadline, say) may still be served later: dropping the
            // registration revokes the key on transports that check keys (InfiniBand), so a
            // late transfer cannot touch memory the caller has moved on with.
            self.regcache.invalidate(buf, len);
        }
        result
    }

    /// The attributes of `path`.
    pub fn stat(&mut self, path: &str) -> Result<Stat> {
        let path = crate::path::normalize(path)?;
        Ok(self.meta_call(Op::Lookup, &path, |_| {})?.0.inode.into())
    }

    /// Sets the size of the open `file` to `size` (see [`Client::truncate`]); the handle's
    /// own idea of the size follows, so its close publishes nothing beyond `size`.
    pub fn truncate_file(&mut self, file: &mut File, size: u64) -> Result<()> {
        let path = file.path.clone();
        self.truncate(&path, size)?;
        file.truncated(size);
        Ok(())
    }

    /// Removes `path` and frees its chunks on every target that holds some.
    pub fn unlink(&mut self, path: &str) -> Result<()> {
        let path = crate::path::normalize(path)?;
        let inode = self.meta_call(Op::Unlink, &path, |_| {})?.0.inode;
        self.remove_entry(&path)?;
        self.free_chunks(&inode)
    }

    /// Capacity and file count of the whole cluster. Shards of one server share its data
    /// directory, so each server's space is counted once (from its first shard); files are
    /// counted on every shard.
    pub fn statfs(&mut self) -> Result<StatFs> {
        let stats = self.target_stats()?;
        let mut sum = StatFs {
            targets: stats.len() as u64,
            ..StatFs::default()
        };
        for s in stats {
            if s.shard == 0 {
                sum.total_bytes += s.total_bytes;
                sum.free_bytes += s.free_bytes;
                sum.available_bytes += s.available_bytes;
            }
            sum.files += s.inodes;
        }
        Ok(sum)
    }
}

/// Places the inline data of a read reply at `dst` (`len` bytes): copied when it came with
/// the message, received by UCX straight into `dst` when the transport sent it by rendezvous.
fn receive_inline(
    message: crate::rdma::Incoming,
    dst: *mut u8,
    len: usize,
    timeout: std::time::Duration,
) -> std::result::Result<(), Received> {
    if message.data_len() != len {
        return Err(Received::Malformed(format!(
            "{} bytes for a {len}-byte piece",
            message.data_len()
        )));
    }
    if let Some(data) = message.data() {
        // SAFETY: `dst..dst + len` lies inside the caller's buffer, borrowed for the whole
        // transfer, and no other piece covers it.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, len) };
        return Ok(());
    }
    // SAFETY: as above; the request is waited for before the buffer is used again.
    let request = unsafe { message.receive_into(dst, len) }.map_err(Received::Failed)?;
    request.wait(timeout).map(|_| ()).map_err(Received::Failed)
}

/// Why the data of a reply could not be received.
enum Received {
    /// The reply's data does not match the request.
    Malformed(String),
    /// The transport failed or the deadline passed.
    Failed(crate::rdma::Error),
}

pub(crate) fn op_name(op: Op) -> &'static str {
    match op {
        Op::Create => "create",
        Op::Lookup => "open",
        Op::Unlink => "unlink",
        Op::SetSize => "set size",
        Op::Write => "write",
        Op::Read => "read",
        Op::Fsync => "fsync",
        Op::AddEntry => "add entry",
        Op::RemoveEntry => "remove entry",
        Op::Mkdir => "mkdir",
        Op::Rmdir => "rmdir",
        Op::Readdir => "readdir",
        Op::PutInode | Op::DeleteInode => "rename",
        Op::Truncate | Op::TruncateChunks => "truncate",
        Op::SetAttr => "set attributes",
        _ => "request",
    }
}
