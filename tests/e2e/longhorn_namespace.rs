//! Longhorn's namespace is the operator's (issue 22 item 5): `--longhorn-namespace` /
//! `VMRECOVER_LONGHORN_NAMESPACE` (the chart passes its `longhornNamespace`) sends every
//! Longhorn read there. The power-loss cluster with Longhorn installed in `storage-lh`: with
//! the setting the plan sees the volumes' Longhorn state and every Longhorn request goes to
//! `storage-lh`; without it vmrecover reads an empty `longhorn-system`.

use crate::e2e_support::{Env, DRY_RUN};
use harvester_sim::{shipped_scenario, Sim, SimConfig};

const LH_NS: &str = "storage-lh";
const LONGHORN_EVIDENCE: &str =
    "longhorn volume/pvc-44444444-0000-4000-8000-000000000001 (attached) still names this node";

async fn env(vars: &[(&str, &str)]) -> Env {
    let text = std::fs::read_to_string(shipped_scenario("power-loss.yaml"))
        .expect("power-loss.yaml")
        .replace("longhorn-system", LH_NS);
    let sim = Sim::start(SimConfig::default().scenario_text(text))
        .await
        .expect("start harvester-sim");
    sim.set_virt_controller(false);
    Env {
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Env::on(sim)
    }
}

fn longhorn_paths(env: &Env) -> Vec<String> {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/apis/longhorn.io/"))
        .map(|r| r.path.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_longhorn_read_goes_to_the_configured_namespace() {
    for how in ["flag", "env"] {
        let env = match how {
            "flag" => env(&[]).await,
            _ => env(&[("VMRECOVER_LONGHORN_NAMESPACE", LH_NS)]).await,
        };
        let mut args = DRY_RUN.to_vec();
        if how == "flag" {
            args = [&["--longhorn-namespace", LH_NS][..], &args].concat();
        }
        let ran = env.run(&args).await;
        assert!(
            ran.stdout.contains(LONGHORN_EVIDENCE),
            "{how}: {}",
            ran.all()
        );
        let paths = longhorn_paths(&env);
        assert!(!paths.is_empty(), "{how}: no Longhorn read at all");
        for p in &paths {
            assert!(p.contains(&format!("/namespaces/{LH_NS}/")), "{how}: {p}");
        }
    }
    // Without it: longhorn-system, where this cluster has nothing.
    let env = env(&[]).await;
    let ran = env.run(DRY_RUN).await;
    assert!(!ran.stdout.contains(LONGHORN_EVIDENCE), "{}", ran.all());
    assert!(longhorn_paths(&env)
        .iter()
        .all(|p| p.contains("/namespaces/longhorn-system/")));
}

/// The chart's `longhornNamespace` moves the Role that grants the reads and tells the agent.
#[test]
fn the_chart_passes_its_longhorn_namespace_to_the_agent() {
    let Some(py) = crate::chart_support::helm_python() else {
        return;
    };
    let yaml = crate::chart_support::template(
        &py,
        "harvester-system",
        &[r#"{"longhornNamespace":"storage-lh"}"#],
    );
    let objs = crate::chart_support::objects(&yaml);
    let ds = crate::chart_support::find(&objs, "DaemonSet", "vmrecover");
    let env = ds["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let value = env
        .iter()
        .find(|e| e["name"] == "VMRECOVER_LONGHORN_NAMESPACE")
        .map(|e| e["value"].clone());
    assert_eq!(value, Some(serde_json::json!(LH_NS)), "{env:?}");
    assert!(objs
        .iter()
        .any(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == LH_NS));
}
