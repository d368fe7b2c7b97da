//! A generated large cluster for the recovery benchmark: `total` VMs across `nodes` nodes,
//! `stuck` of them stuck Terminating after a power cut on [`NODE`] (or spread over the first
//! `stuck_nodes` nodes) (all provable: no
//! process or disk of theirs on the node), each with the objects a Harvester VM really
//! has — VM, VMI, virt-launcher pod, PVC, PV, storage VolumeAttachment, Longhorn volume and
//! Longhorn VolumeAttachment — and the labels, annotations and finalizers of
//! `harvester-sim/scenarios/power-loss.yaml`. Objects are written as JSON documents (valid YAML).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The node that lost power.
pub const NODE: &str = "harvester-node-1";
/// The index of [`NODE`] in the generated node names.
pub const NODE_INDEX: usize = 1;

/// Shape of the generated cluster.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// VMs (and VMIs) in the cluster.
    pub total: usize,
    /// Nodes.
    pub nodes: usize,
    /// Stuck VMs (the first `stuck` VMs), on [`NODE`] and the nodes after it.
    pub stuck: usize,
    /// Nodes the stuck VMs are spread over, round-robin from [`NODE`] (1: all on [`NODE`]);
    /// these nodes lost power.
    pub stuck_nodes: usize,
    /// Namespaces the VMs are spread over.
    pub namespaces: usize,
}

/// What was generated.
pub struct Generated {
    /// The scenario YAML text.
    pub text: String,
    /// Objects in it.
    pub objects: usize,
    /// Stuck VMs that still have a leftover Terminating launcher pod.
    pub leftover_pods: usize,
}

const DELETED_AT: &str = "2025-06-02T08:31:40Z";
const POWER_CUT: &str = "2025-06-02T08:14:07Z";
const LAUNCHER_IMAGE: &str = "registry.suse.com/suse/sles/15.6/virt-launcher:1.4.0-150600.5.15.1";

fn uid(prefix: &str, i: usize) -> String {
    format!("{prefix}-0000-4000-8000-{i:012}")
}

fn namespace(i: usize, shape: &Shape) -> String {
    match i % shape.namespaces.max(1) {
        0 => "default".into(),
        1 => "prod".into(),
        n => format!("tenant-{n:02}"),
    }
}

fn node_of(i: usize, shape: &Shape) -> String {
    let down = shape.stuck_nodes.clamp(1, shape.nodes.max(1));
    if i < shape.stuck {
        format!("harvester-node-{}", NODE_INDEX + i % down)
    } else {
        let others = shape.nodes.saturating_sub(down).max(1);
        format!(
            "harvester-node-{}",
            NODE_INDEX + down + (i - shape.stuck) % others
        )
    }
}

/// The storage VolumeAttachment name the CSI attacher uses: `csi-<sha256(pv+attacher+node)>`.
fn csi_va_name(pv: &str, node: &str) -> String {
    let digest = Sha256::digest(format!("{pv}driver.longhorn.io{node}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("csi-{hex}")
}

/// Generates the scenario.
pub fn generate(shape: &Shape) -> Generated {
    let down: Vec<String> = (0..shape.stuck_nodes.clamp(1, shape.nodes.max(1)))
        .map(|k| format!("harvester-node-{}", NODE_INDEX + k))
        .collect();
    let mut docs: Vec<Value> = vec![json!({
        "apiVersion": "sim.vmrecover.dev/v1", "kind": "SimulatorSettings",
        "downNodes": down, "virtController": false, "kubeVersion": "1.32.4+rke2r1"
    })];
    for n in 1..=shape.nodes {
        docs.push(node(n, n < NODE_INDEX + down.len()));
    }
    let mut namespaces: Vec<String> = (0..shape.namespaces.max(1))
        .map(|i| namespace(i, shape))
        .collect();
    namespaces.extend([
        "harvester-system".to_string(),
        "longhorn-system".to_string(),
    ]);
    for ns in &namespaces {
        docs.push(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
        }));
    }
    let mut leftover_pods = 0;
    for i in 0..shape.total {
        let vm = Vm::new(i, shape);
        docs.push(vm.vm());
        docs.push(vm.vmi());
        // A third of the stuck VMs keep their launcher pod object, Terminating on the dead
        // node (vm-db-01 in power-loss.yaml); the healthy ones have a running pod.
        if !vm.stuck || i % 3 == 1 {
            leftover_pods += usize::from(vm.stuck);
            docs.push(vm.pod());
        }
        docs.extend(vm.storage());
    }
    let objects = docs.len() - 1;
    let mut text = String::with_capacity(docs.len() * 1500);
    for d in &docs {
        text.push_str("---\n");
        text.push_str(&d.to_string());
        text.push('\n');
    }
    Generated {
        text,
        objects,
        leftover_pods,
    }
}

fn node(n: usize, down: bool) -> Value {
    let name = format!("harvester-node-{n}");
    let ready = if down {
        json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
               "message": "Kubelet stopped posting node status.",
               "lastHeartbeatTime": "2025-06-02T08:13:58Z", "lastTransitionTime": "2025-06-02T08:14:52Z"})
    } else {
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
               "message": "kubelet is posting ready status",
               "lastHeartbeatTime": "2025-06-02T08:40:02Z", "lastTransitionTime": "2025-05-01T10:02:31Z"})
    };
    let mut spec =
        json!({"podCIDR": format!("10.52.{n}.0/24"), "providerID": format!("rke2://{name}")});
    if down {
        spec["taints"] = json!([
            {"effect": "NoSchedule", "key": "node.kubernetes.io/unreachable", "timeAdded": "2025-06-02T08:14:52Z"},
            {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "timeAdded": "2025-06-02T08:14:57Z"}
        ]);
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name, "uid": uid("99999999", n),
            "annotations": {"rke2.io/hostname": name, "rke2.io/internal-ip": format!("10.0.{}.{}", n / 200, 10 + n % 200)},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
                       "harvesterhci.io/managed": "true", "kubevirt.io/schedulable": "true"}
        },
        "spec": spec,
        "status": {"conditions": [ready],
                   "nodeInfo": {"kubeletVersion": "v1.32.4+rke2r1", "osImage": "Harvester v1.5.0", "architecture": "amd64",
                                "machineID": machine_id(n), "bootID": boot_id_of(n)}}
    })
}

/// One VM and the names of its objects.
struct Vm {
    i: usize,
    stuck: bool,
    ns: String,
    name: String,
    node: String,
    pvc: String,
    pv: String,
}

impl Vm {
    fn new(i: usize, shape: &Shape) -> Vm {
        let name = format!("vm-{i:05}");
        Vm {
            i,
            stuck: i < shape.stuck,
            ns: namespace(i, shape),
            pvc: format!("{name}-disk-0-{:05x}", i * 7919 % 0xfffff),
            pv: format!("pvc-{}", uid("44444444", i)),
            node: node_of(i, shape),
            name,
        }
    }

    fn deleting(&self, meta: &mut Value) {
        if self.stuck {
            meta["deletionTimestamp"] = json!(DELETED_AT);
            meta["deletionGracePeriodSeconds"] = json!(0);
        }
    }

    fn vm(&self) -> Value {
        let mut finalizers = vec!["kubevirt.io/virtualMachineControllerFinalize"];
        let mut annotations = json!({
            "harvesterhci.io/vmRunStrategy": "RerunOnFailure",
            "harvesterhci.io/volumeClaimTemplates": format!("[{{\"metadata\":{{\"name\":\"{}\",\"annotations\":{{\"harvesterhci.io/imageId\":\"default/image-ubuntu-2204\"}}}},\"spec\":{{\"accessModes\":[\"ReadWriteMany\"],\"resources\":{{\"requests\":{{\"storage\":\"10Gi\"}}}},\"volumeMode\":\"Block\",\"storageClassName\":\"longhorn\"}}}}]", self.pvc),
            "kubevirt.io/latest-observed-api-version": "v1",
            "kubevirt.io/storage-observed-api-version": "v1",
            "network.harvesterhci.io/ips": "[]"
        });
        if self.stuck {
            finalizers.push("wrangler.cattle.io/VMController.CleanupPVCAndSnapshot");
            annotations["harvesterhci.io/removedPersistentVolumeClaims"] = json!(self.pvc);
        }
        let mut meta = json!({
            "name": self.name, "namespace": self.ns, "uid": uid("11111111", self.i),
            "creationTimestamp": "2025-05-20T09:30:00Z", "generation": 4,
            "finalizers": finalizers, "annotations": annotations,
            "labels": {"harvesterhci.io/creator": "harvester", "harvesterhci.io/os": "ubuntu"}
        });
        self.deleting(&mut meta);
        json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": meta,
            "spec": {"runStrategy": "RerunOnFailure", "template": {
                "metadata": {"labels": {"harvesterhci.io/vmName": self.name}},
                "spec": self.domain_spec()}},
            "status": {
                "created": true, "desiredGeneration": 4, "observedGeneration": if self.stuck { 3 } else { 4 },
                "printableStatus": if self.stuck { "Terminating" } else { "Running" },
                "ready": !self.stuck, "runStrategy": "RerunOnFailure"
            }
        })
    }

    fn domain_spec(&self) -> Value {
        json!({
            "domain": {
                "cpu": {"cores": 2, "sockets": 1, "threads": 1},
                "devices": {
                    "disks": [{"bootOrder": 1, "disk": {"bus": "virtio"}, "name": "disk-0"}],
                    "interfaces": [{"bridge": {}, "macAddress": self.mac(), "model": "virtio", "name": "default"}]
                },
                "machine": {"type": "q35"},
                "memory": {"guest": "3996Mi"},
                "resources": {"limits": {"cpu": "2", "memory": "4Gi"}, "requests": {"cpu": "125m", "memory": "2730Mi"}}
            },
            "evictionStrategy": "LiveMigrateIfPossible",
            "networks": [{"multus": {"networkName": "default/vlan10"}, "name": "default"}],
            "terminationGracePeriodSeconds": 120,
            "volumes": [{"name": "disk-0", "persistentVolumeClaim": {"claimName": self.pvc}}]
        })
    }

    fn mac(&self) -> String {
        format!(
            "52:54:00:{:02x}:{:02x}:{:02x}",
            self.i >> 16 & 0xff,
            self.i >> 8 & 0xff,
            self.i & 0xff
        )
    }

    fn vmi(&self) -> Value {
        let mut meta = json!({
            "name": self.name, "namespace": self.ns, "uid": uid("22222222", self.i),
            "creationTimestamp": "2025-05-28T06:02:11Z", "generation": 13,
            "annotations": {"harvesterhci.io/sshNames": "[]", "kubevirt.io/latest-observed-api-version": "v1",
                            "kubevirt.io/storage-observed-api-version": "v1", "kubevirt.io/vm-generation": "3"},
            "finalizers": ["kubevirt.io/virtualMachineControllerFinalize", "kubevirt.io/foregroundDeleteVirtualMachine"],
            "labels": {"harvesterhci.io/vmName": self.name, "kubevirt.io/nodeName": self.node},
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "blockOwnerDeletion": true, "controller": true,
                                 "kind": "VirtualMachine", "name": self.name, "uid": uid("11111111", self.i)}]
        });
        self.deleting(&mut meta);
        let ready = if self.stuck {
            json!({"type": "Ready", "status": "False", "reason": "NodeUnresponsive",
                   "message": format!("virt-handler on node {} is not responsive", self.node),
                   "lastProbeTime": null, "lastTransitionTime": POWER_CUT})
        } else {
            json!({"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2025-05-28T06:02:11Z"})
        };
        let mut spec = self.domain_spec();
        spec["domain"]["firmware"] = json!({"uuid": uid("f1f1f1f1", self.i)});
        json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": meta, "spec": spec,
            "status": {
                "activePods": {uid("33333333", self.i): self.node},
                "conditions": [ready],
                "interfaces": [{"infoSource": "domain, guest-agent", "interfaceName": "enp1s0",
                                "ipAddress": format!("10.0.{}.{}", 10 + self.i / 250, 1 + self.i % 250),
                                "mac": self.mac(), "name": "default", "queueCount": 1}],
                "launcherContainerImageVersion": LAUNCHER_IMAGE,
                "migrationMethod": "BlockMigration", "migrationTransport": "Unix",
                "nodeName": self.node, "phase": "Running", "qosClass": "Burstable",
                "volumeStatus": [{"name": "disk-0", "target": "vda",
                                  "persistentVolumeClaimInfo": {"accessModes": ["ReadWriteMany"], "capacity": {"storage": "10Gi"},
                                                                "requests": {"storage": "10Gi"}, "volumeMode": "Block"}}]
            }
        })
    }

    fn pod(&self) -> Value {
        let mut meta = json!({
            "name": format!("virt-launcher-{}-{:05x}", self.name, self.i * 104_729 % 0xfffff),
            "generateName": format!("virt-launcher-{}-", self.name),
            "namespace": self.ns, "uid": uid("33333333", self.i),
            "creationTimestamp": "2025-05-28T06:02:11Z",
            "annotations": {"kubectl.kubernetes.io/default-container": "compute", "kubevirt.io/domain": self.name,
                            "kubevirt.io/migrationTransportUnix": "true", "kubevirt.io/vm-generation": "3"},
            "labels": {"harvesterhci.io/vmName": self.name, "kubevirt.io": "virt-launcher",
                       "kubevirt.io/created-by": uid("22222222", self.i), "kubevirt.io/nodeName": self.node,
                       "vm.kubevirt.io/name": self.name},
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "blockOwnerDeletion": true, "controller": true,
                                 "kind": "VirtualMachineInstance", "name": self.name, "uid": uid("22222222", self.i)}]
        });
        if self.stuck {
            meta["deletionTimestamp"] = json!("2025-06-02T08:34:02Z");
            meta["deletionGracePeriodSeconds"] = json!(135);
        }
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {
                "automountServiceAccountToken": false,
                "containers": [{"name": "compute", "image": LAUNCHER_IMAGE,
                                "command": ["/usr/bin/virt-launcher-monitor", "--qemu-timeout", "321s", "--name", self.name,
                                            "--uid", uid("22222222", self.i), "--namespace", self.ns,
                                            "--kubevirt-share-dir", "/var/run/kubevirt", "--grace-period-seconds", "135"],
                                "volumeDevices": [{"devicePath": "/dev/disk-0", "name": "disk-0"}]}],
                "nodeName": self.node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 135,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 107, "runAsGroup": 107, "fsGroup": 107},
                "volumes": [{"name": "disk-0", "persistentVolumeClaim": {"claimName": self.pvc}}]
            },
            "status": {"phase": "Running", "qosClass": "Burstable", "startTime": "2025-05-28T06:02:11Z",
                       "conditions": [{"type": "Ready", "status": if self.stuck { "False" } else { "True" },
                                       "lastProbeTime": null, "lastTransitionTime": "2025-05-28T06:02:11Z"}]}
        })
    }

    fn storage(&self) -> Vec<Value> {
        let va = csi_va_name(&self.pv, &self.node);
        let pvc_uid = uid("44444444", self.i);
        vec![
            json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": self.pvc, "namespace": self.ns, "uid": pvc_uid,
                    "creationTimestamp": "2025-05-20T09:30:00Z", "finalizers": ["kubernetes.io/pvc-protection"],
                    "annotations": {"harvesterhci.io/imageId": "default/image-ubuntu-2204",
                                    "harvesterhci.io/owned-by": format!("[{{\"schema\":\"kubevirt.io.virtualmachine\",\"refs\":[\"{}/{}\"]}}]", self.ns, self.name),
                                    "pv.kubernetes.io/bind-completed": "yes",
                                    "volume.kubernetes.io/storage-provisioner": "driver.longhorn.io"}
                },
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}},
                         "storageClassName": "longhorn", "volumeMode": "Block", "volumeName": self.pv},
                "status": {"accessModes": ["ReadWriteMany"], "capacity": {"storage": "10Gi"}, "phase": "Bound"}
            }),
            json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": self.pv, "uid": uid("55555555", self.i), "creationTimestamp": "2025-05-20T09:30:00Z",
                             "annotations": {"pv.kubernetes.io/provisioned-by": "driver.longhorn.io"},
                             "finalizers": ["external-attacher/driver-longhorn-io", "kubernetes.io/pv-protection"]},
                "spec": {"accessModes": ["ReadWriteMany"], "capacity": {"storage": "10Gi"},
                         "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": self.pvc, "namespace": self.ns, "uid": pvc_uid},
                         "csi": {"driver": "driver.longhorn.io", "volumeHandle": self.pv,
                                 "volumeAttributes": {"migratable": "true", "numberOfReplicas": "3", "staleReplicaTimeout": "30"}},
                         "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "longhorn", "volumeMode": "Block"},
                "status": {"phase": "Bound"}
            }),
            json!({
                "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
                "metadata": {"name": va, "uid": uid("66666666", self.i), "creationTimestamp": "2025-05-28T06:02:11Z",
                             "annotations": {"csi.alpha.kubernetes.io/node-id": self.node},
                             "finalizers": ["external-attacher/driver-longhorn-io"]},
                "spec": {"attacher": "driver.longhorn.io", "nodeName": self.node, "source": {"persistentVolumeName": self.pv}},
                "status": {"attached": true}
            }),
            json!({
                "apiVersion": "longhorn.io/v1beta2", "kind": "Volume",
                "metadata": {"name": self.pv, "namespace": "longhorn-system", "uid": uid("77777777", self.i),
                             "creationTimestamp": "2025-05-20T09:30:00Z", "finalizers": ["longhorn.io"],
                             "labels": {"longhornvolume": self.pv}},
                "spec": {"accessMode": "rwx", "dataEngine": "v1", "frontend": "blockdev", "migratable": true,
                         "numberOfReplicas": 3, "size": "10737418240", "staleReplicaTimeout": 30},
                "status": {"currentNodeID": self.node, "ownerID": self.node, "state": "attached",
                           "robustness": if self.stuck { "unknown" } else { "healthy" },
                           "kubernetesStatus": {"namespace": self.ns, "pvName": self.pv, "pvcName": self.pvc, "pvStatus": "Bound"}}
            }),
            json!({
                "apiVersion": "longhorn.io/v1beta2", "kind": "VolumeAttachment",
                "metadata": {"name": self.pv, "namespace": "longhorn-system", "uid": uid("88888888", self.i),
                             "creationTimestamp": "2025-05-20T09:30:00Z", "finalizers": ["longhorn.io"],
                             "labels": {"longhornvolume": self.pv}},
                "spec": {"volume": self.pv, "attachmentTickets": {va.clone(): {
                    "generation": 0, "id": va, "nodeID": self.node, "parameters": {"disableFrontend": "false"}, "type": "csi-attacher"}}}
            }),
        ]
    }
}

/// The machine-id of simulated node `n` (what its kubelet reports).
pub fn machine_id(n: usize) -> String {
    format!("{n:08x}5c3f1d2a9b8e4f60a1b2c3d4")
}

/// The boot id simulated node `n`'s kubelet reports (dashed, as the kernel writes it).
pub fn boot_id_of(n: usize) -> String {
    format!("{n:08x}-6071-8293-a4b5-c6d7e8f90a1b")
}

/// How many of the first `stuck` VMs (the stuck ones) have neither a VM nor a VMI left:
/// two reads by name each, not a copy of every VM and VMI of the site (at 20,000 VMs that
/// copy held the simulator's store for a good part of each 100 ms poll).
pub fn recovered(sim: &harvester_sim::Sim, shape: &Shape) -> usize {
    (0..shape.stuck)
        .filter(|i| {
            let (ns, name) = (namespace(*i, shape), format!("vm-{i:05}"));
            ["VirtualMachineInstance", "VirtualMachine"]
                .iter()
                .all(|kind| sim.get("kubevirt.io/v1", kind, &ns, &name).is_none())
        })
        .count()
}
