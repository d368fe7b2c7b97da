//! Shared by `admission_policy_e2e`: the power-loss cluster with the agent's pod and, when
//! asked, `deploy/admissionpolicy.yaml` applied with kubectl; node-bound and unbound tokens
//! from `kubectl create token`; the binary run as the agent's pod; raw requests with a token.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

pub use crate::e2e_support::names;
use crate::e2e_support::{host_root, NODE};
use harvester_sim::{shipped_scenario, RequestRecord, SettingsPatch, Sim, SimConfig};
use serde_json::{json, Value};

/// The release namespace of `deploy/`.
pub const SA_NS: &str = "harvester-system";
/// The agent's ServiceAccount as a user.
pub const SA_USER: &str = "system:serviceaccount:harvester-system:vmrecover";
/// The policy's and its binding's name.
pub const POLICY: &str = "vmrecover-node-restriction";
/// A node that is not the agent's.
pub const OTHER_NODE: &str = "harvester-node-2";
/// The agent's pod on [`NODE`].
pub const AGENT_POD: &str = "vmrecover-x7k2p";

/// `deploy/admissionpolicy.yaml`.
pub fn policy_file() -> String {
    format!("{}/deploy/admissionpolicy.yaml", env!("CARGO_MANIFEST_DIR"))
}

/// The real kubectl with the simulator's admin kubeconfig.
pub fn kubectl(sim: &Sim, args: &[&str]) -> std::process::Output {
    harvester_sim::kubectl("kubectl", sim.kubeconfig_path())
        .args(args)
        .output()
        .expect("run kubectl")
}

/// The power-loss cluster (virt-controller dead), the agent's pod on [`NODE`], and the
/// policy applied with `kubectl apply` when `with_policy`.
pub async fn cluster(rbac: bool, with_policy: bool) -> Sim {
    cluster_at(None, None, rbac, with_policy).await
}

/// [`cluster`] as Harvester `release` generates it (`None`: the shipped scenario as written),
/// on Kubernetes `kube_version` when given (`harvester-sim --kube-version`).
pub async fn cluster_at(
    release: Option<&str>,
    kube_version: Option<&str>,
    rbac: bool,
    with_policy: bool,
) -> Sim {
    let mut cfg = SimConfig::default()
        .scenario_file(shipped_scenario("power-loss.yaml"))
        .settings(SettingsPatch {
            virt_controller: Some(false),
            kube_version: kube_version.map(str::to_string),
            ..SettingsPatch::default()
        });
    if let Some(r) = release {
        cfg = cfg.release(r);
    }
    if rbac {
        cfg = cfg.rbac_file(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy"));
    }
    let sim = Sim::start(cfg).await.expect("start harvester-sim");
    if !rbac {
        sim.put(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "vmrecover", "namespace": SA_NS}}))
            .expect("service account");
    }
    sim.put(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": AGENT_POD, "namespace": SA_NS,
                     "labels": {"app.kubernetes.io/name": "vmrecover"}},
        "spec": {"nodeName": NODE, "serviceAccountName": "vmrecover",
                 "containers": [{"name": "vmrecover", "image": "vmrecover"}]},
        "status": {"phase": "Running"},
    }))
    .expect("agent pod");
    if with_policy {
        let out = kubectl(&sim, &["apply", "-f", &policy_file()]);
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(sim
            .get(
                "admissionregistration.k8s.io/v1",
                "ValidatingAdmissionPolicyBinding",
                "",
                POLICY
            )
            .is_some());
    }
    sim
}

/// A token of the agent's ServiceAccount from `kubectl create token`: bound to `pod` (it then
/// carries the pod's node) or to nothing.
pub fn token(sim: &Sim, pod: Option<&str>) -> String {
    let mut args = vec!["create", "token", "vmrecover", "-n", SA_NS];
    if let Some(p) = pod {
        args.extend(["--bound-object-kind", "Pod", "--bound-object-name", p]);
    }
    let out = kubectl(sim, &args);
    assert!(
        out.status.success(),
        "kubectl create token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let who = sim.authenticate_token(&t).expect("the token authenticates");
    assert_eq!(
        who.extra.get("authentication.kubernetes.io/node-name"),
        pod.map(|_| vec![NODE.to_string()]).as_ref(),
        "a pod-bound token names the pod's node, an unbound one none"
    );
    t
}

/// One run of the binary and what the cluster looked like after it.
pub struct Ran {
    pub code: i32,
    pub report: Value,
    pub stderr: String,
    pub requests: Vec<RequestRecord>,
    pub vmis_left: BTreeSet<String>,
    pub vms_left: BTreeSet<String>,
    pub events: usize,
}

impl Ran {
    /// The writes of the ServiceAccount: (method, path, status), each once.
    pub fn writes(&self) -> BTreeSet<(String, String, u16)> {
        self.requests
            .iter()
            .filter(|r| !r.internal && r.user.as_deref() == Some(SA_USER))
            .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
            .map(|r| {
                // The node summary is written once or again depending on how long the agent
                // ran (a change after the run, its heartbeat): compare that it was written,
                // not whether the write created or updated it.
                let status = if r.path.contains("/configmaps/vmrecover-summary-") {
                    0
                } else {
                    r.status
                };
                (r.method.clone(), r.path.clone(), status)
            })
            .collect()
    }

    pub fn refused(&self) -> Vec<String> {
        self.requests
            .iter()
            .filter(|r| r.status == 403 || r.status == 422)
            .map(|r| format!("{} {} {}", r.method, r.path, r.status))
            .collect()
    }
}

/// `vmrecover run --yes` (or the agent, stopped with SIGTERM once it saved its report and
/// watches this node) as the agent's pod-bound token, under deploy/'s RBAC.
pub async fn run_as_agent(sim: &Sim, agent: bool) -> Ran {
    run_as_agent_with(sim, agent, &[]).await
}

/// [`run_as_agent`] with more global flags (e.g. `--also-finalizer NAME`).
pub async fn run_as_agent_with(sim: &Sim, agent: bool, extra: &[&str]) -> Ran {
    let state = tempfile::tempdir().expect("state dir");
    let root = host_root();
    let kubeconfig = state.path().join("kubeconfig");
    sim.write_token_kubeconfig(&token(sim, Some(AGENT_POD)), &kubeconfig)
        .expect("kubeconfig");
    let mut args: Vec<String> = vec!["--kubeconfig".into(), kubeconfig.display().to_string()];
    args.extend(["--node", NODE, "--log-target", "stderr", "--state-dir"].map(String::from));
    args.push(state.path().display().to_string());
    args.push("--host-root".into());
    args.push(root.path().display().to_string());
    args.extend(["--stuck-after", "0s", "--controller-grace", "1s"].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    if agent {
        args.extend(
            [
                "agent",
                "--act-on",
                "always",
                "--boot-window",
                "100000h",
                "--metrics-addr",
                "off",
            ]
            .map(String::from),
        );
    } else {
        args.extend(["run", "--yes", "--output", "json"].map(String::from));
    }
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start vmrecover");
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let report = state.path().join("last-run.json");
    let exited = AtomicBool::new(false);
    let (out, ()) = tokio::join!(
        async {
            let out =
                tokio::time::timeout(crate::e2e_support::RUN_LIMIT, child.wait_with_output()).await;
            exited.store(true, Ordering::SeqCst);
            out
        },
        async {
            // Event-driven: the agent is stopped once it saved its report and watches.
            while agent && !exited.load(Ordering::SeqCst) {
                let watching = sim.requests().iter().any(|r| {
                    r.query.contains("watch=true")
                        && r.query.contains("labelSelector=kubevirt.io%2FnodeName")
                });
                if report.exists() && watching {
                    if let Some(pid) = pid {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    );
    let out = out
        .expect("vmrecover finished in time")
        .expect("run vmrecover");
    let report = if agent {
        std::fs::read_to_string(&report).unwrap_or_default()
    } else {
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    Ran {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_str(&report).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        requests: sim.requests(),
        vmis_left: names(sim, "VirtualMachineInstance"),
        vms_left: names(sim, "VirtualMachine"),
        // The follow's Events (a VM back or not back) come in the background, before or
        // after the test stops the agent: the run's own Events compare.
        events: sim
            .list("events.k8s.io/v1", "Event")
            .iter()
            .filter(|e| e["action"] != "FollowOutcome")
            .count(),
    }
}

/// A kube client authenticating with `token` (keep the directory while it is used).
pub async fn client(sim: &Sim, token: &str) -> (kube::Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    sim.write_token_kubeconfig(token, &path)
        .expect("kubeconfig");
    let kc = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    (kube::Client::try_from(cfg).expect("client"), dir)
}

/// Sends one request; `Ok` with the answer or `Err((code, reason, message))`.
pub async fn send(
    c: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<Value>,
) -> Result<Value, (u16, String, String)> {
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .expect("request");
    match c.request::<Value>(req).await {
        Ok(v) => Ok(v),
        Err(kube::Error::Api(s)) => Err((s.code, s.reason.clone(), s.message.clone())),
        Err(e) => Err((0, String::new(), e.to_string())),
    }
}
