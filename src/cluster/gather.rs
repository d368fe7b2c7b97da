//! Reading this node's slice of the cluster, with a cost that grows with the VMs stuck
//! on the node, not with the cluster (docs/architecture.md §4).
//!
//! Every pass reads three things: the Node, the VMIs labelled for this node, and the
//! launcher pods on it (label and field selectors). Only when a VMI here is deleting or
//! final, or an earlier run left an intent, does it read more — by name where a name is
//! known (VMs, PVCs, PVs, Longhorn volumes and volumeattachments), and the storage
//! VolumeAttachment list once, since no per-name read answers "attached elsewhere?".

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client};

use super::also_read::{AlsoRead, NsName};
use super::errors::describe;
use super::gather_disks::{self, DiskFacts};
use super::harvester::{
    read_extras, HarvesterFacts, HARVESTER_NAMESPACE as HARVESTER_NAMESPACE_DEFAULT,
};
use super::lists::{get_named, list, list_versioned, read_all, ReadFailed};
use super::names::*;
use super::objects::{LeanPod, VirtualMachine, VirtualMachineInstance};
use super::retry::with_retries;
use super::snapshot::{ClaimedVmi, ClusterFacts, NodeIdentity, PodView, VmView, VmiView};
use crate::evidence::Gathered;

/// Reads everything the planner needs about `node`. Never fails: a read that fails
/// becomes `Unreadable` evidence, so the planner fails closed on it.
pub async fn gather(client: &Client, node: &str, also: &AlsoRead) -> ClusterFacts {
    gather_with(client, node, also, None).await.facts
}

/// A gather's facts, and the resourceVersion its list of this node's VMIs was read at:
/// the agent's watch of those VMIs starts there instead of listing them again.
pub struct ClusterRead {
    /// Everything read.
    pub facts: ClusterFacts,
    /// The VMI list's resourceVersion (`None` when it failed or the server gave none).
    pub vmis_version: Option<String>,
}

/// [`gather`], reusing `known_node` — `node`'s Node as read moments ago by the connect
/// check — instead of reading it again.
pub async fn gather_with(
    client: &Client,
    node: &str,
    also: &AlsoRead,
    known_node: Option<Node>,
) -> ClusterRead {
    // The three reads of every pass.
    let on_node = ListParams::default().labels(&format!("{LABEL_NODE_NAME}={node}"));
    let launchers = ListParams::default()
        .labels(&format!("{LABEL_KUBEVIRT}={VIRT_LAUNCHER}"))
        .fields(&format!("spec.nodeName={node}"));
    let node_api = Api::<Node>::all(client.clone());
    let get_node = format!("get nodes/{node}");
    let (node_obj, vmis, pods) = tokio::join!(
        async {
            match known_node {
                Some(n) => Ok(Some(n)),
                None => with_retries(&get_node, || node_api.get_opt(node)).await,
            }
        },
        list_versioned(
            Api::<VirtualMachineInstance>::all(client.clone()),
            &on_node,
            "virtualmachineinstances.kubevirt.io"
        ),
        list(Api::<LeanPod>::all(client.clone()), &launchers, "pods"),
    );
    let vmis_version = vmis.as_ref().ok().and_then(|l| l.version.clone());
    let vmis = vmis.map(|l| l.items);
    let mut harvester = match &node_obj {
        Ok(Some(n)) => HarvesterFacts::of_node(n),
        _ => HarvesterFacts::default(),
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
    let mut vmis: Result<Vec<VmiView>, ReadFailed> =
        vmis.map(|v| v.iter().map(VmiView::from).collect());
    if let (Ok(listed), Some(narrow)) = (&mut vmis, &also.narrow) {
        if let Err(e) = add_by_name(client, listed, narrow).await {
            vmis = Err(e);
        }
    }
    let pods: Result<Vec<PodView>, ReadFailed> = pods.map(|v| {
        v.into_iter()
            .map(|p| PodView::from(&Pod::from(p)))
            .collect()
    });

    // What a decision may rest on: VMIs deleting or final here, and earlier runs' VMs.
    let listed = vmis.as_deref().unwrap_or_default();
    let deciding: Vec<&VmiView> = listed
        .iter()
        .filter(|v| is_deciding(v))
        .filter(|v| {
            also.narrow
                .as_ref()
                .is_none_or(|n| n.contains(&(v.key.namespace.clone(), v.key.name.clone())))
        })
        .collect();
    let owners: BTreeSet<NsName> = deciding
        .iter()
        .filter_map(|v| {
            v.owner_vm
                .as_ref()
                .map(|(n, _)| (v.key.namespace.clone(), n.clone()))
        })
        .chain(also.vms.iter().cloned())
        .collect();
    let wanted: Vec<NsName> = also
        .claimed_vmis
        .iter()
        .filter(|(ns, name)| {
            !listed
                .iter()
                .any(|v| v.key.namespace == *ns && v.key.name == *name)
        })
        .cloned()
        .collect();
    let extras = async {
        let deciding_any = !deciding.is_empty() || !also.vms.is_empty() || !wanted.is_empty();
        if let Some(ns) = also.namespace.as_deref().filter(|_| deciding_any) {
            read_extras(client, ns, &mut harvester).await;
        }
        if also.fenced {
            let ns = also
                .namespace
                .as_deref()
                .unwrap_or(HARVESTER_NAMESPACE_DEFAULT);
            let watch = if deciding_any {
                also.fence_watch
            } else {
                std::time::Duration::ZERO
            };
            let (elsewhere, signs) = tokio::join!(
                async {
                    if deciding_any {
                        Some(launchers_elsewhere(client, node).await)
                    } else {
                        None
                    }
                },
                // At plan time the run holds no Lease yet: every holder is someone else; a
                // re-check names the run's own.
                super::liveness::gather(client, node, ns, watch, also.own_holder.as_deref())
            );
            harvester.launchers_elsewhere = elsewhere;
            harvester.life_signs = Some(signs);
        }
    };
    let deciding_any = !deciding.is_empty() || !also.vms.is_empty() || !wanted.is_empty();
    let (vms, claimed, (), hotplug_pods) = tokio::join!(
        read_vms(client, &owners),
        lookup_claimed(client, &wanted),
        extras,
        hotplug_pods(client, node, deciding_any)
    );
    let claimed = match &vmis {
        Ok(_) => claimed,
        Err(e) => Gathered::unreadable("virtualmachineinstances", e),
    };
    let disks = match &vms {
        Ok(vms) => gather_disks::gather(client, node, listed, &deciding, vms, also).await,
        Err(e) => DiskFacts::unreadable("virtualmachines", e),
    };

    let facts = ClusterFacts {
        node: node.to_string(),
        vmis: gathered("virtualmachineinstances", vmis),
        vms: gathered("virtualmachines", vms),
        pods: gathered("pods", pods),
        hotplug_pods,
        pvcs: disks.pvcs,
        pvs: disks.pvs,
        attachments: disks.attachments,
        longhorn_volumes: disks.longhorn_volumes,
        other_longhorn_volumes: disks.other_longhorn_volumes,
        remote_pods: disks.remote_pods,
        node_identity,
        claimed,
        harvester,
    };
    ClusterRead {
        facts,
        vmis_version,
    }
}

/// Reads each VMI of `narrow` that `listed` does not have by name and adds it (a 404 is
/// an answer: gone).
async fn add_by_name(
    client: &Client,
    listed: &mut Vec<VmiView>,
    narrow: &BTreeSet<NsName>,
) -> Result<(), ReadFailed> {
    for (ns, name) in narrow {
        if listed
            .iter()
            .any(|v| v.key.namespace == *ns && v.key.name == *name)
        {
            continue;
        }
        let found =
            get_named::<VirtualMachineInstance>(client, ns, name, "virtualmachineinstances")
                .await?;
        listed.extend(found.as_ref().map(VmiView::from));
    }
    Ok(())
}

/// KubeVirt's hotplug attachment pods on `node`, when something is being decided (a freed
/// launcher pod takes the ones it owns with it).
async fn hotplug_pods(client: &Client, node: &str, deciding: bool) -> Gathered<Vec<PodView>> {
    if !deciding {
        return Gathered::read(Vec::new());
    }
    let lp = ListParams::default()
        .labels(&format!("{LABEL_KUBEVIRT}={HOTPLUG_DISK}"))
        .fields(&format!("spec.nodeName={node}"));
    match list(Api::<LeanPod>::all(client.clone()), &lp, "pods").await {
        Ok(pods) => Gathered::read(
            pods.into_iter()
                .map(|p| PodView::from(&Pod::from(p)))
                .collect(),
        ),
        Err(e) => Gathered::unreadable("pods (hotplug attachment pods on this node)", e),
    }
}

/// Launcher pods on any node but `node` (a fenced-node run's check that no VM of the dead
/// node runs elsewhere).
async fn launchers_elsewhere(client: &Client, node: &str) -> Gathered<Vec<PodView>> {
    let lp = ListParams::default().labels(&format!("{LABEL_KUBEVIRT}={VIRT_LAUNCHER}"));
    match list(Api::<LeanPod>::all(client.clone()), &lp, "pods").await {
        Ok(pods) => Gathered::read(
            pods.into_iter()
                .map(|p| PodView::from(&Pod::from(p)))
                .filter(|p| p.node_name.as_deref() != Some(node))
                .collect(),
        ),
        Err(e) => Gathered::unreadable("pods (every launcher)", e),
    }
}

/// A VMI whose decision may change something: deleting, or final (its pod may linger).
pub fn is_deciding(v: &VmiView) -> bool {
    v.deletion_timestamp.is_some() || matches!(v.phase.as_deref(), Some("Failed" | "Succeeded"))
}

/// The VMs `owners` names, read by name; one that does not exist is left out.
async fn read_vms(client: &Client, owners: &BTreeSet<NsName>) -> Result<Vec<VmView>, ReadFailed> {
    let reads = owners.iter().map(|(ns, name)| async move {
        get_named::<VirtualMachine>(client, ns, name, "virtualmachines.kubevirt.io").await
    });
    let mut out = Vec::new();
    for r in read_all(reads.collect()).await {
        if let Some(vm) = r? {
            out.push(VmView::from(&vm));
        }
    }
    Ok(out)
}

/// Reads each claimed VMI by name (a 404 is an answer: no such VMI).
async fn lookup_claimed(client: &Client, wanted: &[NsName]) -> Gathered<Vec<ClaimedVmi>> {
    let mut out = Vec::new();
    for (ns, name) in wanted {
        match get_named::<VirtualMachineInstance>(client, ns, name, "virtualmachineinstances").await
        {
            Ok(found) => out.push(ClaimedVmi {
                namespace: ns.clone(),
                name: name.clone(),
                vmi: found.as_ref().map(VmiView::from),
            }),
            Err(e) => {
                return Gathered::unreadable(format!("virtualmachineinstances {ns}/{name}"), e)
            }
        }
    }
    Gathered::read(out)
}

/// A read's result as evidence from `source`: its error, whatever its type, in words.
fn gathered<T, E: std::fmt::Display>(source: &str, r: Result<T, E>) -> Gathered<T> {
    match r {
        Ok(v) => Gathered::read(v),
        Err(e) => Gathered::unreadable(source, e.to_string()),
    }
}
