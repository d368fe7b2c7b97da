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

use super::audit::{self, AuditRecord};
use super::finalizers::ObjectKind;
use super::intents::{IntentDisk, IntentStore, RecoveryIntent};
use super::model::{Action, Decision, OrphanDecision, Plan, Step};
use super::plan::still_mine;
use super::recheck::Recheck;
use super::report::{OrphanOutcome, StepAction, StepOutcome, StepStatus, VmOutcome, VmResult};
use crate::cluster::LeaseGuard;
use crate::cluster::ObjectKey;
use crate::cluster::{backoff, retryable, with_retries, ATTEMPTS};
use crate::cluster::{describe, status_code};
use crate::cluster::{EventRecorder, Regarding};
use crate::cluster::{VirtualMachine, VirtualMachineInstance, VmiView};
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
    /// Fresh evidence right before each VM is changed.
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
}

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
    let mut changes = Vec::new();
    let mut out = recover_steps(d, steps, ctx, &mut changes).await;
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
        reason: None,
        steps: Vec::new(),
        requests: 0,
    };
    // The evidence each change rests on, as last checked (not as planned).
    let mut evidence = match ctx.recheck.still_safe(d, steps).await {
        Ok(fresh) => fresh.join("; "),
        Err(why) => return out.end(VmResult::Aborted, why),
    };
    if let Err(why) = record_intent(d, ctx) {
        return out.end(VmResult::Failed, why);
    }

    // Set once the wait saw the VMI disappear: its clear step has nothing left to do.
    let mut vmi_gone = false;
    for (i, step) in steps.iter().enumerate() {
        if *ctx.cancel.borrow() {
            return out.end(
                VmResult::Aborted,
                format!(
                    "vmrecover was asked to stop: {}; a rerun continues",
                    done_so_far(changes)
                ),
            );
        }
        if !ctx.lease.is_held() {
            return out.end(
                VmResult::Aborted,
                format!("the node Lease was lost: {}", done_so_far(changes)),
            );
        }
        match step {
            Step::ForceDeletePod { pod } => {
                let desc = format!(
                    "force-delete launcher pod {}/{} (grace 0)",
                    pod.namespace, pod.name
                );
                out.requests += 1;
                let result = force_delete_pod(&ctx.client, pod).await;
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
                    return out.end(VmResult::Failed, why);
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
                        return out.end(
                            VmResult::Aborted,
                            format!(
                                "vmrecover was asked to stop during the controller wait: {}; a rerun continues",
                                done_so_far(changes)
                            ),
                        );
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
                // Time passed: the evidence must be fresh again before the next change.
                ctx.recheck.invalidate().await;
                match ctx.recheck.still_safe(d, &steps[i + 1..]).await {
                    Ok(fresh) => evidence = fresh.join("; "),
                    Err(why) => return out.end(VmResult::Aborted, why),
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
                let (result, requests) = clear_finalizers(
                    &ctx.client,
                    ctx.recheck.node(),
                    *kind,
                    object,
                    expected,
                    remove,
                )
                .await;
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
                    Err(Stop::Abort(why)) => (
                        StepStatus::LeftAlone,
                        format!("left alone: {why}"),
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
                    Err(Stop::Abort(why)) => return out.end(VmResult::Aborted, why),
                    Err(Stop::Fail(why)) => return out.end(VmResult::Failed, why),
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
    fn end(mut self, result: VmResult, reason: String) -> Self {
        tracing::warn!(vm = %format!("{}/{}", self.namespace, self.name), "{reason}");
        self.result = result;
        self.reason = Some(reason);
        self
    }

    fn end_ok(mut self, result: VmResult) -> Self {
        self.result = result;
        self
    }
}

fn record_intent(d: &Decision, ctx: &ApplyContext) -> Result<(), String> {
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
        .map_err(|_| "the intents store lock is poisoned".to_string())?;
    store
        .add(intent)
        .map_err(|e| format!("cannot record the recovery intent, so nothing was changed: {e:#}"))
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
    if let (VmResult::Aborted | VmResult::Failed, Some(why)) = (out.result, &out.reason) {
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

async fn force_delete_pod(client: &Client, pod: &ObjectKey) -> Result<(), String> {
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
        Err(e) if status_code(&e) == Some(409) => Err(format!(
            "pod {}/{} was replaced by a new pod of the same name: left alone",
            pod.namespace, pod.name
        )),
        Err(e) => Err(describe(
            &e,
            "delete",
            &format!("pods/{} in {}", pod.name, pod.namespace),
        )),
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
    Abort(String),
    /// The API refused or failed.
    Fail(String),
}

/// Removes `remove` from the object's finalizers with a JSON Patch that tests its UID,
/// resourceVersion and exact finalizer list. On a conflict it re-reads: finalizers only
/// removed since the plan → retry on the new version; anything added, a new object, or
/// one no longer deleting → left alone.
async fn clear_finalizers(
    client: &Client,
    node: &str,
    kind: ObjectKind,
    object: &ObjectKey,
    planned: &[String],
    remove: &[String],
) -> (Result<Cleared, Stop>, u32) {
    match kind {
        ObjectKind::Vmi => {
            clear_on::<VirtualMachineInstance>(client, Some(node), object, planned, remove).await
        }
        ObjectKind::Vm => clear_on::<VirtualMachine>(client, None, object, planned, remove).await,
    }
}

/// `still_on`: for a VMI, this node's name: a VMI re-read after a conflict must still be
/// this node's and not migrating, or it is left alone (the conflict may be exactly that
/// move).
async fn clear_on<K>(
    client: &Client,
    still_on: Option<&str>,
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
    let api = Api::<K>::namespaced(client.clone(), &object.namespace);
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
            // Before the 422 arm: a webhook's denial may be a 422 too, and is no failed `test`.
            Err(e) if webhook_answer(&e).is_some() => {
                let reason = webhook_answer(&e)
                    .map(|w| w.reason(&what))
                    .unwrap_or_default();
                return (Err(Stop::Fail(reason)), requests);
            }
            Err(e) if matches!(status_code(&e), Some(409) | Some(422)) => {
                requests += 1;
                let current = match with_retries(&format!("get {what}"), || {
                    api.get_opt(&object.name)
                })
                .await
                {
                    Ok(c) => c,
                    Err(e) => return (Err(Stop::Fail(describe(&e, "get", &what))), requests),
                };
                let Some(current) = current else {
                    return (Ok(Cleared::AlreadyGone), requests);
                };
                let meta = current.meta();
                if meta.uid.as_deref() != Some(object.uid.as_str()) {
                    return (
                        Err(Stop::Abort(format!("{what} was replaced by a new object"))),
                        requests,
                    );
                }
                if meta.deletion_timestamp.is_none() {
                    return (
                        Err(Stop::Abort(format!("{what} is no longer being deleted"))),
                        requests,
                    );
                }
                if let Some(node) = still_on {
                    let moved = serde_json::to_value(&current)
                        .and_then(serde_json::from_value::<VirtualMachineInstance>)
                        .map(|v| still_mine(&VmiView::from(&v), node))
                        .unwrap_or_else(|e| Some(format!("it could not be read back ({e})")));
                    if let Some(why) = moved {
                        return (
                            Err(Stop::Abort(format!("{what} moved since the plan: {why}"))),
                            requests,
                        );
                    }
                }
                let now = meta.finalizers.clone().unwrap_or_default();
                if let Some(added) = now.iter().find(|f| !planned.contains(f)) {
                    return (
                        Err(Stop::Abort(format!(
                            "finalizer {added} was added to {what} since the plan: left alone"
                        ))),
                        requests,
                    );
                }
                expected = now;
                rv = meta.resource_version.clone().unwrap_or_default();
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

/// An admission webhook's answer to a write, told apart from every other error by the
/// Status message the apiserver builds (k8s.io/apiserver v0.33.0): a webhook it could not
/// call is `apierrors.NewInternalError(ErrCallingWebhook)` (500, `Internal error occurred:
/// failed calling webhook "<name>": ...`, `pkg/admission/plugin/webhook/validating/
/// dispatcher.go`, `pkg/util/webhook/error.go`); a denial is `ToStatusErr` (`admission
/// webhook "<name>" denied the request: <message>`, with whatever code the webhook chose,
/// 400 and 422 typically, `pkg/admission/plugin/webhook/errors/statuserror.go`). A failed
/// JSON-patch `test` is neither: its 422 says "the server rejected our request ...".
#[derive(Debug, PartialEq)]
enum WebhookAnswer {
    /// The webhook could not be called (its pods are down, e.g. right after a power cut).
    Unavailable { webhook: String, detail: String },
    /// The webhook refused the change.
    Denied { webhook: String, message: String },
}

impl WebhookAnswer {
    /// The VM's failure reason.
    fn reason(&self, what: &str) -> String {
        match self {
            WebhookAnswer::Unavailable { webhook, detail } => format!(
                "{what}: admission webhook {webhook} is unavailable ({detail}); nothing was \
                 changed, a later pass or a rerun retries once it is back"
            ),
            WebhookAnswer::Denied { webhook, message } => format!(
                "{what}: admission webhook {webhook} denied the change: {message}; nothing was \
                 changed and it is not retried in this run"
            ),
        }
    }
}

/// The webhook answer in an API error, if it is one (see [`WebhookAnswer`]).
fn webhook_answer(err: &kube::Error) -> Option<WebhookAnswer> {
    let kube::Error::Api(status) = err else {
        return None;
    };
    let quoted = |rest: &str| -> Option<(String, String)> {
        let (name, after) = rest.split_once('"')?;
        Some((name.to_string(), after.to_string()))
    };
    if let Some(rest) = status
        .message
        .strip_prefix("Internal error occurred: failed calling webhook \"")
    {
        let (webhook, after) = quoted(rest)?;
        let detail = after
            .trim_start_matches(':')
            .trim()
            .trim_start_matches("failed to call webhook:")
            .trim()
            .to_string();
        return Some(WebhookAnswer::Unavailable { webhook, detail });
    }
    let rest = status.message.strip_prefix("admission webhook \"")?;
    let (webhook, after) = quoted(rest)?;
    let message = after.strip_prefix(" denied the request")?;
    let message = message.strip_prefix(": ").unwrap_or(message).trim();
    Some(WebhookAnswer::Denied {
        webhook,
        message: message.to_string(),
    })
}

/// [`with_retries`] for the finalizer patch, except that a webhook's answer is final for
/// this run: a webhook that cannot be called after a power cut stays down for minutes (a
/// later pass retries), and one that denied will deny again.
async fn retried_unless_webhook<T, F, Fut>(what: &str, mut request: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut retry = 0;
    loop {
        match request().await {
            Err(e) if retryable(&e) && webhook_answer(&e).is_none() && retry + 1 < ATTEMPTS => {
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
    // Minutes can pass between plan and kill: prove it is still an orphan right before.
    ctx.recheck.invalidate().await;
    let still = still_orphan(o, ctx).await;
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

/// Whether the orphan is still one: this node is still this machine and boot, no VMI with
/// its UID (or, without a UID, its name) exists, no launcher pod for it is on this node.
async fn still_orphan(o: &OrphanDecision, ctx: &ApplyContext) -> Result<(), String> {
    ctx.recheck.identity_holds().await?;
    let (Some(ns), Some(name)) = (&o.namespace, &o.name) else {
        return Err("its command line names no VMI to look up".into());
    };
    let api = Api::<VirtualMachineInstance>::namespaced(ctx.client.clone(), ns);
    match with_retries("re-read the VMI an orphan claims", || api.get_opt(name)).await {
        Ok(None) => {}
        Ok(Some(v)) if o.uid.is_some() && v.metadata.uid != o.uid => {}
        Ok(Some(_)) => return Err(format!("VMI {ns}/{name} exists now: it is not an orphan")),
        Err(e) => {
            return Err(describe(
                &e,
                "get",
                &format!("virtualmachineinstances {ns}/{name}"),
            ))
        }
    }
    if let Some(pod) = ctx
        .recheck
        .launcher_pod_for(ns, name, o.uid.as_deref())
        .await?
    {
        return Err(format!("launcher pod {pod} for it is on this node now"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, message: &str) -> kube::Error {
        let mut s = Status::failure(message, "");
        s.code = code;
        kube::Error::Api(Box::new(s))
    }

    #[test]
    fn webhook_answers_are_told_apart_by_the_status_message() {
        let down = api(
            500,
            "Internal error occurred: failed calling webhook \"virtualmachines-mutator.kubevirt.io\": failed to call webhook: Post \"https://virt-api.harvester-system.svc:443/virtualmachines-mutate?timeout=10s\": dial tcp 10.53.121.37:443: connect: connection refused",
        );
        assert_eq!(
            webhook_answer(&down),
            Some(WebhookAnswer::Unavailable {
                webhook: "virtualmachines-mutator.kubevirt.io".into(),
                detail: "Post \"https://virt-api.harvester-system.svc:443/virtualmachines-mutate?timeout=10s\": dial tcp 10.53.121.37:443: connect: connection refused".into(),
            })
        );
        let denied = api(
            422,
            "admission webhook \"validator.harvesterhci.io\" denied the request: VM has a backup in progress",
        );
        assert_eq!(
            webhook_answer(&denied),
            Some(WebhookAnswer::Denied {
                webhook: "validator.harvesterhci.io".into(),
                message: "VM has a backup in progress".into(),
            })
        );
        let silent = api(
            400,
            "admission webhook \"x\" denied the request without explanation",
        );
        assert!(
            matches!(webhook_answer(&silent), Some(WebhookAnswer::Denied { message, .. }) if message == "without explanation")
        );
        // A failed JSON-patch test, a conflict, a plain 500: not webhooks.
        for e in [
            api(422, "the server rejected our request due to an error in our request"),
            api(409, "Operation cannot be fulfilled on virtualmachines.kubevirt.io \"x\": the object has been modified"),
            api(500, "etcdserver: request timed out"),
        ] {
            assert_eq!(webhook_answer(&e), None, "{e}");
        }
        assert!(WebhookAnswer::Unavailable {
            webhook: "w".into(),
            detail: "d".into()
        }
        .reason("virtualmachines default/vm-1")
        .contains("a later pass or a rerun retries"));
    }
}
