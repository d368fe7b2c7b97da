//! Issue 23, one clock per judgement: a node whose wall clock is off (`faketime`, one
//! process's clock skewed) judges "stuck for --stuck-after" and the node Lease's expiry on
//! the API server's clock (its responses' `Date`), never its own. The simulator, in this
//! test process, keeps the true time.

use std::process::Stdio;
use std::time::Duration;

use crate::e2e_support::{decisions, lease_holder, Env, NODE, RUN_LIMIT};
use serde_json::{json, Value};

const LAUNCHER_DB: &str = "virt-launcher-vm-db-01-xxxxx";

/// The binary under `faketime -f OFFSET`, with the environment's global flags.
fn skewed(env: &Env, offset: &str, args: &[&str]) -> tokio::process::Command {
    // On the machine's pid namespace, not the node's: the faketime wrapper names its
    // semaphore after its pid, which collides between namespaces (this test starts no fake
    // VM process, so it needs no namespace of its own).
    let mut c = tokio::process::Command::new("faketime");
    c.args(["-f", offset, env!("CARGO_BIN_EXE_vmrecover")])
        .arg("--kubeconfig")
        .arg(env.sim.kubeconfig_path())
        .args(["--node", NODE, "--log-target", "stderr", "--state-dir"])
        .arg(env.state.path())
        .arg("--host-root")
        .arg(env.host_root.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn output(mut c: tokio::process::Command) -> (i32, String, String) {
    let out = tokio::time::timeout(RUN_LIMIT, c.output())
        .await
        .expect("the run hung")
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn seconds_ago(secs: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(secs))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A node clock 10 minutes ahead does not make a deletion of one minute ago stuck for
/// `--stuck-after 5m` (the old code compared its own clock with the deletionTimestamp).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_clock_ahead_does_not_make_a_fresh_deletion_stuck() {
    let env = Env::power_loss().await;
    let mut v = env
        .sim
        .get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "vm-web-01",
        )
        .expect("the VMI");
    v["metadata"]["deletionTimestamp"] = json!(seconds_ago(60));
    env.sim.put(v).expect("deleted a minute ago");
    let plan_with = |stuck_after: &'static str| {
        skewed(
            &env,
            "+10m",
            &[
                "run",
                "--dry-run",
                "--only",
                "default/vm-web-01",
                "--stuck-after",
                stuck_after,
                "--output",
                "json",
            ],
        )
    };
    let (_, stdout, stderr) = output(plan_with("5m")).await;
    let plan: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(
        decisions(&plan)["default/vm-web-01"],
        "waiting",
        "{plan:#}\n{stderr}"
    );
    // The same skewed node does see a deletion older than --stuck-after as stuck.
    let (_, stdout, stderr) = output(plan_with("30s")).await;
    let plan: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(
        decisions(&plan)["default/vm-web-01"],
        "recover",
        "{plan:#}\n{stderr}"
    );
    assert!(env.sim.mutating_requests().is_empty(), "a dry-run wrote");
}

/// The Lease is neither written nor judged on a wall clock: a holder whose clock is 10
/// minutes behind writes the server's time, and neither a contender on the true clock nor
/// one 10 minutes ahead takes the Lease while the holder still renews it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_not_taken_early_under_skew() {
    let env = Env::power_loss().await;
    let holder = skewed(
        &env,
        "-10m",
        &[
            "run",
            "--yes",
            "--only",
            "default/vm-db-01",
            "--stuck-after",
            "0s",
            "--controller-grace",
            "6s",
            "--output",
            "json",
        ],
    );
    let holding = tokio::spawn(output(holder));
    // Holding: its launcher pod is deleted and its controller wait runs.
    for _ in 0..1000 {
        let deleted = env
            .sim
            .mutating_requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path.ends_with(LAUNCHER_DB));
        if deleted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held_by = lease_holder(&env.sim).expect("the skewed run holds the Lease");
    let lease = env
        .sim
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "harvester-system",
            &format!("vmrecover-{NODE}"),
        )
        .expect("the Lease");
    let renewed: jiff::Timestamp = lease["spec"]["renewTime"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("renewTime");
    let off = (jiff::Timestamp::now() - renewed).get_seconds().abs();
    assert!(off < 5, "renewTime {renewed} is the holder's skewed clock");

    let contender = [
        "run",
        "--yes",
        "--stuck-after",
        "0s",
        "--controller-grace",
        "0s",
        "--output",
        "json",
    ];
    for offset in ["+0s", "+10m"] {
        let (code, stdout, stderr) = output(skewed(&env, offset, &contender)).await;
        assert_eq!(code, 1, "{offset}: {stdout}\n{stderr}");
        assert!(
            stderr.contains(&held_by) || stdout.contains(&held_by),
            "{offset}: the refusal names the holder: {stdout}\n{stderr}"
        );
    }
    let (code, stdout, stderr) = holding.await.expect("holder");
    assert!(code == 0 || code == 3, "{stdout}\n{stderr}");
    // Only the holder's own VM was changed.
    for r in env.sim.mutating_requests() {
        assert!(
            r.path.contains("/leases") || r.path.contains("/events") || r.path.contains("vm-db-01"),
            "a contender changed {} {}",
            r.method,
            r.path
        );
    }
}

/// Renews this node's Lease as `holder` every 300 ms until dropped, writing renewal times
/// ten minutes old — a holder whose clock is behind and which writes its own clock (an
/// older vmrecover, or another writer), with a 2 s duration.
async fn renew_with_a_slow_clock(env: &Env, holder: &str) {
    loop {
        let old = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(600)).to_string();
        env.sim
            .put(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": format!("vmrecover-{NODE}"), "namespace": "harvester-system"},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 2,
                         "acquireTime": old, "renewTime": old}
            }))
            .expect("renew");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Issue 23: a contender takes a Lease over only once it has itself seen the Lease unchanged
/// for its whole duration (client-go leader election's rule): a holder that keeps renewing
/// is never taken over, however old its renewal times look by the API server's clock; once
/// it stops, the Lease is taken after the duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_still_renewing_is_never_taken_over_however_old_its_renewals_look() {
    let env = Env::power_loss().await;
    let holder = "agent@harvester-node-1/4242";
    let contender = [
        "run",
        "--yes",
        "--stuck-after",
        "0s",
        "--controller-grace",
        "0s",
        "--lease-wait",
        "5s",
        "--output",
        "json",
    ];
    let refused = tokio::select! {
        ran = env.run(&contender) => ran,
        () = renew_with_a_slow_clock(&env, holder) => unreachable!("renews until dropped"),
    };
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.stderr.contains(&format!("held by {holder}")),
        "{}",
        refused.all()
    );
    let writes: Vec<String> = env
        .sim
        .mutating_requests()
        .iter()
        .filter(|r| !r.internal)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "the contender wrote: {writes:?}");

    // The holder stopped renewing: after seeing the Lease unchanged for its 2 s, a run
    // takes it over and recovers.
    let taken = env.run(&contender).await;
    assert_eq!(taken.code, 3, "{}", taken.all());
    assert_ne!(lease_holder(&env.sim).as_deref(), Some(holder));
    assert!(env
        .sim
        .mutating_requests()
        .iter()
        .any(|r| !r.internal && r.method == "PATCH"));
}
