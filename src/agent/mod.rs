//! `vmrecover agent`: the daemon. At start it decides the boot verdict, waits for the API
//! server with backoff, and, when the verdict and `--act-on` allow, recovers the VMs
//! stuck on this node during the boot window, re-deciding whenever a VMI on this node
//! changes (a watch) or a waiting VM becomes due. After the window it idles. Every pass
//! updates `/metrics` and `<state-dir>/agent-status.json`; SIGTERM stops between steps
//! and releases the Lease.

mod http;
pub mod metrics;
pub mod status;
mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use self::metrics::Metrics;
use self::status::{AgentStatus, AgentStatusFile, Phase};
use crate::boot::{self, Verdict};
use crate::cli::{ActOn, AgentArgs, GlobalArgs};
use crate::cluster::lease::LeaseError;
use crate::commands::stop_on_signal;
use crate::config::Policy;
use crate::exit::Outcome;
use crate::pipeline;
use crate::recovery::model::{Action, Plan};
use crate::recovery::plan::plan;
use crate::recovery::session::Session;

/// Coalesces bursts of VMI changes into one pass.
const DEBOUNCE: Duration = Duration::from_secs(2);
/// Re-decide blocked VMs this often in the window (a process may have exited; nothing
/// in the API announces that).
const BLOCKED_RECHECK: Duration = Duration::from_secs(60);
/// Retry when another run holds the Lease.
const LEASE_RETRY: Duration = Duration::from_secs(10);

/// Runs the agent until SIGTERM.
pub async fn run(global: &GlobalArgs, args: &AgentArgs) -> Outcome {
    let node = match pipeline::node_name(global) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("vmrecover agent: {e}");
            return Outcome::Error;
        }
    };
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    if args.metrics_addr != "off" {
        let addr: SocketAddr = match args.metrics_addr.parse() {
            Ok(a) => a,
            Err(e) => {
                eprintln!(
                    "vmrecover agent: --metrics-addr {:?} is not ADDR:PORT or off: {e}",
                    args.metrics_addr
                );
                return Outcome::Error;
            }
        };
        match http::serve(
            addr,
            http::Health {
                metrics: metrics.clone(),
                ready: ready.clone(),
            },
        )
        .await
        {
            Ok(bound) => tracing::info!("serving /metrics, /healthz and /readyz on http://{bound}"),
            Err(e) => {
                eprintln!("vmrecover agent: cannot listen on {addr}: {e}");
                return Outcome::Error;
            }
        }
    }
    let mut stop = stop_on_signal();
    let status_file = AgentStatusFile::new(&global.state_dir);

    // The boot check.
    let opts = pipeline::boot_options(global);
    let boot = match tokio::task::spawn_blocking(move || {
        boot::gather(&opts, jiff::Timestamp::now())
    })
    .await
    {
        Ok(b) => b,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let verdict = boot.verdict.verdict;
    metrics.set_verdict(verdict);
    let acting = match args.act_on {
        ActOn::Always => true,
        ActOn::Never => false,
        ActOn::Unclean => verdict == Verdict::Unclean,
    };
    let window_ends = boot
        .boot_time
        .value()
        .copied()
        .unwrap_or_else(jiff::Timestamp::now)
        .checked_add(
            jiff::SignedDuration::try_from(args.boot_window).unwrap_or(jiff::SignedDuration::MAX),
        )
        .unwrap_or(jiff::Timestamp::MAX);
    tracing::info!(
        verdict = ?verdict,
        acting,
        "boot check: {}; {} until {window_ends}",
        boot.verdict.summary,
        if acting { "recovering stuck VMs" } else { "reporting only" }
    );
    let mut st = AgentStatus {
        pid: std::process::id(),
        started: jiff::Timestamp::now(),
        phase: Phase::WaitingForApi,
        since: jiff::Timestamp::now(),
        verdict,
        act_on: args.act_on,
        acting,
        window_ends: Some(window_ends),
        last_pass: None,
        last_error: None,
    };
    set_phase(&mut st, Phase::WaitingForApi, &metrics, &status_file);

    // Wait for the API server, with backoff; never crash-loop while it is down.
    let mut backoff = Duration::from_secs(1);
    let client = loop {
        match pipeline::connect(global, &node).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(
                    "waiting for the API server (retry in {}s): {e}",
                    backoff.as_secs()
                );
                metrics.api_error();
                st.last_error = Some(e);
                status_file.save(&st);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return stopped(&mut st, &metrics, &status_file),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    st.last_error = None;
    ready.store(true, Ordering::SeqCst);
    // After a whole-cluster power cut the API server may come back long after this node:
    // an agent that was up within the window gets a full window from the moment the API
    // answered, so a slow control plane does not close it before anything could be done.
    let window_ends = extend_window(
        st.started,
        window_ends,
        jiff::Timestamp::now(),
        args.boot_window,
    );
    st.window_ends = Some(window_ends);

    let policy = Policy::from_args(&global.policy, &[], false);
    let session = Session {
        client: client.clone(),
        node: node.clone(),
        namespace: global.namespace.clone(),
        state_dir: global.state_dir.clone(),
        host_root: global.host_root.clone(),
        mode: "agent",
        lease_wait: Duration::ZERO,
        cancel: stop.clone(),
    };
    let wake = Arc::new(Notify::new());
    let mut watcher = Some(watch::spawn(
        client.clone(),
        &node,
        wake.clone(),
        metrics.clone(),
    ));

    loop {
        let now = jiff::Timestamp::now();
        if now >= window_ends {
            if let Some(w) = watcher.take() {
                w.abort();
            }
            set_phase(&mut st, Phase::Idle, &metrics, &status_file);
            tracing::info!("boot window over: idle until stopped");
            let _ = stop.wait_for(|s| *s).await;
            return stopped(&mut st, &metrics, &status_file);
        }
        set_phase(
            &mut st,
            if acting {
                Phase::BootWindow
            } else {
                Phase::Watching
            },
            &metrics,
            &status_file,
        );

        // One pass; its facts and plan (large on a big cluster) are dropped before the
        // agent waits for the next one.
        let (next, summary) = {
            let started = jiff::Timestamp::now();
            let g = pipeline::gather(global, &node, Some(client.clone())).await;
            let planned = plan(&g.facts, &policy);
            metrics.observe_plan(&planned);
            if planned
                .decisions
                .iter()
                .any(|d| d.reasons.iter().any(|r| r.contains("cannot read the VMIs")))
            {
                metrics.api_error();
            }
            let mut next = next_wake(&planned, window_ends);
            let mut summary = summarize(&planned);
            tracing::debug!("pass: {summary}; next pass in at most {}s", next.as_secs());
            if acting && planned.has_work() && !*stop.borrow() {
                match session.apply(planned, started).await {
                    Ok(report) => {
                        metrics.observe_run(&report);
                        summary = format!(
                            "{summary}; run: {} recovered, {} handed to the VM controller, {} left alone, {} failed",
                            report.recovered(),
                            report.handed_over(),
                            report.aborted(),
                            report.failed()
                        );
                        tracing::info!("{summary}");
                        // Re-decide soon: the run changed the cluster.
                        next = next.min(DEBOUNCE);
                    }
                    Err(e @ LeaseError::HeldByOther { .. }) => {
                        tracing::info!("{e}; retrying in {}s", LEASE_RETRY.as_secs());
                        next = next.min(LEASE_RETRY);
                    }
                    Err(LeaseError::Api(e)) => {
                        metrics.api_error();
                        tracing::warn!("cannot take the node Lease: {e}");
                        next = next.min(LEASE_RETRY);
                    }
                }
            }
            (next, summary)
        };
        st.last_pass = Some((jiff::Timestamp::now(), summary));
        status_file.save(&st);
        release_freed_memory();

        tokio::select! {
            _ = wake.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(next) => {}
            _ = stop.wait_for(|s| *s) => return stopped(&mut st, &metrics, &status_file),
        }
    }
}

/// Hands memory freed after a pass (the parsed lists of a large cluster) back to the
/// kernel, so an idle agent keeps a small RSS instead of glibc's high-water mark.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own arenas; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The boot window's end: `window_ends`, or `window` after the API first answered when
/// the agent was already running inside the window then.
fn extend_window(
    agent_started: jiff::Timestamp,
    window_ends: jiff::Timestamp,
    api_ready: jiff::Timestamp,
    window: Duration,
) -> jiff::Timestamp {
    if agent_started < window_ends && api_ready > agent_started {
        let from_api = api_ready
            .checked_add(
                jiff::SignedDuration::try_from(window).unwrap_or(jiff::SignedDuration::MAX),
            )
            .unwrap_or(jiff::Timestamp::MAX);
        window_ends.max(from_api)
    } else {
        window_ends
    }
}

fn set_phase(st: &mut AgentStatus, phase: Phase, metrics: &Metrics, file: &AgentStatusFile) {
    metrics.set_phase(phase);
    if st.phase != phase {
        st.phase = phase;
        st.since = jiff::Timestamp::now();
    }
    file.save(st);
}

fn stopped(st: &mut AgentStatus, metrics: &Metrics, file: &AgentStatusFile) -> Outcome {
    tracing::info!("stopped");
    set_phase(st, Phase::Stopped, metrics, file);
    Outcome::Done
}

/// When to decide again without a watch event: when a waiting VM becomes stuck, soon
/// for blocked VMs (a process may exit), at the window's end at the latest.
fn next_wake(plan: &Plan, window_ends: jiff::Timestamp) -> Duration {
    let now = plan.at;
    let until_window = duration_until(now, window_ends);
    let mut next = until_window;
    for d in &plan.decisions {
        match &d.action {
            Action::Waiting { until: Some(t) } => {
                next = next.min(duration_until(now, *t) + Duration::from_secs(1))
            }
            Action::Blocked => next = next.min(BLOCKED_RECHECK),
            _ => {}
        }
    }
    next.max(Duration::from_millis(500))
}

fn duration_until(now: jiff::Timestamp, t: jiff::Timestamp) -> Duration {
    Duration::try_from(t - now).unwrap_or(Duration::ZERO)
}

fn summarize(plan: &Plan) -> String {
    let count = |l: &str| {
        plan.decisions
            .iter()
            .filter(|d| d.action.label() == l)
            .count()
    };
    format!(
        "{} VM(s): {} recover, {} blocked, {} waiting, {} healthy, {} not mine",
        plan.decisions.len(),
        count("recover"),
        count("blocked"),
        count("waiting"),
        count("healthy"),
        count("not-mine")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_slow_api_server_extends_the_window_only_for_an_agent_up_in_time() {
        let w = Duration::from_secs(1800);
        let ends = t("2026-01-01T10:30:00Z");
        // Agent up at boot, API back at 11:00: the window runs to 11:30.
        assert_eq!(
            extend_window(
                t("2026-01-01T10:00:10Z"),
                ends,
                t("2026-01-01T11:00:00Z"),
                w
            ),
            t("2026-01-01T11:30:00Z")
        );
        // API back a minute after boot: the window counts from then.
        assert_eq!(
            extend_window(
                t("2026-01-01T10:00:10Z"),
                ends,
                t("2026-01-01T10:01:00Z"),
                w
            ),
            t("2026-01-01T10:31:00Z")
        );
        // An agent (re)started days later never reopens it.
        assert_eq!(
            extend_window(
                t("2026-01-03T10:00:00Z"),
                ends,
                t("2026-01-03T10:00:01Z"),
                w
            ),
            ends
        );
    }

    #[test]
    fn next_wake_is_bounded_by_waiting_vms_blocked_vms_and_the_window() {
        let plan = |actions: Vec<Action>| Plan {
            node: "n".into(),
            at: t("2026-01-01T10:00:00Z"),
            verdict: Verdict::Unclean,
            policy: Policy::default(),
            decisions: actions
                .into_iter()
                .map(|a| crate::recovery::model::Decision {
                    namespace: "d".into(),
                    name: "x".into(),
                    vmi: None,
                    vm: None,
                    phase: String::new(),
                    action: a,
                    reasons: vec![],
                    evidence: vec![],
                    pvcs: vec![],
                    volumes: vec![],
                    kept_finalizers: vec![],
                    skipped_side_effects: vec![],
                })
                .collect(),
            orphans: vec![],
            refused: None,
        };
        let end = t("2026-01-01T11:00:00Z");
        assert_eq!(next_wake(&plan(vec![]), end), Duration::from_secs(3600));
        assert_eq!(
            next_wake(&plan(vec![Action::Blocked]), end),
            BLOCKED_RECHECK
        );
        assert_eq!(
            next_wake(
                &plan(vec![Action::Waiting {
                    until: Some(t("2026-01-01T10:00:30Z"))
                }]),
                end
            ),
            Duration::from_secs(31)
        );
    }
}
