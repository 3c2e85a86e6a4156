//! The layers of settings and their precedence: each [`Layer`] holds the keys that the file,
//! the environment or the flags set, [`Layers::resolve`] takes each key from the highest
//! layer that sets it, and the validation rules name the key and layer at fault.

use std::path::PathBuf;

use serde::Deserialize;

use super::keys::Key;
use super::size::ByteSize;
use super::{
    format_size, ConfigError, LogLevel, Origin, ServerConfig, CHUNK_ALIGN_BYTES,
    DEFAULT_CHUNK_SIZE_BYTES, DEFAULT_EAGER_THRESHOLD_BYTES, DEFAULT_QUEUE_DEPTH,
    DEFAULT_REQUEST_TIMEOUT_MS, DEFAULT_SHARDS_PER_NUMA, DEFAULT_SHUTDOWN_TIMEOUT_MS,
    DEFAULT_SLAB_BYTES, MAX_CHUNK_SIZE_BYTES, MAX_QUEUE_DEPTH, MAX_SLAB_BYTES, MAX_TIMEOUT_MS,
};

/// The keys one layer sets; the file is deserialized straight into it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Layer {
    pub(super) registry_dir: Option<PathBuf>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) chunk_size_bytes: Option<ByteSize>,
    pub(super) slab_bytes: Option<ByteSize>,
    pub(super) shards_per_numa: Option<u32>,
    pub(super) shards: Option<u32>,
    pub(super) eager_threshold_bytes: Option<ByteSize>,
    pub(super) queue_depth: Option<u32>,
    pub(super) request_timeout_ms: Option<u64>,
    pub(super) shutdown_timeout_ms: Option<u64>,
    pub(super) log_level: Option<LogLevel>,
    pub(super) rank: Option<u32>,
    pub(super) servers: Option<u32>,
    pub(super) local_rank: Option<u32>,
    pub(super) local_servers: Option<u32>,
    pub(super) numa: Option<bool>,
}

impl Layer {
    fn has(&self, key: Key) -> bool {
        match key {
            Key::RegistryDir => self.registry_dir.is_some(),
            Key::DataDir => self.data_dir.is_some(),
            Key::ChunkSizeBytes => self.chunk_size_bytes.is_some(),
            Key::SlabBytes => self.slab_bytes.is_some(),
            Key::ShardsPerNuma => self.shards_per_numa.is_some(),
            Key::Shards => self.shards.is_some(),
            Key::EagerThresholdBytes => self.eager_threshold_bytes.is_some(),
            Key::QueueDepth => self.queue_depth.is_some(),
            Key::RequestTimeoutMs => self.request_timeout_ms.is_some(),
            Key::ShutdownTimeoutMs => self.shutdown_timeout_ms.is_some(),
            Key::LogLevel => self.log_level.is_some(),
            Key::Rank => self.rank.is_some(),
            Key::Servers => self.servers.is_some(),
            Key::LocalRank => self.local_rank.is_some(),
            Key::LocalServers => self.local_servers.is_some(),
            Key::Numa => self.numa.is_some(),
        }
    }
}

/// The three layers, highest precedence first in lookups.
#[derive(Debug)]
pub(super) struct Layers {
    pub(super) flags: Layer,
    pub(super) env: Layer,
    pub(super) file: Layer,
    pub(super) file_path: Option<PathBuf>,
    pub(super) client_registry_set: bool,
}

impl Layers {
    /// The value of a key from the highest layer that sets it.
    fn pick<T: Clone>(&self, field: impl Fn(&Layer) -> &Option<T>) -> Option<T> {
        [&self.flags, &self.env, &self.file]
            .into_iter()
            .find_map(|layer| field(layer).clone())
    }

    fn origin(&self, key: Key) -> Origin {
        if self.flags.has(key) {
            Origin::Flag(key.flag())
        } else if self.env.has(key) {
            Origin::Env(key.env_var())
        } else if let (true, Some(path)) = (self.file.has(key), &self.file_path) {
            Origin::File(path.clone())
        } else {
            Origin::Default
        }
    }

    fn required(
        &self,
        key: Key,
        field: impl Fn(&Layer) -> &Option<PathBuf>,
    ) -> Result<PathBuf, ConfigError> {
        self.pick(field).ok_or_else(|| ConfigError::Missing {
            key: key.name(),
            env: key.env_var(),
            flag: key.flag(),
            hint: match (key, self.client_registry_set) {
                (Key::RegistryDir, true) => "; BENCHFS_REGISTRY is set, but that name is \
                                             read by clients only"
                    .to_owned(),
                _ => String::new(),
            },
        })
    }

    pub(super) fn resolve(&self) -> Result<ServerConfig, ConfigError> {
        let size = |field: fn(&Layer) -> &Option<ByteSize>, default| {
            self.pick(field).map_or(default, |size| size.0)
        };
        let config = ServerConfig {
            registry_dir: self.required(Key::RegistryDir, |l| &l.registry_dir)?,
            data_dir: self.required(Key::DataDir, |l| &l.data_dir)?,
            chunk_size_bytes: size(|l| &l.chunk_size_bytes, DEFAULT_CHUNK_SIZE_BYTES),
            slab_bytes: size(|l| &l.slab_bytes, DEFAULT_SLAB_BYTES),
            shards_per_numa: self
                .pick(|l| &l.shards_per_numa)
                .unwrap_or(DEFAULT_SHARDS_PER_NUMA),
            shards: self.pick(|l| &l.shards),
            eager_threshold_bytes: size(
                |l| &l.eager_threshold_bytes,
                DEFAULT_EAGER_THRESHOLD_BYTES,
            ),
            queue_depth: self.pick(|l| &l.queue_depth).unwrap_or(DEFAULT_QUEUE_DEPTH),
            request_timeout_ms: self
                .pick(|l| &l.request_timeout_ms)
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
            shutdown_timeout_ms: self
                .pick(|l| &l.shutdown_timeout_ms)
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_MS),
            log_level: self.pick(|l| &l.log_level).unwrap_or_default(),
            rank: self.pick(|l| &l.rank),
            servers: self.pick(|l| &l.servers),
            local_rank: self.pick(|l| &l.local_rank),
            local_servers: self.pick(|l| &l.local_servers),
            numa: self.pick(|l| &l.numa).unwrap_or(true),
        };
        match violation(&config) {
            Some((key, reason)) => Err(ConfigError::Invalid {
                key: key.name(),
                origin: self.origin(key),
                value: config
                    .value_of(key)
                    .map_or_else(String::new, |v| v.to_string()),
                reason,
            }),
            None => Ok(config),
        }
    }
}

impl ServerConfig {
    /// Checks the rules that [`load`](super::load) enforces, for a configuration built in
    /// code (the embedded server of the C API): the first broken one as "key: reason".
    pub fn check(&self) -> Result<(), String> {
        match violation(self) {
            Some((key, reason)) => Err(format!("{} {}", key.name(), reason)),
            None => Ok(()),
        }
    }
}

/// The first rule that `config` breaks, as the key at fault and the reason.
fn violation(config: &ServerConfig) -> Option<(Key, String)> {
    size_violation(config)
        .or_else(|| count_violation(config))
        .or_else(|| placement_violation(config))
}

fn size_violation(c: &ServerConfig) -> Option<(Key, String)> {
    let chunk = format_size(c.chunk_size_bytes);
    let rules = [
        (
            Key::RegistryDir,
            c.registry_dir.as_os_str().is_empty(),
            "must not be empty".to_owned(),
        ),
        (
            Key::DataDir,
            c.data_dir.as_os_str().is_empty(),
            "must not be empty".to_owned(),
        ),
        (
            Key::ChunkSizeBytes,
            !(CHUNK_ALIGN_BYTES..=MAX_CHUNK_SIZE_BYTES).contains(&c.chunk_size_bytes),
            "must be between 4KiB and 1GiB".to_owned(),
        ),
        (
            Key::ChunkSizeBytes,
            c.chunk_size_bytes % CHUNK_ALIGN_BYTES != 0,
            "must be a multiple of 4KiB (4096 bytes)".to_owned(),
        ),
        (
            Key::SlabBytes,
            c.slab_bytes < c.chunk_size_bytes,
            format!("must hold at least one chunk (chunk_size_bytes = {chunk})"),
        ),
        (
            Key::SlabBytes,
            c.slab_bytes.checked_rem(c.chunk_size_bytes) != Some(0),
            format!("must be a multiple of chunk_size_bytes ({chunk})"),
        ),
        (
            Key::SlabBytes,
            c.slab_bytes > MAX_SLAB_BYTES,
            "must be at most 1TiB".to_owned(),
        ),
        (
            Key::EagerThresholdBytes,
            c.eager_threshold_bytes > c.chunk_size_bytes,
            format!("must not exceed chunk_size_bytes ({chunk})"),
        ),
    ];
    first_broken(rules)
}

fn count_violation(c: &ServerConfig) -> Option<(Key, String)> {
    let timeout = format!("must be between 1 and {MAX_TIMEOUT_MS} milliseconds");
    let rules = [
        (
            Key::ShardsPerNuma,
            c.shards_per_numa == 0,
            "must be at least 1".to_owned(),
        ),
        (
            Key::Shards,
            c.shards == Some(0),
            "must be at least 1".to_owned(),
        ),
        (
            Key::QueueDepth,
            !(1..=MAX_QUEUE_DEPTH).contains(&c.queue_depth),
            format!("must be between 1 and {MAX_QUEUE_DEPTH}"),
        ),
        (
            Key::RequestTimeoutMs,
            !(1..=MAX_TIMEOUT_MS).contains(&c.request_timeout_ms),
            timeout.clone(),
        ),
        (
            Key::ShutdownTimeoutMs,
            !(1..=MAX_TIMEOUT_MS).contains(&c.shutdown_timeout_ms),
            timeout,
        ),
    ];
    first_broken(rules)
}

fn placement_violation(c: &ServerConfig) -> Option<(Key, String)> {
    let not_below = |value: Option<u32>, limit: Option<u32>| match (value, limit) {
        (Some(value), Some(limit)) => value >= limit,
        _ => false,
    };
    let rules = [
        (
            Key::Servers,
            c.servers == Some(0),
            "must be at least 1".to_owned(),
        ),
        (
            Key::LocalServers,
            c.local_servers == Some(0),
            "must be at least 1".to_owned(),
        ),
        (
            Key::Rank,
            not_below(c.rank, c.servers),
            format!("must be less than servers ({})", c.servers.unwrap_or(0)),
        ),
        (
            Key::LocalRank,
            not_below(c.local_rank, c.local_servers),
            format!(
                "must be less than local_servers ({})",
                c.local_servers.unwrap_or(0)
            ),
        ),
        (
            Key::LocalServers,
            not_below(c.local_servers, c.servers) && c.local_servers != c.servers,
            format!("must not exceed servers ({})", c.servers.unwrap_or(0)),
        ),
    ];
    first_broken(rules)
}

fn first_broken<const N: usize>(rules: [(Key, bool, String); N]) -> Option<(Key, String)> {
    rules
        .into_iter()
        .find(|(_, broken, _)| *broken)
        .map(|(key, _, reason)| (key, reason))
}
