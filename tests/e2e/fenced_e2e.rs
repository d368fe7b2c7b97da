//! `vmrecover run --fenced-node NODE`, a person's declaration that NODE is powered off for
//! good, end to end on the power-loss scenario (harvester-node-1 NotReady since the cut):
//! recovered from cluster evidence alone; refused without the out-of-service taint or before
//! --stuck-after; a disk attached elsewhere or a launcher pod on another node blocks; the run
//! stops when the node comes back; excluded while the node's own agent holds its Lease.

use std::time::Duration;

use crate::e2e_support::{outcomes, Env, NODE};
use serde_json::{json, Value};

const LAUNCHER_DB: &str = "virt-launcher-vm-db-01-xxxxx";

fn fenced(extra: &[&'static str]) -> Vec<&'static str> {
    let mut a = vec![
        "run",
        "--fenced-node",
        NODE,
        "--yes",
        "--stuck-after",
        "0s",
        "--output",
        "json",
    ];
    if !extra.contains(&"--controller-grace") {
        a.extend(["--controller-grace", "0s"]);
    }
    a.extend(extra);
    a
}

fn taint_out_of_service(env: &Env) {
    let mut n = env.sim.get("v1", "Node", "", NODE).expect("node");
    n["spec"]["taints"]
        .as_array_mut()
        .expect("taints")
        .push(json!({"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}));
    env.sim.put(n).expect("taint");
}

fn set_ready(env: &Env, status: &str) {
    let mut n = env.sim.get("v1", "Node", "", NODE).expect("node");
    for c in n["status"]["conditions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if c["type"] == "Ready" {
            c["status"] = json!(status);
        }
    }
    env.sim.put(n).expect("Ready");
}

fn vmi_uid(env: &Env, name: &str) -> String {
    env.sim
        .get("kubevirt.io/v1", "VirtualMachineInstance", "default", name)
        .and_then(|v| v["metadata"]["uid"].as_str().map(String::from))
        .expect("vmi uid")
}

fn decision<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["decisions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == name))
        .unwrap_or_else(|| panic!("no decision for {name}: {plan:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_dead_node_is_recovered_from_cluster_evidence_under_its_lease() {
    let env = Env::power_loss().await;
    taint_out_of_service(&env);
    let run = env.run(&fenced(&[])).await;
    assert_eq!(run.code, 3, "vm-custom-01 stays blocked: {}", run.all());
    let report = run.json();
    let notes = report["plan"]["harvester"].to_string();
    assert!(
        notes.contains("FENCED RUN") && notes.contains("declaration of the person"),
        "{notes}"
    );
    let out = outcomes(&report);
    for vm in ["default/vm-web-01", "default/vm-db-01", "prod/vm-legacy-01"] {
        assert_eq!(out[vm].0, "recovered", "{vm}: {out:?}");
    }
    assert!(env
        .sim
        .requests()
        .iter()
        .any(|r| !r.internal && r.path.ends_with(&format!("/leases/vmrecover-{NODE}"))));
    assert!(env.sim.get("v1", "Pod", "default", LAUNCHER_DB).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_without_the_taint_or_before_stuck_after() {
    let env = Env::power_loss().await;
    let run = env.run(&fenced(&[])).await;
    assert_eq!(run.code, 3, "{}", run.all());
    let plan = run.json();
    assert_eq!(plan["refused_by"], "not_fenced");
    assert!(plan["refused"]
        .as_str()
        .is_some_and(|r| r.contains("out-of-service")));
    assert!(env.sim.mutating_requests().is_empty());

    taint_out_of_service(&env);
    // NotReady since the cut (2025): not for 100000 hours.
    let mut args = fenced(&[]);
    let i = args.iter().position(|a| *a == "0s").expect("stuck-after");
    args[i] = "100000h";
    let run = env.run(&args).await;
    assert_eq!(run.json()["refused_by"], "not_fenced", "{}", run.all());
    assert!(env.sim.mutating_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_attached_elsewhere_or_a_launcher_on_another_node_blocks() {
    let env = Env::power_loss().await;
    taint_out_of_service(&env);
    env.sim
        .put(json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
            "metadata": {"name": "csi-web-01-on-node-2"},
            "spec": {"attacher": "driver.longhorn.io", "nodeName": "harvester-node-2",
                     "source": {"persistentVolumeName": "pvc-44444444-0000-4000-8000-000000000001"}},
            "status": {"attached": true}}))
        .expect("attachment elsewhere");
    let uid = vmi_uid(&env, "vm-db-01");
    env.sim
        .put(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "virt-launcher-vm-db-01-other", "namespace": "default",
                "labels": {"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": uid},
                "annotations": {"kubevirt.io/domain": "vm-db-01"}},
            "spec": {"nodeName": "harvester-node-2", "containers": [{"name": "compute", "image": "x"}]},
            "status": {"phase": "Running"}}))
        .expect("launcher elsewhere");
    let dry = env
        .run(&[
            "run",
            "--fenced-node",
            NODE,
            "--dry-run",
            "--stuck-after",
            "0s",
            "--output",
            "json",
        ])
        .await;
    let plan = dry.json();
    let web = decision(&plan, "vm-web-01");
    assert_eq!(web["action"]["kind"], "blocked", "{web:#}");
    assert!(
        web["blockers"]
            .to_string()
            .contains("disk_attached_elsewhere"),
        "{web:#}"
    );
    let db = decision(&plan, "vm-db-01");
    assert_eq!(db["action"]["kind"], "blocked", "{db:#}");
    assert!(db["reasons"][0].as_str().is_some_and(
        |r| r.contains("virt-launcher-vm-db-01-other") && r.contains("harvester-node-2")
    ));
    let run = env.run(&fenced(&[])).await;
    let out = outcomes(&run.json());
    assert!(
        !out.contains_key("default/vm-web-01") && !out.contains_key("default/vm-db-01"),
        "{out:?}"
    );
    assert!(env
        .sim
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "vm-web-01"
        )
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_stops_when_the_node_comes_back() {
    let env = Env::power_loss().await;
    taint_out_of_service(&env);
    let args = fenced(&["--only", "default/vm-db-01", "--controller-grace", "3s"]);
    let child = env.command(&args).output();
    let flip = async {
        for _ in 0..1000 {
            let deleted = env
                .sim
                .mutating_requests()
                .iter()
                .any(|r| r.method == "DELETE" && r.path.ends_with(LAUNCHER_DB));
            if deleted {
                // The node boots during the controller wait.
                set_ready(&env, "True");
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    };
    let (out, flipped) = tokio::join!(child, flip);
    let out = out.expect("run");
    assert!(flipped, "the launcher pod was never deleted");
    let report: Value = serde_json::from_slice(&out.stdout).expect("report");
    let (result, reason) = outcomes(&report)["default/vm-db-01"].clone();
    assert_eq!(result, "aborted", "{report:#}");
    // The planner's own fence rule, re-run before the change, stops it.
    assert!(reason.is_some_and(|r| r.contains("is Ready")), "{report:#}");
    let blocker = report["outcomes"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["name"] == "vm-db-01"))
        .map(|o| o["blocker"].clone());
    assert_eq!(blocker, Some(serde_json::json!("not_fenced")), "{report:#}");
    let vmi = env
        .sim
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "vm-db-01",
        )
        .expect("the VMI keeps its finalizers");
    assert!(!vmi["metadata"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_while_the_nodes_own_agent_holds_its_lease() {
    let env = Env::power_loss().await;
    taint_out_of_service(&env);
    env.sim
        .put(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": format!("vmrecover-{NODE}"), "namespace": "harvester-system"},
            "spec": {
                "holderIdentity": "agent@harvester-node-1/77",
                "leaseDurationSeconds": 60,
                "acquireTime": jiff::Timestamp::now().to_string(),
                "renewTime": jiff::Timestamp::now().to_string(),
            }
        }))
        .expect("the agent's lease");
    env.sim.clear_requests();
    let run = env.run(&fenced(&[])).await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("held by agent@harvester-node-1/77"),
        "{}",
        run.stderr
    );
    assert!(env.sim.mutating_requests().is_empty());
}
