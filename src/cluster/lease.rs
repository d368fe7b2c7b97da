//! The node Lease `vmrecover-<node>` (docs/architecture.md §7): one mutating run per node at a time,
//! whether the agent or an operator's manual run. Taken and renewed with optimistic
//! concurrency (resourceVersion), so two contenders can never both hold it; it expires,
//! so a dead holder does not block forever. The requests go through [`LeaseApi`]
//! (`lease_api.rs`); the rules here are unit-tested against a scripted fake
//! (`lease_tests.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::lease_api::{KubeLeases, LeaseApi, LeaseCallError};
use super::lease_expiry;

/// How many times taking the Lease starts over after a concurrent taker's 409.
const TAKE_CONFLICTS: u32 = 5;

/// How a Lease is named and held.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Lease name, `vmrecover-<node>`.
    pub name: String,
    /// Who we are, e.g. `agent@node-1/1234`.
    pub identity: String,
    /// How long the Lease is valid after each renewal.
    pub duration: Duration,
}

impl LeaseConfig {
    /// The Lease in words: `leases/<name> in <namespace>`.
    pub fn what(&self) -> String {
        format!("leases/{} in {}", self.name, self.namespace)
    }

    /// The Lease for `node`, held by `identity`.
    pub fn for_node(namespace: &str, node: &str, identity: String) -> Self {
        LeaseConfig {
            namespace: namespace.to_string(),
            name: format!("vmrecover-{node}"),
            identity,
            duration: Duration::from_secs(30),
        }
    }
}

/// Why the Lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else holds it and it has not expired.
    #[error("lease {namespace}/{name} is held by {holder} since {since} (last renewed {renewed}, valid for {duration_s}s after that; seen unchanged by this run for {unchanged_s}s): a Lease is taken over only once this run has seen it unchanged for its whole {duration_s}s, as Kubernetes leader election does; try again later, or wait with --lease-wait (more than {duration_s}s)")]
    HeldByOther {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// The holder's identity.
        holder: String,
        /// When the holder acquired it.
        since: String,
        /// When the holder last renewed it.
        renewed: String,
        /// Its duration.
        duration_s: i32,
        /// How long this process has seen it unchanged.
        unchanged_s: u64,
        /// Whether its renewal is already past its duration by the API server's clock: the
        /// holder looks gone, and only this run's own observation is still running.
        stale: bool,
    },
    /// The API server refused or could not be reached.
    #[error("{0}")]
    Api(String),
}

/// A Lease we hold, renewed in the background until released or lost.
pub struct HeldLease {
    api: Arc<dyn LeaseApi>,
    config: LeaseConfig,
    current: Arc<Mutex<Lease>>,
    held: Arc<AtomicBool>,
    renewer: JoinHandle<()>,
}

impl HeldLease {
    /// Whether we still hold it; every mutation checks this first.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// A cheap handle to check the lease from concurrent tasks.
    pub fn guard(&self) -> LeaseGuard {
        LeaseGuard(self.held.clone())
    }

    /// Gives the Lease up so the next run need not wait for expiry: clears its holder (as
    /// client-go's leader election does), tested against the resourceVersion last written
    /// by us, so a Lease someone else holds by now is left alone (a 409). A Lease already
    /// lost is not written at all.
    pub async fn release(self) -> Result<(), LeaseError> {
        self.renewer.abort();
        let was_held = self.held.swap(false, Ordering::SeqCst);
        if !was_held {
            return Ok(());
        }
        let mut lease = self.current.lock().await.clone();
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        self.api
            .replace(&lease)
            .await
            .map(|_| ())
            .map_err(|e| LeaseError::Api(e.describe("update", &self.config.what())))
    }
}

/// Shared view of whether the Lease is still held.
#[derive(Debug, Clone)]
pub struct LeaseGuard(Arc<AtomicBool>);

impl LeaseGuard {
    /// Whether the Lease is still held.
    pub fn is_held(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// A guard that is always held (for tests of code that takes one).
    pub fn always() -> Self {
        LeaseGuard(Arc::new(AtomicBool::new(true)))
    }

    /// Marks the Lease lost, as the renewer does (for tests that lose it mid-run).
    #[cfg(test)]
    pub(crate) fn lose(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Takes the Lease, waiting up to `wait` for another holder to release it or expire.
pub async fn acquire(
    client: &Client,
    config: LeaseConfig,
    wait: Duration,
) -> Result<HeldLease, LeaseError> {
    let api: Arc<dyn LeaseApi> = Arc::new(KubeLeases::new(client, &config.namespace, &config.name));
    acquire_with(api, config, wait).await
}

/// [`acquire`] through `api`.
pub(crate) async fn acquire_with(
    api: Arc<dyn LeaseApi>,
    config: LeaseConfig,
    wait: Duration,
) -> Result<HeldLease, LeaseError> {
    let mut deadline = tokio::time::Instant::now() + wait;
    let mut stale_extended = false;
    loop {
        match try_acquire(api.as_ref(), &config, TAKE_CONFLICTS).await {
            Ok(lease) => {
                let current = Arc::new(Mutex::new(lease));
                let held = Arc::new(AtomicBool::new(true));
                let renewer = tokio::spawn(renew_loop(
                    api.clone(),
                    config.clone(),
                    current.clone(),
                    held.clone(),
                ));
                return Ok(HeldLease {
                    api,
                    config,
                    current,
                    held,
                    renewer,
                });
            }
            Err(e @ LeaseError::HeldByOther { .. }) => {
                // A Lease already expired by the server's clock (a crashed run, a powered-off
                // node's agent) is taken once this run has watched it stay unchanged for its
                // duration, whatever --lease-wait says: client-go's leader election retries
                // the same way. A live holder still needs --lease-wait.
                let now = tokio::time::Instant::now();
                // Extended once, from the first look: a holder that renews meanwhile (its
                // Lease changes) is alive, and the run then gives up as --lease-wait says.
                if let (false, Some(more)) = (stale_extended, e.stale_watch()) {
                    deadline = deadline.max(now + more);
                    stale_extended = true;
                }
                if now >= deadline {
                    return Err(e);
                }
                tracing::info!("{e}; waiting");
                // Look often enough to see the Lease expire soon after it does (client-go's
                // retry period is 2 s), never more than 4 times a second.
                let step =
                    (config.duration / 4).clamp(Duration::from_millis(250), Duration::from_secs(2));
                tokio::time::sleep((deadline - now).min(step)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The longest a run watches a Lease that looks expired before taking it on its own.
const STALE_WATCH_MAX: Duration = Duration::from_secs(120);

impl LeaseError {
    /// For a Lease whose holder looks gone (expired by the server's clock): how much longer
    /// this run must watch it unchanged before it may take it (plus a margin); `None` for a
    /// live holder, another error, or a duration beyond [`STALE_WATCH_MAX`].
    fn stale_watch(&self) -> Option<Duration> {
        let LeaseError::HeldByOther {
            stale: true,
            duration_s,
            unchanged_s,
            ..
        } = self
        else {
            return None;
        };
        let duration = Duration::from_secs(u64::try_from(*duration_s).ok()?);
        (duration <= STALE_WATCH_MAX).then(|| {
            duration.saturating_sub(Duration::from_secs(*unchanged_s)) + Duration::from_secs(2)
        })
    }
}

/// The time written into and judged against the Lease: the API server's clock (its
/// responses' `Date`, `server_clock`), so neither the holder's nor the contender's wall
/// clock decides when it expires (issue 23). Before any response (never the case here: a
/// Lease is read first) the local clock stands in.
fn lease_now() -> jiff::Timestamp {
    super::server_clock::server_now().unwrap_or_else(jiff::Timestamp::now)
}

fn now_micro() -> MicroTime {
    MicroTime(lease_now())
}

/// One attempt to take the Lease; a 409 from a concurrent taker starts over, at most
/// `conflicts_left` more times (a server answering 409 forever must not loop forever).
async fn try_acquire(
    api: &dyn LeaseApi,
    config: &LeaseConfig,
    conflicts_left: u32,
) -> Result<Lease, LeaseError> {
    let what = config.what();
    let duration_s = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let again = |e: &LeaseCallError, verb: &str| {
        if conflicts_left == 0 {
            Some(LeaseError::Api(format!(
                "{}: still conflicting after {TAKE_CONFLICTS} attempts",
                e.describe(verb, &what)
            )))
        } else {
            None
        }
    };
    let existing = api
        .get()
        .await
        .map_err(|e| LeaseError::Api(e.describe("get", &what)))?;
    let Some(mut lease) = existing else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration_s),
                acquire_time: Some(now_micro()),
                renew_time: Some(now_micro()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&lease).await {
            Ok(l) => Ok(l),
            // Someone created it between our get and create: read it again (and report
            // them if they hold it).
            Err(e @ LeaseCallError::Conflict { .. }) => match again(&e, "create") {
                Some(err) => Err(err),
                None => Box::pin(try_acquire(api, config, conflicts_left - 1)).await,
            },
            Err(e) => Err(LeaseError::Api(e.describe("create", &what))),
        };
    };
    // Tokio's clock (the same as std's outside paused-time tests).
    let unchanged_for = lease_expiry::observe(&lease, tokio::time::Instant::now().into_std());
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let ours = holder.as_deref() == Some(config.identity.as_str());
    if holder.is_some() && !ours && lease_expiry::still_held(spec, unchanged_for, lease_now()) {
        return Err(LeaseError::HeldByOther {
            namespace: config.namespace.clone(),
            name: config.name.clone(),
            holder: holder.unwrap_or_default(),
            since: spec
                .acquire_time
                .as_ref()
                .map_or("an unknown time".into(), |t| t.0.to_string()),
            renewed: spec
                .renew_time
                .as_ref()
                .map_or("never".into(), |t| t.0.to_string()),
            duration_s: spec.lease_duration_seconds.unwrap_or(0),
            unchanged_s: unchanged_for.as_secs(),
            stale: lease_expiry::expired_by_server(spec, lease_now()),
        });
    }
    if !ours {
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.acquire_time = Some(now_micro());
    }
    spec.holder_identity = Some(config.identity.clone());
    spec.lease_duration_seconds = Some(duration_s);
    spec.renew_time = Some(now_micro());
    // replace() sends our read resourceVersion: a concurrent taker makes this a 409.
    match api.replace(&lease).await {
        Ok(l) => Ok(l),
        Err(e @ LeaseCallError::Conflict { .. }) => match again(&e, "update") {
            Some(err) => Err(err),
            None => Box::pin(try_acquire(api, config, conflicts_left - 1)).await,
        },
        Err(e) => Err(LeaseError::Api(e.describe("update", &what))),
    }
}

/// Renews every third of the duration; marks the Lease lost when a renewal is refused
/// (someone else took it) or when renewals keep failing until it would have expired.
async fn renew_loop(
    api: Arc<dyn LeaseApi>,
    config: LeaseConfig,
    current: Arc<Mutex<Lease>>,
    held: Arc<AtomicBool>,
) {
    let period = (config.duration / 3).max(Duration::from_millis(200));
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let mut lease = current.lock().await.clone();
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(now_micro());
        }
        match api.replace(&lease).await {
            Ok(l) => {
                *current.lock().await = l;
                last_ok = tokio::time::Instant::now();
            }
            Err(e @ (LeaseCallError::Conflict { .. } | LeaseCallError::NotFound { .. })) => {
                tracing::error!(lease = %config.name, "lost the lease: {}", e.describe("update", "lease"));
                held.store(false, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %config.name, "lease renewal failed: {}", e.describe("update", "lease"));
                if last_ok.elapsed() + period >= config.duration {
                    tracing::error!(lease = %config.name, "lease expired without renewal: stopping mutations");
                    held.store(false, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}
