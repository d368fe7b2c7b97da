//! Applying a plan (docs/architecture.md §6 steps 2-4): every mutation re-checks its preconditions,
//! holds the Lease, tests the exact object version it was planned on, and is recorded as
//! a journald audit record and a line in the run report; each VM's changes together are
//! one Kubernetes Event on it. One VM's failure never stops the others.
//!
//! One function per ladder step ([`VmRun::free_pod`], [`VmRun::wait`], [`VmRun::clear`]);
//! every call to the cluster goes through [`ApplyCluster`], so the steps are unit-tested
//! against a scripted cluster (`apply_tests.rs`).

use std::ops::ControlFlow;
use std::time::Duration;

use futures::StreamExt;

use super::abort::Abort;
use super::apply_context::Change;
pub use super::apply_context::{ApplyContext, Progress};
use super::apply_event::vm_event;
use super::apply_intent::{forget_intent, record_intent};
use super::apply_io::{FinalizerPatch, Patched};
use super::audit::{self, AuditRecord};
use super::blocker::Blocker;
use super::finalizers::ObjectKind;
use super::model::{Action, Decision, OrphanDecision, Plan, Step};
use super::report::{OrphanOutcome, StepAction, StepOutcome, StepStatus, VmOutcome, VmResult};
use crate::cluster::ObjectKey;
use crate::node::orphans;

/// How many times a finalizer patch is re-read and retried after a conflict.
const CONFLICT_RETRIES: u32 = 3;

/// Applies the plan's recover decisions and orphan kills; returns what happened.
pub async fn apply(plan: &Plan, ctx: &ApplyContext) -> (Vec<VmOutcome>, Vec<OrphanOutcome>) {
    if plan.refused.is_some() {
        return (Vec::new(), Vec::new());
    }
    let work = plan.decisions.iter().filter_map(|d| match &d.action {
        Action::Recover { steps } => Some((d, steps.as_slice())),
        _ => None,
    });
    let outcomes = futures::stream::iter(work)
        .map(|(d, steps)| recover_vm(d, steps, ctx))
        .buffer_unordered(ctx.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut outcomes = outcomes;
    outcomes.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut orphans_out = Vec::new();
    for o in plan.orphans.iter().filter(|o| o.kill) {
        orphans_out.push(kill_orphan(o, ctx).await);
    }
    (outcomes, orphans_out)
}

/// One VM, all its steps, in order, then one Event on it naming every change made (one
/// request per VM instead of one per change: issue 8's request budget).
async fn recover_vm(d: &Decision, steps: &[Step], ctx: &ApplyContext) -> VmOutcome {
    let vm = format!("{}/{}", d.namespace, d.name);
    if let Some(p) = &ctx.progress {
        let mut doing: Vec<&str> = steps
            .iter()
            .map(|s| match s {
                Step::ForceDeletePod { .. } => "freeing its launcher pod",
                Step::WaitForControllers { .. } => "waiting for the controllers",
                Step::ClearFinalizers { .. } => "clearing finalizers",
            })
            .collect();
        doing.dedup();
        p(&format!("{vm}: {}", doing.join(", ")));
    }
    let mut run = VmRun {
        d,
        ctx,
        steps: Vec::new(),
        requests: 0,
        changes: Vec::new(),
        evidence: String::new(),
        vmi_gone: false,
        vm_deleted: false,
    };
    let result = run.all(steps).await;
    if let Some(why) = result.reason() {
        tracing::warn!(vm = %vm, "{why}");
    }
    if let Some(p) = &ctx.progress {
        let did: Vec<String> = run
            .changes
            .iter()
            .map(|c| match c {
                Change::PodDeleted(_) => "pod freed".to_string(),
                Change::FinalizersRemoved(kind, f) => {
                    format!("{} finalizer(s) cleared from the {kind}", f.len())
                }
            })
            .collect();
        let said = match &result {
            VmResult::Recovered => "recovered",
            VmResult::FinishedByController => "finished by the controllers",
            VmResult::HandedToController => "handed to the VM controller",
            VmResult::Aborted(_) => "left alone",
            VmResult::Failed { .. } => "FAILED",
        };
        p(&format!(
            "{vm}: {}{said}",
            if did.is_empty() {
                String::new()
            } else {
                format!("{} → ", did.join(", "))
            }
        ));
    }
    if !run.changes.is_empty() {
        run.requests += 1;
        vm_event(ctx, d, &run.changes, &result).await;
    }
    VmOutcome {
        namespace: d.namespace.clone(),
        name: d.name.clone(),
        result,
        steps: run.steps,
        requests: run.requests,
        follow: None,
        vm_deleted: run.vm_deleted,
    }
}

/// What a step says: go on with the next one, or the VM is done with this result.
type Flow = ControlFlow<VmResult>;

/// One VM's steps as they go: what each did, what was changed, and the evidence each
/// change rests on as last checked (not as planned).
struct VmRun<'a> {
    d: &'a Decision,
    ctx: &'a ApplyContext,
    /// The steps as carried out, in order.
    steps: Vec<StepOutcome>,
    /// API requests made.
    requests: u32,
    /// Every change made, for the Event and a stop's words.
    changes: Vec<Change>,
    /// The evidence as last checked, for the audit records.
    evidence: String,
    /// Set once the wait saw the VMI disappear: its clear step has nothing left to do.
    vmi_gone: bool,
    /// The VM is known gone without a read: the wait saw it go, or its finalizer patch was
    /// answered with the deleted object or a 404 (the follow needs no read to know it).
    vm_deleted: bool,
}

impl VmRun<'_> {
    /// The re-check, the intent, then each step in order; a stop or a lost Lease ends it
    /// between steps.
    async fn all(&mut self, steps: &[Step]) -> VmResult {
        match self.ctx.recheck.before_change(self.d, steps).await {
            Ok(fresh) => self.evidence = fresh.join("; "),
            Err(abort) => return VmResult::Aborted(abort),
        }
        if let Err(why) = record_intent(self.d, self.ctx) {
            return VmResult::Failed {
                reason: why.to_string(),
            };
        }
        for (i, step) in steps.iter().enumerate() {
            if let Some(stop) = self.stopped() {
                return VmResult::Aborted(stop);
            }
            let flow = match step {
                Step::ForceDeletePod { pod } => self.free_pod(pod).await,
                Step::WaitForControllers { grace } => self.wait(*grace, &steps[i + 1..]).await,
                Step::ClearFinalizers { .. } => self.clear(&steps[i..]).await,
            };
            if let ControlFlow::Break(result) = flow {
                return result;
            }
        }
        forget_intent(self.d, self.ctx);
        if steps
            .iter()
            .any(|s| matches!(s, Step::ClearFinalizers { .. }))
        {
            VmResult::Recovered
        } else {
            VmResult::HandedToController
        }
    }

    /// Why no further step may start: asked to stop, or the Lease is lost.
    fn stopped(&self) -> Option<Abort> {
        if *self.ctx.cancel.borrow() {
            return Some(Abort::new(
                Blocker::Interrupted,
                format!(
                    "vmrecover was asked to stop: {}; a rerun continues",
                    self.done_so_far()
                ),
            ));
        }
        if !self.ctx.lease.is_held() {
            return Some(Abort::new(
                Blocker::LeaseLost,
                format!("the node Lease was lost: {}", self.done_so_far()),
            ));
        }
        None
    }

    /// What the steps changed before a stop, in words: the report must not say "no change"
    /// after a pod was deleted.
    fn done_so_far(&self) -> String {
        if self.changes.is_empty() {
            return "no change was made to it".into();
        }
        let done: Vec<String> = self
            .changes
            .iter()
            .map(|c| match c {
                Change::PodDeleted(p) => format!("launcher pod {p} was force-deleted"),
                Change::FinalizersRemoved(kind, f) => {
                    format!("finalizers {} were removed from the {kind}", f.join(", "))
                }
            })
            .collect();
        format!("done before the stop: {}", done.join("; "))
    }

    /// Step 2: force-delete a leftover launcher (or hotplug) pod.
    async fn free_pod(&mut self, pod: &ObjectKey) -> Flow {
        let desc = format!(
            "force-delete launcher pod {}/{} (grace 0)",
            pod.namespace, pod.name
        );
        self.requests += 1;
        let result = self.ctx.cluster.free_pod(pod).await;
        let text = match &result {
            Ok(()) => "done".to_string(),
            Err(e) => e.to_string(),
        };
        audit::record(&AuditRecord {
            action: "force-delete-pod",
            kind: "pod",
            object: &format!("{}/{}", pod.namespace, pod.name),
            uid: &pod.uid,
            finalizers_removed: "",
            evidence: &self.evidence,
            result: &text,
        });
        let status = if result.is_ok() {
            StepStatus::Done
        } else {
            StepStatus::Failed
        };
        self.push(StepAction::ForceDeletePod, status, desc, text.clone());
        if result.is_err() {
            return ControlFlow::Break(VmResult::Failed { reason: text });
        }
        self.changes.push(Change::PodDeleted(pod.name.clone()));
        ControlFlow::Continue(())
    }

    /// Step 3: the controller wait, then (time passed) the planner decides again before
    /// `after`, the steps left.
    async fn wait(&mut self, grace: Duration, after: &[Step]) -> Flow {
        let desc = format!(
            "wait up to {} for virt-controller/Harvester",
            humantime::format_duration(grace)
        );
        let mut cancel = self.ctx.cancel.clone();
        let waited = tokio::select! {
            w = self.ctx.cluster.wait_for_controllers(self.d, grace) => w,
            _ = cancel.wait_for(|stop| *stop) => {
                return ControlFlow::Break(VmResult::Aborted(Abort::new(
                    Blocker::Interrupted,
                    format!(
                        "vmrecover was asked to stop during the controller wait: {}; a rerun continues",
                        self.done_so_far()
                    ),
                )));
            }
        };
        self.requests += 2;
        self.vmi_gone = waited.vmi_gone;
        if waited.finished {
            // The wait saw the VM go: the follow needs no read to know it.
            self.vm_deleted = waited.vm_gone;
            self.push(
                StepAction::WaitForControllers,
                StepStatus::Done,
                desc,
                "the controllers finished it".into(),
            );
            forget_intent(self.d, self.ctx);
            return ControlFlow::Break(VmResult::FinishedByController);
        }
        let result = if self.vmi_gone {
            "done: the controllers removed the VMI; the VM is still stuck"
        } else {
            "done: still stuck after the grace period"
        };
        self.push(
            StepAction::WaitForControllers,
            StepStatus::Done,
            desc,
            result.into(),
        );
        match self.ctx.recheck.before_change(self.d, after).await {
            Ok(fresh) => {
                self.evidence = fresh.join("; ");
                ControlFlow::Continue(())
            }
            Err(abort) => ControlFlow::Break(VmResult::Aborted(abort)),
        }
    }

    /// Step 4: remove the planned finalizers of the VMI or VM `remaining[0]` names
    /// (`remaining`: the plan's steps from this one on, against which a conflict is judged).
    async fn clear(&mut self, remaining: &[Step]) -> Flow {
        let Some(Step::ClearFinalizers {
            kind,
            object,
            expected,
            remove,
        }) = remaining.first()
        else {
            return ControlFlow::Continue(());
        };
        let desc = format!(
            "clear finalizers of {kind} {}/{}",
            object.namespace, object.name
        );
        if *kind == ObjectKind::Vmi && self.vmi_gone {
            self.push(
                StepAction::ClearFinalizers,
                StepStatus::Done,
                desc,
                "done (the controllers removed it)".into(),
            );
            return ControlFlow::Continue(());
        }
        let (result, requests) =
            clear_finalizers(self.ctx, self.d, remaining, *kind, object, expected, remove).await;
        self.requests += requests;
        let (status, text, removed) = match &result {
            Ok(Cleared::Removed(r, _)) => (
                StepStatus::Done,
                format!("done (removed {})", r.join(", ")),
                r.join(","),
            ),
            Ok(Cleared::AlreadyGone) => (
                StepStatus::Done,
                "done (already gone)".into(),
                String::new(),
            ),
            Ok(Cleared::NothingLeft) => (
                StepStatus::Done,
                "done (the controllers had removed them)".into(),
                String::new(),
            ),
            Err(Stop::Abort(abort)) => (
                StepStatus::LeftAlone,
                format!("left alone: {abort}"),
                String::new(),
            ),
            Err(Stop::Fail(why)) => (StepStatus::Failed, format!("failed: {why}"), String::new()),
        };
        audit::record(&AuditRecord {
            action: "clear-finalizers",
            kind: &kind.to_string(),
            object: &format!("{}/{}", object.namespace, object.name),
            uid: &object.uid,
            finalizers_removed: &removed,
            evidence: &self.evidence,
            result: &text,
        });
        self.push(StepAction::ClearFinalizers, status, desc, text);
        if *kind == ObjectKind::Vm
            && matches!(result, Ok(Cleared::Removed(_, true) | Cleared::AlreadyGone))
        {
            self.vm_deleted = true;
        }
        match result {
            Ok(Cleared::Removed(r, _)) => {
                self.changes.push(Change::FinalizersRemoved(*kind, r));
                ControlFlow::Continue(())
            }
            Ok(_) => ControlFlow::Continue(()),
            Err(Stop::Abort(abort)) => ControlFlow::Break(VmResult::Aborted(abort)),
            Err(Stop::Fail(reason)) => ControlFlow::Break(VmResult::Failed { reason }),
        }
    }

    fn push(&mut self, action: StepAction, status: StepStatus, step: String, result: String) {
        self.steps.push(StepOutcome {
            action,
            status,
            step,
            result,
        });
    }
}

/// The result of a finalizer patch.
enum Cleared {
    /// These finalizers were removed; `true` when the API server deleted the object with
    /// them ([`Patched::Deleted`]).
    Removed(Vec<String>, bool),
    AlreadyGone,
    NothingLeft,
}

/// Why a finalizer patch stopped.
enum Stop {
    /// A precondition moved: left alone, not an error.
    Abort(Abort),
    /// The API refused or failed.
    Fail(String),
}

/// Removes `remove` from the object's finalizers with a JSON Patch that tests its UID,
/// resourceVersion and exact finalizer list. On a conflict the planner decides again
/// ([`Recheck::after_conflict`]): the patch is retried on the fresh version only when the
/// fresh decision is still within the plan (finalizers only removed since); anything
/// else leaves the VM alone with the fresh decision's reason. A denial is final.
async fn clear_finalizers(
    ctx: &ApplyContext,
    d: &Decision,
    remaining: &[Step],
    kind: ObjectKind,
    object: &ObjectKey,
    planned: &[String],
    remove: &[String],
) -> (Result<Cleared, Stop>, u32) {
    let plural = match kind {
        ObjectKind::Vmi => "virtualmachineinstances",
        ObjectKind::Vm => "virtualmachines",
    };
    let what = format!("{plural} {}/{}", object.namespace, object.name);
    let mut expected = planned.to_vec();
    let mut rv = object.resource_version.clone();
    let mut requests = 0;
    for _ in 0..=CONFLICT_RETRIES {
        let to_remove: Vec<String> = expected
            .iter()
            .filter(|f| remove.contains(f))
            .cloned()
            .collect();
        if to_remove.is_empty() {
            return (Ok(Cleared::NothingLeft), requests);
        }
        let keep: Vec<String> = expected
            .iter()
            .filter(|f| !remove.contains(f))
            .cloned()
            .collect();
        requests += 1;
        let patched = ctx
            .cluster
            .patch_finalizers(FinalizerPatch {
                kind,
                object,
                resource_version: &rv,
                expected: &expected,
                keep: &keep,
            })
            .await;
        match patched {
            Patched::Done => return (Ok(Cleared::Removed(to_remove, false)), requests),
            Patched::Deleted => return (Ok(Cleared::Removed(to_remove, true)), requests),
            Patched::Gone => return (Ok(Cleared::AlreadyGone), requests),
            Patched::Refused(reason) | Patched::Failed(reason) => {
                return (Err(Stop::Fail(reason)), requests)
            }
            // The planner decides again on what is there now (the same rules as the plan):
            // only a decision still within the plan is retried.
            Patched::Moved => match ctx.recheck.after_conflict(d, remaining).await {
                Ok(Some(Step::ClearFinalizers {
                    object: fresh,
                    expected: now,
                    ..
                })) => {
                    expected = now;
                    rv = fresh.resource_version;
                }
                Ok(_) => return (Ok(Cleared::NothingLeft), requests),
                Err(abort) => return (Err(Stop::Abort(abort)), requests),
            },
        }
    }
    (
        Err(Stop::Fail(format!(
            "{what} kept changing: gave up after {CONFLICT_RETRIES} conflicts; a rerun re-decides"
        ))),
        requests,
    )
}

async fn kill_orphan(o: &OrphanDecision, ctx: &ApplyContext) -> OrphanOutcome {
    // Minutes can pass between plan and kill: the planner must still call it an orphan.
    let still = ctx.recheck.orphan_still(o).await;
    let (status, result) = if !ctx.lease.is_held() {
        (
            StepStatus::Failed,
            "refused: the node Lease was lost".to_string(),
        )
    } else if let Err(why) = still {
        (StepStatus::LeftAlone, format!("not killed: {why}"))
    } else {
        let (pid, start, grace) = (o.pid, o.start_time, ctx.kill_grace);
        match tokio::task::spawn_blocking(move || orphans::kill(pid, start, grace)).await {
            Ok(Ok(k)) => (StepStatus::Done, k.to_string()),
            Ok(Err(e)) => (StepStatus::Failed, format!("refused: {e}")),
            Err(e) => (StepStatus::Failed, format!("failed: {e}")),
        }
    };
    audit::record(&AuditRecord {
        action: "kill-orphan",
        kind: "process",
        object: &format!("pid {} ({}) claiming {}", o.pid, o.kind.as_str(), o.claims),
        uid: &o.start_time.to_string(),
        finalizers_removed: "",
        evidence: &o.reason,
        result: &result,
    });
    OrphanOutcome {
        pid: o.pid,
        status,
        result,
    }
}
