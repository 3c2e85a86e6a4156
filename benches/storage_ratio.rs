//! One chunk store workload for a fixed time, for `scripts/bench_storage.sh`, which runs fio
//! with the same block size, queue depth, O_DIRECT and io_uring on the same directory and
//! prints the ratio.
//!
//! ```text
//! cargo bench --bench storage_ratio -- --dir DIR --case seq-write-4MiB [--seconds 10]
//! ```
//!
//! Prints one line: `BENCHFS case=<case> value=<v> unit=<MiB/s|IOPS> ops=<n> seconds=<s>`.
//! Under `cargo test --benches` (no `--bench` flag) it runs every case briefly on a small
//! region instead, so the driver keeps working between benchmark runs.
//! Cases: `seq-write-4MiB`, `seq-read-4MiB` (queue depth 8), `rand-read-4KiB`,
//! `rand-write-4KiB` (queue depth 64). Reads and random writes work on data written and synced
//! before the clock starts; every case runs one second of warm-up first, as fio's `ramp_time`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use common::{open_store, prefill, run, Job};

#[derive(Parser, Debug)]
#[command(about = "Runs one chunk store workload for a fixed time")]
struct Args {
    /// Directory for the chunk files (a disk-backed file system).
    #[arg(long, required_if_eq("bench", "true"))]
    dir: Option<PathBuf>,
    /// Workload name.
    #[arg(long, required_if_eq("bench", "true"))]
    case: Option<String>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Size of the file region worked on, in MiB.
    #[arg(long, default_value_t = 1024)]
    region_mib: u64,
    /// Passed by `cargo bench`; without it the driver runs its brief self-test.
    #[arg(long, hide = true)]
    bench: bool,
}

fn job_of(case: &str, region_bytes: u64) -> Option<Job> {
    let (write, random, block_bytes, queue_depth) = match case {
        "seq-write-4MiB" => (true, false, 4 << 20, 8),
        "seq-read-4MiB" => (false, false, 4 << 20, 8),
        "rand-read-4KiB" => (false, true, 4096, 64),
        "rand-write-4KiB" => (true, true, 4096, 64),
        _ => return None,
    };
    Some(Job {
        write,
        random,
        block_bytes,
        queue_depth,
        region_bytes,
        file_id: 1,
    })
}

const CASES: [&str; 4] = [
    "seq-write-4MiB",
    "seq-read-4MiB",
    "rand-read-4KiB",
    "rand-write-4KiB",
];

fn main() {
    let args = Args::parse();
    match (&args.dir, &args.case) {
        (Some(dir), Some(case)) => {
            let line = run_case(
                dir,
                case,
                args.region_mib,
                Duration::from_secs(args.seconds),
            );
            println!("{line}");
        }
        _ if !args.bench => {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("test dir");
            for case in CASES {
                let line = run_case(dir.path(), case, 16, Duration::from_millis(200));
                assert!(line.starts_with("BENCHFS case="), "{line}");
                println!("{line}");
            }
        }
        _ => unreachable!("clap requires --dir and --case with --bench"),
    }
}

/// Runs `case` on `region_mib` MiB in `dir` for `measured` after one second of warm-up and
/// returns the result line.
fn run_case(dir: &Path, case: &str, region_mib: u64, measured: Duration) -> String {
    let region_bytes = region_mib << 20;
    let Some(job) = job_of(case, region_bytes) else {
        eprintln!(
            "storage_ratio: unknown case {case:?}; known: {}",
            CASES.join(", ")
        );
        std::process::exit(2);
    };
    let mut store = open_store(dir, job.queue_depth);
    if !job.write || job.random {
        prefill(&mut store, job.file_id, region_bytes);
    }
    run(
        &mut store,
        job,
        u64::MAX,
        Duration::from_secs(1).min(measured),
    );
    let (ops, elapsed) = run(&mut store, job, u64::MAX, measured);
    let seconds = elapsed.as_secs_f64();
    let (value, unit) = if job.block_bytes >= 1 << 20 {
        let mib = (ops * job.block_bytes as u64) as f64 / (1 << 20) as f64;
        (mib / seconds, "MiB/s")
    } else {
        (ops as f64 / seconds, "IOPS")
    };
    let removed = store
        .remove_file(job.file_id)
        .expect("remove benchmark chunks");
    assert!(removed > 0, "the benchmark wrote no chunk");
    format!("BENCHFS case={case} value={value:.1} unit={unit} ops={ops} seconds={seconds:.2}")
}
