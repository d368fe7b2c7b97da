//! Who runs a session: a person's `vmrecover run` or the agent.

use serde::{Deserialize, Serialize};

/// Who runs a session: part of the Lease holder's identity and of the run report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A person's `vmrecover run`.
    Manual,
    /// The agent.
    Agent,
}

impl Mode {
    /// The word used in the Lease identity and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Manual => "manual",
            Mode::Agent => "agent",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
