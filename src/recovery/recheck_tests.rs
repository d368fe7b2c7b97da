//! The re-check against scripted facts, in tokio's paused time: VMs asking within the batch
//! window share one round of reads, a round serves only the VMs that asked before it
//! started, a fresh decision that now blocks aborts with the planner's own kind, and
//! orphans are decided again before a kill.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::{sleep, Instant};

use super::fixtures::{facts, proc_for, pv, pvc, vm, vmi, OTHER_MACHINE_ID};
use super::model::{Action, Decision, Facts, HostIdentity, Narrow, Plan, Step};
use super::recheck::{Recheck, Regather};
use super::Blocker;
use crate::cluster::ClaimedVmi;
use crate::config::Policy;
use crate::evidence::Gathered;
use crate::node::ProcessKind;

/// How long one round of reads takes.
const READ: Duration = Duration::from_millis(50);

/// The node as the re-check reads it: a read takes [`READ`] and returns the facts as they
/// were when it began; each round's narrowing and start are recorded.
struct Node {
    facts: Mutex<Facts>,
    rounds: Mutex<Vec<(Narrow, Instant)>>,
}

impl Node {
    fn new(f: Facts) -> Arc<Self> {
        Arc::new(Node {
            facts: Mutex::new(f),
            rounds: Mutex::new(Vec::new()),
        })
    }

    fn change(&self, f: impl FnOnce(&mut Facts)) {
        f(&mut self.facts.lock().unwrap());
    }

    fn rounds(&self) -> Vec<(Narrow, Instant)> {
        self.rounds.lock().unwrap().clone()
    }
}

impl Regather for Node {
    fn facts<'a>(&'a self, narrow: &'a Narrow) -> BoxFuture<'a, Facts> {
        let now = self.facts.lock().unwrap().clone();
        self.rounds
            .lock()
            .unwrap()
            .push((narrow.clone(), Instant::now()));
        Box::pin(async move {
            sleep(READ).await;
            now
        })
    }
}

/// Honours a pause (so a pause set by a test refuses the fresh plan), kills orphans.
fn policy() -> Policy {
    Policy {
        honour_pause: true,
        kill_orphans: true,
        ..Policy::default()
    }
}

/// The fixture's node with stuck VMs `names`, nothing of them here.
fn node_with(names: &[&str]) -> Facts {
    let mut f = facts();
    f.cluster.vmis = Gathered::read(names.iter().map(|n| vmi(n)).collect());
    f.cluster.vms = Gathered::read(names.iter().map(|n| vm(n)).collect());
    f.cluster.pvcs = Gathered::read(names.iter().map(|n| pvc(n)).collect());
    f.cluster.pvs = Gathered::read(names.iter().map(|n| pv(n)).collect());
    f.cluster.attachments = Gathered::read(vec![]);
    f
}

/// The plan for `f`, and each decision with its steps (all "recover").
fn planned(f: &Facts) -> (Plan, Vec<(Decision, Vec<Step>)>) {
    let plan = crate::recovery::plan(f, &policy());
    let decided = plan
        .decisions
        .iter()
        .map(|d| match &d.action {
            Action::Recover { steps } => (d.clone(), steps.clone()),
            other => panic!("the fixture recovers: {other:?} {d:#?}"),
        })
        .collect();
    (plan, decided)
}

/// Three VMs asking 0, 10 and 20 ms apart, within the first one's 25 ms window: one round
/// of reads, narrowed to the three of them.
#[tokio::test(start_paused = true)]
async fn vms_asking_within_the_batch_window_share_one_round() {
    let node = Node::new(node_with(&["a", "b", "c"]));
    let (plan, decided) = planned(&node.facts.lock().unwrap());
    let rc = Recheck::new(node.clone(), &plan);
    let asks = decided.iter().enumerate().map(|(i, (d, steps))| {
        let rc = &rc;
        async move {
            sleep(Duration::from_millis(10 * i as u64)).await;
            rc.before_change(d, steps).await
        }
    });
    for r in futures::future::join_all(asks).await {
        r.expect("still the plan");
    }
    let rounds = node.rounds();
    assert_eq!(rounds.len(), 1, "one round for the batch: {rounds:?}");
    let mut all = Narrow::default();
    for (d, _) in &decided {
        all.extend(&Narrow::of(d));
    }
    assert_eq!(rounds[0].0, all);
}

/// The same VM asks again 5 ms after a round began reading: that round's answer (read
/// before the pause) is not its answer; a new round reads the pause and refuses.
#[tokio::test(start_paused = true)]
async fn a_round_serves_only_the_vms_that_asked_before_it_started() {
    let node = Node::new(node_with(&["a"]));
    let (plan, decided) = planned(&node.facts.lock().unwrap());
    let (d, steps) = &decided[0];
    let rc = Recheck::new(node.clone(), &plan);
    let start = Instant::now();
    let first = rc.before_change(d, steps);
    let second = async {
        sleep(Duration::from_millis(30)).await;
        assert_eq!(node.rounds().len(), 1, "the first round is reading");
        node.change(|f| f.cluster.harvester.node_paused = Some("disk swap".into()));
        (Instant::now(), rc.before_change(d, steps).await)
    };
    let (first, (asked, second)) = futures::future::join(first, second).await;
    first.expect("the first question's round read before the pause");
    let abort = second.expect_err("the second question sees the pause");
    assert_eq!(abort.blocker, Blocker::Paused, "{abort:?}");
    let rounds = node.rounds();
    assert_eq!(rounds.len(), 2, "{rounds:?}");
    assert!(
        rounds[1].1 >= asked,
        "the second round began {:?} after the start, the question {:?}",
        rounds[1].1 - start,
        asked - start
    );
}

/// What the fresh decision (or the fresh plan) says now decides the abort's kind, in the
/// planner's own words.
#[tokio::test(start_paused = true)]
async fn a_fresh_decision_that_now_blocks_aborts_with_its_typed_reason() {
    type Change = fn(&mut Facts);
    let cases: [(&str, Change, Blocker); 4] = [
        (
            "its qemu is back",
            |f| f.local.processes = Gathered::read(vec![proc_for("a", ProcessKind::Qemu)]),
            Blocker::LiveProcess,
        ),
        (
            "the node is paused",
            |f| f.cluster.harvester.node_paused = Some("disk swap".into()),
            Blocker::Paused,
        ),
        (
            "the VMIs cannot be read",
            |f| f.cluster.vmis = Gathered::unreadable("list virtualmachineinstances", "503"),
            Blocker::ClusterUnreadable,
        ),
        (
            "another machine answers as this host",
            |f| {
                f.host = Gathered::read(HostIdentity {
                    machine_id: OTHER_MACHINE_ID.into(),
                    boot_id: super::fixtures::BOOT_ID.into(),
                })
            },
            Blocker::IdentityMismatch,
        ),
    ];
    for (what, change, blocker) in cases {
        let node = Node::new(node_with(&["a"]));
        let (plan, decided) = planned(&node.facts.lock().unwrap());
        let (d, steps) = &decided[0];
        let rc = Recheck::new(node.clone(), &plan);
        rc.before_change(d, steps).await.expect("unchanged");
        node.change(change);
        let abort = rc.before_change(d, steps).await.expect_err(what);
        assert_eq!(abort.blocker, blocker, "{what}: {abort:?}");
        assert!(!abort.detail.is_empty(), "{what}");
    }
}

/// An orphan qemu (no VMI anywhere claims it) is killed only while the planner re-run on
/// the whole node still calls it an orphan with the same pid and start.
#[tokio::test(start_paused = true)]
async fn orphans_are_decided_again_before_a_kill() {
    let orphaned = || {
        let mut f = facts();
        f.local.processes = Gathered::read(vec![proc_for("ghost", ProcessKind::Qemu)]);
        f.cluster.claimed = Gathered::read(vec![ClaimedVmi {
            namespace: "default".into(),
            name: "ghost".into(),
            vmi: None,
        }]);
        f
    };
    type Change = fn(&mut Facts);
    let cases: [(&str, Change, Option<&str>); 4] = [
        ("unchanged", |_| {}, None),
        (
            "gone",
            |f| f.local.processes = Gathered::read(vec![]),
            Some("no longer an orphan"),
        ),
        (
            "its pid reused by another start",
            |f| {
                if let Gathered::Read { value } = &mut f.local.processes {
                    value[0].start_time += 1;
                }
            },
            Some("no longer an orphan"),
        ),
        (
            "the VMIs cannot be read",
            |f| f.cluster.vmis = Gathered::unreadable("list virtualmachineinstances", "503"),
            Some("no longer an orphan"),
        ),
    ];
    for (what, change, refused) in cases {
        let node = Node::new(orphaned());
        let plan = crate::recovery::plan(&node.facts.lock().unwrap(), &policy());
        let orphan = plan.orphans.first().expect("the fixture's orphan").clone();
        assert!(orphan.kill, "{orphan:?}");
        let rc = Recheck::new(node.clone(), &plan);
        node.change(change);
        let r = rc.orphan_still(&orphan).await;
        match (refused, r) {
            (None, Ok(())) => {}
            (Some(words), Err(abort)) => {
                assert_eq!(abort.blocker, Blocker::PlanChanged, "{what}: {abort:?}");
                assert!(abort.detail.contains(words), "{what}: {abort:?}");
            }
            (want, got) => panic!("{what}: wanted {want:?}, got {got:?}"),
        }
        let rounds = node.rounds();
        assert_eq!(rounds.len(), 1, "{what}");
        assert_eq!(rounds[0].0, Narrow::default(), "{what}: the whole node");
    }
}
