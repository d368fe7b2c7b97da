//! vmrecover in a pod, for real: no kubeconfig, the API server from `KUBERNETES_SERVICE_HOST`
//! and `_PORT`, and the ServiceAccount's projected token, CA and namespace at the fixed
//! `/var/run/secrets/kubernetes.io/serviceaccount/` (kube's `Config::infer` falls back to them
//! as client-go's `rest.InClusterConfig` does). The files are put there in a private mount
//! namespace (`unshare -m`, a tmpfs over `/run`, which `/var/run` links to), so the host is
//! untouched; the token is a TokenRequest bound to the agent's pod, as the kubelet mounts it,
//! and the simulator enforces deploy/'s RBAC and admission policy over HTTPS.

use std::process::Stdio;

use crate::e2e_support::{host_root, NODE, RUN};
use harvester_sim::{shipped_scenario, SettingsPatch, Sim, SimConfig};
use serde_json::json;

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_config_with_a_pod_bound_token_over_https() {
    if !is_root() {
        println!("skipping: a private mount namespace needs root (CI runs as root)");
        return;
    }
    // deploy/'s RBAC enforced and its admission policy loaded: the pod's token names the
    // node the policy holds the agent to.
    let cfg = SimConfig::default()
        .scenario_file(shipped_scenario("power-loss.yaml"))
        .scenario_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/admissionpolicy.yaml"
        ))
        .rbac_file(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy"))
        .settings(SettingsPatch {
            virt_controller: Some(false),
            ..SettingsPatch::default()
        });
    let sim = Sim::start(cfg).await.expect("start harvester-sim");
    assert!(sim.url().starts_with("https://"), "{}", sim.url());
    // The agent's pod on this node, as the DaemonSet runs it.
    sim.put(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "vmrecover-x7k2p", "namespace": "harvester-system"},
        "spec": {"nodeName": NODE, "serviceAccountName": "vmrecover",
                 "containers": [{"name": "vmrecover", "image": "vmrecover"}]},
        "status": {"phase": "Running"},
    }))
    .expect("agent pod");
    let token = {
        let admin = kube_admin(&sim).await;
        let req: serde_json::Value = admin
            .request(
                hyper::Request::post(
                    "/api/v1/namespaces/harvester-system/serviceaccounts/vmrecover/token",
                )
                .header("Content-Type", "application/json")
                .body(
                    serde_json::to_vec(&json!({
                        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                        "spec": {"expirationSeconds": 3607, "boundObjectRef":
                            {"apiVersion": "v1", "kind": "Pod", "name": "vmrecover-x7k2p"}},
                    }))
                    .expect("json"),
                )
                .expect("request"),
            )
            .await
            .expect("TokenRequest");
        req["status"]["token"].as_str().expect("token").to_string()
    };
    let who = sim
        .authenticate_token(&token)
        .expect("the token authenticates");
    assert_eq!(
        who.extra.get("authentication.kubernetes.io/node-name"),
        Some(&vec![NODE.to_string()])
    );

    let secrets = tempfile::tempdir().expect("tempdir");
    std::fs::write(secrets.path().join("token"), &token).expect("token");
    std::fs::write(
        secrets.path().join("ca.crt"),
        sim.ca_pem().expect("an HTTPS simulator has a CA"),
    )
    .expect("ca.crt");
    std::fs::write(secrets.path().join("namespace"), "harvester-system").expect("namespace");
    let home = tempfile::tempdir().expect("empty HOME");
    let state = tempfile::tempdir().expect("state");
    let root = host_root();

    let script = format!(
        "mount -t tmpfs vmrecover-test /run && mkdir -p {SA_DIR} && \
         mount --bind \"$SECRETS\" {SA_DIR} && exec \"$@\""
    );
    let out = tokio::time::timeout(
        crate::e2e_support::RUN_LIMIT,
        tokio::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
            .arg(env!("CARGO_BIN_EXE_vmrecover"))
            .args(["--node", NODE, "--log-target", "stderr", "--state-dir"])
            .arg(state.path())
            .arg("--host-root")
            .arg(root.path())
            .args(RUN)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("SECRETS", secrets.path())
            .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", sim.addr().port().to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("vmrecover finished in time")
    .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "recovered what it could, the rest is blocked:\n{stdout}\n{stderr}"
    );
    for (ns, name) in [("default", "vm-web-01"), ("prod", "vm-legacy-01")] {
        assert!(
            sim.get("kubevirt.io/v1", "VirtualMachine", ns, name)
                .is_none(),
            "{ns}/{name} recovered:\n{stderr}"
        );
    }
    let refused: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.status == 403 || r.status == 422)
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}\n{stderr}");
    assert!(sim
        .get(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicy",
            "",
            "vmrecover-node-restriction"
        )
        .is_some());
    // Every request came with the pod's token, as the ServiceAccount.
    let users: std::collections::BTreeSet<Option<String>> = sim
        .requests()
        .into_iter()
        .filter(|r| !r.internal && !r.path.starts_with("/_sim") && r.user.is_some())
        .map(|r| r.user)
        .collect();
    assert!(
        users.contains(&Some(
            "system:serviceaccount:harvester-system:vmrecover".to_string()
        )),
        "{users:?}"
    );
    assert!(
        !std::path::Path::new(SA_DIR).join("token").exists()
            || std::fs::read_to_string(std::path::Path::new(SA_DIR).join("token"))
                .map(|t| t != token)
                .unwrap_or(true),
        "the host's {SA_DIR} was not touched"
    );
}

/// A kube client as the admin (the client-certificate kubeconfig).
async fn kube_admin(sim: &Sim) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(sim.kubeconfig_path()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}
