//! The kubelet of every node that is up: it confirms the deletion of its pods at once (the
//! final delete with grace 0 a real kubelet sends once the containers are gone). The kubelet
//! of a node listed in `downNodes` never answers, so its pods stay Terminating until someone
//! deletes them with grace 0 (k8s.io/kubernetes pkg/kubelet/status/status_manager.go
//! `canBeDeleted`/`deletePod`, v1.33.0: the kubelet deletes with `NewDeleteOptions(0)` and a
//! UID precondition).

use serde_json::{json, Value};

use super::{Cluster, Controller, Flow};
use crate::meta;
use crate::resources::{find, ResIdx};
use crate::store::Key;

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

/// The DeleteOptions body the kubelet's final delete is logged with.
pub fn final_delete_body() -> Value {
    json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
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
