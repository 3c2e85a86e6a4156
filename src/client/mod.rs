//! The BenchFS client: files on a cluster of shards, reached through the registry.
//!
//! # Connections
//!
//! [`Client::connect`] waits (with a deadline) until the registry lists every target of the
//! cluster, reads the cluster secret, and stops there: endpoints to targets are made on first
//! use, so a client's memory grows with the targets it talks to, not with the cluster. A
//! connection whose endpoint failed is dropped and made again, from a fresh registry entry,
//! on next use (a restarted server publishes a new address).
//!
//! # Requests
//!
//! Every request has a deadline ([`ClientConfig::request_timeout`]); replies are matched by
//! request id. Large transfers are cut at chunk boundaries and the pieces, each addressed to
//! the target of its chunk, are kept in flight together up to a window
//! ([`ClientConfig::window`]). A target that answers "busy" gets the piece again after a
//! growing back-off, until the deadline.
//!
//! # Zero copy
//!
//! Pieces above the shard's inline threshold move without a copy, one of two ways
//! ([`DataPath`]): by default with the messages themselves (the caller's buffer is the data
//! of the write request; the read reply's data is received straight into the caller's buffer;
//! UCX uses rendezvous, with RDMA where the transport has it); or by RMA driven by the shard,
//! where the request carries the address of the caller's buffer and the packed key of its
//! registration, taken from a registration cache ([`crate::rdma::RegCache`]) so a buffer used
//! again is not registered again. Smaller pieces travel inline, copied.

//! # Threads
//!
//! A client is not `Send`: it owns a UCX worker driven by the thread that made it.

mod error;
mod file;
mod namespace;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::Zeroable;

use crate::proto::{self, Op, WireReply, WireRequest};
use crate::rdma::rpc::{Calls, Reply};
use crate::rdma::{Context, Endpoint, RegCache, Worker};
use crate::registry::{Registry, TargetEntry};

pub use error::{Error, Result};
pub use file::{File, OpenFlags, Stat, StatFs};
pub use namespace::{DirEntry, EntryKind};

/// How data moves between clients and shards (both ways are zero-copy on the shard, which
/// lands data in its slab slot and sends it from there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPath {
    /// Data travels with the messages: writes send the caller's buffer with the request and
    /// reads get it with the reply, by rendezvous above the transport's eager size (UCX pulls
    /// it with RDMA where the transport has it, registering the caller's memory through its
    /// own registration cache). The default: the fastest here over TCP and shared memory.
    Message,
    /// The shard drives RMA: requests carry the address of the caller's buffer and the key of
    /// its registration from this client's [`RegCache`]; the shard gets write data from it and
    /// puts read data into it.
    Rma,
}

impl std::str::FromStr for DataPath {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<DataPath, String> {
        match s {
            "message" => Ok(DataPath::Message),
            "rma" => Ok(DataPath::Rma),
            other => Err(format!(
                "data path {other:?} is neither \"message\" nor \"rma\""
            )),
        }
    }
}

/// Settings of a client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The registry directory of the cluster.
    pub registry_dir: PathBuf,
    /// Servers to wait for; `None` takes the count the servers published.
    pub expected_servers: Option<u32>,
    /// How long [`Client::connect`] waits for the cluster.
    pub connect_timeout: Duration,
    /// Deadline of each operation.
    pub request_timeout: Duration,
    /// Chunk size of files this client creates; 0 takes the server's.
    pub chunk_size_bytes: u64,
    /// Requests kept in flight at once by one operation.
    pub window: usize,
    /// Largest piece of a transfer sent as one request (transfers are also cut at chunk
    /// boundaries); several pieces of one transfer are in flight together, so disk and network
    /// work of one large transfer overlap. Default 1 MiB.
    pub piece_bytes: u64,
    /// How data moves (see [`DataPath`]).
    pub data_path: DataPath,
    /// Bytes the registration cache keeps registered at most.
    pub regcache_bytes: usize,
    /// UCX settings of the client's context.
    pub ucx_settings: Vec<(String, String)>,
    /// The client will be used by several threads one at a time (its owner serialises them
    /// and moves it between threads): its UCX worker is created for that.
    pub serialized: bool,
}

impl ClientConfig {
    /// Defaults for the cluster whose registry is `registry_dir`.
    pub fn new(registry_dir: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig {
            registry_dir: registry_dir.into(),
            expected_servers: None,
            connect_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            chunk_size_bytes: 0,
            window: 32,
            piece_bytes: 1 << 20,
            data_path: DataPath::Message,
            regcache_bytes: 1 << 30,
            ucx_settings: Vec::new(),
            serialized: false,
        }
    }

    /// Defaults overridden by `BENCHFS_SERVERS_EXPECTED`, `BENCHFS_TIMEOUT_MS`,
    /// `BENCHFS_PIECE_BYTES` and `BENCHFS_DATA_PATH` (`message` or `rma`).
    pub fn from_env(registry_dir: impl Into<PathBuf>) -> Result<ClientConfig> {
        let mut config = ClientConfig::new(registry_dir);
        let number = |name: &str| -> Result<Option<u64>> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::Invalid(format!("{name}={v:?} is not a number"))),
                Err(_) => Ok(None),
            }
        };
        if let Some(n) = number("BENCHFS_SERVERS_EXPECTED")? {
            config.expected_servers = Some(n as u32);
        }
        if let Some(ms) = number("BENCHFS_TIMEOUT_MS")? {
            config.request_timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(bytes) = number("BENCHFS_PIECE_BYTES")? {
            config.piece_bytes = bytes.max(4096);
        }
        if let Ok(path) = std::env::var("BENCHFS_DATA_PATH") {
            config.data_path = path.parse().map_err(Error::Invalid)?;
        }
        Ok(config)
    }
}

struct Conn {
    ep: Endpoint,
    conn_id: u64,
    inline_max: u64,
}

/// One request of a batch: where it goes and what it says.
#[derive(Clone)]
pub(crate) struct Outgoing {
    pub target: usize,
    pub wire: WireRequest,
    pub path: Vec<u8>,
    pub rkey: Vec<u8>,
    pub payload: Vec<u8>,
    /// Data sent from the caller's memory without a copy: address and length, valid for the
    /// whole batch (the caller's buffer is borrowed by the operation).
    pub raw: Option<(*const u8, usize)>,
}

/// A client of one cluster. Field order is drop order: connections and cached registrations
/// go before the worker and the context.
pub struct Client {
    calls: Calls,
    conns: Vec<Option<Conn>>,
    arrived: HashMap<u64, crate::rdma::Result<Reply>>,
    regcache: RegCache,
    worker: Worker,
    _context: Arc<Context>,
    address: Vec<u8>,
    targets: Vec<TargetEntry>,
    registry: Registry,
    secret: [u8; 16],
    config: ClientConfig,
    requests_sent: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("targets", &self.targets.len())
            .field("connected", &self.conns.iter().flatten().count())
            .finish()
    }
}

const SPIN_TURNS: u32 = 32;

impl Client {
    /// Waits for the cluster described by `config` and returns a client of it.
    pub fn connect(config: ClientConfig) -> Result<Client> {
        let registry = Registry::open_existing(&config.registry_dir)?;
        let deadline = Instant::now() + config.connect_timeout;
        let targets = registry.wait(config.expected_servers, deadline)?;
        let secret = *registry.read_secret()?.as_bytes();
        // Caller's settings come last and win.
        let connect = crate::rdma::context::nonblocking_connect_settings(&config.ucx_settings);
        let settings: Vec<(&str, &str)> = connect
            .iter()
            .chain(&config.ucx_settings)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let context = Context::with_settings(&settings)?;
        let worker = Worker::with_thread_mode(&context, config.serialized)?;
        worker.listen(proto::AM_REPLY)?;
        worker.listen(proto::AM_REQUEST)?;
        let address = worker.address()?;
        let regcache = RegCache::new(&context, config.regcache_bytes);
        Ok(Client {
            calls: Calls::new(),
            conns: (0..targets.len()).map(|_| None).collect(),
            arrived: HashMap::new(),
            regcache,
            worker,
            _context: context,
            address,
            targets,
            registry,
            secret,
            config,
            requests_sent: 0,
        })
    }

    /// Number of targets of the cluster.
    pub fn target_count(&self) -> usize {
        self.targets.len()
    }

    /// The registry entries of the targets, in target order.
    pub fn targets(&self) -> &[TargetEntry] {
        &self.targets
    }

    /// Targets this client has a connection to.
    pub fn connected_targets(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    /// The client's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The registration cache (for statistics).
    pub fn regcache(&self) -> &RegCache {
        &self.regcache
    }

    /// The registration cache, to pin or drop buffers ahead of time.
    pub fn regcache_mut(&mut self) -> &mut RegCache {
        &mut self.regcache
    }

    fn describe(&self, target: usize) -> String {
        match self.targets.get(target) {
            Some(t) => format!(
                "target {target} (server {} shard {} on {})",
                t.rank, t.shard, t.host
            ),
            None => format!("target {target}"),
        }
    }

    /// The connection to `target`, made now if needed.
    fn conn(&mut self, target: usize) -> Result<&Conn> {
        let failed = self.conns[target]
            .as_ref()
            .is_some_and(|c| c.ep.failed().is_some());
        if failed {
            self.conns[target] = None;
            self.refresh_target(target);
        }
        if self.conns[target].is_none() {
            let conn = match self.open_conn(target) {
                Ok(conn) => conn,
                Err(e) => {
                    // The next attempt takes the newest entry: a server that restarted after
                    // this attempt (or was not yet published when the failed endpoint was
                    // dropped) has a new address.
                    self.refresh_target(target);
                    return Err(e);
                }
            };
            self.conns[target] = Some(conn);
        }
        Ok(self.conns[target].as_ref().expect("just made"))
    }

    /// Closes the connection to `target` at once (transfers on it can no longer touch the
    /// caller's memory); the next request reconnects.
    pub(crate) fn abort_conn(&mut self, target: usize) {
        if let Some(conn) = self.conns[target].take() {
            conn.ep.abort();
        }
    }

    /// Takes a newer registry entry of `target` if its server published one.
    fn refresh_target(&mut self, target: usize) {
        let (rank, shard) = (self.targets[target].rank, self.targets[target].shard);
        if let Ok(entries) = self.registry.list() {
            if let Some(e) = entries
                .into_iter()
                .find(|e| e.rank == rank && e.shard == shard)
            {
                self.targets[target] = e;
            }
        }
    }

    fn open_conn(&mut self, target: usize) -> Result<Conn> {
        let transport = |source| Error::Transport {
            op: "connect",
            target: String::new(),
            source,
        };
        let ep = Endpoint::connect(&self.worker, &self.targets[target].address)
            .map_err(transport)
            .map_err(|e| self.name_target(e, target))?;
        let wire = self.wire(target, Op::Connect, 0);
        let header = proto::encode_request(wire, &[], &[]);
        let timeout = self.config.request_timeout;
        let id = self
            .calls
            .call(
                &ep,
                proto::AM_REQUEST,
                &header,
                self.address.clone(),
                timeout,
            )
            .map_err(transport)
            .map_err(|e| self.name_target(e, target))?;
        let (reply, _) = self.wait_reply(id, "connect", target)?;
        Ok(Conn {
            ep,
            conn_id: reply.value,
            inline_max: reply.aux,
        })
    }

    fn name_target(&self, mut e: Error, target: usize) -> Error {
        let name = self.describe(target);
        match &mut e {
            Error::Transport { target: t, .. }
            | Error::TimedOut { target: t, .. }
            | Error::Remote { target: t, .. } => *t = name,
            _ => {}
        }
        e
    }

    /// A request's fixed part for `target`, with the secret and identity filled in.
    fn wire(&self, target: usize, op: Op, conn_id: u64) -> WireRequest {
        let t = &self.targets[target];
        WireRequest {
            secret: self.secret,
            op: op as u16,
            target: (t.rank << 8) | t.shard,
            conn_id,
            ..WireRequest::zeroed()
        }
    }

    /// A request's fixed part for `target` on its connection (made now if needed), and the
    /// target's inline threshold.
    pub(crate) fn prepare(&mut self, target: usize, op: Op) -> Result<(WireRequest, u64)> {
        let conn = self.conn(target)?;
        let (conn_id, inline_max) = (conn.conn_id, conn.inline_max);
        Ok((self.wire(target, op, conn_id), inline_max))
    }

    /// Sends `out`; returns its request id and, for data sent from caller memory, the send
    /// to keep until the reply.
    fn send(&mut self, out: &Outgoing) -> Result<(u64, Option<crate::rdma::Request>)> {
        let conn = self.conns[out.target].as_ref().expect("prepared");
        let header = proto::encode_request(out.wire, &out.path, &out.rkey);
        let timeout = self.config.request_timeout;
        self.requests_sent += 1;
        let sent = match out.raw {
            // SAFETY: `raw` lies in the buffer the current operation borrows; the batch keeps
            // the send until its reply and drops (cancels) it before returning.
            Some((data, len)) => unsafe {
                self.calls
                    .call_raw(&conn.ep, proto::AM_REQUEST, &header, data, len, timeout)
                    .map(|(id, send)| (id, Some(send)))
            },
            None => self
                .calls
                .call(
                    &conn.ep,
                    proto::AM_REQUEST,
                    &header,
                    out.payload.clone(),
                    timeout,
                )
                .map(|id| (id, None)),
        };
        sent.map_err(|source| Error::Transport {
            op: "send",
            target: self.describe(out.target),
            source,
        })
    }

    /// Progresses until the reply to `id` arrives or fails.
    fn wait_reply(
        &mut self,
        id: u64,
        op: &'static str,
        target: usize,
    ) -> Result<(WireReply, Reply)> {
        let mut idle = 0;
        loop {
            if let Some(result) = self.arrived.remove(&id) {
                return self.decode(result, op, target);
            }
            if self.pump() {
                idle = 0;
            } else {
                idle += 1;
                if idle > SPIN_TURNS {
                    self.sleep()?;
                }
            }
        }
    }

    fn decode(
        &self,
        result: crate::rdma::Result<Reply>,
        op: &'static str,
        target: usize,
    ) -> Result<(WireReply, Reply)> {
        let reply = result.map_err(|source| match source {
            crate::rdma::Error::TimedOut { .. } => Error::TimedOut {
                op,
                target: self.describe(target),
                timeout: self.config.request_timeout,
            },
            source => Error::Transport {
                op,
                target: self.describe(target),
                source,
            },
        })?;
        let wire = proto::decode_reply(&reply.header)
            .map_err(|e| Error::Invalid(format!("{op}: malformed reply: {e}")))?;
        Ok((wire, reply))
    }

    /// One round: progress, collect replies and expired requests; whether anything happened.
    fn pump(&mut self) -> bool {
        let mut any = self.worker.progress() > 0;
        while let Some(message) = self.worker.take_incoming() {
            any = true;
            match self.calls.on_message(message) {
                Some(Ok(reply)) => {
                    self.arrived.insert(reply.request_id, Ok(reply));
                }
                Some(Err(e)) => log::warn!("dropped a malformed reply: {e}"),
                None => {}
            }
        }
        for (id, e) in self.calls.expire(Instant::now()) {
            any = true;
            self.arrived.insert(id, Err(e));
        }
        any
    }

    fn sleep(&mut self) -> Result<()> {
        let until = self
            .calls
            .next_deadline()
            .map_or(Duration::from_millis(10), |d| {
                d.saturating_duration_since(Instant::now())
            });
        self.worker
            .wait_for_event(
                until.min(Duration::from_micros(
                    std::env::var("CSLEEP")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(10000),
                )),
            )
            .map_err(Error::Local)
    }

    /// Sends `count` requests made by `make` (called again for a retry), at most
    /// [`ClientConfig::window`] at once, and hands each reply to `done`. Busy answers are
    /// retried with back-off until the deadline; the first other failure is returned after
    /// every request in flight has been answered (the shards may still be using the caller's
    /// buffers until then).
    pub(crate) fn batch(
        &mut self,
        op: &'static str,
        count: usize,
        mut make: impl FnMut(&mut Client, usize) -> Result<Outgoing>,
        mut done: impl FnMut(usize, WireReply, Reply) -> Result<()>,
    ) -> Result<()> {
        let deadline = Instant::now() + self.config.request_timeout;
        let mut todo: std::collections::VecDeque<(usize, Instant)> =
            (0..count).map(|i| (i, Instant::now())).collect();
        // Request id -> (index, target, send kept until the reply).
        let mut inflight: HashMap<u64, (usize, usize, Option<crate::rdma::Request>)> =
            HashMap::new();
        let mut attempts = vec![0u32; count];
        let mut first_error: Option<Error> = None;
        let mut idle = 0;
        while !inflight.is_empty() || (first_error.is_none() && !todo.is_empty()) {
            while first_error.is_none() && inflight.len() < self.config.window {
                let Some(&(i, not_before)) = todo.front() else {
                    break;
                };
                if not_before > Instant::now() {
                    break;
                }
                todo.pop_front();
                match make(self, i).and_then(|out| Ok((out.target, self.send(&out)?))) {
                    Ok((target, (id, send))) => {
                        inflight.insert(id, (i, target, send));
                    }
                    Err(e) => first_error = Some(e),
                }
            }
            let ready: Vec<u64> = inflight
                .keys()
                .copied()
                .filter(|id| self.arrived.contains_key(id))
                .collect();
            if ready.is_empty() {
                if self.pump() {
                    idle = 0;
                } else {
                    idle += 1;
                    if idle > SPIN_TURNS {
                        self.sleep()?;
                    }
                }
                continue;
            }
            for id in ready {
                let (i, target, send) = inflight.remove(&id).expect("in flight");
                let result = self.arrived.remove(&id).expect("arrived");
                if result.is_err() && send.as_ref().is_some_and(|s| !s.is_done()) {
                    // The request failed (its deadline passed) while UCX may still be reading
                    // the caller's data for it, which cannot be cancelled once started: abort
                    // the connection so nothing reads the buffer after this call returned.
                    self.abort_conn(target);
                }
                drop(send);
                let outcome = self.decode(result, op, target).and_then(|(wire, reply)| {
                    if wire.status == -libc::EAGAIN {
                        return Ok(None);
                    }
                    if wire.status < 0 {
                        return Err(Error::Remote {
                            op,
                            what: format!("request {i}"),
                            errno: -wire.status,
                            target: self.describe(target),
                        });
                    }
                    Ok(Some((wire, reply)))
                });
                match outcome {
                    Ok(Some((wire, reply))) => {
                        if let Err(e) = done(i, wire, reply) {
                            first_error.get_or_insert(e);
                        }
                    }
                    Ok(None) if Instant::now() < deadline => {
                        attempts[i] += 1;
                        let backoff = Duration::from_micros(50 << attempts[i].min(10));
                        todo.push_back((i, Instant::now() + backoff));
                    }
                    Ok(None) => {
                        first_error.get_or_insert(Error::TimedOut {
                            op,
                            target: format!("{} (busy)", self.describe(target)),
                            timeout: self.config.request_timeout,
                        });
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One request; its reply header (status checked) and message.
    pub(crate) fn call_one(
        &mut self,
        op: &'static str,
        out: Outgoing,
    ) -> Result<(WireReply, Reply)> {
        let mut result = None;
        self.batch(
            op,
            1,
            |_, _| Ok(out.clone()),
            |_, wire, reply| {
                result = Some((wire, reply));
                Ok(())
            },
        )?;
        Ok(result.expect("one reply"))
    }

    /// Counters and capacity of every target, in target order.
    pub fn target_stats(&mut self) -> Result<Vec<proto::WireStats>> {
        let n = self.targets.len();
        let mut stats = vec![proto::WireStats::default(); n];
        self.batch(
            "stats",
            n,
            |c, i| {
                let (wire, _) = c.prepare(i, Op::Stats)?;
                Ok(Outgoing::simple(i, wire))
            },
            |i, _, reply| {
                let data = reply.message.data().unwrap_or(&[]);
                stats[i] = proto::decode_stats(data)
                    .map_err(|e| Error::Invalid(format!("malformed stats: {e}")))?;
                Ok(())
            },
        )?;
        Ok(stats)
    }

    /// Asks every server of the cluster to stop (each server once).
    pub fn shutdown_servers(&mut self) -> Result<()> {
        let firsts: Vec<usize> = (0..self.targets.len())
            .filter(|&i| self.targets[i].shard == 0)
            .collect();
        self.send_to_targets("shutdown", Op::Shutdown, &firsts, |_| {})
    }

    /// Sends request `op` (its fields set by `edit`) to each of `targets` at once and waits
    /// for every answer.
    pub(crate) fn send_to_targets(
        &mut self,
        name: &'static str,
        op: Op,
        targets: &[usize],
        edit: impl Fn(&mut WireRequest),
    ) -> Result<()> {
        self.batch(
            name,
            targets.len(),
            |c, i| {
                let (mut wire, _) = c.prepare(targets[i], op)?;
                edit(&mut wire);
                Ok(Outgoing::simple(targets[i], wire))
            },
            |_, _, _| Ok(()),
        )
    }
}

impl Outgoing {
    pub(crate) fn simple(target: usize, wire: WireRequest) -> Outgoing {
        Outgoing {
            target,
            wire,
            path: Vec::new(),
            rkey: Vec::new(),
            payload: Vec::new(),
            raw: None,
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Say goodbye to the shards this client talked to, so they free the connection at
        // once; failures do not matter (the shard also notices a vanished client).
        let connected: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].is_some())
            .collect();
        let saved = self.config.request_timeout;
        self.config.request_timeout = Duration::from_millis(500);
        let _ = self.send_to_targets("disconnect", Op::Disconnect, &connected, |_| {});
        self.config.request_timeout = saved;
    }
}
