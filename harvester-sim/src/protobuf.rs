//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which kubectl ≥ 1.32 sends for the built-in kinds it creates with its typed clients
//! (`create namespace|serviceaccount|role|rolebinding|clusterrole|clusterrolebinding|token`,
//! the Evictions of `drain`). A real apiserver decodes protobuf for every built-in kind, and
//! client-go does not fall back to JSON when a server refuses it (k8s.io/client-go v0.33.0
//! `rest/client.go` falls back only from CBOR, on a 415), so the simulator decodes them too.
//!
//! The wire format (k8s.io/apimachinery `pkg/runtime/serializer/protobuf/protobuf.go`,
//! v0.33.0): the 4-byte prefix `k8s\0`, then a `runtime.Unknown` whose `typeMeta` names the
//! kind and whose `raw` is the object's message from the kind's `generated.proto`. The
//! messages are `k8s-pb`'s (generated from those files); each is turned into the JSON the same
//! object has, field names and omitted empty fields as in the Go types' JSON tags. Kinds
//! decoded: core/v1 Namespace, ServiceAccount and ConfigMap (`create configmap`); rbac/v1 Role, ClusterRole, RoleBinding,
//! ClusterRoleBinding; policy/v1 and v1beta1 Eviction; authentication.k8s.io/v1
//! TokenRequest and SelfSubjectReview; authorization.k8s.io/v1 SelfSubjectAccessReview and
//! SelfSubjectRulesReview; meta/v1 DeleteOptions. Any other kind is a 415 that says so (a gap of the
//! simulator, not an answer a real apiserver gives). Responses stay JSON, which kubectl's
//! `Accept` header allows.

use k8s_pb::api::authentication::v1 as authn;
use k8s_pb::api::authorization::v1 as authz;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::policy::{v1 as policy, v1beta1 as policy_beta};
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{json, Map, Value};

use crate::errors::ApiError;

/// The protobuf media type.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix of every protobuf-encoded object.
const MAGIC: &[u8] = b"k8s\0";

/// Whether a `Content-Type` is the protobuf one (parameters ignored).
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("error decoding protobuf body: {e}"))
}

/// Decodes a protobuf request body into the object's JSON (with `apiVersion` and `kind`).
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body.strip_prefix(MAGIC).ok_or_else(|| {
        // The serializer's wording (protobuf.go `errNotMarked`-style prefix check).
        ApiError::bad_request(format!(
            "provided data does not appear to be a protobuf message, expected prefix {:?}",
            MAGIC
        ))
    })?;
    let unknown = Unknown::decode(rest).map_err(bad)?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let mut obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => namespace(&core::Namespace::decode(raw.as_slice()).map_err(bad)?),
        ("v1", "ServiceAccount") => {
            service_account(&core::ServiceAccount::decode(raw.as_slice()).map_err(bad)?)
        }
        ("v1", "ConfigMap") => config_map(&core::ConfigMap::decode(raw.as_slice()).map_err(bad)?),
        ("rbac.authorization.k8s.io/v1", "Role") => {
            let r = rbac::Role::decode(raw.as_slice()).map_err(bad)?;
            role(r.metadata.as_ref(), &r.rules, None)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            let r = rbac::ClusterRole::decode(raw.as_slice()).map_err(bad)?;
            role(r.metadata.as_ref(), &r.rules, r.aggregation_rule.as_ref())
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            let b = rbac::RoleBinding::decode(raw.as_slice()).map_err(bad)?;
            binding(b.metadata.as_ref(), &b.subjects, b.role_ref.as_ref())
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            let b = rbac::ClusterRoleBinding::decode(raw.as_slice()).map_err(bad)?;
            binding(b.metadata.as_ref(), &b.subjects, b.role_ref.as_ref())
        }
        ("policy/v1", "Eviction") => {
            let e = policy::Eviction::decode(raw.as_slice()).map_err(bad)?;
            eviction(e.metadata.as_ref(), e.delete_options.as_ref())
        }
        ("policy/v1beta1", "Eviction") => {
            let e = policy_beta::Eviction::decode(raw.as_slice()).map_err(bad)?;
            eviction(e.metadata.as_ref(), e.delete_options.as_ref())
        }
        ("authentication.k8s.io/v1", "TokenRequest") => {
            token_request(&authn::TokenRequest::decode(raw.as_slice()).map_err(bad)?)
        }
        ("authentication.k8s.io/v1", "SelfSubjectReview") => {
            let r = authn::SelfSubjectReview::decode(raw.as_slice()).map_err(bad)?;
            json!({"metadata": object_meta(r.metadata.as_ref())})
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            self_subject_access_review(&authz::SelfSubjectAccessReview::decode(raw.as_slice()).map_err(bad)?)
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            let r = authz::SelfSubjectRulesReview::decode(raw.as_slice()).map_err(bad)?;
            let ns = r.spec.and_then(|s| s.namespace);
            json!({"metadata": object_meta(r.metadata.as_ref()),
                   "spec": Obj::default().s("namespace", &ns).done()})
        }
        ("v1" | "meta.k8s.io/v1", "DeleteOptions") => {
            delete_options(&meta::DeleteOptions::decode(raw.as_slice()).map_err(bad)?)
        }
        _ => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "harvester-sim cannot decode {CONTENT_TYPE} bodies of {api_version:?} {kind:?} (it decodes Namespace, ServiceAccount, ConfigMap, the RBAC kinds, Eviction, TokenRequest, the self-reviews and DeleteOptions); send JSON"
                ),
            ))
        }
    };
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!(api_version));
        o.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

/// A JSON object builder that leaves out what Go's `omitempty` leaves out.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn s(mut self, k: &str, v: &Option<String>) -> Self {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            self.0.insert(k.into(), json!(v));
        }
        self
    }
    fn i(mut self, k: &str, v: Option<i64>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.into(), json!(v));
        }
        self
    }
    fn b(mut self, k: &str, v: Option<bool>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.into(), json!(v));
        }
        self
    }
    fn list(mut self, k: &str, v: Vec<Value>) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), Value::Array(v));
        }
        self
    }
    fn strings(self, k: &str, v: &[String]) -> Self {
        self.list(k, v.iter().map(|s| json!(s)).collect())
    }
    fn map(mut self, k: &str, v: &std::collections::BTreeMap<String, String>) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), json!(v));
        }
        self
    }
    fn obj(mut self, k: &str, v: Option<Value>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.into(), v);
        }
        self
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn time(t: &Option<meta::Time>) -> Option<String> {
    let secs = t.as_ref()?.seconds?;
    jiff::Timestamp::from_second(secs)
        .ok()
        .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn object_meta(m: Option<&meta::ObjectMeta>) -> Value {
    let Some(m) = m else {
        return json!({});
    };
    Obj::default()
        .s("name", &m.name)
        .s("generateName", &m.generate_name)
        .s("namespace", &m.namespace)
        .s("uid", &m.uid)
        .s("resourceVersion", &m.resource_version)
        .i("generation", m.generation.filter(|g| *g != 0))
        .s("creationTimestamp", &time(&m.creation_timestamp))
        .s("deletionTimestamp", &time(&m.deletion_timestamp))
        .i(
            "deletionGracePeriodSeconds",
            m.deletion_grace_period_seconds,
        )
        .map("labels", &m.labels)
        .map("annotations", &m.annotations)
        .list(
            "ownerReferences",
            m.owner_references
                .iter()
                .map(|o| {
                    Obj::default()
                        .s("apiVersion", &o.api_version)
                        .s("kind", &o.kind)
                        .s("name", &o.name)
                        .s("uid", &o.uid)
                        .b("controller", o.controller)
                        .b("blockOwnerDeletion", o.block_owner_deletion)
                        .done()
                })
                .collect(),
        )
        .strings("finalizers", &m.finalizers)
        .done()
}

fn namespace(n: &core::Namespace) -> Value {
    let spec = n
        .spec
        .as_ref()
        .map(|s| Obj::default().strings("finalizers", &s.finalizers).done())
        .unwrap_or_else(|| json!({}));
    json!({"metadata": object_meta(n.metadata.as_ref()), "spec": spec})
}

/// A ConfigMap (`kubectl create configmap`): `data` as is, `binaryData` base64 as in JSON.
fn config_map(cm: &core::ConfigMap) -> Value {
    use base64::Engine as _;
    let binary: std::collections::BTreeMap<String, String> = cm
        .binary_data
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                base64::engine::general_purpose::STANDARD.encode(v),
            )
        })
        .collect();
    Obj::default()
        .obj("metadata", Some(object_meta(cm.metadata.as_ref())))
        .map("data", &cm.data)
        .map("binaryData", &binary)
        .b("immutable", cm.immutable)
        .done()
}

fn service_account(sa: &core::ServiceAccount) -> Value {
    Obj::default()
        .obj("metadata", Some(object_meta(sa.metadata.as_ref())))
        .list(
            "secrets",
            sa.secrets
                .iter()
                .map(|r| {
                    Obj::default()
                        .s("kind", &r.kind)
                        .s("namespace", &r.namespace)
                        .s("name", &r.name)
                        .s("uid", &r.uid)
                        .s("apiVersion", &r.api_version)
                        .s("resourceVersion", &r.resource_version)
                        .s("fieldPath", &r.field_path)
                        .done()
                })
                .collect(),
        )
        .list(
            "imagePullSecrets",
            sa.image_pull_secrets
                .iter()
                .map(|r| Obj::default().s("name", &r.name).done())
                .collect(),
        )
        .b(
            "automountServiceAccountToken",
            sa.automount_service_account_token,
        )
        .done()
}

fn label_selector(s: &meta::LabelSelector) -> Value {
    Obj::default()
        .map("matchLabels", &s.match_labels)
        .list(
            "matchExpressions",
            s.match_expressions
                .iter()
                .map(|e| {
                    Obj::default()
                        .s("key", &e.key)
                        .s("operator", &e.operator)
                        .strings("values", &e.values)
                        .done()
                })
                .collect(),
        )
        .done()
}

fn role(
    m: Option<&meta::ObjectMeta>,
    rules: &[rbac::PolicyRule],
    aggregation: Option<&rbac::AggregationRule>,
) -> Value {
    let rules: Vec<Value> = rules
        .iter()
        .map(|r| {
            Obj::default()
                .strings("verbs", &r.verbs)
                .strings("apiGroups", &r.api_groups)
                .strings("resources", &r.resources)
                .strings("resourceNames", &r.resource_names)
                .strings("nonResourceURLs", &r.non_resource_ur_ls)
                .done()
        })
        .collect();
    // `rules` has no omitempty in rbac/v1 types.go.
    let mut o = json!({"metadata": object_meta(m), "rules": rules});
    if let Some(a) = aggregation {
        o["aggregationRule"] = Obj::default()
            .list(
                "clusterRoleSelectors",
                a.cluster_role_selectors
                    .iter()
                    .map(label_selector)
                    .collect(),
            )
            .done();
    }
    o
}

fn binding(
    m: Option<&meta::ObjectMeta>,
    subjects: &[rbac::Subject],
    role_ref: Option<&rbac::RoleRef>,
) -> Value {
    let role_ref = role_ref
        .map(|r| {
            Obj::default()
                .s("apiGroup", &r.api_group)
                .s("kind", &r.kind)
                .s("name", &r.name)
                .done()
        })
        .unwrap_or_else(|| json!({}));
    Obj::default()
        .obj("metadata", Some(object_meta(m)))
        .list(
            "subjects",
            subjects
                .iter()
                .map(|s| {
                    Obj::default()
                        .s("kind", &s.kind)
                        .s("apiGroup", &s.api_group)
                        .s("name", &s.name)
                        .s("namespace", &s.namespace)
                        .done()
                })
                .collect(),
        )
        .obj("roleRef", Some(role_ref))
        .done()
}

fn delete_options(d: &meta::DeleteOptions) -> Value {
    Obj::default()
        .i("gracePeriodSeconds", d.grace_period_seconds)
        .obj(
            "preconditions",
            d.preconditions.as_ref().map(|p| {
                Obj::default()
                    .s("uid", &p.uid)
                    .s("resourceVersion", &p.resource_version)
                    .done()
            }),
        )
        .b("orphanDependents", d.orphan_dependents)
        .s("propagationPolicy", &d.propagation_policy)
        .strings("dryRun", &d.dry_run)
        .done()
}

fn eviction(m: Option<&meta::ObjectMeta>, d: Option<&meta::DeleteOptions>) -> Value {
    Obj::default()
        .obj("metadata", Some(object_meta(m)))
        .obj("deleteOptions", d.map(delete_options))
        .done()
}

fn token_request(t: &authn::TokenRequest) -> Value {
    let spec = t
        .spec
        .as_ref()
        .map(|s| {
            Obj::default()
                .strings("audiences", &s.audiences)
                .i("expirationSeconds", s.expiration_seconds)
                .obj(
                    "boundObjectRef",
                    s.bound_object_ref.as_ref().map(|b| {
                        Obj::default()
                            .s("kind", &b.kind)
                            .s("apiVersion", &b.api_version)
                            .s("name", &b.name)
                            .s("uid", &b.u_id)
                            .done()
                    }),
                )
                .done()
        })
        .unwrap_or_else(|| json!({}));
    json!({"metadata": object_meta(t.metadata.as_ref()), "spec": spec})
}

fn self_subject_access_review(r: &authz::SelfSubjectAccessReview) -> Value {
    let spec = r.spec.as_ref();
    let ra = spec.and_then(|s| s.resource_attributes.as_ref()).map(|a| {
        Obj::default()
            .s("namespace", &a.namespace)
            .s("verb", &a.verb)
            .s("group", &a.group)
            .s("version", &a.version)
            .s("resource", &a.resource)
            .s("subresource", &a.subresource)
            .s("name", &a.name)
            .done()
    });
    let nra = spec
        .and_then(|s| s.non_resource_attributes.as_ref())
        .map(|a| Obj::default().s("path", &a.path).s("verb", &a.verb).done());
    json!({"metadata": object_meta(r.metadata.as_ref()),
           "spec": Obj::default().obj("resourceAttributes", ra).obj("nonResourceAttributes", nra).done()})
}

/// Encodes an object's message the way client-go does (for tests).
pub fn encode(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(u.encode_to_vec());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_binding_round_trips_into_json() {
        let b = rbac::RoleBinding {
            metadata: Some(meta::ObjectMeta {
                name: Some("rb".into()),
                namespace: Some("ns1".into()),
                ..Default::default()
            }),
            subjects: vec![rbac::Subject {
                kind: Some("ServiceAccount".into()),
                name: Some("sa".into()),
                namespace: Some("ns1".into()),
                api_group: Some(String::new()),
            }],
            role_ref: Some(rbac::RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: Some("Role".into()),
                name: Some("r".into()),
            }),
        };
        let body = encode(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            b.encode_to_vec(),
        );
        assert!(is_protobuf(
            "application/vnd.kubernetes.protobuf; charset=x"
        ));
        let v = decode(&body).unwrap_or_default();
        assert_eq!(
            v,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "rb", "namespace": "ns1"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "ns1"}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            })
        );
    }

    #[test]
    fn a_config_map_decodes_into_json() {
        let cm = core::ConfigMap {
            metadata: Some(meta::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns1".into()),
                ..Default::default()
            }),
            data: [("node".to_string(), "n1".to_string())].into(),
            binary_data: [("b".to_string(), b"hi".to_vec())].into(),
            immutable: None,
        };
        let v = decode(&encode("v1", "ConfigMap", cm.encode_to_vec())).unwrap_or_default();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "p", "namespace": "ns1"},
                "data": {"node": "n1"}, "binaryData": {"b": "aGk="}})
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(decode(b"{}").map_err(|e| e.code), Err(400));
        let pod = encode("v1", "Pod", Vec::new());
        assert_eq!(decode(&pod).map_err(|e| e.code), Err(415));
    }
}
