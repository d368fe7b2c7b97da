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
    (d.action, d.reasons.into_iter().map(|r| r.text).collect())
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

/// vm `a`'s PVC `a-disk` was deleted and made again after the VMI started: the new one is
/// bound to PV `pvc-new`, attached to node n2 for someone else. The old disk was `pvc-a`.
fn replaced() -> Facts {
    let mut f = facts();
    let mut new = pvc("a");
    new.volume_name = Some("pvc-new".into());
    new.uid = Some("uid-pvc-new".into());
    new.created = Some(t("2026-01-01T10:30:00Z"));
    f.cluster.pvcs = Gathered::read(vec![new]);
    let mut new_pv = pv("a");
    new_pv.name = "pvc-new".into();
    new_pv.handle = Some("pvc-new".into());
    new_pv.claim_uid = Some("uid-pvc-new".into());
    f.cluster.pvs = Gathered::read(vec![new_pv]);
    f.cluster.attachments = Gathered::read(vec![crate::cluster::AttachmentView {
        volume: "pvc-new".into(),
        node: "n2".into(),
        source: "volumeattachment/csi-new".into(),
        attached: true,
    }]);
    f
}

#[test]
fn a_replaced_pvc_is_never_the_disk_proved() {
    // Nothing of the old disk is left: proven absent; the new PVC's attachment elsewhere is
    // not this VM's, and no line suggests deleting the new PVC.
    let f = replaced();
    let p = plan(&f, &Policy::default());
    let d = &p.decisions[0];
    assert!(matches!(d.action, Action::Recover { .. }), "{d:#?}");
    let all = format!(
        "{:?} {:?} {:?}",
        d.evidence, d.reasons, d.skipped_side_effects
    );
    assert!(all.contains("a replacement the VM never used"), "{all}");
    assert!(
        all.contains("the PVC default/a-disk the VMI used is gone"),
        "{all}"
    );
    // The new disk's attachment elsewhere says nothing; it is only checked not held here.
    assert!(!all.contains("n2"), "{all}");
    assert!(
        all.contains("volume pvc-new: not open or mounted on this node"),
        "{all}"
    );
    assert!(!all.contains("delete by hand"), "{all}");
    assert!(d.disks.iter().all(|k| k.pv != "pvc-new"), "{:?}", d.disks);

    // The old PV still exists (Released, its claimRef the old PVC's uid) and is held here:
    // blocked on it, never on the new one.
    let mut g = replaced();
    if let Gathered::Read { value } = &mut g.cluster.pvs {
        value.push(pv("a"));
    }
    g.local.disks.devices = Gathered::read(vec![device("pvc-a")]);
    g.local.disks.mounts = Gathered::read(Mounts {
        source: "/proc/1/mountinfo".into(),
        entries: vec![nfs_publish("pvc-a")],
    });
    let (a, reasons) = action(&g);
    assert_eq!(a, Action::Blocked);
    assert!(reasons.iter().any(|r| r.contains("pvc-a")), "{reasons:?}");

    // The Longhorn volume of the old disk still names the claim: followed; the new PV's
    // volume (which names the same claim) is not.
    let mut g = replaced();
    g.cluster.longhorn_volumes = Gathered::read(vec![
        LonghornVolumeRef {
            name: "pvc-new".into(),
            pv: Some("pvc-new".into()),
            pvc: Some(("default".into(), "a-disk".into())),
        },
        LonghornVolumeRef {
            name: "pvc-a".into(),
            pv: Some("pvc-a".into()),
            pvc: Some(("default".into(), "a-disk".into())),
        },
    ]);
    let p = plan(&g, &Policy::default());
    let keys: Vec<&str> = p.decisions[0].disks.iter().map(|k| k.pv.as_str()).collect();
    assert_eq!(keys, ["pvc-a"]);

    // Were the replacement misjudged, its disk held on this node still blocks.
    let mut g = replaced();
    g.local.disks.devices = Gathered::read(vec![device("pvc-new")]);
    g.local.disks.mounts = Gathered::read(Mounts {
        source: "/proc/1/mountinfo".into(),
        entries: vec![nfs_publish("pvc-new")],
    });
    let (a, reasons) = action(&g);
    assert_eq!(a, Action::Blocked);
    assert!(
        reasons.iter().any(|r| r.contains("pvc-new is held here")),
        "{reasons:?}"
    );
}

#[test]
fn a_pvc_bound_to_another_pv_than_recorded_is_a_replacement() {
    let mut f = facts();
    // Same creation order as the VMI's, but an earlier run recorded PV pvc-old for it.
    f.intents = Gathered::read(vec![super::super::intents::RecoveryIntent {
        namespace: "default".into(),
        name: "a".into(),
        vm_uid: "uid-vm-a".into(),
        vmi_uid: "uid-vmi-a".into(),
        pvcs: vec!["a-disk".into()],
        disks: vec![super::super::intents::IntentDisk {
            pvc: "default/a-disk".into(),
            pvc_uid: None,
            pv: "pvc-old".into(),
            handle: "pvc-old".into(),
            driver: Some("driver.longhorn.io".into()),
        }],
        started: t("2026-01-01T11:30:00Z"),
    }]);
    let p = plan(&f, &Policy::default());
    let d = &p.decisions[0];
    let all = format!("{:?}", d.evidence);
    assert!(all.contains("not to the PV pvc-old recorded"), "{all}");
    assert!(d.disks.iter().all(|k| k.pv != "pvc-a"), "{:?}", d.disks);
}

#[test]
fn a_pvc_made_after_the_vmi_by_design_is_proved_not_replaced() {
    // A hotplugged disk (or the backend-storage PVC) is made after the VMI: it is the VM's
    // disk, proved as usual (here: attached to n2, so blocked).
    let mut f = replaced();
    if let Gathered::Read { value } = &mut f.cluster.vmis {
        value[0].late_claims = vec!["a-disk".into()];
    }
    let (a, reasons) = action(&f);
    assert_eq!(a, Action::Blocked);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("pvc-new") && r.contains("n2")),
        "{reasons:?}"
    );
}

/// Issue 23: a claim made late by design (hotplug, DataVolume, backend storage) deleted and
/// made again after vmrecover first saw the VMI deciding is told by the PVC UID recorded
/// then: the proof follows the old disk (its Released PV), never the new one.
#[test]
fn a_late_claim_replaced_after_it_was_first_seen_is_told_by_its_uid() {
    let mut f = replaced();
    if let Gathered::Read { value } = &mut f.cluster.vmis {
        value[0].late_claims = vec!["a-disk".into()];
    }
    // The old PV, Released, still names the claim.
    if let Gathered::Read { value } = &mut f.cluster.pvs {
        value.push(pv("a"));
    }
    f.seen = Gathered::read(vec![super::super::intents::SeenVmi {
        namespace: "default".into(),
        name: "a".into(),
        vmi_uid: "uid-vmi-a".into(),
        first_seen: t("2026-01-01T11:05:00Z"),
        disks: vec![super::super::intents::IntentDisk {
            pvc: "default/a-disk".into(),
            pvc_uid: Some("uid-pvc-a".into()),
            pv: "pvc-a".into(),
            handle: "pvc-a".into(),
            driver: Some("driver.longhorn.io".into()),
        }],
    }]);
    let p = plan(&f, &Policy::default());
    let d = &p.decisions[0];
    let all = format!("{:?} {:?}", d.evidence, d.reasons);
    assert!(
        all.contains("has UID uid-pvc-new, not the UID uid-pvc-a recorded"),
        "{all}"
    );
    let pvs: Vec<&str> = d.disks.iter().map(|k| k.pv.as_str()).collect();
    assert_eq!(pvs, ["pvc-a"], "{d:#?}");
    assert!(!all.contains("n2"), "{all}");
}
