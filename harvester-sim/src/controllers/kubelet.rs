//! The kubelet of every node that is up: it confirms the deletion of its pods at once (the
//! final delete with grace 0 a real kubelet sends once the containers are gone). The kubelet
//! of a node listed in `downNodes` never answers, so its pods stay Terminating until someone
//! deletes them with grace 0 (k8s.io/kubernetes pkg/kubelet/status/status_manager.go
//! `canBeDeleted`/`deletePod`, v1.33.0: the kubelet deletes with `NewDeleteOptions(0)` and a
//! UID precondition).
//!
//! With setting `vmStarts`, the kubelet of an up node also starts the launcher pods bound to
//! it: Running and Ready, unless one of its PVCs is a Longhorn volume that cannot attach
//! (`status.robustness: faulted`; longhorn-manager `controller/volume_controller.go` v1.7.0
//! and v1.10.0 refuse to attach a faulted volume until it is salvaged, so the CSI attach and
//! the pod's start wait): the pod then stays Pending, `ContainersNotReady`.

use serde_json::{json, Value};

use crate::cluster::{Cluster, Controller, Flow};
use crate::meta;
use crate::resources::{find, ResIdx};
use crate::store_vocab::Key;

/// The simulated kubelets.
pub struct Kubelet;

impl Controller for Kubelet {
    fn name(&self) -> &'static str {
        "kubelet"
    }

    fn reconcile(&self, c: &mut dyn Cluster, res: ResIdx, key: &Key, pod: &Value) -> Flow {
        if Some(res) != find("", "v1", "pods") {
            return Flow::Continue;
        }
        if !meta::is_deleting(pod) && c.settings().vm_starts {
            start(c, res, pod);
            return Flow::Continue;
        }
        if !meta::is_deleting(pod) || !meta::finalizers(pod).is_empty() {
            return Flow::Continue;
        }
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() || c.settings().down_nodes.contains(node) {
            return Flow::Continue;
        }
        c.remove(self.name(), res, key);
        Flow::Continue
    }
}

/// Starts a launcher pod bound to an up node: Running and Ready, or Pending while a Longhorn
/// volume of it is faulted. Writes only what changes.
fn start(c: &mut dyn Cluster, res: ResIdx, pod: &Value) {
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty()
        || c.settings().down_nodes.contains(node)
        || meta::label(pod, "kubevirt.io") != Some("virt-launcher")
    {
        return;
    }
    let faulted = faulted_volume(c, pod);
    let (phase, ready, reason) = match &faulted {
        None => ("Running", "True", None),
        Some(_) => ("Pending", "False", Some("ContainersNotReady")),
    };
    if pod.pointer("/status/phase").and_then(Value::as_str) == Some(phase) {
        let now_ready = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == ready);
        if now_ready {
            return;
        }
    }
    let mut new = pod.clone();
    if !new.get("status").is_some_and(Value::is_object) {
        new["status"] = json!({});
    }
    new["status"]["phase"] = json!(phase);
    let mut conds: Vec<Value> = new["status"]
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    conds.retain(|c| c["type"] != "Ready" && c["type"] != "ContainersReady");
    for t in ["ContainersReady", "Ready"] {
        let mut cond =
            json!({"type": t, "status": ready, "lastTransitionTime": meta::now_rfc3339()});
        if let (Some(r), Some(v)) = (reason, &faulted) {
            cond["reason"] = json!(r);
            cond["message"] = json!(format!("volume {v} cannot be attached: it is faulted"));
        }
        conds.push(cond);
    }
    new["status"]["conditions"] = json!(conds);
    c.update("kubelet", res, new, true);
    // virt-controller and virt-handler watch launcher pods: their VMI is looked at again.
    if let (Some(vmis), Some(owner)) = (
        find("kubevirt.io", "v1", "virtualmachineinstances"),
        pod.pointer("/metadata/ownerReferences/0/name")
            .and_then(Value::as_str),
    ) {
        c.requeue(vmis, &(meta::namespace(pod).to_string(), owner.to_string()));
    }
}

/// The first Longhorn volume behind the pod's PVCs that is faulted (PVC → PV → CSI volume
/// handle → `volumes.longhorn.io` in `longhorn-system`).
fn faulted_volume(c: &dyn Cluster, pod: &Value) -> Option<String> {
    let pvcs = find("", "v1", "persistentvolumeclaims")?;
    let pvs = find("", "v1", "persistentvolumes")?;
    let volumes = find("longhorn.io", "v1beta2", "volumes")?;
    let ns = meta::namespace(pod).to_string();
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName")?.as_str())
        .find_map(|claim| {
            let pvc = c.get(pvcs, &(ns.clone(), claim.to_string()))?;
            let pv_name = pvc.pointer("/spec/volumeName")?.as_str()?;
            let pv = c.get(pvs, &(String::new(), pv_name.to_string()))?;
            let handle = pv.pointer("/spec/csi/volumeHandle")?.as_str()?;
            let vol = c.get(
                volumes,
                &("longhorn-system".to_string(), handle.to_string()),
            )?;
            (vol.pointer("/status/robustness").and_then(Value::as_str) == Some("faulted"))
                .then(|| handle.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake::{key, Fake};
    use crate::settings::Settings;

    fn pod(name: &str, node: &str, deleting: bool, fins: &[&str]) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": "d", "finalizers": fins}, "spec": {"nodeName": node}});
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        p
    }

    #[test]
    fn confirms_deleting_pods_on_up_nodes_only() {
        let Some(pods) = find("", "v1", "pods") else {
            panic!("pods not served")
        };
        let mut settings = Settings::default();
        settings.down_nodes.insert("down".into());
        let objs = [
            pod("up", "n1", true, &[]),
            pod("down", "down", true, &[]),
            pod("alive", "n1", false, &[]),
            pod("held", "n1", true, &["example.com/hold"]),
        ];
        let mut f = Fake::with(
            settings,
            &objs.iter().map(|o| (pods, o.clone())).collect::<Vec<_>>(),
        );
        for o in &objs {
            Kubelet.reconcile(&mut f, pods, &key(o), o);
        }
        assert!(f.obj(pods, "d", "up").is_none(), "confirmed");
        assert!(f.obj(pods, "d", "down").is_some(), "its kubelet is down");
        assert!(f.obj(pods, "d", "alive").is_some(), "not deleting");
        assert!(f.obj(pods, "d", "held").is_some(), "a finalizer keeps it");
        assert_eq!(
            f.actions,
            vec![(
                "kubelet".to_string(),
                "remove".to_string(),
                "up".to_string()
            )]
        );
    }

    #[test]
    fn ignores_other_kinds() {
        let Some(vmis) = find("kubevirt.io", "v1", "virtualmachineinstances") else {
            panic!("vmis not served")
        };
        let o = pod("x", "n1", true, &[]);
        let mut f = Fake::with(Settings::default(), &[(vmis, o.clone())]);
        Kubelet.reconcile(&mut f, vmis, &key(&o), &o);
        assert!(f.actions.is_empty());
    }
}
