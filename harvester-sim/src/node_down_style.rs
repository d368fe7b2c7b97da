//! What a release's node-down controller does (a field of the release profile, read by
//! `controllers/node_down.rs`). Vocabulary: imports nothing of the crate.

/// What a release's node-down controller does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeDownStyle {
    /// Harvester ≤ 1.6: force-deletes launcher pods and their VolumeAttachments.
    ForceDeletePods,
    /// Harvester ≥ 1.7: drain and out-of-service taints and the `Drained` condition.
    Taints,
}
