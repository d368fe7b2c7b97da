//! Crash-safe files in the state directory: write to a temp file, fsync, rename, fsync
//! the directory, so a power cut leaves the old or the new content, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::evidence::Gathered;

/// Why a state file could not be written: the step and the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("cannot {step} {path}: {source}")]
pub struct StateFileError {
    /// What was being done: `create state directory`, `write`, `rename into place`, ...
    pub step: &'static str,
    /// The path it was done to.
    pub path: std::path::PathBuf,
    /// The operating system's answer.
    #[source]
    pub source: std::io::Error,
}

fn at(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateFileError {
    let path = path.to_path_buf();
    move |source| StateFileError { step, path, source }
}

/// Atomically replaces `path` with `bytes` (mode 0600), creating its directory (0700).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateFileError> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string());
    let dir = path
        .parent()
        .ok_or_else(|| at("use", path)(invalid("it has no parent directory")))?;
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(at("create state directory", dir))?;
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| at("use", path)(invalid("it has no file name")))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(at("create", &tmp))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(at("write", &tmp))?;
        fs::rename(&tmp, path).map_err(at("rename into place", path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(at("sync directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Why a JSON state file could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The value could not be encoded (a bug: every state type encodes).
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being saved.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] StateFileError),
    /// The file's current content could not be read, so it cannot be updated safely.
    #[error("cannot update {source_name}: {reason}")]
    Unreadable {
        /// The file.
        source_name: String,
        /// Why it could not be read.
        reason: String,
    },
}

/// Saves `value` as pretty JSON at `path`, atomically.
pub fn save_json<T: serde::Serialize>(
    path: &Path,
    what: &'static str,
    value: &T,
) -> Result<(), SaveError> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|source| SaveError::Encode { what, source })?;
    Ok(write_atomic(path, &bytes)?)
}

/// The format version a state file says it has, read before its content (a newer format
/// may have any shape): `None` when the bytes carry no version at all.
pub fn peek_version(bytes: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Peek {
        version: Option<u64>,
    }
    serde_json::from_slice::<Peek>(bytes).ok()?.version
}

/// Why a state file's format version is not one this build reads, in words a person acts
/// on: the file, the version found, the versions supported and what to do. `None` when
/// `found` is supported (or the file names no version: its parser says what is wrong).
///
/// A newer file is never rewritten by an older build: whatever depends on it stops, as for
/// a corrupt file, and it is there again, whole, when the newer vmrecover comes back.
pub fn unsupported_version(path: &Path, found: Option<u64>, reads: (u32, u32)) -> Option<String> {
    let found = found?;
    let (oldest, newest) = reads;
    if (u64::from(oldest)..=u64::from(newest)).contains(&found) {
        return None;
    }
    let supported = if oldest == newest {
        format!("{newest}")
    } else {
        format!("{oldest} to {newest}")
    };
    Some(if found > u64::from(newest) {
        format!(
            "{} has format version {found}, newer than this vmrecover {} reads (version \
             {supported}): a newer vmrecover wrote it. It is left as it is and nothing that \
             depends on it changes; put the newer vmrecover back (docs/install.md#rollback), \
             or move the file aside to go on with this one and lose what it holds",
            path.display(),
            env!("CARGO_PKG_VERSION"),
        )
    } else {
        format!(
            "{} has format version {found}, which no vmrecover wrote (this one reads version \
             {supported}): move it aside for a person to look at",
            path.display()
        )
    })
}

/// Saves `value` (a JSON object) as pretty JSON with `"version": version` added,
/// atomically — unless the file already there has a newer format version: a newer
/// vmrecover's file is never overwritten by an older one (the error says so).
pub fn save_versioned<T: serde::Serialize>(
    path: &Path,
    what: &'static str,
    version: u32,
    value: &T,
) -> Result<(), SaveError> {
    if let Ok(bytes) = fs::read(path) {
        if let Some(why) = unsupported_version(path, peek_version(&bytes), (0, version)) {
            return Err(SaveError::Unreadable {
                source_name: path.display().to_string(),
                reason: why,
            });
        }
    }
    let mut json =
        serde_json::to_value(value).map_err(|source| SaveError::Encode { what, source })?;
    if let Some(object) = json.as_object_mut() {
        object.insert("version".into(), version.into());
    }
    save_json(path, what, &json)
}

/// Reads a JSON state file saved by [`save_versioned`] (a file without a version is
/// format 1, as written before versions): `None` when there is none; a format outside
/// `reads` (oldest, newest) is unreadable, in [`unsupported_version`]'s words.
pub fn load_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    reads: (u32, u32),
) -> Gathered<Option<T>> {
    load_upgraded(path, what, reads, |_, _| {})
}

/// [`load_versioned`] for a file whose older formats are read by rewriting their JSON
/// into the newest shape first: `upgrade(version, json)` is called with the file's format
/// version (1 for a file without one) before the content is decoded.
pub fn load_upgraded<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    reads: (u32, u32),
    upgrade: impl FnOnce(u64, &mut serde_json::Value),
) -> Gathered<Option<T>> {
    let source = path.display().to_string();
    match fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Gathered::read(None),
        Err(e) => Gathered::unreadable(source, e.to_string()),
        Ok(bytes) => {
            let version = peek_version(&bytes);
            if let Some(why) = unsupported_version(path, version, reads) {
                return Gathered::unreadable(source, why);
            }
            let decoded = serde_json::from_slice(&bytes).and_then(|mut json| {
                upgrade(version.unwrap_or(1), &mut json);
                serde_json::from_value(json)
            });
            match decoded {
                Ok(v) => Gathered::read(Some(v)),
                Err(e) => Gathered::unreadable(source, format!("not a vmrecover {what}: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn unwritable_directory_is_an_error_naming_the_path() {
        let err = write_atomic(Path::new("/proc/vmrecover-test/x.json"), b"x").unwrap_err();
        assert!(
            format!("{err:#}").contains("/proc/vmrecover-test"),
            "{err:#}"
        );
    }

    #[test]
    fn versions_are_peeked_and_a_newer_one_is_named_with_what_to_do() {
        assert_eq!(peek_version(br#"{"version": 3, "x": [1]}"#), Some(3));
        assert_eq!(peek_version(b"{torn"), None);
        let path = Path::new("/usr/local/vmrecover/recovery-intents.json");
        assert_eq!(unsupported_version(path, Some(2), (1, 2)), None);
        assert_eq!(unsupported_version(path, None, (1, 2)), None);
        let newer = unsupported_version(path, Some(3), (1, 2)).unwrap();
        for part in [
            "/usr/local/vmrecover/recovery-intents.json",
            "format version 3",
            "version 1 to 2",
            "newer vmrecover",
            "left as it is",
            "docs/install.md#rollback",
        ] {
            assert!(newer.contains(part), "{part}: {newer}");
        }
        assert!(unsupported_version(path, Some(0), (1, 2))
            .unwrap()
            .contains("no vmrecover wrote"));
    }

    /// A versioned file: written with its version, read back; one without a version is
    /// format 1; a newer one is neither read nor overwritten.
    #[test]
    fn versioned_files_are_read_and_a_newer_one_never_overwritten() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Report {
            n: u32,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last-run.json");
        save_versioned(&path, "report", 1, &Report { n: 1 }).unwrap();
        assert_eq!(peek_version(&fs::read(&path).unwrap()), Some(1));
        let read: Gathered<Option<Report>> = load_versioned(&path, "report", (1, 1));
        assert_eq!(read, Gathered::read(Some(Report { n: 1 })));
        fs::write(&path, br#"{"n": 2}"#).unwrap();
        let read: Gathered<Option<Report>> = load_versioned(&path, "report", (1, 1));
        assert_eq!(read, Gathered::read(Some(Report { n: 2 })));
        let newer = br#"{"version": 2, "n": {"moved": 3}}"#;
        fs::write(&path, newer).unwrap();
        let read: Gathered<Option<Report>> = load_versioned(&path, "report", (1, 1));
        assert!(
            read.as_result()
                .unwrap_err()
                .to_string()
                .contains("format version 2"),
            "{read:?}"
        );
        assert!(save_versioned(&path, "report", 1, &Report { n: 4 }).is_err());
        assert_eq!(fs::read(&path).unwrap(), newer);
    }
}

/// Issue 25: the state files as the previous format wrote them (`tests/fixtures/state/v1`)
/// are read by this build, and an update of the intents keeps what they held.
#[cfg(test)]
mod golden {
    use std::path::{Path, PathBuf};

    fn v1() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state/v1")
    }

    #[test]
    fn state_files_of_the_previous_format_are_read() {
        let dir = v1();
        let intents = crate::recovery::IntentStore::new(&dir).load_state();
        let state = intents.value().expect("intents of format 1 are read");
        assert_eq!(state.intents.len(), 1);
        assert_eq!(state.intents[0].name, "vm-db-01");
        assert_eq!(state.intents[0].disks[0].pvc_uid, None);
        assert!(state.seen.is_empty());

        let report = crate::recovery::ReportStore::new(&dir).load();
        let report = report.value().expect("run report").as_ref().expect("one");
        assert_eq!(report.plan.decisions.len(), 2);

        let status = crate::agent::AgentStatusFile::new(&dir).load();
        assert_eq!(
            status.value().expect("agent status").as_ref().unwrap().pid,
            4711
        );

        let records = crate::boot::records::load(&crate::boot::records::path_in(&dir));
        assert!(
            matches!(records, Ok(crate::boot::records::Loaded::Read(ref f)) if f.boots.len() == 2),
            "{records:?}"
        );
    }

    #[test]
    fn an_update_writes_the_new_intents_format_and_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            v1().join(crate::recovery::INTENTS_FILE),
            dir.path().join(crate::recovery::INTENTS_FILE),
        )
        .unwrap();
        let store = crate::recovery::IntentStore::new(dir.path());
        let before = store.load_state().value().cloned().unwrap();
        let wrote = store
            .update_seen(|_| {
                Some(vec![crate::recovery::SeenVmi {
                    namespace: "default".into(),
                    name: "vm-web-01".into(),
                    vmi_uid: "u".into(),
                    first_seen: jiff::Timestamp::UNIX_EPOCH,
                    disks: vec![],
                }])
            })
            .unwrap();
        assert!(wrote);
        let bytes = std::fs::read(dir.path().join(crate::recovery::INTENTS_FILE)).unwrap();
        assert_eq!(
            super::peek_version(&bytes),
            Some(u64::from(crate::recovery::INTENTS_FORMAT))
        );
        let after = store.load_state().value().cloned().unwrap();
        assert_eq!(after.intents, before.intents);
        assert_eq!(after.seen.len(), 1);
    }
}
