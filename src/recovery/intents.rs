//! Recovery intents: before vmrecover first changes a VM it records the VM here, and it
//! forgets it once the VM is recovered. After a crash (or kill -9) between clearing the
//! VMI and clearing the VM, the next run still knows the VM was on this node.
//!
//! The same file keeps the disks of every deciding VMI of this node as vmrecover first saw
//! them ([`SeenVmi`], issue 23): a PVC deleted and made again under the same name later is
//! then known for a replacement by its UID, and the proof follows the old disk, even when
//! no run changed anything yet.
//!
//! Format versions ([`INTENTS_FORMAT`]): 1 — intents only; 2 — the seen VMIs and each
//! disk's PVC UID. This build reads both and writes 2; a newer file is refused, never
//! rewritten (`state_file::unsupported_version`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::evidence::Gathered;
use crate::state_file::{save_json, SaveError};

/// The file name under the state directory.
pub const INTENTS_FILE: &str = "recovery-intents.json";
/// The format version this build writes.
pub const INTENTS_FORMAT: u32 = 2;
/// The oldest format version this build reads.
pub const INTENTS_OLDEST: u32 = 1;
/// The lock file that serialises updates of the intents file by the agent and a manual run.
const LOCK_FILE: &str = ".recovery-intents.lock";

/// One VM a run has started recovering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryIntent {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM's name.
    pub name: String,
    /// The VM's UID.
    pub vm_uid: String,
    /// The VMI's UID (its processes carry it).
    pub vmi_uid: String,
    /// The PVC names of its volumes (the VMI that listed them may be gone).
    pub pvcs: Vec<String>,
    /// The keys of its disks as last proven (PVC, PV, volume handle, driver): keys for
    /// fresh checks when the PVC is gone, never a proof to reuse.
    #[serde(default)]
    pub disks: Vec<IntentDisk>,
    /// When the run started recovering it.
    pub started: jiff::Timestamp,
}

/// One disk of a recorded VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentDisk {
    /// The PVC's name.
    pub pvc: String,
    /// The PVC's UID when it was recorded (format 2): a PVC of that name with another UID
    /// is a replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_uid: Option<String>,
    /// The PV's name.
    pub pv: String,
    /// The CSI volume handle (the Longhorn volume).
    pub handle: String,
    /// The CSI driver, when known.
    pub driver: Option<String>,
}

/// A deciding VMI of this node as vmrecover first saw it: the keys of its disks then.
/// Keys for fresh reads, never a proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenVmi {
    /// The VMI's namespace.
    pub namespace: String,
    /// The VMI's name.
    pub name: String,
    /// The VMI's UID.
    pub vmi_uid: String,
    /// When it was first seen (the API server's clock).
    pub first_seen: jiff::Timestamp,
    /// Its disks, each recorded when its claim was first seen bound.
    pub disks: Vec<IntentDisk>,
}

/// An intent whose VM is gone or was recreated under its name: nothing is left for it to
/// remember, so an applying run forgets it (and says so in its report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleIntent {
    /// The VM UID the intent names.
    pub vm_uid: String,
    /// What the report says, e.g. `default/vm-1 (uid …): the VM is gone`.
    pub line: String,
}

/// The intents whose VM is gone or recreated, judged from the VMs read by name (`vms`:
/// every VM an intent names that exists; unreadable VMs: none is judged stale).
pub fn stale(
    intents: &[RecoveryIntent],
    vms: Option<&[crate::cluster::VmView]>,
) -> Vec<StaleIntent> {
    let Some(vms) = vms else { return Vec::new() };
    intents
        .iter()
        .filter_map(|i| {
            let same_name = vms
                .iter()
                .find(|v| v.key.namespace == i.namespace && v.key.name == i.name);
            let why = match same_name {
                None => "the VM is gone".to_string(),
                Some(v) if v.key.uid != i.vm_uid => {
                    format!("the VM was recreated (uid {} now)", v.key.uid)
                }
                Some(_) => return None,
            };
            Some(StaleIntent {
                vm_uid: i.vm_uid.clone(),
                line: format!(
                    "recovery intent of {}/{} (uid {}, started {}): {why}; forgotten",
                    i.namespace, i.name, i.vm_uid, i.started
                ),
            })
        })
        .collect()
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IntentsFile {
    version: u32,
    intents: Vec<RecoveryIntent>,
    /// Format 2; a format-1 file has none.
    #[serde(default)]
    seen: Vec<SeenVmi>,
}

/// What the intents file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntentsState {
    /// VMs a run started recovering.
    pub intents: Vec<RecoveryIntent>,
    /// Deciding VMIs as first seen.
    pub seen: Vec<SeenVmi>,
}

/// The intents file of a state directory.
#[derive(Debug, Clone)]
pub struct IntentStore {
    path: PathBuf,
}

impl IntentStore {
    /// The store under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        IntentStore {
            path: state_dir.join(INTENTS_FILE),
        }
    }

    /// Reads the intents; a missing file is none; a corrupt one, or one of a newer format,
    /// is unreadable evidence.
    pub fn load(&self) -> Gathered<Vec<RecoveryIntent>> {
        self.load_state().map(|s| s.intents)
    }

    /// Reads the whole file (intents and seen VMIs), as [`IntentStore::load`].
    pub fn load_state(&self) -> Gathered<IntentsState> {
        let source = self.path.display().to_string();
        match std::fs::read(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Gathered::read(IntentsState::default())
            }
            Err(e) => Gathered::unreadable(source, e.to_string()),
            Ok(bytes) => parse(&self.path, &bytes).map_or_else(
                |why| Gathered::unreadable(source, why.to_string()),
                |f| {
                    Gathered::read(IntentsState {
                        intents: f.intents,
                        seen: f.seen,
                    })
                },
            ),
        }
    }

    /// Records `intent` (replacing one for the same VM UID).
    pub fn add(&self, intent: RecoveryIntent) -> Result<(), SaveError> {
        self.update(|state| {
            state.intents.retain(|i| i.vm_uid != intent.vm_uid);
            state.intents.push(intent);
            true
        })
    }

    /// Forgets the VM with `vm_uid`.
    pub fn remove(&self, vm_uid: &str) -> Result<(), SaveError> {
        self.update(|state| {
            let before = state.intents.len();
            state.intents.retain(|i| i.vm_uid != vm_uid);
            state.intents.len() != before
        })
    }

    /// Replaces the seen VMIs with what `next` makes of the current ones (`None`: nothing
    /// to change, the file is not written). Returns whether it wrote.
    pub fn update_seen(
        &self,
        next: impl FnOnce(&[SeenVmi]) -> Option<Vec<SeenVmi>>,
    ) -> Result<bool, SaveError> {
        let mut wrote = false;
        self.update(|state| {
            if let Some(seen) = next(&state.seen) {
                state.seen = seen;
                wrote = true;
            }
            wrote
        })?;
        Ok(wrote)
    }

    /// Reads, changes and writes the file under an exclusive lock (the agent and a manual
    /// run on the same node both write it). `change` says whether anything changed. A file
    /// that cannot be read (corrupt, or of a newer format) is never written.
    fn update(&self, change: impl FnOnce(&mut IntentsState) -> bool) -> Result<(), SaveError> {
        let _lock = self.lock()?;
        let mut state = match self.load_state() {
            Gathered::Read { value } => value,
            Gathered::Unreadable { source, reason } => {
                return Err(SaveError::Unreadable {
                    source_name: source,
                    reason,
                })
            }
        };
        if !change(&mut state) {
            return Ok(());
        }
        save_json(
            &self.path,
            "the recovery intents",
            &IntentsFile {
                version: INTENTS_FORMAT,
                intents: state.intents,
                seen: state.seen,
            },
        )
    }

    /// An exclusive advisory lock on the state directory's intents lock file, held until
    /// the returned file is dropped.
    fn lock(&self) -> Result<std::fs::File, SaveError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let lock_path = dir.join(LOCK_FILE);
        let io = |step, source| crate::state_file::StateFileError {
            step,
            path: lock_path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io("create state directory for", e))?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io("open", e))?;
        file.lock().map_err(|e| io("lock", e))?;
        Ok(file)
    }
}

/// Parses an intents file of any format this build reads.
fn parse(path: &Path, bytes: &[u8]) -> Result<IntentsFile, IntentsUnreadable> {
    let found = crate::state_file::peek_version(bytes);
    if let Some(why) =
        crate::state_file::unsupported_version(path, found, (INTENTS_OLDEST, INTENTS_FORMAT))
    {
        return Err(IntentsUnreadable::Version(why));
    }
    Ok(serde_json::from_slice::<IntentsFile>(bytes)?)
}

/// Why an intents file cannot be used.
#[derive(Debug, thiserror::Error)]
enum IntentsUnreadable {
    /// A format this build does not read (the words of `state_file::unsupported_version`).
    #[error("{0}")]
    Version(String),
    /// Not an intents file at all.
    #[error("not a vmrecover intents file ({0}); move it aside to continue")]
    NotIntents(#[from] serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(uid: &str) -> RecoveryIntent {
        RecoveryIntent {
            namespace: "default".into(),
            name: format!("vm-{uid}"),
            vm_uid: uid.into(),
            vmi_uid: format!("vmi-{uid}"),
            pvcs: vec!["disk".into()],
            disks: vec![],
            started: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    /// Issue 23: an intent is stale when its VM is gone or recreated, never when the VMs
    /// could not be read.
    #[test]
    fn stale_intents_are_those_whose_vm_is_gone_or_recreated() {
        let vm = |name: &str, uid: &str| crate::cluster::VmView {
            key: crate::cluster::ObjectKey {
                namespace: "default".into(),
                name: name.into(),
                uid: uid.into(),
                resource_version: "1".into(),
            },
            ..crate::cluster::VmView::default()
        };
        let mut gone = intent("u1");
        gone.name = "gone".into();
        let mut recreated = intent("u2");
        recreated.name = "again".into();
        let mut live = intent("u3");
        live.name = "live".into();
        let intents = [gone, recreated, live];
        let vms = [vm("again", "u2-new"), vm("live", "u3")];
        let stale = stale(&intents, Some(&vms));
        let uids: Vec<&str> = stale.iter().map(|s| s.vm_uid.as_str()).collect();
        assert_eq!(uids, ["u1", "u2"]);
        assert!(stale[1].line.contains("recreated (uid u2-new now)"));
        assert!(super::stale(&intents, None).is_empty());
    }

    #[test]
    fn add_replace_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = IntentStore::new(dir.path());
        assert_eq!(store.load(), Gathered::read(vec![]));
        store.add(intent("a")).unwrap();
        store.add(intent("b")).unwrap();
        store.add(intent("a")).unwrap();
        let names: Vec<_> = store
            .load()
            .value()
            .unwrap()
            .iter()
            .map(|i| i.vm_uid.clone())
            .collect();
        assert_eq!(names, ["b", "a"]);
        store.remove("b").unwrap();
        assert_eq!(store.load().value().unwrap().len(), 1);
    }

    #[test]
    fn corrupt_file_is_unreadable_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(INTENTS_FILE), b"{torn").unwrap();
        let store = IntentStore::new(dir.path());
        assert!(matches!(store.load(), Gathered::Unreadable { .. }));
        assert!(store.add(intent("a")).is_err());
        assert_eq!(
            std::fs::read(dir.path().join(INTENTS_FILE)).unwrap(),
            b"{torn"
        );
    }
}

/// Property tests: the intents file is read from disk, where anything may be.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// `PROPTEST_CASES` for long runs outside CI, else `default`.
    fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(500)))]

        /// Any bytes: read or unreadable with the path named, never a panic, and never
        /// overwritten by an update.
        #[test]
        fn arbitrary_bytes_are_read_or_reported(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join(INTENTS_FILE);
            std::fs::write(&path, &bytes).expect("write");
            let store = IntentStore::new(dir.path());
            match store.load() {
                Gathered::Read { .. } => {}
                Gathered::Unreadable { source, .. } => {
                    prop_assert!(source.contains(INTENTS_FILE));
                    prop_assert!(store.remove("x").is_err());
                    prop_assert_eq!(std::fs::read(&path).expect("read"), bytes);
                }
            }
        }

        /// Mutated valid files: truncated or with a byte flipped.
        #[test]
        fn damaged_files_never_panic(cut in 0usize..400, at in 0usize..400, byte in any::<u8>()) {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = IntentStore::new(dir.path());
            store.add(RecoveryIntent {
                namespace: "default".into(),
                name: "vm".into(),
                vm_uid: "u".into(),
                vmi_uid: "v".into(),
                pvcs: vec!["disk".into()],
                disks: vec![],
                started: jiff::Timestamp::UNIX_EPOCH,
            }).expect("add");
            let path = dir.path().join(INTENTS_FILE);
            let mut bytes = std::fs::read(&path).expect("read");
            if let Some(b) = bytes.get_mut(at) {
                *b = byte;
            }
            bytes.truncate(cut.max(1));
            std::fs::write(&path, &bytes).expect("write");
            let _ = store.load();
        }
    }
}
