//! The configuration keys: [`Key`] and the table [`KEYS`] of their names in the file, flags,
//! documentation and example values, from which the environment variable names derive.

use super::ENV_PREFIX;

/// The configuration keys, in the order they are documented and printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    RegistryDir,
    DataDir,
    ChunkSizeBytes,
    SlabBytes,
    ShardsPerNuma,
    Shards,
    EagerThresholdBytes,
    QueueDepth,
    RequestTimeoutMs,
    ShutdownTimeoutMs,
    LogLevel,
    Rank,
    Servers,
    LocalRank,
    LocalServers,
    Numa,
}

/// What is documented about one key.
#[derive(Debug)]
pub(super) struct KeySpec {
    pub(super) key: Key,
    /// Name in the TOML file; the environment variable is derived from it.
    pub(super) name: &'static str,
    flag: &'static str,
    pub(super) doc: &'static str,
    /// Example value for keys without a default.
    pub(super) example: Option<&'static str>,
}

/// Every key, in [`Key`] order, which is the order they are documented and printed.
pub(super) const KEYS: [KeySpec; 16] = [
    KeySpec {
        key: Key::RegistryDir,
        name: "registry_dir",
        flag: "--registry-dir",
        doc: "Directory where servers publish their addresses; shared by all servers\n\
              and clients. Required.",
        example: Some("\"/shared/benchfs/registry\""),
    },
    KeySpec {
        key: Key::DataDir,
        name: "data_dir",
        flag: "--data-dir",
        doc: "Directory holding this server's data. Required.",
        example: Some("\"/local/benchfs/data\""),
    },
    KeySpec {
        key: Key::ChunkSizeBytes,
        name: "chunk_size_bytes",
        flag: "--chunk-size",
        doc: "Chunk size, the unit of data placement: a multiple of 4KiB, 4KiB..=1GiB.",
        example: None,
    },
    KeySpec {
        key: Key::SlabBytes,
        name: "slab_bytes",
        flag: "--slab-size",
        doc: "Memory slab per shard: at least one chunk, a multiple of the chunk size,\n\
              at most 1TiB.",
        example: None,
    },
    KeySpec {
        key: Key::ShardsPerNuma,
        name: "shards_per_numa",
        flag: "--shards-per-numa",
        doc: "Shards per NUMA node, unless `shards` is set. At least 1.",
        example: None,
    },
    KeySpec {
        key: Key::Shards,
        name: "shards",
        flag: "--shards",
        doc: "Total shard count, overriding `shards_per_numa`. Unset by default.",
        example: Some("8"),
    },
    KeySpec {
        key: Key::EagerThresholdBytes,
        name: "eager_threshold_bytes",
        flag: "--eager-threshold",
        doc: "Payloads of at most this many bytes travel inline with their request.\n\
              At most the chunk size.",
        example: None,
    },
    KeySpec {
        key: Key::QueueDepth,
        name: "queue_depth",
        flag: "--queue-depth",
        doc: "Requests that may wait while all slots are busy: 1..=1048576.",
        example: None,
    },
    KeySpec {
        key: Key::RequestTimeoutMs,
        name: "request_timeout_ms",
        flag: "--request-timeout-ms",
        doc: "Request timeout in milliseconds: 1..=86400000.",
        example: None,
    },
    KeySpec {
        key: Key::ShutdownTimeoutMs,
        name: "shutdown_timeout_ms",
        flag: "--shutdown-timeout-ms",
        doc: "Time allowed for a clean shutdown, in milliseconds: 1..=86400000.",
        example: None,
    },
    KeySpec {
        key: Key::LogLevel,
        name: "log_level",
        flag: "--log-level",
        doc: "Log level: error, warn, info or debug.",
        example: None,
    },
    KeySpec {
        key: Key::Rank,
        name: "rank",
        flag: "--rank",
        doc: "This server's rank, overriding the launcher's. Unset by default.",
        example: Some("0"),
    },
    KeySpec {
        key: Key::Servers,
        name: "servers",
        flag: "--servers",
        doc: "Number of servers, overriding the launcher's. Unset by default.",
        example: Some("4"),
    },
    KeySpec {
        key: Key::LocalRank,
        name: "local_rank",
        flag: "--local-rank",
        doc: "This server's rank on its node, overriding the launcher's.\n\
              Unset by default.",
        example: Some("0"),
    },
    KeySpec {
        key: Key::LocalServers,
        name: "local_servers",
        flag: "--local-servers",
        doc: "Number of servers on this node, overriding the launcher's.\n\
              Unset by default.",
        example: Some("1"),
    },
    KeySpec {
        key: Key::Numa,
        name: "numa",
        flag: "--no-numa",
        doc: "Bind shards to NUMA nodes; `--no-numa` turns it off.",
        example: None,
    },
];

impl Key {
    /// Every key, in order.
    pub(super) fn all() -> impl Iterator<Item = Key> {
        KEYS.iter().map(|spec| spec.key)
    }

    pub(super) fn spec(self) -> &'static KeySpec {
        &KEYS[self as usize]
    }

    pub(super) fn name(self) -> &'static str {
        self.spec().name
    }

    pub(super) fn flag(self) -> &'static str {
        self.spec().flag
    }

    pub(super) fn env_var(self) -> String {
        format!("{ENV_PREFIX}{}", self.name().to_ascii_uppercase())
    }
}
