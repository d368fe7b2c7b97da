//! Durations as humantime strings ("5m", "2m 30s") in serde formats.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Serializes as e.g. `"2m 30s"`.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Parses e.g. `"90s"` or `"2m 30s"`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(serde::de::Error::custom)
}
