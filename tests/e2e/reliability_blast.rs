//! Issue 7, blast radius: a plan that would act on more VMs than `--max-vms` is refused
//! as a whole with a message, never half-applied — also when a crash left work behind.

use crate::e2e_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_over_max_vms_is_refused_whole() {
    let env = Env::power_loss().await;
    for max in ["0", "2", "4"] {
        let mut args = RUN.to_vec();
        args.extend(["--max-vms", max]);
        let run = env.run(&args).await;
        assert_eq!(run.code, 3, "--max-vms {max}: {}", run.all());
        assert!(
            run.all().contains(&format!("more than --max-vms {max}")),
            "--max-vms {max}: {}",
            run.all()
        );
        assert!(
            env.sim.mutating_requests().is_empty(),
            "--max-vms {max}: {:?}",
            env.sim.mutating_requests()
        );
    }
    // At the limit it applies.
    let mut args = RUN.to_vec();
    args.extend(["--max-vms", "5"]);
    let run = env.run(&args).await;
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(env
        .sim
        .get("kubevirt.io/v1", "VirtualMachine", "default", "vm-web-01")
        .is_none());
}
