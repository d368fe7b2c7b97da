//! The recovery engine end to end: the built `vmrecover` binary, run as an operator
//! would, against `harvester-sim` loaded with the power-loss scenario, with a real
//! qemu-looking process for one VM and a host-root tree for the disk evidence.

use std::path::Path;
use std::time::Duration;

use crate::e2e_support::{Env, NODE, RUN};
use harvester_sim::{FaultAction, FaultRule};
use serde_json::{json, Value};

const LIVE_VMI_UID: &str = "22222222-0000-4000-8000-000000000006";

async fn env(virt_controller: bool) -> Env {
    let env = Env::power_loss().await;
    env.sim.set_virt_controller(virt_controller);
    env
}

fn vm(env: &Env, ns: &str, name: &str) -> Option<Value> {
    env.sim.get("kubevirt.io/v1", "VirtualMachine", ns, name)
}

fn vmi(env: &Env, ns: &str, name: &str) -> Option<Value> {
    env.sim
        .get("kubevirt.io/v1", "VirtualMachineInstance", ns, name)
}

fn decisions(plan: &Value) -> Vec<(String, String)> {
    plan["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                format!(
                    "{}/{}",
                    d["namespace"].as_str().unwrap(),
                    d["name"].as_str().unwrap()
                ),
                d["action"]["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn live_qemu(env: &Env) -> harvester_sim::node::FakeProc {
    env.fake_vm(
        harvester_sim::node::QEMU,
        "/usr/bin/qemu-system-x86_64",
        &harvester_sim::node::qemu_args("default", "vm-live-01", LIVE_VMI_UID),
    )
}

fn resource_versions(env: &Env, kind: &str) -> Vec<(String, String)> {
    let mut v: Vec<_> = env
        .sim
        .list("kubevirt.io/v1", kind)
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_dry_run_then_recovery_then_nothing_to_do() {
    let env = env(false).await;
    let _qemu = live_qemu(&env);

    // Dry-run: the exact plan, and not one mutating request.
    let dry = env
        .run(&[
            "run",
            "--dry-run",
            "--stuck-after",
            "0s",
            "--controller-grace",
            "1s",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(dry.code, 3, "blocked VMs make exit code 3: {}", dry.stderr);
    let plan = dry.json();
    let expected: Vec<(String, String)> = [
        ("default/vm-custom-01", "blocked"),
        ("default/vm-db-01", "recover"),
        ("default/vm-live-01", "blocked"),
        ("default/vm-web-01", "recover"),
        ("prod/vm-app-02", "recover"),
        ("prod/vm-legacy-01", "recover"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(decisions(&plan), expected);
    let live = &plan["decisions"][2];
    assert!(
        live["reasons"][0]["text"]
            .as_str()
            .unwrap()
            .contains("still running here: pid"),
        "{live:#}"
    );
    assert!(
        env.sim.mutating_requests().is_empty(),
        "dry-run mutated: {:#?}",
        env.sim.mutating_requests()
    );
    // The top-level shorthand is the same dry-run, with the same plan.
    let short = env
        .run(&[
            "--dry-run",
            "--stuck-after",
            "0s",
            "--controller-grace",
            "1s",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(short.code, 3, "{}", short.stderr);
    let mut short_plan = short.json();
    let mut long_plan = plan.clone();
    for p in [&mut short_plan, &mut long_plan] {
        p["at"] = Value::Null;
    }
    assert_eq!(short_plan, long_plan);
    assert!(env.sim.mutating_requests().is_empty());

    let others_vm = resource_versions(&env, "VirtualMachine")
        .into_iter()
        .filter(|(n, _)| n.ends_with("-02") || n.ends_with("-03"))
        .filter(|(n, _)| n != "vm-app-02")
        .collect::<Vec<_>>();

    // The real run.
    let run = env
        .run(&[
            "run",
            "--yes",
            "--stuck-after",
            "0s",
            "--controller-grace",
            "1s",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    for gone in [
        ("default", "vm-web-01"),
        ("default", "vm-db-01"),
        ("prod", "vm-legacy-01"),
    ] {
        assert!(
            vm(&env, gone.0, gone.1).is_none(),
            "VM {gone:?} should be gone"
        );
        assert!(
            vmi(&env, gone.0, gone.1).is_none(),
            "VMI {gone:?} should be gone"
        );
    }
    assert!(env
        .sim
        .get("v1", "Pod", "default", "virt-launcher-vm-db-01-xxxxx")
        .is_none());
    // The Stopping VM: its pod is freed, its finalizers untouched (not deleting).
    assert!(env
        .sim
        .get("v1", "Pod", "prod", "virt-launcher-vm-app-02-q8n2k")
        .is_none());
    let app = vmi(&env, "prod", "vm-app-02").expect("the Failed VMI stays for the VM controller");
    assert_eq!(app["metadata"]["finalizers"].as_array().unwrap().len(), 2);
    // The live VM and the unknown finalizer are untouched.
    let live = vmi(&env, "default", "vm-live-01").expect("vm-live-01 stays");
    assert_eq!(live["metadata"]["finalizers"].as_array().unwrap().len(), 2);
    let custom = vmi(&env, "default", "vm-custom-01").expect("vm-custom-01 stays");
    assert!(custom["metadata"]["finalizers"]
        .to_string()
        .contains("backup.example.com/protect"));
    assert!(vm(&env, "default", "vm-custom-01").is_some());
    // Other nodes' VMs are untouched, to the resourceVersion.
    let after = resource_versions(&env, "VirtualMachine");
    for rv in &others_vm {
        assert!(after.contains(rv), "{rv:?} changed");
    }
    // Every mutation was on this node's objects, and only of the expected kinds.
    for r in env.sim.mutating_requests() {
        let allowed = r.path.contains("/leases")
            || r.path.contains("/events")
            || r.path.contains("vm-web-01")
            || r.path.contains("vm-db-01")
            || r.path.contains("vm-legacy-01")
            || r.path.contains("virt-launcher-vm-app-02");
        assert!(allowed, "unexpected mutation {} {}", r.method, r.path);
    }
    // Events, the lease released, the report saved.
    let events = env.sim.list("events.k8s.io/v1", "Event");
    assert!(
        events
            .iter()
            .any(|e| e["regarding"]["name"] == "vm-web-01"
                && e["reportingController"] == "vmrecover"),
        "no Event for vm-web-01: {events:#?}"
    );
    let lease = env
        .sim
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "harvester-system",
            &format!("vmrecover-{NODE}"),
        )
        .expect("lease");
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "lease not released: {lease:#}"
    );
    let saved: Value =
        serde_json::from_slice(&std::fs::read(env.state.path().join("last-run.json")).unwrap())
            .unwrap();
    assert_eq!(saved["outcomes"], report["outcomes"]);
    let mutations_per_vm = env
        .sim
        .mutating_requests()
        .iter()
        .filter(|r| !r.path.contains("/leases"))
        .count() as f64
        / 4.0;
    eprintln!("mutating requests per recovered VM (incl. events): {mutations_per_vm:.1}");

    // A second run has nothing to do and changes nothing.
    let before = env.sim.mutating_requests().len();
    let again = env
        .run(&[
            "run",
            "--yes",
            "--stuck-after",
            "0s",
            "--controller-grace",
            "1s",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(again.code, 3, "still blocked ones: {}", again.stderr);
    let plan = again.json();
    assert!(
        decisions(&plan).iter().all(|(_, d)| d != "recover"),
        "{plan:#}"
    );
    assert_eq!(env.sim.mutating_requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_virt_controller_on_the_pod_delete_lets_the_controller_finish() {
    let env = env(false).await;
    // Turn the controller on only for vm-db-01's story: it was blocked by the pod.
    env.sim.set_virt_controller(true);
    assert!(
        env.sim
            .wait_controllers_settled(Duration::from_secs(30))
            .await,
        "the controllers did not settle"
    );
    // The controller could clear every VMI without a pod; vm-db-01's VMI stays (pod).
    assert!(vmi(&env, "default", "vm-db-01").is_some());
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
            "5s",
            "--output",
            "json",
        ])
        .await;
    assert!(run.code == 0, "{}\n{}", run.stdout, run.stderr);
    assert!(vmi(&env, "default", "vm-db-01").is_none());
    // vmrecover never patched the VMI: the controller cleared it once the pod was gone.
    let patched_vmi = env
        .sim
        .mutating_requests()
        .into_iter()
        .any(|r| r.method == "PATCH" && r.path.contains("virtualmachineinstances/vm-db-01"));
    assert!(
        !patched_vmi,
        "vmrecover patched the VMI although the controller finished it: {:#?}",
        env.sim
            .requests()
            .iter()
            .map(|r| format!("{} {} {} {}", r.method, r.path, r.query, r.status))
            .collect::<Vec<_>>()
    );
    // The VM's Harvester finalizer is not the simulated controller's: vmrecover clears it.
    assert!(vm(&env, "default", "vm-db-01").is_none(), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_added_between_plan_and_apply_is_never_removed() {
    let env = env(false).await;
    let path = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances/vm-web-01";
    // Hold the first patch of the VMI for a moment and add a finalizer meanwhile.
    env.sim.add_fault(FaultRule {
        method: Some("PATCH".into()),
        path: path.into(),
        action: FaultAction::Latency { ms: 1500 },
        times: Some(1),
        after: 0,
        matched: 0,
        fired: 0,
    });
    let mut cmd = env.command(&[
        "run",
        "--yes",
        "--only",
        "default/vm-web-01",
        "--stuck-after",
        "0s",
        "--controller-grace",
        "0s",
        "--output",
        "json",
    ]);
    let run = tokio::spawn(async move { cmd.output().await.unwrap() });
    // The fault fires when the PATCH arrives, before the simulator serves it.
    wait_for(|| env.sim.faults().first().is_some_and(|f| f.fired > 0)).await;
    let mut obj = vmi(&env, "default", "vm-web-01").unwrap();
    obj["metadata"]["finalizers"]
        .as_array_mut()
        .unwrap()
        .push(json!("example.com/late"));
    env.sim.put(obj).unwrap();
    let out = run.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "aborted VMs exit 3: {stdout}");
    let obj = vmi(&env, "default", "vm-web-01").expect("left alone");
    let fins = obj["metadata"]["finalizers"].to_string();
    assert!(
        fins.contains("example.com/late") && fins.contains("foregroundDeleteVirtualMachine"),
        "{fins}"
    );
    // The conflict re-runs the planner: its own rule about unknown finalizers says why.
    let report: Value = serde_json::from_str(&stdout).expect("report");
    let web = &report["outcomes"][0];
    assert_eq!(web["blocker"], "unknown_finalizer", "{stdout}");
    assert!(
        web["reason"]
            .as_str()
            .is_some_and(|r| r.contains("example.com/late")),
        "{stdout}"
    );
    assert!(
        vm(&env, "default", "vm-web-01").is_some(),
        "the VM must not be cleared after its VMI was left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_refused_while_another_holds_the_node_lease() {
    let env = env(false).await;
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
        .unwrap();
    env.sim.clear_requests();
    let run = env
        .run(&[
            "run",
            "--yes",
            "--stuck-after",
            "0s",
            "--controller-grace",
            "0s",
        ])
        .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("held by agent@harvester-node-1/77"),
        "{}",
        run.stderr
    );
    assert!(
        env.sim.mutating_requests().is_empty(),
        "{:#?}",
        env.sim.mutating_requests()
    );
    assert!(vm(&env, "default", "vm-web-01").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_failure_on_one_vm_leaves_the_others_recovered() {
    let env = env(false).await;
    env.sim.add_fault(FaultRule {
        method: Some("PATCH".into()),
        path: "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances/vm-web-01".into(),
        action: FaultAction::Status {
            code: 500,
            message: Some("etcdserver: request timed out".into()),
            retry_after: None,
        },
        times: None,
        after: 0,
        matched: 0,
        fired: 0,
    });
    let run = env.run(RUN).await;
    assert_eq!(run.code, 1, "a failed VM is an error: {}", run.stderr);
    let report = run.json();
    let web = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "vm-web-01")
        .unwrap();
    assert_eq!(web["result"], "failed");
    assert!(
        web["reason"]
            .as_str()
            .unwrap()
            .contains("etcdserver: request timed out"),
        "{web:#}"
    );
    assert!(
        vmi(&env, "default", "vm-web-01").is_some() && vm(&env, "default", "vm-web-01").is_some()
    );
    assert!(
        vm(&env, "prod", "vm-legacy-01").is_none() && vm(&env, "default", "vm-db-01").is_none()
    );
    // A rerun without the fault converges.
    env.sim.clear_faults();
    let again = env.run(RUN).await;
    assert_eq!(again.code, 3, "{}", again.stderr);
    assert!(vm(&env, "default", "vm-web-01").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_an_error_that_changes_nothing() {
    let env = env(false).await;
    let kc = env.state.path().join("dead.kubeconfig");
    let text = std::fs::read_to_string(env.sim.kubeconfig_path()).unwrap();
    std::fs::write(&kc, text.replace(&env.sim.addr().port().to_string(), "1")).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .args(["--node", NODE, "--kubeconfig"])
        .arg(&kc)
        .arg("--state-dir")
        .arg(env.state.path())
        .args(["run", "--yes"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the cluster") && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(!Path::new(&env.state.path().join("last-run.json")).exists());
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_processes_are_reported_and_killed_only_with_kill_orphans() {
    let env = env(false).await;
    let ghost_uid = "99999999-0000-4000-8000-00000000dead";
    let mut ghost = env.fake_vm(
        harvester_sim::node::QEMU,
        "/usr/bin/qemu-system-x86_64",
        &harvester_sim::node::qemu_args("default", "vm-ghost", ghost_uid),
    );
    let ghost_pid = ghost.node_pid();
    // Reported in the plan, not killed.
    let dry = env
        .run(&[
            "run",
            "--dry-run",
            "--stuck-after",
            "3650d",
            "--output",
            "json",
        ])
        .await;
    let orphans = dry.json()["orphans"].clone();
    let mine: Vec<&Value> = orphans
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["pid"] == ghost_pid)
        .collect();
    assert_eq!(mine.len(), 1, "{orphans:#}");
    assert_eq!(mine[0]["kill"], false);
    assert!(mine[0]["claims"]
        .as_str()
        .unwrap()
        .contains("default/vm-ghost"));
    assert!(
        ghost.child.try_wait().unwrap().is_none(),
        "a dry-run must not kill"
    );

    // Killed with --kill-orphans: SIGTERM first (the fake process exits on it).
    let run = env
        .run(&[
            "run",
            "--yes",
            "--kill-orphans",
            "--stuck-after",
            "3650d",
            "--output",
            "json",
        ])
        .await;
    assert!(
        run.code == 0 || run.code == 3,
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    let report = run.json();
    let outcome = report["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["pid"] == ghost_pid)
        .cloned();
    assert!(
        outcome
            .as_ref()
            .is_some_and(|o| o["result"].as_str().unwrap().contains("ended by SIGTERM")),
        "{report:#}"
    );
    let status = ghost.child.wait().unwrap();
    assert!(!status.success(), "the orphan was ended by a signal");
    // No VM was touched: nothing counts as stuck for ten years after this boot.
    assert!(vm(&env, "default", "vm-web-01").is_some());
}

/// The Events a real client sees: `kubectl get events -A --field-selector
/// reportingComponent=vmrecover` (core/v1, the API kubectl picks for `events`) lists the
/// Events vmrecover created through events.k8s.io/v1, one per recovered VM. The simulator
/// validates them as the apiserver does, so an Event it accepts is one a cluster accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recovered_vm_has_one_event_that_kubectl_finds() {
    let env = env(false).await;
    let dry = env.run(crate::e2e_support::DRY_RUN).await;
    let recovered: Vec<String> = decisions(&dry.json())
        .into_iter()
        .filter(|(_, d)| d == "recover")
        .map(|(vm, _)| vm)
        .collect();
    assert!(!recovered.is_empty(), "{}", dry.stdout);
    let run = env.run(RUN).await;
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(
        !run.stderr.contains("could not record an Event"),
        "an Event was refused: {}",
        run.stderr
    );
    let out = harvester_sim::kubectl("kubectl", env.sim.kubeconfig_path())
        .args([
            "get",
            "events",
            "-A",
            "--field-selector",
            "reportingComponent=vmrecover",
            "-o",
            "json",
        ])
        .output()
        .expect("kubectl (apt-get install kubernetes-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("kubectl JSON");
    let mut seen: Vec<String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            assert_eq!(e["apiVersion"], "v1", "kubectl reads core/v1 Events: {e:#}");
            assert_eq!(e["reportingComponent"], "vmrecover", "{e:#}");
            assert_eq!(e["reportingInstance"], format!("vmrecover-{NODE}"), "{e:#}");
            let name = e["metadata"]["name"].as_str().expect("name");
            let about = e["involvedObject"]["name"]
                .as_str()
                .expect("involvedObject");
            assert!(
                name.starts_with(&format!("{about}-")) && name.len() == about.len() + 6,
                "generated from '<vm>-': {name}"
            );
            format!(
                "{}/{}",
                e["involvedObject"]["namespace"].as_str().unwrap_or(""),
                about
            )
        })
        .collect();
    seen.sort();
    let mut want = recovered.clone();
    want.sort();
    assert_eq!(seen, want, "one Event per recovered VM");
}
