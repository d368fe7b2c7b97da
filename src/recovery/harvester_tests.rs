//! The pause switches and a Harvester Upgrade in the plan, and what the plan says about
//! Harvester's node-down controller.

use super::blocker::Blocker;
use super::fixtures::*;
use super::model::Action;
use super::plan::plan;
use crate::cluster::{ConditionView, ForceResetPolicy, PodView};
use crate::config::Policy;
use crate::evidence::Gathered;

fn agent() -> Policy {
    Policy {
        honour_pause: true,
        ..Policy::default()
    }
}

#[test]
fn the_fixture_recovers_so_refusals_below_are_the_switches() {
    let p = plan(&facts(), &agent());
    assert!(p.has_work(), "{p:#?}");
    assert_eq!(p.paused, None);
}

#[test]
fn a_node_annotation_pauses_unless_a_person_ignores_it() {
    let mut f = facts();
    f.cluster.harvester.node_paused = Some("disk swap".into());
    let p = plan(&f, &agent());
    assert_eq!(p.refused_by(), Some(Blocker::Paused));
    assert!(!p.has_work());
    assert!(p.paused.as_deref().is_some_and(|w| w.contains("disk swap")));
    let person = plan(&f, &Policy::default());
    assert_eq!(
        person.refused_by(),
        None,
        "a person's run is not stopped by it"
    );
    assert!(person
        .harvester
        .iter()
        .any(|n| n.contains("not stopped by it")));
}

#[test]
fn the_cluster_wide_pause_and_an_unreadable_one_stop_the_agent() {
    let mut f = facts();
    f.cluster.harvester.cluster_paused = Some(Gathered::read(Some("site work".into())));
    let p = plan(&f, &agent());
    assert_eq!(p.refused_by(), Some(Blocker::Paused));
    assert!(p
        .refused
        .as_ref()
        .map(|r| r.text.as_str())
        .is_some_and(|r| r.contains("site work")));
    f.cluster.harvester.cluster_paused = Some(Gathered::unreadable("configmaps", "403"));
    assert_eq!(
        plan(&f, &agent()).refused_by(),
        Some(Blocker::EvidenceMissing)
    );
}

#[test]
fn a_paused_node_with_nothing_to_do_is_not_refused() {
    let mut f = facts();
    f.cluster.vmis = Gathered::read(vec![]);
    f.cluster.vms = Gathered::read(vec![]);
    f.cluster.harvester.node_paused = Some("true".into());
    let p = plan(&f, &agent());
    assert_eq!(p.refused_by(), None);
    assert!(p.paused.is_some(), "still shown");
}

#[test]
fn an_upgrade_in_progress_stops_the_agent_and_needs_a_persons_flag() {
    let mut f = facts();
    f.cluster.harvester.upgrades_in_progress = Some(Gathered::read(vec!["hvst-upgrade-1".into()]));
    let p = plan(&f, &agent());
    assert_eq!(p.refused_by(), Some(Blocker::UpgradeInProgress));
    assert!(p
        .refused
        .as_ref()
        .map(|r| r.text.as_str())
        .is_some_and(|r| r.contains("hvst-upgrade-1") && r.contains("--during-upgrade")));
    let person = Policy {
        during_upgrade: true,
        ..Policy::default()
    };
    let p = plan(&f, &person);
    assert_eq!(p.refused_by(), None);
    assert!(p.has_work());
    assert!(p
        .harvester
        .iter()
        .any(|n| n.contains("Upgrade in progress")));
}

#[test]
fn upgrades_unread_or_unreadable_fail_closed_when_there_is_work() {
    let mut f = facts();
    f.cluster.harvester.upgrades_in_progress = None;
    assert_eq!(
        plan(&f, &agent()).refused_by(),
        Some(Blocker::EvidenceMissing)
    );
    f.cluster.harvester.upgrades_in_progress = Some(Gathered::unreadable("upgrades", "timeout"));
    assert_eq!(
        plan(&f, &agent()).refused_by(),
        Some(Blocker::EvidenceMissing)
    );
}

#[test]
fn notes_say_what_harvester_did_and_removed_pods_are_not_leftovers() {
    let mut f = facts();
    let h = &mut f.cluster.harvester;
    h.drain_taint = true;
    h.out_of_service_taint = true;
    h.drained = Some(ConditionView {
        status: "True".into(),
        reason: Some("HarvesterNodeIsDrained".into()),
        since: None,
    });
    h.force_reset_policy = Some(Gathered::read(Some(ForceResetPolicy {
        enable: true,
        period: 15,
        vm_migration_timeout: 180,
    })));
    let p = plan(&f, &agent());
    let notes = p.harvester.join("\n");
    assert!(
        notes.contains("kubevirt.io/drain and node.kubernetes.io/out-of-service"),
        "{notes}"
    );
    assert!(
        notes.contains("expected right after a power cut"),
        "{notes}"
    );
    assert!(
        notes.contains("Drained=True (HarvesterNodeIsDrained)"),
        "{notes}"
    );
    assert!(
        notes.contains("period 15 s, vmMigrationTimeout 180 s"),
        "{notes}"
    );
    assert!(
        notes.contains("1 deleting or final VMI(s) here have no launcher pod left"),
        "{notes}"
    );
    // The taints change no decision: the node's own evidence is the proof.
    assert!(matches!(p.decisions[0].action, Action::Recover { .. }));

    // With its launcher pod still here, it is a leftover (force-deleted by the ladder).
    let mut g = facts();
    let uid = g
        .cluster
        .vmis
        .value()
        .map(|v| v[0].key.uid.clone())
        .unwrap_or_default();
    g.cluster.pods = Gathered::read(vec![PodView {
        key: key("default", "virt-launcher-a-x", "pod-uid"),
        node_name: Some(ME.into()),
        phase: Some("Running".into()),
        vmi_uid: Some(uid),
        ..PodView::default()
    }]);
    let p = plan(&g, &agent());
    assert!(
        !p.harvester
            .iter()
            .any(|n| n.contains("no launcher pod left")),
        "{:?}",
        p.harvester
    );
}
