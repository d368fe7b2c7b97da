//! Optional RBAC enforcement (issue 6): when the simulator is started with RBAC manifests
//! (`--rbac FILE...`, [`crate::SimConfig::rbac_file`]), every API request is authenticated by
//! its bearer token ([`Identity`]) and authorized against the Roles and bindings in the store,
//! which start as the manifests' and can be changed through the API like on a real cluster.
//! A denied request gets the real 403 `Forbidden` Status; an unknown token gets 401.
//! The admin kubeconfig (tests, kubectl set-up) is `system:masters` and never denied.
//!
//! Over HTTPS (the default) a request authenticates with a client certificate or a bearer
//! token, or gets 401. Over plain HTTP ([`crate::SimConfig::plain_http`]) kubectl (client-go)
//! does not send a bearer token, so a request without credentials is the admin, as on the
//! apiserver's old insecure port. kubectl can
//! still act as the ServiceAccount through impersonation: `kubectl --as
//! system:serviceaccount:harvester-system:vmrecover ...` (the `Impersonate-User` header,
//! honoured for the admin as the real apiserver does for a user allowed to impersonate).

mod attributes;
mod load;
mod policy;

pub use crate::identity::{
    Identity, ADMIN_USER, KUBEVIRT_NAMESPACE, KUBEVIRT_SERVICE_ACCOUNTS, SA_TOKEN_PREFIX,
};
pub use attributes::Attributes;
pub use load::{load, parse, RBAC_KINDS};
pub use policy::{authorize, forbidden_message, rule_allows, rules_for};

use serde_json::json;

use crate::errors::ApiError;
use crate::store::Store;
use crate::tokens::Tokens;

/// The 403 Status the apiserver answers for a denied request.
pub fn forbidden(who: &Identity, a: &Attributes) -> ApiError {
    let details = if a.resource_request {
        let mut d = json!({"group": a.api_group, "kind": a.resource});
        if !a.name.is_empty() {
            d["name"] = json!(a.name);
        }
        d
    } else {
        json!({})
    };
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: forbidden_message(who, a),
        details,
    }
}

/// The 401 Status for a request without a token this simulator issued.
pub fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// What a request presents to authenticate.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The `Authorization` header ("" when absent).
    pub authorization: &'a str,
    /// The identity of the verified TLS client certificate, if one was sent.
    pub client_cert: Option<&'a Identity>,
    /// `Impersonate-User` and `Impersonate-Group`.
    pub impersonate: Option<&'a (String, Vec<String>)>,
}

/// The identity of an `Authorization: Bearer` header: a kubeconfig token of this simulator
/// or a token it issued through TokenRequest ([`crate::tokens`]).
pub fn authenticate(store: &Store, tokens: &Tokens, authorization: &str) -> Option<Identity> {
    if let Some(who) = Identity::from_authorization(authorization) {
        return Some(who);
    }
    let (scheme, token) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    tokens.authenticate(store, token.trim())
}

/// Authenticates one request, applies impersonation and, when `rbac`, authorizes it. `Ok`
/// carries the identity.
///
/// Authentication tries the client certificate, then the bearer token, the order of the
/// apiserver's union authenticator (x509 before tokens). `strict` (HTTPS): no credentials,
/// or credentials nobody issued, are 401, as on RKE2 (`--anonymous-auth=false`). Over plain
/// HTTP the old insecure port is modelled: no credentials is the admin and, without RBAC, so
/// is an unknown token (what depends on the user — virt-api's VMI status rule — still sees the
/// right one when the token is known).
#[allow(clippy::too_many_arguments)]
pub fn check(
    store: &Store,
    tokens: &Tokens,
    creds: &Credentials<'_>,
    strict: bool,
    rbac: bool,
    method: &str,
    path: &str,
    query: &[(String, String)],
) -> Result<Identity, ApiError> {
    let lenient = !strict && !rbac;
    let mut who = if let Some(cert) = creds.client_cert {
        cert.clone()
    } else if !creds.authorization.trim().is_empty() {
        match authenticate(store, tokens, creds.authorization) {
            Some(who) => who,
            None if lenient => Identity::admin(),
            None => return Err(unauthorized()),
        }
    } else if strict {
        return Err(unauthorized());
    } else {
        Identity::admin()
    };
    if let Some((ns, name)) = &who.service_account {
        // A token of a deleted ServiceAccount no longer authenticates.
        let exists = crate::resources::find("", "v1", "serviceaccounts")
            .is_some_and(|res| store.get(res, ns, name).is_ok());
        if !exists && !lenient {
            return Err(unauthorized());
        }
    }
    if let Some((user, groups)) = creds.impersonate {
        if who.is_superuser() {
            who = Identity::impersonated(user, groups);
        } else if !lenient {
            let a = Attributes {
                resource_request: true,
                verb: "impersonate".into(),
                resource: "users".into(),
                name: user.clone(),
                ..Attributes::default()
            };
            return Err(forbidden(&who, &a));
        }
    }
    if !rbac {
        return Ok(who);
    }
    let a = Attributes::from_request(method, path, query);
    if authorize(store, &who, &a) {
        Ok(who)
    } else {
        Err(forbidden(&who, &a))
    }
}
