//! Harvester's node-down controller as its own task, over real HTTP: ≤ 1.6 force-deletes the
//! launchers of a NotReady node, ≥ 1.7 taints a node whose Ready is Unknown and untaints it
//! when it is Ready again, and nothing moves while an Upgrade runs or when it is switched off.

use std::time::Duration;

use crate::common::*;
use harvester_sim::meta;
use harvester_sim::settings::SettingsPatch;
use harvester_sim::Sim;
use serde_json::{json, Value};

fn node_status(ready: &str, secs_ago: i64) -> Value {
    let t = meta::ts_rfc3339(jiff::Timestamp::now().as_second() - secs_ago);
    json!({"conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": t}]})
}

async fn set_ready(sim: &Sim, ready: &str, secs_ago: i64) {
    let h = Http::new(sim);
    let mut n = h.get("/api/v1/nodes/node-down").await.body;
    n["status"] = node_status(ready, secs_ago);
    let r = h.put("/api/v1/nodes/node-down/status", &n).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

fn policy(value: &str) -> Value {
    json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "Setting",
           "metadata": {"name": "vm-force-reset-policy"}, "value": value})
}

async fn start(release: &str, policy_value: &str) -> Sim {
    let sim = sim_with("").await;
    sim.put(policy(policy_value)).ok();
    sim.update_settings(&SettingsPatch {
        release: Some(release.into()),
        node_down_controller: Some(true),
        node_down_interval_ms: Some(20),
        ..SettingsPatch::default()
    });
    sim
}

/// Polls until `f` holds for the node (or panics after 5 s).
async fn until_node(sim: &Sim, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..250 {
        if let Some(n) = sim.get("v1", "Node", "", "node-down") {
            if f(&n) {
                return n;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "node-down never got {what}: {:?}",
        sim.get("v1", "Node", "", "node-down")
    )
}

fn taint_keys(n: &Value) -> Vec<String> {
    n["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["key"].as_str().map(str::to_string))
        .collect()
}

fn drained(n: &Value) -> Option<String> {
    n["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Drained")
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

#[tokio::test]
async fn release_1_6_force_deletes_launchers_after_the_period() {
    let sim = start("1.6", r#"{"enable":true,"period":2}"#).await;
    sim.put(pod("virt-launcher-a", "node-down", None)).ok();
    sim.put(pod("virt-launcher-b", "node-up", None)).ok();
    set_ready(&sim, "Unknown", 0).await;
    sim.wait_node_down_looks(2).await;
    assert!(
        sim.get("v1", "Pod", "default", "virt-launcher-a").is_some(),
        "not before the period"
    );
    set_ready(&sim, "False", 3).await;
    for _ in 0..250 {
        if sim.get("v1", "Pod", "default", "virt-launcher-a").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sim.get("v1", "Pod", "default", "virt-launcher-a").is_none());
    assert!(sim.get("v1", "Pod", "default", "virt-launcher-b").is_some());
    let deletes: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.internal && r.actor.as_deref() == Some("harvester-node-down"))
        .collect();
    assert!(!deletes.is_empty(), "its writes are logged as its own");
    assert!(sim.mutating_requests().iter().all(|r| !r.internal));
    let n = sim.get("v1", "Node", "", "node-down").unwrap_or_default();
    assert!(taint_keys(&n).is_empty(), "≤ 1.6 does not taint");
}

#[tokio::test]
async fn release_1_7_taints_then_untaints() {
    let sim = start(
        "1.7",
        r#"{"enable":true,"period":1,"vmMigrationTimeout":1}"#,
    )
    .await;
    sim.put(pod("virt-launcher-a", "node-down", None)).ok();
    set_ready(&sim, "Unknown", 5).await;
    let n = until_node(&sim, "both taints and Drained True", |n| {
        drained(n).as_deref() == Some("True")
    })
    .await;
    assert_eq!(
        taint_keys(&n),
        ["kubevirt.io/drain", "node.kubernetes.io/out-of-service"]
    );
    assert!(
        sim.get("v1", "Pod", "default", "virt-launcher-a").is_some(),
        "≥ 1.7 deletes no pod itself"
    );
    set_ready(&sim, "True", 0).await;
    let n = until_node(&sim, "its taints and Drained removed", |n| {
        taint_keys(n).is_empty() && drained(n).is_none()
    })
    .await;
    assert_eq!(n["metadata"]["name"], "node-down");
}

#[tokio::test]
async fn release_1_8_stands_still_during_an_upgrade_and_when_switched_off() {
    let sim = start(
        "1.8",
        r#"{"enable":true,"period":0,"vmMigrationTimeout":0}"#,
    )
    .await;
    sim.put(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "harvester-system"}}),
    )
    .ok();
    sim.put(
        json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "Upgrade",
        "metadata": {"name": "hvst-upgrade-x", "namespace": "harvester-system",
                     "labels": {"harvesterhci.io/upgradeState": "UpgradingNodes"}}}),
    )
    .ok();
    set_ready(&sim, "Unknown", 60).await;
    sim.wait_node_down_looks(2).await;
    let n = sim.get("v1", "Node", "", "node-down").unwrap_or_default();
    assert!(taint_keys(&n).is_empty(), "nothing while an Upgrade runs");

    sim.update_settings(&SettingsPatch {
        node_down_controller: Some(false),
        ..SettingsPatch::default()
    });
    let mut up = sim
        .get(
            "harvesterhci.io/v1beta1",
            "Upgrade",
            "harvester-system",
            "hvst-upgrade-x",
        )
        .unwrap_or_default();
    up["metadata"]["labels"]["harvesterhci.io/upgradeState"] = json!("Succeeded");
    sim.put(up).ok();
    sim.wait_node_down_looks(2).await;
    let n = sim.get("v1", "Node", "", "node-down").unwrap_or_default();
    assert!(taint_keys(&n).is_empty(), "switched off");

    sim.update_settings(&SettingsPatch {
        node_down_controller: Some(true),
        ..SettingsPatch::default()
    });
    until_node(&sim, "its taints once the Upgrade succeeded", |n| {
        taint_keys(n).len() == 2
    })
    .await;
}
