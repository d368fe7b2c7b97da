//! What the real apiserver validates on create, update and patch, for the kinds the simulator
//! serves, with the real 422 `Invalid` (and 400 decode) answers. Every rule names its upstream
//! source; Kubernetes v1.33.0 (k8s.io/apimachinery and k8s.io/apiserver v0.33.0):
//! - metadata of every kind ([`validate_meta`]): `pkg/api/validation/objectmeta.go`
//!   `ValidateObjectMetaAccessor` (name or generateName by the kind's [`NameRule`], label
//!   keys and values, annotation keys and their 256 KiB total, ownerReferences, finalizer
//!   names, `orphan` with `foregroundDeletion`), run as the kind's strategy does it and again
//!   by `pkg/registry/rest/create.go` `BeforeCreate` with `path.ValidatePathSegmentName`;
//!   updates: `ValidateObjectMetaAccessorUpdate` via `pkg/registry/rest/update.go`
//!   `validateCommonFields` (no new finalizers on a deleting object);
//! - per kind: Events ([`events`]), Leases ([`leases`]);
//! - updates without `metadata.resourceVersion` of kinds whose strategy has
//!   `AllowUnconditionalUpdate() == false` ([`unconditional_update`]):
//!   `pkg/registry/generic/registry/store.go` `Update`;
//! - `MicroTime` fields must be RFC 3339 with exactly six fractional digits
//!   ([`check_micro_times`]): `pkg/apis/meta/v1/micro_time.go` `UnmarshalJSON`.
//!
//! Not modelled: the spec/status schemas of pods, nodes, PVCs and the custom resources
//! (OpenAPI schema validation of CRDs), `managedFields`.

pub mod admission_policies;
mod admission_rules;
pub mod events;
pub mod field;
pub mod leases;
pub mod names;

use serde_json::Value;

pub use field::{BadValue, ErrorType, FieldError};
pub use names::NameRule;

use crate::convert;
use crate::errors::ApiError;
use crate::resources::{ResIdx, ResourceDef, RESOURCES};

/// `TotalAnnotationSizeLimitB` (`pkg/api/validation/objectmeta.go`).
pub const TOTAL_ANNOTATION_SIZE_LIMIT_B: usize = 256 * (1 << 10);

/// The name rule of a kind's strategy (`ValidateObjectMeta`'s `nameFn`), from
/// k8s.io/kubernetes `pkg/apis/*/validation` (v1.33.0): namespaces `ValidateNamespaceName`
/// (DNS label); core/v1 Events none beyond the path-segment rule; RBAC `ValidateRBACName`
/// (path segment); pods, nodes, PVs, PVCs, VolumeAttachments, Leases, ServiceAccounts,
/// DaemonSets, events.k8s.io Events and custom resources (`apiextensions-apiserver
/// pkg/registry/customresource/validator.go`) a DNS subdomain.
pub fn name_rule(r: &ResourceDef) -> NameRule {
    match (r.group, r.plural) {
        ("", "namespaces") => NameRule::DnsLabel,
        ("", "events") => NameRule::PathSegment,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::DnsSubdomain,
    }
}

fn str_map(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The metadata checks shared by create and update (`ValidateObjectMetaAccessor` after the
/// name): labels, annotations, ownerReferences, finalizers.
fn meta_contents(obj: &Value, errs: &mut Vec<FieldError>) {
    let m = obj.get("metadata");
    for (k, v) in str_map(m.and_then(|m| m.get("labels"))) {
        // pkg/apis/meta/v1/validation/validation.go ValidateLabels (v0.33.0)
        for msg in names::is_qualified_name(&k) {
            errs.push(FieldError::invalid("metadata.labels", &k, &msg));
        }
        for msg in names::is_valid_label_value(&v) {
            errs.push(FieldError::invalid("metadata.labels", &v, &msg));
        }
    }
    let annotations = str_map(m.and_then(|m| m.get("annotations")));
    for (k, _) in &annotations {
        // ValidateAnnotations: QualifiedName, case-insensitive.
        for msg in names::is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid("metadata.annotations", k, &msg));
        }
    }
    let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_B {
        errs.push(FieldError::too_long(
            "metadata.annotations",
            TOTAL_ANNOTATION_SIZE_LIMIT_B,
        ));
    }
    if let Some(refs) = m
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
    {
        // validateOwnerReference
        for r in refs {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let (av, kind, name, uid) = (s("apiVersion"), s("kind"), s("name"), s("uid"));
            let version = av.rsplit('/').next().unwrap_or("");
            if version.is_empty() {
                errs.push(FieldError::invalid(
                    "metadata.ownerReferences.apiVersion",
                    &av,
                    "version must not be empty",
                ));
            }
            if kind.is_empty() {
                errs.push(FieldError::invalid(
                    "metadata.ownerReferences.kind",
                    &kind,
                    "kind must not be empty",
                ));
            }
            if name.is_empty() {
                errs.push(FieldError::invalid(
                    "metadata.ownerReferences.name",
                    &name,
                    "name must not be empty",
                ));
            }
            if uid.is_empty() {
                errs.push(FieldError::invalid(
                    "metadata.ownerReferences.uid",
                    &uid,
                    "uid must not be empty",
                ));
            }
        }
    }
    let fins = str_list(m.and_then(|m| m.get("finalizers")));
    for f in &fins {
        // ValidateFinalizerName
        for msg in names::is_qualified_name(f) {
            errs.push(FieldError::invalid("metadata.finalizers", f, &msg));
        }
    }
    if fins.iter().any(|f| f == "orphan") && fins.iter().any(|f| f == "foregroundDeletion") {
        let list = fins
            .iter()
            .map(|f| field::go_quote(f))
            .collect::<Vec<_>>()
            .join(", ");
        errs.push(FieldError::invalid_raw(
            "metadata.finalizers",
            BadValue::Raw(format!("[]string{{{list}}}")),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

/// `ValidateObjectMetaAccessor(meta, requiresNamespace, nameFn, "metadata")` on create.
pub fn validate_meta(obj: &Value, namespaced: bool, rule: NameRule) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let s = |k: &str| {
        obj.pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (gen, name, ns) = (s("generateName"), s("name"), s("namespace"));
    if !gen.is_empty() {
        for msg in rule.check(&gen, true) {
            errs.push(FieldError::invalid("metadata.generateName", &gen, &msg));
        }
    }
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in rule.check(&name, false) {
            errs.push(FieldError::invalid("metadata.name", &name, &msg));
        }
    }
    if namespaced {
        if ns.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in names::is_dns1123_label(&ns) {
                errs.push(FieldError::invalid("metadata.namespace", &ns, &msg));
            }
        }
    }
    meta_contents(obj, &mut errs);
    errs
}

/// `ValidateObjectMetaAccessorUpdate` as far as it can fail here (the simulator restores
/// the immutable system fields as `BeforeUpdate` does): no new finalizers on a deleting object.
pub fn validate_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if crate::meta::is_deleting(old) {
        let old_f = crate::meta::finalizers(old);
        let mut added: Vec<String> = crate::meta::finalizers(new)
            .into_iter()
            .filter(|f| !old_f.contains(f))
            .collect();
        added.sort();
        added.dedup();
        if !added.is_empty() {
            // ValidateNoNewFinalizers: %#v of a sorted []string.
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    added.iter().map(|f| field::go_quote(f)).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    errs
}

fn invalid_for(res: ResIdx, name: &str, errs: &[FieldError]) -> ApiError {
    // BeforeCreate/BeforeUpdate answer with the internal kind's GroupKind: events.k8s.io
    // Events are core Events inside the apiserver.
    let def = &RESOURCES[convert::storage_of(res).min(RESOURCES.len() - 1)];
    field::invalid(def.group, def.kind, name, errs)
}

/// Validation of a create through the served resource `res` (`obj` in its served form,
/// name generated): the strategy's `Validate`, then `BeforeCreate`'s common pass.
pub fn validate_create(res: ResIdx, obj: &Value, kube_minor: u32) -> Result<(), ApiError> {
    let Some(def) = RESOURCES.get(res) else {
        return Ok(());
    };
    let name = crate::meta::name(obj).to_string();
    let stored = convert::from_view(res, obj);
    let errs = match (def.group, def.plural) {
        ("", "events") => events::validate_create(&stored, false),
        ("events.k8s.io", "events") => events::validate_create(&stored, true),
        ("coordination.k8s.io", "leases") => leases::validate_create(obj),
        ("admissionregistration.k8s.io", "validatingadmissionpolicies") => {
            let mut e = validate_meta(obj, def.namespaced, name_rule(def));
            e.extend(admission_policies::validate_policy(obj, kube_minor));
            e
        }
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings") => {
            let mut e = validate_meta(obj, def.namespaced, name_rule(def));
            e.extend(admission_policies::validate_binding(obj));
            e
        }
        ("batch", "cronjobs") => {
            let mut e = validate_meta(obj, def.namespaced, name_rule(def));
            e.extend(cronjob(obj));
            e
        }
        _ => validate_meta(obj, def.namespaced, name_rule(def)),
    };
    if !errs.is_empty() {
        return Err(invalid_for(res, &name, &errs));
    }
    let common = validate_meta(obj, def.namespaced, NameRule::PathSegment);
    if !common.is_empty() {
        return Err(invalid_for(res, &name, &common));
    }
    Ok(())
}

/// Validation of an update through `res` (both objects in the served form): `BeforeUpdate`'s
/// common fields, then the strategy's `ValidateUpdate`.
pub fn validate_update(
    res: ResIdx,
    new: &Value,
    old: &Value,
    kube_minor: u32,
) -> Result<(), ApiError> {
    let Some(def) = RESOURCES.get(res) else {
        return Ok(());
    };
    let mut errs = Vec::new();
    meta_contents(new, &mut errs);
    errs.extend(validate_meta_update(new, old));
    let (sn, so) = (convert::from_view(res, new), convert::from_view(res, old));
    match (def.group, def.plural) {
        ("", "events") => errs.extend(events::validate_update(&sn, &so, false)),
        ("events.k8s.io", "events") => errs.extend(events::validate_update(&sn, &so, true)),
        ("coordination.k8s.io", "leases") => errs.extend(leases::validate_spec(new)),
        ("admissionregistration.k8s.io", "validatingadmissionpolicies") => {
            errs.extend(admission_policies::validate_policy(new, kube_minor))
        }
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings") => {
            errs.extend(admission_policies::validate_binding(new))
        }
        _ => {}
    }
    if errs.is_empty() {
        return Ok(());
    }
    Err(invalid_for(res, crate::meta::name(new), &errs))
}

/// Whether a kind's update strategy allows an update without `metadata.resourceVersion`
/// (`AllowUnconditionalUpdate`): not for Leases (k8s.io/kubernetes
/// `pkg/registry/coordination/lease/strategy.go`) nor custom resources
/// (apiextensions-apiserver `pkg/registry/customresource/strategy.go`); the other served
/// kinds allow it.
pub fn allows_unconditional_update(r: &ResourceDef) -> bool {
    !(r.custom || (r.group == "coordination.k8s.io" && r.plural == "leases"))
}

/// The 422 for an update without a resourceVersion of a kind that requires one
/// (`store.go` `Update`: the GroupKind is built from the *resource*, so the message names
/// `leases.coordination.k8s.io`).
pub fn unconditional_update(r: &ResourceDef, name: &str) -> ApiError {
    field::invalid(
        r.group,
        r.plural,
        name,
        &[FieldError::invalid_raw(
            "metadata.resourceVersion",
            BadValue::Raw("0x0".into()),
            "must be specified for an update",
        )],
    )
}

/// `metav1.RFC3339Micro` ("2006-01-02T15:04:05.000000Z07:00"), as `MicroTime.UnmarshalJSON`
/// parses it: `None` when valid, else the tail Go's `time.Parse` could not read and the
/// layout element it expected.
fn micro_time_error(s: &str) -> Option<(String, &'static str)> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|x| x.len() == r.len() && x.iter().all(u8::is_ascii_digit))
    };
    let date_ok = digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && b.get(10) == Some(&b'T')
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19);
    if !date_ok {
        return Some((s.to_string(), "2006-01-02T15:04:05.000000Z07:00"));
    }
    let rest = &s[19..];
    if !(rest.starts_with('.') || rest.starts_with(',')) || !digits(20..26) {
        return Some((rest.to_string(), ".000000"));
    }
    let zone = &s[26..];
    let zb = zone.as_bytes();
    let zone_ok = zone == "Z"
        || (zb.len() == 6
            && (zb[0] == b'+' || zb[0] == b'-')
            && zb[1..3].iter().all(u8::is_ascii_digit)
            && zb[3] == b':'
            && zb[4..6].iter().all(u8::is_ascii_digit));
    if !zone_ok {
        return Some((zone.to_string(), "Z07:00"));
    }
    if s.parse::<jiff::Timestamp>().is_err() {
        return Some((s.to_string(), "2006-01-02T15:04:05.000000Z07:00"));
    }
    None
}

/// The `MicroTime` fields of a kind (served form), as JSON pointers.
fn micro_time_fields(r: &ResourceDef) -> &'static [&'static str] {
    match (r.group, r.plural) {
        ("", "events") | ("events.k8s.io", "events") => &["/eventTime", "/series/lastObservedTime"],
        ("coordination.k8s.io", "leases") => &["/spec/acquireTime", "/spec/renewTime"],
        _ => &[],
    }
}

/// The 400 the apiserver answers when a body's `MicroTime` does not decode
/// (`pkg/endpoints/handlers/rest.go` `transformDecodeError`: "`<Kind>` in version \"v1\"
/// cannot be handled as a `<Kind>`: parsing time ...").
pub fn check_micro_times(r: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    for p in micro_time_fields(r) {
        let Some(v) = obj.pointer(p) else { continue };
        let err = match v {
            Value::Null => None,
            Value::String(s) => micro_time_error(s).map(|(tail, want)| {
                format!(
                    "parsing time {} as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse {} as {}",
                    field::go_quote(s),
                    field::go_quote(&tail),
                    field::go_quote(want)
                )
            }),
            other => Some(format!(
                "json: cannot unmarshal {} into Go value of type string",
                match other {
                    Value::Number(_) => "number",
                    Value::Bool(_) => "bool",
                    Value::Array(_) => "array",
                    _ => "object",
                }
            )),
        };
        if let Some(e) = err {
            return Err(ApiError::bad_request(format!(
                "{kind} in version {v:?} cannot be handled as a {kind}: {e}",
                kind = r.kind,
                v = r.version
            )));
        }
    }
    Ok(())
}

/// What k8s.io/kubernetes `pkg/apis/batch/validation/validation.go` (v1.33.0) `ValidateCronJobCreate`
/// refuses that the simulator checks: a name longer than 52 characters (the controller appends
/// an 11-character suffix to each Job's name), and a missing schedule or job template.
fn cronjob(obj: &Value) -> Vec<FieldError> {
    let mut e = Vec::new();
    let name = crate::meta::name(obj);
    if name.len() > 52 {
        e.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
    if obj
        .pointer("/spec/schedule")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        e.push(FieldError::required("spec.schedule", ""));
    }
    if obj
        .pointer("/spec/jobTemplate/spec/template/spec/containers")
        .is_none()
    {
        e.push(FieldError::required(
            "spec.jobTemplate.spec.template.spec.containers",
            "",
        ));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_time_needs_six_digits() {
        assert!(micro_time_error("2025-01-02T03:04:05.123456Z").is_none());
        assert!(micro_time_error("2025-01-02T03:04:05.123456+02:00").is_none());
        assert_eq!(
            micro_time_error("2025-01-02T03:04:05Z"),
            Some(("Z".into(), ".000000"))
        );
        assert!(micro_time_error("2025-01-02T03:04:05.123Z").is_some());
        assert!(micro_time_error("2025-01-02T03:04:05.1234567Z").is_some());
        assert!(micro_time_error("yesterday").is_some());
        assert!(micro_time_error("2025-13-02T03:04:05.123456Z").is_some());
    }

    #[test]
    fn a_cronjob_name_leaves_room_for_the_jobs_suffix() {
        let job = |name: &str| {
            serde_json::json!({"metadata": {"name": name, "namespace": "ns"},
                "spec": {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"template": {"spec": {
                    "containers": [{"name": "c", "image": "i"}]}}}}}})
        };
        assert!(cronjob(&job("vmrecover-fence")).is_empty());
        assert!(cronjob(&job(&"a".repeat(52))).is_empty());
        let e = cronjob(&job(&"a".repeat(53)));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "metadata.name");
        assert_eq!(
            cronjob(&serde_json::json!({"metadata": {"name": "x"}})).len(),
            2
        );
    }
}
