//! The fenced-node liveness rule, table-driven from [`fenced_facts`] (node `n1` dead for a
//! day, its signs an hour old, watched 2 min 12 s, run from another machine).

use super::super::fixtures::*;
use super::super::model::HostIdentity;
use super::super::plan::plan;
use super::*;
use crate::cluster::{LifeSigns, Look};

fn fenced_policy() -> Policy {
    Policy {
        fenced: true,
        ..Policy::default()
    }
}

fn signs(f: &mut Facts) -> &mut LifeSigns {
    f.cluster
        .harvester
        .life_signs
        .as_mut()
        .expect("fenced_facts reads signs")
}

fn second(f: &mut Facts) -> &mut Look {
    signs(f).second.as_mut().expect("a watch")
}

fn set(look: &mut Look, kind: SignKind, r: Gathered<Option<Reading>>) {
    for (k, g) in &mut look.signs {
        if *k == kind {
            *g = r.clone();
        }
    }
}

fn stamped(stamp: jiff::Timestamp) -> Gathered<Option<Reading>> {
    Gathered::read(Some(Reading {
        stamp: Some(stamp),
        value: format!("stamp {stamp}"),
        says_alive: false,
    }))
}

fn refused(f: &Facts) -> (Option<Blocker>, String) {
    let p = plan(f, &fenced_policy());
    (
        p.refused_by(),
        p.refused.map(|r| r.text).unwrap_or_default(),
    )
}

#[test]
fn a_dead_node_from_another_machine_is_not_refused() {
    let p = plan(&fenced_facts(), &fenced_policy());
    assert_eq!(p.refused_by(), None, "{p:#?}");
    assert!(p.has_work());
}

#[test]
fn each_sign_of_life_refuses_and_names_itself() {
    type Case = (&'static str, Mutation<Facts>, Blocker, &'static str);
    let now = fenced_facts().now;
    let cases: Vec<Case> = vec![
        (
            "this machine is the node",
            Box::new(|f: &mut Facts| {
                f.host = Gathered::read(HostIdentity {
                    machine_id: MACHINE_ID.into(),
                    boot_id: BOOT_ID.into(),
                })
            }),
            Blocker::FencedNodeAlive,
            "this machine is n1",
        ),
        (
            "heartbeat a minute old by the server's clock",
            Box::new(move |f: &mut Facts| {
                let s = stamped(now - jiff::SignedDuration::from_secs(60));
                set(&mut signs(f).first, SignKind::Heartbeat, s.clone());
                set(second(f), SignKind::Heartbeat, s);
            }),
            Blocker::FencedNodeAlive,
            "heartbeat on Node n1",
        ),
        (
            "Lease renewed in the future (NODE's clock ahead)",
            Box::new(move |f: &mut Facts| {
                let s = stamped(now + jiff::SignedDuration::from_secs(600));
                set(&mut signs(f).first, SignKind::Lease, s.clone());
                set(second(f), SignKind::Lease, s);
            }),
            Blocker::FencedNodeAlive,
            "in the future",
        ),
        (
            "heartbeat an hour old by the server's clock but moving (NODE's clock behind)",
            Box::new(move |f: &mut Facts| {
                set(
                    second(f),
                    SignKind::Heartbeat,
                    stamped(now - jiff::SignedDuration::from_mins(58)),
                );
            }),
            Blocker::FencedNodeAlive,
            "while vmrecover watched",
        ),
        (
            "a summary appears during the watch",
            Box::new(move |f: &mut Facts| {
                set(
                    second(f),
                    SignKind::Summary,
                    stamped(now - jiff::SignedDuration::from_hours(3)),
                );
            }),
            Blocker::FencedNodeAlive,
            "from (absent)",
        ),
        (
            "Longhorn says Ready",
            Box::new(|f: &mut Facts| {
                set(
                    second(f),
                    SignKind::LonghornNode,
                    Gathered::read(Some(Reading {
                        stamp: None,
                        value: "Ready=True".into(),
                        says_alive: true,
                    })),
                );
            }),
            Blocker::FencedNodeAlive,
            "Longhorn's node n1 says Ready=True",
        ),
        (
            "a sign that cannot be read",
            Box::new(|f: &mut Facts| {
                set(
                    &mut signs(f).first,
                    SignKind::LonghornNode,
                    Gathered::unreadable("nodes.longhorn.io/n1", "forbidden"),
                );
            }),
            Blocker::EvidenceMissing,
            "could not be read (forbidden)",
        ),
        (
            "no Date header",
            Box::new(|f: &mut Facts| signs(f).first.server_now = None),
            Blocker::EvidenceMissing,
            "no Date header",
        ),
        (
            "this machine's identity unreadable",
            Box::new(|f: &mut Facts| f.host = Gathered::unreadable("/etc/machine-id", "gone")),
            Blocker::EvidenceMissing,
            "/etc/machine-id could not be read",
        ),
        (
            "signs never read",
            Box::new(|f: &mut Facts| f.cluster.harvester.life_signs = None),
            Blocker::EvidenceMissing,
            "were not read",
        ),
    ];
    for (name, mutate, blocker, words) in cases {
        let mut f = fenced_facts();
        mutate(&mut f);
        let (by, why) = refused(&f);
        assert_eq!(by, Some(blocker), "{name}: {why}");
        assert!(why.contains(words), "{name}: {why}");
    }
}

#[test]
fn absent_signs_a_reset_heartbeat_and_longhorn_going_down_are_no_sign_of_life() {
    let now = fenced_facts().now;
    type Case = (&'static str, Mutation<Facts>);
    let cases: Vec<Case> = vec![
        (
            "nothing of NODE's exists",
            Box::new(|f: &mut Facts| {
                let s = signs(f);
                for look in std::iter::once(&mut s.first).chain(s.second.as_mut()) {
                    for (_, g) in &mut look.signs {
                        *g = Gathered::read(None);
                    }
                }
            }),
        ),
        (
            "Harvester ≤ 1.6 back-dates the heartbeat to its now − 6 min during the watch",
            Box::new(move |f: &mut Facts| {
                set(
                    second(f),
                    SignKind::Heartbeat,
                    stamped(now - jiff::SignedDuration::from_secs(6 * 60 + 20)),
                );
            }),
        ),
        (
            "Longhorn's Ready changes reason while False",
            Box::new(|f: &mut Facts| {
                let down = |reason: &str| {
                    Gathered::read(Some(Reading {
                        stamp: None,
                        value: format!("Ready=False ({reason})"),
                        says_alive: false,
                    }))
                };
                set(
                    &mut signs(f).first,
                    SignKind::LonghornNode,
                    down("ManagerPodDown"),
                );
                set(
                    second(f),
                    SignKind::LonghornNode,
                    down("KubernetesNodeNotReady"),
                );
            }),
        ),
        (
            "a Lease renewed five minutes ago (older than the watch)",
            Box::new(move |f: &mut Facts| {
                let s = stamped(now - jiff::SignedDuration::from_mins(5));
                set(&mut signs(f).first, SignKind::Lease, s.clone());
                set(second(f), SignKind::Lease, s);
            }),
        ),
    ];
    for (name, mutate) in cases {
        let mut f = fenced_facts();
        mutate(&mut f);
        let (by, why) = refused(&f);
        assert_eq!(by, None, "{name}: {why}");
    }
}

#[test]
fn the_fenced_plan_says_nothing_was_proved_on_the_node() {
    let p = plan(&fenced_facts(), &fenced_policy());
    let d = &p.decisions[0];
    assert_eq!(d.declared_off.as_deref(), Some("n1"));
    let all = format!("{:?} {:?}", d.evidence, d.reasons);
    assert!(
        all.contains("n1 declared powered off by the operator; n1's own evidence not read"),
        "{all}"
    );
    assert!(!all.contains("on this node"), "{all}");
    assert!(!all.contains("nothing of it runs"), "{all}");
    // A normal run still proves it from the node.
    let p = plan(&facts(), &Policy::default());
    assert_eq!(p.decisions[0].declared_off, None);
}
