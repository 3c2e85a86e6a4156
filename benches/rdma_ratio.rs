//! One transport workload between two processes, for `scripts/bench_rdma.sh`, which runs
//! `ucx_perftest` on the same transport in the same run and prints the ratio.
//!
//! ```text
//! cargo bench --bench rdma_ratio -- --case am-lat|am-bw|put-bw --transport tcp|shm
//! ```
//!
//! The process started by the user is the client; it starts a copy of itself as the server
//! (`--role server`), which prints its worker address (and, for puts, its region and key) on
//! stdout. Prints one line: `BENCHFS case=<case> transport=<t> value=<v> unit=<us|MB/s>`,
//! where latency is the mean request/reply round trip through [`benchfs::rdma::rpc`] and
//! bandwidth is in MB/s of 2^20 bytes, as `ucx_perftest` reports it. Under
//! `cargo test --benches` (no `--bench` flag) every case runs briefly over both transports.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benchfs::rdma::{rpc, Context, Endpoint, MemRegion, Request, Worker};
use clap::Parser;

const REQ: u16 = 1;
const REP: u16 = 2;
const HELLO: u16 = 3;
const DATA: u16 = 4;
const BIG: usize = 4 << 20;
const WINDOW: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser, Debug)]
#[command(about = "Runs one transport workload between two processes")]
struct Args {
    /// am-lat, am-bw or put-bw.
    #[arg(long, default_value = "am-lat")]
    case: String,
    /// tcp (loopback) or shm.
    #[arg(long, default_value = "shm")]
    transport: String,
    /// Measured iterations (default: 100000 for latency, 2000 for bandwidth).
    #[arg(long)]
    iters: Option<u64>,
    /// Internal: run as the server process.
    #[arg(long, hide = true)]
    role: Option<String>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn settings(transport: &str) -> Vec<(&'static str, &'static str)> {
    match transport {
        "tcp" => vec![("TLS", "tcp"), ("NET_DEVICES", "lo")],
        "shm" => vec![("TLS", "posix,cma")],
        other => panic!("unknown transport {other}: tcp or shm"),
    }
}

fn main() {
    let args = Args::parse();
    let ctx = Context::with_settings(&settings(&args.transport)).expect("UCX context");
    if args.role.as_deref() == Some("server") {
        return serve(&ctx);
    }
    if !args.bench {
        for transport in ["shm", "tcp"] {
            for case in ["am-lat", "am-bw", "put-bw"] {
                println!("{}", client(case, transport, 50));
            }
        }
        return;
    }
    let iters = args
        .iters
        .unwrap_or(if args.case == "am-lat" { 100_000 } else { 2000 });
    println!("{}", client(&args.case, &args.transport, iters));
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

/// An owned, touched buffer for registration.
fn buffer(len: usize) -> Vec<u8> {
    vec![0x5a; len]
}

fn serve(ctx: &Arc<Context>) {
    let worker = Worker::new(ctx).expect("worker");
    for id in [REQ, HELLO, DATA] {
        worker.listen(id).expect("listen");
    }
    let mut landing = buffer(BIG);
    // SAFETY: `landing` lives until the process exits, after every transfer into it.
    let region = unsafe { MemRegion::register(ctx, landing.as_mut_ptr(), BIG) }.expect("register");
    let rkey = region.pack_rkey().expect("pack key");
    let mut out = std::io::stdout().lock();
    writeln!(out, "address {}", hex(&worker.address().unwrap())).unwrap();
    writeln!(out, "region {} {}", region.address() as u64, hex(&rkey)).unwrap();
    out.flush().unwrap();
    drop(out);
    let mut client: Option<Endpoint> = None;
    let mut receives: Vec<Request> = Vec::new();
    // Serve until the client kills us. Spin while busy, like a server's poll loop, and sleep
    // on the worker's event fd after a stretch of idle polls, so an idle server leaves the CPU
    // to the client (one-sided puts need no help from it).
    let mut idle_polls = 0u32;
    loop {
        if worker.progress() == 0 && worker.incoming_len() == 0 {
            idle_polls += 1;
            if idle_polls > 20_000 && receives.is_empty() {
                worker
                    .wait_for_event(Duration::from_millis(100))
                    .expect("wait");
                idle_polls = 0;
            }
        } else {
            idle_polls = 0;
        }
        while let Some(message) = worker.take_incoming() {
            match message.id {
                HELLO => {
                    let address = message.data().expect("eager hello").to_vec();
                    client = Some(Endpoint::connect(&worker, &address).expect("connect back"));
                }
                REQ => {
                    let (frame, _) = rpc::Frame::decode(&message.header).expect("request");
                    let ep = client.as_ref().expect("hello first");
                    let data = message.data().expect("small request").to_vec();
                    rpc::reply(ep, REP, frame.request_id, &[], data)
                        .expect("reply")
                        .detach();
                }
                _ => {
                    // SAFETY: the landing buffer is registered and lives until exit; the
                    // bandwidth test overwrites it with every message on purpose.
                    let receive = unsafe { message.receive_into(region.address(), BIG) };
                    receives.push(receive.expect("receive"));
                }
            }
        }
        receives.retain(|r| !r.is_done());
    }
}

struct Server {
    child: std::process::Child,
    address: Vec<u8>,
    region: (u64, Vec<u8>),
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(transport: &str) -> Server {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--role", "server", "--transport", transport])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server process");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || {
        lines
            .next()
            .expect("server output")
            .expect("read server output")
    };
    let address = unhex(next().strip_prefix("address ").expect("address line"));
    let region_line = next();
    let mut parts = region_line
        .strip_prefix("region ")
        .expect("region line")
        .split(' ');
    let base: u64 = parts.next().unwrap().parse().unwrap();
    let key = unhex(parts.next().unwrap());
    Server {
        child,
        address,
        region: (base, key),
    }
}

fn client(case: &str, transport: &str, iters: u64) -> String {
    let server = start_server(transport);
    let ctx = Context::with_settings(&settings(transport)).expect("UCX context");
    let worker = Worker::new(&ctx).expect("worker");
    worker.listen(REP).expect("listen");
    let ep = Endpoint::connect(&worker, &server.address).expect("connect");
    ep.am_send(HELLO, &[], worker.address().unwrap())
        .unwrap()
        .wait(TIMEOUT)
        .unwrap();
    let (value, unit) = match case {
        "am-lat" => {
            round_trips(&worker, &ep, iters / 10);
            let started = Instant::now();
            round_trips(&worker, &ep, iters);
            let us = started.elapsed().as_secs_f64() * 1e6 / iters as f64;
            (us, "us")
        }
        "am-bw" | "put-bw" => {
            let mut source = buffer(BIG);
            // SAFETY: `source` outlives the region and every transfer (all waited for).
            let region = unsafe { MemRegion::register(&ctx, source.as_mut_ptr(), BIG) }.unwrap();
            let rkey = ep.unpack_rkey(&server.region.1).unwrap();
            let send = |n: u64| -> Request {
                if case == "am-bw" {
                    // SAFETY: the registered source is unchanged until every send completed.
                    unsafe { ep.am_send_raw(DATA, &n.to_le_bytes(), region.address(), BIG) }
                } else {
                    // SAFETY: as above.
                    unsafe { ep.put(region.address(), BIG, server.region.0, &rkey) }
                }
                .expect("start transfer")
            };
            stream(&worker, &ep, iters / 10 + 1, &send);
            let started = Instant::now();
            stream(&worker, &ep, iters, &send);
            let seconds = started.elapsed().as_secs_f64();
            (
                (iters as usize * BIG) as f64 / (1 << 20) as f64 / seconds,
                "MB/s",
            )
        }
        other => panic!("unknown case {other}"),
    };
    format!("BENCHFS case={case} transport={transport} value={value:.3} unit={unit}")
}

/// `n` request/reply round trips of 8 bytes, one at a time.
fn round_trips(worker: &Worker, ep: &Endpoint, n: u64) {
    let mut calls = rpc::Calls::new();
    for i in 0..n {
        let id = calls
            .call(ep, REQ, &[], i.to_le_bytes().to_vec(), TIMEOUT)
            .expect("request");
        loop {
            worker.progress();
            if let Some(message) = worker.take_incoming() {
                let reply = calls.on_message(message).expect("awaited").expect("reply");
                assert_eq!(reply.request_id, id);
                break;
            }
        }
    }
}

/// `n` transfers with up to [`WINDOW`] in flight, then a flush.
fn stream(worker: &Worker, ep: &Endpoint, n: u64, send: &dyn Fn(u64) -> Request) {
    let mut in_flight: Vec<Request> = Vec::with_capacity(WINDOW);
    let mut started = 0;
    while started < n || !in_flight.is_empty() {
        while started < n && in_flight.len() < WINDOW {
            in_flight.push(send(started));
            started += 1;
        }
        worker.progress();
        in_flight.retain(|r| match r.result() {
            None => true,
            Some(result) => {
                result.expect("transfer");
                false
            }
        });
    }
    ep.flush().unwrap().wait(TIMEOUT).unwrap();
}
