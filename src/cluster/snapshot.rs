//! The cluster facts the planner reads: small serde views of the objects on this node,
//! built from the typed objects and easy to write by hand in tests.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use serde::{Deserialize, Serialize};

use super::names::*;
use super::object_key::controller_of;
pub use super::object_key::ObjectKey;
use super::objects::{
    LonghornVolume, LonghornVolumeAttachment, VirtualMachine, VirtualMachineInstance,
    BACKEND_STORAGE_PREFIX,
};
pub use super::pod_view::PodView;
use crate::boot::clock::normalize_id;
use crate::evidence::Gathered;

/// A VMI as the planner sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmiView {
    /// Identity and version.
    pub key: ObjectKey,
    /// `kubevirt.io/nodeName` label.
    pub node_label: Option<String>,
    /// `status.nodeName`.
    pub status_node: Option<String>,
    /// `kubevirt.io/migrationTargetNodeName` label.
    pub migration_target: Option<String>,
    /// A migration is in flight by `status.migrationState` (handed off, not ended,
    /// completed or failed).
    pub migrating: bool,
    /// `status.migrationState` exists (then it, not the label, says whether it migrates).
    #[serde(default)]
    pub has_migration_state: bool,
    /// `status.migrationState.targetNode`.
    #[serde(default)]
    pub migration_state_target: Option<String>,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `status.reason`.
    pub reason: Option<String>,
    /// `metadata.deletionTimestamp`.
    pub deletion_timestamp: Option<jiff::Timestamp>,
    /// `metadata.finalizers`, in order.
    pub finalizers: Vec<String>,
    /// Name and UID of the controlling VirtualMachine, if any.
    pub owner_vm: Option<(String, String)>,
    /// PVC names of its volumes (every source type that maps to a PVC, and hotplugged
    /// or memory-dump volumes listed in `status.volumeStatus`).
    pub pvcs: Vec<String>,
    /// Volumes in `status.volumeStatus` that may be PVCs but whose claim is not named:
    /// their disks cannot be checked.
    #[serde(default)]
    pub unnamed_volumes: Vec<String>,
    /// `metadata.creationTimestamp`: a PVC of one of its claim names created later is a
    /// replacement it never used, unless the claim is one of `late_claims`.
    #[serde(default)]
    pub created: Option<jiff::Timestamp>,
    /// Claims whose PVC may be made after the VMI by design: hotplugged volumes, memory-dump
    /// targets, DataVolumes (CDI), the backend-storage PVC (virt-controller creates it for
    /// the launcher pod). For these only a recorded PV tells a replacement.
    #[serde(default)]
    pub late_claims: Vec<String>,
    /// Its pods of record: the launcher pods in `status.activePods` and the hotplug
    /// attachment pods its `status.volumeStatus` names (`hotplugVolume.attachPodUID`), by
    /// UID (issue 23: a hotplug pod whose launcher pod is gone is still provably its).
    #[serde(default)]
    pub pods_of_record: Vec<String>,
}

impl From<&VirtualMachineInstance> for VmiView {
    fn from(vmi: &VirtualMachineInstance) -> Self {
        let meta = &vmi.metadata;
        let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k)).cloned();
        let state = vmi.status.migration_state.as_ref();
        // In flight from the moment virt-controller hands off (the state exists) until it
        // ended, completed or failed; a state not started yet counts too (fail closed).
        let migrating = state.is_some_and(|m| {
            m.completed != Some(true) && m.failed != Some(true) && m.end_timestamp.is_none()
        });
        let (pvcs, unnamed_volumes) = volumes_of(vmi);
        let late_claims = late_claims_of(vmi, &pvcs);
        VmiView {
            key: ObjectKey::of(meta),
            node_label: label(LABEL_NODE_NAME),
            status_node: vmi.status.node_name.clone(),
            migration_target: label(LABEL_MIGRATION_TARGET),
            migrating,
            has_migration_state: state.is_some(),
            migration_state_target: state.and_then(|m| m.target_node.clone()),
            phase: vmi.status.phase.clone(),
            reason: vmi.status.reason.clone(),
            deletion_timestamp: meta.deletion_timestamp.as_ref().map(|t| t.0),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            owner_vm: controller_of(meta, "VirtualMachine"),
            pvcs,
            unnamed_volumes,
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            late_claims,
            pods_of_record: pods_of_record(vmi),
        }
    }
}

/// The UIDs of the launcher pods `status.activePods` names and of the hotplug attachment
/// pods `status.volumeStatus` names (kubevirt `pkg/virt-controller/watch/vmi` keeps both).
fn pods_of_record(vmi: &VirtualMachineInstance) -> Vec<String> {
    let mut uids: Vec<String> = vmi.status.active_pods.keys().cloned().collect();
    uids.extend(vmi.status.volume_status.iter().filter_map(|st| {
        st.hotplug_volume
            .as_ref()?
            .get("attachPodUID")?
            .as_str()
            .map(String::from)
    }));
    uids.sort();
    uids.dedup();
    uids
}

/// The claims of `pvcs` made after the VMI by design (see [`VmiView::late_claims`]).
fn late_claims_of(vmi: &VirtualMachineInstance, pvcs: &[String]) -> Vec<String> {
    let mut late: Vec<String> = vmi
        .spec
        .volumes
        .iter()
        // A DataVolume's PVC is made by CDI, after the VMI when the storage class binds on
        // first consumer (KubeVirt then starts the VMI as that consumer).
        .filter(|v| v.memory_dump.is_some() || v.data_volume.is_some())
        .filter_map(|v| v.claim().map(str::to_string))
        .collect();
    for st in &vmi.status.volume_status {
        if st.hotplug_volume.is_some() || st.memory_dump_volume.is_some() {
            late.extend(
                st.persistent_volume_claim_info
                    .as_ref()
                    .or(st.memory_dump_volume.as_ref())
                    .and_then(|i| i.claim_name.clone()),
            );
            // A hotplugged volume's spec entry names its claim under the status name.
            late.extend(
                vmi.spec
                    .volumes
                    .iter()
                    .filter(|v| v.name == st.name)
                    .filter_map(|v| v.claim().map(str::to_string)),
            );
        }
    }
    late.extend(
        pvcs.iter()
            .filter(|c| c.starts_with(BACKEND_STORAGE_PREFIX))
            .cloned(),
    );
    late.sort();
    late.dedup();
    late
}

/// The PVCs a VMI uses (spec volumes of every PVC-backed type, then volume statuses
/// not in the spec), and the status entries that may be PVCs but name none.
fn volumes_of(vmi: &VirtualMachineInstance) -> (Vec<String>, Vec<String>) {
    let mut pvcs: Vec<String> = Vec::new();
    let mut unnamed = Vec::new();
    for v in &vmi.spec.volumes {
        if let Some(c) = v.claim() {
            if !pvcs.iter().any(|p| p == c) {
                pvcs.push(c.to_string());
            }
        }
    }
    for st in &vmi.status.volume_status {
        let named = st
            .persistent_volume_claim_info
            .as_ref()
            .or(st.memory_dump_volume.as_ref())
            .and_then(|i| i.claim_name.clone())
            .filter(|c| !c.is_empty());
        match named {
            Some(c) if !pvcs.contains(&c) => pvcs.push(c),
            Some(_) => {}
            None => {
                let in_spec = vmi.spec.volumes.iter().any(|v| v.name == st.name);
                let pvc_like = st.hotplug_volume.is_some()
                    || st.persistent_volume_claim_info.is_some()
                    || st.memory_dump_volume.is_some();
                if pvc_like && !in_spec {
                    unnamed.push(st.name.clone());
                }
            }
        }
    }
    // The backend-storage PVC (persistent TPM/EFI), mounted by the launcher pod, not a VMI
    // volume: KubeVirt ≥ 1.4 lists it in volumeStatus (taken above); 1.3 lists it nowhere
    // and names it after the VMI.
    let listed = |n: &str| n.starts_with(BACKEND_STORAGE_PREFIX);
    if vmi.spec.needs_backend_storage()
        && !pvcs.iter().any(|c| listed(c))
        && !vmi.status.volume_status.iter().any(|s| listed(&s.name))
    {
        let name = vmi.metadata.name.as_deref().unwrap_or_default();
        pvcs.push(format!("{BACKEND_STORAGE_PREFIX}{name}"));
    }
    (pvcs, unnamed)
}

/// A VM as the planner sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmView {
    /// Identity and version.
    pub key: ObjectKey,
    /// `metadata.deletionTimestamp`.
    pub deletion_timestamp: Option<jiff::Timestamp>,
    /// `metadata.finalizers`, in order.
    pub finalizers: Vec<String>,
    /// `status.printableStatus`.
    pub printable_status: Option<String>,
    /// PVCs Harvester's finalizer still has to delete
    /// (`harvesterhci.io/removedPersistentVolumeClaims`).
    pub removed_pvcs: Vec<String>,
}

impl From<&VirtualMachine> for VmView {
    fn from(vm: &VirtualMachine) -> Self {
        let meta = &vm.metadata;
        VmView {
            key: ObjectKey::of(meta),
            deletion_timestamp: meta.deletion_timestamp.as_ref().map(|t| t.0),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            printable_status: vm.status.printable_status.clone(),
            removed_pvcs: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_REMOVED_PVCS))
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// A PVC and the PV it is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvcView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.volumeName`: the PV, which for Longhorn is also the Longhorn volume name.
    pub volume_name: Option<String>,
    /// `metadata.uid` (a PV's `claimRef.uid` names the PVC it was bound to).
    #[serde(default)]
    pub uid: Option<String>,
    /// `metadata.creationTimestamp`.
    #[serde(default)]
    pub created: Option<jiff::Timestamp>,
}

impl PvcView {
    /// Whether it was created after `vmi` although its claim is not one made late by
    /// design: a PVC of that name the VMI never used (the one it used was deleted and this
    /// one made in its place).
    pub fn created_after(&self, vmi: &VmiView) -> bool {
        !vmi.late_claims.contains(&self.name)
            && matches!((self.created, vmi.created), (Some(p), Some(v)) if p > v)
    }
}

impl From<&PersistentVolumeClaim> for PvcView {
    fn from(pvc: &PersistentVolumeClaim) -> Self {
        PvcView {
            namespace: pvc.metadata.namespace.clone().unwrap_or_default(),
            name: pvc.metadata.name.clone().unwrap_or_default(),
            volume_name: pvc.spec.as_ref().and_then(|s| s.volume_name.clone()),
            uid: pvc.metadata.uid.clone(),
            created: pvc.metadata.creation_timestamp.as_ref().map(|t| t.0),
        }
    }
}

/// A PersistentVolume: its CSI driver and volume handle. For Longhorn the handle is the
/// Longhorn volume name, equal to the PV name only for dynamically provisioned PVs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvView {
    /// The PV's name.
    pub name: String,
    /// `spec.csi.driver`, when it is a CSI volume.
    pub driver: Option<String>,
    /// `spec.csi.volumeHandle`.
    pub handle: Option<String>,
    /// `spec.claimRef` (namespace, name): a Released PV keeps it after its PVC is gone.
    #[serde(default)]
    pub claim_ref: Option<(String, String)>,
    /// `spec.claimRef.uid`: which PVC of that name it was bound to.
    #[serde(default)]
    pub claim_uid: Option<String>,
}

impl From<&k8s_openapi::api::core::v1::PersistentVolume> for PvView {
    fn from(pv: &k8s_openapi::api::core::v1::PersistentVolume) -> Self {
        let csi = pv.spec.as_ref().and_then(|s| s.csi.as_ref());
        PvView {
            name: pv.metadata.name.clone().unwrap_or_default(),
            driver: csi.map(|c| c.driver.clone()),
            handle: csi
                .map(|c| c.volume_handle.clone())
                .filter(|h| !h.is_empty()),
            claim_ref: pv
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|c| Some((c.namespace.clone()?, c.name.clone()?))),
            claim_uid: pv
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|c| c.uid.clone()),
        }
    }
}

/// Where a volume is attached, from a storage.k8s.io VolumeAttachment or a Longhorn
/// attachment ticket or volume status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentView {
    /// The PV / Longhorn volume name.
    pub volume: String,
    /// The node it is attached (or asked to be attached) to.
    pub node: String,
    /// Where this fact comes from, e.g. `volumeattachment/csi-1a2b` or
    /// `longhorn volumeattachment/pvc-… ticket csi-…`.
    pub source: String,
    /// Whether the source says it is attached now (false: only requested).
    pub attached: bool,
}

impl AttachmentView {
    /// The attachments a storage.k8s.io VolumeAttachment states.
    pub fn from_csi(va: &VolumeAttachment) -> Option<Self> {
        let pv = va.spec.source.persistent_volume_name.clone()?;
        Some(AttachmentView {
            volume: pv,
            node: va.spec.node_name.clone(),
            source: format!(
                "volumeattachment/{} ({})",
                va.metadata.name.as_deref().unwrap_or(""),
                va.spec.attacher
            ),
            attached: va.status.as_ref().is_some_and(|s| s.attached),
        })
    }

    /// The attachments a Longhorn VolumeAttachment's tickets request.
    pub fn from_longhorn_tickets(lva: &LonghornVolumeAttachment) -> Vec<Self> {
        let volume = lva
            .spec
            .volume
            .clone()
            .or_else(|| lva.metadata.name.clone())
            .unwrap_or_default();
        lva.spec
            .attachment_tickets
            .iter()
            .filter_map(|(id, t)| {
                Some(AttachmentView {
                    volume: volume.clone(),
                    node: t.node_id.clone()?,
                    source: format!("longhorn volumeattachment/{volume} ticket {id}"),
                    attached: false,
                })
            })
            .collect()
    }

    /// Where a Longhorn volume's status says it is attached.
    pub fn from_longhorn_volume(v: &LonghornVolume) -> Option<Self> {
        let node = v.status.current_node_id.clone().filter(|n| !n.is_empty())?;
        let name = v.metadata.name.clone().unwrap_or_default();
        Some(AttachmentView {
            source: format!(
                "longhorn volume/{name} ({})",
                v.status.state.as_deref().unwrap_or("state unknown")
            ),
            volume: name,
            node,
            attached: v.status.state.as_deref() == Some("attached"),
        })
    }
}

/// Everything read from the cluster for this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterFacts {
    /// The node these facts are about.
    pub node: String,
    /// VMIs labelled for this node, on it by status, or migrating to it.
    pub vmis: Gathered<Vec<VmiView>>,
    /// The VMs owning those VMIs, and deleting VMs vmrecover was recovering.
    pub vms: Gathered<Vec<VmView>>,
    /// virt-launcher pods on this node.
    pub pods: Gathered<Vec<PodView>>,
    /// KubeVirt's hotplug attachment pods on this node (label `kubevirt.io=hotplug-disk`),
    /// read only in a pass that decides something.
    #[serde(default = "no_remote_pods")]
    pub hotplug_pods: Gathered<Vec<PodView>>,
    /// PVCs of the VMs concerned.
    pub pvcs: Gathered<Vec<PvcView>>,
    /// The PVs those PVCs are bound to (read by name, for VMIs that are deleting or
    /// final).
    #[serde(default = "no_pvs")]
    pub pvs: Gathered<Vec<PvView>>,
    /// Where volumes are attached (CSI and Longhorn).
    pub attachments: Gathered<Vec<AttachmentView>>,
    /// Launcher pods on other nodes that mount a disk of a VMI here which is attached to
    /// that node (a shared disk in use by another VM), read only for such attachments.
    #[serde(default = "no_remote_pods")]
    pub remote_pods: Gathered<Vec<PodView>>,
    /// Longhorn volumes that still name a PVC the VMIs here use but which is gone (by
    /// `status.kubernetesStatus`), or that an earlier run recorded.
    #[serde(default = "no_longhorn_volumes")]
    pub longhorn_volumes: Gathered<Vec<LonghornVolumeRef>>,
    /// Every other Longhorn volume that exists, read with the same list (only when a PVC
    /// is gone): another VM's, a backend-storage or share-manager volume, a non-VM
    /// workload's. Their devices and mounts on this node are not a gone disk's.
    #[serde(default = "no_longhorn_volumes")]
    pub other_longhorn_volumes: Gathered<Vec<LonghornVolumeRef>>,
    /// What the kubelet last reported about the Node's machine and boot.
    #[serde(default = "NodeIdentity::not_gathered")]
    pub node_identity: Gathered<NodeIdentity>,
    /// VMIs looked up by the namespace/name a VM process on this node claims, when no
    /// VMI gathered above accounts for it (a VM that is starting, a migration target, a
    /// VMI whose label and status disagree, or an orphan).
    #[serde(default = "claimed_not_gathered")]
    pub claimed: Gathered<Vec<ClaimedVmi>>,
    /// What Harvester's node-down controller did or will do here, and the pause switches.
    #[serde(default)]
    pub harvester: super::harvester::HarvesterFacts,
}

fn no_remote_pods() -> Gathered<Vec<PodView>> {
    Gathered::read(Vec::new())
}

fn no_longhorn_volumes() -> Gathered<Vec<LonghornVolumeRef>> {
    Gathered::read(Vec::new())
}

/// A Longhorn volume and the PVC it last served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LonghornVolumeRef {
    /// The Longhorn volume's name (the CSI volume handle).
    pub name: String,
    /// The PV it last served.
    pub pv: Option<String>,
    /// The PVC (namespace, name) it last served.
    pub pvc: Option<(String, String)>,
}

fn no_pvs() -> Gathered<Vec<PvView>> {
    Gathered::read(Vec::new())
}

fn claimed_not_gathered() -> Gathered<Vec<ClaimedVmi>> {
    Gathered::read(Vec::new())
}

/// The answer to "does the VMI this process claims exist?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedVmi {
    /// The namespace the process names.
    pub namespace: String,
    /// The name the process names.
    pub name: String,
    /// The VMI of that name, if one exists.
    pub vmi: Option<VmiView>,
}

/// `Node.status.nodeInfo.machineID` and `bootID`, as the kubelet last posted them,
/// normalised to 32 lowercase hex digits (empty when the kubelet reported none or a
/// malformed one: either refuses every change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// `status.nodeInfo.machineID`.
    pub machine_id: String,
    /// `status.nodeInfo.bootID`.
    pub boot_id: String,
}

impl NodeIdentity {
    /// From a Node object.
    pub fn of(node: &k8s_openapi::api::core::v1::Node) -> Self {
        let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
        NodeIdentity {
            machine_id: normalize_id(info.map(|i| i.machine_id.as_str()).unwrap_or(""))
                .unwrap_or_default(),
            boot_id: normalize_id(info.map(|i| i.boot_id.as_str()).unwrap_or(""))
                .unwrap_or_default(),
        }
    }

    fn not_gathered() -> Gathered<NodeIdentity> {
        Gathered::unreadable("the Node", "not gathered")
    }
}

impl ClusterFacts {
    /// Facts for a cluster that could not be reached at all.
    pub fn unreachable(node: &str, source: &str, reason: &str) -> Self {
        ClusterFacts {
            node: node.to_string(),
            vmis: Gathered::unreadable(source, reason),
            vms: Gathered::unreadable(source, reason),
            pods: Gathered::unreadable(source, reason),
            hotplug_pods: Gathered::unreadable(source, reason),
            pvcs: Gathered::unreadable(source, reason),
            pvs: Gathered::unreadable(source, reason),
            longhorn_volumes: Gathered::unreadable(source, reason),
            other_longhorn_volumes: Gathered::unreadable(source, reason),
            remote_pods: Gathered::unreadable(source, reason),
            attachments: Gathered::unreadable(source, reason),
            node_identity: Gathered::unreadable(source, reason),
            claimed: Gathered::unreadable(source, reason),
            harvester: super::harvester::HarvesterFacts {
                cluster_paused: Some(Gathered::unreadable(source, reason)),
                force_reset_policy: Some(Gathered::unreadable(source, reason)),
                upgrades_in_progress: Some(Gathered::unreadable(source, reason)),
                ..super::harvester::HarvesterFacts::default()
            },
        }
    }
}

/// Property tests: the views are built from whatever JSON the API server sends.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// `PROPTEST_CASES` for long runs outside CI, else `default`.
    fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
    use serde_json::{json, Value};

    /// Arbitrary JSON, biased towards the shapes and keys of the objects read here.
    fn value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("metadata".to_string()),
            Just("status".to_string()),
            Just("spec".to_string()),
            Just("finalizers".to_string()),
            Just("labels".to_string()),
            Just("annotations".to_string()),
            Just("ownerReferences".to_string()),
            Just("deletionTimestamp".to_string()),
            Just("nodeName".to_string()),
            Just("phase".to_string()),
            Just("volumes".to_string()),
            Just("migrationState".to_string()),
            Just("attachmentTickets".to_string()),
            Just("currentNodeID".to_string()),
            "\\PC{0,12}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,40}".prop_map(Value::String),
            Just(json!("2026-01-01T00:00:00Z")),
        ];
        leaf.prop_recursive(5, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(2000)))]

        /// Decoding never panics; whatever decodes gives a view without panicking.
        #[test]
        fn views_from_arbitrary_json_never_panic(v in value()) {
            if let Ok(o) = serde_json::from_value::<VirtualMachineInstance>(v.clone()) {
                let view = VmiView::from(&o);
                prop_assert!(view.pvcs.iter().all(|p| !p.is_empty()));
            }
            if let Ok(o) = serde_json::from_value::<VirtualMachine>(v.clone()) {
                let view = VmView::from(&o);
                prop_assert!(view.removed_pvcs.iter().all(|p| !p.is_empty()));
            }
            if let Ok(o) = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(v.clone()) {
                let _ = PodView::from(&o);
            }
            if let Ok(o) = serde_json::from_value::<PersistentVolumeClaim>(v.clone()) {
                let _ = PvcView::from(&o);
            }
            if let Ok(o) = serde_json::from_value::<VolumeAttachment>(v.clone()) {
                let _ = AttachmentView::from_csi(&o);
            }
            if let Ok(o) = serde_json::from_value::<LonghornVolumeAttachment>(v.clone()) {
                let _ = AttachmentView::from_longhorn_tickets(&o);
            }
            if let Ok(o) = serde_json::from_value::<LonghornVolume>(v) {
                let _ = AttachmentView::from_longhorn_volume(&o);
            }
        }

        /// A VMI with a well-formed skeleton and arbitrary finalizers, labels and status
        /// keeps its finalizers in order and its node facts as written.
        #[test]
        fn vmi_view_keeps_what_it_reads(
            fins in prop::collection::vec("\\PC{0,30}", 0..50),
            node in "\\PC{0,20}",
            extra in value(),
        ) {
            let v = json!({
                "metadata": {"name": "x", "namespace": "ns", "finalizers": fins,
                    "labels": {"kubevirt.io/nodeName": node}},
                "status": {"nodeName": node, "extra": extra},
            });
            let o: VirtualMachineInstance = serde_json::from_value(v).expect("well-formed");
            let view = VmiView::from(&o);
            prop_assert_eq!(view.finalizers, fins);
            prop_assert_eq!(view.node_label.as_deref(), Some(node.as_str()));
            prop_assert_eq!(view.status_node.as_deref(), Some(node.as_str()));
        }
    }
}

#[cfg(test)]
mod volume_tests {
    use super::*;

    /// Issue 12 item 6: every volume type that maps to a PVC is checked.
    #[test]
    fn every_pvc_backed_volume_type_is_read() {
        let vmi: VirtualMachineInstance = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "namespace": "d", "uid": "u"},
            "spec": {"volumes": [
                {"name": "root", "persistentVolumeClaim": {"claimName": "root-pvc"}},
                {"name": "dv", "dataVolume": {"name": "dv-pvc"}},
                {"name": "dump", "memoryDump": {"claimName": "dump-pvc"}},
                {"name": "eph", "ephemeral": {"persistentVolumeClaim": {"claimName": "eph-pvc"}}},
                {"name": "cloudinit", "cloudInitNoCloud": {"userData": "x"}}
            ]},
            "status": {"volumeStatus": [
                {"name": "root", "persistentVolumeClaimInfo": {"claimName": "root-pvc"}},
                {"name": "hp1", "hotplugVolume": {"attachPodName": "hp-volume-x"},
                 "persistentVolumeClaimInfo": {"claimName": "hot-pvc"}},
                {"name": "hp2", "hotplugVolume": {"attachPodName": "hp-volume-y"}},
                {"name": "cloudinit", "target": "vdb"}
            ]}
        }))
        .unwrap();
        let v = VmiView::from(&vmi);
        assert_eq!(
            v.pvcs,
            ["root-pvc", "dv-pvc", "dump-pvc", "eph-pvc", "hot-pvc"]
        );
        assert_eq!(v.unnamed_volumes, ["hp2"]);
        // Made after the VMI by design: never taken for a replacement.
        assert_eq!(v.late_claims, ["dump-pvc", "dv-pvc", "hot-pvc"]);
    }

    /// Issue 23 item 3: the backend-storage PVC of a VMI with persistent EFI or TPM is a
    /// disk of it: KubeVirt 1.3's `persistent-state-for-<vmi>`, or the one ≥ 1.4 lists.
    #[test]
    fn the_backend_storage_pvc_is_a_disk_of_the_vmi() {
        let vmi = |domain: serde_json::Value, status: serde_json::Value| {
            let v: VirtualMachineInstance = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "vm-a", "namespace": "d", "uid": "u"},
                "spec": {"domain": domain, "volumes": [
                    {"name": "root", "persistentVolumeClaim": {"claimName": "root-pvc"}}]},
                "status": {"volumeStatus": status}
            }))
            .unwrap();
            VmiView::from(&v).pvcs
        };
        let efi = serde_json::json!({"firmware": {"bootloader": {"efi": {"persistent": true}}}});
        let tpm = serde_json::json!({"devices": {"tpm": {"persistent": true}}});
        assert_eq!(
            vmi(efi.clone(), serde_json::json!([])),
            ["root-pvc", "persistent-state-for-vm-a"]
        );
        let v: VirtualMachineInstance = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vm-a"},
            "spec": {"domain": efi.clone(), "volumes": []}
        }))
        .unwrap();
        assert_eq!(VmiView::from(&v).late_claims, ["persistent-state-for-vm-a"]);
        assert_eq!(
            vmi(tpm, serde_json::json!([])),
            ["root-pvc", "persistent-state-for-vm-a"]
        );
        // KubeVirt ≥ 1.4: a generated name, listed in volumeStatus; no second guess.
        let listed = serde_json::json!([{"name": "persistent-state-for-vm-a",
            "persistentVolumeClaimInfo": {"claimName": "persistent-state-for-vm-a-x7k2p"}}]);
        assert_eq!(
            vmi(efi, listed),
            ["root-pvc", "persistent-state-for-vm-a-x7k2p"]
        );
        let plain = serde_json::json!({"firmware": {"bootloader": {"efi": {"persistent": false}}}});
        assert_eq!(vmi(plain, serde_json::json!([])), ["root-pvc"]);
    }
}
