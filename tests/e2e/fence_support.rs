//! Shared by `fence_procedure`: the power-loss cluster under `deploy/`'s RBAC and both
//! admission policies with harvester-node-1 fenced, and the `vmrecover-fence` CronJob's Job run
//! as its pod would run it — the rendered CronJob's exact arguments (`$(FENCED_NODE)` resolved
//! from the params ConfigMap, as the kubelet resolves a `configMapKeyRef`), its environment, a
//! token bound to a pod on harvester-node-2 (the node the Job runs on), and its mounts'
//! equivalents (this machine's machine-id and boot_id under the host root, the state directory,
//! the chart's config file), plus timing flags (`--stuck-after 0s --controller-grace 1s
//! --fence-watch 1s`) so that the run does not wait minutes; the runbook's commands read from
//! docs/runbook.md and run with kubectl.

use std::collections::BTreeMap;
use std::path::Path;

use crate::admission_support::{cluster, kubectl, SA_NS};
use crate::e2e_support::NODE;
use harvester_sim::{RequestRecord, Sim};
use serde_json::{json, Value};

/// The node the Job runs on.
pub const RUNNER_NODE: &str = "harvester-node-2";
/// The Job's pod there.
pub const JOB_POD: &str = "vmrecover-fence-manual-x1-abcde";
/// The fence ServiceAccount as a user.
pub const FENCE_USER: &str = "system:serviceaccount:harvester-system:vmrecover-fence";
/// harvester-node-2's machine-id (not harvester-node-1's).
pub const RUNNER_MACHINE: &str = "0a1b2c3d4e5f40718293a4b5c6d7e8f9";
pub const RUNNER_BOOT: &str = "6c1f0a55-3f0e-4a52-9b1e-2f8d0c7e9a11";
pub const JSON_PATCH: &str = "application/json-patch+json";

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The one object of `kind` in a rendered `deploy/` file.
pub fn rendered(file: &str, kind: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("deploy").join(file)).expect("deploy file");
    crate::chart_support::objects(&text)
        .into_iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/{file}"))
}

/// The power-loss cluster under `deploy/`'s RBAC and policies, harvester-node-1 tainted
/// out-of-service, and the Job's pod (the fence identity) on [`RUNNER_NODE`].
pub async fn fenced_cluster() -> Sim {
    let sim = cluster(true, false).await;
    // deploy/ as `kubectl apply` installs it: the params first, then the policies (helm's
    // order too: ConfigMaps before kinds it does not know).
    sim.put(rendered("fence-job.yaml", "ConfigMap"))
        .expect("params");
    person(
        &sim,
        &["apply", "-f", &crate::admission_support::policy_file()],
    );
    let mut n = sim.get("v1", "Node", "", NODE).expect("node");
    n["spec"]["taints"].as_array_mut().expect("taints").push(
        json!({"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}),
    );
    sim.put(n).expect("taint");
    let job = rendered("fence-job.yaml", "CronJob");
    let sa = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"].clone();
    assert_eq!(sa, "vmrecover-fence");
    sim.put(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": JOB_POD, "namespace": SA_NS},
        "spec": {"nodeName": RUNNER_NODE, "serviceAccountName": sa,
                 "containers": [{"name": "vmrecover", "image": "vmrecover"}]},
        "status": {"phase": "Running"},
    }))
    .expect("job pod");
    sim
}

/// A token of `sa` bound to `pod` (it names the pod's node), from `kubectl create token`.
pub fn pod_token(sim: &Sim, sa: &str, pod: &str) -> String {
    let out = kubectl(
        sim,
        &[
            "create",
            "token",
            sa,
            "-n",
            SA_NS,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            pod,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The runbook's commands, run with kubectl as the person (admin).
pub fn person(sim: &Sim, args: &[&str]) {
    let out = kubectl(sim, args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The runbook's section "A node that never comes back".
pub fn runbook_section() -> String {
    let text = std::fs::read_to_string(repo().join("docs/runbook.md")).expect("runbook");
    let start = text
        .find("## A node that never comes back")
        .expect("section");
    let end = text[start + 3..]
        .find("\n## ")
        .map_or(text.len(), |e| start + 3 + e);
    text[start..end].to_string()
}

/// Shell words of one command line (single quotes only, as the runbook writes them).
pub fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// The runbook's `kubectl` commands that contain `what`, for `node`, in order.
pub fn runbook_commands(what: &str, node: &str) -> Vec<Vec<String>> {
    runbook_section()
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("kubectl ") && l.contains(what))
        .map(|l| words(&l.replace("NODE", node))[1..].to_vec())
        .collect()
}

/// The runbook's step that sets `data.node` of the params: to `node` (step 2) or back to
/// empty (step 4), run with kubectl as the person.
pub fn set_params(sim: &Sim, node: &str) {
    let steps = runbook_commands("patch configmap vmrecover-fence-params", NODE);
    assert_eq!(steps.len(), 2, "the runbook opens and closes the params");
    let step = if node.is_empty() {
        &steps[1]
    } else {
        &steps[0]
    };
    let mut args: Vec<String> = step.clone();
    if !node.is_empty() {
        args = args.iter().map(|a| a.replace(NODE, node)).collect();
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    person(sim, &refs);
    let params = sim
        .get("v1", "ConfigMap", SA_NS, "vmrecover-fence-params")
        .expect("params");
    assert_eq!(params["data"]["node"], node, "{step:?}");
}

/// One run of the Job and the cluster after it.
pub struct Ran {
    pub code: i32,
    pub output: String,
    pub requests: Vec<RequestRecord>,
}

impl Ran {
    /// The fence identity's writes: (method, path, status).
    pub fn writes(&self) -> Vec<(String, String, u16)> {
        self.requests
            .iter()
            .filter(|r| !r.internal && r.user.as_deref() == Some(FENCE_USER))
            .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
            .map(|r| (r.method.clone(), r.path.clone(), r.status))
            .collect()
    }
}

/// The value of a container env var as the kubelet resolves it for the Job's pod.
pub fn env_value(sim: &Sim, e: &Value) -> Option<String> {
    if let Some(v) = e["value"].as_str() {
        return Some(v.to_string());
    }
    let from = &e["valueFrom"];
    if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
        return Some(match path {
            "spec.nodeName" => RUNNER_NODE.to_string(),
            "metadata.namespace" => SA_NS.to_string(),
            other => panic!("fieldRef {other} not modelled"),
        });
    }
    let cm = &from["configMapKeyRef"];
    let obj = sim.get("v1", "ConfigMap", SA_NS, cm["name"].as_str()?)?;
    obj["data"][cm["key"].as_str()?].as_str().map(String::from)
}

/// Runs the rendered Job's container as its pod would: `None` when the pod could not start
/// (an env var from a missing ConfigMap: the kubelet's CreateContainerConfigError).
pub async fn run_job(sim: &Sim, token: &str, fenced: Option<&str>, extra: &[&str]) -> Option<Ran> {
    let job = rendered("fence-job.yaml", "CronJob");
    let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let dir = tempfile::tempdir().expect("temp dir");
    // The mounts: this machine's identity under the host root, the state directory, the config.
    let host = dir.path().join("host");
    std::fs::create_dir_all(host.join("etc")).expect("etc");
    std::fs::create_dir_all(host.join("proc/sys/kernel/random")).expect("proc");
    std::fs::write(host.join("etc/machine-id"), format!("{RUNNER_MACHINE}\n")).expect("id");
    std::fs::write(
        host.join("proc/sys/kernel/random/boot_id"),
        format!("{RUNNER_BOOT}\n"),
    )
    .expect("boot id");
    let mut mounts: BTreeMap<String, String> = BTreeMap::new();
    for m in c["volumeMounts"].as_array().expect("mounts") {
        let at = m["mountPath"].as_str().expect("mountPath").to_string();
        let local = match m["name"].as_str().expect("name") {
            "machine-id" | "boot-id" => continue,
            "state" | "tmp" => dir.path().join(m["name"].as_str().unwrap_or("x")),
            "config" => {
                let cm = rendered("configmap.yaml", "ConfigMap");
                let d = dir.path().join("config");
                std::fs::create_dir_all(&d).expect("config dir");
                for (k, v) in cm["data"].as_object().expect("data") {
                    std::fs::write(d.join(k), v.as_str().unwrap_or("")).expect("config file");
                }
                d
            }
            other => panic!("volume {other} not modelled"),
        };
        std::fs::create_dir_all(&local).expect("mount dir");
        mounts.insert(at, local.display().to_string());
    }
    // The mounts of the host's identity files land under --host-root.
    let paths: Vec<&str> = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(paths.contains(&"/host/etc/machine-id"), "{paths:?}");
    mounts.insert("/host".into(), host.display().to_string());
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for e in c["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("env name").to_string();
        let value = match (name.as_str(), fenced) {
            ("FENCED_NODE", Some(n)) => Some(n.to_string()),
            _ => env_value(sim, e),
        };
        env.insert(name, value?);
    }
    let args: Vec<String> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let mut a = a.as_str().expect("arg").to_string();
            for (k, v) in &env {
                a = a.replace(&format!("$({k})"), v);
            }
            match mounts
                .iter()
                .find(|(at, _)| a == **at || a.starts_with(&format!("{at}/")))
            {
                Some((at, local)) => format!("{local}{}", &a[at.len()..]),
                None => a,
            }
        })
        .collect();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_token_kubeconfig(token, &kubeconfig)
        .expect("kubeconfig");
    let out = tokio::time::timeout(
        crate::e2e_support::RUN_LIMIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_vmrecover"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(&args)
            .args([
                "--stuck-after",
                "0s",
                "--controller-grace",
                "1s",
                "--fence-watch",
                "1s",
            ])
            .args(extra)
            .env_clear()
            .envs(&env)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Job finished in time")
    .expect("run vmrecover");
    Some(Ran {
        code: out.status.code().unwrap_or(-1),
        output: format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        requests: sim.requests(),
    })
}
