//! What applying a plan works with besides the plan: the cluster calls, the Lease, the
//! intents, the re-check and the stop flag ([`ApplyContext`]), and what one step changed
//! ([`Change`]), shared by the steps (`apply.rs`), the Event (`apply_event.rs`) and the
//! intent (`apply_intent.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::apply_io::ApplyCluster;
use super::finalizers::ObjectKind;
use super::intents::IntentStore;
use super::recheck::Recheck;
use crate::cluster::LeaseGuard;

/// What apply needs besides the plan.
pub struct ApplyContext {
    /// The cluster calls the steps make.
    pub cluster: Arc<dyn ApplyCluster>,
    /// Whether the node Lease is still held.
    pub lease: LeaseGuard,
    /// Intents in the state directory.
    pub intents: Arc<Mutex<IntentStore>>,
    /// The planner re-run right before each VM is changed.
    pub recheck: Recheck,
    /// How many VMs are worked on at once.
    pub concurrency: usize,
    /// SIGTERM-to-SIGKILL grace for orphan processes.
    pub kill_grace: Duration,
    /// Becomes true when the process is asked to stop (SIGTERM, Ctrl-C): no new step
    /// starts, a controller wait ends at once.
    pub cancel: tokio::sync::watch::Receiver<bool>,
    /// Told each VM's progress as it goes (a person's `run`), if anyone listens.
    pub progress: Option<Progress>,
}

/// Where a run's progress goes: one line per VM as it starts and as it ends.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// What one step changed, for the VM's Event.
pub(super) enum Change {
    /// A leftover launcher pod was force-deleted.
    PodDeleted(String),
    /// Finalizers were removed from the VMI or VM.
    FinalizersRemoved(ObjectKind, Vec<String>),
}
