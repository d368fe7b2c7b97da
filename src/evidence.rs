//! Evidence with provenance: what a gatherer read, or a typed statement that it could not.

use serde::{Deserialize, Serialize};

/// A piece of evidence as gathered at the edge: the value, or why it could not be read.
///
/// Gatherers never fall back to a silent default: when a source cannot be read the
/// planner sees `Unreadable` and fails closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Gathered<T> {
    /// The source was read.
    Read {
        /// What was read.
        value: T,
    },
    /// The source could not be read.
    Unreadable {
        /// What was being read (a path, a command, an API resource).
        source: String,
        /// Why it could not be read, in words a person can act on.
        reason: String,
    },
}

/// Why a piece of evidence is missing: what was being read and why it could not be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct Unreadable<'a> {
    /// What was being read (a path, a command, an API resource).
    pub what: &'a str,
    /// Why it could not be read.
    pub reason: &'a str,
}

impl<T> Gathered<T> {
    /// Evidence that was read.
    pub fn read(value: T) -> Self {
        Gathered::Read { value }
    }

    /// Evidence that could not be read from `source` because of `reason`.
    pub fn unreadable(source: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Gathered::Unreadable {
            source: source.into(),
            reason: reason.to_string(),
        }
    }

    /// The value, when it was read.
    pub fn value(&self) -> Option<&T> {
        match self {
            Gathered::Read { value } => Some(value),
            Gathered::Unreadable { .. } => None,
        }
    }

    /// The value, or why it is missing (shown as one line: `source: reason`).
    pub fn as_result(&self) -> Result<&T, Unreadable<'_>> {
        match self {
            Gathered::Read { value } => Ok(value),
            Gathered::Unreadable { source, reason } => Err(Unreadable {
                what: source,
                reason,
            }),
        }
    }

    /// Maps the value, keeping an unreadable source as it is.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Gathered<U> {
        match self {
            Gathered::Read { value } => Gathered::Read { value: f(value) },
            Gathered::Unreadable { source, reason } => Gathered::Unreadable { source, reason },
        }
    }
}
