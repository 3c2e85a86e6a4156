//! The `options` string of `benchfs_init`: comma-separated `key=value` pairs, every key
//! known and every value checked.

use std::path::PathBuf;
use std::time::Duration;

use super::errors::{Fail, FfiResult};
use crate::client::{ClientConfig, DataPath};

/// What `benchfs_init` was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitOptions {
    /// Chunk size of files this process creates.
    pub chunk_size: Option<u64>,
    /// Deadline of every request, in ms.
    pub timeout_ms: Option<u64>,
    /// Servers to wait for (and, with `server`, the embedded server's cluster size).
    pub servers: Option<u32>,
    /// How long to wait for the cluster, in ms.
    pub wait_ms: Option<u64>,
    /// How data moves.
    pub data_path: Option<DataPath>,
    /// Whether to run an embedded storage server.
    pub server: bool,
    /// Data directory of the embedded server.
    pub data_dir: Option<PathBuf>,
    /// Rank of the embedded server (default: from the launcher's environment, as for
    /// `benchfsd`).
    pub rank: Option<u32>,
    /// Shards of the embedded server.
    pub shards: Option<u32>,
    /// Slab size of each shard of the embedded server.
    pub slab_bytes: Option<u64>,
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> FfiResult<T> {
    value
        .trim()
        .parse()
        .map_err(|_| Fail::invalid(format!("option {key}={value:?} is not a number")))
}

impl InitOptions {
    /// Parses `text` (empty: every default).
    pub fn parse(text: &str) -> FfiResult<InitOptions> {
        let mut options = InitOptions::default();
        for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(Fail::invalid(format!("option {pair:?} is not key=value")));
            };
            options.set(key.trim(), value.trim())?;
        }
        if options.server && options.data_dir.is_none() {
            return Err(Fail::invalid("option server=1 needs data_dir"));
        }
        let server_only = [
            ("data_dir", options.data_dir.is_some()),
            ("rank", options.rank.is_some()),
            ("shards", options.shards.is_some()),
            ("slab_size", options.slab_bytes.is_some()),
        ];
        if let Some((key, _)) = server_only.iter().find(|(_, set)| *set && !options.server) {
            return Err(Fail::invalid(format!("option {key} needs server=1")));
        }
        Ok(options)
    }

    fn set(&mut self, key: &str, value: &str) -> FfiResult<()> {
        match key {
            "chunk_size" => {
                let size = crate::config::parse_size(value)
                    .map_err(|e| Fail::invalid(format!("option chunk_size: {e}")))?;
                self.chunk_size = Some(size);
            }
            "timeout_ms" => self.timeout_ms = Some(number(key, value)?),
            "servers" => self.servers = Some(number(key, value)?),
            "wait_ms" => self.wait_ms = Some(number(key, value)?),
            "data_path" => {
                self.data_path = Some(value.parse().map_err(Fail::invalid)?);
            }
            "server" => {
                self.server = match value {
                    "1" | "true" | "yes" => true,
                    "0" | "false" | "no" => false,
                    _ => return Err(Fail::invalid(format!("option server={value:?}"))),
                }
            }
            "data_dir" if !value.is_empty() => self.data_dir = Some(PathBuf::from(value)),
            "rank" => self.rank = Some(number(key, value)?),
            "shards" => match number(key, value)? {
                0 => return Err(Fail::invalid("option shards=0: a server needs a shard")),
                n => self.shards = Some(n),
            },
            "slab_size" => {
                let size = crate::config::parse_size(value)
                    .map_err(|e| Fail::invalid(format!("option slab_size: {e}")))?;
                self.slab_bytes = Some(size);
            }
            _ => return Err(Fail::invalid(format!("unknown option {key}={value:?}"))),
        }
        Ok(())
    }

    /// The client settings for the cluster at `registry` (defaults from the environment).
    pub fn client_config(&self, registry: &std::path::Path) -> FfiResult<ClientConfig> {
        let mut config = ClientConfig::from_env(registry)?;
        if let Some(size) = self.chunk_size {
            config.chunk_size_bytes = size;
        }
        if let Some(ms) = self.timeout_ms {
            config.request_timeout = Duration::from_millis(ms.max(1));
        }
        if self.servers.is_some() {
            config.expected_servers = self.servers;
        }
        if let Some(ms) = self.wait_ms {
            config.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(path) = self.data_path {
            config.data_path = path;
        }
        Ok(config)
    }
}
