//! One mutating session, shared by `vmrecover run` and the agent: take the node Lease,
//! apply the plan, release the Lease, save the run report.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;

use super::apply::{self, ApplyContext};
use super::intents::IntentStore;
use super::model::Plan;
use super::recheck::Recheck;
use super::report::{ReportStore, RunReport};
use crate::cluster::events::EventRecorder;
use crate::cluster::lease::{self, LeaseConfig, LeaseError};
use crate::node::NodeOptions;

/// VMs worked on at once.
const CONCURRENCY: usize = 16;

/// Overrides [`CONCURRENCY`]: the crash tests use 1, so a kill after the Nth request
/// lands between two requests and never between two concurrent ones.
pub const CONCURRENCY_ENV: &str = "VMRECOVER_APPLY_CONCURRENCY";

fn concurrency() -> usize {
    std::env::var(CONCURRENCY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(CONCURRENCY)
}

/// Where and as whom a session runs.
pub struct Session {
    /// The API client.
    pub client: Client,
    /// This node.
    pub node: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// The state directory (intents, run report).
    pub state_dir: PathBuf,
    /// The host root (re-checks of node evidence).
    pub host_root: PathBuf,
    /// `manual` or `agent`: part of the Lease identity and the report.
    pub mode: &'static str,
    /// How long to wait for another Lease holder.
    pub lease_wait: Duration,
    /// Turns true when the process is asked to stop.
    pub cancel: tokio::sync::watch::Receiver<bool>,
}

impl Session {
    /// Applies `plan` under the node Lease and saves the report. `Err` when the Lease
    /// could not be taken (nothing was changed).
    pub async fn apply(
        &self,
        plan: Plan,
        started: jiff::Timestamp,
    ) -> Result<RunReport, LeaseError> {
        let identity = format!("{}@{}/{}", self.mode, self.node, std::process::id());
        let held = lease::acquire(
            &self.client,
            LeaseConfig::for_node(&self.namespace, &self.node, identity),
            self.lease_wait,
        )
        .await?;
        let ctx = ApplyContext {
            client: self.client.clone(),
            lease: held.guard(),
            intents: Arc::new(Mutex::new(IntentStore::new(&self.state_dir))),
            events: EventRecorder::new(self.client.clone(), &self.node),
            recheck: Recheck::new(
                self.client.clone(),
                &self.node,
                NodeOptions {
                    host_root: self.host_root.clone(),
                },
                Duration::from_secs(2),
            ),
            concurrency: concurrency(),
            kill_grace: Duration::from_secs(10),
            cancel: self.cancel.clone(),
        };
        let (outcomes, orphans) = apply::apply(&plan, &ctx).await;
        let lost = !held.is_held();
        if let Err(e) = held.release().await {
            tracing::warn!("could not release the node Lease (it expires by itself): {e}");
        }
        let stopped = if lost {
            Some("the node Lease was lost during the run".to_string())
        } else if *self.cancel.borrow() {
            Some("vmrecover was asked to stop during the run".to_string())
        } else {
            None
        };
        let report = RunReport {
            started,
            finished: jiff::Timestamp::now(),
            dry_run: false,
            mode: self.mode.to_string(),
            plan,
            outcomes,
            orphans,
            stopped,
        };
        if let Err(e) = ReportStore::new(&self.state_dir).save(&report) {
            tracing::warn!("the run report could not be saved: {e:#}");
        }
        Ok(report)
    }
}
