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
//! "spec.templates.spec.volumes")`, 422. From v1.7.0 (same at v1.8.0) the check is
//! `pkg/util/virtualmachine/virtualmachine.go` `CheckBlockRWXVolumeForVM`: a PVC that does
//! not exist is skipped; a ReadWriteMany PVC of another provisioner than Longhorn
//! (`driver.longhorn.io`; the provisioner from annotation
//! `volume.beta.kubernetes.io/storage-provisioner`, else `volume.kubernetes.io/
//! storage-provisioner`, else the StorageClass's, `pkg/util/volume.go`
//! `GetProvisionedPVCProvisioner`) is allowed; otherwise another VM of the namespace whose
//! *non-shareable disk* uses it (index `VMByNonShareablePVC`: a volume whose disk is not
//! `shareable: true`; a volume without a disk is not indexed) refuses it with "PVC
//! <ns>/<claim> is already used by other VM, please use a shareable RWX volume.". The
//! simulator serves no StorageClasses: a PVC without the annotations counts as Longhorn's
//! (Harvester's default class), which checks more, never less.

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

/// The claims of `vm`'s volumes whose disk is not shareable (`VMByNonShareablePVC`).
fn non_shareable_claims(vm: &Value) -> Vec<&str> {
    let disks: Vec<&str> = vm
        .pointer("/spec/template/spec/domain/devices/disks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|d| d.get("shareable").and_then(Value::as_bool) != Some(true))
        .filter_map(|d| d.get("name")?.as_str())
        .collect();
    vm.pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| {
            v.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| disks.contains(&n))
        })
        .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName")?.as_str())
        .filter(|c| !c.is_empty())
        .collect()
}

/// `GetProvisionedPVCProvisioner` without StorageClasses (see the module doc).
fn provisioner(pvc: &Value) -> &str {
    let ann = |k: &str| pvc.pointer(&format!("/metadata/annotations/{}", k.replace('/', "~1")));
    let p = match ann("volume.beta.kubernetes.io/storage-provisioner") {
        Some(v) => v.as_str().unwrap_or(""),
        None => ann("volume.kubernetes.io/storage-provisioner")
            .and_then(Value::as_str)
            .unwrap_or(""),
    };
    if p.is_empty() {
        LONGHORN
    } else {
        p
    }
}

const LONGHORN: &str = "driver.longhorn.io";

/// `CheckBlockRWXVolumeForVM` (v1.7.0 …) for every PVC volume of `vm`; `pvc` looks a PVC up
/// by namespace and name.
pub fn check_non_shareable_pvcs(
    vm: &Value,
    vms: &[&Value],
    pvc: &dyn Fn(&str, &str) -> Option<Value>,
) -> Result<(), ApiError> {
    let (ns, name) = ns_name(vm);
    for claim in claims(vm) {
        let Some(p) = pvc(ns, claim) else { continue };
        let rwx = p
            .pointer("/spec/accessModes")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|x| x == "ReadWriteMany"));
        if rwx && provisioner(&p) != LONGHORN {
            continue;
        }
        let used_elsewhere = vms.iter().any(|o| {
            let (ons, oname) = ns_name(o);
            ons == ns && oname != name && non_shareable_claims(o).contains(&claim)
        });
        if used_elsewhere {
            return Err(crate::admission::denied_with_field(
                VALIDATOR,
                &format!(
                    "PVC {ns}/{claim} is already used by other VM, please use a shareable RWX volume."
                ),
                "spec.templates.spec.volumes",
            ));
        }
    }
    Ok(())
}

fn ns_name(vm: &Value) -> (&str, &str) {
    let s = |p: &str| vm.pointer(p).and_then(Value::as_str).unwrap_or("");
    (s("/metadata/namespace"), s("/metadata/name"))
}

/// `checkOccupiedPVCs` (v1.4.0 … v1.6.1) of `vm` against the VMs of the cluster: the first
/// volume another VM of its namespace lists is refused (other VMs in namespace/name order).
pub fn check_occupied_pvcs(vm: &Value, vms: &[&Value]) -> Result<(), ApiError> {
    let (ns, name) = ns_name(vm);
    let mut others: Vec<&Value> = vms
        .iter()
        .copied()
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
        let (x, shares) = (
            vm("other", "vm-x", &["disk-a"]),
            vm("default", "vm-shares", &["disk-b"]),
        );
        let cluster: Vec<&Value> = vec![&me, &x, &shares];
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

    fn with_disks(mut vm: Value, shareable: &[(&str, bool)]) -> Value {
        let disks: Vec<Value> = shareable
            .iter()
            .map(|(n, s)| json!({"name": n, "disk": {"bus": "virtio"}, "shareable": s}))
            .collect();
        vm["spec"]["template"]["spec"]["domain"] = json!({"devices": {"disks": disks}});
        vm
    }

    #[test]
    fn from_1_7_only_non_shareable_disks_and_non_rwx_or_longhorn_pvcs_count() {
        let me = vm("default", "vm-db-01", &["disk-a"]);
        let pvc = |access: &str, prov: Option<&str>| {
            let mut p = json!({"metadata": {"name": "disk-a", "namespace": "default"},
                "spec": {"accessModes": [access]}});
            if let Some(prov) = prov {
                p["metadata"]["annotations"] =
                    json!({"volume.kubernetes.io/storage-provisioner": prov});
            }
            p
        };
        let other = |shareable: bool| {
            with_disks(vm("default", "vm-x", &["disk-a"]), &[("disk-a", shareable)])
        };
        let run = |others: Vec<Value>, p: Option<Value>| {
            let cluster: Vec<Value> = std::iter::once(me.clone()).chain(others).collect();
            let cluster: Vec<&Value> = cluster.iter().collect();
            check_non_shareable_pvcs(&me, &cluster, &|_, _| p.clone())
        };
        let refused = run(
            vec![other(false)],
            Some(pvc("ReadWriteOnce", Some(LONGHORN))),
        );
        assert_eq!(
            refused.err().map(|e| e.message),
            Some("admission webhook \"validator.harvesterhci.io\" denied the request: PVC default/disk-a is already used by other VM, please use a shareable RWX volume.".to_string())
        );
        // Longhorn RWX is still refused; another provisioner's RWX is not.
        assert!(run(
            vec![other(false)],
            Some(pvc("ReadWriteMany", Some(LONGHORN)))
        )
        .is_err());
        assert!(run(
            vec![other(false)],
            Some(pvc("ReadWriteMany", Some("nfs.csi.k8s.io")))
        )
        .is_ok());
        // A shareable disk, a volume without a disk, a missing PVC: allowed.
        assert!(run(
            vec![other(true)],
            Some(pvc("ReadWriteOnce", Some(LONGHORN)))
        )
        .is_ok());
        assert!(run(
            vec![vm("default", "vm-x", &["disk-a"])],
            Some(pvc("ReadWriteOnce", None))
        )
        .is_ok());
        assert!(run(vec![other(false)], None).is_ok());
        // No annotation: counted as Longhorn's.
        assert!(run(vec![other(false)], Some(pvc("ReadWriteMany", None))).is_err());
    }
}
