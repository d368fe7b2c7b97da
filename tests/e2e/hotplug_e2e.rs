//! KubeVirt's hotplug attachment pods (issue 23 item 2): `hp-volume-*` pods, label
//! `kubevirt.io=hotplug-disk`, controlled by the launcher pod (kubevirt
//! `pkg/virt-controller/services/template.go`, `RenderHotplugAttachmentPodTemplate`), with
//! no `restartPolicy`, so the kubelet restarts them after a reboot and they mount the volume
//! again. When vmrecover frees a launcher pod it frees the hotplug pods that pod owns itself
//! (grace 0, UID precondition) — the garbage collector would delete them with the default
//! grace, which leaves a pod on the rebooted node Terminating — and never touches one whose
//! launcher pod it does not free.

use crate::e2e_support::{outcomes, Env};
use serde_json::json;

const LAUNCHER_DB: &str = "virt-launcher-vm-db-01-xxxxx";

fn hotplug_pod(env: &Env, name: &str, owner: &str, owner_uid: &str) {
    env.sim
        .put(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default",
                "labels": {"kubevirt.io": "hotplug-disk"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": owner,
                    "uid": owner_uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"nodeName": "harvester-node-1",
                "containers": [{"name": "hotplug-disk", "image": "virt-launcher"}]},
            "status": {"phase": "Running"}}))
        .expect("hotplug pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_launcher_pod_takes_its_hotplug_pods_with_it() {
    let env = Env::power_loss().await;
    let launcher_uid = env
        .sim
        .get("v1", "Pod", "default", LAUNCHER_DB)
        .and_then(|p| p["metadata"]["uid"].as_str().map(String::from))
        .expect("vm-db-01's launcher pod");
    hotplug_pod(&env, "hp-volume-db01", LAUNCHER_DB, &launcher_uid);
    // Another launcher pod's (a live VM's, not freed here): never touched.
    hotplug_pod(
        &env,
        "hp-volume-other",
        "virt-launcher-vm-other-x",
        "uid-other-launcher",
    );
    env.sim.clear_requests();

    let run = env
        .run(&[
            "run",
            "--yes",
            "--only",
            "default/vm-db-01",
            "--stuck-after",
            "0s",
            "--controller-grace",
            "0s",
            "--output",
            "json",
        ])
        .await;
    let report = run.json();
    assert_eq!(
        outcomes(&report)["default/vm-db-01"].0,
        "recovered",
        "{}",
        run.all()
    );
    let deletes: Vec<String> = env
        .sim
        .mutating_requests()
        .into_iter()
        .filter(|r| !r.internal && r.method == "DELETE")
        .map(|r| r.path)
        .collect();
    assert!(
        deletes.iter().any(|p| p.ends_with("/pods/hp-volume-db01")),
        "vmrecover itself frees the hotplug pod: {deletes:?}"
    );
    assert!(
        env.sim
            .get("v1", "Pod", "default", "hp-volume-db01")
            .is_none(),
        "gone, not left Terminating on the rebooted node"
    );
    assert!(!deletes.iter().any(|p| p.ends_with("/pods/hp-volume-other")));
    assert!(env
        .sim
        .get("v1", "Pod", "default", "hp-volume-other")
        .is_some());
    let plan = report["plan"]["decisions"].to_string();
    assert!(
        plan.contains("hotplug attachment pod hp-volume-db01"),
        "{plan}"
    );
}

/// Issue 23: vm-db-01's launcher pod object is already gone (deleted during the outage, the
/// garbage collector not run yet), its hotplug pod is left. The VMI's `status.activePods`
/// still names the launcher's UID, so the pod is provably vm-db-01's: vmrecover frees it
/// (grace 0, UID precondition). A hotplug pod of a launcher no deciding VMI records is never
/// touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hotplug_pod_whose_launcher_pod_is_gone_is_freed_with_its_vmi() {
    let env = Env::power_loss().await;
    let launcher_uid = env
        .sim
        .get("v1", "Pod", "default", LAUNCHER_DB)
        .and_then(|p| p["metadata"]["uid"].as_str().map(String::from))
        .expect("vm-db-01's launcher pod");
    assert!(env.sim.remove("v1", "Pod", "default", LAUNCHER_DB));
    hotplug_pod(&env, "hp-volume-db01", LAUNCHER_DB, &launcher_uid);
    hotplug_pod(
        &env,
        "hp-volume-other",
        "virt-launcher-vm-other-x",
        "uid-other-launcher",
    );
    env.sim.clear_requests();

    let run = env
        .run(&[
            "run",
            "--yes",
            "--only",
            "default/vm-db-01",
            "--stuck-after",
            "0s",
            "--controller-grace",
            "0s",
            "--output",
            "json",
        ])
        .await;
    let report = run.json();
    assert_eq!(
        outcomes(&report)["default/vm-db-01"].0,
        "recovered",
        "{}",
        run.all()
    );
    let deletes: Vec<_> = env
        .sim
        .mutating_requests()
        .into_iter()
        .filter(|r| !r.internal && r.method == "DELETE")
        .collect();
    let freed = deletes
        .iter()
        .find(|r| r.path.ends_with("/pods/hp-volume-db01"))
        .unwrap_or_else(|| panic!("vmrecover frees the orphaned hotplug pod: {}", run.all()));
    assert_eq!(freed.body["gracePeriodSeconds"], 0, "{:?}", freed.body);
    assert!(
        freed.body["preconditions"]["uid"].is_string(),
        "{:?}",
        freed.body
    );
    assert!(env
        .sim
        .get("v1", "Pod", "default", "hp-volume-db01")
        .is_none());
    assert!(!deletes
        .iter()
        .any(|r| r.path.ends_with("/pods/hp-volume-other")));
    assert!(env
        .sim
        .get("v1", "Pod", "default", "hp-volume-other")
        .is_some());
    assert!(
        report["plan"]["decisions"]
            .to_string()
            .contains("outlived its launcher pod"),
        "{}",
        run.all()
    );
}
