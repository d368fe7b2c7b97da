//! Delete semantics that follow the real apiserver (Kubernetes v1.33.0, k8s.io/apiserver
//! v0.33.0): negative grace periods, precondition wording, deletecollection.

use crate::common::*;
use serde_json::json;

// k8s.io/apiserver pkg/registry/rest/delete.go BeforeDelete: "Negative values will be treated
// as the value `1s` on the delete path" — a graceful delete, not an immediate one.
#[tokio::test]
async fn a_negative_grace_period_is_one_second() {
    let sim = sim_with("").await;
    sim.put(pod("p", "node-down", None)).ok();
    let h = Http::new(&sim);
    let r = h
        .delete(
            &format!("{}?gracePeriodSeconds=-5", pod_path("default", "p")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let still = h.get(&pod_path("default", "p")).await;
    assert_eq!(still.status, 200, "a down node's pod stays Terminating");
    assert_eq!(still.body["metadata"]["deletionGracePeriodSeconds"], 1);
    // Shortening to 0 then removes it (the grace can only shrink).
    h.delete(
        &format!("{}?gracePeriodSeconds=0", pod_path("default", "p")),
        None,
    )
    .await;
    assert_eq!(h.get(&pod_path("default", "p")).await.status, 404);
}

// BeforeDelete checks preconditions first and answers NewConflict on the kind; namespaces
// keep their own "Precondition failed" wording (pkg/registry/core/namespace/storage/storage.go).
#[tokio::test]
async fn precondition_conflicts_name_the_kind() {
    let sim = sim_with("").await;
    sim.put(pod("p", "node-up", None)).ok();
    let h = Http::new(&sim);
    let uid = h.get(&pod_path("default", "p")).await.body["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let r = h
        .delete(
            &pod_path("default", "p"),
            Some(&json!({"preconditions": {"uid": "x"}})),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.body["message"],
        format!("Operation cannot be fulfilled on Pod \"p\": the UID in the precondition (x) does not match the UID in record ({uid}). The object might have been deleted and then recreated")
    );
    assert_eq!(r.body["details"]["kind"], "Pod");
    let r = h
        .delete(
            &pod_path("default", "p"),
            Some(&json!({"preconditions": {"resourceVersion": "1"}})),
        )
        .await;
    assert!(r.text.contains("the ResourceVersion in the precondition (1) does not match the ResourceVersion in record"), "{}", r.text);
    let ns_uid = h.get("/api/v1/namespaces/other").await.body["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let r = h
        .delete(
            "/api/v1/namespaces/other",
            Some(&json!({"preconditions": {"uid": "x"}})),
        )
        .await;
    assert_eq!(
        r.body["message"],
        format!("Operation cannot be fulfilled on namespaces \"other\": Precondition failed: UID in precondition: x, UID in object meta: {ns_uid}")
    );
}

// k8s.io/apiserver pkg/registry/generic/registry/store.go DeleteCollection: list with the
// selectors, delete each as a single delete would, answer the list as it was.
#[tokio::test]
async fn deletecollection_with_selectors() {
    let sim = sim_with("").await;
    for (name, app) in [("a", "web"), ("b", "web"), ("c", "db")] {
        let mut p = pod(name, "node-up", None);
        p["metadata"]["labels"] = json!({"app": app});
        sim.put(p).ok();
    }
    let mut held = pod("d", "node-down", None);
    held["metadata"]["labels"] = json!({"app": "web"});
    sim.put(held).ok();
    let h = Http::new(&sim);
    let r = h
        .delete(
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["kind"], "PodList");
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(h.get(&pod_path("default", "a")).await.status, 404);
    assert_eq!(
        h.get(&pod_path("default", "c")).await.status,
        200,
        "not selected"
    );
    let d = h.get(&pod_path("default", "d")).await;
    assert!(
        d.body["metadata"]["deletionTimestamp"].is_string(),
        "graceful, like one delete"
    );
    // A field selector works too.
    let r = h
        .delete(
            "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dc",
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.get(&pod_path("default", "c")).await.status, 404);
    // Not across namespaces, and never for namespaces.
    assert_eq!(h.delete("/api/v1/pods", None).await.status, 405);
    assert_eq!(h.delete("/api/v1/namespaces", None).await.status, 405);
    let disc = h.get("/api/v1").await;
    let ns_verbs = disc.body["resources"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "namespaces"))
        .map(|r| r["verbs"].clone())
        .unwrap_or_default();
    assert!(
        !ns_verbs.to_string().contains("deletecollection"),
        "{ns_verbs}"
    );
}

// Custom resources with finalizers stay, deleting, as with a single delete.
#[tokio::test]
async fn deletecollection_keeps_finalized_objects() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let mut v = vmi("v", "node-up");
    v["metadata"]["finalizers"] = json!(["kubevirt.io/virtualMachineControllerFinalize"]);
    let c = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances",
            &v,
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.text);
    let r = h
        .delete(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let still = h.get(&vmi_path("default", "v")).await;
    assert!(
        still.body["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        still.text
    );
}

// The update that removes a deleting object's last finalizer deletes it, and the answer is
// the updated object itself (200, deletionTimestamp set, no finalizers, the resourceVersion
// it had): k8s.io/apiserver pkg/registry/generic/registry/store.go `Update` →
// `ShouldDeleteDuringUpdate` → `deleteWithoutFinalizers` ("return the object in the request
// instead" of finalizeDelete's Status), v1.29.0 to v1.33.0. vmrecover learns from this answer
// that a VM is gone without reading it again.
#[tokio::test]
async fn the_patch_removing_the_last_finalizer_answers_the_deleted_object() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let mut v = vmi("v", "node-up");
    v["metadata"]["finalizers"] = json!(["kubevirt.io/virtualMachineControllerFinalize"]);
    let c = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances",
            &v,
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.text);
    assert_eq!(h.delete(&vmi_path("default", "v"), None).await.status, 200);
    let deleting = h.get(&vmi_path("default", "v")).await;
    let rv = deleting.body["metadata"]["resourceVersion"].clone();
    let r = h
        .patch(
            &vmi_path("default", "v"),
            "application/json-patch+json",
            r#"[{"op": "replace", "path": "/metadata/finalizers", "value": []}]"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["kind"], "VirtualMachineInstance", "{}", r.text);
    assert!(
        r.body["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        r.text
    );
    assert!(
        r.body["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{}",
        r.text
    );
    assert_eq!(r.body["metadata"]["resourceVersion"], rv, "{}", r.text);
    assert_eq!(h.get(&vmi_path("default", "v")).await.status, 404);
}
