//! One shard: a thread that owns a chunk store, a metadata service and a UCX worker, and
//! serves requests from its poll loop.
//!
//! # The loop
//!
//! Each turn progresses the worker, takes the arrived requests, hands queued disk work to the
//! ring, routes disk completions and checks the RMA transfers in flight; nothing in it blocks.
//! When a few turns in a row find nothing to do, the shard arms the worker and sleeps in
//! `poll(2)` on three descriptors: the worker's event fd, the eventfd the ring signals on
//! completions, and the process's stop eventfd. A timeout bounds the sleep so dead client
//! connections are swept.
//!
//! # Flow control and memory
//!
//! Data requests need a slab slot. The slab has a fixed number of slots, so a shard's memory is
//! bounded by its configuration; when every slot is taken, requests wait in a FIFO of at most
//! `queue_depth` entries, and beyond it the client is answered `EAGAIN` (busy) and retries after
//! a back-off. Tasks (requests being served) live in a table sized at start.
//!
//! # Security
//!
//! Every request carries the cluster secret, compared in constant time; requests without it
//! are logged and dropped (or answered `EACCES` on a known connection). Connect requests are
//! the only ones that make the shard open an endpoint, and only with the secret.
//!
//! # Stop
//!
//! Once a stop is requested the shard removes its registry entry, answers new requests with
//! `ESHUTDOWN`, finishes the tasks and queue it has (up to the drain timeout), makes every
//! chunk it wrote and its metadata durable, and returns. Teardown order: tasks, connections,
//! the UCX registration of the slab, the store (ring, files, slab), the worker, the context.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::Zeroable;

use crate::proto::{self, Op, WireReply, WireStats};
use crate::rdma::rpc::{self, Frame, Kind};
use crate::rdma::{Context, Endpoint, Incoming, MemRegion, Worker};
use crate::storage::{ChunkStore, ChunkStoreConfig};

use super::data::{Task, TaskTable};
use super::meta::MetaService;
use super::{Control, Failure};

/// Everything a shard needs to start.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Rank of the server.
    pub rank: u32,
    /// Index of this shard in its server.
    pub shard: u32,
    /// This shard's index among all targets of the cluster.
    pub target: u32,
    /// The shard's own directory (chunks and metadata).
    pub data_dir: PathBuf,
    /// Largest chunk, in bytes (also the slot size).
    pub chunk_size_bytes: usize,
    /// Slots of the slab.
    pub slot_count: usize,
    /// Payloads up to this size travel inline in messages.
    pub eager_threshold_bytes: usize,
    /// Requests that may wait for a slot.
    pub queue_depth: usize,
    /// The cluster secret.
    pub secret: [u8; 16],
    /// UCX settings for this shard's context (e.g. `NET_DEVICES` of its NIC).
    pub ucx_settings: Vec<(String, String)>,
    /// How long a stop waits for in-flight work.
    pub drain_timeout: Duration,
    /// How long a network transfer of a request may take before it is cancelled.
    pub transfer_timeout: Duration,
}

/// What the process does when a shard becomes ready and when it stops.
pub trait ShardHooks: Send {
    /// The shard can serve at `address` (its UCX worker address): publish it.
    fn publish(&mut self, address: &[u8]) -> Result<(), String>;
    /// The shard stops: remove what `publish` made.
    fn unpublish(&mut self);
}

/// Totals of a shard that stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardSummary {
    /// Requests served.
    pub ops: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Bytes read.
    pub bytes_read: u64,
}

const SPIN_TURNS: u32 = 64;
const SLEEP_MAX: Duration = Duration::from_millis(1);
const SWEEP_EVERY: Duration = Duration::from_millis(200);

pub(super) struct Conn {
    pub ep: Endpoint,
    generation: u32,
}

/// A request waiting for a slot.
pub(super) struct Waiting {
    pub conn: usize,
    pub request_id: u64,
    pub wire: proto::WireRequest,
    pub rkey: Vec<u8>,
    pub message: Incoming,
}

/// Running counters.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Stats {
    pub ops: u64,
    pub errors: u64,
    pub inline_copied: u64,
    pub queue_max: u64,
    pub busy: u64,
}

/// The state of a running shard. Field order is drop order (see the module docs).
pub(super) struct Shard {
    pub tasks: TaskTable,
    pub waiting: VecDeque<Waiting>,
    pub removals: Vec<(usize, u64, u64)>,
    pub conns: Vec<Option<Conn>>,
    _region: MemRegion,
    pub store: ChunkStore,
    pub meta: MetaService,
    pub worker: Worker,
    _context: Arc<Context>,
    ring_fd: OwnedFd,
    pub config: ShardConfig,
    pub stats: Stats,
    next_generation: u32,
    pub stopping: bool,
    control: Arc<Control>,
}

/// Runs a shard until a stop is requested through `control`. Call it on the shard's own
/// (already pinned) thread: the slab is first touched here.
pub fn run_shard(
    config: ShardConfig,
    control: Arc<Control>,
    mut hooks: Box<dyn ShardHooks>,
) -> Result<ShardSummary, Failure> {
    let mut shard = Shard::open(config, control.clone())?;
    let address = shard.worker.address().map_err(Failure::rdma)?;
    hooks
        .publish(&address)
        .map_err(|e| Failure::new(libc::EIO, format!("publishing the shard: {e}")))?;
    log::info!(
        "shard {}.{} (target {}) serving: {} slots of {} bytes in {}",
        shard.config.rank,
        shard.config.shard,
        shard.config.target,
        shard.config.slot_count,
        shard.config.chunk_size_bytes,
        shard.config.data_dir.display()
    );
    shard.serve(&control, &mut *hooks)?;
    let summary = shard.summary();
    log::info!(
        "shard {}.{} stopped: {} requests, {} errors, {} bytes written, {} read",
        shard.config.rank,
        shard.config.shard,
        summary.ops,
        summary.errors,
        summary.bytes_written,
        summary.bytes_read
    );
    Ok(summary)
}

fn new_eventfd() -> Result<OwnedFd, Failure> {
    // SAFETY: eventfd has no memory preconditions; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Failure::new(libc::EIO, format!("eventfd: {e}")));
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Shard {
    fn open(config: ShardConfig, control: Arc<Control>) -> Result<Shard, Failure> {
        let mut store_config = ChunkStoreConfig::new(config.data_dir.join("chunks"));
        store_config.chunk_size_bytes = config.chunk_size_bytes;
        store_config.slot_count = config.slot_count;
        store_config.ring_entries = 256;
        let mut store = ChunkStore::open(store_config).map_err(Failure::storage)?;
        let ring_fd = new_eventfd()?;
        store
            .register_eventfd(ring_fd.as_raw_fd())
            .map_err(Failure::storage)?;
        let meta = MetaService::open(&config.data_dir.join("meta"), config.rank, config.shard)
            .map_err(Failure::storage)?;
        // Caller's settings come last and win.
        let connect = crate::rdma::context::nonblocking_connect_settings(&config.ucx_settings);
        let settings: Vec<(&str, &str)> = connect
            .iter()
            .chain(&config.ucx_settings)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let context = Context::with_settings(&settings).map_err(Failure::rdma)?;
        let worker = Worker::new(&context).map_err(Failure::rdma)?;
        // Listen on every id a peer may send before the address is published.
        worker.listen(proto::AM_REQUEST).map_err(Failure::rdma)?;
        worker.listen(proto::AM_REPLY).map_err(Failure::rdma)?;
        let (base, len) = store.slab().region();
        // SAFETY: the slab stays mapped while the store lives, and the region is dropped
        // before the store (field order); transfers into it finish before tasks are dropped.
        let region = unsafe { MemRegion::register(&context, base, len) }.map_err(Failure::rdma)?;
        Ok(Shard {
            tasks: TaskTable::new(config.slot_count * 2 + 16),
            waiting: VecDeque::with_capacity(config.queue_depth),
            removals: Vec::new(),
            conns: Vec::new(),
            _region: region,
            store,
            meta,
            worker,
            _context: context,
            ring_fd,
            config,
            stats: Stats::default(),
            next_generation: 1,
            stopping: false,
            control,
        })
    }

    fn summary(&self) -> ShardSummary {
        let c = self.store.counters();
        ShardSummary {
            ops: self.stats.ops,
            errors: self.stats.errors,
            bytes_written: c.bytes_written,
            bytes_read: c.bytes_read,
        }
    }

    fn serve(&mut self, control: &Control, hooks: &mut dyn ShardHooks) -> Result<(), Failure> {
        let mut idle_turns = 0u32;
        let mut last_sweep = Instant::now();
        let mut drain_deadline = None;
        loop {
            let busy = self.turn()?;
            if control.stop_requested() && !self.stopping {
                self.stopping = true;
                hooks.unpublish();
                drain_deadline = Some(Instant::now() + self.config.drain_timeout);
                log::info!("shard {}.{} stopping", self.config.rank, self.config.shard);
            }
            if let Some(deadline) = drain_deadline {
                let drained = self.tasks.is_empty() && self.waiting.is_empty();
                if drained || Instant::now() >= deadline {
                    if !drained {
                        log::error!("shard stops with {} tasks unfinished", self.tasks.len());
                    }
                    return self.flush_all();
                }
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                self.sweep();
                last_sweep = Instant::now();
            }
            if busy {
                idle_turns = 0;
                continue;
            }
            idle_turns += 1;
            if idle_turns >= SPIN_TURNS {
                self.sleep(control)?;
                idle_turns = 0;
            }
        }
    }

    /// One pass over every source of work; whether anything happened.
    fn turn(&mut self) -> Result<bool, Failure> {
        let mut busy = self.worker.progress() > 0;
        while let Some(message) = self.worker.take_incoming() {
            busy = true;
            self.on_message(message);
        }
        busy |= self.poll_store()?;
        busy |= self.advance_transfers();
        busy |= self.start_waiting();
        if !self.removals.is_empty() {
            self.retry_removals();
        }
        Ok(busy)
    }

    fn sleep(&mut self, control: &Control) -> Result<(), Failure> {
        if !self.worker.arm().map_err(Failure::rdma)? {
            return Ok(());
        }
        let worker_fd = self.worker.event_fd().map_err(Failure::rdma)?;
        let mut fds = [
            poll_fd(worker_fd),
            poll_fd(self.ring_fd.as_raw_fd()),
            poll_fd(control.wake_fd()),
        ];
        let timeout_ms = SLEEP_MAX.as_millis() as i32;
        // SAFETY: fds is a live array of 3 pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Failure::new(libc::EIO, format!("poll: {e}")));
            }
        }
        if fds[1].revents != 0 {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd.
            let _ = unsafe { libc::read(fds[1].fd, (&mut count as *mut u64).cast(), 8) };
        }
        Ok(())
    }

    /// Drops connections whose client is gone.
    fn sweep(&mut self) {
        for slot in self.conns.iter_mut() {
            if let Some(conn) = slot {
                if let Some(e) = conn.ep.failed() {
                    log::info!("client connection closed: {e}");
                    *slot = None;
                }
            }
        }
    }

    /// Syncs every chunk written since its last sync and the metadata, at stop.
    fn flush_all(&mut self) -> Result<(), Failure> {
        let files = self.store.dirty_files();
        for (i, file_id) in files.iter().enumerate() {
            self.store.submit_sync(i as u64, *file_id, None);
        }
        let mut done = Vec::new();
        while done.len() < files.len() {
            self.store.wait(&mut done, 1).map_err(Failure::storage)?;
        }
        for c in done {
            if let Err(e) = c.result {
                log::error!("sync at stop failed: {e}");
            }
        }
        self.meta.sync()
    }

    fn conn_id(&self, index: usize) -> u64 {
        let generation = self.conns[index].as_ref().map_or(0, |c| c.generation);
        (u64::from(generation) << 32) | index as u64
    }

    fn conn_index(&self, conn_id: u64) -> Option<usize> {
        let index = (conn_id & 0xffff_ffff) as usize;
        let generation = (conn_id >> 32) as u32;
        match self.conns.get(index) {
            Some(Some(c)) if c.generation == generation => Some(index),
            _ => None,
        }
    }

    fn on_message(&mut self, mut message: Incoming) {
        let header = std::mem::take(&mut message.header);
        let (frame, rest) = match Frame::decode(&header) {
            Ok((frame, rest)) if frame.kind == Kind::Request => (frame, rest),
            Ok(_) => return log::warn!("dropped a reply sent to a shard"),
            Err(e) => return log::warn!("dropped a message: {e}"),
        };
        let request = match proto::decode_request(rest) {
            Ok(r) => r,
            Err(e) => return log::warn!("dropped request {}: {e}", frame.request_id),
        };
        if !constant_time_eq(&request.wire.secret, &self.config.secret) {
            return log::warn!("dropped request {}: wrong cluster secret", frame.request_id);
        }
        if request.op == Op::Connect {
            return self.on_connect(frame.request_id, &message);
        }
        let Some(conn) = self.conn_index(request.wire.conn_id) else {
            return log::warn!("dropped request {}: unknown connection", frame.request_id);
        };
        self.stats.ops += 1;
        if request.wire.target != self.config.target {
            let f = Failure::new(libc::EINVAL, "request for another target");
            return self.reply_err(conn, frame.request_id, f);
        }
        if self.stopping {
            let f = Failure::new(libc::ESHUTDOWN, "the server is stopping");
            return self.reply_err(conn, frame.request_id, f);
        }
        let rkey = request.rkey.to_vec();
        self.dispatch(conn, frame.request_id, &request, rkey, message);
    }

    fn on_connect(&mut self, request_id: u64, message: &Incoming) {
        let Some(address) = message
            .data()
            .filter(|a| a.len() <= proto::ADDRESS_MAX_BYTES)
        else {
            return log::warn!("dropped a connect request without a usable address");
        };
        let ep = match Endpoint::connect(&self.worker, address) {
            Ok(ep) => ep,
            Err(e) => return log::error!("connecting back to a client failed: {e}"),
        };
        let index = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        self.conns[index] = Some(Conn {
            ep,
            generation: self.next_generation,
        });
        let mut reply = WireReply::zeroed();
        reply.value = self.conn_id(index);
        reply.aux = self.config.eager_threshold_bytes as u64;
        reply.inode.chunk_size = self.config.chunk_size_bytes as u64;
        self.send_reply(index, request_id, reply, Vec::new());
    }

    fn dispatch(
        &mut self,
        conn: usize,
        request_id: u64,
        request: &proto::Request<'_>,
        rkey: Vec<u8>,
        message: Incoming,
    ) {
        let wire = request.wire;
        let result = match request.op {
            Op::Write | Op::Read => {
                let waiting = Waiting {
                    conn,
                    request_id,
                    wire,
                    rkey,
                    message,
                };
                return self.enqueue(waiting);
            }
            Op::Fsync => return self.start_sync(conn, request_id, wire.file_id),
            Op::RemoveChunks => return self.remove_chunks(conn, request_id, wire.file_id),
            Op::Stats => return self.send_stats(conn, request_id),
            Op::Disconnect => {
                self.send_reply(conn, request_id, WireReply::zeroed(), Vec::new());
                self.conns[conn] = None;
                return;
            }
            Op::Shutdown => {
                log::info!("shutdown requested by a client");
                self.control.request_stop();
                Ok(WireReply::zeroed())
            }
            Op::AddEntry
            | Op::RemoveEntry
            | Op::Mkdir
            | Op::Rmdir
            | Op::Readdir
            | Op::PutInode
            | Op::DeleteInode
            | Op::Truncate
            | Op::TruncateChunks => {
                return self.namespace(conn, request_id, request, &message);
            }
            _ => self.metadata(request),
        };
        match result {
            Ok(reply) => self.send_reply(conn, request_id, reply, Vec::new()),
            Err(f) => self.reply_err(conn, request_id, f),
        }
    }

    fn metadata(&mut self, request: &proto::Request<'_>) -> Result<WireReply, Failure> {
        let path = crate::path::normalize_bytes(request.path)
            .map_err(|e| Failure::new(e.errno(), e.to_string()))?;
        let wire = &request.wire;
        let mut reply = WireReply::zeroed();
        reply.inode = match request.op {
            Op::Create => {
                let chunk = self.create_chunk_size(wire.len)?;
                let excl = wire.flags & proto::FLAG_EXCL != 0;
                let (inode, existed) = self.meta.create(&path, wire.mode, chunk, excl)?;
                if existed {
                    reply.flags |= proto::REPLY_EXISTED;
                }
                inode
            }
            Op::Lookup => self.meta.lookup(&path)?,
            Op::Unlink => self.meta.unlink(&path)?,
            Op::SetSize => {
                let mtime = wire.len as i64;
                let inode = self
                    .meta
                    .set_size(&path, wire.file_id, wire.offset, mtime)?;
                if wire.flags & proto::FLAG_SYNC != 0 {
                    self.meta.sync()?;
                }
                inode
            }
            Op::SetAttr => {
                let mode = (wire.flags & proto::FLAG_SET_MODE != 0).then_some(wire.mode);
                let atime = (wire.flags & proto::FLAG_SET_ATIME != 0).then_some(wire.offset as i64);
                let mtime = (wire.flags & proto::FLAG_SET_MTIME != 0).then_some(wire.len as i64);
                self.meta.set_attr(&path, mode, atime, mtime)?
            }
            op => {
                return Err(Failure::new(
                    libc::EINVAL,
                    format!("{op:?} is not metadata"),
                ))
            }
        };
        Ok(reply)
    }

    fn create_chunk_size(&self, requested: u64) -> Result<u64, Failure> {
        let max = self.config.chunk_size_bytes as u64;
        match requested {
            0 => Ok(max),
            n if n % crate::storage::BLOCK_SIZE as u64 == 0 && n <= max => Ok(n),
            n => Err(Failure::new(
                libc::EINVAL,
                format!("chunk size {n} is not a multiple of 4096 of at most {max}"),
            )),
        }
    }

    fn send_stats(&mut self, conn: usize, request_id: u64) {
        let counters = self.store.counters();
        let usage = self.store.usage().ok();
        let stats = WireStats {
            rank: self.config.rank,
            shard: self.config.shard,
            ops: self.stats.ops,
            errors: self.stats.errors,
            bytes_written: counters.bytes_written,
            bytes_read: counters.bytes_read,
            bytes_copied: counters.bytes_copied + self.stats.inline_copied,
            queue_depth: self.waiting.len() as u64,
            queue_depth_max: self.stats.queue_max,
            busy_rejections: self.stats.busy,
            slots: self.config.slot_count as u64,
            free_slots: self.store.slab().free_slots() as u64,
            connections: self.conns.iter().flatten().count() as u64,
            inodes: self.meta.inode_count(),
            chunk_files: usage.map_or(0, |u| u.chunk_files),
            total_bytes: usage.map_or(0, |u| u.total_bytes),
            free_bytes: usage.map_or(0, |u| u.free_bytes),
            available_bytes: usage.map_or(0, |u| u.available_bytes),
        };
        let data = bytemuck::bytes_of(&stats).to_vec();
        self.send_reply(conn, request_id, WireReply::zeroed(), data);
    }

    fn remove_chunks(&mut self, conn: usize, request_id: u64, file_id: u64) {
        match self.store.remove_file(file_id) {
            Ok(n) => {
                let mut reply = WireReply::zeroed();
                reply.value = n;
                self.send_reply(conn, request_id, reply, Vec::new());
            }
            Err(e) if e.errno() == libc::EBUSY => self.removals.push((conn, request_id, file_id)),
            Err(e) => self.reply_err(conn, request_id, Failure::storage(e)),
        }
    }

    fn retry_removals(&mut self) {
        for (conn, request_id, file_id) in std::mem::take(&mut self.removals) {
            self.remove_chunks(conn, request_id, file_id);
        }
    }

    fn start_sync(&mut self, conn: usize, request_id: u64, file_id: u64) {
        let ep = self.conns[conn].as_ref().map(|c| c.ep.clone());
        let Some(ep) = ep else { return };
        let task = Task::sync(conn, ep, request_id);
        match self.tasks.insert(task) {
            Some(tag) => self.store.submit_sync(tag, file_id, None),
            None => self.reply_err(conn, request_id, busy()),
        }
    }

    pub(super) fn reply_err(&mut self, conn: usize, request_id: u64, failure: Failure) {
        if failure.errno != libc::EAGAIN {
            log::debug!("request {request_id} failed: {failure}");
        }
        let mut reply = WireReply::zeroed();
        reply.status = -failure.errno;
        self.send_reply(conn, request_id, reply, Vec::new());
    }

    pub(super) fn send_reply(&mut self, conn: usize, id: u64, reply: WireReply, data: Vec<u8>) {
        let Some(c) = self.conns.get(conn).and_then(Option::as_ref) else {
            return;
        };
        send_on(&c.ep, &mut self.stats, id, reply, data);
    }
}

/// Sends a reply on `ep`, counting errors.
pub(super) fn send_on(ep: &Endpoint, stats: &mut Stats, id: u64, reply: WireReply, data: Vec<u8>) {
    if reply.status < 0 {
        stats.errors += 1;
    }
    match rpc::reply(ep, proto::AM_REPLY, id, bytemuck::bytes_of(&reply), data) {
        Ok(request) => request.detach(),
        Err(e) => log::debug!("reply {id} not sent: {e}"),
    }
}

/// The failure answered when the shard is full.
pub(super) fn busy() -> Failure {
    Failure::new(libc::EAGAIN, "shard busy")
}

fn poll_fd(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn constant_time_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}
