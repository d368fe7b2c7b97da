//! Harvester's node-down controller (setting `nodeDownController`, off by default), as the
//! release profile says it behaves ([`crate::profiles::ReleaseProfile::node_down`]). Read at
//! harvester `pkg/controller/master/node/node_down_controller.go`, v1.4.0, v1.6.0, v1.7.0 and
//! v1.8.0, with the policy of `pkg/settings/settings_helper.go` (`VMForceResetPolicy`,
//! `InitVMForceResetPolicy`) at the same tags:
//!
//! - **≤ 1.6 ([`NodeDownStyle::ForceDeletePods`])**: when a node's Ready condition is not True
//!   (False or Unknown) for at least `period` seconds of the `vm-force-reset-policy` setting
//!   (default `{"enable":true,"period":300}`), every virt-launcher pod on the node is deleted with
//!   grace 0, the Longhorn VolumeAttachments of those pods' PVs on that node are deleted, and the
//!   node's `kubevirt.io/heartbeat` annotation is set six minutes into the past (unless it is
//!   already older than five).
//! - **≥ 1.7 ([`NodeDownStyle::Taints`])**: nothing at all while an `Upgrade` in
//!   `harvester-system` is not labelled `harvesterhci.io/upgradeState` Succeeded or Failed (the
//!   label selector is `notin`: an Upgrade without the label counts). When Ready is Unknown for
//!   `period` seconds (default `{"enable":true,"period":15,"vmMigrationTimeout":180}`): taint
//!   `kubevirt.io/drain:NoSchedule`, then condition `Drained` False (`HarvesterNodeIsDraining`),
//!   then after `vmMigrationTimeout` seconds from that condition's transition taint
//!   `node.kubernetes.io/out-of-service:NoExecute` and set `Drained` True
//!   (`HarvesterNodeIsDrained`). Ready False does nothing. Ready True removes both taints, then
//!   the `Drained` condition.
//!
//! It is the timed kind of [`Controller`] ([`NodeDown`], last in [`super::ALL`]): its own task
//! (started with the server, [`super::spawn_timed`]) looks at every node each
//! `nodeDownIntervalMs` and makes at most one write per node per look (the real controller
//! re-reads the node after each write). A write whose object moved meanwhile fails like a
//! conflicting request and is tried again at the next look. Writes are logged as `internal`
//! under [`NAME`].

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::cluster::{Cluster, Controller, Flow, Writes};
use crate::meta;
use crate::resources::{find, ResIdx};
use crate::settings::Settings;
use crate::store_vocab::{DeleteOptions, Key};

/// The name its writes are logged under.
pub const NAME: &str = "harvester-node-down";
/// The Harvester setting holding the policy.
pub const POLICY_SETTING: &str = "vm-force-reset-policy";
/// KubeVirt's drain taint (`virtconfig.NodeDrainTaintDefaultKey`).
pub const DRAIN_TAINT: &str = "kubevirt.io/drain";
/// Kubernetes' non-graceful node shutdown taint (`corev1.TaintNodeOutOfService`).
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";
/// The node condition Harvester ≥ 1.7 sets while and after draining a down node.
pub const DRAINED_CONDITION: &str = "Drained";
/// The label whose value says how far an Upgrade is.
pub const UPGRADE_STATE_LABEL: &str = "harvesterhci.io/upgradeState";
/// Harvester's own namespace, where Upgrades live.
pub const HARVESTER_NAMESPACE: &str = "harvester-system";
/// virt-handler's heartbeat annotation on a Node.
pub const HEARTBEAT_ANNOTATION: &str = "kubevirt.io/heartbeat";

pub use crate::node_down_style::NodeDownStyle;

/// The `vm-force-reset-policy` setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Whether the controller acts.
    pub enable: bool,
    /// Seconds a node's Ready condition must have been down.
    pub period: i64,
    /// Seconds between the drain taint and the out-of-service taint (≥ 1.7).
    #[serde(default)]
    pub vm_migration_timeout: i64,
}

impl NodeDownStyle {
    /// The release's default policy (`InitVMForceResetPolicy`).
    pub fn default_policy(self) -> Policy {
        match self {
            NodeDownStyle::ForceDeletePods => Policy {
                enable: true,
                period: 300,
                vm_migration_timeout: 0,
            },
            NodeDownStyle::Taints => Policy {
                enable: true,
                period: 15,
                vm_migration_timeout: 180,
            },
        }
    }
}

/// What the controller reads at one look.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Every Node.
    pub nodes: Vec<Value>,
    /// Every pod.
    pub pods: Vec<Value>,
    /// Every PVC.
    pub pvcs: Vec<Value>,
    /// Every storage.k8s.io VolumeAttachment.
    pub volume_attachments: Vec<Value>,
    /// The `vm-force-reset-policy` Setting, if any.
    pub policy_setting: Option<Value>,
    /// Every Harvester Upgrade.
    pub upgrades: Vec<Value>,
}

/// One write the controller makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Deletes a pod with grace 0.
    ForceDeletePod(Key),
    /// Deletes a VolumeAttachment.
    DeleteVolumeAttachment(String),
    /// Replaces a Node (taints, annotations).
    UpdateNode(Value),
    /// Replaces a Node's status (conditions).
    UpdateNodeStatus(Value),
}

/// The policy in force: the setting's `value`, else its `default`, else the release's
/// default; `None` when the text does not decode (the real controller returns an error and
/// retries).
pub fn policy(style: NodeDownStyle, setting: Option<&Value>) -> Option<Policy> {
    let text = setting.and_then(|s| {
        ["value", "default"]
            .iter()
            .filter_map(|f| s.get(*f).and_then(Value::as_str))
            .find(|t| !t.is_empty())
    });
    match text {
        Some(t) => serde_json::from_str(t).ok(),
        None => Some(style.default_policy()),
    }
}

/// Whether an Upgrade is in progress (`isOnUpgrade`, v1.7.0).
pub fn upgrade_in_progress(upgrades: &[Value]) -> bool {
    upgrades.iter().any(|u| {
        meta::namespace(u) == HARVESTER_NAMESPACE
            && !matches!(
                meta::label(u, UPGRADE_STATE_LABEL),
                Some("Succeeded") | Some("Failed")
            )
    })
}

fn condition<'a>(node: &'a Value, kind: &str) -> Option<&'a Value> {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn since(cond: &Value, now: i64) -> i64 {
    let t = cond
        .get("lastTransitionTime")
        .and_then(Value::as_str)
        .and_then(meta::parse_ts)
        .unwrap_or(now);
    now - t
}

fn has_taint(node: &Value, key: &str) -> bool {
    taints(node)
        .iter()
        .any(|t| t.get("key").and_then(Value::as_str) == Some(key))
}

fn taints(node: &Value) -> Vec<Value> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn with_taints(node: &Value, taints: Vec<Value>) -> Value {
    let mut n = node.clone();
    if let Some(spec) = n
        .as_object_mut()
        .map(|o| o.entry("spec").or_insert_with(|| json!({})))
    {
        if taints.is_empty() {
            if let Some(s) = spec.as_object_mut() {
                s.remove("taints");
            }
        } else {
            spec["taints"] = Value::Array(taints);
        }
    }
    n
}

fn with_conditions(node: &Value, f: impl FnOnce(&mut Vec<Value>)) -> Value {
    let mut n = node.clone();
    let mut conds = n
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    f(&mut conds);
    if let Some(o) = n.as_object_mut() {
        let status = o.entry("status").or_insert_with(|| json!({}));
        status["conditions"] = Value::Array(conds);
    }
    n
}

fn drained(node: &Value, status: &str, reason: &str, now: i64) -> Value {
    let ts = meta::ts_rfc3339(now);
    with_conditions(node, |conds| {
        let old = conds
            .iter()
            .position(|c| c.get("type").and_then(Value::as_str) == Some(DRAINED_CONDITION));
        let transition = match old.map(|i| &conds[i]) {
            Some(c) if c.get("status").and_then(Value::as_str) == Some(status) => c
                .get("lastTransitionTime")
                .cloned()
                .unwrap_or_else(|| json!(ts)),
            _ => json!(ts),
        };
        let new = json!({
            "type": DRAINED_CONDITION,
            "status": status,
            "reason": reason,
            "message": "Node is draining due to kubelet/node not ready.",
            "lastHeartbeatTime": ts,
            "lastTransitionTime": transition,
        });
        match old {
            Some(i) => conds[i] = new,
            None => conds.push(new),
        }
    })
}

/// What the controller does at one look, at `now` (seconds since the epoch).
pub fn decide(style: NodeDownStyle, snap: &Snapshot, now: i64) -> Vec<Action> {
    if style == NodeDownStyle::Taints && upgrade_in_progress(&snap.upgrades) {
        return Vec::new();
    }
    let Some(policy) = policy(style, snap.policy_setting.as_ref()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for node in snap.nodes.iter().filter(|n| !meta::is_deleting(n)) {
        let Some(ready) = condition(node, "Ready") else {
            continue;
        };
        let status = ready.get("status").and_then(Value::as_str).unwrap_or("");
        match style {
            NodeDownStyle::ForceDeletePods => {
                if status != "True" && policy.enable && since(ready, now) >= policy.period {
                    force_delete_pods(snap, node, now, &mut out);
                }
            }
            NodeDownStyle::Taints => {
                if let Some(a) = taint_step(node, status, &policy, now) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// ≤ 1.6: launcher pods, their VolumeAttachments on the node, the heartbeat.
fn force_delete_pods(snap: &Snapshot, node: &Value, now: i64, out: &mut Vec<Action>) {
    let name = meta::name(node);
    let mut pvs = Vec::new();
    for pod in &snap.pods {
        if meta::label(pod, "kubevirt.io") != Some("virt-launcher")
            || pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(name)
        {
            continue;
        }
        out.push(Action::ForceDeletePod((
            meta::namespace(pod).to_string(),
            meta::name(pod).to_string(),
        )));
        for vol in pod
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(claim) = vol
                .pointer("/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
            else {
                continue;
            };
            let pv = snap
                .pvcs
                .iter()
                .find(|c| meta::namespace(c) == meta::namespace(pod) && meta::name(c) == claim)
                .and_then(|c| c.pointer("/spec/volumeName"))
                .and_then(Value::as_str);
            pvs.extend(pv.map(str::to_string));
        }
    }
    for va in &snap.volume_attachments {
        let s = |p: &str| va.pointer(p).and_then(Value::as_str);
        if !meta::is_deleting(va)
            && s("/spec/nodeName") == Some(name)
            && s("/spec/attacher") == Some("driver.longhorn.io")
            && s("/spec/source/persistentVolumeName").is_some_and(|pv| pvs.iter().any(|p| p == pv))
        {
            out.push(Action::DeleteVolumeAttachment(meta::name(va).to_string()));
        }
    }
    let heartbeat = node
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(HEARTBEAT_ANNOTATION))
        .and_then(Value::as_str);
    let stale = heartbeat
        .and_then(meta::parse_ts)
        .is_some_and(|t| now - t > 5 * 60);
    if !stale {
        let mut n = node.clone();
        let m = meta::meta_mut(&mut n);
        let ann = m.entry("annotations").or_insert_with(|| json!({}));
        ann[HEARTBEAT_ANNOTATION] = json!(meta::ts_rfc3339(now - 6 * 60));
        out.push(Action::UpdateNode(n));
    }
}

/// ≥ 1.7: the next step for one node, if any.
fn taint_step(node: &Value, ready: &str, policy: &Policy, now: i64) -> Option<Action> {
    let drain = has_taint(node, DRAIN_TAINT);
    let oos = has_taint(node, OUT_OF_SERVICE_TAINT);
    let cond = condition(node, DRAINED_CONDITION);
    match ready {
        "True" => {
            if drain || oos {
                let kept = taints(node)
                    .into_iter()
                    .filter(|t| {
                        let k = t.get("key").and_then(Value::as_str);
                        k != Some(DRAIN_TAINT) && k != Some(OUT_OF_SERVICE_TAINT)
                    })
                    .collect();
                return Some(Action::UpdateNode(with_taints(node, kept)));
            }
            cond?;
            Some(Action::UpdateNodeStatus(with_conditions(node, |c| {
                c.retain(|c| c.get("type").and_then(Value::as_str) != Some(DRAINED_CONDITION))
            })))
        }
        "Unknown" if policy.enable => {
            let ready_cond = condition(node, "Ready")?;
            if !drain {
                if since(ready_cond, now) < policy.period {
                    return None;
                }
                let mut t = taints(node);
                t.push(json!({"key": DRAIN_TAINT, "effect": "NoSchedule"}));
                return Some(Action::UpdateNode(with_taints(node, t)));
            }
            let Some(cond) = cond else {
                return Some(Action::UpdateNodeStatus(drained(
                    node,
                    "False",
                    "HarvesterNodeIsDraining",
                    now,
                )));
            };
            if !oos {
                if since(cond, now) < policy.vm_migration_timeout {
                    return None;
                }
                let mut t = taints(node);
                t.push(json!({"key": OUT_OF_SERVICE_TAINT, "effect": "NoExecute"}));
                return Some(Action::UpdateNode(with_taints(node, t)));
            }
            (cond.get("status").and_then(Value::as_str) != Some("True")).then(|| {
                Action::UpdateNodeStatus(drained(node, "True", "HarvesterNodeIsDrained", now))
            })
        }
        _ => None,
    }
}

struct Kinds {
    nodes: ResIdx,
    pods: ResIdx,
    pvcs: ResIdx,
    vas: ResIdx,
    settings: ResIdx,
    upgrades: ResIdx,
}

fn kinds() -> Option<Kinds> {
    Some(Kinds {
        nodes: find("", "v1", "nodes")?,
        pods: find("", "v1", "pods")?,
        pvcs: find("", "v1", "persistentvolumeclaims")?,
        vas: find("storage.k8s.io", "v1", "volumeattachments")?,
        settings: find("harvesterhci.io", "v1beta1", "settings")?,
        upgrades: find("harvesterhci.io", "v1beta1", "upgrades")?,
    })
}

/// Reads what one look needs.
pub fn snapshot(c: &dyn Cluster) -> Option<Snapshot> {
    let k = kinds()?;
    Some(Snapshot {
        nodes: c.list_all(k.nodes),
        pods: c.list_all(k.pods),
        pvcs: c.list_all(k.pvcs),
        volume_attachments: c.list_all(k.vas),
        policy_setting: c
            .list_all(k.settings)
            .into_iter()
            .find(|s| meta::name(s) == POLICY_SETTING),
        upgrades: c.list_all(k.upgrades),
    })
}

/// Makes the writes of one look (each may fail like a conflicting request).
pub fn apply(c: &mut dyn Cluster, actions: Vec<Action>) {
    let Some(k) = kinds() else { return };
    for a in actions {
        match a {
            Action::ForceDeletePod(key) => {
                let opts = DeleteOptions {
                    grace_period_seconds: Some(0),
                    ..DeleteOptions::default()
                };
                c.delete(NAME, k.pods, &key, &opts);
            }
            Action::DeleteVolumeAttachment(name) => {
                c.delete(
                    NAME,
                    k.vas,
                    &(String::new(), name),
                    &DeleteOptions::default(),
                );
            }
            Action::UpdateNode(n) => c.update(NAME, k.nodes, n, false),
            Action::UpdateNodeStatus(n) => c.update(NAME, k.nodes, n, true),
        }
    }
}

/// Harvester's node-down controller: a timed [`Controller`] that looks at every node each
/// `nodeDownIntervalMs` (switched on or not) and reacts to no single change.
pub struct NodeDown;

impl Controller for NodeDown {
    fn name(&self) -> &'static str {
        NAME
    }

    fn reconcile(&self, _c: &mut dyn Cluster, _res: ResIdx, _key: &Key, _obj: &Value) -> Flow {
        Flow::Continue
    }

    fn every(&self, settings: &Settings) -> Option<Duration> {
        Some(Duration::from_millis(settings.node_down_interval_ms.max(1)))
    }

    /// Read, decide; the writes follow (nothing when the controller is switched off).
    fn look(&self, c: &dyn Cluster, now: i64) -> Option<Writes> {
        let settings = c.settings();
        if !settings.node_down_controller {
            return None;
        }
        let style = settings.profile().node_down;
        let actions = decide(style, &snapshot(c)?, now);
        if actions.is_empty() {
            return None;
        }
        Some(Box::new(move |c: &mut dyn Cluster| apply(c, actions)))
    }
}

#[cfg(test)]
#[path = "node_down_tests.rs"]
mod tests;
