//! Helpers of the transport tests: the transports to cover, and patterns to verify data.

#![allow(dead_code)] // each test file uses part of it

use std::sync::Arc;
use std::time::{Duration, Instant};

use benchfs_rdma::{Context, Worker};

/// The transports every test runs over: TCP on the loopback device only, and shared memory
/// (POSIX segments for messages, cross-memory attach for RMA and rendezvous).
pub const TRANSPORTS: [(&str, &[(&str, &str)]); 2] = [
    ("tcp", &[("TLS", "tcp"), ("NET_DEVICES", "lo")]),
    ("shm", &[("TLS", "posix,cma")]),
];

/// A context restricted to one transport configuration.
pub fn context(settings: &[(&str, &str)]) -> Arc<Context> {
    Context::with_settings(settings).expect("create UCX context")
}

/// Deterministic bytes, different for each `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Progresses `worker` until `done` holds, failing the test after `timeout`.
pub fn progress_until(worker: &Worker, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "gave up after {timeout:?}");
        worker
            .wait_for_event(Duration::from_millis(5))
            .expect("progress");
    }
}

/// A buffer that outlives every registration and request of a test.
pub struct Buffer {
    map: Vec<u8>,
}

impl Buffer {
    pub fn new(len: usize) -> Buffer {
        Buffer { map: vec![0; len] }
    }

    pub fn ptr(&mut self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }
}
