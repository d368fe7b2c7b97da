//! A VM's recovery intent around its changes: recorded in the state directory before the
//! first one, forgotten when nothing is left to do, so an interrupted run is finished by
//! the next (docs/safety.md item 24).

use super::apply_context::ApplyContext;
use super::finalizers::ObjectKind;
use super::intents::{IntentDisk, RecoveryIntent};
use super::model::{Action, Decision, Step};

/// Why a VM's recovery intent was not recorded (so nothing of it was changed).
#[derive(Debug, thiserror::Error)]
pub(super) enum IntentNotRecorded {
    /// Another VM's task panicked while holding the store.
    #[error("the intents store lock is poisoned")]
    Poisoned,
    /// The intents file could not be written.
    #[error("cannot record the recovery intent, so nothing was changed: {0:#}")]
    Save(#[from] crate::state_file::SaveError),
}

/// Records `d`'s recovery intent before its first change, when its VM's finalizers are to be
/// cleared (the VMI may be gone by the next run: the intent says which VM it was).
pub(super) fn record_intent(d: &Decision, ctx: &ApplyContext) -> Result<(), IntentNotRecorded> {
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

/// Forgets `d`'s intent once nothing is left to do for it (a failure is only logged: the
/// next run finds the VM finished and forgets it then).
pub(super) fn forget_intent(d: &Decision, ctx: &ApplyContext) {
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
