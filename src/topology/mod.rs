//! Machine topology and shard placement for the storage daemon.
//!
//! This module owns three things:
//!
//! * **Discovery**: turning what hwloc reports (NUMA nodes, cores, hardware threads) and what
//!   sysfs reports (InfiniBand/RoCE ports and their NUMA affinity) into a plain [`Machine`]
//!   value. NUMA membership is read from the nodeset of each core, so a machine without NUMA
//!   information comes out as a single node 0 holding every PU. hwloc honours `HWLOC_SYNTHETIC`
//!   and `HWLOC_XMLFILE` for [`TopologySource::System`]; [`load_machine`] can also load a
//!   synthetic description or an XML export directly.
//! * **Planning**: [`plan`] is a pure function from a [`Machine`] and a [`PlanRequest`] to a
//!   [`ShardPlan`], one [`ShardSpec`] per shard thread.
//! * **Binding**: [`bind_current_thread`] pins the calling thread to a shard's CPUs.
//!
//! # Placement policy
//!
//! * A core is the unit of placement: all hardware threads of a core go to the same shard.
//! * Several servers on one node: when there are at least as many NUMA nodes (with CPUs) as
//!   servers, each server receives a contiguous block of whole NUMA nodes, blocks differing in
//!   size by at most one. Otherwise the servers are spread evenly over the NUMA nodes and the
//!   cores of each node are split evenly among the servers placed on it. Two servers share a core
//!   only when a node hosts more servers than it has cores.
//! * Shards: by default `shards_per_numa` shards for each NUMA node (or part of one) that the
//!   server received. An explicit `shard_count` is spread evenly over those nodes, lower nodes
//!   first. The cores of a node are split into contiguous groups whose sizes differ by at most
//!   one, larger groups first (5 cores for 2 shards give 3 and 2).
//! * NICs: a shard takes a NIC on its own NUMA node when there is one, round-robin among those;
//!   otherwise any NIC, round-robin; otherwise none. Round-robin starts at the server's local
//!   rank so that servers sharing a node start on different NICs.
//!
//! # Invariants of a successful plan
//!
//! * Shard indexes are `0..n` in order, and shards are ordered by NUMA node.
//! * Every shard has at least one CPU, and all of them belong to the shard's NUMA node.
//! * The CPU sets of the shards of one plan are pairwise disjoint.
//! * Without `shard_count`, every CPU the server received is given to exactly one shard.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use hwloc2::{ObjectType, Topology, TopologyObject};

/// A node's hardware as seen by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Machine {
    /// NUMA nodes that have CPUs, ordered by OS index.
    pub numa_nodes: Vec<NumaNode>,
    /// Usable network ports, in device and port order.
    pub nics: Vec<Nic>,
}

/// One NUMA node and the cores close to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// OS index of the node, as used by `numactl` and `/sys/devices/system/node`.
    pub os_index: u32,
    /// One entry per core, each holding the OS indexes of the core's PUs in ascending order.
    pub cores: Vec<Vec<u32>>,
}

impl NumaNode {
    /// OS indexes of all PUs of this node, core by core.
    pub fn cpus(&self) -> Vec<u32> {
        self.cores.iter().flatten().copied().collect()
    }
}

/// A network port usable by the transport layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Device and port in the `UCX_NET_DEVICES` form, e.g. `mlx5_0:1`.
    pub name: String,
    /// NUMA node the device is attached to, when the platform reports one.
    pub numa_node: Option<u32>,
}

/// Where hwloc takes the topology from.
#[derive(Debug, Clone, Copy)]
pub enum TopologySource<'a> {
    /// The running machine, unless `HWLOC_SYNTHETIC` or `HWLOC_XMLFILE` says otherwise.
    System,
    /// An hwloc synthetic description such as `pack:2 [numa] core:4 pu:2`.
    Synthetic(&'a str),
    /// An XML file written by `lstopo --of xml`.
    XmlFile(&'a Path),
}

/// Failure to obtain the machine topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// hwloc failed to initialise or load a topology.
    #[error("hwloc could not load a topology")]
    Load,
    /// The synthetic description or XML file was not accepted by hwloc.
    #[error("hwloc rejected the {kind} topology `{input}`")]
    Rejected {
        /// `synthetic` or `XML`.
        kind: &'static str,
        /// The description or path that was given.
        input: String,
    },
    /// The topology contains no processing unit.
    #[error("the topology has no CPUs")]
    NoCpus,
}

/// What the server asks of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanRequest {
    /// Shards per NUMA node (or part of one) given to this server; ignored with `shard_count`.
    pub shards_per_numa: usize,
    /// Rank of this server among the servers on the same node, from 0.
    pub local_rank: usize,
    /// Number of servers on the same node.
    pub local_servers: usize,
    /// Total number of shards of this server, overriding `shards_per_numa`.
    pub shard_count: Option<usize>,
}

impl Default for PlanRequest {
    fn default() -> Self {
        Self {
            shards_per_numa: 1,
            local_rank: 0,
            local_servers: 1,
            shard_count: None,
        }
    }
}

/// Placement of every shard thread of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    /// Shards in index order.
    pub shards: Vec<ShardSpec>,
}

/// Placement of one shard thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSpec {
    /// Position of the shard in the plan, from 0.
    pub index: usize,
    /// OS index of the NUMA node the shard runs on.
    pub numa_node: u32,
    /// OS indexes of the PUs the shard is bound to, ascending.
    pub cpus: Vec<u32>,
    /// Network port for the shard's endpoint, in `UCX_NET_DEVICES` form.
    pub nic: Option<String>,
}

/// An unsatisfiable [`PlanRequest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `shards_per_numa` or `shard_count` is zero.
    #[error("the number of shards must be at least 1")]
    NoShards,
    /// `local_servers` is zero.
    #[error("the number of servers on the node must be at least 1")]
    NoServers,
    /// `local_rank` is not below `local_servers`.
    #[error("local rank {local_rank} is out of range for {local_servers} servers on the node")]
    LocalRankOutOfRange {
        /// The requested rank.
        local_rank: usize,
        /// The number of servers on the node.
        local_servers: usize,
    },
    /// The machine description has no CPUs to place shards on.
    #[error("the machine has no CPUs")]
    NoCpus,
    /// More shards were requested on a NUMA node than this server has cores there.
    #[error("{shards} shards requested on NUMA node {numa_node}, which has {cores} cores for this server")]
    TooManyShards {
        /// OS index of the NUMA node.
        numa_node: u32,
        /// Shards that would be placed there.
        shards: usize,
        /// Cores this server has on that node.
        cores: usize,
    },
}

/// Serialises every hwloc load done here together with the environment changes around it.
static HWLOC_LOCK: Mutex<()> = Mutex::new(());

/// Variables that choose or alter hwloc's discovery backend.
const HWLOC_BACKEND_VARS: [&str; 6] = [
    "HWLOC_FSROOT",
    "HWLOC_CPUID_PATH",
    "HWLOC_SYNTHETIC",
    "HWLOC_XMLFILE",
    "HWLOC_COMPONENTS",
    "HWLOC_THISSYSTEM",
];

/// Discovers the running machine: NUMA nodes and PUs through hwloc, NICs through `/sys`.
pub fn discover() -> Result<Machine, TopologyError> {
    let mut machine = load_machine(TopologySource::System)?;
    machine.nics = nics_from_sysfs(Path::new("/sys"));
    Ok(machine)
}

/// Loads NUMA nodes and PUs from `source`; the returned machine has no NICs.
///
/// hwloc 2.2 bindings cannot hand a description to hwloc directly, so a synthetic or XML source
/// is passed through hwloc's environment variables, set only while hwloc loads and restored
/// afterwards. Loads in this module are serialised, but another thread reading the environment
/// through C code at the same moment could observe the temporary values, so non-system sources
/// are meant for tests and planning tools rather than a running daemon.
pub fn load_machine(source: TopologySource<'_>) -> Result<Machine, TopologyError> {
    let _lock = HWLOC_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let topology = match source {
        TopologySource::System => Topology::new().ok_or(TopologyError::Load)?,
        TopologySource::Synthetic(text) => load_foreign("HWLOC_SYNTHETIC", text, "synthetic")?,
        TopologySource::XmlFile(path) => {
            if !path.is_file() {
                return Err(rejected("XML", &path.to_string_lossy()));
            }
            load_foreign("HWLOC_XMLFILE", path.as_os_str(), "XML")?
        }
    };
    machine_from_topology(&topology)
}

fn rejected(kind: &'static str, input: &str) -> TopologyError {
    TopologyError::Rejected {
        kind,
        input: input.to_owned(),
    }
}

/// Loads a topology from a synthetic or XML backend chosen through `var`.
///
/// Callers hold `HWLOC_LOCK`.
fn load_foreign(
    var: &'static str,
    value: impl AsRef<std::ffi::OsStr>,
    kind: &'static str,
) -> Result<Topology, TopologyError> {
    let value = value.as_ref();
    let shown = value.to_string_lossy();
    if shown.contains('\0') {
        return Err(rejected(kind, &shown));
    }
    let topology = {
        let _env = EnvOverride::new(var, value);
        Topology::new().ok_or(TopologyError::Load)?
    };
    // hwloc falls back to native discovery when it rejects a description. A topology that is
    // not the running system offers no CPU binding, which tells the two cases apart.
    if topology.support().cpu().set_current_thread() {
        return Err(rejected(kind, &shown));
    }
    Ok(topology)
}

/// Clears hwloc's backend variables, sets one of them, and restores all of them on drop.
struct EnvOverride {
    saved: Vec<(&'static str, Option<OsString>)>,
}

impl EnvOverride {
    fn new(var: &'static str, value: &std::ffi::OsStr) -> Self {
        let saved = HWLOC_BACKEND_VARS
            .iter()
            .map(|&name| (name, std::env::var_os(name)))
            .collect();
        for name in HWLOC_BACKEND_VARS {
            std::env::remove_var(name);
        }
        std::env::set_var(var, value);
        Self { saved }
    }
}

impl Drop for EnvOverride {
    fn drop(&mut self) {
        for (name, value) in &self.saved {
            match value {
                Some(value) => std::env::set_var(name, value),
                None => std::env::remove_var(name),
            }
        }
    }
}

/// Groups the cores of a loaded topology by NUMA node.
fn machine_from_topology(topology: &Topology) -> Result<Machine, TopologyError> {
    let mut cores = Vec::new();
    collect_cores(topology.object_at_root(), &mut cores);
    let mut by_node: BTreeMap<u32, Vec<Vec<u32>>> = BTreeMap::new();
    for (node, cpus) in cores {
        by_node.entry(node).or_default().push(cpus);
    }
    if by_node.is_empty() {
        return Err(TopologyError::NoCpus);
    }
    let numa_nodes = by_node
        .into_iter()
        .map(|(os_index, cores)| NumaNode { os_index, cores })
        .collect();
    Ok(Machine {
        numa_nodes,
        nics: Vec::new(),
    })
}

/// Appends `(numa node, PUs)` for every core below `object`; a PU outside any core counts as
/// a core of its own.
fn collect_cores(object: &TopologyObject, out: &mut Vec<(u32, Vec<u32>)>) {
    match object.object_type() {
        ObjectType::Core | ObjectType::PU => {
            let mut cpus: Vec<u32> = object
                .cpuset()
                .map(|set| set.into_iter().collect())
                .unwrap_or_default();
            cpus.sort_unstable();
            if !cpus.is_empty() {
                out.push((first_node(object), cpus));
            }
        }
        _ => {
            for child in object.children() {
                collect_cores(child, out);
            }
        }
    }
}

/// The lowest NUMA node in the object's nodeset, or 0 when hwloc knows of none.
fn first_node(object: &TopologyObject) -> u32 {
    object
        .nodeset()
        .and_then(|set| set.into_iter().next())
        .unwrap_or(0)
}

/// Lists the active InfiniBand/RoCE ports under `<root>/class/infiniband`.
///
/// A device whose `device/numa_node` is missing or negative gets `numa_node: None`. A port is
/// skipped when its `state` file exists and does not say `ACTIVE`. A missing directory yields
/// an empty list.
pub fn nics_from_sysfs(root: &Path) -> Vec<Nic> {
    let class = root.join("class").join("infiniband");
    let Ok(entries) = fs::read_dir(&class) else {
        return Vec::new();
    };
    let mut devices: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    devices.sort();
    devices
        .iter()
        .flat_map(|device| device_nics(&class.join(device), device))
        .collect()
}

fn device_nics(dir: &Path, device: &str) -> Vec<Nic> {
    let numa_node = read_numa_node(&dir.join("device").join("numa_node"));
    let Ok(entries) = fs::read_dir(dir.join("ports")) else {
        return Vec::new();
    };
    let mut ports: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    ports.sort_unstable();
    ports
        .into_iter()
        .filter(|port| port_is_active(&dir.join("ports").join(port.to_string())))
        .map(|port| Nic {
            name: format!("{device}:{port}"),
            numa_node,
        })
        .collect()
}

fn read_numa_node(path: &Path) -> Option<u32> {
    let text = fs::read_to_string(path).ok()?;
    let value: i64 = text.trim().parse().ok()?;
    u32::try_from(value).ok()
}

/// True unless the port's `state` file (e.g. `4: ACTIVE`) names another state.
fn port_is_active(port_dir: &Path) -> bool {
    match fs::read_to_string(port_dir.join("state")) {
        Ok(text) => {
            let name = text.split_once(':').map_or(text.as_str(), |(_, name)| name);
            name.trim() == "ACTIVE"
        }
        Err(_) => true,
    }
}

/// Cores of one NUMA node given to this server.
#[derive(Debug)]
struct Share<'a> {
    numa_node: u32,
    cores: &'a [Vec<u32>],
}

/// Computes the shard placement of one server; see the module documentation for the policy.
pub fn plan(machine: &Machine, request: &PlanRequest) -> Result<ShardPlan, PlanError> {
    validate(request)?;
    let nodes: Vec<&NumaNode> = machine
        .numa_nodes
        .iter()
        .filter(|node| !node.cores.is_empty())
        .collect();
    if nodes.is_empty() {
        return Err(PlanError::NoCpus);
    }
    let shares = server_shares(&nodes, request.local_rank, request.local_servers);
    let mut shards = Vec::new();
    for (position, share) in shares.iter().enumerate() {
        let count = match request.shard_count {
            Some(total) => even_range(total, shares.len(), position).len(),
            None => request.shards_per_numa,
        };
        if count > share.cores.len() {
            return Err(PlanError::TooManyShards {
                numa_node: share.numa_node,
                shards: count,
                cores: share.cores.len(),
            });
        }
        for part in 0..count {
            let range = even_range(share.cores.len(), count, part);
            let mut cpus: Vec<u32> = share.cores[range].iter().flatten().copied().collect();
            cpus.sort_unstable();
            shards.push(ShardSpec {
                index: shards.len(),
                numa_node: share.numa_node,
                cpus,
                nic: None,
            });
        }
    }
    assign_nics(&mut shards, &machine.nics, request.local_rank);
    Ok(ShardPlan { shards })
}

fn validate(request: &PlanRequest) -> Result<(), PlanError> {
    if request.shards_per_numa == 0 || request.shard_count == Some(0) {
        return Err(PlanError::NoShards);
    }
    if request.local_servers == 0 {
        return Err(PlanError::NoServers);
    }
    if request.local_rank >= request.local_servers {
        return Err(PlanError::LocalRankOutOfRange {
            local_rank: request.local_rank,
            local_servers: request.local_servers,
        });
    }
    Ok(())
}

/// The NUMA nodes, or part of one, that server `rank` of `servers` receives.
fn server_shares<'a>(nodes: &[&'a NumaNode], rank: usize, servers: usize) -> Vec<Share<'a>> {
    if nodes.len() >= servers {
        return nodes[even_range(nodes.len(), servers, rank)]
            .iter()
            .map(|node| Share {
                numa_node: node.os_index,
                cores: &node.cores,
            })
            .collect();
    }
    let (node_position, hosted) = (0..nodes.len())
        .map(|position| (position, even_range(servers, nodes.len(), position)))
        .find(|(_, hosted)| hosted.contains(&rank))
        .expect("the ranges of all nodes cover every rank below `servers`");
    let node = nodes[node_position];
    let here = rank - hosted.start;
    let cores = if node.cores.len() >= hosted.len() {
        &node.cores[even_range(node.cores.len(), hosted.len(), here)]
    } else {
        let core = here % node.cores.len();
        &node.cores[core..=core]
    };
    vec![Share {
        numa_node: node.os_index,
        cores,
    }]
}

/// Part `part` of `parts` contiguous ranges covering `0..len`, sizes differing by at most one,
/// larger ones first.
fn even_range(len: usize, parts: usize, part: usize) -> Range<usize> {
    let base = len / parts;
    let extra = len % parts;
    let start = part * base + part.min(extra);
    let size = base + usize::from(part < extra);
    start..start + size
}

/// Gives each shard a NIC on its NUMA node if possible, else any NIC, round-robin.
fn assign_nics(shards: &mut [ShardSpec], nics: &[Nic], offset: usize) {
    if nics.is_empty() {
        return;
    }
    let mut taken_local: BTreeMap<u32, usize> = BTreeMap::new();
    let mut taken_remote = 0;
    for shard in shards {
        let local: Vec<&Nic> = nics
            .iter()
            .filter(|nic| nic.numa_node == Some(shard.numa_node))
            .collect();
        let nic = if local.is_empty() {
            taken_remote += 1;
            &nics[(offset + taken_remote - 1) % nics.len()]
        } else {
            let taken = taken_local.entry(shard.numa_node).or_default();
            *taken += 1;
            local[(offset + *taken - 1) % local.len()]
        };
        shard.nic = Some(nic.name.clone());
    }
}

/// One-line summary of a plan for the log, e.g.
/// `2 shards: #0 numa 0 cpus 0-7 nic mlx5_0:1; #1 numa 1 cpus 8-15 nic mlx5_1:1`.
pub fn describe(plan: &ShardPlan) -> String {
    let count = plan.shards.len();
    let mut line = format!("{count} shard{}:", if count == 1 { "" } else { "s" });
    for (position, shard) in plan.shards.iter().enumerate() {
        let separator = if position == 0 { " " } else { "; " };
        let nic = shard.nic.as_deref().unwrap_or("none");
        let cpus = cpu_list(&shard.cpus);
        // Writing to a String cannot fail.
        let _ = write!(
            line,
            "{separator}#{} numa {} cpus {cpus} nic {nic}",
            shard.index, shard.numa_node
        );
    }
    line
}

/// Formats ascending CPU indexes as ranges, e.g. `0-3,8,10-11`.
fn cpu_list(cpus: &[u32]) -> String {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &cpu in cpus {
        match ranges.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(cpu) => *last = cpu,
            _ => ranges.push((cpu, cpu)),
        }
    }
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect();
    parts.join(",")
}

/// Restricts the calling thread to the PUs with the given OS indexes.
///
/// Fails with `InvalidInput` for an empty list, and with the OS error when the kernel refuses
/// the mask (for example when none of the CPUs is online or allowed).
pub fn bind_current_thread(cpus: &[u32]) -> io::Result<()> {
    let Some(&highest) = cpus.iter().max() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot bind a thread to an empty CPU list",
        ));
    };
    let word_bits = libc::c_ulong::BITS as usize;
    let mut mask: Vec<libc::c_ulong> = vec![0; highest as usize / word_bits + 1];
    for &cpu in cpus {
        let cpu = cpu as usize;
        mask[cpu / word_bits] |= 1 << (cpu % word_bits);
    }
    let mask_bytes = std::mem::size_of_val(mask.as_slice());
    // SAFETY: pid 0 names the calling thread. The pointer and length describe `mask`, an
    // initialised array of `unsigned long` words, which is the layout the kernel expects for a
    // CPU mask of any length; `mask` outlives the call and the kernel only reads it.
    let rc = unsafe { libc::sched_setaffinity(0, mask_bytes, mask.as_ptr().cast()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests;
