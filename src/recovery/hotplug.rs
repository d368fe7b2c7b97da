//! KubeVirt's hotplug attachment pods (`hp-volume-*`, label `kubevirt.io=hotplug-disk`,
//! controlled by the launcher pod; kubevirt `pkg/virt-controller/services/template.go`,
//! `RenderHotplugAttachmentPodTemplate`). They set no `restartPolicy`, so `Always`: while
//! their pod objects exist the kubelet restarts them after a reboot and they mount the
//! hotplugged volume again. When vmrecover frees a launcher pod it frees the hotplug pods
//! that launcher pod owns on this node too (force delete with a UID precondition, as for
//! the launcher), not leaving them to a garbage collector that may not run yet. A hotplug
//! pod whose launcher pod is already gone (deleted, the garbage collector not run yet
//! after the outage) is freed with the deciding VMI it provably belongs to: its
//! controller is a launcher pod the VMI's `status.activePods` names, or the VMI's
//! `status.volumeStatus` names the pod itself (`hotplugVolume.attachPodUID`) — the only
//! links KubeVirt writes (the pod carries no VMI name or UID). A hotplug pod whose
//! launcher pod exists and is not freed (a live VMI's) is never touched. Pure: part of the
//! planner.

use super::blocker::Blocker;
use super::model::{Decision, Facts, Reason, Step};
use crate::cluster::{PodView, VmiView};

/// The hotplug attachment pods on this node that are `vmi`'s although their launcher pod
/// is gone (see the module's comment). Unreadable blocks when the VMI has pods of record.
pub(crate) fn orphans<'a>(
    facts: &'a Facts,
    vmi: &VmiView,
) -> Result<Vec<&'a PodView>, (Blocker, String)> {
    if vmi.pods_of_record.is_empty() {
        return Ok(Vec::new());
    }
    let hotplug = hotplug_pods(facts, "the VMI's")?;
    let launchers = facts
        .cluster
        .pods
        .value()
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(hotplug
        .iter()
        .filter(|h| {
            let owner = h.owner_pod_uid.as_deref();
            owner.is_some_and(|o| !launchers.iter().any(|l| l.key.uid == o))
                && (owner.is_some_and(|o| vmi.pods_of_record.iter().any(|r| r == o))
                    || vmi.pods_of_record.contains(&h.key.uid))
        })
        .collect())
}

fn hotplug_pods<'a>(facts: &'a Facts, whose: &str) -> Result<&'a [PodView], (Blocker, String)> {
    facts
        .cluster
        .hotplug_pods
        .as_result()
        .map(Vec::as_slice)
        .map_err(|why| {
            (
                Blocker::EvidenceMissing,
                format!(
                    "hotplug attachment pods on this node could not be read ({why}): one of \
                     {whose} could be left to restart and mount a volume again"
                ),
            )
        })
}

/// The steps that free `launchers` and the hotplug pods they own, and `vmi`'s hotplug pods
/// whose launcher pod is gone, hotplug pods first.
pub(crate) fn free_steps(
    facts: &Facts,
    vmi: &VmiView,
    launchers: &[&PodView],
    d: &mut Decision,
) -> Result<Vec<Step>, (Blocker, String)> {
    let free = |p: &PodView| Step::ForceDeletePod { pod: p.key.clone() };
    let orphaned = orphans(facts, vmi)?;
    if !orphaned.is_empty() {
        let names: Vec<&str> = orphaned.iter().map(|p| p.key.name.as_str()).collect();
        d.reasons.push(Reason::why(format!(
            "hotplug attachment pod {} of this VMI outlived its launcher pod: force-deleted, \
             else the kubelet restarts it and mounts the hotplugged volume again",
            names.join(", ")
        )));
    }
    if launchers.is_empty() {
        return Ok(orphaned.into_iter().map(free).collect());
    }
    let hotplug = hotplug_pods(facts, "the launcher pod's")?;
    let owned: Vec<&PodView> = hotplug
        .iter()
        .filter(|h| {
            h.owner_pod_uid
                .as_deref()
                .is_some_and(|u| launchers.iter().any(|l| l.key.uid == u))
        })
        .collect();
    if !owned.is_empty() {
        let names: Vec<&str> = owned.iter().map(|p| p.key.name.as_str()).collect();
        d.reasons.push(Reason::why(format!(
            "hotplug attachment pod {} of the launcher pod is force-deleted with it: the \
             kubelet would restart it and mount the hotplugged volume again",
            names.join(", ")
        )));
    }
    Ok(orphaned
        .into_iter()
        .chain(owned)
        .chain(launchers.iter().copied())
        .map(free)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::model::{Action, Facts};
    use super::super::plan::plan;
    use super::*;
    use crate::config::Policy;
    use crate::evidence::Gathered;

    fn launcher(vmi: &str, live: bool) -> PodView {
        PodView {
            key: key(
                "default",
                &format!("virt-launcher-{vmi}-x"),
                &format!("uid-launcher-{vmi}"),
            ),
            node_name: Some(ME.into()),
            phase: Some(if live { "Running" } else { "Failed" }.into()),
            vmi_uid: Some(format!("uid-vmi-{vmi}")),
            vmi_name: Some(vmi.into()),
            ..PodView::default()
        }
    }

    fn hotplug(name: &str, owner: &str) -> PodView {
        PodView {
            key: key("default", name, &format!("uid-{name}")),
            node_name: Some(ME.into()),
            owner_pod_uid: Some(format!("uid-launcher-{owner}")),
            ..PodView::default()
        }
    }

    fn deleted_pods(f: &Facts) -> Vec<String> {
        let p = plan(f, &Policy::default());
        p.decisions
            .iter()
            .flat_map(|d| match &d.action {
                Action::Recover { steps } => steps
                    .iter()
                    .filter_map(|s| match s {
                        Step::ForceDeletePod { pod } => Some(pod.name.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_freed_launcher_takes_its_hotplug_pods_and_no_one_elses() {
        let mut f = facts();
        f.cluster.pods = Gathered::read(vec![launcher("a", false), launcher("live", true)]);
        f.cluster.hotplug_pods = Gathered::read(vec![
            hotplug("hp-volume-a1", "a"),
            hotplug("hp-volume-live", "live"),
            hotplug("hp-volume-stray", "gone"),
        ]);
        assert_eq!(deleted_pods(&f), ["hp-volume-a1", "virt-launcher-a-x"]);
    }

    #[test]
    fn unreadable_hotplug_pods_block_freeing_a_launcher() {
        let mut f = facts();
        f.cluster.pods = Gathered::read(vec![launcher("a", false)]);
        f.cluster.hotplug_pods = Gathered::unreadable("pods", "forbidden");
        let p = plan(&f, &Policy::default());
        assert_eq!(p.decisions[0].action, Action::Blocked, "{p:#?}");
        assert!(
            p.decisions[0].reasons.iter().any(|r| r
                .text
                .contains("hotplug attachment pods on this node could not be read")),
            "{p:#?}"
        );
        // Nothing to free: nothing to read.
        let mut f = facts();
        f.cluster.hotplug_pods = Gathered::unreadable("pods", "forbidden");
        assert!(deleted_pods(&f).is_empty());
        assert!(matches!(
            plan(&f, &Policy::default()).decisions[0].action,
            Action::Recover { .. }
        ));
    }

    /// Issue 23: a hotplug pod whose launcher pod is gone is freed with the deciding VMI
    /// whose `status.activePods` names that launcher (or whose volume status names the pod
    /// itself); one of a launcher that still exists, or of another VMI, is never touched.
    #[test]
    fn a_hotplug_pod_whose_launcher_is_gone_goes_with_its_vmi_only() {
        let mut f = facts();
        if let Gathered::Read { value } = &mut f.cluster.vmis {
            value[0].pods_of_record = vec!["uid-launcher-a".into(), "uid-hp-volume-a2".into()];
        }
        f.cluster.pods = Gathered::read(vec![launcher("live", true)]);
        let mut by_status = hotplug("hp-volume-a2", "replaced");
        by_status.owner_pod_uid = Some("uid-launcher-a-old".into());
        f.cluster.hotplug_pods = Gathered::read(vec![
            hotplug("hp-volume-a1", "a"),
            by_status,
            hotplug("hp-volume-live", "live"),
            hotplug("hp-volume-stray", "gone"),
        ]);
        assert_eq!(deleted_pods(&f), ["hp-volume-a1", "hp-volume-a2"]);

        // A final VMI that is not deleting, with only such a pod left: freed too (Stopping).
        if let Gathered::Read { value } = &mut f.cluster.vmis {
            value[0].deletion_timestamp = None;
            value[0].phase = Some("Failed".into());
        }
        assert_eq!(deleted_pods(&f), ["hp-volume-a1", "hp-volume-a2"]);

        // A live VMI's hotplug pods are never touched, whatever it records.
        if let Gathered::Read { value } = &mut f.cluster.vmis {
            value[0].phase = Some("Running".into());
        }
        assert!(deleted_pods(&f).is_empty());
    }

    #[test]
    fn unreadable_hotplug_pods_block_a_vmi_with_pods_of_record() {
        let mut f = facts();
        if let Gathered::Read { value } = &mut f.cluster.vmis {
            value[0].pods_of_record = vec!["uid-launcher-a".into()];
        }
        f.cluster.hotplug_pods = Gathered::unreadable("pods", "forbidden");
        let p = plan(&f, &Policy::default());
        assert_eq!(p.decisions[0].action, Action::Blocked, "{p:#?}");
    }
}
