//! The simulated controllers in their own tasks (`controllerDelayMs`): a request is answered
//! before any controller reacts, the controllers then finish what real ones would, and
//! `/_sim/settled` (or `Sim::wait_controllers_settled`) tells when they are done.

use std::time::Duration;

use crate::common::*;

const STUCK: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: vm1
  namespace: default
  uid: vm-uid-1
  deletionTimestamp: "2025-06-02T08:31:40Z"
  annotations: {harvesterhci.io/removedPersistentVolumeClaims: vm1-disk}
  finalizers: [kubevirt.io/virtualMachineControllerFinalize, wrangler.cattle.io/VMController.CleanupPVCAndSnapshot]
spec: {runStrategy: RerunOnFailure}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: vm1
  namespace: default
  uid: vmi-uid-1
  deletionTimestamp: "2025-06-02T08:31:40Z"
  finalizers: [kubevirt.io/virtualMachineControllerFinalize, kubevirt.io/foregroundDeleteVirtualMachine]
  labels: {kubevirt.io/nodeName: node-down}
  ownerReferences: [{apiVersion: kubevirt.io/v1, kind: VirtualMachine, name: vm1, uid: vm-uid-1, controller: true}]
status: {phase: Running, nodeName: node-down}
---
apiVersion: v1
kind: Pod
metadata:
  name: virt-launcher-vm1-abcde
  namespace: default
  deletionTimestamp: "2025-06-02T08:31:41Z"
  deletionGracePeriodSeconds: 135
  labels: {kubevirt.io: virt-launcher, kubevirt.io/created-by: vmi-uid-1}
  ownerReferences: [{apiVersion: kubevirt.io/v1, kind: VirtualMachineInstance, name: vm1, uid: vmi-uid-1, controller: true}]
spec: {nodeName: node-down, terminationGracePeriodSeconds: 135, containers: [{name: compute, image: x}]}
status: {phase: Running}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: vm1-disk, namespace: default, uid: pvc-uid-1}
spec: {accessModes: [ReadWriteMany], resources: {requests: {storage: 1Gi}}}
---
apiVersion: sim.vmrecover.dev/v1
kind: SimulatorSettings
downNodes: [node-down]
virtController: true
harvesterController: true
controllerDelayMs: 300
"#;

#[tokio::test]
async fn controllers_react_after_the_request_and_settle() {
    let sim = sim_with(STUCK).await;
    assert!(sim.wait_controllers_settled(Duration::from_secs(10)).await);
    let h = Http::new(&sim);
    // A Terminating pod on a node whose kubelet is down: nothing moves on its own.
    assert_eq!(
        finalizers(&h.get(&vmi_path("default", "vm1")).await.body).len(),
        2
    );
    assert_eq!(
        h.get(&vmi_path("default", "vm1")).await.body["status"]["phase"],
        "Running"
    );
    let settled = h.get("/_sim/settled").await;
    assert_eq!(settled.body["settled"], true, "{}", settled.text);

    let del = h
        .delete(
            &format!(
                "{}?gracePeriodSeconds=0",
                pod_path("default", "virt-launcher-vm1-abcde")
            ),
            None,
        )
        .await;
    assert_eq!(del.status, 200);
    // Answered before any controller looked: the VMI is as it was.
    let right_after = h.get(&vmi_path("default", "vm1")).await;
    assert_eq!(right_after.status, 200);
    assert_eq!(finalizers(&right_after.body).len(), 2);
    assert_eq!(h.get("/_sim/settled").await.body["settled"], false);

    assert!(sim.wait_controllers_settled(Duration::from_secs(10)).await);
    assert_eq!(
        h.get(&vmi_path("default", "vm1")).await.status,
        404,
        "Failed, then finalized"
    );
    assert_eq!(
        h.get(&vm_path("default", "vm1")).await.status,
        404,
        "both finalizers gone"
    );
    let pvc = h
        .get("/api/v1/namespaces/default/persistentvolumeclaims/vm1-disk")
        .await;
    assert_eq!(
        pvc.status, 404,
        "Harvester deleted the listed PVC: {}",
        pvc.text
    );
    // virt-controller's steps came after the client's request.
    let log = sim.requests();
    let del_seq = log
        .iter()
        .find(|r| r.method == "DELETE" && !r.internal && r.path.contains("virt-launcher"))
        .map(|r| r.seq)
        .unwrap_or(0);
    let actors: Vec<&str> = log
        .iter()
        .filter(|r| r.internal && r.seq > del_seq && r.method != "GET")
        .filter_map(|r| r.actor.as_deref())
        .collect();
    assert!(actors.contains(&"virt-controller"), "{actors:?}");
    // Harvester's clean-up does not wait for the VMI: it ran on the first look.
    assert!(
        log.iter()
            .any(|r| r.internal && r.seq < del_seq && r.actor.as_deref() == Some("harvester")),
        "{log:?}"
    );
}
