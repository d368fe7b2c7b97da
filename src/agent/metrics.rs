//! Prometheus metrics of the agent (`/metrics`): the boot verdict, the decisions by kind
//! and blocker, the actions taken, run durations and API errors.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::status::Phase;
use crate::boot::Verdict;
use crate::recovery::{blocker_category, Plan, RunReport, StepAction, VmResult};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    check: String,
    /// `ok`, `warn` or `fail`: an alert pages on `fail` only.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AbortLabel {
    reason: String,
}

/// Every outcome label, exported at 0 from the start.
const OUTCOME_LABELS: [&str; 5] = [
    "recovered",
    "finished_by_controller",
    "handed_to_controller",
    "aborted",
    "failed",
];

/// The agent's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    verdict: Family<VerdictLabel, Gauge>,
    phase: Family<PhaseLabel, Gauge>,
    vms: Family<DecisionLabel, Gauge>,
    actions: Family<ActionLabel, Counter>,
    outcomes: Family<OutcomeLabel, Counter>,
    aborts: Family<AbortLabel, Counter>,
    run_duration: Histogram,
    last_run: Gauge<f64, AtomicU64>,
    api_errors: Counter,
    passes: Counter,
    paused: Gauge,
    config_ok: Gauge,
    checks: Family<CheckLabel, Gauge>,
    checks_last_run: Gauge<f64, AtomicU64>,
    unclean_boots: Counter,
    unclean_boots_30d: Gauge,
    last_unclean_boot: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vmrecover");
        let verdict = Family::<VerdictLabel, Gauge>::default();
        let phase = Family::<PhaseLabel, Gauge>::default();
        let vms = Family::<DecisionLabel, Gauge>::default();
        let actions = Family::<ActionLabel, Counter>::default();
        let outcomes = Family::<OutcomeLabel, Counter>::default();
        let aborts = Family::<AbortLabel, Counter>::default();
        let run_duration = Histogram::new([0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 180.0, 600.0]);
        let last_run = Gauge::<f64, AtomicU64>::default();
        let api_errors = Counter::default();
        let passes = Counter::default();
        let paused = Gauge::default();
        let config_ok = Gauge::default();
        config_ok.set(1);
        let checks = Family::<CheckLabel, Gauge>::default();
        let checks_last_run = Gauge::<f64, AtomicU64>::default();
        let unclean_boots = Counter::default();
        let unclean_boots_30d = Gauge::default();
        let last_unclean_boot = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "unclean_boots",
            "Boots of this node that ended without a clean shutdown, from its boot records",
            unclean_boots.clone(),
        );
        registry.register(
            "unclean_boots_30d",
            "Unclean boots of this node in the last 30 days, computed by the agent from its boot records",
            unclean_boots_30d.clone(),
        );
        registry.register(
            "last_unclean_boot_timestamp_seconds",
            "When this node came back from its last unclean boot (Unix time; 0: none recorded)",
            last_unclean_boot.clone(),
        );
        registry.register(
            "check",
            "The agent's readiness checks (`vmrecover check`): 1 ok, 0 warn or fail (label status)",
            checks.clone(),
        );
        registry.register(
            "check_last_run_timestamp_seconds",
            "When the readiness checks last ran (Unix time)",
            checks_last_run.clone(),
        );
        registry.register(
            "boot_verdict",
            "The unclean-shutdown verdict of this boot (1 for the current one)",
            verdict.clone(),
        );
        registry.register(
            "agent_phase",
            "The agent's phase (1 for the current one)",
            phase.clone(),
        );
        registry.register(
            "vms",
            "VMs on this node by the last decision and, for blocked ones, why",
            vms.clone(),
        );
        registry.register(
            "actions",
            "Actions taken, by kind and result",
            actions.clone(),
        );
        registry.register(
            "vm_outcomes",
            "VM recoveries by how they ended",
            outcomes.clone(),
        );
        // Every outcome is exported from the start, at 0: an alert on `increase()` then sees
        // the first failure (a series born at 1 has no increase).
        for result in OUTCOME_LABELS {
            let _ = outcomes.get_or_create(&OutcomeLabel {
                result: result.into(),
            });
        }
        registry.register(
            "vm_aborts",
            "VM recoveries left alone mid-run, by why (the blocker label: paused, \
             live_process, lease_lost, plan_changed, ...)",
            aborts.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Duration of mutating runs",
            run_duration.clone(),
        );
        registry.register(
            "last_run_timestamp_seconds",
            "When the last mutating run ended (Unix time)",
            last_run.clone(),
        );
        registry.register(
            "api_errors",
            "Errors talking to the Kubernetes API",
            api_errors.clone(),
        );
        registry.register(
            "passes",
            "Decision passes (gather and plan)",
            passes.clone(),
        );
        registry.register(
            "paused",
            "1 while an operator has paused vmrecover on this node (node annotation \
             vmrecover.io/paused or the cluster-wide ConfigMap vmrecover-pause), else 0",
            paused.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "1 when the last read of the configuration file succeeded; 0 while a changed file \
             is refused (the previous configuration stays in force)",
            config_ok.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            verdict,
            phase,
            vms,
            actions,
            outcomes,
            aborts,
            run_duration,
            last_run,
            api_errors,
            passes,
            paused,
            config_ok,
            checks,
            checks_last_run,
            unclean_boots,
            unclean_boots_30d,
            last_unclean_boot,
        }
    }

    /// Records whether the last read of the configuration file succeeded.
    pub fn set_config_ok(&self, ok: bool) {
        self.config_ok.set(i64::from(ok));
    }

    /// Exports one readiness run: each check 1 when ok, else 0 (checks no longer reported go).
    pub fn observe_checks(&self, checks: &[crate::check::Check], at: jiff::Timestamp) {
        self.checks.clear();
        for c in checks {
            self.checks
                .get_or_create(&CheckLabel {
                    check: c.name.clone(),
                    status: c.status.as_str().to_string(),
                })
                .set(i64::from(c.status == crate::check::Status::Ok));
        }
        self.checks_last_run.set(at.as_second() as f64);
    }

    /// Sets the power-cut history: the counter rises to the records' total (it never falls,
    /// a restarted agent starts again from zero), the gauges follow the 30-day window.
    pub fn set_power_cuts(&self, p: &crate::boot::PowerCuts) {
        let total = p.total as u64;
        let now = self.unclean_boots.get();
        if total > now {
            self.unclean_boots.inc_by(total - now);
        }
        self.unclean_boots_30d.set(p.last_30_days as i64);
        self.last_unclean_boot
            .set(p.last.map_or(0.0, |t| t.as_second() as f64));
    }

    /// Sets the boot verdict.
    pub fn set_verdict(&self, v: Verdict) {
        for each in [Verdict::Unclean, Verdict::Clean, Verdict::Unknown] {
            let label = VerdictLabel {
                verdict: format!("{each:?}").to_lowercase(),
            };
            self.verdict.get_or_create(&label).set(i64::from(each == v));
        }
    }

    /// Sets the phase.
    pub fn set_phase(&self, p: Phase) {
        for each in Phase::ALL {
            let label = PhaseLabel {
                phase: each.as_str().to_string(),
            };
            self.phase.get_or_create(&label).set(i64::from(each == p));
        }
    }

    /// Records a decision pass.
    pub fn observe_plan(&self, plan: &Plan) {
        self.passes.inc();
        self.paused.set(i64::from(plan.paused.is_some()));
        self.vms.clear();
        for d in &plan.decisions {
            let label = DecisionLabel {
                decision: d.action.label().to_string(),
                reason: blocker_category(d).to_string(),
            };
            self.vms.get_or_create(&label).inc();
        }
    }

    /// Records a mutating run.
    pub fn observe_run(&self, report: &RunReport) {
        let secs = report
            .finished
            .duration_since(report.started)
            .as_secs_f64()
            .max(0.0);
        self.run_duration.observe(secs);
        self.last_run.set(report.finished.as_second() as f64);
        for o in &report.outcomes {
            let result = o.result.label();
            self.outcomes
                .get_or_create(&OutcomeLabel {
                    result: result.into(),
                })
                .inc();
            if matches!(o.result, VmResult::Failed { .. }) {
                self.api_errors.inc();
            }
            if let VmResult::Aborted(abort) = &o.result {
                let reason = abort.blocker.label();
                self.aborts
                    .get_or_create(&AbortLabel {
                        reason: reason.into(),
                    })
                    .inc();
            }
            for s in &o.steps {
                if s.action == StepAction::WaitForControllers {
                    continue;
                }
                self.actions
                    .get_or_create(&ActionLabel {
                        action: s.action.label().into(),
                        result: s.status.label().into(),
                    })
                    .inc();
            }
        }
        for o in &report.orphans {
            self.actions
                .get_or_create(&ActionLabel {
                    action: "kill_orphan".into(),
                    result: o.status.label().into(),
                })
                .inc();
        }
    }

    /// Counts an API error.
    pub fn api_error(&self) {
        self.api_errors.inc();
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!("cannot encode metrics: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Policy;
    use crate::recovery::fixtures::facts;
    use crate::recovery::{Action, Blocker};

    /// The failed outcome (and every other) is exported at 0 before any run, and the labels
    /// are the ones `VmResult::label` gives.
    #[test]
    fn outcomes_start_at_zero() {
        let text = Metrics::new().encode();
        for r in [
            VmResult::Recovered,
            VmResult::FinishedByController,
            VmResult::HandedToController,
            VmResult::Aborted(crate::recovery::Abort::new(Blocker::Paused, "paused")),
            VmResult::Failed {
                reason: "500".into(),
            },
        ] {
            let line = format!(r#"vmrecover_vm_outcomes_total{{result="{}"}} 0"#, r.label());
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }

    /// An aborted VM is counted by its typed reason (issue 23): a pause mid-run is not a
    /// process that came back.
    #[test]
    fn aborts_are_counted_by_their_blocker() {
        let plan = crate::recovery::plan(&facts(), &Policy::default());
        let outcome = |b: Blocker| crate::recovery::VmOutcome {
            namespace: "default".into(),
            name: b.label().into(),
            result: VmResult::Aborted(crate::recovery::Abort::new(b, "left alone")),
            steps: Vec::new(),
            requests: 0,
            follow: None,
            vm_deleted: false,
        };
        let report = RunReport {
            started: jiff::Timestamp::UNIX_EPOCH,
            finished: jiff::Timestamp::UNIX_EPOCH,
            dry_run: false,
            mode: crate::recovery::Mode::Agent,
            plan,
            outcomes: vec![
                outcome(Blocker::Paused),
                outcome(Blocker::Paused),
                outcome(Blocker::LiveProcess),
            ],
            orphans: Vec::new(),
            stopped: None,
            pruned_intents: Vec::new(),
        };
        let m = Metrics::new();
        m.observe_run(&report);
        let text = m.encode();
        assert!(
            text.contains(r#"vmrecover_vm_aborts_total{reason="paused"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"vmrecover_vm_aborts_total{reason="live_process"} 1"#),
            "{text}"
        );
    }

    /// Every blocker kind reaches `vmrecover_vms{reason}` as its enum label, whatever the
    /// reason text says (here: text that names another kind).
    #[test]
    fn vm_reason_labels_come_from_the_blocker_type() {
        let mut plan = crate::recovery::plan(&facts(), &Policy::default());
        let template = plan.decisions[0].clone();
        plan.decisions = Blocker::all()
            .enumerate()
            .map(|(i, b)| {
                let mut d = template.clone();
                d.name = format!("vm-{i}");
                d.action = if matches!(b, Blocker::NotThisNode | Blocker::Migrating) {
                    Action::NotMine
                } else {
                    Action::Blocked
                };
                d.reasons = vec![crate::recovery::Reason::blocking(
                    b,
                    "still running here: is held here: unknown finalizer",
                )];
                d
            })
            .collect();
        let m = Metrics::new();
        m.observe_plan(&plan);
        let text = m.encode();
        for (d, b) in plan.decisions.iter().zip(Blocker::all()) {
            let line = format!(
                r#"vmrecover_vms{{decision="{}",reason="{}"}} 1"#,
                d.action.label(),
                b.label()
            );
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn power_cuts_are_a_counter_a_30_day_gauge_and_a_timestamp() {
        let m = Metrics::new();
        let cuts = crate::boot::PowerCuts {
            total: 3,
            last_30_days: 2,
            last: Some(jiff::Timestamp::from_second(1_700_000_000).unwrap_or_default()),
        };
        m.set_power_cuts(&cuts);
        m.set_power_cuts(&cuts);
        let text = m.encode();
        assert!(text.contains("vmrecover_unclean_boots_total 3"), "{text}");
        assert!(text.contains("vmrecover_unclean_boots_30d 2"), "{text}");
        assert!(
            text.contains("vmrecover_last_unclean_boot_timestamp_seconds 1700000000"),
            "{text}"
        );
    }
}
