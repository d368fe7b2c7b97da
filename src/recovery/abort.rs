//! The moment of change judged by the rule book (issue 23): a VM's remaining steps go
//! ahead only when the planner, re-run on fresh facts, still decides "recover" with steps
//! that are a subset of the plan's. Pure: the fresh plan comes in, a verdict goes out.

use serde::{Deserialize, Serialize};

use super::blocker::Blocker;
use super::model::{Action, Decision, Plan, Step};
use crate::cluster::ObjectKey;

/// Why a VM's remaining steps were not carried out: the same [`Blocker`] kinds a plan
/// uses, and the words for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abort {
    /// Why, as a type (metrics, exit codes).
    pub blocker: Blocker,
    /// Why, in words (`reason` in JSON, as in a run report's outcome).
    #[serde(rename = "reason")]
    pub detail: String,
}

impl Abort {
    /// An abort of `blocker` kind.
    pub fn new(blocker: Blocker, detail: impl Into<String>) -> Self {
        Abort {
            blocker,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// The fresh decision that corresponds to `planned`: the same VM (by UID) or, for a VMI
/// without a VM, the same VMI (by UID).
pub fn fresh_decision<'a>(fresh: &'a Plan, planned: &Decision) -> Option<&'a Decision> {
    fresh.decisions.iter().find(|f| match (&planned.vm, &f.vm) {
        (Some(p), Some(n)) => p.uid == n.uid,
        (Some(_), None) => same_vmi(planned, f) && f.vm.is_none(),
        (None, _) => same_vmi(planned, f),
    })
}

fn same_vmi(a: &Decision, b: &Decision) -> bool {
    matches!((&a.vmi, &b.vmi), (Some(x), Some(y)) if x.namespace == y.namespace && x.name == y.name)
}

/// Whether `remaining` (the planned steps not carried out yet) may go ahead, judged by the
/// `fresh` plan (the planner re-run on facts read now, narrowed to this VM). `Ok` carries
/// the evidence as last checked. Waits are not changes: only pod deletes and finalizer
/// clears are compared.
pub fn judge(planned: &Decision, remaining: &[Step], fresh: &Plan) -> Result<Vec<String>, Abort> {
    let changes: Vec<&Step> = remaining.iter().filter(|s| is_change(s)).collect();
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(why) = &fresh.refused {
        return Err(Abort::new(
            why.blocker,
            format!("re-checked before the change: {}", why.text),
        ));
    }
    // The VMIs could not be read at all: nothing is known about this VM now.
    if let Some(u) = fresh
        .decisions
        .iter()
        .find(|d| d.blocked_by(Blocker::ClusterUnreadable))
    {
        return Err(Abort::new(
            Blocker::ClusterUnreadable,
            format!("re-checked before the change: {}", u.reason_text("; ")),
        ));
    }
    let Some(f) = fresh_decision(fresh, planned) else {
        // Neither its VMI (read by name, on any node) nor its VM is there any more.
        if changes
            .iter()
            .any(|s| matches!(s, Step::ForceDeletePod { .. }))
        {
            return Err(Abort::new(
                Blocker::PlanChanged,
                "re-checked before the change: its VMI is gone, so its leftover launcher pod \
                 is no longer the plan's to delete",
            ));
        }
        return Ok(vec![format!(
            "re-checked: the VMI {} is gone; what is left of the plan finds its objects gone",
            planned
                .vmi
                .as_ref()
                .map_or("-".into(), |k| format!("{}/{}", k.namespace, k.name))
        )]);
    };
    if let (Some(p), Some(n)) = (&planned.vmi, &f.vmi) {
        if p.uid != n.uid {
            return Err(Abort::new(
                Blocker::PlanChanged,
                format!(
                    "re-checked before the change: VMI {}/{} was replaced by a new one (uid {})",
                    n.namespace, n.name, n.uid
                ),
            ));
        }
    }
    let steps = match &f.action {
        Action::Recover { steps } => steps,
        Action::Blocked | Action::NotMine => {
            return Err(Abort::new(
                f.blockers()
                    .first()
                    .copied()
                    .unwrap_or(Blocker::PlanChanged),
                format!("re-checked before the change: {}", f.reason_text("; ")),
            ))
        }
        other => {
            return Err(Abort::new(
                Blocker::PlanChanged,
                format!(
                    "re-checked before the change: it is {} now, no longer to recover ({})",
                    other.label(),
                    f.reason_text("; ")
                ),
            ))
        }
    };
    if let Some(new) = f.disks.iter().find(|d| !planned.disks.contains(d)) {
        return Err(Abort::new(
            Blocker::PlanChanged,
            format!(
                "re-checked before the change: disk {} was not the one planned on",
                new.describe()
            ),
        ));
    }
    for step in steps.iter().filter(|s| is_change(s)) {
        if let Some(why) = not_planned(step, &changes) {
            return Err(Abort::new(
                Blocker::PlanChanged,
                format!("re-checked before the change: {why}"),
            ));
        }
    }
    Ok(f.evidence
        .iter()
        .map(|e| format!("re-checked: {e}"))
        .collect())
}

/// The fresh step that corresponds to a planned finalizer clear, if the fresh decision
/// still has one (`None`: nothing left to remove there).
pub fn fresh_clear<'a>(steps: &'a [Step], planned: &Step) -> Option<&'a Step> {
    let Step::ClearFinalizers { kind, object, .. } = planned else {
        return None;
    };
    steps.iter().find(|s| {
        matches!(s, Step::ClearFinalizers { kind: k, object: o, .. } if k == kind && o.uid == object.uid)
    })
}

fn is_change(s: &Step) -> bool {
    !matches!(s, Step::WaitForControllers { .. })
}

/// Why a fresh step is not within the planned ones, if it is not.
fn not_planned(fresh: &Step, planned: &[&Step]) -> Option<String> {
    match fresh {
        Step::ForceDeletePod { pod } => {
            let known = planned
                .iter()
                .any(|p| matches!(p, Step::ForceDeletePod { pod: q } if q.uid == pod.uid));
            (!known).then(|| {
                format!(
                    "a new launcher pod {} appeared since the plan",
                    name_of(pod)
                )
            })
        }
        Step::ClearFinalizers {
            kind,
            object,
            expected,
            remove,
        } => {
            let Some(Step::ClearFinalizers {
                expected: p_expected,
                remove: p_remove,
                ..
            }) = planned
                .iter()
                .copied()
                .find(|p| fresh_clear(std::slice::from_ref(fresh), p).is_some())
            else {
                return Some(format!(
                    "finalizers of the {kind} {} would be cleared, which the plan did not do",
                    name_of(object)
                ));
            };
            if let Some(added) = expected.iter().find(|f| !p_expected.contains(f)) {
                return Some(format!(
                    "finalizer {added} was added to the {kind} {} since the plan: left alone",
                    name_of(object)
                ));
            }
            remove.iter().find(|f| !p_remove.contains(f)).map(|f| {
                format!(
                    "finalizer {f} of the {kind} {} would be removed, which the plan did not do",
                    name_of(object)
                )
            })
        }
        Step::WaitForControllers { .. } => None,
    }
}

fn name_of(k: &ObjectKey) -> String {
    format!("{}/{}", k.namespace, k.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::finalizers::ObjectKind;

    fn key(name: &str, uid: &str, rv: &str) -> ObjectKey {
        ObjectKey {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
            resource_version: rv.into(),
        }
    }

    fn clear(kind: ObjectKind, uid: &str, rv: &str, expected: &[&str], remove: &[&str]) -> Step {
        Step::ClearFinalizers {
            kind,
            object: key("vm-1", uid, rv),
            expected: expected.iter().map(|s| s.to_string()).collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn decision(steps: Vec<Step>) -> Decision {
        Decision {
            namespace: "default".into(),
            name: "vm-1".into(),
            vmi: Some(key("vm-1", "vmi-uid", "1")),
            vm: Some(key("vm-1", "vm-uid", "1")),
            phase: String::new(),
            action: Action::Recover { steps },
            reasons: vec![crate::recovery::Reason::why("stuck")],
            evidence: vec!["no process".into()],
            pvcs: Vec::new(),
            volumes: Vec::new(),
            kept_finalizers: Vec::new(),
            skipped_side_effects: Vec::new(),
            disks: Vec::new(),
            declared_off: None,
        }
    }

    fn plan_of(decisions: Vec<Decision>) -> Plan {
        Plan {
            node: "n1".into(),
            at: jiff::Timestamp::UNIX_EPOCH,
            verdict: crate::boot::Verdict::Unclean,
            policy: crate::config::Policy::default(),
            decisions,
            orphans: Vec::new(),
            refused: None,
            host: None,
            harvester: Vec::new(),
            paused: None,
            stale_intents: Vec::new(),
        }
    }

    fn pod(uid: &str) -> Step {
        Step::ForceDeletePod {
            pod: key("virt-launcher-vm-1-abcde", uid, "1"),
        }
    }

    fn planned_steps() -> Vec<Step> {
        vec![
            pod("pod-1"),
            Step::WaitForControllers {
                grace: std::time::Duration::from_secs(120),
            },
            clear(ObjectKind::Vmi, "vmi-uid", "1", &["a", "b"], &["a", "b"]),
            clear(ObjectKind::Vm, "vm-uid", "1", &["c"], &["c"]),
        ]
    }

    #[test]
    fn the_same_decision_or_progress_goes_ahead() {
        let steps = planned_steps();
        let planned = decision(steps.clone());
        assert!(judge(&planned, &steps, &plan_of(vec![planned.clone()])).is_ok());
        // Progress: the pod went, a controller removed `a` (new resourceVersion).
        let progressed = decision(vec![
            clear(ObjectKind::Vmi, "vmi-uid", "7", &["b"], &["b"]),
            clear(ObjectKind::Vm, "vm-uid", "1", &["c"], &["c"]),
        ]);
        let evidence = judge(&planned, &steps[2..], &plan_of(vec![progressed])).unwrap();
        assert_eq!(evidence, vec!["re-checked: no process".to_string()]);
    }

    #[test]
    fn a_new_step_or_a_changed_object_aborts() {
        let steps = planned_steps();
        let planned = decision(steps.clone());
        let cases = [
            (
                vec![pod("pod-2"), steps[2].clone()],
                "a new launcher pod default/virt-launcher-vm-1-abcde appeared",
            ),
            (
                vec![clear(
                    ObjectKind::Vmi,
                    "vmi-uid",
                    "2",
                    &["a", "b", "x"],
                    &["a", "b", "x"],
                )],
                "finalizer x was added",
            ),
            (
                vec![clear(
                    ObjectKind::Vm,
                    "vm-uid",
                    "2",
                    &["c", "d"],
                    &["c", "d"],
                )],
                "finalizer d was added",
            ),
        ];
        for (fresh_steps, want) in cases {
            let err = judge(&planned, &steps, &plan_of(vec![decision(fresh_steps)])).unwrap_err();
            assert_eq!(err.blocker, Blocker::PlanChanged, "{err:?}");
            assert!(err.detail.contains(want), "{err:?}");
        }
        // The VMI replaced under the same name.
        let mut replaced = planned.clone();
        replaced.vmi = Some(key("vm-1", "vmi-uid-2", "1"));
        let err = judge(&planned, &steps, &plan_of(vec![replaced])).unwrap_err();
        assert_eq!(err.blocker, Blocker::PlanChanged);
        // After the pod was deleted, a VM-only plan must not gain a VMI clear.
        let vm_only = decision(vec![clear(ObjectKind::Vm, "vm-uid", "1", &["c"], &["c"])]);
        let err = judge(
            &vm_only,
            &steps[3..],
            &plan_of(vec![decision(steps[2..].to_vec())]),
        );
        assert!(err
            .unwrap_err()
            .detail
            .contains("which the plan did not do"));
    }

    #[test]
    fn a_fresh_block_or_refusal_aborts_with_its_own_kind() {
        let steps = planned_steps();
        let planned = decision(steps.clone());
        let mut blocked = planned.clone();
        blocked.action = Action::Blocked;
        blocked.reasons = vec![crate::recovery::Reason::blocking(
            Blocker::LiveProcess,
            "still running here: pid 42 (qemu)",
        )];
        let err = judge(&planned, &steps, &plan_of(vec![blocked])).unwrap_err();
        assert_eq!(err.blocker, Blocker::LiveProcess);
        assert!(err.detail.contains("pid 42"));

        let mut paused = plan_of(vec![planned.clone()]);
        paused.refused = Some(crate::recovery::Refusal::new(
            Blocker::Paused,
            "vmrecover is paused",
        ));
        assert_eq!(
            judge(&planned, &steps, &paused).unwrap_err().blocker,
            Blocker::Paused
        );
        let mut waiting = planned.clone();
        waiting.action = Action::Waiting { until: None };
        let err = judge(&planned, &steps, &plan_of(vec![waiting])).unwrap_err();
        assert_eq!(err.blocker, Blocker::PlanChanged);
        // Nothing left to change: nothing to judge (a pause after the last step is moot).
        assert!(judge(&planned, &steps[1..2], &paused).is_ok());
    }

    #[test]
    fn unreadable_vmis_abort_even_when_only_clears_are_left() {
        let steps = planned_steps();
        let planned = decision(steps.clone());
        let mut unknown = decision(Vec::new());
        unknown.vmi = None;
        unknown.vm = None;
        unknown.action = Action::Blocked;
        unknown.reasons = vec![crate::recovery::Reason::blocking(
            Blocker::ClusterUnreadable,
            "cannot read the VMIs on node n1 (forbidden)",
        )];
        let err = judge(&planned, &steps[2..], &plan_of(vec![unknown])).unwrap_err();
        assert_eq!(err.blocker, Blocker::ClusterUnreadable);
        assert!(err.detail.contains("forbidden"));
    }

    #[test]
    fn a_vanished_decision_allows_only_clears_of_gone_objects() {
        let steps = planned_steps();
        let planned = decision(steps.clone());
        assert!(judge(&planned, &steps[2..], &plan_of(Vec::new())).is_ok());
        let err = judge(&planned, &steps, &plan_of(Vec::new())).unwrap_err();
        assert_eq!(err.blocker, Blocker::PlanChanged);
    }
}
