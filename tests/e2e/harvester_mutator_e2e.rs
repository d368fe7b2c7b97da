//! Harvester's VM mutator on vmrecover's finalizer patch of a deleting VM (issue 22): on
//! Harvester v1.4.0 (and v1.4.1, v1.4.2, v1.5.0) it runs in full there — it looks up the
//! NetworkAttachmentDefinition of every Multus network (a missing one: a denial that
//! failurePolicy Ignore does not cover) and adds a missing `terminationGracePeriodSeconds`,
//! which makes the patch change the spec; from v1.4.3 and v1.5.1 it leaves a deleting VM
//! alone. vmrecover reports a denial once with the server's message and the next step, never
//! as a conflict.

use crate::admission_support::{cluster_at, run_as_agent};
use crate::e2e_support::Env;
use harvester_sim::{shipped_scenario, Sim, SimConfig};
use serde_json::Value;

const VM: &str = "vm-db-01";

async fn env_at(release: &str) -> Env {
    let sim = Sim::start(
        SimConfig::default()
            .release(release)
            .scenario_file(shipped_scenario("power-loss.yaml")),
    )
    .await
    .expect("start harvester-sim");
    sim.set_virt_controller(false);
    Env::on(sim)
}

const RUN: &[&str] = &[
    "run",
    "--yes",
    "--only",
    "default/vm-db-01",
    "--stuck-after",
    "0s",
    "--controller-grace",
    "0s",
    "--output",
    "json",
];

/// Every string in a report.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::Object(o) => o.values().flat_map(strings).collect(),
        _ => vec![],
    }
}

fn vm(sim: &Sim) -> Option<Value> {
    sim.get("kubevirt.io/v1", "VirtualMachine", "default", VM)
}

/// `vm-db-01` as a VM created before Harvester set a grace period on every VM.
fn drop_grace(sim: &Sim) {
    let mut v = vm(sim).expect("vm-db-01");
    if let Some(spec) = v
        .pointer_mut("/spec/template/spec")
        .and_then(Value::as_object_mut)
    {
        spec.remove("terminationGracePeriodSeconds");
    }
    sim.put(v).expect("put vm-db-01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_network_attachment_on_1_4_0_is_reported_with_the_mutators_message() {
    let env = env_at("1.4").await;
    assert!(env.sim.remove(
        "k8s.cni.cncf.io/v1",
        "NetworkAttachmentDefinition",
        "default",
        "vlan10"
    ));
    let ran = env.run(RUN).await;
    assert_eq!(ran.code, 1, "a refused write fails the run: {}", ran.all());
    let said = strings(&ran.json());
    assert!(
        said.iter().any(|s| s.contains(
            "virtualmachines default/vm-db-01: admission webhook mutator.harvesterhci.io denied the change: network-attachment-definitions.k8s.cni.cncf.io \"vlan10\" not found; nothing was changed and it is not retried in this run"
        ) && s.contains("NetworkAttachmentDefinition")),
        "{}",
        ran.all()
    );
    let patches = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/virtualmachines/vm-db-01"))
        .count();
    assert_eq!(patches, 1, "one request, no retry loop");
    assert!(vm(&env.sim).is_some());

    // v1.4.3 and later: the mutator leaves a deleting VM alone.
    for release in ["1.4.3", "1.8"] {
        let env = env_at(release).await;
        assert!(env.sim.remove(
            "k8s.cni.cncf.io/v1",
            "NetworkAttachmentDefinition",
            "default",
            "vlan10"
        ));
        let ran = env.run(RUN).await;
        assert_eq!(ran.code, 0, "{release}: {}", ran.all());
        assert!(vm(&env.sim).is_none(), "{release}: {}", ran.all());
    }
}

/// On v1.4.0 (Kubernetes 1.29: no admission policy) the grace period the mutator adds goes
/// through with the finalizers and the VM is recovered. On Kubernetes 1.30+ with the same
/// mutator (Harvester v1.4.1, v1.4.2, v1.5.0) vmrecover's own policy refuses the patch the
/// mutator widened: reported with the policy's message and where the change came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_period_added_by_the_mutator_is_recovered_on_1_29_and_refused_by_the_policy_on_1_30(
) {
    let env = env_at("1.4").await;
    drop_grace(&env.sim);
    let ran = env.run(RUN).await;
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(vm(&env.sim).is_none(), "{}", ran.all());

    // Harvester v1.4.1's Kubernetes, the chart's policy, the agent's pod-bound token.
    let sim = cluster_at(Some("1.4"), Some("1.30.7+rke2r1"), true, true).await;
    drop_grace(&sim);
    let ran = run_as_agent(&sim, false).await;
    let said = strings(&ran.report);
    assert!(
        said.iter().any(|s| s.contains(
            "virtualmachines default/vm-db-01: the API server's admission policy vmrecover-node-restriction refused the change: vmrecover may only change metadata.finalizers"
        ) && s.contains("a mutating admission webhook added the rest")),
        "{}\n{}",
        ran.report,
        ran.stderr
    );
    assert!(vm(&sim).is_some());
    // The VMs whose spec the mutator leaves as it is are recovered under the same policy.
    assert!(
        !ran.vms_left.contains("default/vm-web-01"),
        "{}",
        ran.stderr
    );
}
