//! Completeness of a cluster: whether a set of entries covers every shard of every rank
//! ([`Cluster::from_entries`]), what is missing or contradictory, and the [`Status`] that
//! waiting clients report.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::RangeInclusive;

use super::{EntryProblem, TargetEntry};

/// A complete cluster: every shard of every rank has an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    servers: u32,
    entries: Vec<TargetEntry>,
}

/// Whether a set of entries forms a complete cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    /// Every target is present.
    Complete(Cluster),
    /// Some targets have not been published yet.
    Incomplete(Incomplete),
    /// The entries contradict each other or the expected server count.
    Inconsistent(Inconsistency),
}

/// What is still missing from a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete {
    /// The number of servers, if known from the entries or the caller.
    pub servers: Option<u32>,
    /// How many ranks have all of their shards published.
    pub ranks_up: u32,
    /// The missing targets, in rank order.
    pub missing: Vec<Missing>,
}

/// A run of missing targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// Ranks of which no shard has been published.
    Ranks(RangeInclusive<u32>),
    /// Shards missing from a rank that published some of its shards.
    Shards {
        /// The rank.
        rank: u32,
        /// The missing shard indices.
        shards: Vec<RangeInclusive<u32>>,
    },
}

/// A contradiction among entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inconsistency {
    /// The caller expects zero servers.
    NoServersExpected,
    /// Entries disagree on the number of servers; the distinct values.
    ServerCounts(Vec<u32>),
    /// The entries agree on a server count that differs from the expected one.
    ExpectedMismatch {
        /// What the caller expects.
        expected: u32,
        /// What the entries say.
        published: u32,
    },
    /// Entries of one rank disagree on its number of shards.
    ShardCounts {
        /// The rank.
        rank: u32,
        /// One value.
        first: u32,
        /// Another value.
        second: u32,
    },
    /// Two entries for the same target.
    Duplicate {
        /// The rank.
        rank: u32,
        /// The shard.
        shard: u32,
    },
    /// An entry whose rank or shard lies outside the declared counts.
    OutOfRange {
        /// The rank.
        rank: u32,
        /// The shard.
        shard: u32,
        /// The server count of the cluster.
        servers: u32,
        /// The shard count the entry declares.
        shards_of_rank: u32,
    },
}

impl Cluster {
    /// Decides whether `entries` form a complete cluster.
    ///
    /// The number of servers comes from the entries, which must agree, and
    /// must equal `expected_servers` when that is given. With no entries and
    /// no expected count the cluster is incomplete with an unknown size.
    pub fn from_entries(
        mut entries: Vec<TargetEntry>,
        expected_servers: Option<u32>,
    ) -> Completeness {
        entries.sort_by_key(|e| (e.rank, e.shard));
        let servers = match agreed_servers(&entries, expected_servers) {
            Ok(Some(servers)) => servers,
            Ok(None) => {
                return Completeness::Incomplete(Incomplete {
                    servers: None,
                    ranks_up: 0,
                    missing: Vec::new(),
                })
            }
            Err(detail) => return Completeness::Inconsistent(detail),
        };
        if let Err(detail) = check_layout(&entries, servers) {
            return Completeness::Inconsistent(detail);
        }
        let (ranks_up, missing) = find_missing(&entries, servers);
        if missing.is_empty() {
            Completeness::Complete(Cluster { servers, entries })
        } else {
            Completeness::Incomplete(Incomplete {
                servers: Some(servers),
                ranks_up,
                missing,
            })
        }
    }

    /// Number of servers.
    pub fn servers(&self) -> u32 {
        self.servers
    }

    /// All entries, sorted by (rank, shard).
    pub fn entries(&self) -> &[TargetEntry] {
        &self.entries
    }

    /// The entry of one target.
    pub fn target(&self, rank: u32, shard: u32) -> Option<&TargetEntry> {
        let index = self
            .entries
            .binary_search_by_key(&(rank, shard), |e| (e.rank, e.shard))
            .ok()?;
        Some(&self.entries[index])
    }

    /// Takes the entries out, sorted by (rank, shard).
    pub fn into_entries(self) -> Vec<TargetEntry> {
        self.entries
    }
}

fn agreed_servers(
    entries: &[TargetEntry],
    expected: Option<u32>,
) -> Result<Option<u32>, Inconsistency> {
    if expected == Some(0) {
        return Err(Inconsistency::NoServersExpected);
    }
    let counts: BTreeSet<u32> = entries.iter().map(|e| e.servers).collect();
    if counts.len() > 1 {
        return Err(Inconsistency::ServerCounts(counts.into_iter().collect()));
    }
    match (counts.first().copied(), expected) {
        (Some(published), Some(expected)) if published != expected => {
            Err(Inconsistency::ExpectedMismatch {
                expected,
                published,
            })
        }
        (Some(published), _) => Ok(Some(published)),
        (None, expected) => Ok(expected),
    }
}

/// Checks sorted entries for targets out of range, duplicates and shard counts
/// that differ within a rank.
fn check_layout(entries: &[TargetEntry], servers: u32) -> Result<(), Inconsistency> {
    for (index, entry) in entries.iter().enumerate() {
        if entry.rank >= servers || entry.shard >= entry.shards_of_rank {
            return Err(Inconsistency::OutOfRange {
                rank: entry.rank,
                shard: entry.shard,
                servers,
                shards_of_rank: entry.shards_of_rank,
            });
        }
        let Some(prev) = index.checked_sub(1).map(|i| &entries[i]) else {
            continue;
        };
        if prev.rank != entry.rank {
            continue;
        }
        if prev.shard == entry.shard {
            return Err(Inconsistency::Duplicate {
                rank: entry.rank,
                shard: entry.shard,
            });
        }
        if prev.shards_of_rank != entry.shards_of_rank {
            return Err(Inconsistency::ShardCounts {
                rank: entry.rank,
                first: prev.shards_of_rank,
                second: entry.shards_of_rank,
            });
        }
    }
    Ok(())
}

/// Lists what is missing from sorted, consistent entries, and counts the
/// ranks that are complete.
fn find_missing(entries: &[TargetEntry], servers: u32) -> (u32, Vec<Missing>) {
    let mut missing = Vec::new();
    let mut ranks_up = 0;
    let mut next_rank = 0;
    for rank_entries in entries.chunk_by(|a, b| a.rank == b.rank) {
        let first = &rank_entries[0];
        if first.rank > next_rank {
            missing.push(Missing::Ranks(next_rank..=first.rank - 1));
        }
        let shards = gaps(rank_entries.iter().map(|e| e.shard), first.shards_of_rank);
        if shards.is_empty() {
            ranks_up += 1;
        } else {
            missing.push(Missing::Shards {
                rank: first.rank,
                shards,
            });
        }
        next_rank = first.rank + 1;
    }
    if next_rank < servers {
        missing.push(Missing::Ranks(next_rank..=servers - 1));
    }
    (ranks_up, missing)
}

/// The runs of `0..end` not in `present`, which is sorted, unique and below `end`.
fn gaps(present: impl Iterator<Item = u32>, end: u32) -> Vec<RangeInclusive<u32>> {
    let mut runs = Vec::new();
    let mut next = 0;
    for value in present {
        if value > next {
            runs.push(next..=value - 1);
        }
        next = value + 1;
    }
    if next < end {
        runs.push(next..=end - 1);
    }
    runs
}

fn write_runs(f: &mut fmt::Formatter<'_>, runs: &[RangeInclusive<u32>]) -> fmt::Result {
    for (index, run) in runs.iter().enumerate() {
        let sep = if index == 0 { "" } else { "," };
        if run.start() == run.end() {
            write!(f, "{sep}{}", run.start())?;
        } else {
            write!(f, "{sep}{}-{}", run.start(), run.end())?;
        }
    }
    Ok(())
}

fn is_single(runs: &[RangeInclusive<u32>]) -> bool {
    runs.len() == 1 && runs[0].start() == runs[0].end()
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Ranks(ranks) => {
                let runs = std::slice::from_ref(ranks);
                f.write_str(if is_single(runs) { "rank " } else { "ranks " })?;
                write_runs(f, runs)
            }
            Missing::Shards { rank, shards } => {
                let word = if is_single(shards) { "shard" } else { "shards" };
                write!(f, "rank {rank} {word} ")?;
                write_runs(f, shards)
            }
        }
    }
}

impl fmt::Display for Incomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(servers) = self.servers else {
            return f.write_str("no targets published yet");
        };
        write!(f, "{} of {servers} servers up; missing ", self.ranks_up)?;
        for (index, missing) in self.missing.iter().enumerate() {
            let sep = if index == 0 { "" } else { ", " };
            write!(f, "{sep}{missing}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoServersExpected => f.write_str("zero servers expected"),
            Self::ServerCounts(counts) => {
                let counts: Vec<String> = counts.iter().map(u32::to_string).collect();
                let counts = counts.join(" vs ");
                write!(f, "entries disagree on the number of servers ({counts})")
            }
            Self::ExpectedMismatch {
                expected,
                published,
            } => write!(
                f,
                "expected {expected} servers, but the entries say {published}"
            ),
            Self::ShardCounts {
                rank,
                first,
                second,
            } => write!(
                f,
                "entries of rank {rank} disagree on its shard count ({first} vs {second})"
            ),
            Self::Duplicate { rank, shard } => {
                write!(f, "two entries for rank {rank} shard {shard}")
            }
            Self::OutOfRange {
                rank,
                shard,
                servers,
                shards_of_rank,
            } => write!(
                f,
                "rank {rank} shard {shard} lies outside {servers} servers \
                 of {shards_of_rank} shards"
            ),
        }
    }
}

impl fmt::Display for Completeness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Complete(cluster) => write!(
                f,
                "all {} servers up ({} targets)",
                cluster.servers,
                cluster.entries.len()
            ),
            Self::Incomplete(incomplete) => incomplete.fmt(f),
            Self::Inconsistent(detail) => write!(
                f,
                "inconsistent registry: {detail} (stale entries of another cluster? stop all \
                 servers and remove the target-*.toml files from the registry)"
            ),
        }
    }
}

/// The state of the cluster as seen in the registry at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Whether the usable entries form a complete cluster.
    pub completeness: Completeness,
    /// Files that are not usable entries.
    pub problems: Vec<EntryProblem>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.completeness.fmt(f)?;
        if !self.problems.is_empty() {
            f.write_str("; unusable entries: ")?;
            for (index, problem) in self.problems.iter().enumerate() {
                let sep = if index == 0 { "" } else { "; " };
                write!(f, "{sep}{problem}")?;
            }
        }
        Ok(())
    }
}
