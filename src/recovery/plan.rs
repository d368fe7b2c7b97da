//! `plan(facts, policy) -> Plan`: the pure heart of vmrecover (docs/architecture.md §6). No clock, no
//! I/O: every safety rule lives here and is unit-tested here.

use std::collections::{BTreeMap, BTreeSet};

use super::blocker::Blocker;
use super::finalizers::{classify, FinalizerClass, ObjectKind};
use super::intents::RecoveryIntent;
use super::model::{
    Action, Decision, DiskKey, Facts, Narrow, OrphanDecision, Plan, Reason, Refusal, Step,
};
use crate::cluster::{ClaimedVmi, ObjectKey, PodView, VmView, VmiView};
use crate::config::Policy;
use crate::node::orphans::{self, VmiRef};
use crate::node::{VmProcess, VolumeKey};

const FINAL_PHASES: [&str; 2] = ["Failed", "Succeeded"];

/// Decides, for every VM on this node, what recovery (if any) is safe, with reasons.
pub fn plan(facts: &Facts, policy: &Policy) -> Plan {
    plan_narrowed(facts, policy, None)
}

/// [`plan`], deciding only the VMs `narrow` names when it is given (the re-check right
/// before a change: the same rules, on fresh facts, for the VMs being changed).
pub fn plan_narrowed(facts: &Facts, policy: &Policy, narrow: Option<&Narrow>) -> Plan {
    let mut decisions = Vec::new();
    match facts.cluster.vmis.as_result() {
        Err(why) => decisions.push(Decision::unknown_cluster(&facts.node, why.to_string())),
        Ok(vmis) => {
            let vms: BTreeMap<(&str, &str), &VmView> = facts
                .cluster
                .vms
                .value()
                .map(|vms| {
                    vms.iter()
                        .map(|vm| ((vm.key.namespace.as_str(), vm.key.name.as_str()), vm))
                        .collect()
                })
                .unwrap_or_default();
            let mut seen_vms = BTreeSet::new();
            let wanted =
                |vmi: &VmiView| narrow.is_none_or(|n| n.has_vmi(&vmi.key.namespace, &vmi.key.name));
            for vmi in vmis.iter().filter(|v| wanted(v)) {
                // The owning VM by name and UID: a VM recreated under the same name is not it.
                let vm = vmi.owner_vm.as_ref().and_then(|(n, uid)| {
                    vms.get(&(vmi.key.namespace.as_str(), n.as_str()))
                        .copied()
                        .filter(|vm| &vm.key.uid == uid)
                });
                if let Some(vm) = vm {
                    seen_vms.insert(vm.key.uid.clone());
                }
                decisions.push(decide_vmi(facts, policy, vmi, vm));
            }
            if let Some(intents) = facts.intents.value() {
                for intent in intents {
                    if seen_vms.contains(&intent.vm_uid)
                        || narrow.is_some_and(|n| !n.vm_uids.contains(&intent.vm_uid))
                    {
                        continue;
                    }
                    let vm = vms
                        .get(&(intent.namespace.as_str(), intent.name.as_str()))
                        .copied()
                        .filter(|vm| vm.key.uid == intent.vm_uid);
                    if let Some(d) = decide_vm_without_vmi(facts, policy, intent, vm) {
                        decisions.push(d);
                    }
                }
            }
        }
    }
    let claimed = claimed_decisions(facts, &decisions);
    decisions.extend(claimed);
    apply_only_filter(&mut decisions, policy, &facts.node);
    if policy.fenced {
        super::fence::block_running_elsewhere(facts, &mut decisions);
    }
    decisions.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

    let orphans = find_orphans(facts, policy);
    let recovering = decisions
        .iter()
        .filter(|d| matches!(d.action, Action::Recover { .. }))
        .count();
    let kills = orphans.iter().filter(|o| o.kill).count();
    let has_work = recovering + kills > 0;
    let fence_or_identity = if policy.fenced {
        super::fence::refusal(facts, policy)
    } else {
        identity_refusal(facts)
    };
    let refusal = fence_or_identity
        .or_else(|| intents_refusal(facts))
        .or_else(|| super::harvester::refusal(facts, policy, has_work));
    let refused = match refusal {
        Some((kind, why)) => Some(Refusal::new(kind, why)),
        None if recovering + kills > policy.max_vms => Some(Refusal::new(
            Blocker::PlanRefused,
            format!(
                "the plan would act on {recovering} VMs{}, more than --max-vms {}: refused as \
                 a whole, nothing will be changed; check the node, then raise --max-vms or \
                 narrow with --only",
                if kills > 0 {
                    format!(" and kill {kills} orphan process(es)")
                } else {
                    String::new()
                },
                policy.max_vms
            ),
        )),
        None => None,
    };

    Plan {
        node: facts.node.clone(),
        at: facts.now,
        verdict: facts.verdict,
        policy: policy.clone(),
        decisions,
        orphans,
        refused,
        host: facts.host.value().cloned(),
        harvester: {
            let mut notes = super::harvester::notes(facts, policy);
            if policy.fenced {
                notes.insert(0, super::fence::declaration(facts));
            }
            notes
        },
        paused: facts.cluster.harvester.paused(),
        stale_intents: super::intents::stale(
            facts.intents.value().map(Vec::as_slice).unwrap_or_default(),
            facts.cluster.vms.value().map(Vec::as_slice),
        ),
    }
}

/// A corrupt intents file stops every change on the node: it says which VMs an earlier
/// run had started on, and a run that cannot record or read that must not start another.
fn intents_refusal(facts: &Facts) -> Option<(Blocker, String)> {
    let why = facts.intents.as_result().err()?;
    Some((
        Blocker::EvidenceMissing,
        format!(
            "the recovery intents could not be read ({why}): every change on this node is \
             refused until a person repairs or removes the file"
        ),
    ))
}

/// Whether `--node` is proven to be this machine, and the kubelet has reported this
/// boot: the Node's `nodeInfo.machineID` must equal the host's `/etc/machine-id` and its
/// `bootID` this boot's id. Anything else refuses every change, naming both sides.
pub fn identity_refusal(facts: &Facts) -> Option<(Blocker, String)> {
    let node = &facts.node;
    let reported = match facts.cluster.node_identity.as_result() {
        Ok(r) => r,
        Err(why) => {
            return Some((
                Blocker::EvidenceMissing,
                format!(
                    "the Node {node} could not be read ({why}): without its nodeInfo nothing \
                     proves --node {node} is this machine, so every change is refused"
                ),
            ))
        }
    };
    let host = match facts.host.as_result() {
        Ok(h) => h,
        Err(why) => {
            return Some((
                Blocker::EvidenceMissing,
                format!(
                    "this host's machine-id or boot id could not be read ({why}): nothing \
                     proves --node {node} is this machine, so every change is refused"
                ),
            ))
        }
    };
    if reported.machine_id.is_empty() {
        return Some((
            Blocker::EvidenceMissing,
            format!(
                "the Node {node} reports no status.nodeInfo.machineID (its kubelet has not \
                 posted node status): nothing proves --node {node} is this machine, so every \
                 change is refused"
            ),
        ));
    }
    if reported.machine_id != host.machine_id {
        return Some((
            Blocker::IdentityMismatch,
            format!(
                "--node {node} is not this machine: Node {node} reports machineID {}, this \
                 host's /etc/machine-id is {}; every change is refused (pass this node's own \
                 name with --node or NODE_NAME)",
                reported.machine_id, host.machine_id
            ),
        ));
    }
    if reported.boot_id != host.boot_id {
        return Some((
            Blocker::BootNotReported,
            format!(
                "Node {node} still reports bootID {}, not this boot's {}: waiting for the \
                 kubelet to report this boot before any change (retried on the next pass)",
                if reported.boot_id.is_empty() {
                    "(none)"
                } else {
                    &reported.boot_id
                },
                host.boot_id
            ),
        ));
    }
    None
}

impl Decision {
    fn new(namespace: &str, name: &str, phase: String) -> Self {
        Decision {
            namespace: namespace.to_string(),
            name: name.to_string(),
            vmi: None,
            vm: None,
            phase,
            action: Action::Healthy,
            reasons: Vec::new(),
            evidence: Vec::new(),
            pvcs: Vec::new(),
            volumes: Vec::new(),
            kept_finalizers: Vec::new(),
            skipped_side_effects: Vec::new(),
            disks: Vec::new(),
            declared_off: None,
        }
    }

    fn with(mut self, action: Action, reason: impl Into<String>) -> Self {
        self.action = action;
        self.reasons.push(Reason::why(reason));
        self
    }

    /// Left alone for a person: `kind` says why for metrics, `reason` for people.
    fn block(self, kind: Blocker, reason: impl Into<String>) -> Self {
        self.block_all(vec![(kind, reason.into())])
    }

    /// Left alone for every one of `reasons`.
    fn block_all(mut self, reasons: Vec<(Blocker, String)>) -> Self {
        self.action = Action::Blocked;
        self.reasons.extend(
            reasons
                .into_iter()
                .map(|(kind, reason)| Reason::blocking(kind, reason)),
        );
        self
    }

    /// Not this node's business, because of `kind`.
    fn not_mine(mut self, kind: Blocker, reason: impl Into<String>) -> Self {
        self.action = Action::NotMine;
        self.reasons.push(Reason::blocking(kind, reason));
        self
    }

    fn unknown_cluster(node: &str, why: String) -> Self {
        Decision::new("", "*", "unknown".into()).block(
            Blocker::ClusterUnreadable,
            format!("cannot read the VMIs on node {node} ({why}): no VM on this node is touched"),
        )
    }
}

fn phase_of(vmi: Option<&VmiView>, vm: Option<&VmView>) -> String {
    let vmi_phase = vmi.map(|v| {
        let mut p = v.phase.clone().unwrap_or_else(|| "NoPhase".into());
        if v.deletion_timestamp.is_some() {
            p.push_str(" (deleting)");
        }
        p
    });
    let vm_status = vm.map(|v| {
        let mut s = v.printable_status.clone().unwrap_or_else(|| "-".into());
        if v.deletion_timestamp.is_some() && s != "Terminating" {
            s.push_str(" (deleting)");
        }
        s
    });
    match (vmi_phase, vm_status) {
        (Some(i), Some(m)) => format!("vmi {i}, vm {m}"),
        (Some(i), None) => format!("vmi {i}, no vm"),
        (None, Some(m)) => format!("vmi gone, vm {m}"),
        (None, None) => "-".into(),
    }
}

fn decide_vmi(facts: &Facts, policy: &Policy, vmi: &VmiView, vm: Option<&VmView>) -> Decision {
    let me = facts.node.as_str();
    let name = vmi
        .owner_vm
        .as_ref()
        .map(|(n, _)| n.as_str())
        .unwrap_or(&vmi.key.name);
    let mut d = Decision::new(&vmi.key.namespace, name, phase_of(Some(vmi), vm));
    d.vmi = Some(vmi.key.clone());
    d.vm = vm.map(|v| v.key.clone());

    // Only objects on this node, and never one that is migrating.
    match not_mine(vmi, me) {
        Some((Action::Blocked, kind, reason)) => return d.block(kind, reason),
        Some((_, kind, reason)) => return d.not_mine(kind, reason),
        None => {}
    }
    if vmi.owner_vm.is_some() && vm.is_none() {
        if let Err(why) = facts.cluster.vms.as_result() {
            return d.block(
                Blocker::EvidenceMissing,
                format!("its VM could not be read ({why})"),
            );
        }
    }

    let deleting = vmi.deletion_timestamp.is_some();
    let phase = vmi.phase.as_deref().unwrap_or("");
    let is_final = FINAL_PHASES.contains(&phase);

    if !deleting && !is_final {
        return decide_live_vmi(facts, vmi, d);
    }

    let pods = match facts.cluster.pods.as_result() {
        Ok(pods) => pods
            .iter()
            .filter(|p| pod_serves(p, vmi))
            .collect::<Vec<_>>(),
        Err(why) => {
            return d.block(
                Blocker::EvidenceMissing,
                format!("virt-launcher pods on this node could not be read ({why})"),
            )
        }
    };

    if !deleting {
        // Final but not deleting: the `Stopping` neighbour. Ladder steps 1-2 only. What
        // lingers: its launcher pods, and hotplug pods of it whose launcher pod is gone.
        let orphaned = match super::hotplug::orphans(facts, vmi) {
            Ok(o) => o,
            Err((blocker, why)) => return d.block(blocker, why),
        };
        let lingering: Vec<&PodView> = pods.iter().copied().chain(orphaned).collect();
        if lingering.is_empty() {
            return d.with(
                Action::Healthy,
                format!("VMI is {phase} and no launcher pod is left: virt-controller finishes it"),
            );
        }
        // The kubelet may still clean up after the reboot: give it --stuck-after.
        match facts.boot_time.value() {
            None => {
                return d.block(
                    Blocker::EvidenceMissing,
                    "this boot's start time could not be read, so how long the pod has lingered is unknown",
                )
            }
            Some(boot) if facts.now < add(*boot, policy.stuck_after) => {
                let until = add(*boot, policy.stuck_after);
                return d.with(
                    Action::Waiting { until: Some(until) },
                    format!(
                        "VMI is {phase} and pod {} lingers; the kubelet gets until {until} ({} after this boot) to clean it up",
                        names(&lingering),
                        humantime::format_duration(policy.stuck_after)
                    ),
                );
            }
            Some(_) => {}
        }
        if let Err(reasons) = prove_nothing_here(facts, policy, vmi, &vmi.pvcs, &mut d) {
            return d.block_all(reasons);
        }
        d.reasons.push(Reason::why(format!(
            "VMI is {phase} but pod {} lingers on this node (VM shows Stopping); \
             force-deleting it lets virt-controller finish; finalizers of an object that is \
             not deleting are never cleared",
            names(&lingering)
        )));
        let mut steps = match super::hotplug::free_steps(facts, vmi, &pods, &mut d) {
            Ok(s) => s,
            Err((blocker, why)) => return d.block(blocker, why),
        };
        if !policy.controller_grace.is_zero() {
            steps.push(Step::WaitForControllers {
                grace: policy.controller_grace,
            });
        }
        d.action = Action::Recover { steps };
        return d;
    }

    // Deleting: is it stuck yet?
    let Some(boot_time) = facts.boot_time.value().copied() else {
        let why = facts
            .boot_time
            .as_result()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        return d.block(
            Blocker::EvidenceMissing,
            format!("this boot's start time could not be read ({why}), so how long the VMI has been stuck is unknown"),
        );
    };
    let deleted_at = vmi.deletion_timestamp.unwrap_or(facts.now);
    let since = deleted_at.max(boot_time);
    let stuck_at = add(since, policy.stuck_after);
    if facts.now < stuck_at {
        return d.with(
            Action::Waiting { until: Some(stuck_at) },
            format!(
                "deleting since {deleted_at}; counts as stuck {} after the later of that and this boot ({boot_time})",
                humantime::format_duration(policy.stuck_after)
            ),
        );
    }

    // Which finalizers would go, which stay.
    let vm_deleting = vm.filter(|v| v.deletion_timestamp.is_some());
    let (vmi_remove, vmi_keep) = split_finalizers(&vmi.finalizers, ObjectKind::Vmi, policy, &mut d);
    let (vm_remove, vm_keep) = match vm_deleting {
        Some(vm) => {
            let split = split_finalizers(&vm.finalizers, ObjectKind::Vm, policy, &mut d);
            describe_pvc_cleanup(facts, vm, &mut d);
            split
        }
        None => (Vec::new(), Vec::new()),
    };
    if !vmi_keep.is_empty() || !vm_keep.is_empty() {
        let mut kept: Vec<String> = vmi_keep.iter().map(|f| format!("{f} (vmi)")).collect();
        kept.extend(vm_keep.iter().map(|f| format!("{f} (vm)")));
        let kept = [summarise(&kept, 5)];
        d.kept_finalizers = vmi_keep.iter().chain(vm_keep.iter()).cloned().collect();
        return d.block(
            Blocker::UnknownFinalizer,
            format!(
                "unknown finalizer {} would keep it stuck; vmrecover never removes finalizers it does \
                 not know: find its owner, or name it with --also-finalizer",
                kept.join(", ")
            ),
        );
    }

    if let Err(reasons) = prove_nothing_here(facts, policy, vmi, &vmi.pvcs, &mut d) {
        return d.block_all(reasons);
    }

    d.reasons.push(Reason::why(format!(
        "VMI deleting since {deleted_at} (stuck: longer than {} since the later of that and this boot) \
         and {}",
        humantime::format_duration(policy.stuck_after),
        if policy.fenced {
            format!(
                "{node} is declared powered off by the operator ({node}'s own evidence not read)",
                node = facts.node
            )
        } else {
            "nothing of it runs or holds a disk on this node".to_string()
        }
    )));
    let mut steps = match super::hotplug::free_steps(facts, vmi, &pods, &mut d) {
        Ok(s) => s,
        Err((blocker, why)) => {
            // What was said about recovering it no longer holds.
            d.reasons.clear();
            return d.block(blocker, why);
        }
    };
    if !pods.is_empty() {
        d.reasons.push(Reason::why(format!(
            "leftover launcher pod {} blocks virt-controller: force-delete it first",
            names(&pods)
        )));
    }
    if !policy.controller_grace.is_zero() {
        steps.push(Step::WaitForControllers {
            grace: policy.controller_grace,
        });
    }
    if !vmi_remove.is_empty() {
        steps.push(Step::ClearFinalizers {
            kind: ObjectKind::Vmi,
            object: vmi.key.clone(),
            expected: vmi.finalizers.clone(),
            remove: vmi_remove,
        });
    }
    if let Some(vm) = vm_deleting {
        if !vm_remove.is_empty() {
            steps.push(Step::ClearFinalizers {
                kind: ObjectKind::Vm,
                object: vm.key.clone(),
                expected: vm.finalizers.clone(),
                remove: vm_remove,
            });
        }
    } else if vm.is_some() {
        d.reasons.push(Reason::why(
            "its VM is not being deleted: only the VMI is cleared",
        ));
    }
    d.action = Action::Recover { steps };
    d
}

/// A VMI that is neither deleting nor final.
fn decide_live_vmi(facts: &Facts, vmi: &VmiView, d: Decision) -> Decision {
    let phase = vmi.phase.as_deref().unwrap_or("no phase");
    match facts
        .local
        .processes_for(&vmi.key.namespace, &vmi.key.name, &vmi.key.uid)
    {
        Ok(procs) if !procs.is_empty() => d.with(
            Action::Healthy,
            format!("{phase}; live process {}", describe_procs(&procs)),
        ),
        Ok(_) if phase == "Running" => d.with(
            Action::Waiting { until: None },
            "Running on paper but no virt-launcher/qemu process on this node: virt-handler owns \
             that transition (report only)",
        ),
        Ok(_) => d.with(
            Action::Healthy,
            format!("{phase}: not deleting, nothing to recover"),
        ),
        Err(why) => d.with(
            Action::Waiting { until: None },
            format!("{phase}, not deleting; process evidence could not be read ({why})"),
        ),
    }
}

/// A deleting VM whose VMI is already gone, which an earlier run started recovering.
fn decide_vm_without_vmi(
    facts: &Facts,
    policy: &Policy,
    intent: &RecoveryIntent,
    vm: Option<&VmView>,
) -> Option<Decision> {
    let vm = vm?;
    let mut d = Decision::new(&vm.key.namespace, &vm.key.name, phase_of(None, Some(vm)));
    d.vm = Some(vm.key.clone());
    if vm.deletion_timestamp.is_none() {
        return Some(d.with(
            Action::Healthy,
            "an earlier run started recovering it; its VMI is gone and the VM is not deleting",
        ));
    }
    let (remove, keep) = split_finalizers(&vm.finalizers, ObjectKind::Vm, policy, &mut d);
    if !keep.is_empty() {
        d.kept_finalizers = keep.clone();
        return Some(d.block(
            Blocker::UnknownFinalizer,
            format!(
                "unknown finalizer {} (vm) is kept; name it with --also-finalizer",
                summarise(&keep, 5)
            ),
        ));
    }
    let ghost = VmiView {
        key: ObjectKey {
            namespace: intent.namespace.clone(),
            name: intent.name.clone(),
            uid: intent.vmi_uid.clone(),
            resource_version: String::new(),
        },
        ..VmiView::default()
    };
    // The re-check reads the VMI by name: it must still be gone (or not this node's one).
    d.vmi = Some(ghost.key.clone());
    if let Err(reasons) = prove_nothing_here(facts, policy, &ghost, &intent.pvcs, &mut d) {
        return Some(d.block_all(reasons));
    }
    d.reasons.push(Reason::why(format!(
        "an earlier run cleared its VMI (started {}); the VM is still deleting",
        intent.started
    )));
    if remove.is_empty() {
        return Some(d.with(Action::Healthy, "no finalizer left to clear"));
    }
    d.action = Action::Recover {
        steps: vec![Step::ClearFinalizers {
            kind: ObjectKind::Vm,
            object: vm.key.clone(),
            expected: vm.finalizers.clone(),
            remove,
        }],
    };
    Some(d)
}

/// Why a VMI is not this node's to act on, if it is not: another node's, migrating now,
/// or in doubt (its label and status name different nodes: never acted on, and reported
/// as blocked on whichever of the two nodes sees it).
fn not_mine(vmi: &VmiView, me: &str) -> Option<(Action, Blocker, String)> {
    let label = vmi.node_label.as_deref();
    let status = vmi.status_node.as_deref();
    // virt-controller sets both together once the launcher pod is ready: one without the
    // other, or two different nodes, is a disagreement (never acted on). Agents list VMIs
    // by the label, so only the node the label names reports it.
    if (label == Some(me) || status == Some(me)) && label != status {
        let side = |v: Option<&str>| v.map_or("nothing".to_string(), |n| n.to_string());
        let (l, s) = (side(label), side(status));
        let seen_by = match label {
            Some(l) if l == me => {
                "this node reports it (agents list VMIs by that label)".to_string()
            }
            Some(l) => format!("node {l}'s agent is the one that lists it by that label"),
            None => "no agent lists it by label".to_string(),
        };
        return Some((
            Action::Blocked,
            Blocker::NodeDisagreement,
            format!(
                "its label kubevirt.io/nodeName says {l} but status.nodeName says {s}: where \
                 it runs is in doubt, so vmrecover does not act on it; {seen_by}; check the \
                 nodes for its virt-launcher and qemu"
            ),
        ));
    }
    // `status.migrationState` is the authority; the target label alone (KubeVirt <= 1.5
    // never removes it) counts only when there is no migration state at all.
    let migrating = vmi.migrating
        || (!vmi.has_migration_state
            && vmi.migration_target.is_some()
            && vmi.migration_target.as_deref() != status);
    if migrating {
        let target = vmi
            .migration_target
            .as_deref()
            .or(vmi.migration_state_target.as_deref())
            .unwrap_or("unknown");
        return Some((
            Action::NotMine,
            Blocker::Migrating,
            format!("migrating (target {target}): left alone"),
        ));
    }
    let other = |why: String| Some((Action::NotMine, Blocker::NotThisNode, why));
    match (label, status) {
        (Some(l), _) if l != me => other(format!(
            "label kubevirt.io/nodeName says {l}, not this node"
        )),
        (_, Some(s)) if s != me => other(format!("status.nodeName says {s}, not this node")),
        (None, None) => other("the VMI names no node".into()),
        _ => None,
    }
}

fn pod_serves(pod: &PodView, vmi: &VmiView) -> bool {
    pod.key.namespace == vmi.key.namespace
        && (pod.vmi_uid.as_deref() == Some(vmi.key.uid.as_str())
            || (pod.vmi_uid.is_none() && pod.vmi_name.as_deref() == Some(vmi.key.name.as_str())))
}

/// Step 1 of the ladder: proof from the node that nothing of this VM runs or holds a disk
/// here, and that no other node holds its disks. Every reason it fails is returned.
fn prove_nothing_here(
    facts: &Facts,
    policy: &Policy,
    vmi: &VmiView,
    pvc_names: &[String],
    d: &mut Decision,
) -> Result<(), Vec<(Blocker, String)>> {
    let evidence = &mut d.evidence;
    let mut reasons = Vec::new();
    let (ns, name, uid) = (&vmi.key.namespace, &vmi.key.name, &vmi.key.uid);
    if !vmi.unnamed_volumes.is_empty() {
        reasons.push((
            Blocker::EvidenceMissing,
            format!(
                "volume(s) {} in status.volumeStatus name no PVC: their disks cannot be checked",
                vmi.unnamed_volumes.join(", ")
            ),
        ));
    }
    let node = &facts.node;
    if policy.fenced {
        // Nothing of the node was read: say so, never that something was proved there.
        d.declared_off = Some(node.clone());
        evidence.push(format!(
            "{node} declared powered off by the operator; {node}'s own evidence not read (its \
             processes, devices and mounts)"
        ));
    }
    match facts.local.processes_for(ns, name, uid) {
        Ok(_) if policy.fenced => {}
        Ok(procs) if procs.is_empty() => evidence.push(format!(
            "no virt-launcher/qemu process for {ns}/{name} (uid {uid}) on this node"
        )),
        Ok(procs) => reasons.push((
            Blocker::LiveProcess,
            format!("still running here: {}", describe_procs(&procs)),
        )),
        Err(why) => reasons.push((
            Blocker::EvidenceMissing,
            format!("process evidence missing: {why}"),
        )),
    }

    let resolved = super::disks::resolve(facts, vmi, pvc_names);
    evidence.extend(resolved.evidence);
    reasons.extend(resolved.reasons);
    let disks = resolved.disks;
    let volumes: Vec<String> = disks.iter().map(|k| k.pv.clone()).collect();

    for disk in disks.iter().chain(&resolved.local_only) {
        let volume = disk.describe();
        match holders(facts, disk) {
            Ok(_) if policy.fenced => {}
            Ok(h) if h.is_empty() => {
                evidence.push(format!("volume {volume}: not open or mounted on this node"))
            }
            Ok(h) => reasons.push((
                Blocker::DiskHeld,
                format!("volume {volume} is held here: {}", h.join("; ")),
            )),
            Err(why) => reasons.push((
                Blocker::EvidenceMissing,
                format!("disk evidence for volume {volume} missing: {why}"),
            )),
        }
    }

    match facts.cluster.attachments.as_result() {
        Err(why) if !volumes.is_empty() => reasons.push((
            Blocker::EvidenceMissing,
            format!("attachment evidence missing: {why}"),
        )),
        Err(_) => {}
        Ok(atts) => {
            for a in atts.iter().filter(|a| {
                volumes.contains(&a.volume) || disks.iter().any(|k| k.handle == a.volume)
            }) {
                if a.node == facts.node {
                    evidence.push(format!(
                        "{} still names this node for {} (expected after a power cut)",
                        a.source, a.volume
                    ));
                } else if let Some(user) = shared_user(facts, vmi, &disks, a) {
                    evidence.push(format!(
                        "{} attaches {} to node {} for {user}: a shared disk another live VM \
                         uses, not this one",
                        a.source, a.volume, a.node
                    ));
                } else {
                    reasons.push((
                        Blocker::DiskAttachedElsewhere,
                        format!(
                            "{} attaches {} to node {}: the disk may be in use there (no \
                             running launcher pod of another VM there mounts it)",
                            a.source, a.volume, a.node
                        ),
                    ));
                }
            }
        }
    }
    d.disks = disks;
    d.volumes = volumes;
    d.pvcs = pvc_names.to_vec();
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// Makes the line about Harvester's PVC clean-up true for this VM: which of the PVCs it
/// would delete (`harvesterhci.io/removedPersistentVolumeClaims`) still exist, or that
/// none does, so skipping it leaves none behind.
fn describe_pvc_cleanup(facts: &Facts, vm: &VmView, d: &mut Decision) {
    const CLEANUP: &str = "wrangler.cattle.io/VMController.CleanupPVCAndSnapshot";
    let (Some(line), Some(pvcs)) = (
        d.skipped_side_effects
            .iter_mut()
            .find(|l| l.starts_with(CLEANUP)),
        facts.cluster.pvcs.value(),
    ) else {
        return;
    };
    if vm.removed_pvcs.is_empty() {
        return;
    }
    let ns = &vm.key.namespace;
    // A PVC of that name made after the VMI is not the one the VM used: never suggested
    // for deletion.
    let vmi = d.vmi.as_ref().and_then(|k| {
        facts
            .cluster
            .vmis
            .value()?
            .iter()
            .find(|v| v.key.uid == k.uid)
    });
    let (mut left, mut replaced) = (Vec::new(), Vec::new());
    for c in &vm.removed_pvcs {
        let Some(p) = pvcs.iter().find(|p| &p.namespace == ns && &p.name == c) else {
            continue;
        };
        match vmi.and_then(|v| super::disks::replacement(facts, v, p)) {
            Some(_) => replaced.push(c.as_str()),
            None => left.push(c.as_str()),
        }
    }
    if !replaced.is_empty() {
        d.evidence.push(format!(
            "PVC {} of the same name is a replacement the VM never used: Harvester's PVC \
             clean-up would delete it; it is not this VM's disk and is left as it is",
            replaced.join(", ")
        ));
    }
    *line = if left.is_empty() {
        format!(
            "{CLEANUP} on the vm: skips no PVC clean-up: the PVCs it would delete ({}) are \
             already gone; backup snapshots are not re-parented",
            vm.removed_pvcs.join(", ")
        )
    } else {
        format!(
            "{CLEANUP} on the vm: skips Harvester's PVC clean-up: {} {} left (delete by hand \
             if unwanted), and backup snapshots are not re-parented",
            left.join(", "),
            if left.len() == 1 { "is" } else { "are" }
        )
    };
}

/// Splits an object's finalizers into (remove, keep) and notes skipped side effects.
fn split_finalizers(
    finalizers: &[String],
    kind: ObjectKind,
    policy: &Policy,
    d: &mut Decision,
) -> (Vec<String>, Vec<String>) {
    let mut remove = Vec::new();
    let mut keep = Vec::new();
    for f in finalizers {
        match classify(f, kind, &policy.also_finalizers) {
            FinalizerClass::Known(k) => {
                if let Some(skipped) = k.skipped {
                    d.skipped_side_effects
                        .push(format!("{f} on the {kind}: skips {skipped}"));
                }
                remove.push(f.clone());
            }
            FinalizerClass::OperatorNamed => {
                d.skipped_side_effects.push(format!(
                    "{f} on the {kind}: named with --also-finalizer; whatever its owner does on deletion is skipped"
                ));
                remove.push(f.clone());
            }
            FinalizerClass::Unknown => keep.push(f.clone()),
        }
    }
    remove.dedup();
    (remove, keep)
}

fn apply_only_filter(decisions: &mut Vec<Decision>, policy: &Policy, node: &str) {
    if policy.only.is_empty() {
        return;
    }
    // VMIs that could not be read at all: the selection cannot be told, and saying "not on
    // this node" would be untrue (and a re-check must see it).
    let unreadable = |d: &Decision| d.blocked_by(Blocker::ClusterUnreadable);
    if decisions.iter().any(unreadable) {
        decisions.retain(unreadable);
        return;
    }
    decisions.retain(|d| {
        policy.only.iter().any(|o| {
            o.namespace == d.namespace
                && (o.name == d.name || d.vmi.as_ref().is_some_and(|k| k.name == o.name))
        })
    });
    for o in &policy.only {
        if !decisions
            .iter()
            .any(|d| d.namespace == o.namespace && d.name == o.name)
        {
            decisions.push(Decision::new(&o.namespace, &o.name, "-".into()).not_mine(
                Blocker::NotSelected,
                format!("--only names it, but no VMI of that name is on node {node}"),
            ));
        }
    }
}

/// Launcher/qemu processes on this node that no VMI accounts for. A process is an
/// orphan only when the VMI its command line names does not exist with its UID anywhere
/// in the cluster (looked up by namespace/name) and no launcher pod for it is on this
/// node; a VM that is starting (no node named yet), a migration target or a VMI whose
/// label and status disagree is not one. Only a proven orphan may be killed.
fn find_orphans(facts: &Facts, policy: &Policy) -> Vec<OrphanDecision> {
    let (Some(procs), Some(vmis)) = (facts.local.processes.value(), facts.cluster.vmis.value())
    else {
        return Vec::new();
    };
    let placed: Vec<VmiRef> = vmis
        .iter()
        .map(|v| VmiRef {
            namespace: v.key.namespace.clone(),
            name: v.key.name.clone(),
            uid: v.key.uid.clone(),
        })
        .collect();
    let pods = facts.cluster.pods.value();
    let mut out = Vec::new();
    for p in orphans::find(procs, &placed) {
        let pod = pods.and_then(|pods| {
            pods.iter().find(|pod| {
                Some(pod.key.namespace.as_str()) == p.namespace.as_deref()
                    && match (&p.uid, &pod.vmi_uid) {
                        (Some(u), Some(pu)) => u == pu,
                        _ => pod.vmi_name.is_some() && pod.vmi_name == p.name,
                    }
            })
        });
        if pod.is_some() {
            // Its launcher pod is on this node: not an orphan.
            continue;
        }
        let verdict = match (&p.namespace, &p.name) {
            _ if pods.is_none() => {
                Err("the launcher pods on this node could not be read: not killed".to_string())
            }
            (Some(ns), Some(name)) => match facts.cluster.claimed.as_result() {
                Err(why) => Err(format!(
                    "whether its VMI exists could not be read ({why}): not killed"
                )),
                Ok(claimed) => match claimed
                    .iter()
                    .find(|c| &c.namespace == ns && &c.name == name)
                {
                    None => Err("its VMI was not looked up: not killed".to_string()),
                    Some(ClaimedVmi { vmi: None, .. }) => Ok(format!(
                        "no VMI {ns}/{name} exists in the cluster and no launcher pod for it is on node {}",
                        facts.node
                    )),
                    Some(ClaimedVmi { vmi: Some(v), .. }) => match &p.uid {
                        Some(uid) if *uid != v.key.uid => Ok(format!(
                            "VMI {ns}/{name} exists with another UID ({}): this process serves an older incarnation",
                            v.key.uid
                        )),
                        // It serves a live VMI (starting, migration target, or in doubt).
                        _ => continue,
                    },
                },
            },
            _ => Err("its command line names no VMI namespace/name to look up: not killed".into()),
        };
        let selected = policy.only.is_empty()
            || policy.only.iter().any(|o| {
                Some(o.namespace.as_str()) == p.namespace.as_deref()
                    && Some(o.name.as_str()) == p.name.as_deref()
            });
        let (kill, reason) = match verdict {
            Ok(why) if !selected => (false, format!("{why}; not selected by --only: not killed")),
            Ok(why) if policy.kill_orphans => (
                true,
                format!("{why}; --kill-orphans: SIGTERM, then SIGKILL"),
            ),
            Ok(why) => (
                false,
                format!("{why}; reported only (--kill-orphans to kill)"),
            ),
            Err(why) => (false, why),
        };
        out.push(OrphanDecision {
            pid: p.pid,
            start_time: p.start_time,
            kind: p.kind,
            claims: p.vmi_label(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
            kill,
            reason,
        });
    }
    out
}

/// Decisions for VMIs that a process on this node serves but that were not listed for
/// this node: reported here too (blocked when their label and status disagree).
fn claimed_decisions(facts: &Facts, decisions: &[Decision]) -> Vec<Decision> {
    let (Some(procs), Some(claimed)) =
        (facts.local.processes.value(), facts.cluster.claimed.value())
    else {
        return Vec::new();
    };
    let mut out: Vec<Decision> = Vec::new();
    for c in claimed {
        let Some(vmi) = &c.vmi else { continue };
        let serving: Vec<&VmProcess> = procs
            .iter()
            .filter(|p| {
                p.namespace.as_deref() == Some(c.namespace.as_str())
                    && p.name.as_deref() == Some(c.name.as_str())
                    && p.uid.as_deref().is_none_or(|u| u == vmi.key.uid)
            })
            .collect();
        let known = decisions
            .iter()
            .chain(out.iter())
            .any(|d| d.vmi.as_ref().is_some_and(|k| k.uid == vmi.key.uid));
        if serving.is_empty() || known {
            continue;
        }
        let name = vmi
            .owner_vm
            .as_ref()
            .map(|(n, _)| n.as_str())
            .unwrap_or(&vmi.key.name);
        let mut d = Decision::new(&vmi.key.namespace, name, phase_of(Some(vmi), None));
        d.vmi = Some(vmi.key.clone());
        let here = describe_procs(&serving);
        let d = match not_mine(vmi, &facts.node) {
            Some((Action::Blocked, kind, reason)) => d.block(
                kind,
                format!("{reason}; a process for it runs on this node: {here}"),
            ),
            Some((_, kind, reason)) => d.not_mine(
                kind,
                format!(
                    "{reason}; its process runs here ({here}): starting, or a migration target"
                ),
            ),
            None => d.not_mine(
                Blocker::NotThisNode,
                format!("names no node yet; its process runs here ({here}): starting"),
            ),
        };
        out.push(d);
    }
    out
}

/// How `disk` is held on this node: its Longhorn device (by volume handle), partitions
/// and stacked devices, and the kubelet's paths (by PV name; filesystem staging by the
/// handle's sha256).
fn holders(facts: &Facts, disk: &DiskKey) -> Result<Vec<String>, crate::node::HoldersUnknown> {
    facts
        .local
        .volume_holders_for(&VolumeKey::new(disk.pv.clone(), disk.handle.clone()))
}

/// The other, live VM an attachment elsewhere is for, if a running launcher pod on that
/// node mounts the same PVC for a different VMI: then the attachment is that VM's use of
/// a shared disk, not evidence against this one.
fn shared_user(
    facts: &Facts,
    vmi: &VmiView,
    disks: &[super::model::DiskKey],
    a: &crate::cluster::AttachmentView,
) -> Option<String> {
    let pods = facts.cluster.remote_pods.value()?;
    let claims: Vec<&str> = disks
        .iter()
        .filter(|k| k.pv == a.volume || k.handle == a.volume)
        .filter_map(|k| k.pvc.as_deref())
        .filter_map(|c| c.split_once('/').map(|(_, n)| n))
        .collect();
    pods.iter()
        .find(|p| {
            p.key.namespace == vmi.key.namespace
                && p.node_name.as_deref() == Some(a.node.as_str())
                && p.uses_shared_disk(&vmi.key.uid, &claims)
        })
        .map(|p| {
            format!(
                "VMI {}/{} (launcher pod {} Running there)",
                p.key.namespace,
                p.vmi_name.as_deref().unwrap_or("?"),
                p.key.name
            )
        })
}

/// The first `shown` items joined, then how many more: a message stays one readable line
/// even for an object with thousands of finalizers.
pub(crate) fn summarise(items: &[String], shown: usize) -> String {
    if items.len() <= shown {
        return items.join(", ");
    }
    format!(
        "{} … and {} more ({} in all)",
        items[..shown].join(", "),
        items.len() - shown,
        items.len()
    )
}

fn describe_procs(procs: &[&VmProcess]) -> String {
    procs
        .iter()
        .map(|p| format!("pid {} ({})", p.pid, p.kind.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn names(pods: &[&PodView]) -> String {
    pods.iter()
        .map(|p| p.key.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn add(t: jiff::Timestamp, d: std::time::Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(jiff::Timestamp::MAX)
}

/// The metric label of why a decision is blocked or not this node's (`none` otherwise):
/// the first [`Blocker`] the planner set, never a match on the reason text.
pub fn blocker_category(d: &Decision) -> &'static str {
    match d.action {
        Action::Blocked | Action::NotMine => d
            .reasons
            .iter()
            .find_map(|r| r.blocker)
            .map_or("none", |b| b.label()),
        _ => "none",
    }
}
