//! The holes in the proof that issue 12 closes, end to end: the built binary against
//! harvester-sim, real fake VM processes, and a host-root tree with the host's identity.

use crate::e2e_support::{report_identity, write_identity, Env, BOOT_ID, MACHINE_ID, NODE, RUN};
use serde_json::Value;

/// A deleting VMI on node-1 with no PVC, finalizers KubeVirt's; `extra` is YAML merged
/// into its metadata.labels / status (indented as given).
fn vmi(name: &str, uid: &str, labels: &str, status: &str) -> String {
    format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: {name}
  namespace: default
  uid: {uid}
  deletionTimestamp: "2025-06-02T08:31:40Z"
  finalizers:
  - kubevirt.io/foregroundDeleteVirtualMachine
  labels:
{labels}
spec:
  domain: {{devices: {{}}}}
status:
{status}
"#
    )
}

/// The plan of a run's JSON: the report's, or the plan itself when nothing was applied.
fn plan_of(out: &Value) -> &Value {
    if out["plan"].is_object() {
        &out["plan"]
    } else {
        out
    }
}

fn decision<'a>(out: &'a Value, name: &str) -> &'a Value {
    plan_of(out)["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no decision for {name}: {out:#}"))
}

/// Item 1: `--node` names another machine: every change is refused, naming both ids; the
/// dry-run still shows the plan, marked refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_name_that_is_not_this_machine_changes_nothing() {
    let env = Env::power_loss().await;
    write_identity(
        env.host_root.path(),
        "0123456789abcdef0123456789abcdef",
        BOOT_ID,
    );
    env.sim.clear_requests();
    let ran = env.run(&[RUN, &["--kill-orphans"]].concat()).await;
    assert_eq!(ran.code, 3, "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        env.sim.mutating_requests().is_empty(),
        "{:#?}",
        env.sim.mutating_requests()
    );
    let dry = env.run(crate::e2e_support::DRY_RUN).await;
    let plan = dry.json();
    assert_eq!(plan["refused"]["blocker"], "identity_mismatch", "{plan:#}");
    let why = plan["refused"]["text"].as_str().unwrap();
    assert!(
        why.contains(MACHINE_ID) && why.contains("0123456789abcdef0123456789abcdef"),
        "{why}"
    );
    assert!(
        plan["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["action"]["kind"] == "recover"),
        "the plan is still shown: {plan:#}"
    );
}

/// Item 1: the Node still shows the previous boot: wait for the kubelet, change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_the_kubelet_has_not_reported_yet_changes_nothing() {
    let env = Env::power_loss().await;
    report_identity(
        &env.sim,
        NODE,
        MACHINE_ID,
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    );
    env.sim.clear_requests();
    let ran = env.run(RUN).await;
    assert_eq!(ran.code, 3, "{}\n{}", ran.stdout, ran.stderr);
    assert!(env.sim.mutating_requests().is_empty());
    let report = ran.json();
    assert_eq!(
        plan_of(&report)["refused"]["blocker"],
        "boot_not_reported",
        "{report:#}"
    );
    // Once the kubelet reports this boot, the same run recovers.
    report_identity(&env.sim, NODE, MACHINE_ID, BOOT_ID);
    let ran = env.run(RUN).await;
    assert!(
        ran.json()["outcomes"]
            .as_array()
            .is_some_and(|o| !o.is_empty()),
        "{}",
        ran.stdout
    );
}

/// Item 2: a launcher of a VM that is starting (its VMI names no node yet) is not an
/// orphan, and `--kill-orphans` leaves it running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_orphans_never_kills_a_vm_that_is_starting() {
    let uid = "22222222-0000-4000-8000-0000000000aa";
    let starting = format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {{name: vm-starting, namespace: default, uid: {uid}}}
spec: {{domain: {{devices: {{}}}}}}
status: {{phase: Scheduling}}
"#
    );
    let env = Env::with_texts(&[&starting]).await;
    let mut launcher = env.fake_vm(
        harvester_sim::node::LAUNCHER,
        "/usr/bin/virt-launcher",
        &harvester_sim::node::launcher_args("default", "vm-starting", uid),
    );
    let ran = env
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
        ran.code == 0 || ran.code == 3,
        "{}\n{}",
        ran.stdout,
        ran.stderr
    );
    assert!(
        launcher.child.try_wait().unwrap().is_none(),
        "a starting VM was killed"
    );
    let report = ran.json();
    assert!(
        plan_of(&report)["orphans"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["pid"] != launcher.node_pid()),
        "{report:#}"
    );
    let d = decision(&report, "vm-starting");
    assert_eq!(d["action"]["kind"], "not_mine", "{d:#}");
    assert!(
        d["reasons"][0]["text"]
            .as_str()
            .unwrap()
            .contains("starting"),
        "{d:#}"
    );
}

/// Item 7: label and status disagree: blocked, with the reason, never changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmi_whose_label_and_status_disagree_is_blocked() {
    let text = vmi(
        "vm-doubt",
        "22222222-0000-4000-8000-0000000000bb",
        "    kubevirt.io/nodeName: harvester-node-1",
        "  phase: Running\n  nodeName: harvester-node-2",
    );
    let env = Env::with_texts(&[&text]).await;
    let ran = env.run(RUN).await;
    let report = ran.json();
    let d = decision(&report, "vm-doubt");
    assert_eq!(d["action"]["kind"], "blocked", "{d:#}");
    assert_eq!(d["reasons"][0]["blocker"], "node_disagreement");
    assert!(env
        .sim
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "vm-doubt"
        )
        .is_some_and(|v| v["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())));
}

/// Item 8: a failed migration left the target label behind (KubeVirt <= 1.5): the
/// migration state, not the label, decides, so the VMI is recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_migration_label_does_not_block_forever() {
    let text = vmi(
        "vm-was-migrating",
        "22222222-0000-4000-8000-0000000000cc",
        "    kubevirt.io/nodeName: harvester-node-1\n    kubevirt.io/migrationTargetNodeName: harvester-node-2",
        "  phase: Failed\n  nodeName: harvester-node-1\n  migrationState:\n    startTimestamp: \"2025-06-01T10:00:00Z\"\n    endTimestamp: \"2025-06-01T10:01:00Z\"\n    failed: true\n    sourceNode: harvester-node-1\n    targetNode: harvester-node-2",
    );
    let env = Env::with_texts(&[&text]).await;
    let ran = env.run(RUN).await;
    let report = ran.json();
    let d = decision(&report, "vm-was-migrating");
    assert_eq!(d["action"]["kind"], "recover", "{d:#}");
    assert!(env
        .sim
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "vm-was-migrating"
        )
        .is_none());
}

/// Item 5: the proof is re-established right before the first change, attachments
/// included: a disk Longhorn attached to another node since the plan leaves the VM alone,
/// and the audit evidence is the fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_elsewhere_since_the_plan_leaves_the_vm_alone() {
    let env = Env::power_loss().await;
    let volume = "pvc-44444444-0000-4000-8000-000000000001";
    let ran = crate::e2e_support::between_plan_and_apply(&env, || {
        let mut v = env
            .sim
            .get("longhorn.io/v1beta2", "Volume", "longhorn-system", volume)
            .expect("vm-web-01's Longhorn volume");
        v["status"]["currentNodeID"] = "harvester-node-2".into();
        env.sim.put(v).expect("attach it elsewhere");
    })
    .await;
    let got = crate::e2e_support::outcomes(&ran.json());
    let (result, reason) = &got["default/vm-web-01"];
    assert_eq!(result, "aborted", "{}", ran.all());
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("harvester-node-2")),
        "{}",
        ran.all()
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
}

/// Items 3 and 4, end to end: vm-web-01's Longhorn volume is attached here with a
/// partition that a guest filesystem mounted on the host uses, and vm-legacy-01's disk
/// is a static PV (`restored-legacy`) whose device carries a device-mapper volume (a
/// guest LVM the host auto-activated). Both are blocked as held; before, only the whole
/// device under the PV name was checked and both were "not held".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_stacked_devices_and_static_pvs_block_end_to_end() {
    if !harvester_sim::node::is_root() {
        eprintln!("skipped: mknod needs root");
        return;
    }
    let env = Env::power_loss().await;
    let t = harvester_sim::node::HostTree::new(env.host_root.path());
    t.longhorn("pvc-44444444-0000-4000-8000-000000000001", "sdg", (8, 96));
    t.partition("sdg", "sdg1", (8, 97), 1);
    // vm-legacy-01's PV is static: its Longhorn volume has another name.
    let mut pv = env
        .sim
        .list("v1", "PersistentVolume")
        .into_iter()
        .find(|p| {
            p["spec"]["claimRef"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("vm-legacy-01"))
        })
        .expect("vm-legacy-01's PV");
    pv["spec"]["csi"]["volumeHandle"] = "restored-legacy".into();
    env.sim.put(pv).expect("static PV");
    t.longhorn("restored-legacy", "sdh", (8, 112));
    t.partition("sdh", "sdh1", (8, 113), 1);
    t.dm("dm-5", (253, 5), "vg_guest-root", &["sdh1"]);
    t.mountinfo(
        "25 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
         90 25 8:97 / /mnt/guest-data rw,relatime shared:40 - ext4 /dev/sdg1 rw\n",
    );
    let dry = env.run(crate::e2e_support::DRY_RUN).await;
    let plan = dry.json();
    for (vm, needle) in [("vm-web-01", "sdg1"), ("vm-legacy-01", "dm-5")] {
        let d = decision(&plan, vm);
        assert_eq!(d["action"]["kind"], "blocked", "{d:#}");
        assert!(d["reasons"].to_string().contains("disk_held"), "{d:#}");
        assert!(d["reasons"].to_string().contains(needle), "{vm}: {d:#}");
    }
}

/// Item 6: a memory-dump volume's PVC is checked like any disk: its PV attached to another
/// node blocks the VM (before, memoryDump volumes were not looked at).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_dump_volume_is_checked_end_to_end() {
    let dump = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: vm-web-01-dump, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 5Gi}}
  volumeName: pvc-web-01-dump
status: {phase: Bound}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pvc-web-01-dump}
spec:
  capacity: {storage: 5Gi}
  accessModes: [ReadWriteOnce]
  claimRef: {kind: PersistentVolumeClaim, namespace: default, name: vm-web-01-dump}
  csi: {driver: driver.longhorn.io, volumeHandle: pvc-web-01-dump}
status: {phase: Bound}
---
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata: {name: csi-web-01-dump-node2}
spec:
  attacher: driver.longhorn.io
  nodeName: harvester-node-2
  source: {persistentVolumeName: pvc-web-01-dump}
status: {attached: true}
"#;
    let volume = crate::e2e_support::longhorn_volume_yaml("pvc-web-01-dump", "harvester-node-2");
    let env = Env::with_texts(&[dump, &volume]).await;
    let mut vmi = env
        .sim
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "vm-web-01",
        )
        .expect("vm-web-01");
    vmi["spec"]["volumes"]
        .as_array_mut()
        .expect("volumes")
        .push(serde_json::json!({"name": "dump", "memoryDump": {"claimName": "vm-web-01-dump"}}));
    env.sim.put(vmi).expect("add the memory dump volume");
    let dry = env.run(crate::e2e_support::DRY_RUN).await;
    let d = decision(&dry.json(), "vm-web-01").clone();
    assert_eq!(d["action"]["kind"], "blocked", "{d:#}");
    assert!(
        d["reasons"].to_string().contains("pvc-web-01-dump")
            && d["reasons"].to_string().contains("harvester-node-2"),
        "{d:#}"
    );
}
