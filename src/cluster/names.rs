//! Label, annotation and field names from KubeVirt, Harvester and Longhorn (docs/architecture.md §4).

/// Label on a VMI naming the node it runs on.
pub const LABEL_NODE_NAME: &str = "kubevirt.io/nodeName";
/// Label on a VMI naming the target node of a migration in flight.
pub const LABEL_MIGRATION_TARGET: &str = "kubevirt.io/migrationTargetNodeName";
/// Label `kubevirt.io=virt-launcher` marks launcher pods.
pub const LABEL_KUBEVIRT: &str = "kubevirt.io";
/// The value of [`LABEL_KUBEVIRT`] on launcher pods.
pub const VIRT_LAUNCHER: &str = "virt-launcher";
/// The value of [`LABEL_KUBEVIRT`] on hotplug attachment pods (`hp-volume-*`, controlled by
/// the launcher pod; kubevirt `pkg/virt-controller/services/template.go`,
/// `RenderHotplugAttachmentPodTemplate`).
pub const HOTPLUG_DISK: &str = "hotplug-disk";
/// Label on a launcher pod carrying the VMI's UID.
pub const LABEL_CREATED_BY: &str = "kubevirt.io/created-by";
/// Annotation on a launcher pod naming its VMI.
pub const ANNOTATION_DOMAIN: &str = "kubevirt.io/domain";
/// Harvester's annotation listing PVCs its VM finalizer still has to delete.
pub const ANNOTATION_REMOVED_PVCS: &str = "harvesterhci.io/removedPersistentVolumeClaims";
/// The CSI driver (and VolumeAttachment attacher) of Longhorn.
pub const LONGHORN_DRIVER: &str = "driver.longhorn.io";
/// Longhorn's namespace unless `--longhorn-namespace` names another.
pub const DEFAULT_LONGHORN_NAMESPACE: &str = "longhorn-system";

static LONGHORN_NAMESPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets Longhorn's namespace for this process, once, from `--longhorn-namespace` (before any
/// request; a later call changes nothing).
pub fn set_longhorn_namespace(ns: &str) {
    let _ = LONGHORN_NAMESPACE.set(ns.to_string());
}

/// Longhorn's namespace: where every Longhorn read goes.
pub fn longhorn_namespace() -> &'static str {
    LONGHORN_NAMESPACE
        .get()
        .map(String::as_str)
        .unwrap_or(DEFAULT_LONGHORN_NAMESPACE)
}
/// vmrecover's name as an Event reporting controller and field manager.
pub const REPORTING_CONTROLLER: &str = "vmrecover";

/// A `namespace/name` pair, as `--only` takes it.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct NamespacedName {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl std::fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A text that is not `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected NAMESPACE/NAME, got {0:?}")]
pub struct NotNamespacedName(pub String);

impl std::str::FromStr for NamespacedName {
    type Err = NotNamespacedName;

    /// Parses `NAMESPACE/NAME`; both parts non-empty, no second `/`.
    fn from_str(s: &str) -> Result<Self, NotNamespacedName> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(NamespacedName {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(NotNamespacedName(s.to_string())),
        }
    }
}
