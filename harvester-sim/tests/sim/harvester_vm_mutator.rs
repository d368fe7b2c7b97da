//! Harvester's VM mutator on a finalizer patch of a deleting VM, per release (harvester
//! `pkg/webhook/resources/virtualmachine/mutator.go`: v1.4.0 acts on it, v1.4.3 and later
//! return early, commit 8f106a4f6): a Multus network whose NetworkAttachmentDefinition is gone
//! is a 500 denial that failurePolicy Ignore does not cover; a missing grace period is added.

use crate::common::{finalizers, vm_path, Http, BASE};
use harvester_sim::{Sim, SimConfig};
use serde_json::{json, Value};

const CLEANUP: &str = "wrangler.cattle.io/VMController.CleanupPVCAndSnapshot";

/// A deleting VM on the Multus network `network`, with the given template spec extras.
fn vm(name: &str, network: &str, extra: Value) -> String {
    let mut spec = json!({"domain": {"devices": {}}, "affinity": {},
        "networks": [{"name": "default", "multus": {"networkName": network}}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                s.remove(k);
            } else {
                s.insert(k.clone(), v.clone());
            }
        }
    }
    let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "default",
            "uid": format!("uid-{name}"),
            "deletionTimestamp": "2025-06-02T08:31:40Z", "deletionGracePeriodSeconds": 0,
            "finalizers": ["kubevirt.io/virtualMachineControllerFinalize", CLEANUP]},
        "spec": {"runStrategy": "RerunOnFailure", "template": {"spec": spec}}});
    format!("---\n{}", serde_json::to_string(&vm).unwrap_or_default())
}

const GRACE_SETTING: &str = r#"
---
apiVersion: harvesterhci.io/v1beta1
kind: Setting
metadata: {name: default-vm-termination-grace-period-seconds}
default: "120"
value: ""
"#;

async fn start(release: &str, extra: &str) -> Sim {
    let cfg = SimConfig::default()
        .plain_http()
        .scenario_text(format!("{BASE}{GRACE_SETTING}{extra}"))
        .release(release);
    match Sim::start(cfg).await {
        Ok(s) => s,
        Err(e) => panic!("simulator did not start: {e:#}"),
    }
}

/// vmrecover's finalizer patch: keep only `CLEANUP`.
async fn drop_controller_finalizer(sim: &Sim, name: &str) -> crate::common::Resp {
    Http::new(sim)
        .patch(
            &vm_path("default", name),
            "application/json-patch+json",
            &json!([{"op": "test", "path": "/metadata/uid", "value": format!("uid-{name}")},
                {"op": "replace", "path": "/metadata/finalizers", "value": [CLEANUP]}])
            .to_string(),
        )
        .await
}

fn stored(sim: &Sim, name: &str) -> Value {
    sim.get("kubevirt.io/v1", "VirtualMachine", "default", name)
        .unwrap_or_else(|| panic!("{name} is gone"))
}

#[tokio::test]
async fn a_gone_network_attachment_denies_the_finalizer_patch_on_1_4_0_only() {
    let gone = vm(
        "vm-gone-net",
        "default/vlan99",
        json!({"terminationGracePeriodSeconds": 120}),
    );
    let sim = start("1.4", &gone).await;
    let r = drop_controller_finalizer(&sim, "vm-gone-net").await;
    assert_eq!(
        (r.status, r.body["reason"].as_str()),
        (500, Some("InternalError")),
        "{}",
        r.text
    );
    assert_eq!(
        r.body["message"],
        "admission webhook \"mutator.harvesterhci.io\" denied the request: network-attachment-definitions.k8s.cni.cncf.io \"vlan99\" not found"
    );
    assert_eq!(
        finalizers(&stored(&sim, "vm-gone-net")).len(),
        2,
        "nothing changed"
    );

    // Its pods down instead: failurePolicy Ignore, the patch goes through unchanged.
    let down = harvester_sim::admission::WebhookState::Down;
    sim.set_webhook("mutator.harvesterhci.io", down)
        .unwrap_or_else(|e| panic!("{e}"));
    let r = drop_controller_finalizer(&sim, "vm-gone-net").await;
    assert_eq!(r.status, 200, "{}", r.text);
    drop(sim);

    for release in ["1.4.3", "1.8"] {
        let sim = start(release, &gone).await;
        let r = drop_controller_finalizer(&sim, "vm-gone-net").await;
        assert_eq!(r.status, 200, "{release}: {}", r.text);
        let vm = stored(&sim, "vm-gone-net");
        assert!(finalizers(&vm).contains(&CLEANUP.to_string()), "{release}");
        assert!(
            !finalizers(&vm).contains(&"kubevirt.io/virtualMachineControllerFinalize".into()),
            "{release}"
        );
    }
}

#[tokio::test]
async fn on_1_4_0_the_finalizer_patch_also_sets_grace_and_affinity() {
    let nad = r#"
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: vlan10
  namespace: default
  labels: {network.harvesterhci.io/clusternetwork: mgmt}
spec: {config: '{}'}
"#;
    let old = vm(
        "vm-old",
        "vlan10",
        json!({"terminationGracePeriodSeconds": null, "affinity": null}),
    );
    let sim = start("1.4", &format!("{nad}{old}")).await;
    let before = stored(&sim, "vm-old");
    let r = drop_controller_finalizer(&sim, "vm-old").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let after = stored(&sim, "vm-old");
    let spec = &after["spec"]["template"]["spec"];
    assert_eq!(spec["terminationGracePeriodSeconds"], 120);
    assert_eq!(
        spec["affinity"],
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "network.harvesterhci.io/mgmt",
                "operator": "In", "values": ["true"]}]}]}}})
    );
    assert_eq!(
        after["metadata"]["generation"].as_i64().unwrap_or(0),
        before["metadata"]["generation"].as_i64().unwrap_or(0) + 1,
        "a spec change bumps the generation"
    );
    drop(sim);

    // From v1.4.3 the same patch changes only the finalizers.
    let sim = start("1.4.3", &format!("{nad}{old}")).await;
    let before = stored(&sim, "vm-old");
    let r = drop_controller_finalizer(&sim, "vm-old").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(stored(&sim, "vm-old")["spec"], before["spec"]);
}
