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
//!   marked `Stopped`; the run strategies restart or leave a final VMI as upstream's
//!   `syncRunStrategy` does (see [`vm`]): a new VMI is Pending with no node;
//! - with setting `vmStarts`, a Pending VMI gets its launcher pod and goes `Scheduling`
//!   (kube-scheduler, the kubelet and virt-handler take it on from there).
//!
//! - virt-handler's part (KubeVirt ≥ 1.6, `pkg/virt-handler/migration-target.go` v1.6.0):
//!   label `kubevirt.io/migrationTargetNodeName` goes once `status.migrationState` is over;
//!   KubeVirt ≤ 1.5 never removes it
//!   ([`crate::profiles::ReleaseProfile::removes_migration_target_label`]).
//!
//! Pods are found through their `ownerReferences`. A change of a VMI requeues the VM of the
//! same name (the VM controller watches VMIs).

use serde_json::{json, Value};

use crate::cluster::{Cluster, Controller, Flow};
use crate::meta;
use crate::profiles::VM_CONTROLLER_FINALIZER;
use crate::resources::{find, ResIdx};
use crate::store_vocab::{DeleteOptions, Key};

/// The simulated virt-controller.
pub struct VirtController;

/// The name virt-controller's writes are logged under; the store treats its writes as
/// KubeVirt's ServiceAccount's.
pub const NAME: &str = crate::cluster::KUBEVIRT_ACTOR;

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
        "" | "Pending" if pods.is_empty() && c.settings().vm_starts => {
            c.create(NAME, k.pods, launcher_pod(vmi));
            set_phase(c, res, vmi, "Scheduling");
        }
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

/// The VM's run strategy: `spec.runStrategy`, else the deprecated `spec.running` (true:
/// `Always`, false or absent: `Halted`), as kubevirt `pkg/virt-controller/watch/vm.go`
/// (v1.3.0; `watch/vm/vm.go` v1.7.0) reads it.
fn run_strategy(vm: &Value) -> &str {
    match vm.pointer("/spec/runStrategy").and_then(Value::as_str) {
        Some(s) => s,
        None if vm.pointer("/spec/running").and_then(Value::as_bool) == Some(true) => "Always",
        None => "Halted",
    }
}

/// The action of the VM's first `status.stateChangeRequests` entry and the VMI UID it names
/// (`hasStartRequest`/`hasStopRequestForVMI` look only at the first).
fn first_request(vm: &Value) -> Option<(&str, Option<&str>)> {
    let first = vm.pointer("/status/stateChangeRequests/0")?;
    Some((
        first.get("action")?.as_str()?,
        first.get("uid").and_then(Value::as_str),
    ))
}

/// The VM controller's run-strategy sync (kubevirt `pkg/virt-controller/watch/vm.go`
/// `syncRunStrategy`, v1.3.0; the same rules in `watch/vm/vm.go` v1.7.0):
/// - a deleting VM has its VMI deleted and, once the VMI is gone, loses
///   `kubevirt.io/virtualMachineControllerFinalize`;
/// - `Halted`: the VMI is deleted, the VM marked `Stopped` once it is gone;
/// - `Always`: a final VMI, or one a stop request names, is deleted; no VMI: a new one;
/// - `RerunOnFailure`: a VMI that is not deleting and is Failed, Succeeded or named by a
///   stop request is deleted, and a Failed one gets a start request; no VMI: a new one only
///   on a start request or when the VM's `status.runStrategy` is another (a VM coming from a
///   different strategy);
/// - `Manual`: a VMI a stop request names is deleted; no VMI: a new one on a start request.
///
/// The start-failure backoff is not simulated.
fn vm(c: &mut dyn Cluster, k: &Kinds, res: ResIdx, vm: &Value) {
    let key = (meta::namespace(vm).to_string(), meta::name(vm).to_string());
    let vm_uid = meta::uid(vm);
    let vmi = c
        .get(k.vmis, &key)
        .filter(|v| meta::owner_uids(v).iter().any(|o| o == vm_uid))
        .cloned();
    let strategy = run_strategy(vm).to_string();
    let request = first_request(vm);
    let start_request = request.is_some_and(|(a, _)| a == "Start");
    if meta::is_deleting(vm) {
        match &vmi {
            Some(v) if !meta::is_deleting(v) => {
                c.delete(NAME, k.vmis, &key, &DeleteOptions::default())
            }
            Some(_) => {}
            None => drop_vm_finalizer(c, res, vm),
        }
        return;
    }
    if let Some(v) = &vmi {
        let phase = v
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        let final_phase = phase == "Failed" || phase == "Succeeded";
        let stop_request = request.is_some_and(|(a, uid)| a == "Stop" && uid == Some(meta::uid(v)));
        let stop = match strategy.as_str() {
            "Halted" => true,
            "Always" => stop_request || final_phase,
            "RerunOnFailure" => stop_request || final_phase,
            "Manual" => stop_request,
            _ => false,
        };
        if phase == "Running" && !meta::is_deleting(v) {
            set_printable(c, res, vm, "Running");
        }
        if stop && !meta::is_deleting(v) {
            c.delete(NAME, k.vmis, &key, &DeleteOptions::default());
            if strategy == "RerunOnFailure" && phase == "Failed" {
                set_requests(c, res, vm, json!([{"action": "Start"}]));
            }
        }
        return;
    }
    let observed = vm.pointer("/status/runStrategy").and_then(Value::as_str);
    let start = match strategy.as_str() {
        "Always" => true,
        "RerunOnFailure" => start_request || observed != Some(strategy.as_str()),
        "Manual" => start_request,
        _ => false,
    };
    if start {
        let new = new_vmi(c, vm);
        c.create(NAME, k.vmis, new);
        if start_request {
            set_requests(c, res, vm, json!([]));
        }
    } else if strategy == "Halted"
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

/// The VM's `status.printableStatus` (and `ready`) as the VM controller's `updateStatus`
/// writes them for a VMI that runs (`getPrintableStatus`, the same file); writes only a change.
fn set_printable(c: &mut dyn Cluster, res: ResIdx, vm: &Value, status: &str) {
    if vm
        .pointer("/status/printableStatus")
        .and_then(Value::as_str)
        == Some(status)
    {
        return;
    }
    let mut new = vm.clone();
    if !new.get("status").is_some_and(Value::is_object) {
        new["status"] = json!({});
    }
    new["status"]["printableStatus"] = json!(status);
    new["status"]["ready"] = json!(status == "Running");
    c.update(NAME, res, new, true);
}

/// Drops `kubevirt.io/virtualMachineControllerFinalize` from a deleting VM whose VMI is gone.
fn drop_vm_finalizer(c: &mut dyn Cluster, res: ResIdx, vm: &Value) {
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
}

/// Replaces the VM's `status.stateChangeRequests` (`addStartRequest`, and their removal
/// once processed).
fn set_requests(c: &mut dyn Cluster, res: ResIdx, vm: &Value, requests: Value) {
    let mut new = vm.clone();
    if !new.get("status").is_some_and(Value::is_object) {
        new["status"] = json!({});
    }
    if requests.as_array().is_some_and(Vec::is_empty) {
        if let Some(s) = new["status"].as_object_mut() {
            s.remove("stateChangeRequests");
        }
    } else {
        new["status"]["stateChangeRequests"] = requests;
    }
    c.update(NAME, res, new, true);
}

/// A launcher pod for a Pending VMI (kubevirt `pkg/virt-controller/watch/vmi.go` v1.3.0,
/// `vmi/lifecycle.go` v1.7.0: `sync` creates the pod from `services/template.go`'s
/// `RenderLaunchManifest`): the labels, annotation and controller owner vmrecover and
/// KubeVirt match on, the VMI's PVC and DataVolume claims as volumes, no node yet.
fn launcher_pod(vmi: &Value) -> Value {
    let name = meta::name(vmi);
    let uid = meta::uid(vmi);
    let suffix: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect();
    let volumes: Vec<Value> = vmi
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let claim = v
                .pointer("/persistentVolumeClaim/claimName")
                .or_else(|| v.pointer("/dataVolume/name"))?
                .as_str()?;
            Some(
                json!({"name": v.get("name").cloned().unwrap_or_else(|| json!(claim)),
                "persistentVolumeClaim": {"claimName": claim}}),
            )
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("virt-launcher-{name}-{suffix}"),
            "namespace": meta::namespace(vmi),
            "labels": {"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": uid,
                "vm.kubevirt.io/name": name},
            "annotations": {"kubevirt.io/domain": name},
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {
            "containers": [{"name": "compute", "image": "registry.suse.com/suse/sles/15.6/virt-launcher"}],
            "volumes": volumes,
        },
        "status": {"phase": "Pending"},
    })
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

    #[test]
    fn a_final_vmi_is_restarted_per_run_strategy_and_stop_requests() {
        let k = k();
        // (strategy, VMI phase, a stop request for the VMI, VMI deleted, start request added)
        for (strategy, phase, stop, deleted, start) in [
            ("Always", "Failed", false, true, false),
            ("Always", "Succeeded", false, true, false),
            ("Always", "Running", false, false, false),
            ("RerunOnFailure", "Failed", false, true, true),
            ("RerunOnFailure", "Succeeded", false, true, false),
            ("RerunOnFailure", "Running", true, true, false),
            ("Manual", "Failed", false, false, false),
            ("Manual", "Running", true, true, false),
            ("Halted", "Running", false, true, false),
        ] {
            let mut vmo = json!({"metadata": {"name": "vm", "namespace": "d", "uid": "vm-uid"},
                "spec": {"runStrategy": strategy}, "status": {"runStrategy": strategy}});
            if stop {
                vmo["status"]["stateChangeRequests"] =
                    json!([{"action": "Stop", "uid": "vmi-uid"}]);
            }
            let mut v = deleting_vmi(&[VM_CONTROLLER_FINALIZER]);
            if let Some(m) = v["metadata"].as_object_mut() {
                m.remove("deletionTimestamp");
            }
            v["status"] = json!({"phase": phase});
            let mut f = Fake::with(settings("1.8"), &[(k.vms, vmo.clone()), (k.vmis, v)]);
            VirtController.reconcile(&mut f, k.vms, &key(&vmo), &vmo);
            let vmi_now = f.obj(k.vmis, "d", "vm").cloned().unwrap_or_default();
            assert_eq!(
                meta::is_deleting(&vmi_now),
                deleted,
                "{strategy} {phase} stop={stop}"
            );
            let vm_now = f.obj(k.vms, "d", "vm").cloned().unwrap_or_default();
            assert_eq!(
                vm_now["status"]["stateChangeRequests"][0]["action"] == "Start",
                start,
                "{strategy} {phase}"
            );
        }
    }

    #[test]
    fn rerun_on_failure_starts_again_only_on_a_start_request() {
        let k = k();
        for (requests, expect_new) in [(json!([{"action": "Start"}]), true), (json!([]), false)] {
            let vmo = json!({"metadata": {"name": "vm", "namespace": "d", "uid": "vm-uid"},
                "spec": {"runStrategy": "RerunOnFailure", "template": {"spec": {}}},
                "status": {"runStrategy": "RerunOnFailure", "stateChangeRequests": requests}});
            let mut f = Fake::with(settings("1.8"), &[(k.vms, vmo.clone())]);
            VirtController.reconcile(&mut f, k.vms, &key(&vmo), &vmo);
            assert_eq!(f.obj(k.vmis, "d", "vm").is_some(), expect_new);
        }
    }

    #[test]
    fn a_pending_vmi_gets_a_launcher_pod_when_vms_start() {
        let k = k();
        let mut v = deleting_vmi(&[VM_CONTROLLER_FINALIZER]);
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("deletionTimestamp");
        }
        v["status"] = json!({"phase": "Pending"});
        v["spec"] = json!({"volumes": [{"name": "disk-0", "persistentVolumeClaim": {"claimName": "vm-disk-0"}}]});
        let mut s = settings("1.8");
        s.vm_starts = true;
        let mut f = Fake::with(s, &[(k.vmis, v.clone())]);
        VirtController.reconcile(&mut f, k.vmis, &key(&v), &v);
        let pods: Vec<Value> = f.list(k.pods, "d").into_iter().cloned().collect();
        assert_eq!(pods.len(), 1);
        assert_eq!(
            meta::label(&pods[0], "kubevirt.io/created-by"),
            Some("vmi-uid")
        );
        assert_eq!(
            pods[0]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "vm-disk-0"
        );
        let now = f.obj(k.vmis, "d", "vm").cloned().unwrap_or_default();
        assert_eq!(now["status"]["phase"], "Scheduling");
    }
}
