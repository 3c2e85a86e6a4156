//! Where this daemon sits in a parallel launch, read from the launcher's environment.
//!
//! This module owns the mapping from launcher environment variables to a server's rank,
//! the server count, and its place on its node (local rank and local count). It does not
//! link MPI or talk to a PMI server: everything comes from variables that the launcher
//! exports before it starts the process, so [`detect`] is a pure function over a lookup
//! and the daemon stays usable without any MPI installed.
//!
//! # Launchers and variables
//!
//! - Open MPI (`mpirun`, or `prterun` with the Open MPI personality): rank
//!   `OMPI_COMM_WORLD_RANK`, size `OMPI_COMM_WORLD_SIZE`, local rank and count
//!   `OMPI_COMM_WORLD_LOCAL_RANK` and `OMPI_COMM_WORLD_LOCAL_SIZE`.
//! - PMI (MPICH and Intel MPI hydra, Cray PALS, `srun --mpi=pmi2`): rank `PMI_RANK`, size
//!   `PMI_SIZE`; local rank and count from `MPI_LOCALRANKID` and `MPI_LOCALNRANKS` (hydra),
//!   else `PMI_LOCAL_RANK` and `PMI_LOCAL_SIZE` (PALS), else Slurm's (see below).
//! - PMIx (`srun --mpi=pmix`, other PMIx servers): rank `PMIX_RANK`; size `PMI_SIZE`, else
//!   `OMPI_COMM_WORLD_SIZE`, else Slurm's (see below); local values as for PMI, with
//!   Open MPI's local variables tried first.
//! - Slurm (`srun`): rank `SLURM_PROCID`; size `SLURM_STEP_NUM_TASKS`, else `SLURM_NTASKS`,
//!   else `SLURM_NPROCS`; local rank `SLURM_LOCALID`; local count from this node's entry
//!   (`SLURM_NODEID`) in `SLURM_STEP_TASKS_PER_NODE` or `SLURM_TASKS_PER_NODE` (a list such
//!   as `2(x3),1`: two tasks on each of three nodes, then one), else
//!   `SLURM_NTASKS_PER_NODE`. Without a node id, a list whose nodes all have the same count
//!   still gives it.
//!
//! PMIx exports only the rank in the environment; the job size lives in the PMIx server.
//! When no variable above gives it, detection fails with [`LaunchError::MissingSize`] and
//! the rank and server count have to be given explicitly.
//!
//! # Precedence
//!
//! Open MPI, then PMI, then PMIx, then Slurm. A job started with `mpirun` or
//! `mpiexec` inside a Slurm allocation carries both sets of variables, and only the MPI
//! launcher's describe this process: Slurm's there describe the per-node proxy that the
//! MPI launcher started through `srun`. For the same reason Slurm's values are used under
//! PMI or PMIx only when `SLURM_PROCID` and the Slurm task count match the rank and size
//! found there, which holds when `srun` itself started this process.
//!
//! The local rank and local count are optional: some launchers do not export them, and
//! Slurm's per-node count needs a tasks-per-node list. Callers pick their own fallback.
//!
//! # Errors
//!
//! A variable that is present but is not a plain decimal number (no sign, no blanks), a
//! size of zero, a rank not below its size, or a tasks-per-node list that does not parse is
//! an error naming the variable. Variables of launchers that lose on precedence are not
//! read, except Slurm's for the local fallback described above.
//!
//! A batch script that starts the daemon directly, without `srun`, runs as Slurm task 0 of
//! the job; start the daemons with `srun` (or an MPI launcher), or give the rank and server
//! count explicitly.

use std::fmt;

use thiserror::Error;

/// The launcher whose variables gave a [`LaunchInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Launcher {
    /// Open MPI's `OMPI_COMM_WORLD_*` variables.
    OpenMpi,
    /// PMI-1/PMI-2 style `PMI_RANK` and `PMI_SIZE`.
    Pmi,
    /// PMIx's `PMIX_RANK`, with the size from another variable.
    Pmix,
    /// Slurm's task variables (`SLURM_PROCID` and friends).
    Slurm,
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Launcher::OpenMpi => "Open MPI",
            Launcher::Pmi => "PMI",
            Launcher::Pmix => "PMIx",
            Launcher::Slurm => "Slurm",
        })
    }
}

/// This process's place in the launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchInfo {
    /// Rank of this server, `0..size`.
    pub rank: u32,
    /// Number of servers started together.
    pub size: u32,
    /// Rank among the servers on this node, when the launcher says.
    pub local_rank: Option<u32>,
    /// Number of servers on this node, when the launcher says.
    pub local_size: Option<u32>,
    /// The launcher whose variables were used.
    pub source: Launcher,
}

impl fmt::Display for LaunchInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rank {} of {}", self.rank, self.size)?;
        match (self.local_rank, self.local_size) {
            (Some(r), Some(n)) => write!(f, ", local {r} of {n}")?,
            (Some(r), None) => write!(f, ", local {r}")?,
            (None, Some(n)) => write!(f, ", {n} on this node")?,
            (None, None) => {}
        }
        write!(f, " (from {})", self.source)
    }
}

/// A launcher variable that is present but unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LaunchError {
    /// The value does not parse, or is zero where a count must be positive.
    #[error("launcher variable {var}={value:?} is invalid: {reason}")]
    Malformed {
        /// The variable's name.
        var: &'static str,
        /// Its value as found.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two variables contradict each other, such as a rank not below the size.
    #[error("launcher variable {var}={value} {rule} {other_var}={other}")]
    Inconsistent {
        /// The variable at fault.
        var: &'static str,
        /// Its value.
        value: u32,
        /// The relation that fails, such as "must be less than".
        rule: &'static str,
        /// The variable it is checked against.
        other_var: &'static str,
        /// That variable's value.
        other: u32,
    },
    /// A rank variable is present but no variable gives the job size.
    #[error(
        "{var} is set but the number of processes is unknown (looked for {looked_for}); \
         give the rank and server count explicitly"
    )]
    MissingSize {
        /// The rank variable that was found.
        var: &'static str,
        /// The size variables that were tried.
        looked_for: &'static str,
    },
}

/// A value and the variable it came from, kept for error messages.
#[derive(Debug, Clone, Copy)]
struct Found {
    value: u32,
    var: &'static str,
}

/// What one launcher's variables say, before the cross-checks.
#[derive(Debug)]
struct Detected {
    rank: Found,
    size: Found,
    local_rank: Option<Found>,
    local_size: Option<Found>,
    source: Launcher,
}

const OMPI_RANK: &str = "OMPI_COMM_WORLD_RANK";
const OMPI_SIZE: &str = "OMPI_COMM_WORLD_SIZE";
const OMPI_LOCAL_RANK: &str = "OMPI_COMM_WORLD_LOCAL_RANK";
const OMPI_LOCAL_SIZE: &str = "OMPI_COMM_WORLD_LOCAL_SIZE";
const PMI_RANK: &str = "PMI_RANK";
const PMI_SIZE: &str = "PMI_SIZE";
const PMIX_RANK: &str = "PMIX_RANK";
const SLURM_PROCID: &str = "SLURM_PROCID";
const SLURM_LOCALID: &str = "SLURM_LOCALID";
const SLURM_NODEID: &str = "SLURM_NODEID";
const SLURM_SIZE_VARS: [&str; 3] = ["SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"];
const SLURM_TASKS_PER_NODE_VARS: [&str; 2] = ["SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"];
const SLURM_NTASKS_PER_NODE: &str = "SLURM_NTASKS_PER_NODE";
const PMI_LOCAL_RANK_VARS: [&str; 2] = ["MPI_LOCALRANKID", "PMI_LOCAL_RANK"];
const PMI_LOCAL_SIZE_VARS: [&str; 2] = ["MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"];
const PMIX_LOCAL_RANK_VARS: [&str; 3] = [OMPI_LOCAL_RANK, "MPI_LOCALRANKID", "PMI_LOCAL_RANK"];
const PMIX_LOCAL_SIZE_VARS: [&str; 3] = [OMPI_LOCAL_SIZE, "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"];
const PMIX_SIZE_VARS: [&str; 2] = [PMI_SIZE, OMPI_SIZE];

/// Reads the launch position from `env`, a lookup of environment variables by name.
///
/// Returns `Ok(None)` when no supported launcher's rank variable is set, that is, when the
/// process was started on its own. See the module documentation for the variables read
/// and their precedence.
pub fn detect(env: impl Fn(&str) -> Option<String>) -> Result<Option<LaunchInfo>, LaunchError> {
    let env = &env;
    let detected = if let Some(rank) = read(env, OMPI_RANK)? {
        open_mpi(env, rank)?
    } else if let Some(rank) = read(env, PMI_RANK)? {
        pmi(env, rank)?
    } else if let Some(rank) = read(env, PMIX_RANK)? {
        pmix(env, rank)?
    } else if let Some(rank) = read(env, SLURM_PROCID)? {
        slurm(env, rank)?
    } else {
        return Ok(None);
    };
    detected.check().map(Some)
}

/// [`detect`] over this process's environment.
///
/// A value that is not valid Unicode is passed on lossily converted, so it is reported as
/// malformed rather than taken as absent.
pub fn detect_from_process_env() -> Result<Option<LaunchInfo>, LaunchError> {
    detect(|name| std::env::var_os(name).map(|value| value.to_string_lossy().into_owned()))
}

fn open_mpi(env: &impl Fn(&str) -> Option<String>, rank: Found) -> Result<Detected, LaunchError> {
    let size = read(env, OMPI_SIZE)?.ok_or(LaunchError::MissingSize {
        var: OMPI_RANK,
        looked_for: OMPI_SIZE,
    })?;
    Ok(Detected {
        rank,
        size,
        local_rank: read(env, OMPI_LOCAL_RANK)?,
        local_size: read(env, OMPI_LOCAL_SIZE)?,
        source: Launcher::OpenMpi,
    })
}

fn pmi(env: &impl Fn(&str) -> Option<String>, rank: Found) -> Result<Detected, LaunchError> {
    let size = read(env, PMI_SIZE)?.ok_or(LaunchError::MissingSize {
        var: PMI_RANK,
        looked_for: PMI_SIZE,
    })?;
    let (local_rank, local_size) = local_pair(
        env,
        &PMI_LOCAL_RANK_VARS,
        &PMI_LOCAL_SIZE_VARS,
        rank,
        Some(size),
    )?;
    Ok(Detected {
        rank,
        size,
        local_rank,
        local_size,
        source: Launcher::Pmi,
    })
}

fn pmix(env: &impl Fn(&str) -> Option<String>, rank: Found) -> Result<Detected, LaunchError> {
    let size = match first_of(env, &PMIX_SIZE_VARS)? {
        Some(size) => size,
        None => slurm_size_for(env, rank)?.ok_or(LaunchError::MissingSize {
            var: PMIX_RANK,
            looked_for: "PMI_SIZE, OMPI_COMM_WORLD_SIZE, or a matching SLURM_PROCID \
                         with SLURM_STEP_NUM_TASKS, SLURM_NTASKS or SLURM_NPROCS",
        })?,
    };
    let (local_rank, local_size) = local_pair(
        env,
        &PMIX_LOCAL_RANK_VARS,
        &PMIX_LOCAL_SIZE_VARS,
        rank,
        Some(size),
    )?;
    Ok(Detected {
        rank,
        size,
        local_rank,
        local_size,
        source: Launcher::Pmix,
    })
}

fn slurm(env: &impl Fn(&str) -> Option<String>, rank: Found) -> Result<Detected, LaunchError> {
    let size = first_of(env, &SLURM_SIZE_VARS)?.ok_or(LaunchError::MissingSize {
        var: SLURM_PROCID,
        looked_for: "SLURM_STEP_NUM_TASKS, SLURM_NTASKS or SLURM_NPROCS",
    })?;
    Ok(Detected {
        rank,
        size,
        local_rank: read(env, SLURM_LOCALID)?,
        local_size: slurm_local_size(env)?,
        source: Launcher::Slurm,
    })
}

/// The local rank and count from the first present variable of each list, falling back to
/// Slurm's when Slurm started this very process.
///
/// `size` is the job size the rank came with, if known; it must then match Slurm's too.
fn local_pair(
    env: &impl Fn(&str) -> Option<String>,
    rank_vars: &[&'static str],
    size_vars: &[&'static str],
    rank: Found,
    size: Option<Found>,
) -> Result<(Option<Found>, Option<Found>), LaunchError> {
    let local_rank = first_of(env, rank_vars)?;
    let local_size = first_of(env, size_vars)?;
    if local_rank.is_some() || local_size.is_some() {
        return Ok((local_rank, local_size));
    }
    let Some(slurm_size) = slurm_size_for(env, rank)? else {
        return Ok((None, None));
    };
    if size.is_some_and(|size| size.value != slurm_size.value) {
        return Ok((None, None));
    }
    Ok((read(env, SLURM_LOCALID)?, slurm_local_size(env)?))
}

/// Slurm's task count, if `SLURM_PROCID` is present and equals `rank`.
fn slurm_size_for(
    env: &impl Fn(&str) -> Option<String>,
    rank: Found,
) -> Result<Option<Found>, LaunchError> {
    match read(env, SLURM_PROCID)? {
        Some(procid) if procid.value == rank.value => first_of(env, &SLURM_SIZE_VARS),
        _ => Ok(None),
    }
}

/// The number of Slurm tasks on this node.
fn slurm_local_size(env: &impl Fn(&str) -> Option<String>) -> Result<Option<Found>, LaunchError> {
    let node = read(env, SLURM_NODEID)?;
    for var in SLURM_TASKS_PER_NODE_VARS {
        let Some(text) = env(var) else { continue };
        let groups = parse_tasks_per_node(var, &text)?;
        if let Some(value) = tasks_on_node(var, &groups, node)? {
            return Ok(Some(Found { value, var }));
        }
    }
    read(env, SLURM_NTASKS_PER_NODE)
}

/// One run of a Slurm tasks-per-node list: `count` tasks on each of `nodes` nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TaskGroup {
    count: u32,
    nodes: u32,
}

/// Parses Slurm's compressed tasks-per-node list, such as `2(x3),1`.
fn parse_tasks_per_node(var: &'static str, text: &str) -> Result<Vec<TaskGroup>, LaunchError> {
    let malformed = || LaunchError::Malformed {
        var,
        value: text.to_owned(),
        reason: "expected a list of task counts such as 2(x3),1",
    };
    text.split(',')
        .map(|item| {
            let (count, nodes) = match item.split_once("(x") {
                Some((count, rest)) => (count, rest.strip_suffix(')').ok_or_else(malformed)?),
                None => (item, "1"),
            };
            let count = parse_decimal(count).ok_or_else(malformed)?;
            let nodes = parse_decimal(nodes)
                .filter(|&n| n > 0)
                .ok_or_else(malformed)?;
            Ok(TaskGroup { count, nodes })
        })
        .collect()
}

/// The task count of node `node` in `groups`; without a node id, the count shared by all
/// nodes if there is one.
fn tasks_on_node(
    var: &'static str,
    groups: &[TaskGroup],
    node: Option<Found>,
) -> Result<Option<u32>, LaunchError> {
    let Some(node) = node else {
        let first = groups[0].count;
        return Ok(groups.iter().all(|g| g.count == first).then_some(first));
    };
    let mut start: u64 = 0;
    for group in groups {
        let end = start + u64::from(group.nodes);
        if u64::from(node.value) < end {
            return Ok(Some(group.count));
        }
        start = end;
    }
    Err(LaunchError::Inconsistent {
        var: node.var,
        value: node.value,
        rule: "must be less than the number of nodes listed in",
        other_var: var,
        other: u32::try_from(start).unwrap_or(u32::MAX),
    })
}

impl Detected {
    /// Cross-checks the values and turns them into a [`LaunchInfo`].
    fn check(self) -> Result<LaunchInfo, LaunchError> {
        let positive = |found: Found, value: String| {
            if found.value == 0 {
                return Err(LaunchError::Malformed {
                    var: found.var,
                    value,
                    reason: "a process count must be at least 1",
                });
            }
            Ok(())
        };
        positive(self.size, self.size.value.to_string())?;
        below(self.rank, self.size)?;
        if let Some(local_size) = self.local_size {
            positive(local_size, local_size.value.to_string())?;
            at_most(local_size, self.size)?;
        }
        if let Some(local_rank) = self.local_rank {
            below(local_rank, self.local_size.unwrap_or(self.size))?;
        }
        Ok(LaunchInfo {
            rank: self.rank.value,
            size: self.size.value,
            local_rank: self.local_rank.map(|f| f.value),
            local_size: self.local_size.map(|f| f.value),
            source: self.source,
        })
    }
}

fn below(value: Found, limit: Found) -> Result<(), LaunchError> {
    compare(value, limit, value.value < limit.value, "must be less than")
}

fn at_most(value: Found, limit: Found) -> Result<(), LaunchError> {
    compare(value, limit, value.value <= limit.value, "must not exceed")
}

fn compare(value: Found, limit: Found, holds: bool, rule: &'static str) -> Result<(), LaunchError> {
    if holds {
        return Ok(());
    }
    Err(LaunchError::Inconsistent {
        var: value.var,
        value: value.value,
        rule,
        other_var: limit.var,
        other: limit.value,
    })
}

/// The value of the first variable of `vars` that is present.
fn first_of(
    env: &impl Fn(&str) -> Option<String>,
    vars: &[&'static str],
) -> Result<Option<Found>, LaunchError> {
    for &var in vars {
        if let Some(found) = read(env, var)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Reads `var` as a plain decimal `u32`; absent is `None`, present but invalid is an error.
fn read(
    env: &impl Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<Found>, LaunchError> {
    let Some(text) = env(var) else {
        return Ok(None);
    };
    match parse_decimal(&text) {
        Some(value) => Ok(Some(Found { value, var })),
        None => Err(LaunchError::Malformed {
            var,
            reason: if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
                "too large for a process index"
            } else {
                "expected a non-negative decimal integer"
            },
            value: text,
        }),
    }
}

/// Parses digits only: no sign, no blanks, no empty string.
fn parse_decimal(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests;
