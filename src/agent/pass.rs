//! One agent pass — gather, plan, observe, apply, decide when to wake next — and the
//! agent's state between passes (phase, metrics, status file). The I/O a pass does goes
//! through [`PassIo`], so the pass itself is unit-tested with a scripted one.

use std::future::Future;
use std::time::Duration;

use super::metrics::Metrics;
use super::status::{AgentStatus, AgentStatusFile, Phase};
use super::summary;
use crate::cluster::{LastRun, LeaseError, NodeSummary};
use crate::config::Policy;
use crate::exit::Outcome;
use crate::recovery::{plan, Action, Blocker, Facts, Plan, RunReport};

/// Coalesces bursts of VMI changes into one pass.
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// Re-decide blocked VMs this often in the window (a process may have exited; nothing
/// in the API announces that).
pub const BLOCKED_RECHECK: Duration = Duration::from_secs(60);
/// Re-decide a plan refused for a pause, an Upgrade or unreadable evidence this often
/// (only while there is work: a healthy node is never refused).
pub const REFUSED_RECHECK: Duration = Duration::from_secs(15);
/// Retry when another run holds the Lease.
pub const LEASE_RETRY: Duration = Duration::from_secs(10);

/// The I/O of one pass: reading the facts and applying a plan.
pub trait PassIo {
    /// Gathers this node's facts (never fails: unreadable evidence is in the facts).
    fn gather(&self) -> impl Future<Output = Facts>;
    /// Applies `plan` under the node Lease.
    fn apply(
        &self,
        plan: Plan,
        started: jiff::Timestamp,
    ) -> impl Future<Output = Result<RunReport, LeaseError>>;
    /// The last run once its recovered VMs were followed (taken: each is given once).
    fn followed(&self) -> Option<LastRun> {
        None
    }
}

/// What a pass did, for the loop and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassResult {
    /// How long the agent may sleep before the next pass (unless a watch wakes it).
    pub next: Duration,
    /// One line for the log and the status file.
    pub summary: String,
    /// Whether a plan was applied.
    pub applied: bool,
}

/// The agent between passes: its status (saved for `vmrecover status`) and metrics.
pub struct Agent {
    /// The saved status.
    pub status: AgentStatus,
    /// The metrics served on /metrics.
    pub metrics: Metrics,
    file: AgentStatusFile,
    pub(super) policy: Policy,
    /// The node summary of the last pass (published by the loop).
    pub node_summary: Option<NodeSummary>,
    last_run: Option<LastRun>,
    /// This machine's boots from its boot records, newest first (power-cut history).
    pub boot_history: Vec<crate::boot::BootHistoryEntry>,
    /// How long a run's recovered VMs are followed (`followFor`): shared with the live I/O,
    /// replaced when the configuration file changes.
    pub follow_for: std::sync::Arc<std::sync::Mutex<Duration>>,
}

impl Agent {
    /// An agent with `status`, saving it to `file`.
    pub fn new(
        status: AgentStatus,
        metrics: Metrics,
        file: AgentStatusFile,
        policy: Policy,
    ) -> Self {
        Agent {
            status,
            metrics,
            file,
            policy,
            node_summary: None,
            last_run: None,
            boot_history: Vec::new(),
            follow_for: std::sync::Arc::new(std::sync::Mutex::new(
                crate::config::DEFAULT_FOLLOW_FOR,
            )),
        }
    }

    /// Enters `phase` (metrics, status file).
    pub fn set_phase(&mut self, phase: Phase) {
        self.metrics.set_phase(phase);
        if self.status.phase != phase {
            self.status.phase = phase;
            self.status.since = jiff::Timestamp::now();
        }
        self.file.save(&self.status);
    }

    /// Saves the status file.
    pub(super) fn save_status(&self) {
        self.file.save(&self.status);
    }

    /// Records an API error (metrics and status file).
    pub fn api_error(&mut self, error: String) {
        self.metrics.api_error();
        self.status.last_error = Some(error);
        self.file.save(&self.status);
    }

    /// Clears the last API error once the API answers.
    pub fn api_ok(&mut self) {
        self.status.last_error = None;
    }

    /// Ends the agent: phase `stopped`, exit code 0.
    pub fn stopped(&mut self) -> Outcome {
        tracing::info!("stopped");
        self.set_phase(Phase::Stopped);
        Outcome::Done
    }

    /// The boot window's end.
    pub fn window_ends(&self) -> jiff::Timestamp {
        self.status.window_ends.unwrap_or(jiff::Timestamp::MAX)
    }

    /// One pass: gather, plan, observe (metrics), apply when acting and there is work and
    /// no stop was asked, then decide when to wake. The pass's facts and plan (large on
    /// a big cluster) are dropped before it returns.
    pub async fn pass(&mut self, io: &impl PassIo, stop_asked: bool) -> PassResult {
        let started = jiff::Timestamp::now();
        if let Some(followed) = io.followed() {
            self.last_run = Some(followed);
        }
        let facts = io.gather().await;
        let planned = plan(&facts, &self.policy);
        drop(facts);
        self.metrics.observe_plan(&planned);
        if planned
            .decisions
            .iter()
            .any(|d| d.blocked_by(Blocker::ClusterUnreadable))
        {
            self.metrics.api_error();
        }
        let cuts = crate::boot::power_cuts(&self.boot_history, jiff::Timestamp::now());
        self.metrics.set_power_cuts(&cuts);
        let mut node_summary = summary::build(
            &planned,
            &self.status,
            self.last_run.clone(),
            Some(cuts).filter(|c| c.total > 0),
        );
        let mut next = next_wake(&planned, self.window_ends());
        let mut summary = summarize(&planned);
        let mut applied = false;
        tracing::debug!("pass: {summary}; next pass in at most {}s", next.as_secs());
        if self.status.acting && planned.has_work() && !stop_asked {
            match io.apply(planned, started).await {
                Ok(report) => {
                    applied = true;
                    self.metrics.observe_run(&report);
                    self.last_run = Some(summary::last_run(&report, None));
                    node_summary.last_run = self.last_run.clone();
                    summary = format!(
                        "{summary}; run: {} recovered, {} handed to the VM controller, {} left alone, {} failed",
                        report.recovered(),
                        report.handed_over(),
                        report.aborted(),
                        report.failed()
                    );
                    tracing::info!("{summary}");
                    // Re-decide soon: the run changed the cluster.
                    next = next.min(DEBOUNCE);
                }
                Err(e @ LeaseError::HeldByOther { .. }) => {
                    tracing::info!("{e}; retrying in {}s", LEASE_RETRY.as_secs());
                    next = next.min(LEASE_RETRY);
                }
                Err(LeaseError::Api(e)) => {
                    self.metrics.api_error();
                    tracing::warn!("cannot take the node Lease: {e}");
                    next = next.min(LEASE_RETRY);
                }
            }
        }
        self.node_summary = Some(node_summary);
        self.status.last_pass = Some((jiff::Timestamp::now(), summary.clone()));
        self.file.save(&self.status);
        PassResult {
            next,
            summary,
            applied,
        }
    }
}

/// When to decide again without a watch event: when a waiting VM becomes stuck, soon
/// for blocked VMs (a process may exit), at the window's end at the latest.
pub fn next_wake(plan: &Plan, window_ends: jiff::Timestamp) -> Duration {
    let now = plan.at;
    let until_window = duration_until(now, window_ends);
    let mut next = until_window;
    for d in &plan.decisions {
        match &d.action {
            Action::Waiting { until: Some(t) } => {
                next = next.min(duration_until(now, *t) + Duration::from_secs(1))
            }
            Action::Blocked => next = next.min(BLOCKED_RECHECK),
            _ => {}
        }
    }
    if matches!(
        plan.refused_by(),
        Some(Blocker::Paused | Blocker::UpgradeInProgress | Blocker::EvidenceMissing)
    ) {
        // Nothing in the watched VMIs announces a pause lifted or an Upgrade over.
        next = next.min(REFUSED_RECHECK);
    }
    if plan.refused_by() == Some(Blocker::BootNotReported) {
        // The kubelet posts node status every few seconds once it is up.
        next = next.min(LEASE_RETRY);
    }
    next.max(Duration::from_millis(500))
}

fn duration_until(now: jiff::Timestamp, t: jiff::Timestamp) -> Duration {
    Duration::try_from(t - now).unwrap_or(Duration::ZERO)
}

/// One line: how many VMs of each decision.
pub fn summarize(plan: &Plan) -> String {
    let count = |l: &str| {
        plan.decisions
            .iter()
            .filter(|d| d.action.label() == l)
            .count()
    };
    format!(
        "{} VM(s): {} recover, {} blocked, {} waiting, {} healthy, {} not mine",
        plan.decisions.len(),
        count("recover"),
        count("blocked"),
        count("waiting"),
        count("healthy"),
        count("not-mine")
    )
}
