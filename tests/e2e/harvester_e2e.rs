//! Harvester's own node-failure handling around a recovery, an Upgrade in progress, and the
//! pause switches, end to end: the built binary against the power-loss scenario with the
//! simulated Harvester node-down controller running for the release under test.

use std::time::Duration;

use crate::e2e_support::{outcomes, Env, ACTING_AGENT, NODE, RUN};
use harvester_sim::SettingsPatch;
use serde_json::{json, Value};

const LAUNCHER_DB: &str = "virt-launcher-vm-db-01-xxxxx";

async fn with_node_down(release: &str, policy: &str) -> Env {
    let env = Env::power_loss().await;
    env.sim
        .put(
            json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "Setting",
            "metadata": {"name": "vm-force-reset-policy"}, "value": policy}),
        )
        .expect("the policy setting");
    env.sim.update_settings(&SettingsPatch {
        release: Some(release.into()),
        node_down_controller: Some(true),
        node_down_interval_ms: Some(20),
        ..SettingsPatch::default()
    });
    env
}

fn node(env: &Env) -> Value {
    env.sim.get("v1", "Node", "", NODE).expect("the Node")
}

fn taint_keys(n: &Value) -> Vec<String> {
    n["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["key"].as_str().map(String::from))
        .collect()
}

/// Waits for `f` (up to 45 s: an agent that stands still re-reads the pause and the Upgrades
/// every 15 s, `agent::REFUSED_RECHECK`, as nothing it watches announces their change).
async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..2250 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never: {what}");
}

fn notes(plan: &Value) -> String {
    plan["harvester"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

fn client_deletes_of(env: &Env, name: &str) -> usize {
    env.sim
        .mutating_requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.ends_with(name))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_1_6_harvester_removed_the_launchers_and_vmrecover_finishes_the_rest() {
    let env = with_node_down("1.6", r#"{"enable":true,"period":1}"#).await;
    until(
        "Harvester ≤ 1.6 force-deleted the node's launcher pod",
        || env.sim.get("v1", "Pod", "default", LAUNCHER_DB).is_none(),
    )
    .await;
    assert!(taint_keys(&node(&env))
        .iter()
        .all(|k| !k.contains("out-of-service")));

    let run = env.run(RUN).await;
    assert_eq!(run.code, 3, "vm-custom-01 stays blocked: {}", run.all());
    let report = run.json();
    let text = notes(&report["plan"]);
    assert!(
        text.contains("vm-force-reset-policy: enabled, period 1 s"),
        "{text}"
    );
    assert!(text.contains("have no launcher pod left"), "{text}");
    let out = outcomes(&report);
    assert_eq!(out["default/vm-db-01"].0, "recovered", "{out:?}");
    assert_eq!(
        client_deletes_of(&env, LAUNCHER_DB),
        0,
        "Harvester removed that pod: vmrecover had nothing left over to force-delete"
    );
    assert!(env
        .sim
        .get("kubevirt.io/v1", "VirtualMachine", "default", "vm-db-01")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_1_8_taints_are_expected_after_boot_and_go_when_the_node_is_ready() {
    let env = with_node_down(
        "1.8",
        r#"{"enable":true,"period":1,"vmMigrationTimeout":0}"#,
    )
    .await;
    until("both taints and Drained=True", || {
        let n = node(&env);
        let keys = taint_keys(&n);
        keys.contains(&"kubevirt.io/drain".to_string())
            && keys.contains(&"node.kubernetes.io/out-of-service".to_string())
            && n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Drained" && c["status"] == "True")
            })
    })
    .await;

    // Right after boot the kubelet has not posted Ready yet: the taints are still there.
    let run = env.run(RUN).await;
    assert_eq!(run.code, 3, "{}", run.all());
    let report = run.json();
    let text = notes(&report["plan"]);
    assert!(
        text.contains("kubevirt.io/drain and node.kubernetes.io/out-of-service")
            && text.contains("expected right after a power cut"),
        "{text}"
    );
    assert!(
        text.contains("Drained=True (HarvesterNodeIsDrained)"),
        "{text}"
    );
    let out = outcomes(&report);
    assert_eq!(out["default/vm-db-01"].0, "recovered", "{out:?}");
    assert_eq!(
        client_deletes_of(&env, LAUNCHER_DB),
        1,
        "≥ 1.7 deletes no pod itself: the leftover launcher was vmrecover's to force-delete"
    );

    // The kubelet posts Ready: Harvester removes its taints and the condition.
    let mut n = node(&env);
    for c in n["status"]["conditions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if c["type"] == "Ready" {
            c["status"] = json!("True");
        }
    }
    env.sim.put(n).expect("Ready");
    until("taints and Drained removed", || {
        let n = node(&env);
        !taint_keys(&n)
            .iter()
            .any(|k| k == "kubevirt.io/drain" || k.contains("out-of-service"))
            && !n["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Drained"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_in_progress_stops_everything_until_a_person_confirms() {
    let env = Env::power_loss().await;
    env.sim
        .put(
            json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "Upgrade",
            "metadata": {"name": "hvst-upgrade-77", "namespace": "harvester-system",
                "labels": {"harvesterhci.io/upgradeState": "UpgradingNodes"}}}),
        )
        .expect("the Upgrade");

    // What the agent would do: nothing, and it says why.
    let status = env.run(&["status", "--output", "json"]).await;
    let plan = &status.json()["plan"];
    assert_eq!(
        plan["refused"]["blocker"],
        "upgrade_in_progress",
        "{}",
        status.all()
    );
    assert!(plan["refused"]["text"]
        .as_str()
        .is_some_and(|r| r.contains("hvst-upgrade-77")));

    let run = env.run(RUN).await;
    assert_eq!(run.code, 3, "{}", run.all());
    assert_eq!(run.json()["refused"]["blocker"], "upgrade_in_progress");
    assert!(env.sim.mutating_requests().is_empty(), "nothing changed");

    let mut confirmed: Vec<&str> = RUN.to_vec();
    confirmed.push("--during-upgrade");
    let run = env.run(&confirmed).await;
    let report = run.json();
    assert!(notes(&report["plan"]).contains("Harvester Upgrade in progress: hvst-upgrade-77"));
    assert_eq!(
        outcomes(&report)["default/vm-web-01"].0,
        "recovered",
        "{}",
        run.all()
    );

    // Once the Upgrade succeeded, nothing stands in the way (nothing left to do here).
    let mut up = env
        .sim
        .get(
            "harvesterhci.io/v1beta1",
            "Upgrade",
            "harvester-system",
            "hvst-upgrade-77",
        )
        .expect("upgrade");
    up["metadata"]["labels"]["harvesterhci.io/upgradeState"] = json!("Succeeded");
    env.sim.put(up).expect("succeeded");
    let status = env.run(&["status", "--output", "json"]).await;
    assert_eq!(
        status.json()["plan"]["refused"]["blocker"],
        Value::Null,
        "{}",
        status.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_on_the_node_then_cluster_wide_then_off() {
    let env = Env::power_loss().await;
    let mut n = node(&env);
    n["metadata"]["annotations"]["vmrecover.io/paused"] = json!("swapping a disk shelf");
    env.sim.put(n).expect("annotate");

    let run = env.run(RUN).await;
    assert_eq!(run.code, 3, "{}", run.all());
    let plan = run.json();
    assert_eq!(plan["refused"]["blocker"], "paused");
    assert!(plan["paused"]
        .as_str()
        .is_some_and(|p| p.contains("swapping a disk shelf")));
    assert!(env.sim.mutating_requests().is_empty());

    // Off on the node, on for the whole site.
    let mut n = node(&env);
    n["metadata"]["annotations"]["vmrecover.io/paused"] = json!("false");
    env.sim.put(n).expect("unpause the node");
    env.sim
        .put(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "vmrecover-pause", "namespace": "harvester-system"},
            "data": {"reason": "site maintenance"}}))
        .expect("cluster pause");
    let status = env.run(&["status", "--output", "json"]).await;
    let plan = &status.json()["plan"];
    assert_eq!(plan["refused"]["blocker"], "paused", "{}", status.all());
    assert!(plan["paused"]
        .as_str()
        .is_some_and(|p| p.contains("site maintenance")));
    let table = env.run(&["status"]).await;
    assert!(
        table
            .stdout
            .contains("paused: ConfigMap vmrecover-pause exists"),
        "{}",
        table.all()
    );

    // Off everywhere: the recovery goes ahead.
    assert!(env
        .sim
        .remove("v1", "ConfigMap", "harvester-system", "vmrecover-pause"));
    let run = env.run(RUN).await;
    let report = run.json();
    assert_eq!(report["plan"]["paused"], Value::Null);
    assert_eq!(
        outcomes(&report)["default/vm-web-01"].0,
        "recovered",
        "{}",
        run.all()
    );
}

/// Runs `run --only default/vm-db-01` with a controller wait (virt-controller off, so the
/// wait runs its whole grace) and calls `meanwhile` once its launcher pod was deleted:
/// the switch flips *during* the apply. Returns the report and the mutating requests
/// made after the pod delete.
async fn flip_during_the_wait(env: &Env, meanwhile: impl FnOnce()) -> (Value, Vec<String>) {
    let args = [
        "run",
        "--yes",
        "--only",
        "default/vm-db-01",
        "--stuck-after",
        "0s",
        "--controller-grace",
        "2s",
        "--output",
        "json",
    ];
    let child = env.command(&args).output();
    let flip = async {
        until("the launcher pod is deleted", || {
            client_deletes_of(env, LAUNCHER_DB) > 0
        })
        .await;
        meanwhile();
    };
    let (out, ()) = tokio::join!(child, flip);
    let out = out.expect("run");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let log = env.sim.mutating_requests();
    let at = log
        .iter()
        .position(|r| r.method == "DELETE" && r.path.ends_with(LAUNCHER_DB))
        .expect("the pod delete is logged");
    let after = log[at + 1..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    (report, after)
}

/// After the pod delete only the Lease's release and the VM's Event were written.
fn nothing_but_bookkeeping(after: &[String]) {
    for r in after {
        assert!(
            r.contains("/leases/") || r.contains("/events"),
            "a change after the switch flipped: {r}\nall: {after:#?}"
        );
    }
}

fn finalizers_kept(env: &Env) {
    let vmi = env
        .sim
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "vm-db-01",
        )
        .expect("the VMI keeps its finalizers");
    assert!(
        vmi["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty()),
        "{vmi:#}"
    );
}

fn outcome(report: &Value, name: &str) -> Value {
    report["outcomes"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no outcome for {name}: {report:#}"))
}

/// Issue 23: a pause set while a VM's controller wait runs (an empty annotation value
/// pauses too) stops that VM before its finalizers are cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_set_during_the_apply_stops_the_next_change() {
    let env = Env::power_loss().await;
    let (report, after) = flip_during_the_wait(&env, || {
        let mut n = node(&env);
        n["metadata"]["annotations"]["vmrecover.io/paused"] = json!("");
        env.sim.put(n).expect("annotate");
    })
    .await;
    // The safety property first: nothing but bookkeeping after the switch flipped.
    nothing_but_bookkeeping(&after);
    finalizers_kept(&env);
    let db = outcome(&report, "vm-db-01");
    assert_eq!(db["result"], "aborted", "{report:#}");
    assert_eq!(db["blocker"], "paused", "{report:#}");
    assert!(
        db["reason"]
            .as_str()
            .is_some_and(|r| r.contains("vmrecover.io/paused")),
        "{db:#}"
    );
}

/// Issue 23: a Harvester Upgrade that starts during the controller wait stops the VM too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_starts_during_the_apply_stops_the_next_change() {
    let env = Env::power_loss().await;
    let (report, after) = flip_during_the_wait(&env, || {
        env.sim
            .put(
                json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "Upgrade",
                "metadata": {"name": "hvst-upgrade-88", "namespace": "harvester-system"}}),
            )
            .expect("the Upgrade");
    })
    .await;
    nothing_but_bookkeeping(&after);
    finalizers_kept(&env);
    let db = outcome(&report, "vm-db-01");
    assert_eq!(db["result"], "aborted", "{report:#}");
    assert_eq!(db["blocker"], "upgrade_in_progress", "{report:#}");
    assert!(
        db["reason"]
            .as_str()
            .is_some_and(|r| r.contains("hvst-upgrade-88")),
        "{db:#}"
    );
}

/// The agent itself during an Upgrade, then paused: it changes nothing and its published
/// summary says why; once both are gone it recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_stands_still_during_an_upgrade_and_a_pause_and_says_why() {
    let env = Env::power_loss().await;
    env.sim
        .put(
            json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "Upgrade",
            "metadata": {"name": "hvst-upgrade-9", "namespace": "harvester-system"}}),
        )
        .expect("an Upgrade without a state label yet");
    let mut agent = env.command(ACTING_AGENT).spawn().expect("start the agent");
    let summary = |env: &Env| -> Value {
        env.sim
            .get(
                "v1",
                "ConfigMap",
                "harvester-system",
                "vmrecover-summary-harvester-node-1",
            )
            .and_then(|cm| {
                cm["data"]["summary.json"]
                    .as_str()
                    .and_then(|t| serde_json::from_str(t).ok())
            })
            .unwrap_or(Value::Null)
    };
    until("the agent's summary says upgrade_in_progress", || {
        summary(&env)["refused_by"] == "upgrade_in_progress"
    })
    .await;
    let others = |env: &Env| {
        env.sim
            .mutating_requests()
            .into_iter()
            .filter(|r| !r.path.contains("/configmaps/vmrecover-summary-"))
            .count()
    };
    assert_eq!(others(&env), 0, "nothing but its summary was written");

    // The Upgrade ends; the site is paused meanwhile: still nothing.
    env.sim
        .put(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "vmrecover-pause", "namespace": "harvester-system"},
            "data": {"reason": "after-upgrade checks"}}))
        .expect("pause");
    let mut up = env
        .sim
        .get(
            "harvesterhci.io/v1beta1",
            "Upgrade",
            "harvester-system",
            "hvst-upgrade-9",
        )
        .expect("upgrade");
    up["metadata"]["labels"] = json!({"harvesterhci.io/upgradeState": "Succeeded"});
    env.sim.put(up).expect("succeeded");
    until("the agent's summary says paused", || {
        summary(&env)["refused_by"] == "paused"
    })
    .await;
    assert_eq!(others(&env), 0, "nothing changed while paused");

    // Unpaused: nothing in the VMIs announces it; the agent re-decides a refused plan
    // within 15 s and recovers.
    assert!(env
        .sim
        .remove("v1", "ConfigMap", "harvester-system", "vmrecover-pause"));
    let mut recovered = false;
    for _ in 0..1250 {
        if env
            .sim
            .get("kubevirt.io/v1", "VirtualMachine", "default", "vm-web-01")
            .is_none()
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = agent.start_kill();
    let out = agent.wait_with_output().await.expect("agent");
    assert!(
        recovered,
        "the agent did not recover vm-web-01 once unpaused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
