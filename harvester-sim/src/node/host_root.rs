//! The host root a node's vmrecover reads (`--host-root`), as a directory tree: the
//! machine's identity, `/dev/longhorn`, sysfs, and `proc` with the mount table and `self`.
//! The one builder the tests, the benchmarks and the demo (`harvester-sim host-root`) use;
//! [`super::HostTree`] adds block devices and their sysfs entries to such a tree.

use std::path::{Path, PathBuf};

/// The machine-id of `harvester-node-1` in the shipped scenarios (its Node's
/// `status.nodeInfo.machineID`).
pub const MACHINE_ID: &str = "5f1e2b7c9a4d4e3f8b6a1c2d3e4f5a6b";
/// The boot `harvester-node-1`'s kubelet reported in the shipped scenarios
/// (`status.nodeInfo.bootID`).
pub const BOOT_ID: &str = "2c3d4e5f-6071-8293-a4b5-c6d7e8f90a1b";

/// The mount table of a node with nothing of a VM mounted: procfs and the root filesystem.
pub const EMPTY_MOUNTINFO: &str =
    "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n\
25 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n";

/// A host-root tree on disk.
#[derive(Debug, Clone)]
pub struct HostRoot {
    /// Its directory (what `--host-root` names).
    pub path: PathBuf,
}

impl HostRoot {
    /// A tree at `dir` holding nothing yet (created when missing).
    pub fn at(dir: &Path) -> HostRoot {
        std::fs::create_dir_all(dir).expect("mkdir host root");
        HostRoot {
            path: dir.to_path_buf(),
        }
    }

    /// A node with no Longhorn device held or mounted, whose identity is `machine_id`
    /// and this boot `boot_id`, under `dir`. `proc/self` links to `/proc/self`, so it
    /// names the reading process, as a host's procfs does with `hostPID: true`.
    pub fn empty_node(dir: &Path, machine_id: &str, boot_id: &str) -> HostRoot {
        for d in ["dev/longhorn", "proc/1", "sys/block"] {
            std::fs::create_dir_all(dir.join(d)).expect("mkdir host root");
        }
        let root = HostRoot {
            path: dir.to_path_buf(),
        };
        root.identity(machine_id, boot_id);
        if std::fs::symlink_metadata(dir.join("proc/self")).is_err() {
            std::os::unix::fs::symlink("/proc/self", dir.join("proc/self")).expect("proc/self");
        }
        root.mountinfo(EMPTY_MOUNTINFO);
        root
    }

    /// `harvester-node-1` of the shipped scenarios, with nothing of a VM on it.
    pub fn harvester_node_1(dir: &Path) -> HostRoot {
        Self::empty_node(dir, MACHINE_ID, BOOT_ID)
    }

    /// Writes the machine's identity: `etc/machine-id` and this boot's id (written dashed,
    /// as the kernel shows it, whether given with dashes or as 32 hex digits).
    pub fn identity(&self, machine_id: &str, boot_id: &str) {
        let random = self.path.join("proc/sys/kernel/random");
        std::fs::create_dir_all(&random).expect("mkdir proc/sys/kernel/random");
        std::fs::create_dir_all(self.path.join("etc")).expect("mkdir etc");
        std::fs::write(self.path.join("etc/machine-id"), format!("{machine_id}\n"))
            .expect("write machine-id");
        std::fs::write(random.join("boot_id"), format!("{}\n", dashed(boot_id)))
            .expect("write boot_id");
    }

    /// Replaces the mount table (`proc/1/mountinfo`).
    pub fn mountinfo(&self, text: &str) {
        std::fs::create_dir_all(self.path.join("proc/1")).expect("mkdir proc/1");
        std::fs::write(self.path.join("proc/1/mountinfo"), text).expect("write mountinfo");
    }

    /// Switches the tree to another boot of the same machine.
    pub fn reboot(&self, boot_id: &str) {
        let machine =
            std::fs::read_to_string(self.path.join("etc/machine-id")).expect("read machine-id");
        self.identity(machine.trim(), boot_id);
    }
}

/// A boot id with dashes (8-4-4-4-12), from either form.
pub fn dashed(boot_id: &str) -> String {
    let hex: String = boot_id.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return boot_id.to_string();
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_ids_are_written_dashed() {
        assert_eq!(dashed("2c3d4e5f60718293a4b5c6d7e8f90a1b"), BOOT_ID);
        assert_eq!(dashed(BOOT_ID), BOOT_ID);
    }

    #[test]
    fn an_empty_node_has_identity_mounts_and_self() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::harvester_node_1(dir.path());
        let read = |p: &str| std::fs::read_to_string(root.path.join(p)).unwrap();
        assert_eq!(read("etc/machine-id").trim(), MACHINE_ID);
        assert_eq!(read("proc/sys/kernel/random/boot_id").trim(), BOOT_ID);
        assert_eq!(read("proc/1/mountinfo"), EMPTY_MOUNTINFO);
        assert_eq!(
            std::fs::read_link(root.path.join("proc/self")).unwrap(),
            Path::new("/proc/self")
        );
        root.reboot("0a1b2c3d4e5f40718293a4b5c6d7e8f9");
        assert_eq!(
            read("proc/sys/kernel/random/boot_id").trim(),
            "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9"
        );
    }
}
