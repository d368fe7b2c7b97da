//! What the simulator refuses, rule by rule, as the real apiserver does (positive and negative
//! case of each), over real HTTP. Each rule names the upstream source it follows; Kubernetes
//! v1.33.0 (k8s.io/apimachinery, k8s.io/apiserver v0.33.0).

use crate::common::*;
use serde_json::{json, Value};

const EV: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const CORE_EV: &str = "/api/v1/namespaces/default/events";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

/// An Event as vmrecover writes it (events.k8s.io/v1).
fn event() -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"generateName": "vm-web-01-", "namespace": "default"},
        "eventTime": "2025-06-01T10:00:00.123456Z",
        "reportingController": "vmrecover", "reportingInstance": "vmrecover-harvester-node-1",
        "action": "ClearFinalizers", "reason": "Recovered", "type": "Normal", "note": "done",
        "regarding": {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "namespace": "default", "name": "vm-web-01", "uid": "u1"},
    })
}

fn with(mut v: Value, pointer: &str, x: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    if let Some(o) = v.pointer_mut(parent).and_then(Value::as_object_mut) {
        if x.is_null() {
            o.remove(key);
        } else {
            o.insert(key.to_string(), x);
        }
    }
    v
}

fn causes(r: &Resp) -> Vec<(String, String)> {
    r.body["details"]["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap_or("").to_string(),
                        c["reason"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assert_invalid(r: &Resp, field: &str, reason: &str) {
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.body["status"], "Failure");
    assert_eq!(r.body["reason"], "Invalid");
    assert_eq!(r.body["code"], 422);
    assert!(
        causes(r).contains(&(field.to_string(), reason.to_string())),
        "no {reason} cause on {field}: {}",
        r.text
    );
}

// pkg/apis/core/validation/events.go ValidateEventCreate → ValidateObjectMeta with
// NameIsDNSSubdomain (k8s.io/kubernetes v1.33.0) and apimachinery pkg/api/validation/generic.go
// maskTrailingDash (v0.33.0): only a trailing '-' may dangle from a generateName.
#[tokio::test]
async fn event_generate_name_may_end_in_a_dash_never_a_dot() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let bad = h
        .post(
            EV,
            &with(event(), "/metadata/generateName", json!("vm-web-01.")),
        )
        .await;
    assert_invalid(&bad, "metadata.generateName", "FieldValueInvalid");
    // The name is generated before validation (registry/store.go Create), so the message
    // names the generated name; the kind is the internal one (core Event).
    let msg = bad.body["message"].as_str().unwrap_or("");
    assert!(msg.starts_with("Event \"vm-web-01."), "{msg}");
    assert!(
        msg.ends_with("is invalid: metadata.generateName: Invalid value: \"vm-web-01.\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
        "{msg}"
    );
    assert_eq!(bad.body["details"]["kind"], "Event");
    assert_eq!(bad.body["details"]["group"], "");
    let good = h.post(EV, &event()).await;
    assert_eq!(good.status, 201, "{}", good.text);
    let name = good.body["metadata"]["name"].as_str().unwrap_or("");
    assert!(
        name.starts_with("vm-web-01-") && name.len() == "vm-web-01-".len() + 5,
        "{name}"
    );
}

// k8s.io/apiserver pkg/storage/names/generate.go (v0.33.0): the prefix is cut to 58 bytes
// (MaxGeneratedNameLength) before 5 random characters.
#[tokio::test]
async fn generated_names_cut_the_prefix_to_58() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let long = format!("{}-", "a".repeat(99));
    let r = h
        .post(EV, &with(event(), "/metadata/generateName", json!(long)))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let name = r.body["metadata"]["name"].as_str().unwrap_or("");
    assert_eq!(name.len(), 63);
    assert!(name.starts_with(&"a".repeat(58)));
}

// pkg/apis/core/validation/events.go (v1.33.0): eventTime required (strict, events.k8s.io);
// with eventTime set, legacyValidateEvent requires reportingController (a qualified name),
// reportingInstance, action and reason, and limits them to 128 bytes.
#[tokio::test]
async fn event_required_fields_and_limits() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let r = h.post(EV, &with(event(), "/eventTime", Value::Null)).await;
    assert_invalid(&r, "eventTime", "FieldValueRequired");
    for (field, path) in [
        ("reportingController", "/reportingController"),
        ("reportingInstance", "/reportingInstance"),
        ("action", "/action"),
        ("reason", "/reason"),
    ] {
        let r = h.post(EV, &with(event(), path, Value::Null)).await;
        assert_invalid(&r, field, "FieldValueRequired");
    }
    for (field, path) in [
        ("reportingInstance", "/reportingInstance"),
        ("action", "/action"),
        ("reason", "/reason"),
    ] {
        let r = h
            .post(EV, &with(event(), path, json!("x".repeat(129))))
            .await;
        assert_invalid(&r, field, "FieldValueInvalid");
        assert!(
            r.body["message"].as_str().unwrap_or("").ends_with(&format!(
                "{field}: Invalid value: \"\": can have at most 128 characters"
            )),
            "{}",
            r.text
        );
        let ok = h
            .post(EV, &with(event(), path, json!("x".repeat(128))))
            .await;
        assert_eq!(ok.status, 201, "{field} of 128: {}", ok.text);
    }
    let r = h
        .post(
            EV,
            &with(event(), "/reportingController", json!("not a name")),
        )
        .await;
    assert_invalid(&r, "reportingController", "FieldValueInvalid");
    let r = h.post(EV, &with(event(), "/type", json!("Info"))).await;
    assert_invalid(&r, "type", "FieldValueInvalid");
    assert!(r.text.contains("has invalid value: Info"), "{}", r.text);
    let ok = h.post(EV, &with(event(), "/type", json!("Warning"))).await;
    assert_eq!(ok.status, 201, "{}", ok.text);
}

// pkg/apis/core/validation/events.go NoteLengthLimit (v1.33.0): `len(event.Message) > 1024`,
// a length in bytes; the field is the core name `message` whichever API was used.
#[tokio::test]
async fn event_note_is_limited_to_1024_bytes() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let r = h
        .post(EV, &with(event(), "/note", json!("é".repeat(513))))
        .await;
    assert_invalid(&r, "message", "FieldValueInvalid");
    let ok = h
        .post(EV, &with(event(), "/note", json!("é".repeat(512))))
        .await;
    assert_eq!(ok.status, 201, "1024 bytes: {}", ok.text);
}

// pkg/apis/core/validation/events.go legacyValidateEvent (v1.33.0): without eventTime the
// involved object's namespace must be the Event's; with eventTime set it may differ, and may
// be empty only for Events in default or kube-system.
#[tokio::test]
async fn event_regarding_namespace_rules() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let other = "/apis/events.k8s.io/v1/namespaces/other/events";
    let no_ns = || with(event(), "/metadata/namespace", Value::Null);
    let cluster_scoped = with(no_ns(), "/regarding/namespace", Value::Null);
    let r = h.post(other, &cluster_scoped).await;
    assert_invalid(&r, "involvedObject.namespace", "FieldValueInvalid");
    assert!(
        r.text.contains("does not match event.namespace"),
        "{}",
        r.text
    );
    assert_eq!(h.post(EV, &cluster_scoped).await.status, 201, "default may");
    let elsewhere = h.post(other, &no_ns()).await;
    assert_eq!(
        elsewhere.status, 201,
        "with eventTime the namespaces may differ: {}",
        elsewhere.text
    );
    let core = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "legacy.1"},
        "involvedObject": {"kind": "Pod", "namespace": "other", "name": "p"},
        "reason": "Started", "message": "m", "type": "Normal"});
    let r = h.post(CORE_EV, &core).await;
    assert_invalid(&r, "involvedObject.namespace", "FieldValueInvalid");
    let ok = h
        .post(
            CORE_EV,
            &with(core, "/involvedObject/namespace", json!("default")),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
}

// pkg/apis/core/validation/events.go (v1.33.0): core/v1 creates skip the strict rules (a
// dotted name, no eventTime), but k8s.io/apiserver pkg/registry/rest/create.go BeforeCreate
// still checks the name as a path segment (pkg/api/validation/path/name.go).
#[tokio::test]
async fn core_events_keep_legacy_rules_only() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let core = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "vm-web-01.17c8e2a1b4f5."},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p"},
        "reason": "Started", "type": "Whatever"});
    let ok = h.post(CORE_EV, &core).await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    let bad = h
        .post(CORE_EV, &with(core, "/metadata/name", json!("a%b")))
        .await;
    assert_invalid(&bad, "metadata.name", "FieldValueInvalid");
    assert!(bad.text.contains("may not contain '%'"), "{}", bad.text);
}

// k8s.io/kubernetes pkg/apis/events/v1/conversion.go (v1.33.0): events.k8s.io/v1 Events are
// core Events in another shape; field labels `reportingController` (events.k8s.io) and
// `reportingComponent` (core) select the same Events.
#[tokio::test]
async fn both_event_apis_share_one_storage() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    assert_eq!(h.post(EV, &event()).await.status, 201);
    let core = h
        .get("/api/v1/events?fieldSelector=reportingComponent%3Dvmrecover")
        .await;
    let items = core.body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{}", core.text);
    assert_eq!(items[0]["involvedObject"]["name"], "vm-web-01");
    assert_eq!(items[0]["message"], "done");
    let v1 = h
        .get("/apis/events.k8s.io/v1/events?fieldSelector=reportingController%3Dvmrecover,regarding.name%3Dvm-web-01")
        .await;
    assert_eq!(
        v1.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        v1.text
    );
    assert_eq!(v1.body["items"][0]["note"], "done");
    let none = h
        .get("/apis/events.k8s.io/v1/events?fieldSelector=reportingController%3Dkubelet")
        .await;
    assert_eq!(none.body["items"].as_array().map(Vec::len), Some(0));
}

// k8s.io/apiserver pkg/registry/generic/registry/store.go Update (v0.33.0) with
// pkg/registry/coordination/lease/strategy.go AllowUnconditionalUpdate() == false
// (k8s.io/kubernetes v1.33.0): the GroupKind of this error is built from the resource.
#[tokio::test]
async fn lease_updates_need_a_resource_version() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "vmrecover-n1"},
        "spec": {"holderIdentity": "vmrecover n1 (pid 7)", "leaseDurationSeconds": 15,
            "acquireTime": "2025-06-01T10:00:00.000000Z", "renewTime": "2025-06-01T10:00:00.000000Z"}});
    let created = h.post(LEASES, &lease).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let path = format!("{LEASES}/vmrecover-n1");
    let r = h.put(&path, &lease).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.body["message"],
        "leases.coordination.k8s.io \"vmrecover-n1\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    );
    assert_eq!(r.body["details"]["kind"], "leases");
    let ok = h.put(&path, &created.body).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}

// pkg/apis/coordination/validation/validation.go ValidateLeaseSpec (k8s.io/kubernetes
// v1.33.0): leaseDurationSeconds > 0, leaseTransitions >= 0; holderIdentity is free text.
#[tokio::test]
async fn lease_spec_rules() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": 0}});
    let r = h.post(LEASES, &lease).await;
    assert_invalid(&r, "spec.leaseDurationSeconds", "FieldValueInvalid");
    assert!(
        r.text.contains("Invalid value: 0: must be greater than 0"),
        "{}",
        r.text
    );
    let r = h
        .post(
            LEASES,
            &with(lease.clone(), "/spec", json!({"leaseTransitions": -1})),
        )
        .await;
    assert_invalid(&r, "spec.leaseTransitions", "FieldValueInvalid");
    let ok = h
        .post(
            LEASES,
            &with(
                lease,
                "/spec",
                json!({"leaseDurationSeconds": 1, "holderIdentity": "any text at all"}),
            ),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
}

// k8s.io/apimachinery pkg/apis/meta/v1/micro_time.go UnmarshalJSON (v0.33.0): MicroTime is
// parsed with RFC3339Micro (six fractional digits); a body that does not decode is a 400
// (k8s.io/apiserver pkg/endpoints/handlers/rest.go transformDecodeError).
#[tokio::test]
async fn micro_times_need_six_fractional_digits() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l"}, "spec": {"renewTime": "2025-06-01T10:00:00Z"}});
    let r = h.post(LEASES, &lease).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.body["message"],
        "Lease in version \"v1\" cannot be handled as a Lease: parsing time \"2025-06-01T10:00:00Z\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \"Z\" as \".000000\""
    );
    let r = h
        .post(
            EV,
            &with(event(), "/eventTime", json!("2025-06-01T10:00:00.123Z")),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let ok = h
        .post(
            LEASES,
            &with(
                lease,
                "/spec/renewTime",
                json!("2025-06-01T12:00:00.000001+02:00"),
            ),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
}

// k8s.io/apimachinery pkg/api/validation/objectmeta.go ValidateObjectMetaAccessor and
// pkg/apis/meta/v1/validation/validation.go ValidateLabels (v0.33.0); name rules per kind
// from k8s.io/kubernetes pkg/apis/core/validation/validation.go (v1.33.0): pods DNS
// subdomain, namespaces DNS label.
#[tokio::test]
async fn names_per_kind() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let r = h
        .post(
            "/api/v1/namespaces/default/pods",
            &with(
                pod("Bad_Name", "node-up", None),
                "/metadata/namespace",
                Value::Null,
            ),
        )
        .await;
    assert_invalid(&r, "metadata.name", "FieldValueInvalid");
    let ok = h
        .post(
            "/api/v1/namespaces/default/pods",
            &with(
                pod("a.b-c", "node-up", None),
                "/metadata/namespace",
                Value::Null,
            ),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    let ns = |n: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}});
    let r = h.post("/api/v1/namespaces", &ns("a.b")).await;
    assert_invalid(&r, "metadata.name", "FieldValueInvalid");
    assert!(r.text.contains("must not contain dots"), "{}", r.text);
    assert_eq!(h.post("/api/v1/namespaces", &ns("a-b")).await.status, 201);
    let vmi_no_name =
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {}});
    let r = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances",
            &vmi_no_name,
        )
        .await;
    assert_invalid(&r, "metadata.name", "FieldValueRequired");
}

// pkg/api/validation/objectmeta.go (v0.33.0): label keys are qualified names, values at most
// 63 characters; annotation keys qualified names, all annotations at most 256 KiB
// (TotalAnnotationSizeLimitB); finalizers qualified names, not orphan with foregroundDeletion.
#[tokio::test]
async fn labels_annotations_and_finalizers() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let coll = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
    let base = vmi("meta", "node-up");
    for (pointer, value, field, reason) in [
        (
            "/metadata/labels",
            json!({"bad key!": "v"}),
            "metadata.labels",
            "FieldValueInvalid",
        ),
        (
            "/metadata/labels",
            json!({"k": "v".repeat(64)}),
            "metadata.labels",
            "FieldValueInvalid",
        ),
        (
            "/metadata/annotations",
            json!({"/x": "v"}),
            "metadata.annotations",
            "FieldValueInvalid",
        ),
        (
            "/metadata/annotations",
            json!({"a": "x".repeat(256 * 1024)}),
            "metadata.annotations",
            "FieldValueTooLong",
        ),
        (
            "/metadata/finalizers",
            json!(["bad finalizer"]),
            "metadata.finalizers",
            "FieldValueInvalid",
        ),
        (
            "/metadata/finalizers",
            json!(["orphan", "foregroundDeletion"]),
            "metadata.finalizers",
            "FieldValueInvalid",
        ),
    ] {
        let r = h.post(coll, &with(base.clone(), pointer, value)).await;
        assert_invalid(&r, field, reason);
    }
    let too_long = h
        .post(
            coll,
            &with(
                base.clone(),
                "/metadata/annotations",
                json!({"a": "x".repeat(256 * 1024)}),
            ),
        )
        .await;
    assert!(
        too_long
            .text
            .contains("metadata.annotations: Too long: may not be more than 262144 bytes"),
        "{}",
        too_long.text
    );
    let ok = h
        .post(
            coll,
            &with(
                base,
                "/metadata/annotations",
                json!({"A.example.com/Key": "x".repeat(256 * 1024 - 17)}),
            ),
        )
        .await;
    assert_eq!(
        ok.status, 201,
        "exactly 256 KiB, keys case-insensitive: {}",
        ok.text
    );
    // Patches and updates are validated too.
    let p = h
        .patch(
            &vmi_path("default", "meta"),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"k":"has space"}}}"#,
        )
        .await;
    assert_invalid(&p, "metadata.labels", "FieldValueInvalid");
    // And so are objects stored directly.
    let e = sim
        .put(with(
            vmi("direct", "node-up"),
            "/metadata/finalizers",
            json!(["a/b/c"]),
        ))
        .expect_err("refused");
    assert_eq!(e.code, 422);
}

// apiextensions-apiserver pkg/registry/customresource/strategy.go AllowUnconditionalUpdate()
// == false; core kinds such as pods allow an update without a resourceVersion
// (k8s.io/kubernetes pkg/registry/core/pod/strategy.go, v1.33.0).
#[tokio::test]
async fn custom_resources_need_a_resource_version_on_put() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let c = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances",
            &vmi("u", "node-up"),
        )
        .await;
    assert_eq!(c.status, 201);
    let mut body = c.body.clone();
    if let Some(m) = body["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    let r = h.put(&vmi_path("default", "u"), &body).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("virtualmachineinstances.kubevirt.io \\\"u\\\" is invalid: metadata.resourceVersion: Invalid value: 0x0"), "{}", r.text);
    sim.put(pod("p", "node-up", None)).ok();
    let mut p = h.get(&pod_path("default", "p")).await.body;
    if let Some(m) = p["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    p["metadata"]["labels"] = json!({"a": "b"});
    assert_eq!(h.put(&pod_path("default", "p"), &p).await.status, 200);
}
