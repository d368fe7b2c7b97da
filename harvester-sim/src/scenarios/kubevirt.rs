//! KubeVirt's part of a release's objects: the launcher image in VMI status and pods, and the
//! migration-target label.
//!
//! `kubevirt.io/migrationTargetNodeName` is set by virt-controller at the hand-off
//! (`pkg/virt-controller/watch/migration/migration.go`); only KubeVirt ≥ 1.6 removes it after
//! the migration (`pkg/virt-handler/migration-target.go` v1.6.0). So on KubeVirt ≤ 1.5 a VMI
//! whose `status.migrationState` is over still carries the label, naming the target node,
//! whichever node the VMI runs on now.

use serde_json::Value;

use crate::profiles::ReleaseProfile;

/// The migration-target label.
pub const MIGRATION_TARGET_LABEL: &str = "kubevirt.io/migrationTargetNodeName";

/// Rewrites a VMI's KubeVirt-owned fields for release `p`.
pub fn vmi(obj: &mut Value, p: &ReleaseProfile) {
    if let Some(img) = obj.pointer_mut("/status/launcherContainerImageVersion") {
        *img = Value::from(p.launcher_image);
    }
    status_details(obj);
    let target = obj
        .pointer("/status/migrationState")
        .filter(|m| migration_over(m))
        .and_then(|m| m.get("targetNode"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(target) = target else {
        return;
    };
    let labels = crate::meta::meta_mut(obj)
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(l) = labels.as_object_mut() {
        if p.removes_migration_target_label {
            l.remove(MIGRATION_TARGET_LABEL);
        } else {
            l.insert(MIGRATION_TARGET_LABEL.into(), Value::from(target));
        }
    }
}

/// The status fields virt-controller and virt-handler fill in for a VMI that ran (kubevirt
/// `staging/src/kubevirt.io/api/core/v1/types.go` `VirtualMachineInstanceStatus`, v1.3.0 …
/// v1.7.0: `currentCPUTopology`, `memory`, `selinuxContext`, `runtimeUser`), derived
/// from the VMI's spec so a generated VMI has the size and shape of a real one.
fn status_details(obj: &mut Value) {
    let ran = obj
        .pointer("/status/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !ran {
        return;
    }
    let cpu = obj.pointer("/spec/domain/cpu").cloned().unwrap_or_default();
    let topology = serde_json::json!({
        "cores": cpu.get("cores").cloned().unwrap_or(Value::from(1)),
        "sockets": cpu.get("sockets").cloned().unwrap_or(Value::from(1)),
        "threads": cpu.get("threads").cloned().unwrap_or(Value::from(1)),
    });
    let guest = obj
        .pointer("/spec/domain/memory/guest")
        .cloned()
        .unwrap_or(Value::from("1Gi"));
    let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    status.entry("currentCPUTopology").or_insert(topology);
    status.entry("memory").or_insert(serde_json::json!({
        "guestAtBoot": guest, "guestCurrent": guest, "guestRequested": guest,
    }));
    status
        .entry("selinuxContext")
        .or_insert(Value::from("none"));
    status.entry("runtimeUser").or_insert(Value::from(107));
}

/// Whether a `status.migrationState` describes a migration that ended.
fn migration_over(m: &Value) -> bool {
    m.get("endTimestamp").is_some_and(|t| !t.is_null())
        || m.get("completed").and_then(Value::as_bool) == Some(true)
        || m.get("failed").and_then(Value::as_bool) == Some(true)
}

/// Rewrites a virt-launcher pod's images for release `p`.
pub fn launcher_pod(obj: &mut Value, p: &ReleaseProfile) {
    if crate::meta::label(obj, "kubevirt.io") != Some("virt-launcher") {
        return;
    }
    for list in ["/spec/containers", "/status/containerStatuses"] {
        let Some(items) = obj.pointer_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in items {
            if c.get("name").and_then(Value::as_str) == Some("compute") {
                c["image"] = Value::from(p.launcher_image);
            }
        }
    }
}
