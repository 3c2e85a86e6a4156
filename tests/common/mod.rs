//! A local cluster of `benchfsd` processes for the tests: UCX on loopback (TCP or shared
//! memory), data in a disk-backed temporary directory, stopped (killed if need be) on drop.

#![allow(dead_code)]

pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use benchfs::client::{Client, ClientConfig};

/// The transports the tests run over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP on the loopback device.
    Tcp,
    /// Shared memory (posix) with cross-memory attach for RMA.
    Shm,
    /// TCP between hosts made of network namespaces ([`netns::Hosts`]): server `r` on host
    /// `r`, clients on the host after the last server.
    Hosts,
}

impl Transport {
    /// UCX settings without the `UCX_` prefix.
    pub fn settings(self) -> Vec<(String, String)> {
        let pairs: &[(&str, &str)] = match self {
            Transport::Tcp => &[("TLS", "tcp"), ("NET_DEVICES", "lo")],
            Transport::Shm => &[("TLS", "posix,cma")],
            Transport::Hosts => &[("TLS", "tcp"), ("NET_DEVICES", "eth0")],
        };
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The same as environment variables.
    pub fn env(self) -> Vec<(String, String)> {
        self.settings()
            .into_iter()
            .map(|(k, v)| (format!("UCX_{k}"), v))
            .collect()
    }
}

/// Cluster tests share two cores: one cluster at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The turn of a test that runs its own servers (not through [`Cluster`]).
pub fn exclusive() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Options of a test cluster.
#[derive(Debug, Clone)]
pub struct Options {
    pub servers: u32,
    pub shards: u32,
    pub transport: Transport,
    pub slab: &'static str,
    pub extra: Vec<String>,
    /// The servers' data directory (default: `data` in the cluster's directory).
    pub data_dir: Option<PathBuf>,
}

impl Options {
    pub fn new(transport: Transport) -> Options {
        Options {
            servers: 2,
            shards: 2,
            transport,
            slab: "16m",
            extra: Vec::new(),
            data_dir: None,
        }
    }
}

/// A running cluster.
pub struct Cluster {
    pub options: Options,
    pub root: tempfile::TempDir,
    servers: Vec<Option<Child>>,
    /// The hosts of a [`Transport::Hosts`] cluster (dropped after the servers are killed).
    pub hosts: Option<netns::Hosts>,
    _turn: MutexGuard<'static, ()>,
}

/// A temporary directory on a disk-backed file system (O_DIRECT needs one; /dev/shm is not).
pub fn disk_tempdir() -> tempfile::TempDir {
    let base = std::env::var_os("BENCHFS_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    tempfile::tempdir_in(base).expect("temporary directory")
}

impl Cluster {
    pub fn start(options: Options) -> Cluster {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let hosts =
            (options.transport == Transport::Hosts).then(|| netns::Hosts::new(options.servers + 1));
        let mut cluster = Cluster {
            options,
            root: disk_tempdir(),
            servers: Vec::new(),
            hosts,
            _turn: turn,
        };
        for rank in 0..cluster.options.servers {
            let child = cluster.spawn(rank);
            cluster.servers.push(Some(child));
        }
        cluster.wait_up();
        cluster
    }

    pub fn registry(&self) -> PathBuf {
        self.root.path().join("registry")
    }

    pub fn data(&self) -> PathBuf {
        match &self.options.data_dir {
            Some(dir) => dir.clone(),
            None => self.root.path().join("data"),
        }
    }

    pub fn log_path(&self, rank: u32) -> PathBuf {
        self.root.path().join(format!("server-{rank}.log"))
    }

    pub fn log(&self, rank: u32) -> String {
        std::fs::read_to_string(self.log_path(rank)).unwrap_or_default()
    }

    fn spawn(&self, rank: u32) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(rank))
            .expect("server log");
        let o = &self.options;
        self.command_on(Some(rank), env!("CARGO_BIN_EXE_benchfsd"))
            .arg("--registry-dir")
            .arg(self.registry())
            .arg("--data-dir")
            .arg(self.data())
            .args([
                "--rank",
                &rank.to_string(),
                "--servers",
                &o.servers.to_string(),
            ])
            .args(["--shards", &o.shards.to_string(), "--slab-size", o.slab])
            .args(["--no-numa", "--log-level", "debug"])
            .args(&o.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start benchfsd")
    }

    /// Waits until every target is published (and fails with the server logs otherwise).
    pub fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(reg) = benchfs::registry::Registry::open_existing(&self.registry()) {
                if let Ok(entries) = reg.list() {
                    let alive: Vec<_> = entries
                        .iter()
                        .filter(|e| self.is_current(e.rank, e.pid))
                        .collect();
                    let running = self.servers.iter().flatten().count() as u32;
                    if alive.len() == (running * self.options.shards) as usize {
                        return;
                    }
                }
            }
            for (rank, server) in self.servers.iter_mut().enumerate() {
                if let Some(child) = server {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "server {rank} exited ({status}):\n{}",
                            self.log(rank as u32)
                        );
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "cluster did not come up:\n{}",
                self.log(0)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn is_current(&self, rank: u32, pid: u32) -> bool {
        let server = self.servers.get(rank as usize).and_then(|s| s.as_ref());
        server.is_some_and(|c| c.id() == pid)
    }

    /// `program` with the transport's environment, on the host of server `rank` (`None`: the
    /// clients' host).
    pub fn command_on(&self, rank: Option<u32>, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = match &self.hosts {
            Some(hosts) => hosts.command(rank.unwrap_or(self.options.servers), program),
            None => Command::new(program),
        };
        cmd.envs(self.options.transport.env());
        cmd
    }

    /// `program` as a client of the cluster: on the clients' host, with the transport's
    /// environment and `BENCHFS_REGISTRY`.
    pub fn client_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = self.command_on(None, program);
        cmd.env("BENCHFS_REGISTRY", self.registry());
        cmd
    }

    /// The host of the clients, for a [`Transport::Hosts`] cluster.
    pub fn client_host(&self) -> u32 {
        self.options.servers
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.registry());
        config.ucx_settings = self.options.transport.settings();
        config.connect_timeout = Duration::from_secs(30);
        config
    }

    /// A client in this process. On a [`Transport::Hosts`] cluster the calling thread moves
    /// to the clients' host first.
    pub fn client(&self) -> Client {
        if let Some(hosts) = &self.hosts {
            hosts.enter(self.client_host());
        }
        Client::connect(self.client_config()).expect("client connects")
    }

    /// Runs `benchfs-load` against the cluster.
    pub fn load(&self, args: &[&str]) -> Output {
        self.command_on(None, env!("CARGO_BIN_EXE_benchfs-load"))
            .arg("--registry")
            .arg(self.registry())
            .args(args)
            .output()
            .expect("run benchfs-load")
    }

    /// Runs `benchfs-load` and fails the test with its output unless it succeeded.
    pub fn load_ok(&self, args: &[&str]) -> String {
        self.load_ok_env(args, &[])
    }

    /// [`Cluster::load_ok`] with extra environment variables for the clients.
    pub fn load_ok_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self
            .command_on(None, env!("CARGO_BIN_EXE_benchfs-load"))
            .arg("--registry")
            .arg(self.registry())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run benchfs-load");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "benchfs-load {args:?} failed:\n{text}\n{}",
            self.log(0)
        );
        text
    }

    pub fn pid(&self, rank: u32) -> u32 {
        self.servers[rank as usize].as_ref().expect("running").id()
    }

    pub fn kill(&mut self, rank: u32) {
        if let Some(mut child) = self.servers[rank as usize].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self, rank: u32) {
        self.kill(rank);
        let child = self.spawn(rank);
        self.servers[rank as usize] = Some(child);
        self.wait_up();
    }

    /// Sends SIGTERM to every server and waits for each to exit; returns their exit codes.
    pub fn terminate(&mut self) -> Vec<Option<i32>> {
        let mut codes = Vec::new();
        for server in self.servers.iter_mut() {
            if let Some(child) = server.as_ref() {
                // SAFETY: kill has no memory preconditions; the pid is our live child.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
        }
        for server in self.servers.iter_mut() {
            if let Some(mut child) = server.take() {
                codes.push(wait_timeout(&mut child, Duration::from_secs(30)));
            }
        }
        codes
    }

    /// Waits for every server to exit by itself (after a shutdown request).
    pub fn wait_exit(&mut self) -> Vec<Option<i32>> {
        let mut codes = Vec::new();
        for server in self.servers.iter_mut() {
            if let Some(mut child) = server.take() {
                codes.push(wait_timeout(&mut child, Duration::from_secs(30)));
            }
        }
        codes
    }

    /// Chunk files of `file_id` on disk, over every server and shard.
    pub fn chunk_files_of(&self, file_id: u64) -> Vec<PathBuf> {
        let prefix = format!("{file_id:016x}.");
        let mut found = Vec::new();
        walk(&self.data(), &mut |p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(&prefix) {
                found.push(p.to_path_buf());
            }
        });
        found
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, f);
        } else {
            f(&path);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for rank in 0..self.servers.len() {
            self.kill(rank as u32);
        }
    }
}

/// Waits until every target has only `own` connections, no waiting request and every slot
/// free; returns the last counters otherwise.
pub fn settled(client: &mut Client, own: u64, within: Duration) -> Result<(), String> {
    let until = Instant::now() + within;
    loop {
        let stats = client.target_stats().map_err(|e| e.to_string())?;
        let busy: Vec<String> = stats
            .iter()
            .filter(|s| s.connections != own || s.queue_depth != 0 || s.free_slots != s.slots)
            .map(|s| {
                format!(
                    "server {} shard {}: {} connections, {} waiting, {}/{} slots free",
                    s.rank, s.shard, s.connections, s.queue_depth, s.free_slots, s.slots
                )
            })
            .collect();
        if busy.is_empty() {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(busy.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
