//! Issue 7, races: two runs on one node at once (only the Lease holder acts), and a new
//! launcher pod or VM process appearing between plan and apply (that VM is left alone).

use crate::e2e_support::*;
use harvester_sim::FaultAction;
use serde_json::json;

const WEB_VMI_UID: &str = "22222222-0000-4000-8000-000000000001";

async fn reference() -> (Allowed, std::collections::BTreeMap<String, Vec<String>>) {
    let env = Env::power_loss().await;
    let allowed = Allowed::from_plan(&env.run(DRY_RUN).await.json());
    assert_eq!(env.run(RUN).await.code, 3);
    (allowed, end_state(&env.sim))
}

async fn both(env: &Env, args: &[&str]) -> (Ran, Ran) {
    let (a, b) = tokio::join!(env.run(args), env.run(args));
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_only_the_lease_holder_acts() {
    let (allowed, end) = reference().await;
    let env = Env::power_loss().await;
    // Keep the holder busy long enough for the other to find the Lease taken.
    env.sim.add_fault(rule(
        "PATCH",
        "*/virtualmachineinstances/*",
        FaultAction::Latency { ms: 300 },
        None,
    ));
    let (a, b) = both(&env, RUN).await;
    let mut codes = [a.code, b.code];
    codes.sort();
    assert_eq!(codes, [1, 3], "{}\n---\n{}", a.all(), b.all());
    let loser = if a.code == 1 { &a } else { &b };
    assert!(
        loser.stderr.contains("is held by manual@") && loser.stderr.contains("nothing was changed"),
        "{}",
        loser.all()
    );
    assert!(allowed.violations(&env.sim).is_empty());
    assert_eq!(end_state(&env.sim), end);

    // With --lease-wait the second waits, then finds its plan already done.
    let env = Env::power_loss().await;
    env.sim.add_fault(rule(
        "PATCH",
        "*/virtualmachineinstances/*",
        FaultAction::Latency { ms: 300 },
        None,
    ));
    let mut args = RUN.to_vec();
    args.extend(["--lease-wait", "30s"]);
    let (a, b) = both(&env, &args).await;
    assert!(a.code == 3 && b.code == 3, "{}\n---\n{}", a.all(), b.all());
    assert!(allowed.violations(&env.sim).is_empty());
    assert_eq!(end_state(&env.sim), end);
    let patches = env
        .sim
        .mutating_requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.status == 200)
        .count();
    assert_eq!(
        patches,
        allowed.finalizers.len(),
        "each planned finalizer patch applied once in all"
    );
}

fn web_left_alone(env: &Env, run: &Ran, why: &str) {
    assert_eq!(run.code, 3, "{}", run.all());
    let got = outcomes(&run.json());
    let (result, reason) = &got["default/vm-web-01"];
    assert_eq!(result, "aborted", "{}", run.all());
    assert!(
        reason.as_deref().is_some_and(|r| r.contains(why)),
        "{}",
        run.all()
    );
    let vmi = env
        .sim
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "vm-web-01",
        )
        .expect("the VMI stays");
    assert_eq!(
        vmi["metadata"]["finalizers"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(env
        .sim
        .mutating_requests()
        .iter()
        .all(|r| !r.path.contains("virtualmachine")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_pod_created_between_plan_and_apply_leaves_the_vm_alone() {
    let env = Env::power_loss().await;
    let run = between_plan_and_apply(&env, || {
        env.sim
            .put(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "virt-launcher-vm-web-01-new42",
                    "namespace": "default",
                    "labels": {"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": WEB_VMI_UID},
                    "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                        "name": "vm-web-01", "uid": WEB_VMI_UID, "controller": true}],
                },
                "spec": {"nodeName": NODE, "containers": [{"name": "compute", "image": "virt-launcher"}]},
                "status": {"phase": "Pending"},
            }))
            .expect("put pod");
    })
    .await;
    web_left_alone(&env, &run, "new launcher pod");
}

/// The fake qemu runs in this test's own node (pid namespace): no other test sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_process_started_between_plan_and_apply_leaves_the_vm_alone() {
    let env = Env::power_loss().await;
    let mut qemu = None;
    let run = between_plan_and_apply(&env, || {
        qemu = Some(env.fake_vm(
            harvester_sim::node::QEMU,
            "/usr/bin/qemu-system-x86_64",
            &harvester_sim::node::qemu_args("default", "vm-web-01", WEB_VMI_UID),
        ));
    })
    .await;
    // The planner's own rule, re-run before the change: a live process blocks.
    web_left_alone(&env, &run, "still running here");
    let web = run.json()["outcomes"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["name"] == "vm-web-01").cloned());
    assert_eq!(
        web.map(|o| o["blocker"].clone()),
        Some(json!("live_process")),
        "{}",
        run.all()
    );
    drop(qemu);
}
