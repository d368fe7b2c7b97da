//! The finalizers vmrecover knows (docs/architecture.md §4): who clears each, and what clearing it
//! by hand skips. Anything not listed here is unknown and is never removed unless the
//! operator names it.

use serde::{Deserialize, Serialize};

/// The kind of object a finalizer sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectKind {
    /// A VirtualMachineInstance.
    #[serde(rename = "VirtualMachineInstance")]
    Vmi,
    /// A VirtualMachine.
    #[serde(rename = "VirtualMachine")]
    Vm,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::Vmi => "vmi",
            ObjectKind::Vm => "vm",
        })
    }
}

/// One known finalizer.
#[derive(Debug, Clone, Copy)]
pub struct KnownFinalizer {
    /// The finalizer string.
    pub name: &'static str,
    /// The kinds it is known on.
    pub on: &'static [ObjectKind],
    /// The controller that normally clears it.
    pub cleared_by: &'static str,
    /// What removing it by hand skips, when that matters to the operator.
    pub skipped: Option<&'static str>,
}

const VMI: &[ObjectKind] = &[ObjectKind::Vmi];
const VM: &[ObjectKind] = &[ObjectKind::Vm];
const BOTH: &[ObjectKind] = &[ObjectKind::Vmi, ObjectKind::Vm];

/// The table of known finalizers (docs/architecture.md §4).
pub const KNOWN_FINALIZERS: &[KnownFinalizer] = &[
    KnownFinalizer {
        name: "kubevirt.io/foregroundDeleteVirtualMachine",
        on: VMI,
        cleared_by: "virt-controller (KubeVirt >= 1.7)",
        skipped: None,
    },
    KnownFinalizer {
        name: "foregroundDeleteVirtualMachine",
        on: VMI,
        cleared_by: "virt-controller (KubeVirt <= 1.6)",
        skipped: None,
    },
    KnownFinalizer {
        name: "kubevirt.io/virtualMachineControllerFinalize",
        on: BOTH,
        cleared_by: "virt-controller",
        skipped: None,
    },
    KnownFinalizer {
        name: "wrangler.cattle.io/VMController.CleanupPVCAndSnapshot",
        on: VM,
        cleared_by: "harvester (Harvester >= 1.4)",
        skipped: Some(
            "Harvester's PVC clean-up: the PVCs it would delete are left, and backup snapshots are not re-parented",
        ),
    },
    KnownFinalizer {
        name: "wrangler.cattle.io/VMController.ReconcileBackendStorageClone",
        on: VM,
        cleared_by: "harvester",
        skipped: Some("Harvester's clean-up of EFI/TPM backend-storage clone jobs"),
    },
    KnownFinalizer {
        name: "wrangler.cattle.io/VMController.BackfillObservedNetworkMacAddress",
        on: VMI,
        cleared_by: "harvester (Harvester >= 1.7)",
        skipped: Some("Harvester's copy of the observed MAC addresses into the VM spec"),
    },
    // Not in Harvester's own docs, but on real Harvester VMIs (1.5+): the load-balancer
    // controller and the pcidevices add-on register wrangler OnRemove handlers.
    KnownFinalizer {
        name: "wrangler.cattle.io/harvester-lb-vmi-controller",
        on: VMI,
        cleared_by: "harvester-load-balancer",
        skipped: Some("the load balancer's removal of the VMI from its backend servers (it re-syncs from the remaining VMIs)"),
    },
    // harvester/load-balancer-harvester `pkg/controller/vm/controller.go`: an OnRemove handler
    // on VMs that, for a guest-cluster VM (label `guestcluster.harvesterhci.io/name`) carrying
    // the on-remove annotation, deletes the cluster-type LoadBalancers of that guest cluster in
    // the VM's namespace; for any other VM it only drops the finalizer.
    KnownFinalizer {
        name: "wrangler.cattle.io/harvester-lb-vm-controller",
        on: VM,
        cleared_by: "harvester-load-balancer",
        skipped: Some("the load balancer's deletion of the guest cluster's LoadBalancers in the VM's namespace (guest-cluster VMs only): delete them by hand if the guest cluster is gone"),
    },
    KnownFinalizer {
        name: "wrangler.cattle.io/virtual-machine-deletion",
        on: VMI,
        cleared_by: "harvester pcidevices add-on",
        skipped: Some("the pcidevices add-on's release of PCI passthrough/vGPU devices allocated to the VMI: check the VM's device annotations"),
    },
    KnownFinalizer {
        name: "harvesterhci.io/VMController.UnsetOwnerOfPVCs",
        on: BOTH,
        cleared_by: "harvester (<= 1.3, deprecated)",
        skipped: Some("Harvester's removal of the VM as owner of its PVCs (deprecated finalizer)"),
    },
    KnownFinalizer {
        name: "wrangler.cattle.io/VMController.UnsetOwnerOfPVCs",
        on: BOTH,
        cleared_by: "harvester (<= 1.3, deprecated)",
        skipped: Some("Harvester's removal of the VM as owner of its PVCs (deprecated finalizer)"),
    },
    KnownFinalizer {
        name: "wrangler.cattle.io/VMIController.UnsetOwnerOfPVCs",
        on: BOTH,
        cleared_by: "harvester (<= 1.3, deprecated)",
        skipped: Some("Harvester's removal of the VMI as owner of its PVCs (deprecated finalizer)"),
    },
];

/// How vmrecover treats one finalizer on one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalizerClass {
    /// Known on this kind: removable as the last ladder step.
    Known(&'static KnownFinalizer),
    /// Unknown, but the operator named it with `--also-finalizer`.
    OperatorNamed,
    /// Unknown: reported, kept.
    Unknown,
}

impl PartialEq for KnownFinalizer {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for KnownFinalizer {}

/// Classifies `name` on an object of `kind`, given the operator's extra names.
pub fn classify(name: &str, kind: ObjectKind, also: &[String]) -> FinalizerClass {
    if let Some(k) = KNOWN_FINALIZERS
        .iter()
        .find(|k| k.name == name && k.on.contains(&kind))
    {
        FinalizerClass::Known(k)
    } else if also.iter().any(|a| a == name) {
        FinalizerClass::OperatorNamed
    } else {
        FinalizerClass::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_vmi_foreground_names_are_known_on_vmis_only() {
        for name in [
            "kubevirt.io/foregroundDeleteVirtualMachine",
            "foregroundDeleteVirtualMachine",
        ] {
            assert!(matches!(
                classify(name, ObjectKind::Vmi, &[]),
                FinalizerClass::Known(_)
            ));
            assert_eq!(classify(name, ObjectKind::Vm, &[]), FinalizerClass::Unknown);
        }
    }

    #[test]
    fn harvester_pvc_cleanup_states_what_it_skips() {
        match classify(
            "wrangler.cattle.io/VMController.CleanupPVCAndSnapshot",
            ObjectKind::Vm,
            &[],
        ) {
            FinalizerClass::Known(k) => assert!(k.skipped.unwrap().contains("PVC")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn load_balancer_finalizers_are_known_on_their_own_kind_only() {
        let vm_lb = "wrangler.cattle.io/harvester-lb-vm-controller";
        let vmi_lb = "wrangler.cattle.io/harvester-lb-vmi-controller";
        match classify(vm_lb, ObjectKind::Vm, &[]) {
            FinalizerClass::Known(k) => {
                assert!(k.skipped.unwrap().contains("LoadBalancers"), "{k:?}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify(vm_lb, ObjectKind::Vmi, &[]),
            FinalizerClass::Unknown
        );
        assert!(matches!(
            classify(vmi_lb, ObjectKind::Vmi, &[]),
            FinalizerClass::Known(_)
        ));
        assert_eq!(
            classify(vmi_lb, ObjectKind::Vm, &[]),
            FinalizerClass::Unknown
        );
    }

    #[test]
    fn unknown_unless_named() {
        let f = "backup.example.com/protect";
        assert_eq!(classify(f, ObjectKind::Vmi, &[]), FinalizerClass::Unknown);
        assert_eq!(
            classify(f, ObjectKind::Vmi, &[f.to_string()]),
            FinalizerClass::OperatorNamed
        );
        // Near misses are not known.
        assert_eq!(
            classify(
                "kubevirt.io/foregroundDeleteVirtualMachineX",
                ObjectKind::Vmi,
                &[]
            ),
            FinalizerClass::Unknown
        );
    }
}
