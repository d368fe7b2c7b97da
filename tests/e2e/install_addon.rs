//! The Harvester add-on path, scripted end to end (issue 17 item 2), as the README and
//! docs/install.md tell an operator to do it offline:
//!
//! 1. `addons/repo/` (the packaged chart and its `index.yaml`) is the chart as it is now, and
//!    any static HTTP server can serve it: here Python's `http.server` on a local port;
//! 2. the chart is pulled from that repository as Harvester's helm-install Job pulls it
//!    (index, then the archive) and rendered with `addons/vmrecover.yaml`'s `valuesContent`;
//! 3. the rendering is applied to the simulated Harvester with RBAC enforced: `kubectl apply
//!    --dry-run=server` first (nothing stored), then for real (the ServiceAccount, ClusterRole,
//!    Roles, bindings and DaemonSet are created through the API);
//! 4. the agent runs with the DaemonSet's own arguments and environment, as the ServiceAccount
//!    the apply created, under the RBAC the apply created: no request is denied, the stuck VMs
//!    of the power-loss scenario are recovered, and it stops cleanly on SIGTERM.
//!
//! The kinds harvester-sim does not serve (Service, ServiceMonitor, PrometheusRule, the
//! dashboard ConfigMap, CloudInit) are listed and checked by shape in tests/chart_*.rs.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::chart_support::*;
use harvester_sim::{shipped_scenario, SettingsPatch, Sim, SimConfig};
use serde_json::{json, Value};

const NODE: &str = "harvester-node-1";
const NS: &str = "harvester-system";

/// A child process killed when dropped (the HTTP server).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `python -m http.server` on a free local port serving `dir`; returns it and its URL.
fn serve(py: &Path, dir: &Path) -> (KillOnDrop, String) {
    let mut child = Command::new(py)
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start http.server");
    let stdout = child.stdout.take().unwrap();
    let server = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
    let port: u16 = line
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("http.server said {line:?}"));
    (server, format!("http://127.0.0.1:{port}"))
}

fn kubectl(bin: &Path, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let o = Command::new(bin)
        .arg("--cache-dir")
        .arg(harvester_sim::kubectl_cache_dir(kubeconfig))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl");
    (o.status.success(), text(&o))
}

/// The agent's command line from the DaemonSet as created, for this test machine: the host
/// root, journal and state directory are temp directories, the configuration file is the
/// created ConfigMap's `config.yaml` written to `config`; the rest is the manifest's.
fn agent_args(
    ds: &Value,
    root: &Path,
    state: &Path,
    config: &Path,
    metrics_port: u16,
) -> Vec<String> {
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let mut args: Vec<String> = strs(&c["args"]).into_iter().map(String::from).collect();
    let set = |args: &mut Vec<String>, flag: &str, value: String| {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("the DaemonSet passes no {flag}: {args:?}"));
        args[i + 1] = value;
    };
    set(&mut args, "--host-root", root.display().to_string());
    set(
        &mut args,
        "--journal-dir",
        root.join("var/log/journal").display().to_string(),
    );
    set(&mut args, "--state-dir", state.display().to_string());
    set(&mut args, "--config", config.display().to_string());
    set(
        &mut args,
        "--metrics-addr",
        format!("127.0.0.1:{metrics_port}"),
    );
    // This machine's boot is not the scenario's power cut (no boot records, no journal: the
    // verdict is Unknown, on which actOn: unclean reports only; and it booted long before
    // the window), and its VMs were deleted moments ago: act now, with a short controller
    // grace: flags, which override the file's keys. Everything else is the manifest's.
    for (flag, value) in [
        ("--act-on", "always"),
        ("--boot-window", "100000h"),
        ("--stuck-after", "0s"),
        ("--controller-grace", "1s"),
        ("--log-target", "stderr"),
    ] {
        args.extend([flag.to_string(), value.to_string()]);
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_addon_installs_offline_and_the_agent_runs_under_what_it_created() {
    let Some(py) = helm_python() else { return };
    let Some(kubectl_bin) = tool("kubectl", &["/usr/bin/kubectl"]) else {
        skip::<()>("no kubectl");
        return;
    };

    // 1. The packaged chart is the chart; serve the repository.
    let check = render_py(&py, &["package", "--check"]);
    assert!(check.status.success(), "{}", text(&check));
    let (_server, url) = serve(&py, &repo().join("addons/repo"));

    // The Addon as an operator applies it.
    let addon_text = std::fs::read_to_string(repo().join("addons/vmrecover.yaml")).unwrap();
    let addon = objects(&addon_text).remove(0);
    assert_eq!(addon["apiVersion"], "harvesterhci.io/v1beta1");
    assert_eq!(addon["kind"], "Addon");
    assert_eq!(addon["metadata"]["namespace"], NS);
    assert_eq!(
        addon["metadata"]["labels"]["addon.harvesterhci.io/experimental"],
        "true"
    );
    assert_eq!(addon["spec"]["enabled"], false, "shipped disabled");
    assert_eq!(addon["spec"]["chart"], "vmrecover");
    assert_eq!(addon["spec"]["version"], env!("CARGO_PKG_VERSION"));
    let repo_line = format!("  repo: {}\n", addon["spec"]["repo"].as_str().unwrap());
    assert!(addon_text.contains(&repo_line));
    let dir = tempfile::tempdir().unwrap();
    let local_addon = dir.path().join("addon.yaml");
    std::fs::write(
        &local_addon,
        addon_text.replace(&repo_line, &format!("  repo: {url}\n")),
    )
    .unwrap();

    // 2. Pull from the repository and render with the Addon's valuesContent.
    let out = render_py(
        &py,
        &[
            "pull-template",
            "--repo",
            &url,
            "--addon",
            local_addon.to_str().unwrap(),
            "--name",
            "vmrecover",
            "--namespace",
            NS,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let objs = objects(&String::from_utf8_lossy(&out.stdout));
    let (served, others) = split_for_sim(&objs);
    println!("rendered from {url}: {:#?}", inventory(&objs));
    println!("not applied to harvester-sim (kinds it does not serve): {others:?}");
    assert_eq!(
        others,
        [
            "CloudInit",
            "ConfigMap",
            "PrometheusRule",
            "PrometheusRule",
            "Service",
            "ServiceMonitor"
        ],
        "the Addon's values turn on monitoring and the CloudInit"
    );
    let manifests = dir.path().join("vmrecover.yaml");
    std::fs::write(&manifests, &served).unwrap();

    // 3. Apply to the simulated Harvester with RBAC enforced. The cluster starts with no
    //    vmrecover objects (RBAC needs one policy object to be on: an unrelated account).
    let sim = Sim::start(
        SimConfig::default()
            .scenario_file(shipped_scenario("power-loss.yaml"))
            .settings(SettingsPatch {
                virt_controller: Some(false),
                ..SettingsPatch::default()
            })
            .rbac_text(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: unrelated\n  namespace: kube-system\n",
            ),
    )
    .await
    .expect("start harvester-sim");
    assert!(sim
        .get(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "",
            "vmrecover"
        )
        .is_none());
    let admin = sim.kubeconfig_path().to_path_buf();
    let (bin, kc, f) = (kubectl_bin.clone(), admin.clone(), manifests.clone());
    let (ok, dry) = tokio::task::spawn_blocking(move || {
        kubectl(
            &bin,
            &kc,
            &["apply", "--dry-run=server", "-f", f.to_str().unwrap()],
        )
    })
    .await
    .unwrap();
    assert!(ok, "server dry run:\n{dry}");
    for line in [
        "serviceaccount/vmrecover created (server dry run)",
        "clusterrole.rbac.authorization.k8s.io/vmrecover created (server dry run)",
        "clusterrolebinding.rbac.authorization.k8s.io/vmrecover created (server dry run)",
        "role.rbac.authorization.k8s.io/vmrecover created (server dry run)",
        "role.rbac.authorization.k8s.io/vmrecover-longhorn created (server dry run)",
        "rolebinding.rbac.authorization.k8s.io/vmrecover created (server dry run)",
        "rolebinding.rbac.authorization.k8s.io/vmrecover-longhorn created (server dry run)",
        "daemonset.apps/vmrecover created (server dry run)",
    ] {
        assert!(dry.contains(line), "no {line:?} in\n{dry}");
    }
    assert!(
        sim.list("apps/v1", "DaemonSet").is_empty(),
        "a dry run stored objects"
    );
    assert!(sim.get("v1", "ServiceAccount", NS, "vmrecover").is_none());

    let (bin, kc, f) = (kubectl_bin.clone(), admin.clone(), manifests.clone());
    let (ok, applied) = tokio::task::spawn_blocking(move || {
        kubectl(&bin, &kc, &["apply", "-f", f.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert!(ok, "apply:\n{applied}");
    println!("{applied}");
    assert!(
        applied.contains("daemonset.apps/vmrecover created"),
        "{applied}"
    );
    let ds = sim
        .get("apps/v1", "DaemonSet", NS, "vmrecover")
        .expect("the DaemonSet was created");
    assert!(sim.get("v1", "ServiceAccount", NS, "vmrecover").is_some());
    assert!(sim
        .get(
            "rbac.authorization.k8s.io/v1",
            "Role",
            "longhorn-system",
            "vmrecover-longhorn"
        )
        .is_some());

    // 4. The agent, as the DaemonSet runs it, as the ServiceAccount the apply created.
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "vmrecover");
    let c = &pod["containers"][0];
    let env_field = |name: &str| {
        c["env"]
            .as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == name))
            .map(|v| v["valueFrom"]["fieldRef"]["fieldPath"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(env_field("NODE_NAME"), "spec.nodeName");
    assert_eq!(env_field("VMRECOVER_NAMESPACE"), "metadata.namespace");
    let state = dir.path().join("state");
    let root = dir.path().join("host");
    fake_host_root(&root);
    // Its token is bound to its pod, as the kubelet projects it: the admission policy the
    // chart installed needs the node that token names.
    sim.put(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "vmrecover-x7k2p", "namespace": NS},
        "spec": {"nodeName": NODE, "serviceAccountName": "vmrecover",
                 "containers": [{"name": "vmrecover", "image": c["image"]}]},
        "status": {"phase": "Running"},
    }))
    .expect("the agent's pod");
    let (ok, token) = kubectl(
        &kubectl_bin,
        &admin,
        &[
            "create",
            "token",
            "vmrecover",
            "-n",
            NS,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "vmrecover-x7k2p",
        ],
    );
    assert!(ok, "kubectl create token: {token}");
    let kubeconfig = dir.path().join("sa.kubeconfig");
    sim.write_token_kubeconfig(token.trim(), &kubeconfig)
        .unwrap();
    assert!(sim
        .get(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicyBinding",
            "",
            "vmrecover-node-restriction"
        )
        .is_some());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The configuration file the pod would mount, from the ConfigMap the install created.
    let cm = sim
        .get("v1", "ConfigMap", NS, "vmrecover-config")
        .expect("the install created the ConfigMap vmrecover-config");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, cm["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let args = agent_args(&ds, &root, &state, &config, port);
    println!("vmrecover {}", args.join(" "));
    let mut agent = Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(&args)
        .env("NODE_NAME", NODE)
        .env("VMRECOVER_NAMESPACE", NS)
        .env_remove("VMRECOVER_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let report = state.join("last-run.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    let watching = |sim: &Sim| {
        sim.requests().iter().any(|r| {
            r.path.ends_with("/virtualmachineinstances")
                && r.query.contains("watch=true")
                && r.query.contains("labelSelector=kubevirt.io%2FnodeName")
        })
    };
    while Instant::now() < deadline && !(report.exists() && watching(&sim)) {
        if let Ok(Some(s)) = agent.try_wait() {
            panic!("the agent exited early: {s}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = report.exists() && watching(&sim);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(agent.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    );
    let out = tokio::task::spawn_blocking(move || agent.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(ready, "no run report and watch within 120 s:\n{stderr}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stops cleanly on SIGTERM:\n{stderr}"
    );
    let denied: Vec<String> = sim
        .requests()
        .iter()
        .filter(|r| r.status == 403 || r.status == 422)
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    assert!(
        denied.is_empty(),
        "denied under the chart's RBAC and admission policy: {denied:?}\n{stderr}"
    );
    let run: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let recovered: Vec<String> = run["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["result"] == "recovered")
        .map(|o| {
            format!(
                "{}/{}",
                o["namespace"].as_str().unwrap_or(""),
                o["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    println!("recovered under the Addon's install: {recovered:?}");
    assert!(recovered.len() >= 4, "{run:#}");
    assert!(
        sim.get("kubevirt.io/v1", "VirtualMachine", "default", "vm-web-01")
            .is_none(),
        "vm-web-01 was recovered"
    );
    // The Lease went into the release namespace, as the Role allows.
    assert!(sim.requests().iter().any(|r| r.path
        == format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases")
        && r.method == "POST"
        && r.status == 201));
}
