//! Clean-shutdown markers in the previous boot's journal tail (docs/architecture.md §3, source 2).
//!
//! Markers are recognised by `MESSAGE_ID` and unit, and by who sent them (`_PID`/`_COMM`
//! are set by journald, not by the sender), never by message text:
//!
//! | marker | MESSAGE_ID | sender | stage |
//! |---|---|---|---|
//! | shutdown requested ("System is rebooting." / "powering down.") | `98268866…` | systemd-logind | began |
//! | `multi-user.target`/`graphical.target` stopped | `9d1aaa27…` | PID 1 | began |
//! | units stopping (a burst of ≥ [`STOP_BURST`]) | `de5b426a…` | PID 1 | began |
//! | persistent journal handed back to /run: `systemd-journal-flush.service` stopping/stopped | `de5b426a…`/`9d1aaa27…` | PID 1 | handed off |
//! | "Reached target" `shutdown`/`final`/`reboot`/`poweroff`/`halt`/`kexec.target` | `39f53479…` | PID 1 | completed |
//! | "Journal stopped" as journald's last entry of the boot | `d93fb3c9…` | systemd-journald | completed |
//!
//! What counts (documented in the README section the lead keeps):
//! - **Completed** (late markers) → the shutdown ran to its end: clean.
//! - **Handed off**: the shutdown began and then the persistent journal was handed back to
//!   `/run` (`journalctl --relinquish-var`, run when `systemd-journal-flush.service` stops).
//!   Nothing after that point can reach the disk, so on systems that relinquish early
//!   (Harvester) this is the last thing a clean shutdown leaves: clean.
//! - **Incomplete**: the shutdown began (an operator or the system asked for it) but the
//!   journal, still writing to disk, stops before the hand-off: power was lost during a slow
//!   shutdown. Pods and VMs were being torn down and their controllers may not have
//!   finished, which leaves the same debris as a power cut: unclean, so the agent recovers.
//! - **Not started**: the tail shows a running system that stopped logging: unclean.
//!
//! Markers before the last "Reached target multi-user.target/graphical.target" in the tail
//! are ignored: the system came (back) up after them (switch-root, `isolate`).

use serde::{Deserialize, Serialize};

use super::journal_entry::JournalEntry;

/// logind: "System is rebooting." / "System is powering down." (SD_MESSAGE_SHUTDOWN).
pub const MSG_SHUTDOWN: &str = "98268866d1d54a499c4e98921d93bc40";
/// PID 1: a unit stopped / "Stopped target …" (SD_MESSAGE_UNIT_STOPPED).
pub const MSG_UNIT_STOPPED: &str = "9d1aaa27d60140bd96365438aad20286";
/// PID 1: "Stopping …" (SD_MESSAGE_UNIT_STOPPING).
pub const MSG_UNIT_STOPPING: &str = "de5b426a63be47a7b6ac3eaac82e2f6f";
/// PID 1: a unit started / "Reached target …" (SD_MESSAGE_UNIT_STARTED).
pub const MSG_UNIT_STARTED: &str = "39f53479d3a045ac8e11786248231fbf";
/// journald: "Journal stopped" (SD_MESSAGE_JOURNAL_STOP).
pub const MSG_JOURNAL_STOP: &str = "d93fb3c9c24d451a97cea615ce59c00b";

/// How many PID 1 "Stopping" messages make a shutdown-sized burst.
pub const STOP_BURST: usize = 5;

const UP_TARGETS: &[&str] = &["multi-user.target", "graphical.target"];
const LATE_TARGETS: &[&str] = &[
    "shutdown.target",
    "final.target",
    "reboot.target",
    "poweroff.target",
    "halt.target",
    "kexec.target",
];
const FLUSH_UNIT: &str = "systemd-journal-flush.service";

/// How far the previous boot's shutdown got, as its journal tail shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownProgress {
    /// No sign of a shutdown: the system was running when the journal stops.
    NotStarted,
    /// A shutdown began but the journal stops before it handed off or completed.
    Incomplete,
    /// The shutdown began and handed the journal back to /run; nothing later is on disk.
    HandedOff,
    /// Late markers: the shutdown reached its final targets.
    Completed,
}

impl ShutdownProgress {
    /// Whether this progress counts as a clean shutdown.
    pub fn is_clean(self) -> bool {
        matches!(
            self,
            ShutdownProgress::HandedOff | ShutdownProgress::Completed
        )
    }
}

/// What a marker means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MarkerKind {
    /// logind announced the shutdown (`SHUTDOWN=` reboot, poweroff, …).
    ShutdownRequested {
        /// logind's `SHUTDOWN` field, when present.
        action: Option<String>,
    },
    /// PID 1 stopped a top-level target.
    TargetStopped {
        /// The target.
        unit: String,
    },
    /// The persistent journal was handed back to /run.
    JournalHandedOff,
    /// PID 1 reached a late shutdown target.
    ShutdownTargetReached {
        /// The target.
        unit: String,
    },
    /// journald's last entry of the boot is "Journal stopped".
    JournalStopped,
}

/// One marker found, with when and what it said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// What it means.
    #[serde(flatten)]
    pub kind: MarkerKind,
    /// Its `__REALTIME_TIMESTAMP`.
    pub at: Option<jiff::Timestamp>,
    /// Its message, for people.
    pub message: Option<String>,
}

/// The analysis of one boot's tail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailAnalysis {
    /// How far the shutdown got.
    pub progress: ShutdownProgress,
    /// The markers found, in journal order.
    pub markers: Vec<Marker>,
    /// PID 1 "Stopping …" messages after the last start of multi-user.target.
    pub units_stopping: usize,
    /// When the shutdown began (the first "began" marker), if it did.
    pub shutdown_began_at: Option<jiff::Timestamp>,
}

fn is_pid1(e: &JournalEntry) -> bool {
    e.pid == Some(1) && !e.user_unit
}

fn sent_by(e: &JournalEntry, name: &str) -> bool {
    e.comm.as_deref() == Some(name)
        || (e.comm.is_none() && e.syslog_identifier.as_deref() == Some(name))
}

fn has_unit(e: &JournalEntry, names: &[&str]) -> Option<String> {
    e.units
        .iter()
        .find(|u| names.contains(&u.as_str()))
        .cloned()
}

fn id_is(e: &JournalEntry, id: &str) -> bool {
    e.message_id.as_deref() == Some(id)
}

fn timestamp(e: &JournalEntry) -> Option<jiff::Timestamp> {
    e.realtime_us
        .and_then(|us| jiff::Timestamp::from_microsecond(us).ok())
}

/// Analyses a boot's tail (entries in journal order). Pure; never panics.
pub fn analyse(entries: &[JournalEntry]) -> TailAnalysis {
    let start = entries
        .iter()
        .rposition(|e| {
            is_pid1(e) && id_is(e, MSG_UNIT_STARTED) && has_unit(e, UP_TARGETS).is_some()
        })
        .map_or(0, |i| i + 1);
    let tail = entries.get(start..).unwrap_or_default();

    let mut markers = Vec::new();
    let mut units_stopping = 0usize;
    let mut began_at: Option<Option<jiff::Timestamp>> = None;
    let mut handed_off = false;
    let mut completed = false;
    let mut burst_at = None;

    for e in tail {
        let at = timestamp(e);
        let kind = if sent_by(e, "systemd-logind") && id_is(e, MSG_SHUTDOWN) {
            began_at.get_or_insert(at);
            Some(MarkerKind::ShutdownRequested {
                action: e.shutdown.clone(),
            })
        } else if is_pid1(e) && (id_is(e, MSG_UNIT_STOPPING) || id_is(e, MSG_UNIT_STOPPED)) {
            if id_is(e, MSG_UNIT_STOPPING) {
                units_stopping += 1;
                if units_stopping == 1 {
                    burst_at = Some(at);
                }
            }
            if has_unit(e, &[FLUSH_UNIT]).is_some() && !handed_off {
                handed_off = true;
                Some(MarkerKind::JournalHandedOff)
            } else if let Some(unit) =
                has_unit(e, UP_TARGETS).filter(|_| id_is(e, MSG_UNIT_STOPPED))
            {
                began_at.get_or_insert(at);
                Some(MarkerKind::TargetStopped { unit })
            } else {
                None
            }
        } else if is_pid1(e) && id_is(e, MSG_UNIT_STARTED) {
            has_unit(e, LATE_TARGETS).map(|unit| {
                completed = true;
                MarkerKind::ShutdownTargetReached { unit }
            })
        } else {
            None
        };
        if let Some(kind) = kind {
            markers.push(Marker {
                kind,
                at,
                message: e.message.clone(),
            });
        }
    }

    // "Journal stopped" counts only as journald's last entry of the boot (it is also
    // logged at switch-root, which the up-target cut above already removes).
    if let Some(last) = tail.iter().rev().find(|e| sent_by(e, "systemd-journald")) {
        if id_is(last, MSG_JOURNAL_STOP) {
            completed = true;
            markers.push(Marker {
                kind: MarkerKind::JournalStopped,
                at: timestamp(last),
                message: last.message.clone(),
            });
        }
    }

    if units_stopping >= STOP_BURST {
        began_at.get_or_insert(burst_at.flatten());
    }
    let began = began_at.is_some();
    let progress = if completed {
        ShutdownProgress::Completed
    } else if handed_off && began {
        ShutdownProgress::HandedOff
    } else if began {
        ShutdownProgress::Incomplete
    } else {
        ShutdownProgress::NotStarted
    };
    TailAnalysis {
        progress,
        markers,
        units_stopping,
        shutdown_began_at: began_at.flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid1(id: &str, unit: &str, t: i64) -> JournalEntry {
        JournalEntry {
            realtime_us: Some(t * 1_000_000),
            message_id: Some(id.into()),
            units: vec![unit.into()],
            pid: Some(1),
            comm: Some("systemd".into()),
            ..Default::default()
        }
    }

    fn logind(t: i64) -> JournalEntry {
        JournalEntry {
            realtime_us: Some(t * 1_000_000),
            message_id: Some(MSG_SHUTDOWN.into()),
            comm: Some("systemd-logind".into()),
            pid: Some(812),
            shutdown: Some("reboot".into()),
            message: Some("System is rebooting.".into()),
            ..Default::default()
        }
    }

    fn journald(id: &str, t: i64) -> JournalEntry {
        JournalEntry {
            realtime_us: Some(t * 1_000_000),
            message_id: Some(id.into()),
            comm: Some("systemd-journald".into()),
            pid: Some(400),
            ..Default::default()
        }
    }

    fn noise(t: i64) -> JournalEntry {
        JournalEntry {
            realtime_us: Some(t * 1_000_000),
            comm: Some("rke2".into()),
            pid: Some(2000),
            message: Some("System is rebooting.".into()),
            ..Default::default()
        }
    }

    fn stopping(n: usize, t: i64) -> Vec<JournalEntry> {
        (0..n)
            .map(|i| pid1(MSG_UNIT_STOPPING, &format!("svc{i}.service"), t))
            .collect()
    }

    fn progress(entries: &[JournalEntry]) -> ShutdownProgress {
        analyse(entries).progress
    }

    #[test]
    fn table_of_tails() {
        use ShutdownProgress::*;
        let up = pid1(MSG_UNIT_STARTED, "multi-user.target", 1);
        let cases: Vec<(&str, Vec<JournalEntry>, ShutdownProgress)> = vec![
            ("empty", vec![], NotStarted),
            ("running", vec![up.clone(), noise(2), noise(3)], NotStarted),
            ("text alone is not a marker", vec![noise(2)], NotStarted),
            ("logind only", vec![up.clone(), logind(5)], Incomplete),
            (
                "multi-user stopped",
                vec![pid1(MSG_UNIT_STOPPED, "multi-user.target", 5)],
                Incomplete,
            ),
            ("stop burst alone", stopping(STOP_BURST, 5), Incomplete),
            ("a few restarts", stopping(STOP_BURST - 1, 5), NotStarted),
            (
                "hand-off after logind (Harvester)",
                [
                    vec![logind(5)],
                    stopping(3, 6),
                    vec![pid1(MSG_UNIT_STOPPING, FLUSH_UNIT, 7)],
                ]
                .concat(),
                HandedOff,
            ),
            (
                "hand-off without a shutdown is not one",
                vec![pid1(MSG_UNIT_STOPPING, FLUSH_UNIT, 7)],
                NotStarted,
            ),
            (
                "late target",
                vec![logind(5), pid1(MSG_UNIT_STARTED, "reboot.target", 9)],
                Completed,
            ),
            (
                "journal stopped last",
                vec![logind(5), journald(MSG_JOURNAL_STOP, 9)],
                Completed,
            ),
            (
                "journal stopped then restarted is not the end",
                vec![
                    logind(5),
                    journald(MSG_JOURNAL_STOP, 9),
                    journald("f77379a8490b408bbe5f6940505a777b", 10),
                ],
                Incomplete,
            ),
            (
                "markers before the system came back up are ignored",
                vec![
                    logind(5),
                    pid1(MSG_UNIT_STOPPED, "multi-user.target", 6),
                    up.clone(),
                    noise(7),
                ],
                NotStarted,
            ),
            (
                "user manager units are not PID 1",
                vec![JournalEntry {
                    user_unit: true,
                    pid: Some(1),
                    ..pid1(MSG_UNIT_STARTED, "reboot.target", 3)
                }],
                NotStarted,
            ),
            (
                "not PID 1",
                vec![JournalEntry {
                    pid: Some(77),
                    ..pid1(MSG_UNIT_STARTED, "poweroff.target", 3)
                }],
                NotStarted,
            ),
        ];
        for (name, entries, want) in cases {
            assert_eq!(progress(&entries), want, "{name}");
        }
    }

    #[test]
    fn reports_markers_and_when_the_shutdown_began() {
        let entries = [
            vec![noise(1), logind(5)],
            stopping(6, 6),
            vec![pid1(MSG_UNIT_STOPPING, FLUSH_UNIT, 8)],
        ]
        .concat();
        let a = analyse(&entries);
        assert_eq!(a.units_stopping, 7);
        assert_eq!(a.shutdown_began_at.map(|t| t.as_second()), Some(5));
        assert_eq!(a.markers.len(), 2);
        assert_eq!(a.markers[1].kind, MarkerKind::JournalHandedOff);
    }
}
