//! `benchfs-load`: a parallel workload through the BenchFS client, in IOR's patterns, with
//! verification of every byte.
//!
//! Without `--rank` it is the driver: it runs each phase in `--procs` child processes of
//! itself (the end of a phase is the barrier between phases, so reads happen after every
//! writer closed), gathers their `RESULT` lines and prints a table. Patterns:
//!
//! - `fpp`: file per process, `--block` bytes each, in `--transfer` pieces;
//! - `shared`: one file, rank r owns the segment `[r * block, (r + 1) * block)`;
//! - `hard`: one file of interleaved records of `--transfer` bytes (IOR hard uses 47008):
//!   record k of rank r is at `(k * procs + r) * transfer`.
//!
//! Reads are done by the next rank (r + 1), as IOR's `-C`, after checking that the size every
//! reader sees is the full size. Metadata phases create, stat, rename (there and back) and
//! unlink `--files` empty files per rank, make and remove `--files` directories per rank, or
//! list a directory of `--listing-entries` files `--files` times per rank. The data is a pure function of (file, offset), so any misplaced byte is caught.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use benchfs::client::{Client, ClientConfig, OpenFlags};
use benchfs::placement::{hash64, mix64};
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pattern {
    Fpp,
    Shared,
    Hard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Write,
    Read,
    Create,
    Stat,
    Rename,
    Unlink,
    Mkdir,
    Rmdir,
    Readdir,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "benchfs-load",
    about = "Parallel verified workload through the BenchFS client"
)]
struct Args {
    /// Registry directory of the cluster.
    #[arg(long, env = "BENCHFS_REGISTRY")]
    registry: PathBuf,
    /// Processes.
    #[arg(long, default_value_t = 4)]
    procs: u32,
    /// Access pattern.
    #[arg(long, value_enum, default_value = "fpp")]
    pattern: Pattern,
    /// Phases, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "write,read")]
    phases: Vec<Phase>,
    /// Directory of the files in BenchFS.
    #[arg(long, default_value = "/load")]
    dir: String,
    /// Bytes per transfer (suffixes k, m, g).
    #[arg(long, default_value = "4m", value_parser = size)]
    transfer: u64,
    /// Bytes per rank (rounded down to whole transfers).
    #[arg(long, default_value = "64m", value_parser = size)]
    block: u64,
    /// Empty files (or directories, or listings) per rank for the metadata phases.
    #[arg(long, default_value_t = 1000)]
    files: u64,
    /// Entries of the directory the readdir phase lists.
    #[arg(long, default_value_t = 1000)]
    listing_entries: u64,
    /// Do not verify (and do not regenerate the data of every transfer: files then hold one
    /// transfer's bytes repeated, which a later verified read reports as wrong).
    #[arg(long)]
    no_verify: bool,
    /// In the read phase, open with create first (as IOR's create of an existing file).
    #[arg(long)]
    recreate: bool,
    /// fsync before close in the write phase.
    #[arg(long)]
    fsync: bool,
    /// Internal: this process's rank (child mode).
    #[arg(long)]
    rank: Option<u32>,
    /// Internal: the phase of a child.
    #[arg(long, value_enum)]
    child_phase: Option<Phase>,
}

fn size(s: &str) -> Result<u64, String> {
    benchfs::config::parse_size(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match (args.rank, args.child_phase) {
        (Some(rank), Some(phase)) => child(&args, rank, phase),
        _ => drive(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchfs-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// Runs every phase in `procs` children and prints the results table.
fn drive(args: &Args) -> Result<(), String> {
    let mut client = connect(args)?;
    client
        .mkdir_all(&args.dir, 0o755)
        .map_err(|e| format!("mkdir {}: {e}", args.dir))?;
    if args.phases.contains(&Phase::Readdir) {
        prepare_listing(args, &mut client)?;
    }
    drop(client);
    println!(
        "{:<8} {:<7} {:>6} {:>14} {:>12} {:>12}",
        "phase", "pattern", "procs", "bytes", "MiB/s", "ops/s"
    );
    for &phase in &args.phases {
        let mut children = Vec::new();
        for rank in 0..args.procs {
            let child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
                .args(std::env::args_os().skip(1))
                .args([
                    "--rank",
                    &rank.to_string(),
                    "--child-phase",
                    phase_name(phase),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("starting rank {rank}: {e}"))?;
            children.push(child);
        }
        let mut results = Vec::new();
        let mut failed = 0;
        for (rank, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                eprintln!(
                    "benchfs-load: rank {rank} failed in phase {}",
                    phase_name(phase)
                );
                failed += 1;
            }
            let text = String::from_utf8_lossy(&out.stdout);
            results.extend(text.lines().filter_map(parse_result));
        }
        if failed > 0 {
            return Err(format!(
                "{failed} of {} ranks failed in phase {}",
                args.procs,
                phase_name(phase)
            ));
        }
        report(args, phase, &results);
    }
    Ok(())
}

struct RankResult {
    bytes: u64,
    ops: u64,
    start_ns: u128,
    end_ns: u128,
}

fn parse_result(line: &str) -> Option<RankResult> {
    let rest = line.strip_prefix("RESULT ")?;
    let field = |name: &str| -> Option<u128> {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    };
    Some(RankResult {
        bytes: field("bytes")? as u64,
        ops: field("ops")? as u64,
        start_ns: field("start_ns")?,
        end_ns: field("end_ns")?,
    })
}

fn report(args: &Args, phase: Phase, results: &[RankResult]) {
    let start = results.iter().map(|r| r.start_ns).min().unwrap_or(0);
    let end = results.iter().map(|r| r.end_ns).max().unwrap_or(0);
    let secs = (end.saturating_sub(start) as f64 / 1e9).max(1e-9);
    let bytes: u64 = results.iter().map(|r| r.bytes).sum();
    let ops: u64 = results.iter().map(|r| r.ops).sum();
    println!(
        "{:<8} {:<7} {:>6} {:>14} {:>12.1} {:>12.1}",
        phase_name(phase),
        match phase {
            Phase::Write | Phase::Read => pattern_name(args.pattern),
            _ => "-",
        },
        args.procs,
        bytes,
        bytes as f64 / secs / (1024.0 * 1024.0),
        ops as f64 / secs
    );
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Write => "write",
        Phase::Read => "read",
        Phase::Create => "create",
        Phase::Stat => "stat",
        Phase::Rename => "rename",
        Phase::Unlink => "unlink",
        Phase::Mkdir => "mkdir",
        Phase::Rmdir => "rmdir",
        Phase::Readdir => "readdir",
    }
}

fn pattern_name(p: Pattern) -> &'static str {
    match p {
        Pattern::Fpp => "fpp",
        Pattern::Shared => "shared",
        Pattern::Hard => "hard",
    }
}

/// The byte at `offset` of the file with `seed`.
fn expected_byte(seed: u64, offset: u64) -> u8 {
    (mix64((offset / 8) ^ seed) >> ((offset % 8) * 8)) as u8
}

/// Fills `buf` with the file's bytes from `offset`.
fn fill(buf: &mut [u8], seed: u64, offset: u64) {
    let mut i = 0usize;
    while i < buf.len() && (offset + i as u64) % 8 != 0 {
        buf[i] = expected_byte(seed, offset + i as u64);
        i += 1;
    }
    while i + 8 <= buf.len() {
        let word = mix64(((offset + i as u64) / 8) ^ seed);
        buf[i..i + 8].copy_from_slice(&word.to_le_bytes());
        i += 8;
    }
    while i < buf.len() {
        buf[i] = expected_byte(seed, offset + i as u64);
        i += 1;
    }
}

/// The file and the (offset, length) transfers of `rank`.
fn layout(args: &Args, rank: u32) -> (String, Vec<(u64, u64)>) {
    let t = args.transfer;
    let count = (args.block / t).max(1);
    let (n, r) = (u64::from(args.procs), u64::from(rank));
    match args.pattern {
        Pattern::Fpp => (
            format!("{}/fpp.{rank}", args.dir),
            (0..count).map(|k| (k * t, t)).collect(),
        ),
        Pattern::Shared => (
            format!("{}/shared", args.dir),
            (0..count).map(|k| (r * count * t + k * t, t)).collect(),
        ),
        Pattern::Hard => (
            format!("{}/hard", args.dir),
            (0..count).map(|k| ((k * n + r) * t, t)).collect(),
        ),
    }
}

fn file_size(args: &Args) -> u64 {
    let count = (args.block / args.transfer).max(1);
    match args.pattern {
        Pattern::Fpp => count * args.transfer,
        _ => count * args.transfer * u64::from(args.procs),
    }
}

fn connect(args: &Args) -> Result<Client, String> {
    let config = ClientConfig::from_env(&args.registry).map_err(|e| e.to_string())?;
    Client::connect(config).map_err(|e| format!("connecting: {e}"))
}

fn child(args: &Args, rank: u32, phase: Phase) -> Result<(), String> {
    let mut client = connect(args)?;
    let start_ns = now_ns();
    let started = Instant::now();
    let (bytes, ops) = match phase {
        Phase::Write => write_phase(args, &mut client, rank)?,
        Phase::Read => read_phase(args, &mut client, rank)?,
        Phase::Readdir => readdir_phase(args, &mut client)?,
        _ => meta_phase(args, &mut client, rank, phase)?,
    };
    let end_ns = start_ns + started.elapsed().as_nanos();
    println!("RESULT rank={rank} bytes={bytes} ops={ops} start_ns={start_ns} end_ns={end_ns}");
    Ok(())
}

fn write_phase(args: &Args, client: &mut Client, rank: u32) -> Result<(u64, u64), String> {
    let (path, transfers) = layout(args, rank);
    let seed = hash64(path.as_bytes());
    let mut file = client
        .create(&path, 0o644)
        .map_err(|e| format!("create {path}: {e}"))?;
    let mut buf = vec![0u8; args.transfer as usize];
    if args.no_verify {
        fill(&mut buf, seed, 0);
    }
    for &(offset, len) in &transfers {
        let buf = &mut buf[..len as usize];
        if !args.no_verify {
            fill(buf, seed, offset);
        }
        client
            .write_at(&mut file, buf, offset)
            .map_err(|e| format!("write {path} at {offset}: {e}"))?;
    }
    if args.fsync {
        client
            .fsync(&mut file)
            .map_err(|e| format!("fsync {path}: {e}"))?;
    }
    client
        .close(file)
        .map_err(|e| format!("close {path}: {e}"))?;
    Ok((
        transfers.len() as u64 * args.transfer,
        transfers.len() as u64,
    ))
}

fn read_phase(args: &Args, client: &mut Client, rank: u32) -> Result<(u64, u64), String> {
    let reader_of = (rank + 1) % args.procs;
    let (path, transfers) = layout(args, reader_of);
    let seed = hash64(path.as_bytes());
    if args.recreate {
        let again = client
            .create(&path, 0o644)
            .map_err(|e| format!("create again {path}: {e}"))?;
        client.close(again).map_err(|e| e.to_string())?;
    }
    let file = client
        .open(&path, OpenFlags::READ, 0)
        .map_err(|e| format!("open {path}: {e}"))?;
    let want = file_size(args);
    if file.size() != want {
        return Err(format!(
            "{path}: size {} at open, expected {want}",
            file.size()
        ));
    }
    let stat = client
        .stat(&path)
        .map_err(|e| format!("stat {path}: {e}"))?;
    if stat.size != want {
        return Err(format!("{path}: stat size {}, expected {want}", stat.size));
    }
    let mut buf = vec![0u8; args.transfer as usize];
    let mut expect = vec![0u8; args.transfer as usize];
    for &(offset, len) in &transfers {
        let buf = &mut buf[..len as usize];
        let got = client
            .read_at(&file, buf, offset)
            .map_err(|e| format!("read {path} at {offset}: {e}"))?;
        if got != len as usize {
            return Err(format!("{path}: short read at {offset}: {got} of {len}"));
        }
        if !args.no_verify {
            let expect = &mut expect[..len as usize];
            fill(expect, seed, offset);
            if let Some(i) = buf.iter().zip(expect.iter()).position(|(a, b)| a != b) {
                return Err(format!(
                    "{path}: wrong byte at offset {}",
                    offset + i as u64
                ));
            }
        }
    }
    client.close(file).map_err(|e| e.to_string())?;
    Ok((
        transfers.len() as u64 * args.transfer,
        transfers.len() as u64,
    ))
}

fn meta_phase(
    args: &Args,
    client: &mut Client,
    rank: u32,
    phase: Phase,
) -> Result<(u64, u64), String> {
    for i in 0..args.files {
        let path = format!("{}/meta.{rank}.{i}", args.dir);
        let result = match phase {
            Phase::Create => client.create(&path, 0o644).and_then(|f| client.close(f)),
            Phase::Stat => client.stat(&path).and_then(|s| {
                if s.size == 0 {
                    Ok(())
                } else {
                    Err(benchfs::client::Error::Invalid(format!(
                        "{path}: size {}",
                        s.size
                    )))
                }
            }),
            Phase::Rename => {
                // There and back: two renames, so later phases find the names they expect.
                let moved = format!("{path}.renamed");
                client
                    .rename(&path, &moved)
                    .and_then(|()| client.rename(&moved, &path))
            }
            Phase::Mkdir => client.mkdir(&format!("{}/dir.{rank}.{i}", args.dir), 0o755),
            Phase::Rmdir => client.rmdir(&format!("{}/dir.{rank}.{i}", args.dir)),
            _ => client.unlink(&path),
        };
        result.map_err(|e| format!("{} {path}: {e}", phase_name(phase)))?;
    }
    let ops = if phase == Phase::Rename {
        2 * args.files
    } else {
        args.files
    };
    Ok((0, ops))
}

/// The directory the readdir phase lists, with `--listing-entries` files in it.
fn listing_dir(args: &Args) -> String {
    format!("{}/listing-{}", args.dir, args.listing_entries)
}

/// Creates the directory that the readdir phase lists (once, by the driver).
fn prepare_listing(args: &Args, client: &mut Client) -> Result<(), String> {
    let dir = listing_dir(args);
    client
        .mkdir_all(&dir, 0o755)
        .map_err(|e| format!("mkdir {dir}: {e}"))?;
    let have = client
        .readdir(&dir)
        .map_err(|e| format!("readdir {dir}: {e}"))?
        .len() as u64;
    for i in have..args.listing_entries {
        let path = format!("{dir}/entry.{i:06}");
        let file = client
            .create(&path, 0o644)
            .map_err(|e| format!("create {path}: {e}"))?;
        client.close(file).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Lists the listing directory `--files` times, checking the count each time.
fn readdir_phase(args: &Args, client: &mut Client) -> Result<(u64, u64), String> {
    let dir = listing_dir(args);
    for _ in 0..args.files {
        let entries = client
            .readdir(&dir)
            .map_err(|e| format!("readdir {dir}: {e}"))?;
        if entries.len() as u64 != args.listing_entries {
            return Err(format!(
                "{dir}: {} entries, expected {}",
                entries.len(),
                args.listing_entries
            ));
        }
    }
    Ok((0, args.files))
}
