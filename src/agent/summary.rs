//! The agent's side of the node summary: built from each pass's plan, written only when it
//! changes or the heartbeat is due ([`crate::cluster::NodeSummary`]).

use std::collections::BTreeMap;
use std::time::Instant;

use kube::Client;

use super::status::AgentStatus;
use crate::cluster::{self, BlockedVm, LastRun, NodeSummary, HEARTBEAT, MAX_BLOCKED, MAX_REASON};
use crate::recovery::{Action, Plan, RunReport};

/// Builds the summary of a pass.
pub fn build(plan: &Plan, status: &AgentStatus, last_run: Option<LastRun>) -> NodeSummary {
    let mut counts = BTreeMap::new();
    for d in &plan.decisions {
        *counts.entry(d.action.label().to_string()).or_insert(0) += 1;
    }
    let blocked_all: Vec<_> = plan
        .decisions
        .iter()
        .filter(|d| matches!(d.action, Action::Blocked))
        .collect();
    let blocked = blocked_all
        .iter()
        .take(MAX_BLOCKED)
        .map(|d| BlockedVm {
            vm: format!("{}/{}", d.namespace, d.name),
            blocker: d.blockers.first().map(|b| b.label().to_string()),
            reason: cluster::one_line(
                d.reasons.first().map(String::as_str).unwrap_or(""),
                MAX_REASON,
            ),
        })
        .collect();
    NodeSummary {
        node: plan.node.clone(),
        verdict: format!("{:?}", status.verdict).to_lowercase(),
        phase: status.phase.as_str().to_string(),
        acting: status.acting,
        paused: plan
            .paused
            .as_deref()
            .map(|p| cluster::one_line(p, MAX_REASON)),
        refused_by: plan.refused_by.map(|b| b.label().to_string()),
        counts,
        blocked,
        blocked_total: blocked_all.len(),
        last_run,
        readiness: None,
        updated: jiff::Timestamp::now(),
    }
}

/// The last run as one line.
pub fn last_run(report: &RunReport) -> LastRun {
    LastRun {
        at: report.finished,
        result: format!(
            "{} recovered, {} handed to the VM controller, {} left alone, {} failed",
            report.recovered(),
            report.handed_over(),
            report.aborted(),
            report.failed()
        ),
    }
}

/// Writes the summary when it changed or the heartbeat is due.
pub struct Publisher {
    client: Client,
    namespace: String,
    written: Option<(NodeSummary, Instant)>,
}

impl Publisher {
    /// A publisher into `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Publisher {
            client,
            namespace: namespace.to_string(),
            written: None,
        }
    }

    /// Writes `s` unless the same was written less than [`HEARTBEAT`] ago. A failed write
    /// is logged and tried again at the next call (the summary is for people).
    pub async fn publish(&mut self, s: &NodeSummary) {
        if let Some((last, at)) = &self.written {
            if last.same_content(s) && at.elapsed() < HEARTBEAT {
                return;
            }
        }
        match cluster::publish_summary(&self.client, &self.namespace, s).await {
            Ok(()) => self.written = Some((s.clone(), Instant::now())),
            Err(e) => {
                tracing::warn!("cannot publish the node summary: {e}");
                self.written = None;
            }
        }
    }
}
