//! `vmrecover status --all-nodes` on a 50-node simulated site after a power cut, read as an
//! operator would: a real agent on harvester-node-1 publishes its summary, Harvester 1.8's
//! node-down controller taints the nodes that stay down, and the other nodes' agents are
//! represented by the summaries they would have written (fresh, stale, paused, blocked) or
//! by none. Set `VMRECOVER_SITE_TABLE=FILE` to keep the table (the README shows it).

use std::time::Duration;

use crate::e2e_support::{Env, ACTING_AGENT, NODE};
use harvester_sim::SettingsPatch;
use serde_json::{json, Value};
use vmrecover::cluster::{summary_name, BlockedVm, NodeSummary, LABEL_SUMMARY, SUMMARY_KEY};

const NS: &str = "harvester-system";

fn node(name: &str, ready: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": ready,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    })
}

fn summary(node: &str, age: Duration, f: impl FnOnce(&mut NodeSummary)) -> Value {
    let mut s = NodeSummary {
        node: node.into(),
        verdict: "unclean".into(),
        phase: "boot_window".into(),
        acting: true,
        paused: None,
        refused_by: None,
        counts: [("healthy".to_string(), 6)].into_iter().collect(),
        blocked: vec![],
        blocked_total: 0,
        last_run: None,
        readiness: None,
        power_cuts: None,
        updated: jiff::Timestamp::now() - jiff::SignedDuration::try_from(age).unwrap_or_default(),
    };
    f(&mut s);
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": summary_name(node), "namespace": NS, "labels": {LABEL_SUMMARY: "true"}},
        "data": {SUMMARY_KEY: serde_json::to_string(&s).unwrap_or_default()},
    })
}

fn row<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|r| r["node"] == name))
        .unwrap_or_else(|| panic!("no row for {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_after_a_power_cut() {
    let env = Env::power_loss().await;
    env.sim.update_settings(&SettingsPatch {
        release: Some("1.8".into()),
        node_down_controller: Some(true),
        node_down_interval_ms: Some(20),
        ..SettingsPatch::default()
    });
    env.sim
        .put(
            json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "Setting",
            "metadata": {"name": "vm-force-reset-policy"},
            "value": "{\"enable\":true,\"period\":0,\"vmMigrationTimeout\":0}"}),
        )
        .expect("policy");
    // harvester-node-1..3 come from the power-loss scenario; 4..50 are added here.
    for i in 4..=50 {
        let name = format!("harvester-node-{i}");
        let ready = if (48..=49).contains(&i) {
            "Unknown"
        } else {
            "True"
        };
        env.sim.put(node(&name, ready)).expect("node");
        let fresh = Duration::from_secs(30);
        let cm = match i {
            44 => Some(summary(&name, fresh, |s| {
                s.readiness = Some(vmrecover::cluster::Readiness {
                    at: jiff::Timestamp::now(),
                    failing: vec!["identity.token".into()],
                    warning: vec!["host.boot-records".into()],
                })
            })),
            45 => Some(summary(&name, Duration::from_secs(3600), |_| {})),
            46 => Some(summary(&name, fresh, |s| {
                s.paused = Some("node annotation vmrecover.io/paused=disk shelf swap".into())
            })),
            47 => Some(summary(&name, fresh, |s| {
                s.counts.insert("blocked".into(), 1);
                s.blocked_total = 1;
                s.blocked = vec![BlockedVm {
                    vm: "prod/vm-erp-01".into(),
                    blocker: Some("disk_held".into()),
                    reason: "volume pvc-erp-01 is mounted at /var/lib/kubelet/... on this node"
                        .into(),
                }];
            })),
            48..=50 => None,
            _ => Some(summary(&name, fresh, |_| {})),
        };
        if let Some(cm) = cm {
            env.sim.put(cm).expect("summary");
        }
    }

    // A real agent on harvester-node-1 publishes its own summary.
    let mut agent = env.command(ACTING_AGENT).spawn().expect("start the agent");
    let name = summary_name(NODE);
    let mut published = None;
    for _ in 0..1500 {
        published = env.sim.get("v1", "ConfigMap", NS, &name).filter(|cm| {
            // After its run the agent decides again: nothing left to recover, one VM blocked.
            cm["data"][SUMMARY_KEY]
                .as_str()
                .and_then(|t| serde_json::from_str::<NodeSummary>(t).ok())
                .is_some_and(|s| s.last_run.is_some() && !s.counts.contains_key("recover"))
        });
        if published.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = agent.start_kill();
    let out = agent.wait_with_output().await.expect("agent output");
    assert!(
        published.is_some(),
        "the agent never published its summary after a run: {:?}\n{}",
        env.sim.get("v1", "ConfigMap", NS, &name),
        String::from_utf8_lossy(&out.stderr)
    );
    // The nodes that stayed down got Harvester's taints meanwhile.
    for _ in 0..250 {
        let tainted = env
            .sim
            .get("v1", "Node", "", "harvester-node-49")
            .is_some_and(|n| n.to_string().contains("node.kubernetes.io/out-of-service"));
        if tainted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let table = env.run(&["status", "--all-nodes"]).await;
    assert_eq!(table.code, 3, "nodes need a person: {}", table.all());
    if let Ok(path) = std::env::var("VMRECOVER_SITE_TABLE") {
        std::fs::write(path, &table.stdout).expect("write the table");
    }
    eprintln!("{}", table.stdout);
    let json_run = env
        .run(&["status", "--all-nodes", "--output", "json"])
        .await;
    let report = json_run.json();
    assert_eq!(report["nodes"].as_array().map(Vec::len), Some(50));

    let n1 = row(&report, NODE);
    assert_eq!(n1["summary"]["node"], NODE, "{n1:#}");
    assert!(n1["summary"]["blocked"]
        .as_array()
        .is_some_and(|b| b.iter().any(|v| v["vm"] == "default/vm-custom-01")));
    assert!(n1["next"].as_str().is_some_and(|n| n.contains("blocked")));

    // The agent's readiness checks: a check in fail makes the node need a person.
    let not_ready = row(&report, "harvester-node-44")["next"]
        .as_str()
        .unwrap_or("");
    assert!(
        not_ready.contains("not ready") && not_ready.contains("identity.token"),
        "{not_ready}"
    );
    let stale = row(&report, "harvester-node-45");
    assert_eq!(stale["stale"], true);
    assert!(stale["next"].as_str().is_some_and(|n| n.contains("stale")));
    assert!(row(&report, "harvester-node-46")["next"]
        .as_str()
        .is_some_and(|n| n.starts_with("paused")));
    let down = row(&report, "harvester-node-49");
    assert_eq!(down["ready"], "Unknown");
    assert_eq!(down["out_of_service"], true, "{down:#}");
    assert_eq!(down["summary"], Value::Null);
    assert!(row(&report, "harvester-node-50")["next"]
        .as_str()
        .is_some_and(|n| n.contains("no vmrecover agent")));
    assert_eq!(
        row(&report, "harvester-node-10")["next"],
        "nothing to do",
        "a healthy node"
    );
    // The table says the same in lines a person reads.
    assert!(
        table.stdout.contains("prod/vm-erp-01 [disk_held]"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .contains("50 node(s): 45 with an agent reporting, 3 down"),
        "{}",
        table.stdout
    );
}
