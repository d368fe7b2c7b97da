//! After the finalizers: what became of each recovered VM. Pure: the shell
//! (`cluster::follow`) reads the VM, its VMI, the new launcher pod and the Longhorn volumes;
//! these functions say what was expected of the VM, whether that came true, and, when the
//! bound ends first, why not in the cluster's own words.
//!
//! What KubeVirt does after the finalizers (kubevirt `pkg/virt-controller/watch/vm.go`
//! `syncRunStrategy` v1.3.0, `pkg/virt-controller/watch/vm/vm.go` v1.7.0, the same rules):
//! `Always` restarts a final VMI; `RerunOnFailure` restarts a `Failed` one (a start request
//! is added when the failed VMI is deleted) and never a `Succeeded` one, nor one a stop
//! request names; `Manual` starts only on a start request; `Halted` stays stopped. The
//! deprecated `spec.running` reads as `Always` (true) or `Halted`. Only the first
//! `status.stateChangeRequests` entry counts, as upstream's `hasStartRequest` reads it.

use serde::{Deserialize, Serialize};

/// The VM as followed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowedVm {
    /// Whether it is being deleted.
    pub deleting: bool,
    /// `spec.runStrategy`, else from `spec.running`.
    pub run_strategy: String,
    /// The first `status.stateChangeRequests` entry's action (`Start`, `Stop`).
    pub first_request: Option<String>,
    /// Its finalizers (a deleting VM still there: what holds it).
    pub finalizers: Vec<String>,
}

/// A condition as the cluster wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Condition {
    /// `type`.
    pub kind: String,
    /// `status`.
    pub status: String,
    /// `reason`.
    pub reason: String,
    /// `message`.
    pub message: String,
}

/// The VMI as followed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowedVmi {
    /// Its UID (a new VMI has a new one).
    pub uid: String,
    /// `status.phase`.
    pub phase: String,
    /// `status.nodeName`.
    pub node: Option<String>,
    /// `status.conditions`.
    pub conditions: Vec<Condition>,
}

/// The new VMI's launcher pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowedPod {
    /// Its name.
    pub name: String,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// `status.phase`.
    pub phase: String,
    /// `status.conditions`.
    pub conditions: Vec<Condition>,
}

/// A Longhorn volume of the VM (`volumes.longhorn.io`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowedVolume {
    /// The volume's name.
    pub name: String,
    /// Longhorn's namespace.
    pub namespace: String,
    /// `status.robustness`: healthy, degraded, faulted, unknown.
    pub robustness: String,
    /// `status.state`: attached, detached, attaching, …
    pub state: String,
    /// Nodes holding a replica of it that are not Ready (read only for a faulted or degraded
    /// volume).
    pub replicas_on_down_nodes: Vec<String>,
}

/// One look at a followed VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// The VM, `None` when it is gone.
    pub vm: Option<FollowedVm>,
    /// Its VMI, `None` when there is none.
    pub vmi: Option<FollowedVmi>,
}

/// What was expected of a VM once its finalizers were gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// Deleted: the VM goes.
    Gone,
    /// KubeVirt starts a new VMI.
    RunAgain,
    /// It stays stopped, as asked (why, in words).
    StayStopped(String),
}

/// What became of a recovered VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FollowOutcome {
    /// The deleted VM is gone.
    Gone,
    /// A new VMI runs.
    RunningAgain {
        /// On which node.
        node: String,
        /// Seconds from the end of vmrecover's changes.
        seconds: u64,
    },
    /// It stays stopped, as its run strategy or a person asked.
    StoppedAsAsked {
        /// Why it is expected to stay stopped.
        why: String,
    },
    /// Not back within the bound.
    NotBack {
        /// The bound, in seconds.
        seconds: u64,
        /// Why, from what the cluster says.
        why: Vec<String>,
    },
}

impl FollowOutcome {
    /// A label for metrics and the node summary.
    pub fn label(&self) -> &'static str {
        match self {
            FollowOutcome::Gone => "gone",
            FollowOutcome::RunningAgain { .. } => "running_again",
            FollowOutcome::StoppedAsAsked { .. } => "stopped_as_asked",
            FollowOutcome::NotBack { .. } => "not_back",
        }
    }

    /// The outcome in a few words, for the report and `status`.
    pub fn line(&self) -> String {
        match self {
            FollowOutcome::Gone => "gone (the deleted VM is removed)".into(),
            FollowOutcome::RunningAgain { node, seconds } => {
                format!("running again on {node}, {seconds}s after vmrecover's changes")
            }
            FollowOutcome::StoppedAsAsked { why } => format!("stopped, as asked ({why})"),
            FollowOutcome::NotBack { seconds, why } => format!(
                "not back after {seconds}s: {}",
                if why.is_empty() {
                    "the cluster says nothing more".to_string()
                } else {
                    why.join("; ")
                }
            ),
        }
    }
}

/// What KubeVirt will do with the VM now that its finalizers are gone. `old_phase` and
/// `old_deleting` describe the VMI vmrecover recovered, as planned.
pub fn expectation(vm: Option<&FollowedVm>, old_phase: &str, old_deleting: bool) -> Expectation {
    let Some(vm) = vm.filter(|v| !v.deleting) else {
        return Expectation::Gone;
    };
    let request = vm.first_request.as_deref();
    match vm.run_strategy.as_str() {
        "Always" => Expectation::RunAgain,
        "RerunOnFailure" => match request {
            Some("Stop") => Expectation::StayStopped(
                "a person asked it to stop (status.stateChangeRequests)".into(),
            ),
            Some("Start") => Expectation::RunAgain,
            _ if old_phase.starts_with("Succeeded") => Expectation::StayStopped(
                "runStrategy RerunOnFailure and its guest shut down by itself (Succeeded)".into(),
            ),
            _ if old_deleting => Expectation::StayStopped(
                "runStrategy RerunOnFailure and its VMI was deleted without a start request".into(),
            ),
            _ => Expectation::RunAgain,
        },
        "Manual" if request == Some("Start") => Expectation::RunAgain,
        "Manual" => Expectation::StayStopped(
            "runStrategy Manual: KubeVirt starts it only when a person does".into(),
        ),
        "Halted" => Expectation::StayStopped("runStrategy Halted".into()),
        other => Expectation::StayStopped(format!("runStrategy {other}")),
    }
}

/// The outcome once it is known, `None` while it is still coming. `old_vmi_uid` is the
/// recovered VMI's; `seconds` the time since vmrecover's changes.
pub fn judge(
    expect: &Expectation,
    old_vmi_uid: &str,
    obs: &Observation,
    seconds: u64,
) -> Option<FollowOutcome> {
    match expect {
        Expectation::Gone => obs.vm.is_none().then_some(FollowOutcome::Gone),
        Expectation::StayStopped(why) => Some(FollowOutcome::StoppedAsAsked { why: why.clone() }),
        Expectation::RunAgain => {
            let vmi = obs.vmi.as_ref()?;
            (vmi.uid != old_vmi_uid && vmi.phase == "Running").then(|| {
                FollowOutcome::RunningAgain {
                    node: vmi.node.clone().unwrap_or_else(|| "an unnamed node".into()),
                    seconds,
                }
            })
        }
    }
}

/// Why a VM is not back when the bound ends: the VM, the VMI's phase and conditions, the
/// launcher pod's scheduling or start, the Longhorn volumes that are not healthy. Never a
/// guess: every line names what the cluster says and where to look.
pub fn why_not_back(
    expect: &Expectation,
    old_vmi_uid: &str,
    obs: &Observation,
    pod: Option<&FollowedPod>,
    volumes: &[FollowedVolume],
) -> Vec<String> {
    let mut why = Vec::new();
    match (expect, &obs.vm) {
        (Expectation::Gone, Some(vm)) => why.push(format!(
            "the VM is still there{}",
            if vm.finalizers.is_empty() {
                String::new()
            } else {
                format!(", held by finalizers {}", vm.finalizers.join(", "))
            }
        )),
        (Expectation::RunAgain, None) => why.push("the VM was deleted meanwhile".into()),
        _ => {}
    }
    if matches!(expect, Expectation::RunAgain) {
        match &obs.vmi {
            None => why.push(
                "no new VMI: virt-controller has not started it (is virt-controller running? \
                 a start failure backoff?)"
                    .into(),
            ),
            Some(v) if v.uid == old_vmi_uid => why.push(format!(
                "the old VMI is still there (phase {}): virt-controller has not replaced it",
                or_none(&v.phase)
            )),
            Some(v) => {
                why.push(format!("new VMI phase {}", or_none(&v.phase)));
                why.extend(false_conditions("VMI", &v.conditions));
            }
        }
        if let Some(p) = pod {
            why.extend(pod_lines(p));
        }
    }
    for v in volumes {
        if v.robustness == "faulted" || v.robustness == "degraded" {
            why.push(format!(
                "Longhorn volume {name} is {rob} (state {state}): see volumes.longhorn.io \
                 {ns}/{name} in the Longhorn UI (Volume {name}); vmrecover never salvages or \
                 changes it",
                name = v.name,
                ns = v.namespace,
                rob = v.robustness,
                state = or_none(&v.state),
            ));
        }
        if !v.replicas_on_down_nodes.is_empty() {
            why.push(format!(
                "Longhorn volume {}: replicas on {} (NotReady): it waits for those nodes to \
                 come back",
                v.name,
                v.replicas_on_down_nodes.join(", ")
            ));
        }
    }
    why
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "(none)"
    } else {
        s
    }
}

/// The conditions that are not `True`, as `what condition T=False: reason: message`.
fn false_conditions(what: &str, conds: &[Condition]) -> Vec<String> {
    conds
        .iter()
        .filter(|c| c.status != "True")
        .map(|c| {
            let mut line = format!("{what} condition {}={}", c.kind, c.status);
            if !c.reason.is_empty() {
                line.push_str(&format!(": {}", c.reason));
            }
            if !c.message.is_empty() {
                line.push_str(&format!(": {}", c.message));
            }
            line
        })
        .collect()
}

/// The launcher pod: not scheduled (kube-scheduler's reason and message), or not started.
fn pod_lines(p: &FollowedPod) -> Vec<String> {
    let scheduled = p.conditions.iter().find(|c| c.kind == "PodScheduled");
    if let Some(c) = scheduled.filter(|c| c.status == "False") {
        return vec![format!(
            "launcher pod {} is not scheduled: {}: {}",
            p.name,
            or_none(&c.reason),
            or_none(&c.message)
        )];
    }
    if p.phase == "Running" {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "launcher pod {} is {} on {}",
        p.name,
        or_none(&p.phase),
        p.node.as_deref().unwrap_or("no node yet")
    )];
    lines.extend(false_conditions(
        &format!("launcher pod {}", p.name),
        &p.conditions
            .iter()
            .filter(|c| c.kind == "Ready")
            .cloned()
            .collect::<Vec<_>>(),
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(strategy: &str, request: Option<&str>) -> FollowedVm {
        FollowedVm {
            run_strategy: strategy.into(),
            first_request: request.map(String::from),
            ..FollowedVm::default()
        }
    }

    #[test]
    fn what_kubevirt_will_do_after_the_finalizers() {
        use Expectation::*;
        let stay = |e: &Expectation| matches!(e, StayStopped(_));
        assert_eq!(expectation(None, "Failed", true), Gone);
        let deleting = FollowedVm {
            deleting: true,
            ..vm("Always", None)
        };
        assert_eq!(expectation(Some(&deleting), "Failed", true), Gone);
        for (strategy, request, phase, deleting, run) in [
            ("Always", None, "Failed", false, true),
            ("Always", None, "Running (deleting)", true, true),
            ("RerunOnFailure", None, "Failed", false, true),
            (
                "RerunOnFailure",
                Some("Start"),
                "Failed (deleting)",
                true,
                true,
            ),
            ("RerunOnFailure", None, "Failed (deleting)", true, false),
            ("RerunOnFailure", None, "Succeeded", false, false),
            ("RerunOnFailure", Some("Stop"), "Failed", false, false),
            ("Manual", None, "Failed", false, false),
            ("Manual", Some("Start"), "Failed", false, true),
            ("Halted", None, "Failed", false, false),
            ("Once", None, "Failed", false, false),
        ] {
            let e = expectation(Some(&vm(strategy, request)), phase, deleting);
            assert_eq!(e == RunAgain, run, "{strategy} {request:?} {phase}");
            assert_eq!(stay(&e), !run, "{strategy} {request:?} {phase}");
        }
    }

    #[test]
    fn running_again_needs_a_new_vmi_running() {
        let running = |uid: &str, phase: &str| Observation {
            vm: Some(vm("Always", None)),
            vmi: Some(FollowedVmi {
                uid: uid.into(),
                phase: phase.into(),
                node: Some("n2".into()),
                conditions: vec![],
            }),
        };
        let e = Expectation::RunAgain;
        assert_eq!(judge(&e, "old", &running("old", "Running"), 3), None);
        assert_eq!(judge(&e, "old", &running("new", "Scheduling"), 3), None);
        assert_eq!(
            judge(&e, "old", &running("new", "Running"), 3),
            Some(FollowOutcome::RunningAgain {
                node: "n2".into(),
                seconds: 3
            })
        );
        assert_eq!(
            judge(&Expectation::Gone, "old", &Observation::default(), 0),
            Some(FollowOutcome::Gone)
        );
        assert!(matches!(
            judge(
                &Expectation::StayStopped("x".into()),
                "old",
                &running("old", "Failed"),
                0
            ),
            Some(FollowOutcome::StoppedAsAsked { .. })
        ));
    }

    #[test]
    fn not_back_says_why_from_the_vmi_the_pod_and_longhorn() {
        let obs = Observation {
            vm: Some(vm("Always", None)),
            vmi: Some(FollowedVmi {
                uid: "new".into(),
                phase: "Scheduling".into(),
                node: None,
                conditions: vec![Condition {
                    kind: "Ready".into(),
                    status: "False".into(),
                    reason: "PodNotExists".into(),
                    message: String::new(),
                }],
            }),
        };
        let pod = FollowedPod {
            name: "virt-launcher-vm-abcde".into(),
            node: None,
            phase: "Pending".into(),
            conditions: vec![Condition {
                kind: "PodScheduled".into(),
                status: "False".into(),
                reason: "Unschedulable".into(),
                message: "0/3 nodes are available".into(),
            }],
        };
        let vols = [
            FollowedVolume {
                name: "pvc-1".into(),
                namespace: "longhorn-system".into(),
                robustness: "faulted".into(),
                state: "detached".into(),
                replicas_on_down_nodes: vec!["node-2".into(), "node-3".into()],
            },
            FollowedVolume {
                name: "pvc-2".into(),
                namespace: "longhorn-system".into(),
                robustness: "healthy".into(),
                state: "attached".into(),
                replicas_on_down_nodes: vec![],
            },
        ];
        let why = why_not_back(&Expectation::RunAgain, "old", &obs, Some(&pod), &vols);
        let all = why.join("\n");
        assert!(all.contains("new VMI phase Scheduling"), "{all}");
        assert!(
            all.contains("VMI condition Ready=False: PodNotExists"),
            "{all}"
        );
        assert!(
            all.contains("launcher pod virt-launcher-vm-abcde is not scheduled: Unschedulable: 0/3 nodes are available"),
            "{all}"
        );
        assert!(
            all.contains("Longhorn volume pvc-1 is faulted (state detached): see volumes.longhorn.io longhorn-system/pvc-1"),
            "{all}"
        );
        assert!(
            all.contains("Longhorn volume pvc-1: replicas on node-2, node-3 (NotReady)"),
            "{all}"
        );
        assert!(
            !all.contains("pvc-2"),
            "a healthy volume is no reason: {all}"
        );
        let none = why_not_back(
            &Expectation::RunAgain,
            "old",
            &Observation::default(),
            None,
            &[],
        );
        assert!(none.iter().any(|l| l.contains("no new VMI")), "{none:?}");
    }
}
