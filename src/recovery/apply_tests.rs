//! Apply, the re-check, the session and the Lease against a scripted cluster: each step's
//! calls are recorded, each finalizer patch is answered from a script that may change the
//! facts the re-check reads next, and the real planner decides every re-check.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::apply_io::{ApplyCluster, EventNote, FinalizerPatch, Patched, PodNotDeleted, Waited};
use super::fixtures::{facts, proc_for, vmi, ME};
use super::intents::{IntentStore, RecoveryIntent};
use super::model::{Action, Decision, Facts, Narrow, Plan, Step};
use super::recheck::Regather;
use super::report::{ReportStore, RunReport, VmResult};
use super::session::Session;
use super::{plan, Blocker, Mode};
use crate::cluster::{LeaseGuard, ObjectKey, RequestFailed};
use crate::config::{Policy, Tuning};
use crate::evidence::Gathered;
use crate::node::ProcessKind;

/// The facts every re-check reads: the test (or the scripted cluster) changes them (also
/// used by the session's tests).
#[derive(Clone)]
pub(super) struct World(pub(super) Arc<Mutex<Facts>>);

impl World {
    pub(super) fn new(f: Facts) -> Self {
        World(Arc::new(Mutex::new(f)))
    }

    pub(super) fn change(&self, f: impl FnOnce(&mut Facts)) {
        f(&mut self.0.lock().unwrap());
    }
}

impl Regather for World {
    fn facts<'a>(&'a self, _narrow: &'a Narrow) -> BoxFuture<'a, Facts> {
        let now = self.0.lock().unwrap().clone();
        Box::pin(async move { now })
    }
}

/// What the scripted cluster does when a finalizer patch arrives: its answer, and a change
/// to the world or the Lease that comes with it.
type Effect = Box<dyn FnOnce(&World, &LeaseGuard) + Send>;

/// A cluster that records every call and answers finalizer patches from a script (then
/// `Done`).
struct Scripted {
    world: World,
    lease: LeaseGuard,
    calls: Mutex<Vec<String>>,
    patches: Mutex<VecDeque<(Patched, Option<Effect>)>>,
    waited: Waited,
    during_wait: Mutex<Option<Effect>>,
}

impl Scripted {
    fn new(world: &World, lease: &LeaseGuard) -> Self {
        Scripted {
            world: world.clone(),
            lease: lease.clone(),
            calls: Mutex::new(Vec::new()),
            patches: Mutex::new(VecDeque::new()),
            waited: Waited::default(),
            during_wait: Mutex::new(None),
        }
    }

    fn answer(self, patched: Patched, then: Option<Effect>) -> Self {
        self.patches.lock().unwrap().push_back((patched, then));
        self
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl ApplyCluster for Scripted {
    fn free_pod<'a>(&'a self, pod: &'a ObjectKey) -> BoxFuture<'a, Result<(), PodNotDeleted>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("delete pod {}", pod.name));
        Box::pin(async { Ok(()) })
    }

    fn wait_for_controllers<'a>(
        &'a self,
        _d: &'a Decision,
        _grace: Duration,
    ) -> BoxFuture<'a, Waited> {
        self.calls.lock().unwrap().push("wait".into());
        if let Some(effect) = self.during_wait.lock().unwrap().take() {
            effect(&self.world, &self.lease);
        }
        let waited = self.waited;
        Box::pin(async move { waited })
    }

    fn patch_finalizers<'a>(&'a self, p: FinalizerPatch<'a>) -> BoxFuture<'a, Patched> {
        self.calls.lock().unwrap().push(format!(
            "patch {} {} rv {} keep [{}]",
            p.kind,
            p.object.name,
            p.resource_version,
            p.keep.join(",")
        ));
        let (answer, effect) = self
            .patches
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((Patched::Done, None));
        if let Some(effect) = effect {
            effect(&self.world, &self.lease);
        }
        Box::pin(async move { answer })
    }

    fn event<'a>(&'a self, e: EventNote<'a>) -> BoxFuture<'a, Result<(), RequestFailed>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("event {} {}", e.action, e.about.name));
        Box::pin(async { Ok(()) })
    }
}

/// A kube client that is never called (the session's own requests, the Lease, are not
/// part of these tests): every request fails.
fn offline_client() -> kube::Client {
    let svc = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
        Err::<http::Response<http_body_util::Empty<hyper::body::Bytes>>, _>(std::io::Error::other(
            "no API server in unit tests",
        ))
    });
    kube::Client::new(svc, "default")
}

/// A session in `state_dir` whose re-checks read `world`, and the sender of its stop signal
/// (kept while it runs: a dropped sender reads as a stop to the controller wait).
pub(super) fn session(
    state_dir: &std::path::Path,
    world: &World,
) -> (Session, tokio::sync::watch::Sender<bool>) {
    let (stop, cancel) = tokio::sync::watch::channel(false);
    let s = Session {
        client: offline_client(),
        node: ME.into(),
        namespace: "harvester-system".into(),
        state_dir: state_dir.to_path_buf(),
        tuning: Tuning::default(),
        mode: Mode::Agent,
        lease_wait: Duration::ZERO,
        cancel,
        regather: Arc::new(world.clone()),
        progress: None,
    };
    (s, stop)
}

/// No controller wait: the steps are the two finalizer clears.
pub(super) fn no_wait() -> Policy {
    Policy {
        controller_grace: Duration::ZERO,
        ..Policy::default()
    }
}

fn planned(f: &Facts, policy: &Policy) -> Plan {
    let p = plan(f, policy);
    assert!(
        matches!(p.decisions[0].action, Action::Recover { .. }),
        "{p:#?}"
    );
    p
}

/// Runs `p` in a session under a held Lease with `cluster`; the report as saved.
async fn run(state: &std::path::Path, world: &World, cluster: Arc<Scripted>, p: Plan) -> RunReport {
    let lease = cluster.lease.clone();
    let (s, _stop) = session(state, world);
    let ctx = s.context(&p, cluster, lease);
    let report = s.under_lease(p, jiff::Timestamp::UNIX_EPOCH, &ctx).await;
    let saved = ReportStore::new(state).load();
    assert_eq!(
        saved.value(),
        Some(&Some(report.clone())),
        "the report is saved"
    );
    report
}

fn the_result(r: &RunReport) -> &VmResult {
    assert_eq!(r.outcomes.len(), 1, "{r:#?}");
    &r.outcomes[0].result
}

/// The VM's patch conflicts after the VMI's went through: the planner decides again on what
/// is there now (the VMI gone, the VM at a new resourceVersion, the earlier run's intent),
/// finds it still within the plan, and the patch is retried on the fresh version.
#[tokio::test]
async fn a_conflict_on_the_vm_patch_after_the_vmi_patch_is_re_decided_and_retried() {
    let state = tempfile::tempdir().unwrap();
    let world = World::new(facts());
    let lease = LeaseGuard::always();
    let vmi_gone: Effect = Box::new(|w: &World, _: &LeaseGuard| {
        w.change(|f| {
            f.cluster.vmis = Gathered::read(vec![]);
            f.intents = Gathered::read(vec![RecoveryIntent {
                namespace: "default".into(),
                name: "a".into(),
                vm_uid: "uid-vm-a".into(),
                vmi_uid: "uid-vmi-a".into(),
                pvcs: vec!["a-disk".into()],
                disks: vec![],
                started: jiff::Timestamp::UNIX_EPOCH,
            }]);
        })
    });
    let vm_moved: Effect = Box::new(|w: &World, _: &LeaseGuard| {
        w.change(|f| {
            if let Gathered::Read { value } = &mut f.cluster.vms {
                value[0].key.resource_version = "101".into();
            }
        })
    });
    let cluster = Arc::new(
        Scripted::new(&world, &lease)
            .answer(Patched::Done, Some(vmi_gone))
            .answer(Patched::Moved, Some(vm_moved)),
    );
    let p = planned(&world.0.lock().unwrap().clone(), &no_wait());
    let report = run(state.path(), &world, cluster.clone(), p).await;

    assert_eq!(the_result(&report), &VmResult::Recovered, "{report:#?}");
    let calls = cluster.calls();
    assert_eq!(
        calls,
        vec![
            "patch vmi a rv 100 keep []",
            "patch vm a rv 100 keep []",
            "patch vm a rv 101 keep []",
            "event ClearFinalizers a",
        ],
        "{report:#?}"
    );
    // The VM's intent was recorded before the first change and forgotten once it is done.
    let left = IntentStore::new(state.path()).load_state();
    assert!(left.value().unwrap().intents.is_empty(), "{left:?}");
}

/// A finalizer added to the VM since the plan: the re-check after the conflict leaves the
/// VM alone, with the planner's typed reason, and the VM is not patched again.
#[tokio::test]
async fn a_finalizer_added_since_the_plan_leaves_the_vm_alone() {
    let state = tempfile::tempdir().unwrap();
    let world = World::new(facts());
    let lease = LeaseGuard::always();
    let added: Effect = Box::new(|w: &World, _: &LeaseGuard| {
        w.change(|f| {
            if let Gathered::Read { value } = &mut f.cluster.vms {
                value[0]
                    .finalizers
                    .push("kubevirt.io/virtualMachineControllerFinalize-2".into());
                value[0].key.resource_version = "101".into();
            }
        })
    });
    let cluster = Arc::new(
        Scripted::new(&world, &lease)
            .answer(Patched::Done, None)
            .answer(Patched::Moved, Some(added)),
    );
    let p = planned(&world.0.lock().unwrap().clone(), &no_wait());
    let report = run(state.path(), &world, cluster.clone(), p).await;
    let VmResult::Aborted(abort) = the_result(&report) else {
        panic!("{report:#?}")
    };
    assert_eq!(abort.blocker, Blocker::UnknownFinalizer, "{abort:?}");
    assert_eq!(
        cluster.calls(),
        vec![
            "patch vmi a rv 100 keep []",
            "patch vm a rv 100 keep []",
            "event ClearFinalizers a",
        ]
    );
}

/// The re-check right before the first change finds the VM's qemu back: nothing is sent, and
/// the outcome carries the planner's own kind and words.
#[tokio::test]
async fn a_recheck_that_now_blocks_aborts_with_its_typed_reason() {
    let state = tempfile::tempdir().unwrap();
    let world = World::new(facts());
    let p = planned(&world.0.lock().unwrap().clone(), &no_wait());
    world.change(|f| {
        f.local.processes = Gathered::read(vec![proc_for("a", ProcessKind::Qemu)]);
    });
    let lease = LeaseGuard::always();
    let cluster = Arc::new(Scripted::new(&world, &lease));
    let report = run(state.path(), &world, cluster.clone(), p).await;
    let VmResult::Aborted(abort) = the_result(&report) else {
        panic!("{report:#?}")
    };
    assert_eq!(abort.blocker, Blocker::LiveProcess);
    assert!(abort.detail.contains("pid 4242 (qemu)"), "{abort:?}");
    assert!(cluster.calls().is_empty(), "{:?}", cluster.calls());
    assert_eq!(report.aborted(), 1);
}

/// A pause set during the controller wait: the re-check after the wait refuses, and the
/// abort says `paused`.
#[tokio::test]
async fn a_pause_during_the_wait_stops_the_next_change() {
    let state = tempfile::tempdir().unwrap();
    let world = World::new(facts());
    let policy = Policy {
        honour_pause: true,
        ..Policy::default()
    };
    let p = planned(&world.0.lock().unwrap().clone(), &policy);
    let lease = LeaseGuard::always();
    let cluster = Scripted::new(&world, &lease);
    *cluster.during_wait.lock().unwrap() = Some(Box::new(|w: &World, _: &LeaseGuard| {
        w.change(|f| f.cluster.harvester.node_paused = Some("disk swap".into()))
    }));
    let cluster = Arc::new(cluster);
    let report = run(state.path(), &world, cluster.clone(), p).await;
    let VmResult::Aborted(abort) = the_result(&report) else {
        panic!("{report:#?}")
    };
    assert_eq!(abort.blocker, Blocker::Paused, "{abort:?}");
    assert_eq!(cluster.calls(), vec!["wait"]);
}

/// The Lease is lost while the VMI is patched: the VM's patch is never sent, the outcome is
/// `lease_lost` naming what was done, one Event says so, and the session's report says the
/// run stopped.
#[tokio::test]
async fn a_lease_lost_mid_run_stops_before_the_next_change() {
    let state = tempfile::tempdir().unwrap();
    let world = World::new(facts());
    let lease = LeaseGuard::always();
    let lost: Effect = Box::new(|_: &World, l: &LeaseGuard| l.lose());
    let cluster = Arc::new(Scripted::new(&world, &lease).answer(Patched::Done, Some(lost)));
    let p = planned(&world.0.lock().unwrap().clone(), &no_wait());
    let report = run(state.path(), &world, cluster.clone(), p).await;
    let VmResult::Aborted(abort) = the_result(&report) else {
        panic!("{report:#?}")
    };
    assert_eq!(abort.blocker, Blocker::LeaseLost);
    assert!(
        abort.detail.contains("were removed from the vmi"),
        "{abort:?}"
    );
    assert_eq!(
        cluster.calls(),
        vec!["patch vmi a rv 100 keep []", "event ClearFinalizers a"]
    );
    assert_eq!(
        report.stopped.as_deref(),
        Some("the node Lease was lost during the run")
    );
}

/// A session resumes what an earlier run started: the VMI is gone, its VM still deleting
/// with an intent recorded; the planner decides the VM from the intent, the session clears
/// the VM's finalizers and forgets the intent.
#[tokio::test]
async fn a_session_resumes_an_intent() {
    let state = tempfile::tempdir().unwrap();
    let intent = RecoveryIntent {
        namespace: "default".into(),
        name: "a".into(),
        vm_uid: "uid-vm-a".into(),
        vmi_uid: vmi("a").key.uid,
        pvcs: vec!["a-disk".into()],
        disks: vec![],
        started: jiff::Timestamp::UNIX_EPOCH,
    };
    IntentStore::new(state.path()).add(intent.clone()).unwrap();
    let mut f = facts();
    f.cluster.vmis = Gathered::read(vec![]);
    f.intents = Gathered::read(vec![intent]);
    let world = World::new(f.clone());
    let p = planned(&f, &Policy::default());
    let Action::Recover { steps } = &p.decisions[0].action else {
        unreachable!()
    };
    assert!(
        matches!(steps.as_slice(), [Step::ClearFinalizers { kind, .. }] if *kind == super::ObjectKind::Vm),
        "{steps:?}"
    );
    let lease = LeaseGuard::always();
    let cluster = Arc::new(Scripted::new(&world, &lease));
    let report = run(state.path(), &world, cluster.clone(), p).await;
    assert_eq!(the_result(&report), &VmResult::Recovered, "{report:#?}");
    assert_eq!(
        cluster.calls(),
        vec!["patch vm a rv 100 keep []", "event ClearFinalizers a"]
    );
    let left = IntentStore::new(state.path()).load_state();
    assert!(left.value().unwrap().intents.is_empty(), "{left:?}");
    assert_eq!(report.stopped, None);
}

/// A denial of the VMI patch is final: reported once with the server's words, the VM is
/// not touched, nothing was changed so no Event is sent.
#[tokio::test]
async fn a_denied_vmi_patch_fails_the_vm_without_touching_its_vm() {
    let state = tempfile::tempdir().unwrap();
    let world = World::new(facts());
    let lease = LeaseGuard::always();
    let denied = "admission webhook \"x\" denied the request: no";
    let cluster =
        Arc::new(Scripted::new(&world, &lease).answer(Patched::Refused(denied.into()), None));
    let p = planned(&world.0.lock().unwrap().clone(), &no_wait());
    let report = run(state.path(), &world, cluster.clone(), p).await;
    assert_eq!(
        the_result(&report),
        &VmResult::Failed {
            reason: denied.into()
        }
    );
    assert_eq!(cluster.calls(), vec!["patch vmi a rv 100 keep []"]);
    assert_eq!(report.failed(), 1);
}
