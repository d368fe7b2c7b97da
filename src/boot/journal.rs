//! The previous boot's journal (docs/architecture.md §3, source 2), read with `journalctl -o json`.
//!
//! Steps: list the boots (`--list-boots -o json`, or the text table from an older
//! journalctl), pick the boot just before this one (matched by boot_id; by journal order
//! when this boot is not in the journal yet or its id is unknown), read only its last N
//! entries (`-b <id> -n N`), and analyse them for clean-shutdown markers
//! ([`super::markers`]). Every journalctl run is bounded in time and output
//! ([`super::command`]). A missing journalctl, an unreadable, corrupt or empty journal, or
//! a journal with one boot becomes `Unreadable` or `NoEvidence` with the reason.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::command::{self, Limits};
use super::journal_entry::{self, JournalEntry, ListedBoot};
use super::markers::{self, TailAnalysis};
use super::records::short_id;

/// The program run.
pub const JOURNALCTL: &str = "journalctl";
/// Deadline for one journalctl run.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Cap on the bytes of one journalctl run's output.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
/// The fields read from each entry (journalctl adds the cursor, timestamps and boot id).
const OUTPUT_FIELDS: &str =
    "MESSAGE,MESSAGE_ID,UNIT,USER_UNIT,SYSLOG_IDENTIFIER,_COMM,_PID,_TRANSPORT,SHUTDOWN,JOB_TYPE,_MACHINE_ID";

/// Where the journal is read from.
#[derive(Debug, Clone)]
pub struct JournalSource {
    /// `-D` directory; `None`: the system journal.
    pub dir: Option<PathBuf>,
}

impl JournalSource {
    /// A short description for evidence lines.
    pub fn describe(&self) -> String {
        match &self.dir {
            Some(d) => format!("journal in {}", d.display()),
            None => "system journal".into(),
        }
    }

    fn args(&self, rest: &[&str]) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(d) = &self.dir {
            args.push("-D".into());
            args.push(d.clone().into_os_string());
        }
        args.push("--no-pager".into());
        args.extend(rest.iter().map(OsString::from));
        args
    }

    /// Runs journalctl with `rest`; `Err` is the reason, ready for evidence.
    fn run(
        &self,
        rest: &[&str],
        max_lines: Option<usize>,
    ) -> Result<command::Output, JournalctlError> {
        let out = command::run(
            JOURNALCTL,
            &self.args(rest),
            Limits {
                timeout: TIMEOUT,
                max_bytes: MAX_OUTPUT_BYTES,
                max_lines,
            },
        )
        .map_err(JournalctlError::Run)?;
        match out.status {
            Some(status) if !status.success() => Err(JournalctlError::Failed {
                args: rest.join(" "),
                status,
                message: first_line(&out.stderr).unwrap_or("no message").to_string(),
            }),
            _ => Ok(out),
        }
    }
}

/// Why journalctl gave no output to read.
#[derive(Debug, thiserror::Error)]
pub enum JournalctlError {
    /// It could not be run, or ran out of time.
    #[error("{bin} {0}", bin = JOURNALCTL)]
    Run(command::RunError),
    /// It exited with an error.
    #[error("{bin} {args} failed ({status}): {message}", bin = JOURNALCTL)]
    Failed {
        /// Its arguments after the source's own.
        args: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The first line of its standard error.
        message: String,
    },
}

fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| !l.is_empty())
}

/// Non-empty stderr lines (journalctl's warnings: corrupt or truncated files it skipped).
fn warnings(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(5)
        .map(|l| l.chars().take(300).collect())
        .collect()
}

/// The previous boot as its journal tail shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousBootTail {
    /// Its boot id.
    pub boot_id: String,
    /// How it was picked out of the boot list.
    pub chosen_by: String,
    /// Its first entry's time.
    pub first_entry: Option<jiff::Timestamp>,
    /// Its last entry's time: a lower bound of when it ended (the power-cut time).
    pub last_entry: Option<jiff::Timestamp>,
    /// Why its timestamps may be wrong, when they look wrong (RTC reset, clock step).
    pub clock_suspect: Option<String>,
    /// How many entries of its tail were read.
    pub entries_read: usize,
    /// Lines of journalctl output that were not entries.
    pub entries_skipped: usize,
    /// The tail size asked for (`--journal-tail`).
    pub tail_limit: usize,
    /// Its last entry's message.
    pub last_message: Option<String>,
    /// The clean-shutdown markers found and what they add up to.
    pub analysis: TailAnalysis,
}

/// What the journal says about the previous boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JournalFinding {
    /// The journal could not be read.
    Unreadable {
        /// What was read.
        source: String,
        /// Why it failed.
        reason: String,
    },
    /// The journal says nothing about a previous boot.
    NoEvidence {
        /// Why.
        reason: String,
    },
    /// The previous boot's tail.
    PreviousBoot(Box<PreviousBootTail>),
}

/// The journal as gathered for `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalReport {
    /// What was read (`journal in DIR` / `system journal`).
    pub source: String,
    /// The boots listed, oldest first (empty when unreadable).
    pub boots: Vec<ListedBoot>,
    /// Whether this boot is in the journal.
    pub this_boot_listed: bool,
    /// The finding about the previous boot.
    pub finding: JournalFinding,
    /// journalctl's warnings and anything else worth saying.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

fn ts(us: Option<i64>) -> Option<jiff::Timestamp> {
    us.and_then(|us| jiff::Timestamp::from_microsecond(us).ok())
}

/// Reads the previous boot's tail. Never fails.
pub fn gather(
    source: &JournalSource,
    current: Option<&str>,
    machine_id: Option<&str>,
    boot_time: Option<jiff::Timestamp>,
    tail: usize,
) -> JournalReport {
    let mut report = JournalReport {
        source: source.describe(),
        boots: Vec::new(),
        this_boot_listed: false,
        finding: JournalFinding::NoEvidence {
            reason: String::new(),
        },
        notes: Vec::new(),
    };
    let unreadable = |reason: String| JournalFinding::Unreadable {
        source: source.describe(),
        reason,
    };
    let listed = match source.run(&["--list-boots", "-o", "json"], None) {
        Ok(out) => out,
        Err(reason) => {
            report.finding = unreadable(reason.to_string());
            return report;
        }
    };
    report.notes.extend(warnings(&listed.stderr));
    let boots = match journal_entry::parse_boot_list(&listed.stdout) {
        Ok(b) => b,
        Err(reason) => {
            report.finding = unreadable(reason.to_string());
            return report;
        }
    };
    if boots.is_empty() {
        report.finding = if report.notes.is_empty() {
            JournalFinding::NoEvidence {
                reason: format!("the {} has no entries", source.describe()),
            }
        } else {
            unreadable(format!("no readable entries: {}", report.notes.join("; ")))
        };
        return report;
    }
    report.boots = boots;
    let boots = &report.boots;
    let position = current.and_then(|c| boots.iter().position(|b| b.boot_id == c));
    report.this_boot_listed = position.is_some();
    let (prev_pos, chosen_by) = match (current, position) {
        (Some(_), Some(0)) => {
            report.finding = JournalFinding::NoEvidence {
                reason: format!(
                    "no previous boot in the {}: this boot is the only one (or the oldest) in it",
                    source.describe()
                ),
            };
            return report;
        }
        (Some(_), Some(i)) => (i - 1, "the boot before this one in the journal".to_string()),
        (Some(c), None) => (
            boots.len() - 1,
            format!(
                "the last boot in the journal: this boot ({}) is not in it yet (not flushed \
                 to disk yet, or the journal of another machine)",
                short_id(c)
            ),
        ),
        (None, _) if boots.len() >= 2 => (
            boots.len() - 2,
            "by journal order (this boot's id is unknown; assumed to be the last boot)".into(),
        ),
        (None, _) => {
            report.finding = JournalFinding::NoEvidence {
                reason: "the journal holds one boot and this boot's id is unknown".into(),
            };
            return report;
        }
    };
    let Some(prev) = boots.get(prev_pos) else {
        report.finding = unreadable("boot list index out of range".into());
        return report;
    };
    let n = tail.max(1).to_string();
    let out = match source.run(
        &[
            "-b",
            &prev.boot_id,
            "-n",
            &n,
            "-o",
            "json",
            "--output-fields",
            OUTPUT_FIELDS,
        ],
        None,
    ) {
        Ok(out) => out,
        Err(reason) => {
            report.finding = unreadable(reason.to_string());
            return report;
        }
    };
    for w in warnings(&out.stderr) {
        if !report.notes.contains(&w) {
            report.notes.push(w);
        }
    }
    if out.capped {
        report.notes.push(format!(
            "the tail of boot {} was larger than {MAX_OUTPUT_BYTES} bytes; read the first part only",
            short_id(&prev.boot_id)
        ));
    }
    let parsed = journal_entry::parse_lines(&out.stdout);
    let entries: Vec<JournalEntry> = parsed
        .entries
        .into_iter()
        .filter(|e| e.boot_id.as_deref().is_none_or(|b| b == prev.boot_id))
        .collect();
    if entries.is_empty() {
        report.finding = match parsed.first_error {
            Some(e) => unreadable(format!("journalctl output for boot {}: {e}", prev.boot_id)),
            None => JournalFinding::NoEvidence {
                reason: format!("boot {} has no readable entries", prev.boot_id),
            },
        };
        return report;
    }
    let foreign = entries
        .iter()
        .filter_map(|e| e.machine_id.as_deref())
        .find(|m| machine_id.is_some_and(|mine| mine != *m));
    if let (Some(theirs), None) = (foreign, position) {
        report.finding = JournalFinding::NoEvidence {
            reason: format!(
                "the {} belongs to another machine (machine-id {theirs}, this machine is {}) \
                 and does not hold this boot",
                source.describe(),
                machine_id.unwrap_or("unknown")
            ),
        };
        return report;
    }
    let last_entry =
        ts(prev.last_entry_us).or_else(|| ts(entries.iter().filter_map(|e| e.realtime_us).max()));
    let first_entry = ts(prev.first_entry_us);
    let before = prev_pos.checked_sub(1).and_then(|i| boots.get(i));
    let after = boots.get(prev_pos + 1);
    let clock_suspect = clock_check(
        first_entry,
        last_entry,
        before.and_then(|b| ts(b.last_entry_us)),
        after.and_then(|b| ts(b.first_entry_us)),
        boot_time,
    );
    report.finding = JournalFinding::PreviousBoot(Box::new(PreviousBootTail {
        boot_id: prev.boot_id.clone(),
        chosen_by,
        first_entry,
        last_entry,
        clock_suspect,
        entries_read: entries.len(),
        entries_skipped: parsed.skipped,
        tail_limit: tail,
        last_message: entries.last().and_then(|e| e.message.clone()),
        analysis: markers::analyse(&entries),
    }));
    report
}

/// Why the previous boot's timestamps cannot be trusted, if they look wrong. Pure.
///
/// Boots are ordered by write order, not wall clock, so a boot whose clock was wrong
/// (RTC reset to 2000, clock stepped) shows timestamps out of line with its neighbours.
pub fn clock_check(
    first: Option<jiff::Timestamp>,
    last: Option<jiff::Timestamp>,
    before_last: Option<jiff::Timestamp>,
    next_first: Option<jiff::Timestamp>,
    this_boot_time: Option<jiff::Timestamp>,
) -> Option<String> {
    let last = last?;
    if let Some(first) = first.filter(|f| last < *f) {
        return Some(format!(
            "its last entry ({last}) is before its first ({first})"
        ));
    }
    if let Some(b) = before_last.filter(|b| last < *b) {
        return Some(format!(
            "its last entry ({last}) is before the end of the boot before it ({b}): its clock \
             was behind (RTC reset or clock step?)"
        ));
    }
    if let Some(n) = next_first.filter(|n| last > *n) {
        return Some(format!(
            "its last entry ({last}) is after the first entry of the boot after it ({n}): \
             one of the two clocks was wrong"
        ));
    }
    let slack = jiff::SignedDuration::from_secs(300);
    if let Some(bt) = this_boot_time.filter(|bt| bt.checked_add(slack).is_ok_and(|b| last > b)) {
        return Some(format!(
            "its last entry ({last}) is after this boot started ({bt}): its clock was ahead"
        ));
    }
    None
}

/// The first `max` kernel entries of boot `boot_id` (for filesystem-recovery hints).
pub fn kernel_head(
    source: &JournalSource,
    boot_id: &str,
    max: usize,
) -> Result<Vec<JournalEntry>, JournalctlError> {
    let out = source.run(
        &[
            "-b",
            boot_id,
            "-k",
            "-o",
            "json",
            "--output-fields",
            "MESSAGE,_TRANSPORT",
        ],
        Some(max.max(1)),
    )?;
    Ok(journal_entry::parse_lines(&out.stdout).entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Option<jiff::Timestamp> {
        jiff::Timestamp::from_second(s).ok()
    }

    #[test]
    fn clock_check_flags_out_of_line_boots() {
        assert_eq!(clock_check(t(10), t(20), t(5), t(30), t(40)), None);
        assert!(clock_check(t(10), t(5), None, None, None)
            .unwrap()
            .contains("before its first"));
        assert!(clock_check(t(1), t(2), t(100), None, None)
            .unwrap()
            .contains("RTC reset"));
        assert!(clock_check(t(10), t(50), None, t(30), None)
            .unwrap()
            .contains("boot after it"));
        assert!(clock_check(t(10), t(5000), None, None, t(1000))
            .unwrap()
            .contains("ahead"));
        assert_eq!(clock_check(t(10), None, t(100), None, None), None);
    }
}
