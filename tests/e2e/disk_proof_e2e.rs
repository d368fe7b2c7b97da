//! What the disk proof checks beyond a VMI's spec volumes (issue 23 items 3 and 4):
//!
//! - a disk deleted by hand (its PVC, PV and Longhorn volume gone) is proven absent from
//!   this node while other Longhorn users are on it: the monitoring add-on's Prometheus
//!   volume attached here as a device, an RWX volume NFS-mounted from its share-manager.
//!   Each exists as a Longhorn volume naming its own PVC, so it is not the gone disk; a
//!   device no existing volume explains still blocks;
//! - the backend-storage PVC of a VM with persistent EFI/TPM (KubeVirt 1.3:
//!   `persistent-state-for-<vm>`, an RWX volume the launcher mounts over NFS) is proved like
//!   any other disk;
//! - a PVC deleted and made again under the same name after the VMI (item 5) is a
//!   replacement: the proof follows the old disk, never the new one, and nothing suggests
//!   deleting the new PVC; for a claim made after the VMI by design (a DataVolume, a
//!   hotplugged disk) the creation times cannot tell, so the PVC's UID recorded when
//!   vmrecover first saw the VMI deciding does.

use crate::e2e_support::{decisions, Env};
use serde_json::json;

const PVC_WEB: &str = "vm-web-01-disk-0-abcde";
const PV_WEB: &str = "pvc-44444444-0000-4000-8000-000000000001";
const VA_WEB: &str = "csi-5e2cb150677cb87420f431b0f95ebb3d38832ff4996f5d1390b998a7ca9d6cc7";
const PROM: &str = "pvc-prom-0001";
const RWX: &str = "pvc-rwx-0001";

/// vm-web-01's disk deleted by hand: nothing of it left in the cluster.
fn delete_web_disk(env: &Env) {
    let s = &env.sim;
    assert!(s.remove("v1", "PersistentVolumeClaim", "default", PVC_WEB));
    assert!(s.remove("v1", "PersistentVolume", "", PV_WEB));
    assert!(s.remove("longhorn.io/v1beta2", "Volume", "longhorn-system", PV_WEB));
    s.remove(
        "longhorn.io/v1beta2",
        "VolumeAttachment",
        "longhorn-system",
        PV_WEB,
    );
    s.remove("storage.k8s.io/v1", "VolumeAttachment", "", VA_WEB);
}

/// A Longhorn volume that exists and names its own PVC.
fn longhorn_volume(env: &Env, name: &str, ns: &str, pvc: &str) {
    env.sim
        .put(
            json!({"apiVersion": "longhorn.io/v1beta2", "kind": "Volume",
            "metadata": {"name": name, "namespace": "longhorn-system"},
            "spec": {"accessMode": "rwo", "numberOfReplicas": 3},
            "status": {"state": "attached", "currentNodeID": "harvester-node-1",
                "kubernetesStatus": {"namespace": ns, "pvcName": pvc, "pvName": name}}}),
        )
        .expect("longhorn volume");
}

/// This node holds Prometheus's device and an RWX volume's NFS mount.
fn other_users_on_the_node(env: &Env) {
    let root = env.host_root.path();
    std::fs::write(root.join("dev/longhorn").join(PROM), "").expect("prom device");
    let mountinfo = root.join("proc/1/mountinfo");
    let mut text = std::fs::read_to_string(&mountinfo).expect("mountinfo");
    text.push_str(&format!(
        "40 25 0:77 / /var/lib/kubelet/pods/0b1c/volumes/kubernetes.io~csi/{RWX}/mount \
         rw,relatime shared:30 - nfs4 10.53.0.7:/{RWX} rw,vers=4.1\n"
    ));
    std::fs::write(&mountinfo, text).expect("write mountinfo");
}

async fn plan(env: &Env) -> serde_json::Value {
    let run = env
        .run(&[
            "run",
            "--dry-run",
            "--stuck-after",
            "0s",
            "--output",
            "json",
        ])
        .await;
    run.json()
}

fn web(plan: &serde_json::Value) -> serde_json::Value {
    plan["decisions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "vm-web-01"))
        .cloned()
        .unwrap_or_else(|| panic!("no vm-web-01 in {plan:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_longhorn_users_here_do_not_block_a_disk_deleted_by_hand() {
    let env = Env::power_loss().await;
    delete_web_disk(&env);
    other_users_on_the_node(&env);

    // Nothing tells what the device and the mount are: they could be the gone disk.
    let p = plan(&env).await;
    let d = web(&p);
    assert_eq!(d["action"]["kind"], "blocked", "{d:#}");
    assert!(d["reasons"].to_string().contains(PROM), "{d:#}");

    // They are Prometheus's and a file share's volumes, which exist.
    longhorn_volume(
        &env,
        PROM,
        "cattle-monitoring-system",
        "prometheus-rancher-monitoring-db",
    );
    longhorn_volume(&env, RWX, "default", "shared-files");
    let p = plan(&env).await;
    assert_eq!(
        decisions(&p)["default/vm-web-01"],
        "recover",
        "{:#}",
        web(&p)
    );
    assert!(
        web(&p)["evidence"]
            .to_string()
            .contains("another existing Longhorn volume does not account for"),
        "{:#}",
        web(&p)
    );
    assert!(env.sim.mutating_requests().is_empty());
}

/// vm-db-01 has persistent EFI: its backend-storage PVC (KubeVirt 1.3 naming) on a Longhorn
/// RWX volume.
fn backend_storage_for_db(env: &Env) {
    let s = &env.sim;
    let mut vmi = s
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "vm-db-01",
        )
        .expect("vmi");
    vmi["spec"]["domain"]["firmware"] = json!({"bootloader": {"efi": {"persistent": true}}});
    s.put(vmi).expect("persistent EFI");
    s.put(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "persistent-state-for-vm-db-01", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteMany"], "volumeName": STATE_PV,
                 "resources": {"requests": {"storage": "10Mi"}}, "storageClassName": "longhorn"},
        "status": {"phase": "Bound"}}))
        .expect("backend pvc");
    s.put(json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": STATE_PV},
        "spec": {"accessModes": ["ReadWriteMany"], "capacity": {"storage": "10Mi"},
                 "csi": {"driver": "driver.longhorn.io", "volumeHandle": STATE_PV},
                 "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default",
                              "name": "persistent-state-for-vm-db-01"}},
        "status": {"phase": "Bound"}}))
        .expect("backend pv");
}

const STATE_PV: &str = "pvc-state-db-0001";

fn mount_line(pv: &str) -> String {
    format!(
        "41 25 0:78 / /var/lib/kubelet/pods/7d2e/volumes/kubernetes.io~csi/{pv}/mount \
         rw,relatime shared:31 - nfs4 10.53.0.8:/{pv} rw,vers=4.1\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_storage_pvc_is_proved_like_any_disk() {
    let env = Env::power_loss().await;
    backend_storage_for_db(&env);
    // Its launcher (a leftover after the reboot) still has the NFS mount of the state volume.
    let mountinfo = env.host_root.path().join("proc/1/mountinfo");
    let clean = std::fs::read_to_string(&mountinfo).expect("mountinfo");
    std::fs::write(&mountinfo, format!("{clean}{}", mount_line(STATE_PV))).expect("mount");
    let p = plan(&env).await;
    let db = p["decisions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "vm-db-01"))
        .cloned()
        .expect("vm-db-01");
    assert_eq!(db["action"]["kind"], "blocked", "{db:#}");
    assert!(db["reasons"].to_string().contains("disk_held"), "{db:#}");
    assert!(db["reasons"].to_string().contains(STATE_PV), "{db:#}");

    // Unmounted: proved free, with the state volume named in the evidence.
    std::fs::write(&mountinfo, clean).expect("unmount");
    let p = plan(&env).await;
    assert_eq!(decisions(&p)["default/vm-db-01"], "recover", "{p:#}");
    let db = p["decisions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "vm-db-01"))
        .cloned()
        .expect("vm-db-01");
    assert!(
        db["evidence"].to_string().contains(STATE_PV),
        "{:#}",
        db["evidence"]
    );
    assert!(env.sim.mutating_requests().is_empty());
}

/// The operator deleted vm-web-01's PVC (its Released PV stays) and made a new one of the
/// same name for another use, bound to a new volume attached to harvester-node-2.
fn replace_web_pvc(env: &Env) {
    let s = &env.sim;
    assert!(s.remove("v1", "PersistentVolumeClaim", "default", PVC_WEB));
    s.put(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": PVC_WEB, "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pvc-new-0001",
                 "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "longhorn"},
        "status": {"phase": "Bound"}}))
        .expect("new pvc");
    s.put(json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pvc-new-0001"},
        "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                 "csi": {"driver": "driver.longhorn.io", "volumeHandle": "pvc-new-0001"},
                 "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": PVC_WEB}},
        "status": {"phase": "Bound"}}))
    .expect("new pv");
    s.put(
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
        "metadata": {"name": "csi-new-on-node-2"},
        "spec": {"attacher": "driver.longhorn.io", "nodeName": "harvester-node-2",
                 "source": {"persistentVolumeName": "pvc-new-0001"}},
        "status": {"attached": true}}),
    )
    .expect("new attachment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pvc_recreated_under_the_same_name_is_not_the_disk_proved() {
    let env = Env::power_loss().await;
    replace_web_pvc(&env);

    let p = plan(&env).await;
    let d = web(&p);
    assert_eq!(d["action"]["kind"], "recover", "{d:#}");
    let words = format!(
        "{} {} {}",
        d["evidence"], d["reasons"], d["skipped_side_effects"]
    );
    assert!(words.contains("a replacement the VM never used"), "{words}");
    assert!(
        words.contains(&format!("its PV {PV_WEB} still exists")),
        "the old disk is followed: {words}"
    );
    // Its attachment to harvester-node-2 says nothing about this VM.
    assert!(!words.contains("harvester-node-2"), "{words}");
    assert!(!words.contains("delete by hand"), "{words}");
    let pvs: Vec<String> = d["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["pv"].as_str().map(String::from))
        .collect();
    assert_eq!(pvs, [PV_WEB]);
    assert!(env.sim.mutating_requests().is_empty());
}

/// Issue 23: vm-web-01's disk is a DataVolume (made after the VMI by design, so creation
/// times tell nothing). A run sees the VMI deleting but not stuck yet and records its
/// disk's keys; then the PVC is deleted and made again; once stuck, the proof follows the
/// old disk by the recorded UID and PV, never the new one, and nothing suggests deleting
/// the new PVC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_claim_replaced_after_the_vmi_was_first_seen_is_told_by_its_recorded_uid() {
    let env = Env::power_loss().await;
    let mut vmi = env
        .sim
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "vm-web-01",
        )
        .expect("vmi");
    vmi["spec"]["volumes"] = json!([{"name": "disk-0", "dataVolume": {"name": PVC_WEB}}]);
    env.sim.put(vmi).expect("a DataVolume disk");

    // Seen deciding, not stuck yet: nothing to do, but its disk's keys are recorded.
    let seen = env
        .run(&["run", "--yes", "--stuck-after", "3650d", "--output", "json"])
        .await;
    assert_eq!(seen.code, 0, "{}", seen.all());
    let file = std::fs::read_to_string(env.state_path("recovery-intents.json"))
        .unwrap_or_else(|e| panic!("nothing recorded ({e}): {}", seen.all()));
    assert!(file.contains(PV_WEB), "{file}");
    assert!(env.sim.mutating_requests().is_empty());

    replace_web_pvc(&env);
    let p = plan(&env).await;
    let d = web(&p);
    let words = format!(
        "{} {} {}",
        d["evidence"], d["reasons"], d["skipped_side_effects"]
    );
    assert!(
        words.contains("recorded when vmrecover first saw the VMI"),
        "{words}"
    );
    assert!(
        words.contains(&format!("its PV {PV_WEB} still exists")),
        "the old disk is followed: {words}"
    );
    assert!(!words.contains("harvester-node-2"), "{words}");
    assert!(!words.contains("delete by hand"), "{words}");
    let pvs: Vec<String> = d["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["pv"].as_str().map(String::from))
        .collect();
    assert_eq!(pvs, [PV_WEB]);
    assert_eq!(d["action"]["kind"], "recover", "{d:#}");
}

/// Whether the run listed the storage VolumeAttachments (the cluster-wide list).
fn listed_storage_attachments(env: &Env) -> bool {
    env.sim
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path == "/apis/storage.k8s.io/v1/volumeattachments")
}

/// vm-web-01's disk requested on harvester-node-2 by a storage VolumeAttachment of
/// `attacher` (not attached yet: Longhorn writes its ticket first).
fn attach_web_elsewhere(env: &Env, attacher: &str) {
    env.sim
        .put(
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
            "metadata": {"name": "csi-web-on-node-2"},
            "spec": {"attacher": attacher, "nodeName": "harvester-node-2",
                     "source": {"persistentVolumeName": PV_WEB}},
            "status": {"attached": false}}),
        )
        .expect("volumeattachment");
}

/// Issue 28: a Longhorn disk attached on another node is seen through the ticket Longhorn's
/// CSI attach writes into its Longhorn volumeattachment, read by name: no cluster-wide
/// VolumeAttachment list (~4 MiB on a 5,000-VM site) is needed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longhorn_disk_attached_elsewhere_is_seen_by_name_without_the_volumeattachment_list() {
    let env = Env::power_loss().await;
    let before = web(&plan(&env).await);
    assert_eq!(before["action"]["kind"], "recover", "{before:#}");
    assert!(
        !listed_storage_attachments(&env),
        "only Longhorn disks here"
    );

    attach_web_elsewhere(&env, "driver.longhorn.io");
    env.sim.clear_requests();
    let after = web(&plan(&env).await);
    assert_eq!(after["action"]["kind"], "blocked", "{after:#}");
    assert!(
        after["reasons"]
            .to_string()
            .contains("disk_attached_elsewhere")
            && after["reasons"].to_string().contains("harvester-node-2")
            && after["reasons"]
                .to_string()
                .contains("longhorn volumeattachment"),
        "{after:#}"
    );
    assert!(!listed_storage_attachments(&env));
    assert!(env.sim.mutating_requests().is_empty());
}

/// Another CSI driver's attachments are storage VolumeAttachments only: a disk whose PV is
/// not Longhorn's is looked for in the list, even when a Longhorn volume of its name exists
/// (a key counts as Longhorn's by its PV's driver first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_drivers_disk_attached_elsewhere_is_looked_for_in_the_volumeattachment_list() {
    let env = Env::power_loss().await;
    let mut pv = env
        .sim
        .get("v1", "PersistentVolume", "", PV_WEB)
        .expect("vm-web-01's PV");
    pv["spec"]["csi"]["driver"] = json!("other.csi.example.com");
    env.sim.put(pv).expect("PV of another driver");
    attach_web_elsewhere(&env, "other.csi.example.com");
    env.sim.clear_requests();
    let d = web(&plan(&env).await);
    // Blocked in any case (vmrecover proves only Longhorn disks free here); the list is
    // what would show this disk attached elsewhere wherever else it is asked.
    assert_eq!(d["action"]["kind"], "blocked", "{d:#}");
    assert!(listed_storage_attachments(&env));
}

/// Issue 28: the disk keys recorded when a VMI was first seen are read again only while
/// that VMI is listed here. After vm-web-01 is recovered (its VMI gone, its seen record
/// still in the file until the next write), the next look lists no PVs and no Longhorn
/// volumes cluster-wide (~9 MiB each on a 5,000-VM site).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_vmis_seen_record_triggers_no_cluster_wide_list() {
    let env = Env::power_loss().await;
    let ran = env
        .run(&[crate::e2e_support::RUN, &["--only", "default/vm-web-01"]].concat())
        .await;
    assert_eq!(ran.code, 0, "{}", ran.all());
    env.sim.clear_requests();
    plan(&env).await;
    let lists: Vec<String> = env
        .sim
        .requests()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && (r.path == "/api/v1/persistentvolumes"
                    || r.path.ends_with("/longhorn-system/volumes"))
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(lists.is_empty(), "cluster-wide lists: {lists:?}");
}
