//! Disk evidence on host-root fixture trees: Longhorn devices, open files, loop and
//! device-mapper holders, mounts (filesystem and block mode), and could-not-read cases.

use harvester_sim::node::{is_root, HostTree};

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use vmrecover::node::volumes::{self, MatchedBy};
use vmrecover::node::{self, csi_paths, NodeFacts, NodeOptions};

const PV_FS: &str = "pvc-3f1c7e2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a";
const PV_BLK: &str = "pvc-9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d";
const PV_IDLE: &str = "pvc-1d2e3f4a-5b6c-4d7e-8f9a-a0b1c2d3e4f5";
const PV_ENC: &str = "pvc-5e5e5e5e-6f6f-4a7a-8b8b-9c9c9c9c9c9c";
const PV_STALE: &str = "pvc-77aa88bb-99cc-4ddd-8eee-ffff00001111";
const PV_GONE: &str = "pvc-0f0f0f0f-1e1e-4d2d-8c3c-4b4b4b4b4b4b";
const POD: &str = "5d7c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d";
const BLK_POD: &str = "6e8d2c3b-4f5a-4b6c-9d7e-8f9a0b1c2d3e";

fn fixture_text() -> String {
    let raw = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node/harvester-node/mountinfo"),
    )
    .expect("fixture mountinfo");
    raw.replace("@SHA_FS@", &csi_paths::staging_hash(PV_FS))
        .replace("@SHA_ENC@", &csi_paths::staging_hash(PV_ENC))
        .replace("@PV_FS@", PV_FS)
        .replace("@PV_BLK@", PV_BLK)
        .replace("@PV_ENC@", PV_ENC)
        .replace("@PV_STALE@", PV_STALE)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn fd_link(root: &Path, pid: u32, comm: &str, fd: u32, target: &str) {
    let dir = root.join(format!("proc/{pid}/fd"));
    std::fs::create_dir_all(&dir).expect("mkdir fd");
    write(&root.join(format!("proc/{pid}/comm")), &format!("{comm}\n"));
    symlink(target, dir.join(fd.to_string())).expect("fd link");
}

/// Builds the Harvester node tree of `tests/fixtures/node/harvester-node`: real block
/// device nodes (root only), sysfs as on a node, fake processes' descriptors.
fn harvester_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let t = HostTree::new(root);
    t.disk("sda", (8, 0));
    t.longhorn(PV_BLK, "sdb", (8, 16));
    t.longhorn(PV_FS, "sdc", (8, 32));
    t.longhorn(PV_IDLE, "sde", (8, 64));
    // An unused partition: not a holder.
    t.partition("sde", "sde1", (8, 65), 1);
    // An encrypted volume: dm-crypt maps it under the volume's name.
    t.longhorn(PV_ENC, "sdf", (8, 80));
    t.dm("dm-3", (254, 3), PV_ENC, &["sdf"]);
    // The host's own LVM volume (mounted at /data): not Longhorn.
    t.dm("dm-0", (254, 0), "vg0-data", &["sda"]);
    t.mountinfo(&fixture_text());
    write(&root.join("proc/1/comm"), "systemd\n");
    std::fs::create_dir_all(root.join("proc/1/fd")).expect("mkdir");
    // A qemu of a filesystem-mode VM: its disk image on the published volume.
    fd_link(root, 4242, "qemu-system-x86", 0, "/dev/null");
    fd_link(root, 4242, "qemu-system-x86", 1, "pipe:[81234]");
    fd_link(
        root,
        4242,
        "qemu-system-x86",
        18,
        &format!("/var/lib/kubelet/pods/{POD}/volumes/kubernetes.io~csi/{PV_FS}/mount/disk.img"),
    );
    // A qemu of a block-mode VM holding the device.
    fd_link(
        root,
        4343,
        "qemu-kvm",
        20,
        &format!("/dev/longhorn/{PV_BLK}"),
    );
    // A process still holding a device node that was removed (volume detached under it).
    fd_link(
        root,
        4545,
        "dd",
        3,
        &format!("/dev/longhorn/{PV_GONE} (deleted)"),
    );
    // An unrelated process.
    fd_link(root, 4646, "sshd", 3, "socket:[99]");
    // A process that exited while we scan: its directory is there, its fd dir is not.
    write(&root.join("proc/4747/comm"), "gone\n");
    // Kubelet's loop device (its "descriptor lock") on the block volume's global map
    // path; an unbound loop device; the OS image loop device.
    t.loop_dev(
        "loop3",
        (7, 3),
        &format!("/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/{PV_BLK}/dev/{BLK_POD}"),
    );
    t.unbound_loop("loop4", (7, 4));
    t.loop_dev("loop0", (7, 0), "/run/initramfs/live/rootfs.squashfs");
    dir
}

/// The disk tests need block device nodes, which only root can create.
macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: creating block device nodes needs root");
            return;
        }
    };
}

fn facts(root: &Path) -> NodeFacts {
    NodeFacts {
        host_root: root.display().to_string(),
        processes: vmrecover::evidence::Gathered::read(Vec::new()),
        disks: volumes::gather(root),
        identity: node::identity::read(root),
    }
}

fn holders(f: &NodeFacts, v: &str) -> Vec<String> {
    f.volume_holders(v)
        .unwrap_or_else(|e| panic!("holders of {v} unknown: {e}"))
}

#[test]
fn harvester_node_evidence() {
    require_root!();
    let dir = harvester_tree();
    let f = facts(dir.path());

    let devs: Vec<&str> = f
        .disks
        .devices
        .value()
        .expect("devices read")
        .iter()
        .map(|d| d.volume.as_str())
        .collect();
    let mut expected = vec![PV_FS, PV_BLK, PV_IDLE, PV_ENC];
    expected.sort();
    assert_eq!(devs, expected);

    let fs = holders(&f, PV_FS);
    assert_eq!(fs.len(), 3, "{fs:#?}");
    assert!(fs
        .iter()
        .any(|h| h.starts_with("open by pid 4242 (qemu-system-x86) fd 18")));
    assert!(fs
        .iter()
        .any(|h| h.contains("/csi/driver.longhorn.io/") && h.contains("globalmount")));
    assert!(fs
        .iter()
        .any(|h| h.contains(&format!("kubernetes.io~csi/{PV_FS}/mount"))));

    let blk = holders(&f, PV_BLK);
    assert_eq!(blk.len(), 3, "{blk:#?}");
    assert!(blk
        .iter()
        .any(|h| h.starts_with("held by loop3 (loop device backed by")));
    assert!(blk
        .iter()
        .any(|h| h.starts_with("open by pid 4343 (qemu-kvm) fd 20")));
    assert!(blk
        .iter()
        .any(|h| h.contains(&format!("volumeDevices/publish/{PV_BLK}/{BLK_POD}"))));

    let enc = holders(&f, PV_ENC);
    assert_eq!(enc.len(), 2, "{enc:#?}");
    assert!(enc
        .iter()
        .any(|h| h.contains(&format!("from /dev/mapper/{PV_ENC}"))));
    assert!(enc
        .iter()
        .any(|h| h.starts_with(&format!("held by dm-3 (device-mapper device {PV_ENC}"))));

    assert_eq!(holders(&f, PV_STALE).len(), 1);
    let gone = holders(&f, PV_GONE);
    assert_eq!(gone.len(), 1);
    assert!(gone[0].starts_with("open by pid 4545 (dd)"));

    assert!(
        holders(&f, PV_IDLE).is_empty(),
        "attached but unused (an unused partition included): provably not held"
    );
    assert!(holders(&f, "pvc-not-on-this-node").is_empty());

    // Unrelated mounts are not Longhorn evidence, including an LVM mapper device.
    let mounts = f.disks.mounts.value().expect("mounts read");
    assert!(mounts.source.ends_with("proc/1/mountinfo"));
    assert!(mounts
        .entries
        .iter()
        .all(|m| m.mount_point != "/data" && m.mount_point != "/mnt/data disk"));
    let open = f.disks.open_files.value().expect("open files read");
    assert!(open.unreadable.is_empty(), "{:?}", open.unreadable);
    // Device paths carry the Longhorn volume name, kubelet paths the PV name.
    for h in &open.holders {
        let want = if h.target.starts_with("/dev/longhorn/") {
            MatchedBy::Path
        } else {
            MatchedBy::KubeletPath
        };
        assert_eq!(h.matched_by, want, "{h:?}");
    }

    // The table names each volume and how it is held.
    let mut out = Vec::new();
    node::render_table(&f, &mut out).expect("render");
    let table = String::from_utf8(out).expect("utf8");
    assert!(
        table.contains(PV_IDLE) && table.contains("not held"),
        "{table}"
    );
    assert!(table.contains("held by loop3"), "{table}");
}

#[test]
fn missing_sysfs_makes_unheld_volumes_unknown_but_held_ones_stay_held() {
    require_root!();
    let dir = harvester_tree();
    std::fs::remove_dir_all(dir.path().join("sys")).expect("rm sys");
    let f = facts(dir.path());
    let err = f
        .volume_holders(PV_IDLE)
        .expect_err("cannot prove")
        .to_string();
    assert!(err.contains("sys/block"), "{err}");
    assert!(!holders(&f, PV_FS).is_empty());
}

#[test]
fn missing_mountinfo_is_could_not_read() {
    require_root!();
    let dir = harvester_tree();
    std::fs::remove_file(dir.path().join("proc/1/mountinfo")).expect("rm");
    let f = facts(dir.path());
    assert!(f.disks.mounts.value().is_none());
    let err = f
        .volume_holders(PV_IDLE)
        .expect_err("cannot prove")
        .to_string();
    assert!(err.contains("mountinfo"), "{err}");
}

#[test]
fn mountinfo_falls_back_to_self_and_says_so() {
    require_root!();
    let dir = harvester_tree();
    let text = std::fs::read(dir.path().join("proc/1/mountinfo")).expect("read");
    std::fs::remove_file(dir.path().join("proc/1/mountinfo")).expect("rm");
    // A `self` of our own making (the tree's links to the real procfs), in the same
    // mount namespace as pid 1.
    std::fs::remove_file(dir.path().join("proc/self")).expect("rm self link");
    std::fs::create_dir_all(dir.path().join("proc/self/ns")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("proc/1/ns")).expect("mkdir");
    symlink("mnt:[4026531841]", dir.path().join("proc/1/ns/mnt")).expect("ns");
    symlink("mnt:[4026531841]", dir.path().join("proc/self/ns/mnt")).expect("ns");
    std::fs::write(dir.path().join("proc/self/mountinfo"), text).expect("write");
    let f = facts(dir.path());
    assert!(f
        .disks
        .mounts
        .value()
        .expect("read")
        .source
        .ends_with("proc/self/mountinfo"));
    assert_eq!(holders(&f, PV_STALE).len(), 1);

    // vmrecover's own mount namespace is not the host's (a DaemonSet's container): its
    // mount table proves nothing about the host's.
    std::fs::remove_file(dir.path().join("proc/self/ns/mnt")).expect("rm");
    symlink("mnt:[4026532999]", dir.path().join("proc/self/ns/mnt")).expect("ns");
    let f = facts(dir.path());
    let err = f
        .volume_holders(PV_IDLE)
        .expect_err("cannot prove")
        .to_string();
    assert!(err.contains("another mount namespace"), "{err}");
}

#[test]
fn malformed_mountinfo_is_could_not_read() {
    require_root!();
    let dir = harvester_tree();
    let mut text = fixture_text();
    text.push_str("1800 22 0:90 /only-four-fields\n");
    write(&dir.path().join("proc/1/mountinfo"), &text);
    let f = facts(dir.path());
    let err = f
        .volume_holders(PV_IDLE)
        .expect_err("cannot prove")
        .to_string();
    assert!(err.contains("line 19"), "{err}");
}

#[test]
fn missing_host_dev_is_could_not_read() {
    require_root!();
    let dir = harvester_tree();
    std::fs::remove_dir_all(dir.path().join("dev")).expect("rm dev");
    let f = facts(dir.path());
    assert!(f.disks.devices.value().is_none());
    assert!(f.volume_holders(PV_IDLE).is_err());
}

#[test]
fn no_longhorn_dir_means_no_devices() {
    require_root!();
    let dir = harvester_tree();
    std::fs::remove_dir_all(dir.path().join("dev/longhorn")).expect("rm");
    let f = facts(dir.path());
    assert_eq!(f.disks.devices.value().map(Vec::len), Some(0));
    // Mounts and open files still count.
    assert!(!holders(&f, PV_FS).is_empty());
}

/// A process whose descriptors cannot be read (EACCES) makes every volume without other
/// evidence unknown (fail closed). Root reads any directory, so as root the scan runs in
/// the `vmrecover` binary as user `nobody`.
#[test]
fn unreadable_fd_dir_is_could_not_read() {
    require_root!();
    let dir = harvester_tree();
    let root = dir.path();
    for entry in walk(root) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        if !entry.is_symlink() {
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod root");
    std::fs::set_permissions(
        root.join("proc/4646/fd"),
        std::fs::Permissions::from_mode(0o000),
    )
    .expect("chmod fd");

    let f: NodeFacts = if nix::unistd::geteuid().is_root() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmrecover"))
            .args([
                "--log-target",
                "stderr",
                "status",
                "--output",
                "json",
                "--host-root",
            ])
            .arg(root)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run vmrecover as nobody");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status JSON: {e}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let section = json
            .get("local")
            .or_else(|| json.get("node"))
            .expect("node section");
        serde_json::from_value(section.clone()).expect("node facts")
    } else {
        facts(root)
    };
    let open = f.disks.open_files.value().expect("scan ran");
    let u = open
        .unreadable
        .iter()
        .find(|u| u.pid == 4646)
        .unwrap_or_else(|| panic!("pid 4646 not unreadable: {open:?}"));
    assert_eq!(u.comm, "sshd");
    assert!(u.reason.contains("ermission denied"), "{}", u.reason);
    let err = f
        .volume_holders(PV_IDLE)
        .expect_err("fail closed")
        .to_string();
    assert!(err.contains("pid 4646 (sshd)"), "{err}");
    // Positive evidence elsewhere is still an answer.
    assert!(!holders(&f, PV_BLK).is_empty());
}

use std::os::unix::process::CommandExt;

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&p) {
            for e in rd.flatten() {
                let path = e.path();
                if path.is_dir() && !path.is_symlink() {
                    stack.push(path.clone());
                }
                out.push(path);
            }
        }
    }
    out
}

/// The device-number path with real kernel objects (root only: creating a block device
/// node needs CAP_MKNOD): `dev/longhorn/<pv>` is a block device node whose number is the
/// device of the filesystem holding a file a real process keeps open, the way a qemu in
/// a container holds `/dev/<disk>` or a `disk.img` on a mounted volume.
#[test]
fn real_process_holding_a_device_by_number() {
    require_root!();
    const PV_REAL: &str = "pvc-abcdefab-cdef-4abc-8def-abcdefabcdef";
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let disk = root.join("disk.img");
    std::fs::write(&disk, b"guest data").expect("disk");
    let t = HostTree::with_real_proc(root);
    t.longhorn(PV_REAL, "sdz", harvester_sim::node::fs_dev(&disk));
    let holder = harvester_sim::node::FakeProc::spawn(
        harvester_sim::node::QEMU,
        "/usr/bin/qemu-system-x86_64",
        &[],
        &harvester_sim::node::FakeOpts {
            open: Some(disk.clone()),
            ..harvester_sim::node::FakeOpts::default()
        },
    );
    let f = node::gather(&NodeOptions {
        host_root: root.to_path_buf(),
    });
    let open = f.disks.open_files.value().expect("open files read");
    let h = open
        .holders
        .iter()
        // Its inherited stderr may be a file on the same filesystem (a CI log): look
        // for the disk image's descriptor itself.
        .find(|h| h.pid == holder.pid() && h.target.ends_with("/disk.img"))
        .unwrap_or_else(|| panic!("fake qemu not found holding {PV_REAL}: {open:#?}"));
    assert_eq!(h.volume, PV_REAL);
    assert_eq!(h.matched_by, MatchedBy::DeviceNumber);
    let held = f.volume_holders(PV_REAL).expect("known");
    assert!(held
        .iter()
        .any(|s| s.starts_with(&format!("open by pid {}", holder.pid()))));
    drop(holder);
}
