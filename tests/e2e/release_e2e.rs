//! The recovery end to end on every Harvester release the simulator knows (1.4 … 1.8, each
//! on its real Kubernetes version: 1.4.0 on 1.29.9 … 1.8.0 on 1.35.2): the
//! power-loss story generated in each release's shapes (its KubeVirt's foreground finalizer
//! name, Harvester's VMI/VM finalizers, the migration label old KubeVirt leaves behind), the
//! built binary run as an operator would, virt-controller dead.

use std::collections::BTreeSet;

use crate::e2e_support::{Allowed, Env, DRY_RUN, RUN};
use harvester_sim::profiles::{ReleaseProfile, LEGACY_VMI_FOREGROUND_FINALIZER, PROFILES};
use serde_json::Value;

/// The VMs the power-loss story leaves stuck on harvester-node-1 that vmrecover recovers
/// (vm-custom-01 keeps an unknown finalizer; vm-app-02 is only Stopping).
const RECOVERED: &[(&str, &str)] = &[
    ("default", "vm-web-01"),
    ("default", "vm-db-01"),
    ("prod", "vm-legacy-01"),
    ("default", "vm-live-01"),
];

fn finalizers(o: &Value) -> BTreeSet<String> {
    o["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(String::from))
        .collect()
}

fn vmi(env: &Env, ns: &str, name: &str) -> Option<Value> {
    env.sim
        .get("kubevirt.io/v1", "VirtualMachineInstance", ns, name)
}

fn vm(env: &Env, ns: &str, name: &str) -> Option<Value> {
    env.sim.get("kubevirt.io/v1", "VirtualMachine", ns, name)
}

/// Before the run: the generated cluster has the release's shapes.
fn check_shapes(env: &Env, p: &ReleaseProfile) {
    let web = vmi(env, "default", "vm-web-01").expect("vm-web-01's VMI");
    let f = finalizers(&web);
    assert!(
        f.contains(p.vmi_foreground_finalizer),
        "{}: {f:?}",
        p.harvester
    );
    for h in p.harvester_vmi_finalizers {
        assert!(f.contains(*h), "{}: {f:?}", p.harvester);
    }
    let legacy = finalizers(&vmi(env, "prod", "vm-legacy-01").expect("legacy VMI"));
    assert!(
        legacy.contains(LEGACY_VMI_FOREGROUND_FINALIZER),
        "{legacy:?}"
    );
    let vm_f = finalizers(&vm(env, "default", "vm-web-01").expect("vm-web-01"));
    for h in p.harvester_vm_finalizers {
        assert!(vm_f.contains(*h), "{}: {vm_f:?}", p.harvester);
    }
    let web3 = vmi(env, "default", "vm-web-03").expect("vm-web-03's VMI");
    let label = web3["metadata"]["labels"]["kubevirt.io/migrationTargetNodeName"].as_str();
    assert_eq!(
        label.is_some(),
        !p.removes_migration_target_label,
        "{}: {web3}",
        p.harvester
    );
}

async fn recover_one_release(p: &ReleaseProfile) {
    let env = Env::release(p.harvester).await;
    check_shapes(&env, p);
    // At the release's real Kubernetes version (harvester-installer scripts/version-rke2):
    // 1.4.0 runs 1.29, the oldest and hardest.
    let version = env.sim.settings().version_info();
    assert_eq!(
        version["gitVersion"],
        format!("v{}", p.kube_version),
        "{}",
        p.harvester
    );
    let web3_before = vmi(&env, "default", "vm-web-03").expect("vm-web-03")["metadata"]
        ["resourceVersion"]
        .clone();

    let plan = env.run(DRY_RUN).await;
    assert_eq!(plan.code, 3, "{}: {}", p.harvester, plan.all());
    assert!(
        env.sim.mutating_requests().is_empty(),
        "{}: the dry-run wrote",
        p.harvester
    );
    let allowed = Allowed::from_plan(&plan.json());

    let ran = env.run(RUN).await;
    assert_eq!(ran.code, 3, "{}: {}", p.harvester, ran.all());
    assert_eq!(
        allowed.violations(&env.sim),
        Vec::<String>::new(),
        "{}",
        p.harvester
    );
    for (ns, name) in RECOVERED {
        assert!(
            vmi(&env, ns, name).is_none(),
            "{}: {ns}/{name} VMI left",
            p.harvester
        );
        assert!(
            vm(&env, ns, name).is_none(),
            "{}: {ns}/{name} VM left",
            p.harvester
        );
    }
    // The release's finalizers were the ones cleared: every one the plan named came off.
    let cleared: BTreeSet<String> = allowed.finalizers.values().flatten().cloned().collect();
    assert!(
        cleared.contains(p.vmi_foreground_finalizer),
        "{}: {cleared:?}",
        p.harvester
    );
    for h in p
        .harvester_vmi_finalizers
        .iter()
        .chain(p.harvester_vm_finalizers)
    {
        assert!(cleared.contains(*h), "{}: {cleared:?}", p.harvester);
    }
    // The unknown finalizer stays, with everything else on that VMI.
    let custom = vmi(&env, "default", "vm-custom-01").expect("vm-custom-01 stays");
    assert!(finalizers(&custom).contains("backup.example.com/protect"));
    // A VMI on another node is never touched, whatever a stale migration label names.
    assert_eq!(
        vmi(&env, "default", "vm-web-03").expect("vm-web-03")["metadata"]["resourceVersion"],
        web3_before,
        "{}",
        p.harvester
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_release_recovers_its_power_loss() {
    for p in PROFILES {
        recover_one_release(p).await;
    }
}
