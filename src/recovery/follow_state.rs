//! What the follow knows and how it reads an object: the VMs followed ([`Target`]), what is
//! known of each so far ([`Following`]), and the views of a VM and a VMI it judges. Shared
//! by the polling follow (`following.rs`) and the watching one (`follow_watch.rs`).

use std::time::Instant;

use kube::api::{ApiResource, DynamicObject};
use serde_json::Value;

use super::follow::{
    expectation, judge, Condition, Expectation, FollowOutcome, FollowedVm, FollowedVmi, Observation,
};

/// One recovered VM to follow.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) vm_uid: Option<String>,
    pub(super) old_vmi_uid: String,
    pub(super) old_phase: String,
    pub(super) old_deleting: bool,
    pub(super) volumes: Vec<String>,
    /// Gone by the run's own answers (the last patch, the controller wait): nothing to read.
    pub(super) known_gone: bool,
    pub(super) expect: Option<Expectation>,
}

/// What the follow knows of each target so far, and the judging of each look.
pub(super) struct Following<P> {
    pub(super) targets: Vec<Target>,
    pub(super) last: Vec<Option<Observation>>,
    pub(super) done: Vec<Option<FollowOutcome>>,
    pub(super) started: Instant,
    pub(super) progress: P,
    /// The last read or watch that failed, named in the outcome of a VM never looked at.
    pub(super) failed: Option<String>,
}

impl<P: FnMut(&str, &FollowOutcome)> Following<P> {
    /// Judges target `i` on `obs`.
    pub(super) fn look(&mut self, i: usize, obs: Observation) {
        let t = &mut self.targets[i];
        let expect = t
            .expect
            .get_or_insert_with(|| expectation(obs.vm.as_ref(), &t.old_phase, t.old_deleting));
        let secs = self.started.elapsed().as_secs();
        if let Some(o) = judge(expect, &t.old_vmi_uid, &obs, secs) {
            (self.progress)(&format!("{}/{}", t.namespace, t.name), &o);
            self.done[i] = Some(o);
        }
        self.last[i] = Some(obs);
    }

    /// Whether target `i`'s outcome is known.
    pub(super) fn is_done(&self, i: usize) -> bool {
        self.done[i].is_some()
    }

    /// Whether every outcome is known.
    pub(super) fn all_done(&self) -> bool {
        self.done.iter().all(Option::is_some)
    }
}

/// The kubevirt.io/v1 resource `plural` (kind `kind`), for dynamic reads and watches.
pub(super) fn kubevirt(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "kubevirt.io".into(),
        version: "v1".into(),
        api_version: "kubevirt.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// What the follow needs of a VM object.
pub(super) fn vm_view(v: &DynamicObject) -> FollowedVm {
    let d = &v.data;
    let run_strategy = match d.pointer("/spec/runStrategy").and_then(Value::as_str) {
        Some(s) => s.to_string(),
        None if d.pointer("/spec/running").and_then(Value::as_bool) == Some(true) => {
            "Always".into()
        }
        None => "Halted".into(),
    };
    FollowedVm {
        deleting: v.metadata.deletion_timestamp.is_some(),
        run_strategy,
        first_request: d
            .pointer("/status/stateChangeRequests/0/action")
            .and_then(Value::as_str)
            .map(String::from),
        finalizers: v.metadata.finalizers.clone().unwrap_or_default(),
    }
}

pub(super) fn vmi_view(v: &DynamicObject) -> FollowedVmi {
    let d = &v.data;
    FollowedVmi {
        uid: v.metadata.uid.clone().unwrap_or_default(),
        phase: str_at(d, "/status/phase"),
        node: d
            .pointer("/status/nodeName")
            .and_then(Value::as_str)
            .map(String::from),
        conditions: conditions(d),
    }
}

pub(super) fn str_at(d: &Value, p: &str) -> String {
    d.pointer(p)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub(super) fn conditions(d: &Value) -> Vec<Condition> {
    d.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| Condition {
            kind: str_at(c, "/type"),
            status: str_at(c, "/status"),
            reason: str_at(c, "/reason"),
            message: str_at(c, "/message"),
        })
        .collect()
}
