//! Why a VM is left alone, as a type: metrics, exit codes and the agent match on
//! [`Blocker`]; the reason text beside it is for people and may be reworded freely.

use serde::{Deserialize, Serialize};

/// One kind of reason that keeps vmrecover from acting on a VM.
///
/// Every reason the planner writes for a `blocked` or `not_mine` decision carries one of
/// these. The metric label of `vmrecover_vms{reason}` is [`Blocker::label`]: renaming a
/// variant's label is a change of the metrics' contract, rewording a message is not.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::EnumIter,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Blocker {
    /// A virt-launcher or qemu process of the VM still runs on this node.
    LiveProcess,
    /// One of the VM's volumes is open, mounted or stacked on here.
    DiskHeld,
    /// One of the VM's volumes is attached to another node.
    DiskAttachedElsewhere,
    /// A finalizer vmrecover does not know would keep the object stuck.
    UnknownFinalizer,
    /// Evidence the proof needs could not be read (the reason says which).
    EvidenceMissing,
    /// The VMIs on this node could not be read at all: nothing on the node is decided.
    ClusterUnreadable,
    /// The VMI names another node (label or status), or no node.
    NotThisNode,
    /// The VMI is migrating.
    Migrating,
    /// The VMI's node label and `status.nodeName` name different nodes.
    NodeDisagreement,
    /// `--node` could not be proven to be this machine.
    IdentityMismatch,
    /// The kubelet has not reported this boot yet: wait for it.
    BootNotReported,
    /// The whole plan was refused (e.g. more VMs than `--max-vms`).
    PlanRefused,
    /// `--only` names a VM that is not on this node.
    NotSelected,
    /// An operator paused vmrecover (node annotation or cluster-wide ConfigMap).
    Paused,
    /// A Harvester Upgrade is in progress: Harvester's own node handling stands still, and
    /// so does vmrecover.
    UpgradeInProgress,
    /// A fenced-node run whose node is not fenced (no out-of-service taint, Ready, or not
    /// NotReady long enough).
    NotFenced,
    /// The re-check right before a change found a decision that is no longer the plan's:
    /// a new step (a new launcher pod, a finalizer added), a changed object (replaced,
    /// another disk), or no longer "recover".
    PlanChanged,
    /// The node Lease was lost during the run: no further change is made.
    LeaseLost,
    /// vmrecover was asked to stop (SIGTERM, Ctrl-C) during the run.
    Interrupted,
    /// A fenced-node run whose node shows a sign of life (a recent or changing heartbeat,
    /// Lease or summary, Longhorn's node Ready) or is the machine running it.
    FencedNodeAlive,
}

impl Blocker {
    /// Every kind, in declaration order (derived: a new variant is in it by construction),
    /// for tests and for metric families that list all labels.
    pub fn all() -> impl Iterator<Item = Blocker> {
        <Blocker as strum::IntoEnumIterator>::iter()
    }

    /// The stable label used in metrics and JSON (the variant's name in snake case, as serde
    /// writes it; a test keeps the two equal).
    pub fn label(self) -> &'static str {
        self.into()
    }

    /// Whether the blocker means a state that could not be read (exit code 1 for
    /// `status`, an API error for the agent) rather than a state that was read and is
    /// unsafe.
    pub fn is_unreadable(self) -> bool {
        matches!(self, Blocker::EvidenceMissing | Blocker::ClusterUnreadable)
    }
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_match_serde() {
        let mut seen = std::collections::BTreeSet::new();
        for b in Blocker::all() {
            assert!(seen.insert(b.label()), "duplicate label {}", b.label());
            assert_eq!(
                serde_json::to_value(b).unwrap(),
                serde_json::json!(b.label())
            );
        }
    }

    /// Every label (the list is derived: a new variant is in it) has its row in
    /// docs/runbook.md's table of reasons, which says what to do about it.
    #[test]
    fn every_label_is_explained_in_the_runbook() {
        let runbook = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbook.md"),
        )
        .expect("docs/runbook.md");
        for b in Blocker::all() {
            assert!(
                runbook.contains(&format!("| `{}` |", b.label())),
                "docs/runbook.md's table of reasons has no row for `{b}`"
            );
        }
    }
}
