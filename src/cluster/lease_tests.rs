//! The node Lease's rules against a scripted API server: taking a free, our own, a live or
//! an expired Lease, a 409 from a concurrent taker, renewals that fail, release, and a 403.
//! Time is tokio's paused clock: waits run at once, and their length is exact. The scripted
//! Lease ([`ScriptedLease`]) also serves the session's tests (`recovery/session_tests.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use tokio::time::Instant;

use super::lease::{acquire_with, HeldLease, LeaseConfig, LeaseError};
use super::lease_api::{LeaseApi, LeaseCallError};

/// Our identity in these tests.
const ME: &str = "manual@n1/2";
/// Another agent's.
pub(crate) const OTHER: &str = "agent@n1/1";

/// A UID per Lease: the expiry observations are kept per Lease for the whole process.
fn next_uid() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("uid-lease-{}", NEXT.fetch_add(1, Ordering::SeqCst))
}

/// A scripted answer to the next call of one verb: it may change the stored Lease first
/// (another agent's write) and then fail the call (`Some`) or let it proceed (`None`).
type Script = Box<dyn FnOnce(&mut Option<Lease>) -> Option<LeaseCallError> + Send>;

/// One Lease on a scripted API server: optimistic concurrency as the real one (a replace
/// whose resourceVersion is not the stored one is a 409, a create of an existing Lease a
/// 409 `AlreadyExists`), every call recorded, and answers scripted per verb.
pub(crate) struct ScriptedLease {
    stored: Mutex<Option<Lease>>,
    rv: AtomicU64,
    calls: Mutex<Vec<String>>,
    script: Mutex<Vec<(&'static str, Script)>>,
    /// The holder renews whenever it is read (a live agent).
    renewing: std::sync::atomic::AtomicBool,
}

impl ScriptedLease {
    /// A server whose Lease is `stored` (none: it does not exist yet).
    pub(crate) fn new(stored: Option<Lease>) -> Arc<Self> {
        Arc::new(ScriptedLease {
            stored: Mutex::new(stored),
            rv: AtomicU64::new(10),
            calls: Mutex::new(Vec::new()),
            script: Mutex::new(Vec::new()),
            renewing: false.into(),
        })
    }

    /// The next `verb` call runs `script` first.
    pub(crate) fn then(&self, verb: &'static str, script: Script) {
        self.script.lock().unwrap().push((verb, script));
    }

    /// Every call so far (and what [`ScriptedLease::log`] added), in order.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Adds another part's call to the log, for tests of the order of all requests.
    pub(crate) fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    /// From now on the holder renews whenever the Lease is read (a live agent).
    pub(crate) fn renew_on_read(&self) {
        self.renewing.store(true, Ordering::SeqCst);
    }

    /// Another agent takes the Lease over now (it writes it: a new resourceVersion).
    pub(crate) fn taken_by(&self, holder: &str) {
        let mut stored = self.stored.lock().unwrap();
        let l = stored.as_mut().expect("a stored Lease");
        l.spec.as_mut().unwrap().holder_identity = Some(holder.into());
        l.metadata.resource_version = Some("99".into());
    }

    /// The Lease as stored now.
    pub(crate) fn stored(&self) -> Lease {
        self.stored.lock().unwrap().clone().expect("a stored Lease")
    }

    fn bump(&self, l: &mut Lease) {
        let rv = self.rv.fetch_add(1, Ordering::SeqCst) + 1;
        l.metadata.resource_version = Some(rv.to_string());
    }

    /// Records the call and runs its script; `Some` is the scripted failure.
    fn scripted(&self, verb: &'static str, detail: String) -> Option<LeaseCallError> {
        self.calls.lock().unwrap().push(format!("{verb}{detail}"));
        let mut script = self.script.lock().unwrap();
        let i = script.iter().position(|(v, _)| *v == verb)?;
        let (_, s) = script.remove(i);
        s(&mut self.stored.lock().unwrap())
    }
}

/// The Lease's holder (empty: none).
pub(crate) fn holder_of(l: &Lease) -> String {
    l.spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

impl LeaseApi for ScriptedLease {
    fn get(&self) -> BoxFuture<'_, Result<Option<Lease>, LeaseCallError>> {
        let r = match self.scripted("get", String::new()) {
            Some(e) => Err(e),
            None => {
                let mut stored = self.stored.lock().unwrap();
                if let (true, Some(l)) = (self.renewing.load(Ordering::SeqCst), stored.as_mut()) {
                    l.spec.as_mut().unwrap().renew_time = Some(MicroTime(jiff::Timestamp::now()));
                    self.bump(l);
                }
                Ok(stored.clone())
            }
        };
        Box::pin(async move { r })
    }

    fn create<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseCallError>> {
        let r = match self.scripted("create", format!(" by {}", holder_of(lease))) {
            Some(e) => Err(e),
            None => {
                let mut stored = self.stored.lock().unwrap();
                if stored.is_some() {
                    Err(conflict("AlreadyExists"))
                } else {
                    let mut l = lease.clone();
                    l.metadata.uid = Some(next_uid());
                    self.bump(&mut l);
                    *stored = Some(l.clone());
                    Ok(l)
                }
            }
        };
        Box::pin(async move { r })
    }

    fn replace<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseCallError>> {
        let detail = format!(
            " rv {} by {}",
            lease.metadata.resource_version.as_deref().unwrap_or("-"),
            holder_of(lease)
        );
        let r = match self.scripted("replace", detail) {
            Some(e) => Err(e),
            None => {
                let mut stored = self.stored.lock().unwrap();
                match stored.as_ref() {
                    None => Err(LeaseCallError::NotFound {
                        message: "leases \"x\" not found".into(),
                    }),
                    Some(s) if s.metadata.resource_version != lease.metadata.resource_version => {
                        Err(conflict("Conflict"))
                    }
                    Some(s) => {
                        let mut l = lease.clone();
                        l.metadata.uid = s.metadata.uid.clone();
                        self.bump(&mut l);
                        *stored = Some(l.clone());
                        Ok(l)
                    }
                }
            }
        };
        Box::pin(async move { r })
    }
}

fn conflict(reason: &str) -> LeaseCallError {
    LeaseCallError::Conflict {
        reason: reason.into(),
        message: "the object has been modified; please apply your changes to the latest version"
            .into(),
    }
}

/// The Lease `node`'s agents contend for, held by us.
fn config(node: &str) -> LeaseConfig {
    LeaseConfig::for_node("harvester-system", node, ME.into())
}

/// A Lease held by `holder`, last renewed at `renewed`, 30 s long, stored at rv 5.
pub(crate) fn held_by(node: &str, holder: &str, renewed: jiff::Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(format!("vmrecover-{node}")),
            namespace: Some("harvester-system".into()),
            uid: Some(next_uid()),
            resource_version: Some("5".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(30),
            acquire_time: Some(MicroTime(renewed)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }),
    }
}

/// Long expired by any clock the API server may have told (the epoch).
fn long_ago() -> jiff::Timestamp {
    jiff::Timestamp::UNIX_EPOCH
}

async fn take(
    fake: &Arc<ScriptedLease>,
    node: &str,
    wait: Duration,
) -> Result<HeldLease, LeaseError> {
    acquire_with(fake.clone(), config(node), wait).await
}

fn spec(l: &Lease) -> LeaseSpec {
    l.spec.clone().expect("a spec")
}

#[tokio::test(start_paused = true)]
async fn a_free_lease_is_created_and_renewed_while_held() {
    let fake = ScriptedLease::new(None);
    let held = take(&fake, "free", Duration::ZERO).await.expect("free");
    assert!(held.is_held());
    assert_eq!(
        fake.calls(),
        vec!["get", format!("create by {ME}").as_str()]
    );
    let s = spec(&fake.stored());
    assert_eq!(s.lease_duration_seconds, Some(30));
    assert_eq!(s.lease_transitions, Some(0));

    // Renewed every third of its duration, each with the resourceVersion it last wrote.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(held.is_held());
    assert_eq!(
        fake.calls()[2..],
        [
            format!("replace rv 11 by {ME}"),
            format!("replace rv 12 by {ME}")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn our_own_stale_lease_is_taken_again_at_once_without_a_transition() {
    let fake = ScriptedLease::new(Some(held_by("own", ME, long_ago())));
    let started = Instant::now();
    let held = take(&fake, "own", Duration::ZERO).await.expect("ours");
    assert!(held.is_held());
    assert_eq!(started.elapsed(), Duration::ZERO, "not waited for");
    assert_eq!(
        fake.calls(),
        vec!["get", format!("replace rv 5 by {ME}").as_str()]
    );
    let s = spec(&fake.stored());
    assert_eq!(
        s.lease_transitions,
        Some(3),
        "the same holder: no transition"
    );
    assert_eq!(
        s.acquire_time,
        Some(MicroTime(long_ago())),
        "acquired back then"
    );
    assert_ne!(s.renew_time, Some(MicroTime(long_ago())), "renewed now");
}

/// Another agent that keeps renewing: looked at again every 2 s until `--lease-wait` ends,
/// then refused with its name; nothing is written.
#[tokio::test(start_paused = true)]
async fn a_live_holder_is_waited_for_until_lease_wait_ends_then_named() {
    let fake = ScriptedLease::new(Some(held_by("live", OTHER, jiff::Timestamp::now())));
    fake.renew_on_read();
    let started = Instant::now();
    let Err(err) = take(&fake, "live", Duration::from_secs(10)).await else {
        panic!("a live holder's Lease was taken")
    };
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "waited --lease-wait"
    );
    let LeaseError::HeldByOther { holder, stale, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(holder, OTHER);
    assert!(!stale, "{err}");
    assert!(err.to_string().contains(OTHER), "{err}");
    assert!(err.to_string().contains("--lease-wait"), "{err}");
    let calls = fake.calls();
    assert!(calls.iter().all(|c| c == "get"), "{calls:?}");
    assert_eq!(
        calls.len(),
        6,
        "a look at 0, 2, 4, 6, 8 and 10 s: {calls:?}"
    );
}

/// Another holder's Lease expired by the API server's clock and unchanged: taken over once
/// this run has watched it unchanged for its whole 30 s, even without `--lease-wait`.
#[tokio::test(start_paused = true)]
async fn an_expired_lease_of_another_holder_is_taken_over_after_its_duration() {
    let fake = ScriptedLease::new(Some(held_by("dead", OTHER, long_ago())));
    let started = Instant::now();
    let held = take(&fake, "dead", Duration::ZERO)
        .await
        .expect("taken over");
    assert!(held.is_held());
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "taken after {:?}, before it was seen unchanged for 30 s",
        started.elapsed()
    );
    let calls = fake.calls();
    assert_eq!(
        calls.last().unwrap(),
        &format!("replace rv 5 by {ME}"),
        "{calls:?}"
    );
    assert!(
        calls[..calls.len() - 1].iter().all(|c| c == "get"),
        "{calls:?}"
    );
    let s = spec(&fake.stored());
    assert_eq!(s.holder_identity.as_deref(), Some(ME));
    assert_eq!(s.lease_transitions, Some(4), "one transition");
    assert_ne!(s.acquire_time, Some(MicroTime(long_ago())), "acquired now");
}

/// Another agent creates the Lease between our read and our create: the 409 makes us read
/// it again (not create again), and its holder is named.
#[tokio::test(start_paused = true)]
async fn a_conflict_on_create_reads_again_and_names_the_winner() {
    let fake = ScriptedLease::new(None);
    fake.then(
        "create",
        Box::new(|stored| {
            *stored = Some(held_by("race-create", OTHER, jiff::Timestamp::now()));
            Some(conflict("AlreadyExists"))
        }),
    );
    let Err(LeaseError::HeldByOther { holder, .. }) =
        take(&fake, "race-create", Duration::ZERO).await
    else {
        panic!("the winner's Lease was not respected")
    };
    assert_eq!(holder, OTHER);
    assert_eq!(fake.calls(), vec!["get", &format!("create by {ME}"), "get"]);
}

/// Another agent takes our stale Lease between our read and our update: the 409 makes us
/// read it again, and the winner holds it; its Lease is never overwritten.
#[tokio::test(start_paused = true)]
async fn a_conflict_on_update_reads_again_and_leaves_the_winner_alone() {
    let fake = ScriptedLease::new(Some(held_by("race-update", ME, long_ago())));
    fake.then(
        "replace",
        Box::new(|stored| {
            let l = stored.as_mut().unwrap();
            let s = l.spec.as_mut().unwrap();
            s.holder_identity = Some(OTHER.into());
            s.renew_time = Some(MicroTime(jiff::Timestamp::now()));
            l.metadata.resource_version = Some("6".into());
            Some(conflict("Conflict"))
        }),
    );
    let Err(LeaseError::HeldByOther { holder, .. }) =
        take(&fake, "race-update", Duration::ZERO).await
    else {
        panic!("the winner's Lease was not respected")
    };
    assert_eq!(holder, OTHER);
    assert_eq!(
        fake.calls(),
        vec!["get", &format!("replace rv 5 by {ME}"), "get"]
    );
    assert_eq!(holder_of(&fake.stored()), OTHER);
}

/// A server that answers 409 to every write: bounded, and the error says so.
#[tokio::test(start_paused = true)]
async fn conflicts_without_end_give_up_after_a_few_reads() {
    let fake = ScriptedLease::new(None);
    for _ in 0..10 {
        fake.then("create", Box::new(|_| Some(conflict("AlreadyExists"))));
    }
    let Err(LeaseError::Api(words)) = take(&fake, "conflicts", Duration::ZERO).await else {
        panic!("taken although every write conflicted")
    };
    assert!(
        words.contains("still conflicting after 5 attempts"),
        "{words}"
    );
    let creates = fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("create"))
        .count();
    assert_eq!(creates, 6, "{:?}", fake.calls());
}

/// Another agent took the Lease: our next renewal is refused (409) and the Lease is lost at
/// once: the apply's guard turns false.
#[tokio::test(start_paused = true)]
async fn a_refused_renewal_loses_the_lease() {
    let fake = ScriptedLease::new(None);
    let held = take(&fake, "taken", Duration::ZERO).await.expect("free");
    let guard = held.guard();
    fake.taken_by(OTHER);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(guard.is_held(), "before the renewal");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!guard.is_held(), "lost at the refused renewal");
    assert!(!held.is_held());
    // Released after the loss: nothing is written, the other agent's Lease stays.
    let writes = fake.calls().len();
    held.release().await.expect("nothing to release");
    assert_eq!(fake.calls().len(), writes);
    assert_eq!(holder_of(&fake.stored()), OTHER);
}

/// Renewals that keep failing (the API server unreachable): the Lease counts as lost once
/// it would have expired without one, not before.
#[tokio::test(start_paused = true)]
async fn renewals_that_keep_failing_lose_the_lease_before_it_expires() {
    let fake = ScriptedLease::new(None);
    let held = take(&fake, "unreachable", Duration::ZERO)
        .await
        .expect("free");
    for _ in 0..5 {
        fake.then(
            "replace",
            Box::new(|_| Some(LeaseCallError::Unreachable("connection refused".into()))),
        );
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(held.is_held(), "one failed renewal of three");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        !held.is_held(),
        "the second failure leaves less than a period before expiry"
    );
}

/// Release clears our holder, tested against the resourceVersion we last wrote.
#[tokio::test(start_paused = true)]
async fn release_clears_our_own_lease() {
    let fake = ScriptedLease::new(None);
    let held = take(&fake, "release", Duration::ZERO).await.expect("free");
    held.release().await.expect("released");
    assert_eq!(
        fake.calls(),
        vec!["get", &format!("create by {ME}"), "replace rv 11 by "]
    );
    let s = spec(&fake.stored());
    assert_eq!(s.holder_identity, None);
    assert_eq!(s.lease_duration_seconds, Some(1));
}

/// Another agent wrote the Lease before our renewer noticed: the release's update is
/// refused (409) and their Lease is left as it is.
#[tokio::test(start_paused = true)]
async fn release_never_clears_a_lease_someone_else_holds_by_now() {
    let fake = ScriptedLease::new(None);
    let held = take(&fake, "release-race", Duration::ZERO)
        .await
        .expect("free");
    fake.taken_by(OTHER);
    let err = held.release().await.expect_err("a 409");
    assert!(err.to_string().contains("409"), "{err}");
    assert_eq!(holder_of(&fake.stored()), OTHER);
}

/// A 403 names the verb to grant and the Lease, on every request the take makes.
#[tokio::test(start_paused = true)]
async fn forbidden_names_the_verb_and_the_lease() {
    let forbidden = || {
        Some(LeaseCallError::Forbidden {
            message: "leases.coordination.k8s.io is forbidden".into(),
        })
    };
    let fake = ScriptedLease::new(None);
    fake.then("get", Box::new(move |_| forbidden()));
    let Err(err) = take(&fake, "rbac-get", Duration::ZERO).await else {
        panic!("taken although forbidden")
    };
    let want = "get leases/vmrecover-rbac-get in harvester-system: forbidden";
    assert!(err.to_string().starts_with(want), "{err}");
    assert!(err.to_string().contains("lacks `get`"), "{err}");

    let fake = ScriptedLease::new(None);
    fake.then("create", Box::new(move |_| forbidden()));
    let err = take(&fake, "rbac-create", Duration::ZERO)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("lacks `create`"), "{err}");

    let fake = ScriptedLease::new(Some(held_by("rbac-update", ME, long_ago())));
    fake.then("replace", Box::new(move |_| forbidden()));
    let err = take(&fake, "rbac-update", Duration::ZERO)
        .await
        .err()
        .unwrap();
    let want = "update leases/vmrecover-rbac-update in harvester-system: forbidden";
    assert!(err.to_string().starts_with(want), "{err}");
    assert_eq!(fake.calls().len(), 2, "a refusal is not retried");
}
