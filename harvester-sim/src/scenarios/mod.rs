//! Scenarios per Harvester release, generated from one story: [`for_release`] rewrites the
//! objects of a scenario (as written for the newest release, e.g. `power-loss.yaml`) into the
//! shapes a given release produces, driven only by the data in [`crate::profiles`]. The story
//! (which VM is stuck how, its uids, disks and nodes) stays; what a release decides changes:
//!
//! - finalizers ([`finalizers`]): the VMI foreground name of the release's KubeVirt (a VMI
//!   already carrying the pre-1.7 name lived through the upgrade and keeps it), Harvester's
//!   VMI and VM finalizers of that release (load balancer, MAC back-fill, PVC clean-up);
//! - KubeVirt's status and labels ([`kubevirt`]): the launcher image, the migration-target
//!   label KubeVirt ≤ 1.5 leaves behind after a finished migration;
//! - versions ([`versions`]): the nodes' `osImage`, kubelet version, `/version`, Longhorn's
//!   engine image;
//! - the objects that name the versions ([`version_objects`]): the KubeVirt CR, Harvester's
//!   `server-version` and Longhorn's `current-longhorn-version` settings.
//!
//! `harvester-sim --release 1.5 --scenario power-loss.yaml` and
//! [`crate::SimConfig::release`] load a scenario through it.

pub mod finalizers;
pub mod kubevirt;
pub mod version_objects;
pub mod versions;

use serde_json::Value;

use crate::profiles::ReleaseProfile;
use crate::scenario::Scenario;

/// Rewrites `sc` into the shapes of release `p` and makes the simulator run that release.
pub fn for_release(sc: &mut Scenario, p: &ReleaseProfile) {
    sc.settings.release = Some(p.harvester.to_string());
    sc.settings.kube_version = Some(p.kube_version.to_string());
    for obj in &mut sc.objects {
        rewrite(obj, p);
    }
    version_objects::add_missing(&mut sc.objects, p);
}

/// Rewrites one object into the shapes of release `p`.
pub fn rewrite(obj: &mut Value, p: &ReleaseProfile) {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let api = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match (api.as_str(), kind.as_str()) {
        ("kubevirt.io/v1", "VirtualMachineInstance") => {
            finalizers::vmi(obj, p);
            kubevirt::vmi(obj, p);
        }
        ("kubevirt.io/v1", "VirtualMachine") => finalizers::vm(obj, p),
        ("v1", "Pod") => kubevirt::launcher_pod(obj, p),
        ("v1", "Node") => versions::node(obj, p),
        ("longhorn.io/v1beta2", "Volume") => versions::longhorn_volume(obj, p),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::{profile, PROFILES};

    fn power_loss() -> Scenario {
        let path = crate::shipped_scenario("power-loss.yaml");
        match Scenario::load(&path) {
            Ok(s) => s,
            Err(e) => panic!("{e:#}"),
        }
    }

    fn vmi<'a>(sc: &'a Scenario, name: &str) -> &'a Value {
        sc.objects
            .iter()
            .find(|o| o["kind"] == "VirtualMachineInstance" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no VMI {name}"))
    }

    #[test]
    fn every_release_generates_and_names_itself() {
        for p in PROFILES {
            let mut sc = power_loss();
            for_release(&mut sc, p);
            assert_eq!(sc.settings.release.as_deref(), Some(p.harvester));
            assert_eq!(sc.settings.kube_version.as_deref(), Some(p.kube_version));
            let node = sc.objects.iter().find(|o| o["kind"] == "Node");
            assert_eq!(
                node.and_then(|n| n.pointer("/status/nodeInfo/osImage")),
                Some(&Value::from(format!("Harvester {}", p.harvester_version)))
            );
        }
    }

    #[test]
    fn the_foreground_finalizer_follows_kubevirt_and_survives_the_upgrade() {
        for p in PROFILES {
            let mut sc = power_loss();
            for_release(&mut sc, p);
            let web = crate::meta::finalizers(vmi(&sc, "vm-web-01"));
            let legacy = crate::meta::finalizers(vmi(&sc, "vm-legacy-01"));
            assert!(
                web.contains(&p.vmi_foreground_finalizer.to_string()),
                "{p:?} {web:?}"
            );
            // vm-legacy-01's VMI predates the KubeVirt 1.7 upgrade: the old name stays.
            assert!(legacy.contains(&"foregroundDeleteVirtualMachine".to_string()));
            assert!(!legacy.contains(&"kubevirt.io/foregroundDeleteVirtualMachine".to_string()));
            for f in p.harvester_vmi_finalizers {
                assert!(web.contains(&f.to_string()), "{p:?} {web:?}");
            }
        }
    }

    #[test]
    fn harvester_1_7_adds_the_mac_backfill_finalizer_and_1_6_the_vm_load_balancer() {
        let has = |release: &str, vmi_name: &str, f: &str| {
            let mut sc = power_loss();
            for_release(&mut sc, profile(release).unwrap_or(&PROFILES[0]));
            crate::meta::finalizers(vmi(&sc, vmi_name)).contains(&f.to_string())
        };
        let backfill = crate::profiles::BACKFILL_MAC_FINALIZER;
        assert!(!has("1.6", "vm-web-01", backfill));
        assert!(has("1.7", "vm-web-01", backfill));
        assert!(has("1.4", "vm-web-01", crate::profiles::LB_VMI_FINALIZER));
    }

    #[test]
    fn old_kubevirt_leaves_the_migration_target_label() {
        for p in PROFILES {
            let mut sc = power_loss();
            for_release(&mut sc, p);
            let label = crate::meta::label(vmi(&sc, "vm-web-03"), kubevirt::MIGRATION_TARGET_LABEL)
                .map(str::to_string);
            if p.removes_migration_target_label {
                assert_eq!(label, None, "{p:?}");
            } else {
                assert_eq!(label.as_deref(), Some("harvester-node-1"), "{p:?}");
            }
        }
    }

    #[test]
    fn generated_vmis_have_the_size_of_real_ones() {
        let mut sc = power_loss();
        for_release(&mut sc, &PROFILES[0]);
        let web = vmi(&sc, "vm-web-01");
        let size = serde_json::to_string(web).map(|t| t.len()).unwrap_or(0);
        assert!(size > 3000, "{size} bytes");
        for field in [
            "conditions",
            "interfaces",
            "volumeStatus",
            "guestOSInfo",
            "memory",
            "currentCPUTopology",
        ] {
            assert!(web["status"].get(field).is_some(), "{field}");
        }
    }
}
