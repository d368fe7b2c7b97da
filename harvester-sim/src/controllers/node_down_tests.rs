//! The node-down controller's decisions, per release style.

use serde_json::{json, Value};

use super::*;

const NOW: i64 = 1_800_000_000;

fn node(name: &str, ready: &str, down_for: i64, taints: &[&str]) -> Value {
    let taints: Vec<Value> = taints
        .iter()
        .map(|k| json!({"key": k, "effect": "NoExecute"}))
        .collect();
    json!({
        "metadata": {"name": name, "resourceVersion": "5"},
        "spec": {"taints": taints},
        "status": {"conditions": [{"type": "Ready", "status": ready,
            "lastTransitionTime": meta::ts_rfc3339(NOW - down_for)}]},
    })
}

fn launcher(name: &str, node: &str, claim: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "d", "labels": {"kubevirt.io": "virt-launcher"}},
        "spec": {"nodeName": node, "volumes": [{"name": "disk", "persistentVolumeClaim": {"claimName": claim}}]},
    })
}

fn snap(nodes: Vec<Value>) -> Snapshot {
    Snapshot {
        nodes,
        ..Snapshot::default()
    }
}

#[test]
fn up_to_1_6_force_deletes_launchers_and_their_attachments_after_the_period() {
    let mut s = snap(vec![
        node("n1", "False", 301, &[]),
        node("n2", "True", 0, &[]),
    ]);
    s.pods = vec![
        launcher("virt-launcher-a", "n1", "disk-a"),
        launcher("virt-launcher-b", "n2", "disk-b"),
    ];
    s.pvcs = vec![
        json!({"metadata": {"name": "disk-a", "namespace": "d"}, "spec": {"volumeName": "pv-a"}}),
    ];
    s.volume_attachments = vec![
        json!({"metadata": {"name": "csi-a"}, "spec": {"nodeName": "n1", "attacher": "driver.longhorn.io", "source": {"persistentVolumeName": "pv-a"}}}),
        json!({"metadata": {"name": "csi-other"}, "spec": {"nodeName": "n2", "attacher": "driver.longhorn.io", "source": {"persistentVolumeName": "pv-a"}}}),
    ];
    let acts = decide(NodeDownStyle::ForceDeletePods, &s, NOW);
    assert_eq!(
        acts[0],
        Action::ForceDeletePod(("d".into(), "virt-launcher-a".into()))
    );
    assert_eq!(acts[1], Action::DeleteVolumeAttachment("csi-a".into()));
    assert!(
        matches!(&acts[2], Action::UpdateNode(n) if n["metadata"]["annotations"][HEARTBEAT_ANNOTATION] == json!(meta::ts_rfc3339(NOW - 360)))
    );
    assert_eq!(acts.len(), 3);

    let early = snap(vec![node("n1", "Unknown", 299, &[])]);
    assert!(decide(NodeDownStyle::ForceDeletePods, &early, NOW).is_empty());
}

#[test]
fn the_setting_value_overrides_the_default_and_can_switch_it_off() {
    let mut s = snap(vec![node("n1", "Unknown", 20, &[])]);
    s.pods = vec![launcher("virt-launcher-a", "n1", "disk-a")];
    s.policy_setting = Some(
        json!({"metadata": {"name": POLICY_SETTING}, "value": "{\"enable\":true,\"period\":10}"}),
    );
    assert!(!decide(NodeDownStyle::ForceDeletePods, &s, NOW).is_empty());
    s.policy_setting = Some(
        json!({"metadata": {"name": POLICY_SETTING}, "value": "{\"enable\":false,\"period\":10}"}),
    );
    assert!(decide(NodeDownStyle::ForceDeletePods, &s, NOW).is_empty());
    s.policy_setting = Some(json!({"metadata": {"name": POLICY_SETTING}, "value": "not json"}));
    assert!(
        decide(NodeDownStyle::ForceDeletePods, &s, NOW).is_empty(),
        "an undecodable policy does nothing"
    );
}

fn only_node(acts: Vec<Action>) -> Value {
    match acts.as_slice() {
        [Action::UpdateNode(n)] | [Action::UpdateNodeStatus(n)] => n.clone(),
        other => panic!("expected one node write, got {other:?}"),
    }
}

#[test]
fn from_1_7_taints_step_by_step_when_ready_is_unknown() {
    let style = NodeDownStyle::Taints;
    assert!(decide(style, &snap(vec![node("n1", "Unknown", 14, &[])]), NOW).is_empty());
    assert!(
        decide(style, &snap(vec![node("n1", "False", 1000, &[])]), NOW).is_empty(),
        "False is not Unknown"
    );

    let n = only_node(decide(
        style,
        &snap(vec![node("n1", "Unknown", 15, &[])]),
        NOW,
    ));
    assert!(has_taint(&n, DRAIN_TAINT) && !has_taint(&n, OUT_OF_SERVICE_TAINT));
    let n = only_node(decide(style, &snap(vec![n]), NOW));
    let c = condition(&n, DRAINED_CONDITION)
        .cloned()
        .unwrap_or_default();
    assert_eq!(c["status"], "False");
    assert!(
        decide(style, &snap(vec![n.clone()]), NOW + 179).is_empty(),
        "migration timeout not over"
    );
    let n = only_node(decide(style, &snap(vec![n]), NOW + 180));
    assert!(has_taint(&n, OUT_OF_SERVICE_TAINT));
    let n = only_node(decide(style, &snap(vec![n]), NOW + 181));
    assert_eq!(
        condition(&n, DRAINED_CONDITION).map(|c| c["status"].clone()),
        Some(json!("True"))
    );
    assert!(
        decide(style, &snap(vec![n.clone()]), NOW + 182).is_empty(),
        "settled"
    );

    // Ready again: the taints go, then the condition.
    let mut back = n;
    back["status"]["conditions"][0]["status"] = json!("True");
    let n = only_node(decide(style, &snap(vec![back]), NOW + 200));
    assert!(!has_taint(&n, DRAIN_TAINT) && !has_taint(&n, OUT_OF_SERVICE_TAINT));
    let n = only_node(decide(style, &snap(vec![n]), NOW + 201));
    assert!(condition(&n, DRAINED_CONDITION).is_none());
    assert!(decide(style, &snap(vec![n]), NOW + 202).is_empty());
}

#[test]
fn from_1_7_nothing_happens_while_an_upgrade_runs() {
    let mut s = snap(vec![node("n1", "Unknown", 1000, &[])]);
    s.upgrades =
        vec![json!({"metadata": {"name": "hvst-upgrade-1", "namespace": HARVESTER_NAMESPACE}})];
    assert!(
        decide(NodeDownStyle::Taints, &s, NOW).is_empty(),
        "no state label counts as running"
    );
    s.upgrades[0]["metadata"]["labels"] = json!({UPGRADE_STATE_LABEL: "Succeeded"});
    assert!(!decide(NodeDownStyle::Taints, &s, NOW).is_empty());
    s.upgrades[0]["metadata"]["labels"] = json!({UPGRADE_STATE_LABEL: "UpgradingNodes"});
    assert!(decide(NodeDownStyle::Taints, &s, NOW).is_empty());
    // ≤ 1.6 does not look at Upgrades.
    assert!(!decide(NodeDownStyle::ForceDeletePods, &s, NOW).is_empty());
}

#[test]
fn profiles_pick_the_style() {
    use crate::profiles::profile;
    let style = |r| profile(r).map(|p| p.node_down);
    assert_eq!(style("1.6"), Some(NodeDownStyle::ForceDeletePods));
    assert_eq!(style("1.7"), Some(NodeDownStyle::Taints));
    assert_eq!(style("1.8"), Some(NodeDownStyle::Taints));
}
