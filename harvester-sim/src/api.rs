//! Routing of Kubernetes API paths: discovery, OpenAPI, and the resource verbs.

use serde_json::{json, Value};

use crate::discovery;
use crate::errors::ApiError;
use crate::exchange::{Reply, Req, State, WatchParams};
use crate::patch::PatchKind;
use crate::resources::{self, ResIdx, RESOURCES};
use crate::store::{DeleteOptions, ListQuery, PatchParams};
use crate::table::{self, IncludeObject};

/// What a resource path addresses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    /// A collection (all namespaces when `ns` is `None` for a namespaced resource).
    Collection { res: ResIdx, ns: Option<String> },
    /// A create-only subresource of an object: `pods/NAME/eviction` (policy/v1 Eviction) or
    /// `serviceaccounts/NAME/token` (authentication.k8s.io/v1 TokenRequest).
    Action {
        res: ResIdx,
        ns: String,
        name: String,
        action: Action,
    },
    /// One object, or its `/status` subresource.
    Object {
        res: ResIdx,
        ns: String,
        name: String,
        status: bool,
    },
}

impl Target {
    /// The resource addressed.
    pub(crate) fn res(&self) -> ResIdx {
        match self {
            Target::Collection { res, .. }
            | Target::Action { res, .. }
            | Target::Object { res, .. } => *res,
        }
    }
}

/// The create-only subresources served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// `pods/eviction`.
    Eviction,
    /// `serviceaccounts/token`.
    Token,
}

/// Parses `/api/v1/...` or `/apis/G/V/...` into a target.
pub(crate) fn parse_target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let find = |plural: &str| resources::find(group, version, plural);
    let namespaced = |i: ResIdx| RESOURCES.get(i).is_some_and(|r| r.namespaced);
    match rest {
        [plural] => Some(Target::Collection {
            res: find(plural)?,
            ns: None,
        }),
        ["namespaces", ns, plural] if *plural != "status" && *plural != "finalize" => {
            let res = find(plural)?;
            namespaced(res).then(|| Target::Collection {
                res,
                ns: Some(ns.to_string()),
            })
        }
        [plural, name] => {
            let res = find(plural)?;
            (!namespaced(res)).then(|| Target::Object {
                res,
                ns: String::new(),
                name: name.to_string(),
                status: false,
            })
        }
        [plural, name, "status"] => {
            let res = find(plural)?;
            (!namespaced(res) && RESOURCES.get(res).is_some_and(|r| r.status_subresource)).then(
                || Target::Object {
                    res,
                    ns: String::new(),
                    name: name.to_string(),
                    status: true,
                },
            )
        }
        ["namespaces", ns, plural, name] => {
            let res = find(plural)?;
            namespaced(res).then(|| Target::Object {
                res,
                ns: ns.to_string(),
                name: name.to_string(),
                status: false,
            })
        }
        ["namespaces", ns, plural @ ("pods" | "serviceaccounts"), name, sub @ ("eviction" | "token")]
            if group.is_empty() =>
        {
            let action = match (*plural, *sub) {
                ("pods", "eviction") => Action::Eviction,
                ("serviceaccounts", "token") => Action::Token,
                _ => return None,
            };
            Some(Target::Action {
                res: find(plural)?,
                ns: ns.to_string(),
                name: name.to_string(),
                action,
            })
        }
        ["namespaces", ns, plural, name, "status"] => {
            let res = find(plural)?;
            (namespaced(res) && RESOURCES.get(res).is_some_and(|r| r.status_subresource)).then(
                || Target::Object {
                    res,
                    ns: ns.to_string(),
                    name: name.to_string(),
                    status: true,
                },
            )
        }
        _ => None,
    }
}

fn json_body(r: &Req) -> Result<Value, ApiError> {
    if r.body.is_empty() {
        return Ok(Value::Null);
    }
    if crate::protobuf::is_protobuf(&r.content_type) {
        return crate::protobuf::decode(&r.body);
    }
    if r.content_type.contains("yaml") {
        let text =
            std::str::from_utf8(&r.body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        return serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(&r.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))
}

/// Routes a non-`/_sim` request.
pub(crate) fn route(state: &State, r: &Req) -> Reply {
    let path = r.path.trim_end_matches('/');
    let get = r.method == "GET";
    let minor = state.store.settings().kube_minor();
    match path {
        "/version" if get => return Reply::Json(200, state.store.settings().version_info()),
        "/healthz" | "/readyz" | "/livez" if get => return Reply::Text(200, "ok".into()),
        "/api" if get => {
            return Reply::Json(
                200,
                json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.addr.to_string()}],
                }),
            )
        }
        "/apis" if get => return Reply::Json(200, discovery::group_list(minor)),
        "/openapi/v3" if get => return Reply::Json(200, crate::openapi::index(minor)),
        "/openapi/v2" if get => {
            return Reply::Bytes(
                200,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                crate::openapi::v2_protobuf(minor),
            )
        }
        _ => {}
    }
    if get {
        if let Some(rest) = path.strip_prefix("/openapi/v3/") {
            let doc = match rest.split('/').collect::<Vec<_>>().as_slice() {
                ["api", v] => crate::openapi::group_version("", v, minor),
                ["apis", g, v] => crate::openapi::group_version(g, v, minor),
                _ => None,
            };
            return match doc {
                Some(d) => Reply::Json(200, d),
                None => ApiError::path_not_found().into(),
            };
        }
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segs.as_slice() {
            ["api", v] => {
                return discovery::resource_list("", v, minor).map_or_else(
                    || ApiError::path_not_found().into(),
                    |l| Reply::Json(200, l),
                )
            }
            ["apis", g] => {
                return discovery::group(g, minor).map_or_else(
                    || ApiError::path_not_found().into(),
                    |l| Reply::Json(200, l),
                )
            }
            ["apis", g, v] => {
                return discovery::resource_list(g, v, minor).map_or_else(
                    || ApiError::path_not_found().into(),
                    |l| Reply::Json(200, l),
                )
            }
            _ => {}
        }
    }
    if let Some((_, _, kind)) = crate::reviews::review_of(path) {
        if r.method != "POST" {
            return ApiError::method_not_allowed().into();
        }
        return match json_body(r)
            .and_then(|body| crate::reviews::create(&state.store, &r.who, kind, body))
        {
            Ok(v) => Reply::Json(201, v),
            Err(e) => e.into(),
        };
    }
    // A resource this Kubernetes version does not serve is 404 on every path, as discovery
    // does not list it ([`crate::kube_version`]).
    match parse_target(path).filter(|t| crate::kube_version::served(&RESOURCES[t.res()], minor)) {
        Some(t) => match verb(state, r, t) {
            Ok(reply) => reply,
            Err(e) => e.into(),
        },
        None => ApiError::path_not_found().into(),
    }
}

/// The create attributes of a server-side apply that would create its object, which the
/// apiserver authorizes as a create too, with the object's name (k8s.io/apiserver
/// `pkg/endpoints/handlers/patch.go` v0.33.0, `createAuthorizerAttributes` +
/// `withAuthorization`): `patch` alone cannot create. `None` for any other request.
pub(crate) fn apply_create_attributes(state: &State, r: &Req) -> Option<crate::rbac::Attributes> {
    if r.method != "PATCH"
        || PatchKind::from_content_type(&r.content_type) != Some(PatchKind::Apply)
    {
        return None;
    }
    let Some(Target::Object {
        res,
        ns,
        name,
        status: false,
    }) = parse_target(&r.path)
    else {
        return None;
    };
    if state.store.get(res, &ns, &name).is_ok() {
        return None;
    }
    let mut a = crate::rbac::Attributes::from_request("PATCH", &r.path, &r.query);
    a.verb = "create".into();
    Some(a)
}

fn list_query(r: &Req) -> ListQuery {
    ListQuery {
        label_selector: r.q("labelSelector").map(str::to_string),
        field_selector: r.q("fieldSelector").map(str::to_string),
        limit: r.q("limit").and_then(|l| l.parse().ok()).unwrap_or(0),
        continue_token: r.q("continue").map(str::to_string),
    }
}

/// The response a read's `Accept` asks for: the objects as they are, metadata only
/// (`crate::partial`) or a Table.
fn transform(r: &Req, res: ResIdx, v: Value) -> Result<Value, ApiError> {
    match (crate::partial::wants(&r.accept), RESOURCES.get(res)) {
        (Some(want), Some(def)) => crate::partial::transform(def, want, v),
        _ => Ok(as_table(r, res, v)),
    }
}

fn as_table(r: &Req, res: ResIdx, v: Value) -> Value {
    if !table::wants_table(&r.accept) {
        return v;
    }
    let Some(def) = RESOURCES.get(res) else {
        return v;
    };
    let include = IncludeObject::parse(r.q("includeObject"));
    if v.get("items").is_some() {
        let items = v["items"].as_array().cloned().unwrap_or_default();
        let rv = v
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let cont = v.pointer("/metadata/continue").and_then(Value::as_str);
        table::table(def, &items, rv, cont, include, true)
    } else {
        let rv = crate::meta::resource_version(&v).to_string();
        table::table(def, &[v], &rv, None, include, true)
    }
}

/// `dryRun` of a mutating request: `Ok(true)` for `All`, an error like the apiserver's
/// options validation for anything else. A DELETE's options come from its body too
/// (k8s.io/apiserver `pkg/endpoints/handlers/delete.go` v0.33.0 decodes the body's
/// DeleteOptions, then the query's parameters over them): client libraries such as kube-rs
/// send `dryRun` only there.
fn dry_run(r: &Req) -> Result<bool, ApiError> {
    let body_values: Vec<String> = if r.method == "DELETE" {
        json_body(r)
            .ok()
            .and_then(|b| b.get("dryRun").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    } else {
        Vec::new()
    };
    let values: Vec<&str> = r
        .query
        .iter()
        .filter(|(k, _)| k == "dryRun")
        .map(|(_, v)| v.as_str())
        .chain(body_values.iter().map(String::as_str))
        .collect();
    if values.is_empty() {
        return Ok(false);
    }
    if values.iter().all(|v| *v == "All") {
        return Ok(true);
    }
    let options = match r.method.as_str() {
        "POST" => "CreateOptions",
        "PUT" => "UpdateOptions",
        "PATCH" => "PatchOptions",
        _ => "DeleteOptions",
    };
    let list = values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(ApiError::new(
        422,
        "Invalid",
        format!(
            "{options}.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{{{list}}}: supported values: \"All\""
        ),
    ))
}

/// `DeleteOptions` from the query and the body.
fn delete_options(r: &Req) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions {
        grace_period_seconds: r.q("gracePeriodSeconds").and_then(|g| g.parse().ok()),
        propagation_policy: r.q("propagationPolicy").map(str::to_string),
        ..DeleteOptions::default()
    };
    if r.q("orphanDependents") == Some("true") {
        opts.propagation_policy = Some("Orphan".into());
    }
    let body = json_body(r)?;
    if body.is_object() {
        opts.merge_body(&body);
    }
    Ok(opts)
}

fn verb(state: &State, r: &Req, t: Target) -> Result<Reply, ApiError> {
    let scratch;
    let store = if r.method != "GET" && dry_run(r)? {
        scratch = state.store.scratch_copy();
        &scratch
    } else {
        &state.store
    };
    match (r.method.as_str(), t) {
        ("GET", Target::Collection { res, ns }) => {
            if r.flag("watch") {
                let q = list_query(r);
                let def = RESOURCES.get(res).ok_or_else(ApiError::path_not_found)?;
                let label = crate::selectors::LabelSelector::parse(
                    q.label_selector.as_deref().unwrap_or(""),
                )
                .map_err(ApiError::bad_request)?;
                let field = crate::selectors::FieldSelector::parse(
                    def,
                    q.field_selector.as_deref().unwrap_or(""),
                )
                .map_err(ApiError::bad_request)?;
                return Ok(Reply::Watch(WatchParams {
                    res,
                    ns,
                    label,
                    field,
                    resource_version: r.q("resourceVersion").map(str::to_string),
                    timeout_seconds: r.q("timeoutSeconds").and_then(|t| t.parse().ok()),
                    allow_bookmarks: r.flag("allowWatchBookmarks"),
                    send_initial_events: r.flag("sendInitialEvents"),
                    table: table::wants_table(&r.accept)
                        .then(|| IncludeObject::parse(r.q("includeObject"))),
                    metadata_only: crate::partial::wants(&r.accept)
                        == Some(crate::partial::Partial::Object),
                }));
            }
            let v = store.list(res, ns.as_deref(), &list_query(r))?;
            Ok(Reply::Json(200, transform(r, res, v)?))
        }
        ("POST", Target::Collection { res, ns: Some(ns) }) => {
            let v = store.create_as(res, &ns, json_body(r)?, &r.who)?;
            Ok(Reply::Json(201, v))
        }
        ("POST", Target::Collection { res, ns: None }) => {
            if RESOURCES.get(res).is_some_and(|d| d.namespaced) {
                return Err(ApiError::method_not_allowed());
            }
            let v = store.create_as(res, "", json_body(r)?, &r.who)?;
            Ok(Reply::Json(201, v))
        }
        ("GET", Target::Object { res, ns, name, .. }) => {
            let v = store.get(res, &ns, &name)?;
            Ok(Reply::Json(200, transform(r, res, v)?))
        }
        (
            "PUT",
            Target::Object {
                res,
                ns,
                name,
                status,
            },
        ) => {
            let v = store.update_as(res, &ns, &name, json_body(r)?, status, &r.who)?;
            Ok(Reply::Json(200, v))
        }
        (
            "PATCH",
            Target::Object {
                res,
                ns,
                name,
                status,
            },
        ) => {
            let kind = PatchKind::from_content_type(&r.content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(&r.content_type))?;
            let params = PatchParams {
                kind,
                body: &r.body,
                status,
                field_manager: r.q("fieldManager"),
            };
            let (v, created) = store.patch_as(res, &ns, &name, &params, &r.who)?;
            Ok(Reply::Json(if created { 201 } else { 200 }, v))
        }
        (
            "DELETE",
            Target::Object {
                res,
                ns,
                name,
                status: false,
            },
        ) => {
            let opts = delete_options(r)?;
            let v = store.delete_as(res, &ns, &name, &opts, &r.who)?;
            Ok(Reply::Json(200, v))
        }
        ("DELETE", Target::Collection { res, ns }) => {
            // deletecollection: served per namespace for namespaced kinds (the all-namespaces
            // path only lists and watches) and not at all for namespaces, whose REST storage
            // has no DeleteCollection (k8s.io/kubernetes
            // pkg/registry/core/namespace/storage/storage.go, v1.33.0).
            let def = RESOURCES.get(res).ok_or_else(ApiError::path_not_found)?;
            if !def.supports_delete_collection() || (def.namespaced && ns.is_none()) {
                return Err(ApiError::method_not_allowed());
            }
            let opts = delete_options(r)?;
            let v = store.delete_collection(res, ns.as_deref(), &list_query(r), &opts, &r.who)?;
            Ok(Reply::Json(200, v))
        }
        (
            "POST",
            Target::Action {
                ns,
                name,
                action: Action::Eviction,
                ..
            },
        ) => {
            let body = json_body(r)?;
            let dry = body
                .pointer("/deleteOptions/dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|v| v == "All"));
            // propagateDryRun: dryRun in the Eviction's deleteOptions counts like the query's.
            let scratch_evict;
            let store = if dry {
                scratch_evict = store.scratch_copy();
                &scratch_evict
            } else {
                store
            };
            Ok(Reply::Json(201, store.evict(&ns, &name, &body, &r.who)?))
        }
        (
            "POST",
            Target::Action {
                ns,
                name,
                action: Action::Token,
                ..
            },
        ) => {
            let body = json_body(r)?;
            Ok(Reply::Json(
                201,
                state.tokens.issue(store, &ns, &name, body)?,
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resource_paths() {
        let pods = resources::find("", "v1", "pods");
        let nss = resources::find("", "v1", "namespaces");
        let vmis = resources::find("kubevirt.io", "v1", "virtualmachineinstances");
        let (Some(pods), Some(nss), Some(vmis)) = (pods, nss, vmis) else {
            panic!("resources missing")
        };
        assert_eq!(
            parse_target("/api/v1/pods"),
            Some(Target::Collection {
                res: pods,
                ns: None
            })
        );
        assert_eq!(
            parse_target("/api/v1/namespaces/a/pods"),
            Some(Target::Collection {
                res: pods,
                ns: Some("a".into())
            })
        );
        assert_eq!(
            parse_target("/api/v1/namespaces/a"),
            Some(Target::Object {
                res: nss,
                ns: String::new(),
                name: "a".into(),
                status: false
            })
        );
        assert_eq!(
            parse_target("/api/v1/namespaces/a/status"),
            Some(Target::Object {
                res: nss,
                ns: String::new(),
                name: "a".into(),
                status: true
            })
        );
        assert_eq!(
            parse_target("/apis/kubevirt.io/v1/namespaces/d/virtualmachineinstances/x"),
            Some(Target::Object {
                res: vmis,
                ns: "d".into(),
                name: "x".into(),
                status: false
            })
        );
        assert_eq!(
            parse_target("/apis/kubevirt.io/v1/namespaces/d/virtualmachineinstances/x/status"),
            None,
            "the VMI CRD has no status subresource"
        );
        assert_eq!(parse_target("/api/v1/pods/x"), None, "pods are namespaced");
        assert_eq!(parse_target("/apis/nope/v1/things"), None);
    }
}
