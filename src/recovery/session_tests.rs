//! The session as a whole against a scripted API server, in tokio's paused time: the Lease's
//! requests and the plan's changes in one log, so the order is checked — no change before
//! the Lease is held, none after it is lost, the release last — and the stale intents
//! pruned, the report saved.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::apply_io::{ApplyCluster, EventNote, FinalizerPatch, Patched, PodNotDeleted, Waited};
use super::apply_tests::{no_wait, session, World};
use super::fixtures::facts;
use super::intents::{IntentStore, RecoveryIntent};
use super::model::{Decision, Facts};
use super::report::{ReportStore, VmResult};
use super::session::lease_identity;
use super::{plan, Blocker, Mode};
use crate::cluster::lease_tests::{held_by, holder_of, ScriptedLease, OTHER};
use crate::cluster::{LeaseError, ObjectKey, RequestFailed};
use crate::config::Policy;
use crate::evidence::Gathered;

/// The plan's requests, logged in the scripted Lease's log; the controller wait lasts
/// `wait` and runs `during_wait` when it begins.
struct Cluster {
    log: Arc<ScriptedLease>,
    wait: Duration,
    during_wait: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Cluster {
    fn new(log: &Arc<ScriptedLease>) -> Arc<Self> {
        Arc::new(Cluster {
            log: log.clone(),
            wait: Duration::ZERO,
            during_wait: Mutex::new(None),
        })
    }
}

impl ApplyCluster for Cluster {
    fn free_pod<'a>(&'a self, pod: &'a ObjectKey) -> BoxFuture<'a, Result<(), PodNotDeleted>> {
        self.log.log(format!("delete pod {}", pod.name));
        Box::pin(async { Ok(()) })
    }

    fn wait_for_controllers<'a>(
        &'a self,
        _d: &'a Decision,
        _grace: Duration,
    ) -> BoxFuture<'a, Waited> {
        self.log.log("wait".into());
        if let Some(during) = self.during_wait.lock().unwrap().take() {
            during();
        }
        Box::pin(async move {
            tokio::time::sleep(self.wait).await;
            Waited::default()
        })
    }

    fn patch_finalizers<'a>(&'a self, p: FinalizerPatch<'a>) -> BoxFuture<'a, Patched> {
        self.log.log(format!("patch {} {}", p.kind, p.object.name));
        Box::pin(async { Patched::Done })
    }

    fn event<'a>(&'a self, e: EventNote<'a>) -> BoxFuture<'a, Result<(), RequestFailed>> {
        self.log.log(format!("event {} {}", e.action, e.about.name));
        Box::pin(async { Ok(()) })
    }
}

/// The fixture's VM `a`, and an intent an earlier run left for a VM that is gone since.
fn with_a_stale_intent(state: &std::path::Path) -> Facts {
    let gone = RecoveryIntent {
        namespace: "default".into(),
        name: "gone".into(),
        vm_uid: "uid-vm-gone".into(),
        vmi_uid: "uid-vmi-gone".into(),
        pvcs: vec![],
        disks: vec![],
        started: jiff::Timestamp::UNIX_EPOCH,
    };
    IntentStore::new(state).add(gone.clone()).unwrap();
    let mut f = facts();
    f.intents = Gathered::read(vec![gone]);
    f
}

fn remembered(state: &std::path::Path) -> Vec<String> {
    let intents = IntentStore::new(state).load_state();
    let intents = intents.value().expect("readable").intents.clone();
    intents.iter().map(|i| i.name.clone()).collect()
}

/// Our identity (the session's mode, node and this process).
fn me() -> String {
    lease_identity(Mode::Agent, "n1")
}

/// The Lease taken first, the VM's changes, the release last; the gone VM's intent is
/// forgotten and the report saved as returned.
#[tokio::test(start_paused = true)]
async fn the_lease_is_held_from_before_the_first_change_until_after_the_last() {
    let state = tempfile::tempdir().unwrap();
    let f = with_a_stale_intent(state.path());
    let world = World::new(f.clone());
    let p = plan(&f, &no_wait());
    assert_eq!(p.stale_intents.len(), 1, "{:#?}", p.stale_intents);
    let lease = ScriptedLease::new(None);
    let (s, _stop) = session(state.path(), &world);
    let report = s
        .apply_through(
            p,
            jiff::Timestamp::UNIX_EPOCH,
            lease.clone(),
            Cluster::new(&lease),
        )
        .await
        .expect("the Lease is free");

    assert_eq!(
        lease.calls(),
        vec![
            "get".to_string(),
            format!("create by {}", me()),
            "patch vmi a".into(),
            "patch vm a".into(),
            "event ClearFinalizers a".into(),
            "replace rv 11 by ".into(),
        ]
    );
    assert_eq!(
        report.outcomes[0].result,
        VmResult::Recovered,
        "{report:#?}"
    );
    assert_eq!(report.stopped, None);
    assert_eq!(report.pruned_intents.len(), 1, "{report:#?}");
    assert!(
        report.pruned_intents[0].contains("the VM is gone"),
        "{report:#?}"
    );
    assert!(
        remembered(state.path()).is_empty(),
        "both intents forgotten"
    );
    let saved = ReportStore::new(state.path()).load();
    assert_eq!(saved.value(), Some(&Some(report)), "the report is saved");
}

/// Another agent holds the Lease and renews it: nothing but reads, no report, the earlier
/// run's intent kept.
#[tokio::test(start_paused = true)]
async fn nothing_is_changed_while_another_agent_holds_the_lease() {
    let state = tempfile::tempdir().unwrap();
    let f = with_a_stale_intent(state.path());
    let world = World::new(f.clone());
    let lease = ScriptedLease::new(Some(held_by("n1", OTHER, jiff::Timestamp::now())));
    lease.renew_on_read();
    let (s, _stop) = session(state.path(), &world);
    let r = s
        .apply_through(
            plan(&f, &no_wait()),
            jiff::Timestamp::UNIX_EPOCH,
            lease.clone(),
            Cluster::new(&lease),
        )
        .await;
    let Err(LeaseError::HeldByOther { holder, .. }) = r else {
        panic!("applied under another agent's Lease")
    };
    assert_eq!(holder, OTHER);
    assert_eq!(lease.calls(), vec!["get"]);
    assert_eq!(remembered(state.path()), vec!["gone"]);
    let saved = ReportStore::new(state.path()).load();
    assert_eq!(saved.value(), Some(&None), "no report: nothing ran");
}

/// Another agent takes the Lease during the controller wait: the renewal 10 s in is
/// refused, and after the wait neither a finalizer patch nor the release is sent.
#[tokio::test(start_paused = true)]
async fn no_change_is_sent_after_the_lease_is_lost() {
    let state = tempfile::tempdir().unwrap();
    let f = facts();
    let world = World::new(f.clone());
    let p = plan(&f, &Policy::default());
    let lease = ScriptedLease::new(None);
    let taker = lease.clone();
    let cluster = Arc::new(Cluster {
        log: lease.clone(),
        wait: Duration::from_secs(15),
        during_wait: Mutex::new(Some(Box::new(move || taker.taken_by(OTHER)))),
    });
    let (s, _stop) = session(state.path(), &world);
    let report = s
        .apply_through(p, jiff::Timestamp::UNIX_EPOCH, lease.clone(), cluster)
        .await
        .expect("the Lease was free at the start");

    assert_eq!(
        lease.calls(),
        vec![
            "get".to_string(),
            format!("create by {}", me()),
            "wait".into(),
            format!("replace rv 11 by {}", me()),
        ],
        "the refused renewal is the last request"
    );
    let VmResult::Aborted(abort) = &report.outcomes[0].result else {
        panic!("{report:#?}")
    };
    assert_eq!(abort.blocker, Blocker::LeaseLost, "{abort:?}");
    assert_eq!(
        report.stopped.as_deref(),
        Some("the node Lease was lost during the run")
    );
    assert_eq!(
        holder_of(&lease.stored()),
        OTHER,
        "their Lease stays theirs"
    );
}
