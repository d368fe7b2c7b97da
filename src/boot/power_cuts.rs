//! Power-cut history from the boot records (issue 26): how many boots of this machine ended
//! without a clean shutdown, how many of those in the last 30 days, and when the last one
//! was. Computed by vmrecover from its own records, never with PromQL: Prometheus keeps 10
//! days by default, so `increase(...[30d])` would undercount.

use serde::{Deserialize, Serialize};

use super::records::{BootEnd, BootHistoryEntry};

/// The window the recent count looks back over.
pub const WINDOW_DAYS: i64 = 30;

/// This node's power cuts as its boot records tell them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerCuts {
    /// Unclean boots recorded in all.
    pub total: usize,
    /// Unclean boots whose end falls in the last [`WINDOW_DAYS`] days.
    pub last_30_days: usize,
    /// When the node came back from the last one (the next boot's start; the power cut
    /// itself happened at most that long before), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<jiff::Timestamp>,
}

/// Counts the unclean boots of `history` (newest first, as the records give it). An
/// unclean boot is dated by the start of the boot that followed it (the node coming back);
/// without that, by its own start; an undated one counts in the total only.
pub fn power_cuts(history: &[BootHistoryEntry], now: jiff::Timestamp) -> PowerCuts {
    let since = now - jiff::SignedDuration::from_hours(24 * WINDOW_DAYS);
    let mut out = PowerCuts::default();
    for (i, b) in history.iter().enumerate() {
        if b.ended != BootEnd::Unclean {
            continue;
        }
        out.total += 1;
        let next = i.checked_sub(1).and_then(|n| history.get(n));
        let when = next
            .and_then(|n| n.boot_time.or(n.started_at))
            .or(b.started_at)
            .or(b.boot_time);
        if let Some(t) = when {
            if t >= since {
                out.last_30_days += 1;
            }
            out.last = out.last.max(Some(t));
        }
    }
    out
}

impl PowerCuts {
    /// One line for `status` and the site view, `None` when there was none.
    pub fn line(&self) -> Option<String> {
        (self.total > 0).then(|| {
            format!(
                "{} unclean boot(s) in the last {WINDOW_DAYS} days, {} recorded{}",
                self.last_30_days,
                self.total,
                self.last
                    .map(|t| format!(", last came back {}", t.strftime("%Y-%m-%d %H:%MZ")))
                    .unwrap_or_default()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, days_ago: i64, ended: BootEnd) -> BootHistoryEntry {
        let now: jiff::Timestamp = "2026-12-06T00:00:00Z".parse().unwrap_or_default();
        let t = now - jiff::SignedDuration::from_hours(24 * days_ago);
        BootHistoryEntry {
            boot_id: id.into(),
            boot_time: Some(t),
            started_at: Some(t),
            stopped_at: None,
            ended,
            notes: vec![],
        }
    }

    #[test]
    fn unclean_boots_are_counted_and_dated_by_the_boot_that_followed() {
        let now: jiff::Timestamp = "2026-12-06T00:00:00Z".parse().unwrap_or_default();
        // Newest first: running now (came back 1 day ago after a cut), clean, unclean 40
        // days ago (came back 35 days ago), unclean 50 days ago (came back 40 days ago).
        let h = [
            entry("now", 1, BootEnd::Running),
            entry("b", 20, BootEnd::Unclean),
            entry("c", 35, BootEnd::Clean),
            entry("d", 40, BootEnd::Unclean),
            entry("e", 50, BootEnd::Unclean),
        ];
        let p = power_cuts(&h, now);
        assert_eq!(p.total, 3);
        assert_eq!(p.last_30_days, 1, "b: the node came back 1 day ago");
        assert_eq!(p.last, h[0].boot_time);
        assert!(p
            .line()
            .is_some_and(|l| l.starts_with("1 unclean boot(s) in the last 30 days, 3 recorded")));
        assert_eq!(power_cuts(&[], now), PowerCuts::default());
        assert_eq!(PowerCuts::default().line(), None);
    }
}
