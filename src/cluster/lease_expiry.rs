//! When a contender may take another holder's Lease over (issue 23, "one clock per
//! judgement"): as Kubernetes leader election does, only once it has itself seen the Lease
//! unchanged (holder, renewal, duration, resourceVersion) for the Lease's whole
//! `leaseDurationSeconds` on its own monotonic clock — kubernetes/client-go
//! `tools/leaderelection/leaderelection.go` (read in the stored client-go source; the rule
//! is older than v0.30 and unchanged since): `tryAcquireOrRenew` re-stamps
//! `observedTime` with the local clock whenever the record read differs from the one last
//! observed (`setObservedRecord`), and `isLeaseValid` holds while `observedTime +
//! LeaseDurationSeconds` is after now. A holder whose clock is off writes renewal times that
//! look old or new to others, but its renewals still change the Lease, so it is never taken
//! over while it renews.
//!
//! The API server's clock judgement vmrecover used before is kept on top, since it is
//! stricter in one case: a Lease seen unchanged for its duration whose renewal is still
//! recent by the server's clock (a holder that renewed just before this contender first
//! looked, then kept quiet for less than the duration from its renewal) stays held.
//!
//! Observations live for the process (the agent retries between passes), per Lease
//! (namespace, name and UID).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::coordination::v1::LeaseSpec;

/// What was last seen of each Lease (namespace/name) and since when (monotonic).
static OBSERVED: Mutex<Option<HashMap<String, (String, Instant)>>> = Mutex::new(None);

/// Notes `lease` as read at `at` and returns how long it has been seen unchanged: zero
/// when it differs from what this process saw of it last (or was never seen).
pub fn observe(lease: &Lease, at: Instant) -> Duration {
    // The UID too: a Lease deleted and created again is another Lease, and two clusters (one
    // test process, several simulators) never share an observation.
    let key = format!(
        "{}/{}/{}",
        lease.metadata.namespace.as_deref().unwrap_or_default(),
        lease.metadata.name.as_deref().unwrap_or_default(),
        lease.metadata.uid.as_deref().unwrap_or_default()
    );
    let record = record_of(lease);
    let mut all = OBSERVED.lock().unwrap_or_else(|e| e.into_inner());
    let all = all.get_or_insert_with(HashMap::new);
    match all.get(&key) {
        Some((seen, since)) if *seen == record => at.saturating_duration_since(*since),
        _ => {
            all.insert(key, (record, at));
            Duration::ZERO
        }
    }
}

/// The parts of a Lease whose change shows its holder alive.
fn record_of(lease: &Lease) -> String {
    let spec = lease.spec.clone().unwrap_or_default();
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        spec.holder_identity,
        spec.renew_time.map(|t| t.0),
        spec.acquire_time.map(|t| t.0),
        spec.lease_duration_seconds,
        lease.metadata.resource_version
    )
}

/// The Lease's own duration.
pub fn duration_of(spec: &LeaseSpec) -> Duration {
    Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0))
}

/// Whether another holder's Lease still holds: until it has been seen unchanged for its
/// whole duration (`unchanged_for`, this process's monotonic clock), and until its
/// renewal is older than its duration by the API server's clock (`server_now`).
pub fn still_held(spec: &LeaseSpec, unchanged_for: Duration, server_now: jiff::Timestamp) -> bool {
    unchanged_for < duration_of(spec) || !expired_by_server(spec, server_now)
}

/// Whether the renewal (else acquisition) plus the duration is before `now`.
pub fn expired_by_server(spec: &LeaseSpec, now: jiff::Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0));
    renewed.0 + jiff::SignedDuration::from_secs(secs) < now
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    fn lease(name: &str, renewed: jiff::Timestamp, rv: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("harvester-system".into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("agent@n1/7".into()),
                lease_duration_seconds: Some(30),
                renew_time: Some(MicroTime(renewed)),
                acquire_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    /// A holder whose renewal times look ten minutes old (its clock is behind) but who
    /// keeps renewing is never free: each renewal starts the observation over.
    #[test]
    fn a_lease_that_keeps_changing_is_held_however_old_its_renewal_looks() {
        let now = jiff::Timestamp::now();
        let old = now - jiff::SignedDuration::from_secs(600);
        let t0 = Instant::now();
        let mut l = lease("skewed", old, "1");
        for i in 0..10u64 {
            let at = t0 + Duration::from_secs(10 * i);
            l.metadata.resource_version = Some(format!("{}", i + 1));
            l.spec.as_mut().unwrap().renew_time = Some(MicroTime(
                old + jiff::SignedDuration::from_secs(10 * i as i64),
            ));
            let unchanged = observe(&l, at);
            assert_eq!(unchanged, Duration::ZERO);
            assert!(still_held(l.spec.as_ref().unwrap(), unchanged, now));
        }
    }

    /// A Lease seen unchanged for its whole duration whose renewal is old by the server's
    /// clock is free; seen for less, or renewed recently by the server's clock, it holds.
    #[test]
    fn free_only_when_unchanged_for_its_duration_and_expired_by_the_server_clock() {
        let now = jiff::Timestamp::now();
        let t0 = Instant::now();
        let l = lease("dead", now - jiff::SignedDuration::from_secs(120), "5");
        let spec = l.spec.clone().unwrap();
        assert_eq!(observe(&l, t0), Duration::ZERO);
        let later = observe(&l, t0 + Duration::from_secs(29));
        assert!(still_held(&spec, later, now), "seen for 29 s of 30");
        let later = observe(&l, t0 + Duration::from_secs(31));
        assert!(!still_held(&spec, later, now));
        // The server's clock, stricter here: renewed 10 s ago by it.
        let recent = l.spec.clone().map(|mut s| {
            s.renew_time = Some(MicroTime(now - jiff::SignedDuration::from_secs(10)));
            s
        });
        assert!(still_held(&recent.unwrap(), Duration::from_secs(31), now));
        // No holder time at all, zero duration: free.
        assert!(!still_held(&LeaseSpec::default(), Duration::ZERO, now));
    }
}
