//! Table-driven tests and property tests of the planner's safety rules (design §6).

use std::time::Duration;

use proptest::prelude::*;

use super::finalizers::ObjectKind;
use super::intents::RecoveryIntent;
use super::model::{Action, Facts, Step};
use super::plan::plan;
use crate::boot::Verdict;
use crate::cli::NamespacedName;
use crate::cluster::snapshot::{
    AttachmentView, ClusterFacts, ObjectKey, PodView, PvcView, VmView, VmiView,
};
use crate::config::Policy;
use crate::evidence::Gathered;
use crate::node::volumes::{DiskFacts, FdHolder, MatchedBy, Mounts, OpenFiles};
use crate::node::{NodeFacts, ProcessKind, VmProcess};

const ME: &str = "n1";

/// A change to a fixture, for table-driven cases.
type Mutation<T> = Box<dyn Fn(&mut T)>;
const VMI_FOREGROUND: &str = "kubevirt.io/foregroundDeleteVirtualMachine";
const CONTROLLER_FINALIZE: &str = "kubevirt.io/virtualMachineControllerFinalize";
const HARVESTER_CLEANUP: &str = "wrangler.cattle.io/VMController.CleanupPVCAndSnapshot";
const UNKNOWN: &str = "backup.example.com/protect";

fn t(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

fn key(ns: &str, name: &str, uid: &str) -> ObjectKey {
    ObjectKey {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
        resource_version: "100".into(),
    }
}

fn vmi(name: &str) -> VmiView {
    VmiView {
        key: key("default", name, &format!("uid-vmi-{name}")),
        node_label: Some(ME.into()),
        status_node: Some(ME.into()),
        migration_target: None,
        migrating: false,
        phase: Some("Running".into()),
        reason: None,
        deletion_timestamp: Some(t("2026-01-01T11:00:00Z")),
        finalizers: vec![CONTROLLER_FINALIZE.into(), VMI_FOREGROUND.into()],
        owner_vm: Some((name.into(), format!("uid-vm-{name}"))),
        pvcs: vec![format!("{name}-disk")],
    }
}

fn vm(name: &str) -> VmView {
    VmView {
        key: key("default", name, &format!("uid-vm-{name}")),
        deletion_timestamp: Some(t("2026-01-01T11:00:00Z")),
        finalizers: vec![CONTROLLER_FINALIZE.into(), HARVESTER_CLEANUP.into()],
        printable_status: Some("Terminating".into()),
        removed_pvcs: vec![format!("{name}-disk")],
    }
}

fn pvc(name: &str) -> PvcView {
    PvcView {
        namespace: "default".into(),
        name: format!("{name}-disk"),
        volume_name: Some(format!("pvc-{name}")),
    }
}

fn disks() -> DiskFacts {
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

fn proc_for(name: &str, kind: ProcessKind) -> VmProcess {
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
fn facts() -> Facts {
    Facts {
        now: t("2026-01-01T12:00:00Z"),
        node: ME.into(),
        boot_time: Gathered::read(t("2026-01-01T10:00:00Z")),
        verdict: Verdict::Unclean,
        local: NodeFacts {
            host_root: "/".into(),
            processes: Gathered::read(vec![]),
            disks: disks(),
            identity: Gathered::unreadable("host identity", "not part of these tests"),
        },
        cluster: ClusterFacts {
            node: ME.into(),
            vmis: Gathered::read(vec![vmi("a")]),
            vms: Gathered::read(vec![vm("a")]),
            pods: Gathered::read(vec![]),
            pvcs: Gathered::read(vec![pvc("a")]),
            attachments: Gathered::read(vec![AttachmentView {
                volume: "pvc-a".into(),
                node: ME.into(),
                source: "volumeattachment/csi-1".into(),
                attached: true,
            }]),
        },
        intents: Gathered::read(vec![]),
    }
}

fn policy() -> Policy {
    Policy::default()
}

fn only_decision(f: &Facts, p: &Policy) -> super::model::Decision {
    let plan = plan(f, p);
    assert_eq!(plan.decisions.len(), 1, "{plan:#?}");
    plan.decisions.into_iter().next().unwrap()
}

fn steps(a: &Action) -> Vec<String> {
    match a {
        Action::Recover { steps } => steps
            .iter()
            .map(|s| match s {
                Step::ForceDeletePod { pod } => format!("delete-pod {}", pod.name),
                Step::WaitForControllers { .. } => "wait".into(),
                Step::ClearFinalizers { kind, remove, .. } => {
                    format!("clear {kind}: {}", remove.join(","))
                }
            })
            .collect(),
        other => panic!("expected recover, got {other:?}"),
    }
}

fn assert_blocked(f: &Facts, p: &Policy, needle: &str) {
    let d = only_decision(f, p);
    assert_eq!(d.action, Action::Blocked, "{d:#?}");
    assert_ne!(
        super::plan::blocker_category(&d),
        "other",
        "no metrics category for {:?}",
        d.reasons
    );
    assert!(
        d.reasons.iter().any(|r| r.contains(needle)),
        "no reason containing {needle:?}: {:#?}",
        d.reasons
    );
}

#[test]
fn stuck_and_proven_clears_vmi_then_vm_after_the_controller_wait() {
    let d = only_decision(&facts(), &policy());
    assert_eq!(
        steps(&d.action),
        [
            "wait",
            &format!("clear vmi: {CONTROLLER_FINALIZE},{VMI_FOREGROUND}"),
            &format!("clear vm: {CONTROLLER_FINALIZE},{HARVESTER_CLEANUP}"),
        ]
    );
    assert!(
        d.skipped_side_effects.iter().any(|s| s.contains("PVC")),
        "{d:#?}"
    );
    assert!(d
        .evidence
        .iter()
        .any(|e| e.contains("no virt-launcher/qemu process")));
    assert!(d
        .evidence
        .iter()
        .any(|e| e.contains("pvc-a: not open or mounted")));
    assert_eq!(d.volumes, ["pvc-a"]);
}

#[test]
fn zero_grace_skips_the_wait() {
    let p = Policy {
        controller_grace: Duration::ZERO,
        ..policy()
    };
    assert_eq!(
        steps(&only_decision(&facts(), &p).action)[0],
        format!("clear vmi: {CONTROLLER_FINALIZE},{VMI_FOREGROUND}")
    );
}

#[test]
fn the_clear_patch_tests_the_finalizers_as_read() {
    let d = only_decision(&facts(), &policy());
    let Action::Recover { steps } = d.action else {
        panic!()
    };
    let Some(Step::ClearFinalizers {
        kind,
        object,
        expected,
        ..
    }) = steps.get(1)
    else {
        panic!("{steps:?}")
    };
    assert_eq!(*kind, ObjectKind::Vmi);
    assert_eq!(object.resource_version, "100");
    assert_eq!(
        expected,
        &vec![CONTROLLER_FINALIZE.to_string(), VMI_FOREGROUND.to_string()]
    );
}

#[test]
fn live_processes_block() {
    for kind in [
        ProcessKind::Qemu,
        ProcessKind::Launcher,
        ProcessKind::LauncherMonitor,
    ] {
        let mut f = facts();
        f.local.processes = Gathered::read(vec![proc_for("a", kind)]);
        assert_blocked(&f, &policy(), "still running here");
    }
    // A process naming only namespace/name (an older incarnation) blocks too.
    let mut f = facts();
    let mut p = proc_for("a", ProcessKind::Qemu);
    p.uid = None;
    f.local.processes = Gathered::read(vec![p]);
    assert_blocked(&f, &policy(), "still running here");
}

#[test]
fn missing_evidence_blocks_and_says_which() {
    let cases: Vec<(&str, Mutation<Facts>)> = vec![
        (
            "process evidence missing",
            Box::new(|f| f.local.processes = Gathered::unreadable("/proc", "EACCES")),
        ),
        (
            "disk evidence for volume pvc-a missing",
            Box::new(|f| f.local.disks.mounts = Gathered::unreadable("mountinfo", "EACCES")),
        ),
        (
            "disk evidence for volume pvc-a missing",
            Box::new(|f| f.local.disks.open_files = Gathered::unreadable("/proc/*/fd", "EACCES")),
        ),
        (
            "PVC evidence missing",
            Box::new(|f| f.cluster.pvcs = Gathered::unreadable("pvcs", "403")),
        ),
        (
            "PVC default/a-disk not found",
            Box::new(|f| f.cluster.pvcs = Gathered::read(vec![])),
        ),
        (
            "attachment evidence missing",
            Box::new(|f| f.cluster.attachments = Gathered::unreadable("volumeattachments", "403")),
        ),
        (
            "launcher pods on this node could not be read",
            Box::new(|f| f.cluster.pods = Gathered::unreadable("pods", "timeout")),
        ),
        (
            "its VM could not be read",
            Box::new(|f| f.cluster.vms = Gathered::unreadable("vms", "timeout")),
        ),
        (
            "start time could not be read",
            Box::new(|f| f.boot_time = Gathered::unreadable("clock", "?")),
        ),
    ];
    for (needle, mutate) in cases {
        let mut f = facts();
        mutate(&mut f);
        assert_blocked(&f, &policy(), needle);
    }
}

#[test]
fn held_or_remotely_attached_disks_block() {
    let mut f = facts();
    if let Gathered::Read { value } = &mut f.local.disks.open_files {
        value.holders.push(FdHolder {
            pid: 99,
            comm: "qemu-kvm".into(),
            fd: "12".into(),
            target: "/dev/longhorn/pvc-a".into(),
            volume: "pvc-a".into(),
            matched_by: MatchedBy::Path,
        });
    }
    assert_blocked(&f, &policy(), "volume pvc-a is held here");

    let mut f = facts();
    f.cluster.attachments = Gathered::read(vec![AttachmentView {
        volume: "pvc-a".into(),
        node: "n2".into(),
        source: "volumeattachment/csi-2".into(),
        attached: true,
    }]);
    assert_blocked(&f, &policy(), "to node n2");
}

#[test]
fn other_nodes_and_migrations_are_not_mine() {
    let cases: Vec<Mutation<VmiView>> = vec![
        Box::new(|v| v.node_label = Some("n2".into())),
        Box::new(|v| v.status_node = Some("n2".into())),
        Box::new(|v| v.migrating = true),
        Box::new(|v| v.migration_target = Some("n2".into())),
        Box::new(|v| {
            v.node_label = None;
            v.status_node = None
        }),
    ];
    for mutate in cases {
        let mut f = facts();
        let mut v = vmi("a");
        mutate(&mut v);
        f.cluster.vmis = Gathered::read(vec![v]);
        let d = only_decision(&f, &policy());
        assert_eq!(d.action, Action::NotMine, "{d:#?}");
    }
}

#[test]
fn stuck_time_counts_from_the_later_of_deletion_and_boot() {
    // Deleted 2 minutes ago: waits until deletion + 5 min.
    let mut f = facts();
    f.now = t("2026-01-01T11:02:00Z");
    let d = only_decision(&f, &policy());
    assert_eq!(
        d.action,
        Action::Waiting {
            until: Some(t("2026-01-01T11:05:00Z"))
        }
    );

    // Deleted long ago but booted 1 minute ago: waits until boot + 5 min.
    let mut f = facts();
    f.boot_time = Gathered::read(t("2026-01-01T11:59:00Z"));
    let d = only_decision(&f, &policy());
    assert_eq!(
        d.action,
        Action::Waiting {
            until: Some(t("2026-01-01T12:04:00Z"))
        }
    );

    // A deletionTimestamp in the future (clock skew) waits, it never counts as stuck.
    let mut f = facts();
    let mut v = vmi("a");
    v.deletion_timestamp = Some(t("2026-01-02T00:00:00Z"));
    f.cluster.vmis = Gathered::read(vec![v]);
    assert!(matches!(
        only_decision(&f, &policy()).action,
        Action::Waiting { .. }
    ));
}

#[test]
fn unknown_finalizers_block_unless_named() {
    let mut f = facts();
    let mut v = vmi("a");
    v.finalizers.push(UNKNOWN.into());
    f.cluster.vmis = Gathered::read(vec![v]);
    assert_blocked(
        &f,
        &policy(),
        "unknown finalizer backup.example.com/protect (vmi)",
    );
    assert_eq!(only_decision(&f, &policy()).kept_finalizers, [UNKNOWN]);

    let p = Policy {
        also_finalizers: vec![UNKNOWN.into()],
        ..policy()
    };
    let d = only_decision(&f, &p);
    assert!(steps(&d.action)[1].contains(UNKNOWN), "{d:#?}");
    assert!(d
        .skipped_side_effects
        .iter()
        .any(|s| s.contains("--also-finalizer")));
}

#[test]
fn a_vmi_finalizer_on_a_vm_is_unknown() {
    let mut f = facts();
    let mut m = vm("a");
    m.finalizers.push(VMI_FOREGROUND.into());
    f.cluster.vms = Gathered::read(vec![m]);
    assert_blocked(&f, &policy(), "(vm)");
}

#[test]
fn the_finalizers_of_a_real_harvester_vmi_are_all_known() {
    // As a Harvester 1.7 cluster with the load balancer and pcidevices add-ons shows them.
    let mut f = facts();
    let mut v = vmi("a");
    v.finalizers = [
        CONTROLLER_FINALIZE,
        "foregroundDeleteVirtualMachine",
        "wrangler.cattle.io/VMController.BackfillObservedNetworkMacAddress",
        "wrangler.cattle.io/harvester-lb-vmi-controller",
        "wrangler.cattle.io/virtual-machine-deletion",
    ]
    .map(String::from)
    .to_vec();
    f.cluster.vmis = Gathered::read(vec![v]);
    let d = only_decision(&f, &policy());
    assert!(matches!(d.action, Action::Recover { .. }), "{d:#?}");
    assert!(
        d.skipped_side_effects.iter().any(|s| s.contains("vGPU")),
        "{:#?}",
        d.skipped_side_effects
    );
    assert!(d.skipped_side_effects.iter().any(|s| s.contains("MAC")));
}

#[test]
fn the_old_foreground_finalizer_name_is_cleared() {
    let mut f = facts();
    let mut v = vmi("a");
    v.finalizers = vec!["foregroundDeleteVirtualMachine".into()];
    f.cluster.vmis = Gathered::read(vec![v]);
    let d = only_decision(&f, &policy());
    assert_eq!(
        steps(&d.action)[1],
        "clear vmi: foregroundDeleteVirtualMachine"
    );
}

fn launcher_pod(name: &str, deleting: bool) -> PodView {
    PodView {
        key: key(
            "default",
            &format!("virt-launcher-{name}-xyz"),
            &format!("uid-pod-{name}"),
        ),
        node_name: Some(ME.into()),
        phase: Some("Running".into()),
        deletion_timestamp: deleting.then(|| t("2026-01-01T11:00:00Z")),
        vmi_uid: Some(format!("uid-vmi-{name}")),
        vmi_name: Some(name.into()),
    }
}

#[test]
fn a_leftover_pod_is_force_deleted_first() {
    let mut f = facts();
    f.cluster.pods = Gathered::read(vec![launcher_pod("a", true)]);
    let s = steps(&only_decision(&f, &policy()).action);
    assert_eq!(s[0], "delete-pod virt-launcher-a-xyz");
    assert_eq!(s[1], "wait");
}

#[test]
fn stopping_neighbour_frees_the_pod_but_never_clears_finalizers() {
    let mut f = facts();
    let mut v = vmi("a");
    v.deletion_timestamp = None;
    v.phase = Some("Failed".into());
    let mut m = vm("a");
    m.deletion_timestamp = None;
    m.printable_status = Some("Stopping".into());
    f.cluster.vmis = Gathered::read(vec![v.clone()]);
    f.cluster.vms = Gathered::read(vec![m]);
    f.cluster.pods = Gathered::read(vec![launcher_pod("a", false)]);
    assert_eq!(
        steps(&only_decision(&f, &policy()).action),
        ["delete-pod virt-launcher-a-xyz", "wait"]
    );

    // Right after the boot the kubelet gets --stuck-after to clean the pod up itself.
    let mut early = f.clone();
    early.boot_time = Gathered::read(t("2026-01-01T11:58:00Z"));
    assert_eq!(
        only_decision(&early, &policy()).action,
        Action::Waiting {
            until: Some(t("2026-01-01T12:03:00Z"))
        }
    );

    f.cluster.pods = Gathered::read(vec![]);
    assert_eq!(only_decision(&f, &policy()).action, Action::Healthy);

    // With a live process the pod is not touched.
    f.cluster.pods = Gathered::read(vec![launcher_pod("a", false)]);
    f.local.processes = Gathered::read(vec![proc_for("a", ProcessKind::Qemu)]);
    assert_eq!(only_decision(&f, &policy()).action, Action::Blocked);
}

#[test]
fn running_vmis_are_reported_never_touched() {
    let mut f = facts();
    let mut v = vmi("a");
    v.deletion_timestamp = None;
    f.cluster.vmis = Gathered::read(vec![v]);
    assert_eq!(
        only_decision(&f, &policy()).action,
        Action::Waiting { until: None }
    );
    f.local.processes = Gathered::read(vec![proc_for("a", ProcessKind::Qemu)]);
    assert_eq!(only_decision(&f, &policy()).action, Action::Healthy);
}

#[test]
fn a_vm_that_is_not_deleting_keeps_its_finalizers() {
    let mut f = facts();
    let mut m = vm("a");
    m.deletion_timestamp = None;
    f.cluster.vms = Gathered::read(vec![m]);
    let d = only_decision(&f, &policy());
    assert_eq!(
        steps(&d.action),
        [
            "wait",
            &format!("clear vmi: {CONTROLLER_FINALIZE},{VMI_FOREGROUND}")
        ]
    );
}

#[test]
fn more_than_max_vms_refuses_the_whole_plan() {
    let mut f = facts();
    f.cluster.vmis = Gathered::read(vec![vmi("a"), vmi("b"), vmi("c")]);
    f.cluster.vms = Gathered::read(vec![vm("a"), vm("b"), vm("c")]);
    f.cluster.pvcs = Gathered::read(vec![pvc("a"), pvc("b"), pvc("c")]);
    let p = Policy {
        max_vms: 2,
        ..policy()
    };
    let refused = plan(&f, &p);
    assert!(refused.refused.as_deref().unwrap().contains("--max-vms 2"));
    assert!(!refused.has_work() && refused.has_blocked());
    assert!(plan(
        &f,
        &Policy {
            max_vms: 3,
            ..policy()
        }
    )
    .refused
    .is_none());
}

#[test]
fn unreadable_cluster_blocks_everything() {
    let mut f = facts();
    f.cluster = ClusterFacts::unreachable(ME, "api", "connection refused");
    let plan = plan(&f, &policy());
    assert!(!plan.has_work());
    assert_eq!(plan.decisions[0].action, Action::Blocked);
    assert!(plan.decisions[0].reasons[0].contains("connection refused"));
}

#[test]
fn only_limits_the_plan_and_names_what_it_did_not_find() {
    let mut f = facts();
    f.cluster.vmis = Gathered::read(vec![vmi("a"), vmi("b")]);
    f.cluster.vms = Gathered::read(vec![vm("a"), vm("b")]);
    f.cluster.pvcs = Gathered::read(vec![pvc("a"), pvc("b")]);
    let only = |n: &str| NamespacedName {
        namespace: "default".into(),
        name: n.into(),
    };
    let p = Policy {
        only: vec![only("b"), only("zzz")],
        ..policy()
    };
    let plan = plan(&f, &p);
    let names: Vec<_> = plan
        .decisions
        .iter()
        .map(|d| (d.name.as_str(), d.action.label()))
        .collect();
    assert_eq!(names, [("b", "recover"), ("zzz", "not-mine")]);
}

#[test]
fn a_vm_whose_vmi_an_earlier_run_cleared_is_finished() {
    let mut f = facts();
    f.cluster.vmis = Gathered::read(vec![]);
    f.intents = Gathered::read(vec![RecoveryIntent {
        namespace: "default".into(),
        name: "a".into(),
        vm_uid: "uid-vm-a".into(),
        vmi_uid: "uid-vmi-a".into(),
        pvcs: vec!["a-disk".into()],
        started: t("2026-01-01T11:50:00Z"),
    }]);
    let d = only_decision(&f, &policy());
    assert_eq!(
        steps(&d.action),
        [format!(
            "clear vm: {CONTROLLER_FINALIZE},{HARVESTER_CLEANUP}"
        )]
    );
    // Still proven: a process for the old VMI uid blocks it.
    f.local.processes = Gathered::read(vec![proc_for("a", ProcessKind::Qemu)]);
    assert_eq!(only_decision(&f, &policy()).action, Action::Blocked);
}

#[test]
fn orphans_are_reported_and_killed_only_when_asked() {
    let mut f = facts();
    f.local.processes = Gathered::read(vec![proc_for("ghost", ProcessKind::Qemu)]);
    let plan1 = plan(&f, &policy());
    assert_eq!(plan1.orphans.len(), 1);
    assert!(!plan1.orphans[0].kill);
    assert!(
        plan(
            &f,
            &Policy {
                kill_orphans: true,
                ..policy()
            }
        )
        .orphans[0]
            .kill
    );
    // Unreadable VMIs: no process can be called an orphan.
    f.cluster.vmis = Gathered::unreadable("api", "down");
    assert!(plan(&f, &policy()).orphans.is_empty());
}

// ---- Property tests -------------------------------------------------------------

const FINALIZER_POOL: &[&str] = &[
    VMI_FOREGROUND,
    "foregroundDeleteVirtualMachine",
    CONTROLLER_FINALIZE,
    HARVESTER_CLEANUP,
    "wrangler.cattle.io/VMController.BackfillObservedNetworkMacAddress",
    UNKNOWN,
    "other.io/x",
];

prop_compose! {
    fn arb_vmi(i: usize)(
        node in prop::sample::select(vec![ME, "n2"]),
        status_node in prop::option::of(prop::sample::select(vec![ME, "n2"])),
        deleting in any::<bool>(),
        deleted_min_ago in 0u32..180,
        phase in prop::sample::select(vec!["Running", "Failed", "Succeeded", "Scheduled"]),
        migrating in prop::bool::weighted(0.1),
        fins in prop::sample::subsequence(FINALIZER_POOL.to_vec(), 0..4),
        vm_fins in prop::sample::subsequence(FINALIZER_POOL.to_vec(), 0..3),
        vm_deleting in any::<bool>(),
        has_proc in prop::bool::weighted(0.3),
        held in prop::bool::weighted(0.3),
        pod in prop::option::of(any::<bool>()),
    ) -> (VmiView, VmView, bool, bool, Option<bool>) {
        let name = format!("vm{i}");
        let mut v = vmi(&name);
        v.node_label = Some(node.to_string());
        v.status_node = status_node.map(String::from);
        v.deletion_timestamp = deleting.then(|| t("2026-01-01T12:00:00Z") - jiff::SignedDuration::from_mins(i64::from(deleted_min_ago)));
        v.phase = Some(phase.to_string());
        v.migrating = migrating;
        v.finalizers = fins.iter().map(|s| s.to_string()).collect();
        let mut m = vm(&name);
        m.finalizers = vm_fins.iter().map(|s| s.to_string()).collect();
        if !vm_deleting { m.deletion_timestamp = None; }
        (v, m, has_proc, held, pod)
    }
}

fn arb_facts() -> impl Strategy<Value = (Facts, Policy)> {
    (
        prop::collection::vec(0usize..1, 1..8).prop_flat_map(|v| {
            let n = v.len();
            (0..n).map(arb_vmi).collect::<Vec<_>>()
        }),
        prop::sample::subsequence(vec![UNKNOWN.to_string()], 0..=1),
        0u64..600,
        0usize..10,
    )
        .prop_map(|(vmis, also, grace, max_vms)| {
            let mut f = facts();
            let mut procs = Vec::new();
            let mut holders = Vec::new();
            let mut pods = Vec::new();
            let mut pvcs = Vec::new();
            for (v, _, has_proc, held, pod) in &vmis {
                let name = v.key.name.clone();
                if *has_proc {
                    procs.push(proc_for(&name, ProcessKind::Qemu));
                }
                if *held {
                    holders.push(FdHolder {
                        pid: 1,
                        comm: "qemu".into(),
                        fd: "3".into(),
                        target: format!("/dev/longhorn/pvc-{name}"),
                        volume: format!("pvc-{name}"),
                        matched_by: MatchedBy::Path,
                    });
                }
                if let Some(deleting) = pod {
                    pods.push(launcher_pod(&name, *deleting));
                }
                pvcs.push(pvc(&name));
            }
            f.local.processes = Gathered::read(procs);
            f.local.disks.open_files = Gathered::read(OpenFiles {
                scanned: 1,
                holders,
                unreadable: vec![],
            });
            f.cluster.pods = Gathered::read(pods);
            f.cluster.pvcs = Gathered::read(pvcs);
            f.cluster.vms = Gathered::read(vmis.iter().map(|x| x.1.clone()).collect());
            f.cluster.vmis = Gathered::read(vmis.into_iter().map(|x| x.0).collect());
            let p = Policy {
                also_finalizers: also,
                controller_grace: Duration::from_secs(grace),
                max_vms,
                ..policy()
            };
            (f, p)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Nothing on another node, migrating, with a live process or a held disk is ever
    /// touched; only deleting objects lose finalizers; unknown finalizers are never
    /// removed unless named; pods deleted are this node's launcher pods.
    #[test]
    fn safety_invariants_hold((f, p) in arb_facts()) {
        let plan = plan(&f, &p);
        let vmis = f.cluster.vmis.value().unwrap();
        let vms = f.cluster.vms.value().unwrap();
        for d in plan.decisions.iter() {
            let Action::Recover { steps } = &d.action else { continue };
            let vmi = vmis.iter().find(|v| Some(&v.key) == d.vmi.as_ref()).unwrap();
            prop_assert_eq!(vmi.node_label.as_deref(), Some(ME));
            prop_assert!(vmi.status_node.as_deref().is_none_or(|s| s == ME));
            prop_assert!(!vmi.migrating);
            prop_assert!(f.local.processes_for(&vmi.key.namespace, &vmi.key.name, &vmi.key.uid).unwrap().is_empty());
            for vol in &d.volumes {
                prop_assert!(f.local.volume_holders(vol).unwrap().is_empty());
            }
            for s in steps {
                match s {
                    Step::ClearFinalizers { kind, object, remove, expected } => {
                        let deleting = match kind {
                            ObjectKind::Vmi => vmi.deletion_timestamp.is_some(),
                            ObjectKind::Vm => vms.iter().find(|m| m.key == *object).unwrap().deletion_timestamp.is_some(),
                        };
                        prop_assert!(deleting, "cleared a non-deleting {kind}");
                        for r in remove {
                            prop_assert!(expected.contains(r));
                            prop_assert!(r != "other.io/x");
                            prop_assert!(r != UNKNOWN || p.also_finalizers.iter().any(|a| a == UNKNOWN));
                        }
                    }
                    Step::ForceDeletePod { pod } => {
                        let pods = f.cluster.pods.value().unwrap();
                        let found = pods.iter().find(|x| x.key == *pod).unwrap();
                        prop_assert_eq!(found.node_name.as_deref(), Some(ME));
                        prop_assert_eq!(found.vmi_uid.as_deref(), Some(vmi.key.uid.as_str()));
                    }
                    Step::WaitForControllers { .. } => {}
                }
            }
        }
        // --max-vms holds: a plan with more recover decisions is refused whole.
        let n = plan.actionable().count();
        prop_assert!(n <= p.max_vms || (plan.refused.is_some() && !plan.has_work()));
    }

    /// The dry-run and the real run call the same pure function: the plan depends only
    /// on its inputs, and survives the JSON round trip the dry-run output takes.
    #[test]
    fn the_plan_is_deterministic_and_round_trips((f, p) in arb_facts()) {
        let a = plan(&f, &p);
        prop_assert_eq!(&a, &plan(&f.clone(), &p.clone()));
        let json = serde_json::to_string(&a).unwrap();
        let back: super::model::Plan = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(a, back);
    }
}
