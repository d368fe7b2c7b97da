//! Re-reading the evidence right before a VM is changed (docs/architecture.md §2: "apply re-reads …
//! and re-checks the decision's preconditions"). Node facts and the launcher pods on
//! this node are refreshed at most every `max_age`, so hundreds of concurrent VMs share
//! one re-scan instead of each paying for its own.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::Client;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::model::{Decision, Step};
use crate::cluster::describe;
use crate::cluster::with_retries;
use crate::cluster::PodView;
use crate::cluster::{LABEL_KUBEVIRT, VIRT_LAUNCHER};
use crate::node::{self, NodeFacts, NodeOptions};

/// Fresh node and pod evidence, shared by the VMs of one run.
pub struct Recheck {
    client: Client,
    node: String,
    node_options: NodeOptions,
    max_age: Duration,
    cache: Mutex<Option<Snapshot>>,
}

#[derive(Clone)]
struct Snapshot {
    taken: Instant,
    local: Arc<Result<NodeFacts, String>>,
    pods: Arc<Result<Vec<PodView>, String>>,
}

impl Recheck {
    /// A re-checker for `node`.
    pub fn new(client: Client, node: &str, node_options: NodeOptions, max_age: Duration) -> Self {
        Recheck {
            client,
            node: node.to_string(),
            node_options,
            max_age,
            cache: Mutex::new(None),
        }
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
        let local = tokio::task::spawn_blocking(move || node::gather(&opts));
        let lp = ListParams::default()
            .labels(&format!("{LABEL_KUBEVIRT}={VIRT_LAUNCHER}"))
            .fields(&format!("spec.nodeName={}", self.node));
        let pod_api = Api::<Pod>::all(self.client.clone());
        let pods = with_retries("list launcher pods", || pod_api.list(&lp))
            .await
            .map(|l| l.items.iter().map(PodView::from).collect())
            .map_err(|e| describe(&e, "list", "pods"));
        let local = local
            .await
            .map_err(|e| format!("the node re-scan failed: {e}"));
        let s = Snapshot {
            taken: Instant::now(),
            local: Arc::new(local),
            pods: Arc::new(pods),
        };
        *cache = Some(s.clone());
        s
    }

    /// Whether the decision's preconditions still hold: no process, no held volume, no
    /// launcher pod the plan did not know. `Err` says what moved.
    pub async fn still_safe(&self, d: &Decision, steps: &[Step]) -> Result<(), String> {
        let s = self.snapshot().await;
        let (ns, name, uid) = match &d.vmi {
            Some(k) => (k.namespace.as_str(), k.name.as_str(), k.uid.as_str()),
            None => (d.namespace.as_str(), d.name.as_str(), ""),
        };
        let local = s.local.as_ref().as_ref().map_err(|e| e.clone())?;
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
        for v in &d.volumes {
            match local.volume_holders(v) {
                Ok(h) if h.is_empty() => {}
                Ok(h) => return Err(format!("volume {v} is now held here: {}", h.join("; "))),
                Err(why) => {
                    return Err(format!("disk evidence for {v} could not be re-read: {why}"))
                }
            }
        }
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
