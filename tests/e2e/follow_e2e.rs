//! After the finalizers (issue 26): `run --follow` follows each recovered VM until its
//! outcome is known — the deleted VM gone, the stopped one stopped as asked, a VM KubeVirt
//! restarts running again on another node — or reports, at the bound, why it is not back in
//! the cluster's own words (a faulted Longhorn volume, a launcher pod nobody can schedule).
//! The simulated virt-controller restarts per run strategy as upstream's does, and with
//! `vmStarts` the new VMI's launcher pod is scheduled, started and reported Running.

use std::time::Duration;

use crate::e2e_support::{Env, NODE};
use serde_json::{json, Value};

/// The Stopping VM of the power-loss scenario: Halted, VMI Failed, launcher pod lingering.
const STOPPING: &str = "vm-app-02";
const STOPPING_NS: &str = "prod";

/// The power-loss cluster with virt-controller and VM starts on, asynchronous controllers,
/// and `vm-app-02` switched to `runStrategy: Always` (KubeVirt then deletes its Failed VMI
/// and waits for the launcher pod the dead kubelet never confirms).
async fn always_env() -> Env {
    let env = Env::with_texts(&[]).await;
    env.sim.set_controller_delay(Duration::from_millis(50));
    env.sim.set_vm_starts(true);
    let mut vm = vm(&env, STOPPING_NS, STOPPING).expect("vm-app-02");
    vm["spec"]["runStrategy"] = json!("Always");
    env.sim.put(vm).expect("put vm-app-02");
    env.sim.set_virt_controller(true);
    settle(&env).await;
    let vmi = env
        .sim
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            STOPPING_NS,
            STOPPING,
        )
        .expect("its VMI waits for the pod");
    assert!(
        vmi["metadata"]["deletionTimestamp"].is_string(),
        "KubeVirt deleted the Failed VMI of an Always VM: {vmi}"
    );
    env
}

fn vm(env: &Env, ns: &str, name: &str) -> Option<Value> {
    env.sim.get("kubevirt.io/v1", "VirtualMachine", ns, name)
}

async fn settle(env: &Env) {
    assert!(
        env.sim
            .wait_controllers_settled(Duration::from_secs(30))
            .await,
        "controllers did not settle"
    );
}

/// `run --yes --follow` with a short bound, as JSON.
async fn run_following(env: &Env, bound: &str) -> Value {
    let ran = env
        .run(&[
            "run",
            "--yes",
            "--follow",
            "--follow-for",
            bound,
            "--stuck-after",
            "0s",
            "--controller-grace",
            "1s",
            "--output",
            "json",
        ])
        .await;
    assert!(ran.code == 0 || ran.code == 3, "{}", ran.all());
    ran.json()
}

/// The follow outcome the report gives a VM.
fn follow_of(report: &Value, ns: &str, name: &str) -> Value {
    report["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["namespace"] == ns && o["name"] == name)
        .map(|o| o["follow"].clone())
        .unwrap_or(Value::Null)
}

/// Reads by name of a VM's VM or VMI after vmrecover's last finalizer patch on either.
fn reads_after_last_patch(env: &Env, ns: &str, name: &str) -> Vec<String> {
    let paths = [
        format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}"),
        format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{name}"),
    ];
    let log = env.sim.requests();
    let last_patch = log
        .iter()
        .filter(|r| !r.internal && r.method == "PATCH" && paths.contains(&r.path))
        .map(|r| r.seq)
        .max()
        .expect("vmrecover patched the VM or its VMI");
    log.iter()
        .filter(|r| !r.internal && r.seq > last_patch && r.method == "GET")
        .filter(|r| paths.contains(&r.path))
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect()
}

/// The Events vmrecover recorded on a VM with this reason.
fn events(env: &Env, name: &str, reason: &str) -> Vec<Value> {
    env.sim
        .list("events.k8s.io/v1", "Event")
        .into_iter()
        .filter(|e| e["regarding"]["name"] == name && e["reason"] == reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_vm_is_followed_until_gone_and_a_halted_one_stays_stopped_as_asked() {
    let env = Env::power_loss().await;
    let report = run_following(&env, "20s").await;
    assert_eq!(
        follow_of(&report, "default", "vm-db-01"),
        json!({"outcome": "gone"}),
        "{report:#}"
    );
    let stopped = follow_of(&report, STOPPING_NS, STOPPING);
    assert_eq!(stopped["outcome"], "stopped_as_asked", "{report:#}");
    assert!(
        stopped["why"].as_str().unwrap_or("").contains("Halted"),
        "{stopped}"
    );
    assert!(vm(&env, "default", "vm-db-01").is_none());
    // Gone from the API server's answer to the last finalizer patch: no read to learn it.
    let reads = reads_after_last_patch(&env, "default", "vm-db-01");
    assert!(reads.is_empty(), "{reads:#?}");
    // Neither is "back" nor "not back": no outcome Event for them.
    assert!(events(&env, STOPPING, "NotBack").is_empty());
    // The saved report carries it for `status NS/NAME`.
    let saved: Value = serde_json::from_slice(
        &std::fs::read(env.state_path("last-run.json")).expect("last-run.json"),
    )
    .expect("json");
    assert_eq!(follow_of(&saved, "default", "vm-db-01")["outcome"], "gone");
    let status = env.run(&["status", "default/vm-db-01"]).await;
    assert!(
        status.stdout.contains("no longer on node harvester-node-1")
            && status.stdout.contains("afterwards: gone"),
        "{}",
        status.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_vm_comes_back_running_on_another_node() {
    let env = always_env().await;
    let report = run_following(&env, "60s").await;
    let back = follow_of(&report, STOPPING_NS, STOPPING);
    assert_eq!(back["outcome"], "running_again", "{report:#}");
    assert_eq!(back["node"], "harvester-node-2", "{back}");
    let vmi = env
        .sim
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            STOPPING_NS,
            STOPPING,
        )
        .expect("a new VMI");
    assert_eq!(vmi["status"]["phase"], "Running");
    assert_ne!(vmi["status"]["nodeName"], NODE);
    let ev = events(&env, STOPPING, "RunningAgain");
    assert_eq!(ev.len(), 1, "one Event on the VM: {ev:?}");
    assert_eq!(ev[0]["type"], "Normal");
    assert_eq!(ev[0]["regarding"]["kind"], "VirtualMachine");
    let status = env.run(&["status", "prod/vm-app-02"]).await;
    assert!(
        status
            .stdout
            .contains("afterwards: running again on harvester-node-2"),
        "{}",
        status.all()
    );
}

/// The Longhorn volume behind a PVC.
fn longhorn_volume_of(env: &Env, pvc: &str) -> Value {
    env.sim
        .list("longhorn.io/v1beta2", "Volume")
        .into_iter()
        .find(|v| v["status"]["kubernetesStatus"]["pvcName"] == pvc)
        .expect("the Longhorn volume")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_back_because_its_longhorn_volume_is_faulted() {
    let env = always_env().await;
    let mut vol = longhorn_volume_of(&env, "vm-app-02-disk-0-klmno");
    let name = vol["metadata"]["name"].as_str().unwrap_or("").to_string();
    vol["status"]["robustness"] = json!("faulted");
    vol["status"]["state"] = json!("detached");
    env.sim.put(vol).expect("put the volume");
    // Its replicas on harvester-node-2 (Ready) and harvester-node-3, still down (its kubelet
    // silent: Ready Unknown).
    for (i, node) in ["harvester-node-2", "harvester-node-3"].iter().enumerate() {
        env.sim
            .put(json!({
                "apiVersion": "longhorn.io/v1beta2",
                "kind": "Replica",
                "metadata": {"name": format!("{name}-r-{i}"), "namespace": "longhorn-system",
                             "labels": {"longhornvolume": name}},
                "spec": {"volumeName": name, "nodeID": node, "active": true},
                "status": {"currentState": if i == 1 { "stopped" } else { "running" }}
            }))
            .expect("put a replica");
    }
    let mut down = env
        .sim
        .get("v1", "Node", "", "harvester-node-3")
        .expect("node-3");
    down["status"]["conditions"] = json!([{"type": "Ready", "status": "Unknown",
        "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}]);
    env.sim.put(down).expect("node-3 down");
    let report = run_following(&env, "8s").await;
    let not_back = follow_of(&report, STOPPING_NS, STOPPING);
    assert_eq!(not_back["outcome"], "not_back", "{report:#}");
    let why = not_back["why"].to_string();
    assert!(
        why.contains(&format!(
            "Longhorn volume {name} is faulted (state detached): see volumes.longhorn.io longhorn-system/{name} in the Longhorn UI"
        )),
        "{why}"
    );
    assert!(
        why.contains(&format!(
            "Longhorn volume {name}: replicas on harvester-node-3 (NotReady)"
        )),
        "{why}"
    );
    assert!(why.contains("new VMI phase Scheduling"), "{why}");
    let ev = events(&env, STOPPING, "NotBack");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["type"], "Warning");
    // Read-only: vmrecover wrote nothing to Longhorn.
    assert!(!env
        .sim
        .mutating_requests()
        .iter()
        .any(|r| r.path.contains("longhorn.io")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_back_because_no_node_can_take_its_launcher_pod() {
    let env = always_env().await;
    for n in ["harvester-node-2", "harvester-node-3"] {
        let mut node = env.sim.get("v1", "Node", "", n).expect("node");
        node["spec"]["unschedulable"] = json!(true);
        env.sim.put(node).expect("cordon");
    }
    let report = run_following(&env, "8s").await;
    let not_back = follow_of(&report, STOPPING_NS, STOPPING);
    assert_eq!(not_back["outcome"], "not_back", "{report:#}");
    let why = not_back["why"].to_string();
    assert!(
        why.contains("is not scheduled: Unschedulable: 0/3 nodes are available"),
        "{why}"
    );
    assert!(why.contains("node(s) were unschedulable"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_and_the_site_view_shows_what_came_back() {
    use crate::e2e_support::ACTING_AGENT;
    use vmrecover::cluster::{summary_name, NodeSummary, SUMMARY_KEY};
    let env = always_env().await;
    // This node booted two minutes ago, as its boot records say (the verdict's boot): the
    // time until its last VM ran again counts from then, not from this machine's own boot.
    let booted = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(120);
    std::fs::write(
        env.state_path("boot-records.json"),
        json!({"format": "vmrecover-boot-records", "version": 1, "boots": [
            {"boot_id": crate::e2e_support::BOOT_ID.replace('-', ""), "machine_id": crate::e2e_support::MACHINE_ID,
             "boot_time": booted.to_string(), "started_at": booted.to_string(), "stopped_at": null}
        ]})
        .to_string(),
    )
    .expect("write the boot records");
    let mut args: Vec<&str> = vec!["--follow-for", "60s"];
    args.extend_from_slice(ACTING_AGENT);
    let mut agent = env.command(&args).spawn().expect("start the agent");
    let name = summary_name(NODE);
    let mut after = None;
    for _ in 0..3000 {
        after = env
            .sim
            .get("v1", "ConfigMap", "harvester-system", &name)
            .and_then(|cm| {
                let s: NodeSummary =
                    serde_json::from_str(cm["data"][SUMMARY_KEY].as_str()?).ok()?;
                s.last_run?.after
            });
        if after.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = agent.start_kill();
    let out = agent.wait_with_output().await.expect("agent output");
    let after = after.unwrap_or_else(|| {
        panic!(
            "the agent never published what became of its VMs:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(after.running_again, 1, "{after:?}");
    assert!(after.gone >= 1, "{after:?}");
    // Through watches, never per-VM polling (docs/architecture.md §6, step 5): no read by
    // name of a followed VM after the run, and one list and at most one watch each of the
    // cluster's VMs and VMIs (the follow ended well inside a watch request's 290 s; when the
    // lists already showed every outcome it ends before its watches open).
    for (ns, vm) in [(STOPPING_NS, STOPPING), ("default", "vm-db-01")] {
        let reads = reads_after_last_patch(&env, ns, vm);
        assert!(reads.is_empty(), "{vm}: {reads:#?}");
    }
    let cluster_wide: Vec<String> = env
        .sim
        .requests()
        .into_iter()
        .filter(|r| !r.internal && r.method == "GET")
        .filter(|r| {
            r.path == "/apis/kubevirt.io/v1/virtualmachines"
                || (r.path == "/apis/kubevirt.io/v1/virtualmachineinstances"
                    && !r.query.contains("labelSelector"))
        })
        .map(|r| format!("{}?{}", r.path, r.query))
        .collect();
    for path in [
        "/apis/kubevirt.io/v1/virtualmachines?",
        "/apis/kubevirt.io/v1/virtualmachineinstances?",
    ] {
        let of = |watch: bool| {
            cluster_wide
                .iter()
                .filter(|q| q.starts_with(path) && q.contains("watch=true") == watch)
                .count()
        };
        assert!(of(false) == 1 && of(true) <= 1, "{path}: {cluster_wide:#?}");
    }
    let since_boot = jiff::Timestamp::now().duration_since(booted).as_secs();
    assert!(
        after
            .back_after_boot_secs
            .is_some_and(|s| (120..=since_boot as u64).contains(&s)),
        "{after:?}: the node booted {since_boot}s ago by its records"
    );
    let site = env.run(&["status", "--all-nodes"]).await;
    assert!(
        site.stdout.contains("→ 1 running again, 0 not back"),
        "{}",
        site.all()
    );
    assert!(site.stdout.contains("after boot"), "{}", site.all());
}

/// `followFor` changed in the configuration file bounds the next follow without an agent
/// restart (issue 26): the agent starts refusing the plan (`maxVms: 1`), the file then allows
/// it and shortens `followFor` to 3 s; the VM that cannot come back (its Longhorn volume
/// faulted) is reported not back after 3 s, not after the 5-minute default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_follow_for_applies_without_an_agent_restart() {
    use crate::e2e_support::ACTING_AGENT;
    let env = always_env().await;
    let mut vol = longhorn_volume_of(&env, "vm-app-02-disk-0-klmno");
    vol["status"]["robustness"] = json!("faulted");
    env.sim.put(vol).expect("put the volume");
    let config = env.state_path("config.yaml");
    std::fs::write(&config, "maxVms: 1\n").expect("write the config file");
    let mut args: Vec<&str> = ACTING_AGENT.to_vec();
    args.extend_from_slice(&["--config", config.to_str().expect("utf-8 path")]);
    let mut agent = env
        .command(&args)
        .env("VMRECOVER_CONFIG_CHECK", "200ms")
        .spawn()
        .expect("start the agent");
    let status = env.state_path("agent-status.json");
    for _ in 0..3000 {
        let s: Option<Value> = std::fs::read(&status)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if s.is_some_and(|s| s["last_pass"].is_array()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        vm(&env, "default", "vm-db-01").is_some(),
        "maxVms 1 refuses the plan"
    );
    std::fs::write(&config, "maxVms: 50\nfollowFor: 3s\n").expect("rewrite the config file");
    let mut followed = Value::Null;
    for _ in 0..3000 {
        followed = std::fs::read(env.state_path("last-run.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|r| follow_of(&r, STOPPING_NS, STOPPING))
            .unwrap_or(Value::Null);
        if !followed.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = agent.start_kill();
    let out = agent.wait_with_output().await.expect("agent output");
    assert_eq!(
        followed["outcome"],
        "not_back",
        "{followed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(followed["seconds"], 3, "{followed}");
}

/// Fail closed: an agent that cannot watch the cluster's VMs never guesses what became of
/// the VM it recovered — at the bound it reports it not back and names the failed read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_cannot_watch_the_followed_vms_says_so() {
    use crate::e2e_support::ACTING_AGENT;
    let env = always_env().await;
    env.sim.add_fault(harvester_sim::FaultRule::status(
        Some("GET"),
        "/apis/kubevirt.io/v1/virtualmachines",
        500,
    ));
    let mut args: Vec<&str> = vec!["--follow-for", "3s"];
    args.extend_from_slice(ACTING_AGENT);
    let mut agent = env.command(&args).spawn().expect("start the agent");
    let mut followed = Value::Null;
    for _ in 0..3000 {
        followed = std::fs::read(env.state_path("last-run.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|r| follow_of(&r, STOPPING_NS, STOPPING))
            .unwrap_or(Value::Null);
        if !followed.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = agent.start_kill();
    let out = agent.wait_with_output().await.expect("agent output");
    assert_eq!(
        followed["outcome"],
        "not_back",
        "{followed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let why = followed["why"].to_string();
    assert!(
        why.contains("could not read: watching VMs and VMIs"),
        "{why}"
    );
}
