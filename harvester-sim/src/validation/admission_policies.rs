//! ValidatingAdmissionPolicy and binding validation: kubernetes/kubernetes
//! `pkg/apis/admissionregistration/validation/validation.go` (the rules as at v1.30.0 …
//! v1.33.0, read at commit 03d48b76) `ValidateValidatingAdmissionPolicy` /
//! `ValidateValidatingAdmissionPolicyBinding`, with their error strings and field paths:
//! - `failurePolicy` Fail or Ignore; `paramKind` (`validateParamKind`);
//! - `matchConstraints` (`validateMatchResources`): `matchPolicy`, selectors, every resource
//!   rule (`validateNamedRuleWithOperations` → `validateRuleWithOperations` → `validateRule` →
//!   `validateResources`): operations, `*` alone among operations, API groups and versions,
//!   `*/*` alone among resources, `*` only beside `x/y` subresource entries, `x/*` and `*/y`
//!   overlaps, scope, `resourceNames`; at least one resource rule;
//! - `matchConditions` (at most 64, qualified unique names), `variables` (CEL identifiers),
//!   `validations` (expression, message on one line, messageExpression, reason),
//!   each expression compiled and type-checked ([`crate::admission::vap::check`]) in the CEL
//!   environment of the previous Kubernetes minor, with the variables the apiserver declares
//!   for it and its return type (`compile.go`: a validation or match condition `must evaluate
//!   to bool`, a messageExpression `must evaluate to string`);
//! - a binding: `policyName`, `paramRef` (`validateParamRef`), `matchResources` (under the
//!   apiserver's own misspelt path `spec.matchResouces`), `validationActions`.
//!
//! The matching and parameter rules live in [`super::admission_rules`].
//!
//! v1's defaults (`pkg/apis/admissionregistration/v1/defaults.go`: `matchPolicy`
//! Equivalent, empty selectors, scope `*`, failurePolicy Fail) are taken as applied. Not
//! modelled: audit annotations' expressions and keys, label selector contents, the cost limit.

use serde_json::Value;

use super::admission_rules::{
    duplicate, items, not_supported, str_at, validate_match_resources, validate_param_kind,
    validate_param_ref,
};
use super::field::{BadValue, FieldError};
use super::names::{is_dns1123_subdomain, is_qualified_name};
use crate::admission::vap::check::{check, Decls};
use crate::admission::vap::expr::Expression;
use crate::admission::vap::types::{self, Ty};
use crate::validation::field::ErrorType;

/// What an expression must evaluate to (`ExpressionAccessor.ReturnTypes`).
#[derive(Clone, Copy, PartialEq)]
enum Returns {
    Bool,
    String,
    Any,
}

/// Compiles and checks one expression: `Ok(type)` or the field error the apiserver answers.
fn compile(field: &str, src: &str, decls: &Decls, returns: Returns) -> Result<Ty, FieldError> {
    let program = Expression::compile(src).map_err(|e| FieldError::invalid(field, src, &e))?;
    let ty = check(program.program(), src, decls)
        .map_err(|e| FieldError::invalid(field, src, &format!("compilation failed: {e}")))?;
    let (want, ok) = match returns {
        Returns::Bool => ("bool", ty == Ty::Bool),
        Returns::String => ("string", ty == Ty::String),
        Returns::Any => ("", true),
    };
    if !ok {
        return Err(FieldError::invalid(
            field,
            src,
            &format!("must evaluate to {want}"),
        ));
    }
    Ok(ty)
}

/// The variables the apiserver declares (`plugincel.OptionalVariableDeclarations`):
/// `object`, `oldObject`, `request`, `namespaceObject` always; `params` with a paramKind;
/// `authorizer` where allowed; `variables` once the policy has any.
fn decls(
    env_minor: u32,
    params: bool,
    authorizer: bool,
    variables: Option<&[(String, Ty)]>,
) -> Decls {
    let mut d = Decls {
        env_minor,
        vars: Vec::new(),
    }
    .with("object", Ty::Dyn)
    .with("oldObject", Ty::Dyn)
    .with("request", types::request())
    .with("namespaceObject", types::namespace_object());
    if params {
        d = d.with("params", Ty::Dyn);
    }
    if authorizer {
        d = d.with("authorizer", types::authorizer());
    }
    if let Some(vars) = variables {
        let fields: Vec<(&str, Ty)> = vars.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        d = d.with("variables", Ty::object("kubernetes.variables", fields));
    }
    d
}

fn expression(
    errs: &mut Vec<FieldError>,
    field: &str,
    src: &str,
    decls: &Decls,
    returns: Returns,
    missing: &str,
) -> Option<Ty> {
    if src.trim().is_empty() {
        errs.push(FieldError::required(field, missing));
        return None;
    }
    match compile(field, src, decls, returns) {
        Ok(t) => Some(t),
        Err(e) => {
            errs.push(e);
            None
        }
    }
}

/// `isCELIdentifier`.
fn is_cel_identifier(name: &str) -> bool {
    const RESERVED: &[&str] = &[
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ];
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic());
    first_ok && chars.all(|c| c == '_' || c.is_ascii_alphanumeric()) && !RESERVED.contains(&name)
}

/// `validateValidatingAdmissionPolicySpec` at Kubernetes minor `kube_minor` (its CEL
/// environment is the previous minor's).
pub fn validate_policy(p: &Value, kube_minor: u32) -> Vec<FieldError> {
    let env = crate::kube_version::cel_environment_minor(kube_minor);
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
    let has_params = !spec["paramKind"].is_null();
    if has_params {
        validate_param_kind(&mut errs, &spec["paramKind"]);
    }
    if spec["matchConstraints"].is_null() {
        errs.push(FieldError::required("spec.matchConstraints", ""));
    } else {
        validate_match_resources(
            &mut errs,
            "spec.matchConstraints",
            &spec["matchConstraints"],
        );
        if items(spec, "/matchConstraints/resourceRules").is_empty() {
            errs.push(FieldError::required(
                "spec.matchConstraints.resourceRules",
                "",
            ));
        }
    }
    let conditions = items(spec, "/matchConditions");
    if conditions.len() > 64 {
        errs.push(FieldError::invalid_raw(
            "spec.matchConditions",
            BadValue::Plain(conditions.len().to_string()),
            "must have at most 64 items",
        ));
    }
    // Match conditions compile without `variables` (the stateless compiler).
    let mc_decls = decls(env, has_params, true, None);
    let mut names: Vec<&str> = Vec::new();
    for (i, c) in conditions.iter().enumerate() {
        let f = format!("spec.matchConditions[{i}]");
        expression(
            &mut errs,
            &format!("{f}.expression"),
            str_at(c, "/expression").trim(),
            &mc_decls,
            Returns::Bool,
            "",
        );
        let name = str_at(c, "/name");
        if name.is_empty() {
            errs.push(FieldError::required(&format!("{f}.name"), ""));
        } else {
            for m in is_qualified_name(name) {
                errs.push(FieldError::invalid(&format!("{f}.name"), name, &m));
            }
            if names.contains(&name) {
                errs.push(duplicate(&format!("{f}.name"), name));
            }
            names.push(name);
        }
    }
    // Variables compile in order, each seeing the ones before it.
    let variables = items(spec, "/variables");
    let composition = !variables.is_empty();
    let mut declared: Vec<(String, Ty)> = Vec::new();
    for (i, v) in variables.iter().enumerate() {
        let f = format!("spec.variables[{i}]");
        let name = str_at(v, "/name");
        if name.trim().is_empty() {
            errs.push(FieldError::required(
                &format!("{f}.name"),
                "name is not specified",
            ));
        } else if !is_cel_identifier(name) {
            errs.push(FieldError::invalid(
                &format!("{f}.name"),
                name,
                "name is not a valid CEL identifier",
            ));
        }
        let d = decls(env, has_params, true, Some(&declared));
        let ty = expression(
            &mut errs,
            &format!("{f}.expression"),
            str_at(v, "/expression"),
            &d,
            Returns::Any,
            "expression is not specified",
        );
        declared.push((name.to_string(), ty.unwrap_or(Ty::Dyn)));
    }
    let vars = composition.then_some(declared.as_slice());
    let validations = items(spec, "/validations");
    if validations.is_empty() && items(spec, "/auditAnnotations").is_empty() {
        for f in ["spec.validations", "spec.auditAnnotations"] {
            errs.push(FieldError::required(
                f,
                "validations or auditAnnotations must contain at least one item",
            ));
        }
    }
    let v_decls = decls(env, has_params, true, vars);
    // A messageExpression has no authorizer, and params only with a paramKind.
    let m_decls = decls(env, has_params, false, vars);
    for (i, v) in validations.iter().enumerate() {
        let f = format!("spec.validations[{i}]");
        expression(
            &mut errs,
            &format!("{f}.expression"),
            str_at(v, "/expression"),
            &v_decls,
            Returns::Bool,
            "expression is not specified",
        );
        let me = str_at(v, "/messageExpression");
        if !me.is_empty() && me.trim().is_empty() {
            errs.push(FieldError::invalid(
                &format!("{f}.messageExpression"),
                me,
                "must be non-empty if specified",
            ));
        } else if !me.trim().is_empty() {
            expression(
                &mut errs,
                &format!("{f}.messageExpression"),
                me,
                &m_decls,
                Returns::String,
                "",
            );
        }
        let msg = str_at(v, "/message");
        if !msg.is_empty() && msg.trim().is_empty() {
            errs.push(FieldError::invalid(
                &format!("{f}.message"),
                msg,
                "message must be non-empty if specified",
            ));
        } else if msg.trim().contains(['\n', '\r']) {
            errs.push(FieldError::invalid(
                &format!("{f}.message"),
                msg,
                "message must not contain line breaks",
            ));
        }
        let reason = str_at(v, "/reason");
        if !v["reason"].is_null()
            && !["Forbidden", "Invalid", "RequestEntityTooLarge"].contains(&reason)
        {
            errs.push(not_supported(
                &format!("{f}.reason"),
                reason,
                "\"Forbidden\", \"Invalid\", \"RequestEntityTooLarge\"",
            ));
        }
    }
    errs
}

/// `validateValidatingAdmissionPolicyBindingSpec`.
pub fn validate_binding(b: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let policy = str_at(b, "/spec/policyName");
    if policy.is_empty() {
        errs.push(FieldError::required("spec.policyName", ""));
    } else {
        for m in is_dns1123_subdomain(policy) {
            errs.push(FieldError::invalid("spec.policyName", policy, &m));
        }
    }
    validate_param_ref(&mut errs, &b["spec"]["paramRef"]);
    validate_match_resources(
        &mut errs,
        "spec.matchResouces",
        &b["spec"]["matchResources"],
    );
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

    fn rule(resources: Value) -> Value {
        json!({"apiGroups": ["*"], "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE", "DELETE", "CONNECT"], "resources": resources})
    }

    fn policy(resources: Value, validation: &str) -> Value {
        json!({"spec": {"matchConstraints": {"resourceRules": [rule(resources)]},
            "validations": [{"expression": validation, "message": "one line"}]}})
    }

    fn messages(errs: Vec<FieldError>) -> Vec<String> {
        errs.into_iter().map(|e| e.message()).collect()
    }

    #[test]
    fn what_the_apiserver_refuses() {
        assert_eq!(validate_policy(&policy(json!(["*/*"]), "true"), 33), vec![]);
        let bad = json!({"spec": {"failurePolicy": "Maybe",
            "validations": [{"expression": "object.(", "message": "two\nlines"}]}});
        let fields: Vec<String> = validate_policy(&bad, 33)
            .into_iter()
            .map(|e| e.field)
            .collect();
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
            messages(none),
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
            messages(dup),
            ["spec.validationActions[1]: Duplicate value: \"Audit\""]
        );
        let param_ref = validate_binding(&json!({"spec": {"policyName": "p",
            "validationActions": ["Deny"], "paramRef": {"name": "a/b"}}}));
        assert_eq!(
            messages(param_ref),
            [
                "spec.paramRef.name: Invalid value: \"a/b\": may not contain '/'",
                "spec.paramRef.parameterNotFoundAction: Required value"
            ]
        );
    }

    /// `validateResources` and `validateRule` as validation.go words them.
    #[test]
    fn resource_rules_wildcards() {
        let old = messages(validate_policy(&policy(json!(["*", "*/*"]), "true"), 33));
        assert_eq!(
            old,
            ["spec.matchConstraints.resourceRules[0].resources: Invalid value: []string{\"*\", \"*/*\"}: if '*/*' is present, must not specify other resources"]
        );
        assert_eq!(
            validate_policy(&policy(json!(["*", "pods/status"]), "true"), 33),
            vec![]
        );
        assert_eq!(
            messages(validate_policy(&policy(json!(["*", "pods"]), "true"), 33)),
            ["spec.matchConstraints.resourceRules[0].resources: Invalid value: []string{\"*\", \"pods\"}: if '*' is present, must not specify other resources without subresources"]
        );
        assert_eq!(
            messages(validate_policy(&policy(json!(["pods/*", "pods/log"]), "true"), 33)),
            ["spec.matchConstraints.resourceRules[0].resources[1]: Invalid value: \"pods/log\": if 'pods/*' is present, must not specify pods/log"]
        );
        let mut p = policy(json!(["pods"]), "true");
        p["spec"]["matchConstraints"]["resourceRules"][0]["operations"] = json!(["*", "PATCH"]);
        p["spec"]["matchConstraints"]["resourceRules"][0]["apiGroups"] = json!(["*", "apps"]);
        assert_eq!(
            messages(validate_policy(&p, 33)),
            [
                "spec.matchConstraints.resourceRules[0].operations: Invalid value: []admissionregistration.OperationType{\"*\", \"PATCH\"}: if '*' is present, must not specify other operations",
                "spec.matchConstraints.resourceRules[0].operations[1]: Unsupported value: \"PATCH\": supported values: \"*\", \"CONNECT\", \"CREATE\", \"DELETE\", \"UPDATE\"",
                "spec.matchConstraints.resourceRules[0].apiGroups: Invalid value: []string{\"*\", \"apps\"}: if '*' is present, must not specify other API groups"
            ]
        );
    }

    /// Expressions are compiled in the previous minor's environment and type-checked.
    #[test]
    fn expressions_checked_at_creation() {
        let at = |expr: &str, minor: u32| {
            messages(validate_policy(&policy(json!(["*/*"]), expr), minor))
        };
        let two = at("1 + 1", 33);
        assert_eq!(
            two,
            ["spec.validations[0].expression: Invalid value: \"1 + 1\": must evaluate to bool"]
        );
        let fmt = at("'%s'.format(['a']) == 'a'", 30);
        assert_eq!(
            fmt,
            Vec::<String>::new(),
            "1.30's environment is 1.29's: strings v2"
        );
        // The 1.29 apiserver compiles against 1.28's environment: strings version 0.
        let old = at("'%s'.format(['a']) == 'a'", 29);
        assert_eq!(old.len(), 1);
        assert!(
            old[0].starts_with("spec.validations[0].expression: Invalid value: \"'%s'.format(['a']) == 'a'\": compilation failed: ERROR: <input>:1:")
                && old[0].contains("undeclared reference to 'format' (in container '')"),
            "{old:?}"
        );
        assert!(at("nosuch(object) == 1", 35)[0].contains("undeclared reference to 'nosuch'"));
        assert!(at("isIP('a')", 30)[0].contains("undeclared reference to 'isIP'"));
        assert_eq!(at("isIP('a')", 31), Vec::<String>::new());
        let mut p = policy(json!(["*/*"]), "true");
        p["spec"]["validations"][0]["messageExpression"] = json!("object.metadata.name");
        assert_eq!(
            messages(validate_policy(&p, 33)),
            ["spec.validations[0].messageExpression: Invalid value: \"object.metadata.name\": must evaluate to string"]
        );
        p["spec"]["validations"][0]["messageExpression"] = json!("authorizer.path('x') + ''");
        assert!(
            messages(validate_policy(&p, 33))[0].contains("undeclared reference to 'authorizer'")
        );
        let mut v = policy(json!(["*/*"]), "variables.a == 1");
        v["spec"]["variables"] =
            json!([{"name": "a", "expression": "1"}, {"name": "in", "expression": "variables.b"}]);
        assert_eq!(
            messages(validate_policy(&v, 33)),
            [
                "spec.variables[1].name: Invalid value: \"in\": name is not a valid CEL identifier",
                "spec.variables[1].expression: Invalid value: \"variables.b\": compilation failed: ERROR: <input>:1:10: undefined field 'b'\n | variables.b\n | .........^"
            ]
        );
    }
}
