//! The simulated controllers that react to store changes: a kubelet per up node, the garbage
//! collector, and (when switched on) KubeVirt's virt-controller. They write through the same
//! store semantics as clients (resourceVersion bumps, watch events) and log their writes as
//! `internal` request-log entries.

use serde_json::{json, Value};

use super::{Inner, Key};
use crate::meta;
use crate::resources::{find, ResIdx};
use crate::store::DeleteOptions;

/// VMI finalizers virt-controller removes once no pod of the VMI is left.
pub const VIRT_VMI_FINALIZERS: [&str; 3] = [
    "kubevirt.io/foregroundDeleteVirtualMachine",
    "foregroundDeleteVirtualMachine",
    "kubevirt.io/virtualMachineControllerFinalize",
];

/// VM finalizer virt-controller removes once the VMI of a deleting VM is gone.
pub const VIRT_VM_FINALIZER: &str = "kubevirt.io/virtualMachineControllerFinalize";

/// Upper bound of reconcile steps in one settle, against controller ping-pong.
const SETTLE_BUDGET: usize = 1_000_000;

struct Kinds {
    pods: Option<ResIdx>,
    vmis: Option<ResIdx>,
    vms: Option<ResIdx>,
}

fn kinds() -> Kinds {
    Kinds {
        pods: find("", "v1", "pods"),
        vmis: find("kubevirt.io", "v1", "virtualmachineinstances"),
        vms: find("kubevirt.io", "v1", "virtualmachines"),
    }
}

impl Inner {
    /// Runs the controllers until nothing is left to react to.
    pub(super) fn settle(&mut self) {
        let k = kinds();
        let mut budget = SETTLE_BUDGET;
        while budget > 0 {
            budget -= 1;
            if let Some(uid) = self.removed_uids.pop_front() {
                self.gc_dependents(&uid);
                continue;
            }
            let Some((res, key)) = self.dirty.pop_front() else {
                break;
            };
            self.reconcile(&k, res, &key);
        }
    }

    fn reconcile(&mut self, k: &Kinds, res: ResIdx, key: &Key) {
        let Some(obj) = self.get_obj(res, key).cloned() else {
            return;
        };
        if meta::is_deleting(&obj)
            && meta::finalizers(&obj)
                .iter()
                .any(|f| Self::is_gc_finalizer(f))
        {
            self.gc_finalizers(res, &obj);
            return;
        }
        if Some(res) == k.pods {
            self.kubelet(res, key, &obj);
        } else if Some(res) == k.vmis {
            if self.settings.virt_controller {
                self.virt_vmi(k, res, &obj);
            }
            if let Some(vms) = k.vms {
                self.dirty.push_back((vms, key.clone()));
            }
        } else if Some(res) == k.vms && self.settings.virt_controller {
            self.virt_vm(k, res, &obj);
        }
    }

    /// The kubelet of an up node confirms pod deletions at once.
    fn kubelet(&mut self, res: ResIdx, key: &Key, pod: &Value) {
        if !meta::is_deleting(pod) || !meta::finalizers(pod).is_empty() {
            return;
        }
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() || self.settings.down_nodes.contains(node) {
            return;
        }
        self.log_internal(
            "kubelet",
            "DELETE",
            super::object_path(res, &key.0, &key.1),
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}),
            200,
        );
        self.store_remove(res, key);
    }

    fn owned(&self, owner_uid: &str, res: Option<ResIdx>) -> Vec<Key> {
        self.owner_index
            .get(owner_uid)
            .map(|s| {
                s.iter()
                    .filter(|(r, _)| Some(*r) == res)
                    .map(|(_, k)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// virt-controller for a VMI: a deleting or final VMI loses its launcher pods, then its
    /// KubeVirt finalizers once no pod owned by it exists.
    fn virt_vmi(&mut self, k: &Kinds, res: ResIdx, vmi: &Value) {
        let phase = vmi
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        let final_phase = phase == "Failed" || phase == "Succeeded";
        if !meta::is_deleting(vmi) && !final_phase {
            return;
        }
        let uid = meta::uid(vmi).to_string();
        let Some(pods) = k.pods else { return };
        for key in self.owned(&uid, Some(pods)) {
            let deleting = self.get_obj(pods, &key).is_some_and(meta::is_deleting);
            if !deleting {
                self.internal_delete("virt-controller", pods, &key, &DeleteOptions::default());
            }
        }
        if !self.owned(&uid, Some(pods)).is_empty() {
            return;
        }
        let fins = meta::finalizers(vmi);
        let kept: Vec<String> = fins
            .iter()
            .filter(|f| !VIRT_VMI_FINALIZERS.contains(&f.as_str()))
            .cloned()
            .collect();
        if kept.len() != fins.len() {
            let mut new = vmi.clone();
            meta::set_finalizers(&mut new, &kept);
            self.internal_update("virt-controller", res, new, false);
        }
    }

    /// virt-controller for a VM: a deleting VM has its VMI deleted and, once the VMI is gone,
    /// loses `kubevirt.io/virtualMachineControllerFinalize`; a halted VM has its VMI deleted.
    fn virt_vm(&mut self, k: &Kinds, res: ResIdx, vm: &Value) {
        let Some(vmis) = k.vmis else { return };
        let key = (meta::namespace(vm).to_string(), meta::name(vm).to_string());
        let vm_uid = meta::uid(vm);
        let vmi = self
            .get_obj(vmis, &key)
            .filter(|v| meta::owner_uids(v).iter().any(|o| o == vm_uid))
            .cloned();
        let halted = vm.pointer("/spec/runStrategy").and_then(Value::as_str) == Some("Halted")
            || vm.pointer("/spec/running").and_then(Value::as_bool) == Some(false);
        if meta::is_deleting(vm) || halted {
            if let Some(v) = &vmi {
                if !meta::is_deleting(v) {
                    self.internal_delete("virt-controller", vmis, &key, &DeleteOptions::default());
                }
                return;
            }
        }
        if vmi.is_some() {
            return;
        }
        if meta::is_deleting(vm) {
            let fins = meta::finalizers(vm);
            if fins.iter().any(|f| f == VIRT_VM_FINALIZER) {
                let kept: Vec<String> = fins
                    .into_iter()
                    .filter(|f| f != VIRT_VM_FINALIZER)
                    .collect();
                let mut new = vm.clone();
                meta::set_finalizers(&mut new, &kept);
                self.internal_update("virt-controller", res, new, false);
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
            self.internal_update("virt-controller", res, new, true);
        }
    }

    /// Garbage collection after an owner is gone: dependents with another live owner lose the
    /// reference, the others are deleted (background propagation).
    fn gc_dependents(&mut self, owner_uid: &str) {
        let deps: Vec<(ResIdx, Key)> = self
            .owner_index
            .get(owner_uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for (res, key) in deps {
            let Some(obj) = self.get_obj(res, &key).cloned() else {
                continue;
            };
            let other_alive = meta::owner_uids(&obj)
                .iter()
                .any(|o| o != owner_uid && self.uid_index.contains_key(o));
            if other_alive {
                let mut new = obj.clone();
                drop_owner_ref(&mut new, owner_uid);
                self.internal_update("garbage-collector", res, new, false);
            } else if !meta::is_deleting(&obj) {
                let opts = DeleteOptions {
                    propagation_policy: Some("Background".into()),
                    precondition_uid: Some(meta::uid(&obj).to_string()),
                    ..DeleteOptions::default()
                };
                self.internal_delete("garbage-collector", res, &key, &opts);
            }
        }
    }

    /// The `orphan` and `foregroundDeletion` finalizers of a deleting owner.
    fn gc_finalizers(&mut self, res: ResIdx, obj: &Value) {
        let uid = meta::uid(obj).to_string();
        let deps: Vec<(ResIdx, Key)> = self
            .owner_index
            .get(&uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut fins = meta::finalizers(obj);
        if fins.iter().any(|f| f == "orphan") {
            for (dres, dkey) in &deps {
                if let Some(mut d) = self.get_obj(*dres, dkey).cloned() {
                    drop_owner_ref(&mut d, &uid);
                    self.internal_update("garbage-collector", *dres, d, false);
                }
            }
            fins.retain(|f| f != "orphan");
        } else if fins.iter().any(|f| f == "foregroundDeletion") {
            for (dres, dkey) in &deps {
                let deleting = self.get_obj(*dres, dkey).is_some_and(meta::is_deleting);
                if !deleting {
                    self.internal_delete(
                        "garbage-collector",
                        *dres,
                        dkey,
                        &DeleteOptions::default(),
                    );
                }
            }
            let left = self.owner_index.get(&uid).is_some_and(|s| !s.is_empty());
            if left {
                return;
            }
            fins.retain(|f| f != "foregroundDeletion");
        }
        let Some(mut cur) = self
            .get_obj(
                res,
                &(
                    meta::namespace(obj).to_string(),
                    meta::name(obj).to_string(),
                ),
            )
            .cloned()
        else {
            return;
        };
        meta::set_finalizers(&mut cur, &fins);
        self.internal_update("garbage-collector", res, cur, false);
    }
}

fn drop_owner_ref(obj: &mut Value, owner_uid: &str) {
    let m = meta::meta_mut(obj);
    if let Some(refs) = m.get_mut("ownerReferences").and_then(Value::as_array_mut) {
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
        if refs.is_empty() {
            m.remove("ownerReferences");
        }
    }
}
