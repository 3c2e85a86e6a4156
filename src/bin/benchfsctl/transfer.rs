//! `put` and `get`: copies between a local file and BenchFS in parallel streams.
//!
//! The file is cut into ranges of `--chunk-mib` MiB; `--threads` workers, each with its own
//! client (a client belongs to the thread that made it), take the next range in turn, so the
//! local reads or writes of one worker overlap the network transfers of the others. Within a
//! range the client already keeps the 1 MiB pieces of one large transfer in flight together.
//! Local I/O is plain buffered `pread`/`pwrite`.
//!
//! A progress line (bytes done and total, MiB/s) goes to standard error while it is a
//! terminal; a summary line always goes to standard output.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use benchfs::client::{Client, ClientConfig, File, OpenFlags};

use crate::format::{base_name, is_dir, join};
use crate::{io_why, why, Ctl};

const MIB: u64 = 1 << 20;

/// How a copy runs.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Parallel streams, each with its own client.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: u64,
    /// Size of the range a stream moves at a time, in MiB.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub chunk_mib: u64,
}

/// Why a copy failed, and the path concerned.
struct Failure {
    path: String,
    why: String,
}

impl Failure {
    fn new(path: impl std::fmt::Display, why: impl Into<String>) -> Failure {
        Failure {
            path: path.to_string(),
            why: why.into(),
        }
    }
}

/// What one worker does with each range it takes.
trait Stream {
    /// Moves `buf.len()` bytes at `offset`.
    fn range(&mut self, client: &mut Client, offset: u64, buf: &mut [u8]) -> Result<(), Failure>;
    /// Ends the worker's part.
    fn finish(self, client: &mut Client) -> Result<(), Failure>;
}

/// A copy of `size` bytes in ranges of `chunk` by `threads` workers.
struct Plan<'a> {
    config: &'a ClientConfig,
    /// The BenchFS path, named by failures to connect.
    path: &'a str,
    size: u64,
    chunk: u64,
    threads: u64,
}

/// Copies `local` to `remote` (into it when it is a directory).
pub fn put(ctl: &mut Ctl, local: &Path, remote: &str, options: &Options) {
    let file = match std::fs::File::open(local) {
        Ok(file) => file,
        Err(e) => return ctl.fail("put", local.display(), io_why(&e)),
    };
    let size = match file.metadata() {
        Ok(meta) if meta.is_file() => meta.len(),
        Ok(_) => return ctl.fail("put", local.display(), "not a regular file"),
        Err(e) => return ctl.fail("put", local.display(), io_why(&e)),
    };
    let remote = match ctl.client.stat(remote) {
        Ok(stat) if is_dir(stat.mode) => {
            let name = local.file_name().map(|n| n.to_string_lossy().into_owned());
            join(remote, &name.unwrap_or_default())
        }
        _ => remote.to_string(),
    };
    let start = Instant::now();
    let local_name = local.display().to_string();
    match put_file(ctl, (&file, &local_name), size, &remote, options) {
        Ok(()) => summary("put", &local_name, &remote, size, start),
        Err(f) => ctl.fail("put", f.path, f.why),
    }
}

fn put_file(
    ctl: &mut Ctl,
    (local, local_name): (&std::fs::File, &str),
    size: u64,
    remote: &str,
    options: &Options,
) -> Result<(), Failure> {
    let remote_error = |e: benchfs::client::Error| Failure::new(remote, why(&e));
    let handle = ctl.client.create(remote, 0o644).map_err(remote_error)?;
    let existing = handle.size();
    ctl.client.close(handle).map_err(remote_error)?;
    if existing > 0 {
        ctl.client.truncate(remote, 0).map_err(remote_error)?;
    }
    let plan = Plan::new(&ctl.config, remote, size, options);
    run(&plan, |client| {
        let flags = OpenFlags::READ_WRITE;
        let file = client.open(remote, flags, 0).map_err(remote_error)?;
        Ok(Put {
            file,
            local,
            local_name,
        })
    })?;
    let stored = ctl.client.stat(remote).map_err(remote_error)?.size;
    if stored != size {
        return Err(Failure::new(
            remote,
            format!("{stored} bytes stored, {size} written"),
        ));
    }
    Ok(())
}

struct Put<'a> {
    file: File,
    local: &'a std::fs::File,
    local_name: &'a str,
}

impl Stream for Put<'_> {
    fn range(&mut self, client: &mut Client, offset: u64, buf: &mut [u8]) -> Result<(), Failure> {
        let path = self.file.path().to_string();
        self.local
            .read_exact_at(buf, offset)
            .map_err(|e| Failure::new(self.local_name, io_why(&e)))?;
        client
            .write_at(&mut self.file, buf, offset)
            .map_err(|e| Failure::new(&path, why(&e)))?;
        Ok(())
    }

    fn finish(mut self, client: &mut Client) -> Result<(), Failure> {
        let path = self.file.path().to_string();
        let error = |e: benchfs::client::Error| Failure::new(&path, why(&e));
        client.fsync(&mut self.file).map_err(error)?;
        client.close(self.file).map_err(error)
    }
}

/// Copies `remote` to `local` (into it when it is a directory).
pub fn get(ctl: &mut Ctl, remote: &str, local: &Path, options: &Options) {
    let local: PathBuf = if local.is_dir() {
        local.join(base_name(remote))
    } else {
        local.to_path_buf()
    };
    let size = match ctl.client.open(remote, OpenFlags::READ, 0) {
        Ok(handle) => {
            let size = handle.size();
            let _ = ctl.client.close(handle);
            size
        }
        Err(e) => return ctl.fail("get", remote, why(&e)),
    };
    let dest = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&local);
    let dest = match dest {
        Ok(dest) => dest,
        Err(e) => return ctl.fail("get", local.display(), io_why(&e)),
    };
    let local_name = local.display().to_string();
    let start = Instant::now();
    let plan = Plan::new(&ctl.config, remote, size, options);
    let copied = run(&plan, |client| {
        let handle = client.open(remote, OpenFlags::READ, 0);
        let file = handle.map_err(|e| Failure::new(remote, why(&e)))?;
        Ok(Get {
            file,
            local: &dest,
            local_name: &local_name,
        })
    });
    let checked = copied.and_then(|_| match dest.metadata() {
        Ok(meta) if meta.len() == size => Ok(()),
        Ok(meta) => Err(Failure::new(
            &local_name,
            format!("{} bytes written, {size} expected", meta.len()),
        )),
        Err(e) => Err(Failure::new(&local_name, io_why(&e))),
    });
    match checked {
        Ok(()) => summary("get", remote, &local_name, size, start),
        Err(f) => ctl.fail("get", f.path, f.why),
    }
}

struct Get<'a> {
    file: File,
    local: &'a std::fs::File,
    local_name: &'a str,
}

impl Stream for Get<'_> {
    fn range(&mut self, client: &mut Client, offset: u64, buf: &mut [u8]) -> Result<(), Failure> {
        let path = self.file.path().to_string();
        let n = client
            .read_at(&self.file, buf, offset)
            .map_err(|e| Failure::new(&path, why(&e)))?;
        if n != buf.len() {
            let end = offset + n as u64;
            return Err(Failure::new(path, format!("file ends at {end} bytes")));
        }
        self.local
            .write_all_at(buf, offset)
            .map_err(|e| Failure::new(self.local_name, io_why(&e)))
    }

    fn finish(self, client: &mut Client) -> Result<(), Failure> {
        let path = self.file.path().to_string();
        client
            .close(self.file)
            .map_err(|e| Failure::new(path, why(&e)))
    }
}

impl<'a> Plan<'a> {
    fn new(config: &'a ClientConfig, path: &'a str, size: u64, options: &Options) -> Plan<'a> {
        let chunk = options.chunk_mib * MIB;
        Plan {
            config,
            path,
            size,
            chunk,
            threads: options.threads.min(size.div_ceil(chunk)),
        }
    }
}

/// What the workers of one copy share.
#[derive(Default)]
struct Progress {
    /// Offset of the next range to take.
    next: AtomicU64,
    /// Bytes moved.
    done: AtomicU64,
    /// A worker failed: the others stop after their current range.
    stop: AtomicBool,
}

/// Runs the workers of `plan`, each with a stream made by `open` on its own client; returns
/// the bytes moved. The first failure stops the others after their current range.
fn run<S: Stream>(
    plan: &Plan,
    open: impl Fn(&mut Client) -> Result<S, Failure> + Sync,
) -> Result<u64, Failure> {
    let progress = Progress::default();
    let (finished, finishing) = mpsc::channel();
    let results: Vec<Result<(), Failure>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..plan.threads)
            .map(|_| {
                let finished = finished.clone();
                let (open, progress) = (&open, &progress);
                scope.spawn(move || {
                    let result = work(plan, open, progress);
                    if result.is_err() {
                        progress.stop.store(true, Ordering::Relaxed);
                    }
                    let _ = finished.send(());
                    result
                })
            })
            .collect();
        // Only the workers hold senders now: a worker that panics cannot leave `watch`
        // waiting forever.
        drop(finished);
        watch(&finishing, workers.len(), &progress.done, plan.size);
        workers
            .into_iter()
            .map(|w| w.join().expect("a copy worker panicked"))
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(progress.done.load(Ordering::Relaxed))
}

/// One worker: connect, open, then take ranges until none is left or another worker failed.
fn work<S: Stream>(
    plan: &Plan,
    open: &impl Fn(&mut Client) -> Result<S, Failure>,
    progress: &Progress,
) -> Result<(), Failure> {
    let mut client = Client::connect(plan.config.clone())
        .map_err(|e| Failure::new(plan.path, format!("connect: {e}")))?;
    let mut stream = open(&mut client)?;
    let mut buf = vec![0u8; plan.chunk.min(plan.size) as usize];
    while !progress.stop.load(Ordering::Relaxed) {
        let offset = progress.next.fetch_add(plan.chunk, Ordering::Relaxed);
        if offset >= plan.size {
            break;
        }
        let len = plan.chunk.min(plan.size - offset) as usize;
        stream.range(&mut client, offset, &mut buf[..len])?;
        progress.done.fetch_add(len as u64, Ordering::Relaxed);
    }
    stream.finish(&mut client)
}

/// Waits for `workers` finish signals, drawing the progress line meanwhile on a terminal.
fn watch(finishing: &mpsc::Receiver<()>, workers: usize, done: &AtomicU64, total: u64) {
    let terminal = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut left = workers;
    while left > 0 {
        match finishing.recv_timeout(Duration::from_millis(200)) {
            Ok(()) => left -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if terminal {
            let bytes = done.load(Ordering::Relaxed);
            let seconds = start.elapsed().as_secs_f64().max(1e-9);
            let percent = (bytes * 100).checked_div(total).unwrap_or(100);
            eprint!(
                "\r\x1b[K{:.1}/{:.1} MiB {percent:>3}% {:.1} MiB/s",
                bytes as f64 / MIB as f64,
                total as f64 / MIB as f64,
                bytes as f64 / MIB as f64 / seconds
            );
        }
    }
    if terminal && workers > 0 {
        eprint!("\r\x1b[K");
        let _ = std::io::stderr().flush();
    }
}

fn summary(op: &str, from: &str, to: &str, bytes: u64, start: Instant) {
    let seconds = start.elapsed().as_secs_f64();
    let rate = bytes as f64 / MIB as f64 / seconds.max(1e-9);
    println!("{op} {from} -> {to}: {bytes} bytes in {seconds:.3} s ({rate:.1} MiB/s)");
}
