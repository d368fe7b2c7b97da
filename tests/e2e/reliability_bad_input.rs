//! Issue 7, bad input: malformed and partial objects, huge ones, objects that lie about
//! their node, clock skew, corrupt and non-UTF-8 state files, unreadable host files. Each
//! gives a clear message and a safe decision; nothing panics.

use crate::e2e_support::*;
use serde_json::{json, Value};

fn no_panic(r: &Ran) {
    assert!(!r.stderr.contains("panicked"), "{}", r.all());
}

fn kubevirt_mutations(env: &Env) -> Vec<String> {
    env.sim
        .mutating_requests()
        .iter()
        .filter(|r| r.path.contains("kubevirt.io") || r.path.contains("/pods/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn vmi(name: &str, extra: Value) -> Value {
    let mut v = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"kubevirt.io/nodeName": NODE},
            "finalizers": ["kubevirt.io/foregroundDeleteVirtualMachine"],
            "deletionTimestamp": "2026-01-01T00:00:00Z",
        },
        "status": {"phase": "Running", "nodeName": NODE},
    });
    merge(&mut v, extra);
    v
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_vmi_is_named_and_nothing_on_the_node_is_touched() {
    for (what, extra) in [
        ("status is a string", json!({"status": "Running"})),
        (
            "finalizers is a string",
            json!({"metadata": {"finalizers": "x"}}),
        ),
        (
            "volumes is a string",
            json!({"spec": {"volumes": "disk-0"}}),
        ),
        ("phase is a number", json!({"status": {"phase": 7}})),
    ] {
        let env = Env::power_loss().await;
        env.sim.put(vmi("vm-bad", extra)).expect("put");
        let dry = env.run(DRY_RUN).await;
        no_panic(&dry);
        assert_eq!(dry.code, 3, "{what}: {}", dry.all());
        assert!(
            dry.stdout.contains("malformed object default/vm-bad"),
            "{what}: the message must name the object: {}",
            dry.all()
        );
        let run = env.run(RUN).await;
        no_panic(&run);
        assert_eq!(run.code, 3, "{what}: {}", run.all());
        assert!(
            kubevirt_mutations(&env).is_empty(),
            "{what}: {:?}",
            kubevirt_mutations(&env)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_objects_and_objects_on_another_node_are_decided_safely() {
    let env = Env::power_loss().await;
    // As big as the apiserver lets an object's metadata be: 5,000 finalizers and annotations
    // just under the 256 KiB total it allows (TotalAnnotationSizeLimitB); a bigger one is a
    // 422 and cannot exist.
    let finalizers: Vec<String> = (0..5000).map(|i| format!("example.com/f-{i}")).collect();
    let blob_key = "example.com/blob";
    let blob = "x".repeat(256 * 1024 - blob_key.len());
    env.sim
        .put(vmi(
            "vm-huge",
            json!({"metadata": {
                "finalizers": finalizers,
                "annotations": {blob_key: blob},
            }}),
        ))
        .expect("put");
    let mut too_big = vmi("vm-too-big", json!({}));
    too_big["metadata"]["annotations"] = json!({blob_key: "x".repeat(1 << 20)});
    let refused = env
        .sim
        .put(too_big)
        .expect_err("a 1 MiB annotation is refused");
    assert_eq!(refused.code, 422, "{refused}");
    env.sim
        .put(vmi(
            "vm-elsewhere",
            json!({"status": {"nodeName": "harvester-node-2"}}),
        ))
        .expect("put");
    env.sim
        .put(vmi(
            "vm-migrating",
            json!({"status": {"migrationState": {
                "sourceNode": NODE, "targetNode": "harvester-node-2", "completed": false}}}),
        ))
        .expect("put");
    let versions_before = versions(&env.sim);
    let dry = env.run(DRY_RUN).await;
    no_panic(&dry);
    let got = decisions(&dry.json());
    assert_eq!(got["default/vm-huge"], "blocked", "{got:?}");
    // Labelled for this node, status on node-2: in doubt, so blocked (never acted on).
    assert_eq!(got["default/vm-elsewhere"], "blocked", "{got:?}");
    assert_eq!(got["default/vm-migrating"], "not_mine", "{got:?}");
    let run = env.run(RUN).await;
    no_panic(&run);
    assert_eq!(run.code, 3, "{}", run.all());
    let after = versions(&env.sim);
    for name in ["vm-huge", "vm-elsewhere", "vm-migrating"] {
        let key = format!("VirtualMachineInstance default/{name}");
        assert_eq!(after.get(&key), versions_before.get(&key), "{key} changed");
    }
    // The rest of the node was still recovered.
    assert!(env
        .sim
        .get("kubevirt.io/v1", "VirtualMachine", "default", "vm-web-01")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_timestamp_in_the_future_is_not_stuck() {
    let env = Env::power_loss().await;
    let mut web = env
        .sim
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "vm-web-01",
        )
        .expect("vm-web-01");
    web["metadata"]["deletionTimestamp"] = json!("2099-01-01T00:00:00Z");
    env.sim.put(web).expect("put");
    let dry = env.run(DRY_RUN).await;
    no_panic(&dry);
    assert_eq!(decisions(&dry.json())["default/vm-web-01"], "waiting");
    let run = env.run(RUN).await;
    no_panic(&run);
    assert!(env
        .sim
        .mutating_requests()
        .iter()
        .all(|r| !r.path.contains("vm-web-01")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_non_utf8_intents_file_stops_every_change_with_a_message() {
    for body in [
        &b"{torn"[..],
        &b"\xff\xfe\x00garbage"[..],
        &b"{\"version\":1,\"intents\":7}"[..],
    ] {
        let env = Env::power_loss().await;
        std::fs::write(env.state_path("recovery-intents.json"), body).expect("write");
        let run = env.run(RUN).await;
        no_panic(&run);
        assert_eq!(run.code, 1, "{}", run.all());
        assert!(
            run.stdout.contains("recovery-intents.json"),
            "the message names the file: {}",
            run.all()
        );
        // Every change: no finalizer patch, and no pod free of a Stopping VM either
        // (issue 23: those used to pass); the plan is refused before the Lease is taken.
        let writes: Vec<_> = env
            .sim
            .mutating_requests()
            .into_iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(writes.is_empty(), "{writes:?}");
        assert_eq!(
            run.json()["refused"]["blocker"],
            "evidence_missing",
            "{}",
            run.all()
        );
        // The file is never overwritten: a person decides.
        assert_eq!(
            std::fs::read(env.state_path("recovery-intents.json")).expect("read"),
            body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_report_and_boot_record_files_do_not_stop_status_or_run() {
    let env = Env::power_loss().await;
    std::fs::write(env.state_path("last-run.json"), b"\xff\xff not json").expect("write");
    std::fs::write(env.state_path("boot-records.json"), b"[{\"boot_id\": 5}").expect("write");
    let status = env.run(&["status", "--output", "json"]).await;
    no_panic(&status);
    assert!([0, 1, 3].contains(&status.code), "{}", status.all());
    let run = env.run(RUN).await;
    no_panic(&run);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(env
        .sim
        .get("kubevirt.io/v1", "VirtualMachine", "default", "vm-web-01")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_host_evidence_blocks_the_vms_that_need_it() {
    let env = Env::power_loss().await;
    // mountinfo that cannot be read as a file.
    let mi = env.host_root.path().join("proc/1/mountinfo");
    std::fs::remove_file(&mi).expect("rm");
    std::fs::create_dir(&mi).expect("mkdir");
    let dry = env.run(DRY_RUN).await;
    no_panic(&dry);
    assert_eq!(dry.code, 3, "{}", dry.all());
    let plan = dry.json();
    let web = plan["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .find(|d| d["name"] == "vm-web-01")
        .expect("vm-web-01");
    assert_eq!(web["action"]["kind"], "blocked", "{web:#}");
    assert!(web["reasons"].to_string().contains("missing"), "{web:#}");
    let run = env.run(RUN).await;
    no_panic(&run);
    assert!(env
        .sim
        .get("kubevirt.io/v1", "VirtualMachine", "default", "vm-web-01")
        .is_some());
}

/// Issue 23 item 7: intents whose VM is gone or was recreated under its name are pruned
/// by the next applying run, each with a line in its report; the live ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_intents_are_pruned_with_a_line_in_the_report() {
    let env = Env::power_loss().await;
    let intent = |name: &str, uid: &str| {
        serde_json::json!({
            "namespace": "default", "name": name, "vm_uid": uid,
            "vmi_uid": format!("{uid}-vmi"), "pvcs": [], "disks": [],
            "started": "2026-01-01T00:00:00Z"
        })
    };
    let file = serde_json::json!({"version": 1, "intents": [
        intent("vm-long-gone", "uid-gone"),
        intent("vm-web-01", "uid-of-an-older-vm-web-01"),
    ]});
    std::fs::write(env.state_path("recovery-intents.json"), file.to_string()).expect("write");
    let run = env.run(RUN).await;
    no_panic(&run);
    let report = run.json();
    let pruned: Vec<String> = report["pruned_intents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(String::from))
        .collect();
    assert_eq!(pruned.len(), 2, "{}", run.all());
    assert!(pruned
        .iter()
        .any(|l| l.contains("vm-long-gone") && l.contains("the VM is gone")));
    assert!(pruned
        .iter()
        .any(|l| l.contains("vm-web-01") && l.contains("recreated")));
    let left = std::fs::read_to_string(env.state_path("recovery-intents.json")).unwrap_or_default();
    assert!(
        !left.contains("uid-gone") && !left.contains("uid-of-an-older"),
        "{left}"
    );
}
