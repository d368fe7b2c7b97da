//! Power-cut history (issue 26): the boot records' unclean boots shown by `status` and, from
//! the agent, as metrics and in the node summary `status --all-nodes` lists.

use std::time::Duration;

use crate::e2e_support::{Env, ACTING_AGENT, NODE};
use harvester_sim::node::{BOOT_ID, MACHINE_ID};
use serde_json::json;
use vmrecover::cluster::{summary_name, NodeSummary, SUMMARY_KEY};

/// Boot records: three unclean boots (two of them in the last 30 days), a clean one, and
/// this boot running.
fn write_records(env: &Env) {
    let now = jiff::Timestamp::now();
    let ago = |days: i64| (now - jiff::SignedDuration::from_hours(24 * days)).to_string();
    let boot = |id: &str, days: i64, stopped: bool| {
        json!({"boot_id": id, "machine_id": MACHINE_ID, "boot_time": ago(days),
            "started_at": ago(days), "stopped_at": if stopped { json!(ago(days - 1)) } else { json!(null) }})
    };
    let records = json!({"format": "vmrecover-boot-records", "version": 1, "boots": [
        boot("a0000000000000000000000000000001", 90, false),
        boot("a0000000000000000000000000000002", 60, true),
        boot("a0000000000000000000000000000003", 20, false),
        boot("a0000000000000000000000000000004", 10, false),
        {"boot_id": BOOT_ID.replace('-', ""), "machine_id": MACHINE_ID, "boot_time": ago(1), "started_at": ago(1)},
    ]});
    std::fs::write(
        env.state_path("boot-records.json"),
        serde_json::to_vec(&records).expect("json"),
    )
    .expect("write the records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclean_boots_are_counted_in_status_and_the_site_view() {
    let env = Env::power_loss().await;
    write_records(&env);
    let status = env.run(&["status"]).await;
    assert!(
        status.stdout.contains(
            "power:     2 unclean boot(s) in the last 30 days, 3 recorded, last came back "
        ),
        "{}",
        status.all()
    );
    assert!(status.stdout.contains("check its power supply and UPS"));

    let mut agent = env.command(ACTING_AGENT).spawn().expect("start the agent");
    let name = summary_name(NODE);
    let mut cuts = None;
    for _ in 0..1500 {
        cuts = env
            .sim
            .get("v1", "ConfigMap", "harvester-system", &name)
            .and_then(|cm| {
                let s: NodeSummary =
                    serde_json::from_str(cm["data"][SUMMARY_KEY].as_str()?).ok()?;
                s.power_cuts
            });
        if cuts.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = agent.start_kill();
    let out = agent.wait_with_output().await.expect("agent output");
    let cuts = cuts.unwrap_or_else(|| {
        panic!(
            "no power cuts in the summary:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!((cuts.total, cuts.last_30_days), (3, 2), "{cuts:?}");
    let site = env.run(&["status", "--all-nodes"]).await;
    assert!(
        site.stdout
            .contains("    power: 2 unclean boot(s) in the last 30 days, 3 recorded"),
        "{}",
        site.all()
    );
    assert!(
        site.stdout.contains("1 lost power in the last 30 days"),
        "{}",
        site.all()
    );
}
