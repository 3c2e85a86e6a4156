//! The data path of a shard: write and read requests as small state machines over a slab slot.
//!
//! ```text
//! write, message:  wait for slot -> payload into the slot (rendezvous receive, or a copy of
//!                  an eager payload) -> WRITE_FIXED -> reply
//! write, RMA:      wait for slot -> get from the client's buffer into the slot -> WRITE_FIXED
//!                  -> reply
//! read, message:   wait for slot -> READ_FIXED -> reply carrying the data from the slot
//!                  (rendezvous: the client pulls it straight into its buffer)
//! read, RMA:       wait for slot -> READ_FIXED -> put into the client's buffer -> flush -> reply
//! read, inline:    wait for slot -> READ_FIXED -> reply carrying a copy of the data
//! ```
//!
//! The slot is the landing zone of the network transfer and the buffer of the disk transfer
//! at once: data lands at the position the chunk store expects ([`ChunkStore::data_offset`]),
//! and the whole slab is registered with UCX, so rendezvous and RMA requests make no CPU copy
//! on the shard. The flush before an RMA read's reply makes the put visible in the client's
//! memory before the client learns it is done (UCX does not order RMA against active
//! messages). Which path a request takes is the client's choice (its flags); the message path
//! is the default because UCX's rendezvous protocols were the faster ones when measured over
//! TCP and shared memory.
//!
//! A task owns its slot, its remote key and its UCX requests until the last of them
//! completes; only then is the slot released and the reply sent.

use std::time::Instant;

use crate::proto::{self, Op, WireReply, WireRequest};
use crate::rdma::rpc::{Frame, Kind};
use crate::rdma::{Endpoint, RemoteKey, Request};
use crate::storage::{ChunkKey, ChunkStore, Completion, Outcome, Slot};

use super::shard::{busy, send_on, Shard, Waiting};
use super::Failure;

enum Stage {
    /// Network transfer into the slot (get, or rendezvous receive).
    Fetching(Request),
    /// In the chunk store.
    Disk,
    /// Put into the client's buffer and the flush after it.
    Sending(Request, Request),
    /// The reply carrying the data from the slot.
    Replying(Request),
}

/// A request being served.
pub(super) struct Task {
    ep: Endpoint,
    request_id: u64,
    wire: WireRequest,
    rkey: Option<RemoteKey>,
    rkey_bytes: Vec<u8>,
    slot: Option<Slot>,
    stage: Stage,
    chunk_len: u64,
    deadline: Instant,
    /// When a transfer of a client whose connection failed is given up (see
    /// [`DEAD_CLIENT_GRACE`]).
    abandon_at: Option<Instant>,
}

/// How long a transfer of a client whose connection failed may stay after its cancellation.
/// UCX cannot cancel a rendezvous receive whose sender died: the request would hold its slot
/// forever. Once the connection failed no more data can arrive for it, so after this grace the
/// request is left to UCX and the slot reused.
const DEAD_CLIENT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl Task {
    /// A sync task (no slot, waits in the chunk store).
    pub fn sync(_conn: usize, ep: Endpoint, request_id: u64) -> Task {
        Task {
            ep,
            request_id,
            wire: bytemuck::Zeroable::zeroed(),
            rkey: None,
            rkey_bytes: Vec::new(),
            slot: None,
            stage: Stage::Disk,
            chunk_len: 0,
            deadline: Instant::now(),
            abandon_at: None,
        }
    }
}

/// Tasks by tag, with a fixed capacity chosen at start.
pub(super) struct TaskTable {
    tasks: Vec<Option<Task>>,
    free: Vec<usize>,
}

impl TaskTable {
    pub fn new(capacity: usize) -> TaskTable {
        TaskTable {
            tasks: (0..capacity).map(|_| None).collect(),
            free: (0..capacity).rev().collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.tasks.len()
    }

    pub fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.free.len() == self.tasks.len()
    }

    pub fn len(&self) -> usize {
        self.tasks.len() - self.free.len()
    }

    /// Stores `task` and returns its tag, or `None` when full.
    pub fn insert(&mut self, task: Task) -> Option<u64> {
        let index = self.free.pop()?;
        self.tasks[index] = Some(task);
        Some(index as u64)
    }

    fn get_mut(&mut self, tag: u64) -> Option<&mut Task> {
        self.tasks.get_mut(tag as usize)?.as_mut()
    }

    fn remove(&mut self, tag: u64) -> Option<Task> {
        let task = self.tasks.get_mut(tag as usize)?.take()?;
        self.free.push(tag as usize);
        Some(task)
    }
}

fn validate(w: &Waiting, chunk_size: usize, eager: usize) -> Result<(), Failure> {
    let wire = &w.wire;
    let end = wire.offset.checked_add(wire.len);
    if wire.len == 0 || end.is_none_or(|e| e > chunk_size as u64) {
        return Err(Failure::new(libc::EINVAL, "range outside the chunk"));
    }
    let inline = wire.flags & proto::FLAG_INLINE != 0;
    let is_write = wire.op == Op::Write as u16;
    if inline {
        // Writes of any size may carry their data (UCX sends it eagerly or by rendezvous);
        // an inline read is answered with a copy, so it is bounded by the threshold.
        if !is_write && wire.len > eager as u64 {
            return Err(Failure::new(
                libc::EINVAL,
                "inline read above the threshold",
            ));
        }
        let data_len = if is_write { wire.len as usize } else { 0 };
        if w.message.data_len() != data_len {
            return Err(Failure::new(libc::EINVAL, "payload length does not match"));
        }
    } else if wire.flags & proto::FLAG_REPLY_DATA != 0 {
        if is_write || wire.addr != 0 || !w.rkey.is_empty() || w.message.data_len() != 0 {
            return Err(Failure::new(
                libc::EINVAL,
                "reply-data flag on a malformed read",
            ));
        }
    } else if wire.addr == 0 || w.rkey.is_empty() || w.message.data_len() != 0 {
        return Err(Failure::new(
            libc::EINVAL,
            "RMA request without buffer and key",
        ));
    }
    Ok(())
}

impl Shard {
    /// Queues a data request behind the others, or refuses it.
    pub(super) fn enqueue(&mut self, w: Waiting) {
        let eager = self.config.eager_threshold_bytes;
        if let Err(f) = validate(&w, self.config.chunk_size_bytes, eager) {
            log::warn!("refused a data request: {f}");
            return self.reply_err(w.conn, w.request_id, f);
        }
        if self.waiting.len() >= self.config.queue_depth {
            self.stats.busy += 1;
            return self.reply_err(w.conn, w.request_id, busy());
        }
        self.waiting.push_back(w);
        self.stats.queue_max = self.stats.queue_max.max(self.waiting.len() as u64);
    }

    /// Starts waiting requests while slots and task room last; whether any started.
    pub(super) fn start_waiting(&mut self) -> bool {
        let mut started = false;
        while !self.waiting.is_empty() && self.tasks.has_room() {
            let Some(slot) = self.store.acquire_slot() else {
                break;
            };
            let w = self.waiting.pop_front().expect("not empty");
            self.start(w, slot);
            started = true;
        }
        started
    }

    fn start(&mut self, mut w: Waiting, slot: Slot) {
        let Some(ep) = self
            .conns
            .get(w.conn)
            .and_then(|c| c.as_ref())
            .map(|c| c.ep.clone())
        else {
            return self.store.release_slot(slot);
        };
        let task = Task {
            ep,
            request_id: w.request_id,
            wire: w.wire,
            rkey: None,
            // A read needs its key after the disk; a write uses it at once.
            rkey_bytes: if w.wire.op == Op::Read as u16 {
                std::mem::take(&mut w.rkey)
            } else {
                Vec::new()
            },
            slot: None,
            stage: Stage::Disk,
            chunk_len: 0,
            deadline: Instant::now() + self.config.transfer_timeout,
            abandon_at: None,
        };
        let tag = self.tasks.insert(task).expect("room checked");
        let result = if w.wire.op == Op::Read as u16 {
            let (key, offset, len) = span(&w.wire);
            self.store.submit_read(tag, key, offset, len, slot);
            Ok(())
        } else {
            self.start_write(tag, w, slot)
        };
        if let Err(f) = result {
            self.finish(tag, Err(f));
        }
    }

    fn slot_addr(&self, slot: &Slot, offset: u64) -> *mut u8 {
        let base = self.store.slab().data_addr(slot.index());
        base.wrapping_add(ChunkStore::data_offset(offset))
    }

    fn start_write(&mut self, tag: u64, w: Waiting, mut slot: Slot) -> Result<(), Failure> {
        let (key, offset, len) = span(&w.wire);
        let inline = w.wire.flags & proto::FLAG_INLINE != 0;
        if inline && !w.message.is_rendezvous() {
            let data = w.message.data().unwrap_or(&[]);
            let at = ChunkStore::data_offset(offset);
            self.store.slot_data_mut(&mut slot)[at..at + len].copy_from_slice(data);
            self.stats.inline_copied += len as u64;
            self.store.submit_write(tag, key, offset, len, slot);
            return Ok(());
        }
        let local = self.slot_addr(&slot, offset);
        let task = self.tasks.get_mut(tag).expect("just inserted");
        let request = if inline {
            // SAFETY: the slot's data area from `local` holds `len` bytes (validated against
            // the chunk size); the task owns the slot until the receive completes.
            unsafe { w.message.receive_into(local, len) }
        } else {
            task.ep.unpack_rkey(&w.rkey).and_then(|rkey| {
                // SAFETY: as above, for the get; the task keeps the key and the slot.
                let get = unsafe { task.ep.get(local, len, w.wire.addr, &rkey) };
                task.rkey = Some(rkey);
                get
            })
        };
        match request {
            Ok(request) => {
                task.slot = Some(slot);
                task.stage = Stage::Fetching(request);
                Ok(())
            }
            Err(e) => {
                // A transfer that failed to start never touches the slot.
                self.store.release_slot(slot);
                Err(Failure::rdma(e))
            }
        }
    }

    /// Routes finished disk operations; whether there were any.
    pub(super) fn poll_store(&mut self) -> Result<bool, Failure> {
        let mut done = Vec::new();
        self.store.poll(&mut done).map_err(Failure::storage)?;
        let any = !done.is_empty();
        for completion in done {
            self.on_disk_done(completion);
        }
        Ok(any)
    }

    fn on_disk_done(&mut self, c: Completion) {
        let Some(task) = self.tasks.get_mut(c.tag) else {
            log::error!("a disk completion for no task ({})", c.tag);
            return;
        };
        let rma = task.wire.flags & proto::FLAG_INLINE == 0;
        let (slot, outcome) = match (c.slot, c.result) {
            (slot, Err(e)) => {
                if let Some(s) = slot {
                    self.store.release_slot(s);
                }
                return self.finish(c.tag, Err(Failure::storage(e)));
            }
            (slot, Ok(outcome)) => (slot, outcome),
        };
        match (outcome, slot) {
            (
                Outcome::Read {
                    data_offset,
                    len,
                    chunk_len,
                },
                Some(slot),
            ) if rma => {
                task.chunk_len = chunk_len;
                let local = self
                    .store
                    .slab()
                    .data_addr(slot.index())
                    .wrapping_add(data_offset);
                task.slot = Some(slot);
                if task.wire.flags & proto::FLAG_REPLY_DATA != 0 {
                    self.start_data_reply(c.tag, local, len);
                } else {
                    self.start_put(c.tag, local, len);
                }
            }
            (
                Outcome::Read {
                    data_offset,
                    len,
                    chunk_len,
                },
                Some(slot),
            ) => {
                let data = self.store.slot_data(&slot)[data_offset..data_offset + len].to_vec();
                self.stats.inline_copied += len as u64;
                self.store.release_slot(slot);
                self.finish_with(c.tag, len as u64, chunk_len, data);
            }
            (Outcome::Written { len }, slot) => {
                if let Some(s) = slot {
                    self.store.release_slot(s);
                }
                self.finish(c.tag, Ok(len as u64));
            }
            (_, slot) => {
                if let Some(s) = slot {
                    self.store.release_slot(s);
                }
                self.finish(c.tag, Ok(0));
            }
        }
    }

    /// Sends the reply with the `len` bytes at `local` (in the task's slot) as its data.
    fn start_data_reply(&mut self, tag: u64, local: *mut u8, len: usize) {
        let task = self.tasks.get_mut(tag).expect("live task");
        let reply = WireReply {
            value: len as u64,
            aux: task.chunk_len,
            ..WireReply::default()
        };
        let frame = Frame {
            kind: Kind::Reply,
            request_id: task.request_id,
        };
        let header = frame.encode(bytemuck::bytes_of(&reply));
        // SAFETY: the slot holds the `len` bytes just read at `local`, registered with UCX
        // (the whole slab is); the task keeps the slot until the send completes.
        let sent = unsafe { task.ep.am_send_raw(proto::AM_REPLY, &header, local, len) };
        match sent {
            Ok(request) => task.stage = Stage::Replying(request),
            Err(e) => {
                let slot = task.slot.take();
                if let Some(s) = slot {
                    self.store.release_slot(s);
                }
                self.finish(tag, Err(Failure::rdma(e)));
            }
        }
    }

    fn start_put(&mut self, tag: u64, local: *mut u8, len: usize) {
        let task = self.tasks.get_mut(tag).expect("live task");
        let started = task.ep.unpack_rkey(&task.rkey_bytes).and_then(|rkey| {
            // SAFETY: the slot holds the `len` bytes just read at `local`; the task keeps the
            // slot until both the put and the flush after it have completed.
            let put = unsafe { task.ep.put(local, len, task.wire.addr, &rkey) }?;
            task.rkey = Some(rkey);
            let flush = task.ep.flush()?;
            Ok((put, flush))
        });
        match started {
            Ok((put, flush)) => task.stage = Stage::Sending(put, flush),
            Err(e) => {
                let slot = task.slot.take();
                if let Some(s) = slot {
                    self.store.release_slot(s);
                }
                self.finish(tag, Err(Failure::rdma(e)));
            }
        }
    }

    /// Moves tasks whose network transfer finished to their next stage; whether any moved.
    /// A transfer still running at its deadline (a client that stopped answering) or whose
    /// client connection failed (a client that died) is cancelled: its request completes with
    /// an error and the task frees its slot.
    pub(super) fn advance_transfers(&mut self) -> bool {
        let mut moved = false;
        let now = Instant::now();
        for tag in 0..self.tasks.capacity() as u64 {
            let Some(task) = self.tasks.get_mut(tag) else {
                continue;
            };
            // A client whose connection failed (a killed rank) will never complete its
            // transfers: cancel them now instead of holding the slot until the deadline.
            let client_gone = task.ep.failed().is_some();
            if client_gone && !matches!(task.stage, Stage::Disk) {
                let at = *task.abandon_at.get_or_insert(now + DEAD_CLIENT_GRACE);
                if now >= at {
                    self.abandon(tag);
                    moved = true;
                    continue;
                }
            }
            if now >= task.deadline || client_gone {
                match &task.stage {
                    Stage::Disk => {}
                    Stage::Fetching(r) => r.cancel(),
                    Stage::Sending(put, flush) => {
                        put.cancel();
                        flush.cancel();
                    }
                    Stage::Replying(r) => r.cancel(),
                }
            }
            let result = match &task.stage {
                Stage::Disk => continue,
                Stage::Fetching(r) => match r.result() {
                    None => continue,
                    Some(res) => res.map(|_| ()),
                },
                Stage::Replying(r) => match r.result() {
                    None => continue,
                    Some(res) => res.map(|_| ()),
                },
                Stage::Sending(put, flush) => match (put.result(), flush.result()) {
                    (Some(a), Some(b)) => a.and(b).map(|_| ()),
                    _ => continue,
                },
            };
            moved = true;
            self.transfer_done(tag, result);
        }
        moved
    }

    /// Gives up the transfer of task `tag`, whose client connection failed and whose
    /// requests did not complete when cancelled: they are left to UCX, the slot is reused.
    fn abandon(&mut self, tag: u64) {
        let mut task = self.tasks.remove(tag).expect("live task");
        match std::mem::replace(&mut task.stage, Stage::Disk) {
            Stage::Disk => {}
            Stage::Fetching(r) | Stage::Replying(r) => r.detach(),
            Stage::Sending(put, flush) => {
                put.detach();
                flush.detach();
            }
        }
        if let Some(slot) = task.slot.take() {
            self.store.release_slot(slot);
        }
        self.stats.errors += 1;
        log::warn!(
            "request {} of a failed client connection abandoned after cancelling",
            task.request_id
        );
    }

    fn transfer_done(&mut self, tag: u64, result: crate::rdma::Result<()>) {
        let task = self.tasks.get_mut(tag).expect("live task");
        let fetching = matches!(task.stage, Stage::Fetching(_));
        let replied = matches!(task.stage, Stage::Replying(_));
        task.stage = Stage::Disk;
        let slot = task.slot.take().expect("a transfer holds its slot");
        if replied {
            // The reply is out (or its send failed, and the client's deadline reports it).
            self.store.release_slot(slot);
            if let Err(e) = result {
                log::debug!("data reply {} failed: {e}", task.request_id);
                self.stats.errors += 1;
            }
            self.tasks.remove(tag);
            return;
        }
        match result {
            Ok(()) if fetching => {
                let (key, offset, len) = span(&task.wire);
                self.store.submit_write(tag, key, offset, len, slot);
            }
            Ok(()) => {
                let (len, chunk_len) = (task.wire.len, task.chunk_len);
                self.store.release_slot(slot);
                self.finish_with(tag, len, chunk_len, Vec::new());
            }
            Err(e) => {
                self.store.release_slot(slot);
                self.finish(tag, Err(Failure::rdma(e)));
            }
        }
    }

    /// Ends task `tag` with `result` (bytes, or the failure) and answers its client.
    pub(super) fn finish(&mut self, tag: u64, result: Result<u64, Failure>) {
        match result {
            Ok(value) => self.finish_with(tag, value, 0, Vec::new()),
            Err(f) => {
                let Some(task) = self.tasks.remove(tag) else {
                    return;
                };
                log::debug!("request {} failed: {f}", task.request_id);
                let reply = WireReply {
                    status: -f.errno,
                    ..WireReply::default()
                };
                send_on(
                    &task.ep,
                    &mut self.stats,
                    task.request_id,
                    reply,
                    Vec::new(),
                );
            }
        }
    }

    fn finish_with(&mut self, tag: u64, value: u64, aux: u64, data: Vec<u8>) {
        let Some(task) = self.tasks.remove(tag) else {
            return;
        };
        debug_assert!(task.slot.is_none(), "a finished task released its slot");
        let reply = WireReply {
            value,
            aux,
            ..WireReply::default()
        };
        send_on(&task.ep, &mut self.stats, task.request_id, reply, data);
    }
}

fn span(wire: &WireRequest) -> (ChunkKey, u64, usize) {
    (
        ChunkKey::new(wire.file_id, wire.chunk_index),
        wire.offset,
        wire.len as usize,
    )
}
