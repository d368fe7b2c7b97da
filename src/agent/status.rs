//! The agent's phase, saved in the state directory so `vmrecover status` (run by an
//! operator on the host or with `kubectl exec`) can show what the agent is doing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::boot::Verdict;
use crate::config::ActOn;
use crate::evidence::Gathered;
use crate::state_file::{load_versioned, save_versioned};

/// The agent status file's format version (1: as written before versions, without a
/// `version` key).
pub const STATUS_FORMAT: u32 = 1;

/// The file name under the state directory.
pub const AGENT_STATUS_FILE: &str = "agent-status.json";

/// What the agent is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for the API server (with backoff).
    WaitingForApi,
    /// In the boot window: recovering, and watching VMIs on this node.
    BootWindow,
    /// Reporting only (`--act-on never`, or the verdict does not allow acting).
    Watching,
    /// The boot window is over: nothing more to do until the next boot.
    Idle,
    /// Shutting down.
    Stopped,
}

impl Phase {
    /// All phases, for metrics.
    pub const ALL: [Phase; 5] = [
        Phase::WaitingForApi,
        Phase::BootWindow,
        Phase::Watching,
        Phase::Idle,
        Phase::Stopped,
    ];

    /// The phase's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::WaitingForApi => "waiting_for_api",
            Phase::BootWindow => "boot_window",
            Phase::Watching => "watching",
            Phase::Idle => "idle",
            Phase::Stopped => "stopped",
        }
    }
}

/// The agent's state as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The agent's pid.
    pub pid: u32,
    /// When the agent started.
    pub started: jiff::Timestamp,
    /// The current phase and since when.
    pub phase: Phase,
    /// When the phase began.
    pub since: jiff::Timestamp,
    /// The boot verdict it started with.
    pub verdict: Verdict,
    /// The `--act-on` policy.
    pub act_on: ActOn,
    /// Whether it acts (policy and verdict together).
    pub acting: bool,
    /// When the boot window closes.
    pub window_ends: Option<jiff::Timestamp>,
    /// The last pass: when and a one-line summary.
    pub last_pass: Option<(jiff::Timestamp, String)>,
    /// The last error talking to the API server, if any.
    pub last_error: Option<String>,
    /// The configuration file in force and how its last re-read went.
    #[serde(default)]
    pub config: Option<ConfigStatus>,
}

/// The configuration file as the agent last read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// The file in force (`None`: no file, flags and defaults only).
    pub file: Option<std::path::PathBuf>,
    /// When the configuration in force was read.
    pub loaded: jiff::Timestamp,
    /// Why the last re-read was refused (the configuration in force stayed), if it was.
    pub refused: Option<String>,
}

/// Reads and writes `agent-status.json`.
#[derive(Debug, Clone)]
pub struct AgentStatusFile {
    path: PathBuf,
}

impl AgentStatusFile {
    /// The file under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        AgentStatusFile {
            path: state_dir.join(AGENT_STATUS_FILE),
        }
    }

    /// Saves `status`; a failure is logged, never fatal (status is for people).
    pub fn save(&self, status: &AgentStatus) {
        if let Err(e) = save_versioned(&self.path, "the agent status", STATUS_FORMAT, status) {
            tracing::warn!(
                "cannot save the agent status to {}: {e:#}",
                self.path.display()
            );
        }
    }

    /// The saved status; `None` when no agent ever ran with this state directory.
    pub fn load(&self) -> Gathered<Option<AgentStatus>> {
        load_versioned(&self.path, "agent status", (1, STATUS_FORMAT))
    }
}

/// Whether the process `pid` is alive (so a status file left by a dead agent says so).
pub fn is_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}
