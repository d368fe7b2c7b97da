//! Boot records (docs/architecture.md §3, source 1): vmrecover's own account of how each boot ended.
//!
//! `vmrecover-boot.service` calls [`record_start`] at boot and [`record_stop`] late in a
//! clean shutdown. The file `<state_dir>/boot-records.json` keeps the last
//! [`MAX_HISTORY`] boots, newest last. At the next boot a previous boot that was recorded
//! running and never marked stopped ended uncleanly.
//!
//! Writes are atomic: a temp file in the same directory is written and fsynced, renamed
//! over the old file, and the directory is fsynced, so a power cut mid-write leaves the
//! old file or the new one, never a torn one. A file that still cannot be parsed (a
//! different writer, a filesystem that lost data) is reported with its path and the parse
//! error; [`record_start`]/[`record_stop`] set it aside as
//! `boot-records.json.corrupt-<unix seconds>` and say so, never silently overwrite it.
//!
//! Records carry the machine id (`/etc/machine-id`): records of another machine (a state
//! directory copied from another node's image) are ignored and flagged.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::clock;
use crate::evidence::Gathered;

/// The records file's name inside the state directory.
pub const RECORDS_FILE: &str = "boot-records.json";
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// How many boots the file keeps.
pub const MAX_HISTORY: usize = 50;
/// Largest records file we read (50 records are about 15 KiB).
const MAX_FILE_BYTES: u64 = 1 << 20;
/// The `format` marker written into the file.
const FORMAT_NAME: &str = "vmrecover-boot-records";

/// The records file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordsFile {
    /// Always `vmrecover-boot-records`.
    pub format: String,
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Boots, oldest first.
    pub boots: Vec<BootRecord>,
}

impl Default for RecordsFile {
    fn default() -> Self {
        RecordsFile {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            boots: Vec::new(),
        }
    }
}

/// One boot as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootRecord {
    /// The boot's id, 32 lowercase hex digits.
    pub boot_id: String,
    /// The machine id at the time, when it could be read.
    #[serde(default)]
    pub machine_id: Option<String>,
    /// When the boot started (now − CLOCK_BOOTTIME at record time).
    #[serde(default)]
    pub boot_time: Option<jiff::Timestamp>,
    /// When `boot-record start` ran; `None` when only a stop was recorded.
    #[serde(default)]
    pub started_at: Option<jiff::Timestamp>,
    /// When `boot-record stop` ran; `None` while running (or after an unclean end).
    #[serde(default)]
    pub stopped_at: Option<jiff::Timestamp>,
    /// Anything unusual about this record (a stop without a start, a restart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Why the bytes are not a records file this build reads.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// Nothing but whitespace.
    #[error("the file is empty (a write that never reached the disk?)")]
    Empty,
    /// Not JSON of the records' shape.
    #[error("not a boot-records file: {0}")]
    NotRecords(#[from] serde_json::Error),
    /// Another file's format name (its first 64 characters).
    #[error("format is {0:?}, expected {FORMAT_NAME:?}")]
    OtherFormat(String),
    /// A format version this build does not read.
    #[error("format version {0} is not supported (this vmrecover reads version {FORMAT_VERSION})")]
    Version(u32),
    /// A record whose boot id is not normalised (its index, the id's first 64 characters).
    #[error("record {0}: boot_id {1:?} is not 32 lowercase hex digits")]
    BadBootId(usize, String),
}

/// Why the records file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It exists but could not be opened.
    #[error("cannot open: {0}")]
    Open(std::io::Error),
    /// It could not be read to the end.
    #[error("cannot read: {0}")]
    Read(std::io::Error),
}

/// Parses and validates a records file. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<RecordsFile, RecordsError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(RecordsError::Empty);
    }
    let file: RecordsFile = serde_json::from_slice(bytes)?;
    if file.format != FORMAT_NAME {
        return Err(RecordsError::OtherFormat(
            file.format.chars().take(64).collect(),
        ));
    }
    if file.version != FORMAT_VERSION {
        return Err(RecordsError::Version(file.version));
    }
    for (i, boot) in file.boots.iter().enumerate() {
        if clock::normalize_id(&boot.boot_id).as_deref() != Some(boot.boot_id.as_str()) {
            return Err(RecordsError::BadBootId(
                i,
                boot.boot_id.chars().take(64).collect(),
            ));
        }
    }
    Ok(file)
}

/// What reading the records file found.
#[derive(Debug)]
pub enum Loaded {
    /// No file yet (first boot with vmrecover).
    Missing,
    /// The parsed file.
    Read(RecordsFile),
    /// The file exists but is not a valid records file.
    Corrupt(String),
    /// The file has a format version this build does not read (a newer vmrecover wrote
    /// it): unreadable, and never moved aside or rewritten.
    Unsupported(String),
}

/// The records file's path in `state_dir`.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(RECORDS_FILE)
}

/// Reads the records file. `Err` only for I/O errors other than "not found".
pub fn load(path: &Path) -> Result<Loaded, ReadError> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(ReadError::Open(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Read)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Ok(Loaded::Corrupt(format!(
            "larger than {MAX_FILE_BYTES} bytes: not a file vmrecover wrote"
        )));
    }
    let found = crate::state_file::peek_version(&bytes);
    if let Some(why) =
        crate::state_file::unsupported_version(path, found, (FORMAT_VERSION, FORMAT_VERSION))
    {
        return Ok(Loaded::Unsupported(why));
    }
    Ok(match parse(&bytes) {
        Ok(f) => Loaded::Read(f),
        Err(reason) => Loaded::Corrupt(reason.to_string()),
    })
}

/// Writes `records` to `<dir>/boot-records.json` atomically (temp + fsync + rename +
/// fsync of the directory).
pub fn save_atomic(dir: &Path, records: &RecordsFile) -> anyhow::Result<()> {
    let target = path_in(dir);
    let tmp = dir.join(format!(".{RECORDS_FILE}.tmp-{}", std::process::id()));
    let mut json = serde_json::to_vec_pretty(records).context("cannot encode boot records")?;
    json.push(b'\n');
    let write = || -> std::io::Result<()> {
        let mut f = open_private(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &target)?;
        fs::File::open(dir)?.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", target.display()));
    }
    remove_stale_temps(dir);
    Ok(())
}

/// Removes temp files left by writes that a power cut interrupted before the rename.
fn remove_stale_temps(dir: &Path) {
    let prefix = format!(".{RECORDS_FILE}.tmp-");
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

fn open_private(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Creates the state directory (mode 0700) when it is missing.
fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create state directory {}", dir.display()))
}

/// This boot as the recorder sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ThisBoot {
    /// Normalised boot id.
    pub boot_id: String,
    /// Normalised machine id, when readable.
    pub machine_id: Option<String>,
    /// Boot time, when the clock could be read.
    pub boot_time: Option<jiff::Timestamp>,
}

/// Marks `boot` as running in `records` (pure). Returns what happened, for the operator.
pub fn mark_started(records: &mut RecordsFile, boot: &ThisBoot, now: jiff::Timestamp) -> String {
    let short = short_id(&boot.boot_id);
    let said = match records.boots.iter_mut().find(|r| r.boot_id == boot.boot_id) {
        Some(rec) if rec.stopped_at.is_some() => {
            rec.stopped_at = None;
            rec.notes.push(format!(
                "started again at {now} after a stop in the same boot"
            ));
            format!("boot {short} was marked stopped; it is running again")
        }
        Some(_) => format!("boot {short} is already recorded as running"),
        None => {
            records.boots.push(BootRecord {
                boot_id: boot.boot_id.clone(),
                machine_id: boot.machine_id.clone(),
                boot_time: boot.boot_time,
                started_at: Some(now),
                stopped_at: None,
                notes: Vec::new(),
            });
            format!("recorded boot {short} as running")
        }
    };
    trim(records);
    said
}

/// Marks `boot` as cleanly stopped in `records` (pure). Returns what happened.
pub fn mark_stopped(records: &mut RecordsFile, boot: &ThisBoot, now: jiff::Timestamp) -> String {
    let short = short_id(&boot.boot_id);
    let said = match records.boots.iter_mut().find(|r| r.boot_id == boot.boot_id) {
        Some(rec) => {
            let again = rec.stopped_at.is_some();
            rec.stopped_at = Some(now);
            if again {
                format!("boot {short} was already marked stopped; stop time updated")
            } else {
                format!("marked boot {short} as cleanly stopped")
            }
        }
        None => {
            records.boots.push(BootRecord {
                boot_id: boot.boot_id.clone(),
                machine_id: boot.machine_id.clone(),
                boot_time: boot.boot_time,
                started_at: None,
                stopped_at: Some(now),
                notes: vec!["stop recorded without a start record for this boot".into()],
            });
            format!(
                "boot {short} had no start record (was vmrecover-boot.service running?); \
                 recorded it as cleanly stopped anyway"
            )
        }
    };
    trim(records);
    said
}

fn trim(records: &mut RecordsFile) {
    let excess = records.boots.len().saturating_sub(MAX_HISTORY);
    records.boots.drain(..excess);
}

/// The first 8 hex digits of an id, for people.
pub fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Loads the file for an update; a corrupt file is moved aside (and said so).
fn load_for_update(dir: &Path, now: jiff::Timestamp) -> anyhow::Result<(RecordsFile, Vec<String>)> {
    let path = path_in(dir);
    match load(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))? {
        Loaded::Missing => Ok((RecordsFile::default(), Vec::new())),
        Loaded::Read(f) => Ok((f, Vec::new())),
        Loaded::Unsupported(why) => Err(anyhow::anyhow!("{why}; this boot is not recorded")),
        Loaded::Corrupt(reason) => {
            let aside = dir.join(format!("{RECORDS_FILE}.corrupt-{}", now.as_second()));
            fs::rename(&path, &aside).with_context(|| {
                format!(
                    "{} is unreadable ({reason}) and could not be moved aside to {}",
                    path.display(),
                    aside.display()
                )
            })?;
            let note = format!(
                "{} was unreadable ({reason}); kept it as {} and started a new history",
                path.display(),
                aside.display()
            );
            tracing::warn!("{note}");
            Ok((RecordsFile::default(), vec![note]))
        }
    }
}

fn this_boot(host_root: &Path) -> anyhow::Result<ThisBoot> {
    let boot_id = clock::boot_id(host_root)
        .as_result()
        .cloned()
        .map_err(|e| anyhow::anyhow!("cannot read this boot's id: {e}"))?;
    let now = jiff::Timestamp::now();
    Ok(ThisBoot {
        boot_id,
        machine_id: clock::machine_id(host_root).value().cloned(),
        boot_time: clock::since_boot()
            .value()
            .and_then(|d| clock::boot_time(now, *d)),
    })
}

fn update(
    state_dir: &Path,
    host_root: &Path,
    change: fn(&mut RecordsFile, &ThisBoot, jiff::Timestamp) -> String,
) -> anyhow::Result<String> {
    let boot = this_boot(host_root)?;
    let now = jiff::Timestamp::now();
    ensure_dir(state_dir)?;
    let (mut records, mut notes) = load_for_update(state_dir, now)?;
    let said = change(&mut records, &boot, now);
    save_atomic(state_dir, &records)?;
    notes.insert(0, format!("{said} in {}", path_in(state_dir).display()));
    Ok(notes.join("; "))
}

/// Records the current boot as running (`vmrecover boot-record start`).
pub fn record_start(state_dir: &Path, host_root: &Path) -> anyhow::Result<String> {
    update(state_dir, host_root, mark_started)
}

/// Marks the current boot as cleanly stopped (`vmrecover boot-record stop`).
pub fn record_stop(state_dir: &Path, host_root: &Path) -> anyhow::Result<String> {
    update(state_dir, host_root, mark_stopped)
}

/// How a boot in the history ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootEnd {
    /// This boot, still running.
    Running,
    /// Marked stopped by `boot-record stop`.
    Clean,
    /// An earlier boot never marked stopped.
    Unclean,
    /// Not marked stopped, and this boot's id is unknown, so it may be this boot.
    NotStopped,
}

/// One line of the recent-boots history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootHistoryEntry {
    /// The boot id.
    pub boot_id: String,
    /// When it started, when known.
    pub boot_time: Option<jiff::Timestamp>,
    /// When it was recorded running.
    pub started_at: Option<jiff::Timestamp>,
    /// When it was marked stopped.
    pub stopped_at: Option<jiff::Timestamp>,
    /// How it ended.
    pub ended: BootEnd,
    /// Notes kept with the record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What the records say about the previous boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RecordsFinding {
    /// The records file could not be read.
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The records say nothing about the previous boot.
    NoEvidence {
        /// Why.
        reason: String,
    },
    /// The most recent recorded boot before this one.
    PreviousBoot {
        /// Its id.
        boot_id: String,
        /// When it was recorded running.
        started_at: Option<jiff::Timestamp>,
        /// When it was marked stopped; `None`: never.
        stopped_at: Option<jiff::Timestamp>,
    },
}

/// The records as gathered for `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordsReport {
    /// The records file.
    pub path: String,
    /// The finding about the previous boot.
    pub finding: RecordsFinding,
    /// Anything else worth saying (records of another machine ignored, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Recent boots of this machine, newest first, or why they could not be read.
pub type History = Gathered<Vec<BootHistoryEntry>>;

/// Reads the records and finds the previous boot. Never fails.
pub fn gather(
    state_dir: &Path,
    current: Option<&str>,
    machine_id: Option<&str>,
) -> (RecordsReport, History) {
    let path = path_in(state_dir);
    let shown = path.display().to_string();
    let unreadable = |reason: String| {
        (
            RecordsReport {
                path: shown.clone(),
                finding: RecordsFinding::Unreadable {
                    path: shown.clone(),
                    reason: reason.clone(),
                },
                notes: Vec::new(),
            },
            Gathered::unreadable(shown.clone(), reason),
        )
    };
    match load(&path) {
        Err(reason) => unreadable(reason.to_string()),
        Ok(Loaded::Corrupt(reason) | Loaded::Unsupported(reason)) => unreadable(reason),
        Ok(Loaded::Missing) => (
            RecordsReport {
                path: shown.clone(),
                finding: RecordsFinding::NoEvidence {
                    reason: format!(
                        "no boot records yet ({shown} does not exist; is \
                         vmrecover-boot.service installed?)"
                    ),
                },
                notes: Vec::new(),
            },
            Gathered::read(Vec::new()),
        ),
        Ok(Loaded::Read(file)) => {
            let (finding, notes, history) = examine(&file, current, machine_id);
            (
                RecordsReport {
                    path: shown,
                    finding,
                    notes,
                },
                Gathered::read(history),
            )
        }
    }
}

/// The pure part of [`gather`]: the previous boot, notes and history from a parsed file.
pub fn examine(
    file: &RecordsFile,
    current: Option<&str>,
    machine_id: Option<&str>,
) -> (RecordsFinding, Vec<String>, Vec<BootHistoryEntry>) {
    let mut notes = Vec::new();
    let (ours, foreign): (Vec<&BootRecord>, Vec<&BootRecord>) =
        file.boots
            .iter()
            .partition(|r| match (machine_id, &r.machine_id) {
                (Some(mine), Some(theirs)) => mine == theirs,
                _ => true,
            });
    if !foreign.is_empty() {
        let ids: std::collections::BTreeSet<&str> = foreign
            .iter()
            .filter_map(|r| r.machine_id.as_deref())
            .collect();
        notes.push(format!(
            "ignored {} record(s) written by another machine (machine-id {}); this machine \
             is {}",
            foreign.len(),
            ids.into_iter().collect::<Vec<_>>().join(", "),
            machine_id.unwrap_or("unknown"),
        ));
    }
    if machine_id.is_none() {
        notes.push("this machine's id is unreadable: records were not checked for origin".into());
    }
    let history = ours
        .iter()
        .rev()
        .map(|r| BootHistoryEntry {
            boot_id: r.boot_id.clone(),
            boot_time: r.boot_time,
            started_at: r.started_at,
            stopped_at: r.stopped_at,
            ended: match (r.stopped_at, current) {
                (Some(_), _) => BootEnd::Clean,
                (None, Some(c)) if c == r.boot_id => BootEnd::Running,
                (None, Some(_)) => BootEnd::Unclean,
                (None, None) => BootEnd::NotStopped,
            },
            notes: r.notes.clone(),
        })
        .collect();
    let finding = match current {
        None => RecordsFinding::NoEvidence {
            reason: "this boot's id is unknown, so the previous boot cannot be told apart".into(),
        },
        Some(c) => match ours.iter().rev().find(|r| r.boot_id != c) {
            Some(prev) => RecordsFinding::PreviousBoot {
                boot_id: prev.boot_id.clone(),
                started_at: prev.started_at,
                stopped_at: prev.stopped_at,
            },
            None => RecordsFinding::NoEvidence {
                reason: if ours.is_empty() {
                    "no boots of this machine are recorded".into()
                } else {
                    "only this boot is recorded".into()
                },
            },
        },
    };
    (finding, notes, history)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(16)
    }

    fn boot(n: u8) -> ThisBoot {
        ThisBoot {
            boot_id: id(n),
            machine_id: Some(id(0xaa)),
            boot_time: None,
        }
    }

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn clean_and_unclean_sequences() {
        let mut f = RecordsFile::default();
        mark_started(&mut f, &boot(1), at(0));
        mark_stopped(&mut f, &boot(1), at(10));
        mark_started(&mut f, &boot(2), at(20));
        // boot 2 never stops: power cut.
        mark_started(&mut f, &boot(3), at(30));
        let mid = id(0xaa);
        let (finding, notes, history) = examine(&f, Some(&id(3)), Some(&mid));
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            finding,
            RecordsFinding::PreviousBoot {
                boot_id: id(2),
                started_at: Some(at(20)),
                stopped_at: None
            }
        );
        let ends: Vec<BootEnd> = history.iter().map(|h| h.ended).collect();
        assert_eq!(ends, [BootEnd::Running, BootEnd::Unclean, BootEnd::Clean]);
    }

    #[test]
    fn restart_within_a_boot_clears_the_stop() {
        let mut f = RecordsFile::default();
        mark_started(&mut f, &boot(1), at(0));
        mark_stopped(&mut f, &boot(1), at(1));
        let said = mark_started(&mut f, &boot(1), at(2));
        assert!(said.contains("running again"), "{said}");
        assert_eq!(f.boots.len(), 1);
        assert_eq!(f.boots[0].stopped_at, None);
    }

    #[test]
    fn stop_without_start_is_recorded_with_a_note() {
        let mut f = RecordsFile::default();
        let said = mark_stopped(&mut f, &boot(4), at(0));
        assert!(said.contains("no start record"), "{said}");
        assert_eq!(f.boots[0].started_at, None);
        assert_eq!(f.boots[0].stopped_at, Some(at(0)));
    }

    #[test]
    fn history_is_bounded() {
        let mut f = RecordsFile::default();
        for n in 0..(MAX_HISTORY as u8 + 7) {
            mark_started(&mut f, &boot(n), at(i64::from(n)));
        }
        assert_eq!(f.boots.len(), MAX_HISTORY);
        assert_eq!(f.boots[0].boot_id, id(7));
    }

    #[test]
    fn foreign_records_are_ignored_and_flagged() {
        let mut f = RecordsFile::default();
        let other = ThisBoot {
            machine_id: Some(id(0xbb)),
            ..boot(1)
        };
        mark_started(&mut f, &other, at(0));
        let (finding, notes, history) = examine(&f, Some(&id(2)), Some(&id(0xaa)));
        assert!(
            matches!(finding, RecordsFinding::NoEvidence { .. }),
            "{finding:?}"
        );
        assert!(notes[0].contains("another machine"), "{notes:?}");
        assert!(history.is_empty());
    }

    #[test]
    fn round_trips_and_rejects_bad_files() {
        let mut f = RecordsFile::default();
        mark_started(&mut f, &boot(1), at(0));
        let bytes = serde_json::to_vec(&f).unwrap();
        assert_eq!(parse(&bytes).unwrap(), f);
        let cut = &bytes[..bytes.len() / 2];
        assert!(parse(cut)
            .unwrap_err()
            .to_string()
            .contains("not a boot-records file"));
        assert!(parse(b"").unwrap_err().to_string().contains("empty"));
        let v2 = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"version\":1", "\"version\":2");
        assert!(parse(v2.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("version 2"));
        let badid = String::from_utf8(bytes).unwrap().replace(&id(1), "XYZ");
        assert!(parse(badid.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("boot_id"));
    }

    /// Issue 25: a records file of a newer format is unreadable evidence naming its
    /// version, and an update neither moves it aside nor rewrites it.
    #[test]
    fn a_newer_format_is_refused_and_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let newer =
            br#"{"format": "vmrecover-boot-records", "version": 2, "boots": {"by_id": {}}}"#;
        fs::write(&path, newer).unwrap();
        let Ok(Loaded::Unsupported(why)) = load(&path) else {
            panic!("not refused as unsupported")
        };
        assert!(
            why.contains("format version 2") && why.contains("version 1"),
            "{why}"
        );
        let err = load_for_update(dir.path(), at(0)).unwrap_err();
        assert!(format!("{err:#}").contains("not recorded"), "{err:#}");
        assert_eq!(fs::read(&path).unwrap(), newer);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing moved aside"
        );
    }

    #[test]
    fn atomic_save_leaves_no_temp_file_and_creates_private_dir() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        ensure_dir(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let mut f = RecordsFile::default();
        mark_started(&mut f, &boot(1), at(0));
        save_atomic(&dir, &f).unwrap();
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [RECORDS_FILE]);
        assert!(matches!(load(&path_in(&dir)).unwrap(), Loaded::Read(g) if g == f));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn parse_never_panics_on_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_json_like_text(s in r#"\{("(format|version|boots|boot_id|stopped_at)"|[:,\[\]{}0-9a-f"ntrul.-]){0,60}\}?"#) {
            let _ = parse(s.as_bytes());
        }
    }
}
