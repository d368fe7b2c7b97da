//! ServiceAccount tokens from `POST .../serviceaccounts/NAME/token` (authentication.k8s.io/v1
//! TokenRequest) and their authentication.
//!
//! Issuing follows k8s.io/kubernetes `pkg/registry/core/serviceaccount/storage/token.go`
//! (v1.33.0): the request is validated (`pkg/apis/authentication/validation`:
//! `expirationSeconds` at least 600 and below 2^32), the ServiceAccount must exist (404), a
//! `boundObjectRef` must be a Pod (bound to the same ServiceAccount, `spec.serviceAccountName`;
//! 400 otherwise), a Secret or a Node, and a `uid` in it must match (409); audiences default to
//! the apiserver's (`https://kubernetes.default.svc.cluster.local` and `rke2`, as RKE2 sets
//! `--api-audiences`), `expirationSeconds` to 3600. The answer is the TokenRequest with
//! `status.token` and `status.expirationTimestamp`, 201.
//!
//! Authentication follows `pkg/serviceaccount/claims.go` and `util.go` (v1.33.0): the user
//! `system:serviceaccount:NS:NAME` in `system:serviceaccounts`,
//! `system:serviceaccounts:NS`; a pod-bound token carries the extras
//! `authentication.kubernetes.io/pod-name`, `pod-uid` and — the pod's `spec.nodeName`
//! (ServiceAccountTokenPodNodeInfo: off in 1.29, on from 1.30, GA in 1.32; the simulator's
//! Kubernetes version decides) — `node-name` (and `node-uid` when that Node exists). A token stops authenticating when it expires, when its ServiceAccount is gone or
//! replaced (uid), or when the object it is bound to is gone or replaced.
//!
//! The token text is JWT-shaped (header, claims, signature, base64url) so tools that peek at
//! the claims see the real ones; the simulator trusts only its own record of what it issued.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::identity::Identity;
use crate::meta;
use crate::resources::find;
use crate::store::Store;

/// The audiences the apiserver issues tokens for when the request names none.
pub const DEFAULT_AUDIENCES: [&str; 2] = ["https://kubernetes.default.svc.cluster.local", "rke2"];

/// `TokenRequestSpec.expirationSeconds` default (k8s.io/api authentication/v1 `types.go`).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// `extra` keys of a pod-bound token (k8s.io/kubernetes `pkg/serviceaccount/util.go`).
pub const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";
/// See [`POD_NAME_KEY`].
pub const POD_UID_KEY: &str = "authentication.kubernetes.io/pod-uid";
/// See [`POD_NAME_KEY`].
pub const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
/// See [`POD_NAME_KEY`].
pub const NODE_UID_KEY: &str = "authentication.kubernetes.io/node-uid";

/// What a token was issued for.
#[derive(Debug, Clone)]
struct Issued {
    identity: Identity,
    service_account_uid: String,
    /// (plural, namespace, name, uid) of the object the token is bound to.
    bound: Option<(&'static str, String, String, String)>,
    expires: i64,
}

/// The tokens issued so far.
#[derive(Debug, Default)]
pub struct Tokens {
    issued: Mutex<HashMap<String, Issued>>,
}

fn get(store: &Store, plural: &str, ns: &str, name: &str) -> Option<Value> {
    let res = find("", "v1", plural)?;
    store.get(res, ns, name).ok()
}

/// 404 `<plural> "<name>" not found` (also for kinds the simulator does not serve, as
/// Secrets: the simulator has none).
fn not_found(plural: &str, name: &str) -> ApiError {
    ApiError {
        code: 404,
        reason: "NotFound",
        message: format!("{plural} {name:?} not found"),
        details: json!({"name": name, "kind": plural}),
    }
}

fn b64(v: &Value) -> String {
    base64url(serde_json::to_vec(v).unwrap_or_default().as_slice())
}

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn invalid(field: &str, value: i64, detail: &str) -> ApiError {
    // errors.NewInvalid(GroupKind{authentication.k8s.io, TokenRequest}, "", errs)
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!(
            "TokenRequest.authentication.k8s.io \"\" is invalid: {field}: Invalid value: {value}: {detail}"
        ),
        details: json!({"group": "authentication.k8s.io", "kind": "TokenRequest",
            "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {value}: {detail}"), "field": field}]}),
    }
}

impl Tokens {
    /// Issues a token for ServiceAccount `ns/name` from a TokenRequest body.
    pub fn issue(
        &self,
        store: &Store,
        ns: &str,
        name: &str,
        mut request: Value,
    ) -> Result<Value, ApiError> {
        if !request.is_object() {
            request = json!({});
        }
        let expiration = request
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        if expiration < 600 {
            return Err(invalid(
                "spec.expirationSeconds",
                expiration,
                "may not specify a duration less than 10 minutes",
            ));
        }
        if expiration > 1 << 32 {
            return Err(invalid(
                "spec.expirationSeconds",
                expiration,
                "may not specify a duration larger than 2^32 seconds",
            ));
        }
        let sa = get(store, "serviceaccounts", ns, name)
            .ok_or_else(|| not_found("serviceaccounts", name))?;
        let mut identity = Identity::service_account(ns, name);
        let mut bound = None;
        if let Some(r) = request
            .pointer("/spec/boundObjectRef")
            .filter(|r| r.is_object())
        {
            let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
            let api_version = r.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            let obj_name = r.get("name").and_then(Value::as_str).unwrap_or("");
            let want_uid = r.get("uid").and_then(Value::as_str).unwrap_or("");
            let (plural, obj_ns) = match (api_version, kind) {
                ("v1", "Pod") => ("pods", ns),
                ("v1", "Secret") => ("secrets", ns),
                ("v1", "Node") => ("nodes", ""),
                _ => {
                    let gv = if api_version.contains('/') {
                        api_version.replacen('/', ", Version=", 1)
                    } else {
                        format!(", Version={api_version}")
                    };
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token to object of type {gv}, Kind={kind}"
                    )));
                }
            };
            let obj =
                get(store, plural, obj_ns, obj_name).ok_or_else(|| not_found(plural, obj_name))?;
            if plural == "pods"
                && obj
                    .pointer("/spec/serviceAccountName")
                    .and_then(Value::as_str)
                    != Some(name)
            {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name."
                )));
            }
            let uid = meta::uid(&obj).to_string();
            if !want_uid.is_empty() && want_uid != uid {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {kind} {obj_name:?}: the UID in the bound object reference ({want_uid}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
            if plural == "pods" {
                identity
                    .extra
                    .insert(POD_NAME_KEY.into(), vec![obj_name.into()]);
                identity.extra.insert(POD_UID_KEY.into(), vec![uid.clone()]);
            }
            // A pod's node goes into its token only with ServiceAccountTokenPodNodeInfo on
            // (Kubernetes 1.30+, [`crate::kube_version::pod_tokens_carry_node`]).
            let pod_node =
                crate::kube_version::pod_tokens_carry_node(store.settings().kube_minor());
            let node = match plural {
                "pods" if pod_node => obj
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                "nodes" => obj_name,
                _ => "",
            };
            if !node.is_empty() {
                identity
                    .extra
                    .insert(NODE_NAME_KEY.into(), vec![node.into()]);
                if let Some(n) = get(store, "nodes", "", node) {
                    identity
                        .extra
                        .insert(NODE_UID_KEY.into(), vec![meta::uid(&n).to_string()]);
                }
            }
            bound = Some((plural, obj_ns.to_string(), obj_name.to_string(), uid));
        }
        let audiences: Vec<String> =
            match request.pointer("/spec/audiences").and_then(Value::as_array) {
                Some(a) if !a.is_empty() => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect(),
                _ => DEFAULT_AUDIENCES.iter().map(|a| a.to_string()).collect(),
            };
        let now = jiff::Timestamp::now().as_second();
        let expires = now + expiration;
        let mut k8s =
            json!({"namespace": ns, "serviceaccount": {"name": name, "uid": meta::uid(&sa)}});
        if let Some((plural, _, n, u)) = &bound {
            let key = if *plural == "pods" {
                "pod"
            } else if *plural == "nodes" {
                "node"
            } else {
                "secret"
            };
            k8s[key] = json!({"name": n, "uid": u});
        }
        if let Some(node) = identity.extra.get(NODE_NAME_KEY) {
            k8s["node"] = json!({"name": node[0], "uid": identity.extra.get(NODE_UID_KEY).map(|u| u[0].clone()).unwrap_or_default()});
        }
        let claims = json!({
            "aud": audiences, "exp": expires, "iat": now, "nbf": now,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": k8s,
            "sub": identity.user,
        });
        let token = format!(
            "{}.{}.{}",
            b64(&json!({"alg": "RS256", "kid": "harvester-sim"})),
            b64(&claims),
            base64url(uuid::Uuid::new_v4().as_bytes())
        );
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                token.clone(),
                Issued {
                    identity,
                    service_account_uid: meta::uid(&sa).to_string(),
                    bound,
                    expires,
                },
            );
        let ts = jiff::Timestamp::from_second(expires)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        let mut out = request;
        out["apiVersion"] = json!("authentication.k8s.io/v1");
        out["kind"] = json!("TokenRequest");
        let m = meta::meta_mut(&mut out);
        m.insert("name".into(), json!(name));
        m.insert("namespace".into(), json!(ns));
        m.insert("creationTimestamp".into(), Value::Null);
        out["spec"]["audiences"] = json!(audiences);
        out["spec"]["expirationSeconds"] = json!(expiration);
        if out["spec"].get("boundObjectRef").is_none() {
            out["spec"]["boundObjectRef"] = Value::Null;
        }
        out["status"] = json!({"token": token, "expirationTimestamp": ts});
        Ok(out)
    }

    /// The identity of a token this simulator issued through TokenRequest, if it still
    /// authenticates.
    pub fn authenticate(&self, store: &Store, token: &str) -> Option<Identity> {
        let issued = self
            .issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()?;
        if jiff::Timestamp::now().as_second() >= issued.expires {
            return None;
        }
        let (ns, name) = issued.identity.service_account.clone()?;
        let sa = get(store, "serviceaccounts", &ns, &name)?;
        if meta::uid(&sa) != issued.service_account_uid {
            return None;
        }
        if let Some((plural, ons, oname, ouid)) = &issued.bound {
            let obj = get(store, plural, ons, oname)?;
            if meta::uid(&obj) != ouid {
                return None;
            }
        }
        Some(issued.identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_without_padding() {
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
