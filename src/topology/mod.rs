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
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    fn synthetic(description: &str) -> Machine {
        load_machine(TopologySource::Synthetic(description)).expect("synthetic topology loads")
    }

    fn request(shards_per_numa: usize, local_rank: usize, local_servers: usize) -> PlanRequest {
        PlanRequest {
            shards_per_numa,
            local_rank,
            local_servers,
            shard_count: None,
        }
    }

    /// A node whose `cores` cores each have `threads` PUs, numbered from `first_cpu`.
    fn node(os_index: u32, first_cpu: u32, cores: u32, threads: u32) -> NumaNode {
        let cores = (0..cores)
            .map(|core| {
                let base = first_cpu + core * threads;
                (base..base + threads).collect()
            })
            .collect();
        NumaNode { os_index, cores }
    }

    fn node_of(machine: &Machine, os_index: u32) -> &NumaNode {
        machine
            .numa_nodes
            .iter()
            .find(|node| node.os_index == os_index)
            .expect("shard refers to an existing node")
    }

    /// Checks the plan invariants and returns every CPU the plan uses.
    fn check_invariants(machine: &Machine, plan: &ShardPlan) -> BTreeSet<u32> {
        let mut used = BTreeSet::new();
        for (position, shard) in plan.shards.iter().enumerate() {
            assert_eq!(shard.index, position);
            assert!(!shard.cpus.is_empty(), "shard {position} has no cpus");
            let node_cpus = node_of(machine, shard.numa_node).cpus();
            for cpu in &shard.cpus {
                assert!(
                    node_cpus.contains(cpu),
                    "cpu {cpu} outside node {}",
                    shard.numa_node
                );
                assert!(used.insert(*cpu), "cpu {cpu} given to two shards");
            }
        }
        let nodes: Vec<u32> = plan.shards.iter().map(|shard| shard.numa_node).collect();
        assert!(
            nodes.windows(2).all(|pair| pair[0] <= pair[1]),
            "shards not in node order"
        );
        used
    }

    fn all_cpus(machine: &Machine) -> BTreeSet<u32> {
        machine.numa_nodes.iter().flat_map(NumaNode::cpus).collect()
    }

    fn shard_nodes(plan: &ShardPlan) -> Vec<u32> {
        plan.shards.iter().map(|shard| shard.numa_node).collect()
    }

    fn shard_sizes(plan: &ShardPlan) -> Vec<usize> {
        plan.shards.iter().map(|shard| shard.cpus.len()).collect()
    }

    #[test]
    fn synthetic_two_numa_nodes() {
        let machine = synthetic("pack:2 [numa] core:4 pu:2");
        assert_eq!(machine.numa_nodes.len(), 2);
        assert_eq!(machine.numa_nodes[0].cores.len(), 4);
        assert_eq!(machine.numa_nodes[0].cores[0], vec![0, 1]);
        assert_eq!(machine.numa_nodes[1].cpus(), (8..16).collect::<Vec<u32>>());

        let plan = plan(&machine, &PlanRequest::default()).unwrap();
        assert_eq!(shard_nodes(&plan), vec![0, 1]);
        assert_eq!(check_invariants(&machine, &plan), all_cpus(&machine));

        let plan = super::plan(&machine, &request(2, 0, 1)).unwrap();
        assert_eq!(shard_nodes(&plan), vec![0, 0, 1, 1]);
        assert_eq!(plan.shards[0].cpus, vec![0, 1, 2, 3]);
        assert_eq!(check_invariants(&machine, &plan), all_cpus(&machine));
    }

    #[test]
    fn synthetic_four_numa_nodes() {
        let machine = synthetic("pack:2 group:2 [numa] core:3 pu:2");
        assert_eq!(machine.numa_nodes.len(), 4);
        let plan = plan(&machine, &request(3, 0, 1)).unwrap();
        assert_eq!(plan.shards.len(), 12);
        assert_eq!(shard_nodes(&plan), vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
        assert!(shard_sizes(&plan).iter().all(|&size| size == 2));
        assert_eq!(check_invariants(&machine, &plan), all_cpus(&machine));
    }

    #[test]
    fn synthetic_without_numa_is_one_node() {
        let machine = synthetic("pack:2 core:2 pu:2");
        assert_eq!(machine.numa_nodes.len(), 1);
        assert_eq!(machine.numa_nodes[0].cpus(), (0..8).collect::<Vec<u32>>());
        assert_eq!(machine.numa_nodes[0].cores.len(), 4);
    }

    /// hwloc XML with one package and NUMA node per entry of `cores_per_node`, one PU per core.
    fn uneven_xml(cores_per_node: &[u32]) -> String {
        let sets = |cpus: u64, nodes: u64| {
            format!(
                "cpuset=\"0x{cpus:x}\" complete_cpuset=\"0x{cpus:x}\" \
                 nodeset=\"0x{nodes:x}\" complete_nodeset=\"0x{nodes:x}\""
            )
        };
        let total: u32 = cores_per_node.iter().sum();
        let all_nodes = (1u64 << cores_per_node.len()) - 1;
        let mut body = String::new();
        let mut cpu = 0;
        for (index, &cores) in cores_per_node.iter().enumerate() {
            let node_cpus = ((1u64 << cores) - 1) << cpu;
            let own = sets(node_cpus, 1 << index);
            body += &format!("<object type=\"Package\" os_index=\"{index}\" {own}>");
            body += &format!("<object type=\"NUMANode\" os_index=\"{index}\" {own}/>");
            for _ in 0..cores {
                let core = sets(1 << cpu, 1 << index);
                body += &format!("<object type=\"Core\" os_index=\"{cpu}\" {core}>");
                body += &format!("<object type=\"PU\" os_index=\"{cpu}\" {core}/></object>");
                cpu += 1;
            }
            body += "</object>";
        }
        let machine = sets((1u64 << total) - 1, all_nodes);
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<topology version=\"2.0\">\
             <object type=\"Machine\" os_index=\"0\" {machine} \
             allowed_cpuset=\"0x{:x}\" allowed_nodeset=\"0x{all_nodes:x}\">{body}</object>\
             </topology>\n",
            (1u64 << total) - 1
        )
    }

    #[test]
    fn xml_with_uneven_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uneven.xml");
        fs::write(&path, uneven_xml(&[3, 2])).unwrap();
        let machine = load_machine(TopologySource::XmlFile(&path)).unwrap();
        assert_eq!(machine.numa_nodes.len(), 2);
        assert_eq!(machine.numa_nodes[0].cpus(), vec![0, 1, 2]);
        assert_eq!(machine.numa_nodes[1].cpus(), vec![3, 4]);

        let plan = plan(&machine, &request(2, 0, 1)).unwrap();
        assert_eq!(shard_nodes(&plan), vec![0, 0, 1, 1]);
        assert_eq!(shard_sizes(&plan), vec![2, 1, 1, 1]);
        assert_eq!(check_invariants(&machine, &plan), all_cpus(&machine));

        let error = super::plan(&machine, &request(3, 0, 1)).unwrap_err();
        assert_eq!(
            error,
            PlanError::TooManyShards {
                numa_node: 1,
                shards: 3,
                cores: 2
            }
        );
    }

    #[test]
    fn uneven_core_split_by_hand() {
        let machine = Machine {
            numa_nodes: vec![node(0, 0, 5, 2), node(1, 10, 7, 1)],
            nics: Vec::new(),
        };
        let plan = plan(&machine, &request(2, 0, 1)).unwrap();
        assert_eq!(shard_nodes(&plan), vec![0, 0, 1, 1]);
        assert_eq!(shard_sizes(&plan), vec![6, 4, 4, 3]);
        assert_eq!(plan.shards[0].cpus, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(plan.shards[3].cpus, vec![14, 15, 16]);
        assert_eq!(check_invariants(&machine, &plan), all_cpus(&machine));
    }

    #[test]
    fn shard_count_override_spreads_over_nodes() {
        let machine = synthetic("pack:2 [numa] core:4 pu:1");
        let request = PlanRequest {
            shard_count: Some(3),
            ..PlanRequest::default()
        };
        let plan = plan(&machine, &request).unwrap();
        assert_eq!(shard_nodes(&plan), vec![0, 0, 1]);
        assert_eq!(shard_sizes(&plan), vec![2, 2, 4]);
        check_invariants(&machine, &plan);
    }

    #[test]
    fn two_servers_on_two_nodes_get_one_node_each() {
        let machine = synthetic("pack:2 [numa] core:4 pu:2");
        for rank in 0..2 {
            let plan = plan(&machine, &request(1, rank, 2)).unwrap();
            assert_eq!(shard_nodes(&plan), vec![rank as u32]);
            let used = check_invariants(&machine, &plan);
            let node_cpus: BTreeSet<u32> = machine.numa_nodes[rank].cpus().into_iter().collect();
            assert_eq!(used, node_cpus);
        }
    }

    #[test]
    fn three_servers_on_two_nodes_split_cores() {
        let machine = synthetic("pack:2 [numa] core:4 pu:2");
        let mut used = BTreeSet::new();
        let mut nodes = Vec::new();
        for rank in 0..3 {
            let plan = plan(&machine, &request(1, rank, 3)).unwrap();
            let cpus = check_invariants(&machine, &plan);
            assert!(used.is_disjoint(&cpus), "server {rank} shares a cpu");
            used.extend(cpus);
            nodes.extend(shard_nodes(&plan));
        }
        assert_eq!(nodes, vec![0, 0, 1]);
        assert_eq!(used, all_cpus(&machine));
    }

    #[test]
    fn servers_share_cores_only_when_unavoidable() {
        let machine = Machine {
            numa_nodes: vec![node(0, 0, 2, 1)],
            nics: Vec::new(),
        };
        let cpus: Vec<Vec<u32>> = (0..3)
            .map(|rank| {
                plan(&machine, &request(1, rank, 3)).unwrap().shards[0]
                    .cpus
                    .clone()
            })
            .collect();
        assert_eq!(cpus, vec![vec![0], vec![1], vec![0]]);
    }

    /// Adds `class/infiniband/<device>` with the given NUMA node and `(port, state)` entries.
    fn fake_device(root: &Path, device: &str, numa_node: &str, ports: &[(u32, &str)]) {
        let dir = root.join("class/infiniband").join(device);
        fs::create_dir_all(dir.join("device")).unwrap();
        fs::write(dir.join("device/numa_node"), format!("{numa_node}\n")).unwrap();
        for (port, state) in ports {
            let port_dir: PathBuf = dir.join("ports").join(port.to_string());
            fs::create_dir_all(&port_dir).unwrap();
            fs::write(port_dir.join("state"), format!("{state}\n")).unwrap();
        }
    }

    fn nic(name: &str, numa_node: Option<u32>) -> Nic {
        Nic {
            name: name.to_owned(),
            numa_node,
        }
    }

    fn shard_nics(plan: &ShardPlan) -> Vec<Option<&str>> {
        plan.shards
            .iter()
            .map(|shard| shard.nic.as_deref())
            .collect()
    }

    #[test]
    fn nics_follow_their_numa_node() {
        let root = tempfile::tempdir().unwrap();
        fake_device(
            root.path(),
            "mlx5_1",
            "1",
            &[(1, "4: ACTIVE"), (2, "1: DOWN")],
        );
        fake_device(root.path(), "mlx5_0", "0", &[(1, "4: ACTIVE")]);
        let nics = nics_from_sysfs(root.path());
        assert_eq!(
            nics,
            vec![nic("mlx5_0:1", Some(0)), nic("mlx5_1:1", Some(1))]
        );

        let mut machine = synthetic("pack:2 [numa] core:4 pu:2");
        machine.nics = nics;
        let plan = plan(&machine, &request(2, 0, 1)).unwrap();
        let expected = ["mlx5_0:1", "mlx5_0:1", "mlx5_1:1", "mlx5_1:1"];
        assert_eq!(shard_nics(&plan), expected.map(Some).to_vec());
        assert!(describe(&plan).contains("#3 numa 1 cpus 12-15 nic mlx5_1:1"));
    }

    #[test]
    fn nics_on_one_node_are_shared_round_robin() {
        let mut machine = synthetic("pack:2 [numa] core:4 pu:1");
        machine.nics = vec![nic("mlx5_0:1", Some(0)), nic("mlx5_1:1", Some(0))];
        let plan = plan(&machine, &request(2, 0, 1)).unwrap();
        let expected = ["mlx5_0:1", "mlx5_1:1", "mlx5_0:1", "mlx5_1:1"];
        assert_eq!(shard_nics(&plan), expected.map(Some).to_vec());
    }

    #[test]
    fn nic_without_numa_node_serves_every_shard() {
        let root = tempfile::tempdir().unwrap();
        fake_device(root.path(), "mlx5_0", "-1", &[(1, "4: ACTIVE")]);
        let mut machine = synthetic("pack:2 [numa] core:4 pu:2");
        machine.nics = nics_from_sysfs(root.path());
        assert_eq!(machine.nics, vec![nic("mlx5_0:1", None)]);
        let plan = plan(&machine, &PlanRequest::default()).unwrap();
        assert_eq!(shard_nics(&plan), vec![Some("mlx5_0:1"); 2]);
    }

    #[test]
    fn no_nics() {
        let root = tempfile::tempdir().unwrap();
        assert!(nics_from_sysfs(root.path()).is_empty());
        let machine = synthetic("pack:2 [numa] core:4 pu:2");
        let plan = plan(&machine, &PlanRequest::default()).unwrap();
        assert_eq!(shard_nics(&plan), vec![None, None]);
        assert!(describe(&plan).starts_with("2 shards: #0 numa 0 cpus 0-7 nic none; #1"));
    }

    #[test]
    fn discover_finds_this_machine() {
        let machine = discover().unwrap();
        assert!(!machine.numa_nodes.is_empty());
        assert!(!machine.numa_nodes[0].cpus().is_empty());
        let plan = plan(&machine, &PlanRequest::default()).unwrap();
        assert_eq!(check_invariants(&machine, &plan), all_cpus(&machine));
    }

    #[test]
    fn bind_current_thread_sets_affinity() {
        let machine = discover().unwrap();
        let cpu = machine.numa_nodes[0].cpus()[0];
        let allowed = std::thread::spawn(move || {
            bind_current_thread(&[cpu]).unwrap();
            let status = fs::read_to_string("/proc/thread-self/status").unwrap();
            status
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                .map(|list| list.trim().to_owned())
        })
        .join()
        .unwrap();
        assert_eq!(allowed, Some(cpu.to_string()));
        let error = bind_current_thread(&[]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn invalid_requests_are_rejected() {
        let machine = synthetic("pack:2 [numa] core:2 pu:1");
        let error = |request: PlanRequest| plan(&machine, &request).unwrap_err();
        assert_eq!(error(request(0, 0, 1)), PlanError::NoShards);
        let zero_override = PlanRequest {
            shard_count: Some(0),
            ..PlanRequest::default()
        };
        assert_eq!(error(zero_override), PlanError::NoShards);
        assert_eq!(error(request(1, 0, 0)), PlanError::NoServers);
        let out_of_range = error(request(1, 2, 2));
        assert_eq!(
            out_of_range.to_string(),
            "local rank 2 is out of range for 2 servers on the node"
        );
        assert!(matches!(
            error(request(3, 0, 1)),
            PlanError::TooManyShards { .. }
        ));
        assert!(matches!(
            error(request(2, 1, 3)),
            PlanError::TooManyShards { .. }
        ));
        let empty = plan(&Machine::default(), &PlanRequest::default());
        assert_eq!(empty, Err(PlanError::NoCpus));
    }

    #[test]
    fn invalid_topology_sources_are_rejected() {
        let bad = load_machine(TopologySource::Synthetic("bogus:3"));
        assert!(matches!(bad, Err(TopologyError::Rejected { .. })));
        let nul = load_machine(TopologySource::Synthetic("pack:2\0"));
        assert!(matches!(nul, Err(TopologyError::Rejected { .. })));
        let missing = load_machine(TopologySource::XmlFile(Path::new("/nonexistent.xml")));
        assert!(matches!(missing, Err(TopologyError::Rejected { .. })));
    }

    #[test]
    fn cpu_lists_are_compressed() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(cpu_list(&[]), "");
    }
}
