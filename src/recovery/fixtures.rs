//! Fixture builders for tests of the planner and of what consumes plans: one VM stuck
//! an hour on node `n1`, nothing of it on the node; tests mutate from there.

use crate::boot::Verdict;
use crate::cluster::{
    AttachmentView, ClusterFacts, ConditionView, HarvesterFacts, LifeSigns, Look, NodeIdentity,
    ObjectKey, PvView, PvcView, Reading, SignKind, VmView, VmiView,
};
use crate::evidence::Gathered;
use crate::node::volumes::{DiskFacts, Mounts, OpenFiles};
use crate::node::{NodeFacts, ProcessKind, VmProcess};

use super::model::{Facts, HostIdentity};

/// This host's machine-id in the fixtures (and the Node's nodeInfo.machineID).
pub(crate) const MACHINE_ID: &str = "5f1e2b7c9a4d4e3f8b6a1c2d3e4f5a6b";
/// This boot's id in the fixtures (and the Node's nodeInfo.bootID).
pub(crate) const BOOT_ID: &str = "2c3d4e5f60718293a4b5c6d7e8f90a1b";

pub(crate) const ME: &str = "n1";

/// A change to a fixture, for table-driven cases.
pub(crate) type Mutation<T> = Box<dyn Fn(&mut T)>;
pub(crate) const VMI_FOREGROUND: &str = "kubevirt.io/foregroundDeleteVirtualMachine";
pub(crate) const CONTROLLER_FINALIZE: &str = "kubevirt.io/virtualMachineControllerFinalize";
pub(crate) const HARVESTER_CLEANUP: &str = "wrangler.cattle.io/VMController.CleanupPVCAndSnapshot";
pub(crate) const UNKNOWN: &str = "backup.example.com/protect";

pub(crate) fn t(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

pub(crate) fn key(ns: &str, name: &str, uid: &str) -> ObjectKey {
    ObjectKey {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
        resource_version: "100".into(),
    }
}

pub(crate) fn vmi(name: &str) -> VmiView {
    VmiView {
        key: key("default", name, &format!("uid-vmi-{name}")),
        node_label: Some(ME.into()),
        status_node: Some(ME.into()),
        migration_target: None,
        migrating: false,
        has_migration_state: false,
        migration_state_target: None,
        phase: Some("Running".into()),
        reason: None,
        deletion_timestamp: Some(t("2026-01-01T11:00:00Z")),
        finalizers: vec![CONTROLLER_FINALIZE.into(), VMI_FOREGROUND.into()],
        owner_vm: Some((name.into(), format!("uid-vm-{name}"))),
        pvcs: vec![format!("{name}-disk")],
        unnamed_volumes: vec![],
        created: Some(t("2026-01-01T09:00:00Z")),
        late_claims: vec![],
        pods_of_record: vec![],
    }
}

pub(crate) fn vm(name: &str) -> VmView {
    VmView {
        key: key("default", name, &format!("uid-vm-{name}")),
        deletion_timestamp: Some(t("2026-01-01T11:00:00Z")),
        finalizers: vec![CONTROLLER_FINALIZE.into(), HARVESTER_CLEANUP.into()],
        printable_status: Some("Terminating".into()),
        removed_pvcs: vec![format!("{name}-disk")],
    }
}

pub(crate) fn pvc(name: &str) -> PvcView {
    PvcView {
        namespace: "default".into(),
        name: format!("{name}-disk"),
        volume_name: Some(format!("pvc-{name}")),
        uid: Some(format!("uid-pvc-{name}")),
        created: Some(t("2025-12-01T00:00:00Z")),
    }
}

/// The dynamically provisioned PV of `name`'s disk (handle = PV name).
pub(crate) fn pv(name: &str) -> PvView {
    PvView {
        name: format!("pvc-{name}"),
        driver: Some("driver.longhorn.io".into()),
        handle: Some(format!("pvc-{name}")),
        claim_ref: Some(("default".into(), format!("{name}-disk"))),
        claim_uid: Some(format!("uid-pvc-{name}")),
    }
}

pub(crate) fn disks() -> DiskFacts {
    DiskFacts {
        devices: Gathered::read(vec![]),
        kernel_holders: Gathered::read(vec![]),
        open_files: Gathered::read(OpenFiles {
            scanned: 10,
            holders: vec![],
            unreadable: vec![],
        }),
        mounts: Gathered::read(Mounts {
            source: "/proc/1/mountinfo".into(),
            entries: vec![],
        }),
    }
}

pub(crate) fn proc_for(name: &str, kind: ProcessKind) -> VmProcess {
    VmProcess {
        pid: 4242,
        start_time: 77,
        kind,
        namespace: Some("default".into()),
        name: Some(name.into()),
        uid: Some(format!("uid-vmi-{name}")),
        domain: None,
        parent_pid: Some(1),
        comm: kind.as_str().chars().take(15).collect(),
        exe: None,
        cmdline: format!("{} --name {name}", kind.as_str()),
        cmdline_lossy: false,
        cmdline_readable: true,
        started_at_unix: 0,
        run_time_secs: 60,
    }
}

/// One VM, stuck 1 h, deleted 1 h ago, after a boot 2 h ago, nothing on the node.
pub(crate) fn facts() -> Facts {
    Facts {
        now: t("2026-01-01T12:00:00Z"),
        node: ME.into(),
        boot_time: Gathered::read(t("2026-01-01T10:00:00Z")),
        verdict: Verdict::Unclean,
        local: NodeFacts {
            host_root: "/".into(),
            processes: Gathered::read(vec![]),
            disks: disks(),
            identity: Gathered::unreadable("host identity", "not read in planner tests"),
        },
        cluster: ClusterFacts {
            node: ME.into(),
            vmis: Gathered::read(vec![vmi("a")]),
            vms: Gathered::read(vec![vm("a")]),
            pods: Gathered::read(vec![]),
            hotplug_pods: Gathered::read(vec![]),
            pvcs: Gathered::read(vec![pvc("a")]),
            claimed: Gathered::read(vec![]),
            pvs: Gathered::read(vec![pv("a")]),
            longhorn_volumes: Gathered::read(vec![]),
            other_longhorn_volumes: Gathered::read(vec![]),
            remote_pods: Gathered::read(vec![]),
            node_identity: Gathered::read(NodeIdentity {
                machine_id: MACHINE_ID.into(),
                boot_id: BOOT_ID.into(),
            }),
            attachments: Gathered::read(vec![AttachmentView {
                volume: "pvc-a".into(),
                node: ME.into(),
                source: "volumeattachment/csi-1".into(),
                attached: true,
            }]),
            harvester: HarvesterFacts::default(),
        },
        intents: Gathered::read(vec![]),
        seen: Gathered::read(vec![]),
        host: Gathered::read(HostIdentity {
            machine_id: MACHINE_ID.into(),
            boot_id: BOOT_ID.into(),
        }),
    }
}

/// A node with `recover` provable stuck VMs and `blocked` ones whose qemu still runs here,
/// planned by the real planner (names `vm-000`, `vm-001`, …; the blocked ones last).
pub(crate) fn plan_with(recover: usize, blocked: usize) -> super::model::Plan {
    let mut f = facts();
    let names: Vec<String> = (0..recover + blocked)
        .map(|i| format!("vm-{i:03}"))
        .collect();
    f.cluster.vmis = Gathered::read(names.iter().map(|n| vmi(n)).collect());
    f.cluster.vms = Gathered::read(names.iter().map(|n| vm(n)).collect());
    f.cluster.pvcs = Gathered::read(names.iter().map(|n| pvc(n)).collect());
    f.cluster.pvs = Gathered::read(names.iter().map(|n| pv(n)).collect());
    f.cluster.attachments = Gathered::read(vec![]);
    f.local.processes = Gathered::read(
        names[recover..]
            .iter()
            .map(|n| proc_for(n, ProcessKind::Qemu))
            .collect(),
    );
    let policy = crate::config::Policy {
        max_vms: recover + blocked,
        ..crate::config::Policy::default()
    };
    super::plan::plan(&f, &policy)
}

/// Another machine's machine-id (a fenced-node run runs on a machine that is not NODE).
pub(crate) const OTHER_MACHINE_ID: &str = "0a1b2c3d4e5f40718293a4b5c6d7e8f9";

/// One look at NODE's signs of life at `now`: a heartbeat and a Lease renewal stamped
/// `stamp`, no summary, no Longhorn node.
pub(crate) fn quiet_look(now: jiff::Timestamp, stamp: jiff::Timestamp) -> Look {
    let dated = |value: String| {
        Gathered::read(Some(Reading {
            stamp: Some(stamp),
            value,
            says_alive: false,
        }))
    };
    Look {
        server_now: Some(now),
        signs: vec![
            (SignKind::Heartbeat, dated(format!("heartbeat={stamp}"))),
            (SignKind::Lease, dated(format!("renewed {stamp}"))),
            (SignKind::Summary, Gathered::read(None)),
            (SignKind::LonghornNode, Gathered::read(None)),
        ],
    }
}

/// [`facts`] for a fenced-node run from another machine: node `n1` tainted out-of-service,
/// NotReady for a day, no launcher elsewhere, its signs an hour old and unchanged over a
/// 2 min 12 s watch.
pub(crate) fn fenced_facts() -> Facts {
    let mut f = facts();
    f.host = Gathered::read(HostIdentity {
        machine_id: OTHER_MACHINE_ID.into(),
        boot_id: BOOT_ID.into(),
    });
    let h = &mut f.cluster.harvester;
    h.out_of_service_taint = true;
    h.ready = Some(ConditionView {
        status: "Unknown".into(),
        reason: None,
        since: Some(f.now - jiff::SignedDuration::from_hours(24)),
    });
    h.launchers_elsewhere = Some(Gathered::read(vec![]));
    let stamp = f.now - jiff::SignedDuration::from_hours(1);
    h.life_signs = Some(LifeSigns {
        first: quiet_look(f.now - jiff::SignedDuration::from_secs(132), stamp),
        second: Some(quiet_look(f.now, stamp)),
        watched: std::time::Duration::from_secs(132),
    });
    f
}
