//! What a pass reads besides this node's own VMIs: the request that `gather` and
//! `gather_disks` both take.

use std::collections::BTreeSet;

/// Objects to read besides those the VMIs on the node refer to: the VMs (and their
/// PVCs) an earlier run had started recovering, whose VMI may be gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlsoRead {
    /// VMs, as (namespace, name).
    pub vms: Vec<NsName>,
    /// PVCs, as (namespace, claim).
    pub pvcs: Vec<NsName>,
    /// VMIs that VM processes on this node claim, as (namespace, name): each is read by
    /// name unless a VMI listed for the node already accounts for it.
    pub claimed_vmis: Vec<NsName>,
    /// Disks (PV name, volume handle) an earlier run's recovery intents recorded: looked
    /// for even when their PVC is gone.
    pub disks: Vec<(String, String)>,
    /// Disks (VMI, PV name, volume handle) recorded when a VMI was first seen deciding:
    /// looked for while that VMI is listed here (a record of a VMI gone from this node
    /// decides nothing, and is dropped at the next write).
    pub seen_disks: Vec<(NsName, String, String)>,
    /// The agent's namespace, where the cluster-wide pause lives; with it, a pass that
    /// decides something also reads Harvester's state (the pause ConfigMap, the policy
    /// setting, the Upgrades).
    pub namespace: Option<String>,
    /// A fenced-node run: also list every launcher pod, to find one of a VM here Running
    /// on another node.
    pub fenced: bool,
    /// A re-check: only these VMIs (namespace, name) have their own objects read; each
    /// one this node's list does not have is read by name and joins the list, so the
    /// planner says where it is now (gone: not there at all).
    pub narrow: Option<BTreeSet<NsName>>,
    /// A fenced-node run: how long to watch NODE's signs of life for a change when something
    /// is being decided (they are read once in any case).
    pub fence_watch: std::time::Duration,
    /// A fenced run's re-check: the run's own identity on NODE's Lease, whose renewals are
    /// no sign of NODE's life.
    pub own_holder: Option<String>,
    /// The re-check rounds of one run share the storage VolumeAttachment list for a short
    /// while ([`super::VaCache`]); `None` reads it every time.
    pub va_cache: Option<super::VaCache>,
}

/// A (namespace, name) pair.
pub type NsName = (String, String);
