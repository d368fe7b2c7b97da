//! `vmrecover run --fenced-node NODE`, a person's declaration that NODE is powered off for
//! good, end to end on the power-loss scenario (harvester-node-1 NotReady since the cut):
//! recovered from cluster evidence alone; refused without the out-of-service taint or before
//! --stuck-after; a disk attached elsewhere or a launcher pod on another node blocks; the run
//! stops when the node comes back; excluded while the node's own agent holds its Lease;
//! refused while NODE shows a sign of life (virt-handler's heartbeat recent by the API
//! server's clock or moving while vmrecover watches, Longhorn's node Ready) or when the run
//! is on NODE itself. Every run here is from another machine (its own machine-id) unless the
//! test says otherwise.

use std::time::Duration;

use crate::e2e_support::{outcomes, write_identity, Env, BOOT_ID, NODE};
use serde_json::{json, Value};

const LAUNCHER_DB: &str = "virt-launcher-vm-db-01-xxxxx";
/// The machine a fenced-node run runs on: not harvester-node-1.
const OTHER_MACHINE: &str = "0a1b2c3d4e5f40718293a4b5c6d7e8f9";
const HEARTBEAT: &str = "kubevirt.io/heartbeat";

/// The power-loss scenario, seen from another machine than harvester-node-1.
async fn elsewhere() -> Env {
    let env = Env::power_loss().await;
    write_identity(env.host_root.path(), OTHER_MACHINE, BOOT_ID);
    env
}

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
    if !extra.contains(&"--fence-watch") {
        a.extend(["--fence-watch", "1s"]);
    }
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
    let env = elsewhere().await;
    taint_out_of_service(&env);
    // Harvester ≤ 1.6 back-dated the heartbeat when it reset the node; Longhorn's managers
    // marked the node down: neither is a sign of life.
    set_heartbeat(
        &env,
        jiff::Timestamp::now() - jiff::SignedDuration::from_secs(6 * 60),
    );
    longhorn_node(&env, "False", "ManagerPodDown");
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
    // Nothing claims to have been proved on the node: the evidence and the Events say it
    // was declared off.
    let db = &report["plan"]["decisions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "vm-db-01"))
        .cloned()
        .expect("vm-db-01 decided");
    let words = format!("{} {}", db["evidence"], db["reasons"]);
    assert!(
        words.contains(&format!(
            "{NODE} declared powered off by the operator; {NODE}'s own evidence not read"
        )),
        "{words}"
    );
    assert!(!words.contains("on this node"), "{words}");
    let notes: Vec<String> = env
        .sim
        .list("events.k8s.io/v1", "Event")
        .iter()
        .map(|e| e["note"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(!notes.is_empty());
    for n in &notes {
        assert!(
            n.contains("declared powered off by the operator") && !n.contains("proving"),
            "{n}"
        );
    }
}

fn set_heartbeat(env: &Env, at: jiff::Timestamp) {
    let mut n = env.sim.get("v1", "Node", "", NODE).expect("node");
    n["metadata"]["annotations"][HEARTBEAT] =
        json!(at.round(jiff::Unit::Second).expect("round").to_string());
    env.sim.put(n).expect("heartbeat");
}

/// Longhorn's `nodes.longhorn.io/harvester-node-1` with its Ready condition.
fn longhorn_node(env: &Env, ready: &str, reason: &str) {
    env.sim
        .put(json!({"apiVersion": "longhorn.io/v1beta2", "kind": "Node",
            "metadata": {"name": NODE, "namespace": "longhorn-system"},
            "spec": {"name": NODE, "allowScheduling": true},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": reason,
                "lastTransitionTime": "2025-01-01T00:00:00Z"}]}}))
        .expect("longhorn node");
}

fn refused_alive(run: &crate::e2e_support::Ran, words: &str) {
    let plan = run.json();
    assert_eq!(
        plan["refused"]["blocker"],
        "fenced_node_alive",
        "{}",
        run.all()
    );
    assert!(
        plan["refused"]["text"]
            .as_str()
            .is_some_and(|r| r.contains(words)),
        "{}",
        plan["refused"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_on_the_fenced_node_itself() {
    // This machine's /etc/machine-id is harvester-node-1's nodeInfo.machineID.
    let env = Env::power_loss().await;
    taint_out_of_service(&env);
    let run = env.run(&fenced(&[])).await;
    assert_eq!(run.code, 3, "{}", run.all());
    refused_alive(&run, "this machine is harvester-node-1");
    assert!(env.sim.mutating_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_while_the_node_shows_a_sign_of_life() {
    let env = elsewhere().await;
    taint_out_of_service(&env);

    // virt-handler stamped the heartbeat a moment ago, by the API server's clock.
    set_heartbeat(&env, jiff::Timestamp::now());
    let run = env.run(&fenced(&[])).await;
    refused_alive(&run, "heartbeat on Node harvester-node-1");

    // Its clock is an hour behind, but the stamp moves while vmrecover watches.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let beat = async {
        let mut at = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            set_heartbeat(&env, at);
            at += jiff::SignedDuration::from_secs(1);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let run = async {
        let r = env.run(&fenced(&["--fence-watch", "2s"])).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    };
    let (run, ()) = tokio::join!(run, beat);
    refused_alive(&run, "while vmrecover watched");

    // Still, but Longhorn's manager on the node says it is Ready.
    set_heartbeat(
        &env,
        jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2),
    );
    longhorn_node(&env, "True", "");
    let run = env.run(&fenced(&[])).await;
    refused_alive(&run, "Longhorn's node harvester-node-1 says Ready=True");
    assert!(env.sim.mutating_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_without_the_taint_or_before_stuck_after() {
    let env = elsewhere().await;
    let run = env.run(&fenced(&[])).await;
    assert_eq!(run.code, 3, "{}", run.all());
    let plan = run.json();
    assert_eq!(plan["refused"]["blocker"], "not_fenced");
    assert!(plan["refused"]["text"]
        .as_str()
        .is_some_and(|r| r.contains("out-of-service")));
    assert!(env.sim.mutating_requests().is_empty());

    taint_out_of_service(&env);
    // NotReady since the cut (2025): not for 100000 hours.
    let mut args = fenced(&[]);
    let i = args.iter().position(|a| *a == "0s").expect("stuck-after");
    args[i] = "100000h";
    let run = env.run(&args).await;
    assert_eq!(
        run.json()["refused"]["blocker"],
        "not_fenced",
        "{}",
        run.all()
    );
    assert!(env.sim.mutating_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_attached_elsewhere_or_a_launcher_on_another_node_blocks() {
    let env = elsewhere().await;
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
            "--fence-watch",
            "1s",
            "--output",
            "json",
        ])
        .await;
    let plan = dry.json();
    let web = decision(&plan, "vm-web-01");
    assert_eq!(web["action"]["kind"], "blocked", "{web:#}");
    assert!(
        web["reasons"]
            .to_string()
            .contains("disk_attached_elsewhere"),
        "{web:#}"
    );
    let db = decision(&plan, "vm-db-01");
    assert_eq!(db["action"]["kind"], "blocked", "{db:#}");
    assert!(db["reasons"][0]["text"].as_str().is_some_and(|r| r
        .contains("virt-launcher-vm-db-01-other")
        && r.contains("harvester-node-2")));
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
    let env = elsewhere().await;
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
    let env = elsewhere().await;
    taint_out_of_service(&env);
    let lease = |renewed: jiff::Timestamp| {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": format!("vmrecover-{NODE}"), "namespace": "harvester-system"},
            "spec": {
                "holderIdentity": "agent@harvester-node-1/77",
                "leaseDurationSeconds": 60,
                "acquireTime": renewed.to_string(),
                "renewTime": renewed.to_string(),
            }
        })
    };
    // Renewed just now: the node's agent runs, a sign of life.
    env.sim
        .put(lease(jiff::Timestamp::now()))
        .expect("the agent's lease");
    env.sim.clear_requests();
    let run = env.run(&fenced(&[])).await;
    assert_eq!(run.code, 3, "{}", run.all());
    refused_alive(&run, "renewed");
    assert!(run.json()["refused"]["text"]
        .as_str()
        .is_some_and(|r| r.contains("agent@harvester-node-1/77")));
    assert!(env.sim.mutating_requests().is_empty());

    // Renewed 30 s ago (older than --fence-watch, still valid): the Lease excludes the run.
    let mut l = env
        .sim
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "harvester-system",
            &format!("vmrecover-{NODE}"),
        )
        .expect("lease");
    let renewed = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(30)).to_string();
    l["spec"]["renewTime"] = json!(renewed);
    env.sim.put(l).expect("older renewal");
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
