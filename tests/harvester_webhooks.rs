//! Harvester's VM validator with content (issue 22 item 6, the part modelled): on Harvester
//! 1.4–1.6 `validator.harvesterhci.io` refuses every UPDATE of a VM listing a PVC another VM
//! of its namespace lists ("the volume X is already used by VM ns/name", 422), a
//! finalizer-only patch of a deleting VM included. vmrecover reports that denial once, with
//! the webhook's message and what to do, and does not retry it as a conflict.

mod e2e_support;

use e2e_support::{host_root, Env};
use harvester_sim::{shipped_scenario, Sim, SimConfig};

/// A VM, not being deleted, that lists vm-db-01's disk.
const SHARES_DISK: &str = r#"
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

async fn env(release: &str) -> Env {
    let sim = Sim::start(
        SimConfig::default()
            .release(release)
            .scenario_file(shipped_scenario("power-loss.yaml"))
            .scenario_text(SHARES_DISK),
    )
    .await
    .expect("start harvester-sim");
    sim.set_virt_controller(false);
    Env {
        sim,
        state: tempfile::tempdir().expect("tempdir"),
        host_root: host_root(),
        vars: Vec::new(),
    }
}

const RUN: &[&str] = &[
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
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validators_occupied_pvc_denial_is_reported_once_with_its_message() {
    let env = env("1.6").await;
    let ran = env.run(RUN).await;
    let report = ran.json().to_string();
    assert!(
        report.contains(
            "virtualmachines default/vm-db-01: admission webhook validator.harvesterhci.io denied the change: the volume vm-db-01-disk-0-fghij is already used by VM default/vm-shares-disk; nothing was changed and it is not retried in this run"
        ),
        "{}",
        ran.all()
    );
    let vm_patches = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/virtualmachines/vm-db-01"))
        .count();
    assert_eq!(vm_patches, 1, "one request, no retry loop");
    // The VMI (not validated by Harvester) went; the VM keeps its finalizers.
    assert!(env
        .sim
        .get("kubevirt.io/v1", "VirtualMachine", "default", "vm-db-01")
        .is_some());
}
