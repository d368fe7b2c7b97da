//! `pods/NAME/eviction` and `serviceaccounts/NAME/token` over HTTP, as the real apiserver
//! answers them (k8s.io/kubernetes `pkg/registry/core/pod/storage/eviction.go` and
//! `pkg/registry/core/serviceaccount/storage/token.go`, v1.33), with JSON and protobuf bodies.

use crate::common::*;
use harvester_sim::{SimConfig, WebhookState};
use serde_json::{json, Value};

const PODS: &str = "/api/v1/namespaces/default/pods";

fn eviction(name: &str) -> Value {
    json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}})
}

#[tokio::test]
async fn eviction_deletes_the_pod_with_its_grace() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    assert_eq!(h.post(PODS, &pod("web", "node-up", None)).await.status, 201);
    assert_eq!(
        h.post(PODS, &pod("stuck", "node-down", None)).await.status,
        201
    );

    let r = h
        .post(&format!("{PODS}/web/eviction"), &eviction("other"))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.body["message"],
        "name in URL does not match name in Eviction object"
    );
    let r = h
        .post(&format!("{PODS}/nope/eviction"), &eviction("nope"))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.body["message"], "pods \"nope\" not found");
    assert_eq!(h.get(&format!("{PODS}/web/eviction")).await.status, 405);

    // Dry run: answered, nothing deleted.
    let mut dry = eviction("web");
    dry["deleteOptions"] = json!({"dryRun": ["All"]});
    assert_eq!(
        h.post(&format!("{PODS}/web/eviction"), &dry).await.status,
        201
    );
    assert_eq!(h.get(&pod_path("default", "web")).await.status, 200);

    let r = h
        .post(&format!("{PODS}/web/eviction"), &eviction("web"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
    );
    assert_eq!(h.get(&pod_path("default", "web")).await.status, 404);

    // On a dead node the pod stays Terminating with the grace the Eviction asks for.
    let mut e = eviction("stuck");
    e["deleteOptions"] = json!({"gracePeriodSeconds": 5});
    assert_eq!(
        h.post(&format!("{PODS}/stuck/eviction"), &e).await.status,
        201
    );
    let p = h.get(&pod_path("default", "stuck")).await;
    assert_eq!(
        p.body["metadata"]["deletionGracePeriodSeconds"], 5,
        "{}",
        p.text
    );
}

#[tokio::test]
async fn evicting_a_launcher_passes_kubevirts_interceptor() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    for name in ["virt-launcher-vm-1-abcde", "web"] {
        assert_eq!(h.post(PODS, &pod(name, "node-up", None)).await.status, 201);
    }
    let _ = sim.set_webhook("virt-api", WebhookState::Down);
    let r = h
        .post(
            &format!("{PODS}/virt-launcher-vm-1-abcde/eviction"),
            &eviction("virt-launcher-vm-1-abcde"),
        )
        .await;
    assert_eq!(r.status, 500, "{}", r.text);
    assert!(r.body["message"].as_str().is_some_and(|m| m
        .contains("\"virt-launcher-eviction-interceptor.kubevirt.io\"")
        && m.contains("/pod-eviction-validate?timeout=10s")));
    // Its match condition keeps other pods out of it.
    assert_eq!(
        h.post(&format!("{PODS}/web/eviction"), &eviction("web"))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn a_protobuf_eviction_and_token_request() {
    use k8s_pb::api::authentication::v1 as authn;
    use k8s_pb::api::policy::v1 as policy;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use prost::Message;

    let sim = sim_with(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: default}\n",
    )
    .await;
    let h = Http::new(&sim);
    let mut p = pod("web", "node-up", None);
    p["spec"]["serviceAccountName"] = json!("sa");
    assert_eq!(h.post(PODS, &p).await.status, 201);

    let e = policy::Eviction {
        metadata: Some(meta::ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        }),
        delete_options: Some(meta::DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        }),
    };
    let t = authn::TokenRequest {
        spec: Some(authn::TokenRequestSpec {
            bound_object_ref: Some(authn::BoundObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                name: Some("web".into()),
                u_id: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let body = harvester_sim::protobuf::encode(
        "authentication.k8s.io/v1",
        "TokenRequest",
        t.encode_to_vec(),
    );
    let r = h
        .send_bytes(
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/sa/token",
            harvester_sim::protobuf::CONTENT_TYPE,
            body,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["kind"], "TokenRequest");
    assert_eq!(r.body["spec"]["expirationSeconds"], 3600);
    let token = r.body["status"]["token"].as_str().unwrap_or("").to_string();
    let who = sim.authenticate_token(&token);
    let extra = who.map(|w| w.extra).unwrap_or_default();
    assert_eq!(
        extra.get("authentication.kubernetes.io/node-name"),
        Some(&vec!["node-up".to_string()])
    );
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["web".to_string()])
    );

    let body = harvester_sim::protobuf::encode("policy/v1", "Eviction", e.encode_to_vec());
    let r = h
        .send_bytes(
            "POST",
            &format!("{PODS}/web/eviction"),
            harvester_sim::protobuf::CONTENT_TYPE,
            body,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(h.get(&pod_path("default", "web")).await.status, 404);
    assert!(
        sim.authenticate_token(&token).is_none(),
        "bound to a pod that is gone"
    );
}

#[tokio::test]
async fn token_requests_are_validated_like_the_apiserver() {
    let sim = sim_with(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: default}\n",
    )
    .await;
    let h = Http::new(&sim);
    let url = "/api/v1/namespaces/default/serviceaccounts/sa/token";
    let r = h
        .post(url, &json!({"spec": {"expirationSeconds": 60}}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.body["message"],
        "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
    );
    let r = h
        .post(
            "/api/v1/namespaces/default/serviceaccounts/nope/token",
            &json!({}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["message"].as_str()),
        (404, Some("serviceaccounts \"nope\" not found"))
    );
    assert_eq!(
        h.post(PODS, &pod("other", "node-up", None)).await.status,
        201
    );
    let r = h
        .post(url, &json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "other"}}}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.body["message"],
        "cannot bind token for serviceaccount \"sa\" to pod running with different serviceaccount name."
    );
    let r = h
        .post(url, &json!({"spec": {"boundObjectRef": {"kind": "ConfigMap", "apiVersion": "v1", "name": "x"}}}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // A token without a binding has no node.
    let r = h
        .post(url, &json!({"spec": {"audiences": ["vault"]}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["spec"]["audiences"], json!(["vault"]));
    let who = sim.authenticate_token(r.body["status"]["token"].as_str().unwrap_or(""));
    assert!(who.is_some_and(|w| w.extra.is_empty()));
}

#[tokio::test]
async fn rbac_accepts_an_issued_token_as_its_service_account() {
    let rbac = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: default}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: pod-reader, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: ServiceAccount, name: sa}]
"#;
    let sim = match harvester_sim::Sim::start(
        SimConfig::default()
            .plain_http()
            .scenario_text(BASE)
            .rbac_text(rbac),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => panic!("{e:#}"),
    };
    let admin = Http::new(&sim);
    let r = admin
        .post(
            "/api/v1/namespaces/default/serviceaccounts/sa/token",
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.body["status"]["token"].as_str().unwrap_or("").to_string();
    let sa = Http::with_token(&sim, &token);
    assert_eq!(sa.get(PODS).await.status, 200);
    let denied = sa.get("/api/v1/namespaces/other/pods").await;
    assert_eq!(denied.status, 403, "{}", denied.text);
    assert!(denied.body["message"]
        .as_str()
        .is_some_and(|m| m.contains("User \"system:serviceaccount:default:sa\" cannot list")));
    let unknown = Http::with_token(&sim, "eyJ.forged.token");
    assert_eq!(unknown.get(PODS).await.status, 401);
}
