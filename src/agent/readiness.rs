//! The agent's own readiness checks: the same checks as `vmrecover check` (without `--site`),
//! run once the boot window has closed and the node has settled (nothing to recover), then every `--check-every` (default 6 h), each node offset by a jitter derived
//! from its name so a site's agents do not all ask at once. Never while the boot window is
//! open or a recovery is pending: they cost nothing during an incident.

use std::time::Duration;

use crate::check::{Check, Status};
use crate::cluster::{NodeSummary, Readiness};

/// When the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The interval; zero: never.
    pub every: Duration,
    /// This node's offset from the interval's start (at most a tenth of it, at most 10 min).
    pub offset: Duration,
}

impl Schedule {
    /// The schedule of `node`: its jitter is a hash of its name.
    pub fn for_node(node: &str, every: Duration) -> Self {
        let span = (every / 10).min(Duration::from_secs(600)).as_secs().max(1);
        // FNV-1a: stable across builds and platforms (std's hasher is not).
        let h = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Schedule {
            every,
            offset: Duration::from_secs(h % span),
        }
    }

    /// Whether the checks are due: `idle_since` is when the boot window closed, `last` the
    /// previous run, `settled` that nothing on the node is being recovered or waited for.
    pub fn due(
        &self,
        now: jiff::Timestamp,
        idle_since: jiff::Timestamp,
        last: Option<jiff::Timestamp>,
        settled: bool,
    ) -> bool {
        if self.every.is_zero() || !settled {
            return false;
        }
        let from = match last {
            Some(l) => add(l, self.every),
            None => idle_since,
        };
        now >= add(from, self.offset)
    }

    /// How long the idle loop may sleep before the checks could be due (at most `heartbeat`,
    /// at least a second).
    pub fn sleep(
        &self,
        now: jiff::Timestamp,
        idle_since: jiff::Timestamp,
        last: Option<jiff::Timestamp>,
        heartbeat: Duration,
    ) -> Duration {
        if self.every.is_zero() {
            return heartbeat;
        }
        let from = match last {
            Some(l) => add(l, self.every),
            None => idle_since,
        };
        let due_at = add(from, self.offset);
        let left = Duration::try_from(due_at.duration_since(now)).unwrap_or(Duration::ZERO);
        left.clamp(
            Duration::from_secs(1),
            heartbeat.max(Duration::from_secs(1)),
        )
    }
}

fn add(t: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MAX)
}

/// Whether the node has settled: the last pass found no VM to recover. (A `waiting` VM is
/// not stuck yet, or a controller owns its next move: not a recovery of ours.)
pub fn settled(summary: Option<&NodeSummary>) -> bool {
    summary.is_some_and(|s| s.counts.get("recover").copied().unwrap_or(0) == 0)
}

/// Sums up `checks` run at `at` as the node summary carries them.
pub fn readiness_of(checks: &[Check], at: jiff::Timestamp) -> Readiness {
    let names = |s: Status| {
        checks
            .iter()
            .filter(|c| c.status == s)
            .map(|c| c.name.clone())
            .collect()
    };
    Readiness {
        at,
        failing: names(Status::Fail),
        warning: names(Status::Warn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn checks_wait_for_a_settled_node_then_repeat_with_the_nodes_offset() {
        let six_h = Duration::from_secs(6 * 3600);
        let s = Schedule::for_node("harvester-node-1", six_h);
        assert!(s.offset < Duration::from_secs(600));
        assert_eq!(s, Schedule::for_node("harvester-node-1", six_h), "stable");
        let others: std::collections::BTreeSet<_> = (1..=20)
            .map(|i| Schedule::for_node(&format!("harvester-node-{i}"), six_h).offset)
            .collect();
        assert!(others.len() > 10, "nodes are spread: {others:?}");
        let off = s.offset.as_secs() as i64;
        // Not while a recovery is pending, nor before the offset.
        assert!(!s.due(t(off + 1), t(0), None, false));
        assert!(!s.due(t(off - 1), t(0), None, true) || off == 0);
        assert!(s.due(t(off), t(0), None, true));
        // Then every six hours.
        assert!(!s.due(t(off + 3600), t(0), Some(t(off)), true));
        assert!(s.due(t(2 * off + 6 * 3600), t(0), Some(t(off)), true));
        // The idle loop wakes for it, not only on the heartbeat.
        let hb = Duration::from_secs(300);
        assert_eq!(
            s.sleep(t(0), t(0), None, hb),
            Duration::from_secs(s.offset.as_secs().max(1))
        );
        assert_eq!(s.sleep(t(off), t(0), Some(t(off)), hb), hb);
        // Zero: never.
        assert!(!Schedule::for_node("n", Duration::ZERO).due(t(99999), t(0), None, true));
    }

    #[test]
    fn a_summary_with_work_left_is_not_settled() {
        let mut s = NodeSummary {
            node: "n".into(),
            verdict: "unclean".into(),
            phase: "idle".into(),
            acting: true,
            paused: None,
            refused_by: None,
            counts: [("healthy".to_string(), 2)].into_iter().collect(),
            blocked: vec![],
            blocked_total: 0,
            last_run: None,
            readiness: None,
            power_cuts: None,
            updated: t(0),
        };
        s.counts.insert("waiting".into(), 1);
        assert!(settled(Some(&s)));
        s.counts.insert("recover".into(), 1);
        assert!(!settled(Some(&s)));
        assert!(!settled(None));
    }

    #[test]
    fn readiness_names_the_checks_not_ok() {
        let checks = [
            Check::ok("a", "fine"),
            Check::warn("b", "hm", "look"),
            Check::fail("c", "no", "fix"),
        ];
        let m = crate::agent::Metrics::new();
        m.observe_checks(&checks, t(0));
        let text = m.encode();
        for line in [
            "vmrecover_check{check=\"a\",status=\"ok\"} 1",
            "vmrecover_check{check=\"b\",status=\"warn\"} 0",
            "vmrecover_check{check=\"c\",status=\"fail\"} 0",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        assert!(
            text.contains("vmrecover_check_last_run_timestamp_seconds 1800000000"),
            "{text}"
        );
        let r = readiness_of(&checks, t(0));
        assert_eq!(
            (r.failing, r.warning),
            (vec!["c".to_string()], vec!["b".to_string()])
        );
    }
}
