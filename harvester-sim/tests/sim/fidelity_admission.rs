//! Admission webhooks as a real Harvester cluster runs them (see `harvester_sim::admission`
//! for the upstream files): a webhook whose pods are down fails the writes its rules match
//! with the apiserver's exact 500, a denying one with `admission webhook "..." denied the
//! request: ...`, and the simulated controllers are held up exactly like clients.

use crate::common::*;
use harvester_sim::WebhookState;
use serde_json::{json, Value};

const VM: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: vm-1
  namespace: default
  deletionTimestamp: "2025-01-01T00:00:00Z"
  finalizers: [kubevirt.io/virtualMachineControllerFinalize, wrangler.cattle.io/VMController.CleanupPVCAndSnapshot]
spec: {runStrategy: Halted, template: {spec: {domain: {devices: {}}}}}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: vm-1
  namespace: default
  deletionTimestamp: "2025-01-01T00:00:00Z"
  finalizers: [kubevirt.io/virtualMachineControllerFinalize]
  labels: {kubevirt.io/nodeName: node-down}
spec: {domain: {devices: {}}}
status: {phase: Failed}
"#;

/// A JSON patch removing the first finalizer, testing the exact list (as vmrecover sends it).
fn drop_first(obj: &Value) -> String {
    let fins = finalizers(obj);
    json!([
        {"op": "test", "path": "/metadata/finalizers", "value": fins},
        {"op": "replace", "path": "/metadata/finalizers", "value": fins[1..]},
    ])
    .to_string()
}

fn get(sim: &harvester_sim::Sim, kind: &str) -> Value {
    match sim.get("kubevirt.io/v1", kind, "default", "vm-1") {
        Some(v) => v,
        None => panic!("{kind} vm-1 is gone"),
    }
}

const JSON_PATCH: &str = "application/json-patch+json";

#[tokio::test]
async fn virt_api_down_fails_a_finalizer_patch_with_the_apiservers_500() {
    let sim = sim_with(VM).await;
    let h = Http::new(&sim);
    let switched = sim.set_webhook("virt-api", WebhookState::Down);
    assert!(
        switched
            .as_ref()
            .is_ok_and(|s| s.contains(&"virtualmachine-validator.kubevirt.io".to_string())),
        "{switched:?}"
    );
    let vm = get(&sim, "VirtualMachine");
    let r = h
        .patch(&vm_path("default", "vm-1"), JSON_PATCH, &drop_first(&vm))
        .await;
    assert_eq!(r.status, 500, "{}", r.text);
    let cause = "failed calling webhook \"virtualmachines-mutator.kubevirt.io\": failed to call webhook: Post \"https://virt-api.harvester-system.svc:443/virtualmachines-mutate?timeout=10s\": dial tcp 10.53.121.37:443: connect: connection refused";
    assert_eq!(
        r.body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("Internal error occurred: {cause}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": cause}]},
            "code": 500,
        })
    );
    assert_eq!(get(&sim, "VirtualMachine"), vm, "nothing changed");

    // The VMI's own mutator is the first to fail for a VMI.
    let vmi = get(&sim, "VirtualMachineInstance");
    let r = h
        .patch(&vmi_path("default", "vm-1"), JSON_PATCH, &drop_first(&vmi))
        .await;
    assert_eq!(r.status, 500);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"virtualmachineinstances-mutator.kubevirt.io\"")),
        "{}",
        r.text
    );

    // A failed JSON-patch test is found before admission: still the generic 422.
    let stale = json!([{"op": "test", "path": "/metadata/finalizers", "value": ["x"]}]).to_string();
    let r = h
        .patch(&vm_path("default", "vm-1"), JSON_PATCH, &stale)
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.body["message"],
        "the server rejected our request due to an error in our request"
    );

    // Creating a VM whose name is taken: the mutating webhooks run before storage finds
    // the name taken (create.go, then store.go Create), so 500, not 409 AlreadyExists.
    let mut again = vm.clone();
    if let Some(m) = again["metadata"].as_object_mut() {
        m.retain(|k, _| k == "name" || k == "namespace");
    }
    let r = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines",
            &again,
        )
        .await;
    assert_eq!(r.status, 500, "{}", r.text);

    // Pods, Leases and Events are none of virt-api's business.
    let p = h
        .post(
            "/api/v1/namespaces/default/pods",
            &pod("p", "node-up", None),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.text);

    // Back up: the same patch goes through.
    let _ = sim.set_webhook("virt-api", WebhookState::Up);
    let r = h
        .patch(&vm_path("default", "vm-1"), JSON_PATCH, &drop_first(&vm))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn one_validator_down_is_named_and_others_pass() {
    let sim = sim_with(VM).await;
    let h = Http::new(&sim);
    let _ = sim.set_webhook("validator.harvesterhci.io", WebhookState::Down);
    let vmi = get(&sim, "VirtualMachineInstance");
    let r = h
        .patch(&vmi_path("default", "vm-1"), JSON_PATCH, &drop_first(&vmi))
        .await;
    assert_eq!(
        r.status, 200,
        "Harvester does not validate VMIs: {}",
        r.text
    );
    let vm = get(&sim, "VirtualMachine");
    let r = h
        .patch(&vm_path("default", "vm-1"), JSON_PATCH, &drop_first(&vm))
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.body["message"],
        "Internal error occurred: failed calling webhook \"validator.harvesterhci.io\": failed to call webhook: Post \"https://harvester-webhook.harvester-system.svc:443/v1/webhook/validation?timeout=10s\": dial tcp 10.53.88.209:443: connect: connection refused"
    );
    // The VM's status subresource is in Harvester's rules too.
    let r = h
        .patch(
            &format!("{}/status", vm_path("default", "vm-1")),
            "application/merge-patch+json",
            r#"{"status":{"printableStatus":"Terminating"}}"#,
        )
        .await;
    assert_eq!(r.status, 500, "{}", r.text);
    // Cordoning a node is an UPDATE of nodes: Harvester validates it.
    let r = h
        .patch(
            "/api/v1/nodes/node-up",
            "application/merge-patch+json",
            r#"{"spec":{"unschedulable":true}}"#,
        )
        .await;
    assert_eq!(r.status, 500, "{}", r.text);
}

#[tokio::test]
async fn a_denial_carries_the_webhooks_message_and_code() {
    let sim = sim_with(VM).await;
    let h = Http::new(&sim);
    let r = h
        .send(
            "POST",
            "/_sim/webhooks",
            Some("application/json"),
            r#"{"name": "validator.harvesterhci.io", "state": {"deny": {"message": "VM vm-1 has a backup in progress"}}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let listed: Vec<&Value> = r
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["name"] == "validator.harvesterhci.io")
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"]["deny"]["code"], 422);
    let vm = get(&sim, "VirtualMachine");
    let r = h
        .patch(&vm_path("default", "vm-1"), JSON_PATCH, &drop_first(&vm))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["reason"], "Invalid");
    assert_eq!(
        r.body["message"],
        "admission webhook \"validator.harvesterhci.io\" denied the request: VM vm-1 has a backup in progress"
    );
    // A 400 denial, as Harvester's NewBadRequest answers.
    let _ = sim.set_webhook(
        "virtualmachine-validator.kubevirt.io",
        WebhookState::Deny {
            message: "no".into(),
            code: 400,
        },
    );
    let _ = sim.set_webhook("validator.harvesterhci.io", WebhookState::Up);
    let r = h
        .patch(&vm_path("default", "vm-1"), JSON_PATCH, &drop_first(&vm))
        .await;
    assert_eq!(
        (r.status, r.body["reason"].as_str()),
        (400, Some("BadRequest"))
    );

    // Unknown names are refused, and nothing changes.
    let r = h
        .send(
            "POST",
            "/_sim/webhooks",
            Some("application/json"),
            r#"{"name": "nope", "state": "down"}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = h
        .send(
            "POST",
            "/_sim/settings",
            Some("application/json"),
            r#"{"webhooks": {"nope": "down"}}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
}

#[tokio::test]
async fn virt_controller_waits_for_virt_api_like_everyone_else() {
    let sim = sim_with(VM).await;
    let _ = sim.set_webhook("virt-api", WebhookState::Down);
    sim.set_virt_controller(true);
    // It would remove the VMI's finalizer (no pod is left), but virt-api refuses the update.
    assert_eq!(
        finalizers(&get(&sim, "VirtualMachineInstance")),
        ["kubevirt.io/virtualMachineControllerFinalize"]
    );
    let refused = sim
        .requests()
        .into_iter()
        .filter(|r| r.internal && r.path.contains("virtualmachineinstances"))
        .count();
    assert_eq!(refused, 0, "refused writes are not logged as done");
    let _ = sim.set_webhook("virt-api", WebhookState::Up);
    assert!(
        sim.get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "vm-1"
        )
        .is_none(),
        "once virt-api is back the controller finishes"
    );
}

#[tokio::test]
async fn scenario_settings_switch_webhooks() {
    let sim = sim_with(&format!(
        "apiVersion: sim.vmrecover.dev/v1\nkind: SimulatorSettings\nwebhooks: {{harvester-webhook: down}}\n---\n{VM}"
    ))
    .await;
    let states: Vec<(String, Value)> = sim
        .webhooks()
        .into_iter()
        .filter(|w| w["state"] != "up")
        .map(|w| {
            (
                w["name"].as_str().unwrap_or("").to_string(),
                w["state"].clone(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("mutator.harvesterhci.io".to_string(), json!("down")),
            ("validator.harvesterhci.io".to_string(), json!("down")),
        ]
    );
}
