//! KubeVirt's virt-handler, for VMIs that start (setting `vmStarts`): a `Scheduled` VMI whose
//! launcher pod is Running and Ready on an up node goes `Running` (kubevirt
//! `pkg/virt-handler/vm.go` v1.3.0 and v1.7.0: once the domain is up, virt-handler on the
//! VMI's node writes phase Running; the simulator has no domain, the ready pod stands for it).

use serde_json::{json, Value};

use crate::cluster::{Cluster, Controller, Flow};
use crate::meta;
use crate::resources::{find, ResIdx};
use crate::store_vocab::Key;

/// The simulated virt-handlers.
pub struct VirtHandler;

impl Controller for VirtHandler {
    fn name(&self) -> &'static str {
        // It writes VMIs as KubeVirt's ServiceAccount, as virt-controller does.
        super::virt_controller::NAME
    }

    fn reconcile(&self, c: &mut dyn Cluster, res: ResIdx, _key: &Key, vmi: &Value) -> Flow {
        let (Some(vmis), Some(pods)) = (
            find("kubevirt.io", "v1", "virtualmachineinstances"),
            find("", "v1", "pods"),
        ) else {
            return Flow::Continue;
        };
        if res != vmis || !c.settings().vm_starts || meta::is_deleting(vmi) {
            return Flow::Continue;
        }
        if vmi.pointer("/status/phase").and_then(Value::as_str) != Some("Scheduled") {
            return Flow::Continue;
        }
        let node = vmi
            .pointer("/status/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if node.is_empty() || c.settings().down_nodes.contains(&node) {
            return Flow::Continue;
        }
        let up = c
            .dependents(meta::uid(vmi))
            .into_iter()
            .filter(|(r, _)| *r == pods)
            .filter_map(|(_, k)| c.get(pods, &k))
            .any(|p| {
                !meta::is_deleting(p)
                    && p.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
                    && p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node.as_str())
            });
        if up {
            let mut new = vmi.clone();
            new["status"]["phase"] = json!("Running");
            let entry =
                json!({"phase": "Running", "phaseTransitionTimestamp": meta::now_rfc3339()});
            match new["status"]
                .get_mut("phaseTransitionTimestamps")
                .and_then(Value::as_array_mut)
            {
                Some(list) => list.push(entry),
                None => new["status"]["phaseTransitionTimestamps"] = json!([entry]),
            }
            c.update(super::virt_controller::NAME, res, new, false);
        }
        Flow::Continue
    }
}
