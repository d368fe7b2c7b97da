//! The table of API resources the simulator serves and their discovery entries: vocabulary
//! that imports nothing of the crate (the group and resource lists are [`crate::discovery`]).

use serde_json::{json, Value};

/// One served API resource (a group/version/resource with its kind and behaviour flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version, e.g. `v1`.
    pub version: &'static str,
    /// Plural resource name used in URLs.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names (kubectl aliases).
    pub short_names: &'static [&'static str],
    /// Whether the resource has a `/status` subresource (status is then ignored on the main resource).
    pub status_subresource: bool,
    /// Whether the resource is a CustomResourceDefinition-backed kind on a real cluster.
    pub custom: bool,
    /// Whether deletes return the deleted object (true) or a `Status` Success (false).
    pub returns_deleted_object: bool,
    /// Categories for `kubectl get all` style lookups.
    pub categories: &'static [&'static str],
}

impl ResourceDef {
    /// `apiVersion` string (`v1` or `group/version`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Group-qualified resource as kubectl prints it (`virtualmachines.kubevirt.io`, `pods`).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether `metadata.generation` is maintained (custom resources and pods, as in Kubernetes 1.33).
    pub fn tracks_generation(&self) -> bool {
        self.custom || self.plural == "pods"
    }

    /// Whether `deletecollection` is served (every kind but namespaces, whose REST storage
    /// has no DeleteCollection).
    pub fn supports_delete_collection(&self) -> bool {
        !(self.group.is_empty() && self.plural == "namespaces")
    }

    /// Verbs advertised in discovery.
    pub fn verbs(&self) -> Value {
        if self.supports_delete_collection() {
            json!([
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch"
            ])
        } else {
            json!(["create", "delete", "get", "list", "patch", "update", "watch"])
        }
    }

    /// The discovery `APIResource` entries for this resource (main and `/status`).
    pub fn discovery_entries(&self) -> Vec<Value> {
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs(),
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut out = vec![main];
        // Create-only subresources of the core group, as /api/v1 lists them (kubectl drain
        // looks for `pods/eviction` with group policy and version v1 here).
        match (self.group, self.plural) {
            ("", "pods") => out.push(json!({
                "name": "pods/eviction", "singularName": "", "namespaced": true,
                "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"],
            })),
            ("", "serviceaccounts") => out.push(json!({
                "name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
                "verbs": ["create"],
            })),
            _ => {}
        }
        if self.status_subresource {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }
}

#[allow(clippy::too_many_arguments)]
const fn def(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status_subresource: bool,
    custom: bool,
) -> ResourceDef {
    ResourceDef {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        status_subresource,
        custom,
        returns_deleted_object: false,
        categories: &[],
    }
}

/// Every resource the simulator serves.
pub static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        returns_deleted_object: true,
        categories: &["all"],
        ..def("", "v1", "pods", "pod", "Pod", true, &["po"], true, false)
    },
    def(
        "",
        "v1",
        "nodes",
        "node",
        "Node",
        false,
        &["no"],
        true,
        false,
    ),
    def(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        true,
        false,
    ),
    def(
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        true,
        false,
    ),
    def(
        "",
        "v1",
        "persistentvolumes",
        "persistentvolume",
        "PersistentVolume",
        false,
        &["pv"],
        true,
        false,
    ),
    def(
        "",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        false,
        false,
    ),
    ResourceDef {
        categories: &["all"],
        ..def(
            "kubevirt.io",
            "v1",
            "virtualmachines",
            "virtualmachine",
            "VirtualMachine",
            true,
            &["vm", "vms"],
            true,
            true,
        )
    },
    ResourceDef {
        categories: &["all"],
        ..def(
            "kubevirt.io",
            "v1",
            "virtualmachineinstances",
            "virtualmachineinstance",
            "VirtualMachineInstance",
            true,
            &["vmi", "vmis"],
            // No status subresource in KubeVirt's VMI CRD (virt-operator
            // pkg/virt-operator/resource/generate/components/crds.go NewVirtualMachineInstanceCrd,
            // v1.4.0, sets none; VMs get one): status is written through the main resource.
            false,
            true,
        )
    },
    def(
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "volumeattachment",
        "VolumeAttachment",
        false,
        &[],
        true,
        false,
    ),
    def(
        "longhorn.io",
        "v1beta2",
        "volumes",
        "volume",
        "Volume",
        true,
        &["lhv"],
        true,
        true,
    ),
    def(
        "longhorn.io",
        "v1beta2",
        "volumeattachments",
        "volumeattachment",
        "VolumeAttachment",
        true,
        &["lhva"],
        true,
        true,
    ),
    // longhorn-manager `k8s/pkg/apis/longhorn/v1beta2/replica.go` (read at 04516b73): namespaced,
    // short name `lhr`, a status subresource; `spec.nodeID` and `spec.volumeName` (its
    // `InstanceSpec`), `status.currentState` (`InstanceStatus`: running, stopped, error, …);
    // longhorn-manager labels each with `longhornvolume=<volume>` (`types.LonghornLabelVolume`).
    // No controller: the simulator never changes a replica's state by itself.
    def(
        "longhorn.io",
        "v1beta2",
        "replicas",
        "replica",
        "Replica",
        true,
        &["lhr"],
        true,
        true,
    ),
    // longhorn-manager `k8s/pkg/apis/longhorn/v1beta2/node.go` (v1.10.0): namespaced, short
    // name `lhn`, a status subresource; `status.conditions` is a list with `Ready`.
    def(
        "longhorn.io",
        "v1beta2",
        "nodes",
        "node",
        "Node",
        true,
        &["lhn"],
        true,
        true,
    ),
    def(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        false,
        false,
    ),
    def(
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        false,
        false,
    ),
    // ConfigMaps: the params of vmrecover's admission policy (and any other configuration).
    def(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        false,
        false,
    ),
    // ValidatingAdmissionPolicies and their bindings (GA in 1.30), enforced by
    // [`crate::admission::vap`] once created through the API.
    def(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "validatingadmissionpolicy",
        "ValidatingAdmissionPolicy",
        false,
        &[],
        true,
        false,
    ),
    def(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "validatingadmissionpolicybinding",
        "ValidatingAdmissionPolicyBinding",
        false,
        &[],
        false,
        false,
    ),
    // What `deploy/` installs, so `kubectl apply --dry-run=server -f deploy/` works and the
    // RBAC the simulator enforces can be read and changed through the API.
    def(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        false,
        false,
    ),
    ResourceDef {
        categories: &["all"],
        ..def(
            "apps",
            "v1",
            "daemonsets",
            "daemonset",
            "DaemonSet",
            true,
            &["ds"],
            true,
            false,
        )
    },
    // batch/v1 CronJob: stored and validated by name and schedule only (the chart's suspended
    // vmrecover-fence); no controller runs it, and no Job kind is served.
    ResourceDef {
        categories: &["all"],
        ..def(
            "batch",
            "v1",
            "cronjobs",
            "cronjob",
            "CronJob",
            true,
            &["cj"],
            true,
            false,
        )
    },
    def(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
        false,
        false,
    ),
    def(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
        false,
        false,
    ),
    def(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        &[],
        false,
        false,
    ),
    def(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
        false,
        false,
    ),
    // vmrecover's per-node summaries (`vmrecover-summary-<node>`) and a cluster-wide pause.
    def(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        false,
        false,
    ),
    // Harvester's settings and upgrades (harvester pkg/apis/harvesterhci.io/v1beta1
    // settings.go and upgrade.go, v1.7.0: Setting is cluster-scoped with top-level `value` and
    // `default`, Upgrade is namespaced; neither declares a status subresource).
    def(
        "harvesterhci.io",
        "v1beta1",
        "settings",
        "setting",
        "Setting",
        false,
        &[],
        false,
        true,
    ),
    def(
        "harvesterhci.io",
        "v1beta1",
        "upgrades",
        "upgrade",
        "Upgrade",
        true,
        &[],
        false,
        true,
    ),
    // Multus's NetworkAttachmentDefinition (k8snetworkplumbingwg
    // network-attachment-definition-client `artifacts/networks-crd.yaml` at 6fd0897: namespaced,
    // short name net-attach-def, no status subresource),
    // which Harvester's VM mutator looks up for a VM's Multus networks.
    def(
        "k8s.cni.cncf.io",
        "v1",
        "network-attachment-definitions",
        "network-attachment-definition",
        "NetworkAttachmentDefinition",
        true,
        &["net-attach-def"],
        false,
        true,
    ),
    // The KubeVirt install CR (`kubevirt` in harvester-system; kubevirt
    // `pkg/virt-operator/resource/generate/components/crds.go` `NewKubeVirtCrd`, v1.4.0:
    // namespaced, short names kv/kvs, status subresource) and Longhorn's settings
    // (longhorn-manager `k8s/pkg/apis/longhorn/v1beta2/setting.go`, v1.9.0: short name lhs,
    // status subresource), read by `vmrecover check` for the versions.
    def(
        "kubevirt.io",
        "v1",
        "kubevirts",
        "kubevirt",
        "KubeVirt",
        true,
        &["kv", "kvs"],
        true,
        true,
    ),
    def(
        "longhorn.io",
        "v1beta2",
        "settings",
        "setting",
        "Setting",
        true,
        &["lhs"],
        true,
        true,
    ),
];

/// Index of a resource in [`RESOURCES`].
pub type ResIdx = usize;

/// Finds a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<ResIdx> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by `apiVersion` and `kind`.
pub fn find_kind(api_version: &str, kind: &str) -> Option<ResIdx> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Splits `group/version` (or `v1`) into its parts.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_plural_and_kind() {
        let vmi = find("kubevirt.io", "v1", "virtualmachineinstances");
        assert!(vmi.is_some());
        assert_eq!(find_kind("kubevirt.io/v1", "VirtualMachineInstance"), vmi);
        assert_eq!(find_kind("v1", "Pod"), find("", "v1", "pods"));
        assert_eq!(find("kubevirt.io", "v2", "virtualmachineinstances"), None);
    }
}
