//! kube-scheduler, for the launcher pods of VMIs that start (setting `vmStarts`): a pod
//! without `spec.nodeName` is bound to the first node, by name, that can take it, or gets
//! `PodScheduled=False` with reason `Unschedulable` and a message that counts the nodes
//! that could not, as kube-scheduler does (k8s.io/kubernetes
//! `pkg/scheduler/schedule_one.go` `handleSchedulingFailure` and `framework/types.go`
//! `FitError.Error`, v1.33.0: "0/N nodes are available: …"). A node can take it when it is
//! Ready, not cordoned (`spec.unschedulable`, filter `NodeUnschedulable`), its kubelet is
//! up, and it has no `NoSchedule`/`NoExecute` taint (filter `TaintToleration`; launcher pods
//! tolerate none of them: KubeVirt `pkg/virt-controller/services/template.go` v1.3.0 adds
//! only the VMI's own tolerations, and the scenarios give VMIs none).

use serde_json::{json, Value};

use crate::cluster::{Cluster, Controller, Flow};
use crate::meta;
use crate::resources::{find, ResIdx};
use crate::store_vocab::Key;

/// The simulated kube-scheduler.
pub struct Scheduler;

/// The name its writes are logged under.
pub const NAME: &str = "kube-scheduler";

impl Controller for Scheduler {
    fn name(&self) -> &'static str {
        NAME
    }

    fn reconcile(&self, c: &mut dyn Cluster, res: ResIdx, _key: &Key, pod: &Value) -> Flow {
        if Some(res) != find("", "v1", "pods") || !c.settings().vm_starts {
            return Flow::Continue;
        }
        let bound = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if bound || meta::is_deleting(pod) || !is_launcher(pod) {
            return Flow::Continue;
        }
        let Some(nodes_res) = find("", "v1", "nodes") else {
            return Flow::Continue;
        };
        let nodes = c.list(nodes_res, "");
        let mut why: Vec<&'static str> = Vec::new();
        let mut chosen = None;
        let mut sorted: Vec<&Value> = nodes.to_vec();
        sorted.sort_by_key(|n| meta::name(n).to_string());
        for node in sorted {
            match unfit(c, node) {
                None => {
                    chosen = Some(meta::name(node).to_string());
                    break;
                }
                Some(reason) => why.push(reason),
            }
        }
        match chosen {
            Some(node) => {
                let mut new = pod.clone();
                new["spec"]["nodeName"] = json!(node);
                c.update(NAME, res, new.clone(), false);
                set_condition(&mut new, "True", None, None);
                c.update(NAME, res, new, true);
            }
            None => {
                let message = fit_error(nodes.len(), &why);
                let already = scheduled_condition(pod)
                    .is_some_and(|cond| cond["status"] == "False" && cond["message"] == message);
                if !already {
                    let mut new = pod.clone();
                    set_condition(&mut new, "False", Some("Unschedulable"), Some(&message));
                    c.update(NAME, res, new, true);
                }
            }
        }
        Flow::Continue
    }
}

/// Whether the pod is a virt-launcher pod (the only pods the simulator starts).
fn is_launcher(pod: &Value) -> bool {
    meta::label(pod, "kubevirt.io") == Some("virt-launcher")
}

/// Why a node cannot take a launcher pod, in kube-scheduler's words, or `None`.
fn unfit(c: &dyn Cluster, node: &Value) -> Option<&'static str> {
    if c.settings().down_nodes.contains(meta::name(node)) {
        return Some("node(s) had untolerated taint {node.kubernetes.io/unreachable: }");
    }
    let tainted = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute");
    if tainted {
        return Some("node(s) had untolerated taint(s)");
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        return Some("node(s) were unschedulable");
    }
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if !ready {
        return Some("node(s) had untolerated taint {node.kubernetes.io/not-ready: }");
    }
    None
}

/// kube-scheduler's fit error: the total, then each reason with its count, sorted.
fn fit_error(total: usize, why: &[&str]) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for w in why {
        *counts.entry(w).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
    format!(
        "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling.",
        parts.join(", ")
    )
}

fn scheduled_condition(pod: &Value) -> Option<&Value> {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "PodScheduled")
}

/// Sets the pod's `PodScheduled` condition (and phase Pending when it has none).
fn set_condition(pod: &mut Value, status: &str, reason: Option<&str>, message: Option<&str>) {
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    if pod["status"].get("phase").is_none() {
        pod["status"]["phase"] = json!("Pending");
    }
    let mut cond = json!({"type": "PodScheduled", "status": status,
        "lastTransitionTime": meta::now_rfc3339()});
    if let Some(r) = reason {
        cond["reason"] = json!(r);
    }
    if let Some(m) = message {
        cond["message"] = json!(m);
    }
    let conds = pod["status"]
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    if let Some(Value::Array(list)) = conds {
        list.retain(|c| c["type"] != "PodScheduled");
        list.push(cond);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake::{key, Fake};
    use crate::settings::Settings;

    fn res(kind: &str) -> ResIdx {
        match find("", "v1", kind) {
            Some(r) => r,
            None => panic!("{kind} not served"),
        }
    }

    fn node(name: &str, ready: bool, taint: Option<&str>) -> Value {
        let mut n = json!({"metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"Unknown"}}]}});
        if let Some(effect) = taint {
            n["spec"] = json!({"taints": [{"key": "k", "effect": effect}]});
        }
        n
    }

    fn launcher() -> Value {
        json!({"metadata": {"name": "virt-launcher-vm-abcde", "namespace": "d",
            "labels": {"kubevirt.io": "virt-launcher"}}, "spec": {}})
    }

    fn starts() -> Settings {
        Settings {
            vm_starts: true,
            ..Settings::default()
        }
    }

    #[test]
    fn binds_to_a_ready_untainted_node() {
        let (pods, nodes) = (res("pods"), res("nodes"));
        let p = launcher();
        let mut f = Fake::with(
            starts(),
            &[
                (nodes, node("a", false, None)),
                (nodes, node("b", true, Some("NoSchedule"))),
                (nodes, node("c", true, None)),
                (pods, p.clone()),
            ],
        );
        Scheduler.reconcile(&mut f, pods, &key(&p), &p);
        let now = f.obj(pods, "d", "virt-launcher-vm-abcde").cloned();
        assert_eq!(now.map(|p| p["spec"]["nodeName"].clone()), Some(json!("c")));
    }

    #[test]
    fn no_node_fits_unschedulable_with_counts() {
        let (pods, nodes) = (res("pods"), res("nodes"));
        let p = launcher();
        let mut f = Fake::with(
            starts(),
            &[
                (nodes, node("a", false, None)),
                (nodes, node("b", true, Some("NoExecute"))),
                (pods, p.clone()),
            ],
        );
        Scheduler.reconcile(&mut f, pods, &key(&p), &p);
        let now = f
            .obj(pods, "d", "virt-launcher-vm-abcde")
            .cloned()
            .unwrap_or_default();
        assert!(now["spec"]["nodeName"].is_null());
        let cond = scheduled_condition(&now).cloned().unwrap_or_default();
        assert_eq!(cond["status"], "False");
        assert_eq!(cond["reason"], "Unschedulable");
        let msg = cond["message"].as_str().unwrap_or("");
        assert!(msg.starts_with("0/2 nodes are available: "), "{msg}");
        assert!(msg.contains("1 node(s) had untolerated taint(s)"), "{msg}");
    }

    #[test]
    fn off_it_binds_nothing() {
        let (pods, nodes) = (res("pods"), res("nodes"));
        let p = launcher();
        let mut f = Fake::with(
            Settings::default(),
            &[(nodes, node("c", true, None)), (pods, p.clone())],
        );
        Scheduler.reconcile(&mut f, pods, &key(&p), &p);
        assert!(f.actions.is_empty());
    }
}
