//! Typed views of the KubeVirt and Longhorn objects vmrecover reads: only the fields it
//! uses, tolerant of unknown and missing fields (docs/architecture.md §4).

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// Implements `kube::Resource` for a struct with a `metadata: ObjectMeta` field.
macro_rules! typed_resource {
    ($ty:ty, $scope:ty, group = $group:literal, version = $version:literal, kind = $kind:literal, plural = $plural:literal) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($group)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($version)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// `kubevirt.io/v1` VirtualMachineInstance.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VirtualMachineInstance {
    /// Object metadata.
    #[serde(default, deserialize_with = "super::lean_meta::without_managed_fields")]
    pub metadata: ObjectMeta,
    /// The fields of `spec` vmrecover reads.
    #[serde(default)]
    pub spec: VmiSpec,
    /// The fields of `status` vmrecover reads.
    #[serde(default)]
    pub status: VmiStatus,
}
typed_resource!(
    VirtualMachineInstance,
    k8s_openapi::NamespaceResourceScope,
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachineInstance",
    plural = "virtualmachineinstances"
);

/// `VirtualMachineInstance.spec`: the volume list, and the domain for its persistent
/// TPM/EFI switches.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VmiSpec {
    /// The VMI's volumes.
    #[serde(default)]
    pub volumes: Vec<VmiVolume>,
    /// `domain`, read only for `devices.tpm.persistent` and
    /// `firmware.bootloader.efi.persistent`.
    #[serde(default)]
    pub domain: Option<serde_json::Value>,
}

/// Prefix of KubeVirt's backend-storage PVC (persistent TPM/EFI state): the whole name is
/// `persistent-state-for-<vmi>` in KubeVirt 1.3; from 1.4 a generated name with label
/// `persistent-state-for=<vmi>`, listed in the VMI's `status.volumeStatus` (kubevirt
/// `pkg/storage/backend-storage/backend-storage.go`, `PVCPrefix`, `PVCForVMI`).
pub const BACKEND_STORAGE_PREFIX: &str = "persistent-state-for-";

impl VmiSpec {
    /// Whether KubeVirt keeps a backend-storage PVC for the VMI: persistent TPM or
    /// persistent EFI (`IsBackendStorageNeededForVMI`, same file).
    pub fn needs_backend_storage(&self) -> bool {
        let on = |p: &str| {
            self.domain
                .as_ref()
                .and_then(|d| d.pointer(p))
                .and_then(serde_json::Value::as_bool)
                == Some(true)
        };
        on("/devices/tpm/persistent") || on("/firmware/bootloader/efi/persistent")
    }
}

/// One VMI volume; only PVC-backed sources matter for disk evidence.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmiVolume {
    /// The volume's name in the VMI.
    #[serde(default)]
    pub name: String,
    /// A PVC source.
    #[serde(default)]
    pub persistent_volume_claim: Option<ClaimRef>,
    /// A DataVolume source (its PVC has the DataVolume's name).
    #[serde(default)]
    pub data_volume: Option<NameRef>,
    /// A memory-dump target (a PVC).
    #[serde(default)]
    pub memory_dump: Option<ClaimRef>,
    /// An ephemeral overlay on a PVC (`ephemeral.persistentVolumeClaim`).
    #[serde(default)]
    pub ephemeral: Option<EphemeralSource>,
}

impl VmiVolume {
    /// The PVC this volume uses, whatever its source type.
    pub fn claim(&self) -> Option<&str> {
        self.persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str())
            .or_else(|| self.data_volume.as_ref().map(|d| d.name.as_str()))
            .or_else(|| self.memory_dump.as_ref().map(|c| c.claim_name.as_str()))
            .or_else(|| {
                self.ephemeral
                    .as_ref()
                    .and_then(|e| e.persistent_volume_claim.as_ref())
                    .map(|c| c.claim_name.as_str())
            })
            .filter(|n| !n.is_empty())
    }
}

/// `{persistentVolumeClaim: {claimName: …}}` of an ephemeral volume.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralSource {
    /// The PVC under the overlay.
    #[serde(default)]
    pub persistent_volume_claim: Option<ClaimRef>,
}

/// One entry of `status.volumeStatus`: hotplugged volumes and memory dumps appear here,
/// sometimes before or after they are in `spec.volumes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// The volume's name in the VMI.
    #[serde(default)]
    pub name: String,
    /// Set for a hotplugged volume.
    #[serde(default)]
    pub hotplug_volume: Option<serde_json::Value>,
    /// PVC details (`claimName` on KubeVirt 1.x).
    #[serde(default)]
    pub persistent_volume_claim_info: Option<ClaimInfo>,
    /// Set for a memory dump.
    #[serde(default)]
    pub memory_dump_volume: Option<ClaimInfo>,
}

/// The claim name inside a volume status.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimInfo {
    /// The PVC's name, when the release reports it.
    #[serde(default)]
    pub claim_name: Option<String>,
}

/// `{claimName: …}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRef {
    /// The PVC's name.
    #[serde(default)]
    pub claim_name: String,
}

/// `{name: …}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NameRef {
    /// The referenced name.
    #[serde(default)]
    pub name: String,
}

/// `VirtualMachineInstance.status`, the fields vmrecover reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmiStatus {
    /// Pending, Scheduling, Scheduled, Running, Succeeded, Failed, WaitingForSync, Unknown.
    #[serde(default)]
    pub phase: Option<String>,
    /// The node the VMI runs on.
    #[serde(default)]
    pub node_name: Option<String>,
    /// E.g. `NodeUnresponsive`.
    #[serde(default)]
    pub reason: Option<String>,
    /// Present while a migration is, or was last, under way.
    #[serde(default)]
    pub migration_state: Option<MigrationState>,
    /// Volumes as attached (hotplug, memory dump).
    #[serde(default)]
    pub volume_status: Vec<VolumeStatus>,
    /// Its launcher pods, by UID, with their node (virt-controller keeps it): a hotplug
    /// attachment pod controlled by one of them is this VMI's even once that launcher pod is
    /// gone.
    #[serde(default)]
    pub active_pods: std::collections::BTreeMap<String, String>,
}

/// `status.migrationState`, enough to tell whether a migration is in flight.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationState {
    /// Source node.
    #[serde(default)]
    pub source_node: Option<String>,
    /// Target node.
    #[serde(default)]
    pub target_node: Option<String>,
    /// Set when the migration started.
    #[serde(default)]
    pub start_timestamp: Option<String>,
    /// Set once the migration finished.
    #[serde(default)]
    pub completed: Option<bool>,
    /// Set when the migration failed.
    #[serde(default)]
    pub failed: Option<bool>,
    /// Set when the migration ended (either way).
    #[serde(default)]
    pub end_timestamp: Option<String>,
}

/// `kubevirt.io/v1` VirtualMachine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VirtualMachine {
    /// Object metadata.
    #[serde(default, deserialize_with = "super::lean_meta::without_managed_fields")]
    pub metadata: ObjectMeta,
    /// The fields of `spec` vmrecover reads.
    #[serde(default)]
    pub spec: VmSpec,
    /// The fields of `status` vmrecover reads.
    #[serde(default)]
    pub status: VmStatus,
}
typed_resource!(
    VirtualMachine,
    k8s_openapi::NamespaceResourceScope,
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachine",
    plural = "virtualmachines"
);

/// `VirtualMachine.spec`, the run strategy only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSpec {
    /// Always, Halted, Manual, RerunOnFailure, Once.
    #[serde(default)]
    pub run_strategy: Option<String>,
    /// The deprecated boolean form.
    #[serde(default)]
    pub running: Option<bool>,
}

/// `VirtualMachine.status`, the printable status only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmStatus {
    /// E.g. Running, Stopped, Stopping, Terminating.
    #[serde(default)]
    pub printable_status: Option<String>,
}

/// `longhorn.io/v1beta2` Volume.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LonghornVolume {
    /// Object metadata (name = the Longhorn volume name).
    #[serde(default, deserialize_with = "super::lean_meta::without_managed_fields")]
    pub metadata: ObjectMeta,
    /// The fields of `status` vmrecover reads.
    #[serde(default)]
    pub status: LonghornVolumeStatus,
}
typed_resource!(
    LonghornVolume,
    k8s_openapi::NamespaceResourceScope,
    group = "longhorn.io",
    version = "v1beta2",
    kind = "Volume",
    plural = "volumes"
);

/// `Volume.status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LonghornVolumeStatus {
    /// The node the volume is attached to, if any (`currentNodeID` in Longhorn's CRD:
    /// camelCase would read `currentNodeId` and miss it).
    #[serde(rename = "currentNodeID", default)]
    pub current_node_id: Option<String>,
    /// attached, detached, attaching, detaching, …
    #[serde(default)]
    pub state: Option<String>,
    /// The PV and PVC Longhorn last saw using the volume.
    #[serde(default)]
    pub kubernetes_status: LonghornKubernetesStatus,
}

/// `Volume.status.kubernetesStatus`: the Kubernetes objects bound to the volume.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LonghornKubernetesStatus {
    /// The PV's name.
    #[serde(rename = "pvName", default)]
    pub pv_name: Option<String>,
    /// The PVC's name.
    #[serde(rename = "pvcName", default)]
    pub pvc_name: Option<String>,
    /// The PVC's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `longhorn.io/v1beta2` VolumeAttachment (name = the volume name).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LonghornVolumeAttachment {
    /// Object metadata.
    #[serde(default, deserialize_with = "super::lean_meta::without_managed_fields")]
    pub metadata: ObjectMeta,
    /// The fields of `spec` vmrecover reads.
    #[serde(default)]
    pub spec: LonghornAttachmentSpec,
}
typed_resource!(
    LonghornVolumeAttachment,
    k8s_openapi::NamespaceResourceScope,
    group = "longhorn.io",
    version = "v1beta2",
    kind = "VolumeAttachment",
    plural = "volumeattachments"
);

/// `VolumeAttachment.spec` (Longhorn).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LonghornAttachmentSpec {
    /// Attachment tickets by id.
    #[serde(default)]
    pub attachment_tickets: BTreeMap<String, AttachmentTicket>,
    /// The volume this attachment object is for.
    #[serde(default)]
    pub volume: Option<String>,
}

/// One Longhorn attachment ticket.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentTicket {
    /// The node the ticket asks the volume to be attached to.
    #[serde(rename = "nodeID", default)]
    pub node_id: Option<String>,
    /// csi-attacher, longhorn-api, …
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Longhorn spells it `currentNodeID` (longhorn-manager k8s/pkg/apis/longhorn/v1beta2/
    /// volume.go, `VolumeStatus.CurrentNodeID`): a field vmrecover did not read would
    /// hide an attachment.
    #[test]
    fn longhorn_volume_current_node_is_read() {
        let v: LonghornVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pvc-1", "namespace": "longhorn-system"},
            "status": {"currentNodeID": "node-2", "state": "attached"}
        }))
        .unwrap();
        assert_eq!(v.status.current_node_id.as_deref(), Some("node-2"));
    }
}

/// A core/v1 Pod decoded without `metadata.managedFields` (see `lean_meta`), for the pod
/// lists of every pass; [`Pod`](k8s_openapi::api::core::v1::Pod) again with `into`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LeanPod {
    /// Object metadata.
    #[serde(default, deserialize_with = "super::lean_meta::without_managed_fields")]
    pub metadata: ObjectMeta,
    /// `spec`.
    #[serde(default)]
    pub spec: Option<k8s_openapi::api::core::v1::PodSpec>,
    /// `status`.
    #[serde(default)]
    pub status: Option<k8s_openapi::api::core::v1::PodStatus>,
}
typed_resource!(
    LeanPod,
    k8s_openapi::NamespaceResourceScope,
    group = "",
    version = "v1",
    kind = "Pod",
    plural = "pods"
);

impl From<LeanPod> for k8s_openapi::api::core::v1::Pod {
    fn from(p: LeanPod) -> Self {
        k8s_openapi::api::core::v1::Pod {
            metadata: p.metadata,
            spec: p.spec,
            status: p.status,
        }
    }
}
