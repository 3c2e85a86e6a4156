//! A whole server process: identity from the launcher, start-up checks, the shard plan, one
//! pinned thread per shard, registry publication, and a graceful stop.
//!
//! Directory layout under the data directory: `server-<rank>/shard-<i>/{chunks,meta}`, so
//! several servers sharing a node (and a data directory) never share files, and a server
//! restarted with the same rank finds its data again.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::ServerConfig;
use crate::registry::{self, Registry, TargetEntry};
use crate::topology::{self, PlanRequest, ShardPlan, ShardSpec};

use super::{run_shard, Control, Failure, ShardConfig, ShardHooks};

/// Who this server is in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Rank among the servers.
    pub rank: u32,
    /// Number of servers.
    pub servers: u32,
    /// Rank among the servers on this node.
    pub local_rank: u32,
    /// Servers on this node.
    pub local_servers: u32,
}

/// Rank and counts: flags and configuration first, then the launcher, then a lone server.
pub fn identity(config: &ServerConfig) -> Result<Identity, String> {
    let launched = crate::launcher::detect_from_process_env().map_err(|e| e.to_string())?;
    let rank = config
        .rank
        .or(launched.as_ref().map(|l| l.rank))
        .unwrap_or(0);
    let servers = config
        .servers
        .or(launched.as_ref().map(|l| l.size))
        .unwrap_or(1);
    let local_rank = config
        .local_rank
        .or(launched.as_ref().and_then(|l| l.local_rank))
        .unwrap_or(0);
    let local_servers = config
        .local_servers
        .or(launched.as_ref().and_then(|l| l.local_size))
        .unwrap_or(1);
    if rank >= servers || local_rank >= local_servers {
        return Err(format!(
            "rank {rank} of {servers} servers (local {local_rank} of {local_servers}) is impossible"
        ));
    }
    if rank >= 1 << 16 {
        return Err(format!(
            "rank {rank} is beyond the 65536 servers a cluster may have"
        ));
    }
    Ok(Identity {
        rank,
        servers,
        local_rank,
        local_servers,
    })
}

/// The shard plan of this server: from the topology with NUMA on, one unbound shard per
/// requested shard otherwise.
pub fn shard_plan(config: &ServerConfig, id: &Identity) -> Result<ShardPlan, String> {
    let request = PlanRequest {
        shards_per_numa: config.shards_per_numa as usize,
        local_rank: id.local_rank as usize,
        local_servers: id.local_servers as usize,
        shard_count: config.shards.map(|s| s as usize),
    };
    if !config.numa {
        let count = request
            .shard_count
            .unwrap_or(request.shards_per_numa)
            .max(1);
        let shards = (0..count)
            .map(|index| ShardSpec {
                index,
                numa_node: 0,
                cpus: Vec::new(),
                nic: None,
            })
            .collect();
        return Ok(ShardPlan { shards });
    }
    let machine = topology::discover().map_err(|e| format!("hardware topology: {e}"))?;
    topology::plan(&machine, &request).map_err(|e| format!("shard plan: {e}"))
}

struct Publisher {
    registry: Arc<Registry>,
    entry: TargetEntry,
}

impl ShardHooks for Publisher {
    fn publish(&mut self, address: &[u8]) -> Result<(), String> {
        self.entry.address = address.to_vec();
        self.registry
            .publish(&self.entry)
            .map_err(|e| e.to_string())
    }

    fn unpublish(&mut self) {
        if let Err(e) = self.registry.unpublish(self.entry.rank, self.entry.shard) {
            log::error!("removing the registry entry failed: {e}");
        }
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length; gethostname NUL-terminates within it or fails.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn shard_configs(
    config: &ServerConfig,
    id: &Identity,
    plan: &ShardPlan,
    secret: [u8; 16],
) -> Vec<ShardConfig> {
    let server_dir = config.data_dir.join(format!("server-{}", id.rank));
    let user_picked_nic = std::env::var_os("UCX_NET_DEVICES").is_some();
    plan.shards
        .iter()
        .map(|spec| {
            let mut ucx_settings = Vec::new();
            if let (Some(nic), false) = (&spec.nic, user_picked_nic) {
                ucx_settings.push(("NET_DEVICES".to_string(), nic.clone()));
            }
            ShardConfig {
                rank: id.rank,
                shard: spec.index as u32,
                target: (id.rank << 8) | spec.index as u32,
                data_dir: server_dir.join(format!("shard-{}", spec.index)),
                chunk_size_bytes: config.chunk_size_bytes as usize,
                slot_count: (config.slab_bytes / config.chunk_size_bytes).max(1) as usize,
                eager_threshold_bytes: config.eager_threshold_bytes as usize,
                queue_depth: config.queue_depth as usize,
                secret,
                ucx_settings,
                drain_timeout: config.shutdown_timeout(),
                transfer_timeout: config.request_timeout(),
            }
        })
        .collect()
}

/// Checks the environment before anything starts, with the fix in each message.
fn preflight(config: &ServerConfig, shards: usize) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("data directory {}: {e}", config.data_dir.display()))?;
    crate::storage::checks::check_data_dir(&config.data_dir).map_err(|e| e.to_string())?;
    let pinned = config.slab_bytes.saturating_mul(shards as u64);
    crate::storage::checks::check_memlock(pinned).map_err(|e| e.to_string())?;
    Ok(())
}

/// Runs a server until `control` asks it to stop; returns after every shard stopped.
pub fn run_server(config: &ServerConfig, control: Arc<Control>) -> Result<(), String> {
    let id = identity(config)?;
    let plan = shard_plan(config, &id)?;
    preflight(config, plan.shards.len())?;
    let registry = Arc::new(Registry::open(&config.registry_dir).map_err(|e| e.to_string())?);
    let secret = *registry.secret().map_err(|e| e.to_string())?.as_bytes();
    registry
        .unpublish_rank(id.rank)
        .map_err(|e| e.to_string())?;
    log::info!(
        "server {} of {} starting on {}: {}",
        id.rank,
        id.servers,
        host_name(),
        topology::describe(&plan)
    );
    let template = TargetEntry {
        rank: id.rank,
        shard: 0,
        shards_of_rank: plan.shards.len() as u32,
        servers: id.servers,
        host: host_name(),
        pid: std::process::id(),
        address: Vec::new(),
        started_unix_ms: registry::now_unix_ms(),
    };
    let configs = shard_configs(config, &id, &plan, secret);
    let mut threads = Vec::new();
    for (spec, shard_config) in plan.shards.iter().zip(configs) {
        let hooks = Box::new(Publisher {
            registry: registry.clone(),
            entry: TargetEntry {
                shard: spec.index as u32,
                ..template.clone()
            },
        });
        let (control, cpus) = (control.clone(), spec.cpus.clone());
        let name = format!("shard-{}", spec.index);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            if !cpus.is_empty() {
                if let Err(e) = topology::bind_current_thread(&cpus) {
                    log::warn!(
                        "binding shard {} to its cores failed: {e}",
                        shard_config.shard
                    );
                }
            }
            let result = run_shard(shard_config, control.clone(), hooks);
            if result.is_err() {
                // One shard failing stops the server: a partial server would confuse clients.
                control.request_stop();
            }
            result
        });
        threads.push(thread.map_err(|e| format!("starting a shard thread: {e}"))?);
    }
    let mut first_error: Option<Failure> = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(_)) => {}
            Ok(Err(f)) => {
                log::error!("shard failed: {f}");
                first_error.get_or_insert(f);
            }
            Err(_) => {
                first_error.get_or_insert(Failure::new(libc::EIO, "a shard thread panicked"));
            }
        }
    }
    // Entries of shards that failed before publishing or stopping are removed here too.
    let _ = registry.unpublish_rank(id.rank);
    match first_error {
        Some(f) => Err(f.to_string()),
        None => Ok(()),
    }
}

/// The data directory of shard `shard` of server `rank` (for tools and tests).
pub fn shard_dir(data_dir: &std::path::Path, rank: u32, shard: u32) -> PathBuf {
    data_dir
        .join(format!("server-{rank}"))
        .join(format!("shard-{shard}"))
}
