//! Hostile and malformed requests, sent with raw UCX messages as a broken or malicious client
//! would: garbage, wrong magic or version, lengths that do not match the payload, paths that
//! try to escape, sizes beyond limits, and a flood of requests. Each is refused (dropped with
//! a log line, or answered with an error), and the server keeps serving others.

mod common;

use std::time::{Duration, Instant};

use benchfs::client::OpenFlags;
use benchfs::proto::{self, Op, WireReply, WireRequest};
use benchfs::rdma::rpc::{Calls, Frame, Kind};
use benchfs::rdma::{Context, Endpoint, Worker};
use bytemuck::Zeroable;
use common::{Cluster, Options, Transport};

/// A client speaking the wire protocol by hand to target 0.
struct Raw {
    worker: Worker,
    ep: Endpoint,
    calls: Calls,
    secret: [u8; 16],
    conn_id: u64,
    next_id: u64,
}

impl Raw {
    fn connect(cluster: &Cluster) -> Raw {
        let reg = benchfs::registry::Registry::open_existing(&cluster.registry()).unwrap();
        let entry = reg.list().unwrap().remove(0);
        let settings: Vec<(String, String)> = Transport::Tcp.settings();
        let settings: Vec<(&str, &str)> = settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let context = Context::with_settings(&settings).unwrap();
        let worker = Worker::new(&context).unwrap();
        worker.listen(proto::AM_REPLY).unwrap();
        let ep = Endpoint::connect(&worker, &entry.address).unwrap();
        let mut raw = Raw {
            worker,
            ep,
            calls: Calls::new(),
            secret: *reg.read_secret().unwrap().as_bytes(),
            conn_id: 0,
            next_id: 1 << 40,
        };
        let address = raw.worker.address().unwrap();
        let reply = raw.call(Op::Connect, &[], address);
        assert_eq!(reply.status, 0, "connect");
        raw.conn_id = reply.value;
        raw
    }

    fn wire(&self, op: Op) -> WireRequest {
        let mut wire = WireRequest::zeroed();
        wire.secret = self.secret;
        wire.op = op as u16;
        wire.conn_id = self.conn_id;
        wire
    }

    /// Sends `header` (after a request frame) without waiting for anything.
    fn send_framed(&mut self, header: &[u8]) {
        self.next_id += 1;
        let frame = Frame {
            kind: Kind::Request,
            request_id: self.next_id,
        };
        self.send_bytes(frame.encode(header));
    }

    fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.ep
            .am_send_owned(proto::AM_REQUEST, bytes, Vec::new())
            .unwrap()
            .detach();
        self.pump(Duration::from_millis(50));
    }

    fn pump(&mut self, time: Duration) {
        let until = Instant::now() + time;
        while Instant::now() < until {
            self.worker.progress();
            while self.worker.take_incoming().is_some() {}
        }
    }

    /// A request with `path` and `payload`; its reply.
    fn call_wire(&mut self, wire: WireRequest, path: &[u8], payload: Vec<u8>) -> WireReply {
        let header = proto::encode_request(wire, path, &[]);
        let id = self
            .calls
            .call(
                &self.ep,
                proto::AM_REQUEST,
                &header,
                payload,
                Duration::from_secs(5),
            )
            .unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            self.worker.progress();
            while let Some(message) = self.worker.take_incoming() {
                if let Some(Ok(reply)) = self.calls.on_message(message) {
                    if reply.request_id == id {
                        return proto::decode_reply(&reply.header).expect("a well-formed reply");
                    }
                }
            }
            assert!(Instant::now() < until, "no reply to {:?}", wire.op);
        }
    }

    fn call(&mut self, op: Op, path: &[u8], payload: Vec<u8>) -> WireReply {
        let wire = self.wire(op);
        self.call_wire(wire, path, payload)
    }
}

/// The server answers a well-behaved client.
fn still_serves(cluster: &Cluster, path: &str) {
    let mut client = cluster.client();
    let mut file = client.create(path, 0o644).expect("create after the attack");
    client.write_at(&mut file, b"fine", 0).unwrap();
    client.close(file).unwrap();
    let file = client.open(path, OpenFlags::READ, 0).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(client.read_at(&file, &mut buf, 0).unwrap(), 4);
    assert_eq!(&buf, b"fine");
}

#[test]
fn malformed_messages_are_dropped_and_logged() {
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    let mut raw = Raw::connect(&cluster);
    raw.send_bytes(vec![]);
    raw.send_bytes(b"garbage that is not a frame at all".to_vec());
    let mut wrong_magic = Frame {
        kind: Kind::Request,
        request_id: 1,
    }
    .encode(&[]);
    wrong_magic[0] ^= 0xff;
    raw.send_bytes(wrong_magic);
    let mut wrong_version = Frame {
        kind: Kind::Request,
        request_id: 2,
    }
    .encode(&proto::encode_request(raw.wire(Op::Lookup), b"/x", &[]));
    wrong_version[4] = 99;
    raw.send_bytes(wrong_version);
    // Lengths that do not match the payload: a path longer, then shorter, than sent.
    let mut long = proto::encode_request(raw.wire(Op::Lookup), b"/abc", &[]);
    long.truncate(long.len() - 2);
    raw.send_framed(&long);
    let mut short = proto::encode_request(raw.wire(Op::Lookup), b"/abc", &[]);
    short.extend_from_slice(b"trailing");
    raw.send_framed(&short);
    // An unknown op, unknown flags, and no secret.
    let mut unknown = raw.wire(Op::Lookup);
    unknown.op = 999;
    raw.send_framed(&proto::encode_request(unknown, b"/x", &[]));
    let mut flags = raw.wire(Op::Lookup);
    flags.flags = 0x8000;
    raw.send_framed(&proto::encode_request(flags, b"/x", &[]));
    let mut no_secret = raw.wire(Op::Create);
    no_secret.secret = [0; 16];
    raw.send_framed(&proto::encode_request(no_secret, b"/intruder", &[]));
    raw.pump(Duration::from_millis(300));

    let log = cluster.log(0) + &cluster.log(1);
    for expected in [
        "malformed message: header shorter than the frame",
        "malformed message: wrong magic",
        "malformed message: unsupported version",
        "wrong cluster secret",
    ] {
        assert!(log.contains(expected), "no {expected:?} in:\n{log}");
    }
    let dropped_requests = log.matches("dropped request").count();
    assert!(
        dropped_requests >= 5,
        "{dropped_requests} dropped requests:\n{log}"
    );
    still_serves(&cluster, "/after-malformed");
    let mut client = cluster.client();
    assert_eq!(client.stat("/intruder").unwrap_err().errno(), libc::ENOENT);
}

#[test]
fn escaping_paths_and_sizes_beyond_limits_are_refused() {
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    let mut raw = Raw::connect(&cluster);
    for path in [
        &b"/a/../../etc/passwd"[..],
        b"relative/path",
        b"/with\0nul",
        b"",
        &[b'/', 0xff, 0xfe][..],
    ] {
        let reply = raw.call(Op::Create, path, Vec::new());
        assert_eq!(reply.status, -libc::EINVAL, "create {path:?}");
    }
    // The data directory's own absolute path is only a name in BenchFS: creating it touches
    // nothing on the server's disk.
    let data = cluster.data();
    let local = data.join("server-0");
    let before = std::fs::read_dir(&local).unwrap().count();
    let inside = format!("{}/x", local.display());
    let mut client = cluster.client();
    client
        .mkdir_all(&local.display().to_string(), 0o755)
        .unwrap();
    client
        .create(&inside, 0o644)
        .map(|f| client.close(f))
        .unwrap()
        .unwrap();
    assert_eq!(std::fs::read_dir(&local).unwrap().count(), before);
    assert!(!std::path::Path::new(&inside).exists());

    // Data requests beyond a chunk, or with an offset past it.
    let chunk = 4u64 << 20;
    for (offset, len) in [(0, chunk + 1), (chunk, 1), (u64::MAX - 1, 2), (0, u64::MAX)] {
        let mut wire = raw.wire(Op::Write);
        wire.file_id = 1;
        wire.offset = offset;
        wire.len = len;
        let reply = raw.call_wire(wire, &[], Vec::new());
        assert_eq!(reply.status, -libc::EINVAL, "write {len} at {offset}");
        let mut wire = raw.wire(Op::Read);
        wire.file_id = 1;
        wire.offset = offset;
        wire.len = len;
        let reply = raw.call_wire(wire, &[], Vec::new());
        assert_eq!(reply.status, -libc::EINVAL, "read {len} at {offset}");
    }
    // Inline data that does not match the length it claims.
    let mut wire = raw.wire(Op::Write);
    wire.file_id = 1;
    wire.len = 100;
    wire.flags = proto::FLAG_INLINE;
    let reply = raw.call_wire(wire, &[], vec![0; 10]);
    assert_eq!(
        reply.status,
        -libc::EINVAL,
        "inline write of 10 bytes claiming 100"
    );
    still_serves(&cluster, "/after-limits");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_flood_of_requests_cannot_exhaust_server_memory() {
    let mut options = Options::new(Transport::Tcp);
    options.servers = 1;
    options.shards = 1;
    let cluster = Cluster::start(options);
    let mut raw = Raw::connect(&cluster);
    let pid = cluster.pid(0);
    let mut client = cluster.client();
    let mut file = client.create("/flood", 0o644).unwrap();
    client.write_at(&mut file, &[1u8; 4096], 0).unwrap();
    let file_id = file.file_id();
    client.close(file).unwrap();
    let before = rss_kib(pid);
    // 8000 writes of 64 KiB each (500 MiB) sent without waiting for any reply.
    let payload = vec![7u8; 64 << 10];
    for i in 0..8_000u64 {
        let mut wire = raw.wire(Op::Write);
        wire.file_id = file_id;
        wire.chunk_index = i % 64;
        wire.len = payload.len() as u64;
        wire.flags = proto::FLAG_INLINE;
        raw.next_id += 1;
        let frame = Frame {
            kind: Kind::Request,
            request_id: raw.next_id,
        };
        let header = frame.encode(&proto::encode_request(wire, &[], &[]));
        raw.ep
            .am_send_owned(proto::AM_REQUEST, header, payload.clone())
            .unwrap()
            .detach();
        raw.worker.progress();
        while raw.worker.take_incoming().is_some() {}
    }
    raw.pump(Duration::from_secs(2));
    let after = rss_kib(pid);
    let stats = client.target_stats().unwrap();
    assert!(
        stats[0].busy_rejections > 0,
        "the flood was refused in part: {:?}",
        stats[0]
    );
    // The slab (16 MiB) is allocated at start; what grows is bounded by the wait queue.
    assert!(
        after < before + 256 * 1024,
        "server memory grew from {before} KiB to {after} KiB"
    );
    drop(raw);
    still_serves(&cluster, "/after-flood");
}
