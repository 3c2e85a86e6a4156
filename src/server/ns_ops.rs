//! The namespace requests of a shard (directories, rename steps, truncate): decoding their
//! arguments and answering them from [`super::dirs`].

use bytemuck::Zeroable;

use crate::proto::{self, Op, WireInode, WireReply};
use crate::rdma::Incoming;
use crate::storage::ChunkKey;

use super::data::Task;
use super::dirs::{DT_DIR, DT_REG};
use super::shard::{busy, Shard};
use super::Failure;

/// Bytes of names a readdir reply carries at most.
const READDIR_PAGE_BYTES: usize = 32 << 10;

impl Shard {
    pub(super) fn namespace(
        &mut self,
        conn: usize,
        request_id: u64,
        request: &proto::Request<'_>,
        message: &Incoming,
    ) {
        if request.op == Op::TruncateChunks {
            return self.truncate_chunks(conn, request_id, &request.wire);
        }
        let result = crate::path::normalize_bytes(request.path)
            .map_err(|e| Failure::new(e.errno(), e.to_string()))
            .and_then(|path| self.namespace_op(request, &path, message));
        match result {
            Ok((reply, data)) => self.send_reply(conn, request_id, reply, data),
            Err(f) => self.reply_err(conn, request_id, f),
        }
    }

    fn namespace_op(
        &mut self,
        request: &proto::Request<'_>,
        path: &str,
        message: &Incoming,
    ) -> Result<(WireReply, Vec<u8>), Failure> {
        let wire = &request.wire;
        let mut reply = WireReply::zeroed();
        match request.op {
            Op::AddEntry => {
                let kind = entry_kind(wire.mode)?;
                if let Some(existing) = self.meta.add_entry(path, kind)? {
                    reply.flags |= proto::REPLY_EXISTED;
                    reply.value = u64::from(existing);
                }
            }
            Op::RemoveEntry => {
                let only = if wire.mode == 0 {
                    0
                } else {
                    entry_kind(wire.mode)?
                };
                reply.value = u64::from(self.meta.remove_entry(path, only)?);
            }
            Op::Mkdir => reply.inode = self.meta.mkdir(path, wire.mode)?,
            Op::Rmdir => reply.inode = self.meta.rmdir(path)?,
            Op::Readdir => return self.readdir(path, message),
            Op::PutInode => {
                let inode = message_inode(message)?;
                if let Some(old) = self.meta.put_inode(path, &inode)? {
                    reply.flags |= proto::REPLY_EXISTED;
                    reply.inode = old;
                }
            }
            Op::DeleteInode => self.meta.delete_inode(path, wire.file_id)?,
            Op::Truncate => reply.inode = self.meta.truncate(path, wire.offset)?,
            op => {
                return Err(Failure::new(
                    libc::EINVAL,
                    format!("{op:?} is not a namespace op"),
                ))
            }
        }
        Ok((reply, Vec::new()))
    }

    fn readdir(&mut self, dir: &str, message: &Incoming) -> Result<(WireReply, Vec<u8>), Failure> {
        let cursor = message
            .data()
            .filter(|d| d.len() <= proto::NAME_MAX_BYTES)
            .and_then(|d| std::str::from_utf8(d).ok())
            .ok_or_else(|| Failure::new(libc::EINVAL, "malformed readdir cursor"))?;
        let (entries, more) = self.meta.readdir(dir, cursor, READDIR_PAGE_BYTES)?;
        let mut data = Vec::with_capacity(entries.iter().map(|e| e.name.len() + 3).sum());
        for e in &entries {
            proto::encode_entry(&mut data, e.kind, &e.name);
        }
        let mut reply = WireReply::zeroed();
        reply.value = entries.len() as u64;
        if more {
            reply.flags |= proto::REPLY_MORE;
        }
        Ok((reply, data))
    }

    /// Cuts chunk `chunk_index` of the file to `offset` bytes and removes its later chunks on
    /// this shard; busy while I/O on the file's chunks is in flight (the client retries).
    fn truncate_chunks(&mut self, conn: usize, request_id: u64, wire: &proto::WireRequest) {
        let (file_id, first, len) = (wire.file_id, wire.chunk_index, wire.offset);
        if len > self.config.chunk_size_bytes as u64 {
            let f = Failure::new(libc::EINVAL, "offset beyond the chunk size");
            return self.reply_err(conn, request_id, f);
        }
        match self.store.remove_chunks_after(file_id, first) {
            Ok(_) => {}
            Err(e) if e.errno() == libc::EBUSY => return self.reply_err(conn, request_id, busy()),
            Err(e) => return self.reply_err(conn, request_id, Failure::storage(e)),
        }
        let key = ChunkKey::new(file_id, first);
        if !self.store.chunk_exists(key) {
            return self.send_reply(conn, request_id, WireReply::zeroed(), Vec::new());
        }
        let Some(ep) = self
            .conns
            .get(conn)
            .and_then(|c| c.as_ref())
            .map(|c| c.ep.clone())
        else {
            return;
        };
        match self.tasks.insert(Task::sync(conn, ep, request_id)) {
            Some(tag) => self.store.submit_truncate(tag, key, len),
            None => self.reply_err(conn, request_id, busy()),
        }
    }
}

fn entry_kind(mode: u32) -> Result<u8, Failure> {
    match u8::try_from(mode) {
        Ok(k @ (DT_DIR | DT_REG)) => Ok(k),
        _ => Err(Failure::new(libc::EINVAL, "unknown entry kind")),
    }
}

fn message_inode(message: &Incoming) -> Result<WireInode, Failure> {
    match message.data() {
        Some(d) if d.len() == std::mem::size_of::<WireInode>() => {
            Ok(bytemuck::pod_read_unaligned(d))
        }
        _ => Err(Failure::new(libc::EINVAL, "malformed inode")),
    }
}
