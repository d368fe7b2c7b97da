//! Wakes the agent when a VMI on this node changes in a way a decision can depend on: one
//! watch (list + watch with the node label selector), never polling. A change to anything
//! else (labels, annotations, guest-agent status, interfaces) wakes nothing, so an idle
//! agent's steady state is this one watch stream. Watch errors are counted and retried
//! with backoff by kube's watcher.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::metrics::Metrics;
use crate::cluster::{VirtualMachineInstance, VmiView, LABEL_NODE_NAME};

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
    /// The VMIs of the (re)list in progress, to find those that went while the watch was down.
    listing: Option<HashSet<String>>,
}

impl Filter {
    /// Whether this created or updated VMI changes anything a decision reads.
    pub(crate) fn applied(&mut self, vmi: &VirtualMachineInstance) -> bool {
        let (uid, now) = Relevant::of(vmi);
        self.seen.insert(uid, now.clone()) != Some(now)
    }

    /// A VMI listed when the watch (re)starts: relevant when it changed since it was last seen
    /// or, seen for the first time, when it is deciding — the agent's own pass has just read
    /// the same list, so a first sighting of a quiet VMI is no news.
    pub(crate) fn listed(&mut self, vmi: &VirtualMachineInstance) -> bool {
        let (uid, now) = Relevant::of(vmi);
        let deciding = crate::cluster::is_deciding(&VmiView::from(vmi));
        if let Some(listing) = &mut self.listing {
            listing.insert(uid.clone());
        }
        match self.seen.insert(uid, now.clone()) {
            Some(before) => before != now,
            None => deciding,
        }
    }

    /// A (re)list begins.
    pub(crate) fn list_started(&mut self) {
        self.listing = Some(HashSet::new());
    }

    /// A (re)list is complete: a VMI seen before and missing from it went while the watch was
    /// down, which is relevant.
    pub(crate) fn list_done(&mut self) -> bool {
        let Some(listed) = self.listing.take() else {
            return false;
        };
        let before = self.seen.len();
        self.seen.retain(|uid, _| listed.contains(uid));
        self.seen.len() != before
    }

    /// A VMI is gone: always relevant.
    pub(crate) fn deleted(&mut self, vmi: &VirtualMachineInstance) -> bool {
        let (uid, _) = Relevant::of(vmi);
        self.seen.remove(&uid);
        true
    }
}

/// Starts watching VMIs labelled for `node` (each watch request ends after `timeout_secs` on
/// the server and is re-opened); `wake` is notified on every relevant change.
pub fn spawn(
    client: Client,
    node: &str,
    wake: Arc<Notify>,
    metrics: Metrics,
    timeout_secs: u32,
) -> JoinHandle<()> {
    let api = Api::<VirtualMachineInstance>::all(client);
    let config = watcher::Config::default()
        .labels(&format!("{LABEL_NODE_NAME}={node}"))
        .timeout(timeout_secs);
    tokio::spawn(async move {
        let mut filter = Filter::default();
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            let relevant = match event {
                Ok(Event::Apply(v)) => filter.applied(&v),
                Ok(Event::InitApply(v)) => filter.listed(&v),
                Ok(Event::Delete(v)) => filter.deleted(&v),
                Ok(Event::Init) => {
                    filter.list_started();
                    false
                }
                Ok(Event::InitDone) => filter.list_done(),
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

    /// Issue 16: the watch's initial list wakes no second pass for VMIs nothing decides about.
    #[test]
    fn the_initial_list_wakes_only_for_deciding_vmis() {
        let mut f = Filter::default();
        let running = vmi(
            serde_json::json!({"kubevirt.io/nodeName": "n1"}),
            serde_json::json!({"phase": "Running", "nodeName": "n1"}),
        );
        assert!(!f.listed(&running), "a quiet VMI first seen in the list");
        let mut failed = vmi(
            serde_json::json!({"kubevirt.io/nodeName": "n1"}),
            serde_json::json!({"phase": "Failed", "nodeName": "n1"}),
        );
        failed.metadata.uid = Some("u-2".into());
        assert!(f.listed(&failed), "a final VMI first seen in the list");
        let relisted = vmi(
            serde_json::json!({"kubevirt.io/nodeName": "n1"}),
            serde_json::json!({"phase": "Succeeded", "nodeName": "n1"}),
        );
        assert!(f.listed(&relisted), "a re-list that shows a change");
        assert!(!f.listed(&relisted), "a re-list that shows none");
        f.list_started();
        assert!(!f.listed(&relisted));
        assert!(
            f.list_done(),
            "the Failed VMI u-2 went while the watch was down"
        );
        f.list_started();
        assert!(!f.listed(&relisted));
        assert!(!f.list_done(), "nothing went");
    }
}
