//! ValidatingAdmissionPolicies (admissionregistration.k8s.io/v1, GA in Kubernetes 1.30): the
//! room where a write meets the CEL policies created through the API.
//!
//! Followed, k8s.io/apiserver v0.33.0 (Kubernetes 1.33; the behaviour is the same since 1.30):
//! - `pkg/admission/plugin/policy/validating/dispatcher.go` `Dispatch`: every policy whose
//!   `matchConstraints` match, with every binding of it (`spec.policyName`) whose
//!   `matchResources` match, with its params (`paramKind` + `paramRef`; none found and
//!   `parameterNotFoundAction: Deny` is a configuration error), is evaluated; denials are
//!   collected and the first one is returned: `admission.NewForbidden` (`pkg/admission/errors.go`:
//!   `<resource>[.<group>] "<name>" is forbidden: <message>`, details name/group/kind) with the
//!   message `ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request:
//!   <decision>`, its reason replaced by the validation's `reason` (default `Invalid`), the code
//!   from the reason (`reasonToCode`: Invalid → 422) and one cause carrying the message.
//!   A configuration error with failurePolicy Fail denies with `failed to configure binding:
//!   <err>` (or `policy`); with Ignore it is skipped.
//! - `validator.go` `Validate`: `matchConditions` first (any false: the binding does not apply;
//!   an error: the failurePolicy decides), then each validation: an evaluation error denies
//!   under Fail (admits under Ignore) with the error as message; `false` denies with the
//!   `messageExpression` result (a non-empty single-line string), else `message`, else
//!   `failed expression: <expression>`.
//! - `pkg/admission/plugin/policy/matching/matching.go` and
//!   `pkg/admission/plugin/webhook/predicates/rules/rules.go`: `resourceRules` /
//!   `excludeResourceRules` by operation (`*`), group, version, resource (`*`, `*/*`,
//!   `<res>/*`, `*/<sub>`, `<res>/<sub>`) and `resourceNames`; `namespaceSelector` and
//!   `objectSelector` with `matchLabels` (a `matchExpressions` selector is a configuration
//!   error here, which fails closed).
//! - The variables (`pkg/admission/plugin/cel/activation.go`, `CreateAdmissionRequest`):
//!   `object` (null for DELETE), `oldObject` (null for CREATE), `request` (an
//!   `AdmissionRequest`: `operation`, `name`, `namespace`, `resource`, `subResource`, `kind`,
//!   `userInfo{username, uid, groups, extra}`, `dryRun`), `params`, `namespaceObject` and
//!   `variables` (`spec.variables`, in order; one that fails to evaluate is left out, so an
//!   expression using it fails). `authorizer` is not offered.
//!
//! The validating policies run before the validating webhooks, as in kube-apiserver's plugin
//! order (`pkg/kubeapiserver/options/plugins.go`, v1.33.0: ValidatingAdmissionPolicy, then
//! ValidatingAdmissionWebhook). Only `validationActions: [Deny]` has an effect here: `Warn`
//! and `Audit` change no answer.

pub mod check;
pub mod expr;
pub mod functions;
pub mod types;

use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::identity::Identity;
use crate::resources::ResourceDef;
use crate::webhooks::Operation;
use expr::{Activation, Expression};

/// One write as the policies see it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// CREATE, UPDATE or DELETE.
    pub operation: Operation,
    /// The resource written.
    pub resource: &'a ResourceDef,
    /// `status`, `eviction` or "".
    pub subresource: &'a str,
    /// The namespace ("" for cluster-scoped objects).
    pub namespace: &'a str,
    /// The name on the request ("" for a create with generateName).
    pub name: &'a str,
    /// The object after the write (None for DELETE).
    pub object: Option<&'a Value>,
    /// The object before the write (None for CREATE).
    pub old_object: Option<&'a Value>,
    /// Who sends it.
    pub user: &'a Identity,
    /// Whether it is a dry run (`dryRun=All`).
    pub dry_run: bool,
}

/// What the dispatcher needs from the cluster besides the request.
pub trait Lookup {
    /// Every ValidatingAdmissionPolicy.
    fn policies(&self) -> Vec<Value>;
    /// Every ValidatingAdmissionPolicyBinding.
    fn bindings(&self) -> Vec<Value>;
    /// The object of `apiVersion`/`kind` named `namespace/name`: `Err` when the kind is not
    /// served, `Ok(None)` when there is no such object.
    fn param(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, String>;
    /// Every object of `apiVersion`/`kind` in `namespace` ("" for a cluster-scoped kind) whose
    /// labels match `selector` (a `LabelSelector`): `Err` when the kind is not served or the
    /// selector cannot be read.
    fn params_selected(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        selector: &Value,
    ) -> Result<Vec<Value>, String>;
    /// Whether `apiVersion`/`kind` is namespaced (None: not served).
    fn namespaced(&self, api_version: &str, kind: &str) -> Option<bool>;
    /// The Namespace object of a namespaced request.
    fn namespace(&self, name: &str) -> Option<Value>;
}

/// A denial on its way out: the decision's message and reason, with the policy and binding.
struct Denied {
    policy: String,
    binding: Option<String>,
    message: String,
    reason: &'static str,
}

fn name_of(v: &Value) -> String {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// Whether `req` writes an admission configuration object, which no API-created policy ever
/// sees (so that a policy can always be fixed or removed): k8s.io/apiserver
/// `pkg/admission/plugin/policy/generic/plugin.go` skips them (v1.30.0 `ShouldIgnore` through
/// `webhook/predicates/rules/rules.go` `IsExemptAdmissionConfigurationResource`; v1.33.0 the
/// same set of resources).
fn exempt(req: &Request<'_>) -> bool {
    req.resource.group == "admissionregistration.k8s.io"
        && matches!(
            req.resource.plural,
            "validatingadmissionpolicies"
                | "validatingadmissionpolicybindings"
                | "mutatingadmissionpolicies"
                | "mutatingadmissionpolicybindings"
                | "validatingwebhookconfigurations"
                | "mutatingwebhookconfigurations"
        )
}

/// Runs every policy over `req`: `Ok` when none denies it, else the apiserver's error.
pub fn admit(cluster: &dyn Lookup, req: &Request<'_>) -> Result<(), ApiError> {
    if exempt(req) {
        return Ok(());
    }
    let mut policies = cluster.policies();
    if policies.is_empty() {
        return Ok(());
    }
    policies.sort_by_key(name_of);
    let mut bindings = cluster.bindings();
    bindings.sort_by_key(name_of);
    let request = request_json(req);
    let mut denied: Vec<Denied> = Vec::new();
    for policy in &policies {
        let pname = name_of(policy);
        let spec = &policy["spec"];
        let fail = str_at(spec, "/failurePolicy") != "Ignore";
        let config_error = |binding: Option<&str>, err: String, denied: &mut Vec<Denied>| {
            if fail {
                let what = if binding.is_some() {
                    "binding"
                } else {
                    "policy"
                };
                denied.push(Denied {
                    policy: pname.clone(),
                    binding: binding.map(String::from),
                    message: format!("failed to configure {what}: {err}"),
                    reason: "Invalid",
                });
            }
        };
        match matches_resources(&spec["matchConstraints"], req, cluster, true) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                config_error(None, e, &mut denied);
                continue;
            }
        }
        let compiled = match Compiled::new(spec) {
            Ok(c) => c,
            Err(e) => {
                config_error(None, e, &mut denied);
                continue;
            }
        };
        for binding in bindings
            .iter()
            .filter(|b| str_at(b, "/spec/policyName") == pname)
        {
            let bname = name_of(binding);
            match matches_resources(&binding["spec"]["matchResources"], req, cluster, false) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    config_error(Some(&bname), e, &mut denied);
                    continue;
                }
            }
            let params = match collect_params(spec, &binding["spec"], req, cluster) {
                Ok(p) => p,
                Err(e) => {
                    config_error(Some(&bname), e, &mut denied);
                    continue;
                }
            };
            let deny_action = binding["spec"]["validationActions"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "Deny"));
            for param in params {
                for d in compiled.validate(req, &request, param.as_ref(), cluster, fail) {
                    if deny_action {
                        denied.push(Denied {
                            policy: pname.clone(),
                            binding: Some(bname.clone()),
                            message: d.0,
                            reason: d.1,
                        });
                    }
                }
            }
        }
    }
    match denied.into_iter().next() {
        None => Ok(()),
        Some(d) => Err(forbidden(req, &d)),
    }
}

/// The apiserver's error for the first denial.
fn forbidden(req: &Request<'_>, d: &Denied) -> ApiError {
    let message = match &d.binding {
        Some(b) => format!(
            "ValidatingAdmissionPolicy '{}' with binding '{b}' denied request: {}",
            d.policy, d.message
        ),
        None => format!(
            "ValidatingAdmissionPolicy '{}' denied request: {}",
            d.policy, d.message
        ),
    };
    // extractResourceName: the request's name, else the object's name or generateName.
    let name = if !req.name.is_empty() {
        req.name.to_string()
    } else {
        req.object
            .map(|o| {
                let n = str_at(o, "/metadata/name");
                if n.is_empty() {
                    str_at(o, "/metadata/generateName").to_string()
                } else {
                    n.to_string()
                }
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "Unknown".into())
    };
    let r = req.resource;
    let qualified = if r.group.is_empty() {
        r.plural.to_string()
    } else {
        format!("{}.{}", r.plural, r.group)
    };
    let code = match d.reason {
        "Forbidden" => 403,
        "Unauthorized" => 401,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    };
    ApiError {
        code,
        reason: d.reason,
        message: format!("{qualified} {name:?} is forbidden: {message}"),
        details: json!({"name": name, "group": r.group, "kind": r.plural,
            "causes": [{"message": message}]}),
    }
}

/// `request` as CEL sees it (an admission/v1 AdmissionRequest, unstructured).
fn request_json(req: &Request<'_>) -> Value {
    let r = req.resource;
    let op = match req.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
    };
    let kind = if req.subresource == "eviction" {
        json!({"group": "policy", "version": "v1", "kind": "Eviction"})
    } else {
        json!({"group": r.group, "version": r.version, "kind": r.kind})
    };
    let resource = json!({"group": r.group, "version": r.version, "resource": r.plural});
    // The AdmissionRequest's `omitempty` fields are absent when empty (subResource, name,
    // namespace, userInfo's uid, groups and extra): an expression must guard them with has().
    let mut out = json!({
        "uid": uuid::Uuid::new_v4().to_string(),
        "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
        "operation": op, "userInfo": {"username": req.user.user},
        // Always present, `false` included: k8s.io/apiserver `pkg/admission/plugin/cel/
        // filter.go` `CreateAdmissionRequest` (v0.29.0 … v0.33.0) sets `DryRun: &dryRun` from
        // `attr.IsDryRun()`.
        "dryRun": req.dry_run,
    });
    for (k, v) in [
        ("subResource", req.subresource),
        ("requestSubResource", req.subresource),
        ("name", req.name),
        ("namespace", req.namespace),
    ] {
        if !v.is_empty() {
            out[k] = json!(v);
        }
    }
    if !req.user.groups.is_empty() {
        out["userInfo"]["groups"] = json!(req.user.groups);
    }
    if !req.user.extra.is_empty() {
        out["userInfo"]["extra"] = json!(req.user.extra);
    }
    out
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether one `NamedRuleWithOperations` matches.
fn rule_matches(rule: &Value, req: &Request<'_>) -> bool {
    let r = req.resource;
    let ops = strings(&rule["operations"]);
    let op = match req.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
    };
    let any = |list: &[&str], want: &str| list.iter().any(|x| *x == "*" || *x == want);
    if !any(&ops, op)
        || !any(&strings(&rule["apiGroups"]), r.group)
        || !any(&strings(&rule["apiVersions"]), r.version)
    {
        return false;
    }
    // k8s.io/apiserver `pkg/admission/plugin/webhook/predicates/rules/rules.go` (v0.33.0)
    // `Matcher.resource`: `res/sub` matches when each part is `*` or equal, the request's
    // subresource being "" for a main resource: so `*/*` and `pods/*` match main resources
    // too, while `*` and `pods` match only main resources.
    let resource_ok = strings(&rule["resources"]).iter().any(|pattern| {
        let (pr, ps) = pattern.split_once('/').unwrap_or((pattern, ""));
        (pr == "*" || pr == r.plural) && (ps == "*" || ps == req.subresource)
    });
    let scope = str_at(rule, "/scope");
    let scope_ok = match scope {
        "Cluster" => !r.namespaced,
        "Namespaced" => r.namespaced,
        _ => true,
    };
    let names = strings(&rule["resourceNames"]);
    resource_ok && scope_ok && (names.is_empty() || names.contains(&req.name))
}

/// `matchLabels` of a selector against labels; `matchExpressions` is not implemented.
fn selector_matches(sel: &Value, labels: &Value) -> Result<bool, String> {
    if sel.is_null() {
        return Ok(true);
    }
    if sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Err("the simulator does not implement matchExpressions in selectors".into());
    }
    Ok(sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v)))
}

/// `matchConstraints` of a policy (`required`: no rules match nothing) or `matchResources`
/// of a binding (absent: everything the policy matched).
fn matches_resources(
    m: &Value,
    req: &Request<'_>,
    cluster: &dyn Lookup,
    required: bool,
) -> Result<bool, String> {
    if m.is_null() {
        return Ok(!required);
    }
    let rules = m["resourceRules"].as_array();
    let included = match rules {
        Some(rules) if !rules.is_empty() => rules.iter().any(|r| rule_matches(r, req)),
        _ => !required,
    };
    if !included {
        return Ok(false);
    }
    if m["excludeResourceRules"]
        .as_array()
        .is_some_and(|ex| ex.iter().any(|r| rule_matches(r, req)))
    {
        return Ok(false);
    }
    let obj = req.object.or(req.old_object).unwrap_or(&Value::Null);
    if !selector_matches(&m["objectSelector"], &obj["metadata"]["labels"])? {
        return Ok(false);
    }
    if !req.namespace.is_empty() {
        let ns = cluster.namespace(req.namespace).unwrap_or(Value::Null);
        if !selector_matches(&m["namespaceSelector"], &ns["metadata"]["labels"])? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The params a binding evaluates with (k8s.io/apiserver
/// `pkg/admission/plugin/policy/generic/policy_dispatcher.go` `CollectParams`, the same cases
/// at v1.30.0 and v1.33.0, read on the kubernetes/kubernetes tree):
/// - no `paramKind`: `[None]` (a `paramRef` is ignored); `paramKind` without `paramRef`:
///   `[None]` too (the expressions see `params` null, and `params.x` fails to evaluate);
/// - a namespaced kind is read in `paramRef.namespace`, else in the request's namespace; a
///   cluster-scoped request with neither is a configuration error ("cannot use namespaced
///   paramRef in policy binding that matches cluster-scoped resources"), and so is
///   `paramRef.namespace` on a cluster-scoped kind;
/// - `paramRef.name`: that one object; `paramRef.selector`: every object whose labels match
///   (each one evaluated, any denial denies); neither or both: a configuration error;
/// - none found: with `parameterNotFoundAction: Deny` a configuration error ("no params found
///   for policy binding with `Deny` parameterNotFoundAction"), which denies under
///   failurePolicy Fail; with `Allow` the binding is not evaluated at all.
fn collect_params(
    policy: &Value,
    binding: &Value,
    req: &Request<'_>,
    cluster: &dyn Lookup,
) -> Result<Vec<Option<Value>>, String> {
    let kind = &policy["paramKind"];
    if kind.is_null() {
        return Ok(vec![None]);
    }
    let (api_version, k) = (str_at(kind, "/apiVersion"), str_at(kind, "/kind"));
    let namespaced = cluster.namespaced(api_version, k).ok_or_else(|| {
        format!("failed to find resource referenced by paramKind: '{api_version}, Kind={k}'")
    })?;
    let pref = &binding["paramRef"];
    if pref.is_null() {
        return Ok(vec![None]);
    }
    let ref_ns = str_at(pref, "/namespace");
    let ns = if !namespaced {
        if !ref_ns.is_empty() {
            return Err(
                "paramRef.namespace must not be provided for a cluster-scoped `paramKind`".into(),
            );
        }
        ""
    } else if !ref_ns.is_empty() {
        ref_ns
    } else if !req.namespace.is_empty() {
        req.namespace
    } else {
        return Err("cannot use namespaced paramRef in policy binding that matches cluster-scoped resources".into());
    };
    let name = str_at(pref, "/name");
    let selector = &pref["selector"];
    let found: Vec<Value> = match (name.is_empty(), selector.is_null()) {
        (false, false) => {
            return Err("paramRef.name and paramRef.selector are mutually exclusive".into())
        }
        (false, true) => cluster
            .param(api_version, k, ns, name)?
            .into_iter()
            .collect(),
        (true, false) => cluster.params_selected(api_version, k, ns, selector)?,
        (true, true) => return Err("one of name or selector must be provided".into()),
    };
    if found.is_empty() && str_at(pref, "/parameterNotFoundAction") == "Deny" {
        return Err(
            "no params found for policy binding with `Deny` parameterNotFoundAction".into(),
        );
    }
    Ok(found.into_iter().map(Some).collect())
}

/// Whether `labels` match a `LabelSelector` (for `paramRef.selector`).
pub fn labels_match(selector: &Value, labels: &Value) -> Result<bool, String> {
    selector_matches(selector, labels)
}

/// One validation: the expression, its messages and reason.
struct Validation {
    expression: Expression,
    message: String,
    message_expression: Option<Expression>,
    reason: &'static str,
}

/// A policy's expressions, compiled.
struct Compiled {
    match_conditions: Vec<Expression>,
    variables: Vec<(String, Expression)>,
    validations: Vec<Validation>,
}

impl Compiled {
    fn new(spec: &Value) -> Result<Self, String> {
        let list = |k: &str| spec[k].as_array().cloned().unwrap_or_default();
        let match_conditions = list("matchConditions")
            .iter()
            .map(|c| Expression::compile(str_at(c, "/expression")))
            .collect::<Result<_, _>>()?;
        let variables = list("variables")
            .iter()
            .map(|v| {
                Expression::compile(str_at(v, "/expression"))
                    .map(|e| (str_at(v, "/name").to_string(), e))
            })
            .collect::<Result<_, _>>()?;
        let validations = list("validations")
            .iter()
            .map(|v| {
                let message_expression = match str_at(v, "/messageExpression") {
                    "" => None,
                    m => Some(Expression::compile(m)?),
                };
                let reason = match str_at(v, "/reason") {
                    "Unauthorized" => "Unauthorized",
                    "Forbidden" => "Forbidden",
                    "RequestEntityTooLarge" => "RequestEntityTooLarge",
                    _ => "Invalid",
                };
                Ok::<_, String>(Validation {
                    expression: Expression::compile(str_at(v, "/expression"))?,
                    message: str_at(v, "/message").to_string(),
                    message_expression,
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Compiled {
            match_conditions,
            variables,
            validations,
        })
    }

    /// The denials (message, reason) of one binding with one param.
    fn validate(
        &self,
        req: &Request<'_>,
        request: &Value,
        param: Option<&Value>,
        cluster: &dyn Lookup,
        fail: bool,
    ) -> Vec<(String, &'static str)> {
        let mut vars = Activation::default();
        vars.bind("object", req.object.unwrap_or(&Value::Null));
        vars.bind("oldObject", req.old_object.unwrap_or(&Value::Null));
        vars.bind("request", request);
        vars.bind("params", param.unwrap_or(&Value::Null));
        let ns = if req.namespace.is_empty() {
            Value::Null
        } else {
            cluster.namespace(req.namespace).unwrap_or(Value::Null)
        };
        vars.bind("namespaceObject", &ns);
        // matchConditions (matchconditions/matcher.go): a false one wins over errors.
        let mut errors = Vec::new();
        for c in &self.match_conditions {
            match c.eval_bool(&vars) {
                Ok(false) => return Vec::new(),
                Ok(true) => {}
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            if !fail {
                return Vec::new();
            }
            let msg = if errors.len() == 1 {
                errors.remove(0)
            } else {
                format!("[{}]", errors.join(", "))
            };
            return vec![(msg, "Invalid")];
        }
        let mut variables = std::collections::HashMap::new();
        for (name, e) in &self.variables {
            vars.bind_cel("variables", cel::Value::from(variables.clone()));
            if let Ok(v) = e.eval(&vars) {
                variables.insert(name.clone(), v);
            }
        }
        vars.bind_cel("variables", cel::Value::from(variables));
        let mut out = Vec::new();
        for v in &self.validations {
            match v.expression.eval_bool(&vars) {
                Ok(true) => {}
                Err(e) => {
                    if fail {
                        out.push((e, "Invalid"));
                    }
                }
                Ok(false) => {
                    let from_expr = v
                        .message_expression
                        .as_ref()
                        .and_then(|m| m.eval(&vars).ok())
                        .and_then(|r| expr::as_string(&r))
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty() && !s.contains('\n') && s.len() <= 5 * 1024);
                    let msg = from_expr
                        .or_else(|| Some(v.message.trim().to_string()).filter(|m| !m.is_empty()))
                        .unwrap_or_else(|| {
                            format!("failed expression: {}", v.expression.source().trim())
                        });
                    out.push((msg, v.reason));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
