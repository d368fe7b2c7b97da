//! `vmrecover status` as a monitoring check (issue 14 item 4): 0 all fine, including VMs
//! only waiting; 3 some VM blocked; 1 the state could not be read.

use crate::e2e_support::Env;
use harvester_sim::{shipped_scenario, Sim, SimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exit_codes_mean_something() {
    // Stuck VMs still inside --stuck-after: a normal recovery, no alarm.
    let env = Env::power_loss().await;
    let waiting = env.run(&["status", "--stuck-after", "3650d"]).await;
    assert_eq!(waiting.code, 0, "{}", waiting.all());

    // Stuck now: vm-custom-01's unknown finalizer leaves it for a person.
    let blocked = env.run(&["status", "--stuck-after", "0s"]).await;
    assert_eq!(blocked.code, 3, "{}", blocked.all());
    assert!(
        blocked.stdout.contains("vm-custom-01"),
        "{}",
        blocked.stdout
    );

    // The API server is gone: the state could not be read.
    env.sim.shutdown();
    let down = env.run(&["status", "--stuck-after", "0s"]).await;
    assert_eq!(down.code, 1, "{}", down.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_node_is_zero() {
    let sim = Sim::start(SimConfig::default().scenario_file(shipped_scenario("healthy.yaml")))
        .await
        .expect("sim");
    let env = Env::on(sim);
    let ran = env.run(&["status"]).await;
    assert_eq!(ran.code, 0, "{}", ran.all());
}
