//! Reading this node's slice of the cluster with few requests (design §4, issue 5 item 1):
//! selectors narrow every list that can be narrowed; the rest run concurrently.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::ListParams;
use kube::{Api, Client};
use serde::de::DeserializeOwned;

use super::errors::{describe, status_code};
use super::names::*;
use super::objects::{
    LonghornVolume, LonghornVolumeAttachment, VirtualMachine, VirtualMachineInstance,
};
use super::retry::with_retries;
use super::snapshot::{AttachmentView, ClusterFacts, PodView, PvcView, VmView, VmiView};
use crate::evidence::Gathered;
use crate::recovery::intents::RecoveryIntent;

/// Checks that `node` names a Node object; the error says how to fix it.
pub async fn check_node(client: &Client, node: &str) -> Result<(), String> {
    let nodes = Api::<Node>::all(client.clone());
    match with_retries(&format!("get nodes/{node}"), || nodes.get_opt(node)).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!(
            "no Node named {node:?} in the cluster: pass --node (or NODE_NAME) with this node's name"
        )),
        Err(e) => Err(describe(&e, "get", &format!("nodes/{node}"))),
    }
}

/// Reads everything the planner needs about `node`. Never fails: a list that cannot be
/// read becomes `Unreadable` evidence, so the planner fails closed on it.
pub async fn gather(client: &Client, node: &str, intents: &[RecoveryIntent]) -> ClusterFacts {
    let on_node = ListParams::default().labels(&format!("{LABEL_NODE_NAME}={node}"));
    let migrating_here = ListParams::default().labels(&format!("{LABEL_MIGRATION_TARGET}={node}"));
    let launchers = ListParams::default()
        .labels(&format!("{LABEL_KUBEVIRT}={VIRT_LAUNCHER}"))
        .fields(&format!("spec.nodeName={node}"));
    let vmi_api = Api::<VirtualMachineInstance>::all(client.clone());
    let all_va = ListParams::default();
    let (vmis, targets, pods, vas, lh_atts, lh_vols) = tokio::join!(
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
    let mut namespaces: BTreeSet<String> = intents.iter().map(|i| i.namespace.clone()).collect();
    if let Ok(vmis) = &vmis {
        namespaces.extend(vmis.iter().filter_map(|v| v.metadata.namespace.clone()));
    }
    let (vms, pvcs) = tokio::join!(
        list_in_namespaces::<VirtualMachine>(client, &namespaces, "virtualmachines.kubevirt.io"),
        list_in_namespaces::<PersistentVolumeClaim>(client, &namespaces, "persistentvolumeclaims"),
    );

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

    ClusterFacts {
        node: node.to_string(),
        vmis: gathered(
            "virtualmachineinstances",
            vmis.map(|v| v.iter().map(VmiView::from).collect()),
        ),
        vms: gathered(
            "virtualmachines",
            vms.map(|v| v.iter().map(VmView::from).collect()),
        ),
        pods: gathered("pods", pods.map(|v| v.iter().map(PodView::from).collect())),
        pvcs: gathered(
            "persistentvolumeclaims",
            pvcs.map(|v| v.iter().map(PvcView::from).collect()),
        ),
        attachments,
    }
}

fn gathered<T>(source: &str, r: Result<T, String>) -> Gathered<T> {
    match r {
        Ok(v) => Gathered::read(v),
        Err(e) => Gathered::unreadable(source, e),
    }
}

async fn list<K>(api: Api<K>, lp: &ListParams, what: &str) -> Result<Vec<K>, String>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    with_retries(&format!("list {what}"), || api.list(lp))
        .await
        .map(|l| l.items)
        .map_err(|e| describe(&e, "list", what))
}

/// Lists a resource that may not exist in the cluster (Longhorn CRDs): 404 is "none".
async fn list_optional<K>(api: Api<K>, what: &str) -> Result<Vec<K>, String>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let lp = ListParams::default();
    match with_retries(&format!("list {what}"), || api.list(&lp)).await {
        Ok(l) => Ok(l.items),
        Err(e) if status_code(&e) == Some(404) => Ok(Vec::new()),
        Err(e) => Err(describe(&e, "list", what)),
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
            let lp = ListParams::default();
            with_retries(&format!("list {what} in namespace {ns}"), || api.list(&lp))
                .await
                .map(|l| l.items)
                .map_err(|e| describe(&e, "list", &format!("{what} in namespace {ns}")))
        }
    });
    let mut all = Vec::new();
    for r in futures::future::join_all(lists).await {
        all.extend(r?);
    }
    Ok(all)
}
