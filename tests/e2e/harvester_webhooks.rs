//! Harvester's VM validator with content (issue 22 item 6, the part modelled): on Harvester
//! 1.4–1.6 `validator.harvesterhci.io` refuses every UPDATE of a VM listing a PVC another VM
//! of its namespace lists ("the volume X is already used by VM ns/name", 422); from 1.7 when
//! another VM's non-shareable disk uses a Longhorn (or non-RWX) PVC ("PVC ns/X is already
//! used by other VM, please use a shareable RWX volume."); a finalizer-only patch of a
//! deleting VM included. vmrecover reports that denial once, with the webhook's message and
//! what to do, and does not retry it as a conflict.

use crate::e2e_support::Env;
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

/// The same VM with the disk KubeVirt requires for the volume (shareable or not).
fn shares_disk_with_disk(shareable: bool) -> String {
    SHARES_DISK.replace(
        "domain: {devices: {}}",
        &format!("domain: {{devices: {{disks: [{{name: disk-0, disk: {{bus: virtio}}, shareable: {shareable}}}]}}}}"),
    )
}

async fn env(release: &str) -> Env {
    env_with(release, SHARES_DISK).await
}

async fn env_with(release: &str, other: &str) -> Env {
    let sim = Sim::start(
        SimConfig::default()
            .release(release)
            .scenario_file(shipped_scenario("power-loss.yaml"))
            .scenario_text(other),
    )
    .await
    .expect("start harvester-sim");
    sim.set_virt_controller(false);
    Env::on(sim)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_1_7_a_non_shareable_disk_of_another_vm_is_refused_a_shareable_one_not() {
    let env = env_with("1.8", &shares_disk_with_disk(false)).await;
    let ran = env.run(RUN).await;
    assert!(
        ran.json().to_string().contains(
            "admission webhook validator.harvesterhci.io denied the change: PVC default/vm-db-01-disk-0-fghij is already used by other VM, please use a shareable RWX volume."
        ),
        "{}",
        ran.all()
    );
    // The other VM's disk marked shareable: vm-db-01 is recovered.
    let env = env_with("1.8", &shares_disk_with_disk(true)).await;
    let ran = env.run(RUN).await;
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(env
        .sim
        .get("kubevirt.io/v1", "VirtualMachine", "default", "vm-db-01")
        .is_none());
}
