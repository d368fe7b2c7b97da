//! Wakes the agent when a VMI on this node changes in a way a decision can depend on: one
//! watch (list + watch with the node label selector), never polling. A change to anything
//! else (labels, annotations, guest-agent status, interfaces) wakes nothing, so an idle
//! agent's steady state is this one watch stream. Watch errors are counted and retried
//! with backoff by kube's watcher.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::metrics::Metrics;
use crate::cluster::{watch_timeout_secs, VirtualMachineInstance, VmiView, LABEL_NODE_NAME};

/// What of a VMI a decision reads: a change to anything else is not worth a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relevant {
    deletion: Option<jiff::Timestamp>,
    finalizers: Vec<String>,
    phase: Option<String>,
    node_label: Option<String>,
    status_node: Option<String>,
    migrating: bool,
    migration_target: Option<String>,
    pvcs: Vec<String>,
}

impl Relevant {
    /// The relevant part of `vmi`.
    pub(crate) fn of(vmi: &VirtualMachineInstance) -> (String, Self) {
        let v = VmiView::from(vmi);
        (
            v.key.uid.clone(),
            Relevant {
                deletion: v.deletion_timestamp,
                finalizers: v.finalizers,
                phase: v.phase,
                node_label: v.node_label,
                status_node: v.status_node,
                migrating: v.migrating,
                migration_target: v.migration_target.or(v.migration_state_target),
                pvcs: v.pvcs,
            },
        )
    }
}

/// The last relevant state of each VMI seen; says whether an event changes any.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    seen: HashMap<String, Relevant>,
}

impl Filter {
    /// Whether this created or updated VMI changes anything a decision reads.
    pub(crate) fn applied(&mut self, vmi: &VirtualMachineInstance) -> bool {
        let (uid, now) = Relevant::of(vmi);
        self.seen.insert(uid, now.clone()) != Some(now)
    }

    /// A VMI is gone: always relevant.
    pub(crate) fn deleted(&mut self, vmi: &VirtualMachineInstance) -> bool {
        let (uid, _) = Relevant::of(vmi);
        self.seen.remove(&uid);
        true
    }
}

/// Starts watching VMIs labelled for `node`; `wake` is notified on every relevant change.
pub fn spawn(
    client: Client,
    node: &str,
    wake: Arc<Notify>,
    metrics: Metrics,
    request_timeout: std::time::Duration,
) -> JoinHandle<()> {
    let api = Api::<VirtualMachineInstance>::all(client);
    let config = watcher::Config::default()
        .labels(&format!("{LABEL_NODE_NAME}={node}"))
        .timeout(watch_timeout_secs(request_timeout));
    tokio::spawn(async move {
        let mut filter = Filter::default();
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            let relevant = match event {
                Ok(Event::Apply(v) | Event::InitApply(v)) => filter.applied(&v),
                Ok(Event::Delete(v)) => filter.deleted(&v),
                Ok(Event::Init | Event::InitDone) => false,
                Err(e) => {
                    metrics.api_error();
                    tracing::warn!("watching the VMIs on this node: {e}");
                    false
                }
            };
            if relevant {
                wake.notify_one();
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi(labels: serde_json::Value, status: serde_json::Value) -> VirtualMachineInstance {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "namespace": "d", "uid": "u-1", "labels": labels},
            "status": status
        }))
        .unwrap()
    }

    /// Issue 16: an update that changes nothing a decision reads wakes nothing.
    #[test]
    fn only_relevant_changes_wake_the_agent() {
        let mut f = Filter::default();
        let base = vmi(
            serde_json::json!({"kubevirt.io/nodeName": "n1"}),
            serde_json::json!({"phase": "Running", "nodeName": "n1"}),
        );
        assert!(f.applied(&base), "a new VMI is relevant");
        assert!(!f.applied(&base), "the same state again is not");
        let relabelled = vmi(
            serde_json::json!({"kubevirt.io/nodeName": "n1", "team": "blue"}),
            serde_json::json!({"phase": "Running", "nodeName": "n1",
                               "guestOSInfo": {"name": "Ubuntu"}}),
        );
        assert!(!f.applied(&relabelled), "labels and guest info are not");
        let failed = vmi(
            serde_json::json!({"kubevirt.io/nodeName": "n1"}),
            serde_json::json!({"phase": "Failed", "nodeName": "n1"}),
        );
        assert!(f.applied(&failed), "a phase change is");
        assert!(f.deleted(&failed), "a deletion is");
    }
}
