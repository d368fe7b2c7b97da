//! KubeVirt's virt-controller (setting `virtController`), its VMI and VM controllers as far as
//! vmrecover depends on them. Followed: kubevirt `pkg/virt-controller/watch/vmi/lifecycle.go`
//! (`sync`, `updateStatus`; v1.3.0 … v1.7.0 agree on these paths) and
//! `pkg/virt-controller/watch/vm/vm.go`:
//! - a deleting VMI has its launcher pods deleted (`deleteAllMatchingPods`); the simulator
//!   also deletes the launcher of a final VMI (KubeVirt leaves that to the VM controller's
//!   stop, which deletes the VMI);
//! - a Running, Scheduled or Scheduling VMI whose pod is gone goes `Failed`, so does an
//!   unprocessed (Pending) deleting one; a Terminating pod still exists and blocks that;
//! - a Scheduling VMI whose launcher pod is ready goes `Scheduled` and only then gets label
//!   `kubevirt.io/nodeName` and `status.nodeName`;
//! - a final (Failed/Succeeded) VMI, once no pod owned by it exists, loses the VMI finalizers
//!   of the release profile ([`crate::profiles::ReleaseProfile::vmi_finalizers_removed`]);
//! - a deleting VM has its VMI deleted and, once the VMI is gone, loses
//!   `kubevirt.io/virtualMachineControllerFinalize`; a halted VM has its VMI deleted and is
//!   marked `Stopped`; a VM with `runStrategy` `Always` or `RerunOnFailure` whose VMI is gone
//!   gets a new VMI (Pending, no node).
//!
//! - virt-handler's part (KubeVirt ≥ 1.6, `pkg/virt-handler/migration-target.go` v1.6.0):
//!   label `kubevirt.io/migrationTargetNodeName` goes once `status.migrationState` is over;
//!   KubeVirt ≤ 1.5 never removes it
//!   ([`crate::profiles::ReleaseProfile::removes_migration_target_label`]).
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

/// A deleting VMI loses its launcher pods; a VMI whose pod is gone goes Failed; a final VMI
/// with no pod left loses its KubeVirt finalizers; a Scheduling VMI with a ready pod is
/// Scheduled on the pod's node.
fn vmi(c: &mut dyn Cluster, k: &Kinds, res: ResIdx, vmi: &Value) {
    let phase = vmi
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    let final_phase = phase == "Failed" || phase == "Succeeded";
    let deleting = meta::is_deleting(vmi);
    let uid = meta::uid(vmi).to_string();
    if deleting || final_phase {
        for key in owned(c, &uid, k.pods) {
            let pod_deleting = c.get(k.pods, &key).is_some_and(meta::is_deleting);
            if !pod_deleting {
                c.delete(NAME, k.pods, &key, &DeleteOptions::default());
            }
        }
    }
    if drop_stale_migration_label(c, res, vmi) {
        return;
    }
    let pods = owned(c, &uid, k.pods);
    match phase {
        "Running" | "Scheduled" | "Scheduling" if pods.is_empty() => {
            set_phase(c, res, vmi, "Failed");
        }
        "" | "Pending" if pods.is_empty() && deleting => set_phase(c, res, vmi, "Failed"),
        "Scheduling" if !deleting => {
            let ready_node = pods.iter().find_map(|key| {
                let pod = c.get(k.pods, key)?;
                (pod_ready(pod) && !meta::is_deleting(pod))
                    .then(|| pod.pointer("/spec/nodeName")?.as_str().map(String::from))
                    .flatten()
            });
            if let Some(node) = ready_node {
                let mut new = vmi.clone();
                new["status"]["phase"] = json!("Scheduled");
                new["status"]["nodeName"] = json!(node);
                let labels = meta::meta_mut(&mut new)
                    .entry("labels")
                    .or_insert_with(|| json!({}));
                labels["kubevirt.io/nodeName"] = json!(node);
                c.update(NAME, res, new, false);
            }
        }
        "Failed" | "Succeeded" if pods.is_empty() => {
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
        _ => {}
    }
}

/// On releases whose virt-handler does it: removes the migration-target label of a VMI whose
/// migration is over. True when it wrote.
fn drop_stale_migration_label(c: &mut dyn Cluster, res: ResIdx, vmi: &Value) -> bool {
    const LABEL: &str = "kubevirt.io/migrationTargetNodeName";
    if !c.settings().profile().removes_migration_target_label || meta::label(vmi, LABEL).is_none() {
        return false;
    }
    let over = vmi.pointer("/status/migrationState").is_some_and(|m| {
        m.get("endTimestamp").is_some_and(|t| !t.is_null())
            || m.get("completed").and_then(Value::as_bool) == Some(true)
            || m.get("failed").and_then(Value::as_bool) == Some(true)
    });
    if !over {
        return false;
    }
    let mut new = vmi.clone();
    if let Some(l) = new
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(LABEL);
    }
    c.update(NAME, res, new, false);
    true
}

/// Whether a pod's `Ready` condition is `True`.
fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Writes a new VMI phase (through the main resource: the VMI CRD has no status
/// subresource), with its transition timestamp.
fn set_phase(c: &mut dyn Cluster, res: ResIdx, vmi: &Value, phase: &str) {
    let mut new = vmi.clone();
    if !new.get("status").is_some_and(Value::is_object) {
        new["status"] = json!({});
    }
    new["status"]["phase"] = json!(phase);
    let entry = json!({"phase": phase, "phaseTransitionTimestamp": meta::now_rfc3339()});
    match new["status"]
        .get_mut("phaseTransitionTimestamps")
        .and_then(Value::as_array_mut)
    {
        Some(list) => list.push(entry),
        None => new["status"]["phaseTransitionTimestamps"] = json!([entry]),
    }
    c.update(NAME, res, new, false);
}

/// A new VMI for a VM that should run (`pkg/virt-controller/watch/vm/vm.go`
/// `startVMI`/`setupVMIFromVM`): the template, owned by the VM, Pending, with the finalizers
/// virt-api and the VM controller put on it (the release's foreground name).
fn new_vmi(c: &dyn Cluster, vm: &Value) -> Value {
    let name = meta::name(vm);
    let template = vm.pointer("/spec/template").cloned().unwrap_or_default();
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if !labels.is_object() {
        labels = json!({});
    }
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": name,
            "namespace": meta::namespace(vm),
            "labels": labels,
            "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or_else(|| json!({})),
            "finalizers": [VM_CONTROLLER_FINALIZER, c.settings().profile().vmi_foreground_finalizer],
            "ownerReferences": [{
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": name,
                "uid": meta::uid(vm), "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
        "status": {"phase": "Pending"},
    })
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
    let strategy = vm.pointer("/spec/runStrategy").and_then(Value::as_str);
    let should_run = matches!(strategy, Some("Always") | Some("RerunOnFailure"))
        || vm.pointer("/spec/running").and_then(Value::as_bool) == Some(true);
    if !meta::is_deleting(vm) && !halted && should_run {
        let new = new_vmi(c, vm);
        c.create(NAME, k.vmis, new);
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
            // No pod: first Failed, then (next look) the finalizers go.
            let failed = f.obj(k.vmis, "d", "vm").cloned().unwrap_or_default();
            assert_eq!(failed["status"]["phase"], "Failed");
            assert_eq!(meta::finalizers(&failed).len(), 3, "not while not final");
            VirtController.reconcile(&mut f, k.vmis, &key(&v), &failed);
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

    #[test]
    fn a_running_vmi_fails_once_its_pod_is_gone_not_while_it_terminates() {
        let k = k();
        let mut v = deleting_vmi(&ALL_NAMES);
        v["status"] = json!({"phase": "Running"});
        let mut f = Fake::with(settings("1.8"), &[(k.vmis, v.clone()), (k.pods, pod(true))]);
        VirtController.reconcile(&mut f, k.vmis, &key(&v), &v);
        assert_eq!(
            f.obj(k.vmis, "d", "vm")
                .map(|o| o["status"]["phase"].clone()),
            Some(json!("Running"))
        );
        f.objects
            .remove(&(k.pods, ("d".into(), "virt-launcher-vm".into())));
        VirtController.reconcile(&mut f, k.vmis, &key(&v), &v);
        let now = f.obj(k.vmis, "d", "vm").cloned().unwrap_or_default();
        assert_eq!(now["status"]["phase"], "Failed");
        assert_eq!(
            meta::finalizers(&now).len(),
            3,
            "finalizers go only on the next look"
        );
    }

    #[test]
    fn the_node_label_comes_only_with_a_ready_pod() {
        let k = k();
        let mut v = deleting_vmi(&ALL_NAMES);
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("deletionTimestamp");
        }
        v["status"] = json!({"phase": "Scheduling"});
        let mut p = pod(false);
        p["status"] = json!({"conditions": [{"type": "Ready", "status": "False"}]});
        let mut f = Fake::with(settings("1.8"), &[(k.vmis, v.clone()), (k.pods, p.clone())]);
        VirtController.reconcile(&mut f, k.vmis, &key(&v), &v);
        let seen = f.obj(k.vmis, "d", "vm").cloned().unwrap_or_default();
        assert!(seen["metadata"]["labels"]["kubevirt.io/nodeName"].is_null());
        assert!(seen["status"]["nodeName"].is_null());
        p["status"]["conditions"][0]["status"] = json!("True");
        f.objects.insert((k.pods, key(&p)), p);
        VirtController.reconcile(&mut f, k.vmis, &key(&v), &v);
        let seen = f.obj(k.vmis, "d", "vm").cloned().unwrap_or_default();
        assert_eq!(seen["status"]["phase"], "Scheduled");
        assert_eq!(seen["status"]["nodeName"], "n1");
        assert_eq!(seen["metadata"]["labels"]["kubevirt.io/nodeName"], "n1");
    }

    #[test]
    fn a_vm_that_should_run_gets_a_new_vmi_once_the_old_is_gone() {
        let k = k();
        for (strategy, expect_new) in [
            ("RerunOnFailure", true),
            ("Always", true),
            ("Halted", false),
            ("Manual", false),
        ] {
            let vmo = json!({"metadata": {"name": "vm", "namespace": "d", "uid": "vm-uid",
                "finalizers": [VM_CONTROLLER_FINALIZER]},
                "spec": {"runStrategy": strategy, "template": {"metadata": {"labels": {"harvesterhci.io/vmName": "vm"}}, "spec": {"domain": {}}}}});
            let mut f = Fake::with(settings("1.4"), &[(k.vms, vmo.clone())]);
            VirtController.reconcile(&mut f, k.vms, &key(&vmo), &vmo);
            let new = f.obj(k.vmis, "d", "vm").cloned();
            assert_eq!(new.is_some(), expect_new, "{strategy}");
            if let Some(n) = new {
                assert_eq!(n["status"]["phase"], "Pending");
                assert!(n["metadata"]["labels"]["kubevirt.io/nodeName"].is_null());
                assert_eq!(
                    meta::finalizers(&n),
                    [VM_CONTROLLER_FINALIZER, LEGACY_VMI_FOREGROUND_FINALIZER]
                );
                assert_eq!(meta::owner_uids(&n), ["vm-uid"]);
            }
        }
    }

    #[test]
    fn the_migration_label_goes_after_the_migration_from_kubevirt_1_6_only() {
        let k = k();
        for (release, kept) in [("1.6", true), ("1.7", false)] {
            let v = json!({"metadata": {"name": "vm", "namespace": "d", "uid": "vmi-uid",
                "labels": {"kubevirt.io/migrationTargetNodeName": "n2"}},
                "status": {"phase": "Running", "migrationState": {"failed": true, "endTimestamp": "2025-01-01T00:00:00Z", "targetNode": "n2"}}});
            let mut f = Fake::with(
                settings(release),
                &[(k.vmis, v.clone()), (k.pods, pod(false))],
            );
            VirtController.reconcile(&mut f, k.vmis, &key(&v), &v);
            let now = f.obj(k.vmis, "d", "vm").cloned().unwrap_or_default();
            assert_eq!(
                meta::label(&now, "kubevirt.io/migrationTargetNodeName").is_some(),
                kept,
                "Harvester {release}"
            );
        }
    }
}
