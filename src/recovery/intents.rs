//! Recovery intents: before vmrecover first changes a VM it records the VM here, and it
//! forgets it once the VM is recovered. After a crash (or kill -9) between clearing the
//! VMI and clearing the VM, the next run still knows the VM was on this node.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::evidence::Gathered;
use crate::state_file::{save_json, SaveError};

/// The file name under the state directory.
pub const INTENTS_FILE: &str = "recovery-intents.json";

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
    /// The PV's name.
    pub pv: String,
    /// The CSI volume handle (the Longhorn volume).
    pub handle: String,
    /// The CSI driver, when known.
    pub driver: Option<String>,
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

    /// Reads the intents; a missing file is none; a corrupt one is unreadable evidence.
    pub fn load(&self) -> Gathered<Vec<RecoveryIntent>> {
        let source = self.path.display().to_string();
        match std::fs::read(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Gathered::read(Vec::new()),
            Err(e) => Gathered::unreadable(source, e.to_string()),
            Ok(bytes) => match serde_json::from_slice::<IntentsFile>(&bytes) {
                Ok(f) => Gathered::read(f.intents),
                Err(e) => Gathered::unreadable(
                    source,
                    format!("not a vmrecover intents file ({e}); move it aside to continue"),
                ),
            },
        }
    }

    /// Records `intent` (replacing one for the same VM UID).
    pub fn add(&self, intent: RecoveryIntent) -> Result<(), SaveError> {
        let mut all = self.load_for_update()?;
        all.retain(|i| i.vm_uid != intent.vm_uid);
        all.push(intent);
        self.save(all)
    }

    /// Forgets the VM with `vm_uid`.
    pub fn remove(&self, vm_uid: &str) -> Result<(), SaveError> {
        let mut all = self.load_for_update()?;
        let before = all.len();
        all.retain(|i| i.vm_uid != vm_uid);
        if all.len() == before {
            return Ok(());
        }
        self.save(all)
    }

    fn load_for_update(&self) -> Result<Vec<RecoveryIntent>, SaveError> {
        match self.load() {
            Gathered::Read { value } => Ok(value),
            Gathered::Unreadable { source, reason } => Err(SaveError::Unreadable {
                source_name: source,
                reason,
            }),
        }
    }

    fn save(&self, intents: Vec<RecoveryIntent>) -> Result<(), SaveError> {
        save_json(
            &self.path,
            "the recovery intents",
            &IntentsFile {
                version: 1,
                intents,
            },
        )
    }
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
