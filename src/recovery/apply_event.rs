//! The one Kubernetes Event a VM's recovery gets, naming every change made to it.

use super::apply_context::{ApplyContext, Change};
use super::apply_io::EventNote;
use super::finalizers::ObjectKind;
use super::model::Decision;
use super::report::VmResult;
use crate::cluster::{ObjectKey, Regarding};

/// The one Event of a VM's recovery: on the VM (the VMI when there is none), naming every
/// change, the side effects skipped and, when it stopped early, why.
pub(super) async fn vm_event(
    ctx: &ApplyContext,
    d: &Decision,
    changes: &[Change],
    result: &VmResult,
) {
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
    if let Some(why) = result.reason() {
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

/// Records one Event about `object`; a failure is only logged.
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
    let note = EventNote {
        about: &about,
        warning,
        action,
        reason,
        note,
    };
    if let Err(e) = ctx.cluster.event(note).await {
        tracing::warn!(
            "could not record an Event for {kind} {}/{}: {e}",
            object.namespace,
            object.name
        );
    }
}
