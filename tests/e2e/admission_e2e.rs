//! Admission webhooks right after a power cut, end to end: the built `vmrecover` against
//! `harvester-sim` with virt-api's or Harvester's webhooks down or denying (see
//! `harvester_sim::admission` for the apiserver's answers and the upstream files). A webhook
//! that is down is "try later": the VM fails with a reason naming the webhook, nothing of
//! it changes, a rerun finishes it. A denial is reported with the webhook's message and not
//! retried within the run.

use std::collections::BTreeMap;

use crate::e2e_support::{outcomes, Env, RUN};
use harvester_sim::WebhookState;
use serde_json::Value;

/// The VMs the power-loss plan recovers that have finalizers to clear.
const CLEARED: [(&str, &str); 3] = [
    ("default", "vm-web-01"),
    ("default", "vm-db-01"),
    ("prod", "vm-legacy-01"),
];

fn finalizers(env: &Env, kind: &str, ns: &str, name: &str) -> Option<Vec<Value>> {
    env.sim.get("kubevirt.io/v1", kind, ns, name).map(|o| {
        o["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    })
}

/// PATCH requests per path from the request log.
fn patches(env: &Env) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in env.sim.mutating_requests() {
        if r.method == "PATCH" {
            *m.entry(r.path).or_default() += 1;
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virt_api_down_fails_the_vms_then_a_rerun_finishes() {
    let env = Env::power_loss().await;
    let switched = env.sim.set_webhook("virt-api", WebhookState::Down);
    assert!(switched.is_ok(), "{switched:?}");
    let before: Vec<_> = CLEARED
        .iter()
        .map(|(ns, n)| {
            (
                finalizers(&env, "VirtualMachineInstance", ns, n),
                finalizers(&env, "VirtualMachine", ns, n),
            )
        })
        .collect();

    let run = env.run(RUN).await;
    assert_eq!(
        run.code,
        1,
        "a webhook that is down is an error: {}",
        run.all()
    );
    let report = run.json();
    let out = outcomes(&report);
    for (ns, name) in CLEARED {
        let (result, reason) = &out[&format!("{ns}/{name}")];
        assert_eq!(result, "failed", "{ns}/{name}: {}", run.all());
        let reason = reason.as_deref().unwrap_or("");
        assert!(
            reason.contains(
                "admission webhook virtualmachineinstances-mutator.kubevirt.io is unavailable"
            ) && reason.contains("connection refused")
                && reason.contains("a later pass or a rerun retries"),
            "{ns}/{name}: {reason}"
        );
        assert!(!reason.contains("kept changing"), "{reason}");
    }
    let after: Vec<_> = CLEARED
        .iter()
        .map(|(ns, n)| {
            (
                finalizers(&env, "VirtualMachineInstance", ns, n),
                finalizers(&env, "VirtualMachine", ns, n),
            )
        })
        .collect();
    assert_eq!(before, after, "no finalizer of those VMs changed");
    // One PATCH per VMI (the VMI comes first and stops the VM), no retries, no VM patch.
    let p = patches(&env);
    for (ns, name) in CLEARED {
        let vmi = format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{name}");
        let vm = format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}");
        assert_eq!(p.get(&vmi), Some(&1), "{p:#?}");
        assert_eq!(p.get(&vm), None, "{p:#?}");
    }

    // virt-api is back: a rerun finishes them.
    let _ = env.sim.set_webhook("virt-api", WebhookState::Up);
    let again = env.run(RUN).await;
    assert_ne!(again.code, 1, "{}", again.all());
    for (ns, name) in CLEARED {
        assert!(
            finalizers(&env, "VirtualMachine", ns, name).is_none()
                && finalizers(&env, "VirtualMachineInstance", ns, name).is_none(),
            "{ns}/{name} recovered on the rerun: {}",
            again.all()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denying_webhook_is_reported_with_its_message_and_not_retried() {
    let env = Env::power_loss().await;
    let message = "VM is being backed up: backup default/nightly is in progress";
    let _ = env
        .sim
        .set_webhook("validator.harvesterhci.io", WebhookState::deny(message));

    let run = env.run(RUN).await;
    assert_eq!(run.code, 1, "{}", run.all());
    let report = run.json();
    let out = outcomes(&report);
    for (ns, name) in CLEARED {
        let (result, reason) = &out[&format!("{ns}/{name}")];
        assert_eq!(result, "failed", "{ns}/{name}: {}", run.all());
        let reason = reason.as_deref().unwrap_or("");
        assert!(
            reason.contains(&format!(
                "admission webhook validator.harvesterhci.io denied the change: {message}"
            )) && reason.contains("not retried in this run"),
            "{ns}/{name}: {reason}"
        );
        // Harvester does not validate VMIs: the VMI was recovered, the VM was left.
        assert!(finalizers(&env, "VirtualMachineInstance", ns, name).is_none());
        assert!(finalizers(&env, "VirtualMachine", ns, name).is_some_and(|f| !f.is_empty()));
    }
    // Exactly one PATCH per VM: a denial is not a failed JSON-patch test to re-read and resend.
    let p = patches(&env);
    for (ns, name) in CLEARED {
        let vm = format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}");
        assert_eq!(p.get(&vm), Some(&1), "{p:#?}");
    }
    let log = env.sim.requests();
    for (ns, name) in CLEARED {
        let vm = format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}");
        let patched = log
            .iter()
            .find(|r| r.method == "PATCH" && r.path == vm)
            .map_or(u64::MAX, |r| r.seq);
        let rereads = log
            .iter()
            .filter(|r| r.method == "GET" && r.path == vm && r.seq > patched)
            .count();
        assert_eq!(rereads, 0, "{vm} re-read after the denial");
    }
}
