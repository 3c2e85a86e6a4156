//! Sizes in bytes: [`parse_size`] reads a number with an optional binary unit, [`format_size`]
//! writes one back, and `ByteSize` accepts either an integer or such a string in the file.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use thiserror::Error;

pub(super) const KIB: u64 = 1 << 10;
pub(super) const MIB: u64 = 1 << 20;
pub(super) const GIB: u64 = 1 << 30;
pub(super) const TIB: u64 = 1 << 40;

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

/// Parses a size in bytes: a decimal number with an optional binary unit (see the
/// [module documentation](crate::config)), such as `"4096"`, `"64k"`, `"4M"` or `"4MiB"`.
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
pub(super) struct ByteSize(pub(super) u64);

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
