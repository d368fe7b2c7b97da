//! KubeVirt's virt-controller (setting `virtController`), its VMI and VM controllers as far as
//! vmrecover depends on them (kubevirt `pkg/virt-controller/watch/vmi/lifecycle.go` and
//! `pkg/virt-controller/watch/vm/vm.go`, v1.4.0 and v1.7.0):
//! - a deleting or final (Failed/Succeeded) VMI has its launcher pods deleted and, once no pod
//!   owned by it exists, loses the VMI finalizers of the release profile
//!   ([`crate::profiles::ReleaseProfile::vmi_finalizers_removed`]);
//! - a deleting VM has its VMI deleted and, once the VMI is gone, loses
//!   `kubevirt.io/virtualMachineControllerFinalize`; a halted VM has its VMI deleted and is
//!   marked `Stopped`.
//!
//! Pods are found through their `ownerReferences`. A change of a VMI requeues the VM of the
//! same name (the VM controller watches VMIs).

use serde_json::{json, Value};

use super::{Cluster, Controller, Flow};
use crate::meta;
use crate::profiles::VM_CONTROLLER_FINALIZER;
use crate::resources::{find, ResIdx};
use crate::store::{DeleteOptions, Key};

/// The simulated virt-controller.
pub struct VirtController;

/// The name virt-controller's writes are logged under; the store treats its writes as
/// KubeVirt's ServiceAccount's.
pub const NAME: &str = "virt-controller";

struct Kinds {
    pods: ResIdx,
    vmis: ResIdx,
    vms: ResIdx,
}

fn kinds() -> Option<Kinds> {
    Some(Kinds {
        pods: find("", "v1", "pods")?,
        vmis: find("kubevirt.io", "v1", "virtualmachineinstances")?,
        vms: find("kubevirt.io", "v1", "virtualmachines")?,
    })
}

fn owned(c: &dyn Cluster, owner_uid: &str, res: ResIdx) -> Vec<Key> {
    c.dependents(owner_uid)
        .into_iter()
        .filter(|(r, _)| *r == res)
        .map(|(_, k)| k)
        .collect()
}

impl Controller for VirtController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn reconcile(&self, c: &mut dyn Cluster, res: ResIdx, key: &Key, obj: &Value) -> Flow {
        let Some(k) = kinds() else {
            return Flow::Continue;
        };
        let on = c.settings().virt_controller;
        if res == k.vmis {
            if on {
                vmi(c, &k, res, obj);
            }
            c.requeue(k.vms, key);
        } else if res == k.vms && on {
            vm(c, &k, res, obj);
        }
        Flow::Continue
    }
}

/// A deleting or final VMI loses its launcher pods, then its KubeVirt finalizers once no pod
/// owned by it exists.
fn vmi(c: &mut dyn Cluster, k: &Kinds, res: ResIdx, vmi: &Value) {
    let phase = vmi
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    let final_phase = phase == "Failed" || phase == "Succeeded";
    if !meta::is_deleting(vmi) && !final_phase {
        return;
    }
    let uid = meta::uid(vmi).to_string();
    for key in owned(c, &uid, k.pods) {
        let deleting = c.get(k.pods, &key).is_some_and(meta::is_deleting);
        if !deleting {
            c.delete(NAME, k.pods, &key, &DeleteOptions::default());
        }
    }
    if !owned(c, &uid, k.pods).is_empty() {
        return;
    }
    let removed = c.settings().profile().vmi_finalizers_removed;
    let fins = meta::finalizers(vmi);
    let kept: Vec<String> = fins
        .iter()
        .filter(|f| !removed.contains(&f.as_str()))
        .cloned()
        .collect();
    if kept.len() != fins.len() {
        let mut new = vmi.clone();
        meta::set_finalizers(&mut new, &kept);
        c.update(NAME, res, new, false);
    }
}

/// A deleting VM has its VMI deleted and, once the VMI is gone, loses
/// `kubevirt.io/virtualMachineControllerFinalize`; a halted VM has its VMI deleted.
fn vm(c: &mut dyn Cluster, k: &Kinds, res: ResIdx, vm: &Value) {
    let key = (meta::namespace(vm).to_string(), meta::name(vm).to_string());
    let vm_uid = meta::uid(vm);
    let vmi = c
        .get(k.vmis, &key)
        .filter(|v| meta::owner_uids(v).iter().any(|o| o == vm_uid))
        .cloned();
    let halted = vm.pointer("/spec/runStrategy").and_then(Value::as_str) == Some("Halted")
        || vm.pointer("/spec/running").and_then(Value::as_bool) == Some(false);
    if meta::is_deleting(vm) || halted {
        if let Some(v) = &vmi {
            if !meta::is_deleting(v) {
                c.delete(NAME, k.vmis, &key, &DeleteOptions::default());
            }
            return;
        }
    }
    if vmi.is_some() {
        return;
    }
    if meta::is_deleting(vm) {
        let fins = meta::finalizers(vm);
        if fins.iter().any(|f| f == VM_CONTROLLER_FINALIZER) {
            let kept: Vec<String> = fins
                .into_iter()
                .filter(|f| f != VM_CONTROLLER_FINALIZER)
                .collect();
            let mut new = vm.clone();
            meta::set_finalizers(&mut new, &kept);
            c.update(NAME, res, new, false);
        }
    } else if halted
        && vm
            .pointer("/status/printableStatus")
            .and_then(Value::as_str)
            != Some("Stopped")
    {
        let mut new = vm.clone();
        if let Some(o) = new.as_object_mut() {
            let status = o.entry("status").or_insert_with(|| json!({}));
            if let Some(s) = status.as_object_mut() {
                s.insert("printableStatus".into(), json!("Stopped"));
                s.insert("ready".into(), json!(false));
                s.remove("created");
            }
        }
        c.update(NAME, res, new, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake::{key, Fake};
    use crate::profiles::{LEGACY_VMI_FOREGROUND_FINALIZER, VMI_FOREGROUND_FINALIZER};
    use crate::settings::{Settings, SettingsPatch};

    fn k() -> Kinds {
        match kinds() {
            Some(k) => k,
            None => panic!("kinds not served"),
        }
    }

    fn settings(release: &str) -> Settings {
        let mut s = Settings::default();
        s.apply(&SettingsPatch {
            release: Some(release.into()),
            ..SettingsPatch::default()
        });
        s
    }

    fn deleting_vmi(fins: &[&str]) -> Value {
        json!({"metadata": {"name": "vm", "namespace": "d", "uid": "vmi-uid", "finalizers": fins,
            "deletionTimestamp": "2025-01-01T00:00:00Z", "ownerReferences": [{"uid": "vm-uid"}]}})
    }

    fn pod(deleting: bool) -> Value {
        let mut p = json!({"metadata": {"name": "virt-launcher-vm", "namespace": "d", "uid": "pod-uid",
            "ownerReferences": [{"uid": "vmi-uid"}]}, "spec": {"nodeName": "n1"}});
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        p
    }

    const ALL_NAMES: [&str; 3] = [
        VMI_FOREGROUND_FINALIZER,
        LEGACY_VMI_FOREGROUND_FINALIZER,
        VM_CONTROLLER_FINALIZER,
    ];

    #[test]
    fn a_pod_left_blocks_the_vmi_finalizers() {
        let k = k();
        let v = deleting_vmi(&ALL_NAMES);
        let mut f = Fake::with(settings("1.8"), &[(k.vmis, v.clone()), (k.pods, pod(true))]);
        VirtController.reconcile(&mut f, k.vmis, &key(&v), &v);
        let still = f.obj(k.vmis, "d", "vm").cloned().unwrap_or_default();
        assert_eq!(
            meta::finalizers(&still).len(),
            3,
            "a Terminating pod blocks it"
        );
        assert_eq!(
            f.requeued,
            vec![(k.vms, key(&v))],
            "the VM controller looks again"
        );
    }

    #[test]
    fn removes_what_its_release_knows() {
        let k = k();
        for (release, left) in [
            ("1.8", vec![]),
            ("1.7", vec![VMI_FOREGROUND_FINALIZER.to_string()]),
            ("1.4", vec![VMI_FOREGROUND_FINALIZER.to_string()]),
        ] {
            let v = deleting_vmi(&ALL_NAMES);
            let mut f = Fake::with(settings(release), &[(k.vmis, v.clone())]);
            VirtController.reconcile(&mut f, k.vmis, &key(&v), &v);
            let fins = f
                .obj(k.vmis, "d", "vm")
                .map(meta::finalizers)
                .unwrap_or_default();
            assert_eq!(fins, left, "release {release}");
        }
    }

    #[test]
    fn deletes_the_launcher_of_a_final_vmi() {
        let k = k();
        let mut v = deleting_vmi(&[VM_CONTROLLER_FINALIZER]);
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("deletionTimestamp");
        }
        v["status"] = json!({"phase": "Failed"});
        let mut f = Fake::with(
            settings("1.8"),
            &[(k.vmis, v.clone()), (k.pods, pod(false))],
        );
        VirtController.reconcile(&mut f, k.vmis, &key(&v), &v);
        assert!(f
            .obj(k.pods, "d", "virt-launcher-vm")
            .is_some_and(meta::is_deleting));
    }

    #[test]
    fn deleting_vm_loses_its_finalizer_once_the_vmi_is_gone() {
        let k = k();
        let vmo = json!({"metadata": {"name": "vm", "namespace": "d", "uid": "vm-uid",
            "finalizers": [VM_CONTROLLER_FINALIZER], "deletionTimestamp": "2025-01-01T00:00:00Z"}});
        let v = deleting_vmi(&[]);
        let mut f = Fake::with(settings("1.8"), &[(k.vms, vmo.clone()), (k.vmis, v)]);
        VirtController.reconcile(&mut f, k.vms, &key(&vmo), &vmo);
        assert!(f.obj(k.vms, "d", "vm").is_some(), "its VMI is still there");
        f.objects.remove(&(k.vmis, key(&vmo)));
        VirtController.reconcile(&mut f, k.vms, &key(&vmo), &vmo);
        assert!(f.obj(k.vms, "d", "vm").is_none());
    }

    #[test]
    fn switched_off_it_does_nothing() {
        let k = k();
        let v = deleting_vmi(&ALL_NAMES);
        let mut s = settings("1.8");
        s.virt_controller = false;
        let mut f = Fake::with(s, &[(k.vmis, v.clone())]);
        VirtController.reconcile(&mut f, k.vmis, &key(&v), &v);
        assert!(f.actions.is_empty());
    }
}
