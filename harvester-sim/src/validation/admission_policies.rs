//! ValidatingAdmissionPolicy and binding validation: k8s.io/kubernetes
//! `pkg/apis/admissionregistration/validation/validation.go` (v1.33.0)
//! `ValidateValidatingAdmissionPolicy` / `ValidateValidatingAdmissionPolicyBinding`, the rules
//! a manifest meets first: `failurePolicy` Fail or Ignore (v1 defaults it to Fail),
//! `matchConstraints` with at least one resource rule, at least one validation (audit
//! annotations are not modelled), every expression present and compiling, `message` on one
//! line; a binding names its policy and has a valid, non-empty `validationActions`. Compile
//! errors come from the simulator's CEL ([`crate::admission::vap::expr`]), so they read like
//! the apiserver's (`compilation failed: ...`) but not to the character; no type checking.

use serde_json::Value;

use super::{BadValue, FieldError};
use crate::admission::vap::expr::Expression;
use crate::validation::field::ErrorType;

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn items(v: &Value, p: &str) -> Vec<Value> {
    v.pointer(p)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn not_supported(field: &str, value: &str, supported: &str) -> FieldError {
    FieldError {
        kind: ErrorType::NotSupported,
        field: field.into(),
        value: BadValue::Str(value.into()),
        detail: format!("supported values: {supported}"),
    }
}

fn expression(errs: &mut Vec<FieldError>, field: &str, src: &str) {
    if src.trim().is_empty() {
        errs.push(FieldError::required(field, ""));
    } else if let Err(e) = Expression::compile(src) {
        errs.push(FieldError::invalid(field, src, &e));
    }
}

/// `validateValidatingAdmissionPolicySpec` (the rules above).
pub fn validate_policy(p: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &p["spec"];
    let fp = str_at(spec, "/failurePolicy");
    if !fp.is_empty() && fp != "Fail" && fp != "Ignore" {
        errs.push(not_supported(
            "spec.failurePolicy",
            fp,
            "\"Fail\", \"Ignore\"",
        ));
    }
    if spec["matchConstraints"].is_null() {
        errs.push(FieldError::required("spec.matchConstraints", ""));
    } else if items(spec, "/matchConstraints/resourceRules").is_empty() {
        errs.push(FieldError::required(
            "spec.matchConstraints.resourceRules",
            "",
        ));
    }
    for (i, c) in items(spec, "/matchConditions").iter().enumerate() {
        if str_at(c, "/name").is_empty() {
            errs.push(FieldError::required(
                &format!("spec.matchConditions[{i}].name"),
                "",
            ));
        }
        expression(
            &mut errs,
            &format!("spec.matchConditions[{i}].expression"),
            str_at(c, "/expression"),
        );
    }
    for (i, v) in items(spec, "/variables").iter().enumerate() {
        if str_at(v, "/name").trim().is_empty() {
            errs.push(FieldError::required(
                &format!("spec.variables[{i}].name"),
                "name is not specified",
            ));
        }
        expression(
            &mut errs,
            &format!("spec.variables[{i}].expression"),
            str_at(v, "/expression"),
        );
    }
    let validations = items(spec, "/validations");
    if validations.is_empty() && items(spec, "/auditAnnotations").is_empty() {
        for f in ["spec.validations", "spec.auditAnnotations"] {
            errs.push(FieldError::required(
                f,
                "validations or auditAnnotations must contain at least one item",
            ));
        }
    }
    for (i, v) in validations.iter().enumerate() {
        expression(
            &mut errs,
            &format!("spec.validations[{i}].expression"),
            str_at(v, "/expression"),
        );
        let msg = str_at(v, "/message");
        if msg.contains('\n') {
            errs.push(FieldError::invalid(
                &format!("spec.validations[{i}].message"),
                msg,
                "message must not contain line breaks",
            ));
        }
        let me = str_at(v, "/messageExpression");
        if !me.trim().is_empty() {
            expression(
                &mut errs,
                &format!("spec.validations[{i}].messageExpression"),
                me,
            );
        }
    }
    errs
}

/// `validateValidatingAdmissionPolicyBindingSpec`: `policyName` and `validationActions`.
pub fn validate_binding(b: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if str_at(b, "/spec/policyName").is_empty() {
        errs.push(FieldError::required("spec.policyName", ""));
    }
    let actions = items(b, "/spec/validationActions");
    let mut seen: Vec<&str> = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        let a = a.as_str().unwrap_or("");
        let field = format!("spec.validationActions[{i}]");
        if !["Deny", "Warn", "Audit"].contains(&a) {
            errs.push(not_supported(&field, a, "\"Audit\", \"Deny\", \"Warn\""));
        }
        if seen.contains(&a) {
            errs.push(FieldError {
                kind: ErrorType::Duplicate,
                field: field.clone(),
                value: BadValue::Str(a.into()),
                detail: String::new(),
            });
        }
        seen.push(a);
    }
    if seen.contains(&"Deny") && seen.contains(&"Warn") {
        errs.push(FieldError::invalid_raw(
            "spec.validationActions",
            BadValue::Raw(format!("{seen:?}")),
            "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        ));
    }
    if seen.is_empty() {
        errs.push(FieldError::required(
            "spec.validationActions",
            "at least one validation action is required",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_the_apiserver_refuses() {
        let ok = json!({"spec": {"matchConstraints": {"resourceRules": [{}]},
            "validations": [{"expression": "true", "message": "one line"}]}});
        assert_eq!(validate_policy(&ok), vec![]);
        let bad = json!({"spec": {"failurePolicy": "Maybe",
            "validations": [{"expression": "object.(", "message": "two\nlines"}]}});
        let fields: Vec<String> = validate_policy(&bad).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.failurePolicy",
                "spec.matchConstraints",
                "spec.validations[0].expression",
                "spec.validations[0].message"
            ]
        );
        let none = validate_binding(&json!({"spec": {}}));
        assert_eq!(
            none.iter().map(|e| e.message()).collect::<Vec<_>>(),
            [
                "spec.policyName: Required value",
                "spec.validationActions: Required value: at least one validation action is required"
            ]
        );
        assert!(validate_binding(
            &json!({"spec": {"policyName": "p", "validationActions": ["Deny", "Warn"]}})
        )
        .iter()
        .any(|e| e.detail.starts_with("must not contain both Deny and Warn")));
        assert_eq!(
            validate_binding(&json!({"spec": {"policyName": "p", "validationActions": ["Deny"]}})),
            vec![]
        );
        let dup = validate_binding(
            &json!({"spec": {"policyName": "p", "validationActions": ["Audit", "Audit"]}}),
        );
        assert_eq!(
            dup.iter().map(|e| e.message()).collect::<Vec<_>>(),
            ["spec.validationActions[1]: Duplicate value: \"Audit\""]
        );
    }
}
