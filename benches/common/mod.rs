//! Load driver shared by the chunk store benchmarks: keeps a fixed number of operations in
//! flight against one [`ChunkStore`], like fio's `iodepth`, over a region of one file.

#![allow(dead_code)] // each bench uses part of it

use std::path::Path;
use std::time::{Duration, Instant};

use benchfs::storage::{ChunkKey, ChunkStore, ChunkStoreConfig, Completion, Outcome, Slot};

/// Chunk size of the benchmark stores: the BenchFS default.
pub const CHUNK_BYTES: usize = 4 << 20;

/// One workload: `block_bytes` transfers at `queue_depth` over `region_bytes` of file
/// `file_id`, sequential or random (block-aligned).
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub write: bool,
    pub random: bool,
    pub block_bytes: usize,
    pub queue_depth: usize,
    pub region_bytes: u64,
    pub file_id: u64,
}

/// Opens a store with one slot per operation in flight.
pub fn open_store(dir: &Path, queue_depth: usize) -> ChunkStore {
    let mut config = ChunkStoreConfig::new(dir);
    config.slot_count = queue_depth;
    config.ring_entries = (queue_depth as u32 * 2).max(32);
    ChunkStore::open(config).expect("open chunk store")
}

/// A small xorshift generator: random offsets without a dependency, same sequence every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs `job` until `max_ops` operations finished or `max_time` passed; returns the operations
/// done and the time taken. Panics on any I/O error: a benchmark that fails must not report.
pub fn run(store: &mut ChunkStore, job: Job, max_ops: u64, max_time: Duration) -> (u64, Duration) {
    let blocks = job.region_bytes / job.block_bytes as u64;
    assert!(blocks > 0, "region smaller than one block");
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut slots: Vec<Slot> = (0..job.queue_depth)
        .map(|_| store.acquire_slot().expect("one slot per queue entry"))
        .collect();
    for slot in &mut slots {
        store.slot_data_mut(slot).fill(0x5a);
    }
    let started = Instant::now();
    let (mut issued, mut finished) = (0u64, 0u64);
    let mut completions: Vec<Completion> = Vec::with_capacity(job.queue_depth);
    loop {
        let out_of_time = started.elapsed() >= max_time;
        while issued < max_ops && !out_of_time {
            let Some(slot) = slots.pop() else { break };
            let block = if job.random {
                rng.next() % blocks
            } else {
                issued % blocks
            };
            submit(store, job, block * job.block_bytes as u64, issued, slot);
            issued += 1;
        }
        if finished == issued {
            break;
        }
        store
            .wait(&mut completions, 1)
            .expect("wait for completions");
        for c in completions.drain(..) {
            match c.result {
                Ok(Outcome::Written { .. } | Outcome::Read { .. }) => {}
                other => panic!("benchmark operation failed: {other:?}"),
            }
            slots.push(c.slot.expect("reads and writes return their slot"));
            finished += 1;
        }
    }
    let elapsed = started.elapsed();
    for slot in slots {
        store.release_slot(slot);
    }
    (finished, elapsed)
}

fn submit(store: &mut ChunkStore, job: Job, pos: u64, tag: u64, slot: Slot) {
    let key = ChunkKey::new(job.file_id, pos / CHUNK_BYTES as u64);
    let offset = pos % CHUNK_BYTES as u64;
    if job.write {
        store.submit_write(tag, key, offset, job.block_bytes, slot);
    } else {
        store.submit_read(tag, key, offset, job.block_bytes, slot);
    }
}

/// Writes `region_bytes` of `file_id` sequentially in whole chunks and syncs them, so reads
/// find data on disk.
pub fn prefill(store: &mut ChunkStore, file_id: u64, region_bytes: u64) {
    let job = Job {
        write: true,
        random: false,
        block_bytes: CHUNK_BYTES,
        queue_depth: store.config().slot_count.min(8),
        region_bytes,
        file_id,
    };
    let chunks = region_bytes / CHUNK_BYTES as u64;
    run(store, job, chunks, Duration::from_secs(3600));
    store.submit_sync(u64::MAX, file_id, None);
    let mut out = Vec::new();
    while out.is_empty() {
        store.wait(&mut out, 1).expect("sync");
    }
    out.pop().unwrap().result.expect("sync prefilled chunks");
}
