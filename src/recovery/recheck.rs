//! The re-check right before a VM is changed (docs/architecture.md §6, issue 23): the
//! facts the decision rests on are read again and the planner's own `plan()` is re-run on
//! them, narrowed to the VMs being changed; [`judge`] then lets the remaining steps go
//! ahead only when the fresh decision is still "recover" with steps within the plan's. No
//! rule lives here: a rule added to the planner protects the moment of change too.
//!
//! Cost: VMs re-checked at about the same time share one round of reads (the Node, its
//! VMIs and launcher pods, the storage VolumeAttachments, the pause ConfigMap and the
//! Upgrades once; each VM's own objects once); a round only serves the VMs that asked
//! before it started, so no VM is judged on facts older than its request.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::abort::{fresh_clear, fresh_decision, judge, Abort};
use super::blocker::Blocker;
use super::model::{Action, Decision, Facts, HostIdentity, Narrow, OrphanDecision, Plan, Step};
use super::plan::plan_narrowed;
use crate::config::Policy;

/// How long a re-check waits for the other VMs of its batch to ask too, so that they
/// share one round of reads.
const BATCH_WINDOW: Duration = Duration::from_millis(25);

/// Reads this node's facts again, with the per-VM objects of `narrow` only (the VMIs it
/// names are read by name when this node's list no longer has them).
pub trait Regather: Send + Sync {
    /// The facts as they are now.
    fn facts<'a>(&'a self, narrow: &'a Narrow) -> BoxFuture<'a, Facts>;
}

/// Re-runs the planner right before each change, shared by the VMs of one run.
pub struct Recheck {
    regather: Arc<dyn Regather>,
    policy: Policy,
    node: String,
    /// The host identity the plan was proven against.
    host: Option<HostIdentity>,
    pending: std::sync::Mutex<Pending>,
    latest: tokio::sync::Mutex<Option<Round>>,
}

/// VMs waiting for a round, and how many rounds have started.
#[derive(Default)]
struct Pending {
    narrow: Narrow,
    started: u64,
}

/// A finished round: the fresh plan for the VMs it read.
struct Round {
    number: u64,
    narrow: Narrow,
    plan: Arc<Plan>,
}

impl Recheck {
    /// A re-checker for `plan`'s node, policy and host.
    pub fn new(regather: Arc<dyn Regather>, plan: &Plan) -> Self {
        Recheck {
            regather,
            policy: plan.policy.clone(),
            node: plan.node.clone(),
            host: plan.host.clone(),
            pending: std::sync::Mutex::new(Pending::default()),
            latest: tokio::sync::Mutex::new(None),
        }
    }

    /// The node re-checked for.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The plan re-made from facts read after this call began, for at least the VMs of
    /// `want`.
    pub async fn fresh(&self, want: &Narrow) -> Arc<Plan> {
        let ticket = self.join(want);
        tokio::time::sleep(BATCH_WINDOW).await;
        let mut latest = self.latest.lock().await;
        if let Some(r) = latest
            .as_ref()
            .filter(|r| r.number >= ticket && r.narrow.covers(want))
        {
            return r.plan.clone();
        }
        // No round that started after the request covers it: run one, with every VM
        // that asked meanwhile.
        self.join(want);
        let (narrow, number) = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.started += 1;
            (std::mem::take(&mut p.narrow), p.started)
        };
        let facts = self.regather.facts(&narrow).await;
        let plan = Arc::new(plan_narrowed(&facts, &self.policy, Some(&narrow)));
        *latest = Some(Round {
            number,
            narrow,
            plan: plan.clone(),
        });
        plan
    }

    /// Adds `want` to the next round; returns the number that round will have.
    fn join(&self, want: &Narrow) -> u64 {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.narrow.extend(want);
        p.started + 1
    }

    /// Whether `remaining` (the planned steps of `d` not carried out yet) may go ahead:
    /// the planner re-run now must still decide "recover" for it, with steps within
    /// these. `Ok` is the evidence as last checked.
    pub async fn before_change(
        &self,
        d: &Decision,
        remaining: &[Step],
    ) -> Result<Vec<String>, Abort> {
        let fresh = self.fresh(&Narrow::of(d)).await;
        self.same_host(&fresh)?;
        judge(d, remaining, &fresh)
    }

    /// After a conflict on a finalizer patch: the planner re-run for `d`, judged like any
    /// change against `remaining` (the conflicting step first), and its current step for
    /// that step's object (`None`: nothing is left to remove there).
    pub async fn after_conflict(
        &self,
        d: &Decision,
        remaining: &[Step],
    ) -> Result<Option<Step>, Abort> {
        let Some(planned) = remaining.first() else {
            return Ok(None);
        };
        let fresh = self.fresh(&Narrow::of(d)).await;
        self.same_host(&fresh)?;
        judge(d, remaining, &fresh)?;
        let steps = match fresh_decision(&fresh, d).map(|f| &f.action) {
            Some(Action::Recover { steps }) => steps.as_slice(),
            _ => &[],
        };
        Ok(fresh_clear(steps, planned).cloned())
    }

    /// Whether an orphan process is still one the plan kills: the planner re-run now
    /// (its orphans are decided for the whole node) still names it, same pid and start.
    pub async fn orphan_still(&self, o: &OrphanDecision) -> Result<(), Abort> {
        let fresh = self.fresh(&Narrow::default()).await;
        self.same_host(&fresh)?;
        if let Some(why) = &fresh.refused {
            return Err(Abort::new(why.blocker, why.text.clone()));
        }
        match fresh
            .orphans
            .iter()
            .find(|f| f.pid == o.pid && f.start_time == o.start_time)
        {
            Some(f) if f.kill => Ok(()),
            Some(f) => Err(Abort::new(Blocker::PlanChanged, f.reason.clone())),
            None => Err(Abort::new(
                Blocker::PlanChanged,
                "re-checked: it is no longer an orphan (gone, or a VMI or launcher pod \
                 accounts for it now)",
            )),
        }
    }

    fn same_host(&self, fresh: &Plan) -> Result<(), Abort> {
        if fresh.host != self.host {
            return Err(Abort::new(
                Blocker::IdentityMismatch,
                format!(
                    "this host's identity changed since the plan ({:?} then, {:?} now)",
                    self.host, fresh.host
                ),
            ));
        }
        Ok(())
    }
}
