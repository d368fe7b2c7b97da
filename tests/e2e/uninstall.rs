//! Uninstall as docs/install.md tells it (issue 25 item 7): after an install and an agent that
//! ran, the documented commands leave nothing of vmrecover in the simulated cluster (the
//! chart's objects, then the Leases, summaries, pause ConfigMap and node annotations vmrecover
//! created at run time), and `systemd/uninstall-host.sh` leaves nothing of it in a host root
//! holding every file the chart's CloudInit and init containers write (and the image archive),
//! while the host's other files stay.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::chart_support::*;
use crate::e2e_support::{Env, ACTING_AGENT, NODE};
use serde_json::{json, Value};

/// The shell block docs/install.md marks as the runtime objects' removal.
fn documented_runtime_uninstall() -> String {
    let doc = std::fs::read_to_string(repo().join("docs/install.md")).unwrap();
    let at = doc
        .find("<!-- uninstall-runtime")
        .expect("docs/install.md marks the runtime uninstall block");
    let block = &doc[at..];
    let start = block.find("```sh\n").unwrap() + "```sh\n".len();
    let end = block[start..].find("```").unwrap();
    block[start..start + end]
        .lines()
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Everything of vmrecover the simulated cluster holds, as `kind ns/name`.
fn leftovers(sim: &harvester_sim::Sim) -> Vec<String> {
    let mut out = Vec::new();
    for (api, kind) in [
        ("coordination.k8s.io/v1", "Lease"),
        ("v1", "ConfigMap"),
        ("v1", "ServiceAccount"),
        ("apps/v1", "DaemonSet"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicy",
        ),
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicyBinding",
        ),
    ] {
        for o in sim.list(api, kind) {
            let name = o["metadata"]["name"].as_str().unwrap_or("");
            if name.starts_with("vmrecover") {
                out.push(format!(
                    "{kind} {}/{name}",
                    o["metadata"]["namespace"].as_str().unwrap_or("")
                ));
            }
        }
    }
    for n in sim.list("v1", "Node") {
        let annotations = n["metadata"]["annotations"].as_object();
        for k in annotations.into_iter().flat_map(|a| a.keys()) {
            if k.starts_with("vmrecover.io/") {
                out.push(format!("Node {} annotation {k}", n["metadata"]["name"]));
            }
        }
    }
    out
}

fn kubectl(kc: &Path, args: &[&str]) -> (bool, String) {
    let o = harvester_sim::kubectl("kubectl", kc)
        .args(args)
        .output()
        .expect("run kubectl");
    (o.status.success(), text(&o))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_install_and_uninstall_the_cluster_holds_nothing_of_vmrecover() {
    let Some(py) = helm_python() else { return };
    if tool("kubectl", &[]).is_none() {
        skip::<()>("no kubectl");
        return;
    }
    let env = Env::power_loss().await;
    let kc = env.sim.kubeconfig_path().to_path_buf();
    // Install: the chart's objects the simulator serves.
    let (served, _) = split_for_sim(&objects(&template(&py, "harvester-system", &[])));
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("chart.json");
    std::fs::write(&chart, served).unwrap();
    let (ok, out) = kubectl(&kc, &["apply", "-f", chart.to_str().unwrap()]);
    assert!(ok, "{out}");
    // Run time: an agent takes its Lease and publishes its summary; a person paused a node
    // and the site.
    let mut agent = env.command(ACTING_AGENT).spawn().expect("start the agent");
    let deadline = Instant::now() + Duration::from_secs(60);
    while env
        .sim
        .get(
            "v1",
            "ConfigMap",
            "harvester-system",
            &format!("vmrecover-summary-{NODE}"),
        )
        .is_none()
        || env
            .sim
            .get(
                "coordination.k8s.io/v1",
                "Lease",
                "harvester-system",
                &format!("vmrecover-{NODE}"),
            )
            .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the agent wrote no Lease or summary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.kill().await.unwrap();
    env.sim
        .put(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "vmrecover-pause", "namespace": "harvester-system"}}))
        .unwrap();
    let (ok, out) = kubectl(
        &kc,
        &["annotate", "node", NODE, "vmrecover.io/paused=maintenance"],
    );
    assert!(ok, "{out}");
    let before = leftovers(&env.sim);
    for want in [
        format!("Lease harvester-system/vmrecover-{NODE}"),
        format!("ConfigMap harvester-system/vmrecover-summary-{NODE}"),
        "ConfigMap harvester-system/vmrecover-pause".to_string(),
        "DaemonSet harvester-system/vmrecover".to_string(),
    ] {
        assert!(before.contains(&want), "{want} not in {before:?}");
    }

    // Uninstall, step 1 as documented: the policy's binding, then the chart's objects (as
    // `kubectl delete -k deploy/ --ignore-not-found`).
    let (ok, out) = kubectl(
        &kc,
        &[
            "delete",
            "validatingadmissionpolicybinding",
            "vmrecover-node-restriction",
            "vmrecover-fence-restriction",
            "--ignore-not-found",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &kc,
        &[
            "delete",
            "-f",
            chart.to_str().unwrap(),
            "--wait=false",
            "--ignore-not-found",
        ],
    );
    assert!(ok, "{out}");
    // Step 2: the documented commands as they are written.
    let script = documented_runtime_uninstall();
    let o = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("KUBECONFIG", &kc)
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}\n{}", text(&o));
    assert_eq!(
        leftovers(&env.sim),
        Vec::<String>::new(),
        "left after the documented uninstall"
    );
}

/// Every host file the chart writes: the CloudInit's files (host mode: both units and the
/// configuration) and the init containers' install targets.
fn host_files_of_the_chart(py: &Path) -> Vec<String> {
    let objs = objects(&template(
        py,
        "harvester-system",
        &[r#"{"hostUnits":{"cloudInit":{"enabled":true,"hostMode":true}}}"#],
    ));
    let ci = find(&objs, "CloudInit", "vmrecover-host-units");
    let contents = go_yaml(py, ci["spec"]["contents"].as_str().unwrap());
    let mut files: Vec<String> = contents["stages"]["initramfs"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    // Harvester's node-manager writes the CloudInit itself to /oem/<filename>.
    files.push(format!("/oem/{}", ci["spec"]["filename"].as_str().unwrap()));
    let pod = &find(&objs, "DaemonSet", "vmrecover")["spec"]["template"]["spec"];
    for c in pod["initContainers"].as_array().unwrap() {
        let cmd: Vec<&Value> = c["command"].as_array().unwrap().iter().collect();
        files.push(cmd.last().unwrap().as_str().unwrap().to_string());
    }
    files
}

#[test]
fn the_host_script_removes_everything_the_chart_put_on_a_node_and_nothing_else() {
    let Some(py) = helm_python() else { return };
    let mut ours = host_files_of_the_chart(&py);
    ours.extend(
        [
            // What install.md step 1 and the host units add.
            "/var/lib/rancher/rke2/agent/images/vmrecover-0.1.0.tar",
            "/usr/local/vmrecover/kubeconfig",
            "/usr/local/vmrecover/boot-records.json",
            "/usr/local/vmrecover/recovery-intents.json",
            "/usr/local/vmrecover/fenced-node-2/last-run.json",
        ]
        .map(String::from),
    );
    let others = [
        "/etc/systemd/system/rke2-agent.service",
        "/oem/90_custom.yaml",
        "/usr/local/bin/other",
        "/var/lib/rancher/rke2/agent/images/other-1.0.tar",
    ];
    for keep_state in [false, true] {
        let root = tempfile::tempdir().unwrap();
        for f in ours.iter().map(String::as_str).chain(others) {
            let p = root.path().join(f.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x").unwrap();
        }
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("systemd/uninstall-host.sh"))
            .arg("--root")
            .arg(root.path());
        if keep_state {
            cmd.arg("--keep-state");
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        for f in &ours {
            let state = f.starts_with("/usr/local/vmrecover/")
                && !["bin/", "config.yaml", "kubeconfig"]
                    .iter()
                    .any(|x| f["/usr/local/vmrecover/".len()..].starts_with(x));
            let exists = root.path().join(f.trim_start_matches('/')).exists();
            assert_eq!(exists, keep_state && state, "{f} (keep_state {keep_state})");
        }
        for f in others {
            assert!(
                root.path().join(f.trim_start_matches('/')).exists(),
                "{f} is not vmrecover's"
            );
        }
    }
}

/// Why install.md deletes the policy's binding first: deleting the rendering in order (its
/// params ConfigMap before the binding) is refused half-way, for the admin too, because a
/// binding whose params are missing denies every request its rules match (upstream checks the
/// params before the match conditions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_params_before_the_binding_locks_the_rest_out() {
    let Some(py) = helm_python() else { return };
    if tool("kubectl", &[]).is_none() {
        skip::<()>("no kubectl");
        return;
    }
    let env = Env::power_loss().await;
    let kc = env.sim.kubeconfig_path().to_path_buf();
    let (served, _) = split_for_sim(&objects(&template(&py, "harvester-system", &[])));
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("chart.json");
    std::fs::write(&chart, served).unwrap();
    let (ok, out) = kubectl(&kc, &["apply", "-f", chart.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &kc,
        &["delete", "-f", chart.to_str().unwrap(), "--wait=false"],
    );
    assert!(!ok && out.contains("no params found"), "{out}");
    assert!(
        leftovers(&env.sim).contains(&"ClusterRole /vmrecover".to_string()),
        "{:?}",
        leftovers(&env.sim)
    );
}
