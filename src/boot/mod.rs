//! Unclean-boot detection (docs/architecture.md §3): boot records, the previous boot's journal, the clock.
//!
//! INTERFACE CONTRACT (used by status, the planner and the agent; keep these names):
//! `BootOptions`, `BootFacts { boot_id, boot_time, uptime_secs, verdict, history, .. }`,
//! `BootVerdict { verdict, summary, evidence, .. }`, `Verdict`, `gather`, `record_start`,
//! `record_stop`, `render_table`.
//!
//! One job per file: [`clock`] (boot_id, machine id, uptime, boot time), [`records`] (our
//! boot records and their atomic writes), [`command`] (bounded journalctl runs),
//! [`journal_entry`] (JSON parsing), [`journal`] (the previous boot's tail), [`markers`]
//! (what counts as a clean shutdown), [`hints`] (supporting hints), [`verdict`] (the pure
//! decision and its precedence), [`render`] (the status table).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::evidence::Gathered;

pub mod clock;
pub mod command;
pub mod hints;
pub mod journal;
pub mod journal_entry;
pub mod markers;
pub mod power_cuts;
pub mod records;
pub mod render;
pub mod verdict;

pub use hints::Hint;
pub use journal::{JournalFinding, JournalReport};
pub use power_cuts::{power_cuts, PowerCuts};
pub use records::{BootEnd, BootHistoryEntry, RecordsFinding, RecordsReport};
pub use verdict::{BootVerdict, Evidence, EvidenceSource, Says};

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

/// Everything gathered about this boot and the previous one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootFacts {
    /// This boot's id, 32 lowercase hex digits without dashes.
    pub boot_id: Gathered<String>,
    /// When this boot started (now − CLOCK_BOOTTIME).
    pub boot_time: Gathered<jiff::Timestamp>,
    /// Seconds since boot.
    pub uptime_secs: Gathered<u64>,
    /// This machine's id (`/etc/machine-id`), normalised.
    pub machine_id: Gathered<String>,
    /// The unclean-shutdown verdict with its evidence.
    pub verdict: BootVerdict,
    /// Recent boots of this machine from the boot records, newest first.
    pub history: records::History,
    /// The boot records as read.
    pub records: RecordsReport,
    /// The journal as read.
    pub journal: JournalReport,
    /// Supporting hints of an unclean end.
    pub hints: Vec<Hint>,
    /// Sources of hints that could not be read, and similar remarks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl BootFacts {
    /// When the boot the verdict was made for started: the host root's boot as the boot
    /// records have it (`boot_time`, else when it was recorded running), the same records
    /// `status` shows; only when they do not know that boot, this machine's clock (now −
    /// CLOCK_BOOTTIME). A node whose host root is not this machine's (a test, the demo)
    /// is thus timed from its own boot.
    pub fn verdict_boot_started(&self) -> Option<jiff::Timestamp> {
        let current = self.boot_id.value();
        self.history
            .value()
            .into_iter()
            .flatten()
            .find(|b| Some(&b.boot_id) == current)
            .and_then(|b| b.boot_time.or(b.started_at))
            .or_else(|| self.boot_time.value().copied())
    }
}

/// Gathers boot facts; never fails: unreadable sources become `Unreadable` evidence.
pub fn gather(opts: &BootOptions, now: jiff::Timestamp) -> BootFacts {
    let boot_id = clock::boot_id(&opts.host_root);
    let machine_id = clock::machine_id(&opts.host_root);
    let since = clock::since_boot();
    let uptime_secs = since.clone().map(|d| d.as_secs());
    let boot_time = match since.as_result() {
        Ok(d) => match clock::boot_time(now, *d) {
            Some(t) => Gathered::read(t),
            None => Gathered::unreadable("now − CLOCK_BOOTTIME", "out of the timestamp range"),
        },
        Err(e) => Gathered::unreadable("now − CLOCK_BOOTTIME", e.to_string()),
    };
    let current = boot_id.value().map(String::as_str);
    let (records, history) = records::gather(
        &opts.state_dir,
        current,
        machine_id.value().map(String::as_str),
    );
    let source = journal::JournalSource {
        dir: opts.journal_dir.clone(),
    };
    let journal = journal::gather(
        &source,
        current,
        machine_id.value().map(String::as_str),
        boot_time.value().copied(),
        opts.journal_tail,
    );
    let (hints, notes) = gather_hints(opts, &source, &journal, current, boot_time.value());
    let verdict = verdict::decide(verdict::Inputs {
        records: &records.finding,
        records_notes: &records.notes,
        journal: &journal.finding,
        hints: &hints,
    });
    BootFacts {
        boot_id,
        boot_time,
        uptime_secs,
        machine_id,
        verdict,
        history,
        records,
        journal,
        hints,
        notes,
    }
}

fn gather_hints(
    opts: &BootOptions,
    source: &journal::JournalSource,
    journal: &JournalReport,
    current: Option<&str>,
    boot_time: Option<&jiff::Timestamp>,
) -> (Vec<Hint>, Vec<String>) {
    let mut hints = Vec::new();
    let mut notes = Vec::new();
    let dir = opts
        .journal_dir
        .clone()
        .unwrap_or_else(|| opts.host_root.join("var/log/journal"));
    match boot_time {
        Some(bt) => match hints::renamed_journal_files(&dir, *bt) {
            Ok(h) => hints.extend(h),
            Err(e) => notes.push(format!("*.journal~ files not checked: {e}")),
        },
        None => {
            notes.push("*.journal~ files not checked: this boot's start time is unknown".into())
        }
    }
    match current {
        Some(id) if journal.this_boot_listed => {
            match journal::kernel_head(source, id, opts.journal_tail) {
                Ok(lines) => hints.extend(hints::fs_recovery(&lines)),
                Err(e) => notes.push(format!("this boot's kernel log not read: {e}")),
            }
        }
        _ => notes.push(
            "this boot's kernel log not read: this boot is not in the journal being read".into(),
        ),
    }
    hints.extend(hints::pstore(&opts.host_root));
    (hints, notes)
}

/// Records the current boot as running. Returns a line for the operator.
pub fn record_start(state_dir: &Path, host_root: &Path) -> anyhow::Result<String> {
    records::record_start(state_dir, host_root)
}

/// Marks the current boot as cleanly stopped. Returns a line for the operator.
pub fn record_stop(state_dir: &Path, host_root: &Path) -> anyhow::Result<String> {
    records::record_stop(state_dir, host_root)
}

/// Writes the boot section of `vmrecover status` as a table.
pub fn render_table(facts: &BootFacts, out: &mut dyn Write) -> io::Result<()> {
    render::render(facts, out)
}
