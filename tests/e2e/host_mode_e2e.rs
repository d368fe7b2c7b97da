//! Host mode's credentials as docs/install.md gives them (issue 25 item 4): the chart installed
//! with `hostMode` on the simulated Harvester with RBAC enforced and the admission policy; a
//! token of the vmrecover ServiceAccount bound to the Node (`kubectl create token
//! --bound-object-kind Node`); the host agent started as the CloudInit's `vmrecover.service`
//! starts it, with the CloudInit's configuration file. It recovers the node's stuck VMs with no
//! request refused, and the same kind of token bound to another node is refused this node's
//! Lease: the policy bounds the host agent as it bounds the pod.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::chart_support::*;
use harvester_sim::{shipped_scenario, SettingsPatch, Sim, SimConfig};
use serde_json::Value;

const NODE: &str = "harvester-node-1";
const NS: &str = "harvester-system";

fn kubectl(kc: &Path, args: &[&str]) -> (bool, String) {
    let o = harvester_sim::kubectl("kubectl", kc)
        .args(args)
        .output()
        .expect("run kubectl");
    (o.status.success(), text(&o))
}

/// `kubectl create token vmrecover --bound-object-kind Node ...`, as install.md says.
fn node_token(sim: &Sim, admin: &Path, node: &str, out: &Path) {
    let (ok, token) = kubectl(
        admin,
        &[
            "-n",
            NS,
            "create",
            "token",
            "vmrecover",
            "--bound-object-kind",
            "Node",
            "--bound-object-name",
            node,
            "--duration",
            "8760h",
        ],
    );
    assert!(ok, "kubectl create token: {token}");
    sim.write_token_kubeconfig(token.trim(), out).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_agent_with_a_node_bound_token_recovers_under_the_policy() {
    let Some(py) = helm_python() else { return };
    if tool("kubectl", &[]).is_none() {
        skip::<()>("no kubectl");
        return;
    }
    let objs = objects(&template(
        &py,
        NS,
        &[r#"{"hostUnits":{"cloudInit":{"enabled":true,"hostMode":true}}}"#],
    ));
    let (served, _) = split_for_sim(&objs);
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
    let dir = tempfile::tempdir().unwrap();
    let admin = sim.kubeconfig_path().to_path_buf();
    let manifests = dir.path().join("chart.json");
    std::fs::write(&manifests, served).unwrap();
    let (ok, out) = kubectl(&admin, &["apply", "-f", manifests.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(sim
        .get(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicyBinding",
            "",
            "vmrecover-node-restriction"
        )
        .is_some());

    // The host's files, as the CloudInit writes them.
    let ci = find(&objs, "CloudInit", "vmrecover-host-units");
    let contents = go_yaml(&py, ci["spec"]["contents"].as_str().unwrap());
    let files = contents["stages"]["initramfs"][0]["files"]
        .as_array()
        .unwrap();
    let file = |path: &str| -> String {
        files
            .iter()
            .find(|f| f["path"] == path)
            .and_then(|f| f["content"].as_str())
            .unwrap_or_else(|| panic!("the CloudInit writes no {path}"))
            .to_string()
    };
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, file("/usr/local/vmrecover/config.yaml")).unwrap();
    let unit = file("/etc/systemd/system/vmrecover.service");
    assert!(unit.contains("Environment=KUBECONFIG=/usr/local/vmrecover/kubeconfig"));
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let mut args: Vec<String> = exec.split_whitespace().skip(1).map(String::from).collect();
    let set = |args: &mut Vec<String>, flag: &str, value: &str| {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = value.to_string();
    };
    set(&mut args, "--config", config.to_str().unwrap());
    set(&mut args, "--metrics-addr", "off");

    // The kubeconfig install.md makes: the ServiceAccount, bound to this Node.
    let kubeconfig = dir.path().join("kubeconfig");
    node_token(&sim, &admin, NODE, &kubeconfig);
    let root = dir.path().join("host");
    fake_host_root(&root);
    let state = dir.path().join("state");
    // This machine's boot is not the scenario's power cut: act now (flags over the file).
    args.extend(
        [
            "--act-on",
            "always",
            "--boot-window",
            "100000h",
            "--stuck-after",
            "0s",
            "--controller-grace",
            "1s",
            "--log-target",
            "stderr",
        ]
        .map(String::from),
    );
    let mut agent = Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("NODE_NAME", NODE)
        .env("VMRECOVER_STATE_DIR", &state)
        .env("VMRECOVER_HOST_ROOT", &root)
        .env("VMRECOVER_NAMESPACE", NS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the host agent");
    let report = state.join("last-run.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && !report.exists() {
        if let Ok(Some(s)) = agent.try_wait() {
            panic!("the host agent exited early: {s}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(agent.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    );
    let out = tokio::task::spawn_blocking(move || agent.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(report.exists(), "no run report within 120 s:\n{stderr}");
    let denied: Vec<String> = sim
        .requests()
        .iter()
        .filter(|r| r.status == 403 || r.status == 422)
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    assert!(denied.is_empty(), "refused: {denied:?}\n{stderr}");
    let run: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let recovered = run["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["result"] == "recovered")
        .count();
    assert!(recovered >= 4, "{run:#}");
    assert!(sim
        .get("kubevirt.io/v1", "VirtualMachine", "default", "vm-web-01")
        .is_none());

    // The policy sees the node in such a token: one bound to another node may not take
    // this node's Lease.
    let other = dir.path().join("other.kubeconfig");
    node_token(&sim, &admin, "harvester-node-2", &other);
    let lease = format!(
        r#"{{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{{"name":"vmrecover-{NODE}","namespace":"{NS}"}},"spec":{{"holderIdentity":"x"}}}}"#
    );
    let f = dir.path().join("lease.json");
    std::fs::write(&f, lease).unwrap();
    let (ok, out) = kubectl(&other, &["create", "-f", f.to_str().unwrap()]);
    assert!(
        !ok && out.contains("ValidatingAdmissionPolicy 'vmrecover-node-restriction'"),
        "{out}"
    );
}
