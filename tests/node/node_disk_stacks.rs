//! Holes 1 and 2: a Longhorn volume is held when anything on top of its device is — a
//! partition mounted or open, a guest's LVM auto-activated on the host, md, a loop
//! device — and the evidence is found under both of a volume's names (the PV name the
//! kubelet uses, the volume handle Longhorn uses).
//!
//! Host-root trees as on a node: real block device nodes (`mknod`, root only), sysfs
//! with partitions, `holders/` links and `sys/dev/block` links, mountinfo, and fake
//! processes' descriptors; one test uses real processes.

use std::os::unix::fs::symlink;
use std::path::Path;

use harvester_sim::node::{fs_dev, is_root, mknod_block, HostTree};
use vmrecover::evidence::Gathered;
use vmrecover::node::csi_paths;
use vmrecover::node::volumes::{self, MatchedBy, NamedBy, Relation};
use vmrecover::node::{self, NodeFacts, NodeOptions, VolumeKey};

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: creating block device nodes needs root");
            return;
        }
    };
}

const POD: &str = "5d7c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d";
const KUBELET_CSI: &str = "/var/lib/kubelet/plugins/kubernetes.io/csi";

fn facts(root: &Path) -> NodeFacts {
    NodeFacts {
        host_root: root.display().to_string(),
        processes: Gathered::read(Vec::new()),
        disks: volumes::gather(root),
        identity: node::identity::read(root),
    }
}

fn held(f: &NodeFacts, key: &VolumeKey) -> Vec<String> {
    f.volume_holders_for(key)
        .unwrap_or_else(|e| panic!("holders of {key} unknown: {e}"))
}

/// A fake process whose descriptor `fd` points at `target`.
fn fd_link(root: &Path, pid: u32, comm: &str, fd: u32, target: &str) {
    let dir = root.join(format!("proc/{pid}/fd"));
    std::fs::create_dir_all(&dir).expect("mkdir fd");
    std::fs::write(root.join(format!("proc/{pid}/comm")), format!("{comm}\n")).expect("comm");
    symlink(target, dir.join(fd.to_string())).expect("fd link");
}

const BASE_MOUNTS: &str = "\
22 1 7:0 / / ro,relatime shared:1 - ext2 /dev/loop0 ro
23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=4096k,mode=755
52 22 8:5 /.state/var-lib-kubelet.bind /var/lib/kubelet rw,relatime shared:27 - ext4 /dev/sda5 rw
";

const PV_PART: &str = "pvc-11111111-0000-4000-8000-000000000001";
const PV_LVM: &str = "pvc-11111111-0000-4000-8000-000000000002";
const PV_FD: &str = "pvc-11111111-0000-4000-8000-000000000003";
const PV_MD_A: &str = "pvc-11111111-0000-4000-8000-000000000004";
const PV_MD_B: &str = "pvc-11111111-0000-4000-8000-000000000005";
const PV_LOOP: &str = "pvc-11111111-0000-4000-8000-000000000006";
const PV_CYCLE: &str = "pvc-11111111-0000-4000-8000-000000000007";
const PV_FREE: &str = "pvc-11111111-0000-4000-8000-000000000008";
const PV_LOOP_DISK: &str = "pvc-11111111-0000-4000-8000-000000000009";

/// One Longhorn volume per way of holding it through a device on top of it.
fn stacked_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let t = HostTree::new(root);
    t.disk("sda", (8, 0));
    // A partition mounted (a restore job mounted the guest's filesystem on the host).
    t.longhorn(PV_PART, "sdg", (8, 96));
    t.partition("sdg", "sdg1", (8, 97), 1);
    t.partition("sdg", "sdg2", (8, 98), 2);
    // The guest's LVM on its first partition, auto-activated by the host's lvm2.
    t.longhorn(PV_LVM, "sdh", (8, 112));
    t.partition("sdh", "sdh1", (8, 113), 1);
    t.dm("dm-5", (254, 5), "vg_guest-root", &["sdh1"]);
    t.dm("dm-6", (254, 6), "vg_guest-swap", &["sdh1"]);
    // A partition's device node open in a process (matched by device number).
    t.longhorn(PV_FD, "sdi", (8, 128));
    t.partition("sdi", "sdi1", (8, 129), 1);
    mknod_block(&root.join("dev/sdi1"), (8, 129));
    fd_link(
        root,
        5252,
        "dd",
        3,
        &root.join("dev/sdi1").display().to_string(),
    );
    // An md mirror over two volumes.
    t.longhorn(PV_MD_A, "sdj", (8, 144));
    t.longhorn(PV_MD_B, "sdk", (8, 160));
    t.md("md127", (9, 127), &["sdj", "sdk"]);
    // A loop device over a partition, its own partition mounted.
    t.longhorn(PV_LOOP, "sdl", (8, 176));
    t.partition("sdl", "sdl2", (8, 178), 2);
    t.loop_dev("loop6", (7, 6), "/dev/sdl2");
    t.partition("loop6", "loop6p1", (259, 0), 1);
    // A holders cycle (sysfs never shows one; a broken tree might): followed once.
    t.longhorn(PV_CYCLE, "sdm", (8, 192));
    t.dm("dm-7", (254, 7), "cycle-a", &["sdm"]);
    t.dm("dm-8", (254, 8), "cycle-b", &["dm-7"]);
    symlink(
        t.dir_of("dm-7"),
        t.dir_of("dm-8").join("holders").join("dm-7"),
    )
    .expect("cycle link");
    // A loop device over the whole disk, by its kernel name.
    t.longhorn(PV_LOOP_DISK, "sdo", (8, 224));
    t.loop_dev("loop9", (7, 9), "/dev/sdo");
    // Attached, partitioned, nothing on it.
    t.longhorn(PV_FREE, "sdn", (8, 208));
    t.partition("sdn", "sdn1", (8, 209), 1);
    // The host's own disk with its LVM: not Longhorn.
    t.partition("sda", "sda5", (8, 5), 5);
    t.dm("dm-0", (254, 0), "vg0-data", &["sda5"]);
    t.unbound_loop("loop1", (7, 1));
    t.mountinfo(&format!(
        "{BASE_MOUNTS}\
         2001 22 8:97 / /mnt/restore rw,relatime shared:900 - ext4 /dev/sdg1 rw\n\
         2002 22 259:0 / /mnt/image rw,relatime shared:901 - xfs /dev/loop6p1 rw\n\
         2003 22 254:0 / /data rw,relatime shared:902 - xfs /dev/mapper/vg0-data rw\n"
    ));
    fd_link(root, 4646, "sshd", 3, "socket:[99]");
    dir
}

#[test]
fn partitions_and_stacked_devices_hold_the_volume() {
    require_root!();
    let dir = stacked_tree();
    let f = facts(dir.path());
    let stack = f.disks.kernel_holders.value().expect("sysfs read");

    // A mounted partition.
    let part = held(&f, &VolumeKey::same(PV_PART));
    assert_eq!(part.len(), 1, "{part:#?}");
    assert!(part[0].starts_with("mounted at /mnt/restore (ext4 from /dev/sdg1)"));
    // Its partitions are known, but a partition alone holds nothing.
    let parts: Vec<&str> = stack
        .iter()
        .filter(|h| h.volume == PV_PART)
        .map(|h| h.device.as_str())
        .collect();
    assert_eq!(parts, ["sdg1", "sdg2"]);
    assert!(stack
        .iter()
        .filter(|h| h.volume == PV_PART)
        .all(|h| h.relation == Relation::Partition && h.named_by == NamedBy::Handle));

    // The guest's LVM active on the host.
    let lvm = held(&f, &VolumeKey::same(PV_LVM));
    assert_eq!(lvm.len(), 2, "{lvm:#?}");
    assert!(lvm
        .iter()
        .any(|h| h == "held by dm-5 (device-mapper device vg_guest-root stacked on sdh1)"));
    assert!(lvm.iter().any(|h| h.starts_with("held by dm-6 (")));

    // A partition's device node held open: by device number.
    let fd = held(&f, &VolumeKey::same(PV_FD));
    assert_eq!(fd.len(), 1, "{fd:#?}");
    assert!(
        fd[0].starts_with("open by pid 5252 (dd) fd 3 -> "),
        "{fd:?}"
    );
    let open = f.disks.open_files.value().expect("open files");
    assert!(open
        .holders
        .iter()
        .any(|h| h.pid == 5252 && h.matched_by == MatchedBy::DeviceNumber));

    // An md mirror holds both of its volumes.
    for v in [PV_MD_A, PV_MD_B] {
        let md = held(&f, &VolumeKey::same(v));
        assert_eq!(
            md,
            [format!(
                "held by md127 (md (software RAID) device stacked on {})",
                if v == PV_MD_A { "sdj" } else { "sdk" }
            )]
        );
    }

    // A loop device over a partition, and a mount of the loop device's partition.
    let lp = held(&f, &VolumeKey::same(PV_LOOP));
    assert_eq!(lp.len(), 2, "{lp:#?}");
    assert!(lp
        .iter()
        .any(|h| h == "held by loop6 (loop device backed by /dev/sdl2)"));
    assert!(lp.iter().any(|h| h.starts_with("mounted at /mnt/image")));

    assert_eq!(
        held(&f, &VolumeKey::same(PV_LOOP_DISK)),
        ["held by loop9 (loop device backed by /dev/sdo)"]
    );

    // A cycle is followed once and ends.
    let cy = held(&f, &VolumeKey::same(PV_CYCLE));
    assert!(cy.iter().any(|h| h.starts_with("held by dm-7")), "{cy:?}");
    assert!(cy.iter().any(|h| h.starts_with("held by dm-8")), "{cy:?}");

    // Partitioned and attached, nothing on it: provably not held.
    assert!(held(&f, &VolumeKey::same(PV_FREE)).is_empty());
    // The host's own LVM and disks are nobody's volume.
    assert!(stack
        .iter()
        .all(|h| h.device != "dm-0" && h.device != "sda5"));
    assert!(f
        .disks
        .mounts
        .value()
        .expect("mounts")
        .entries
        .iter()
        .all(|m| m.mount_point != "/data"));
}

#[test]
fn unreadable_or_unbounded_sysfs_is_could_not_read() {
    require_root!();
    // A partition whose holders cannot be listed.
    let dir = stacked_tree();
    let t = HostTree::new(dir.path());
    let holders = t.dir_of("sdh1").join("holders");
    std::fs::remove_dir_all(&holders).expect("rm holders");
    let f = facts(dir.path());
    let err = f
        .volume_holders_for(&VolumeKey::same(PV_FREE))
        .expect_err("cannot prove")
        .to_string();
    assert!(
        err.contains("sys/dev/block/8:112/sdh1/holders: No such file"),
        "{err}"
    );
    // Positive evidence elsewhere stays an answer.
    assert!(!held(&f, &VolumeKey::same(PV_PART)).is_empty());

    // A device whose sysfs entry is missing (but still attached).
    let dir = stacked_tree();
    let link = dir.path().join("sys/dev/block/8:208");
    std::fs::remove_file(&link).expect("rm dev link");
    let err = facts(dir.path())
        .volume_holders_for(&VolumeKey::same(PV_FREE))
        .expect_err("cannot prove")
        .to_string();
    assert!(
        err.contains("no sysfs entry for block device 8:208"),
        "{err}"
    );

    // A stack deeper than anything real.
    let dir = stacked_tree();
    let t = HostTree::new(dir.path());
    let mut below = "sdn1".to_string();
    for i in 0..14 {
        let name = format!("dm-{}", 20 + i);
        t.dm(&name, (254, 20 + i), &format!("deep-{i}"), &[&below]);
        below = name;
    }
    let err = facts(dir.path())
        .volume_holders_for(&VolumeKey::same(PV_MD_A))
        .expect_err("cannot prove")
        .to_string();
    assert!(err.contains("stacked more than"), "{err}");

    // A /dev/longhorn entry that is not a block device.
    let dir = stacked_tree();
    std::fs::write(dir.path().join("dev/longhorn/pvc-odd"), "").expect("file");
    let err = facts(dir.path())
        .volume_holders_for(&VolumeKey::same(PV_FREE))
        .expect_err("cannot prove")
        .to_string();
    assert!(err.contains("dev/longhorn/pvc-odd"), "{err}");
    assert!(err.contains("not a block device"), "{err}");
}

/// Hole 2: static PVs, whose PV name is not the Longhorn volume name.
#[test]
fn evidence_is_found_under_both_names_of_a_static_pv() {
    require_root!();
    let web = VolumeKey::new("pv-web-restored", "web-restored-disk");
    let db = VolumeKey::new("pv-db-static", "db-disk-old");
    let x = VolumeKey::new("pv-x", "vol-x");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let t = HostTree::new(root);
    // Block mode: kubelet paths by PV name, the device by handle.
    t.longhorn(&web.handle, "sdq", (65, 0));
    t.loop_dev(
        "loop7",
        (7, 7),
        &format!("{KUBELET_CSI}/volumeDevices/{}/dev/{POD}", web.pv_name),
    );
    fd_link(
        root,
        6161,
        "qemu-kvm",
        21,
        &format!(
            "/var/lib/kubelet/pods/{POD}/volumeDevices/kubernetes.io~csi/{}",
            web.pv_name
        ),
    );
    // Filesystem mode: staging by sha256(handle), the pod's mount by PV name.
    t.longhorn(&db.handle, "sdr", (65, 16));
    // Only a staging mount and a partition mount, both found by the handle alone.
    t.longhorn(&x.handle, "sds", (65, 32));
    t.partition("sds", "sds1", (65, 33), 1);
    t.mountinfo(&format!(
        "{BASE_MOUNTS}\
         3001 52 0:5 /longhorn/{wh} {KUBELET_CSI}/volumeDevices/publish/{wp}/{POD} rw,nosuid shared:2 - devtmpfs devtmpfs rw\n\
         3002 52 65:16 / {KUBELET_CSI}/{drv}/{dbsha}/globalmount rw,relatime shared:910 - ext4 /dev/longhorn/{dbh} rw\n\
         3003 52 65:16 / /var/lib/kubelet/pods/{POD}/volumes/kubernetes.io~csi/{dbp}/mount rw,relatime shared:910 - ext4 /dev/longhorn/{dbh} rw\n\
         3004 52 65:33 / {KUBELET_CSI}/{drv}/{xsha}/globalmount rw,relatime shared:911 - ext4 /dev/sds1 rw\n",
        wh = web.handle,
        wp = web.pv_name,
        dbh = db.handle,
        dbp = db.pv_name,
        drv = csi_paths::LONGHORN_DRIVER,
        dbsha = csi_paths::staging_hash(&db.handle),
        xsha = csi_paths::staging_hash(&x.handle),
    ));
    let f = facts(root);

    let w = held(&f, &web);
    assert_eq!(w.len(), 3, "{w:#?}");
    assert!(w
        .iter()
        .any(|h| h.starts_with("held by loop7 (loop device backed by")));
    assert!(w
        .iter()
        .any(|h| h.contains(&format!("volumeDevices/publish/{}/{POD}", web.pv_name))));
    assert!(w
        .iter()
        .any(|h| h.starts_with("open by pid 6161 (qemu-kvm) fd 21")));

    let d = held(&f, &db);
    assert_eq!(d.len(), 2, "{d:#?}");

    let xs = held(&f, &x);
    assert_eq!(xs.len(), 1, "{xs:#?}");
    assert!(xs[0].contains("/globalmount (ext4 from /dev/sds1)"));
    // Keyed on the PV name alone (the old question), the staging mount of a partition is
    // invisible: the planner must pass the handle.
    assert_eq!(f.volume_holders(&x.pv_name), Ok(Vec::new()));

    // One volume's evidence is not another's.
    assert!(w
        .iter()
        .all(|h| !h.contains(&db.handle) && !h.contains(&db.pv_name)));
    assert!(d
        .iter()
        .all(|h| !h.contains(&web.handle) && !h.contains(&web.pv_name)));
    assert!(held(&f, &VolumeKey::new("pv-other", "vol-other")).is_empty());
    // The key reads as both names.
    assert_eq!(
        web.to_string(),
        "pv-web-restored (Longhorn volume web-restored-disk)"
    );
}

/// Real processes: one keeps a file open on a filesystem whose device is a partition of a
/// Longhorn device (the way a qemu in a container holds `/dev/<disk>1`, matched only by
/// device number).
#[test]
fn a_real_process_holding_a_partition() {
    require_root!();
    const PV_REAL: &str = "pvc-abcdefab-cdef-4abc-8def-000000000099";
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let image = root.join("guest-fs-file");
    std::fs::write(&image, b"guest data").expect("file");
    let t = HostTree::with_real_proc(root);
    t.longhorn(PV_REAL, "sdy", (8, 250));
    t.partition("sdy", "sdy1", fs_dev(&image), 1);
    let holder = harvester_sim::node::FakeProc::spawn(
        harvester_sim::node::QEMU,
        "/usr/bin/qemu-system-x86_64",
        &[],
        &harvester_sim::node::FakeOpts {
            open: Some(image.clone()),
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
        .find(|h| h.pid == holder.pid() && h.target.ends_with("/guest-fs-file"))
        .unwrap_or_else(|| panic!("fake qemu not found holding {PV_REAL}: {open:#?}"));
    assert_eq!(h.volume, PV_REAL);
    assert_eq!(h.matched_by, MatchedBy::DeviceNumber);
    let held = f
        .volume_holders_for(&VolumeKey::same(PV_REAL))
        .expect("known");
    assert!(held
        .iter()
        .any(|s| s.starts_with(&format!("open by pid {}", holder.pid()))));
    drop(holder);
}
