//! Unit tests of the agent: the window, when to wake, and one pass with scripted I/O.

use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::boot::Verdict;
use crate::config::{ActOn, Policy};
use crate::recovery::fixtures::{facts, t};
use crate::recovery::{Action, Blocker, Decision};

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

fn plan_of(actions: Vec<Action>) -> Plan {
    let mut p = crate::recovery::plan(&facts(), &Policy::default());
    let template = p.decisions[0].clone();
    p.decisions = actions
        .into_iter()
        .map(|a| Decision {
            action: a,
            ..template.clone()
        })
        .collect();
    p.at = t("2026-01-01T10:00:00Z");
    p
}

#[test]
fn next_wake_is_bounded_by_waiting_vms_blocked_vms_and_the_window() {
    let end = t("2026-01-01T11:00:00Z");
    assert_eq!(next_wake(&plan_of(vec![]), end), Duration::from_secs(3600));
    assert_eq!(
        next_wake(&plan_of(vec![Action::Blocked]), end),
        BLOCKED_RECHECK
    );
    assert_eq!(
        next_wake(
            &plan_of(vec![Action::Waiting {
                until: Some(t("2026-01-01T10:00:30Z"))
            }]),
            end
        ),
        Duration::from_secs(31)
    );
}

/// Scripted I/O: fixed facts, and a record of every plan it was asked to apply.
struct Scripted {
    facts: Facts,
    lease_held_elsewhere: bool,
    applied: Mutex<Vec<Plan>>,
}

impl Scripted {
    fn new(facts: Facts) -> Self {
        Scripted {
            facts,
            lease_held_elsewhere: false,
            applied: Mutex::new(Vec::new()),
        }
    }
}

impl PassIo for Scripted {
    async fn gather(&self) -> Facts {
        self.facts.clone()
    }

    async fn apply(&self, plan: Plan, started: jiff::Timestamp) -> Result<RunReport, LeaseError> {
        self.applied.lock().unwrap().push(plan.clone());
        if self.lease_held_elsewhere {
            return Err(LeaseError::HeldByOther {
                namespace: "harvester-system".into(),
                name: "vmrecover-n1".into(),
                holder: "manual@n1/7".into(),
                since: "2026-01-01T10:00:00Z".into(),
                renewed: "2026-01-01T10:00:00Z".into(),
                duration_s: 30,
                unchanged_s: 0,
                stale: false,
            });
        }
        Ok(RunReport {
            started,
            finished: started,
            dry_run: false,
            mode: Mode::Agent,
            plan,
            outcomes: vec![],
            orphans: vec![],
            stopped: None,
            pruned_intents: vec![],
        })
    }
}

fn agent(acting: bool, dir: &std::path::Path) -> Agent {
    let now = jiff::Timestamp::now();
    Agent::new(
        AgentStatus {
            pid: 1,
            started: now,
            phase: Phase::BootWindow,
            since: now,
            verdict: Verdict::Unclean,
            act_on: ActOn::Unclean,
            acting,
            window_ends: Some(jiff::Timestamp::MAX),
            last_pass: None,
            last_error: None,
            config: None,
        },
        Metrics::new(),
        AgentStatusFile::new(dir),
        Policy::default(),
    )
}

#[tokio::test]
async fn a_pass_applies_work_when_acting_and_saves_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = agent(true, dir.path());
    let io = Scripted::new(facts());
    let r = a.pass(&io, false).await;
    assert!(r.applied);
    assert_eq!(io.applied.lock().unwrap().len(), 1);
    assert_eq!(r.next, DEBOUNCE, "re-decides soon after a run");
    assert!(r.summary.contains("1 recover"), "{}", r.summary);
    let saved = AgentStatusFile::new(dir.path()).load();
    let saved = saved.value().cloned().flatten().unwrap();
    assert_eq!(saved.last_pass.unwrap().1, r.summary);
}

#[tokio::test]
async fn a_pass_only_reports_when_not_acting_or_asked_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let io = Scripted::new(facts());
    let r = agent(false, dir.path()).pass(&io, false).await;
    assert!(!r.applied);
    let r = agent(true, dir.path()).pass(&io, true).await;
    assert!(!r.applied);
    assert!(io.applied.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_held_lease_retries_later_and_an_unreadable_cluster_counts_as_an_api_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut io = Scripted::new(facts());
    io.lease_held_elsewhere = true;
    let mut a = agent(true, dir.path());
    let r = a.pass(&io, false).await;
    assert!(!r.applied);
    assert_eq!(r.next, super::pass::LEASE_RETRY);

    let mut f = facts();
    f.cluster.vmis = crate::evidence::Gathered::unreadable("virtualmachineinstances", "refused");
    let io = Scripted::new(f);
    let mut a = agent(true, dir.path());
    a.pass(&io, false).await;
    let text = a.metrics.encode();
    assert!(text.contains("vmrecover_api_errors_total 1"), "{text}");
    assert!(
        text.contains(&format!(
            r#"vmrecover_vms{{decision="blocked",reason="{}"}} 1"#,
            Blocker::ClusterUnreadable.label()
        )),
        "{text}"
    );
}

#[test]
fn the_summary_counts_decisions_caps_the_blocked_list_and_the_paused_gauge_follows() {
    let mut blocked = plan_of(vec![Action::Blocked; 30]);
    for (i, d) in blocked.decisions.iter_mut().enumerate() {
        d.name = format!("vm-{i:02}");
        d.reasons = vec![crate::recovery::Reason::blocking(
            Blocker::DiskHeld,
            format!("{}\nsecond line", "x".repeat(500)),
        )];
    }
    blocked.paused = Some("node annotation vmrecover.io/paused=maintenance".into());
    let dir = tempfile::tempdir().unwrap();
    let a = agent(true, dir.path());
    let s = summary::build(&blocked, &a.status, None, None);
    assert_eq!(s.counts.get("blocked"), Some(&30));
    assert_eq!(s.blocked_total, 30);
    assert_eq!(s.blocked.len(), crate::cluster::MAX_BLOCKED);
    assert!(s.blocked.iter().all(
        |b| b.reason.chars().count() <= crate::cluster::MAX_REASON && !b.reason.contains('\n')
    ));
    assert_eq!(s.blocked[0].blocker.as_deref(), Some("disk_held"));
    assert!(s
        .paused
        .as_deref()
        .is_some_and(|p| p.contains("maintenance")));
    // Small enough for a ConfigMap by a wide margin.
    assert!(serde_json::to_string(&s).unwrap().len() < 16 * 1024);
    // Only the write time differs: the same content.
    let later = crate::cluster::NodeSummary {
        updated: s.updated + jiff::SignedDuration::from_secs(60),
        ..s.clone()
    };
    assert!(s.same_content(&later));
    assert!(!later.is_stale(later.updated + jiff::SignedDuration::from_secs(60)));
    assert!(later.is_stale(later.updated + jiff::SignedDuration::from_secs(26 * 60)));

    a.metrics.observe_plan(&blocked);
    assert!(
        a.metrics.encode().contains("vmrecover_paused 1"),
        "{}",
        a.metrics.encode()
    );
    blocked.paused = None;
    a.metrics.observe_plan(&blocked);
    assert!(a.metrics.encode().contains("vmrecover_paused 0"));
}

#[test]
fn a_plan_refused_for_a_pause_or_an_upgrade_is_decided_again_soon() {
    for b in [Blocker::Paused, Blocker::UpgradeInProgress] {
        let mut p = plan_of(vec![Action::Recover { steps: vec![] }]);
        p.refused = Some(crate::recovery::Refusal::new(b, "refused"));
        assert_eq!(
            next_wake(&p, jiff::Timestamp::MAX),
            pass::REFUSED_RECHECK,
            "{b}"
        );
    }
}
