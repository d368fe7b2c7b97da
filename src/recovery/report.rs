//! The run report: what a run planned and what happened to each VM, saved in the state
//! directory for `vmrecover status` and printed by `vmrecover run`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::abort::Abort;
use super::blocker::Blocker;
use super::follow::FollowOutcome;
use super::mode::Mode;
use super::model::Plan;
use crate::evidence::Gathered;
use crate::state_file::{load_upgraded, save_versioned, SaveError};

/// The run report's format version (1: as written before versions, which had no
/// `version` key, with each decision's reasons as words beside a list of blockers and a
/// refusal as `refused` words beside `refused_by`; 2: each reason and the refusal typed,
/// `{"blocker", "text"}`). Format 1 is read by [`upgrade`].
pub const REPORT_FORMAT: u32 = 2;

/// The file name of the last run's report under the state directory.
pub const LAST_RUN_FILE: &str = "last-run.json";

/// How one VM's recovery ended, with why when it did not simply succeed. In JSON its
/// fields sit in the outcome itself: `"result": "aborted", "blocker": …, "reason": …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum VmResult {
    /// Every planned step is done.
    Recovered,
    /// The controllers finished on their own during the wait.
    FinishedByController,
    /// Its leftover launcher pod was removed; the VM controller finishes the rest (a VM
    /// that is `Stopping`, not deleting, never has its finalizers cleared).
    HandedToController,
    /// A precondition moved (new finalizer, new pod, new process, lost lease): left alone,
    /// with the kind and words the re-check (the planner re-run) or the stop gave.
    Aborted(Abort),
    /// An API error stopped it.
    Failed {
        /// What failed, in the server's or the system's words and what to do.
        reason: String,
    },
}

impl VmResult {
    /// The metric label (`vmrecover_vm_outcomes_total{result}`).
    pub fn label(&self) -> &'static str {
        match self {
            VmResult::Recovered => "recovered",
            VmResult::FinishedByController => "finished_by_controller",
            VmResult::HandedToController => "handed_to_controller",
            VmResult::Aborted(_) => "aborted",
            VmResult::Failed { .. } => "failed",
        }
    }

    /// Why it did not simply succeed, in words (aborted or failed).
    pub fn reason(&self) -> Option<&str> {
        match self {
            VmResult::Aborted(a) => Some(&a.detail),
            VmResult::Failed { reason } => Some(reason),
            _ => None,
        }
    }

    /// Why it was left alone, as a type (aborted only).
    pub fn blocker(&self) -> Option<Blocker> {
        match self {
            VmResult::Aborted(a) => Some(a.blocker),
            _ => None,
        }
    }
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
    /// How it ended, and why when it did not simply succeed (an aborted VM: the
    /// re-check's [`Abort`], a lost Lease, a stop).
    #[serde(flatten)]
    pub result: VmResult,
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
            .filter(|o| matches!(o.result, VmResult::HandedToController))
            .count()
    }

    /// VMs whose recovery failed with an error.
    pub fn failed(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.result, VmResult::Failed { .. }))
            .count()
    }

    /// VMs left alone because a precondition moved.
    pub fn aborted(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.result, VmResult::Aborted(_)))
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
        load_upgraded(&self.path, "run report", (1, REPORT_FORMAT), upgrade)
    }
}

/// Rewrites a run report of format 1 into format 2's shape (a newer one is left as it is).
///
/// Format 1 kept a decision's reasons as words and, beside them, the kinds of its blocks
/// (`blockers`, each kind once, in the order the planner set them) without saying which
/// words were which kind: each kind is given to the reason in its place (the first kind to
/// the first reason, ...), the reasons after them carry none, and a kind without words left
/// becomes a reason of its own with no text. The kinds a decision had ([`Decision::blockers`],
/// what metrics and exit codes read) are kept exactly; only which words belong to which kind
/// is a guess. `refused` + `refused_by` become one refusal (`plan_refused` when the kind is
/// missing), and an aborted outcome without a kind gets `plan_changed` (a precondition
/// moved).
///
/// [`Decision::blockers`]: super::model::Decision::blockers
fn upgrade(version: u64, json: &mut serde_json::Value) {
    use serde_json::{json, Value};
    if version != 1 {
        return;
    }
    let Some(plan) = json.get_mut("plan").and_then(Value::as_object_mut) else {
        return;
    };
    let refused_by = plan.remove("refused_by").filter(|b| !b.is_null());
    if let Some(Value::String(text)) = plan.get("refused").cloned() {
        let blocker = refused_by.unwrap_or_else(|| json!("plan_refused"));
        plan.insert(
            "refused".into(),
            json!({ "blocker": blocker, "text": text }),
        );
    }
    for d in plan
        .get_mut("decisions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        let blockers = match d.remove("blockers") {
            Some(Value::Array(b)) => b,
            _ => Vec::new(),
        };
        let words = match d.remove("reasons") {
            Some(Value::Array(w)) => w,
            _ => Vec::new(),
        };
        let n = words.len().max(blockers.len());
        let reasons: Vec<Value> = (0..n)
            .map(|i| {
                let text = words.get(i).cloned().unwrap_or_else(|| json!(""));
                match blockers.get(i) {
                    Some(b) => json!({ "blocker": b, "text": text }),
                    None => json!({ "text": text }),
                }
            })
            .collect();
        d.insert("reasons".into(), Value::Array(reasons));
    }
    for o in json
        .get_mut("outcomes")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        let aborted = o.get("result").and_then(Value::as_str) == Some("aborted");
        if aborted && o.get("blocker").is_none_or(Value::is_null) {
            o.insert("blocker".into(), json!("plan_changed"));
        }
        if o.get("reason").is_some_and(Value::is_null) {
            o.remove("reason");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn golden(dir: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/state")
            .join(dir)
    }

    fn load(dir: &Path) -> RunReport {
        let read = ReportStore::new(dir).load();
        match read {
            Gathered::Read { value: Some(r) } => r,
            other => panic!("{other:?}"),
        }
    }

    /// A report of format 1 keeps every kind its decisions had, in order, each given to the
    /// reason in its place; its outcomes keep their kinds and words.
    #[test]
    fn a_report_of_format_1_is_read_with_its_kinds() {
        let r = load(&golden("v1-aborted"));
        let d = &r.plan.decisions[1];
        assert_eq!(
            d.blockers(),
            vec![
                Blocker::LiveProcess,
                Blocker::DiskHeld,
                Blocker::EvidenceMissing
            ]
        );
        assert_eq!(d.reasons[0].blocker, Some(Blocker::LiveProcess));
        assert!(d.reasons[0].text.contains("pid 4242"), "{d:?}");
        let recovering = &r.plan.decisions[0];
        assert!(recovering.blockers().is_empty());
        assert!(
            recovering.reasons[0].text.contains("stuck"),
            "{recovering:?}"
        );

        let results: Vec<&VmResult> = r.outcomes.iter().map(|o| &o.result).collect();
        assert!(
            matches!(results[0], VmResult::Aborted(a) if a.blocker == Blocker::Paused
                && a.detail.contains("paused")),
            "{results:?}"
        );
        assert!(
            matches!(results[1], VmResult::Aborted(a) if a.blocker == Blocker::PlanChanged
                && a.detail.contains("Lease was lost")),
            "{results:?}"
        );
        assert!(
            matches!(results[2], VmResult::Failed { reason } if reason.contains("500")),
            "{results:?}"
        );
        assert_eq!(results[3], &VmResult::Recovered);
        assert_eq!(r.aborted(), 2);
        assert_eq!(r.failed(), 1);
    }

    /// A refusal of format 1 (`refused` words beside `refused_by`) is one typed refusal.
    #[test]
    fn a_refusal_of_format_1_is_one_typed_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(golden("v1").join(LAST_RUN_FILE)).unwrap())
                .unwrap();
        json["plan"]["refused"] = "vmrecover is paused on this node".into();
        json["plan"]["refused_by"] = "paused".into();
        std::fs::write(
            dir.path().join(LAST_RUN_FILE),
            serde_json::to_vec(&json).unwrap(),
        )
        .unwrap();
        let r = load(dir.path());
        let refused = r.plan.refused.expect("refused");
        assert_eq!(refused.blocker, Blocker::Paused);
        assert_eq!(refused.text, "vmrecover is paused on this node");
    }

    /// This format is written with its version and read back whole; the outcome's JSON keeps
    /// its shape (`result`, `blocker`, `reason` side by side).
    #[test]
    fn a_report_is_saved_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let r = load(&golden("v1-aborted"));
        ReportStore::new(dir.path()).save(&r).unwrap();
        let bytes = std::fs::read(dir.path().join(LAST_RUN_FILE)).unwrap();
        assert_eq!(crate::state_file::peek_version(&bytes), Some(2));
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let o = &json["outcomes"][0];
        assert_eq!(
            (&o["result"], &o["blocker"]),
            (&"aborted".into(), &"paused".into()),
            "{o:#}"
        );
        assert!(o["reason"].as_str().unwrap().contains("paused"), "{o:#}");
        assert_eq!(
            json["plan"]["decisions"][1]["reasons"][0]["blocker"],
            "live_process"
        );
        assert_eq!(load(dir.path()), r);
    }
}
