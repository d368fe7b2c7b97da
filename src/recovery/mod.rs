//! The recovery engine: the pure planner, the applier and the run report.
//!
//! The modules are private; the names the rest of vmrecover and its tests use are
//! re-exported here, so the compiler keeps this surface.

mod abort;
mod apply;
mod apply_context;
mod apply_event;
mod apply_intent;
mod apply_io;
mod audit;
mod blocker;
mod disks;
mod fence;
mod finalizers;
mod follow;
mod follow_state;
mod follow_watch;
mod following;
mod harvester;
mod hotplug;
mod intents;
mod liveness;
mod mode;
mod model;
mod plan;
mod recheck;
mod render;
mod report;
mod seen;
mod session;
mod table;

#[cfg(test)]
mod apply_tests;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod harvester_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod recheck_tests;
#[cfg(test)]
mod session_tests;

pub use abort::{judge, Abort};
pub use apply::{apply, ApplyContext, Progress};
pub use apply_io::{
    ApplyCluster, EventNote, FinalizerPatch, KubeApply, Patched, PodNotDeleted, Waited,
};
pub use audit::{AuditRecord, AUDIT_TARGET};
pub use blocker::Blocker;
pub use finalizers::{classify, FinalizerClass, KnownFinalizer, ObjectKind, KNOWN_FINALIZERS};
pub use follow::{
    expectation, judge as judge_outcome, why_not_back, Condition, Expectation, FollowOutcome,
    FollowedPod, FollowedVm, FollowedVmi, FollowedVolume, Observation,
};
pub use following::{follow_report, Looks};
pub use intents::{
    IntentDisk, IntentStore, IntentsState, RecoveryIntent, SeenVmi, StaleIntent, INTENTS_FILE,
    INTENTS_FORMAT,
};
pub use mode::Mode;
pub use model::{
    Action, Decision, DiskKey, Facts, HostIdentity, Narrow, OrphanDecision, Plan, Reason, Refusal,
    Step,
};
pub use plan::{blocker_category, identity_refusal, plan, plan_narrowed};
pub use recheck::{Recheck, Regather};
pub use render::{
    decision as render_decision, plan as render_plan, report as render_report, step as render_step,
};
pub use report::{
    OrphanOutcome, ReportStore, RunReport, StepAction, StepOutcome, StepStatus, VmOutcome,
    VmResult, LAST_RUN_FILE,
};
pub use seen::next_seen;
pub use session::{lease_identity, Session};
pub use table::{plan as render_plan_table, shorten};
