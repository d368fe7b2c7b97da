//! The review APIs a client asks about itself with: `SelfSubjectReview`
//! (authentication.k8s.io/v1, GA 1.28), `SelfSubjectAccessReview` and
//! `SelfSubjectRulesReview` (authorization.k8s.io/v1). They are create-only virtual
//! resources: nothing is stored, the answer is the request with its `status` filled in, 201.
//!
//! Upstream (k8s.io/kubernetes v1.33.0):
//! - `pkg/registry/authentication/selfsubjectreview/rest.go`: `status.userInfo` is the
//!   caller's user (username, uid, groups, extra) as authenticated.
//! - `pkg/registry/authorization/selfsubjectaccessreview/rest.go` with
//!   `pkg/apis/authorization/validation/validation.go` `ValidateSelfSubjectAccessReviewSpec`:
//!   exactly one of `resourceAttributes`/`nonResourceAttributes`, else 422; the caller's
//!   identity is asked about through the authorizer (here [`crate::rbac::authorize`]).
//! - `pkg/registry/authorization/selfsubjectrulesreview/rest.go`: `spec.namespace` is
//!   required (400 `no namespace on request` is the handler's answer to an empty one); the
//!   rules are the RBAC rules that apply in that namespace (`RulesFor`).
//! - The right to create them: the bootstrap ClusterRole `system:basic-user`, bound to
//!   `system:authenticated` (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`),
//!   modelled in [`crate::rbac::authorize`].

use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::rbac::{Attributes, Identity};
use crate::store::Store;

/// The review resources: (group, version, plural, kind).
pub const REVIEWS: [(&str, &str, &str, &str); 3] = [
    (
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
    ),
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
    ),
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
    ),
];

/// The review kind a path addresses (`/apis/G/V/PLURAL`), if any.
pub fn review_of(path: &str) -> Option<(&'static str, &'static str, &'static str)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["apis", g, v, plural] = segs.as_slice() else {
        return None;
    };
    REVIEWS
        .iter()
        .find(|(rg, rv, rp, _)| rg == g && rv == v && rp == plural)
        .map(|(g, _, p, k)| (*g, *p, *k))
}

/// Whether `group` is one of the review groups, served only for discovery and the reviews.
pub fn is_review_group(group: &str) -> bool {
    REVIEWS.iter().any(|(g, ..)| *g == group)
}

/// The discovery `APIResourceList` of a review group/version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let entries: Vec<Value> = REVIEWS
        .iter()
        .filter(|(g, v, ..)| *g == group && *v == version)
        .map(|(_, _, plural, kind)| {
            json!({"name": plural, "singularName": "", "namespaced": false, "kind": kind, "verbs": ["create"]})
        })
        .collect();
    (!entries.is_empty()).then(|| {
        json!({"kind": "APIResourceList", "apiVersion": "v1",
               "groupVersion": format!("{group}/{version}"), "resources": entries})
    })
}

fn user_info(who: &Identity) -> Value {
    let mut u = json!({"username": who.user, "groups": who.groups});
    if !who.extra.is_empty() {
        u["extra"] = json!(who.extra);
    }
    u
}

fn invalid(kind: &str, group: &str, field: &str, value: &str, detail: &str) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!(
            "{kind}.{group} \"\" is invalid: {field}: Invalid value: {value}: {detail}"
        ),
        details: json!({"group": group, "kind": kind, "causes": [
            {"reason": "FieldValueInvalid", "message": format!("Invalid value: {value}: {detail}"), "field": field}]}),
    }
}

fn answer(body: Value, group: &str, kind: &str, status: Value) -> Value {
    let mut out = if body.is_object() { body } else { json!({}) };
    out["apiVersion"] = json!(format!("{group}/v1"));
    out["kind"] = json!(kind);
    if out.get("metadata").is_none_or(|m| !m.is_object()) {
        out["metadata"] = json!({});
    }
    out["metadata"]["creationTimestamp"] = Value::Null;
    out["status"] = status;
    out
}

/// Answers one review POST (`kind` from [`review_of`]) for the authenticated `who`.
pub fn create(store: &Store, who: &Identity, kind: &str, body: Value) -> Result<Value, ApiError> {
    match kind {
        "SelfSubjectReview" => Ok(answer(
            body,
            "authentication.k8s.io",
            kind,
            json!({"userInfo": user_info(who)}),
        )),
        "SelfSubjectAccessReview" => access_review(store, who, body),
        _ => rules_review(store, who, body),
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn access_review(store: &Store, who: &Identity, body: Value) -> Result<Value, ApiError> {
    const G: &str = "authorization.k8s.io";
    const K: &str = "SelfSubjectAccessReview";
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    let ra = spec.get("resourceAttributes").filter(|v| v.is_object());
    let nra = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    let a = match (ra, nra) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                K,
                G,
                "spec.nonResourceAttributes",
                "set",
                "cannot be specified in combination with resourceAttributes",
            ))
        }
        (None, None) => {
            return Err(invalid(
                K,
                G,
                "spec.resourceAttributes",
                "null",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ))
        }
        (Some(r), None) => Attributes {
            resource_request: true,
            verb: s(r, "verb").into(),
            api_group: s(r, "group").into(),
            resource: s(r, "resource").into(),
            subresource: s(r, "subresource").into(),
            namespace: s(r, "namespace").into(),
            name: s(r, "name").into(),
            path: String::new(),
        },
        (None, Some(n)) => Attributes {
            resource_request: false,
            verb: s(n, "verb").into(),
            path: s(n, "path").into(),
            ..Attributes::default()
        },
    };
    let allowed = crate::rbac::authorize(store, who, &a);
    let mut status = json!({"allowed": allowed});
    if allowed && !who.is_superuser() {
        status["reason"] = json!("RBAC: allowed");
    }
    Ok(answer(body, G, K, status))
}

fn rules_review(store: &Store, who: &Identity, body: Value) -> Result<Value, ApiError> {
    let ns = body
        .pointer("/spec/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    if ns.is_empty() {
        return Err(ApiError::bad_request("no namespace on request"));
    }
    let (resource_rules, non_resource_rules) = crate::rbac::rules_for(store, who, ns);
    Ok(answer(
        body,
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_review() {
        assert_eq!(
            review_of("/apis/authentication.k8s.io/v1/selfsubjectreviews"),
            Some((
                "authentication.k8s.io",
                "selfsubjectreviews",
                "SelfSubjectReview"
            ))
        );
        assert!(review_of("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews").is_some());
        assert_eq!(
            review_of("/apis/authorization.k8s.io/v1beta1/selfsubjectaccessreviews"),
            None
        );
        assert_eq!(review_of("/api/v1/pods"), None);
    }
}
