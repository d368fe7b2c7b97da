//! Re-reading the evidence right before a VM is changed (docs/architecture.md §2: "apply re-reads …
//! and re-checks the decision's preconditions"). Node facts and the launcher pods on
//! this node are refreshed at most every `max_age`, so hundreds of concurrent VMs share
//! one re-scan instead of each paying for its own.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, ListParams};
use kube::Client;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::model::{Decision, DiskKey, HostIdentity, Step};
use super::plan::still_mine;
use crate::cluster::describe;
use crate::cluster::with_retries;
use crate::cluster::{longhorn_namespace, LABEL_KUBEVIRT, VIRT_LAUNCHER};
use crate::cluster::{
    status_code, AttachmentView, LonghornVolume, LonghornVolumeAttachment, NodeIdentity, PodView,
    VirtualMachineInstance, VmiView,
};
use crate::node::{self, NodeFacts, NodeOptions, VolumeKey};

/// Fresh node and pod evidence, shared by the VMs of one run.
pub struct Recheck {
    client: Client,
    node: String,
    node_options: NodeOptions,
    max_age: Duration,
    expected: Option<HostIdentity>,
    /// A fenced-node run: the fence is re-checked instead of this host's identity and
    /// evidence.
    fenced: bool,
    cache: Mutex<Option<Snapshot>>,
}

#[derive(Clone)]
struct Snapshot {
    taken: Instant,
    local: Arc<Result<NodeFacts, String>>,
    pods: Arc<Result<Vec<PodView>, String>>,
    node_identity: Arc<Result<NodeIdentity, String>>,
    /// The Node's taints and Ready condition (a fenced-node run's re-check).
    node_fence: Arc<Result<crate::cluster::HarvesterFacts, String>>,
    /// storage.k8s.io VolumeAttachments: the one list no per-name read can replace, read
    /// once per snapshot (shared by every VM re-checked from it).
    csi_attachments: Arc<Result<Vec<AttachmentView>, String>>,
}

impl Recheck {
    /// A re-checker for `node`.
    pub fn new(client: Client, node: &str, node_options: NodeOptions, max_age: Duration) -> Self {
        Recheck {
            client,
            node: node.to_string(),
            node_options,
            max_age,
            expected: None,
            fenced: false,
            cache: Mutex::new(None),
        }
    }

    /// Also re-checks, before every change, that the Node still reports this host's
    /// machine and boot (`None`: refuse every change).
    pub fn with_identity(mut self, host: Option<HostIdentity>) -> Self {
        self.expected = host;
        self
    }

    /// A fenced-node run: before every change, the node must still carry the out-of-service
    /// taint and not be Ready, and nothing of this machine is read as its evidence.
    pub fn fenced(mut self, fenced: bool) -> Self {
        self.fenced = fenced;
        self
    }

    /// Whether the Node still names this machine and this boot (a fenced node: is still
    /// tainted out-of-service and not Ready). `Err` says what moved.
    pub async fn identity_holds(&self) -> Result<(), String> {
        let s = self.snapshot().await;
        if self.fenced {
            let h = s
                .node_fence
                .as_ref()
                .as_ref()
                .map_err(|e| format!("the fenced Node could not be re-read: {e}"))?;
            if !h.out_of_service_taint {
                return Err(format!(
                    "node {} lost its node.kubernetes.io/out-of-service taint: the fenced-node \
                     run stops",
                    self.node
                ));
            }
            if h.ready.as_ref().is_none_or(|r| r.status == "True") {
                return Err(format!(
                    "node {} came back (Ready): the fenced-node run stops; its own agent \
                     decides now",
                    self.node
                ));
            }
            return Ok(());
        }
        let Some(host) = &self.expected else {
            return Err(
                "this host's identity is not known: nothing proves --node is this machine".into(),
            );
        };
        let node = s
            .node_identity
            .as_ref()
            .as_ref()
            .map_err(|e| format!("the Node could not be re-read: {e}"))?;
        if node.machine_id != host.machine_id {
            return Err(format!(
                "the Node {} now reports machineID {}, not this host's {}",
                self.node, node.machine_id, host.machine_id
            ));
        }
        if node.boot_id != host.boot_id {
            return Err(format!(
                "the Node {} now reports bootID {}, not this boot's {}",
                self.node, node.boot_id, host.boot_id
            ));
        }
        Ok(())
    }

    /// The node re-checked for.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Forgets the cached evidence, so the next check re-reads it (after a wait).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn snapshot(&self) -> Snapshot {
        let mut cache = self.cache.lock().await;
        if let Some(s) = cache.as_ref().filter(|s| s.taken.elapsed() < self.max_age) {
            return s.clone();
        }
        let opts = self.node_options.clone();
        let fenced = self.fenced;
        let local = tokio::task::spawn_blocking(move || {
            if fenced {
                NodeFacts::declared_off(&opts)
            } else {
                node::gather(&opts)
            }
        });
        let lp = ListParams::default()
            .labels(&format!("{LABEL_KUBEVIRT}={VIRT_LAUNCHER}"))
            .fields(&format!("spec.nodeName={}", self.node));
        let pod_api = Api::<Pod>::all(self.client.clone());
        let nodes = Api::<Node>::all(self.client.clone());
        let va_api = Api::<VolumeAttachment>::all(self.client.clone());
        let all = ListParams::default();
        let (pods, node, vas) = tokio::join!(
            with_retries("list launcher pods", || pod_api.list(&lp)),
            with_retries("get the Node", || nodes.get_opt(&self.node)),
            with_retries("list volumeattachments", || va_api.list(&all)),
        );
        let csi_attachments = vas
            .map(|l| {
                l.items
                    .iter()
                    .filter_map(AttachmentView::from_csi)
                    .collect()
            })
            .map_err(|e| describe(&e, "list", "volumeattachments.storage.k8s.io"));
        let pods = pods
            .map(|l| l.items.iter().map(PodView::from).collect())
            .map_err(|e| describe(&e, "list", "pods"));
        let node_fence = match &node {
            Ok(Some(n)) => Ok(crate::cluster::HarvesterFacts::of_node(n)),
            Ok(None) => Err(format!("no Node named {}", self.node)),
            Err(e) => Err(describe(e, "get", &format!("nodes/{}", self.node))),
        };
        let node_identity = match node {
            Ok(Some(n)) => Ok(NodeIdentity::of(&n)),
            Ok(None) => Err(format!("no Node named {}", self.node)),
            Err(e) => Err(describe(&e, "get", &format!("nodes/{}", self.node))),
        };
        let local = local
            .await
            .map_err(|e| format!("the node re-scan failed: {e}"));
        let s = Snapshot {
            taken: Instant::now(),
            local: Arc::new(local),
            pods: Arc::new(pods),
            node_identity: Arc::new(node_identity),
            node_fence: Arc::new(node_fence),
            csi_attachments: Arc::new(csi_attachments),
        };
        *cache = Some(s.clone());
        s
    }

    /// The name of a launcher pod on this node for the VMI `ns/name` (with `uid`, when
    /// known), from the current evidence.
    pub async fn launcher_pod_for(
        &self,
        ns: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Option<String>, String> {
        let s = self.snapshot().await;
        let pods = s
            .pods
            .as_ref()
            .as_ref()
            .map_err(|e| format!("launcher pods could not be re-read: {e}"))?;
        Ok(pods
            .iter()
            .find(|p| {
                p.key.namespace == ns
                    && match (uid, p.vmi_uid.as_deref()) {
                        (Some(u), Some(pu)) => u == pu,
                        _ => p.vmi_name.as_deref() == Some(name),
                    }
            })
            .map(|p| p.key.name.clone()))
    }

    /// Whether the decision's preconditions still hold, re-established from fresh reads:
    /// this node is still this machine and boot; the VMI (read by name) is still this
    /// node's, not migrating and not replaced; no process for it; none of its disks held
    /// here or attached to another node (storage VolumeAttachments from the shared list,
    /// Longhorn volume and volumeattachment by name); no launcher pod the plan did not
    /// know. `Ok` is the evidence as last checked, for the audit record and the Event;
    /// `Err` says what moved.
    pub async fn still_safe(&self, d: &Decision, steps: &[Step]) -> Result<Vec<String>, String> {
        let mut evidence = Vec::new();
        self.vmi_still_here(d, &mut evidence).await?;
        self.disks_not_elsewhere(d, &mut evidence).await?;
        self.node_still_clear(d, steps, &mut evidence).await?;
        Ok(evidence)
    }

    /// The VMI, read by name: gone is fine (nothing left to prove about it), replaced by
    /// another UID, moved to another node or migrating is not.
    async fn vmi_still_here(&self, d: &Decision, evidence: &mut Vec<String>) -> Result<(), String> {
        let Some(key) = &d.vmi else { return Ok(()) };
        let api = Api::<VirtualMachineInstance>::namespaced(self.client.clone(), &key.namespace);
        let cur = with_retries("re-read the VMI", || api.get_opt(&key.name))
            .await
            .map_err(|e| {
                describe(
                    &e,
                    "get",
                    &format!("virtualmachineinstances {}/{}", key.namespace, key.name),
                )
            })?;
        let Some(cur) = cur else {
            evidence.push(format!("VMI {}/{} is gone", key.namespace, key.name));
            return Ok(());
        };
        let view = VmiView::from(&cur);
        if view.key.uid != key.uid {
            return Err(format!(
                "VMI {}/{} was replaced by a new one (uid {})",
                key.namespace, key.name, view.key.uid
            ));
        }
        if let Some(why) = still_mine(&view, &self.node) {
            return Err(format!("the VMI moved since the plan: {why}"));
        }
        evidence.push(format!(
            "VMI {}/{} still on this node, not migrating",
            key.namespace, key.name
        ));
        Ok(())
    }

    /// No disk of the VM attached to another node: the storage VolumeAttachments from the
    /// shared list, the Longhorn volume and its volumeattachment by name.
    async fn disks_not_elsewhere(
        &self,
        d: &Decision,
        evidence: &mut Vec<String>,
    ) -> Result<(), String> {
        if d.disks.is_empty() {
            return Ok(());
        }
        let s = self.snapshot().await;
        let csi = s
            .csi_attachments
            .as_ref()
            .as_ref()
            .map_err(|e| format!("attachments could not be re-read: {e}"))?;
        let vols = Api::<LonghornVolume>::namespaced(self.client.clone(), longhorn_namespace());
        let lvas =
            Api::<LonghornVolumeAttachment>::namespaced(self.client.clone(), longhorn_namespace());
        for disk in &d.disks {
            let mut found: Vec<AttachmentView> = csi
                .iter()
                .filter(|a| a.volume == disk.pv || a.volume == disk.handle)
                .cloned()
                .collect();
            let (vol, lva) = tokio::join!(
                with_retries("re-read the Longhorn volume", || vols.get_opt(&disk.handle)),
                with_retries("re-read the Longhorn volumeattachment", || lvas
                    .get_opt(&disk.handle)),
            );
            match vol {
                Ok(v) => found.extend(v.as_ref().and_then(AttachmentView::from_longhorn_volume)),
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => {
                    return Err(describe(
                        &e,
                        "get",
                        &format!("volumes.longhorn.io {}", disk.handle),
                    ))
                }
            }
            match lva {
                Ok(l) => found.extend(l.iter().flat_map(AttachmentView::from_longhorn_tickets)),
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => {
                    return Err(describe(
                        &e,
                        "get",
                        &format!("volumeattachments.longhorn.io {}", disk.handle),
                    ))
                }
            }
            for a in found.iter().filter(|a| a.node != self.node) {
                match self.shared_user(d, disk, &a.node).await? {
                    Some(user) => evidence.push(format!(
                        "{} attaches {} to node {} for {user} (re-read): another live VM's use \
                         of a shared disk",
                        a.source, a.volume, a.node
                    )),
                    None => {
                        return Err(format!(
                            "{} now attaches {} to node {}",
                            a.source, a.volume, a.node
                        ))
                    }
                }
            }
            evidence.push(format!(
                "volume {}: no attachment to another node (re-read)",
                disk.describe()
            ));
        }
        Ok(())
    }

    /// A running launcher pod of another VMI on `node` that mounts `disk`'s PVC, read now.
    async fn shared_user(
        &self,
        d: &Decision,
        disk: &DiskKey,
        node: &str,
    ) -> Result<Option<String>, String> {
        let (Some(vmi), Some((ns, claim))) =
            (&d.vmi, disk.pvc.as_deref().and_then(|c| c.split_once('/')))
        else {
            return Ok(None);
        };
        let lp = ListParams::default()
            .labels(&format!("{LABEL_KUBEVIRT}={VIRT_LAUNCHER}"))
            .fields(&format!("spec.nodeName={node}"));
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        let pods = with_retries("list launcher pods on another node", || api.list(&lp))
            .await
            .map_err(|e| describe(&e, "list", &format!("pods in {ns} on {node}")))?;
        Ok(pods
            .items
            .iter()
            .map(PodView::from)
            .find(|p| p.uses_shared_disk(&vmi.uid, &[claim]))
            .map(|p| {
                format!(
                    "VMI {ns}/{} (launcher pod {})",
                    p.vmi_name.as_deref().unwrap_or("?"),
                    p.key.name
                )
            }))
    }

    /// No process, no held disk, no unplanned launcher pod on this node.
    async fn node_still_clear(
        &self,
        d: &Decision,
        steps: &[Step],
        evidence: &mut Vec<String>,
    ) -> Result<(), String> {
        self.identity_holds().await?;
        let s = self.snapshot().await;
        let (ns, name, uid) = match &d.vmi {
            Some(k) => (k.namespace.as_str(), k.name.as_str(), k.uid.as_str()),
            None => (d.namespace.as_str(), d.name.as_str(), ""),
        };
        let local = s.local.as_ref().as_ref().map_err(|e| e.clone())?;
        if self.fenced {
            evidence.push(format!(
                "node {} still tainted out-of-service and not Ready; its processes and disks \
                 are not read (declared powered off by the person running --fenced-node)",
                self.node
            ));
            return self.no_new_launcher(d, steps, &s);
        }
        match local.processes_for(ns, name, uid) {
            Ok(p) if p.is_empty() => {}
            Ok(p) => {
                let pids: Vec<String> = p
                    .iter()
                    .map(|p| format!("pid {} ({})", p.pid, p.kind.as_str()))
                    .collect();
                return Err(format!(
                    "a process for it appeared since the plan: {}",
                    pids.join(", ")
                ));
            }
            Err(why) => return Err(format!("process evidence could not be re-read: {why}")),
        }
        evidence.push(format!(
            "no virt-launcher/qemu process for {ns}/{name} (re-scanned)"
        ));
        for disk in &d.disks {
            let v = disk.describe();
            match local.volume_holders_for(&VolumeKey::new(disk.pv.clone(), disk.handle.clone())) {
                Ok(h) if h.is_empty() => {}
                Ok(h) => return Err(format!("volume {v} is now held here: {}", h.join("; "))),
                Err(why) => {
                    return Err(format!("disk evidence for {v} could not be re-read: {why}"))
                }
            }
            evidence.push(format!(
                "volume {}: not open or mounted here (re-scanned)",
                disk.describe()
            ));
        }
        self.no_new_launcher(d, steps, &s)
    }

    /// No launcher pod of the VMI on the node that the plan does not force-delete.
    fn no_new_launcher(&self, d: &Decision, steps: &[Step], s: &Snapshot) -> Result<(), String> {
        let pods = s
            .pods
            .as_ref()
            .as_ref()
            .map_err(|e| format!("launcher pods could not be re-read: {e}"))?;
        let planned: Vec<&str> = steps
            .iter()
            .filter_map(|s| match s {
                Step::ForceDeletePod { pod } => Some(pod.uid.as_str()),
                _ => None,
            })
            .collect();
        if let Some(vmi) = &d.vmi {
            if let Some(p) = pods.iter().find(|p| {
                p.key.namespace == vmi.namespace
                    && (p.vmi_uid.as_deref() == Some(vmi.uid.as_str())
                        || (p.vmi_uid.is_none()
                            && p.vmi_name.as_deref() == Some(vmi.name.as_str())))
                    && !planned.contains(&p.key.uid.as_str())
            }) {
                return Err(format!(
                    "a new launcher pod {} appeared since the plan",
                    p.key.name
                ));
            }
        }
        Ok(())
    }
}
