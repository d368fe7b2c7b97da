//! Applying a plan (docs/architecture.md §6 steps 2-4): every mutation re-checks its preconditions,
//! holds the Lease, tests the exact object version it was planned on, and is recorded as
//! a journald audit record and a line in the run report; each VM's changes together are
//! one Kubernetes Event on it. One VM's failure never stops the others.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::Client;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::abort::Abort;
use super::audit::{self, AuditRecord};
use super::blocker::Blocker;
use super::finalizers::ObjectKind;
use super::intents::{IntentDisk, IntentStore, RecoveryIntent};
use super::model::{Action, Decision, OrphanDecision, Plan, Step};
use super::recheck::Recheck;
use super::report::{OrphanOutcome, StepAction, StepOutcome, StepStatus, VmOutcome, VmResult};
use crate::cluster::LeaseGuard;
use crate::cluster::ObjectKey;
use crate::cluster::{backoff, retryable, with_retries, ATTEMPTS};
use crate::cluster::{classify_refusal, describe, status_code, Refusal};
use crate::cluster::{EventRecorder, Regarding};
use crate::cluster::{VirtualMachine, VirtualMachineInstance};
use crate::node::orphans;

/// How many times a finalizer patch is re-read and retried after a conflict.
const CONFLICT_RETRIES: u32 = 3;

/// What apply needs besides the plan.
pub struct ApplyContext {
    /// The API client.
    pub client: Client,
    /// Whether the node Lease is still held.
    pub lease: LeaseGuard,
    /// Intents in the state directory.
    pub intents: Arc<Mutex<IntentStore>>,
    /// Event recorder.
    pub events: EventRecorder,
    /// The planner re-run right before each VM is changed.
    pub recheck: Recheck,
    /// How many VMs are worked on at once.
    pub concurrency: usize,
    /// SIGTERM-to-SIGKILL grace for orphan processes.
    pub kill_grace: Duration,
    /// Server-side timeout of each watch request (the controller wait).
    pub watch_timeout_secs: u32,
    /// Becomes true when the process is asked to stop (SIGTERM, Ctrl-C): no new step
    /// starts, a controller wait ends at once.
    pub cancel: tokio::sync::watch::Receiver<bool>,
    /// Told each VM's progress as it goes (a person's `run`), if anyone listens.
    pub progress: Option<Progress>,
}

/// Where a run's progress goes: one line per VM as it starts and as it ends.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

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
    let mut changes = Vec::new();
    let mut out = recover_steps(d, steps, ctx, &mut changes).await;
    if let Some(p) = &ctx.progress {
        let did: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::PodDeleted(_) => "pod freed".to_string(),
                Change::FinalizersRemoved(kind, f) => {
                    format!("{} finalizer(s) cleared from the {kind}", f.len())
                }
            })
            .collect();
        let result = match &out.result {
            VmResult::Recovered => "recovered",
            VmResult::FinishedByController => "finished by the controllers",
            VmResult::HandedToController => "handed to the VM controller",
            VmResult::Aborted(_) => "left alone",
            VmResult::Failed { .. } => "FAILED",
        };
        p(&format!(
            "{vm}: {}{result}",
            if did.is_empty() {
                String::new()
            } else {
                format!("{} → ", did.join(", "))
            }
        ));
    }
    if !changes.is_empty() {
        out.requests += 1;
        vm_event(ctx, d, &changes, &out).await;
    }
    out
}

/// What a VM's steps changed before a stop, in words: the report must not say "no
/// change" after a pod was deleted.
fn done_so_far(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no change was made to it".into();
    }
    let done: Vec<String> = changes
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

/// What one step changed, for the VM's Event.
enum Change {
    /// A leftover launcher pod was force-deleted.
    PodDeleted(String),
    /// Finalizers were removed from the VMI or VM.
    FinalizersRemoved(ObjectKind, Vec<String>),
}

/// The steps of one VM; every change made is pushed to `changes`.
async fn recover_steps(
    d: &Decision,
    steps: &[Step],
    ctx: &ApplyContext,
    changes: &mut Vec<Change>,
) -> VmOutcome {
    let mut out = VmOutcome {
        namespace: d.namespace.clone(),
        name: d.name.clone(),
        result: VmResult::Recovered,
        steps: Vec::new(),
        requests: 0,
        follow: None,
    };
    // The evidence each change rests on, as last checked (not as planned).
    let mut evidence = match ctx.recheck.before_change(d, steps).await {
        Ok(fresh) => fresh.join("; "),
        Err(abort) => return out.abort(abort),
    };
    if let Err(why) = record_intent(d, ctx) {
        return out.fail(why.to_string());
    }

    // Set once the wait saw the VMI disappear: its clear step has nothing left to do.
    let mut vmi_gone = false;
    for (i, step) in steps.iter().enumerate() {
        if *ctx.cancel.borrow() {
            return out.abort(Abort::new(
                Blocker::Interrupted,
                format!(
                    "vmrecover was asked to stop: {}; a rerun continues",
                    done_so_far(changes)
                ),
            ));
        }
        if !ctx.lease.is_held() {
            return out.abort(Abort::new(
                Blocker::LeaseLost,
                format!("the node Lease was lost: {}", done_so_far(changes)),
            ));
        }
        match step {
            Step::ForceDeletePod { pod } => {
                let desc = format!(
                    "force-delete launcher pod {}/{} (grace 0)",
                    pod.namespace, pod.name
                );
                out.requests += 1;
                let result = force_delete_pod(&ctx.client, pod)
                    .await
                    .map_err(|e| e.to_string());
                let text = result.clone().err().unwrap_or_else(|| "done".into());
                audit::record(&AuditRecord {
                    action: "force-delete-pod",
                    kind: "pod",
                    object: &format!("{}/{}", pod.namespace, pod.name),
                    uid: &pod.uid,
                    finalizers_removed: "",
                    evidence: &evidence,
                    result: &text,
                });
                out.steps.push(StepOutcome {
                    action: StepAction::ForceDeletePod,
                    status: if result.is_ok() {
                        StepStatus::Done
                    } else {
                        StepStatus::Failed
                    },
                    step: desc,
                    result: text.clone(),
                });
                if let Err(why) = result {
                    return out.fail(why);
                }
                changes.push(Change::PodDeleted(pod.name.clone()));
            }
            Step::WaitForControllers { grace } => {
                let desc = format!(
                    "wait up to {} for virt-controller/Harvester",
                    humantime::format_duration(*grace)
                );
                let mut cancel = ctx.cancel.clone();
                let waited = tokio::select! {
                    w = wait_for_controllers(d, *grace, ctx) => w,
                    _ = cancel.wait_for(|stop| *stop) => {
                        return out.abort(Abort::new(
                            Blocker::Interrupted,
                            format!(
                                "vmrecover was asked to stop during the controller wait: {}; a rerun continues",
                                done_so_far(changes)
                            ),
                        ));
                    }
                };
                out.requests += 2;
                vmi_gone = waited.vmi_gone;
                if waited.finished {
                    out.steps.push(StepOutcome {
                        action: StepAction::WaitForControllers,
                        status: StepStatus::Done,
                        step: desc,
                        result: "the controllers finished it".into(),
                    });
                    forget_intent(d, ctx);
                    return out.end_ok(VmResult::FinishedByController);
                }
                let result = if vmi_gone {
                    "done: the controllers removed the VMI; the VM is still stuck"
                } else {
                    "done: still stuck after the grace period"
                };
                out.steps.push(StepOutcome {
                    action: StepAction::WaitForControllers,
                    status: StepStatus::Done,
                    step: desc,
                    result: result.into(),
                });
                // Time passed: the planner decides again before the next change.
                match ctx.recheck.before_change(d, &steps[i + 1..]).await {
                    Ok(fresh) => evidence = fresh.join("; "),
                    Err(abort) => return out.abort(abort),
                }
            }
            Step::ClearFinalizers {
                kind,
                object,
                expected,
                remove,
            } => {
                let desc = format!(
                    "clear finalizers of {kind} {}/{}",
                    object.namespace, object.name
                );
                if *kind == ObjectKind::Vmi && vmi_gone {
                    out.steps.push(StepOutcome {
                        action: StepAction::ClearFinalizers,
                        status: StepStatus::Done,
                        step: desc,
                        result: "done (the controllers removed it)".into(),
                    });
                    continue;
                }
                let (result, requests) =
                    clear_finalizers(ctx, d, &steps[i..], *kind, object, expected, remove).await;
                out.requests += requests;
                let (status, text, removed) = match &result {
                    Ok(Cleared::Removed(r)) => (
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
                    Err(Stop::Fail(why)) => {
                        (StepStatus::Failed, format!("failed: {why}"), String::new())
                    }
                };
                audit::record(&AuditRecord {
                    action: "clear-finalizers",
                    kind: &kind.to_string(),
                    object: &format!("{}/{}", object.namespace, object.name),
                    uid: &object.uid,
                    finalizers_removed: &removed,
                    evidence: &evidence,
                    result: &text,
                });
                out.steps.push(StepOutcome {
                    action: StepAction::ClearFinalizers,
                    status,
                    step: desc,
                    result: text.clone(),
                });
                match result {
                    Ok(Cleared::Removed(r)) => changes.push(Change::FinalizersRemoved(*kind, r)),
                    Ok(_) => {}
                    Err(Stop::Abort(abort)) => return out.abort(abort),
                    Err(Stop::Fail(why)) => return out.fail(why),
                }
            }
        }
    }
    forget_intent(d, ctx);
    if !steps
        .iter()
        .any(|s| matches!(s, Step::ClearFinalizers { .. }))
    {
        return out.end_ok(VmResult::HandedToController);
    }
    out
}

impl VmOutcome {
    /// Stopped by an error.
    fn fail(mut self, reason: String) -> Self {
        tracing::warn!(vm = %format!("{}/{}", self.namespace, self.name), "{reason}");
        self.result = VmResult::Failed { reason };
        self
    }

    /// Left alone: a precondition moved, said as a type and in words.
    fn abort(mut self, abort: Abort) -> Self {
        tracing::warn!(vm = %format!("{}/{}", self.namespace, self.name), "{}", abort.detail);
        self.result = VmResult::Aborted(abort);
        self
    }

    fn end_ok(mut self, result: VmResult) -> Self {
        self.result = result;
        self
    }
}

/// Why a VM's recovery intent was not recorded (so nothing of it was changed).
#[derive(Debug, thiserror::Error)]
enum IntentNotRecorded {
    /// Another VM's task panicked while holding the store.
    #[error("the intents store lock is poisoned")]
    Poisoned,
    /// The intents file could not be written.
    #[error("cannot record the recovery intent, so nothing was changed: {0:#}")]
    Save(#[from] crate::state_file::SaveError),
}

fn record_intent(d: &Decision, ctx: &ApplyContext) -> Result<(), IntentNotRecorded> {
    let (Some(vm), Some(vmi)) = (&d.vm, &d.vmi) else {
        return Ok(());
    };
    let clears_vm = matches!(&d.action, Action::Recover { steps } if steps.iter().any(|s| matches!(s, Step::ClearFinalizers { kind: ObjectKind::Vm, .. })));
    if !clears_vm {
        return Ok(());
    }
    let intent = RecoveryIntent {
        namespace: vm.namespace.clone(),
        name: vm.name.clone(),
        vm_uid: vm.uid.clone(),
        vmi_uid: vmi.uid.clone(),
        pvcs: d.pvcs.clone(),
        disks: d
            .disks
            .iter()
            .map(|k| IntentDisk {
                pvc: k.pvc.clone().unwrap_or_default(),
                pvc_uid: None,
                pv: k.pv.clone(),
                handle: k.handle.clone(),
                driver: k.driver.clone(),
            })
            .collect(),
        started: jiff::Timestamp::now(),
    };
    let store = ctx
        .intents
        .lock()
        .map_err(|_| IntentNotRecorded::Poisoned)?;
    Ok(store.add(intent)?)
}

fn forget_intent(d: &Decision, ctx: &ApplyContext) {
    if let Some(vm) = &d.vm {
        if let Ok(store) = ctx.intents.lock() {
            if let Err(e) = store.remove(&vm.uid) {
                tracing::warn!(
                    "cannot forget the recovery intent of {}/{}: {e:#}",
                    vm.namespace,
                    vm.name
                );
            }
        }
    }
}

/// The one Event of a VM's recovery: on the VM (the VMI when there is none), naming every
/// change, the side effects skipped and, when it stopped early, why.
async fn vm_event(ctx: &ApplyContext, d: &Decision, changes: &[Change], out: &VmOutcome) {
    let Some((kind, object)) =
        d.vm.as_ref()
            .map(|vm| (ObjectKind::Vm, vm))
            .or_else(|| d.vmi.as_ref().map(|vmi| (ObjectKind::Vmi, vmi)))
    else {
        return;
    };
    let cleared = changes
        .iter()
        .any(|c| matches!(c, Change::FinalizersRemoved(..)));
    let done: Vec<String> = changes
        .iter()
        .map(|c| match c {
            Change::PodDeleted(pod) => format!("force-deleted leftover launcher pod {pod}"),
            Change::FinalizersRemoved(kind, removed) => format!(
                "removed finalizers {} from the {}",
                removed.join(", "),
                match kind {
                    ObjectKind::Vmi => "VMI",
                    ObjectKind::Vm => "VM",
                }
            ),
        })
        .collect();
    let basis = match &d.declared_off {
        Some(node) => format!(
            "with {node} declared powered off by the operator ({node}'s own evidence not read)"
        ),
        None => "after proving nothing of the VM runs or holds a disk on this node".to_string(),
    };
    let mut note = format!("vmrecover {} {basis}", done.join("; "));
    let warning = cleared && !d.skipped_side_effects.is_empty();
    if warning {
        note.push_str("; skipped: ");
        note.push_str(&d.skipped_side_effects.join("; "));
    }
    if let Some(why) = out.result.reason() {
        note.push_str("; then stopped: ");
        note.push_str(why);
    }
    let action = if cleared {
        "ClearFinalizers"
    } else {
        "ForceDeleteLauncherPod"
    };
    event(ctx, kind, object, warning, action, &note).await;
}

async fn event(
    ctx: &ApplyContext,
    kind: ObjectKind,
    object: &ObjectKey,
    warning: bool,
    action: &str,
    note: &str,
) {
    let about = Regarding {
        api_version: "kubevirt.io/v1".into(),
        kind: match kind {
            ObjectKind::Vmi => "VirtualMachineInstance".into(),
            ObjectKind::Vm => "VirtualMachine".into(),
        },
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        uid: object.uid.clone(),
    };
    let reason = if warning {
        "RecoveredSkippingCleanup"
    } else {
        "Recovered"
    };
    if let Err(e) = ctx
        .events
        .record(&about, warning, action, reason, note)
        .await
    {
        tracing::warn!(
            "could not record an Event for {kind} {}/{}: {e}",
            object.namespace,
            object.name
        );
    }
}

/// Why a leftover launcher pod was not deleted.
#[derive(Debug, thiserror::Error)]
enum PodNotDeleted {
    /// The UID precondition failed: another pod has the name now.
    #[error("pod {namespace}/{name} was replaced by a new pod of the same name: left alone")]
    Replaced {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
    },
    /// The API server refused or could not be reached.
    #[error(transparent)]
    Request(#[from] crate::cluster::RequestFailed),
}

async fn force_delete_pod(client: &Client, pod: &ObjectKey) -> Result<(), PodNotDeleted> {
    let api = Api::<Pod>::namespaced(client.clone(), &pod.namespace);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(pod.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let what = format!("delete pods/{} in {}", pod.name, pod.namespace);
    match with_retries(&what, || api.delete(&pod.name, &dp)).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) if status_code(&e) == Some(409) => Err(PodNotDeleted::Replaced {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
        }),
        Err(e) => Err(crate::cluster::RequestFailed::new(
            "delete",
            format!("pods/{} in {}", pod.name, pod.namespace),
            e,
        )
        .into()),
    }
}

/// What the controllers did during the wait.
struct Waited {
    /// The VMI is gone.
    vmi_gone: bool,
    /// The VM needs nothing more (gone, or not deleting).
    finished: bool,
}

/// Waits up to `grace` (with a watch) for the controllers to remove the VMI, then, for what
/// is left of the grace, for them to finish the VM too: virt-controller's VM controller drops
/// `virtualMachineControllerFinalize` only after it saw the VMI go, so the VM lags behind.
async fn wait_for_controllers(d: &Decision, grace: Duration, ctx: &ApplyContext) -> Waited {
    let not_yet = Waited {
        vmi_gone: false,
        finished: false,
    };
    let Some(vmi) = &d.vmi else {
        return not_yet;
    };
    let deadline = tokio::time::Instant::now() + grace;
    let api = Api::<VirtualMachineInstance>::namespaced(ctx.client.clone(), &vmi.namespace);
    let vmi_gone = tokio::time::timeout(
        grace,
        crate::cluster::until_gone(api, &vmi.name, &vmi.uid, ctx.watch_timeout_secs),
    )
    .await
    .is_ok();
    if !vmi_gone {
        return not_yet;
    }
    let Some(vm) = &d.vm else {
        return Waited {
            vmi_gone,
            finished: true,
        };
    };
    let vms = Api::<VirtualMachine>::namespaced(ctx.client.clone(), &vm.namespace);
    let finished = match with_retries("get the VM after the wait", || vms.get_opt(&vm.name)).await {
        Ok(None) => true,
        Ok(Some(cur)) => {
            cur.metadata.uid.as_deref() != Some(vm.uid.as_str())
                || cur.metadata.deletion_timestamp.is_none()
        }
        Err(_) => false,
    };
    if finished {
        return Waited { vmi_gone, finished };
    }
    // Still deleting: its controllers may be a moment behind the VMI's.
    let vm_gone = tokio::time::timeout_at(
        deadline,
        crate::cluster::until_gone(vms, &vm.name, &vm.uid, ctx.watch_timeout_secs),
    )
    .await
    .is_ok();
    Waited {
        vmi_gone,
        finished: vm_gone,
    }
}

/// The result of a finalizer patch.
enum Cleared {
    Removed(Vec<String>),
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
/// else leaves the VM alone with the fresh decision's reason.
async fn clear_finalizers(
    ctx: &ApplyContext,
    d: &Decision,
    remaining: &[Step],
    kind: ObjectKind,
    object: &ObjectKey,
    planned: &[String],
    remove: &[String],
) -> (Result<Cleared, Stop>, u32) {
    match kind {
        ObjectKind::Vmi => {
            clear_on::<VirtualMachineInstance>(ctx, d, remaining, object, planned, remove).await
        }
        ObjectKind::Vm => {
            clear_on::<VirtualMachine>(ctx, d, remaining, object, planned, remove).await
        }
    }
}

/// `remaining`: the plan's steps from this one on (a conflict is judged against them).
async fn clear_on<K>(
    ctx: &ApplyContext,
    d: &Decision,
    remaining: &[Step],
    object: &ObjectKey,
    planned: &[String],
    remove: &[String],
) -> (Result<Cleared, Stop>, u32)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(ctx.client.clone(), &object.namespace);
    let what = format!("{} {}/{}", K::plural(&()), object.namespace, object.name);
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
        let keep: Vec<&String> = expected.iter().filter(|f| !remove.contains(f)).collect();
        let patch: json_patch::Patch = match serde_json::from_value(json!([
            { "op": "test", "path": "/metadata/uid", "value": object.uid },
            { "op": "test", "path": "/metadata/resourceVersion", "value": rv },
            { "op": "test", "path": "/metadata/finalizers", "value": expected },
            { "op": "replace", "path": "/metadata/finalizers", "value": keep },
        ])) {
            Ok(p) => p,
            Err(e) => {
                return (
                    Err(Stop::Fail(format!("cannot build the patch: {e}"))),
                    requests,
                )
            }
        };
        requests += 1;
        let pp = PatchParams::default();
        let patch = Patch::Json::<()>(patch);
        match retried_unless_webhook(&format!("patch {what}"), || {
            api.patch(&object.name, &pp, &patch)
        })
        .await
        {
            Ok(_) => return (Ok(Cleared::Removed(to_remove)), requests),
            Err(e) if status_code(&e) == Some(404) => return (Ok(Cleared::AlreadyGone), requests),
            // A denial (policy, webhook, validation) is final, reported once with the
            // server's message; only a conflict or a failed `test` re-reads (cluster::denial).
            Err(e) if classify_refusal(&e).is_some_and(|r| r.is_final()) => {
                let reason = classify_refusal(&e)
                    .map(|r| r.reason(&what))
                    .unwrap_or_default();
                return (Err(Stop::Fail(reason)), requests);
            }
            Err(e) if classify_refusal(&e) == Some(Refusal::Moved) => {
                // The planner decides again on what is there now (the same rules as the
                // plan): only a decision still within the plan is retried.
                match ctx.recheck.after_conflict(d, remaining).await {
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
                }
            }
            Err(e) => return (Err(Stop::Fail(describe(&e, "patch", &what))), requests),
        }
    }
    (
        Err(Stop::Fail(format!(
            "{what} kept changing: gave up after {CONFLICT_RETRIES} conflicts; a rerun re-decides"
        ))),
        requests,
    )
}

/// [`with_retries`] for the finalizer patch, except that a refusal is final for this run
/// ([`Refusal::is_final`]): a webhook that cannot be called after a power cut stays down for
/// minutes (a later pass retries), and a policy or webhook that denied will deny again.
async fn retried_unless_webhook<T, F, Fut>(what: &str, mut request: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut retry = 0;
    loop {
        match request().await {
            Err(e)
                if retryable(&e)
                    && !classify_refusal(&e).is_some_and(|r| r.is_final())
                    && retry + 1 < ATTEMPTS =>
            {
                let wait = backoff(&e, retry);
                tracing::info!(
                    "{what}: {e}; retrying in {}",
                    humantime::format_duration(wait)
                );
                tokio::time::sleep(wait).await;
                retry += 1;
            }
            other => return other,
        }
    }
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
