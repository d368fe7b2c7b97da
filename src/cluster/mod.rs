//! Kubernetes side: typed views of the objects vmrecover reads and the requests it makes.
//!
//! The modules are private; the names other parts of vmrecover and its tests use are
//! re-exported here, so the compiler keeps this surface.

mod also_read;
mod client;
mod denial;
mod errors;
mod events;
mod gather;
mod gather_disks;
mod harvester;
mod lean_meta;
mod lease;
mod lease_api;
mod lease_expiry;
#[cfg(test)]
pub(crate) mod lease_tests;
mod lists;
mod liveness;
mod names;
mod object_key;
mod objects;
mod pod_view;
mod retry;
mod server_clock;
mod snapshot;
mod summary;
mod va_cache;
mod wait;

pub use also_read::{AlsoRead, NsName};
pub use client::{
    check_node, connect, connect_for_watches, connect_to_node, ConnectError, LONG_WATCH_SECS,
};
pub use denial::{classify as classify_refusal, Refusal};
pub use errors::{describe, status_code, RequestFailed};
pub use events::{EventRecorder, Regarding};
pub use gather::{gather, gather_with, is_deciding, ClusterRead};
pub use harvester::{
    read_extras as read_harvester_extras, ConditionView, ForceResetPolicy, HarvesterFacts,
    ANNOTATION_PAUSE, CONDITION_DRAINED, HARVESTER_NAMESPACE, LABEL_UPGRADE_STATE, PAUSE_CONFIGMAP,
    SETTING_FORCE_RESET, TAINT_DRAIN, TAINT_OUT_OF_SERVICE,
};
pub(crate) use lease::acquire_with as acquire_lease_with;
pub use lease::{acquire as acquire_lease, HeldLease, LeaseConfig, LeaseError, LeaseGuard};
pub(crate) use lease_api::{KubeLeases, LeaseApi};
pub use lists::ReadFailed;
pub(crate) use lists::{list_versioned, Listed};
pub use liveness::{parse_http_date, LifeSigns, Look, Reading, SignKind, ANNOTATION_HEARTBEAT};
pub use names::*;
pub use objects::{
    AttachmentTicket, ClaimRef, LonghornAttachmentSpec, LonghornVolume, LonghornVolumeAttachment,
    LonghornVolumeStatus, MigrationState, NameRef, VirtualMachine, VirtualMachineInstance, VmSpec,
    VmStatus, VmiSpec, VmiStatus, VmiVolume, BACKEND_STORAGE_PREFIX,
};
pub use retry::{
    backoff, retryable, with_retries, with_retries_unless, ATTEMPTS, FIRST_BACKOFF, MAX_RETRY_AFTER,
};
pub use server_clock::server_now;
pub use snapshot::{
    AttachmentView, ClaimedVmi, ClusterFacts, LonghornVolumeRef, NodeIdentity, ObjectKey, PodView,
    PvView, PvcView, VmView, VmiView,
};
pub use summary::{
    list_all as list_summaries, one_line, publish as publish_summary, summary_name, AfterRun,
    BadSummary, BlockedVm, LastRun, NodeSummary, Readiness, SummaryProblem, HEARTBEAT,
    LABEL_SUMMARY, MAX_BLOCKED, MAX_REASON, STALE_AFTER, SUMMARY_KEY, SUMMARY_PREFIX,
};
pub use va_cache::VaCache;
pub use wait::{until_gone, watch_timeout_secs};
