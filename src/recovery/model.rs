//! The planner's input and output types: `Facts` in, `Plan` of `Decision`s out.
//! All serde, so `status --output json`, the dry-run and tests show the same thing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::blocker::Blocker;
use super::finalizers::ObjectKind;
use super::intents::{RecoveryIntent, SeenVmi};
use crate::boot::Verdict;
use crate::cluster::{ClusterFacts, ObjectKey};
use crate::config::Policy;
use crate::evidence::Gathered;
use crate::node::{NodeFacts, ProcessKind};

/// Everything gathered at the edge, with the time it was gathered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// When the facts were gathered, on the API server's clock (its responses' `Date`;
    /// the planner's only clock, docs/safety.md "Clocks").
    pub now: jiff::Timestamp,
    /// This node's name.
    pub node: String,
    /// When this boot started, in the server's time (`now` − CLOCK_BOOTTIME; stuck time
    /// counts from the later of this and the deletionTimestamp).
    pub boot_time: Gathered<jiff::Timestamp>,
    /// The unclean-shutdown verdict (the full boot evidence is in the status report).
    pub verdict: Verdict,
    /// Processes and disks on this node.
    pub local: NodeFacts,
    /// Objects on this node as the API server has them.
    pub cluster: ClusterFacts,
    /// VMs an earlier run had started recovering (their VMI may be gone already).
    pub intents: Gathered<Vec<RecoveryIntent>>,
    /// This node's deciding VMIs as first seen, with their disks' keys then (the intents
    /// file; unreadable with it).
    #[serde(default = "none_seen")]
    pub seen: Gathered<Vec<SeenVmi>>,
    /// This machine as the host says it is (`/etc/machine-id`, this boot's id).
    #[serde(default = "host_not_gathered")]
    pub host: Gathered<HostIdentity>,
}

/// This host's machine id and boot id (normalised), to prove `--node` names it: the node
/// evidence's own reading (bounded in time, under `--host-root`).
pub use crate::node::HostIdentity;

fn none_seen() -> Gathered<Vec<SeenVmi>> {
    Gathered::read(Vec::new())
}

fn host_not_gathered() -> Gathered<HostIdentity> {
    Gathered::unreadable("this host's identity", "not gathered")
}

/// The plan for this node: one decision per VM, plus orphan processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The node planned for.
    pub node: String,
    /// The facts' time.
    pub at: jiff::Timestamp,
    /// The boot verdict the plan was made under.
    pub verdict: Verdict,
    /// The policy the plan obeys.
    pub policy: Policy,
    /// One decision per VM (or standalone VMI) on this node, sorted by namespace/name.
    pub decisions: Vec<Decision>,
    /// Launcher/qemu processes that belong to no VMI on this node.
    pub orphans: Vec<OrphanDecision>,
    /// Set when the plan is refused as a whole (e.g. more VMs than `--max-vms`, or
    /// `--node` not proven to be this machine): why, as a type and in words.
    pub refused: Option<Refusal>,
    /// The host identity the plan was proven against; re-checked against the Node before
    /// every change.
    #[serde(default)]
    pub host: Option<HostIdentity>,
    /// What Harvester's node-down controller did or will do for this node, and the pause,
    /// in lines a person reads.
    #[serde(default)]
    pub harvester: Vec<String>,
    /// Why vmrecover is paused on this node (node annotation or cluster-wide), if it is.
    #[serde(default)]
    pub paused: Option<String>,
    /// Recovery intents whose VM is gone or recreated: an applying run forgets them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_intents: Vec<super::intents::StaleIntent>,
}

impl Plan {
    /// The decisions that change something.
    pub fn actionable(&self) -> impl Iterator<Item = &Decision> {
        self.decisions
            .iter()
            .filter(|d| matches!(d.action, Action::Recover { .. }))
    }

    /// Whether applying the plan would change anything.
    pub fn has_work(&self) -> bool {
        self.refused.is_none()
            && (self.actionable().next().is_some() || self.orphans.iter().any(|o| o.kill))
    }

    /// Why the plan is refused as a whole, as a type.
    pub fn refused_by(&self) -> Option<Blocker> {
        self.refused.as_ref().map(|r| r.blocker)
    }

    /// Whether any VM is left for a person (exit code 3).
    pub fn has_blocked(&self) -> bool {
        self.refused.is_some()
            || self
                .decisions
                .iter()
                .any(|d| matches!(d.action, Action::Blocked))
    }
}

/// What vmrecover decided for one VM, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM's name (the VMI's name for a VMI without a VM).
    pub name: String,
    /// The VMI, when there is one.
    pub vmi: Option<ObjectKey>,
    /// The VM, when there is one.
    pub vm: Option<ObjectKey>,
    /// What an operator sees: VMI phase and VM printable status.
    pub phase: String,
    /// The decision.
    pub action: Action,
    /// Why, in words an operator can act on, each with its kind when it blocks the VM or
    /// makes it not this node's (metrics and exit codes read the kinds: [`Decision::blockers`]).
    /// Never empty.
    pub reasons: Vec<Reason>,
    /// The evidence the decision rests on.
    pub evidence: Vec<String>,
    /// The PVCs of the VM (recorded with a recovery intent).
    pub pvcs: Vec<String>,
    /// The Longhorn volumes (PV names) of the VM, re-checked before applying.
    pub volumes: Vec<String>,
    /// Finalizers that are kept (unknown ones).
    pub kept_finalizers: Vec<String>,
    /// Side effects that clearing Harvester finalizers skips.
    pub skipped_side_effects: Vec<String>,
    /// The disks the proof checked, with the keys each check uses (re-checked before
    /// applying).
    #[serde(default)]
    pub disks: Vec<DiskKey>,
    /// A fenced-node run: the node the operator declared powered off. The proof rests on
    /// that declaration; nothing of the node was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_off: Option<String>,
}

impl Decision {
    /// Why it is blocked or not this node's, as types, each once, in the order of its
    /// reasons (metrics and exit codes match on these, never on the words). Empty for other
    /// decisions.
    pub fn blockers(&self) -> Vec<Blocker> {
        let mut out = Vec::new();
        for b in self.reasons.iter().filter_map(|r| r.blocker) {
            if !out.contains(&b) {
                out.push(b);
            }
        }
        out
    }

    /// Whether one of its reasons is of kind `b`.
    pub fn blocked_by(&self, b: Blocker) -> bool {
        self.reasons.iter().any(|r| r.blocker == Some(b))
    }

    /// The words of its reasons, joined with `sep`.
    pub fn reason_text(&self, sep: &str) -> String {
        self.reasons
            .iter()
            .map(|r| r.text.as_str())
            .collect::<Vec<_>>()
            .join(sep)
    }
}

/// One reason of a decision: the words for people and, when it is why the VM is left
/// alone (blocked, not this node's), its kind for metrics and exit codes. A recovering,
/// waiting or healthy decision's reasons say why in words only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The kind, when this reason keeps vmrecover from acting on the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocker: Option<Blocker>,
    /// Why, in words an operator can act on.
    pub text: String,
}

impl Reason {
    /// A reason that keeps vmrecover from acting, of kind `blocker`.
    pub fn blocking(blocker: Blocker, text: impl Into<String>) -> Self {
        Reason {
            blocker: Some(blocker),
            text: text.into(),
        }
    }

    /// Words that explain a decision that is not a block.
    pub fn why(text: impl Into<String>) -> Self {
        Reason {
            blocker: None,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a whole plan is refused: nothing of it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Why, as a type (`identity_mismatch`, `boot_not_reported`, `plan_refused`, ...).
    pub blocker: Blocker,
    /// Why, in words an operator can act on.
    pub text: String,
}

impl Refusal {
    /// A refusal of kind `blocker`.
    pub fn new(blocker: Blocker, text: impl Into<String>) -> Self {
        Refusal {
            blocker,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A disk's keys: the PV name (the kubelet's block paths, storage VolumeAttachments) and
/// the CSI volume handle (the Longhorn volume: its device and Longhorn's objects).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskKey {
    /// The PVC it was reached from, when known.
    #[serde(default)]
    pub pvc: Option<String>,
    /// The PV's name.
    pub pv: String,
    /// `spec.csi.volumeHandle` (the PV name when the PV has none).
    pub handle: String,
    /// `spec.csi.driver`.
    pub driver: Option<String>,
}

impl DiskKey {
    /// `pv` or `pv (Longhorn volume handle)` when they differ.
    pub fn describe(&self) -> String {
        if self.pv == self.handle {
            self.pv.clone()
        } else {
            format!("{} (Longhorn volume {})", self.pv, self.handle)
        }
    }
}

/// The five decisions of the recovery ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Nothing is wrong, or nothing is vmrecover's to do.
    Healthy,
    /// Not this node's business (another node, migrating, not selected).
    NotMine,
    /// Evidence is missing or positive: left alone for a person.
    Blocked,
    /// Not stuck yet, or a controller owns the next move.
    Waiting {
        /// When it counts as stuck, if that is known.
        until: Option<jiff::Timestamp>,
    },
    /// Recover with these steps, in order.
    Recover {
        /// The ladder steps.
        steps: Vec<Step>,
    },
}

impl Action {
    /// A short label for tables and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Action::Healthy => "healthy",
            Action::NotMine => "not-mine",
            Action::Blocked => "blocked",
            Action::Waiting { .. } => "waiting",
            Action::Recover { .. } => "recover",
        }
    }
}

/// One ladder step (docs/architecture.md §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Force-delete (grace 0, UID precondition) a leftover virt-launcher pod.
    ForceDeletePod {
        /// The pod as read.
        pod: ObjectKey,
    },
    /// Give virt-controller/Harvester this long to clear their own finalizers.
    WaitForControllers {
        /// The grace period.
        #[serde(with = "crate::serde_duration")]
        grace: Duration,
    },
    /// Remove these finalizers with a JSON Patch that tests the current list and
    /// resourceVersion.
    ClearFinalizers {
        /// VMI or VM.
        kind: ObjectKind,
        /// The object as read.
        object: ObjectKey,
        /// The finalizers as read (tested by the patch).
        expected: Vec<String>,
        /// The ones to remove.
        remove: Vec<String>,
    },
}

/// What to do about one orphan process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanDecision {
    /// Process id.
    pub pid: u32,
    /// Start time (identity guard against pid reuse).
    pub start_time: u64,
    /// Which kind of VM process.
    pub kind: ProcessKind,
    /// Who it claims to serve, e.g. `default/vm-x (uid …)`.
    pub claims: String,
    /// The namespace its command line names (re-checked right before a kill).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The VMI name its command line names.
    #[serde(default)]
    pub name: Option<String>,
    /// The VMI UID its command line names.
    #[serde(default)]
    pub uid: Option<String>,
    /// Whether this run kills it (`--kill-orphans`).
    pub kill: bool,
    /// Why it is an orphan.
    pub reason: String,
}

/// The VMs a re-check decides again: the planner, narrowed to them, decides only the VMIs
/// named here and the earlier runs' VMs with these UIDs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrow {
    /// VMIs, as (namespace, name).
    pub vmis: std::collections::BTreeSet<(String, String)>,
    /// VMs, by UID.
    pub vm_uids: std::collections::BTreeSet<String>,
}

impl Narrow {
    /// The VMI and VM of one decision.
    pub fn of(d: &Decision) -> Self {
        let mut n = Narrow::default();
        if let Some(k) = &d.vmi {
            n.vmis.insert((k.namespace.clone(), k.name.clone()));
        }
        if let Some(k) = &d.vm {
            n.vm_uids.insert(k.uid.clone());
        }
        n
    }

    /// Adds `other`'s VMs.
    pub fn extend(&mut self, other: &Narrow) {
        self.vmis.extend(other.vmis.iter().cloned());
        self.vm_uids.extend(other.vm_uids.iter().cloned());
    }

    /// Whether every VM of `other` is here.
    pub fn covers(&self, other: &Narrow) -> bool {
        other.vmis.is_subset(&self.vmis) && other.vm_uids.is_subset(&self.vm_uids)
    }

    /// Whether the VMI `namespace/name` is here.
    pub fn has_vmi(&self, namespace: &str, name: &str) -> bool {
        self.vmis.iter().any(|(ns, n)| ns == namespace && n == name)
    }
}
