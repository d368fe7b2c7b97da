//! Wakes the agent when a VMI on this node changes in a way a decision can depend on: one
//! watch (the node label selector), never polling. It starts at the resourceVersion of
//! the first pass's own list of those VMIs, seeded with what that list showed, so an
//! agent reads its VMIs once, not once for the pass and again for the watch; it lists them
//! itself only when the server says that version is gone (410). A change to anything else
//! (labels, annotations, guest-agent status, interfaces) wakes nothing, so an idle agent's
//! steady state is this one watch stream. Watch errors are counted and retried with backoff.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use super::metrics::Metrics;
use crate::cluster::{
    list_versioned, Listed, ReadFailed, VirtualMachineInstance, VmiView, LABEL_NODE_NAME,
};

/// Where the watch starts: a pass's list of this node's VMIs.
pub struct WatchStart {
    /// The list's resourceVersion.
    pub version: String,
    /// What it showed.
    pub listed: Vec<VmiView>,
}

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
        Self::of_view(VmiView::from(vmi))
    }

    /// The relevant part of a VMI as a pass saw it.
    fn of_view(v: VmiView) -> (String, Self) {
        (
            v.key.uid,
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
    /// A filter that has seen what a pass listed.
    pub(crate) fn seeded(listed: Vec<VmiView>) -> Self {
        Filter {
            seen: listed.into_iter().map(Relevant::of_view).collect(),
            listing: None,
        }
    }

    /// Whether this created or updated VMI changes anything a decision reads.
    pub(crate) fn applied(&mut self, vmi: &VirtualMachineInstance) -> bool {
        let (uid, now) = Relevant::of(vmi);
        self.seen.insert(uid, now.clone()) != Some(now)
    }

    /// A VMI of a re-list (after a 410): relevant when it changed since it was last seen or,
    /// seen for the first time, when it is deciding — a quiet VMI first seen is no news.
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

/// How long the watch waits before trying again after an error, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts watching VMIs labelled for `node` from `start` (each watch request ends after
/// `timeout_secs` on the server and is re-opened from the last version seen); `wake` is
/// notified on every relevant change.
pub fn spawn(
    client: Client,
    node: &str,
    wake: Arc<Notify>,
    metrics: Metrics,
    timeout_secs: u32,
    start: oneshot::Receiver<WatchStart>,
) -> JoinHandle<()> {
    let api = Api::<VirtualMachineInstance>::all(client);
    let selector = format!("{LABEL_NODE_NAME}={node}");
    tokio::spawn(async move {
        let Ok(start) = start.await else { return };
        let mut filter = Filter::seeded(start.listed);
        let mut version = start.version;
        let params = WatchParams::default()
            .labels(&selector)
            .timeout(timeout_secs);
        let mut backoff = Duration::from_secs(1);
        loop {
            let ended = follow(&api, &params, &mut version, &mut filter, &wake).await;
            match ended {
                Ended::Timeout => {
                    backoff = Duration::from_secs(1);
                    continue;
                }
                Ended::Gone => {}
                Ended::Failed(e) => {
                    metrics.api_error();
                    tracing::warn!("watching the VMIs on this node: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            // The version is gone from the server's history: list again, then watch on.
            match relist(&api, &selector, &mut filter).await {
                Ok((v, relevant)) => {
                    version = v;
                    backoff = Duration::from_secs(1);
                    if relevant {
                        wake.notify_one();
                    }
                }
                Err(e) => {
                    metrics.api_error();
                    tracing::warn!("listing the VMIs on this node again: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    })
}

/// Why one watch request ended.
enum Ended {
    /// The server's timeout: re-open from the last version.
    Timeout,
    /// The version is too old (410): list again.
    Gone,
    /// The request or the stream failed.
    Failed(String),
}

/// Follows one watch request from `version`, keeping `version` at the last event seen.
async fn follow(
    api: &Api<VirtualMachineInstance>,
    params: &WatchParams,
    version: &mut String,
    filter: &mut Filter,
    wake: &Notify,
) -> Ended {
    let stream = match api.watch(params, version).await {
        Ok(s) => s,
        Err(e) if crate::cluster::status_code(&e) == Some(410) => return Ended::Gone,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    let mut stream = std::pin::pin!(stream);
    loop {
        let event = match stream.next().await {
            None => return Ended::Timeout,
            Some(Err(e)) => return Ended::Failed(e.to_string()),
            Some(Ok(event)) => event,
        };
        let relevant = match event {
            WatchEvent::Added(v) | WatchEvent::Modified(v) => {
                advance(version, &v);
                filter.applied(&v)
            }
            WatchEvent::Deleted(v) => {
                advance(version, &v);
                filter.deleted(&v)
            }
            WatchEvent::Bookmark(b) => {
                *version = b.metadata.resource_version;
                false
            }
            WatchEvent::Error(s) if s.code == 410 => return Ended::Gone,
            WatchEvent::Error(s) => return Ended::Failed(format!("{} ({})", s.message, s.code)),
        };
        if relevant {
            wake.notify_one();
        }
    }
}

/// Moves `version` to `vmi`'s, the last event seen.
fn advance(version: &mut String, vmi: &VirtualMachineInstance) {
    if let Some(v) = vmi.resource_version() {
        *version = v;
    }
}

/// Lists this node's VMIs again, as a pass does (retries; a malformed VMI named); gives the
/// list's version and whether it showed a change.
async fn relist(
    api: &Api<VirtualMachineInstance>,
    selector: &str,
    filter: &mut Filter,
) -> Result<(String, bool), ReadFailed> {
    let Listed { items, version } = list_versioned(
        api.clone(),
        &ListParams::default().labels(selector),
        "virtualmachineinstances.kubevirt.io",
    )
    .await?;
    filter.list_started();
    let mut relevant = false;
    for vmi in &items {
        relevant |= filter.listed(vmi);
    }
    relevant |= filter.list_done();
    Ok((version.unwrap_or_default(), relevant))
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
