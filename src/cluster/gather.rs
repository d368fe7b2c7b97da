//! Reading this node's slice of the cluster with few requests (docs/architecture.md §4):
//! selectors narrow every list that can be narrowed; the rest run concurrently.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{ListParams, ObjectList};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::errors::{describe, status_code};
use super::names::*;
use super::objects::{
    LonghornVolume, LonghornVolumeAttachment, VirtualMachine, VirtualMachineInstance,
};
use super::retry::with_retries;
use super::snapshot::{
    AttachmentView, ClaimedVmi, ClusterFacts, LonghornVolumeRef, NodeIdentity, PodView, PvView,
    PvcView, VmView, VmiView,
};
use crate::evidence::Gathered;

/// Objects to read besides those the VMIs on the node refer to: the VMs (and their
/// PVCs) an earlier run had started recovering, whose VMI may be gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlsoRead {
    /// VMs, as (namespace, name).
    pub vms: Vec<NsName>,
    /// PVCs, as (namespace, claim).
    pub pvcs: Vec<NsName>,
    /// VMIs that VM processes on this node claim, as (namespace, name): each is read by
    /// name unless a VMI listed for the node already accounts for it.
    pub claimed_vmis: Vec<NsName>,
    /// Disks (PV name, volume handle) an earlier run recorded: looked for even when their
    /// PVC is gone.
    pub disks: Vec<(String, String)>,
}

/// Reads everything the planner needs about `node`. Never fails: a list that cannot be
/// read becomes `Unreadable` evidence, so the planner fails closed on it.
pub async fn gather(client: &Client, node: &str, also: &AlsoRead) -> ClusterFacts {
    let on_node = ListParams::default().labels(&format!("{LABEL_NODE_NAME}={node}"));
    let migrating_here = ListParams::default().labels(&format!("{LABEL_MIGRATION_TARGET}={node}"));
    let launchers = ListParams::default()
        .labels(&format!("{LABEL_KUBEVIRT}={VIRT_LAUNCHER}"))
        .fields(&format!("spec.nodeName={node}"));
    let vmi_api = Api::<VirtualMachineInstance>::all(client.clone());
    let all_va = ListParams::default();
    let node_api = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone());
    let get_node = format!("get nodes/{node}");
    let node_get = with_retries(&get_node, || node_api.get_opt(node));
    let (node_obj, vmis, targets, pods, vas, lh_atts, lh_vols) = tokio::join!(
        node_get,
        list(
            vmi_api.clone(),
            &on_node,
            "virtualmachineinstances.kubevirt.io"
        ),
        list(
            vmi_api,
            &migrating_here,
            "virtualmachineinstances.kubevirt.io"
        ),
        list(Api::<Pod>::all(client.clone()), &launchers, "pods"),
        list(
            Api::<VolumeAttachment>::all(client.clone()),
            &all_va,
            "volumeattachments.storage.k8s.io"
        ),
        list_optional(
            Api::<LonghornVolumeAttachment>::namespaced(client.clone(), LONGHORN_NAMESPACE),
            "volumeattachments.longhorn.io"
        ),
        list_optional(
            Api::<LonghornVolume>::namespaced(client.clone(), LONGHORN_NAMESPACE),
            "volumes.longhorn.io"
        ),
    );

    let vmis = match (vmis, targets) {
        (Ok(mut a), Ok(b)) => {
            let seen: BTreeSet<String> = a.iter().filter_map(|v| v.metadata.uid.clone()).collect();
            a.extend(
                b.into_iter()
                    .filter(|v| v.metadata.uid.as_ref().is_none_or(|u| !seen.contains(u))),
            );
            Ok(a)
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };

    // The namespaces whose VMs and PVCs matter: those of the VMIs here and of the VMs an
    // earlier run was recovering.
    let mut namespaces: BTreeSet<String> = also.vms.iter().map(|(ns, _)| ns.clone()).collect();
    if let Ok(vmis) = &vmis {
        namespaces.extend(vmis.iter().filter_map(|v| v.metadata.namespace.clone()));
    }
    let (vms, pvcs) = tokio::join!(
        list_in_namespaces::<VirtualMachine>(client, &namespaces, "virtualmachines.kubevirt.io"),
        list_in_namespaces::<PersistentVolumeClaim>(client, &namespaces, "persistentvolumeclaims"),
    );

    // Longhorn volumes by the PVC they last served, kept until the missing claims are known.
    let lh_refs: Result<Vec<LonghornVolumeRef>, String> = lh_vols
        .as_ref()
        .map(|vols| {
            vols.iter()
                .map(|v| {
                    let k = &v.status.kubernetes_status;
                    LonghornVolumeRef {
                        name: v.metadata.name.clone().unwrap_or_default(),
                        pv: k.pv_name.clone().filter(|p| !p.is_empty()),
                        pvc: match (&k.namespace, &k.pvc_name) {
                            (Some(ns), Some(n)) if !n.is_empty() => Some((ns.clone(), n.clone())),
                            _ => None,
                        },
                    }
                })
                .collect()
        })
        .map_err(Clone::clone);
    let attachments = match (vas, lh_atts, lh_vols) {
        (Ok(vas), Ok(atts), Ok(vols)) => {
            let mut all: Vec<AttachmentView> = vas
                .iter()
                .filter(|va| va.spec.attacher == LONGHORN_DRIVER)
                .filter_map(AttachmentView::from_csi)
                .collect();
            all.extend(atts.iter().flat_map(AttachmentView::from_longhorn_tickets));
            all.extend(vols.iter().filter_map(AttachmentView::from_longhorn_volume));
            Gathered::read(all)
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Gathered::unreadable("attachments", e),
    };

    // Keep only what the VMIs here (and earlier runs' VMs) refer to: the lists above are
    // whole namespaces and the whole cluster, and the facts live through a pass.
    let vmis: Result<Vec<VmiView>, String> = vmis.map(|v| v.iter().map(VmiView::from).collect());
    let (owners, claims) = referenced(vmis.as_ref().map(Vec::as_slice).unwrap_or_default(), also);
    let vms = vms.map(|v| {
        v.iter()
            .map(VmView::from)
            .filter(|vm| owners.contains(&(vm.key.namespace.clone(), vm.key.name.clone())))
            .collect::<Vec<_>>()
    });
    // The PVCs Harvester's clean-up would delete, so the plan can say truly whether
    // skipping it leaves any behind.
    let mut claims = claims;
    if let Ok(vms) = &vms {
        for vm in vms {
            claims.extend(
                vm.removed_pvcs
                    .iter()
                    .map(|c| (vm.key.namespace.clone(), c.clone())),
            );
        }
    }
    let pvcs = pvcs.map(|v| {
        v.iter()
            .map(PvcView::from)
            .filter(|p| claims.contains(&(p.namespace.clone(), p.name.clone())))
            .collect::<Vec<_>>()
    });
    // The PVs of the PVCs that matter for a decision (VMIs deleting or final, and earlier
    // runs' VMs), read by name: their CSI handle is the Longhorn volume name.
    let (pvs, longhorn_volumes) = match &pvcs {
        Ok(pvcs) => {
            let deciding =
                deciding_claims(vmis.as_ref().map(Vec::as_slice).unwrap_or_default(), also);
            let names: Vec<&str> = pvcs
                .iter()
                .filter(|p| deciding.contains(&(p.namespace.clone(), p.name.clone())))
                .filter_map(|p| p.volume_name.as_deref())
                .collect();
            let mut pvs = read_pvs(client, &names).await;
            // Claims that are gone: follow what may be left of their disks (a Released
            // PV still naming the claim, or a PV an earlier run recorded).
            let missing: BTreeSet<NsName> = deciding
                .into_iter()
                .filter(|c| !pvcs.iter().any(|p| p.namespace == c.0 && p.name == c.1))
                .collect();
            if !missing.is_empty() || !also.disks.is_empty() {
                pvs = match (pvs, released_pvs(client, &missing, also).await) {
                    (Gathered::Read { value: mut a }, Gathered::Read { value: b }) => {
                        for p in b {
                            if !a_has(&a, &p) {
                                a.push(p);
                            }
                        }
                        Gathered::read(a)
                    }
                    (Gathered::Read { .. }, unreadable) | (unreadable, _) => unreadable,
                };
            }
            let longhorn = match &lh_refs {
                Ok(refs) => Gathered::read(
                    refs.iter()
                        .filter(|r| {
                            r.pvc.as_ref().is_some_and(|c| missing.contains(c))
                                || also.disks.iter().any(|(_, h)| *h == r.name)
                        })
                        .cloned()
                        .collect::<Vec<_>>(),
                ),
                Err(e) => Gathered::unreadable("volumes.longhorn.io", e.clone()),
            };
            (pvs, longhorn)
        }
        Err(e) => (
            Gathered::unreadable("persistentvolumeclaims", e.clone()),
            Gathered::unreadable("persistentvolumeclaims", e.clone()),
        ),
    };
    let attachments = match (&pvcs, attachments) {
        (Ok(pvcs), Gathered::Read { value }) => {
            let mut volumes: BTreeSet<&str> = pvcs
                .iter()
                .filter_map(|p| p.volume_name.as_deref())
                .collect();
            if let Some(pvs) = pvs.value() {
                volumes.extend(pvs.iter().map(|p| p.name.as_str()));
                volumes.extend(pvs.iter().filter_map(|p| p.handle.as_deref()));
            }
            if let Some(lh) = longhorn_volumes.value() {
                volumes.extend(lh.iter().map(|v| v.name.as_str()));
            }
            Gathered::read(
                value
                    .into_iter()
                    .filter(|a| volumes.contains(a.volume.as_str()))
                    .collect(),
            )
        }
        (_, other) => other,
    };

    // An attachment to another node may be another VM's use of a shared disk: read the
    // launcher pods there (per namespace of the VMIs deciding here, only for such nodes).
    let remote_pods = match (&attachments, &vmis) {
        (Gathered::Read { value: atts }, Ok(vmis)) => {
            let elsewhere: BTreeSet<&str> = atts
                .iter()
                .filter(|a| a.node != node)
                .map(|a| a.node.as_str())
                .collect();
            let namespaces: BTreeSet<&str> = vmis
                .iter()
                .filter(|v| v.deletion_timestamp.is_some())
                .map(|v| v.key.namespace.as_str())
                .chain(also.vms.iter().map(|(ns, _)| ns.as_str()))
                .collect();
            remote_launchers(client, &namespaces, &elsewhere).await
        }
        _ => Gathered::read(Vec::new()),
    };

    let claimed = match &vmis {
        Ok(listed) => {
            let wanted: Vec<&NsName> = also
                .claimed_vmis
                .iter()
                .filter(|(ns, name)| {
                    !listed
                        .iter()
                        .any(|v| v.key.namespace == *ns && v.key.name == *name)
                })
                .collect();
            lookup_claimed(client, &wanted).await
        }
        Err(e) => Gathered::unreadable("virtualmachineinstances", e.clone()),
    };
    let node_identity = match node_obj {
        Ok(Some(n)) => Gathered::read(NodeIdentity::of(&n)),
        Ok(None) => Gathered::unreadable(
            format!("nodes/{node}"),
            "no Node of this name: pass --node with this node's name",
        ),
        Err(e) => Gathered::unreadable(
            format!("nodes/{node}"),
            describe(&e, "get", &format!("nodes/{node}")),
        ),
    };
    ClusterFacts {
        remote_pods,
        pvs,
        longhorn_volumes,
        claimed,
        node_identity,
        node: node.to_string(),
        vmis: gathered("virtualmachineinstances", vmis),
        vms: gathered("virtualmachines", vms),
        pods: gathered("pods", pods.map(|v| v.iter().map(PodView::from).collect())),
        pvcs: gathered("persistentvolumeclaims", pvcs),
        attachments,
    }
}

/// The PVCs (namespace, claim) of VMIs that are deleting or final, and of earlier runs'
/// VMs: the ones a decision may rest on.
fn deciding_claims(vmis: &[VmiView], also: &AlsoRead) -> BTreeSet<NsName> {
    let mut out: BTreeSet<NsName> = also.pvcs.iter().cloned().collect();
    for v in vmis {
        let is_final = matches!(v.phase.as_deref(), Some("Failed" | "Succeeded"));
        if v.deletion_timestamp.is_some() || is_final {
            out.extend(v.pvcs.iter().map(|c| (v.key.namespace.clone(), c.clone())));
        }
    }
    out
}

/// Launcher pods in `namespaces` on each of `nodes`, with the PVCs they mount.
async fn remote_launchers(
    client: &Client,
    namespaces: &BTreeSet<&str>,
    nodes: &BTreeSet<&str>,
) -> Gathered<Vec<PodView>> {
    let mut out = Vec::new();
    for ns in namespaces {
        for n in nodes {
            let lp = ListParams::default()
                .labels(&format!("{LABEL_KUBEVIRT}={VIRT_LAUNCHER}"))
                .fields(&format!("spec.nodeName={n}"));
            match list(Api::<Pod>::namespaced(client.clone(), ns), &lp, "pods").await {
                Ok(pods) => out.extend(pods.iter().map(PodView::from)),
                Err(e) => return Gathered::unreadable(format!("pods in {ns} on {n}"), e),
            }
        }
    }
    Gathered::read(out)
}

fn a_has(list: &[PvView], p: &PvView) -> bool {
    list.iter().any(|q| q.name == p.name)
}

/// PVs that may be what is left of a gone claim's disk: one list of PVs (only when a
/// claim is gone or an earlier run recorded disks), kept when their claimRef names a gone
/// claim or their name is a recorded PV.
async fn released_pvs(
    client: &Client,
    missing: &BTreeSet<NsName>,
    also: &AlsoRead,
) -> Gathered<Vec<PvView>> {
    let api = Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(client.clone());
    match list(api, &ListParams::default(), "persistentvolumes").await {
        Ok(all) => Gathered::read(
            all.iter()
                .map(PvView::from)
                .filter(|p| {
                    p.claim_ref.as_ref().is_some_and(|c| missing.contains(c))
                        || also.disks.iter().any(|(pv, _)| *pv == p.name)
                })
                .collect(),
        ),
        Err(e) => Gathered::unreadable("persistentvolumes", e),
    }
}

/// Reads each PV by name (a missing one is left out: the planner names it).
async fn read_pvs(client: &Client, names: &[&str]) -> Gathered<Vec<PvView>> {
    let api = Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(client.clone());
    let mut out = Vec::new();
    for name in names {
        let what = format!("get persistentvolumes/{name}");
        match with_retries(&what, || api.get_opt(name)).await {
            Ok(Some(pv)) => out.push(PvView::from(&pv)),
            Ok(None) => {}
            Err(e) => {
                return Gathered::unreadable(
                    format!("persistentvolumes/{name}"),
                    describe(&e, "get", &format!("persistentvolumes/{name}")),
                )
            }
        }
    }
    Gathered::read(out)
}

/// Reads each claimed VMI by name (a 404 is an answer: no such VMI).
async fn lookup_claimed(client: &Client, wanted: &[&NsName]) -> Gathered<Vec<ClaimedVmi>> {
    let mut out = Vec::new();
    for (ns, name) in wanted {
        let api = Api::<VirtualMachineInstance>::namespaced(client.clone(), ns);
        let what = format!("get virtualmachineinstances {ns}/{name}");
        match with_retries(&what, || api.get_opt(name)).await {
            Ok(found) => out.push(ClaimedVmi {
                namespace: ns.clone(),
                name: name.clone(),
                vmi: found.as_ref().map(VmiView::from),
            }),
            Err(e) => {
                return Gathered::unreadable(
                    format!("virtualmachineinstances {ns}/{name}"),
                    describe(&e, "get", &format!("virtualmachineinstances {ns}/{name}")),
                )
            }
        }
    }
    Gathered::read(out)
}

/// A (namespace, name) pair.
pub type NsName = (String, String);

/// The VMs (namespace, name) and PVCs (namespace, claim) the VMIs here and `also` refer to.
fn referenced(vmis: &[VmiView], also: &AlsoRead) -> (BTreeSet<NsName>, BTreeSet<NsName>) {
    let mut owners = BTreeSet::new();
    let mut claims = BTreeSet::new();
    for v in vmis {
        if let Some((name, _)) = &v.owner_vm {
            owners.insert((v.key.namespace.clone(), name.clone()));
        }
        claims.extend(v.pvcs.iter().map(|c| (v.key.namespace.clone(), c.clone())));
    }
    owners.extend(also.vms.iter().cloned());
    claims.extend(also.pvcs.iter().cloned());
    (owners, claims)
}

fn gathered<T>(source: &str, r: Result<T, String>) -> Gathered<T> {
    match r {
        Ok(v) => Gathered::read(v),
        Err(e) => Gathered::unreadable(source, e),
    }
}

/// Why a list could not be used.
enum ListError {
    /// The request failed.
    Api(kube::Error),
    /// The server answered, but objects in it are not what vmrecover can read.
    Malformed(String),
}

/// Lists `api` and decodes each object on its own: one malformed object (a wrong type in
/// a field vmrecover reads) makes the list unreadable with a message naming that object,
/// never a bare decoding error about the whole list.
async fn list_lenient<K>(api: &Api<K>, lp: &ListParams, what: &str) -> Result<Vec<K>, ListError>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let client = api.clone().into_client();
    let url = api.resource_url().to_string();
    let raw: ObjectList<Value> = with_retries(&format!("list {what}"), || {
        let client = client.clone();
        let req = kube::core::Request::new(url.clone()).list(lp);
        async move {
            match req {
                Ok(req) => client.request::<ObjectList<Value>>(req).await,
                Err(e) => Err(kube::Error::BuildRequest(e)),
            }
        }
    })
    .await
    .map_err(ListError::Api)?;
    let mut items = Vec::with_capacity(raw.items.len());
    let mut bad = Vec::new();
    for item in raw.items {
        let name = object_name(&item);
        match serde_json::from_value::<K>(item) {
            Ok(k) => items.push(k),
            Err(e) => bad.push(format!("{name} ({e})")),
        }
    }
    if bad.is_empty() {
        Ok(items)
    } else {
        Err(ListError::Malformed(format!(
            "list {what}: malformed object {}: fix or remove it; nothing that depends on this \
             list is touched until then",
            bad.join("; ")
        )))
    }
}

/// `namespace/name` of a raw object, as far as it can be read.
fn object_name(item: &Value) -> String {
    let meta = item.get("metadata");
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .chars()
            .take(253)
            .collect::<String>()
    };
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(_) => format!("{}/{}", field("namespace"), field("name")),
        None => field("name"),
    }
}

async fn list<K>(api: Api<K>, lp: &ListParams, what: &str) -> Result<Vec<K>, String>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match list_lenient(&api, lp, what).await {
        Ok(items) => Ok(items),
        Err(ListError::Api(e)) => Err(describe(&e, "list", what)),
        Err(ListError::Malformed(m)) => Err(m),
    }
}

/// Lists a resource that may not exist in the cluster (Longhorn CRDs): 404 is "none".
async fn list_optional<K>(api: Api<K>, what: &str) -> Result<Vec<K>, String>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match list_lenient(&api, &ListParams::default(), what).await {
        Ok(items) => Ok(items),
        Err(ListError::Api(e)) if status_code(&e) == Some(404) => Ok(Vec::new()),
        Err(ListError::Api(e)) => Err(describe(&e, "list", what)),
        Err(ListError::Malformed(m)) => Err(m),
    }
}

async fn list_in_namespaces<K>(
    client: &Client,
    namespaces: &BTreeSet<String>,
    what: &str,
) -> Result<Vec<K>, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let lists = namespaces.iter().map(|ns| {
        let api = Api::<K>::namespaced(client.clone(), ns);
        async move {
            list(
                api,
                &ListParams::default(),
                &format!("{what} in namespace {ns}"),
            )
            .await
        }
    });
    let mut all = Vec::new();
    for r in futures::future::join_all(lists).await {
        all.extend(r?);
    }
    Ok(all)
}
