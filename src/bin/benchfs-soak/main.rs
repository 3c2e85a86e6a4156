//! `benchfs-soak`: the clients of the soak test (`scripts/soak.sh`), a verified random mix of
//! every client operation that keeps a model of what the cluster acknowledged as durable.
//!
//! `run` starts `--clients` threads, each with its own [`Client`] and its own directory
//! (`<dir>/c<i>`), so that no two clients race on a name (the races BenchFS documents as
//! limits cannot happen). Until the deadline each thread picks at random: create and write a
//! file (sizes from empty to several chunks, unaligned ones included, written in pieces in any
//! order, sometimes with a hole first, sometimes fsynced), write into an existing file (with an
//! fsync between two writes at times), read a whole file or a range and compare every byte,
//! stat, rename (to a new name or over another file), unlink, truncate (shrink or grow),
//! mkdir, readdir, rmdir and rename of a directory. Names are never used twice.
//!
//! # The model
//!
//! A file is *certain* once `close` or `fsync` returned Ok: from then on its size and bytes
//! are known (a list of extents, each written from a seed; the byte at offset `o` of an extent
//! is a function of its seed and `o`, so a misplaced byte is caught). A namespace operation that
//! returned Ok updates the model. An operation that failed leaves every path it touched
//! *uncertain*: it may or may not have happened, in part or in full, even later (a stopped
//! server executes what it received when it resumes). Uncertain paths are never checked and
//! never touched again, and directories with uncertain entries are not removed or renamed.
//!
//! A certain file that is missing (the server says `ENOENT`) or whose size or bytes differ is
//! LOST, counted once, with its size as lost bytes. Errors that faults cause (deadlines,
//! broken connections) are counted by errno name; other errors are *unexpected* and printed.
//!
//! `run` saves the model and the counters to `--state` (TOML). After the faults are healed and
//! every server is up, `verify` reads every certain file in full and lists every certain
//! directory, adds what it finds to the counters and prints the summary line:
//! `ops=<n> errors=<errno:n,...> unexpected=<n> bytes_written=<n> bytes_verified=<n>
//! files_verified=<n> uncertain=<n> lost_bytes=<n> LOST=<n>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use benchfs::client::{Client, Error, OpenFlags};
use benchfs::placement::mix64;
use clap::{Args, Parser, Subcommand};

mod model;
mod worker;

use model::*;
use worker::*;

#[derive(Debug, Parser)]
#[command(
    name = "benchfs-soak",
    about = "Clients of the BenchFS soak test: a verified random mix of operations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the clients until the deadline and save the model to the state file.
    Run(RunArgs),
    /// Check every file and directory of the state file, print the summary line.
    Verify(VerifyArgs),
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Registry directory of the cluster.
    #[arg(long, env = "BENCHFS_REGISTRY")]
    registry: PathBuf,
    /// Client threads, each with its own client and directory.
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Seconds to run (after every client is ready).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Where to save the model and the counters.
    #[arg(long)]
    state: PathBuf,
    /// A file created once every client is connected and has its directory.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Seed of the random choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Deadline of each request, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// Chunk size of the files created (suffixes k, m, g).
    #[arg(long, default_value = "1m", value_parser = size)]
    chunk_size: u64,
    /// Bytes of certain files a client keeps at most (it unlinks beyond).
    #[arg(long, default_value = "48m", value_parser = size)]
    budget: u64,
    /// Directory of the clients' directories.
    #[arg(long, default_value = "/soak")]
    dir: String,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 60)]
    progress: u64,
}

#[derive(Debug, Clone, Args)]
struct VerifyArgs {
    /// Registry directory of the cluster.
    #[arg(long, env = "BENCHFS_REGISTRY")]
    registry: PathBuf,
    /// The state file `run` saved.
    #[arg(long)]
    state: PathBuf,
    /// Deadline of each request, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Seconds a file that fails for a transient reason (deadline, connection) is retried.
    #[arg(long, default_value_t = 60)]
    patience: u64,
}

fn size(s: &str) -> Result<u64, String> {
    benchfs::config::parse_size(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => run(&args),
        Command::Verify(args) => verify(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("benchfs-soak: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a client thread hands back.
struct Outcome {
    files: BTreeMap<String, FileModel>,
    dirs: BTreeSet<String>,
    uncertain: Vec<String>,
    lost: BTreeMap<String, FileModel>,
    counters: Counters,
}

/// A client thread: connect, make its directory, wait for the others, run until `until`.
fn client_thread(
    args: &RunArgs,
    id: u32,
    seed: u64,
    ready: &Barrier,
    until: &std::sync::OnceLock<Instant>,
    progress: &Progress,
) -> Result<Outcome, String> {
    let prepared = (|| {
        let mut client = connect(&args.registry, args.timeout_ms, args.chunk_size)?;
        let root = format!("{}/c{id}", args.dir.trim_end_matches('/'));
        let give_up = Instant::now() + Duration::from_secs(60);
        while let Err(e) = client.mkdir_all(&root, 0o755) {
            if Instant::now() > give_up {
                return Err(format!("mkdir {root}: {e}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok((client, root))
    })();
    ready.wait();
    ready.wait();
    let (client, root) = prepared?;
    let until = *until.get().expect("set before the second barrier");
    let mut worker = Worker {
        client,
        id,
        root: root.clone(),
        files: BTreeMap::new(),
        dirs: BTreeSet::from([root]),
        uncertain: BTreeMap::new(),
        lost: BTreeMap::new(),
        settled: BTreeSet::new(),
        dangling: BTreeSet::new(),
        stuck: BTreeSet::new(),
        next_name: 0,
        counters: Counters::default(),
        rng: Rng(seed ^ mix64(u64::from(id) + 1)),
        budget: args.budget,
        chunk: args.chunk_size,
        buf: Vec::new(),
        check: Vec::new(),
        progress,
    };
    while Instant::now() < until {
        worker.step();
    }
    Ok(Outcome {
        files: worker.files,
        dirs: worker.dirs,
        uncertain: worker.uncertain.into_keys().collect(),
        lost: worker.lost,
        counters: worker.counters,
    })
}

fn run(args: &RunArgs) -> Result<ExitCode, String> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!(
        "benchfs-soak: {} clients for {} s, seed {seed}",
        args.clients, args.seconds
    );
    let progress = Progress::default();
    // Two rounds: every client connected (or failed), then the deadline is set.
    let ready = Barrier::new(args.clients as usize + 1);
    let until = std::sync::OnceLock::new();
    let outcomes = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..args.clients)
            .map(|id| {
                let (ready, until, progress) = (&ready, &until, &progress);
                scope.spawn(move || client_thread(args, id, seed, ready, until, progress))
            })
            .collect();
        ready.wait();
        let started = Instant::now();
        let _ = until.set(started + Duration::from_secs(args.seconds));
        ready.wait();
        if let Some(file) = &args.ready_file {
            if let Err(e) = std::fs::write(file, b"ready\n") {
                eprintln!("benchfs-soak: {}: {e}", file.display());
            }
        }
        report_progress(args, &progress, started, &threads);
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err("a client panicked".into())))
            .collect::<Vec<_>>()
    });
    let mut state = State::default();
    let mut uncertain = 0;
    for outcome in outcomes {
        let outcome = outcome?;
        state.counters.add(&outcome.counters);
        uncertain += outcome.uncertain.len();
        state.dirs.extend(outcome.dirs);
        state.uncertain.extend(outcome.uncertain);
        state
            .files
            .extend(outcome.files.into_iter().map(SavedFile::from));
        state
            .lost
            .extend(outcome.lost.into_iter().map(SavedFile::from));
    }
    let text = toml::to_string(&state).map_err(|e| format!("saving the state: {e}"))?;
    std::fs::write(&args.state, text).map_err(|e| format!("{}: {e}", args.state.display()))?;
    println!("run: {}", state.counters.summary(uncertain));
    let kinds: Vec<String> = state
        .counters
        .ops
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("run: ops by kind: {}", kinds.join(" "));
    Ok(ExitCode::SUCCESS)
}

/// Prints a progress line every `--progress` seconds until every thread finished.
fn report_progress<T>(
    args: &RunArgs,
    progress: &Progress,
    started: Instant,
    threads: &[std::thread::ScopedJoinHandle<'_, T>],
) {
    let mut next = Duration::from_secs(args.progress);
    while !threads.iter().all(|t| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if args.progress > 0 && started.elapsed() >= next {
            eprintln!(
                "benchfs-soak: {:>5} s: ops={} errors={} LOST={}",
                next.as_secs(),
                progress.ops.load(Ordering::Relaxed),
                progress.errors.load(Ordering::Relaxed),
                progress.lost.load(Ordering::Relaxed)
            );
            next += Duration::from_secs(args.progress);
        }
    }
}

/// Retries `f` while it fails for a transient reason, until `until`.
fn patiently<T>(until: Instant, mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    loop {
        match f() {
            Err(e) if classify(&e) == Failure::Fault && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Reads all of `saved.path` (retrying transient failures until `until`) and compares it
/// with its model; why it differs.
fn check_file(client: &mut Client, until: Instant, saved: &SavedFile) -> Result<(), String> {
    let model = FileModel::from(saved);
    let (size, data) =
        patiently(until, || read_whole(client, &saved.path)).map_err(|e| e.to_string())?;
    if size != model.size || data.len() as u64 != model.size {
        return Err(format!(
            "size {size} ({} read), {} acknowledged",
            data.len(),
            model.size
        ));
    }
    let mut want = vec![0u8; data.len()];
    model.expected(0, &mut want);
    match first_difference(&data, &want) {
        Some(i) => Err(format!("wrong byte at offset {i}")),
        None => Ok(()),
    }
}

/// Reads all of `path`; its bytes.
fn read_whole(client: &mut Client, path: &str) -> Result<(u64, Vec<u8>), Error> {
    let file = client.open(path, OpenFlags::READ, 0)?;
    let mut buf = vec![0u8; file.size() as usize];
    let n = client.read_at(&file, &mut buf, 0)?;
    buf.truncate(n);
    let size = file.size();
    client.close(file)?;
    Ok((size, buf))
}

fn verify(args: &VerifyArgs) -> Result<ExitCode, String> {
    let text = std::fs::read_to_string(&args.state)
        .map_err(|e| format!("{}: {e}", args.state.display()))?;
    let state: State =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", args.state.display()))?;
    let mut client = connect(&args.registry, args.timeout_ms, 0)?;
    let until = Instant::now() + Duration::from_secs(args.patience);
    let mut found = Counters::default();
    let lost = |found: &mut Counters, path: &str, size: u64, why: String| {
        found.lost_files += 1;
        found.lost_bytes += size.max(1);
        eprintln!("benchfs-soak: verify: LOST {path} ({size} bytes): {why}");
    };
    for saved in &state.files {
        *found.ops.entry("verify".into()).or_default() += 1;
        match check_file(&mut client, until, saved) {
            Ok(()) => {
                found.files_verified += 1;
                found.bytes_verified += saved.size;
            }
            Err(why) => lost(&mut found, &saved.path, saved.size, why),
        }
    }
    // A second look at what was found lost during the run (already counted), to tell damage
    // on the servers from reads that returned wrong bytes.
    for saved in &state.lost {
        let now = match check_file(&mut client, until, saved) {
            Ok(()) => "intact".to_string(),
            Err(why) => why,
        };
        eprintln!(
            "benchfs-soak: verify: {} (lost during the run) now: {now}",
            saved.path
        );
    }
    let files: BTreeSet<&str> = state.files.iter().map(|f| f.path.as_str()).collect();
    let dirs: BTreeSet<&str> = state.dirs.iter().map(String::as_str).collect();
    for dir in &state.dirs {
        *found.ops.entry("verify_dir".into()).or_default() += 1;
        match patiently(until, || client.readdir(dir)) {
            Ok(entries) => {
                let listed: BTreeSet<String> = entries
                    .iter()
                    .map(|e| format!("{dir}/{}", e.name))
                    .collect();
                for path in files.iter().chain(dirs.iter()) {
                    if parent_of(path) == dir && !listed.contains(*path) {
                        lost(&mut found, path, 0, format!("not listed in {dir}"));
                    }
                }
            }
            Err(e) => lost(&mut found, dir, 0, format!("readdir: {e}")),
        }
    }
    let mut total = state.counters.clone();
    total.add(&found);
    println!("{}", total.summary(state.uncertain.len()));
    Ok(if total.lost_files == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
