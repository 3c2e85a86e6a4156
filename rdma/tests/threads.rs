//! Two workers in two threads of one process, over TCP (loopback) and shared memory: active
//! messages small and large (the large ones received straight into registered memory), and
//! put/get of 4 KiB and 8 MiB through packed and unpacked remote keys.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use benchfs_rdma::{rpc, Endpoint, MemRegion, Worker};
use common::*;

const LARGE: usize = 8 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Progresses `worker` until a message arrives on `stop`.
fn serve_until(worker: &Worker, stop: &mpsc::Receiver<()>) {
    progress_until(worker, TIMEOUT, || stop.try_recv().is_ok());
}

fn active_messages_over(name: &str, settings: &'static [(&str, &str)]) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let ctx = context(settings);
        let worker = Worker::new(&ctx).unwrap();
        worker.listen(7).unwrap();
        let mut landing = Buffer::new(LARGE);
        // SAFETY: `landing` outlives the region and every request on it.
        let region = unsafe { MemRegion::register(&ctx, landing.ptr(), LARGE) }.unwrap();
        addr_tx.send(worker.address().unwrap()).unwrap();
        let mut arrived = Vec::new();
        progress_until(&worker, TIMEOUT, || {
            while let Some(m) = worker.take_incoming() {
                arrived.push(m);
            }
            arrived.len() == 2
        });
        arrived.sort_by(|a, b| b.header.cmp(&a.header));
        let large = arrived.pop().unwrap();
        let small = arrived.pop().unwrap();
        assert_eq!(small.header, b"small");
        assert_eq!(small.data().expect("eager data"), pattern(1, 100));
        assert_eq!(large.header, b"large");
        assert!(
            large.is_rendezvous(),
            "an 8 MiB message travels by rendezvous"
        );
        assert_eq!(large.data_len(), LARGE);
        // SAFETY: `landing` is valid for LARGE bytes and untouched until the request completes.
        let receive = unsafe { large.receive_into(region.address(), region.len()) }.unwrap();
        assert_eq!(receive.wait(TIMEOUT).unwrap(), LARGE);
        assert!(
            landing.bytes() == pattern(2, LARGE),
            "8 MiB message damaged"
        );
        serve_until(&worker, &stop_rx);
        drop(region);
    });
    let ctx = context(settings);
    let worker = Worker::new(&ctx).unwrap();
    let ep = Endpoint::connect(&worker, &addr_rx.recv().unwrap()).unwrap();
    let small = ep.am_send(7, b"small", pattern(1, 100)).unwrap();
    let large = ep.am_send(7, b"large", pattern(2, LARGE)).unwrap();
    assert_eq!(small.wait(TIMEOUT).unwrap(), 100, "{name}");
    assert_eq!(large.wait(TIMEOUT).unwrap(), LARGE, "{name}");
    drop(ep);
    stop_tx.send(()).unwrap();
    server.join().expect("server thread");
}

#[test]
fn active_messages_small_and_large_tcp() {
    active_messages_over("tcp", TRANSPORTS[0].1);
}

#[test]
fn active_messages_small_and_large_shm() {
    active_messages_over("shm", TRANSPORTS[1].1);
}

fn rma_over(name: &str, settings: &'static [(&str, &str)]) {
    let (info_tx, info_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let ctx = context(settings);
        let worker = Worker::new(&ctx).unwrap();
        let mut memory = Buffer::new(LARGE);
        memory.bytes_mut().copy_from_slice(&pattern(3, LARGE));
        // SAFETY: `memory` outlives the region and every remote access (the client is done
        // before `stop` arrives).
        let region = unsafe { MemRegion::register(&ctx, memory.ptr(), LARGE) }.unwrap();
        let info = (
            worker.address().unwrap(),
            region.address() as u64,
            region.pack_rkey().unwrap(),
        );
        info_tx.send(info).unwrap();
        serve_until(&worker, &stop_rx);
        drop(region);
        assert!(
            memory.bytes()[..4096] == pattern(4, 4096)[..],
            "4 KiB put not visible"
        );
        assert!(
            memory.bytes()[4096..] == pattern(5, LARGE)[4096..],
            "8 MiB put not visible"
        );
    });
    let ctx = context(settings);
    let worker = Worker::new(&ctx).unwrap();
    let (address, base, packed) = info_rx.recv().unwrap();
    let ep = Endpoint::connect(&worker, &address).unwrap();
    let rkey = ep.unpack_rkey(&packed).unwrap();
    let mut local = Buffer::new(LARGE);
    // SAFETY: `local` outlives the region and the requests below, each waited for.
    let region = unsafe { MemRegion::register(&ctx, local.ptr(), LARGE) }.unwrap();
    // 8 MiB get of the server's pattern.
    // SAFETY: the local buffer is registered, valid, and untouched until the wait returns.
    let get = unsafe { ep.get(region.address(), LARGE, base, &rkey) }.unwrap();
    assert_eq!(get.wait(TIMEOUT).unwrap(), LARGE, "{name}");
    assert!(
        local.bytes() == pattern(3, LARGE),
        "{name}: 8 MiB get differs"
    );
    // 4 KiB get from the middle.
    // SAFETY: as above.
    let get = unsafe { ep.get(region.address(), 4096, base + 8192, &rkey) }.unwrap();
    get.wait(TIMEOUT).unwrap();
    assert!(local.bytes()[..4096] == pattern(3, LARGE)[8192..12288]);
    // 8 MiB put, then a 4 KiB put over its start; flushed, then read back.
    local.bytes_mut().copy_from_slice(&pattern(5, LARGE));
    // SAFETY: as above; the source is not modified until the put completed.
    let put = unsafe { ep.put(region.address(), LARGE, base, &rkey) }.unwrap();
    put.wait(TIMEOUT).unwrap();
    local.bytes_mut()[..4096].copy_from_slice(&pattern(4, 4096));
    // SAFETY: as above.
    let put = unsafe { ep.put(region.address(), 4096, base, &rkey) }.unwrap();
    put.wait(TIMEOUT).unwrap();
    ep.flush().unwrap().wait(TIMEOUT).unwrap();
    local.bytes_mut()[..4096].fill(0);
    // SAFETY: as above.
    let get = unsafe { ep.get(region.address(), 4096, base, &rkey) }.unwrap();
    get.wait(TIMEOUT).unwrap();
    assert!(
        local.bytes()[..4096] == pattern(4, 4096)[..],
        "{name}: put not read back"
    );
    drop(rkey);
    drop(ep);
    drop(region);
    stop_tx.send(()).unwrap();
    server.join().expect("server thread");
}

#[test]
fn put_and_get_4k_and_8m_tcp() {
    rma_over("tcp", TRANSPORTS[0].1);
}

#[test]
fn put_and_get_4k_and_8m_shm() {
    rma_over("shm", TRANSPORTS[1].1);
}

/// A worker asleep on its event fd wakes when a message arrives.
#[test]
fn idle_worker_wakes_for_a_message() {
    for (name, settings) in TRANSPORTS {
        let (addr_tx, addr_rx) = mpsc::channel();
        let server = thread::spawn(move || {
            let ctx = context(settings);
            let worker = Worker::new(&ctx).unwrap();
            worker.listen(3).unwrap();
            addr_tx.send(worker.address().unwrap()).unwrap();
            let mut wakeups = 0;
            loop {
                while worker.progress() > 0 {}
                if let Some(m) = worker.take_incoming() {
                    return (m.header.clone(), wakeups);
                }
                if worker.arm().unwrap() {
                    let mut pfd = libc::pollfd {
                        fd: worker.event_fd().unwrap(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    let ready = unsafe { libc::poll(&mut pfd, 1, 20_000) };
                    assert_eq!(ready, 1, "no wake-up within 20 s");
                    wakeups += 1;
                }
            }
        });
        let ctx = context(settings);
        let worker = Worker::new(&ctx).unwrap();
        let ep = Endpoint::connect(&worker, &addr_rx.recv().unwrap()).unwrap();
        // Let the server fall asleep first.
        thread::sleep(Duration::from_millis(300));
        let sent = ep.am_send(3, b"wake", Vec::new()).unwrap();
        sent.wait(TIMEOUT).unwrap();
        let (header, wakeups) = server.join().unwrap();
        assert_eq!(header, b"wake", "{name}");
        assert!(wakeups >= 1, "{name}: the server never slept");
        drop(ep);
    }
}

/// 1000 requests in flight at once; the server answers them in a shuffled order, and every
/// reply is matched to its own request by id.
#[test]
fn a_thousand_concurrent_requests_answered_out_of_order() {
    const REQUESTS: u64 = 1000;
    const REQ: u16 = 10;
    const REP: u16 = 11;
    for (name, settings) in TRANSPORTS {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (client_tx, client_rx) = mpsc::channel::<Vec<u8>>();
        let server = thread::spawn(move || {
            let ctx = context(settings);
            let worker = Worker::new(&ctx).unwrap();
            worker.listen(REQ).unwrap();
            addr_tx.send(worker.address().unwrap()).unwrap();
            let client = Endpoint::connect(&worker, &client_rx.recv().unwrap()).unwrap();
            let mut requests = Vec::new();
            progress_until(&worker, TIMEOUT, || {
                while let Some(m) = worker.take_incoming() {
                    let (frame, header) = rpc::Frame::decode(&m.header).unwrap();
                    assert_eq!(frame.kind, rpc::Kind::Request);
                    let n = u64::from_le_bytes(header.try_into().unwrap());
                    requests.push((frame.request_id, n, m.data().unwrap().to_vec()));
                }
                requests.len() as u64 == REQUESTS
            });
            // A fixed shuffle: reverse, then interleave halves.
            requests.reverse();
            let (a, b) = requests.split_at(requests.len() / 2);
            let order: Vec<_> = a.iter().zip(b).flat_map(|(x, y)| [x, y]).collect();
            let mut sends = Vec::new();
            for (id, n, data) in order {
                let answer = (n * 3).to_le_bytes();
                sends.push(rpc::reply(&client, REP, *id, &answer, data.clone()).unwrap());
            }
            progress_until(&worker, TIMEOUT, || sends.iter().all(|s| s.is_done()));
            for send in sends {
                send.wait(TIMEOUT).unwrap();
            }
            drop(client);
        });
        let ctx = context(settings);
        let worker = Worker::new(&ctx).unwrap();
        worker.listen(REP).unwrap();
        client_tx.send(worker.address().unwrap()).unwrap();
        let ep = Endpoint::connect(&worker, &addr_rx.recv().unwrap()).unwrap();
        let mut calls = rpc::Calls::new();
        let mut expected = std::collections::HashMap::new();
        for n in 0..REQUESTS {
            let payload = pattern(n, 16 + (n as usize % 64));
            let id = calls
                .call(&ep, REQ, &n.to_le_bytes(), payload.clone(), TIMEOUT)
                .unwrap();
            expected.insert(id, (n, payload));
        }
        assert_eq!(calls.pending(), REQUESTS as usize);
        let mut matched = 0;
        progress_until(&worker, TIMEOUT, || {
            while let Some(m) = worker.take_incoming() {
                let reply = calls.on_message(m).expect("a pending request").unwrap();
                let (n, payload) = expected.remove(&reply.request_id).expect("known id");
                let answer = u64::from_le_bytes(reply.header[..].try_into().unwrap());
                assert_eq!(answer, n * 3, "{name}: reply matched to the wrong request");
                assert_eq!(reply.message.data().unwrap(), payload, "{name}");
                matched += 1;
            }
            matched == REQUESTS
        });
        assert_eq!(calls.pending(), 0);
        assert!(calls.expire(std::time::Instant::now()).is_empty());
        drop(ep);
        server.join().expect("server thread");
    }
}
