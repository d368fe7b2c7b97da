//! Every permission vmrecover uses, as one list: `check` asks one `SelfSubjectAccessReview`
//! per entry, and the RBAC proof test (`tests/e2e/deploy_rbac.rs`) compares the list with the
//! grants of the chart's roles, so the two cannot drift.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::Check;
use crate::cluster::describe;

/// Where a permission is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Cluster-wide (a ClusterRole): VMs can be in any namespace.
    Cluster,
    /// vmrecover's own namespace (`--namespace`, the release namespace).
    Own,
    /// Longhorn's namespace (`--longhorn-namespace`, default `longhorn-system`).
    Longhorn,
    /// Harvester's namespace (`harvester-system`).
    Harvester,
}

impl Scope {
    /// The namespace to ask about ("" for cluster scope).
    pub fn namespace(self, own: &str) -> &str {
        match self {
            Scope::Cluster => "",
            Scope::Own => own,
            Scope::Longhorn => crate::cluster::longhorn_namespace(),
            Scope::Harvester => crate::cluster::HARVESTER_NAMESPACE,
        }
    }
}

/// One verb on one resource vmrecover uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// API group ("" core).
    pub group: &'static str,
    /// Resource (plural).
    pub resource: &'static str,
    /// Verb.
    pub verb: &'static str,
    /// Where.
    pub scope: Scope,
    /// The one object name the grant is narrowed to, if any.
    pub name: Option<&'static str>,
    /// What it is for.
    pub why: &'static str,
}

const fn p(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    scope: Scope,
    name: Option<&'static str>,
    why: &'static str,
) -> Permission {
    Permission {
        group,
        resource,
        verb,
        scope,
        name,
        why,
    }
}

use Scope::{Cluster, Harvester, Longhorn, Own};

/// Every permission of `run`, `agent`, `status --all-nodes` and `check`.
pub const PERMISSIONS: &[Permission] = &[
    p("", "nodes", "get", Cluster, None, "read this node"),
    p("", "nodes", "list", Cluster, None, "status --all-nodes"),
    p(
        "",
        "pods",
        "list",
        Cluster,
        None,
        "launcher pods on this node",
    ),
    p(
        "",
        "pods",
        "delete",
        Cluster,
        None,
        "force-delete a leftover launcher pod",
    ),
    p(
        "",
        "persistentvolumeclaims",
        "get",
        Cluster,
        None,
        "a stuck VM's claims",
    ),
    p(
        "",
        "persistentvolumes",
        "get",
        Cluster,
        None,
        "a claim's Longhorn volume",
    ),
    p(
        "",
        "persistentvolumes",
        "list",
        Cluster,
        None,
        "a Released PV of a deleted claim",
    ),
    p(
        "kubevirt.io",
        "virtualmachineinstances",
        "get",
        Cluster,
        None,
        "re-read before a change",
    ),
    p(
        "kubevirt.io",
        "virtualmachineinstances",
        "list",
        Cluster,
        None,
        "this node's VMIs",
    ),
    p(
        "kubevirt.io",
        "virtualmachineinstances",
        "watch",
        Cluster,
        None,
        "the controller wait",
    ),
    p(
        "kubevirt.io",
        "virtualmachineinstances",
        "patch",
        Cluster,
        None,
        "clear known finalizers",
    ),
    p(
        "kubevirt.io",
        "virtualmachines",
        "get",
        Cluster,
        None,
        "the VMs of stuck VMIs",
    ),
    p(
        "kubevirt.io",
        "virtualmachines",
        "list",
        Cluster,
        None,
        "the controller wait",
    ),
    p(
        "kubevirt.io",
        "virtualmachines",
        "watch",
        Cluster,
        None,
        "the controller wait",
    ),
    p(
        "kubevirt.io",
        "virtualmachines",
        "patch",
        Cluster,
        None,
        "clear known finalizers",
    ),
    p(
        "storage.k8s.io",
        "volumeattachments",
        "list",
        Cluster,
        None,
        "CSI attachments",
    ),
    p(
        "events.k8s.io",
        "events",
        "create",
        Cluster,
        None,
        "an Event per VM changed",
    ),
    p(
        "harvesterhci.io",
        "settings",
        "get",
        Cluster,
        Some("vm-force-reset-policy"),
        "Harvester's node-down policy",
    ),
    p(
        "harvesterhci.io",
        "settings",
        "get",
        Cluster,
        Some("server-version"),
        "check: the Harvester version",
    ),
    p(
        "coordination.k8s.io",
        "leases",
        "get",
        Own,
        None,
        "the node Lease",
    ),
    p(
        "coordination.k8s.io",
        "leases",
        "create",
        Own,
        None,
        "the node Lease",
    ),
    p(
        "coordination.k8s.io",
        "leases",
        "update",
        Own,
        None,
        "the node Lease",
    ),
    p(
        "",
        "configmaps",
        "get",
        Own,
        Some("vmrecover-pause"),
        "the cluster-wide pause",
    ),
    p("", "configmaps", "create", Own, None, "the node summary"),
    p("", "configmaps", "list", Own, None, "status --all-nodes"),
    p("", "configmaps", "patch", Own, None, "the node summary"),
    p(
        "longhorn.io",
        "volumes",
        "get",
        Longhorn,
        None,
        "where a volume is attached",
    ),
    p(
        "longhorn.io",
        "volumes",
        "list",
        Longhorn,
        None,
        "the volume of a deleted claim",
    ),
    p(
        "longhorn.io",
        "volumeattachments",
        "get",
        Longhorn,
        None,
        "attachment tickets",
    ),
    p(
        "longhorn.io",
        "nodes",
        "get",
        Longhorn,
        None,
        "a fenced-node run: whether Longhorn says the node is Ready",
    ),
    p(
        "longhorn.io",
        "replicas",
        "list",
        Longhorn,
        None,
        "why a VM is not back: its volume's replicas",
    ),
    p(
        "longhorn.io",
        "settings",
        "get",
        Longhorn,
        Some("current-longhorn-version"),
        "check: the Longhorn version",
    ),
    p(
        "harvesterhci.io",
        "upgrades",
        "list",
        Harvester,
        None,
        "a Harvester Upgrade running",
    ),
    p(
        "kubevirt.io",
        "kubevirts",
        "get",
        Harvester,
        Some("kubevirt"),
        "check: the KubeVirt version",
    ),
];

fn label(p: &Permission, own: &str) -> String {
    let gr = if p.group.is_empty() {
        p.resource.to_string()
    } else {
        format!("{}/{}", p.group, p.resource)
    };
    let name = p.name.map(|n| format!(" {n}")).unwrap_or_default();
    match p.scope.namespace(own) {
        "" => format!("permission.{} {gr}{name}", p.verb),
        ns => format!("permission.{} {gr}{name} in {ns}", p.verb),
    }
}

/// One review per permission.
pub async fn check(client: &Client, own: &str) -> Vec<Check> {
    let api = Api::<SelfSubjectAccessReview>::all(client.clone());
    let mut out = Vec::with_capacity(PERMISSIONS.len());
    for perm in PERMISSIONS {
        let name = label(perm, own);
        let ns = perm.scope.namespace(own);
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(perm.group.into()),
                    resource: Some(perm.resource.into()),
                    verb: Some(perm.verb.into()),
                    namespace: (!ns.is_empty()).then(|| ns.to_string()),
                    name: perm.name.map(str::to_string),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let check = match api.create(&PostParams::default(), &review).await {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {
                Check::ok(name, format!("granted ({})", perm.why))
            }
            Ok(r) => {
                let why = r.status.and_then(|s| s.reason).unwrap_or_default();
                Check::fail(
                    name,
                    format!("not granted; needed for {} {why}", perm.why).trim_end().to_string(),
                    "install the chart's ClusterRole and Roles (charts/vmrecover/templates/rbac.yaml) \
                     bound to vmrecover's ServiceAccount",
                )
            }
            Err(e) => Check::fail(
                name,
                format!(
                    "cannot ask: {}",
                    describe(
                        &e,
                        "create",
                        "selfsubjectaccessreviews.authorization.k8s.io"
                    )
                ),
                "every authenticated user may ask (ClusterRole system:basic-user): restore it",
            ),
        };
        out.push(check);
    }
    out
}
