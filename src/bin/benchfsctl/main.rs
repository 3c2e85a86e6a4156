//! `benchfsctl`: wait for a BenchFS cluster, show its status, stop it.
//!
//! The registry directory comes from `--registry` or `BENCHFS_REGISTRY`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use benchfs::client::{Client, ClientConfig};
use benchfs::registry::Registry;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "benchfsctl", version, about = "BenchFS cluster tool")]
struct Cli {
    /// Registry directory of the cluster.
    #[arg(long, env = "BENCHFS_REGISTRY", global = true)]
    registry: Option<PathBuf>,
    /// Number of servers to expect (default: the count the servers published).
    #[arg(long, env = "BENCHFS_SERVERS_EXPECTED", global = true)]
    servers: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Wait until every target of the cluster is up; fail after the timeout.
    Wait {
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Show targets, their counters and capacity.
    Status,
    /// Stop every server gracefully and wait until they unpublished.
    Shutdown {
        /// Seconds to wait for the servers to go.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(registry) = cli.registry.clone() else {
        eprintln!("benchfsctl: give the registry directory with --registry or BENCHFS_REGISTRY");
        return ExitCode::from(2);
    };
    let result = match cli.command {
        Command::Wait { timeout } => wait(&registry, cli.servers, timeout),
        Command::Status => status(&registry, cli.servers),
        Command::Shutdown { timeout } => shutdown(&registry, cli.servers, timeout),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchfsctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn wait(registry: &std::path::Path, servers: Option<u32>, timeout: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let reg = open_registry(registry, deadline)?;
    let targets = reg.wait(servers, deadline).map_err(|e| e.to_string())?;
    let ranks = targets.iter().map(|t| t.rank).max().map_or(0, |r| r + 1);
    println!("cluster up: {ranks} servers, {} targets", targets.len());
    Ok(())
}

/// Opens the registry, waiting for it to be created until `deadline`.
fn open_registry(dir: &std::path::Path, deadline: Instant) -> Result<Registry, String> {
    loop {
        match Registry::open_existing(dir) {
            Ok(r) => return Ok(r),
            Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn client(registry: &std::path::Path, servers: Option<u32>) -> Result<Client, String> {
    let mut config = ClientConfig::from_env(registry).map_err(|e| e.to_string())?;
    config.expected_servers = servers.or(config.expected_servers);
    config.connect_timeout = Duration::from_secs(5);
    Client::connect(config).map_err(|e| e.to_string())
}

fn status(registry: &std::path::Path, servers: Option<u32>) -> Result<(), String> {
    let mut client = client(registry, servers)?;
    let stats = client.target_stats().map_err(|e| e.to_string())?;
    println!(
        "{:>6} {:<16} {:>5} {:>10} {:>7} {:>12} {:>12} {:>10} {:>6} {:>5} {:>9} {:>9}",
        "target",
        "host",
        "rank",
        "ops",
        "errors",
        "written",
        "read",
        "copied",
        "queue",
        "busy",
        "files",
        "free"
    );
    for (i, (s, t)) in stats.iter().zip(client.targets()).enumerate() {
        println!(
            "{:>6} {:<16} {:>5} {:>10} {:>7} {:>12} {:>12} {:>10} {:>6} {:>5} {:>9} {:>9}",
            i,
            t.host,
            format!("{}.{}", s.rank, s.shard),
            s.ops,
            s.errors,
            human(s.bytes_written),
            human(s.bytes_read),
            human(s.bytes_copied),
            s.queue_depth,
            s.busy_rejections,
            s.inodes,
            human(s.available_bytes)
        );
    }
    Ok(())
}

fn shutdown(registry: &std::path::Path, servers: Option<u32>, timeout: u64) -> Result<(), String> {
    let mut client = client(registry, servers)?;
    client.shutdown_servers().map_err(|e| e.to_string())?;
    drop(client);
    let reg = Registry::open_existing(registry).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let left = reg.list().map_err(|e| e.to_string())?.len();
        if left == 0 {
            println!("cluster stopped");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{left} targets still registered after {timeout} s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}
