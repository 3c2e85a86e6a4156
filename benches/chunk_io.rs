//! Criterion microbenchmarks of the chunk store's I/O paths.
//!
//! Cases: 4 MiB and 1 MiB sequential write and read at queue depth 8, 47008-byte unaligned
//! records (IOR hard) written back to back at queue depth 8, and 4 KiB random read and write at
//! queue depth 64. Data goes to O_DIRECT chunk files under Cargo's target directory (a disk:
//! tmpfs has no O_DIRECT). Each iteration batch keeps the queue full for its whole length.

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use common::{open_store, prefill, run, Job, CHUNK_BYTES};

/// Bytes each case works over: large enough that it is not one chunk, small enough for CI.
const REGION_BYTES: u64 = 256 << 20;

fn bench_case(c: &mut Criterion, name: &str, job: Job, prefilled: bool) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("bench dir");
    let mut store = open_store(dir.path(), job.queue_depth);
    if prefilled {
        prefill(&mut store, job.file_id, job.region_bytes);
    }
    let mut group = c.benchmark_group("chunk_io");
    group.throughput(Throughput::Bytes(job.block_bytes as u64));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| run(&mut store, job, iters, Duration::MAX).1);
    });
    group.finish();
}

fn sequential(c: &mut Criterion) {
    for (name, block, write) in [
        ("seq-write-4MiB", 4 << 20, true),
        ("seq-read-4MiB", 4 << 20, false),
        ("seq-write-1MiB", 1 << 20, true),
        ("seq-read-1MiB", 1 << 20, false),
    ] {
        let job = Job {
            write,
            random: false,
            block_bytes: block,
            queue_depth: 8,
            region_bytes: REGION_BYTES,
            file_id: 1,
        };
        bench_case(c, name, job, !write);
    }
}

fn unaligned(c: &mut Criterion) {
    let job = Job {
        write: true,
        random: false,
        block_bytes: 47008,
        queue_depth: 8,
        // Records must not straddle chunks: the store serves one chunk per request.
        region_bytes: (CHUNK_BYTES / 47008 * 47008) as u64,
        file_id: 2,
    };
    bench_case(c, "write-47008B-unaligned", job, false);
}

fn random_4k(c: &mut Criterion) {
    for (name, write) in [
        ("rand-read-4KiB-qd64", false),
        ("rand-write-4KiB-qd64", true),
    ] {
        let job = Job {
            write,
            random: true,
            block_bytes: 4096,
            queue_depth: 64,
            region_bytes: REGION_BYTES,
            file_id: 3,
        };
        bench_case(c, name, job, true);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = sequential, unaligned, random_4k
}
criterion_main!(benches);
