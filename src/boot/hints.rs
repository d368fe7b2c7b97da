//! Supporting hints of an unclean end (docs/architecture.md §3, source 3). They never decide alone.
//!
//! - `*.journal~` files renamed during this boot: journald renames a journal file it finds
//!   unclean or corrupt when it opens it (weak: corruption does this too). Renaming changes
//!   a file's ctime, not its mtime, so ctime ≥ this boot's start means "renamed this boot".
//! - Filesystem recovery in this boot's kernel log (ext4 journal replay, XFS log recovery,
//!   btrfs log replay): the filesystem was not unmounted cleanly. Matched by text (kernel
//!   lines have no MESSAGE_ID).
//! - `/sys/fs/pstore` entries: the kernel saved a crash record (a panic, not a power cut).
//!
//! `last -x` crash records in wtmp are not read (Harvester does not keep wtmp persistently).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::journal_entry::JournalEntry;

/// Which hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HintSource {
    /// `*.journal~` files renamed during this boot.
    RenamedJournalFiles,
    /// Filesystem recovery lines in this boot's kernel log.
    KernelFsRecovery,
    /// Crash records in `/sys/fs/pstore`.
    Pstore,
}

/// One hint of an unclean end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    /// Which hint.
    pub source: HintSource,
    /// What it says, one line.
    pub finding: String,
    /// Where it was read, and examples.
    pub detail: String,
}

/// A journal directory that could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", dir.display())]
pub struct DirUnreadable {
    /// The directory.
    pub dir: std::path::PathBuf,
    /// The operating system's answer.
    pub source: std::io::Error,
}

/// Most directory entries looked at for `*.journal~` files.
const MAX_DIR_ENTRIES: usize = 10_000;

/// `*.journal~` files in `dir` (and its machine-id subdirectories) whose ctime is at or
/// after `boot_time`.
pub fn renamed_journal_files(
    dir: &Path,
    boot_time: jiff::Timestamp,
) -> Result<Option<Hint>, DirUnreadable> {
    let mut found = Vec::new();
    let mut seen = 0usize;
    scan(dir, 1, boot_time, &mut found, &mut seen)?;
    if found.is_empty() {
        return Ok(None);
    }
    found.sort();
    Ok(Some(Hint {
        source: HintSource::RenamedJournalFiles,
        finding: format!(
            "{} journal file(s) were renamed *.journal~ during this boot (journald found them \
             unclean or corrupt)",
            found.len()
        ),
        detail: found.into_iter().take(5).collect::<Vec<_>>().join(", "),
    }))
}

fn scan(
    dir: &Path,
    depth: u8,
    boot_time: jiff::Timestamp,
    found: &mut Vec<String>,
    seen: &mut usize,
) -> Result<(), DirUnreadable> {
    use std::os::unix::fs::MetadataExt;
    let entries = std::fs::read_dir(dir).map_err(|source| DirUnreadable {
        dir: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        *seen += 1;
        if *seen > MAX_DIR_ENTRIES {
            break;
        }
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() && depth > 0 {
            let _ = scan(&path, depth - 1, boot_time, found, seen);
        } else if meta.is_file() && entry.file_name().to_string_lossy().ends_with(".journal~") {
            let changed = jiff::Timestamp::new(meta.ctime(), 0).ok();
            if changed.is_some_and(|c| c >= boot_time) {
                found.push(path.display().to_string());
            }
        }
    }
    Ok(())
}

/// What a kernel line says about filesystem recovery, if anything.
fn fs_recovery_line(message: &str) -> bool {
    (message.contains("EXT4-fs")
        && (message.contains("recovery complete") || message.contains("recovery required")))
        || (message.contains("XFS") && message.contains("Starting recovery"))
        || (message.contains("BTRFS") && message.contains("replaying log"))
}

/// Filesystem-recovery lines among this boot's kernel entries. Pure.
pub fn fs_recovery(kernel: &[JournalEntry]) -> Option<Hint> {
    let lines: Vec<&str> = kernel
        .iter()
        .filter(|e| e.transport.as_deref().is_none_or(|t| t == "kernel"))
        .filter_map(|e| e.message.as_deref())
        .filter(|m| fs_recovery_line(m))
        .collect();
    let first = lines.first()?;
    Some(Hint {
        source: HintSource::KernelFsRecovery,
        finding: format!(
            "this boot's kernel log shows filesystem recovery ({} line(s)): a filesystem was not \
             unmounted cleanly",
            lines.len()
        ),
        detail: first.to_string(),
    })
}

/// Crash records in `<host_root>/sys/fs/pstore`.
pub fn pstore(host_root: &Path) -> Option<Hint> {
    let dir = host_root.join("sys/fs/pstore");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .take(MAX_DIR_ENTRIES)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort();
    Some(Hint {
        source: HintSource::Pstore,
        finding: format!(
            "{} crash record(s) in {}: the kernel panicked or oopsed (a crash, not a power cut)",
            names.len(),
            dir.display()
        ),
        detail: names.into_iter().take(5).collect::<Vec<_>>().join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(msg: &str) -> JournalEntry {
        JournalEntry {
            message: Some(msg.into()),
            transport: Some("kernel".into()),
            ..Default::default()
        }
    }

    #[test]
    fn finds_fs_recovery_lines() {
        let lines = [
            kernel("EXT4-fs (sda3): mounted filesystem with ordered data mode"),
            kernel("EXT4-fs (sda5): recovery complete"),
            kernel("XFS (dm-0): Starting recovery (logdev: internal)"),
        ];
        let hint = fs_recovery(&lines).unwrap();
        assert!(hint.finding.contains("2 line(s)"), "{}", hint.finding);
        assert_eq!(hint.detail, "EXT4-fs (sda5): recovery complete");
        assert!(fs_recovery(&lines[..1]).is_none());
    }

    #[test]
    fn finds_renamed_journal_files_and_pstore() {
        let root = tempfile::tempdir().unwrap();
        let sub = root.path().join("3d1219c7c4c5404aaa1f6d2a48adfda4");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("system@0005f-000a.journal~"), b"x").unwrap();
        std::fs::write(sub.join("system.journal"), b"x").unwrap();
        let long_ago = jiff::Timestamp::from_second(0).unwrap();
        let hint = renamed_journal_files(root.path(), long_ago)
            .unwrap()
            .unwrap();
        assert!(
            hint.detail.ends_with("system@0005f-000a.journal~"),
            "{}",
            hint.detail
        );
        let future = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
        assert!(renamed_journal_files(root.path(), future)
            .unwrap()
            .is_none());
        assert!(renamed_journal_files(&root.path().join("nope"), long_ago).is_err());

        assert!(pstore(root.path()).is_none());
        std::fs::create_dir_all(root.path().join("sys/fs/pstore")).unwrap();
        std::fs::write(root.path().join("sys/fs/pstore/dmesg-efi-1"), b"x").unwrap();
        assert!(pstore(root.path()).unwrap().detail.contains("dmesg-efi-1"));
    }
}
