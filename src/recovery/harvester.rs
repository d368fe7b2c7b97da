//! Harvester's node-failure handling and the pause switches in the plan: what Harvester
//! did or will do for this node (notes a person reads), and the two refusals it adds —
//! paused, and a Harvester Upgrade in progress (pure: from the facts alone).

use super::blocker::Blocker;
use super::model::Facts;
use crate::cluster::{
    ConditionView, HarvesterFacts, PAUSE_CONFIGMAP, TAINT_DRAIN, TAINT_OUT_OF_SERVICE,
};
use crate::config::Policy;
use crate::evidence::Gathered;

/// Why the whole plan is refused because of a pause or an Upgrade, if it is. `has_work`:
/// whether the plan would change anything (a plan that changes nothing is never refused:
/// the notes still say paused or upgrading).
pub fn refusal(facts: &Facts, policy: &Policy, has_work: bool) -> Option<(Blocker, String)> {
    let h = &facts.cluster.harvester;
    if !has_work {
        return None;
    }
    if policy.honour_pause {
        if let Some(why) = h.paused() {
            return Some((
                Blocker::Paused,
                format!(
                    "vmrecover is paused ({why}): nothing is changed until the pause is removed \
                     (a person who must act now: vmrecover run --ignore-pause)"
                ),
            ));
        }
        if let Some(Gathered::Unreadable { source, reason }) = &h.cluster_paused {
            return Some((
                Blocker::EvidenceMissing,
                format!(
                    "the cluster-wide pause could not be read ({source}: {reason}): nothing \
                     is changed until it can be told whether vmrecover is paused"
                ),
            ));
        }
    }
    match &h.upgrades_in_progress {
        Some(Gathered::Read { value }) if value.is_empty() || policy.during_upgrade => None,
        Some(Gathered::Read { value }) => Some((
            Blocker::UpgradeInProgress,
            format!(
                "a Harvester Upgrade is in progress ({}): Harvester's own node handling stands \
                 still and so does vmrecover; once the Upgrade is over this is decided again \
                 (a person who must act now: vmrecover run --during-upgrade)",
                value.join(", ")
            ),
        )),
        Some(Gathered::Unreadable { source, reason }) => Some((
            Blocker::EvidenceMissing,
            format!(
                "whether a Harvester Upgrade is in progress could not be read ({source}: \
                 {reason}): nothing is changed until it can be"
            ),
        )),
        None => Some((
            Blocker::EvidenceMissing,
            "Harvester's Upgrades were not read in this pass: nothing is changed without \
             knowing whether an Upgrade is in progress"
                .to_string(),
        )),
    }
}

fn condition(name: &str, c: &ConditionView) -> String {
    format!(
        "{name}={}{}{}",
        c.status,
        c.reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        c.since.map(|t| format!(" since {t}")).unwrap_or_default()
    )
}

/// What Harvester's node-down controller did or will do for this node, and the pause, in
/// lines a person reads (plan and status, text and JSON).
pub fn notes(facts: &Facts, policy: &Policy) -> Vec<String> {
    let h: &HarvesterFacts = &facts.cluster.harvester;
    let mut out = Vec::new();
    if let Some(r) = h.ready.as_ref().filter(|r| r.status != "True") {
        out.push(format!("Node {}", condition("Ready", r)));
    }
    let taints: Vec<&str> = [
        (h.drain_taint, TAINT_DRAIN),
        (h.out_of_service_taint, TAINT_OUT_OF_SERVICE),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, k)| *k)
    .collect();
    if !taints.is_empty() {
        out.push(format!(
            "Harvester's node-down controller (1.7 and later) tainted this node {} while it was \
             down: expected right after a power cut; Harvester removes them once the node is \
             Ready again. The taint is not proof of power-off: vmrecover's proof is the node's \
             own evidence",
            taints.join(" and ")
        ));
    }
    if let Some(d) = &h.drained {
        out.push(format!(
            "Harvester node condition {}",
            condition("Drained", d)
        ));
    }
    match &h.force_reset_policy {
        None => {}
        Some(Gathered::Read { value: None }) => out.push(
            "vm-force-reset-policy: not set (Harvester's default applies: enabled; 300 s up to \
             1.6, 15 s from 1.7)"
                .to_string(),
        ),
        Some(Gathered::Read { value: Some(p) }) if !p.enable => out.push(
            "vm-force-reset-policy: disabled — Harvester does nothing for a down node".to_string(),
        ),
        Some(Gathered::Read { value: Some(p) }) => out.push(format!(
            "vm-force-reset-policy: enabled, period {} s{} — up to 1.6 Harvester force-deletes \
             a down node's launcher pods after the period; from 1.7 it taints the node",
            p.period,
            if p.vm_migration_timeout > 0 {
                format!(", vmMigrationTimeout {} s", p.vm_migration_timeout)
            } else {
                String::new()
            }
        )),
        Some(Gathered::Unreadable { source, reason }) => out.push(format!(
            "vm-force-reset-policy could not be read ({source}: {reason})"
        )),
    }
    let gone = launchers_already_removed(facts);
    if gone > 0 {
        out.push(format!(
            "{gone} deleting or final VMI(s) here have no launcher pod left: Harvester's \
             node-down controller (or Kubernetes' out-of-service handling) already removed \
             them, so there is no leftover pod to force-delete; the controllers' finalizers \
             come next"
        ));
    }
    if let Some(Gathered::Read { value }) = &h.upgrades_in_progress {
        if !value.is_empty() {
            out.push(format!(
                "Harvester Upgrade in progress: {} (Harvester's node-down controller stands \
                 still during an Upgrade)",
                value.join(", ")
            ));
        }
    }
    if let Some(why) = h.paused() {
        out.push(if policy.honour_pause {
            format!("paused: {why}")
        } else {
            format!("the agent is paused ({why}); this run is a person's and is not stopped by it")
        });
    } else if h.cluster_paused.is_none() && policy.honour_pause {
        out.push(format!(
            "cluster-wide pause (ConfigMap {PAUSE_CONFIGMAP}): read only when something is to \
             be decided"
        ));
    }
    out
}

/// Deleting or final VMIs on this node with no launcher pod of theirs left here.
fn launchers_already_removed(facts: &Facts) -> usize {
    let (Some(vmis), Some(pods)) = (facts.cluster.vmis.value(), facts.cluster.pods.value()) else {
        return 0;
    };
    vmis.iter()
        .filter(|v| crate::cluster::is_deciding(v))
        .filter(|v| {
            !pods
                .iter()
                .any(|p| p.vmi_uid.as_deref() == Some(v.key.uid.as_str()))
        })
        .count()
}
