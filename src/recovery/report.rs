//! The run report: what a run planned and what happened to each VM, saved in the state
//! directory for `vmrecover status` and printed by `vmrecover run`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::blocker::Blocker;
use super::follow::FollowOutcome;
use super::mode::Mode;
use super::model::Plan;
use crate::evidence::Gathered;
use crate::state_file::{load_versioned, save_versioned, SaveError};

/// The run report's format version (1: as written before versions, which had no
/// `version` key).
pub const REPORT_FORMAT: u32 = 1;

/// The file name of the last run's report under the state directory.
pub const LAST_RUN_FILE: &str = "last-run.json";

/// How one VM's recovery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmResult {
    /// Every planned step is done.
    Recovered,
    /// The controllers finished on their own during the wait.
    FinishedByController,
    /// Its leftover launcher pod was removed; the VM controller finishes the rest (a VM
    /// that is `Stopping`, not deleting, never has its finalizers cleared).
    HandedToController,
    /// A precondition moved (new finalizer, new pod, new process, lost lease): left alone.
    Aborted,
    /// An API error stopped it.
    Failed,
}

/// Which ladder step a [`StepOutcome`] is, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepAction {
    /// Force-delete of a leftover launcher pod.
    ForceDeletePod,
    /// The controller wait.
    WaitForControllers,
    /// Removing finalizers from the VMI or the VM.
    ClearFinalizers,
}

impl StepAction {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            StepAction::ForceDeletePod => "force_delete_pod",
            StepAction::WaitForControllers => "wait_for_controllers",
            StepAction::ClearFinalizers => "clear_finalizers",
        }
    }
}

/// How a step or an orphan kill ended, for metrics and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// It did what it was meant to (or found it already done).
    Done,
    /// A precondition moved: nothing was changed by it.
    LeftAlone,
    /// An error stopped it.
    Failed,
}

impl StepStatus {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            StepStatus::Done => "ok",
            StepStatus::LeftAlone => "aborted",
            StepStatus::Failed => "failed",
        }
    }
}

/// One step as carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// Which step.
    pub action: StepAction,
    /// How it ended.
    pub status: StepStatus,
    /// What the step was, e.g. `clear finalizers of vmi default/x: a, b`, for people.
    pub step: String,
    /// `done`, `left alone: …`, `failed: …`, for people.
    pub result: String,
}

/// What happened to one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmOutcome {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// How it ended.
    pub result: VmResult,
    /// Why, when it did not simply succeed.
    pub reason: Option<String>,
    /// Why it was left alone, as a type (an aborted VM: the re-check's [`Blocker`], a
    /// lost Lease, a stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocker: Option<Blocker>,
    /// The steps, in order.
    pub steps: Vec<StepOutcome>,
    /// API requests this VM's steps made.
    pub requests: u32,
    /// What became of it after the changes, when the run followed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<FollowOutcome>,
    /// The VM is known gone from the run itself: the API server answered vmrecover's last
    /// finalizer patch with the deleted VM, or the controller wait saw it go. Its follow
    /// needs no read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vm_deleted: bool,
}

/// What happened to one orphan process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanOutcome {
    /// Process id.
    pub pid: u32,
    /// How the kill ended.
    pub status: StepStatus,
    /// What happened, in words: terminated, killed, already gone, refused: …
    pub result: String,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// When the run started.
    pub started: jiff::Timestamp,
    /// When it ended.
    pub finished: jiff::Timestamp,
    /// Whether it was a dry-run (nothing applied).
    pub dry_run: bool,
    /// Who ran it.
    pub mode: Mode,
    /// The plan.
    pub plan: Plan,
    /// Per-VM outcomes of the recover decisions (empty for a dry-run).
    pub outcomes: Vec<VmOutcome>,
    /// Orphan process outcomes.
    pub orphans: Vec<OrphanOutcome>,
    /// A reason the whole run stopped (lease lost, refused plan), if any.
    pub stopped: Option<String>,
    /// Recovery intents this run forgot because their VM is gone or was recreated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned_intents: Vec<String>,
}

impl RunReport {
    /// VMs recovered (by vmrecover or by the controllers during the wait).
    pub fn recovered(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| {
                matches!(
                    o.result,
                    VmResult::Recovered | VmResult::FinishedByController
                )
            })
            .count()
    }

    /// VMs whose leftover pod was freed for the VM controller to finish.
    pub fn handed_over(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.result == VmResult::HandedToController)
            .count()
    }

    /// VMs whose recovery failed with an error.
    pub fn failed(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.result == VmResult::Failed)
            .count()
    }

    /// VMs left alone because a precondition moved.
    pub fn aborted(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.result == VmResult::Aborted)
            .count()
    }
}

/// Where run reports live.
#[derive(Debug, Clone)]
pub struct ReportStore {
    path: PathBuf,
}

impl ReportStore {
    /// The store under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        ReportStore {
            path: state_dir.join(LAST_RUN_FILE),
        }
    }

    /// Saves `report` as the last run.
    pub fn save(&self, report: &RunReport) -> Result<(), SaveError> {
        save_versioned(&self.path, "the run report", REPORT_FORMAT, report)
    }

    /// The last run's report: `None` when there was none.
    pub fn load(&self) -> Gathered<Option<RunReport>> {
        load_versioned(&self.path, "run report", (1, REPORT_FORMAT))
    }
}
