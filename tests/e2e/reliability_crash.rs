//! Issue 7, crashes: `kill -9` of `vmrecover run --yes` right after its Nth mutating
//! request, for every N of an uninterrupted run. Afterwards: no mutation outside the
//! plan, a rerun is refused while the dead run's Lease is valid and names it (unless
//! nothing is left to do), takes the Lease over once it expired, and converges to the
//! uninterrupted run's end state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::e2e_support::*;
use futures::StreamExt;
use harvester_sim::FaultAction;

/// Holds every further mutating request, so the kill lands after exactly N.
fn hold_mutations(env: &Env) {
    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        env.sim
            .add_fault(rule(m, "/", FaultAction::Latency { ms: 30_000 }, None));
    }
}

/// Kills the run right after its `n`th mutating request; returns how many were applied.
/// Every mutating request waits 20 ms in the simulator before it is applied; a request
/// still waiting when the process dies is never applied (the server drops it with the
/// connection), so the kill lands after the Nth even when VMs are worked on concurrently.
async fn crash_after(env: &Env, n: usize) -> Result<usize, String> {
    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        env.sim
            .add_fault(rule(m, "/", FaultAction::Latency { ms: 20 }, None));
    }
    let child = env.command(RUN).spawn().expect("spawn vmrecover");
    // Resolved before the race: the kill must land right after the Nth request.
    let pid = env.vmrecover_pid(child.id().expect("pid"));
    let killed = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + RUN_LIMIT;
        while std::time::Instant::now() < deadline {
            if env.sim.mutating_requests().len() >= n {
                hold_mutations(env);
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return true;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        false
    });
    let out = child.wait_with_output().await.expect("reap");
    // A request the dead process had already written may still be read from the socket
    // by the server: the hold catches it, and it dies with the connection. Then the
    // count is final.
    tokio::time::sleep(Duration::from_millis(200)).await;
    env.sim.clear_faults();
    if !killed || out.status.code().is_some() {
        return Err(format!(
            "crash after {n}: the run ended by itself ({} requests): {}\n{}",
            env.sim.mutating_requests().len(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(env.sim.mutating_requests().len())
}

async fn crash_case(
    reference_end: &BTreeMap<String, Vec<String>>,
    allowed: &Allowed,
    n: usize,
) -> Result<usize, String> {
    let mut env = Env::power_loss().await;
    env.vars
        .push(("VMRECOVER_APPLY_CONCURRENCY".into(), "1".into()));
    let applied = crash_after(&env, n).await?;
    let bad = allowed.violations(&env.sim);
    if !bad.is_empty() {
        return Err(format!(
            "crash after {n}: mutations outside the plan: {bad:#?}"
        ));
    }
    if let Some(holder) = lease_holder(&env.sim) {
        // The dead run still holds the Lease: a rerun with work to do is refused and
        // says who holds it; one with nothing left to do needs no Lease.
        let before = env.sim.mutating_requests().len();
        let refused = env.run(RUN).await;
        let nothing_left =
            refused.code == 3 && !decisions(&refused.json()).values().any(|d| d == "recover");
        if !nothing_left
            && (refused.code != 1 || !refused.stderr.contains(&format!("held by {holder}")))
        {
            return Err(format!(
                "crash after {n}: a rerun under a valid Lease: {}",
                refused.all()
            ));
        }
        let extra: Vec<String> = env
            .sim
            .mutating_requests()
            .iter()
            .skip(before)
            .map(|r| format!("{} {} -> {} {:?}", r.method, r.path, r.status, r.actor))
            .collect();
        if !extra.is_empty() {
            return Err(format!(
                "crash after {n}: the rerun under a valid Lease mutated: {extra:#?}\n{}",
                refused.all()
            ));
        }
        age_lease(&env.sim);
    }
    let again = env.run(&[RUN, &["--lease-wait", "10s"]].concat()).await;
    if again.code != 3 {
        return Err(format!("crash after {n}: the rerun: {}", again.all()));
    }
    let bad = allowed.violations(&env.sim);
    if !bad.is_empty() {
        return Err(format!(
            "crash after {n}: the rerun mutated outside the plan: {bad:#?}"
        ));
    }
    let end = settled_end_state(&env.sim).await;
    if &end != reference_end {
        return Err(format!(
            "crash after {n}: did not converge: {end:#?}\nrerun: {}",
            again.all()
        ));
    }
    Ok(applied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_every_mutating_request_then_a_rerun_converges() {
    let mut env = Env::power_loss().await;
    env.vars
        .push(("VMRECOVER_APPLY_CONCURRENCY".into(), "1".into()));
    let allowed = Allowed::from_plan(&env.run(DRY_RUN).await.json());
    let run = env.run(RUN).await;
    assert_eq!(run.code, 3, "{}", run.all());
    let total = env.sim.mutating_requests().len();
    let reference_end = settled_end_state(&env.sim).await;
    assert!(
        total >= 10,
        "an uninterrupted run makes {total} mutating requests"
    );
    drop(env);

    let started = std::time::Instant::now();
    let results: Vec<(usize, Result<usize, String>)> = futures::stream::iter(1..total)
        .map(|n| {
            let (reference_end, allowed) = (reference_end.clone(), allowed.clone());
            // Own task each: the poller must not wait behind another case's set-up.
            async move {
                let r = tokio::spawn(async move { crash_case(&reference_end, &allowed, n).await })
                    .await
                    .unwrap_or_else(|e| Err(format!("crash after {n}: the case panicked: {e}")));
                (n, r)
            }
        })
        .buffer_unordered(2)
        .collect()
        .await;
    let failures: Vec<&str> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err().map(String::as_str))
        .collect();
    let points: BTreeSet<usize> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().copied())
        .collect();
    let exact = results
        .iter()
        .filter(|(n, r)| r.as_ref().ok() == Some(n))
        .count();
    eprintln!(
        "crash points: {} kills (after mutating request 1..{} of {total}), {exact} landed exactly, \
         applied counts covered {points:?}, {:.1} s",
        total - 1,
        total - 1,
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} crash cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(
        points,
        (1..total).collect::<BTreeSet<_>>(),
        "not every crash point was reached"
    );
}
