//! Harvester's VM controller, its PVC clean-up (setting `harvesterController`, off by default):
//! harvester `pkg/controller/master/virtualmachine/vm_controller.go` (v1.4.0 … v1.7.0),
//! `cleanupPVCAndSnapshot`, the OnRemove handler behind
//! `wrangler.cattle.io/VMController.CleanupPVCAndSnapshot`. For a deleting VM it deletes every
//! PVC named in annotation `harvesterhci.io/removedPersistentVolumeClaims` (comma-separated; a
//! PVC already gone is fine), then drops the finalizer. A delete that fails fails the handler,
//! and the finalizer stays: Harvester's PVC webhook
//! (`pkg/webhook/resources/persistentvolumeclaim/validator.go`) refuses to delete a PVC that
//! a VM not being deleted still uses, which is how "the PVC is still in use" shows.
//! It also strips the deprecated `…UnsetOwnerOfPVCs` finalizers of Harvester ≤ 1.3 from VMs
//! and VMIs (`pkg/controller/master/virtualmachine/register.go`, the
//! `…RemoveDeprecatedFinalizer` handlers). (Backup snapshots are not simulated.)

use serde_json::Value;

use crate::cluster::{Cluster, Controller, Flow};
use crate::meta;
use crate::profiles::CLEANUP_PVC_FINALIZER;
use crate::resources::{find, ResIdx};
use crate::store_vocab::{DeleteOptions, Key};

/// The simulated Harvester VM controller.
pub struct HarvesterVmController;

/// The name its writes are logged under.
pub const NAME: &str = "harvester";

/// The deprecated finalizers of Harvester ≤ 1.3 that newer releases strip.
const DEPRECATED: &[&str] = &[
    "harvesterhci.io/VMController.UnsetOwnerOfPVCs",
    "wrangler.cattle.io/VMController.UnsetOwnerOfPVCs",
    "wrangler.cattle.io/VMIController.UnsetOwnerOfPVCs",
];

/// The annotation listing the PVCs to delete with the VM.
pub const REMOVED_PVCS_ANNOTATION: &str = "harvesterhci.io/removedPersistentVolumeClaims";

impl Controller for HarvesterVmController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn reconcile(&self, c: &mut dyn Cluster, res: ResIdx, _key: &Key, vm: &Value) -> Flow {
        let is_vm = Some(res) == find("kubevirt.io", "v1", "virtualmachines");
        let is_vmi = Some(res) == find("kubevirt.io", "v1", "virtualmachineinstances");
        if !c.settings().harvester_controller || !(is_vm || is_vmi) {
            return Flow::Continue;
        }
        let fins = meta::finalizers(vm);
        if fins.iter().any(|f| DEPRECATED.contains(&f.as_str())) {
            let kept: Vec<String> = fins
                .into_iter()
                .filter(|f| !DEPRECATED.contains(&f.as_str()))
                .collect();
            let mut new = vm.clone();
            meta::set_finalizers(&mut new, &kept);
            c.update(NAME, res, new, false);
            return Flow::Continue;
        }
        if !is_vm
            || !meta::is_deleting(vm)
            || !meta::finalizers(vm)
                .iter()
                .any(|f| f == CLEANUP_PVC_FINALIZER)
        {
            return Flow::Continue;
        }
        let Some(pvcs) = find("", "v1", "persistentvolumeclaims") else {
            return Flow::Continue;
        };
        let ns = meta::namespace(vm).to_string();
        for name in removed_pvcs(vm) {
            let key = (ns.clone(), name.clone());
            if c.get(pvcs, &key).is_none() {
                continue;
            }
            if used_by_other_vm(c, vm, &name) {
                // The webhook refuses the delete: the handler fails, the finalizer stays.
                return Flow::Continue;
            }
            c.delete(NAME, pvcs, &key, &DeleteOptions::default());
        }
        let kept: Vec<String> = meta::finalizers(vm)
            .into_iter()
            .filter(|f| f != CLEANUP_PVC_FINALIZER)
            .collect();
        let mut new = vm.clone();
        meta::set_finalizers(&mut new, &kept);
        c.update(NAME, res, new, false);
        Flow::Continue
    }
}

/// The PVC names in `harvesterhci.io/removedPersistentVolumeClaims`.
pub fn removed_pvcs(vm: &Value) -> Vec<String> {
    vm.pointer("/metadata/annotations")
        .and_then(|a| a.get(REMOVED_PVCS_ANNOTATION))
        .and_then(Value::as_str)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Whether a VM other than `vm`, not being deleted, names the claim in its template.
fn used_by_other_vm(c: &dyn Cluster, vm: &Value, claim: &str) -> bool {
    let Some(vms) = find("kubevirt.io", "v1", "virtualmachines") else {
        return false;
    };
    c.list(vms, meta::namespace(vm))
        .iter()
        .filter(|o| meta::uid(o) != meta::uid(vm) && !meta::is_deleting(o))
        .any(|o| vm_claims(o).iter().any(|n| n == claim))
}

/// The claims a VM's template uses (PVC and DataVolume volumes).
fn vm_claims(vm: &Value) -> Vec<String> {
    vm.pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v.pointer("/persistentVolumeClaim/claimName")
                .or_else(|| v.pointer("/dataVolume/name"))
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake::{key, Fake};
    use crate::profiles::VM_CONTROLLER_FINALIZER;
    use crate::settings::Settings;
    use serde_json::json;

    fn on() -> Settings {
        Settings {
            harvester_controller: true,
            ..Settings::default()
        }
    }

    fn vm(name: &str, deleting: bool, claim: &str) -> Value {
        let mut v = json!({"metadata": {"name": name, "namespace": "d", "uid": format!("{name}-uid"),
            "finalizers": [VM_CONTROLLER_FINALIZER, CLEANUP_PVC_FINALIZER],
            "annotations": {REMOVED_PVCS_ANNOTATION: claim}},
            "spec": {"template": {"spec": {"volumes": [{"name": "disk-0", "persistentVolumeClaim": {"claimName": claim}}]}}}});
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        v
    }

    fn idx() -> (ResIdx, ResIdx) {
        match (
            find("kubevirt.io", "v1", "virtualmachines"),
            find("", "v1", "persistentvolumeclaims"),
        ) {
            (Some(a), Some(b)) => (a, b),
            _ => panic!("not served"),
        }
    }

    #[test]
    fn deletes_the_listed_pvcs_then_drops_its_finalizer() {
        let (vms, pvcs) = idx();
        let v = vm("a", true, "a-disk");
        let pvc = json!({"metadata": {"name": "a-disk", "namespace": "d", "uid": "p"}});
        let mut f = Fake::with(on(), &[(vms, v.clone()), (pvcs, pvc)]);
        HarvesterVmController.reconcile(&mut f, vms, &key(&v), &v);
        assert!(f.obj(pvcs, "d", "a-disk").is_none());
        let left = f
            .obj(vms, "d", "a")
            .map(meta::finalizers)
            .unwrap_or_default();
        assert_eq!(left, [VM_CONTROLLER_FINALIZER]);
    }

    #[test]
    fn fails_while_another_vm_uses_the_pvc_and_is_off_by_default() {
        let (vms, pvcs) = idx();
        let v = vm("a", true, "shared");
        let other = vm("b", false, "shared");
        let pvc = json!({"metadata": {"name": "shared", "namespace": "d", "uid": "p"}});
        let objs = [(vms, v.clone()), (vms, other), (pvcs, pvc)];
        let mut f = Fake::with(on(), &objs);
        HarvesterVmController.reconcile(&mut f, vms, &key(&v), &v);
        assert!(f.obj(pvcs, "d", "shared").is_some());
        assert!(f.actions.is_empty(), "{:?}", f.actions);
        let mut off = Fake::with(Settings::default(), &objs);
        HarvesterVmController.reconcile(&mut off, vms, &key(&v), &v);
        assert!(off.actions.is_empty());
    }
}
