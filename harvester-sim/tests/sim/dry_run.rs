//! Server-side dry-run as `vmrecover check` sends it: a DELETE whose `dryRun` is in the
//! body's DeleteOptions (as kube-rs sends it) is a dry run like `?dryRun=All` (k8s.io/apiserver
//! `pkg/endpoints/handlers/delete.go`, v0.33.0): answered as if deleted, nothing removed, no
//! resourceVersion consumed; an unknown value there is the options' 422.

use crate::common::{pod, pod_path, Http};
use serde_json::json;

#[tokio::test]
async fn a_delete_with_dry_run_in_its_body_deletes_nothing() {
    let sim = crate::common::sim_with("").await;
    sim.put(pod("web", "node-up", None))
        .unwrap_or_else(|e| panic!("{e}"));
    let rv = sim.store().current_rv();
    let h = Http::new(&sim);
    let opts = json!({"apiVersion": "v1", "kind": "DeleteOptions", "dryRun": ["All"], "gracePeriodSeconds": 0});
    let r = h.delete(&pod_path("default", "web"), Some(&opts)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        sim.get("v1", "Pod", "default", "web").is_some(),
        "the dry run deleted the pod"
    );
    assert_eq!(
        sim.store().current_rv(),
        rv,
        "a dry run moved the resourceVersion"
    );

    let bad = json!({"apiVersion": "v1", "kind": "DeleteOptions", "dryRun": ["Some"]});
    let r = h.delete(&pod_path("default", "web"), Some(&bad)).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.body["message"],
        "DeleteOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{\"Some\"}: supported values: \"All\""
    );
    assert!(sim.get("v1", "Pod", "default", "web").is_some());

    // Without it the same request deletes.
    let r = h
        .delete(
            &pod_path("default", "web"),
            Some(&json!({"gracePeriodSeconds": 0})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(sim.get("v1", "Pod", "default", "web").is_none());
}

/// A ValidatingAdmissionPolicy sees `request.dryRun` as the real apiserver builds it
/// (k8s.io/apiserver `pkg/admission/plugin/cel/filter.go` `CreateAdmissionRequest`, v0.29.0 …
/// v0.33.0: always set, `true` for a dry run): a policy that refuses dry runs refuses the
/// rehearsal and lets the same write through for real.
#[tokio::test]
async fn an_admission_policy_sees_request_dry_run() {
    let sim = crate::common::sim_with("").await;
    sim.put(pod("web", "node-up", None))
        .unwrap_or_else(|e| panic!("{e}"));
    let h = Http::new(&sim);
    let policies = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies";
    let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy", "metadata": {"name": "no-rehearsals"},
        "spec": {"failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["UPDATE"], "resources": ["pods"]}]},
            "validations": [{"expression": "request.dryRun == false",
                "message": "no dry runs here"}]}});
    let r = h.post(policies, &policy).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let binding = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "no-rehearsals"},
        "spec": {"policyName": "no-rehearsals", "validationActions": ["Deny"]}});
    let r = h
        .post(
            "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
            &binding,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let label = r#"{"metadata":{"labels":{"touched":"yes"}}}"#;
    let ct = "application/merge-patch+json";
    let path = pod_path("default", "web");
    let r = h.patch(&format!("{path}?dryRun=All"), ct, label).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.body["message"],
        "pods \"web\" is forbidden: ValidatingAdmissionPolicy 'no-rehearsals' with binding 'no-rehearsals' denied request: no dry runs here"
    );
    let r = h.patch(&path, ct, label).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["metadata"]["labels"]["touched"], "yes");
}
