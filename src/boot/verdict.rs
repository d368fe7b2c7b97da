//! The unclean-shutdown verdict: a pure function over the gathered evidence.
//!
//! Precedence (docs/architecture.md §3):
//! 1. **Boot records.** The previous boot recorded running and never marked stopped →
//!    `Unclean`; marked stopped → `Clean`. They come first because `boot-record stop` runs
//!    late in shutdown, after the Kubernetes services stopped, and nothing relinquishes
//!    them early. They count only when they are about the boot the journal calls previous
//!    (when the journal names one): a boot that never ran vmrecover-boot.service leaves no
//!    record, and an older record says nothing about it.
//! 2. **The journal** of the previous boot: a completed or handed-off shutdown → `Clean`;
//!    a shutdown that began but did not finish, or none at all → `Unclean`
//!    (see [`super::markers`] for what counts).
//! 3. **Hints** only support: they are listed, and reported as conflicts when they
//!    contradict a `Clean` verdict, but never decide.
//!
//! No decisive evidence → `Unknown`. When records and journal disagree the records win
//! and the disagreement is reported in `conflicts` and in the summary.

use serde::{Deserialize, Serialize};

use super::hints::Hint;
use super::journal::JournalFinding;
use super::markers::{MarkerKind, ShutdownProgress};
use super::records::{short_id, RecordsFinding};
use super::Verdict;

/// Where a piece of evidence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceSource {
    /// vmrecover's boot records.
    BootRecords,
    /// The previous boot's journal.
    Journal,
    /// `*.journal~` files renamed this boot.
    RenamedJournalFiles,
    /// This boot's kernel log.
    KernelFsRecovery,
    /// `/sys/fs/pstore`.
    Pstore,
}

impl EvidenceSource {
    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            EvidenceSource::BootRecords => "boot records",
            EvidenceSource::Journal => "journal",
            EvidenceSource::RenamedJournalFiles => "journal files",
            EvidenceSource::KernelFsRecovery => "kernel log",
            EvidenceSource::Pstore => "pstore",
        }
    }
}

/// What a piece of evidence says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Says {
    /// The previous boot ended cleanly.
    Clean,
    /// The previous boot ended uncleanly.
    Unclean,
    /// A hint of an unclean end (never decisive).
    HintUnclean,
    /// The source was read and says nothing about the previous boot.
    NoEvidence,
    /// The source could not be read.
    Unreadable,
}

/// One piece of evidence: source, what it said, detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Where it comes from.
    pub source: EvidenceSource,
    /// What it says.
    pub says: Says,
    /// What it found, one line.
    pub finding: String,
    /// Where and how (paths, ids, timestamps, notes).
    pub detail: String,
}

/// The verdict and what it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootVerdict {
    /// The verdict.
    pub verdict: Verdict,
    /// One sentence saying why.
    pub summary: String,
    /// The source that decided, when one did.
    pub decided_by: Option<EvidenceSource>,
    /// Every piece of evidence, decisive sources first.
    pub evidence: Vec<Evidence>,
    /// Disagreements between sources, each in a sentence.
    pub conflicts: Vec<String>,
}

/// The evidence the verdict is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The boot records' finding.
    pub records: &'a RecordsFinding,
    /// Notes about the records (foreign records ignored, …).
    pub records_notes: &'a [String],
    /// The journal's finding.
    pub journal: &'a JournalFinding,
    /// Hints of an unclean end.
    pub hints: &'a [Hint],
}

/// A timestamp for a sentence: whole seconds, UTC.
fn when(t: Option<jiff::Timestamp>) -> String {
    match t {
        Some(t) => t.round(jiff::Unit::Second).unwrap_or(t).to_string(),
        None => "an unknown time".to_string(),
    }
}

fn records_evidence(inputs: &Inputs<'_>) -> Evidence {
    let journal_prev = match inputs.journal {
        JournalFinding::PreviousBoot(tail) => Some(tail.boot_id.as_str()),
        _ => None,
    };
    let notes = inputs.records_notes.join("; ");
    let (says, finding, detail) = match inputs.records {
        RecordsFinding::Unreadable { path, reason } => (
            Says::Unreadable,
            "could not read the boot records".to_string(),
            format!("{path}: {reason}"),
        ),
        RecordsFinding::NoEvidence { reason } => (Says::NoEvidence, reason.clone(), String::new()),
        RecordsFinding::PreviousBoot { boot_id, .. }
            if journal_prev.is_some_and(|j| j != boot_id) =>
        {
            let j = journal_prev.unwrap_or_default();
            (
                Says::NoEvidence,
                format!(
                    "the previous boot {} (per the journal) has no record; the last recorded boot \
                     is the older {}",
                    short_id(j),
                    short_id(boot_id)
                ),
                "vmrecover-boot.service did not run during that boot".to_string(),
            )
        }
        RecordsFinding::PreviousBoot {
            boot_id,
            started_at,
            stopped_at: Some(stopped),
        } => (
            Says::Clean,
            format!(
                "previous boot {} was marked cleanly stopped at {}",
                short_id(boot_id),
                when(Some(*stopped))
            ),
            format!("boot {boot_id}, recorded running at {}", when(*started_at)),
        ),
        RecordsFinding::PreviousBoot {
            boot_id,
            started_at,
            stopped_at: None,
        } => (
            Says::Unclean,
            format!(
                "previous boot {} was recorded running at {} and never marked stopped",
                short_id(boot_id),
                when(*started_at)
            ),
            format!("boot {boot_id}"),
        ),
    };
    let detail = [detail, notes]
        .into_iter()
        .filter(|d| !d.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Evidence {
        source: EvidenceSource::BootRecords,
        says,
        finding,
        detail,
    }
}

fn journal_evidence(journal: &JournalFinding) -> Evidence {
    let (says, finding, detail) = match journal {
        JournalFinding::Unreadable { source, reason } => (
            Says::Unreadable,
            "could not read the journal".to_string(),
            format!("{source}: {reason}"),
        ),
        JournalFinding::NoEvidence { reason } => (Says::NoEvidence, reason.clone(), String::new()),
        JournalFinding::PreviousBoot(tail) => {
            let a = &tail.analysis;
            let short = short_id(&tail.boot_id);
            let handed_off_at = a
                .markers
                .iter()
                .find(|m| m.kind == MarkerKind::JournalHandedOff)
                .and_then(|m| m.at);
            let (says, finding) = match a.progress {
                ShutdownProgress::Completed => (
                    Says::Clean,
                    format!(
                        "previous boot {short} shut down completely ({})",
                        late_markers(a)
                    ),
                ),
                ShutdownProgress::HandedOff => (
                    Says::Clean,
                    format!(
                        "previous boot {short} began a shutdown at {} and handed the journal to \
                         /run at {} (the last a clean shutdown writes to disk)",
                        when(a.shutdown_began_at),
                        when(handed_off_at)
                    ),
                ),
                ShutdownProgress::Incomplete => (
                    Says::Unclean,
                    format!(
                        "previous boot {short} began a shutdown at {} that never finished: its \
                         journal stops at {} (power lost during shutdown)",
                        when(a.shutdown_began_at),
                        when(tail.last_entry)
                    ),
                ),
                ShutdownProgress::NotStarted => (
                    Says::Unclean,
                    format!(
                        "previous boot {short} has no shutdown markers in its last {} entries: \
                         it was running when its journal stops at {}",
                        tail.entries_read,
                        when(tail.last_entry)
                    ),
                ),
            };
            let mut detail = vec![
                format!("boot {} ({})", tail.boot_id, tail.chosen_by),
                format!(
                    "read {} of at most {} tail entries, {} PID 1 stop messages",
                    tail.entries_read, tail.tail_limit, a.units_stopping
                ),
            ];
            if !a.progress.is_clean() {
                detail.push(format!(
                    "power was lost at or after {}",
                    when(tail.last_entry)
                ));
            }
            if let Some(c) = &tail.clock_suspect {
                detail.push(format!("its timestamps are not trustworthy: {c}"));
            }
            if tail.entries_skipped > 0 {
                detail.push(format!(
                    "{} output lines were not entries",
                    tail.entries_skipped
                ));
            }
            if let Some(m) = &tail.last_message {
                detail.push(format!("last message: {m:?}"));
            }
            (says, finding, detail.join("; "))
        }
    };
    Evidence {
        source: EvidenceSource::Journal,
        says,
        finding,
        detail,
    }
}

fn late_markers(a: &super::markers::TailAnalysis) -> String {
    let names: Vec<String> = a
        .markers
        .iter()
        .filter_map(|m| match &m.kind {
            MarkerKind::ShutdownTargetReached { unit } => Some(format!("reached {unit}")),
            MarkerKind::JournalStopped => Some("journal stopped".into()),
            _ => None,
        })
        .collect();
    names.join(", ")
}

fn hint_evidence(hint: &Hint) -> Evidence {
    use super::hints::HintSource;
    Evidence {
        source: match hint.source {
            HintSource::RenamedJournalFiles => EvidenceSource::RenamedJournalFiles,
            HintSource::KernelFsRecovery => EvidenceSource::KernelFsRecovery,
            HintSource::Pstore => EvidenceSource::Pstore,
        },
        says: Says::HintUnclean,
        finding: hint.finding.clone(),
        detail: hint.detail.clone(),
    }
}

fn decisive(says: Says) -> Option<Verdict> {
    match says {
        Says::Clean => Some(Verdict::Clean),
        Says::Unclean => Some(Verdict::Unclean),
        _ => None,
    }
}

fn word(v: Verdict) -> &'static str {
    match v {
        Verdict::Clean => "clean",
        Verdict::Unclean => "unclean",
        Verdict::Unknown => "unknown",
    }
}

/// Computes the verdict. Pure: no clock, no I/O.
pub fn decide(inputs: Inputs<'_>) -> BootVerdict {
    let records = records_evidence(&inputs);
    let journal = journal_evidence(inputs.journal);
    let hints: Vec<Evidence> = inputs.hints.iter().map(hint_evidence).collect();
    let by_records = decisive(records.says);
    let by_journal = decisive(journal.says);
    let mut conflicts = Vec::new();

    let (verdict, decided_by, mut summary) = match (by_records, by_journal) {
        (Some(r), j) => {
            let tail = match j {
                Some(j) if j == r => " (the journal agrees)".to_string(),
                Some(j) => {
                    conflicts.push(format!(
                        "boot records say {} but the journal says {}: boot records take \
                         precedence (written late in shutdown, after the Kubernetes services \
                         stopped)",
                        word(r),
                        word(j)
                    ));
                    format!(
                        " (the journal disagrees: it says {}; records take precedence)",
                        word(j)
                    )
                }
                None => String::new(),
            };
            (
                r,
                Some(EvidenceSource::BootRecords),
                format!("{}{tail}", records.finding),
            )
        }
        (None, Some(j)) => (j, Some(EvidenceSource::Journal), journal.finding.clone()),
        (None, None) => (
            Verdict::Unknown,
            None,
            format!(
                "no decisive evidence: boot records: {}; journal: {}",
                records.finding, journal.finding
            ),
        ),
    };
    if !hints.is_empty() {
        match verdict {
            Verdict::Clean => {
                for h in &hints {
                    conflicts.push(format!(
                        "{} suggests an unclean end ({}) but the verdict is clean: hints do not \
                         decide",
                        h.source.label(),
                        h.finding
                    ));
                }
                summary.push_str(&format!("; {} hint(s) disagree", hints.len()));
            }
            Verdict::Unclean => summary.push_str(&format!("; {} hint(s) agree", hints.len())),
            Verdict::Unknown => summary.push_str(&format!(
                "; {} hint(s) suggest an unclean end, but hints alone do not decide",
                hints.len()
            )),
        }
    }
    let mut evidence = vec![records, journal];
    evidence.extend(hints);
    BootVerdict {
        verdict,
        summary,
        decided_by,
        evidence,
        conflicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::hints::HintSource;
    use crate::boot::journal::PreviousBootTail;
    use crate::boot::markers::TailAnalysis;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn t(s: i64) -> Option<jiff::Timestamp> {
        jiff::Timestamp::from_second(1_700_000_000 + s).ok()
    }

    fn rec_running(id: &str) -> RecordsFinding {
        RecordsFinding::PreviousBoot {
            boot_id: id.into(),
            started_at: t(0),
            stopped_at: None,
        }
    }

    fn rec_stopped(id: &str) -> RecordsFinding {
        RecordsFinding::PreviousBoot {
            boot_id: id.into(),
            started_at: t(0),
            stopped_at: t(100),
        }
    }

    fn rec_none() -> RecordsFinding {
        RecordsFinding::NoEvidence {
            reason: "no boot records yet".into(),
        }
    }

    fn rec_bad() -> RecordsFinding {
        RecordsFinding::Unreadable {
            path: "/s/boot-records.json".into(),
            reason: "not a boot-records file: EOF".into(),
        }
    }

    fn jrn(id: &str, progress: ShutdownProgress) -> JournalFinding {
        JournalFinding::PreviousBoot(Box::new(PreviousBootTail {
            boot_id: id.into(),
            chosen_by: "the boot before this one in the journal".into(),
            first_entry: t(0),
            last_entry: t(90),
            clock_suspect: None,
            entries_read: 40,
            entries_skipped: 0,
            tail_limit: 400,
            last_message: Some("last".into()),
            analysis: TailAnalysis {
                progress,
                markers: vec![],
                units_stopping: 0,
                shutdown_began_at: t(80),
            },
        }))
    }

    fn jrn_none() -> JournalFinding {
        JournalFinding::NoEvidence {
            reason: "no previous boot in the journal".into(),
        }
    }

    fn jrn_bad() -> JournalFinding {
        JournalFinding::Unreadable {
            source: "system journal".into(),
            reason: "journalctl is not installed".into(),
        }
    }

    fn hint() -> Hint {
        Hint {
            source: HintSource::KernelFsRecovery,
            finding: "filesystem recovery".into(),
            detail: "EXT4-fs (sda5): recovery complete".into(),
        }
    }

    /// name, records, journal, hints, verdict, decided by, number of conflicts.
    type Case<'a> = (
        &'a str,
        RecordsFinding,
        JournalFinding,
        &'a Vec<Hint>,
        Verdict,
        Option<EvidenceSource>,
        usize,
    );

    #[test]
    fn table_of_verdicts() {
        use ShutdownProgress::*;
        use Verdict::*;
        let no_hints: Vec<Hint> = vec![];
        let one_hint = vec![hint()];
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("records unclean, journal agrees", rec_running(A), jrn(A, NotStarted), &no_hints, Unclean, Some(EvidenceSource::BootRecords), 0),
            ("records clean, journal agrees", rec_stopped(A), jrn(A, Completed), &no_hints, Clean, Some(EvidenceSource::BootRecords), 0),
            ("records clean, journal handed off", rec_stopped(A), jrn(A, HandedOff), &no_hints, Clean, Some(EvidenceSource::BootRecords), 0),
            ("records clean beat journal unclean", rec_stopped(A), jrn(A, Incomplete), &no_hints, Clean, Some(EvidenceSource::BootRecords), 1),
            ("records unclean beat journal clean", rec_running(A), jrn(A, Completed), &no_hints, Unclean, Some(EvidenceSource::BootRecords), 1),
            ("records alone", rec_running(A), jrn_bad(), &no_hints, Unclean, Some(EvidenceSource::BootRecords), 0),
            ("records about an older boot defer to the journal", rec_stopped(B), jrn(A, NotStarted), &no_hints, Unclean, Some(EvidenceSource::Journal), 0),
            ("journal alone: power cut", rec_none(), jrn(A, NotStarted), &no_hints, Unclean, Some(EvidenceSource::Journal), 0),
            ("journal alone: slow shutdown cut", rec_none(), jrn(A, Incomplete), &no_hints, Unclean, Some(EvidenceSource::Journal), 0),
            ("journal alone: Harvester clean", rec_bad(), jrn(A, HandedOff), &no_hints, Clean, Some(EvidenceSource::Journal), 0),
            ("journal alone: clean power-off", rec_none(), jrn(A, Completed), &no_hints, Clean, Some(EvidenceSource::Journal), 0),
            ("nothing", rec_none(), jrn_none(), &no_hints, Unknown, None, 0),
            ("nothing readable", rec_bad(), jrn_bad(), &no_hints, Unknown, None, 0),
            ("hints alone do not decide", rec_none(), jrn_none(), &one_hint, Unknown, None, 0),
            ("hints support unclean", rec_none(), jrn(A, NotStarted), &one_hint, Unclean, Some(EvidenceSource::Journal), 0),
            ("hints contradict clean", rec_stopped(A), jrn(A, Completed), &one_hint, Clean, Some(EvidenceSource::BootRecords), 1),
        ];
        for (name, records, journal, hints, want, by, n_conflicts) in cases {
            let v = decide(Inputs {
                records: &records,
                records_notes: &[],
                journal: &journal,
                hints,
            });
            assert_eq!(v.verdict, want, "{name}: {}", v.summary);
            assert_eq!(v.decided_by, by, "{name}");
            assert_eq!(v.conflicts.len(), n_conflicts, "{name}: {:?}", v.conflicts);
            assert_eq!(v.evidence.len(), 2 + hints.len(), "{name}");
            assert!(!v.summary.is_empty());
        }
    }

    #[test]
    fn conflicts_are_named_in_the_summary() {
        let v = decide(Inputs {
            records: &rec_running(A),
            records_notes: &[],
            journal: &jrn(A, ShutdownProgress::Completed),
            hints: &[],
        });
        assert!(v.summary.contains("journal disagrees"), "{}", v.summary);
        assert!(v.conflicts[0].contains("take precedence"));
    }

    #[test]
    fn evidence_says_what_could_not_be_read() {
        let v = decide(Inputs {
            records: &rec_bad(),
            records_notes: &[],
            journal: &jrn_bad(),
            hints: &[],
        });
        assert_eq!(v.evidence[0].says, Says::Unreadable);
        assert!(v.evidence[0].detail.contains("/s/boot-records.json"));
        assert_eq!(v.evidence[1].says, Says::Unreadable);
        assert!(v.evidence[1].detail.contains("not installed"));
    }
}
