//! Crash-safe files in the state directory: write to a temp file, fsync, rename, fsync
//! the directory, so a power cut leaves the old or the new content, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

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
}
