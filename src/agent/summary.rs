//! The agent's side of the node summary: built from each pass's plan, written only when it
//! changes or the heartbeat is due ([`crate::cluster::NodeSummary`]).

use std::collections::BTreeMap;
use std::time::Instant;

use kube::Client;

use super::status::AgentStatus;
use crate::boot::PowerCuts;
use crate::cluster::{
    self, AfterRun, BlockedVm, LastRun, NodeSummary, HEARTBEAT, MAX_BLOCKED, MAX_REASON,
};
use crate::recovery::{Action, FollowOutcome, Plan, RunReport};

/// Builds the summary of a pass.
pub fn build(
    plan: &Plan,
    status: &AgentStatus,
    last_run: Option<LastRun>,
    power_cuts: Option<PowerCuts>,
) -> NodeSummary {
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
            blocker: d.blockers().first().map(|b| b.label().to_string()),
            reason: cluster::one_line(
                d.reasons.first().map(|r| r.text.as_str()).unwrap_or(""),
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
        refused_by: plan.refused_by().map(|b| b.label().to_string()),
        counts,
        blocked,
        blocked_total: blocked_all.len(),
        last_run,
        readiness: None,
        power_cuts,
        updated: jiff::Timestamp::now(),
    }
}

/// The last run as one line, and what became of its VMs once they were followed.
/// `boot_time` is this node's boot, for the time until its last VM was running again.
pub fn last_run(report: &RunReport, boot_time: Option<jiff::Timestamp>) -> LastRun {
    LastRun {
        at: report.finished,
        result: format!(
            "{} recovered, {} handed to the VM controller, {} left alone, {} failed",
            report.recovered(),
            report.handed_over(),
            report.aborted(),
            report.failed()
        ),
        after: after_run(report, boot_time),
    }
}

/// The follow outcomes of a report, `None` when it was not followed.
pub fn after_run(report: &RunReport, boot_time: Option<jiff::Timestamp>) -> Option<AfterRun> {
    let followed: Vec<_> = report
        .outcomes
        .iter()
        .filter_map(|o| o.follow.as_ref().map(|f| (o, f)))
        .collect();
    if followed.is_empty() {
        return None;
    }
    let mut after = AfterRun {
        stuck: report.plan.actionable().count(),
        recovered: report.recovered() + report.handed_over(),
        ..AfterRun::default()
    };
    let mut last_back = None;
    for (o, f) in followed {
        match f {
            FollowOutcome::Gone => after.gone += 1,
            FollowOutcome::StoppedAsAsked { .. } => after.stopped_as_asked += 1,
            FollowOutcome::RunningAgain { seconds, .. } => {
                after.running_again += 1;
                last_back = last_back.max(Some(*seconds));
            }
            FollowOutcome::NotBack { why, .. } => {
                after.not_back_total += 1;
                if after.not_back.len() < MAX_BLOCKED {
                    after.not_back.push(cluster::one_line(
                        &format!("{}/{}: {}", o.namespace, o.name, main_reason(why)),
                        MAX_REASON,
                    ));
                }
            }
        }
    }
    after.back_after_boot_secs = match (last_back, boot_time) {
        (Some(s), Some(boot)) => {
            let back = report.finished + jiff::SignedDuration::from_secs(s as i64);
            u64::try_from(back.duration_since(boot).as_secs()).ok()
        }
        _ => None,
    };
    Some(after)
}

/// The reason a person acts on first: Longhorn's, then the scheduler's, else the last said.
fn main_reason(why: &[String]) -> &str {
    why.iter()
        .find(|w| w.starts_with("Longhorn volume"))
        .or_else(|| why.iter().find(|w| w.contains("is not scheduled")))
        .or_else(|| why.last())
        .map_or("no reason known", String::as_str)
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
