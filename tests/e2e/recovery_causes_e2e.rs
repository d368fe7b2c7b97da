//! One recovery per cause of the stuck state, each against the simulated controllers that
//! cause implies (running in their own tasks, as real ones do): virt-controller dead, a pod
//! object left on a node whose kubelet is down, Harvester's PVC clean-up failing, and the
//! controllers that would have finished on their own (vmrecover then changes nothing but
//! pods, and its controller wait ends through a watch), and virt-api's webhook down (the
//! controllers are refused too; `admission_e2e` has the webhook cases in detail). End states
//! are compared only once the controllers have settled.

use std::time::Duration;

use crate::e2e_support::{Env, NODE};
use serde_json::Value;

const VMI_PATH: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";

/// The power-loss cluster with the given controllers, asynchronous with `delay`.
async fn env(virt: bool, harvester: bool, node_down: bool, delay: Duration) -> Env {
    let env = Env::with_texts(&[]).await;
    env.sim.set_controller_delay(delay);
    env.sim.set_harvester_controller(harvester);
    env.sim.set_node_down(NODE, node_down);
    env.sim.set_virt_controller(virt);
    env
}

/// `run --yes` with a controller grace.
fn run_args(grace: &str) -> Vec<&str> {
    vec![
        "run",
        "--yes",
        "--stuck-after",
        "0s",
        "--controller-grace",
        grace,
        "--output",
        "json",
    ]
}

fn get(env: &Env, kind: &str, ns: &str, name: &str) -> Option<Value> {
    env.sim.get("kubevirt.io/v1", kind, ns, name)
}

/// vmrecover's finalizer PATCHes, as `METHOD path`.
fn finalizer_patches(env: &Env) -> Vec<String> {
    env.sim
        .mutating_requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/virtualmachine"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// vmrecover's mutating requests other than its Lease and Events.
fn changes(env: &Env) -> Vec<String> {
    env.sim
        .mutating_requests()
        .iter()
        .filter(|r| !r.path.contains("/leases") && !r.path.ends_with("/events"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

async fn settle(env: &Env) {
    assert!(
        env.sim
            .wait_controllers_settled(Duration::from_secs(30))
            .await,
        "controllers did not settle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_dead_vmrecover_clears_the_finalizers() {
    let env = env(false, false, true, Duration::from_millis(100)).await;
    settle(&env).await;
    let ran = env.run(&run_args("1s")).await;
    assert_eq!(ran.code, 3, "{}", ran.all());
    settle(&env).await;
    assert!(get(&env, "VirtualMachineInstance", "default", "vm-web-01").is_none());
    assert!(get(&env, "VirtualMachine", "default", "vm-web-01").is_none());
    assert!(
        finalizer_patches(&env)
            .iter()
            .any(|p| p.ends_with("/virtualmachineinstances/vm-web-01")),
        "{:?}",
        finalizer_patches(&env)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_left_on_a_down_node_is_freed_and_the_controllers_finish() {
    // virt-controller and Harvester run; the node's kubelet is down: vm-db-01's launcher pod
    // stays Terminating and blocks virt-controller, nothing else does.
    let env = env(true, true, true, Duration::from_millis(100)).await;
    settle(&env).await;
    let db = get(&env, "VirtualMachineInstance", "default", "vm-db-01");
    assert!(db.is_some(), "the Terminating pod blocks virt-controller");
    assert!(get(&env, "VirtualMachineInstance", "default", "vm-web-01").is_none());

    let ran = env.run(&run_args("60s")).await;
    settle(&env).await;
    assert!(
        get(&env, "VirtualMachineInstance", "default", "vm-db-01").is_none(),
        "{}",
        ran.all()
    );
    assert!(get(&env, "VirtualMachine", "default", "vm-db-01").is_none());
    assert_eq!(
        finalizer_patches(&env),
        Vec::<String>::new(),
        "{}",
        ran.all()
    );
    assert!(
        changes(&env)
            .iter()
            .any(|c| c.starts_with("DELETE ") && c.contains("virt-launcher-vm-db-01")),
        "{:?}",
        changes(&env)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harvester_clean_up_failing_is_cleared_and_said() {
    // Another VM, not being deleted, still uses vm-db-01's disk: Harvester's webhook refuses
    // the PVC's deletion, so its VM controller never drops CleanupPVCAndSnapshot.
    let other = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: vm-shares-disk, namespace: default, uid: 11111111-0000-4000-8000-0000000000ff}
spec:
  runStrategy: Halted
  template:
    spec:
      domain: {devices: {}}
      volumes:
      - name: disk-0
        persistentVolumeClaim: {claimName: vm-db-01-disk-0-fghij}
"#;
    let env = Env::with_texts(&[other]).await;
    env.sim.set_controller_delay(Duration::from_millis(100));
    env.sim.set_harvester_controller(true);
    env.sim.set_virt_controller(true);
    settle(&env).await;
    let ran = env.run(&run_args("2s")).await;
    settle(&env).await;
    assert!(
        get(&env, "VirtualMachine", "default", "vm-db-01").is_none(),
        "{}",
        ran.all()
    );
    assert!(
        env.sim
            .get(
                "v1",
                "PersistentVolumeClaim",
                "default",
                "vm-db-01-disk-0-fghij"
            )
            .is_some(),
        "the clean-up was skipped, the PVC is left"
    );
    let removed: Vec<String> = finalizer_patches(&env);
    assert!(
        removed
            .iter()
            .any(|p| p.ends_with("/virtualmachines/vm-db-01")),
        "{removed:?}"
    );
    assert!(
        ran.stdout.contains("CleanupPVCAndSnapshot")
            && ran.stdout.contains("vm-db-01-disk-0-fghij"),
        "the report says what was skipped: {}",
        ran.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_back_and_controllers_on_vmrecover_only_waits() {
    // The node is back and every controller runs, slowly: vmrecover starts before they are
    // done, frees pods at most, and its wait ends when the watch sees them finish.
    let env = env(true, true, false, Duration::from_millis(700)).await;
    // A grace far longer than the run limit: the run can only finish when its wait ends by
    // watching the controllers finish (a run past the limit is killed and reported HUNG).
    let ran = env.run(&run_args("24h")).await;
    assert_ne!(ran.code, -2, "the wait did not end by watch: {}", ran.all());
    settle(&env).await;
    for (ns, name) in [
        ("default", "vm-web-01"),
        ("default", "vm-db-01"),
        ("default", "vm-live-01"),
        ("prod", "vm-legacy-01"),
    ] {
        assert!(
            get(&env, "VirtualMachineInstance", ns, name).is_none(),
            "{name}: {}",
            ran.all()
        );
        assert!(get(&env, "VirtualMachine", ns, name).is_none(), "{name}");
    }
    assert_eq!(
        finalizer_patches(&env),
        Vec::<String>::new(),
        "{}",
        ran.all()
    );
    let other: Vec<String> = changes(&env)
        .into_iter()
        .filter(|c| !(c.starts_with("DELETE ") && c.contains("/pods/virt-launcher-")))
        .collect();
    assert_eq!(other, Vec::<String>::new(), "pod DELETEs at most");
    let watched = env
        .sim
        .requests()
        .iter()
        .any(|r| !r.internal && r.path.starts_with(VMI_PATH) && r.query.contains("watch=true"));
    assert!(watched, "no watch on the VMIs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_down_blocks_everyone_until_it_is_back() {
    // virt-api's webhooks are down after the power cut: the controllers' own VMI updates are
    // refused like vmrecover's (every VMI update passes them). vmrecover frees the pod, its
    // patch fails naming the webhook; once virt-api is back the controllers finish alone.
    let env = env(true, true, true, Duration::from_millis(100)).await;
    let switched = env
        .sim
        .set_webhook("virt-api", harvester_sim::WebhookState::Down);
    assert!(switched.is_ok(), "{switched:?}");
    settle(&env).await;
    assert!(
        get(&env, "VirtualMachineInstance", "default", "vm-web-01").is_some(),
        "the controllers cannot finish while virt-api is down"
    );
    let ran = env.run(&run_args("1s")).await;
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(ran.stdout.contains("is unavailable"), "{}", ran.all());
    assert!(
        changes(&env)
            .iter()
            .any(|c| c.starts_with("DELETE ") && c.contains("virt-launcher-vm-db-01")),
        "{:?}",
        changes(&env)
    );
    assert!(get(&env, "VirtualMachineInstance", "default", "vm-db-01").is_some());

    let _ = env
        .sim
        .set_webhook("virt-api", harvester_sim::WebhookState::Up);
    settle(&env).await;
    for name in ["vm-web-01", "vm-db-01"] {
        assert!(
            get(&env, "VirtualMachineInstance", "default", name).is_none(),
            "{name}"
        );
        assert!(
            get(&env, "VirtualMachine", "default", name).is_none(),
            "{name}"
        );
    }
}
