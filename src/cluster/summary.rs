//! Each agent's compact summary of its node, published as the ConfigMap
//! `vmrecover-summary-<node>` in the agent's namespace (labelled `vmrecover.io/summary=true`,
//! so one list reads the whole site), and read back by `vmrecover status --all-nodes`.
//!
//! Its own object, not the node Lease: a run renewing the Lease never conflicts with a
//! summary write. It is written with server-side apply (one request, creating it when
//! absent), only when its content changes or every [`HEARTBEAT`] so a reader can tell a
//! silent agent ([`STALE_AFTER`]); the blocked list is capped at [`MAX_BLOCKED`] one-line
//! reasons so the object stays a few kilobytes, far below the API's 1 MiB limit.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use super::errors::RequestFailed;
use super::lists::{list, ReadFailed};
use super::names::REPORTING_CONTROLLER;

/// The ConfigMaps' name prefix (an admission policy relies on exactly this name).
pub const SUMMARY_PREFIX: &str = "vmrecover-summary-";
/// The label every summary carries (value `true`).
pub const LABEL_SUMMARY: &str = "vmrecover.io/summary";
/// The data key holding the JSON.
pub const SUMMARY_KEY: &str = "summary.json";
/// At most this many blocked VMs are listed (the count says how many there are).
pub const MAX_BLOCKED: usize = 20;
/// A reason is cut to this many characters.
pub const MAX_REASON: usize = 200;
/// An unchanged summary is written again this often.
pub const HEARTBEAT: Duration = Duration::from_secs(600);
/// A summary not written for this long is stale (its agent is down or cannot write).
pub const STALE_AFTER: Duration = Duration::from_secs(25 * 60);

/// The summary ConfigMap's name for `node`.
pub fn summary_name(node: &str) -> String {
    format!("{SUMMARY_PREFIX}{node}")
}

/// One blocked VM, in one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedVm {
    /// `namespace/name`.
    pub vm: String,
    /// The blocker's label (`live_process`, `disk_attached_elsewhere`, ...).
    pub blocker: Option<String>,
    /// The first reason, cut to [`MAX_REASON`] characters.
    pub reason: String,
}

/// The last mutating run on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    /// When it ended.
    pub at: jiff::Timestamp,
    /// One line: recovered, handed over, left alone, failed.
    pub result: String,
    /// What became of the recovered VMs, once they were followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<AfterRun>,
}

/// What became of a run's recovered VMs (issue 26): stuck → recovered → running again →
/// not back (why).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AfterRun {
    /// VMs the run planned to recover (stuck).
    pub stuck: usize,
    /// VMs recovered or handed to their controller.
    pub recovered: usize,
    /// VMs running again.
    pub running_again: usize,
    /// VMs stopped, as their run strategy or a person asked.
    pub stopped_as_asked: usize,
    /// Deleted VMs now gone.
    pub gone: usize,
    /// VMs not back in time, as `NS/NAME: why` (at most [`MAX_BLOCKED`], each cut to
    /// [`MAX_REASON`]).
    pub not_back: Vec<String>,
    /// VMs not back in all.
    pub not_back_total: usize,
    /// Seconds from this node's boot until its last VM was running again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_after_boot_secs: Option<u64>,
}

/// What one agent says about its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// The node.
    pub node: String,
    /// The boot verdict (`unclean`, `clean`, `unknown`).
    pub verdict: String,
    /// The agent's phase.
    pub phase: String,
    /// Whether it acts (policy and verdict).
    pub acting: bool,
    /// Why it is paused, if it is.
    #[serde(default)]
    pub paused: Option<String>,
    /// Why the whole plan is refused, as a blocker label, if it is.
    #[serde(default)]
    pub refused_by: Option<String>,
    /// VMs by decision (`recover`, `blocked`, `waiting`, `healthy`, `not-mine`).
    pub counts: BTreeMap<String, usize>,
    /// The blocked VMs (at most [`MAX_BLOCKED`]).
    pub blocked: Vec<BlockedVm>,
    /// How many are blocked in all.
    pub blocked_total: usize,
    /// The last mutating run.
    #[serde(default)]
    pub last_run: Option<LastRun>,
    /// The agent's last readiness checks (`vmrecover check`), once they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
    /// Power cuts from the boot records: unclean boots in all, in the last 30 days, the
    /// last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_cuts: Option<crate::boot::PowerCuts>,
    /// When the summary was written (the heartbeat).
    pub updated: jiff::Timestamp,
}

impl NodeSummary {
    /// Whether two summaries say the same (the write time aside).
    pub fn same_content(&self, other: &NodeSummary) -> bool {
        let mut a = self.clone();
        a.updated = other.updated;
        a == *other
    }

    /// Whether it was last written longer than [`STALE_AFTER`] before `now`.
    pub fn is_stale(&self, now: jiff::Timestamp) -> bool {
        let age = now.duration_since(self.updated);
        age > jiff::SignedDuration::try_from(STALE_AFTER).unwrap_or(jiff::SignedDuration::MAX)
    }
}

/// Cuts `s` to `max` characters (an ellipsis marks the cut).
pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let mut out: String = flat.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Writes the summary (server-side apply: one request, creating the ConfigMap if absent).
pub async fn publish(
    client: &Client,
    namespace: &str,
    s: &NodeSummary,
) -> Result<(), PublishError> {
    let name = summary_name(&s.node);
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                LABEL_SUMMARY: "true",
                "app.kubernetes.io/name": "vmrecover",
            },
        },
        "data": { SUMMARY_KEY: serde_json::to_string(s)? },
    });
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let pp = PatchParams::apply(REPORTING_CONTROLLER).force();
    api.patch(&name, &pp, &Patch::Apply(&body))
        .await
        .map(|_| ())
        .map_err(|e| {
            RequestFailed::new("patch", format!("configmaps {namespace}/{name}"), e).into()
        })
}

/// Why a node summary was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The summary could not be encoded (a bug: every summary encodes).
    #[error("cannot encode the node summary: {0}")]
    Encode(#[from] serde_json::Error),
    /// The API server refused the ConfigMap or could not be reached.
    #[error(transparent)]
    Request(#[from] RequestFailed),
}

/// Every summary in `namespace` (one list by label); a ConfigMap whose JSON does not decode
/// is returned as an error line for its node.
pub async fn list_all(
    client: &Client,
    namespace: &str,
) -> Result<Vec<Result<NodeSummary, BadSummary>>, ReadFailed> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&format!("{LABEL_SUMMARY}=true"));
    let items = list(api, &lp, "configmaps").await?;
    Ok(items
        .into_iter()
        .map(|cm| {
            let name = cm.metadata.name.clone().unwrap_or_default();
            let node = name
                .strip_prefix(SUMMARY_PREFIX)
                .unwrap_or(&name)
                .to_string();
            match cm.data.as_ref().and_then(|d| d.get(SUMMARY_KEY)) {
                None => Err(BadSummary {
                    node,
                    why: SummaryProblem::Missing,
                }),
                Some(t) => serde_json::from_str::<NodeSummary>(t).map_err(|e| BadSummary {
                    node,
                    why: SummaryProblem::Invalid(e.to_string()),
                }),
            }
        })
        .collect())
}

/// A node's summary ConfigMap that does not hold a summary this build reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct BadSummary {
    /// The node it is for (from the ConfigMap's name).
    pub node: String,
    /// What is wrong with it.
    pub why: SummaryProblem,
}

/// What is wrong with a summary ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SummaryProblem {
    /// It has no `summary.json` key.
    #[error("no summary.json")]
    Missing,
    /// Its `summary.json` does not decode (the decoder's words).
    #[error("{0}")]
    Invalid(String),
}

/// The checks' result as the node summary carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// When the checks ran.
    pub at: jiff::Timestamp,
    /// The checks in `fail`.
    #[serde(default)]
    pub failing: Vec<String>,
    /// The checks in `warn`.
    #[serde(default)]
    pub warning: Vec<String>,
}
