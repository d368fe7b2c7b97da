//! `vmrecover agent`: the daemon. At start it decides the boot verdict, waits for the API
//! server with backoff, and, when the verdict and `--act-on` allow, recovers the VMs
//! stuck on this node during the boot window, re-deciding whenever a VMI on this node
//! changes (a watch) or a waiting VM becomes due. After the window it idles. Every pass
//! updates `/metrics` and `<state-dir>/agent-status.json`; SIGTERM stops between steps
//! and releases the Lease.
//!
//! `run` holds start-up and the select loop; one pass is [`Agent::pass`] in `pass.rs`.

mod http;
mod metrics;
mod pass;
mod readiness;
mod reload;
mod status;
mod summary;
mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use tokio::sync::Notify;

use crate::cluster::{EventRecorder, LastRun};
use crate::cluster::{LeaseError, Readiness};
use crate::config::{AgentConfig, Config};
use crate::exit::Outcome;
use crate::pipeline;
use crate::recovery::{follow_report, Facts, Looks, Mode, Plan, ReportStore, RunReport, Session};
use crate::shutdown::stop_on_signal;

pub use metrics::Metrics;
pub use pass::{next_wake, summarize, Agent, PassIo, PassResult, BLOCKED_RECHECK, DEBOUNCE};
pub use readiness::{readiness_of, Schedule};
pub use status::{is_alive, AgentStatus, AgentStatusFile, Phase, AGENT_STATUS_FILE};
pub use summary::after_run;

/// The live I/O of a pass: the cluster through `client`, the node through `cfg`.
struct LiveIo<'a> {
    cfg: &'a Config,
    client: Client,
    /// The client for watches, and each watch request's server timeout.
    watches: (Client, u32),
    session: Session,
    /// The boot the verdict was made for, for the time until its last VM was running again.
    boot_time: Option<jiff::Timestamp>,
    /// The last run once followed (set by the follow task, taken by the next pass).
    followed: Arc<std::sync::Mutex<Option<LastRun>>>,
    /// Wakes the loop when a follow ended.
    wake: Arc<Notify>,
    /// Asked to stop.
    stop: tokio::sync::watch::Receiver<bool>,
    /// `followFor` as last (re)loaded.
    follow_for: Arc<std::sync::Mutex<Duration>>,
    /// This node's Node as the connect check read it, for the first pass (taken by it).
    known_node: std::sync::Mutex<Option<Node>>,
    /// Where the VMI watch starts: given by the first pass that listed this node's VMIs.
    watch_start: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<watch::WatchStart>>>,
}

impl PassIo for LiveIo<'_> {
    async fn gather(&self) -> Facts {
        let known = self.known_node.lock().ok().and_then(|mut n| n.take());
        let g = pipeline::gather_reusing(self.cfg, self.client.clone(), known).await;
        self.start_watch(&g);
        pipeline::record_seen(self.cfg, &g.facts);
        g.facts
    }

    async fn apply(&self, plan: Plan, started: jiff::Timestamp) -> Result<RunReport, LeaseError> {
        let report = self.session.apply(plan, started).await?;
        self.follow(&report);
        Ok(report)
    }

    fn followed(&self) -> Option<LastRun> {
        self.followed.lock().ok()?.take()
    }
}

impl LiveIo<'_> {
    /// Starts the VMI watch at this gather's list of this node's VMIs, if it has not started.
    fn start_watch(&self, g: &pipeline::Gathering) {
        let (Some(version), Some(listed)) = (&g.vmis_version, g.facts.cluster.vmis.value()) else {
            return;
        };
        let Some(tx) = self.watch_start.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        let _ = tx.send(watch::WatchStart {
            version: version.clone(),
            listed: listed.clone(),
        });
    }

    /// Follows the run's recovered VMs in a task of their own (the loop keeps deciding
    /// meanwhile): the outcomes go into the saved report (unless a later run replaced it),
    /// an Event on each VM, and the node summary at the next pass, which the task wakes.
    fn follow(&self, report: &RunReport) {
        if report.recovered() + report.handed_over() == 0 || report.stopped.is_some() {
            return;
        }
        let mut report = report.clone();
        let client = self.client.clone();
        let events = EventRecorder::new(client.clone(), &self.cfg.node);
        let longhorn_ns = self.cfg.longhorn_namespace.clone();
        let bound = self
            .follow_for
            .lock()
            .map(|f| *f)
            .unwrap_or(self.cfg.follow_for);
        // `followFor: 0s` turns following off: no watch of the site's VMs and VMIs at all.
        if bound.is_zero() {
            return;
        }
        let store = ReportStore::new(&self.cfg.state_dir);
        let looks = Looks::Watching {
            client: self.watches.0.clone(),
            timeout_secs: self.watches.1,
        };
        let (followed, wake, stop, boot) = (
            self.followed.clone(),
            self.wake.clone(),
            self.stop.clone(),
            self.boot_time,
        );
        tokio::spawn(async move {
            follow_report(
                &client,
                &events,
                &longhorn_ns,
                &mut report,
                bound,
                |vm, outcome| tracing::info!("{vm} after recovery: {}", outcome.line()),
                stop,
                looks,
            )
            .await;
            let still_last = matches!(store.load(), crate::evidence::Gathered::Read { value: Some(r) } if r.started == report.started);
            if still_last {
                if let Err(e) = store.save(&report) {
                    tracing::warn!("the run report could not be saved with the outcomes: {e:#}");
                }
            }
            if let Ok(mut slot) = followed.lock() {
                *slot = Some(summary::last_run(&report, boot));
            }
            wake.notify_one();
        });
    }
}

/// Runs the agent until SIGTERM.
pub async fn run(cfg: &Config, args: &AgentConfig) -> Outcome {
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(addr) = args.metrics_addr {
        let health = http::Health {
            metrics: metrics.clone(),
            ready: ready.clone(),
        };
        match http::serve(addr, health).await {
            Ok(bound) => tracing::info!("serving /metrics, /healthz and /readyz on http://{bound}"),
            Err(e) => {
                eprintln!("vmrecover agent: cannot listen on {addr}: {e}");
                return Outcome::Error;
            }
        }
    }
    let mut stop = stop_on_signal();

    // The boot check.
    let boot = pipeline::gather_boot(cfg).await;
    let verdict = boot.verdict.verdict;
    metrics.set_verdict(verdict);
    let acting = reload::acting(args.act_on, verdict);
    // The window runs on CLOCK_BOOTTIME (issue 23): a wall-clock step (NTP after a power
    // cut) neither closes it early nor keeps it open; the wall-clock end is only shown.
    let started_on_boot_clock = boot_clock();
    let window_ends_on_boot_clock =
        started_on_boot_clock.map(|_| add(BOOT_CLOCK_ZERO, args.boot_window));
    let window_ends = add(
        boot.boot_time
            .value()
            .copied()
            .unwrap_or_else(jiff::Timestamp::now),
        args.boot_window,
    );
    tracing::info!(
        verdict = ?verdict,
        acting,
        "boot check: {}; {} until {window_ends}",
        boot.verdict.summary,
        if acting { "recovering stuck VMs" } else { "reporting only" }
    );
    let now = jiff::Timestamp::now();
    let mut agent = Agent::new(
        AgentStatus {
            pid: std::process::id(),
            started: now,
            phase: status::Phase::WaitingForApi,
            since: now,
            verdict,
            act_on: args.act_on,
            acting,
            window_ends: Some(window_ends),
            last_pass: None,
            last_error: None,
            config: None,
        },
        metrics.clone(),
        AgentStatusFile::new(&cfg.state_dir),
        cfg.policy.clone(),
    );
    agent.boot_history = boot.history.value().cloned().unwrap_or_default();
    if let Ok(mut f) = agent.follow_for.lock() {
        *f = cfg.follow_for;
    }
    agent.set_phase(Phase::WaitingForApi);
    let mut layers = cfg.layers.clone();
    agent.config_loaded(&layers);

    // Wait for the API server, with backoff; never crash-loop while it is down.
    let mut backoff = Duration::from_secs(1);
    let (client, known_node) = loop {
        match pipeline::connect(cfg).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(
                    "waiting for the API server (retry in {}s): {e}",
                    backoff.as_secs()
                );
                agent.api_error(e.to_string());
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return agent.stopped(),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    agent.api_ok();
    ready.store(true, Ordering::SeqCst);
    // After a whole-cluster power cut the API server may come back long after this node:
    // an agent that was up within the window gets a full window from the moment the API
    // answered, so a slow control plane does not close it before anything could be done.
    let window_ends = extend_window(
        agent.status.started,
        window_ends,
        jiff::Timestamp::now(),
        args.boot_window,
    );
    let window_ends_on_boot_clock = match (
        started_on_boot_clock,
        window_ends_on_boot_clock,
        boot_clock(),
    ) {
        (Some(started), Some(ends), Some(ready)) => {
            Some(extend_window(started, ends, ready, args.boot_window))
        }
        _ => None,
    };
    agent.status.window_ends = Some(match (window_ends_on_boot_clock, boot_clock()) {
        (Some(ends), Some(now)) => jiff::Timestamp::now() + ends.duration_since(now),
        _ => window_ends,
    });
    let window_over = move || match (window_ends_on_boot_clock, boot_clock()) {
        (Some(ends), Some(now)) => now >= ends,
        _ => jiff::Timestamp::now() >= window_ends,
    };

    // The watches (this node's VMIs, the follow's) share a client of their own whose reads
    // may wait as long as an idle watch lasts; every other request keeps the short timeout.
    let (watch_client, watch_secs) = match crate::cluster::connect_for_watches(&cfg.cluster).await {
        Ok(c) => (c, crate::cluster::LONG_WATCH_SECS),
        Err(e) => {
            tracing::warn!("a separate client for the watches: {e}; sharing the main one");
            (
                client.clone(),
                crate::cluster::watch_timeout_secs(cfg.cluster.tuning.request_timeout),
            )
        }
    };
    let wake = Arc::new(Notify::new());
    let (watch_start, watch_from) = tokio::sync::oneshot::channel();
    let io = LiveIo {
        cfg,
        client: client.clone(),
        watches: (watch_client.clone(), watch_secs),
        session: Session::new(
            client.clone(),
            cfg,
            Mode::Agent,
            Duration::ZERO,
            stop.clone(),
            pipeline::Regatherer::new(cfg, client.clone()),
        ),
        boot_time: boot.verdict_boot_started(),
        followed: Arc::default(),
        wake: wake.clone(),
        stop: stop.clone(),
        follow_for: agent.follow_for.clone(),
        known_node: std::sync::Mutex::new(Some(known_node)),
        watch_start: std::sync::Mutex::new(Some(watch_start)),
    };
    let mut publisher = summary::Publisher::new(client.clone(), &cfg.cluster.namespace);
    let mut watcher = Some(watch::spawn(
        watch_client,
        &cfg.node,
        wake.clone(),
        metrics.clone(),
        watch_secs,
        watch_from,
    ));

    loop {
        if window_over() {
            if let Some(w) = watcher.take() {
                w.abort();
            }
            agent.set_phase(Phase::Idle);
            tracing::info!("boot window over: idle until stopped");
            let schedule = Schedule::for_node(&cfg.node, args.check_every);
            let idle_since = jiff::Timestamp::now();
            let mut readiness: Option<Readiness> = None;
            // The summary keeps its heartbeat while idle, so readers do not call it stale: a
            // pass that decides but never applies (as when a stop was asked), every heartbeat.
            loop {
                agent.pass(&io, true).await;
                let now = jiff::Timestamp::now();
                let settled = readiness::settled(agent.node_summary.as_ref());
                if schedule.due(now, idle_since, readiness.as_ref().map(|r| r.at), settled) {
                    readiness = Some(run_checks(cfg, &client, &agent.metrics).await);
                }
                if let Some(mut s) = agent.node_summary.clone() {
                    s.phase = Phase::Idle.as_str().to_string();
                    s.readiness = readiness.clone();
                    publisher.publish(&s).await;
                }
                let nap = if settled {
                    schedule.sleep(
                        jiff::Timestamp::now(),
                        idle_since,
                        readiness.as_ref().map(|r| r.at),
                        crate::cluster::HEARTBEAT,
                    )
                } else {
                    crate::cluster::HEARTBEAT
                };
                let until = tokio::time::Instant::now() + nap;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        _ = tokio::time::sleep(cfg.cluster.tuning.config_check) => {
                            if agent.reload_config(&mut layers) {
                                break;
                            }
                        }
                        _ = stop.wait_for(|s| *s) => return agent.stopped(),
                    }
                }
            }
        }
        agent.set_phase(if agent.status.acting {
            Phase::BootWindow
        } else {
            Phase::Watching
        });
        let stop_asked = *stop.borrow();
        let pass = agent.pass(&io, stop_asked).await;
        if let Some(s) = &agent.node_summary {
            publisher.publish(s).await;
        }
        release_freed_memory();

        let due = tokio::time::Instant::now() + pass.next;
        loop {
            tokio::select! {
                _ = wake.notified() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    break;
                }
                _ = tokio::time::sleep_until(due) => break,
                // A changed configuration is decided with at once.
                _ = tokio::time::sleep(cfg.cluster.tuning.config_check) => {
                    if agent.reload_config(&mut layers) {
                        break;
                    }
                }
                _ = stop.wait_for(|s| *s) => return agent.stopped(),
            }
        }
    }
}

/// Runs the readiness checks (those of `vmrecover check`, without `--site`) and exports them.
async fn run_checks(cfg: &Config, client: &Client, metrics: &Metrics) -> Readiness {
    let opts = crate::check::CheckOptions {
        fail_on: crate::check::FailOn::Warn,
        site: false,
    };
    let checks = crate::check::run_all(cfg, &opts, client).await;
    let now = jiff::Timestamp::now();
    metrics.observe_checks(&checks, now);
    let r = readiness_of(&checks, now);
    if r.failing.is_empty() {
        tracing::info!(warning = ?r.warning, "readiness checks done");
    } else {
        tracing::warn!(failing = ?r.failing, warning = ?r.warning, "readiness checks failing: run `vmrecover check`");
    }
    r
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

fn add(t: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MAX)
}

/// The zero of the boot clock: a point on CLOCK_BOOTTIME written as a timestamp (the Unix
/// epoch plus the time since boot), so the window's rule runs on it unchanged.
const BOOT_CLOCK_ZERO: jiff::Timestamp = jiff::Timestamp::UNIX_EPOCH;

/// Now on the boot clock (see [`BOOT_CLOCK_ZERO`]); `None` when CLOCK_BOOTTIME cannot be
/// read (the wall clock stands in then).
fn boot_clock() -> Option<jiff::Timestamp> {
    let up = crate::boot::clock::since_boot().value().copied()?;
    Some(add(BOOT_CLOCK_ZERO, up))
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
        window_ends.max(add(api_ready, window))
    } else {
        window_ends
    }
}

#[cfg(test)]
mod tests;
