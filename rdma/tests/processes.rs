//! Two workers in two processes, over TCP (loopback) and shared memory: active messages small
//! and large between processes, and the death of a peer process in the middle of requests.
//!
//! The child processes are this test binary again, running the ignored test `child_role` with
//! a role in the environment; they speak to the parent through lines on their stdout that
//! start with `CHILD `.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use benchfs_rdma::{rpc, Endpoint, Error, MemRegion, Worker};
use common::*;

const ROLE: &str = "BENCHFS_RDMA_TEST_ROLE";
const TRANSPORT: &str = "BENCHFS_RDMA_TEST_TRANSPORT";
const LARGE: usize = 8 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);
const REQ: u16 = 10;

fn settings_named(name: &str) -> &'static [(&'static str, &'static str)] {
    TRANSPORTS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("known transport")
        .1
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn say(line: &str) {
    println!("CHILD {line}");
}

/// Entry point of the child processes (see the module documentation).
#[test]
#[ignore = "runs only as a child process of the other tests"]
fn child_role() {
    let role = std::env::var(ROLE).expect("the parent sets the role");
    let settings = settings_named(&std::env::var(TRANSPORT).expect("the parent sets it"));
    let ctx = context(settings);
    let worker = Worker::new(&ctx).unwrap();
    match role.as_str() {
        "receiver" => receive_two_messages(&ctx, &worker),
        "silent" => take_requests_and_never_answer(&worker),
        other => panic!("unknown role {other}"),
    }
}

fn receive_two_messages(ctx: &std::sync::Arc<benchfs_rdma::Context>, worker: &Worker) {
    worker.listen(7).unwrap();
    let mut landing = Buffer::new(LARGE);
    // SAFETY: `landing` outlives the region and the receive below, which is waited for.
    let region = unsafe { MemRegion::register(ctx, landing.ptr(), LARGE) }.unwrap();
    say(&format!("address {}", hex(&worker.address().unwrap())));
    let mut arrived = Vec::new();
    progress_until(worker, TIMEOUT, || {
        while let Some(m) = worker.take_incoming() {
            arrived.push(m);
        }
        arrived.len() == 2
    });
    for message in arrived {
        if message.header == b"small" {
            assert_eq!(message.data().unwrap(), pattern(1, 100));
            say("small ok");
        } else {
            assert!(message.is_rendezvous());
            // SAFETY: the registered buffer holds LARGE bytes and is untouched until the wait.
            let receive = unsafe { message.receive_into(region.address(), LARGE) }.unwrap();
            receive.wait(TIMEOUT).unwrap();
            assert!(
                landing.bytes() == pattern(2, LARGE),
                "8 MiB message damaged"
            );
            say("large ok");
        }
    }
    // Serve until the parent closes its end and kills us.
    progress_until(worker, TIMEOUT, || false);
}

fn take_requests_and_never_answer(worker: &Worker) {
    worker.listen(REQ).unwrap();
    say(&format!("address {}", hex(&worker.address().unwrap())));
    let mut seen = 0;
    progress_until(worker, Duration::from_secs(120), || {
        while let Some(m) = worker.take_incoming() {
            rpc::Frame::decode(&m.header).expect("a framed request");
            seen += 1;
            say(&format!("got {seen}"));
        }
        false
    });
}

struct ChildProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildProcess {
    fn spawn(role: &str, transport: &str) -> ChildProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_role",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(TRANSPORT, transport)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child process");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The harness may have printed "test child_role ... " on the same line.
                if let Some(at) = line.find("CHILD ") {
                    if tx.send(line[at + "CHILD ".len()..].to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        ChildProcess { child, lines }
    }

    /// The next line the child says, progressing `worker` (if any) while waiting.
    fn next_progressing(&mut self, worker: Option<&Worker>) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.lines.try_recv() {
                Ok(line) => return line,
                Err(mpsc::TryRecvError::Disconnected) => panic!("the child process ended early"),
                Err(mpsc::TryRecvError::Empty) => {}
            }
            assert!(
                Instant::now() < deadline,
                "the child said nothing for {TIMEOUT:?}"
            );
            match worker {
                Some(worker) => {
                    worker.progress();
                    thread::sleep(Duration::from_millis(1));
                }
                None => thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn next(&mut self) -> String {
        self.next_progressing(None)
    }

    fn address(&mut self) -> Vec<u8> {
        let line = self.next();
        unhex(
            line.strip_prefix("address ")
                .expect("the child's address first"),
        )
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn messages_between_processes(transport: &str) {
    let mut child = ChildProcess::spawn("receiver", transport);
    let ctx = context(settings_named(transport));
    let worker = Worker::new(&ctx).unwrap();
    let ep = Endpoint::connect(&worker, &child.address()).unwrap();
    let small = ep.am_send(7, b"small", pattern(1, 100)).unwrap();
    let large = ep.am_send(7, b"large", pattern(2, LARGE)).unwrap();
    assert_eq!(small.wait(TIMEOUT).unwrap(), 100);
    assert_eq!(large.wait(TIMEOUT).unwrap(), LARGE);
    let mut said = vec![
        child.next_progressing(Some(&worker)),
        child.next_progressing(Some(&worker)),
    ];
    said.sort();
    assert_eq!(said, ["large ok", "small ok"], "{transport}");
}

#[test]
fn messages_between_processes_tcp() {
    messages_between_processes("tcp");
}

#[test]
fn messages_between_processes_shm() {
    messages_between_processes("shm");
}

/// The server process dies with requests in flight: they fail before their deadline (at it,
/// where the transport cannot see the death), and so do requests made afterwards.
fn peer_death(transport: &str, deadline: Duration) {
    let mut child = ChildProcess::spawn("silent", transport);
    let ctx = context(settings_named(transport));
    let worker = Worker::new(&ctx).unwrap();
    let ep = Endpoint::connect(&worker, &child.address()).unwrap();
    let mut calls = rpc::Calls::new();
    for n in 0..5u64 {
        calls
            .call(&ep, REQ, &n.to_le_bytes(), Vec::new(), deadline)
            .unwrap();
    }
    // Progress until the child has them all, then kill it.
    let mut got = 0;
    while got < 5 {
        let line = child.next_progressing(Some(&worker));
        got = line.strip_prefix("got ").unwrap().parse().unwrap();
    }
    let killed_at = Instant::now();
    child.child.kill().unwrap();
    child.child.wait().unwrap();
    let mut failures = Vec::new();
    progress_until(&worker, deadline + Duration::from_secs(5), || {
        failures.extend(calls.expire(Instant::now()));
        calls.pending() == 0
    });
    let took = killed_at.elapsed();
    assert_eq!(failures.len(), 5);
    if ep.detects_failure() {
        assert!(
            took < deadline,
            "{transport}: failure noticed only after {took:?}"
        );
        for (_, e) in &failures {
            assert!(
                matches!(e, Error::EndpointFailed { .. }),
                "{transport}: {e}"
            );
        }
        let again = calls.call(&ep, REQ, b"late", Vec::new(), deadline);
        assert!(
            matches!(again, Err(Error::EndpointFailed { .. })),
            "{again:?}"
        );
    } else {
        for (_, e) in &failures {
            assert!(matches!(e, Error::TimedOut { .. }), "{transport}: {e}");
        }
        // A new request to the dead peer ends in an error too, by its deadline.
        let short = Duration::from_millis(500);
        if calls.call(&ep, REQ, b"late", Vec::new(), short).is_ok() {
            progress_until(&worker, short + Duration::from_secs(5), || {
                failures.extend(calls.expire(Instant::now()));
                calls.pending() == 0
            });
            assert_eq!(failures.len(), 6);
        }
    }
}

#[test]
fn peer_death_fails_requests_tcp() {
    peer_death("tcp", Duration::from_secs(20));
}

#[test]
fn peer_death_fails_requests_shm() {
    peer_death("shm", Duration::from_secs(2));
}
