//! Harvester's own node-failure handling, read as evidence, and vmrecover's pause
//! switches (docs/safety.md "Harvester's node-down controller").
//!
//! Harvester's node-down controller (harvester `pkg/controller/master/node/node_down_controller.go`,
//! v1.6.0 and v1.7.0) acts on a node whose Ready condition is down: up to 1.6 it
//! force-deletes the node's launcher pods after `vm-force-reset-policy.period`; from 1.7 it
//! taints the node `kubevirt.io/drain` then `node.kubernetes.io/out-of-service`, sets the
//! `Drained` condition, removes both once the node is Ready again, and does nothing while an
//! `Upgrade` runs. What the Node shows (taints, conditions, the pause annotation) comes with
//! the Node read of every pass; the setting, the Upgrades and the cluster-wide pause are read
//! only in a pass where something is being decided, so a healthy pass costs nothing more.

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use super::errors::{describe, status_code};
use super::lists::get_named;
use super::retry::with_retries;
use crate::evidence::Gathered;

/// KubeVirt's drain taint, which Harvester ≥ 1.7 puts on a node whose Ready is Unknown.
pub const TAINT_DRAIN: &str = "kubevirt.io/drain";
/// Kubernetes' non-graceful shutdown taint (Harvester ≥ 1.7 adds it after the drain one).
pub const TAINT_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
/// Harvester's node condition while and after it drains a down node.
pub const CONDITION_DRAINED: &str = "Drained";
/// Node annotation that pauses the agent on that node (any value but `false`, the empty
/// value included; the value is shown as the reason).
pub const ANNOTATION_PAUSE: &str = "vmrecover.io/paused";
/// ConfigMap in the agent's namespace whose existence pauses every agent (its `reason` key
/// is shown).
pub const PAUSE_CONFIGMAP: &str = "vmrecover-pause";
/// Harvester's setting for its node-down controller.
pub const SETTING_FORCE_RESET: &str = "vm-force-reset-policy";
/// The label saying how far a Harvester Upgrade is.
pub const LABEL_UPGRADE_STATE: &str = "harvesterhci.io/upgradeState";
/// Where Harvester keeps its Upgrades.
pub const HARVESTER_NAMESPACE: &str = "harvester-system";

/// A node condition as read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionView {
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// `reason`, if any.
    #[serde(default)]
    pub reason: Option<String>,
    /// `lastTransitionTime`, if any.
    #[serde(default)]
    pub since: Option<jiff::Timestamp>,
}

/// `vm-force-reset-policy` as Harvester decodes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForceResetPolicy {
    /// Whether Harvester's node-down controller acts.
    pub enable: bool,
    /// Seconds a node must be down first.
    pub period: i64,
    /// Seconds between the drain and out-of-service taints (≥ 1.7).
    #[serde(default)]
    pub vm_migration_timeout: i64,
}

/// What Harvester did or will do for this node, and whether vmrecover is paused. Its
/// `Default` is a Node with nothing of Harvester's on it, no pause, no policy and no
/// Upgrade, all read (what tests build by hand); a pass's own reading says what it did not
/// read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HarvesterFacts {
    /// The Node's Ready condition.
    #[serde(default)]
    pub ready: Option<ConditionView>,
    /// Harvester's `Drained` condition.
    #[serde(default)]
    pub drained: Option<ConditionView>,
    /// Whether the node carries `kubevirt.io/drain`.
    #[serde(default)]
    pub drain_taint: bool,
    /// Whether the node carries `node.kubernetes.io/out-of-service`.
    #[serde(default)]
    pub out_of_service_taint: bool,
    /// The node's pause annotation, when it pauses.
    #[serde(default)]
    pub node_paused: Option<String>,
    /// The cluster-wide pause (`Some(reason)` when paused); `None` when not read (nothing
    /// was being decided).
    #[serde(default)]
    pub cluster_paused: Option<Gathered<Option<String>>>,
    /// `vm-force-reset-policy` (`None` inside: no such setting); not read when nothing was
    /// being decided.
    #[serde(default)]
    pub force_reset_policy: Option<Gathered<Option<ForceResetPolicy>>>,
    /// Names of Harvester Upgrades in progress; not read when nothing was being decided.
    #[serde(default)]
    pub upgrades_in_progress: Option<Gathered<Vec<String>>>,
    /// A fenced-node run only: launcher pods on other nodes.
    #[serde(default)]
    pub launchers_elsewhere: Option<Gathered<Vec<super::pod_view::PodView>>>,
    /// A fenced-node run only: what NODE's own software last wrote (its signs of life).
    #[serde(default)]
    pub life_signs: Option<super::liveness::LifeSigns>,
}

impl Default for HarvesterFacts {
    fn default() -> Self {
        HarvesterFacts {
            ready: None,
            drained: None,
            drain_taint: false,
            out_of_service_taint: false,
            node_paused: None,
            cluster_paused: Some(Gathered::read(None)),
            force_reset_policy: Some(Gathered::read(None)),
            upgrades_in_progress: Some(Gathered::read(Vec::new())),
            launchers_elsewhere: None,
            life_signs: None,
        }
    }
}

impl HarvesterFacts {
    /// What the Node itself shows (the cluster-wide pause, the policy and the Upgrades are
    /// not read yet).
    pub fn of_node(node: &Node) -> Self {
        let cond = |kind: &str| {
            node.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == kind)
                .map(|c| ConditionView {
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    since: c.last_transition_time.as_ref().map(|t| t.0),
                })
        };
        let taint = |key: &str| {
            node.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.key == key))
        };
        let node_paused = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_PAUSE))
            .filter(|v| v.trim() != "false")
            .map(|v| {
                if v.trim().is_empty() {
                    "(no reason given)".to_string()
                } else {
                    v.clone()
                }
            });
        HarvesterFacts {
            ready: cond("Ready"),
            drained: cond(CONDITION_DRAINED),
            drain_taint: taint(TAINT_DRAIN),
            out_of_service_taint: taint(TAINT_OUT_OF_SERVICE),
            node_paused,
            cluster_paused: None,
            force_reset_policy: None,
            upgrades_in_progress: None,
            launchers_elsewhere: None,
            life_signs: None,
        }
    }

    /// Why the agent is paused, if it is (the node's annotation first).
    pub fn paused(&self) -> Option<String> {
        if let Some(r) = &self.node_paused {
            return Some(format!("node annotation {ANNOTATION_PAUSE}={r}"));
        }
        match &self.cluster_paused {
            Some(Gathered::Read { value: Some(r) }) => Some(format!(
                "ConfigMap {PAUSE_CONFIGMAP} exists (cluster-wide pause){}",
                if r.is_empty() {
                    String::new()
                } else {
                    format!(": {r}")
                }
            )),
            _ => None,
        }
    }
}

/// Reads the cluster-wide pause, the policy setting and the Upgrades in progress (three
/// requests, made together).
pub async fn read_extras(client: &Client, namespace: &str, facts: &mut HarvesterFacts) {
    let (pause, policy, upgrades) = tokio::join!(
        read_pause(client, namespace),
        read_policy(client),
        read_upgrades(client)
    );
    facts.cluster_paused = Some(pause);
    facts.force_reset_policy = Some(policy);
    facts.upgrades_in_progress = Some(upgrades);
}

async fn read_pause(client: &Client, namespace: &str) -> Gathered<Option<String>> {
    match get_named::<ConfigMap>(client, namespace, PAUSE_CONFIGMAP, "configmaps").await {
        Ok(None) => Gathered::read(None),
        Ok(Some(cm)) => Gathered::read(Some(
            cm.data
                .as_ref()
                .and_then(|d| d.get("reason"))
                .cloned()
                .unwrap_or_default(),
        )),
        Err(e) => Gathered::unreadable(format!("configmaps {namespace}/{PAUSE_CONFIGMAP}"), e),
    }
}

fn harvester_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "harvesterhci.io".into(),
        version: "v1beta1".into(),
        api_version: "harvesterhci.io/v1beta1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

async fn read_policy(client: &Client) -> Gathered<Option<ForceResetPolicy>> {
    let ar = harvester_resource("Setting", "settings");
    let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
    let what = format!("settings.harvesterhci.io/{SETTING_FORCE_RESET}");
    match with_retries(&format!("get {what}"), || api.get_opt(SETTING_FORCE_RESET)).await {
        Ok(None) => Gathered::read(None),
        Err(e) if status_code(&e) == Some(404) => Gathered::read(None),
        Err(e) => Gathered::unreadable(what.clone(), describe(&e, "get", &what)),
        Ok(Some(s)) => {
            let text = ["value", "default"]
                .iter()
                .filter_map(|f| s.data.get(*f).and_then(|v| v.as_str()))
                .find(|t| !t.is_empty());
            match text.map(serde_json::from_str::<ForceResetPolicy>) {
                None => Gathered::read(None),
                Some(Ok(p)) => Gathered::read(Some(p)),
                Some(Err(e)) => Gathered::unreadable(what, format!("not a policy: {e}")),
            }
        }
    }
}

/// Upgrades in `harvester-system` not labelled Succeeded or Failed (the selector Harvester's
/// node-down controller uses; an Upgrade without the label counts as running).
async fn read_upgrades(client: &Client) -> Gathered<Vec<String>> {
    let ar = harvester_resource("Upgrade", "upgrades");
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), HARVESTER_NAMESPACE, &ar);
    let lp =
        ListParams::default().labels(&format!("{LABEL_UPGRADE_STATE} notin (Succeeded,Failed)"));
    let what = format!("upgrades.harvesterhci.io in {HARVESTER_NAMESPACE}");
    match with_retries(&format!("list {what}"), || api.list(&lp)).await {
        Ok(l) => Gathered::read(
            l.items
                .iter()
                .map(|u| u.metadata.name.clone().unwrap_or_default())
                .collect(),
        ),
        Err(e) => Gathered::unreadable(what.clone(), describe(&e, "list", &what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotated(value: &str) -> Node {
        let mut n = Node::default();
        n.metadata.annotations = Some([(ANNOTATION_PAUSE.to_string(), value.to_string())].into());
        n
    }

    /// `vmrecover.io/paused=` pauses: only `false` does not (issue 23).
    #[test]
    fn any_pause_value_but_false_pauses_the_empty_one_too() {
        for (value, paused) in [
            ("", true),
            ("  ", true),
            ("disk swap", true),
            ("false", false),
        ] {
            let h = HarvesterFacts::of_node(&annotated(value));
            assert_eq!(h.node_paused.is_some(), paused, "{value:?}");
        }
        assert!(HarvesterFacts::of_node(&annotated(""))
            .paused()
            .is_some_and(|p| p.contains("no reason given")));
        assert_eq!(HarvesterFacts::of_node(&Node::default()).node_paused, None);
    }
}
