//! Longhorn's CSI attach path, as the external-attacher and Longhorn's CSI plugin run it for
//! a storage VolumeAttachment whose attacher is `driver.longhorn.io`: ControllerPublishVolume
//! writes an attachment ticket into the volume's Longhorn volumeattachment
//! (`longhorn-system/<volume>`), id `csi-<sha256(volume + driver + node)>` (the storage
//! VolumeAttachment's own name), type `csi-attacher`, `nodeID` the node; the external-attacher
//! keeps its finalizer `external-attacher/driver-longhorn-io` on the VolumeAttachment until
//! ControllerUnpublishVolume removed the ticket again (longhorn-manager
//! `csi/controller_server.go` `ControllerPublishVolume`, `generateAttachmentID`,
//! `ControllerUnpublishVolume`, read at commit 007fd624; kubernetes-csi/external-attacher
//! `pkg/controller/csi_handler.go` adds and removes the finalizer). Both run in the cluster,
//! not on a node: a down node changes nothing here.
//!
//! The Longhorn volume is the PV's `spec.csi.volumeHandle`; without the PV or the Longhorn
//! volume the publish fails (`volume ... not found`) and no ticket is written. The
//! VolumeAttachment's `status.attached` is left as it is (what the external-attacher reports
//! after the attach is not modelled).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::cluster::{Cluster, Controller, Flow};
use crate::meta;
use crate::resources::{find, ResIdx};
use crate::store_vocab::Key;

/// Longhorn's CSI driver name, the attacher of its storage VolumeAttachments.
const DRIVER: &str = "driver.longhorn.io";
/// The external-attacher's finalizer on a VolumeAttachment of that driver.
const FINALIZER: &str = "external-attacher/driver-longhorn-io";
/// Where Longhorn's objects live.
const LONGHORN_NS: &str = "longhorn-system";

/// The simulated external-attacher + Longhorn CSI controller.
pub struct LonghornCsi;

impl Controller for LonghornCsi {
    fn name(&self) -> &'static str {
        "longhorn-csi-attacher"
    }

    fn reconcile(&self, c: &mut dyn Cluster, res: ResIdx, _key: &Key, va: &Value) -> Flow {
        if Some(res) != find("storage.k8s.io", "v1", "volumeattachments")
            || va.pointer("/spec/attacher").and_then(Value::as_str) != Some(DRIVER)
        {
            return Flow::Continue;
        }
        let node = va
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let Some(volume) = volume_of(c, va) else {
            // Nothing was published; a deleting one has nothing to unpublish.
            release(c, self.name(), res, va);
            return Flow::Continue;
        };
        let id = attachment_id(&volume, &node);
        if meta::is_deleting(va) {
            set_ticket(c, self.name(), &volume, &id, None);
            release(c, self.name(), res, va);
        } else if !node.is_empty() && set_ticket(c, self.name(), &volume, &id, Some(&node)) {
            let mut f = meta::finalizers(va);
            if !f.iter().any(|x| x == FINALIZER) {
                f.push(FINALIZER.to_string());
                let mut v = va.clone();
                meta::set_finalizers(&mut v, &f);
                c.update(self.name(), res, v, false);
            }
        }
        Flow::Continue
    }
}

/// `generateAttachmentID`: the storage VolumeAttachment's name for this volume and node.
fn attachment_id(volume: &str, node: &str) -> String {
    let digest = Sha256::digest(format!("{volume}{DRIVER}{node}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("csi-{hex}")
}

/// The Longhorn volume the VolumeAttachment's PV names, when the PV and the volume exist.
fn volume_of(c: &dyn Cluster, va: &Value) -> Option<String> {
    let pv_name = va
        .pointer("/spec/source/persistentVolumeName")
        .and_then(Value::as_str)?;
    let pv = c.get(
        find("", "v1", "persistentvolumes")?,
        &(String::new(), pv_name.into()),
    )?;
    let handle = pv
        .pointer("/spec/csi/volumeHandle")
        .and_then(Value::as_str)?;
    let volumes = find("longhorn.io", "v1beta2", "volumes")?;
    c.get(volumes, &(LONGHORN_NS.into(), handle.into()))?;
    Some(handle.to_string())
}

/// Adds (`node` set) or removes the ticket `id` in the volume's Longhorn volumeattachment,
/// creating that object when the volume has none yet. Whether the ticket is there now.
fn set_ticket(
    c: &mut dyn Cluster,
    actor: &str,
    volume: &str,
    id: &str,
    node: Option<&str>,
) -> bool {
    let Some(lvas) = find("longhorn.io", "v1beta2", "volumeattachments") else {
        return false;
    };
    let key = (LONGHORN_NS.to_string(), volume.to_string());
    let existing = c.get(lvas, &key).cloned();
    let has = existing
        .as_ref()
        .and_then(|l| l.pointer(&format!("/spec/attachmentTickets/{id}")))
        .is_some();
    match (node, existing) {
        (Some(_), Some(_)) if has => true,
        (Some(node), Some(mut lva)) => {
            lva["spec"]["attachmentTickets"][id] = ticket(id, node);
            c.update(actor, lvas, lva, false);
            true
        }
        (Some(node), None) => {
            c.create(
                actor,
                lvas,
                json!({
                    "apiVersion": "longhorn.io/v1beta2", "kind": "VolumeAttachment",
                    "metadata": {"name": volume, "namespace": LONGHORN_NS,
                                 "labels": {"longhornvolume": volume}},
                    "spec": {"volume": volume, "attachmentTickets": {id: ticket(id, node)}}
                }),
            );
            true
        }
        (None, Some(mut lva)) if has => {
            if let Some(t) = lva
                .pointer_mut("/spec/attachmentTickets")
                .and_then(Value::as_object_mut)
            {
                t.remove(id);
            }
            c.update(actor, lvas, lva, false);
            false
        }
        (None, _) => false,
    }
}

/// A `csi-attacher` ticket for `node`.
fn ticket(id: &str, node: &str) -> Value {
    json!({"id": id, "type": "csi-attacher", "nodeID": node, "generation": 0,
           "parameters": {"disableFrontend": "false", "lastAttachedBy": ""}})
}

/// Drops the external-attacher's finalizer from a deleting VolumeAttachment.
fn release(c: &mut dyn Cluster, actor: &str, res: ResIdx, va: &Value) {
    if !meta::is_deleting(va) {
        return;
    }
    let f = meta::finalizers(va);
    if !f.iter().any(|x| x == FINALIZER) {
        return;
    }
    let rest: Vec<String> = f.into_iter().filter(|x| x != FINALIZER).collect();
    let mut v = va.clone();
    meta::set_finalizers(&mut v, &rest);
    c.update(actor, res, v, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticket_id_is_the_volumeattachment_name_kubernetes_gives() {
        // sha256("pvc-1" + "driver.longhorn.io" + "node-1"), as csi_attacher.go names it.
        assert_eq!(
            attachment_id("pvc-1", "node-1"),
            "csi-76ed8a2352c7837587e14441782ed9b4db65098984db2ba71e86e3408356380a"
        );
        assert_ne!(
            attachment_id("pvc-1", "node-1"),
            attachment_id("pvc-1", "node-2")
        );
    }

    fn world(va: Value) -> crate::controllers::fake::Fake {
        let r = |p: &str, g: &str, v: &str| find(g, v, p).unwrap();
        crate::controllers::fake::Fake::with(
            crate::settings::Settings::default(),
            &[
                (
                    r("persistentvolumes", "", "v1"),
                    json!({"metadata": {"name": "pvc-1"},
                           "spec": {"csi": {"driver": DRIVER, "volumeHandle": "pvc-1"}}}),
                ),
                (
                    r("volumes", "longhorn.io", "v1beta2"),
                    json!({"metadata": {"name": "pvc-1", "namespace": LONGHORN_NS}}),
                ),
                (r("volumeattachments", "storage.k8s.io", "v1"), va),
            ],
        )
    }

    fn va(deleting: bool) -> Value {
        let mut v = json!({"metadata": {"name": "csi-x", "namespace": ""},
               "spec": {"attacher": DRIVER, "nodeName": "node-2",
                        "source": {"persistentVolumeName": "pvc-1"}}});
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            v["metadata"]["finalizers"] = json!([FINALIZER]);
        }
        v
    }

    #[test]
    fn a_longhorn_volumeattachment_gets_its_csi_ticket_and_loses_it_on_delete() {
        let vas = find("storage.k8s.io", "v1", "volumeattachments").unwrap();
        let lvas = find("longhorn.io", "v1beta2", "volumeattachments").unwrap();
        let key = (String::new(), "csi-x".to_string());
        let mut f = world(va(false));
        LonghornCsi.reconcile(&mut f, vas, &key, &va(false));
        let id = attachment_id("pvc-1", "node-2");
        let lva = f.obj(lvas, LONGHORN_NS, "pvc-1").expect("created").clone();
        assert_eq!(lva["spec"]["attachmentTickets"][&id]["nodeID"], "node-2");
        assert_eq!(
            lva["spec"]["attachmentTickets"][&id]["type"],
            "csi-attacher"
        );
        assert!(meta::finalizers(f.obj(vas, "", "csi-x").unwrap()).contains(&FINALIZER.to_string()));

        LonghornCsi.reconcile(&mut f, vas, &key, &va(true));
        let lva = f.obj(lvas, LONGHORN_NS, "pvc-1").unwrap();
        assert!(lva["spec"]["attachmentTickets"].get(&id).is_none(), "{lva}");
    }

    #[test]
    fn another_drivers_volumeattachment_gets_no_ticket() {
        let vas = find("storage.k8s.io", "v1", "volumeattachments").unwrap();
        let lvas = find("longhorn.io", "v1beta2", "volumeattachments").unwrap();
        let mut other = va(false);
        other["spec"]["attacher"] = json!("other.csi.example.com");
        let mut f = world(other.clone());
        LonghornCsi.reconcile(&mut f, vas, &(String::new(), "csi-x".into()), &other);
        assert!(f.obj(lvas, LONGHORN_NS, "pvc-1").is_none());
    }
}
