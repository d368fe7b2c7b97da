//! Which disks a VM's proof must check, and how: from each PVC to its PV's volume handle
//! (the Longhorn volume), and — when the PVC is already gone, as after an operator deleted
//! the VM "with its disks" — to whatever is left of it (a Released PV still naming the
//! claim, a Longhorn volume that still names it, what an earlier run recorded), or to a
//! proof that nothing of it can be on this node. Pure: part of the planner.

use std::collections::BTreeSet;

use super::blocker::Blocker;
use super::intents::IntentDisk;
use super::model::{DiskKey, Facts};
use crate::cluster::{PvcView, VmiView, LONGHORN_DRIVER};

/// The disks found for `claims` of a VMI in `ns` (whose UID is `vmi_uid`), with evidence
/// lines; problems are blockers with reasons.
pub(crate) struct Resolved {
    /// Disks to check like any other (held here? attached elsewhere?).
    pub disks: Vec<DiskKey>,
    /// A replacement PVC's disk: not the VM's, so its attachments elsewhere say nothing,
    /// but one held on this node still blocks (in case the replacement was misjudged).
    pub local_only: Vec<DiskKey>,
    /// Evidence for the proof.
    pub evidence: Vec<String>,
    /// Why the proof fails.
    pub reasons: Vec<(Blocker, String)>,
}

/// Resolves every claim of `vmi` to the disks to check.
pub(crate) fn resolve(facts: &Facts, vmi: &VmiView, claims: &[String]) -> Resolved {
    let (ns, vmi_uid) = (vmi.key.namespace.as_str(), vmi.key.uid.as_str());
    let mut out = Resolved {
        disks: Vec::new(),
        local_only: Vec::new(),
        evidence: Vec::new(),
        reasons: Vec::new(),
    };
    let pvcs = match facts.cluster.pvcs.as_result() {
        Ok(p) => p,
        Err(why) => {
            out.reasons.push((
                Blocker::EvidenceMissing,
                format!("PVC evidence missing: {why}"),
            ));
            return out;
        }
    };
    for claim in claims {
        match pvcs.iter().find(|p| p.namespace == ns && &p.name == claim) {
            Some(p) => match replacement(facts, vmi, p) {
                Some(why) => {
                    out.evidence.push(format!(
                        "{why}; the proof follows the disk the VMI used, never this one"
                    ));
                    gone(facts, ns, vmi_uid, claim, Some(p), &mut out);
                    let pv = p
                        .volume_name
                        .as_deref()
                        .and_then(|pv| facts.cluster.pvs.value()?.iter().find(|q| q.name == pv));
                    out.local_only.extend(pv.map(|q| DiskKey {
                        pvc: Some(format!("{ns}/{claim}")),
                        pv: q.name.clone(),
                        handle: q.handle.clone().unwrap_or_else(|| q.name.clone()),
                        driver: q.driver.clone(),
                    }));
                }
                None => match &p.volume_name {
                    None => out
                        .evidence
                        .push(format!("PVC {ns}/{claim} is not bound to a volume")),
                    Some(pv) => bound(facts, ns, claim, pv, &mut out),
                },
            },
            None => gone(facts, ns, vmi_uid, claim, None, &mut out),
        }
    }
    out
}

/// A bound PVC: its PV's handle is the Longhorn volume.
fn bound(facts: &Facts, ns: &str, claim: &str, pv: &str, out: &mut Resolved) {
    match facts.cluster.pvs.as_result() {
        Err(why) => out.reasons.push((
            Blocker::EvidenceMissing,
            format!("PV {pv} could not be read ({why}): its Longhorn volume is unknown"),
        )),
        Ok(pvs) => match pvs.iter().find(|p| p.name == pv) {
            None => out.reasons.push((
                Blocker::EvidenceMissing,
                format!("PV {pv} not found: its Longhorn volume cannot be checked"),
            )),
            Some(p) if p.driver.as_deref() != Some(LONGHORN_DRIVER) => out.reasons.push((
                Blocker::EvidenceMissing,
                format!(
                    "PV {pv} of PVC {ns}/{claim} is not a Longhorn volume (driver {}): vmrecover \
                     proves only Longhorn disks free on this node",
                    p.driver.as_deref().unwrap_or("none: not a CSI volume")
                ),
            )),
            Some(p) => out.disks.push(DiskKey {
                pvc: Some(format!("{ns}/{claim}")),
                pv: pv.to_string(),
                handle: p.handle.clone().unwrap_or_else(|| pv.to_string()),
                driver: p.driver.clone(),
            }),
        },
    }
}

/// Why the PVC now named like one of `vmi`'s claims is not the one it used, if it is not:
/// created after the VMI, or another PVC (UID) or bound to another PV than recorded for it
/// when vmrecover first saw the VMI deciding, or by an earlier run.
pub(crate) fn replacement(facts: &Facts, vmi: &VmiView, p: &PvcView) -> Option<String> {
    let full = format!("{}/{}", p.namespace, p.name);
    if p.created_after(vmi) {
        return Some(format!(
            "PVC {full} was created {}, after the VMI ({}): a replacement the VM never used",
            p.created.map(|t| t.to_string()).unwrap_or_default(),
            vmi.created.map(|t| t.to_string()).unwrap_or_default()
        ));
    }
    recorded_for(facts, &vmi.key.uid)
        .filter(|d| d.pvc == full || d.pvc == p.name)
        .find_map(|recorded| {
            if let (Some(then), Some(now)) = (&recorded.pvc_uid, &p.uid) {
                if then != now {
                    return Some(format!(
                        "PVC {full} has UID {now}, not the UID {then} recorded when vmrecover \
                         first saw the VMI: a replacement the VM never used"
                    ));
                }
            }
            (p.volume_name.as_deref() != Some(recorded.pv.as_str())).then(|| {
                format!(
                    "PVC {full} is bound to {}, not to the PV {} recorded for it: a \
                     replacement the VM never used",
                    p.volume_name.as_deref().unwrap_or("no volume"),
                    recorded.pv
                )
            })
        })
}

/// The disk keys recorded for the VMI `vmi_uid`: when vmrecover first saw it deciding,
/// and by an earlier run at apply. Unreadable records give none (the proofs that need them
/// say so, see [`gone`]).
fn recorded_for<'a>(facts: &'a Facts, vmi_uid: &'a str) -> impl Iterator<Item = &'a IntentDisk> {
    let seen = facts.seen.value().into_iter().flatten();
    let intents = facts.intents.value().into_iter().flatten();
    seen.filter(move |s| s.vmi_uid == vmi_uid)
        .flat_map(|s| s.disks.iter())
        .chain(
            intents
                .filter(move |i| i.vmi_uid == vmi_uid)
                .flat_map(|i| i.disks.iter()),
        )
}

/// A PVC that no longer exists, or was `replaced` by another of its name: follow what may
/// be left of its disk (never the replacement's), else prove by absence that nothing of
/// it is on this node (Longhorn only).
fn gone(
    facts: &Facts,
    ns: &str,
    vmi_uid: &str,
    claim: &str,
    replaced: Option<&PvcView>,
    out: &mut Resolved,
) {
    let key = (ns.to_string(), claim.to_string());
    let subject = match replaced {
        Some(_) => format!("the PVC {ns}/{claim} the VMI used"),
        None => format!("PVC {ns}/{claim}"),
    };
    // What an earlier run recorded about this disk: keys for fresh reads, never a proof.
    let (intents, seen) = match (facts.intents.as_result(), facts.seen.as_result()) {
        (Ok(i), Ok(s)) => (i, s),
        (Err(why), _) | (_, Err(why)) => {
            out.reasons.push((
                Blocker::EvidenceMissing,
                format!(
                    "{subject} is gone and what earlier runs recorded about its disk \
                     could not be read ({why})"
                ),
            ));
            return;
        }
    };
    let full = format!("{ns}/{claim}");
    let recorded: Vec<_> = intents
        .iter()
        .filter(|i| i.vmi_uid == vmi_uid || i.namespace == ns)
        .flat_map(|i| i.disks.iter())
        .chain(
            seen.iter()
                .filter(|s| s.vmi_uid == vmi_uid)
                .flat_map(|s| s.disks.iter()),
        )
        .filter(|d| d.pvc == full || d.pvc == claim)
        .cloned()
        .collect();
    let pvs = match facts.cluster.pvs.as_result() {
        Ok(p) => p,
        Err(why) => {
            out.reasons.push((
                Blocker::EvidenceMissing,
                format!("{subject} is gone and the PVs could not be read ({why})"),
            ));
            return;
        }
    };
    let longhorn = match facts.cluster.longhorn_volumes.as_result() {
        Ok(l) => l,
        Err(why) => {
            out.reasons.push((
                Blocker::EvidenceMissing,
                format!("{subject} is gone and the Longhorn volumes could not be read ({why})"),
            ));
            return;
        }
    };
    // The replacement's own PV and Longhorn volume are not the disk the VMI used.
    let new_pv = replaced.and_then(|r| r.volume_name.clone());
    let new_handle = new_pv.as_ref().and_then(|n| {
        pvs.iter()
            .find(|p| &p.name == n)
            .map(|p| p.handle.clone().unwrap_or_else(|| p.name.clone()))
    });
    let is_new_pv = |p: &crate::cluster::PvView| {
        new_pv.as_deref() == Some(p.name.as_str())
            || replaced.is_some_and(|r| r.uid.is_some() && p.claim_uid == r.uid)
    };
    let is_new_volume = |v: &crate::cluster::LonghornVolumeRef| {
        new_handle.as_deref() == Some(v.name.as_str())
            || (new_pv.is_some() && v.pv.as_deref() == new_pv.as_deref())
    };
    let mut found = Vec::new();
    for p in pvs.iter().filter(|p| {
        !is_new_pv(p)
            && (p.claim_ref.as_ref() == Some(&key) || recorded.iter().any(|r| r.pv == p.name))
    }) {
        found.push(DiskKey {
            pvc: Some(format!("{ns}/{claim}")),
            pv: p.name.clone(),
            handle: p.handle.clone().unwrap_or_else(|| p.name.clone()),
            driver: p.driver.clone(),
        });
        out.evidence.push(format!(
            "{subject} is gone, its PV {} still exists: checked like any other disk",
            p.name
        ));
    }
    for v in longhorn.iter().filter(|v| {
        !is_new_volume(v)
            && (v.pvc.as_ref() == Some(&key) || recorded.iter().any(|r| r.handle == v.name))
    }) {
        if found.iter().any(|d| d.handle == v.name) {
            continue;
        }
        found.push(DiskKey {
            pvc: Some(format!("{ns}/{claim}")),
            pv: v.pv.clone().unwrap_or_else(|| v.name.clone()),
            handle: v.name.clone(),
            driver: Some(LONGHORN_DRIVER.to_string()),
        });
        out.evidence.push(format!(
            "{subject} is gone, its Longhorn volume {} still exists: checked like any other disk",
            v.name
        ));
    }
    if !found.is_empty() {
        out.disks.extend(found);
        return;
    }
    // Nothing of it is left in the cluster. Proof by absence holds only for Longhorn:
    // once the Longhorn volume is gone, so are its engine and its /dev/longhorn device.
    if let Some(other) = recorded
        .iter()
        .filter_map(|r| r.driver.as_deref())
        .find(|d| *d != LONGHORN_DRIVER)
    {
        out.reasons.push((
            Blocker::EvidenceMissing,
            format!(
                "PVC {ns}/{claim} and its PV are gone and its driver was {other}, not Longhorn: \
                 absence cannot be proven from this node"
            ),
        ));
        return;
    }
    let looked = if recorded.is_empty() {
        "no PV claims it, no Longhorn volume names it".to_string()
    } else {
        let names: BTreeSet<String> = recorded
            .iter()
            .flat_map(|r| [r.pv.clone(), r.handle.clone()])
            .collect();
        format!(
            "no PV claims it, no Longhorn volume names it, and the PV/volume vmrecover \
             recorded ({}) no longer exist",
            names.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    match unaccounted_on_node(facts) {
        Ok(()) => out.evidence.push(format!(
            "{subject} is gone and {looked}; this node has no Longhorn device or CSI \
             mount that another VMI or another existing Longhorn volume does not account for: \
             nothing of that disk can be held here"
        )),
        Err(why) => out.reasons.push((
            Blocker::EvidenceMissing,
            format!("{subject} is gone and {looked}, but {why}"),
        )),
    }
}

/// Whether every Longhorn device and Longhorn mount on this node belongs to a disk some
/// VMI here still names (by its PVC's PV name or its PV's handle) or to another Longhorn
/// volume that exists and names its own PVC or PV (the gone disk's volume does not exist:
/// otherwise it was followed). Anything else could be the gone disk, so the absence proof
/// fails, naming it.
fn unaccounted_on_node(facts: &Facts) -> Result<(), Unaccounted> {
    let mut known = known_volumes(facts);
    let others = facts
        .cluster
        .other_longhorn_volumes
        .as_result()
        .map_err(|e| Unaccounted::Unreadable("the other Longhorn volumes", e.to_string()))?;
    // A volume that names no PVC or PV could have been anyone's: it accounts for nothing.
    for v in others.iter().filter(|v| v.pvc.is_some() || v.pv.is_some()) {
        known.insert(v.name.clone());
        known.extend(v.pv.clone());
    }
    let disks = &facts.local.disks;
    let devices = disks
        .devices
        .as_result()
        .map_err(|e| Unaccounted::Unreadable("this node's Longhorn devices", e.to_string()))?;
    let unknown: Vec<&str> = devices
        .iter()
        .map(|d| d.volume.as_str())
        .filter(|v| !known.contains(*v))
        .collect();
    if !unknown.is_empty() {
        return Err(Unaccounted::Devices(unknown.join(", ")));
    }
    let mounts = disks
        .mounts
        .as_result()
        .map_err(|e| Unaccounted::Unreadable("this node's mounts", e.to_string()))?;
    let hashes: BTreeSet<String> = known
        .iter()
        .map(|v| crate::node::csi_paths::staging_hash(v))
        .collect();
    for m in &mounts.entries {
        // Tied by handle (device, source) or by PV name (a kubelet CSI publish path, where an
        // RWX volume's NFS mount from its share-manager sits).
        let names: Vec<&String> = m.volumes.iter().chain(&m.pv_names).collect();
        let by_volume = !names.is_empty() && names.iter().all(|v| known.contains(*v));
        let by_hash = m.staging_hash.as_ref().is_some_and(|h| hashes.contains(h));
        if !(by_volume || by_hash) {
            return Err(Unaccounted::Mount {
                at: m.mount_point.clone(),
                from: m.source.clone(),
            });
        }
    }
    Ok(())
}

/// Why the absence of a gone disk on this node is not proven.
#[derive(Debug, thiserror::Error)]
enum Unaccounted {
    /// A source the proof needs could not be read (what, why).
    #[error("{0} could not be read ({1})")]
    Unreadable(&'static str, String),
    /// Longhorn devices nothing accounts for (their volumes).
    #[error(
        "Longhorn device(s) {0} on this node belong to no VMI here nor to another existing \
         Longhorn volume and could be that disk"
    )]
    Devices(String),
    /// A Longhorn mount nothing accounts for.
    #[error(
        "the mount at {at} ({from}) belongs to no VMI here nor to another existing Longhorn \
         volume and could be that disk"
    )]
    Mount {
        /// Its mount point.
        at: String,
        /// Its source.
        from: String,
    },
}

/// Volume names (PV names and handles) of the disks the VMIs here still have.
fn known_volumes(facts: &Facts) -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    let (Some(vmis), Some(pvcs)) = (facts.cluster.vmis.value(), facts.cluster.pvcs.value()) else {
        return known;
    };
    let pvs = facts.cluster.pvs.value();
    for v in vmis {
        for c in &v.pvcs {
            if let Some(pv) = pvcs
                .iter()
                .find(|p| p.namespace == v.key.namespace && &p.name == c)
                .and_then(|p| p.volume_name.clone())
            {
                if let Some(h) = pvs
                    .and_then(|ps| ps.iter().find(|p| p.name == pv))
                    .and_then(|p| p.handle.clone())
                {
                    known.insert(h);
                }
                known.insert(pv);
            }
        }
    }
    known
}

#[cfg(test)]
#[path = "disks_tests.rs"]
mod tests;
