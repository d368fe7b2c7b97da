//! RBAC enforcement and `dryRun=All`: authentication by token, the real 403 body, rule
//! matching (subresources, `*/status`, resourceNames with a `metadata.name` field selector,
//! RoleBindings to ClusterRoles scoped to their namespace), live changes through the API, and
//! dry runs that store nothing and notify no watcher.

use crate::common::{pod_path, vmi, vmi_path, Http, BASE};
use harvester_sim::{Identity, Sim, SimConfig};
use serde_json::json;

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
  verbs: [list]
- apiGroups: [""]
  resources: ["*/status"]
  verbs: [patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: agent}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: agent}
subjects:
- {kind: ServiceAccount, name: agent, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: pod-reader}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: pod-reader, namespace: other}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pod-reader}
subjects:
- {kind: ServiceAccount, name: agent, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: one-vmi, namespace: default}
rules:
- apiGroups: [kubevirt.io]
  resources: [virtualmachineinstances]
  verbs: [get, watch, patch]
  resourceNames: [a]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: one-vmi, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: one-vmi}
subjects:
- {kind: ServiceAccount, name: agent}
"#;

const USER: &str = "system:serviceaccount:default:agent";

async fn sim() -> Sim {
    let sim = Sim::start(
        SimConfig::default()
            .plain_http()
            .scenario_text(BASE)
            .rbac_text(POLICY),
    )
    .await
    .unwrap_or_else(|e| panic!("simulator did not start: {e:#}"));
    for (name, ns) in [("a", "default"), ("b", "default")] {
        let mut v = vmi(name, "node-up");
        v["metadata"]["namespace"] = json!(ns);
        sim.put(v).unwrap_or_else(|e| panic!("{e}"));
    }
    for ns in ["default", "other"] {
        sim.put(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": ns}, "spec": {"nodeName": "node-up"}}))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    sim
}

fn agent(sim: &Sim) -> Http {
    Http::with_token(sim, &Identity::service_account("default", "agent").token())
}

#[tokio::test]
async fn denied_requests_get_the_real_forbidden_status() {
    let sim = sim().await;
    let h = agent(&sim);
    let r = h
        .patch(
            &vmi_path("default", "b"),
            "application/merge-patch+json",
            "{}",
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        r.body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("virtualmachineinstances.kubevirt.io \"b\" is forbidden: User \"{USER}\" cannot patch resource \"virtualmachineinstances\" in API group \"kubevirt.io\" in the namespace \"default\""),
            "reason": "Forbidden",
            "details": {"name": "b", "group": "kubevirt.io", "kind": "virtualmachineinstances"},
            "code": 403,
        })
    );
    let r = h.get("/api/v1/pods").await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body["message"],
        format!("pods is forbidden: User \"{USER}\" cannot list resource \"pods\" in API group \"\" at the cluster scope")
    );
    // Subresource names: pods/status via "*/status", not pods.
    let r = h
        .patch(
            &format!("{}/status", pod_path("default", "p")),
            "application/merge-patch+json",
            r#"{"status":{"phase":"Running"}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = h
        .patch(
            &pod_path("default", "p"),
            "application/merge-patch+json",
            "{}",
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(r.body["message"].as_str().is_some_and(|m| m.contains(
        "cannot patch resource \"pods\" in API group \"\" in the namespace \"default\""
    )));
    // The denial is logged.
    assert!(sim
        .requests()
        .iter()
        .any(|r| r.status == 403 && r.actor.as_deref() == Some("rbac: Forbidden")));
}

#[tokio::test]
async fn bindings_and_resource_names_scope_what_is_allowed() {
    let sim = sim().await;
    let h = agent(&sim);
    // ClusterRoleBinding: list everywhere.
    assert_eq!(
        h.get("/apis/kubevirt.io/v1/virtualmachineinstances")
            .await
            .status,
        200
    );
    // RoleBinding to a ClusterRole: only in its namespace.
    assert_eq!(h.get("/api/v1/namespaces/other/pods/p").await.status, 200);
    assert_eq!(h.get("/api/v1/namespaces/default/pods/p").await.status, 403);
    // resourceNames: get a, not b; a watch pinned to a by field selector is allowed.
    assert_eq!(h.get(&vmi_path("default", "a")).await.status, 200);
    assert_eq!(h.get(&vmi_path("default", "b")).await.status, 403);
    let w = h
        .get("/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances?watch=true&fieldSelector=metadata.name%3Db&timeoutSeconds=1")
        .await;
    assert_eq!(w.status, 403);
    assert!(w.body["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("virtualmachineinstances.kubevirt.io \"b\" is forbidden")));
    let w = h
        .get("/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances?watch=true&fieldSelector=metadata.name%3Da&timeoutSeconds=1")
        .await;
    assert_eq!(w.status, 200, "{}", w.text);
    // Discovery is open to every authenticated user.
    for p in [
        "/api",
        "/apis",
        "/version",
        "/apis/kubevirt.io/v1",
        "/openapi/v3",
    ] {
        assert_eq!(h.get(p).await.status, 200, "{p}");
    }
}

#[tokio::test]
async fn authentication_admin_unknown_token_and_live_policy_changes() {
    let sim = sim().await;
    assert!(sim.rbac_enforced());
    // The admin kubeconfig's token and no credentials at all (kubectl over http) are admin.
    let admin = Http::with_token(&sim, &Identity::admin().token());
    assert_eq!(admin.get("/api/v1/pods").await.status, 200);
    assert_eq!(Http::new(&sim).get("/api/v1/pods").await.status, 200);
    let r = Http::with_token(&sim, "forged").get("/api/v1/pods").await;
    assert_eq!(
        (r.status, r.body["reason"].clone()),
        (401, json!("Unauthorized"))
    );

    // Granting through the API takes effect at once, as on a real cluster.
    let h = agent(&sim);
    assert_eq!(h.get("/api/v1/pods").await.status, 403);
    let r = admin
        .post(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "all-pods"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = admin
        .post(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "all-pods"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "all-pods"},
                "subjects": [{"kind": "Group", "name": "system:serviceaccounts:default"}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(h.get("/api/v1/pods").await.status, 200);

    // A deleted ServiceAccount's token no longer authenticates.
    let r = admin
        .delete("/api/v1/namespaces/default/serviceaccounts/agent", None)
        .await;
    assert!(r.status == 200 || r.status == 202, "{}", r.text);
    assert_eq!(h.get("/api/v1/pods").await.status, 401);
}

#[tokio::test]
async fn dry_run_answers_as_if_applied_and_stores_nothing() {
    let sim = crate::common::sim_with("").await;
    let h = Http::new(&sim);
    let before = sim.store().current_rv();
    let r = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances?dryRun=All",
            &vmi("dry", "node-up"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["metadata"]["name"], "dry");
    assert!(sim
        .get("kubevirt.io/v1", "VirtualMachineInstance", "default", "dry")
        .is_none());
    // Validation still happens: a dry-run create of an existing object is a 409.
    sim.put(vmi("real", "node-up"))
        .unwrap_or_else(|e| panic!("{e}"));
    let rv_real = sim.store().current_rv();
    let r = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances?dryRun=All",
            &vmi("real", "node-up"),
        )
        .await;
    assert_eq!(r.status, 409);
    // Patch and delete: answered as applied, the object unchanged.
    let r = h
        .patch(
            &format!("{}?dryRun=All", vmi_path("default", "real")),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"x":"y"}}}"#,
        )
        .await;
    assert_eq!(
        (r.status, r.body["metadata"]["labels"]["x"].clone()),
        (200, json!("y"))
    );
    let r = h
        .delete(&format!("{}?dryRun=All", vmi_path("default", "real")), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let real = sim.get(
        "kubevirt.io/v1",
        "VirtualMachineInstance",
        "default",
        "real",
    );
    assert!(real.is_some_and(|v| v["metadata"]["labels"].get("x").is_none()));
    assert_eq!(
        sim.store().current_rv(),
        rv_real,
        "a dry run moved the resourceVersion"
    );
    assert!(rv_real > before);
    // Only "All" is a dry run.
    let r = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances?dryRun=Some",
            &vmi("x", "node-up"),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["message"],
        "CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{\"Some\"}: supported values: \"All\""
    );
}

/// GET `url` with a bearer token; returns (status, body).
async fn get_with_token(url: &str, token: &str) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = hyper::Request::get(url)
        .header("Authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = client
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

#[tokio::test]
async fn binary_enforces_the_deploy_manifests_for_the_service_account_kubeconfig() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (kc, sakc) = (dir.path().join("admin"), dir.path().join("sa"));
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    /// Stops the simulator even when an assertion fails (it shares our stderr).
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_harvester-sim"))
        .arg("--plain-http")
        .arg("--kubeconfig-out")
        .arg(&kc)
        .arg("--sa-kubeconfig-out")
        .arg(&sakc)
        .arg("--scenario")
        .arg(harvester_sim::shipped_scenario("power-loss.yaml"))
        .arg("--rbac")
        .arg(&deploy)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start harvester-sim: {e}"));
    let out = child.stdout.take();
    let child = KillOnDrop(child);
    let mut line = String::new();
    if let Some(out) = out {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or("")
        .to_string();
    let token = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
            .unwrap_or_default()
    };
    let sa = token(&sakc);
    assert_eq!(
        sa,
        Identity::service_account("harvester-system", "vmrecover").token()
    );
    let base = format!("http://{addr}");
    let (s, _) = get_with_token(
        &format!("{base}/apis/kubevirt.io/v1/virtualmachineinstances"),
        &sa,
    )
    .await;
    assert_eq!(s, 200);
    let (s, body) = get_with_token(
        &format!("{base}/api/v1/namespaces/default/nosuchresources"),
        &sa,
    )
    .await;
    // Authorization comes before routing, as in the apiserver: a path the role does not
    // grant is a 403 even where the resource would be a 404.
    assert_eq!(s, 403, "{body}");
    let (s, body) = get_with_token(
        &format!("{base}/apis/coordination.k8s.io/v1/namespaces/default/leases"),
        &sa,
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(
        body["message"],
        "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:harvester-system:vmrecover\" cannot list resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"default\""
    );
    let (s, _) = get_with_token(
        &format!("{base}/apis/coordination.k8s.io/v1/namespaces/default/leases"),
        &token(&kc),
    )
    .await;
    assert_eq!(s, 200, "the admin kubeconfig is not restricted");
    drop(child);
}

/// A server-side apply that would create the object is authorized as a create as well
/// (k8s.io/apiserver `handlers/patch.go`): `patch` alone updates an existing object only.
#[tokio::test]
async fn an_apply_that_creates_needs_create_too() {
    let sim = sim().await;
    let h = agent(&sim);
    let path = "/api/v1/namespaces/default/configmaps/summary?fieldManager=agent&force=true";
    let body =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"summary"},"data":{"k":"v"}}"#;
    let r = h.patch(path, "application/apply-patch+yaml", body).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.text.contains(r#"cannot create resource \"configmaps\""#),
        "{}",
        r.text
    );
    let admin = Http::new(&sim);
    let r = admin
        .patch(path, "application/apply-patch+yaml", body)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = h
        .patch(
            path,
            "application/apply-patch+yaml",
            &body.replace("\"v\"", "\"w\""),
        )
        .await;
    assert_eq!(r.status, 200, "patch updates what exists: {}", r.text);
}
