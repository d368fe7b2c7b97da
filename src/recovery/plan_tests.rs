//! Table-driven tests and property tests of the planner's safety rules (docs/architecture.md §6).

use std::time::Duration;

use proptest::prelude::*;

use super::blocker::Blocker;
use super::finalizers::ObjectKind;
use super::fixtures::*;
use super::intents::RecoveryIntent;
use super::model::{Action, Facts, Step};
use super::plan::plan;
use crate::cluster::NamespacedName;
use crate::cluster::{AttachmentView, ClusterFacts, PodView, VmView, VmiView};
use crate::config::Policy;
use crate::evidence::Gathered;
use crate::node::volumes::{FdHolder, MatchedBy, OpenFiles};
use crate::node::ProcessKind;

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
        d.reasons.iter().any(|r| r.text.contains(needle)),
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
            // A PVC that is gone is followed (issue 14), but not without the evidence.
            "Longhorn volumes could not be read",
            Box::new(|f| {
                f.cluster.pvcs = Gathered::read(vec![]);
                f.cluster.longhorn_volumes = Gathered::unreadable("volumes.longhorn.io", "403")
            }),
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
        Box::new(|v| {
            v.node_label = Some("n2".into());
            v.status_node = Some("n2".into())
        }),
        Box::new(|v| {
            v.node_label = None;
            v.status_node = Some("n2".into())
        }),
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

/// Issue 12 item 7: a VMI whose label and status name different nodes is never acted
/// on, and is reported as blocked (not "not mine") on either node.
#[test]
fn label_and_status_that_disagree_block_on_both_nodes() {
    for (label, status) in [("n1", "n2"), ("n2", "n1")] {
        let mut f = facts();
        let mut v = vmi("a");
        v.node_label = Some(label.into());
        v.status_node = Some(status.into());
        f.cluster.vmis = Gathered::read(vec![v]);
        let d = only_decision(&f, &policy());
        assert_eq!(d.action, Action::Blocked, "{d:#?}");
        assert_eq!(d.blockers(), vec![Blocker::NodeDisagreement]);
        assert!(d.reasons[0].text.contains(label) && d.reasons[0].text.contains(status));
    }
}

/// Issue 23 item 7: a VMI whose label names this node but whose `status.nodeName` is
/// empty (or the other way round) is a disagreement too: blocked, never planned as this
/// node's, and the reason says truthfully which node reports it.
#[test]
fn a_label_or_status_alone_naming_this_node_is_a_disagreement() {
    for (label, status, says) in [
        (Some("n1"), None, "this node reports it"),
        (None, Some("n1"), "no agent lists it by label"),
    ] {
        let mut f = facts();
        let mut v = vmi("a");
        v.node_label = label.map(String::from);
        v.status_node = status.map(String::from);
        f.cluster.vmis = Gathered::read(vec![v]);
        let d = only_decision(&f, &policy());
        assert_eq!(d.action, Action::Blocked, "{d:#?}");
        assert_eq!(d.blockers(), vec![Blocker::NodeDisagreement]);
        assert!(d.reasons[0].text.contains(says), "{:?}", d.reasons);
    }
}

/// Issue 23 item 7: a corrupt intents file refuses every change on the node, a pod free
/// of a `Stopping` VM and a VMI-only clear included.
#[test]
fn a_corrupt_intents_file_refuses_every_change() {
    let mut f = facts();
    let mut v = vmi("a");
    v.deletion_timestamp = None;
    v.phase = Some("Failed".into());
    f.cluster.vmis = Gathered::read(vec![v]);
    f.cluster.pods = Gathered::read(vec![launcher_pod("a", false)]);
    f.intents = Gathered::unreadable("/state/recovery-intents.json", "expected value at line 1");
    let p = plan(&f, &policy());
    assert_eq!(p.refused_by(), Some(Blocker::EvidenceMissing), "{p:#?}");
    assert!(p
        .refused
        .as_ref()
        .map(|r| r.text.as_str())
        .is_some_and(|r| r.contains("recovery-intents.json")));
    assert!(!p.has_work());
}

/// Issue 12 item 8: `status.migrationState` decides "migrating now"; a target label left
/// by KubeVirt <= 1.5 after a failed or finished migration does not block forever, and a
/// migration in flight without the label names its target from the state.
#[test]
fn migration_state_not_the_stale_label_decides() {
    // Failed migration: the label still names the target, the state says it ended.
    let mut f = facts();
    let mut v = vmi("a");
    v.migration_target = Some("n2".into());
    v.has_migration_state = true;
    v.migrating = false;
    v.migration_state_target = Some("n2".into());
    f.cluster.vmis = Gathered::read(vec![v]);
    let d = only_decision(&f, &policy());
    assert!(matches!(d.action, Action::Recover { .. }), "{d:#?}");

    // In flight, no label: the target comes from the state.
    let mut f = facts();
    let mut v = vmi("a");
    v.has_migration_state = true;
    v.migrating = true;
    v.migration_state_target = Some("n3".into());
    f.cluster.vmis = Gathered::read(vec![v]);
    let d = only_decision(&f, &policy());
    assert_eq!(d.action, Action::NotMine, "{d:#?}");
    assert_eq!(d.blockers(), vec![Blocker::Migrating]);
    assert!(d.reasons[0].text.contains("target n3"), "{:?}", d.reasons);
}

/// Issue 12 item 6: a hotplugged or memory-dump volume whose claim is not named blocks.
#[test]
fn unnamed_volumes_in_status_block() {
    let mut f = facts();
    let mut v = vmi("a");
    v.unnamed_volumes = vec!["hp-disk".into()];
    f.cluster.vmis = Gathered::read(vec![v]);
    let d = only_decision(&f, &policy());
    assert_eq!(d.action, Action::Blocked);
    assert!(d.reasons.iter().any(|r| r.text.contains("hp-disk")));
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
fn the_load_balancer_vm_finalizer_is_cleared_and_says_what_it_skips() {
    // A guest-cluster VM of Harvester 1.7 as the load balancer and Harvester leave it.
    let mut f = facts();
    let mut m = vm("a");
    m.finalizers = [
        "wrangler.cattle.io/harvester-lb-vm-controller",
        CONTROLLER_FINALIZE,
        "wrangler.cattle.io/VMController.CleanupPVCAndSnapshot",
    ]
    .map(String::from)
    .to_vec();
    f.cluster.vms = Gathered::read(vec![m]);
    let d = only_decision(&f, &policy());
    assert!(matches!(d.action, Action::Recover { .. }), "{d:#?}");
    assert!(
        steps(&d.action)
            .iter()
            .any(|s| s.starts_with("clear vm:") && s.contains("harvester-lb-vm-controller")),
        "{:#?}",
        steps(&d.action)
    );
    assert!(
        d.skipped_side_effects
            .iter()
            .any(|s| s.contains("harvester-lb-vm-controller on the vm")
                && s.contains("LoadBalancers")),
        "{:#?}",
        d.skipped_side_effects
    );
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
        claims: vec![format!("{name}-disk")],
        owner_pod_uid: None,
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
    f.cluster.pvs = Gathered::read(vec![pv("a"), pv("b"), pv("c")]);
    let p = Policy {
        max_vms: 2,
        ..policy()
    };
    let refused = plan(&f, &p);
    assert!(refused
        .refused
        .as_ref()
        .map(|r| r.text.as_str())
        .unwrap()
        .contains("--max-vms 2"));
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

/// Issue 23: with `--only`, VMIs that cannot be read are said as such, never as "not on
/// this node" (the re-check before a change relies on it).
#[test]
fn unreadable_vmis_stay_unreadable_under_only() {
    let mut f = facts();
    f.cluster.vmis = Gathered::unreadable("virtualmachineinstances", "forbidden");
    let mut p = policy();
    p.only = vec![NamespacedName {
        namespace: "default".into(),
        name: "a".into(),
    }];
    let d = only_decision(&f, &p);
    assert_eq!(d.blockers(), vec![Blocker::ClusterUnreadable], "{d:#?}");
}

#[test]
fn unreadable_cluster_blocks_everything() {
    let mut f = facts();
    f.cluster = ClusterFacts::unreachable(ME, "api", "connection refused");
    let plan = plan(&f, &policy());
    assert!(!plan.has_work());
    assert_eq!(plan.decisions[0].action, Action::Blocked);
    assert!(plan.decisions[0].reasons[0]
        .text
        .contains("connection refused"));
}

#[test]
fn only_limits_the_plan_and_names_what_it_did_not_find() {
    let mut f = facts();
    f.cluster.vmis = Gathered::read(vec![vmi("a"), vmi("b")]);
    f.cluster.vms = Gathered::read(vec![vm("a"), vm("b")]);
    f.cluster.pvcs = Gathered::read(vec![pvc("a"), pvc("b")]);
    f.cluster.pvs = Gathered::read(vec![pv("a"), pv("b")]);
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
        disks: vec![],
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
    f.cluster.claimed = Gathered::read(vec![crate::cluster::ClaimedVmi {
        namespace: "default".into(),
        name: "ghost".into(),
        vmi: None,
    }]);
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
            let mut pvs = Vec::new();
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
                pvs.push(pv(&name));
            }
            f.cluster.pvs = Gathered::read(pvs);
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

/// Issue 12 item 1: `--node` must be proven to be this machine, and the kubelet must
/// have reported this boot; otherwise the plan is shown but refused whole.
#[test]
fn node_identity_gates_every_change() {
    use crate::cluster::NodeIdentity;
    let cases: Vec<(Mutation<Facts>, Blocker, &str)> = vec![
        (
            Box::new(|f| {
                f.cluster.node_identity = Gathered::read(NodeIdentity {
                    machine_id: "0123456789abcdef0123456789abcdef".into(),
                    boot_id: BOOT_ID.into(),
                })
            }),
            Blocker::IdentityMismatch,
            "0123456789abcdef0123456789abcdef",
        ),
        (
            Box::new(|f| {
                f.cluster.node_identity = Gathered::read(NodeIdentity {
                    machine_id: MACHINE_ID.into(),
                    boot_id: "ffffffffffffffffffffffffffffffff".into(),
                })
            }),
            Blocker::BootNotReported,
            "ffffffffffffffffffffffffffffffff",
        ),
        (
            Box::new(|f| f.cluster.node_identity = Gathered::read(NodeIdentity::default())),
            Blocker::EvidenceMissing,
            "no status.nodeInfo.machineID",
        ),
        (
            Box::new(|f| f.host = Gathered::unreadable("/host/etc/machine-id", "missing")),
            Blocker::EvidenceMissing,
            "/host/etc/machine-id",
        ),
    ];
    for (mutate, kind, names) in cases {
        let mut f = facts();
        mutate(&mut f);
        let p = plan(&f, &policy());
        assert_eq!(p.refused_by(), Some(kind), "{p:#?}");
        let why = p.refused.as_ref().map(|r| r.text.as_str()).unwrap();
        assert!(why.contains(names), "{why}");
        if kind == Blocker::IdentityMismatch {
            assert!(why.contains(MACHINE_ID), "both sides named: {why}");
        }
        assert!(!p.has_work(), "a refused plan changes nothing");
        // The decisions are still shown.
        assert!(matches!(p.decisions[0].action, Action::Recover { .. }));
    }
    let p = plan(&facts(), &policy());
    assert_eq!(p.refused_by(), None, "{:?}", p.refused);
}

/// Issue 12 item 2: a launcher of a VM that is starting (its VMI names no node yet), a
/// migration target, or one whose pod is here is never an orphan; one whose VMI could not
/// be looked up is never killed.
#[test]
fn starting_vms_and_unknowns_are_never_killed_as_orphans() {
    use crate::cluster::ClaimedVmi;
    let kill = Policy {
        kill_orphans: true,
        ..policy()
    };
    // Starting: Pending VMI of the same UID, no node label or status node yet.
    let mut f = facts();
    f.local.processes = Gathered::read(vec![proc_for("new", ProcessKind::Launcher)]);
    let mut starting = vmi("new");
    starting.node_label = None;
    starting.status_node = None;
    starting.deletion_timestamp = None;
    starting.phase = Some("Scheduling".into());
    f.cluster.claimed = Gathered::read(vec![ClaimedVmi {
        namespace: "default".into(),
        name: "new".into(),
        vmi: Some(starting),
    }]);
    let p = plan(&f, &kill);
    assert!(p.orphans.is_empty(), "{:#?}", p.orphans);
    let d = p
        .decisions
        .iter()
        .find(|d| d.name == "new")
        .expect("reported");
    assert_eq!(d.action, Action::NotMine);
    assert!(d.reasons[0].text.contains("starting"), "{:?}", d.reasons);

    // A migration target: the VMI runs on n2 and migrates here.
    let mut target = vmi("mig");
    target.node_label = Some("n2".into());
    target.status_node = Some("n2".into());
    target.migrating = true;
    target.has_migration_state = true;
    target.migration_state_target = Some(ME.into());
    f.local.processes = Gathered::read(vec![proc_for("mig", ProcessKind::Qemu)]);
    f.cluster.claimed = Gathered::read(vec![ClaimedVmi {
        namespace: "default".into(),
        name: "mig".into(),
        vmi: Some(target),
    }]);
    assert!(plan(&f, &kill).orphans.is_empty());

    // The lookup failed: listed, never killed.
    f.cluster.claimed = Gathered::unreadable("virtualmachineinstances default/mig", "timeout");
    let p = plan(&f, &kill);
    assert_eq!(p.orphans.len(), 1);
    assert!(!p.orphans[0].kill, "{:?}", p.orphans[0]);

    // Its launcher pod is on this node: not an orphan.
    f.cluster.claimed = Gathered::read(vec![ClaimedVmi {
        namespace: "default".into(),
        name: "mig".into(),
        vmi: None,
    }]);
    f.cluster.pods = Gathered::read(vec![crate::cluster::PodView {
        key: key("default", "virt-launcher-mig-x", "pod-uid"),
        vmi_uid: Some("uid-vmi-mig".into()),
        vmi_name: Some("mig".into()),
        ..Default::default()
    }]);
    assert!(plan(&f, &kill).orphans.is_empty());

    // Orphan kills count against --max-vms.
    f.cluster.pods = Gathered::read(vec![]);
    let p = plan(
        &f,
        &Policy {
            max_vms: 1,
            ..kill.clone()
        },
    );
    assert_eq!(
        p.refused_by(),
        Some(Blocker::PlanRefused),
        "{:?}",
        p.refused
    );
}

/// Issue 12 item 4: a static PV whose name is not its Longhorn volume: the device, the
/// filesystem staging and Longhorn's attachments are keyed on the volume handle.
#[test]
fn a_static_pv_is_checked_by_its_volume_handle() {
    let static_pv = |f: &mut Facts| {
        f.cluster.pvs = Gathered::read(vec![crate::cluster::PvView {
            name: "pvc-a".into(),
            driver: Some("driver.longhorn.io".into()),
            handle: Some("restored-disk-7".into()),
            claim_ref: Some(("default".into(), "a-disk".into())),
            claim_uid: None,
        }]);
    };
    // Open by a process under the Longhorn volume's name: held.
    let mut f = facts();
    static_pv(&mut f);
    f.local.disks.open_files = Gathered::read(OpenFiles {
        scanned: 1,
        holders: vec![FdHolder {
            pid: 9,
            comm: "qemu".into(),
            fd: "3".into(),
            target: "/dev/longhorn/restored-disk-7".into(),
            volume: "restored-disk-7".into(),
            matched_by: MatchedBy::Path,
        }],
        unreadable: vec![],
    });
    assert_blocked(&f, &policy(), "restored-disk-7");
    // Attached to another node by Longhorn, under the volume's name: blocked.
    let mut f = facts();
    static_pv(&mut f);
    f.cluster.attachments = Gathered::read(vec![AttachmentView {
        volume: "restored-disk-7".into(),
        node: "n2".into(),
        source: "longhorn volume/restored-disk-7 (attached)".into(),
        attached: true,
    }]);
    assert_blocked(&f, &policy(), "to node n2");
    // The PV cannot be found: its Longhorn volume is unknown, blocked.
    let mut f = facts();
    f.cluster.pvs = Gathered::read(vec![]);
    assert_blocked(&f, &policy(), "PV pvc-a not found");
}

/// Issue 14 item 1: a PVC the operator already deleted (with its PV and Longhorn volume)
/// holds nothing, proven: recovered when nothing of it is left in the cluster or on this
/// node; checked like any other disk when something is; blocked when the node has a
/// Longhorn device no VMI accounts for.
#[test]
fn a_deleted_disk_is_followed_or_proven_absent() {
    // Everything gone: recovered, the proof names what is missing.
    let mut f = facts();
    f.cluster.pvcs = Gathered::read(vec![]);
    f.cluster.pvs = Gathered::read(vec![]);
    f.cluster.attachments = Gathered::read(vec![]);
    let d = only_decision(&f, &policy());
    assert!(matches!(d.action, Action::Recover { .. }), "{d:#?}");
    assert!(
        d.evidence
            .iter()
            .any(|e| e.contains("PVC default/a-disk is gone")),
        "{:?}",
        d.evidence
    );

    // A Released PV still names the claim and is attached to another node: blocked.
    let mut g = f.clone();
    g.cluster.pvs = Gathered::read(vec![pv("a")]);
    g.cluster.attachments = Gathered::read(vec![AttachmentView {
        volume: "pvc-a".into(),
        node: "n2".into(),
        source: "volumeattachment/csi-9".into(),
        attached: true,
    }]);
    assert_blocked(&g, &policy(), "to node n2");

    // The Longhorn volume still names the claim and is open here: blocked.
    let mut g = f.clone();
    g.cluster.longhorn_volumes = Gathered::read(vec![crate::cluster::LonghornVolumeRef {
        name: "lh-a".into(),
        pv: None,
        pvc: Some(("default".into(), "a-disk".into())),
    }]);
    g.local.disks.open_files = Gathered::read(OpenFiles {
        scanned: 1,
        holders: vec![FdHolder {
            pid: 9,
            comm: "qemu".into(),
            fd: "3".into(),
            target: "/dev/longhorn/lh-a".into(),
            volume: "lh-a".into(),
            matched_by: MatchedBy::Path,
        }],
        unreadable: vec![],
    });
    assert_blocked(&g, &policy(), "lh-a");

    // A Longhorn device on this node nothing accounts for: it could be that disk.
    let mut g = f.clone();
    g.local.disks.devices = Gathered::read(vec![crate::node::volumes::LonghornDevice {
        volume: "pvc-unknown".into(),
        path: "/dev/longhorn/pvc-unknown".into(),
        file_type: "block-device".into(),
        device: None,
    }]);
    assert_blocked(&g, &policy(), "pvc-unknown");

    // The PV list could not be read: blocked, naming it.
    let mut g = f.clone();
    g.cluster.pvs = Gathered::unreadable("persistentvolumes", "forbidden");
    assert_blocked(&g, &policy(), "PVs could not be read");
}

/// Issue 14 item 2: a shared disk attached to another node for another, live VM is not
/// evidence against this one; an attachment nothing explains still blocks.
#[test]
fn a_shared_disk_used_by_a_live_vm_elsewhere_does_not_block() {
    let mut f = facts();
    f.cluster.attachments = Gathered::read(vec![AttachmentView {
        volume: "pvc-a".into(),
        node: "n2".into(),
        source: "volumeattachment/csi-2".into(),
        attached: true,
    }]);
    assert_blocked(&f, &policy(), "no running launcher pod of another VM");
    let mut other = launcher_pod("b", false);
    other.node_name = Some("n2".into());
    other.claims = vec!["a-disk".into()];
    f.cluster.remote_pods = Gathered::read(vec![other.clone()]);
    let d = only_decision(&f, &policy());
    assert!(matches!(d.action, Action::Recover { .. }), "{d:#?}");
    assert!(
        d.evidence.iter().any(|e| e.contains("VMI default/b")),
        "{:?}",
        d.evidence
    );
    // The same pod but for this VMI (its own old pod on n2): not an explanation.
    let mut mine = other;
    mine.vmi_uid = Some("uid-vmi-a".into());
    f.cluster.remote_pods = Gathered::read(vec![mine]);
    assert_blocked(&f, &policy(), "to node n2");
}

/// Issue 14 item 5: 5,000 unknown finalizers make a one-line reason of readable length.
#[test]
fn thousands_of_finalizers_are_summarised() {
    let mut f = facts();
    let mut v = vmi("a");
    v.finalizers = (0..5000).map(|i| format!("example.com/f-{i}")).collect();
    f.cluster.vmis = Gathered::read(vec![v]);
    let d = only_decision(&f, &policy());
    assert_eq!(d.action, Action::Blocked);
    let why = &d.reasons[0].text;
    assert!(why.len() < 600, "{} bytes: {why}", why.len());
    assert!(why.contains("4995 more (5000 in all)"), "{why}");
}

/// Review findings: a disk of another CSI driver is not proven free here; a gone PVC's
/// disk recorded by an earlier run is followed by the key it was recorded under; an
/// unreadable intents file stops the absence proof; a recreated VM of the same name is
/// not the VMI's owner.
#[test]
fn review_findings_fail_closed() {
    use crate::recovery::intents::{IntentDisk, RecoveryIntent};
    // Another driver.
    let mut f = facts();
    let mut p = pv("a");
    p.driver = Some("rbd.csi.ceph.com".into());
    f.cluster.pvs = Gathered::read(vec![p]);
    assert_blocked(&f, &policy(), "not a Longhorn volume");

    // A recorded disk whose PV still exists but no longer names the claim: followed.
    let mut f = facts();
    f.cluster.pvcs = Gathered::read(vec![]);
    let mut p = pv("a");
    p.claim_ref = None;
    f.cluster.pvs = Gathered::read(vec![p]);
    f.cluster.attachments = Gathered::read(vec![AttachmentView {
        volume: "pvc-a".into(),
        node: "n2".into(),
        source: "volumeattachment/csi-x".into(),
        attached: true,
    }]);
    f.intents = Gathered::read(vec![RecoveryIntent {
        namespace: "default".into(),
        name: "a".into(),
        vm_uid: "uid-vm-a".into(),
        vmi_uid: "uid-vmi-a".into(),
        pvcs: vec!["a-disk".into()],
        disks: vec![IntentDisk {
            pvc: "default/a-disk".into(),
            pvc_uid: None,
            pv: "pvc-a".into(),
            handle: "pvc-a".into(),
            driver: Some("driver.longhorn.io".into()),
        }],
        started: t("2026-01-01T11:50:00Z"),
    }]);
    assert_blocked(&f, &policy(), "to node n2");

    // Intents unreadable: no absence proof.
    let mut f = facts();
    f.cluster.pvcs = Gathered::read(vec![]);
    f.cluster.pvs = Gathered::read(vec![]);
    f.intents = Gathered::unreadable("recovery-intents.json", "truncated");
    assert_blocked(&f, &policy(), "could not be read");

    // A VM recreated under the same name is not the owner: only the VMI is cleared.
    let mut f = facts();
    let mut other = vm("a");
    other.key.uid = "uid-vm-a-new".into();
    f.cluster.vms = Gathered::read(vec![other]);
    let d = only_decision(&f, &policy());
    assert!(
        steps(&d.action).iter().all(|s| !s.starts_with("clear vm:")),
        "{:?}",
        steps(&d.action)
    );
}
