//! One mutating session, shared by `vmrecover run` and the agent: take the node Lease,
//! apply the plan, release the Lease, save the run report.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;

use super::apply::{self, ApplyContext};
use super::apply_io::{ApplyCluster, KubeApply};
use super::intents::IntentStore;
use super::mode::Mode;
use super::model::Plan;
use super::recheck::{Recheck, Regather};
use super::report::{ReportStore, RunReport};
use crate::cluster::{
    acquire_lease_with, watch_timeout_secs, EventRecorder, KubeLeases, LeaseApi, LeaseConfig,
    LeaseError, LeaseGuard,
};
use crate::config::{Config, Tuning};

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
    /// Concurrency and timeouts.
    pub tuning: Tuning,
    /// Who runs it.
    pub mode: Mode,
    /// How long to wait for another Lease holder.
    pub lease_wait: Duration,
    /// Turns true when the process is asked to stop.
    pub cancel: tokio::sync::watch::Receiver<bool>,
    /// Reads the facts again for the re-check before each change.
    pub regather: Arc<dyn Regather>,
    /// Told each VM's progress as it goes, if set ([`Session::with_progress`]).
    pub progress: Option<super::apply::Progress>,
}

/// The identity this process holds a node's Lease as (`<mode>@<node>/<pid>`): a fenced
/// run's re-check tells its own renewals of NODE's Lease from a sign of NODE's life by it.
pub fn lease_identity(mode: Mode, node: &str) -> String {
    format!("{mode}@{node}/{}", std::process::id())
}

impl Session {
    /// A session for `cfg`'s node.
    pub fn new(
        client: Client,
        cfg: &Config,
        mode: Mode,
        lease_wait: Duration,
        cancel: tokio::sync::watch::Receiver<bool>,
        regather: Arc<dyn Regather>,
    ) -> Self {
        Session {
            client,
            node: cfg.node.clone(),
            namespace: cfg.cluster.namespace.clone(),
            state_dir: cfg.state_dir.clone(),
            tuning: cfg.cluster.tuning.clone(),
            mode,
            lease_wait,
            cancel,
            regather,
            progress: None,
        }
    }

    /// The same session, telling `progress` each VM's progress as it goes.
    pub fn with_progress(mut self, progress: super::apply::Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Applies `plan` under the node Lease and saves the report. `Err` when the Lease
    /// could not be taken (nothing was changed).
    ///
    /// Guarantees: no mutating request is sent before the Lease is held, and none after
    /// it is known lost; every VM's steps re-check their preconditions first (see
    /// [`apply::apply`]).
    pub async fn apply(
        &self,
        plan: Plan,
        started: jiff::Timestamp,
    ) -> Result<RunReport, LeaseError> {
        let config = self.lease_config();
        let leases = Arc::new(KubeLeases::new(
            &self.client,
            &config.namespace,
            &config.name,
        ));
        let cluster = Arc::new(KubeApply {
            client: self.client.clone(),
            events: EventRecorder::new(self.client.clone(), &self.node),
            watch_timeout_secs: watch_timeout_secs(self.tuning.request_timeout),
        });
        self.apply_through(plan, started, leases, cluster).await
    }

    /// [`Session::apply`] with the Lease's requests sent to `leases` and the plan's to
    /// `cluster` (unit tests script both).
    pub(crate) async fn apply_through(
        &self,
        plan: Plan,
        started: jiff::Timestamp,
        leases: Arc<dyn LeaseApi>,
        cluster: Arc<dyn ApplyCluster>,
    ) -> Result<RunReport, LeaseError> {
        let held = acquire_lease_with(leases, self.lease_config(), self.lease_wait).await?;
        let ctx = self.context(&plan, cluster, held.guard());
        let report = self.under_lease(plan, started, &ctx).await;
        if let Err(e) = held.release().await {
            tracing::warn!("could not release the node Lease (it expires by itself): {e}");
        }
        Ok(report)
    }

    /// This node's Lease, held as this process.
    fn lease_config(&self) -> LeaseConfig {
        LeaseConfig::for_node(
            &self.namespace,
            &self.node,
            lease_identity(self.mode, &self.node),
        )
    }

    /// What apply needs for `plan`: the cluster calls, the Lease held, this state
    /// directory's intents, the re-check.
    pub fn context(
        &self,
        plan: &Plan,
        cluster: Arc<dyn ApplyCluster>,
        lease: LeaseGuard,
    ) -> ApplyContext {
        ApplyContext {
            cluster,
            lease,
            intents: Arc::new(Mutex::new(IntentStore::new(&self.state_dir))),
            recheck: Recheck::new(self.regather.clone(), plan),
            concurrency: self.tuning.apply_concurrency,
            kill_grace: self.tuning.kill_grace,
            cancel: self.cancel.clone(),
            progress: self.progress.clone(),
        }
    }

    /// The session's work while the Lease is held: apply, forget the plan's stale intents,
    /// say why the run stopped (the Lease lost, asked to stop), save the report.
    pub async fn under_lease(
        &self,
        plan: Plan,
        started: jiff::Timestamp,
        ctx: &ApplyContext,
    ) -> RunReport {
        let (outcomes, orphans) = apply::apply(&plan, ctx).await;
        let pruned_intents = prune(&ctx.intents, &plan);
        let stopped = if !ctx.lease.is_held() {
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
            mode: self.mode,
            plan,
            outcomes,
            orphans,
            stopped,
            pruned_intents,
        };
        if let Err(e) = ReportStore::new(&self.state_dir).save(&report) {
            tracing::warn!("the run report could not be saved: {e:#}");
        }
        report
    }
}

/// Forgets the plan's stale intents (VM gone or recreated); returns the report's lines.
fn prune(intents: &Mutex<IntentStore>, plan: &Plan) -> Vec<String> {
    let Ok(store) = intents.lock() else {
        return Vec::new();
    };
    plan.stale_intents
        .iter()
        .filter_map(|s| match store.remove(&s.vm_uid) {
            Ok(()) => Some(s.line.clone()),
            Err(e) => {
                tracing::warn!("could not forget a stale recovery intent: {e:#}");
                None
            }
        })
        .collect()
}
