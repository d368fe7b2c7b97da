//! This machine's identity (design §5, "this node is this machine"): the machine id and
//! this boot's id, read under the host root, to prove that the Kubernetes Node vmrecover
//! acts for (`--node`) is the machine whose processes and disks it read.
//!
//! The kubelet reports them in `Node.status.nodeInfo`: `machineID` is the content of
//! `/etc/machine-id` (32 hex digits), `bootID` the content of
//! `/proc/sys/kernel/random/boot_id` (a dashed UUID), both trimmed. Both sides are
//! normalised the same way (lowercase, no dashes, no whitespace) before comparing.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bounded::{self, ScanLimits};
use crate::boot::clock::{normalize_id, read_id, BOOT_ID_PATH, MACHINE_ID_PATH};
use crate::evidence::Gathered;

/// This machine's identity, normalised to 32 lowercase hex digits each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIdentity {
    /// `<host_root>/etc/machine-id`.
    pub machine_id: String,
    /// `<host_root>/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
}

/// How a Node's reported identity compares with this machine's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum NodeMatch {
    /// Same machine, same boot: the Node is this machine.
    Same,
    /// Another machine: `--node` names a different node than the one vmrecover runs on.
    OtherMachine {
        /// The Node's `machineID`, normalised.
        node: String,
        /// This machine's.
        here: String,
    },
    /// Same machine, another boot: right after a reboot the kubelet has not yet posted
    /// this boot's status (the Node still shows the previous boot). Not proof either way
    /// until it does.
    OtherBoot {
        /// The Node's `bootID`, normalised.
        node: String,
        /// This boot's.
        here: String,
    },
    /// The Node reports no id, or one that is not a 128-bit id.
    Unusable {
        /// `machineID` or `bootID`.
        field: String,
        /// What it reported.
        value: String,
    },
}

impl HostIdentity {
    /// Compares with a Node's `status.nodeInfo.machineID` and `bootID` (as the kubelet
    /// writes them: any case, with or without dashes).
    pub fn check_node(&self, machine_id: &str, boot_id: &str) -> NodeMatch {
        let Some(m) = normalize_id(machine_id) else {
            return NodeMatch::Unusable {
                field: "machineID".into(),
                value: machine_id.into(),
            };
        };
        if m != self.machine_id {
            return NodeMatch::OtherMachine {
                node: m,
                here: self.machine_id.clone(),
            };
        }
        let Some(b) = normalize_id(boot_id) else {
            return NodeMatch::Unusable {
                field: "bootID".into(),
                value: boot_id.into(),
            };
        };
        if b != self.boot_id {
            return NodeMatch::OtherBoot {
                node: b,
                here: self.boot_id.clone(),
            };
        }
        NodeMatch::Same
    }
}

/// Reads this machine's identity under `host_root`, with the default time limit.
pub fn read(host_root: &Path) -> Gathered<HostIdentity> {
    read_with(host_root, ScanLimits::default().read)
}

/// Reads this machine's identity under `host_root`, waiting at most `limit`.
///
/// `Unreadable` (naming the path) when either file is missing, empty, not a 128-bit id,
/// or not read in time.
pub fn read_with(host_root: &Path, limit: Duration) -> Gathered<HostIdentity> {
    let root = host_root.to_path_buf();
    let machine = host_root.join(MACHINE_ID_PATH);
    let task = format!(
        "{} and {}",
        machine.display(),
        host_root.join(BOOT_ID_PATH).display()
    );
    let read = bounded::run(&task, limit, move |p| {
        p.reading(root.join(MACHINE_ID_PATH).display());
        let machine = read_id(&root, MACHINE_ID_PATH);
        p.reading(root.join(BOOT_ID_PATH).display());
        (machine, read_id(&root, BOOT_ID_PATH))
    });
    match read {
        Err(t) => Gathered::unreadable(machine.display().to_string(), t.to_string()),
        Ok((Gathered::Read { value: machine_id }, Gathered::Read { value: boot_id })) => {
            Gathered::read(HostIdentity {
                machine_id,
                boot_id,
            })
        }
        Ok((Gathered::Unreadable { source, reason }, other))
        | Ok((other, Gathered::Unreadable { source, reason })) => match other {
            Gathered::Unreadable {
                source: s2,
                reason: r2,
            } => Gathered::unreadable(source, format!("{reason}; {s2}: {r2}")),
            Gathered::Read { .. } => Gathered::unreadable(source, reason),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACHINE: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f0";
    const BOOT_DASHED: &str = "0F0E0D0C-0B0A-0908-0706-050403020100";

    fn host(machine: Option<&str>, boot: Option<&str>) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        if let Some(m) = machine {
            std::fs::create_dir_all(root.path().join("etc")).expect("mkdir");
            std::fs::write(root.path().join(MACHINE_ID_PATH), m).expect("write");
        }
        if let Some(b) = boot {
            std::fs::create_dir_all(root.path().join("proc/sys/kernel/random")).expect("mkdir");
            std::fs::write(root.path().join(BOOT_ID_PATH), b).expect("write");
        }
        root
    }

    #[test]
    fn reads_and_normalises_both_ids() {
        let root = host(
            Some(&format!("{MACHINE}\n")),
            Some(&format!("{BOOT_DASHED}\n")),
        );
        let id = read(root.path());
        let id = id.value().expect("read");
        assert_eq!(id.machine_id, MACHINE);
        assert_eq!(id.boot_id, "0f0e0d0c0b0a09080706050403020100");
    }

    #[test]
    fn missing_or_empty_files_are_unreadable_naming_the_path() {
        for (machine, boot, path) in [
            (None, Some(BOOT_DASHED), MACHINE_ID_PATH),
            (Some(MACHINE), None, BOOT_ID_PATH),
            (Some(""), Some(BOOT_DASHED), MACHINE_ID_PATH),
            (Some(MACHINE), Some(" \n"), BOOT_ID_PATH),
        ] {
            let root = host(machine, boot);
            let err = read(root.path())
                .as_result()
                .expect_err("unreadable")
                .to_string();
            assert!(
                err.contains(&root.path().join(path).display().to_string()),
                "{err}"
            );
        }
        let root = host(None, None);
        let err = read(root.path())
            .as_result()
            .expect_err("unreadable")
            .to_string();
        assert!(
            err.contains("machine-id") && err.contains("boot_id"),
            "{err}"
        );
    }

    #[test]
    fn compares_with_what_the_kubelet_reports() {
        let id = HostIdentity {
            machine_id: MACHINE.into(),
            boot_id: "0f0e0d0c0b0a09080706050403020100".into(),
        };
        // The kubelet: machineID as the file's 32 hex digits, bootID dashed.
        assert_eq!(
            id.check_node(MACHINE, "0f0e0d0c-0b0a-0908-0706-050403020100"),
            NodeMatch::Same
        );
        assert_eq!(
            id.check_node(&MACHINE.to_uppercase(), BOOT_DASHED),
            NodeMatch::Same
        );
        assert!(matches!(
            id.check_node("00000000000000000000000000000000", BOOT_DASHED),
            NodeMatch::OtherMachine { .. }
        ));
        assert!(matches!(
            id.check_node(MACHINE, "11111111-0b0a-0908-0706-050403020100"),
            NodeMatch::OtherBoot { .. }
        ));
        assert!(matches!(
            id.check_node("", BOOT_DASHED),
            NodeMatch::Unusable { .. }
        ));
    }
}
