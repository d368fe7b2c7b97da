//! The review APIs against the simulator's RBAC and tokens: `SelfSubjectReview` names the
//! caller with a pod-bound token's node, `SelfSubjectAccessReview` answers as the authorizer
//! decides the real request, `SelfSubjectRulesReview` lists the rules of a namespace, every
//! authenticated user may ask (system:basic-user), and kubectl's `auth whoami` / `auth can-i`
//! work on them.

use crate::common::{Http, BASE};
use harvester_sim::{Identity, Sim, SimConfig};
use serde_json::{json, Value};

const POLICY: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: agent, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: agent}
rules:
- apiGroups: [kubevirt.io]
  resources: [virtualmachineinstances]
  verbs: [list, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: agent}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: agent}
subjects:
- {kind: ServiceAccount, name: agent, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: lease, namespace: default}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lease, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: lease}
subjects:
- {kind: ServiceAccount, name: agent}
"#;

const AGENT_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: agent-x, namespace: default, uid: 6b1e0a52-0000-4000-8000-000000000001}
spec:
  nodeName: node-up
  serviceAccountName: agent
  containers: [{name: agent, image: vmrecover}]
"#;

async fn sim() -> Sim {
    start(SimConfig::default().plain_http()).await
}

async fn start(cfg: SimConfig) -> Sim {
    let cfg = cfg
        .scenario_text(BASE)
        .scenario_text(AGENT_POD)
        .rbac_text(POLICY);
    match Sim::start(cfg).await {
        Ok(s) => s,
        Err(e) => panic!("simulator did not start: {e:#}"),
    }
}

fn sa_token() -> String {
    Identity::service_account("default", "agent").token()
}

async fn ssar(h: &Http, attrs: Value) -> Value {
    let r = h
        .post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": attrs}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

#[tokio::test]
async fn self_subject_review_names_the_caller_and_a_pod_bound_tokens_node() {
    let sim = sim().await;
    let path = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let r = Http::with_token(&sim, &sa_token()).post(path, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["status"]["userInfo"]["username"],
        "system:serviceaccount:default:agent"
    );
    assert!(r.body["status"]["userInfo"].get("extra").is_none());

    // A token bound to the agent's pod carries its node.
    let tr = Http::new(&sim)
        .post(
            "/api/v1/namespaces/default/serviceaccounts/agent/token",
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "agent-x",
                          "uid": "6b1e0a52-0000-4000-8000-000000000001"}}}),
        )
        .await;
    assert_eq!(tr.status, 201, "{}", tr.text);
    let token = tr.body["status"]["token"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let r = Http::with_token(&sim, &token).post(path, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["status"]["userInfo"]["extra"]["authentication.kubernetes.io/node-name"],
        json!(["node-up"])
    );
    // Nothing is stored and nothing moves: a review is a question.
    let rv = sim.store().current_rv();
    Http::with_token(&sim, &token).post(path, &body).await;
    assert_eq!(sim.store().current_rv(), rv);
}

#[tokio::test]
async fn access_reviews_answer_as_the_authorizer_decides() {
    let sim = sim().await;
    let h = Http::with_token(&sim, &sa_token());
    let yes = ssar(
        &h,
        json!({"verb": "patch", "group": "kubevirt.io", "resource": "virtualmachineinstances", "namespace": "default", "name": "x"}),
    )
    .await;
    assert_eq!(yes["status"]["allowed"], true, "{yes}");
    assert_eq!(yes["kind"], "SelfSubjectAccessReview");
    let no = ssar(
        &h,
        json!({"verb": "delete", "group": "kubevirt.io", "resource": "virtualmachineinstances", "namespace": "default"}),
    )
    .await;
    assert_eq!(no["status"]["allowed"], false, "{no}");
    // A Role grants in its namespace only.
    let here = ssar(&h, json!({"verb": "update", "group": "coordination.k8s.io", "resource": "leases", "namespace": "default"})).await;
    let there = ssar(&h, json!({"verb": "update", "group": "coordination.k8s.io", "resource": "leases", "namespace": "other"})).await;
    assert_eq!(
        (
            here["status"]["allowed"].clone(),
            there["status"]["allowed"].clone()
        ),
        (json!(true), json!(false))
    );
    // The review's answer and the real request agree.
    let real = h
        .delete(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances/x",
            None,
        )
        .await;
    assert_eq!(real.status, 403);
    // Exactly one of resourceAttributes / nonResourceAttributes.
    let r = h
        .post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.body["message"],
        "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: null: exactly one of nonResourceAttributes or resourceAttributes must be specified"
    );
    // Only POST (the ServiceAccount is not even allowed to ask with another verb).
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    assert_eq!(h.get(path).await.status, 403);
    assert_eq!(Http::new(&sim).get(path).await.status, 405);
}

#[tokio::test]
async fn rules_review_lists_what_applies_in_a_namespace() {
    let sim = sim().await;
    let h = Http::with_token(&sim, &sa_token());
    let ask = |ns: &str| json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": ns}});
    let path = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews";
    let r = h.post(path, &ask("default")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let rules = r.body["status"]["resourceRules"].to_string();
    assert!(
        rules.contains("leases") && rules.contains("virtualmachineinstances"),
        "{rules}"
    );
    let r = h.post(path, &ask("other")).await;
    let rules = r.body["status"]["resourceRules"].to_string();
    assert!(
        !rules.contains("leases") && rules.contains("virtualmachineinstances"),
        "{rules}"
    );
    assert_eq!(h.post(path, &ask("")).await.status, 400);
}

#[tokio::test]
async fn the_review_groups_are_discoverable() {
    let sim = sim().await;
    let h = Http::with_token(&sim, &sa_token());
    let apis = h.get("/apis").await.text;
    assert!(apis.contains("authentication.k8s.io") && apis.contains("authorization.k8s.io"));
    let list = h.get("/apis/authorization.k8s.io/v1").await.body;
    let names: Vec<&str> = list["resources"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]
    );
    assert_eq!(h.get("/apis/authentication.k8s.io").await.status, 200);
}

/// kubectl's `auth whoami` (v1 from kubectl 1.28) and `auth can-i` against the simulator.
/// (Multi-threaded: kubectl runs blocking while the simulator serves it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_whoami_and_can_i() {
    // HTTPS: over plain HTTP kubectl sends no bearer token (and would prompt for a password).
    let sim = start(SimConfig::default()).await;
    let kubeconfig = std::env::temp_dir().join(format!("h24-reviews-{}.yaml", std::process::id()));
    if let Err(e) = sim.write_token_kubeconfig(&sa_token(), &kubeconfig) {
        panic!("kubeconfig: {e}");
    }
    let mut ran = 0;
    for bin in [
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.30",
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
    ] {
        if !std::path::Path::new(bin).exists() {
            println!("skipping {bin}: not installed");
            continue;
        }
        ran += 1;
        let run = |args: &[&str]| {
            std::process::Command::new(bin)
                .args(args)
                .stdin(std::process::Stdio::null())
                .env("KUBECONFIG", &kubeconfig)
                .env("HOME", std::env::temp_dir())
                .output()
                .unwrap_or_else(|e| panic!("{bin}: {e}"))
        };
        let o = run(&["auth", "whoami", "-o", "json"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{bin}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out.contains("system:serviceaccount:default:agent"),
            "{bin}: {out}"
        );
        let o = run(&[
            "auth",
            "can-i",
            "patch",
            "virtualmachineinstances.kubevirt.io",
            "-n",
            "default",
        ]);
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "yes", "{bin}");
        let o = run(&["auth", "can-i", "delete", "pods", "-n", "default"]);
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "no", "{bin}");
        assert_eq!(o.status.code(), Some(1), "{bin}: can-i exits 1 on no");
    }
    let _ = std::fs::remove_file(&kubeconfig);
    assert!(ran > 0, "no kubectl ≥ 1.28 installed");
}
