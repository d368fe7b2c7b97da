//! The absence proof of a hand-deleted disk accounts for every other existing Longhorn
//! volume's devices and mounts (issue 23 item 4): a Prometheus volume, an RWX volume's NFS
//! mount from its share-manager, a backend-storage volume of a live VM.

use super::super::fixtures::*;
use super::super::model::{Action, Facts};
use super::super::plan::plan;
use crate::cluster::LonghornVolumeRef;
use crate::config::Policy;
use crate::evidence::Gathered;
use crate::node::volumes::{DevNum, LonghornDevice, Mounts, VolumeMount};

/// vm `a` stuck, its PVC and PV deleted by hand, nothing of its disk left in the cluster.
fn disk_gone() -> Facts {
    let mut f = facts();
    f.cluster.pvcs = Gathered::read(vec![]);
    f.cluster.pvs = Gathered::read(vec![]);
    f.cluster.attachments = Gathered::read(vec![]);
    f
}

fn volume(name: &str, pvc: Option<(&str, &str)>) -> LonghornVolumeRef {
    LonghornVolumeRef {
        name: name.into(),
        pv: pvc.map(|_| name.to_string()),
        pvc: pvc.map(|(ns, n)| (ns.into(), n.into())),
    }
}

fn device(volume: &str) -> LonghornDevice {
    LonghornDevice {
        volume: volume.into(),
        path: format!("/dev/longhorn/{volume}"),
        file_type: "block-device".into(),
        device: Some(DevNum {
            major: 8,
            minor: 16,
        }),
    }
}

/// A kubelet CSI publish mount of PV `pv` (an RWX volume's NFS mount from its
/// share-manager looks like this).
fn nfs_publish(pv: &str) -> VolumeMount {
    VolumeMount {
        volumes: vec![],
        pv_names: vec![pv.into()],
        staging_hash: None,
        mount_point: format!("/var/lib/kubelet/pods/0b1c/volumes/kubernetes.io~csi/{pv}/mount"),
        source: format!("10.53.0.7:/{pv}"),
        fstype: "nfs4".into(),
        root: "/".into(),
        device: DevNum {
            major: 0,
            minor: 77,
        },
    }
}

fn action(f: &Facts) -> (Action, Vec<String>) {
    let p = plan(f, &Policy::default());
    let d = p.decisions.into_iter().next().expect("a decision");
    (d.action, d.reasons)
}

#[test]
fn other_longhorn_users_on_the_node_do_not_block_a_deleted_disk() {
    let mut f = disk_gone();
    // Prometheus's volume is attached here as a block device; an RWX volume is mounted over
    // NFS for a live pod; a live VM's backend-storage volume is attached here.
    f.local.disks.devices = Gathered::read(vec![device("pvc-prom"), device("pvc-vm-state")]);
    f.local.disks.mounts = Gathered::read(Mounts {
        source: "/proc/1/mountinfo".into(),
        entries: vec![nfs_publish("pvc-rwx")],
    });
    f.cluster.other_longhorn_volumes = Gathered::read(vec![
        volume(
            "pvc-prom",
            Some(("cattle-monitoring-system", "prometheus-db")),
        ),
        volume("pvc-rwx", Some(("default", "shared-files"))),
        volume(
            "pvc-vm-state",
            Some(("default", "persistent-state-for-b-x7k2p")),
        ),
    ]);
    let (a, reasons) = action(&f);
    assert!(matches!(a, Action::Recover { .. }), "{reasons:?}");

    // Before the fix the same node blocked it: without the other volumes nothing accounts
    // for the devices.
    let mut g = f.clone();
    g.cluster.other_longhorn_volumes = Gathered::read(vec![]);
    let (a, reasons) = action(&g);
    assert_eq!(a, Action::Blocked);
    assert!(
        reasons.iter().any(|r| r.contains("pvc-prom")),
        "{reasons:?}"
    );
}

#[test]
fn an_unexplained_device_or_unread_volumes_still_block() {
    // A Longhorn volume that names no PVC or PV could have been that disk.
    let mut f = disk_gone();
    f.local.disks.devices = Gathered::read(vec![device("vol-anon")]);
    f.cluster.other_longhorn_volumes = Gathered::read(vec![volume("vol-anon", None)]);
    let (a, reasons) = action(&f);
    assert_eq!(a, Action::Blocked);
    assert!(
        reasons.iter().any(|r| r.contains("vol-anon")),
        "{reasons:?}"
    );

    // An NFS mount of a PV no existing volume explains.
    let mut f = disk_gone();
    f.local.disks.mounts = Gathered::read(Mounts {
        source: "/proc/1/mountinfo".into(),
        entries: vec![nfs_publish("pvc-mystery")],
    });
    let (a, reasons) = action(&f);
    assert_eq!(a, Action::Blocked);
    assert!(
        reasons.iter().any(|r| r.contains("pvc-mystery")),
        "{reasons:?}"
    );

    // The other volumes could not be read.
    let mut f = disk_gone();
    f.cluster.other_longhorn_volumes = Gathered::unreadable("volumes.longhorn.io", "forbidden");
    let (a, reasons) = action(&f);
    assert_eq!(a, Action::Blocked);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("other Longhorn volumes could not be read")),
        "{reasons:?}"
    );
}
