//! Environment variables: the layer of settings read from `BENCHFS_<KEY>` variables, the
//! parsing of their text, and the check that refuses unknown `BENCHFS_` variables with a
//! suggestion of the name that was probably meant.

use std::path::PathBuf;
use std::str::FromStr;

use super::keys::Key;
use super::layers::Layer;
use super::size::ByteSize;
use super::{
    parse_size, ConfigError, Origin, CLIENT_ENV_VARS, CONFIG_ENV, ENV_PREFIX, TEST_ENV_PREFIX,
};

impl Layer {
    pub(super) fn from_env(env: &impl Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
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

/// Fails on the first (in sorted order) `BENCHFS_` variable that the daemon does not know.
pub(super) fn check_env_names(names: impl Iterator<Item = String>) -> Result<(), ConfigError> {
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
