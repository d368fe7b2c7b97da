//! HTTPS as on an RKE2 server (`harvester_sim::tls`): kube-rs and kubectl verify the serving
//! certificate against the kubeconfig's CA (by IP, 127.0.0.1) and authenticate with a client
//! certificate (CN = user, O = groups) or a bearer token; no credentials, or credentials the
//! simulator did not issue, are 401.

use std::path::Path;

use harvester_sim::{Identity, Sim, SimConfig};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

const RBAC: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: default}
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
subjects:
- {kind: ServiceAccount, name: reader}
- {kind: Group, name: devs, apiGroup: rbac.authorization.k8s.io}
"#;

async fn sim() -> Sim {
    match Sim::start(SimConfig::default().rbac_text(RBAC)).await {
        Ok(s) => s,
        Err(e) => panic!("simulator did not start: {e:#}"),
    }
}

async fn client(path: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(path).unwrap_or_else(|e| panic!("{e}"));
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    kube::Client::try_from(cfg).unwrap_or_else(|e| panic!("{e}"))
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test]
async fn kube_rs_over_https_with_certificate_and_token() {
    let sim = sim().await;
    assert!(sim.url().starts_with("https://127.0.0.1:"));
    let text = sim.kubeconfig_yaml();
    for k in [
        "certificate-authority-data:",
        "client-certificate-data:",
        "client-key-data:",
        "current-context: default",
    ] {
        assert!(text.contains(k), "{k} in\n{text}");
    }
    // The admin: a client certificate in system:masters.
    let admin = client(sim.kubeconfig_path()).await;
    let pods: Api<Pod> = Api::all(admin);
    assert!(pods.list(&ListParams::default()).await.is_ok());

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A ServiceAccount: token + CA.
    let sa_kc = dir.path().join("sa");
    let sa = Identity::service_account("default", "reader");
    sim.write_kubeconfig_as(&sa, &sa_kc)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let sa_text = std::fs::read_to_string(&sa_kc).unwrap_or_default();
    assert!(sa_text.contains("token: ") && sa_text.contains("certificate-authority-data:"));
    let c = client(&sa_kc).await;
    assert!(Api::<Pod>::namespaced(c.clone(), "default")
        .list(&ListParams::default())
        .await
        .is_ok());
    let denied = Api::<Pod>::all(c).list(&ListParams::default()).await;
    assert_eq!(
        denied.as_ref().err().and_then(code),
        Some(403),
        "{denied:?}"
    );

    // A user by certificate, allowed through its group (O=devs).
    let jane_kc = dir.path().join("jane");
    let jane = Identity::impersonated("jane", &["devs".to_string()]);
    sim.write_kubeconfig_as(&jane, &jane_kc)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let c = client(&jane_kc).await;
    assert!(Api::<Pod>::namespaced(c, "default")
        .list(&ListParams::default())
        .await
        .is_ok());

    // A token nobody issued, and no credentials at all: 401.
    let forged = dir.path().join("forged");
    sim.write_token_kubeconfig("eyJhbGciOiJSUzI1NiJ9.e30.x", &forged)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let r = Api::<Pod>::namespaced(client(&forged).await, "default")
        .list(&ListParams::default())
        .await;
    assert_eq!(r.as_ref().err().and_then(code), Some(401), "{r:?}");
    let anonymous = dir.path().join("anonymous");
    let text: String = sim
        .kubeconfig_yaml()
        .lines()
        .filter(|l| !l.contains("client-certificate-data") && !l.contains("client-key-data"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("  user:\n", "  user: {}\n");
    std::fs::write(&anonymous, text).unwrap_or_else(|e| panic!("{e}"));
    let r = Api::<Pod>::namespaced(client(&anonymous).await, "default")
        .list(&ListParams::default())
        .await;
    assert_eq!(r.as_ref().err().and_then(code), Some(401), "{r:?}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_cannot_connect() {
    let sim = sim().await;
    let other = match Sim::start(SimConfig::default()).await {
        Ok(s) => s,
        Err(e) => panic!("{e:#}"),
    };
    // The other simulator's kubeconfig (its CA and client certificate) pointed at this one.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let kc = dir.path().join("kc");
    let text = other.kubeconfig_yaml().replace(&other.url(), &sim.url());
    std::fs::write(&kc, text).unwrap_or_else(|e| panic!("{e}"));
    let r = Api::<Pod>::all(client(&kc).await)
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(r, Err(ref e) if code(e).is_none()),
        "a TLS failure, not an answer: {r:?}"
    );
}

// kubectl runs as a blocking child process: the simulator needs a worker of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_over_https_with_a_minted_token() {
    let Some(kubectl) = [
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
        "/usr/bin/kubectl",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists()) else {
        println!("skipping: no kubectl");
        return;
    };
    let sim = sim().await;
    let run = |kc: &Path, args: &[&str]| {
        harvester_sim::kubectl(kubectl, kc)
            .args(args)
            .env("HOME", std::env::temp_dir())
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let out = run(
        sim.kubeconfig_path(),
        &["create", "token", "reader", "-n", "default"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let kc = dir.path().join("kc");
    sim.write_token_kubeconfig(&token, &kc)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let ok = run(&kc, &["get", "pods", "-n", "default"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let denied = run(&kc, &["get", "nodes"]);
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains(
            "User \"system:serviceaccount:default:reader\" cannot list resource \"nodes\""
        ),
        "{err}"
    );
}
