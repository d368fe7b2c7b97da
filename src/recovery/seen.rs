//! The disks of this node's deciding VMIs as first seen (issue 23, "Replaced PVCs"): what
//! the intents file's `seen` list should hold after a pass. Pure: the agent's pass and a
//! manual run write the result (`pipeline::record_seen`), and the planner reads it back as
//! keys for fresh reads (`disks.rs`), never as a proof.
//!
//! A claim is recorded once, the first time its PVC is seen bound, and never overwritten:
//! if the PVC is later deleted and made again under the same name, its UID (and PV) no
//! longer match, so the new one is a replacement and the proof follows the old disk. A
//! PVC already judged a replacement (created after the VMI) is not recorded. Records of
//! VMIs no longer listed on this node are dropped.

use super::intents::{IntentDisk, SeenVmi};
use super::model::Facts;
use crate::cluster::{is_deciding, VmiView};

/// The seen VMIs after looking at `facts`, when they differ from `current`; `None` when
/// nothing changes or the facts needed could not be read (nothing is dropped then).
pub fn next_seen(facts: &Facts, current: &[SeenVmi]) -> Option<Vec<SeenVmi>> {
    let vmis = facts.cluster.vmis.value()?;
    let mut next: Vec<SeenVmi> = current
        .iter()
        .filter(|s| vmis.iter().any(|v| v.key.uid == s.vmi_uid))
        .cloned()
        .collect();
    for vmi in vmis.iter().filter(|v| mine(facts, v) && is_deciding(v)) {
        let disks = bound_disks(facts, vmi);
        match next.iter_mut().find(|s| s.vmi_uid == vmi.key.uid) {
            Some(seen) => {
                for d in disks {
                    if !seen.disks.iter().any(|r| r.pvc == d.pvc) {
                        seen.disks.push(d);
                    }
                }
            }
            None => next.push(SeenVmi {
                namespace: vmi.key.namespace.clone(),
                name: vmi.key.name.clone(),
                vmi_uid: vmi.key.uid.clone(),
                first_seen: facts.now,
                disks,
            }),
        }
    }
    (next != current).then_some(next)
}

/// A VMI both of whose node fields name this node.
fn mine(facts: &Facts, v: &VmiView) -> bool {
    v.node_label.as_deref() == Some(facts.node.as_str())
        && v.status_node.as_deref() == Some(facts.node.as_str())
}

/// The keys of `vmi`'s claims whose PVC is bound and not a replacement, as read now.
fn bound_disks(facts: &Facts, vmi: &VmiView) -> Vec<IntentDisk> {
    let (Some(pvcs), Some(pvs)) = (facts.cluster.pvcs.value(), facts.cluster.pvs.value()) else {
        return Vec::new();
    };
    let ns = &vmi.key.namespace;
    vmi.pvcs
        .iter()
        .filter_map(|claim| {
            let p = pvcs
                .iter()
                .find(|p| &p.namespace == ns && &p.name == claim)?;
            if p.created_after(vmi) {
                return None;
            }
            let pv = pvs
                .iter()
                .find(|q| Some(&q.name) == p.volume_name.as_ref())?;
            Some(IntentDisk {
                pvc: format!("{ns}/{claim}"),
                pvc_uid: p.uid.clone(),
                pv: pv.name.clone(),
                handle: pv.handle.clone().unwrap_or_else(|| pv.name.clone()),
                driver: pv.driver.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::Gathered;
    use crate::recovery::fixtures::{facts, pv, pvc};

    /// A deciding VMI's bound claims are recorded once, with the PVC's UID and driver; a
    /// later look at a replacement (another UID, another PV) keeps the first record; a VMI
    /// no longer listed is dropped; unreadable VMIs change nothing.
    #[test]
    fn claims_are_recorded_when_first_seen_and_never_overwritten() {
        let mut f = facts();
        let first = next_seen(&f, &[]).expect("recorded");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].vmi_uid, "uid-vmi-a");
        let d = &first[0].disks[0];
        assert_eq!(d.pvc, "default/a-disk");
        assert_eq!(d.pvc_uid.as_deref(), Some("uid-pvc-a"));
        assert_eq!((d.pv.as_str(), d.handle.as_str()), ("pvc-a", "pvc-a"));
        assert_eq!(d.driver.as_deref(), Some("driver.longhorn.io"));
        assert_eq!(
            next_seen(&f, &first),
            None,
            "nothing new: not written again"
        );

        // Deleted and made again under the same name: the first record stays.
        let mut again = pvc("a");
        again.uid = Some("uid-pvc-a-again".into());
        again.volume_name = Some("pvc-b".into());
        f.cluster.pvcs = Gathered::read(vec![again]);
        f.cluster.pvs = Gathered::read(vec![pv("a"), pv("b")]);
        assert_eq!(next_seen(&f, &first), None);

        f.cluster.vmis = Gathered::unreadable("vmis", "timeout");
        assert_eq!(next_seen(&f, &first), None);
        f.cluster.vmis = Gathered::read(vec![]);
        assert_eq!(next_seen(&f, &first), Some(vec![]));
    }

    /// A VMI that is not deciding, or not this node's by both fields, is not recorded; a
    /// PVC created after the VMI (a replacement already) is not recorded.
    #[test]
    fn only_this_nodes_deciding_vmis_and_their_own_pvcs_are_recorded() {
        let mut f = facts();
        let mut live = crate::recovery::fixtures::vmi("a");
        live.deletion_timestamp = None;
        f.cluster.vmis = Gathered::read(vec![live]);
        assert_eq!(next_seen(&f, &[]), None);
        let mut elsewhere = crate::recovery::fixtures::vmi("a");
        elsewhere.status_node = Some("n2".into());
        f.cluster.vmis = Gathered::read(vec![elsewhere]);
        assert_eq!(next_seen(&f, &[]), None);
        let mut f = facts();
        let mut late = pvc("a");
        late.created = Some(crate::recovery::fixtures::t("2026-01-01T11:30:00Z"));
        f.cluster.pvcs = Gathered::read(vec![late]);
        let seen = next_seen(&f, &[]).expect("the VMI is recorded");
        assert!(seen[0].disks.is_empty(), "{seen:?}");
    }
}
