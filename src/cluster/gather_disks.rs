//! The disk side of a pass, read only for VMIs that are deleting or final (and earlier
//! runs' VMs): their PVCs and PVs by name, what is left of a PVC that is gone, and where
//! each disk is attached — Longhorn's volume and volumeattachment by name, the storage
//! VolumeAttachment list only for a disk of another CSI driver.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::ListParams;
use kube::{Api, Client};

use super::also_read::{AlsoRead, NsName};
use super::lists::{get_named, get_optional, list, list_optional, read_all, ReadFailed};
use super::names::*;
use super::objects::{LonghornVolume, LonghornVolumeAttachment};
use super::retry::with_retries;
use super::snapshot::{
    AttachmentView, LonghornVolumeRef, PodView, PvView, PvcView, VmView, VmiView,
};
use crate::cluster::RequestFailed;
use crate::evidence::Gathered;

/// Why the Longhorn volume lists are absent when no claim is gone.
const NOT_LISTED: &str = "not listed: every claim read exists and is bound to the PV recorded \
                          for it, so nothing of a gone claim was looked for";

/// Everything disk-related a pass read.
pub(crate) struct DiskFacts {
    pub pvcs: Gathered<Vec<PvcView>>,
    pub pvs: Gathered<Vec<PvView>>,
    pub attachments: Gathered<Vec<AttachmentView>>,
    pub longhorn_volumes: Gathered<Vec<LonghornVolumeRef>>,
    pub other_longhorn_volumes: Gathered<Vec<LonghornVolumeRef>>,
    pub remote_pods: Gathered<Vec<PodView>>,
}

impl DiskFacts {
    /// Nothing to read: no VMI here needs a decision about its disks.
    fn none() -> Self {
        DiskFacts {
            pvcs: Gathered::read(Vec::new()),
            pvs: Gathered::read(Vec::new()),
            attachments: Gathered::read(Vec::new()),
            longhorn_volumes: Gathered::read(Vec::new()),
            other_longhorn_volumes: Gathered::read(Vec::new()),
            remote_pods: Gathered::read(Vec::new()),
        }
    }

    /// Every disk fact unreadable because `source` could not be read.
    pub(crate) fn unreadable(source: &str, why: &dyn std::fmt::Display) -> Self {
        DiskFacts {
            pvcs: Gathered::unreadable(source, why),
            pvs: Gathered::unreadable(source, why),
            attachments: Gathered::unreadable(source, why),
            longhorn_volumes: Gathered::unreadable(source, why),
            other_longhorn_volumes: Gathered::unreadable(source, why),
            remote_pods: Gathered::unreadable(source, why),
        }
    }
}

/// Reads the disks of the `deciding` VMIs (of all `listed` on the node), their VMs and
/// `also`.
pub(crate) async fn gather(
    client: &Client,
    node: &str,
    listed: &[VmiView],
    deciding: &[&VmiView],
    vms: &[VmView],
    also: &AlsoRead,
) -> DiskFacts {
    // The recorded disks that matter: the intents', and those of the VMIs listed here.
    let recorded: Vec<(String, String)> = also
        .disks
        .iter()
        .cloned()
        .chain(
            also.seen_disks
                .iter()
                .filter(|(vmi, _, _)| {
                    listed
                        .iter()
                        .any(|v| v.key.namespace == vmi.0 && v.key.name == vmi.1)
                })
                .map(|(_, pv, h)| (pv.clone(), h.clone())),
        )
        .collect();
    // The claims a decision rests on, and those Harvester's clean-up would delete.
    let mut claims: BTreeSet<NsName> = also.pvcs.iter().cloned().collect();
    for v in deciding {
        claims.extend(v.pvcs.iter().map(|c| (v.key.namespace.clone(), c.clone())));
    }
    let proof_claims = claims.clone();
    for vm in vms {
        claims.extend(
            vm.removed_pvcs
                .iter()
                .map(|c| (vm.key.namespace.clone(), c.clone())),
        );
    }
    if claims.is_empty() && recorded.is_empty() {
        return DiskFacts::none();
    }
    let mut pvcs = match read_pvcs(client, &claims).await {
        Ok(p) => p,
        Err(e) => return DiskFacts::unreadable("persistentvolumeclaims", &e),
    };
    let mut missing: BTreeSet<NsName> = proof_claims
        .iter()
        .filter(|c| !pvcs.iter().any(|p| p.namespace == c.0 && p.name == c.1))
        .cloned()
        .collect();
    // A PVC created after the VMI is a replacement: the disk the VMI used is looked for as
    // if its PVC were gone.
    for v in deciding {
        missing.extend(
            pvcs.iter()
                .filter(|p| p.namespace == v.key.namespace && v.pvcs.contains(&p.name))
                .filter(|p| p.created_after(v))
                .map(|p| (p.namespace.clone(), p.name.clone())),
        );
    }
    // A gone claim is proven absent only when every Longhorn device here belongs to a
    // VMI here: read the claims of all of them to account for their devices.
    if !missing.is_empty() {
        let others: BTreeSet<NsName> = listed
            .iter()
            .flat_map(|v| v.pvcs.iter().map(|c| (v.key.namespace.clone(), c.clone())))
            .filter(|c| !claims.contains(c))
            .collect();
        match read_pvcs(client, &others).await {
            Ok(more) => pvcs.extend(more),
            Err(e) => return DiskFacts::unreadable("persistentvolumeclaims", &e),
        }
    }
    let pv_names: BTreeSet<String> = pvcs.iter().filter_map(|p| p.volume_name.clone()).collect();
    let mut pvs = match read_pvs(client, &pv_names).await {
        Ok(p) => p,
        Err(e) => {
            let mut f = DiskFacts::unreadable("persistentvolumes", &e);
            f.pvcs = Gathered::read(pvcs);
            return f;
        }
    };
    // What may be left of gone claims: Released PVs and Longhorn volumes still naming
    // them, or what an earlier run recorded. Listed (cluster-wide, ~MiBs on a large site)
    // only when a claim is gone or replaced, or a recorded disk is not the PV a claim read
    // is bound to: otherwise every disk is followed by name, and the planner's search for
    // what is left of a gone claim finds these lists unread and blocks (fail closed).
    let bound: BTreeSet<&str> = pvcs
        .iter()
        .filter_map(|p| p.volume_name.as_deref())
        .collect();
    let unbound_record = recorded.iter().any(|(pv, _)| !bound.contains(pv.as_str()));
    let mut longhorn_volumes = Gathered::unreadable("volumes.longhorn.io", NOT_LISTED);
    let mut other_longhorn_volumes = Gathered::unreadable("volumes.longhorn.io", NOT_LISTED);
    if !missing.is_empty() || unbound_record {
        let (released, lh) = tokio::join!(
            released_pvs(client, &missing, &recorded),
            longhorn_refs(client, &missing, &recorded),
        );
        match released {
            Ok(r) => {
                for p in r {
                    if !pvs.iter().any(|q| q.name == p.name) {
                        pvs.push(p);
                    }
                }
            }
            Err(e) => {
                let mut f = DiskFacts::unreadable("persistentvolumes", &e);
                f.pvcs = Gathered::read(pvcs);
                return f;
            }
        }
        (longhorn_volumes, other_longhorn_volumes) = match lh {
            Ok((named, others)) => (Gathered::read(named), Gathered::read(others)),
            Err(e) => (
                Gathered::unreadable("volumes.longhorn.io", &e),
                Gathered::unreadable("volumes.longhorn.io", &e),
            ),
        };
    }

    // Where the disks a decision rests on are attached.
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for p in pvcs
        .iter()
        .filter(|p| proof_claims.contains(&(p.namespace.clone(), p.name.clone())))
    {
        if let Some(pv) = &p.volume_name {
            keys.insert(pv.clone());
            if let Some(h) = pvs
                .iter()
                .find(|q| &q.name == pv)
                .and_then(|q| q.handle.clone())
            {
                keys.insert(h);
            }
        }
    }
    for p in pvs
        .iter()
        .filter(|p| p.claim_ref.as_ref().is_some_and(|c| missing.contains(c)))
    {
        keys.insert(p.name.clone());
        keys.extend(p.handle.clone());
    }
    if let Some(l) = longhorn_volumes.value() {
        keys.extend(l.iter().map(|v| v.name.clone()));
    }
    for (pv, h) in &recorded {
        keys.insert(pv.clone());
        keys.insert(h.clone());
    }
    let attachments = if keys.is_empty() {
        Gathered::read(Vec::new())
    } else {
        match attachments_of(client, &keys, &pvs, also.va_cache.as_ref()).await {
            Ok(a) => Gathered::read(a),
            Err(e) => Gathered::unreadable("attachments", e),
        }
    };

    // An attachment elsewhere may be another VM's use of a shared disk.
    let remote_pods = match &attachments {
        Gathered::Read { value: atts } => {
            let elsewhere: BTreeSet<&str> = atts
                .iter()
                .filter(|a| a.node != node)
                .map(|a| a.node.as_str())
                .collect();
            let namespaces: BTreeSet<&str> = deciding
                .iter()
                .map(|v| v.key.namespace.as_str())
                .chain(also.vms.iter().map(|(ns, _)| ns.as_str()))
                .collect();
            remote_launchers(client, &namespaces, &elsewhere).await
        }
        Gathered::Unreadable { .. } => Gathered::read(Vec::new()),
    };

    DiskFacts {
        pvcs: Gathered::read(pvcs),
        pvs: Gathered::read(pvs),
        attachments,
        longhorn_volumes,
        other_longhorn_volumes,
        remote_pods,
    }
}

/// The PVCs named, read by name; one that does not exist is left out.
async fn read_pvcs(client: &Client, claims: &BTreeSet<NsName>) -> Result<Vec<PvcView>, ReadFailed> {
    let reads = claims.iter().map(|(ns, name)| async move {
        get_named::<PersistentVolumeClaim>(client, ns, name, "persistentvolumeclaims").await
    });
    let mut out = Vec::new();
    for r in read_all(reads.collect()).await {
        if let Some(p) = r? {
            out.push(PvcView::from(&p));
        }
    }
    Ok(out)
}

/// The PVs named, read by name; one that does not exist is left out (the planner names
/// it).
async fn read_pvs(client: &Client, names: &BTreeSet<String>) -> Result<Vec<PvView>, ReadFailed> {
    let api = Api::<PersistentVolume>::all(client.clone());
    let reads = names.iter().map(|name| {
        let api = api.clone();
        async move {
            with_retries(&format!("get persistentvolumes/{name}"), || {
                api.get_opt(name)
            })
            .await
            .map_err(|e| RequestFailed::new("get", format!("persistentvolumes/{name}"), e))
        }
    });
    let mut out = Vec::new();
    for r in read_all(reads.collect()).await {
        if let Some(pv) = r? {
            out.push(PvView::from(&pv));
        }
    }
    Ok(out)
}

/// PVs that may be what is left of a gone claim's disk: one list of PVs (only when a
/// claim is gone or an earlier run recorded disks), kept when their claimRef names a gone
/// claim or their name is a recorded PV.
async fn released_pvs(
    client: &Client,
    missing: &BTreeSet<NsName>,
    recorded: &[(String, String)],
) -> Result<Vec<PvView>, ReadFailed> {
    let api = Api::<PersistentVolume>::all(client.clone());
    let all = list(api, &ListParams::default(), "persistentvolumes").await?;
    Ok(all
        .iter()
        .map(PvView::from)
        .filter(|p| {
            p.claim_ref.as_ref().is_some_and(|c| missing.contains(c))
                || recorded.iter().any(|(pv, _)| *pv == p.name)
        })
        .collect())
}

/// Longhorn volumes that still name a gone claim (`status.kubernetesStatus`) or that an
/// earlier run recorded, and every other one: one list of Longhorn volumes, only when
/// needed.
async fn longhorn_refs(
    client: &Client,
    missing: &BTreeSet<NsName>,
    recorded: &[(String, String)],
) -> Result<(Vec<LonghornVolumeRef>, Vec<LonghornVolumeRef>), ReadFailed> {
    let api = Api::<LonghornVolume>::namespaced(client.clone(), longhorn_namespace());
    let all = list_optional(api, "volumes.longhorn.io").await?;
    Ok(all
        .iter()
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
        .partition(|r| {
            r.pvc.as_ref().is_some_and(|c| missing.contains(c))
                || recorded.iter().any(|(_, h)| *h == r.name)
        }))
}

/// Where the volumes `keys` (PV names and volume handles) are attached: each Longhorn
/// volume and Longhorn volumeattachment by name (always fresh), and the storage
/// VolumeAttachment list (cluster-wide, ~4 MiB on a 5,000-VM site; shared by a run's
/// re-check rounds through `shared`) only when a key is not proven a Longhorn disk.
///
/// Every attach of a Longhorn volume, on any node and by any requester (the CSI
/// ControllerPublish the external-attacher calls for a storage VolumeAttachment, a hotplug,
/// the UI, a backup or salvage), is a ticket in the volume's Longhorn volumeattachment,
/// written before it attaches (longhorn-manager v1.6.x `csi/controller_server.go`
/// `ControllerPublishVolume`, `controller/volume_attachment_controller.go`), and the volume's
/// `status.currentNodeID` names where its engine runs: the per-name reads see every way a
/// Longhorn disk can be attached elsewhere (docs/safety.md §4).
async fn attachments_of(
    client: &Client,
    keys: &BTreeSet<String>,
    pvs: &[PvView],
    shared: Option<&super::VaCache>,
) -> Result<Vec<AttachmentView>, ReadFailed> {
    let longhorn = keys.iter().map(|k| async move {
        let (vol, lva) = tokio::join!(
            get_optional::<LonghornVolume>(client, longhorn_namespace(), k, "volumes.longhorn.io"),
            get_optional::<LonghornVolumeAttachment>(
                client,
                longhorn_namespace(),
                k,
                "volumeattachments.longhorn.io"
            ),
        );
        let vol = vol?;
        let exists = vol.is_some();
        let mut out: Vec<AttachmentView> = Vec::new();
        out.extend(vol.as_ref().and_then(AttachmentView::from_longhorn_volume));
        out.extend(lva?.iter().flat_map(AttachmentView::from_longhorn_tickets));
        Ok::<_, ReadFailed>((k, exists, out))
    });
    let mut all: Vec<AttachmentView> = Vec::new();
    let mut longhorn_volumes: BTreeSet<&str> = BTreeSet::new();
    for l in read_all(longhorn.collect()).await {
        let (key, exists, found) = l?;
        if exists {
            longhorn_volumes.insert(key.as_str());
        }
        all.extend(found);
    }
    // A key is Longhorn's when every PV it names (by name or handle) is Longhorn's, or,
    // with no such PV, when a Longhorn volume of that name exists.
    let is_longhorn = |k: &str| {
        let mut named = pvs
            .iter()
            .filter(|p| p.name == k || p.handle.as_deref() == Some(k))
            .peekable();
        if named.peek().is_none() {
            return longhorn_volumes.contains(k);
        }
        named.all(|p| p.driver.as_deref() == Some(LONGHORN_DRIVER))
    };
    if keys.iter().all(|k| is_longhorn(k)) {
        return Ok(all);
    }
    // Another CSI driver's disk, or one whose driver is unknown: its attachments are
    // storage VolumeAttachments only.
    let vas = match shared {
        Some(cache) => cache.list(client).await?,
        None => std::sync::Arc::new(
            list(
                Api::<VolumeAttachment>::all(client.clone()),
                &ListParams::default(),
                "volumeattachments.storage.k8s.io",
            )
            .await?,
        ),
    };
    all.extend(
        vas.iter()
            .filter_map(AttachmentView::from_csi)
            .filter(|a| keys.contains(&a.volume)),
    );
    Ok(all)
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
