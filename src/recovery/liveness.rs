//! A fenced-node run acts only on a node that shows no sign of life (pure, from the facts;
//! docs/safety.md "A fenced node"). The run is refused when:
//!
//! - this machine is NODE: its `/etc/machine-id` equals NODE's `nodeInfo.machineID` (or
//!   either cannot be read);
//! - a sign NODE's own software writes is **recent by the API server's clock**: the
//!   `kubevirt.io/heartbeat` annotation, the `vmrecover-NODE` Lease renewal or the
//!   `vmrecover-NODE` summary is younger than `--fence-watch` (or in the future) by the
//!   `Date` of the response that carried it;
//! - a sign **changed while vmrecover watched** for `--fence-watch`, which holds whatever
//!   NODE's clock says. Harvester ≤ 1.6 back-dating the heartbeat to its now − 6 min when it
//!   resets a down node is not NODE's doing and is told apart (harvester
//!   `pkg/controller/master/node/node_down_controller.go`, v1.4.0–v1.6.0, as modelled in
//!   harvester-sim `controllers/node_down.rs`);
//! - Longhorn's `nodes.longhorn.io/NODE` says `Ready=True` (longhorn-manager runs there).
//!
//! A sign that is absent (no annotation, Lease, summary or Longhorn node) is no sign of life;
//! one that could not be read refuses the run.

use super::blocker::Blocker;
use super::model::Facts;
use crate::cluster::{Look, Reading, SignKind};
use crate::config::Policy;
use crate::evidence::Gathered;

/// How far back Harvester ≤ 1.6 sets the heartbeat of a node it resets.
const RESET_BACKDATE: jiff::SignedDuration = jiff::SignedDuration::from_secs(6 * 60);
/// How far from exactly [`RESET_BACKDATE`] a reset's stamp may be (Harvester's clock is
/// another machine's than the API server's; the stamp has second precision).
const RESET_TOLERANCE: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// Why a fenced-node run is refused because NODE may be alive, if it is.
pub fn refusal(facts: &Facts, policy: &Policy) -> Option<(Blocker, String)> {
    same_machine(facts).or_else(|| signs_of_life(facts, policy))
}

fn same_machine(facts: &Facts) -> Option<(Blocker, String)> {
    let node = &facts.node;
    let missing = |why: String| Some((Blocker::EvidenceMissing, why));
    let reported = match facts.cluster.node_identity.as_result() {
        Ok(r) => r,
        Err(why) => {
            return missing(format!(
                "the Node {node} could not be read ({why}): nothing tells whether this machine \
                 is {node} itself; nothing is changed"
            ))
        }
    };
    let host = match facts.host.as_result() {
        Ok(h) => h,
        Err(why) => {
            return missing(format!(
                "this machine's /etc/machine-id could not be read ({why}): nothing tells whether \
                 this run is on {node} itself; nothing is changed"
            ))
        }
    };
    if reported.machine_id.is_empty() {
        return missing(format!(
            "the Node {node} reports no status.nodeInfo.machineID: nothing tells whether this \
             machine is {node} itself; nothing is changed"
        ));
    }
    (reported.machine_id == host.machine_id).then(|| {
        (
            Blocker::FencedNodeAlive,
            format!(
                "this machine is {node} (its /etc/machine-id {} is {node}'s \
                 nodeInfo.machineID): a fenced-node run is for a node that is powered off and \
                 is run from another node; on {node} itself run `vmrecover run`",
                host.machine_id
            ),
        )
    })
}

fn signs_of_life(facts: &Facts, policy: &Policy) -> Option<(Blocker, String)> {
    let node = &facts.node;
    let Some(signs) = &facts.cluster.harvester.life_signs else {
        return Some((
            Blocker::EvidenceMissing,
            format!("{node}'s signs of life were not read: nothing is changed"),
        ));
    };
    let watch = jiff::SignedDuration::try_from(policy.fence_watch).unwrap_or_default();
    let looks = std::iter::once(&signs.first).chain(signs.second.as_ref());
    for look in looks {
        if let Some(r) = unreadable_or_alive(node, look, watch) {
            return Some(r);
        }
    }
    let second = signs.second.as_ref()?;
    for (kind, after) in &second.signs {
        let before = signs
            .first
            .signs
            .iter()
            .find(|(k, _)| k == kind)
            .and_then(|(_, g)| g.value());
        let (Some(before), Gathered::Read { value: after }) = (before, after) else {
            continue;
        };
        if let Some(why) = changed(
            node,
            *kind,
            before.as_ref(),
            after.as_ref(),
            second.server_now,
        ) {
            return Some((
                Blocker::FencedNodeAlive,
                format!(
                    "{node} shows a sign of life: {why} while vmrecover watched for {}; {}",
                    humantime::format_duration(signs.watched),
                    ADVICE
                ),
            ));
        }
    }
    None
}

const ADVICE: &str = "a fenced-node run is only for a machine that is powered off (check it \
    out of band: its BMC or power), nothing is changed";

/// A sign that could not be read, a look without the server's clock, or a sign that says
/// NODE lives at this look.
fn unreadable_or_alive(
    node: &str,
    look: &Look,
    watch: jiff::SignedDuration,
) -> Option<(Blocker, String)> {
    for (_, g) in &look.signs {
        if let Gathered::Unreadable { source, reason } = g {
            return Some((
                Blocker::EvidenceMissing,
                format!(
                    "{node}'s sign of life {source} could not be read ({reason}): nothing is \
                     changed"
                ),
            ));
        }
    }
    let Some(now) = look.server_now else {
        return Some((
            Blocker::EvidenceMissing,
            format!(
                "the API server's answers carried no Date header: how old {node}'s signs of \
                 life are cannot be judged by its clock; nothing is changed"
            ),
        ));
    };
    for (kind, g) in &look.signs {
        let Some(r) = g.value().and_then(Option::as_ref) else {
            continue;
        };
        let what = describe(*kind, node);
        if r.says_alive {
            return Some((
                Blocker::FencedNodeAlive,
                format!(
                    "{node} shows a sign of life: {what} says {}; {ADVICE}",
                    r.value
                ),
            ));
        }
        let dated = !matches!(kind, SignKind::LonghornNode);
        if let Some(stamp) = r.stamp.filter(|_| dated) {
            let age = now.duration_since(stamp);
            if age < watch {
                return Some((
                    Blocker::FencedNodeAlive,
                    format!(
                        "{node} shows a sign of life: {what} ({}) is {} by the API server's \
                         clock ({now}), younger than --fence-watch {}; {ADVICE}",
                        r.value,
                        age_words(age),
                        humantime::format_duration(watch.unsigned_abs())
                    ),
                ));
            }
        }
    }
    None
}

/// Whether `before` → `after` of one sign is NODE's own doing, in words.
fn changed(
    node: &str,
    kind: SignKind,
    before: Option<&Reading>,
    after: Option<&Reading>,
    now: Option<jiff::Timestamp>,
) -> Option<String> {
    let after = after?;
    if before.is_some_and(|b| b.value == after.value) {
        return None;
    }
    // Longhorn's Ready is written by the managers of other nodes while NODE is down; only
    // Ready=True (judged above) speaks for NODE.
    if kind == SignKind::LonghornNode {
        return None;
    }
    if kind == SignKind::Heartbeat && is_reset(after, now) {
        return None;
    }
    Some(format!(
        "{} went from {} to {}",
        describe(kind, node),
        before.map(|b| b.value.as_str()).unwrap_or("(absent)"),
        after.value
    ))
}

/// A heartbeat Harvester ≤ 1.6 set when it reset the node: its now − 6 min.
fn is_reset(r: &Reading, now: Option<jiff::Timestamp>) -> bool {
    match (r.stamp, now) {
        (Some(stamp), Some(now)) => {
            let off = now.duration_since(stamp) - RESET_BACKDATE;
            off.abs() <= RESET_TOLERANCE
        }
        _ => false,
    }
}

fn describe(kind: SignKind, node: &str) -> String {
    match kind {
        SignKind::Heartbeat => format!("virt-handler's heartbeat on Node {node}"),
        SignKind::Lease => format!("the Lease vmrecover-{node}"),
        SignKind::Summary => format!("the summary vmrecover-summary-{node}"),
        SignKind::LonghornNode => format!("Longhorn's node {node}"),
    }
}

fn age_words(age: jiff::SignedDuration) -> String {
    let secs = std::time::Duration::from_secs(age.as_secs().unsigned_abs());
    if age.is_negative() {
        format!("{} in the future", humantime::format_duration(secs))
    } else {
        format!("{} old", humantime::format_duration(secs))
    }
}

#[cfg(test)]
#[path = "liveness_tests.rs"]
mod tests;
