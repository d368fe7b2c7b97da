//! Simulator settings: which nodes are down, whether virt-controller runs, the reported version.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::webhook_switches::{self, WebhookState};

/// Default Kubernetes version reported at `/version`.
pub const DEFAULT_KUBE_VERSION: &str = "1.33.2";

/// Default number of watch events kept for watches that resume from a resourceVersion.
pub const DEFAULT_WATCH_HISTORY: usize = 10_000;

/// The simulator's switches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Nodes whose kubelet is down: their pods deleted with a grace period stay Terminating.
    pub down_nodes: BTreeSet<String>,
    /// Whether the simulated virt-controller runs (off models a cluster whose controller is dead).
    pub virt_controller: bool,
    /// Kubernetes version reported at `/version` (e.g. `1.33.2`).
    pub kube_version: String,
    /// Watch events kept for resuming watches; older resourceVersions answer 410 Gone.
    pub watch_history: usize,
    /// The Harvester release whose controllers are simulated (see [`crate::profiles`]).
    pub release: String,
    /// Admission webhooks that are not up, by webhook name (see [`crate::admission`]).
    #[serde(default)]
    pub webhooks: BTreeMap<String, WebhookState>,
    /// Whether Harvester's VM controller runs (its PVC clean-up, see
    /// [`crate::controllers::harvester_vm`]); off by default.
    #[serde(default)]
    pub harvester_controller: bool,
    /// 0: the controllers react inside the request that changed something (synchronous).
    /// Otherwise each controller runs in its own task and looks at the cluster every this
    /// many milliseconds, as real controllers do, after the request has been answered.
    #[serde(default)]
    pub controller_delay_ms: u64,
    /// Whether Harvester's node-down controller runs ([`crate::controllers::node_down`]; off by
    /// default so scenarios keep the taints and pods they were written with).
    #[serde(default)]
    pub node_down_controller: bool,
    /// How often the node-down controller looks at the nodes, in milliseconds.
    #[serde(default = "default_node_down_interval_ms")]
    pub node_down_interval_ms: u64,
    /// Whether new VMIs start: virt-controller creates their launcher pod, kube-scheduler
    /// binds it (or marks it unschedulable), the kubelet starts it and virt-handler reports
    /// the VMI Running ([`crate::controllers::scheduler`], [`crate::controllers::virt_handler`]).
    /// Off by default: a new VMI then stays Pending, as with a scheduler that is down.
    #[serde(default)]
    pub vm_starts: bool,
}

/// The node-down controller's default interval between two looks.
pub const DEFAULT_NODE_DOWN_INTERVAL_MS: u64 = 200;

fn default_node_down_interval_ms() -> u64 {
    DEFAULT_NODE_DOWN_INTERVAL_MS
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            down_nodes: BTreeSet::new(),
            virt_controller: true,
            kube_version: DEFAULT_KUBE_VERSION.into(),
            watch_history: DEFAULT_WATCH_HISTORY,
            release: crate::profiles::DEFAULT_RELEASE.into(),
            webhooks: BTreeMap::new(),
            harvester_controller: false,
            controller_delay_ms: 0,
            node_down_controller: false,
            node_down_interval_ms: DEFAULT_NODE_DOWN_INTERVAL_MS,
            vm_starts: false,
        }
    }
}

/// A partial update of [`Settings`] (every field optional), as accepted by `POST /_sim/settings`
/// and by a scenario's `SimulatorSettings` header document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsPatch {
    /// Replace the set of down nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_nodes: Option<BTreeSet<String>>,
    /// Switch virt-controller on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virt_controller: Option<bool>,
    /// Change the reported version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_version: Option<String>,
    /// Change the watch history size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_history: Option<usize>,
    /// Change the simulated Harvester release (`1.4` … `1.8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Switch admission webhooks, by webhook name or by Service name (`virt-api`,
    /// `harvester-webhook`: every webhook behind it); webhooks not named keep their state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<BTreeMap<String, WebhookState>>,
    /// Switch Harvester's VM controller on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harvester_controller: Option<bool>,
    /// Make the controllers asynchronous with this period (0: synchronous).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_delay_ms: Option<u64>,
    /// Switch Harvester's node-down controller on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_down_controller: Option<bool>,
    /// Change the node-down controller's interval (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_down_interval_ms: Option<u64>,
    /// Switch the start of new VMIs on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_starts: Option<bool>,
}

impl SettingsPatch {
    /// Checks what the patch names (webhooks, the release) before it is applied: an unknown
    /// release is refused with the known ones, as `--release` is, instead of simulating the
    /// default one.
    pub fn check(&self) -> Result<(), String> {
        for name in self.webhooks.iter().flat_map(BTreeMap::keys) {
            webhook_switches::resolve(name)?;
        }
        if let Some(r) = &self.release {
            if crate::profiles::profile(r).is_none() {
                return Err(format!(
                    "unknown Harvester release {r:?} (known: {})",
                    crate::profiles::known_names()
                ));
            }
        }
        Ok(())
    }

    /// Adds `later`'s settings to this patch (later values win; webhook switches merge).
    pub fn merge(&mut self, later: SettingsPatch) {
        let SettingsPatch {
            down_nodes,
            virt_controller,
            kube_version,
            watch_history,
            release,
            webhooks,
            harvester_controller,
            controller_delay_ms,
            node_down_controller,
            node_down_interval_ms,
            vm_starts,
        } = later;
        if vm_starts.is_some() {
            self.vm_starts = vm_starts;
        }
        if harvester_controller.is_some() {
            self.harvester_controller = harvester_controller;
        }
        if controller_delay_ms.is_some() {
            self.controller_delay_ms = controller_delay_ms;
        }
        if node_down_controller.is_some() {
            self.node_down_controller = node_down_controller;
        }
        if node_down_interval_ms.is_some() {
            self.node_down_interval_ms = node_down_interval_ms;
        }
        if down_nodes.is_some() {
            self.down_nodes = down_nodes;
        }
        if virt_controller.is_some() {
            self.virt_controller = virt_controller;
        }
        if kube_version.is_some() {
            self.kube_version = kube_version;
        }
        if watch_history.is_some() {
            self.watch_history = watch_history;
        }
        if release.is_some() {
            self.release = release;
        }
        if let Some(w) = webhooks {
            self.webhooks.get_or_insert_with(BTreeMap::new).extend(w);
        }
    }
}

impl Settings {
    /// Applies a partial update.
    pub fn apply(&mut self, p: &SettingsPatch) {
        if let Some(d) = &p.down_nodes {
            self.down_nodes = d.clone();
        }
        if let Some(v) = p.virt_controller {
            self.virt_controller = v;
        }
        if let Some(v) = &p.kube_version {
            self.kube_version = v.trim_start_matches('v').to_string();
        }
        if let Some(v) = p.watch_history {
            self.watch_history = v.max(1);
        }
        if let Some(v) = &p.release {
            self.release = v.trim_start_matches('v').to_string();
        }
        if let Some(v) = p.harvester_controller {
            self.harvester_controller = v;
        }
        if let Some(v) = p.controller_delay_ms {
            self.controller_delay_ms = v;
        }
        if let Some(v) = p.node_down_controller {
            self.node_down_controller = v;
        }
        if let Some(v) = p.node_down_interval_ms {
            self.node_down_interval_ms = v.max(1);
        }
        if let Some(v) = p.vm_starts {
            self.vm_starts = v;
        }
        for (name, state) in p.webhooks.iter().flatten() {
            // Unknown names are refused where patches come in (`SettingsPatch::check`).
            let _ = webhook_switches::switch(&mut self.webhooks, name, state);
        }
    }

    /// The behaviour profile of the simulated release.
    pub fn profile(&self) -> &'static crate::profiles::ReleaseProfile {
        crate::profiles::profile_or_default(&self.release)
    }

    /// The Kubernetes minor of `kube_version`: what [`crate::kube_version`] gates on.
    pub fn kube_minor(&self) -> u32 {
        crate::kube_version::minor(&self.kube_version)
    }

    /// `/version` body.
    pub fn version_info(&self) -> serde_json::Value {
        let mut parts = self.kube_version.split('.');
        let major = parts.next().unwrap_or("1");
        let minor = parts.next().unwrap_or("33");
        serde_json::json!({
            "major": major,
            "minor": minor,
            "gitVersion": format!("v{}", self.kube_version),
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-06-17T18:36:53Z",
            "goVersion": "go1.24.4",
            "compiler": "gc",
            "platform": "linux/amd64",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_and_version() {
        let mut s = Settings::default();
        let p: SettingsPatch = serde_json::from_str(
            r#"{"downNodes":["n1"],"virtController":false,"kubeVersion":"v1.27.3"}"#,
        )
        .unwrap_or_default();
        s.apply(&p);
        assert!(s.down_nodes.contains("n1"));
        assert!(!s.virt_controller);
        let v = s.version_info();
        assert_eq!(v["gitVersion"], "v1.27.3");
        assert_eq!(v["minor"], "27");
    }
}
