//! vmrecover's own NodeRestriction (issue 19), against the simulated API server enforcing
//! ValidatingAdmissionPolicies with CEL (`harvester_sim::admission::vap`):
//!
//! (a) the full `vmrecover run --yes` and `vmrecover agent`, as the ServiceAccount of
//!     `deploy/` with a token bound to the agent's pod (so it carries the node, as the
//!     kubelet's projected token does), under `deploy/rbac.yaml` and — applied with the real
//!     `kubectl apply -f deploy/admissionpolicy.yaml` — the policy, end exactly as the same
//!     runs without the policy: same exit code, outcomes, objects left, writes sent, and no
//!     write refused. Afterwards the same token is refused another node's Lease, which the
//!     run without the policy is allowed: the policy was in force, not merely present.
//! (b) a table of forbidden writes, each sent with a node-bound token of the agent, each
//!     refused with 422 and the policy's message; and the allowed neighbours of those rows,
//!     sent with the same token, pass (so a row cannot be refused for another reason).
//! (c) the params ConfigMap lists exactly the finalizers vmrecover knows
//!     (`KNOWN_FINALIZERS`, per kind).

use std::collections::BTreeSet;

use crate::admission_support::*;
use crate::e2e_support::NODE;
use harvester_sim::Sim;
use serde_json::{json, Value};
use vmrecover::recovery::{ObjectKind, KNOWN_FINALIZERS};

/// The other node's lease: the probe that tells a run under the policy from one without.
async fn other_nodes_lease(sim: &Sim) -> Result<Value, (u16, String, String)> {
    let (c, _dir) = client(sim, &token(sim, Some(AGENT_POD))).await;
    send(
        &c,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/harvester-system/leases",
        "application/json",
        Some(
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": format!("vmrecover-{OTHER_NODE}")},
            "spec": {"holderIdentity": "mallory"}}),
        ),
    )
    .await
}

fn assert_same(with: &Ran, without: &Ran) {
    assert_eq!(with.refused(), Vec::<String>::new(), "{}", with.stderr);
    assert_eq!(
        with.code, without.code,
        "{}\n---\n{}",
        with.stderr, without.stderr
    );
    // What became of the VMs afterwards is followed in the background by the agent and may
    // or may not be in the report when the test stops it: the outcomes of the run compare.
    let steps_only = |r: &Value| {
        let mut o = r["outcomes"].clone();
        for each in o.as_array_mut().into_iter().flatten() {
            if let Some(m) = each.as_object_mut() {
                m.remove("follow");
            }
        }
        o
    };
    assert_eq!(steps_only(&with.report), steps_only(&without.report));
    assert!(with.report["outcomes"].is_array(), "{}", with.stderr);
    assert_eq!(with.vmis_left, without.vmis_left);
    assert_eq!(with.vms_left, without.vms_left);
    assert_eq!(with.events, without.events);
    assert_eq!(with.writes(), without.writes());
    assert!(
        !with.vms_left.contains("default/vm-web-01"),
        "{}",
        with.stderr
    );
    // It removed finalizers, deleted a launcher pod, took its Lease and sent Events.
    let writes = with.writes();
    for (method, part) in [
        ("PATCH", "/virtualmachineinstances/"),
        ("PATCH", "/virtualmachines/"),
        ("DELETE", "/pods/"),
        ("POST", "/leases"),
        ("POST", "/events"),
    ] {
        assert!(
            writes
                .iter()
                .any(|(m, p, _)| m == method && p.contains(part)),
            "no {method} {part} in {writes:?}"
        );
    }
}

async fn assert_policy_in_force(with: &Sim, without: &Sim) {
    let Err((code, _, message)) = other_nodes_lease(with).await else {
        panic!("the policy lets the agent take another node's Lease")
    };
    assert_eq!(code, 422, "{message}");
    assert!(message.contains(POLICY), "{message}");
    assert!(
        other_nodes_lease(without).await.is_ok(),
        "RBAC alone allows it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_run_under_the_policy_matches_the_run_without_it() {
    let (with, without) = tokio::join!(cluster(true, true), cluster(true, false));
    let (a, b) = tokio::join!(run_as_agent(&with, false), run_as_agent(&without, false));
    assert_eq!(a.code, 3, "vm-custom-01 stays blocked: {}", a.stderr);
    assert_same(&a, &b);
    assert_policy_in_force(&with, &without).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_under_the_policy_matches_the_agent_without_it() {
    let (with, without) = tokio::join!(cluster(true, true), cluster(true, false));
    let (a, b) = tokio::join!(run_as_agent(&with, true), run_as_agent(&without, true));
    assert_eq!(
        a.code, 0,
        "the agent stops cleanly on SIGTERM: {}",
        a.stderr
    );
    assert_same(&a, &b);
    assert_policy_in_force(&with, &without).await;
}

/// A deleting VMI of `node` with `finalizers`.
fn vmi(name: &str, node: &str, deleting: bool, finalizers: &[&str]) -> Value {
    let mut v = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "default", "finalizers": finalizers,
                     "labels": {"kubevirt.io/nodeName": node}},
        "spec": {"domain": {"devices": {}}},
        "status": {"phase": "Failed", "nodeName": node},
    });
    if deleting {
        v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    v
}

fn pod(name: &str, node: &str, launcher: bool) -> Value {
    let labels = if launcher {
        json!({"kubevirt.io": "virt-launcher"})
    } else {
        json!({"app": "web"})
    };
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Failed"}})
}

/// A hotplug attachment pod (kubevirt `RenderHotplugAttachmentPodTemplate`: label
/// kubevirt.io=hotplug-disk, controlled by its launcher pod).
fn hotplug_pod(name: &str, node: &str) -> Value {
    let mut p = pod(name, node, false);
    p["metadata"]["labels"] = json!({"kubevirt.io": "hotplug-disk"});
    p["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Pod",
        "name": "virt-launcher-own-abcde", "uid": "uid-launcher-own", "controller": true}]);
    p
}

const FOREGROUND: &str = "kubevirt.io/foregroundDeleteVirtualMachine";
const CONTROLLER: &str = "kubevirt.io/virtualMachineControllerFinalize";

/// A JSON patch that tests the finalizers and replaces them.
fn set_finalizers(old: &[&str], new: &[&str]) -> Value {
    json!([{"op": "test", "path": "/metadata/finalizers", "value": old},
           {"op": "replace", "path": "/metadata/finalizers", "value": new}])
}

struct Row {
    what: &'static str,
    method: &'static str,
    path: String,
    body: Option<Value>,
    /// Part of the policy's message expected.
    message: String,
}

fn vmi_path(name: &str) -> String {
    format!("/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances/{name}")
}

const JSON_PATCH: &str = "application/json-patch+json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_writes_are_refused_with_the_policys_message() {
    // No RBAC here: the policy alone is what refuses.
    let sim = cluster(false, true).await;
    for obj in [
        vmi("own-a", NODE, true, &[FOREGROUND, CONTROLLER]),
        vmi("own-b", NODE, true, &[FOREGROUND, "example.com/unknown"]),
        vmi("own-live", NODE, false, &[FOREGROUND]),
        vmi("other", OTHER_NODE, true, &[FOREGROUND]),
        pod("virt-launcher-own-abcde", NODE, true),
        pod("virt-launcher-other-abcde", OTHER_NODE, true),
        pod("web-own", NODE, false),
        hotplug_pod("hp-volume-own", NODE),
        hotplug_pod("hp-volume-other", OTHER_NODE),
        {
            // Labelled as a hotplug pod, but controlled by no launcher pod.
            let mut p = hotplug_pod("hp-volume-unowned", NODE);
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
                "kind": "ReplicaSet", "name": "web-1", "uid": "uid-rs", "controller": true}]);
            p
        },
    ] {
        sim.put(obj).expect("put");
    }
    for (name, finalizers) in [
        ("vm-elsewhere", vec![CONTROLLER]),
        ("vm-unknown", vec![CONTROLLER, "example.com/unknown"]),
    ] {
        sim.put(
            json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": "default", "finalizers": finalizers,
                         "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}}}}}}),
        )
        .expect("put vm");
    }
    // A VMI whose label names this node but whose status names another.
    let mut split = vmi("split", NODE, true, &[FOREGROUND]);
    split["status"]["nodeName"] = json!(OTHER_NODE);
    sim.put(split).expect("put");
    let (c, _d) = client(&sim, &token(&sim, Some(AGENT_POD))).await;
    let event = |controller: &str| {
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"generateName": "own-a-"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": controller,
            "reportingInstance": format!("vmrecover-{NODE}"), "action": "Recover",
            "reason": "FinalizersRemoved", "type": "Normal",
            "regarding": {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                          "namespace": "default", "name": "own-a"}})
    };
    let cm = |name: String| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": SA_NS}, "data": {"k": "v"}})
    };
    let own_node = format!("vmrecover on node {NODE} may only");
    let rows = vec![
        Row {
            what: "another node's VMI",
            method: "PATCH",
            path: vmi_path("other"),
            body: Some(set_finalizers(&[FOREGROUND], &[])),
            message: format!("{own_node} change the VirtualMachineInstances of its own node"),
        },
        Row {
            what: "a VMI whose status names another node",
            method: "PATCH",
            path: vmi_path("split"),
            body: Some(set_finalizers(&[FOREGROUND], &[])),
            message: format!("{own_node} change the VirtualMachineInstances of its own node"),
        },
        Row {
            what: "an unknown finalizer",
            method: "PATCH",
            path: vmi_path("own-b"),
            body: Some(set_finalizers(&[FOREGROUND, "example.com/unknown"], &[])),
            message: "the operator named (alsoFinalizers), not: example.com/unknown".into(),
        },
        Row {
            what: "a VM's unknown finalizer",
            method: "PATCH",
            path: "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/vm-unknown".into(),
            body: Some(set_finalizers(&[CONTROLLER, "example.com/unknown"], &[CONTROLLER])),
            message: "(alsoFinalizers), not: example.com/unknown".into(),
        },
        Row {
            what: "a changed label",
            method: "PATCH",
            path: vmi_path("own-a"),
            body: Some(json!([{"op": "add", "path": "/metadata/labels/x", "value": "y"}])),
            message: "may only change metadata.finalizers".into(),
        },
        Row {
            what: "a changed spec",
            method: "PATCH",
            path: vmi_path("own-a"),
            body: Some(json!([{"op": "add", "path": "/spec/domain/devices/autoattachGraphicsDevice", "value": false}])),
            message: "may only change metadata.finalizers".into(),
        },
        Row {
            what: "a VMI that is not being deleted",
            method: "PATCH",
            path: vmi_path("own-live"),
            body: Some(set_finalizers(&[FOREGROUND], &[])),
            message: "that is being deleted".into(),
        },
        Row {
            // (On a deleting object the apiserver's own validation refuses it first.)
            what: "an added finalizer",
            method: "PATCH",
            path: vmi_path("own-live"),
            body: Some(set_finalizers(&[FOREGROUND], &[FOREGROUND, "x.io/y"])),
            message: "may only remove finalizers, never add one".into(),
        },
        Row {
            what: "a VMI delete",
            method: "DELETE",
            path: vmi_path("own-a"),
            body: None,
            message: "vmrecover may not DELETE virtualmachineinstances".into(),
        },
        Row {
            what: "another node's launcher pod",
            method: "DELETE",
            path: "/api/v1/namespaces/default/pods/virt-launcher-other-abcde".into(),
            body: None,
            message: format!("{own_node} delete pods of its own node"),
        },
        Row {
            what: "a pod that is no virt-launcher",
            method: "DELETE",
            path: "/api/v1/namespaces/default/pods/web-own".into(),
            body: None,
            message: "may only delete virt-launcher pods and the hotplug attachment pods".into(),
        },
        Row {
            what: "a hotplug-labelled pod no launcher pod controls",
            method: "DELETE",
            path: "/api/v1/namespaces/default/pods/hp-volume-unowned".into(),
            body: None,
            message: "may only delete hotplug attachment pods controlled by a virt-launcher pod"
                .into(),
        },
        Row {
            what: "another node's hotplug attachment pod",
            method: "DELETE",
            path: "/api/v1/namespaces/default/pods/hp-volume-other".into(),
            body: None,
            message: format!("{own_node} delete pods of its own node"),
        },
        Row {
            what: "an eviction",
            method: "POST",
            path: "/api/v1/namespaces/default/pods/virt-launcher-own-abcde/eviction".into(),
            body: Some(json!({"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": "virt-launcher-own-abcde", "namespace": "default"}})),
            message: "vmrecover may not CREATE pods/eviction".into(),
        },
        Row {
            what: "another node's Lease",
            method: "POST",
            path: "/apis/coordination.k8s.io/v1/namespaces/harvester-system/leases".into(),
            body: Some(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": format!("vmrecover-{OTHER_NODE}")}, "spec": {}})),
            message: format!("{own_node} write its own Lease harvester-system/vmrecover-{NODE}"),
        },
        Row {
            what: "an Event of another controller",
            method: "POST",
            path: "/apis/events.k8s.io/v1/namespaces/default/events".into(),
            body: Some(event("virt-controller")),
            message: "may only create Events with reportingController vmrecover".into(),
        },
        Row {
            what: "another node's summary ConfigMap",
            method: "POST",
            path: "/api/v1/namespaces/harvester-system/configmaps".into(),
            body: Some(cm(format!("vmrecover-summary-{OTHER_NODE}"))),
            message: format!("{own_node} write its own summary ConfigMap harvester-system/vmrecover-summary-{NODE}"),
        },
        Row {
            what: "the policy's own params",
            method: "PUT",
            path: "/api/v1/namespaces/harvester-system/configmaps/vmrecover-admission-params".into(),
            body: Some(cm("vmrecover-admission-params".into())),
            message: format!("{own_node} write its own summary ConfigMap"),
        },
        Row {
            what: "a ServiceAccount",
            method: "POST",
            path: "/api/v1/namespaces/harvester-system/serviceaccounts".into(),
            body: Some(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"}})),
            message: "vmrecover may not CREATE serviceaccounts".into(),
        },
    ];
    let before = crate::e2e_support::end_state(&sim);
    let mut failures = Vec::new();
    for row in &rows {
        let ct = if row.method == "PATCH" {
            JSON_PATCH
        } else {
            "application/json"
        };
        match send(&c, row.method, &row.path, ct, row.body.clone()).await {
            Ok(v) => failures.push(format!("{}: allowed: {v}", row.what)),
            Err((code, reason, message)) => {
                let prefix = format!(
                    "is forbidden: ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: "
                );
                if code != 422
                    || reason != "Invalid"
                    || !message.contains(&prefix)
                    || !message.contains(&row.message)
                {
                    failures.push(format!("{}: {code} {reason} {message}", row.what));
                }
            }
        }
    }
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(
        crate::e2e_support::end_state(&sim),
        before,
        "nothing changed"
    );

    // A token minted without a pod names no node: even a write the agent may make is refused.
    let (unbound, _d2) = client(&sim, &token(&sim, None)).await;
    let Err((code, _, message)) = send(
        &unbound,
        "PATCH",
        &vmi_path("own-a"),
        JSON_PATCH,
        Some(set_finalizers(&[FOREGROUND, CONTROLLER], &[CONTROLLER])),
    )
    .await
    else {
        panic!("a token without a node passed")
    };
    assert_eq!(code, 422);
    assert_eq!(
        message,
        format!(
            "virtualmachineinstances.kubevirt.io \"own-a\" is forbidden: ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: vmrecover's requests must carry the node of its pod (a pod-bound ServiceAccount token with authentication.kubernetes.io/node-name): this one names no node"
        )
    );

    // The allowed neighbours of the rows, with the node-bound token: they pass.
    let allowed: Vec<(&str, String, Option<Value>)> = vec![
        (
            "PATCH",
            vmi_path("own-a"),
            Some(set_finalizers(&[FOREGROUND, CONTROLLER], &[CONTROLLER])),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/pods/virt-launcher-own-abcde".into(),
            None,
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/pods/hp-volume-own".into(),
            None,
        ),
        // A VM names no node: its known finalizers go whichever node asks (cluster-wide, as
        // docs/safety.md says).
        (
            "PATCH",
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/vm-elsewhere".into(),
            Some(set_finalizers(&[CONTROLLER], &[])),
        ),
        (
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/harvester-system/leases".into(),
            Some(
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": format!("vmrecover-{NODE}")}, "spec": {}}),
            ),
        ),
        (
            "POST",
            "/apis/events.k8s.io/v1/namespaces/default/events".into(),
            Some(event("vmrecover")),
        ),
        (
            "POST",
            "/api/v1/namespaces/harvester-system/configmaps".into(),
            Some(cm(format!("vmrecover-summary-{NODE}"))),
        ),
    ];
    for (method, path, body) in allowed {
        let ct = if method == "PATCH" {
            JSON_PATCH
        } else {
            "application/json"
        };
        if let Err(e) = send(&c, method, &path, ct, body).await {
            panic!("{method} {path} refused: {e:?}");
        }
    }
    let vmi = sim
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "own-a",
        )
        .expect("own-a");
    assert_eq!(vmi["metadata"]["finalizers"], json!([CONTROLLER]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_params_fail_closed() {
    let sim = cluster(false, true).await;
    assert!(sim.remove("v1", "ConfigMap", SA_NS, "vmrecover-admission-params"));
    let (c, _d) = client(&sim, &token(&sim, Some(AGENT_POD))).await;
    let Err((code, _, message)) = send(
        &c,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/harvester-system/leases",
        "application/json",
        Some(
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": format!("vmrecover-{NODE}")}, "spec": {}}),
        ),
    )
    .await
    else {
        panic!("allowed without params")
    };
    assert_eq!(code, 422);
    assert!(
        message.ends_with("denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"),
        "{message}"
    );
}

#[test]
fn the_params_list_exactly_the_known_finalizers() {
    let text = std::fs::read_to_string(policy_file()).expect("deploy/admissionpolicy.yaml");
    let listed = |key: &str| -> BTreeSet<String> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in the params"));
        let v = line
            .split_once(':')
            .map(|(_, v)| v.trim().trim_matches('"'))
            .unwrap_or("");
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    let known = |kind: ObjectKind| -> BTreeSet<String> {
        KNOWN_FINALIZERS
            .iter()
            .filter(|k| k.on.contains(&kind))
            .map(|k| k.name.to_string())
            .collect()
    };
    assert_eq!(listed("vmiFinalizers"), known(ObjectKind::Vmi));
    assert_eq!(listed("vmFinalizers"), known(ObjectKind::Vm));
}

/// Issue 23: under RBAC and the policy, a hotplug attachment pod whose launcher pod is
/// already gone is freed by the run (the policy sees a hotplug-disk pod on the node
/// controlled by a virt-launcher pod; that it is vm-db-01's is the planner's proof from the
/// VMI's `status.activePods`), and nothing the run sends is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hotplug_pod_whose_launcher_is_gone_is_freed_under_the_policy() {
    const LAUNCHER_DB: &str = "virt-launcher-vm-db-01-xxxxx";
    let sim = cluster(true, true).await;
    let launcher_uid = sim
        .get("v1", "Pod", "default", LAUNCHER_DB)
        .and_then(|p| p["metadata"]["uid"].as_str().map(String::from))
        .expect("vm-db-01's launcher pod");
    assert!(sim.remove("v1", "Pod", "default", LAUNCHER_DB));
    let mut hp = hotplug_pod("hp-volume-db01", NODE);
    hp["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Pod",
        "name": LAUNCHER_DB, "uid": launcher_uid, "controller": true,
        "blockOwnerDeletion": true}]);
    sim.put(hp).expect("hotplug pod");

    let ran = run_as_agent(&sim, false).await;
    assert!(
        ran.refused().is_empty(),
        "{:?}\n{}",
        ran.refused(),
        ran.stderr
    );
    assert!(
        ran.writes().contains(&(
            "DELETE".to_string(),
            "/api/v1/namespaces/default/pods/hp-volume-db01".to_string(),
            200
        )),
        "{:#?}\n{}",
        ran.writes(),
        ran.stderr
    );
    assert!(sim.get("v1", "Pod", "default", "hp-volume-db01").is_none());
    assert!(
        !ran.vmis_left.contains("default/vm-db-01"),
        "{:?}",
        ran.vmis_left
    );
}
