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

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use thiserror::Error;

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
];
/// Prefix of variables reserved for tests; the daemon ignores them.
pub const TEST_ENV_PREFIX: &str = "BENCHFS_TEST_";

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

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

/// Why a size does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SizeError {
    /// Nothing but blanks.
    #[error("empty size")]
    Empty,
    /// A leading minus sign.
    #[error("sizes cannot be negative")]
    Negative,
    /// No digits before the unit, a sign, or a fraction.
    #[error("invalid size {0:?}: expected an unsigned whole number with an optional unit")]
    NotANumber(String),
    /// A unit that is not a binary unit.
    #[error("unknown size unit {0:?}: use k/KiB, m/MiB, g/GiB or t/TiB (binary)")]
    UnknownUnit(String),
    /// Larger than `u64`.
    #[error("size {0:?} is too large")]
    Overflow(String),
}

/// Parses a size in bytes: a decimal number with an optional binary unit (see the module
/// documentation), such as `"4096"`, `"64k"`, `"4M"` or `"4MiB"`.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SizeError::Empty);
    }
    if text.starts_with('-') {
        return Err(SizeError::Negative);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let unit = unit.trim_start();
    if digits.is_empty() || unit.starts_with(['.', ',', '_']) {
        return Err(SizeError::NotANumber(text.to_owned()));
    }
    let multiplier =
        unit_multiplier(unit).ok_or_else(|| SizeError::UnknownUnit(unit.to_owned()))?;
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| SizeError::Overflow(text.to_owned()))
}

fn unit_multiplier(unit: &str) -> Option<u64> {
    let unit = unit.to_ascii_lowercase();
    let multiplier = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        "t" | "tib" => TIB,
        _ => return None,
    };
    Some(multiplier)
}

/// Formats a byte count with the largest binary unit that divides it exactly, such as
/// `4MiB`; a count that no unit divides is plain digits. [`parse_size`] reads it back.
pub fn format_size(bytes: u64) -> String {
    [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")]
        .into_iter()
        .find(|&(unit, _)| bytes != 0 && bytes % unit == 0)
        .map_or_else(
            || bytes.to_string(),
            |(unit, name)| format!("{}{name}", bytes / unit),
        )
}

/// A size as written in the TOML file: an integer or a string with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteSize(u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size in bytes: an integer, or a string such as \"4MiB\"")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<ByteSize, E> {
        u64::try_from(value)
            .map(ByteSize)
            .map_err(|_| E::custom(SizeError::Negative))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<ByteSize, E> {
        parse_size(value).map(ByteSize).map_err(E::custom)
    }
}

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

/// Fails on the first (in sorted order) `BENCHFS_` variable that the daemon does not know.
fn check_env_names(names: impl Iterator<Item = String>) -> Result<(), ConfigError> {
    let mut unknown: Vec<String> = names.filter(|name| is_unknown_env(name)).collect();
    unknown.sort();
    match unknown.into_iter().next() {
        Some(name) => Err(ConfigError::UnknownEnv {
            suggestion: suggest_env(&name),
            name,
        }),
        None => Ok(()),
    }
}

fn is_unknown_env(name: &str) -> bool {
    name.starts_with(ENV_PREFIX)
        && !name.starts_with(TEST_ENV_PREFIX)
        && name != CONFIG_ENV
        && !CLIENT_ENV_VARS.contains(&name)
        && !Key::all().any(|key| key.env_var() == name)
}

/// The known variable closest to `name`: one with the same stem once unit words are
/// dropped (`CHUNK_SIZE` for `CHUNK_SIZE_BYTES`), else one within a small edit distance.
fn suggest_env(name: &str) -> Option<String> {
    let mut known: Vec<String> = Key::all().map(Key::env_var).collect();
    known.push(CONFIG_ENV.to_owned());
    known.extend(CLIENT_ENV_VARS.iter().map(|&var| var.to_owned()));
    let stem_of = |var: &str| stem(&var[ENV_PREFIX.len()..]).to_owned();
    let wanted = stem_of(name);
    if let Some(same) = known.iter().find(|var| stem_of(var) == wanted) {
        return Some(same.clone());
    }
    known
        .into_iter()
        .map(|var| (edit_distance(&var, name), var))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, var)| var)
}

/// `name` without trailing unit words such as `_BYTES`, `_SIZE` and `_MS`.
fn stem(mut name: &str) -> &str {
    while let Some(shorter) = ["_BYTES", "_SIZE", "_MS"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
    {
        name = shorter;
    }
    name
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.as_bytes().iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let replace = previous[j] + usize::from(ca != cb);
            current.push(replace.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The configuration keys, in the order they are documented and printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
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
struct KeySpec {
    key: Key,
    /// Name in the TOML file; the environment variable is derived from it.
    name: &'static str,
    flag: &'static str,
    doc: &'static str,
    /// Example value for keys without a default.
    example: Option<&'static str>,
}

/// Every key, in [`Key`] order, which is the order they are documented and printed.
const KEYS: [KeySpec; 16] = [
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
    fn all() -> impl Iterator<Item = Key> {
        KEYS.iter().map(|spec| spec.key)
    }

    fn spec(self) -> &'static KeySpec {
        &KEYS[self as usize]
    }

    fn name(self) -> &'static str {
        self.spec().name
    }

    fn flag(self) -> &'static str {
        self.spec().flag
    }

    fn env_var(self) -> String {
        format!("{ENV_PREFIX}{}", self.name().to_ascii_uppercase())
    }
}

/// The keys one layer sets; the file is deserialized straight into it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    registry_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    chunk_size_bytes: Option<ByteSize>,
    slab_bytes: Option<ByteSize>,
    shards_per_numa: Option<u32>,
    shards: Option<u32>,
    eager_threshold_bytes: Option<ByteSize>,
    queue_depth: Option<u32>,
    request_timeout_ms: Option<u64>,
    shutdown_timeout_ms: Option<u64>,
    log_level: Option<LogLevel>,
    rank: Option<u32>,
    servers: Option<u32>,
    local_rank: Option<u32>,
    local_servers: Option<u32>,
    numa: Option<bool>,
}

impl Layer {
    fn from_args(args: &ServerArgs) -> Layer {
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

    fn from_env(env: &impl Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
        let mut layer = Layer::default();
        for key in Key::all() {
            let var = key.env_var();
            if let Some(value) = env(&var) {
                layer
                    .set_text(key, &value)
                    .map_err(|reason| ConfigError::BadValue {
                        key: key.name(),
                        origin: Origin::Env(var),
                        value,
                        reason,
                    })?;
            }
        }
        Ok(layer)
    }

    /// Sets `key` from its text form, as found in the environment.
    fn set_text(&mut self, key: Key, text: &str) -> Result<(), String> {
        if text.is_empty() {
            return Err("empty value".to_owned());
        }
        let size = || parse_size(text).map(ByteSize).map_err(|e| e.to_string());
        match key {
            Key::RegistryDir => self.registry_dir = Some(PathBuf::from(text)),
            Key::DataDir => self.data_dir = Some(PathBuf::from(text)),
            Key::ChunkSizeBytes => self.chunk_size_bytes = Some(size()?),
            Key::SlabBytes => self.slab_bytes = Some(size()?),
            Key::ShardsPerNuma => self.shards_per_numa = Some(parse_number(text)?),
            Key::Shards => self.shards = Some(parse_number(text)?),
            Key::EagerThresholdBytes => self.eager_threshold_bytes = Some(size()?),
            Key::QueueDepth => self.queue_depth = Some(parse_number(text)?),
            Key::RequestTimeoutMs => self.request_timeout_ms = Some(parse_number(text)?),
            Key::ShutdownTimeoutMs => self.shutdown_timeout_ms = Some(parse_number(text)?),
            Key::LogLevel => self.log_level = Some(text.parse()?),
            Key::Rank => self.rank = Some(parse_number(text)?),
            Key::Servers => self.servers = Some(parse_number(text)?),
            Key::LocalRank => self.local_rank = Some(parse_number(text)?),
            Key::LocalServers => self.local_servers = Some(parse_number(text)?),
            Key::Numa => self.numa = Some(parse_bool(text)?),
        }
        Ok(())
    }

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

/// A plain decimal number: no sign, no blanks, no unit.
fn parse_number<T: FromStr>(text: &str) -> Result<T, String> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a non-negative whole number".to_owned());
    }
    text.parse().map_err(|_| "number too large".to_owned())
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false (also 1/0, yes/no, on/off)".to_owned()),
    }
}

/// The three layers, highest precedence first in lookups.
#[derive(Debug)]
struct Layers {
    flags: Layer,
    env: Layer,
    file: Layer,
    file_path: Option<PathBuf>,
    client_registry_set: bool,
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

    fn resolve(&self) -> Result<ServerConfig, ConfigError> {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    fn args_with_dirs() -> ServerArgs {
        ServerArgs {
            registry_dir: Some("/reg".into()),
            data_dir: Some("/data".into()),
            ..ServerArgs::default()
        }
    }

    fn load_with(args: &ServerArgs, env: &[(&str, &str)]) -> Result<ServerConfig, ConfigError> {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let names: Vec<String> = map.keys().cloned().collect();
        load(args, |name| map.get(name).cloned(), names.into_iter())
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn with_file(file: &tempfile::NamedTempFile) -> ServerArgs {
        ServerArgs {
            config: Some(file.path().to_owned()),
            ..ServerArgs::default()
        }
    }

    fn invalid(err: ConfigError) -> (&'static str, Origin, String) {
        match err {
            ConfigError::Invalid {
                key,
                origin,
                reason,
                ..
            } => (key, origin, reason),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let config = load_with(&args_with_dirs(), &[]).unwrap();
        assert_eq!(config, ServerConfig::new("/reg", "/data"));
        assert_eq!(config.chunk_size_bytes, 4 << 20);
        assert_eq!(config.slab_bytes, 64 << 20);
        assert_eq!(config.shards_per_numa, 1);
        assert_eq!(config.shards, None);
        assert_eq!(config.eager_threshold_bytes, 16 << 10);
        assert_eq!(config.queue_depth, 256);
        assert_eq!(config.request_timeout(), Duration::from_secs(30));
        assert_eq!(config.shutdown_timeout(), Duration::from_secs(10));
        assert_eq!(config.log_level, LogLevel::Info);
        assert_eq!((config.rank, config.servers), (None, None));
        assert_eq!((config.local_rank, config.local_servers), (None, None));
        assert!(config.numa);
    }

    #[test]
    fn file_overrides_defaults() {
        let file = toml_file(
            "registry_dir = \"/f/reg\"\ndata_dir = \"/f/data\"\nchunk_size_bytes = \"1MiB\"\n\
             slab_bytes = 8388608\nshards = 6\nlog_level = \"WARN\"\nnuma = false\n",
        );
        let config = load_with(&with_file(&file), &[]).unwrap();
        assert_eq!(config.registry_dir, PathBuf::from("/f/reg"));
        assert_eq!(config.chunk_size_bytes, 1 << 20);
        assert_eq!(config.slab_bytes, 8 << 20);
        assert_eq!(config.shards, Some(6));
        assert_eq!(config.log_level, LogLevel::Warn);
        assert!(!config.numa);
        assert_eq!(config.queue_depth, DEFAULT_QUEUE_DEPTH);
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let file = toml_file(
            "registry_dir = \"/f/reg\"\ndata_dir = \"/f/data\"\nqueue_depth = 10\n\
             request_timeout_ms = 11\nshutdown_timeout_ms = 12\n",
        );
        let env = [
            ("BENCHFS_DATA_DIR", "/e/data"),
            ("BENCHFS_REQUEST_TIMEOUT_MS", "21"),
            ("BENCHFS_SHUTDOWN_TIMEOUT_MS", "22"),
            ("BENCHFS_NUMA", "on"),
        ];
        let mut args = with_file(&file);
        args.shutdown_timeout_ms = Some(32);
        args.no_numa = true;
        let config = load_with(&args, &env).unwrap();
        assert_eq!(config.registry_dir, PathBuf::from("/f/reg"));
        assert_eq!(config.data_dir, PathBuf::from("/e/data"));
        assert_eq!(config.queue_depth, 10);
        assert_eq!(config.request_timeout_ms, 21);
        assert_eq!(config.shutdown_timeout_ms, 32);
        assert!(!config.numa);
    }

    #[test]
    fn config_file_from_env_and_flag_wins() {
        let from_env = toml_file("registry_dir = \"/env-file\"\ndata_dir = \"/d\"\n");
        let from_flag = toml_file("registry_dir = \"/flag-file\"\ndata_dir = \"/d\"\n");
        let env_path = from_env.path().to_str().unwrap();
        let env = [("BENCHFS_CONFIG", env_path)];
        let config = load_with(&ServerArgs::default(), &env).unwrap();
        assert_eq!(config.registry_dir, PathBuf::from("/env-file"));
        let config = load_with(&with_file(&from_flag), &env).unwrap();
        assert_eq!(config.registry_dir, PathBuf::from("/flag-file"));
    }

    #[test]
    fn missing_file_names_path_and_origin() {
        let env = [("BENCHFS_CONFIG", "/nonexistent/benchfs.toml")];
        let err = load_with(&args_with_dirs(), &env).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::ReadFile { .. }), "{err:?}");
        assert!(text.contains("/nonexistent/benchfs.toml"), "{text}");
        assert!(text.contains("BENCHFS_CONFIG"), "{text}");
    }

    #[test]
    fn unknown_toml_key_names_key_and_path() {
        let file = toml_file("registry_dir = \"/r\"\nchunk_size = \"4m\"\n");
        let err = load_with(&with_file(&file), &[]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::ParseFile { .. }), "{err:?}");
        assert!(text.contains("chunk_size"), "{text}");
        assert!(text.contains(file.path().to_str().unwrap()), "{text}");
    }

    #[test]
    fn bad_toml_values_name_key_and_path() {
        for line in [
            "chunk_size_bytes = \"4x\"",
            "chunk_size_bytes = -1",
            "chunk_size_bytes = 1.5",
            "queue_depth = -3",
            "log_level = \"loud\"",
            "numa = \"yes\"",
        ] {
            let file = toml_file(&format!("data_dir = \"/d\"\n{line}\n"));
            let err = load_with(&with_file(&file), &[]).unwrap_err();
            let text = err.to_string();
            let key = line.split(' ').next().unwrap();
            assert!(text.contains(key), "{line}: {text}");
            assert!(
                text.contains(file.path().to_str().unwrap()),
                "{line}: {text}"
            );
        }
    }

    #[test]
    fn misspelled_env_var_gets_a_hint() {
        let cases = [
            ("BENCHFS_CHUNK_SIZE", Some("BENCHFS_CHUNK_SIZE_BYTES")),
            ("BENCHFS_SLAB_SIZE", Some("BENCHFS_SLAB_BYTES")),
            (
                "BENCHFS_REQUEST_TIMEOUT",
                Some("BENCHFS_REQUEST_TIMEOUT_MS"),
            ),
            ("BENCHFS_DATADIR", Some("BENCHFS_DATA_DIR")),
            ("BENCHFS_LOGLEVEL", Some("BENCHFS_LOG_LEVEL")),
            ("BENCHFS_SERVER", Some("BENCHFS_SERVERS")),
            ("BENCHFS_SERVERS_EXPECTD", Some("BENCHFS_SERVERS_EXPECTED")),
            ("BENCHFS_COLOUR", None),
        ];
        for (name, hint) in cases {
            let err = load_with(&args_with_dirs(), &[(name, "1")]).unwrap_err();
            match &err {
                ConfigError::UnknownEnv {
                    name: got,
                    suggestion,
                } => {
                    assert_eq!(got, name);
                    assert_eq!(suggestion.as_deref(), hint, "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        let err = load_with(&args_with_dirs(), &[("BENCHFS_CHUNK_SIZE", "4m")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown environment variable BENCHFS_CHUNK_SIZE; \
             did you mean BENCHFS_CHUNK_SIZE_BYTES?"
        );
    }

    #[test]
    fn known_and_foreign_env_vars_are_accepted() {
        let env = [
            ("BENCHFS_REGISTRY", "/client/reg"),
            ("BENCHFS_SERVERS_EXPECTED", "4"),
            ("BENCHFS_TIMEOUT_MS", "5"),
            ("BENCHFS_LOG", "debug"),
            ("BENCHFS_TEST_ANYTHING", "x"),
            ("benchfs_chunk_size", "x"),
            ("HOME", "/root"),
        ];
        assert_eq!(
            load_with(&args_with_dirs(), &env).unwrap(),
            ServerConfig::new("/reg", "/data")
        );
    }

    #[test]
    fn every_key_has_an_env_var() {
        let env = [
            ("BENCHFS_REGISTRY_DIR", "/r"),
            ("BENCHFS_DATA_DIR", "/d"),
            ("BENCHFS_CHUNK_SIZE_BYTES", "64k"),
            ("BENCHFS_SLAB_BYTES", "1m"),
            ("BENCHFS_SHARDS_PER_NUMA", "2"),
            ("BENCHFS_SHARDS", "3"),
            ("BENCHFS_EAGER_THRESHOLD_BYTES", "4096"),
            ("BENCHFS_QUEUE_DEPTH", "5"),
            ("BENCHFS_REQUEST_TIMEOUT_MS", "6"),
            ("BENCHFS_SHUTDOWN_TIMEOUT_MS", "7"),
            ("BENCHFS_LOG_LEVEL", "Debug"),
            ("BENCHFS_RANK", "1"),
            ("BENCHFS_SERVERS", "9"),
            ("BENCHFS_LOCAL_RANK", "0"),
            ("BENCHFS_LOCAL_SERVERS", "2"),
            ("BENCHFS_NUMA", "false"),
        ];
        assert_eq!(env.len(), KEYS.len());
        let config = load_with(&ServerArgs::default(), &env).unwrap();
        let expected = ServerConfig {
            chunk_size_bytes: 64 << 10,
            slab_bytes: 1 << 20,
            shards_per_numa: 2,
            shards: Some(3),
            eager_threshold_bytes: 4096,
            queue_depth: 5,
            request_timeout_ms: 6,
            shutdown_timeout_ms: 7,
            log_level: LogLevel::Debug,
            rank: Some(1),
            servers: Some(9),
            local_rank: Some(0),
            local_servers: Some(2),
            numa: false,
            ..ServerConfig::new("/r", "/d")
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn bad_env_values_name_variable() {
        for (var, value) in [
            ("BENCHFS_QUEUE_DEPTH", "abc"),
            ("BENCHFS_QUEUE_DEPTH", "-1"),
            ("BENCHFS_QUEUE_DEPTH", "4294967296"),
            ("BENCHFS_CHUNK_SIZE_BYTES", "4x"),
            ("BENCHFS_NUMA", "maybe"),
            ("BENCHFS_LOG_LEVEL", "trace"),
            ("BENCHFS_DATA_DIR", ""),
        ] {
            let err = load_with(&args_with_dirs(), &[(var, value)]).unwrap_err();
            match &err {
                ConfigError::BadValue {
                    origin, value: got, ..
                } => {
                    assert_eq!(origin, &Origin::Env(var.to_owned()));
                    assert_eq!(got, value);
                }
                other => panic!("{var}={value}: {other:?}"),
            }
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn size_parsing() {
        let good = [
            ("4096", 4096),
            ("0", 0),
            ("64k", 64 << 10),
            ("64K", 64 << 10),
            ("64KiB", 64 << 10),
            ("4m", 4 << 20),
            ("4M", 4 << 20),
            ("4MiB", 4 << 20),
            ("4mib", 4 << 20),
            ("4 MiB", 4 << 20),
            (" 1g ", 1 << 30),
            ("1G", 1 << 30),
            ("2t", 2 << 40),
            ("512b", 512),
            ("18446744073709551615", u64::MAX),
        ];
        for (text, bytes) in good {
            assert_eq!(parse_size(text), Ok(bytes), "{text:?}");
        }
        let bad = [
            ("", SizeError::Empty),
            ("   ", SizeError::Empty),
            ("-1", SizeError::Negative),
            ("4x", SizeError::UnknownUnit("x".into())),
            ("4MB", SizeError::UnknownUnit("MB".into())),
            ("4kb", SizeError::UnknownUnit("kb".into())),
            ("m", SizeError::NotANumber("m".into())),
            ("+4", SizeError::NotANumber("+4".into())),
            ("1.5m", SizeError::NotANumber("1.5m".into())),
            ("4_096", SizeError::NotANumber("4_096".into())),
            (
                "18446744073709551616",
                SizeError::Overflow("18446744073709551616".into()),
            ),
            ("16777216T", SizeError::Overflow("16777216T".into())),
        ];
        for (text, err) in bad {
            assert_eq!(parse_size(text), Err(err), "{text:?}");
        }
    }

    #[test]
    fn size_formatting_round_trips() {
        for bytes in [
            0,
            1,
            4095,
            4096,
            4 << 20,
            3 << 30,
            5 << 40,
            (1 << 20) + 4096,
            u64::MAX,
        ] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{bytes}");
        }
        assert_eq!(format_size(4 << 20), "4MiB");
        assert_eq!(format_size((1 << 20) + 4096), "1028KiB");
        assert_eq!(format_size(4097), "4097");
    }

    #[test]
    fn validation_names_key_and_origin() {
        let (key, origin, reason) = invalid(
            load_with(&args_with_dirs(), &[("BENCHFS_CHUNK_SIZE_BYTES", "5000")]).unwrap_err(),
        );
        assert_eq!(key, "chunk_size_bytes");
        assert_eq!(origin, Origin::Env("BENCHFS_CHUNK_SIZE_BYTES".into()));
        assert!(reason.contains("multiple of 4KiB"), "{reason}");

        let file = toml_file("registry_dir = \"/r\"\ndata_dir = \"/d\"\nslab_bytes = \"1m\"\n");
        let err = load_with(&with_file(&file), &[]).unwrap_err();
        let text = err.to_string();
        let (key, origin, reason) = invalid(err);
        assert_eq!(
            (key, origin),
            ("slab_bytes", Origin::File(file.path().to_owned()))
        );
        assert!(reason.contains("at least one chunk"), "{reason}");
        assert!(text.contains(file.path().to_str().unwrap()), "{text}");

        let mut args = args_with_dirs();
        args.slab_size = Some(6 << 20);
        let err = load_with(&args, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "slab_bytes = \"6MiB\" (from flag --slab-size) is invalid: \
             must be a multiple of chunk_size_bytes (4MiB)"
        );
    }

    #[test]
    fn validation_rules() {
        type Edit = fn(&mut ServerArgs);
        let cases: [(Edit, &str); 14] = [
            (|a| a.chunk_size = Some(0), "chunk_size_bytes"),
            (|a| a.chunk_size = Some(2 << 30), "chunk_size_bytes"),
            (|a| a.chunk_size = Some(6144), "chunk_size_bytes"),
            (|a| a.slab_size = Some(2 << 40), "slab_bytes"),
            (
                |a| a.eager_threshold = Some(8 << 20),
                "eager_threshold_bytes",
            ),
            (|a| a.shards_per_numa = Some(0), "shards_per_numa"),
            (|a| a.shards = Some(0), "shards"),
            (|a| a.queue_depth = Some(0), "queue_depth"),
            (|a| a.request_timeout_ms = Some(0), "request_timeout_ms"),
            (
                |a| a.shutdown_timeout_ms = Some(MAX_TIMEOUT_MS + 1),
                "shutdown_timeout_ms",
            ),
            (|a| a.rank = Some(4), "rank"),
            (|a| a.local_rank = Some(2), "local_rank"),
            (|a| a.local_servers = Some(5), "local_servers"),
            (|a| a.data_dir = Some(PathBuf::new()), "data_dir"),
        ];
        for (edit, expected) in cases {
            let mut args = args_with_dirs();
            args.servers = Some(4);
            args.local_servers = Some(2);
            edit(&mut args);
            let (key, origin, _) = invalid(load_with(&args, &[]).unwrap_err());
            assert_eq!(key, expected);
            assert!(matches!(origin, Origin::Flag(_)), "{origin:?}");
        }
    }

    #[test]
    fn valid_edges_are_accepted() {
        let mut args = args_with_dirs();
        args.chunk_size = Some(4096);
        args.slab_size = Some(4096);
        args.eager_threshold = Some(0);
        args.rank = Some(3);
        args.servers = Some(4);
        args.local_rank = Some(3);
        args.local_servers = Some(4);
        args.request_timeout_ms = Some(MAX_TIMEOUT_MS);
        assert!(load_with(&args, &[]).is_ok());
        args.chunk_size = Some(1 << 30);
        args.slab_size = Some(1 << 40);
        assert!(load_with(&args, &[]).is_ok());
    }

    #[test]
    fn missing_required_dirs() {
        let err = load_with(&ServerArgs::default(), &[("BENCHFS_DATA_DIR", "/d")]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Missing {
                    key: "registry_dir",
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("BENCHFS_REGISTRY_DIR") && text.contains("--registry-dir"));

        let env = [("BENCHFS_REGISTRY_DIR", "/r")];
        let err = load_with(&ServerArgs::default(), &env).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Missing {
                    key: "data_dir",
                    ..
                }
            ),
            "{err:?}"
        );

        let env = [("BENCHFS_REGISTRY", "/r"), ("BENCHFS_DATA_DIR", "/d")];
        let err = load_with(&ServerArgs::default(), &env).unwrap_err();
        assert!(err.to_string().contains("BENCHFS_REGISTRY is set"), "{err}");
    }

    #[test]
    fn flags_parse_with_clap() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "benchfsd",
            "--registry-dir=/r",
            "--data-dir",
            "/d",
            "--chunk-size",
            "8m",
            "--slab-size=128MiB",
            "--eager-threshold",
            "4096",
            "--log-level",
            "DEBUG",
            "--servers",
            "2",
            "--no-numa",
        ])
        .unwrap();
        let config = load_with(&cli.server, &[]).unwrap();
        assert_eq!(config.chunk_size_bytes, 8 << 20);
        assert_eq!(config.slab_bytes, 128 << 20);
        assert_eq!(config.eager_threshold_bytes, 4096);
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(config.servers, Some(2));
        assert!(!config.numa);

        let err = Cli::try_parse_from(["benchfsd", "--chunk-size", "4x"]).unwrap_err();
        assert!(err.to_string().contains("--chunk-size"), "{err}");
    }

    #[test]
    fn to_toml_round_trips() {
        let config = ServerConfig {
            chunk_size_bytes: 1 << 20,
            slab_bytes: (1 << 20) * 3,
            shards: Some(5),
            eager_threshold_bytes: 0,
            log_level: LogLevel::Error,
            rank: Some(2),
            servers: Some(3),
            numa: false,
            ..ServerConfig::new("/r e g", "/d\"quoted\"")
        };
        let text = config.to_toml();
        assert!(text.contains("chunk_size_bytes = \"1MiB\"\n"), "{text}");
        assert!(!text.contains("local_rank"), "{text}");
        assert_eq!(text, config.to_string());
        let file = toml_file(&text);
        assert_eq!(load_with(&with_file(&file), &[]).unwrap(), config);
    }

    #[test]
    fn documented_defaults_load_back() {
        let doc = default_config_toml();
        let uncommented: String = doc
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| Key::all().any(|key| line.starts_with(&format!("{} = ", key.name()))))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(uncommented.lines().count(), KEYS.len(), "{doc}");
        let file = toml_file(&uncommented);
        let config = load_with(&with_file(&file), &[]).unwrap();
        let expected = ServerConfig {
            shards: Some(8),
            rank: Some(0),
            servers: Some(4),
            local_rank: Some(0),
            local_servers: Some(1),
            ..ServerConfig::new("/shared/benchfs/registry", "/local/benchfs/data")
        };
        assert_eq!(config, expected);
        assert!(doc.contains("# chunk_size_bytes = \"4MiB\"\n"), "{doc}");
        let line = "environment: BENCHFS_EAGER_THRESHOLD_BYTES, flag: --eager-threshold";
        assert!(doc.contains(line), "{doc}");
    }

    #[test]
    fn key_table_matches_key_order() {
        for (index, spec) in KEYS.iter().enumerate() {
            assert_eq!(spec.key as usize, index, "{}", spec.name);
        }
    }

    #[test]
    fn log_level_names() {
        for level in [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
        ] {
            assert_eq!(level.as_str().parse::<LogLevel>(), Ok(level));
            assert_eq!(
                level.to_string().to_uppercase().parse::<LogLevel>(),
                Ok(level)
            );
        }
        assert!("verbose".parse::<LogLevel>().is_err());
    }
}
