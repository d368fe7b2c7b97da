//! The journald audit trail: one structured record per action, under the tracing target
//! `vmrecover::audit`, which logging sends to journald whenever its socket exists.

/// The tracing target of audit records.
pub const AUDIT_TARGET: &str = "vmrecover::audit";

/// One audited action.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    /// `force-delete-pod`, `clear-finalizers`, `kill-orphan`.
    pub action: &'a str,
    /// `vmi`, `vm`, `pod`, `process`.
    pub kind: &'a str,
    /// `namespace/name` (or pid).
    pub object: &'a str,
    /// The object's UID (or process start time).
    pub uid: &'a str,
    /// Finalizers removed, comma-separated (empty for other actions).
    pub finalizers_removed: &'a str,
    /// The evidence the action rested on, `; `-separated.
    pub evidence: &'a str,
    /// `ok` or the error.
    pub result: &'a str,
}

/// Writes the record to the audit trail.
pub fn record(r: &AuditRecord<'_>) {
    tracing::info!(
        target: AUDIT_TARGET,
        action = r.action,
        object_kind = r.kind,
        object = r.object,
        object_uid = r.uid,
        finalizers_removed = r.finalizers_removed,
        evidence = r.evidence,
        result = r.result,
        "vmrecover {} {} {}: {}",
        r.action,
        r.kind,
        r.object,
        r.result
    );
}
