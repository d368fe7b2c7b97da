//! The binary at a release's real Kubernetes version: `--release 1.4.0` serves Kubernetes
//! 1.29.9 (`/version`) without the ValidatingAdmissionPolicy API (absent from discovery, its
//! paths 404), and `--kube-version` overrides it, with everything gated following.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use harvester_sim::shipped_scenario;

/// A running `harvester-sim` (killed with SIGTERM on drop) and its address.
struct Running {
    child: Child,
    addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_harvester-sim"))
        .args(["--plain-http", "--kubeconfig-out"])
        .arg(dir.path().join("kubeconfig"))
        .arg("--scenario")
        .arg(shipped_scenario("power-loss.yaml"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start harvester-sim");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let _ = BufReader::new(out).read_line(&mut line);
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or("")
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "first line was {line:?}");
    Running { child, addr }
}

async fn get(addr: &str, path: &str) -> (u16, String) {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().expect("uri");
    let resp = client.get(uri).await.expect("GET");
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

const POLICIES: &str = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies";

#[tokio::test]
async fn release_1_4_0_serves_kubernetes_1_29_without_the_policy_api() {
    let sim = start(&["--release", "1.4.0"]);
    let (_, version) = get(&sim.addr, "/version").await;
    assert!(
        version.contains("\"gitVersion\":\"v1.29.9+rke2r1\"")
            && version.contains("\"minor\":\"29\""),
        "{version}"
    );
    let (_, apis) = get(&sim.addr, "/apis").await;
    assert!(!apis.contains("admissionregistration.k8s.io"), "{apis}");
    assert_eq!(get(&sim.addr, POLICIES).await.0, 404);
    drop(sim);

    // --kube-version wins over the release: 1.30 serves the policy API.
    let sim = start(&["--release", "1.4.0", "--kube-version", "v1.30.7+rke2r1"]);
    let (_, version) = get(&sim.addr, "/version").await;
    assert!(
        version.contains("\"gitVersion\":\"v1.30.7+rke2r1\""),
        "{version}"
    );
    let (_, apis) = get(&sim.addr, "/apis").await;
    assert!(apis.contains("admissionregistration.k8s.io"), "{apis}");
    let (status, list) = get(&sim.addr, POLICIES).await;
    assert_eq!(status, 200, "{list}");
}
