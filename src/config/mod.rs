//! Configuration of the `benchfsd` storage daemon.
//!
//! This module owns the daemon's settings: their names, units, defaults and limits, and the
//! way they are gathered from a TOML file, `BENCHFS_*` environment variables and
//! command-line flags ([`ServerArgs`]) into one validated [`ServerConfig`]. It does not
//! read launcher variables: `rank`, `servers`, `local_rank` and `local_servers` here are
//! explicit overrides that the daemon applies over what [`crate::launcher`] detects.
//!
//! # Precedence
//!
//! Built-in defaults < TOML file < environment < flags, decided key by key: each setting
//! takes its value from the highest layer that sets it. The file is the one named by
//! `--config FILE`, or else by `BENCHFS_CONFIG`; with neither, no file is read. Every
//! error names the key and the layer its value came from.
//!
//! # Keys
//!
//! Each key's environment variable is `BENCHFS_` and the key in upper case
//! (`chunk_size_bytes`: `BENCHFS_CHUNK_SIZE_BYTES`).
//!
//! | key | default and limits | flag |
//! | --- | --- | --- |
//! | `registry_dir` | required; shared by all servers and clients | `--registry-dir` |
//! | `data_dir` | required | `--data-dir` |
//! | `chunk_size_bytes` | 4 MiB; a multiple of 4 KiB in 4 KiB..=1 GiB | `--chunk-size` |
//! | `slab_bytes` | 64 MiB per shard; a multiple of the chunk size, <= 1 TiB | `--slab-size` |
//! | `shards_per_numa` | 1 | `--shards-per-numa` |
//! | `shards` | unset: total shard count, overrides `shards_per_numa` | `--shards` |
//! | `eager_threshold_bytes` | 16 KiB; at most the chunk size | `--eager-threshold` |
//! | `queue_depth` | 256; 1..=1048576 | `--queue-depth` |
//! | `request_timeout_ms` | 30000; 1..=86400000 | `--request-timeout-ms` |
//! | `shutdown_timeout_ms` | 10000; 1..=86400000 | `--shutdown-timeout-ms` |
//! | `log_level` | `info`; or `error`, `warn`, `debug` | `--log-level` |
//! | `rank`, `servers` | unset: from the launcher | `--rank`, `--servers` |
//! | `local_rank`, `local_servers` | unset: from the launcher | `--local-rank`, `--local-servers` |
//! | `numa` | `true`: bind shards to NUMA nodes | `--no-numa` |
//!
//! [`default_config_toml`] renders the same list as a commented TOML file.
//!
//! # Values
//!
//! Sizes are byte counts: a TOML integer, or a string (and, in the environment and flags,
//! any value) made of a decimal number and an optional binary unit, case-insensitive:
//! `k`/`KiB` (1024), `m`/`MiB`, `g`/`GiB`, `t`/`TiB`, so `"4096"`, `"64k"`, `"4m"`,
//! `"4MiB"` and `"1g"` are all valid. Decimal units such as `MB` are refused as ambiguous;
//! signs, fractions and values beyond `u64` are refused. Booleans in the environment are
//! `true`/`false`, `1`/`0`, `yes`/`no` or `on`/`off`. Empty environment values are errors.
//!
//! # Environment variables
//!
//! A key's variable is `BENCHFS_` followed by the key in upper case, and `BENCHFS_CONFIG`
//! names the file. The client-side names in [`CLIENT_ENV_VARS`] and anything starting
//! with [`TEST_ENV_PREFIX`] are ignored here. Any other `BENCHFS_` variable is an error,
//! with a suggestion when it looks like a misspelled key (`BENCHFS_CHUNK_SIZE`:
//! did you mean `BENCHFS_CHUNK_SIZE_BYTES`?). Unknown keys in the file are errors too.
//!
//! # Modules
//!
//! This module holds the defaults and limits, [`LogLevel`], [`ServerConfig`], the errors and
//! [`load`]. Its submodules own the rest: `keys` the table of keys with their flags and
//! documentation, `layers` the per-layer settings with their precedence and the validation
//! rules, `args` the flags ([`ServerArgs`]), `env` the environment variables with the check
//! for unknown ones and its suggestions, and `size` the sizes ([`parse_size`],
//! [`format_size`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

mod args;
mod env;
mod keys;
mod layers;
mod size;
#[cfg(test)]
mod tests;

pub use args::ServerArgs;
pub use size::{format_size, parse_size, SizeError};

use env::check_env_names;
use keys::Key;
use layers::{Layer, Layers};
use size::{GIB, KIB, MIB, TIB};

/// Prefix of every environment variable the daemon reads.
pub const ENV_PREFIX: &str = "BENCHFS_";
/// Environment variable naming the TOML file, when `--config` is not given.
pub const CONFIG_ENV: &str = "BENCHFS_CONFIG";
/// `BENCHFS_` variables that belong to the client library; the daemon ignores them.
pub const CLIENT_ENV_VARS: &[&str] = &[
    "BENCHFS_REGISTRY",
    "BENCHFS_SERVERS_EXPECTED",
    "BENCHFS_TIMEOUT_MS",
    "BENCHFS_LOG",
    "BENCHFS_DATA_PATH",
    "BENCHFS_PIECE_BYTES",
    "BENCHFS_LOCAL_DIR",
    "BENCHFS_MOUNT",
    "BENCHFS_PRELOAD_DEBUG",
];
/// Prefix of variables reserved for tests; the daemon ignores them.
pub const TEST_ENV_PREFIX: &str = "BENCHFS_TEST_";

/// Default chunk size: 4 MiB.
pub const DEFAULT_CHUNK_SIZE_BYTES: u64 = 4 * MIB;
/// Smallest chunk size, and the unit chunk sizes are a multiple of: 4 KiB.
pub const CHUNK_ALIGN_BYTES: u64 = 4 * KIB;
/// Largest chunk size: 1 GiB.
pub const MAX_CHUNK_SIZE_BYTES: u64 = GIB;
/// Default slab per shard: 64 MiB.
pub const DEFAULT_SLAB_BYTES: u64 = 64 * MIB;
/// Largest slab per shard: 1 TiB.
pub const MAX_SLAB_BYTES: u64 = TIB;
/// Default shards per NUMA node.
pub const DEFAULT_SHARDS_PER_NUMA: u32 = 1;
/// Default eager threshold: payloads of at most 16 KiB travel inline.
pub const DEFAULT_EAGER_THRESHOLD_BYTES: u64 = 16 * KIB;
/// Default bound of the wait queue of requests when all slots are busy.
pub const DEFAULT_QUEUE_DEPTH: u32 = 256;
/// Largest queue depth.
pub const MAX_QUEUE_DEPTH: u32 = 1 << 20;
/// Default request timeout: 30 s.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Default shutdown timeout: 10 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
/// Largest timeout: one day.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// Severity threshold of the daemon's log.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, clap::ValueEnum, Deserialize,
)]
#[serde(try_from = "String")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Also informational messages (the default).
    #[default]
    Info,
    /// Everything, including debugging detail.
    Debug,
}

impl LogLevel {
    /// The lower-case name used in files, variables and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = String;

    /// Parses a level name, ignoring case.
    fn from_str(text: &str) -> Result<Self, String> {
        [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
        ]
        .into_iter()
        .find(|level| level.as_str().eq_ignore_ascii_case(text))
        .ok_or_else(|| format!("unknown log level {text:?}; expected error, warn, info or debug"))
    }
}

impl TryFrom<String> for LogLevel {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

/// The daemon's effective configuration. See the module documentation for each key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Directory where servers publish their addresses.
    pub registry_dir: PathBuf,
    /// Directory holding this server's data.
    pub data_dir: PathBuf,
    /// Size of a chunk, the unit of data placement.
    pub chunk_size_bytes: u64,
    /// Slab of memory per shard.
    pub slab_bytes: u64,
    /// Shards per NUMA node, unless `shards` is set.
    pub shards_per_numa: u32,
    /// Total shard count, overriding `shards_per_numa`.
    pub shards: Option<u32>,
    /// Payloads of at most this many bytes travel inline with their request.
    pub eager_threshold_bytes: u64,
    /// Bound of the wait queue of requests when all slots are busy.
    pub queue_depth: u32,
    /// Request timeout.
    pub request_timeout_ms: u64,
    /// Time allowed for a clean shutdown.
    pub shutdown_timeout_ms: u64,
    /// Log severity threshold.
    pub log_level: LogLevel,
    /// Rank override.
    pub rank: Option<u32>,
    /// Server count override.
    pub servers: Option<u32>,
    /// Local rank override.
    pub local_rank: Option<u32>,
    /// Local server count override.
    pub local_servers: Option<u32>,
    /// Bind shards to NUMA nodes.
    pub numa: bool,
}

impl ServerConfig {
    /// A configuration with the given directories and every other key at its default.
    pub fn new(registry_dir: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            registry_dir: registry_dir.into(),
            data_dir: data_dir.into(),
            chunk_size_bytes: DEFAULT_CHUNK_SIZE_BYTES,
            slab_bytes: DEFAULT_SLAB_BYTES,
            shards_per_numa: DEFAULT_SHARDS_PER_NUMA,
            shards: None,
            eager_threshold_bytes: DEFAULT_EAGER_THRESHOLD_BYTES,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            shutdown_timeout_ms: DEFAULT_SHUTDOWN_TIMEOUT_MS,
            log_level: LogLevel::default(),
            rank: None,
            servers: None,
            local_rank: None,
            local_servers: None,
            numa: true,
        }
    }

    /// [`request_timeout_ms`](Self::request_timeout_ms) as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// [`shutdown_timeout_ms`](Self::shutdown_timeout_ms) as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// The effective configuration as a TOML file that [`load`] reads back to the same
    /// configuration. Unset optional keys are left out; sizes use units where exact.
    /// Paths that are not valid UTF-8 are converted lossily.
    pub fn to_toml(&self) -> String {
        Key::all()
            .filter_map(|key| Some(format!("{} = {}\n", key.name(), self.value_of(key)?)))
            .collect()
    }

    /// The value of `key` as TOML, or `None` for an unset optional key.
    fn value_of(&self, key: Key) -> Option<toml::Value> {
        let path = |p: &Path| toml::Value::String(p.to_string_lossy().into_owned());
        let count = |n: u32| toml::Value::Integer(i64::from(n));
        let value = match key {
            Key::RegistryDir => path(&self.registry_dir),
            Key::DataDir => path(&self.data_dir),
            Key::ChunkSizeBytes => size_value(self.chunk_size_bytes),
            Key::SlabBytes => size_value(self.slab_bytes),
            Key::ShardsPerNuma => count(self.shards_per_numa),
            Key::Shards => count(self.shards?),
            Key::EagerThresholdBytes => size_value(self.eager_threshold_bytes),
            Key::QueueDepth => count(self.queue_depth),
            Key::RequestTimeoutMs => millis_value(self.request_timeout_ms),
            Key::ShutdownTimeoutMs => millis_value(self.shutdown_timeout_ms),
            Key::LogLevel => toml::Value::String(self.log_level.to_string()),
            Key::Rank => count(self.rank?),
            Key::Servers => count(self.servers?),
            Key::LocalRank => count(self.local_rank?),
            Key::LocalServers => count(self.local_servers?),
            Key::Numa => toml::Value::Boolean(self.numa),
        };
        Some(value)
    }
}

impl fmt::Display for ServerConfig {
    /// Same text as [`ServerConfig::to_toml`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_toml())
    }
}

fn size_value(bytes: u64) -> toml::Value {
    match bytes {
        0 => toml::Value::Integer(0),
        _ => toml::Value::String(format_size(bytes)),
    }
}

fn millis_value(ms: u64) -> toml::Value {
    i64::try_from(ms).map_or_else(
        |_| toml::Value::String(ms.to_string()),
        toml::Value::Integer,
    )
}

/// Renders every key with its documentation, variable, flag and default as a commented
/// TOML file: uncommenting a line sets that key to its default (or, for keys without one,
/// to an example value).
pub fn default_config_toml() -> String {
    let defaults = ServerConfig::new("", "");
    let mut out = String::from(
        "# benchfsd configuration.\n\
         # Precedence: built-in defaults < this file < BENCHFS_<KEY> environment variables\n\
         # < command-line flags. Sizes are integers (bytes) or strings with a binary unit:\n\
         # \"4096\", \"64k\", \"4m\", \"4MiB\", \"1g\".\n",
    );
    for key in Key::all() {
        out.push('\n');
        for line in key.spec().doc.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&format!(
            "# environment: {}, flag: {}\n",
            key.env_var(),
            key.flag()
        ));
        let value = key.spec().example.map(str::to_owned);
        if let Some(value) = value.or_else(|| defaults.value_of(key).map(|v| v.to_string())) {
            out.push_str(&format!("# {} = {value}\n", key.name()));
        }
    }
    out
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The TOML file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// This command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path} (named by {origin}): {error}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The flag or variable that named it.
        origin: Origin,
        /// The failure.
        #[source]
        error: std::io::Error,
    },
    /// The configuration file is not valid TOML, has an unknown key, or a value of the
    /// wrong type; the message names the key and shows the line.
    #[error("invalid configuration file {path}: {error}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        #[source]
        error: Box<toml::de::Error>,
    },
    /// A `BENCHFS_` variable that is neither a key nor a known client-side name.
    #[error("unknown environment variable {name}{}", did_you_mean(.suggestion))]
    UnknownEnv {
        /// The variable.
        name: String,
        /// The closest known variable, if one is close.
        suggestion: Option<String>,
    },
    /// A `BENCHFS_` variable whose value is not valid Unicode.
    #[error("environment variable {name} is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        name: String,
    },
    /// An environment value that does not parse as the key's type.
    #[error("invalid value {value:?} for {key} (from {origin}): {reason}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value that parses but is out of its allowed range.
    #[error("{key} = {value} (from {origin}) is invalid: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// The value, as it would be written in the file.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A required key that no layer sets.
    #[error(
        "{key} is required: set it in the configuration file, with {env} or with {flag}{hint}"
    )]
    Missing {
        /// The key.
        key: &'static str,
        /// Its environment variable.
        env: String,
        /// Its flag.
        flag: &'static str,
        /// Extra advice, empty or starting with "; ".
        hint: String,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(name) => format!("; did you mean {name}?"),
        None => String::new(),
    }
}

/// Loads the configuration from `args`, the environment seen through `env`, and the file
/// these name; `env_keys` lists every environment variable name, to find unknown
/// `BENCHFS_` variables. See the module documentation for precedence and rules.
pub fn load(
    args: &ServerArgs,
    env: impl Fn(&str) -> Option<String>,
    env_keys: impl Iterator<Item = String>,
) -> Result<ServerConfig, ConfigError> {
    check_env_names(env_keys)?;
    let (file, file_path) = match config_path(args, &env) {
        Some((path, origin)) => (read_file(&path, origin)?, Some(path)),
        None => (Layer::default(), None),
    };
    let layers = Layers {
        flags: Layer::from_args(args),
        env: Layer::from_env(&env)?,
        file,
        file_path,
        client_registry_set: env("BENCHFS_REGISTRY").is_some(),
    };
    layers.resolve()
}

/// [`load`] over this process's environment.
pub fn load_from_process(args: &ServerArgs) -> Result<ServerConfig, ConfigError> {
    let names: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    for name in names.iter().filter(|name| name.starts_with(ENV_PREFIX)) {
        if std::env::var(name).is_err() {
            return Err(ConfigError::NotUnicode { name: name.clone() });
        }
    }
    load(args, |name| std::env::var(name).ok(), names.into_iter())
}

/// The file to read and what named it: `--config`, else `BENCHFS_CONFIG`.
fn config_path(
    args: &ServerArgs,
    env: &impl Fn(&str) -> Option<String>,
) -> Option<(PathBuf, Origin)> {
    if let Some(path) = &args.config {
        return Some((path.clone(), Origin::Flag("--config")));
    }
    env(CONFIG_ENV).map(|path| (PathBuf::from(path), Origin::Env(CONFIG_ENV.to_owned())))
}

fn read_file(path: &Path, origin: Origin) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::ReadFile {
        path: path.to_owned(),
        origin,
        error,
    })?;
    toml::from_str(&text).map_err(|error| ConfigError::ParseFile {
        path: path.to_owned(),
        error: Box::new(error),
    })
}
