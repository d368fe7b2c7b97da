//! The finalizers a release puts on VMIs and VMs.
//!
//! VMI order as a Harvester 1.7 cluster shows it: `kubevirt.io/virtualMachineControllerFinalize`,
//! the foreground finalizer, then Harvester's (`…BackfillObservedNetworkMacAddress`,
//! `…harvester-lb-vmi-controller`), then add-ons'. VM order: the load balancer's, KubeVirt's,
//! then `…CleanupPVCAndSnapshot`. Wrangler's OnRemove handlers add their finalizer to every
//! object they see, so a release's Harvester finalizers are on every VMI/VM its controllers
//! saw (here: every one that carries KubeVirt's VM-controller finalizer).

use serde_json::Value;

use crate::meta;
use crate::profiles::{
    ReleaseProfile, BACKFILL_MAC_FINALIZER, CLEANUP_PVC_FINALIZER, LB_VMI_FINALIZER,
    LB_VM_FINALIZER, LEGACY_VMI_FOREGROUND_FINALIZER, VMI_FOREGROUND_FINALIZER,
    VM_CONTROLLER_FINALIZER,
};

/// Every Harvester VMI finalizer some release sets (replaced by the release's own).
const HARVESTER_VMI: &[&str] = &[BACKFILL_MAC_FINALIZER, LB_VMI_FINALIZER];

/// Rewrites a VMI's finalizers for release `p`. A VMI that carries the pre-1.7 foreground name
/// was created before the cluster reached KubeVirt 1.7 and keeps it (KubeVirt 1.7's
/// `pkg/virt-controller/watch/vmi/lifecycle.go` removes both names but adds only the new one).
pub fn vmi(obj: &mut Value, p: &ReleaseProfile) {
    let old = meta::finalizers(obj);
    if !old.iter().any(|f| f == VM_CONTROLLER_FINALIZER) {
        return;
    }
    let lived_through_upgrade = old.iter().any(|f| f == LEGACY_VMI_FOREGROUND_FINALIZER);
    let foreground = if lived_through_upgrade {
        LEGACY_VMI_FOREGROUND_FINALIZER
    } else {
        p.vmi_foreground_finalizer
    };
    let mut new: Vec<String> = Vec::new();
    for f in &old {
        let f = f.as_str();
        if f == LEGACY_VMI_FOREGROUND_FINALIZER || f == VMI_FOREGROUND_FINALIZER {
            new.push(foreground.into());
            new.extend(p.harvester_vmi_finalizers.iter().map(|h| h.to_string()));
        } else if !HARVESTER_VMI.contains(&f) {
            new.push(f.into());
        }
    }
    new.dedup();
    meta::set_finalizers(obj, &new);
}

/// Rewrites a VM's finalizers for release `p`: Harvester's VM finalizers of the release on a
/// VM Harvester's controller saw (one carrying `…CleanupPVCAndSnapshot`).
pub fn vm(obj: &mut Value, p: &ReleaseProfile) {
    let old = meta::finalizers(obj);
    if !old.iter().any(|f| f == CLEANUP_PVC_FINALIZER) {
        return;
    }
    let mut new: Vec<String> = Vec::new();
    if p.harvester_vm_finalizers.contains(&LB_VM_FINALIZER) {
        new.push(LB_VM_FINALIZER.into());
    }
    new.extend(old.into_iter().filter(|f| f != LB_VM_FINALIZER));
    meta::set_finalizers(obj, &new);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::profile;
    use serde_json::json;

    #[test]
    fn a_new_vmi_on_1_8_gets_the_prefixed_name_and_harvester_1_7_finalizers() {
        let mut o = json!({"metadata": {"finalizers": [VM_CONTROLLER_FINALIZER, VMI_FOREGROUND_FINALIZER, "backup.example.com/protect"]}});
        let Some(p) = profile("1.8") else {
            panic!("no 1.8")
        };
        vmi(&mut o, p);
        assert_eq!(
            meta::finalizers(&o),
            [
                VM_CONTROLLER_FINALIZER,
                VMI_FOREGROUND_FINALIZER,
                BACKFILL_MAC_FINALIZER,
                LB_VMI_FINALIZER,
                "backup.example.com/protect"
            ]
        );
        let Some(p) = profile("1.4") else {
            panic!("no 1.4")
        };
        vmi(&mut o, p);
        assert_eq!(
            meta::finalizers(&o),
            [
                VM_CONTROLLER_FINALIZER,
                LEGACY_VMI_FOREGROUND_FINALIZER,
                LB_VMI_FINALIZER,
                "backup.example.com/protect"
            ]
        );
    }

    #[test]
    fn a_vm_gets_the_load_balancer_finalizer_from_1_6() {
        for (r, lb) in [("1.5", false), ("1.6", true), ("1.8", true)] {
            let mut o = json!({"metadata": {"finalizers": [VM_CONTROLLER_FINALIZER, CLEANUP_PVC_FINALIZER]}});
            let Some(p) = profile(r) else {
                panic!("no {r}")
            };
            vm(&mut o, p);
            assert_eq!(
                meta::finalizers(&o).contains(&LB_VM_FINALIZER.to_string()),
                lb,
                "{r}"
            );
        }
    }
}
