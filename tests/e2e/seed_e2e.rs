//! The seed's own story (issue 14), end to end: VMs whose pods and disks the operator
//! already deleted must recover, with a proof that names each missing object; disks that
//! are still somewhere are checked like any other; an interrupted run tells the truth
//! and the next run finishes.

use std::time::Duration;

use crate::e2e_support::{longhorn_volume_yaml, outcomes, Env, NODE};
use harvester_sim::shipped_scenario;
use serde_json::{json, Value};

const SEED_PVC: &str = "vm-seed-disk-0-qrstu";

fn seed_text() -> String {
    std::fs::read_to_string(shipped_scenario("seed.yaml")).expect("seed.yaml")
}

fn only(vm: &str) -> Vec<&str> {
    vec![
        "run",
        "--yes",
        "--only",
        vm,
        "--stuck-after",
        "0s",
        "--controller-grace",
        "0s",
        "--output",
        "json",
    ]
}

fn decision<'a>(report: &'a Value, name: &str) -> &'a Value {
    let plan = if report["plan"].is_object() {
        &report["plan"]
    } else {
        report
    };
    plan["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no decision for {name}: {report:#}"))
}

fn gone(env: &Env, kind: &str, name: &str) -> bool {
    env.sim
        .get("kubevirt.io/v1", kind, "default", name)
        .is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_vm_with_its_pods_and_disks_deleted_recovers() {
    let env = Env::with_texts(&[&seed_text()]).await;
    let ran = env.run(&only("default/vm-seed")).await;
    assert_eq!(ran.code, 0, "{}", ran.all());
    let report = ran.json();
    let d = decision(&report, "vm-seed");
    let evidence = d["evidence"].to_string();
    assert!(
        evidence.contains(&format!("PVC default/{SEED_PVC} is gone"))
            && evidence.contains("no PV claims it")
            && evidence.contains("no Longhorn volume names it"),
        "{d:#}"
    );
    let skipped = d["skipped_side_effects"].to_string();
    assert!(skipped.contains("skips no PVC clean-up"), "{skipped}");
    assert!(gone(&env, "VirtualMachineInstance", "vm-seed"));
    assert!(gone(&env, "VirtualMachine", "vm-seed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_pv_attached_elsewhere_still_blocks() {
    let pv = format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{name: pvc-seed-retained}}
spec:
  capacity: {{storage: 10Gi}}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  claimRef: {{kind: PersistentVolumeClaim, namespace: default, name: {SEED_PVC}}}
  csi: {{driver: driver.longhorn.io, volumeHandle: pvc-seed-retained}}
status: {{phase: Released}}
---
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata: {{name: csi-seed-elsewhere}}
spec:
  attacher: driver.longhorn.io
  nodeName: harvester-node-2
  source: {{persistentVolumeName: pvc-seed-retained}}
status: {{attached: true}}
---
{retained_volume}"#,
        retained_volume = longhorn_volume_yaml("pvc-seed-retained", "harvester-node-2")
    );
    let env = Env::with_texts(&[&seed_text(), &pv]).await;
    let ran = env.run(&only("default/vm-seed")).await;
    assert_eq!(ran.code, 3, "{}", ran.all());
    let d = decision(&ran.json(), "vm-seed").clone();
    assert_eq!(d["action"]["kind"], "blocked", "{d:#}");
    assert!(
        d["reasons"].to_string().contains("harvester-node-2"),
        "{d:#}"
    );
    assert!(!gone(&env, "VirtualMachineInstance", "vm-seed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_disk_used_by_a_live_vm_elsewhere_does_not_block() {
    // vm-seed's disk still exists (made before its VMI, as a VM's disk is), is RWX, and
    // vm-share runs on node-2 with it mounted.
    let shared = format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {SEED_PVC}, namespace: default, creationTimestamp: "2025-05-21T10:00:00Z"}}
spec:
  accessModes: [ReadWriteMany]
  resources: {{requests: {{storage: 10Gi}}}}
  volumeName: pvc-seed-shared
status: {{phase: Bound}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: pvc-seed-shared}}
spec:
  capacity: {{storage: 10Gi}}
  accessModes: [ReadWriteMany]
  claimRef: {{kind: PersistentVolumeClaim, namespace: default, name: {SEED_PVC}}}
  csi: {{driver: driver.longhorn.io, volumeHandle: pvc-seed-shared}}
status: {{phase: Bound}}
---
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata: {{name: csi-seed-shared-node2}}
spec:
  attacher: driver.longhorn.io
  nodeName: harvester-node-2
  source: {{persistentVolumeName: pvc-seed-shared}}
status: {{attached: true}}
---
{shared_volume}
---
apiVersion: v1
kind: Pod
metadata:
  name: virt-launcher-vm-share-abcde
  namespace: default
  labels: {{kubevirt.io: virt-launcher, kubevirt.io/created-by: 22222222-0000-4000-8000-0000000000b2}}
  annotations: {{kubevirt.io/domain: vm-share}}
spec:
  nodeName: harvester-node-2
  containers: [{{name: compute, image: virt-launcher}}]
  volumes:
  - name: disk-0
    persistentVolumeClaim: {{claimName: {SEED_PVC}}}
status: {{phase: Running}}
"#,
        shared_volume = longhorn_volume_yaml("pvc-seed-shared", "harvester-node-2")
    );
    let env = Env::with_texts(&[&seed_text(), &shared]).await;
    let ran = env.run(&only("default/vm-seed")).await;
    assert_eq!(ran.code, 0, "{}", ran.all());
    let d = decision(&ran.json(), "vm-seed").clone();
    assert!(
        d["evidence"].to_string().contains("VMI default/vm-share"),
        "the plan names the VM that uses the disk: {d:#}"
    );
    assert!(gone(&env, "VirtualMachineInstance", "vm-seed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_tells_the_truth_and_the_next_finishes_after_harvester_deletes_the_disk()
{
    let env = Env::power_loss().await;
    // Run #1 frees vm-db-01's leftover pod, then waits for the controllers; it is stopped
    // during the wait.
    let child = env
        .command(&[
            "run",
            "--yes",
            "--only",
            "default/vm-db-01",
            "--stuck-after",
            "0s",
            "--controller-grace",
            "60s",
            "--output",
            "json",
        ])
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    let mut deleted = false;
    for _ in 0..1000 {
        deleted = env
            .sim
            .mutating_requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path.contains("/pods/"));
        if deleted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(deleted, "run #1 never deleted the pod");
    // The stop must land during the controller wait: wait until the run watches the VMI
    // (the wait's own request), not for a fixed time.
    let mut waiting = false;
    for _ in 0..3000 {
        waiting = env.sim.requests().iter().any(|r| {
            !r.internal
                && r.path.contains("/virtualmachineinstances")
                && r.query.contains("watch=true")
        });
        if waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(waiting, "run #1 never started its controller wait");
    env.signal(pid, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().await.expect("wait");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let got = outcomes(&report);
    let (result, reason) = &got["default/vm-db-01"];
    assert_eq!(result, "aborted", "{report:#}");
    let reason = reason.clone().unwrap_or_default();
    assert!(
        reason.contains("done before the stop") && reason.contains("force-deleted"),
        "the report says what was done: {reason}"
    );
    assert!(!reason.contains("no change"), "{reason}");

    // Harvester's clean-up then deletes the PVC, the PV, the attachments and the volume.
    for (api, kind, ns, name) in [
        (
            "v1",
            "PersistentVolumeClaim",
            "default",
            "vm-db-01-disk-0-fghij",
        ),
        (
            "v1",
            "PersistentVolume",
            "",
            "pvc-44444444-0000-4000-8000-000000000002",
        ),
        (
            "longhorn.io/v1beta2",
            "Volume",
            "longhorn-system",
            "pvc-44444444-0000-4000-8000-000000000002",
        ),
        (
            "longhorn.io/v1beta2",
            "VolumeAttachment",
            "longhorn-system",
            "pvc-44444444-0000-4000-8000-000000000002",
        ),
    ] {
        assert!(env.sim.remove(api, kind, ns, name), "remove {kind} {name}");
    }
    for va in env.sim.list("storage.k8s.io/v1", "VolumeAttachment") {
        if va["spec"]["source"]["persistentVolumeName"]
            == json!("pvc-44444444-0000-4000-8000-000000000002")
        {
            let name = va["metadata"]["name"].as_str().unwrap().to_string();
            assert!(env
                .sim
                .remove("storage.k8s.io/v1", "VolumeAttachment", "", &name));
        }
    }
    // Run #2 finishes the VM from the recorded disk keys and fresh reads.
    let ran = env.run(&only("default/vm-db-01")).await;
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(gone(&env, "VirtualMachineInstance", "vm-db-01"));
    assert!(gone(&env, "VirtualMachine", "vm-db-01"));
    let _ = NODE;
}
