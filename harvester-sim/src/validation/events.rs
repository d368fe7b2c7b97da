//! Event validation: k8s.io/kubernetes `pkg/apis/core/validation/events.go` (v1.33.0),
//! `ValidateEventCreate` / `ValidateEventUpdate`, called by `pkg/registry/core/event/strategy.go`
//! with the request's group version. Both APIs share the core Event type, so the rules run on
//! the core form and name core fields (`message`, `involvedObject`), whichever API was used:
//! - every Event: `legacyValidateEvent` (the namespace rules for `involvedObject`, and for an
//!   Event with `eventTime` set: `reportingController` required and a qualified name,
//!   `reportingInstance`, `action`, `reason` required and at most 128 bytes, `message` (the
//!   events.k8s.io `note`) at most 1024 bytes, the namespace a DNS subdomain);
//! - through events.k8s.io/v1 only (`strict`): `ValidateObjectMeta` with DNS-subdomain names,
//!   `series`, `eventTime` required, `type` Normal or Warning, the deprecated core fields unset;
//!   on update the immutable fields.

use serde_json::Value;

use super::{validate_meta, validate_meta_update, BadValue, FieldError, NameRule};

const REPORTING_INSTANCE_LENGTH_LIMIT: usize = 128;
const ACTION_LENGTH_LIMIT: usize = 128;
const REASON_LENGTH_LIMIT: usize = 128;
const NOTE_LENGTH_LIMIT: usize = 1024;

fn s<'a>(e: &'a Value, p: &str) -> &'a str {
    e.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn is_zero_time(e: &Value, p: &str) -> bool {
    e.pointer(p)
        .is_none_or(|v| v.is_null() || v.as_str() == Some(""))
}

/// `legacyValidateEvent` on a core-form Event.
pub fn legacy(e: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = s(e, "/metadata/namespace");
    let inv_ns = s(e, "/involvedObject/namespace");
    let mismatch = || {
        FieldError::invalid(
            "involvedObject.namespace",
            inv_ns,
            "does not match event.namespace",
        )
    };
    if is_zero_time(e, "/eventTime") {
        if inv_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(mismatch());
            }
        } else if ns != inv_ns {
            errs.push(mismatch());
        }
    } else {
        if inv_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(mismatch());
        }
        let rc = s(e, "/reportingComponent");
        if rc.is_empty() {
            errs.push(FieldError::required("reportingController", ""));
        }
        for msg in super::names::is_qualified_name(rc) {
            errs.push(FieldError::invalid("reportingController", rc, &msg));
        }
        let too_long = |field: &str, max: usize| {
            FieldError::invalid(field, "", &format!("can have at most {max} characters"))
        };
        let ri = s(e, "/reportingInstance");
        if ri.is_empty() {
            errs.push(FieldError::required("reportingInstance", ""));
        }
        if ri.len() > REPORTING_INSTANCE_LENGTH_LIMIT {
            errs.push(too_long(
                "reportingInstance",
                REPORTING_INSTANCE_LENGTH_LIMIT,
            ));
        }
        let action = s(e, "/action");
        if action.is_empty() {
            errs.push(FieldError::required("action", ""));
        }
        if action.len() > ACTION_LENGTH_LIMIT {
            errs.push(too_long("action", ACTION_LENGTH_LIMIT));
        }
        let reason = s(e, "/reason");
        if reason.is_empty() {
            errs.push(FieldError::required("reason", ""));
        }
        if reason.len() > REASON_LENGTH_LIMIT {
            errs.push(too_long("reason", REASON_LENGTH_LIMIT));
        }
        if s(e, "/message").len() > NOTE_LENGTH_LIMIT {
            errs.push(too_long("message", NOTE_LENGTH_LIMIT));
        }
    }
    for msg in super::names::is_dns1123_subdomain(ns) {
        errs.push(FieldError::invalid("namespace", ns, &msg));
    }
    errs
}

/// `validateV1EventSeries`.
fn series(e: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(sr) = e.get("series").filter(|v| !v.is_null()) {
        if sr.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            errs.push(FieldError::invalid(
                "series.count",
                "",
                "should be at least 2",
            ));
        }
        if is_zero_time(sr, "/lastObservedTime") {
            errs.push(FieldError::required("series.lastObservedTime", ""));
        }
    }
    errs
}

/// `ValidateEventCreate` on a core-form Event; `strict` for events.k8s.io/v1 requests.
pub fn validate_create(e: &Value, strict: bool) -> Vec<FieldError> {
    let mut errs = legacy(e);
    if !strict {
        return errs;
    }
    errs.extend(validate_meta(e, true, NameRule::DnsSubdomain));
    errs.extend(series(e));
    if is_zero_time(e, "/eventTime") {
        errs.push(FieldError::required("eventTime", ""));
    }
    let ty = s(e, "/type");
    if ty != "Normal" && ty != "Warning" {
        errs.push(FieldError::invalid(
            "type",
            "",
            &format!("has invalid value: {ty}"),
        ));
    }
    for f in ["firstTimestamp", "lastTimestamp"] {
        if !is_zero_time(e, &format!("/{f}")) {
            errs.push(FieldError::invalid(f, "", "needs to be unset"));
        }
    }
    if e.get("count").and_then(Value::as_i64).unwrap_or(0) != 0 {
        errs.push(FieldError::invalid("count", "", "needs to be unset"));
    }
    if !s(e, "/source/component").is_empty() || !s(e, "/source/host").is_empty() {
        errs.push(FieldError::invalid("source", "", "needs to be unset"));
    }
    errs
}

/// `ValidateEventUpdate` on core-form Events (the strategy's part; the common metadata
/// checks are the caller's).
pub fn validate_update(new: &Value, old: &Value, strict: bool) -> Vec<FieldError> {
    let mut errs = legacy(new);
    if !strict {
        return errs;
    }
    errs.extend(validate_meta_update(new, old));
    if new.get("series") != old.get("series") {
        errs.extend(series(new));
    }
    // ValidateImmutableField: Invalid(field, newValue, "field is immutable").
    for (path, field) in [
        ("involvedObject", "involvedObject"),
        ("reason", "reason"),
        ("message", "message"),
        ("source", "source"),
        ("firstTimestamp", "firstTimestamp"),
        ("lastTimestamp", "lastTimestamp"),
        ("count", "count"),
        ("reason", "reason"),
        ("type", "type"),
        ("eventTime", "eventTime"),
        ("action", "action"),
        ("related", "related"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
    ] {
        let (n, o) = (new.get(path), old.get(path));
        if n != o {
            let value = match n {
                Some(Value::String(v)) => BadValue::Str(v.clone()),
                Some(Value::Number(v)) => BadValue::Plain(v.to_string()),
                Some(v) => BadValue::Raw(v.to_string()),
                None => BadValue::Str(String::new()),
            };
            errs.push(FieldError::invalid_raw(field, value, "field is immutable"));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event() -> Value {
        json!({"metadata": {"name": "vm-x", "namespace": "default"},
            "involvedObject": {"namespace": "default", "name": "vm"},
            "eventTime": "2025-01-01T00:00:00.000000Z", "reportingComponent": "vmrecover",
            "reportingInstance": "vmrecover-n1", "action": "ClearFinalizers", "reason": "Recovered",
            "type": "Normal", "message": "m"})
    }

    #[test]
    fn a_good_event_passes_both_apis() {
        assert_eq!(validate_create(&event(), true), vec![]);
        assert_eq!(validate_create(&event(), false), vec![]);
    }

    #[test]
    fn message_limit_is_in_bytes() {
        let mut e = event();
        e["message"] = json!("é".repeat(513)); // 513 chars, 1026 bytes
        let errs = validate_create(&e, true);
        assert_eq!(
            errs.iter().map(FieldError::message).collect::<Vec<_>>(),
            vec!["message: Invalid value: \"\": can have at most 1024 characters"]
        );
    }

    #[test]
    fn strict_rules_only_for_events_k8s_io() {
        let mut e = event();
        e["metadata"]["name"] = json!("vm.");
        e["type"] = json!("Info");
        assert!(validate_create(&e, false).is_empty());
        let fields: Vec<String> = validate_create(&e, true)
            .into_iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(fields, ["metadata.name", "type"]);
    }
}
