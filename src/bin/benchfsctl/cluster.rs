//! Cluster commands: wait for the servers, show their counters, stop them.

use std::path::Path;
use std::time::{Duration, Instant};

use benchfs::client::Client;
use benchfs::registry::Registry;

use crate::format::human;

/// Waits until every target is published.
pub fn wait(registry: &Path, servers: Option<u32>, timeout: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let reg = open_registry(registry, deadline)?;
    let targets = reg.wait(servers, deadline).map_err(|e| e.to_string())?;
    let ranks = targets.iter().map(|t| t.rank).max().map_or(0, |r| r + 1);
    println!("cluster up: {ranks} servers, {} targets", targets.len());
    Ok(())
}

/// Opens the registry, waiting for it to be created until `deadline`.
fn open_registry(dir: &Path, deadline: Instant) -> Result<Registry, String> {
    loop {
        match Registry::open_existing(dir) {
            Ok(r) => return Ok(r),
            Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn client(registry: &Path, servers: Option<u32>) -> Result<Client, String> {
    Client::connect(crate::client_config(registry, servers)?).map_err(|e| e.to_string())
}

/// Prints a line of counters per target.
pub fn status(registry: &Path, servers: Option<u32>) -> Result<(), String> {
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

/// Asks every server to stop and waits until they are gone.
pub fn shutdown(registry: &Path, servers: Option<u32>, timeout: u64) -> Result<(), String> {
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
