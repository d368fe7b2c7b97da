//! A virt-launcher (or hotplug attachment) pod as the planner sees it.

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use super::names::*;
use super::object_key::{controller_of, ObjectKey};

/// A virt-launcher pod as the planner sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodView {
    /// Identity and version.
    pub key: ObjectKey,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `metadata.deletionTimestamp`.
    pub deletion_timestamp: Option<jiff::Timestamp>,
    /// UID of the VMI it serves (controller ownerRef, else `kubevirt.io/created-by`).
    pub vmi_uid: Option<String>,
    /// Name of the VMI it serves (ownerRef, else `kubevirt.io/domain`).
    pub vmi_name: Option<String>,
    /// The PVCs its volumes mount.
    #[serde(default)]
    pub claims: Vec<String>,
    /// UID of the pod that controls it (a hotplug attachment pod's launcher pod).
    #[serde(default)]
    pub owner_pod_uid: Option<String>,
}

impl PodView {
    /// Whether this is a running, not deleting launcher pod of a VMI other than
    /// `vmi_uid` that mounts one of `claims`: another live VM using a shared disk.
    pub fn uses_shared_disk(&self, vmi_uid: &str, claims: &[&str]) -> bool {
        self.phase.as_deref() == Some("Running")
            && self.deletion_timestamp.is_none()
            && self.vmi_uid.as_deref().is_some_and(|u| u != vmi_uid)
            && self.claims.iter().any(|c| claims.contains(&c.as_str()))
    }
}

impl From<&Pod> for PodView {
    fn from(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let owner = controller_of(meta, "VirtualMachineInstance");
        let label = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_CREATED_BY))
            .cloned();
        let domain = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_DOMAIN))
            .cloned();
        PodView {
            key: ObjectKey::of(meta),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            phase: pod.status.as_ref().and_then(|s| s.phase.clone()),
            deletion_timestamp: meta.deletion_timestamp.as_ref().map(|t| t.0),
            vmi_uid: owner.as_ref().map(|(_, uid)| uid.clone()).or(label),
            vmi_name: owner.map(|(name, _)| name).or(domain),
            claims: pod
                .spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .map(|vs| {
                    vs.iter()
                        .filter_map(|v| v.persistent_volume_claim.as_ref())
                        .map(|c| c.claim_name.clone())
                        .collect()
                })
                .unwrap_or_default(),
            owner_pod_uid: controller_of(meta, "Pod").map(|(_, uid)| uid),
        }
    }
}
