//! Unclean-boot detection (design §3): boot records, the previous boot's journal, the clock.
//!
//! INTERFACE CONTRACT (used by status, the planner and the agent; keep these names):
//! `BootOptions`, `BootFacts { boot_id, boot_time, uptime_secs, verdict, history, .. }`,
//! `BootVerdict { verdict, summary, evidence, .. }`, `Verdict`, `gather`, `record_start`,
//! `record_stop`, `render_table`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::evidence::Gathered;

/// Where boot evidence is read from.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// vmrecover's persistent state directory (boot records).
    pub state_dir: PathBuf,
    /// Journal directory for `journalctl -D`; `None` for the system journal.
    pub journal_dir: Option<PathBuf>,
    /// How many entries of the previous boot's tail to read.
    pub journal_tail: usize,
    /// The host's root filesystem (for /proc files when run in a pod).
    pub host_root: PathBuf,
}

/// The three verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The previous boot ended without a clean shutdown.
    Unclean,
    /// The previous boot shut down cleanly.
    Clean,
    /// The evidence does not say.
    Unknown,
}

/// The verdict and what it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootVerdict {
    /// The verdict.
    pub verdict: Verdict,
    /// One sentence saying why.
    pub summary: String,
}

/// Everything gathered about this boot and the previous one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootFacts {
    /// This boot's id, 32 lowercase hex digits without dashes.
    pub boot_id: Gathered<String>,
    /// When this boot started (now − CLOCK_BOOTTIME).
    pub boot_time: Gathered<jiff::Timestamp>,
    /// Seconds since boot.
    pub uptime_secs: Gathered<u64>,
    /// The unclean-shutdown verdict.
    pub verdict: BootVerdict,
}

/// Gathers boot facts; never fails: unreadable sources become `Unreadable` evidence.
pub fn gather(opts: &BootOptions, now: jiff::Timestamp) -> BootFacts {
    let _ = (opts, now);
    BootFacts {
        boot_id: Gathered::unreadable("boot detection", "not built yet"),
        boot_time: Gathered::unreadable("boot detection", "not built yet"),
        uptime_secs: Gathered::unreadable("boot detection", "not built yet"),
        verdict: BootVerdict {
            verdict: Verdict::Unknown,
            summary: "boot detection is not built yet".into(),
        },
    }
}

/// Records the current boot as running. Returns a line for the operator.
pub fn record_start(state_dir: &Path, host_root: &Path) -> anyhow::Result<String> {
    let _ = (state_dir, host_root);
    anyhow::bail!("boot records are not built yet")
}

/// Marks the current boot as cleanly stopped. Returns a line for the operator.
pub fn record_stop(state_dir: &Path, host_root: &Path) -> anyhow::Result<String> {
    let _ = (state_dir, host_root);
    anyhow::bail!("boot records are not built yet")
}

/// Writes the boot section of `vmrecover status` as a table.
pub fn render_table(facts: &BootFacts, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "Boot: {:?} — {}",
        facts.verdict.verdict, facts.verdict.summary
    )
}
