//! The words the store and the controllers share: an object's [`Key`] and the
//! [`DeleteOptions`] of a delete. Vocabulary: imports nothing of the crate.

use serde_json::Value;

/// (namespace, name); the namespace is "" for cluster-scoped objects.
pub type Key = (String, String);

/// Parameters of a delete (query and `DeleteOptions` body merged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`: Background (default), Foreground or Orphan.
    pub propagation_policy: Option<String>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_rv: Option<String>,
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` body (fields absent from the body are left as they are).
    pub fn merge_body(&mut self, body: &Value) {
        if let Some(g) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
            self.grace_period_seconds = Some(g);
        }
        if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
            self.propagation_policy = Some(p.to_string());
        }
        if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            self.propagation_policy = Some("Orphan".into());
        }
        if let Some(u) = body.pointer("/preconditions/uid").and_then(Value::as_str) {
            self.precondition_uid = Some(u.to_string());
        }
        if let Some(r) = body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            self.precondition_rv = Some(r.to_string());
        }
    }
}
