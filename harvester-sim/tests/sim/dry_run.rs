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
