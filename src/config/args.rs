//! The command-line flags of `benchfsd` that set configuration keys ([`ServerArgs`]), and the
//! layer of settings they make.

use std::path::PathBuf;

use super::layers::Layer;
use super::size::ByteSize;
use super::{parse_size, LogLevel};

/// Flags of `benchfsd` that set configuration keys; flatten into the binary's parser.
///
/// Every flag is optional and overrides the environment and the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ServerArgs {
    /// TOML configuration file [env: BENCHFS_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory where servers publish their addresses, shared with clients (required)
    #[arg(long, value_name = "DIR")]
    pub registry_dir: Option<PathBuf>,
    /// Directory holding this server's data (required)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Chunk size, such as 4m or 4MiB; a multiple of 4KiB in 4KiB..=1GiB [default: 4MiB]
    #[arg(long = "chunk-size", value_name = "SIZE", value_parser = parse_size)]
    pub chunk_size: Option<u64>,
    /// Slab per shard; a multiple of the chunk size [default: 64MiB]
    #[arg(long = "slab-size", value_name = "SIZE", value_parser = parse_size)]
    pub slab_size: Option<u64>,
    /// Shards per NUMA node [default: 1]
    #[arg(long, value_name = "N")]
    pub shards_per_numa: Option<u32>,
    /// Total shard count, overriding --shards-per-numa
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Largest payload that travels inline with its request [default: 16KiB]
    #[arg(long = "eager-threshold", value_name = "SIZE", value_parser = parse_size)]
    pub eager_threshold: Option<u64>,
    /// Requests that may wait while all slots are busy [default: 256]
    #[arg(long, value_name = "N")]
    pub queue_depth: Option<u32>,
    /// Request timeout in milliseconds [default: 30000]
    #[arg(long, value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
    /// Time allowed for a clean shutdown, in milliseconds [default: 10000]
    #[arg(long, value_name = "MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// Log level [default: info]
    #[arg(long, value_name = "LEVEL", value_enum, ignore_case = true)]
    pub log_level: Option<LogLevel>,
    /// This server's rank, overriding the launcher's
    #[arg(long, value_name = "N")]
    pub rank: Option<u32>,
    /// Number of servers, overriding the launcher's
    #[arg(long, value_name = "N")]
    pub servers: Option<u32>,
    /// This server's rank on its node, overriding the launcher's
    #[arg(long, value_name = "N")]
    pub local_rank: Option<u32>,
    /// Number of servers on this node, overriding the launcher's
    #[arg(long, value_name = "N")]
    pub local_servers: Option<u32>,
    /// Do not bind shards to NUMA nodes
    #[arg(long)]
    pub no_numa: bool,
}

impl Layer {
    pub(super) fn from_args(args: &ServerArgs) -> Layer {
        Layer {
            registry_dir: args.registry_dir.clone(),
            data_dir: args.data_dir.clone(),
            chunk_size_bytes: args.chunk_size.map(ByteSize),
            slab_bytes: args.slab_size.map(ByteSize),
            shards_per_numa: args.shards_per_numa,
            shards: args.shards,
            eager_threshold_bytes: args.eager_threshold.map(ByteSize),
            queue_depth: args.queue_depth,
            request_timeout_ms: args.request_timeout_ms,
            shutdown_timeout_ms: args.shutdown_timeout_ms,
            log_level: args.log_level,
            rank: args.rank,
            servers: args.servers,
            local_rank: args.local_rank,
            local_servers: args.local_servers,
            numa: args.no_numa.then_some(false),
        }
    }
}
