//! Behaviour per release, as data: which KubeVirt a Harvester release ships and what its
//! controllers do differently. The simulated controllers read the profile of the configured
//! release (setting `release`, default [`DEFAULT_RELEASE`]) instead of testing versions in
//! code, so a new release is a new row here.
//!
//! Sources (read at the tags named):
//! - Harvester → KubeVirt: Harvester's `go.mod` (`kubevirt.io/kubevirt`) of each release.
//! - VMI foreground finalizer: kubevirt `staging/src/kubevirt.io/api/core/v1/types.go`
//!   `VirtualMachineInstanceFinalizer` — `foregroundDeleteVirtualMachine` at v1.3.0, v1.4.0,
//!   v1.5.0 and v1.6.0; `kubevirt.io/foregroundDeleteVirtualMachine` at v1.7.0, which also keeps
//!   `DeprecatedVirtualMachineInstanceFinalizer = "foregroundDeleteVirtualMachine"` and removes
//!   both (`pkg/virt-controller/watch/vmi/lifecycle.go` v1.7.0).
//! - Migration-target label: kubevirt v1.6.0 `pkg/virt-handler/migration-target.go` deletes
//!   `kubevirt.io/migrationTargetNodeName` after a migration; at v1.5.0 nothing removes it
//!   (only `pkg/virt-controller/watch/migration/migration.go` sets it).
//! - Admission webhooks: see [`crate::admission::webhooks`] (KubeVirt's
//!   `webhooks.go` and Harvester's `pkg/webhook` at each tag).

use crate::node_down_style::NodeDownStyle;
use crate::webhooks::{self, Webhook};

/// The finalizer virt-controller's VM controller puts on VMs and VMIs (every release).
pub const VM_CONTROLLER_FINALIZER: &str = "kubevirt.io/virtualMachineControllerFinalize";

/// The VMI foreground finalizer of KubeVirt 1.3–1.6 (deprecated in 1.7, still removed there).
pub const LEGACY_VMI_FOREGROUND_FINALIZER: &str = "foregroundDeleteVirtualMachine";

/// The VMI foreground finalizer of KubeVirt ≥ 1.7.
pub const VMI_FOREGROUND_FINALIZER: &str = "kubevirt.io/foregroundDeleteVirtualMachine";

/// The release simulated when none is configured (the newest row: its virt-controller
/// removes both foreground finalizer names).
pub const DEFAULT_RELEASE: &str = "1.8";

/// What one Harvester release (and the KubeVirt it ships) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseProfile {
    /// Harvester minor release, e.g. `1.6`.
    pub harvester: &'static str,
    /// The KubeVirt minor release it ships, e.g. `1.5`.
    pub kubevirt: &'static str,
    /// The foreground finalizer virt-api puts on new VMIs.
    pub vmi_foreground_finalizer: &'static str,
    /// Every VMI finalizer virt-controller removes once no pod of the VMI is left (the
    /// current foreground name, the deprecated one it still knows, and the VM controller's).
    pub vmi_finalizers_removed: &'static [&'static str],
    /// Whether virt-handler removes `kubevirt.io/migrationTargetNodeName` after a migration.
    pub removes_migration_target_label: bool,
    /// The admission webhooks virt-api and Harvester register.
    pub webhooks: &'static [Webhook],
    /// The patch release whose object shapes the generated scenarios follow (`osImage`).
    pub harvester_version: &'static str,
    /// The RKE2 Kubernetes version it ships (`/version`, the kubelet's `nodeInfo`).
    pub kube_version: &'static str,
    /// The Longhorn release it ships.
    pub longhorn: &'static str,
    /// The virt-launcher image KubeVirt reports in `status.launcherContainerImageVersion`.
    pub launcher_image: &'static str,
    /// Finalizers Harvester's controllers put on every VMI, in the order they appear.
    pub harvester_vmi_finalizers: &'static [&'static str],
    /// Finalizers Harvester's controllers put on every VM, in the order they appear.
    pub harvester_vm_finalizers: &'static [&'static str],
    /// What Harvester's node-down controller does (see [`crate::controllers::node_down`]).
    pub node_down: NodeDownStyle,
    /// Which occupied-PVC check Harvester's VM validator makes
    /// ([`crate::admission::harvester_vm`]).
    pub occupied_pvcs: OccupiedPvcs,
    /// Whether Harvester's VM mutator acts on an UPDATE of a VM being deleted
    /// ([`crate::admission::harvester_vm_mutator`]): v1.4.0–v1.4.2 and v1.5.0; from v1.4.3
    /// and v1.5.1 (commit 8f106a4f6) it returns early.
    pub vm_mutator_on_deleting: bool,
}

/// The occupied-PVC check of Harvester's VM validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OccupiedPvcs {
    /// v1.4.0 … v1.6.1: any other VM of the namespace listing the PVC refuses it.
    AnyOtherVm,
    /// v1.7.0 on: another VM's non-shareable disk, unless a non-Longhorn RWX PVC.
    NonShareable,
}

/// Harvester's PVC clean-up finalizer on VMs (`pkg/controller/master/virtualmachine`,
/// every release here).
pub const CLEANUP_PVC_FINALIZER: &str = "wrangler.cattle.io/VMController.CleanupPVCAndSnapshot";

/// Harvester's MAC back-fill finalizer on VMIs (Harvester ≥ 1.7: `VMNetworkController`
/// registers `BackfillObservedNetworkMacAddress` as an OnRemove handler on VMIs).
pub const BACKFILL_MAC_FINALIZER: &str =
    "wrangler.cattle.io/VMController.BackfillObservedNetworkMacAddress";

/// The load balancer's VMI finalizer (harvester/load-balancer-harvester
/// `pkg/controller/vmi/controller.go`: an OnRemove handler, so wrangler puts it on every VMI).
pub const LB_VMI_FINALIZER: &str = "wrangler.cattle.io/harvester-lb-vmi-controller";

/// The load balancer's VM finalizer (harvester/load-balancer-harvester
/// `pkg/controller/vm/controller.go`: an OnRemove handler on every VM, which deletes a guest
/// cluster's LoadBalancers).
pub const LB_VM_FINALIZER: &str = "wrangler.cattle.io/harvester-lb-vm-controller";

const VMI_LB_ONLY: &[&str] = &[LB_VMI_FINALIZER];
const VMI_FROM_HARVESTER_1_7: &[&str] = &[BACKFILL_MAC_FINALIZER, LB_VMI_FINALIZER];
const VM_UP_TO_1_5: &[&str] = &[CLEANUP_PVC_FINALIZER];
const VM_FROM_1_6: &[&str] = &[LB_VM_FINALIZER, CLEANUP_PVC_FINALIZER];

const UP_TO_1_6: &[&str] = &[LEGACY_VMI_FOREGROUND_FINALIZER, VM_CONTROLLER_FINALIZER];
const FROM_1_7: &[&str] = &[
    VMI_FOREGROUND_FINALIZER,
    LEGACY_VMI_FOREGROUND_FINALIZER,
    VM_CONTROLLER_FINALIZER,
];

/// Every release the simulator knows, oldest first.
pub static PROFILES: &[ReleaseProfile] = &[
    ReleaseProfile {
        harvester: "1.4",
        kubevirt: "1.3",
        vmi_foreground_finalizer: LEGACY_VMI_FOREGROUND_FINALIZER,
        vmi_finalizers_removed: UP_TO_1_6,
        removes_migration_target_label: false,
        webhooks: webhooks::HARVESTER_1_4,
        harvester_version: "v1.4.0",
        kube_version: "1.29.9+rke2r1",
        longhorn: "v1.7.3",
        launcher_image: "registry.suse.com/suse/sles/15.6/virt-launcher:1.3.1-150600.5.9.1",
        harvester_vmi_finalizers: VMI_LB_ONLY,
        harvester_vm_finalizers: VM_UP_TO_1_5,
        node_down: NodeDownStyle::ForceDeletePods,
        occupied_pvcs: OccupiedPvcs::AnyOtherVm,
        vm_mutator_on_deleting: true,
    },
    // Harvester 1.4.3: the same KubeVirt, on Kubernetes 1.31 (the 1.4 line moved RKE2 forward
    // in its patch releases: v1.4.1 1.30.7, v1.4.2 1.31.4, v1.4.3 1.31.7).
    ReleaseProfile {
        harvester: "1.4.3",
        kubevirt: "1.3",
        vmi_foreground_finalizer: LEGACY_VMI_FOREGROUND_FINALIZER,
        vmi_finalizers_removed: UP_TO_1_6,
        removes_migration_target_label: false,
        webhooks: webhooks::HARVESTER_1_4,
        harvester_version: "v1.4.3",
        kube_version: "1.31.7+rke2r1",
        longhorn: "v1.7.3",
        launcher_image: "registry.suse.com/suse/sles/15.6/virt-launcher:1.3.1-150600.5.9.1",
        harvester_vmi_finalizers: VMI_LB_ONLY,
        harvester_vm_finalizers: VM_UP_TO_1_5,
        node_down: NodeDownStyle::ForceDeletePods,
        occupied_pvcs: OccupiedPvcs::AnyOtherVm,
        vm_mutator_on_deleting: false,
    },
    ReleaseProfile {
        harvester: "1.5",
        kubevirt: "1.4",
        vmi_foreground_finalizer: LEGACY_VMI_FOREGROUND_FINALIZER,
        vmi_finalizers_removed: UP_TO_1_6,
        removes_migration_target_label: false,
        webhooks: webhooks::HARVESTER_1_5,
        harvester_version: "v1.5.1",
        kube_version: "1.32.4+rke2r1",
        longhorn: "v1.8.2",
        launcher_image: "registry.suse.com/suse/sles/15.6/virt-launcher:1.4.0-150600.5.15.1",
        harvester_vmi_finalizers: VMI_LB_ONLY,
        harvester_vm_finalizers: VM_UP_TO_1_5,
        node_down: NodeDownStyle::ForceDeletePods,
        occupied_pvcs: OccupiedPvcs::AnyOtherVm,
        vm_mutator_on_deleting: false,
    },
    ReleaseProfile {
        harvester: "1.6",
        kubevirt: "1.5",
        vmi_foreground_finalizer: LEGACY_VMI_FOREGROUND_FINALIZER,
        vmi_finalizers_removed: UP_TO_1_6,
        removes_migration_target_label: false,
        webhooks: webhooks::HARVESTER_1_6,
        harvester_version: "v1.6.1",
        kube_version: "1.33.5+rke2r1",
        longhorn: "v1.9.1",
        launcher_image: "registry.suse.com/suse/sles/15.7/virt-launcher:1.5.2-150700.3.5.1",
        harvester_vmi_finalizers: VMI_LB_ONLY,
        harvester_vm_finalizers: VM_FROM_1_6,
        node_down: NodeDownStyle::ForceDeletePods,
        occupied_pvcs: OccupiedPvcs::AnyOtherVm,
        vm_mutator_on_deleting: false,
    },
    ReleaseProfile {
        harvester: "1.7",
        kubevirt: "1.6",
        vmi_foreground_finalizer: LEGACY_VMI_FOREGROUND_FINALIZER,
        vmi_finalizers_removed: UP_TO_1_6,
        removes_migration_target_label: true,
        webhooks: webhooks::HARVESTER_1_7,
        harvester_version: "v1.7.0",
        kube_version: "1.34.2+rke2r1",
        longhorn: "v1.9.2",
        launcher_image: "registry.suse.com/suse/sles/15.7/virt-launcher:1.6.2-150700.3.11.1",
        harvester_vmi_finalizers: VMI_FROM_HARVESTER_1_7,
        harvester_vm_finalizers: VM_FROM_1_6,
        node_down: NodeDownStyle::Taints,
        occupied_pvcs: OccupiedPvcs::NonShareable,
        vm_mutator_on_deleting: false,
    },
    ReleaseProfile {
        harvester: "1.8",
        kubevirt: "1.7",
        vmi_foreground_finalizer: VMI_FOREGROUND_FINALIZER,
        vmi_finalizers_removed: FROM_1_7,
        removes_migration_target_label: true,
        webhooks: webhooks::HARVESTER_1_8,
        harvester_version: "v1.8.0",
        // Harvester's go.mod on master (commit 0020ce03, the 1.8 line): kubevirt v1.7.0,
        // longhorn-manager v1.10.0; its k8s.io/kubernetes v1.33.7 is the library, not the
        // cluster: harvester-installer v1.8.0 `scripts/version-rke2` ships RKE2 v1.35.2.
        kube_version: "1.35.2+rke2r1",
        longhorn: "v1.10.0",
        launcher_image: "registry.suse.com/suse/sles/15.7/virt-launcher:1.7.0-150700.3.17.1",
        harvester_vmi_finalizers: VMI_FROM_HARVESTER_1_7,
        harvester_vm_finalizers: VM_FROM_1_6,
        node_down: NodeDownStyle::Taints,
        occupied_pvcs: OccupiedPvcs::NonShareable,
        vm_mutator_on_deleting: false,
    },
];

/// The profile of a Harvester release: a row's name (`1.4`, `1.4.3`; a leading `v` is
/// allowed) or the exact patch release a row simulates (`1.4.0`, `v1.6.1`). Another patch
/// release is unknown: its Kubernetes version may differ from the row's (the 1.4 line ran
/// 1.29, 1.30 and 1.31), so guessing would serve the wrong API.
pub fn profile(harvester: &str) -> Option<&'static ReleaseProfile> {
    let v = harvester.trim().trim_start_matches('v');
    PROFILES.iter().find(|p| p.harvester == v).or_else(|| {
        PROFILES
            .iter()
            .find(|p| p.harvester_version.trim_start_matches('v') == v)
    })
}

/// The names [`profile`] knows, for an error message.
pub fn known_names() -> String {
    PROFILES
        .iter()
        .map(|p| format!("{} ({})", p.harvester, p.harvester_version))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The profile of a release, or the default one when the name is unknown.
pub fn profile_or_default(harvester: &str) -> &'static ReleaseProfile {
    profile(harvester)
        .or_else(|| profile(DEFAULT_RELEASE))
        .unwrap_or(&PROFILES[PROFILES.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_release_maps_to_its_kubevirt() {
        let pairs: Vec<(&str, &str)> = PROFILES.iter().map(|p| (p.harvester, p.kubevirt)).collect();
        assert_eq!(
            pairs,
            [
                ("1.4", "1.3"),
                ("1.4.3", "1.3"),
                ("1.5", "1.4"),
                ("1.6", "1.5"),
                ("1.7", "1.6"),
                ("1.8", "1.7")
            ]
        );
    }

    #[test]
    fn finalizer_name_changes_with_kubevirt_1_7() {
        for p in PROFILES {
            let new_name = p.kubevirt == "1.7";
            assert_eq!(
                p.vmi_foreground_finalizer == VMI_FOREGROUND_FINALIZER,
                new_name,
                "{p:?}"
            );
            // Whatever name it puts on, it removes; 1.7 also removes the deprecated one.
            assert!(p
                .vmi_finalizers_removed
                .contains(&p.vmi_foreground_finalizer));
            assert!(p
                .vmi_finalizers_removed
                .contains(&LEGACY_VMI_FOREGROUND_FINALIZER));
            assert!(p.vmi_finalizers_removed.contains(&VM_CONTROLLER_FINALIZER));
        }
    }

    #[test]
    fn migration_label_removed_from_kubevirt_1_6() {
        let removing: Vec<&str> = PROFILES
            .iter()
            .filter(|p| p.removes_migration_target_label)
            .map(|p| p.kubevirt)
            .collect();
        assert_eq!(removing, ["1.6", "1.7"]);
    }

    #[test]
    fn lookup_accepts_patch_versions() {
        assert_eq!(profile("v1.6.1").map(|p| p.kubevirt), Some("1.5"));
        assert_eq!(
            profile("1.4.0").map(|p| p.kube_version),
            Some("1.29.9+rke2r1")
        );
        assert_eq!(
            profile("1.4.3").map(|p| p.kube_version),
            Some("1.31.7+rke2r1")
        );
        // A patch release without a row is unknown, not its minor's row.
        assert_eq!(profile("1.4.1"), None);
        assert_eq!(profile("1.9"), None);
        assert_eq!(profile_or_default("1.9").harvester, DEFAULT_RELEASE);
    }
}
