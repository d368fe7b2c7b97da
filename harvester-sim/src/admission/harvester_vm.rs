//! What Harvester's VM validator (`validator.harvesterhci.io`, failurePolicy Fail) checks when
//! it is up, for the releases whose check is modelled. It runs its VM spec checks on every
//! CREATE and UPDATE of a VM or its status, deleting or not: a finalizer-only patch of a
//! deleting VM meets them too.
//!
//! Modelled: `checkOccupiedPVCs` of harvester `pkg/webhook/resources/virtualmachine/
//! validator.go` at v1.4.0 … v1.6.1: a PVC volume of the VM that another VM of its namespace
//! also lists (index `VMByPVC`, `pkg/util/indexeres/virtualmachine.go`: every VM's
//! `persistentVolumeClaim` volumes, deleting VMs included) is refused with
//! `werror.NewInvalidError("the volume <claim> is already used by VM <ns>/<name>",
//! "spec.templates.spec.volumes")`, 422. From v1.7.0 the check allows shareable RWX volumes
//! of other provisioners than Longhorn (`vmutil.CheckBlockRWXVolumeForVM`, message "PVC
//! <ns>/<claim> is already used by other VM, please use a shareable RWX volume."): not
//! modelled (see docs/simulator.md).

use serde_json::Value;

use crate::errors::ApiError;

/// The validator's name.
pub const VALIDATOR: &str = "validator.harvesterhci.io";

fn claims(vm: &Value) -> Vec<&str> {
    vm.pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName")?.as_str())
        .filter(|c| !c.is_empty())
        .collect()
}

fn ns_name(vm: &Value) -> (&str, &str) {
    let s = |p: &str| vm.pointer(p).and_then(Value::as_str).unwrap_or("");
    (s("/metadata/namespace"), s("/metadata/name"))
}

/// `checkOccupiedPVCs` (v1.4.0 … v1.6.1) of `vm` against the VMs of the cluster: the first
/// volume another VM of its namespace lists is refused (other VMs in namespace/name order).
pub fn check_occupied_pvcs(vm: &Value, vms: &[Value]) -> Result<(), ApiError> {
    let (ns, name) = ns_name(vm);
    let mut others: Vec<&Value> = vms
        .iter()
        .filter(|o| {
            let (ons, oname) = ns_name(o);
            ons == ns && oname != name
        })
        .collect();
    others.sort_by_key(|o| ns_name(o));
    for claim in claims(vm) {
        if let Some(other) = others.iter().find(|o| claims(o).contains(&claim)) {
            let (ons, oname) = ns_name(other);
            return Err(crate::admission::denied_with_field(
                VALIDATOR,
                &format!("the volume {claim} is already used by VM {ons}/{oname}"),
                "spec.templates.spec.volumes",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(ns: &str, name: &str, claims: &[&str]) -> Value {
        let volumes: Vec<Value> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        json!({"metadata": {"namespace": ns, "name": name},
            "spec": {"template": {"spec": {"volumes": volumes}}}})
    }

    #[test]
    fn a_volume_another_vm_of_the_namespace_lists_is_refused() {
        let me = vm("default", "vm-db-01", &["disk-a", "disk-b"]);
        let cluster = vec![
            me.clone(),
            vm("other", "vm-x", &["disk-a"]),
            vm("default", "vm-shares", &["disk-b"]),
        ];
        let Err(e) = check_occupied_pvcs(&me, &cluster) else {
            panic!("not refused")
        };
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "admission webhook \"validator.harvesterhci.io\" denied the request: the volume disk-b is already used by VM default/vm-shares"
        );
        assert!(
            check_occupied_pvcs(&me, &cluster[..2]).is_ok(),
            "another namespace's VM"
        );
    }
}
