//! Pod graceful deletion on up and down nodes, garbage collection, and the simulated
//! virt-controller, over real HTTP.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn pod_on_down_node_stays_terminating_until_grace_zero() {
    let sim = sim_with("").await;
    sim.put(pod("down", "node-down", None)).ok();
    sim.put(pod("up", "node-up", None)).ok();
    let h = Http::new(&sim);
    let d = h.delete(&pod_path("default", "down"), None).await;
    assert_eq!(d.status, 200);
    assert_eq!(
        d.body["metadata"]["deletionGracePeriodSeconds"], 30,
        "the pod's own grace period"
    );
    let still = h.get(&pod_path("default", "down")).await;
    assert_eq!(
        still.status, 200,
        "the kubelet of a down node never confirms"
    );
    assert!(still.body["metadata"]["deletionTimestamp"].is_string());
    let u = h.delete(&pod_path("default", "up"), None).await;
    assert_eq!(u.status, 200);
    assert_eq!(u.body["kind"], "Pod", "pods answer with the object");
    assert_eq!(
        h.get(&pod_path("default", "up")).await.status,
        404,
        "an up node's kubelet removes it"
    );
    let force = h
        .delete(
            &format!("{}?gracePeriodSeconds=0", pod_path("default", "down")),
            None,
        )
        .await;
    assert_eq!(force.status, 200);
    assert_eq!(h.get(&pod_path("default", "down")).await.status, 404);
    // The kubelet's write is logged as internal, not as a client request.
    let internal: Vec<_> = sim.requests().into_iter().filter(|r| r.internal).collect();
    assert!(internal
        .iter()
        .any(|r| r.actor.as_deref() == Some("kubelet")));
}

#[tokio::test]
async fn pod_grace_zero_in_body_and_node_coming_back() {
    let sim = sim_with("").await;
    sim.put(pod("a", "node-down", None)).ok();
    sim.put(pod("b", "node-down", None)).ok();
    let h = Http::new(&sim);
    h.delete(&pod_path("default", "a"), None).await;
    h.delete(&pod_path("default", "b"), None).await;
    let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0});
    h.delete(&pod_path("default", "a"), Some(&body)).await;
    assert_eq!(h.get(&pod_path("default", "a")).await.status, 404);
    assert_eq!(h.get(&pod_path("default", "b")).await.status, 200);
    sim.set_node_down("node-down", false);
    assert_eq!(
        h.get(&pod_path("default", "b")).await.status,
        404,
        "the kubelet back up confirms"
    );
}

#[tokio::test]
async fn garbage_collector_deletes_dependents() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let c = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances",
            &vmi("owner", "n"),
        )
        .await;
    let uid = c.body["metadata"]["uid"].as_str().unwrap_or("").to_string();
    sim.put(pod("dep-up", "node-up", Some(("owner", &uid))))
        .ok();
    sim.put(pod("dep-down", "node-down", Some(("owner", &uid))))
        .ok();
    let mut shared = pod("shared", "node-up", Some(("owner", &uid)));
    let other = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances",
            &vmi("other", "n"),
        )
        .await;
    if let Some(refs) = shared["metadata"]["ownerReferences"].as_array_mut() {
        refs.push(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": "other", "uid": other.body["metadata"]["uid"]}));
    }
    sim.put(shared).ok();
    h.delete(&vmi_path("default", "owner"), None).await;
    assert_eq!(h.get(&pod_path("default", "dep-up")).await.status, 404);
    let down = h.get(&pod_path("default", "dep-down")).await;
    assert!(
        down.body["metadata"]["deletionTimestamp"].is_string(),
        "GC deletes gracefully: Terminating on the down node"
    );
    let kept = h.get(&pod_path("default", "shared")).await;
    assert_eq!(kept.status, 200, "another owner is alive");
    assert_eq!(
        kept.body["metadata"]["ownerReferences"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert!(sim
        .requests()
        .iter()
        .any(|r| r.actor.as_deref() == Some("garbage-collector")));
}

#[tokio::test]
async fn orphan_and_foreground_propagation() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let coll = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
    let o1 = h.post(coll, &vmi("o1", "n")).await;
    let o2 = h.post(coll, &vmi("o2", "n")).await;
    let uid1 = o1.body["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let uid2 = o2.body["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    sim.put(pod("p1", "node-up", Some(("o1", &uid1)))).ok();
    sim.put(pod("p2", "node-up", Some(("o2", &uid2)))).ok();
    h.delete(
        &format!("{}?propagationPolicy=Orphan", vmi_path("default", "o1")),
        None,
    )
    .await;
    assert_eq!(h.get(&vmi_path("default", "o1")).await.status, 404);
    let orphan = h.get(&pod_path("default", "p1")).await;
    assert_eq!(orphan.status, 200);
    assert!(orphan.body["metadata"].get("ownerReferences").is_none());
    let fg = json!({"propagationPolicy": "Foreground"});
    h.delete(&vmi_path("default", "o2"), Some(&fg)).await;
    assert_eq!(h.get(&pod_path("default", "p2")).await.status, 404);
    assert_eq!(
        h.get(&vmi_path("default", "o2")).await.status,
        404,
        "foregroundDeletion removed once dependents are gone"
    );
}

const STUCK: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: vm1
  namespace: default
  uid: vm-uid-1
  deletionTimestamp: "2025-06-02T08:31:40Z"
  finalizers: [kubevirt.io/virtualMachineControllerFinalize, wrangler.cattle.io/VMController.CleanupPVCAndSnapshot]
spec: {runStrategy: Always}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: vm1
  namespace: default
  uid: vmi-uid-1
  deletionTimestamp: "2025-06-02T08:31:40Z"
  finalizers: [kubevirt.io/virtualMachineControllerFinalize, kubevirt.io/foregroundDeleteVirtualMachine, backup.example.com/keep]
  ownerReferences: [{apiVersion: kubevirt.io/v1, kind: VirtualMachine, name: vm1, uid: vm-uid-1, controller: true}]
status: {phase: Running, nodeName: node-down}
---
apiVersion: v1
kind: Pod
metadata:
  name: virt-launcher-vm1-abcde
  namespace: default
  labels: {kubevirt.io: virt-launcher, kubevirt.io/created-by: vmi-uid-1}
  ownerReferences: [{apiVersion: kubevirt.io/v1, kind: VirtualMachineInstance, name: vm1, uid: vmi-uid-1, controller: true}]
spec: {nodeName: node-down, terminationGracePeriodSeconds: 135, containers: [{name: compute, image: x}]}
status: {phase: Running}
"#;

#[tokio::test]
async fn virt_controller_off_changes_nothing_on_changes_only_its_finalizers() {
    let sim = sim_with(STUCK).await;
    let h = Http::new(&sim);
    let vmi0 = h.get(&vmi_path("default", "vm1")).await;
    assert_eq!(
        finalizers(&vmi0.body).len(),
        3,
        "controller off: nothing moves"
    );
    sim.set_virt_controller(true);
    let pod = h.get(&pod_path("default", "virt-launcher-vm1-abcde")).await;
    assert!(
        pod.body["metadata"]["deletionTimestamp"].is_string(),
        "controller deleted the launcher pod"
    );
    let vmi1 = h.get(&vmi_path("default", "vm1")).await;
    assert_eq!(
        finalizers(&vmi1.body).len(),
        3,
        "a Terminating pod blocks the controller"
    );
    h.delete(
        &format!(
            "{}?gracePeriodSeconds=0",
            pod_path("default", "virt-launcher-vm1-abcde")
        ),
        None,
    )
    .await;
    let vmi2 = h.get(&vmi_path("default", "vm1")).await;
    assert_eq!(
        finalizers(&vmi2.body),
        ["backup.example.com/keep"],
        "never any other finalizer"
    );
    // The unknown finalizer goes by hand; then the VMI is gone and the VM loses the KubeVirt finalizer.
    h.patch(
        &vmi_path("default", "vm1"),
        "application/json-patch+json",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    )
    .await;
    assert_eq!(h.get(&vmi_path("default", "vm1")).await.status, 404);
    let vm = h.get(&vm_path("default", "vm1")).await;
    assert_eq!(
        finalizers(&vm.body),
        ["wrangler.cattle.io/VMController.CleanupPVCAndSnapshot"]
    );
    let internal: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.actor.as_deref() == Some("virt-controller"))
        .collect();
    assert!(internal.len() >= 3 && internal.iter().all(|r| r.internal && !r.is_mutating()));
    assert!(sim.mutating_requests().iter().all(|r| !r.internal));
}

#[tokio::test]
async fn virt_controller_deletes_the_vmi_of_a_deleting_vm() {
    let extra = STUCK.replace(
        "  deletionTimestamp: \"2025-06-02T08:31:40Z\"\n  finalizers: [kubevirt.io/virtualMachineControllerFinalize, kubevirt.io/foregroundDeleteVirtualMachine, backup.example.com/keep]",
        "  finalizers: [kubevirt.io/virtualMachineControllerFinalize, foregroundDeleteVirtualMachine]",
    );
    let sim = sim_with(&extra).await;
    sim.set_node_down("node-down", false);
    sim.set_virt_controller(true);
    let h = Http::new(&sim);
    assert_eq!(
        h.get(&vmi_path("default", "vm1")).await.status,
        404,
        "VMI deleted, pod confirmed, finalizers cleared"
    );
    assert_eq!(
        h.get(&pod_path("default", "virt-launcher-vm1-abcde"))
            .await
            .status,
        404
    );
    let vm = h.get(&vm_path("default", "vm1")).await;
    assert_eq!(
        finalizers(&vm.body),
        ["wrangler.cattle.io/VMController.CleanupPVCAndSnapshot"]
    );
}
