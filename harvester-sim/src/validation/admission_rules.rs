//! The matching and parameter parts of admission policy objects, as kube-apiserver
//! validates them: kubernetes/kubernetes `pkg/apis/admissionregistration/validation/
//! validation.go` (v1.30.0 … v1.33.0, read at commit 03d48b76): `validateMatchResources`,
//! `validateNamedRuleWithOperations` → `validateRuleWithOperations` → `validateRule` →
//! `validateResources`, `validateParamKind`, `validateParamRef`, with their messages. The
//! policy and binding specs that use them are [`super::admission_policies`].

use serde_json::Value;

use super::field::{BadValue, FieldError};
use super::names::{is_dns1123_label, is_dns1123_subdomain};
use crate::validation::field::{go_quote, ErrorType};

pub(super) fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn items(v: &Value, p: &str) -> Vec<Value> {
    v.pointer(p)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub(super) fn strings(v: &Value, p: &str) -> Vec<String> {
    items(v, p)
        .iter()
        .map(|x| x.as_str().unwrap_or("").to_string())
        .collect()
}

pub(super) fn not_supported(field: &str, value: &str, supported: &str) -> FieldError {
    FieldError {
        kind: ErrorType::NotSupported,
        field: field.into(),
        value: BadValue::Str(value.into()),
        detail: format!("supported values: {supported}"),
    }
}

/// Go's `%#v` of a string slice of type `ty` (`[]string{"*", "*/*"}`).
pub(super) fn go_slice(ty: &str, v: &[String]) -> BadValue {
    let inner: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    BadValue::Raw(format!("[]{ty}{{{}}}", inner.join(", ")))
}

pub(super) fn duplicate(field: &str, value: &str) -> FieldError {
    FieldError {
        kind: ErrorType::Duplicate,
        field: field.into(),
        value: BadValue::Str(value.into()),
        detail: String::new(),
    }
}

/// `validateResources`: wildcards and overlaps among `res/sub` entries.
pub(super) fn validate_resources(errs: &mut Vec<FieldError>, field: &str, resources: &[String]) {
    if resources.is_empty() {
        errs.push(FieldError::required(field, ""));
    }
    let mut with_wildcard_sub: Vec<&str> = Vec::new();
    let mut sub_with_wildcard_res: Vec<&str> = Vec::new();
    let (mut double, mut single, mut plain) = (false, false, false);
    for (i, rs) in resources.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if rs.is_empty() {
            errs.push(FieldError::required(&f, ""));
            continue;
        }
        double |= rs == "*/*";
        single |= rs == "*";
        let Some((res, sub)) = rs.split_once('/') else {
            plain = rs != "*";
            continue;
        };
        if with_wildcard_sub.contains(&res) {
            errs.push(FieldError::invalid(
                &f,
                rs,
                &format!("if '{res}/*' is present, must not specify {rs}"),
            ));
        }
        if sub_with_wildcard_res.contains(&sub) {
            errs.push(FieldError::invalid(
                &f,
                rs,
                &format!("if '*/{sub}' is present, must not specify {rs}"),
            ));
        }
        if sub == "*" {
            with_wildcard_sub.push(res);
        }
        if res == "*" {
            sub_with_wildcard_res.push(sub);
        }
    }
    if resources.len() > 1 && double {
        errs.push(FieldError::invalid_raw(
            field,
            go_slice("string", resources),
            "if '*/*' is present, must not specify other resources",
        ));
    }
    if single && plain {
        errs.push(FieldError::invalid_raw(
            field,
            go_slice("string", resources),
            "if '*' is present, must not specify other resources without subresources",
        ));
    }
}

/// `validateNamedRuleWithOperations` (resourceNames, then the rule).
pub(super) fn validate_rule(errs: &mut Vec<FieldError>, field: &str, rule: &Value) {
    let names = strings(rule, "/resourceNames");
    for (i, n) in names.iter().enumerate() {
        let f = format!("{field}.resourceNames[{i}]");
        for msg in path_segment_errors(n) {
            errs.push(FieldError::invalid(&f, n, &msg));
        }
        if names[..i].contains(n) {
            errs.push(duplicate(&f, n));
        }
    }
    let ops = strings(rule, "/operations");
    if ops.is_empty() {
        errs.push(FieldError::required(&format!("{field}.operations"), ""));
    }
    if ops.len() > 1 && ops.iter().any(|o| o == "*") {
        errs.push(FieldError::invalid_raw(
            &format!("{field}.operations"),
            go_slice("admissionregistration.OperationType", &ops),
            "if '*' is present, must not specify other operations",
        ));
    }
    for (i, o) in ops.iter().enumerate() {
        if !["*", "CONNECT", "CREATE", "DELETE", "UPDATE"].contains(&o.as_str()) {
            errs.push(not_supported(
                &format!("{field}.operations[{i}]"),
                o,
                "\"*\", \"CONNECT\", \"CREATE\", \"DELETE\", \"UPDATE\"",
            ));
        }
    }
    for (key, what) in [("apiGroups", "API groups"), ("apiVersions", "API versions")] {
        let list = strings(rule, &format!("/{key}"));
        let f = format!("{field}.{key}");
        if list.is_empty() {
            errs.push(FieldError::required(&f, ""));
        }
        if list.len() > 1 && list.iter().any(|x| x == "*") {
            errs.push(FieldError::invalid_raw(
                &f,
                go_slice("string", &list),
                &format!("if '*' is present, must not specify other {what}"),
            ));
        }
        if key == "apiVersions" {
            for (i, v) in list.iter().enumerate() {
                if v.is_empty() {
                    errs.push(FieldError::required(&format!("{f}[{i}]"), ""));
                }
            }
        }
    }
    validate_resources(
        errs,
        &format!("{field}.resources"),
        &strings(rule, "/resources"),
    );
    let scope = str_at(rule, "/scope");
    if !scope.is_empty() && !["*", "Cluster", "Namespaced"].contains(&scope) {
        errs.push(not_supported(
            &format!("{field}.scope"),
            scope,
            "\"*\", \"Cluster\", \"Namespaced\"",
        ));
    }
}

/// `path.ValidatePathSegmentName` (resourceNames, paramRef.name).
pub(super) fn path_segment_errors(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if name == "." || name == ".." {
        out.push(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            out.push(format!("may not contain '{bad}'"));
        }
    }
    out
}

/// `validateMatchResources`: matchPolicy and every rule (selectors' contents not checked).
pub(super) fn validate_match_resources(errs: &mut Vec<FieldError>, field: &str, mr: &Value) {
    if mr.is_null() {
        return;
    }
    let mp = str_at(mr, "/matchPolicy");
    if !mp.is_empty() && mp != "Exact" && mp != "Equivalent" {
        errs.push(not_supported(
            &format!("{field}.matchPolicy"),
            mp,
            "\"Equivalent\", \"Exact\"",
        ));
    }
    for key in ["resourceRules", "excludeResourceRules"] {
        for (i, r) in items(mr, &format!("/{key}")).iter().enumerate() {
            validate_rule(errs, &format!("{field}.{key}[{i}]"), r);
        }
    }
}

/// `validateParamKind`.
pub(super) fn validate_param_kind(errs: &mut Vec<FieldError>, pk: &Value) {
    let av = str_at(pk, "/apiVersion");
    if av.is_empty() {
        errs.push(FieldError::required("spec.paramKind.apiVersion", ""));
    } else if av.matches('/').count() > 1 {
        errs.push(FieldError::invalid(
            "spec.paramKind.apiVersion",
            av,
            &format!("unexpected GroupVersion string: {av}"),
        ));
    } else {
        let (g, v) = av.split_once('/').unwrap_or(("", av));
        if !g.is_empty() {
            let e = is_dns1123_subdomain(g);
            if !e.is_empty() {
                errs.push(FieldError::invalid(
                    "spec.paramKind.apiVersion",
                    g,
                    &e.join(","),
                ));
            }
        }
        if v.is_empty() {
            errs.push(FieldError::invalid(
                "spec.paramKind.apiVersion",
                av,
                "version must be specified",
            ));
        } else {
            let e = is_dns1123_label(v);
            if !e.is_empty() {
                errs.push(FieldError::invalid(
                    "spec.paramKind.apiVersion",
                    v,
                    &e.join(","),
                ));
            }
        }
    }
    let kind = str_at(pk, "/kind");
    if kind.is_empty() {
        errs.push(FieldError::required("spec.paramKind.kind", ""));
    } else {
        let e = is_dns1123_label(&kind.to_lowercase());
        if !e.is_empty() {
            errs.push(FieldError::invalid(
                "spec.paramKind.kind",
                kind,
                &format!(
                    "may have mixed case, but should otherwise match: {}",
                    e.join(",")
                ),
            ));
        }
    }
}

/// `validateParamRef`.
pub(super) fn validate_param_ref(errs: &mut Vec<FieldError>, pr: &Value) {
    if pr.is_null() {
        return;
    }
    let name = str_at(pr, "/name");
    let selector = !pr["selector"].is_null();
    if !name.is_empty() {
        for m in path_segment_errors(name) {
            errs.push(FieldError::invalid("spec.paramRef.name", name, &m));
        }
        if selector {
            errs.push(FieldError::forbidden(
                "spec.paramRef.name",
                "name and selector are mutually exclusive",
            ));
        }
    }
    if selector && !name.is_empty() {
        errs.push(FieldError::forbidden(
            "spec.paramRef.selector",
            "name and selector are mutually exclusive",
        ));
    }
    if name.is_empty() && !selector {
        errs.push(FieldError::required(
            "spec.paramRef",
            "one of name or selector must be specified",
        ));
    }
    let action = str_at(pr, "/parameterNotFoundAction");
    if action.is_empty() {
        errs.push(FieldError::required(
            "spec.paramRef.parameterNotFoundAction",
            "",
        ));
    } else if action != "Deny" && action != "Allow" {
        errs.push(not_supported(
            "spec.paramRef.parameterNotFoundAction",
            action,
            "\"Deny\", \"Allow\"",
        ));
    }
}
