//! A fenced-node run (`run --fenced-node NODE`, a person's only): NODE is declared powered
//! off by the person, so its own evidence is not read. The plan checks what the cluster can
//! show instead (pure, from the facts): the `node.kubernetes.io/out-of-service` taint and
//! the node NotReady for at least `--stuck-after` as consistency checks (neither proves
//! power-off: Harvester ≥ 1.7 adds the taint itself to a node that is only cut off), and no
//! launcher pod of a VM here Running on another node; a disk attached to another node
//! blocks as in every plan. NODE must also show no sign of life ([`super::liveness`]).

use super::blocker::Blocker;
use super::model::{Action, Decision, Facts};
use crate::config::Policy;
use crate::evidence::Gathered;

/// Why a fenced-node plan is refused as a whole, if it is.
pub fn refusal(facts: &Facts, policy: &Policy) -> Option<(Blocker, String)> {
    let node = &facts.node;
    let h = &facts.cluster.harvester;
    if !h.out_of_service_taint {
        return Some((
            Blocker::NotFenced,
            format!(
                "node {node} does not carry the node.kubernetes.io/out-of-service taint: a \
                 fenced-node run needs it (kubectl taint node {node} \
                 node.kubernetes.io/out-of-service=nodeshutdown:NoExecute once you know the \
                 machine is off); nothing is changed"
            ),
        ));
    }
    let Some(ready) = &h.ready else {
        return Some((
            Blocker::NotFenced,
            format!("node {node} has no Ready condition to check: nothing is changed"),
        ));
    };
    if ready.status == "True" {
        return Some((
            Blocker::NotFenced,
            format!(
                "node {node} is Ready: it is up and proves things itself; its own agent \
                 recovers it (nothing is changed)"
            ),
        ));
    }
    let stuck_after = jiff::SignedDuration::try_from(policy.stuck_after).unwrap_or_default();
    let down_for = ready.since.map(|t| facts.now.duration_since(t));
    if down_for.is_none_or(|d| d < stuck_after) {
        return Some((
            Blocker::NotFenced,
            format!(
                "node {node} has not been NotReady for --stuck-after ({}s) yet{}: nothing is \
                 changed",
                policy.stuck_after.as_secs(),
                ready
                    .since
                    .map(|t| format!(" (since {t})"))
                    .unwrap_or_default()
            ),
        ));
    }
    super::liveness::refusal(facts, policy)
}

/// The plan's statement of where the proof comes from.
pub fn declaration(facts: &Facts) -> String {
    format!(
        "FENCED RUN: {node} declared powered off by the operator; {node}'s own evidence not \
         read. Nothing was proved on {node}: the declaration of the person running this \
         command stands in for it. The cluster was checked for the out-of-service taint, \
         NotReady, signs of life of {node} (heartbeat, Lease, summary, Longhorn node, this \
         machine's identity), disks attached elsewhere and launcher pods running elsewhere",
        node = facts.node
    )
}

/// Blocks every decision that would act on a VM with a launcher pod Running (or not known
/// to be gone) on another node; fails closed when those pods could not be listed.
pub fn block_running_elsewhere(facts: &Facts, decisions: &mut [Decision]) {
    let elsewhere = &facts.cluster.harvester.launchers_elsewhere;
    for d in decisions
        .iter_mut()
        .filter(|d| matches!(d.action, Action::Recover { .. }))
    {
        let why = match elsewhere {
            None => Some((
                Blocker::EvidenceMissing,
                "launcher pods on other nodes were not read".to_string(),
            )),
            Some(Gathered::Unreadable { source, reason }) => Some((
                Blocker::EvidenceMissing,
                format!("launcher pods on other nodes could not be read ({source}: {reason})"),
            )),
            Some(Gathered::Read { value: pods }) => pods
                .iter()
                .find(|p| {
                    p.key.namespace == d.namespace
                        && d.vmi.as_ref().is_some_and(|v| {
                            p.vmi_uid.as_deref() == Some(v.uid.as_str())
                                || p.vmi_name.as_deref() == Some(v.name.as_str())
                        })
                        && p.deletion_timestamp.is_none()
                })
                .map(|p| {
                    (
                        Blocker::LiveProcess,
                        format!(
                            "launcher pod {} of it is {} on node {}: it may run there",
                            p.key.name,
                            p.phase.as_deref().unwrap_or("present"),
                            p.node_name.as_deref().unwrap_or("?")
                        ),
                    )
                }),
        };
        if let Some((blocker, reason)) = why {
            d.action = Action::Blocked;
            d.reasons
                .insert(0, super::model::Reason::blocking(blocker, reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::plan::plan;
    use super::*;
    use crate::cluster::PodView;

    fn fenced_policy() -> Policy {
        Policy {
            fenced: true,
            ..Policy::default()
        }
    }

    #[test]
    fn a_fenced_node_recovers_and_the_plan_names_the_declaration() {
        let p = plan(&fenced_facts(), &fenced_policy());
        assert_eq!(p.refused, None, "{p:#?}");
        assert!(p.has_work());
        assert!(p.harvester[0].starts_with("FENCED RUN"));
    }

    #[test]
    fn no_taint_ready_or_too_recent_refuses() {
        let mut f = fenced_facts();
        f.cluster.harvester.out_of_service_taint = false;
        assert_eq!(
            plan(&f, &fenced_policy()).refused.map(|r| r.blocker),
            Some(Blocker::NotFenced)
        );
        let mut f = fenced_facts();
        if let Some(r) = f.cluster.harvester.ready.as_mut() {
            r.status = "True".into();
        }
        assert_eq!(
            plan(&f, &fenced_policy()).refused.map(|r| r.blocker),
            Some(Blocker::NotFenced)
        );
        let mut f = fenced_facts();
        if let Some(r) = f.cluster.harvester.ready.as_mut() {
            r.since = Some(f.now - jiff::SignedDuration::from_secs(60));
        }
        assert_eq!(
            plan(&f, &fenced_policy()).refused.map(|r| r.blocker),
            Some(Blocker::NotFenced)
        );
    }

    #[test]
    fn a_launcher_elsewhere_or_unread_launchers_block() {
        let mut f = fenced_facts();
        let uid = f
            .cluster
            .vmis
            .value()
            .map(|v| v[0].key.uid.clone())
            .unwrap_or_default();
        f.cluster.harvester.launchers_elsewhere = Some(Gathered::read(vec![PodView {
            key: key("default", "virt-launcher-a-2", "p2"),
            node_name: Some("n2".into()),
            phase: Some("Running".into()),
            vmi_uid: Some(uid),
            ..PodView::default()
        }]));
        let p = plan(&f, &fenced_policy());
        assert_eq!(p.decisions[0].action, Action::Blocked);
        assert_eq!(p.decisions[0].blockers(), vec![Blocker::LiveProcess]);
        let mut f = fenced_facts();
        f.cluster.harvester.launchers_elsewhere = None;
        let p = plan(&f, &fenced_policy());
        assert_eq!(p.decisions[0].blockers(), vec![Blocker::EvidenceMissing]);
    }
}
