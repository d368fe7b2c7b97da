//! KubeVirt's hotplug attachment pods (`hp-volume-*`, label `kubevirt.io=hotplug-disk`,
//! controlled by the launcher pod; kubevirt `pkg/virt-controller/services/template.go`,
//! `RenderHotplugAttachmentPodTemplate`). They set no `restartPolicy`, so `Always`: while
//! their pod objects exist the kubelet restarts them after a reboot and they mount the
//! hotplugged volume again. When vmrecover frees a launcher pod it frees the hotplug pods
//! that launcher pod owns on this node too (force delete with a UID precondition, as for
//! the launcher), not leaving them to a garbage collector that may not run yet. A hotplug
//! pod whose launcher pod is not freed (a live VMI's) is never touched. Pure: part of the
//! planner.

use super::blocker::Blocker;
use super::model::{Decision, Facts, Step};
use crate::cluster::PodView;

/// The steps that free `launchers` and the hotplug pods they own, hotplug pods first.
pub(crate) fn free_steps(
    facts: &Facts,
    launchers: &[&PodView],
    d: &mut Decision,
) -> Result<Vec<Step>, (Blocker, String)> {
    let free = |p: &PodView| Step::ForceDeletePod { pod: p.key.clone() };
    if launchers.is_empty() {
        return Ok(Vec::new());
    }
    let hotplug = facts.cluster.hotplug_pods.as_result().map_err(|why| {
        (
            Blocker::EvidenceMissing,
            format!(
                "hotplug attachment pods on this node could not be read ({why}): freeing the \
                 launcher pod could leave one to restart and mount a volume again"
            ),
        )
    })?;
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
        d.reasons.push(format!(
            "hotplug attachment pod {} of the launcher pod is force-deleted with it: the \
             kubelet would restart it and mount the hotplugged volume again",
            names.join(", ")
        ));
    }
    Ok(owned
        .into_iter()
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
            p.decisions[0]
                .reasons
                .iter()
                .any(|r| r.contains("hotplug attachment pods on this node could not be read")),
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
}
