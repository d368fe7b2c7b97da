//! Lease validation: k8s.io/kubernetes `pkg/apis/coordination/validation/validation.go`
//! (v1.33.0) `ValidateLease` / `ValidateLeaseUpdate`: metadata with DNS-subdomain names,
//! `spec.leaseDurationSeconds` > 0 and `spec.leaseTransitions` ≥ 0 when set. `holderIdentity`
//! is free text (no rule); `acquireTime` and `renewTime` are `MicroTime`s, checked when the
//! body is decoded ([`super::check_micro_times`]). Updates need a resourceVersion
//! ([`super::allows_unconditional_update`]).

use serde_json::Value;

use super::{validate_meta, BadValue, FieldError, NameRule};

/// `ValidateLeaseSpec`.
pub fn validate_spec(lease: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(d) = lease
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
    {
        if d <= 0 {
            errs.push(FieldError::invalid_raw(
                "spec.leaseDurationSeconds",
                BadValue::Plain(d.to_string()),
                "must be greater than 0",
            ));
        }
    }
    if let Some(t) = lease
        .pointer("/spec/leaseTransitions")
        .and_then(Value::as_i64)
    {
        if t < 0 {
            errs.push(FieldError::invalid_raw(
                "spec.leaseTransitions",
                BadValue::Plain(t.to_string()),
                "must be greater than or equal to 0",
            ));
        }
    }
    errs
}

/// `ValidateLease`.
pub fn validate_create(lease: &Value) -> Vec<FieldError> {
    let mut errs = validate_meta(lease, true, NameRule::DnsSubdomain);
    errs.extend(validate_spec(lease));
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn durations_must_be_positive() {
        let l = json!({"metadata": {"name": "l", "namespace": "n"}, "spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}});
        let msgs: Vec<String> = validate_create(&l)
            .iter()
            .map(FieldError::message)
            .collect();
        assert_eq!(
            msgs,
            [
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0"
            ]
        );
        let ok = json!({"metadata": {"name": "l", "namespace": "n"}, "spec": {"leaseDurationSeconds": 15, "holderIdentity": "any thing"}});
        assert!(validate_create(&ok).is_empty());
    }
}
