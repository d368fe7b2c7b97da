//! The fenced-node procedure of docs/runbook.md ("A node that never comes back") under the
//! default install: `deploy/`'s RBAC and both admission policies in force, the power-loss
//! cluster with harvester-node-1 tainted out-of-service by a person who knows it is off.
//!
//! The simulator runs no pods: the Job of `cronjob/vmrecover-fence` is run as what its pod
//! would run — the rendered CronJob's exact arguments (`$(FENCED_NODE)` resolved from the
//! params ConfigMap, as the kubelet resolves a `configMapKeyRef`), its environment, a token of
//! the fence ServiceAccount bound to a pod on harvester-node-2 (the node the Job runs on: the
//! token names that node, never the fenced one), and its mounts' equivalents (this machine's
//! machine-id and boot_id under the host root, the state directory, the chart's config file).
//! Only the timing flags are added (`--stuck-after 0s --controller-grace 1s --fence-watch 1s`)
//! so that the run does not wait minutes.
//!
//! Proven: the procedure recovers the fenced node's stuck VMs from another node; without the
//! params the same identity writes nothing; with the params for harvester-node-1 it cannot
//! touch another node's VMI, pod or Lease, nor write a ConfigMap; the old way (the run from
//! another node's agent pod) is refused by the agents' policy with its message; the runbook
//! gives the procedure, not the old way.

use std::collections::BTreeMap;
use std::path::Path;

use crate::admission_support::{client, cluster, kubectl, send, AGENT_POD, SA_NS};
use crate::e2e_support::{names, NODE};
use harvester_sim::{RequestRecord, Sim};
use serde_json::{json, Value};

/// The node the Job runs on.
const RUNNER_NODE: &str = "harvester-node-2";
/// The Job's pod there.
const JOB_POD: &str = "vmrecover-fence-manual-x1-abcde";
/// The fence ServiceAccount as a user.
const FENCE_USER: &str = "system:serviceaccount:harvester-system:vmrecover-fence";
/// harvester-node-2's machine-id (not harvester-node-1's).
const RUNNER_MACHINE: &str = "0a1b2c3d4e5f40718293a4b5c6d7e8f9";
const RUNNER_BOOT: &str = "6c1f0a55-3f0e-4a52-9b1e-2f8d0c7e9a11";
const JSON_PATCH: &str = "application/json-patch+json";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The one object of `kind` in a rendered `deploy/` file.
fn rendered(file: &str, kind: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("deploy").join(file)).expect("deploy file");
    crate::chart_support::objects(&text)
        .into_iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/{file}"))
}

/// The power-loss cluster under `deploy/`'s RBAC and policies, harvester-node-1 tainted
/// out-of-service, and the Job's pod (the fence identity) on [`RUNNER_NODE`].
async fn fenced_cluster() -> Sim {
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
fn pod_token(sim: &Sim, sa: &str, pod: &str) -> String {
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
fn person(sim: &Sim, args: &[&str]) {
    let out = kubectl(sim, args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The runbook's section "A node that never comes back".
fn runbook_section() -> String {
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
fn words(line: &str) -> Vec<String> {
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
fn runbook_commands(what: &str, node: &str) -> Vec<Vec<String>> {
    runbook_section()
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("kubectl ") && l.contains(what))
        .map(|l| words(&l.replace("NODE", node))[1..].to_vec())
        .collect()
}

/// The runbook's step that sets `data.node` of the params: to `node` (step 2) or back to
/// empty (step 4), run with kubectl as the person.
fn set_params(sim: &Sim, node: &str) {
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
struct Ran {
    code: i32,
    output: String,
    requests: Vec<RequestRecord>,
}

impl Ran {
    /// The fence identity's writes: (method, path, status).
    fn writes(&self) -> Vec<(String, String, u16)> {
        self.requests
            .iter()
            .filter(|r| !r.internal && r.user.as_deref() == Some(FENCE_USER))
            .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
            .map(|r| (r.method.clone(), r.path.clone(), r.status))
            .collect()
    }
}

/// The value of a container env var as the kubelet resolves it for the Job's pod.
fn env_value(sim: &Sim, e: &Value) -> Option<String> {
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
async fn run_job(sim: &Sim, token: &str, fenced: Option<&str>, extra: &[&str]) -> Option<Ran> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_procedure_recovers_the_fenced_nodes_vms_from_another_node() {
    let sim = fenced_cluster().await;
    let before = names(&sim, "VirtualMachineInstance");
    set_params(&sim, NODE);
    let t = pod_token(&sim, "vmrecover-fence", JOB_POD);
    let run = run_job(&sim, &t, None, &[]).await.expect("the Job starts");
    // vm-custom-01 carries an unknown finalizer: left for a person (exit 3).
    assert_eq!(run.code, 3, "{}", run.output);
    let left = names(&sim, "VirtualMachineInstance");
    for vmi in ["default/vm-web-01", "default/vm-db-01", "prod/vm-legacy-01"] {
        assert!(before.contains(vmi), "{vmi} was there: {before:?}");
        assert!(
            !left.contains(vmi),
            "{vmi} recovered: {left:?}\n{}",
            run.output
        );
    }
    let writes = run.writes();
    assert!(
        writes
            .iter()
            .any(|(m, p, s)| m == "PATCH" && p.contains("/virtualmachineinstances/") && *s == 200),
        "{writes:?}"
    );
    let refused: Vec<_> = writes.iter().filter(|w| w.2 >= 400 && w.2 != 409).collect();
    assert!(refused.is_empty(), "refused: {refused:?}\n{}", run.output);
    // Every object the run read or wrote was allowed by RBAC: no 403 at all.
    let forbidden: Vec<_> = run
        .requests
        .iter()
        .filter(|r| r.user.as_deref() == Some(FENCE_USER) && r.status == 403)
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    assert!(forbidden.is_empty(), "{forbidden:?}");
    // The procedure's last step: the node is emptied, and with it every write of the identity.
    set_params(&sim, "");
    let (c, _d) = client(&sim, &t).await;
    let lease = send(
        &c,
        "PUT",
        &format!("/apis/coordination.k8s.io/v1/namespaces/{SA_NS}/leases/vmrecover-{NODE}"),
        "application/json",
        Some(
            sim.get(
                "coordination.k8s.io/v1",
                "Lease",
                SA_NS,
                &format!("vmrecover-{NODE}"),
            )
            .expect("lease"),
        ),
    )
    .await;
    let (code, _, msg) = lease.expect_err("no node in the params: refused");
    assert!(msg.contains("names no node"), "{code} {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_params_the_fence_identity_writes_nothing() {
    let sim = fenced_cluster().await;
    let t = pod_token(&sim, "vmrecover-fence", JOB_POD);
    // The Job as shipped, no procedure running: an empty --fenced-node is refused before
    // anything is read or written.
    let before = names(&sim, "VirtualMachineInstance");
    let run = run_job(&sim, &t, None, &[]).await.expect("the Job starts");
    assert_eq!(run.code, 1, "{}", run.output);
    assert!(
        run.output.contains("--fenced-node needs the name"),
        "{}",
        run.output
    );
    assert!(run.writes().is_empty(), "{:?}", run.writes());
    // The same command with the node given by hand: every write is refused by the policy.
    let run = run_job(&sim, &t, Some(NODE), &[]).await.expect("runs");
    assert_ne!(run.code, 0, "{}", run.output);
    assert_eq!(names(&sim, "VirtualMachineInstance"), before);
    let writes = run.writes();
    assert!(!writes.is_empty(), "the run tried to take the Lease");
    for (m, p, s) in &writes {
        assert!(*s == 422 || *s == 403, "{m} {p} -> {s}");
    }
    assert!(
        run.output.contains("vmrecover-fence-restriction")
            && run.output.contains("names no node (data.node is empty)"),
        "{}",
        run.output
    );
    // The permanent binding restricts only the fence identity: a person's writes go through.
    person(&sim, &["label", "node", NODE, "example.com/checked=yes"]);
}

/// A deleting VMI of `node`.
fn vmi(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "default",
                     "finalizers": ["kubevirt.io/foregroundDeleteVirtualMachine"],
                     "deletionTimestamp": "2026-01-01T00:00:00Z",
                     "labels": {"kubevirt.io/nodeName": node}},
        "spec": {"domain": {"devices": {}}},
        "status": {"phase": "Failed", "nodeName": node},
    })
}

fn launcher(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubevirt.io": "virt-launcher"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Failed"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_params_for_one_node_nothing_of_another_is_touched() {
    let sim = fenced_cluster().await;
    for o in [
        vmi("own", NODE),
        vmi("other", RUNNER_NODE),
        launcher("virt-launcher-own-abcde", NODE),
        launcher("virt-launcher-other-abcde", RUNNER_NODE),
    ] {
        sim.put(o).expect("put");
    }
    set_params(&sim, NODE);
    let (c, _d) = client(&sim, &pod_token(&sim, "vmrecover-fence", JOB_POD)).await;
    let strip = json!([{"op": "test", "path": "/metadata/finalizers",
                        "value": ["kubevirt.io/foregroundDeleteVirtualMachine"]},
                       {"op": "replace", "path": "/metadata/finalizers", "value": []}]);
    let vmis = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
    let pods = "/api/v1/namespaces/default/pods";
    let who = format!("vmrecover-fence for node {NODE} may only");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "vmrecover-fence-params", "namespace": SA_NS},
        "data": {"node": RUNNER_NODE}});
    let refused = [
        (
            "PATCH",
            format!("{vmis}/other"),
            JSON_PATCH,
            Some(strip.clone()),
            format!("{who} change the VirtualMachineInstances of that node"),
        ),
        (
            "DELETE",
            format!("{pods}/virt-launcher-other-abcde"),
            "application/json",
            None,
            format!("{who} delete pods of that node"),
        ),
        (
            "POST",
            format!("/apis/coordination.k8s.io/v1/namespaces/{SA_NS}/leases"),
            "application/json",
            Some(
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": format!("vmrecover-{RUNNER_NODE}")}, "spec": {}}),
            ),
            format!("{who} write the Lease"),
        ),
        (
            "PUT",
            format!("/api/v1/namespaces/{SA_NS}/configmaps/vmrecover-fence-params"),
            "application/json",
            Some(cm),
            "vmrecover-fence may not UPDATE configmaps".into(),
        ),
    ];
    for (method, path, ct, body, message) in refused {
        let r = send(&c, method, &path, ct, body).await;
        let (code, _, msg) = r.expect_err(&format!("{method} {path} refused"));
        // RBAC refuses the ConfigMap update first (403); the policy the rest (422).
        assert!(
            msg.contains(&message) || (code == 403 && path.contains("configmaps")),
            "{method} {path}: {code} {msg}"
        );
    }
    // The same identity may do the fenced recovery's writes on NODE.
    send(&c, "PATCH", &format!("{vmis}/own"), JSON_PATCH, Some(strip))
        .await
        .expect("NODE's VMI");
    send(
        &c,
        "DELETE",
        &format!("{pods}/virt-launcher-own-abcde"),
        "application/json",
        None,
    )
    .await
    .expect("NODE's launcher pod");
    assert!(sim
        .get("v1", "Pod", "default", "virt-launcher-other-abcde")
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_way_from_another_nodes_agent_pod_is_refused() {
    let sim = fenced_cluster().await;
    // The agent's pod on another node than the fenced one (the runbook's old "from any node's
    // agent pod"): its token names that node.
    let mut pod = sim.get("v1", "Pod", SA_NS, AGENT_POD).expect("agent pod");
    pod["spec"]["nodeName"] = json!(RUNNER_NODE);
    sim.remove("v1", "Pod", SA_NS, AGENT_POD);
    sim.put(pod).expect("agent pod on node 2");
    let t = pod_token(&sim, "vmrecover", AGENT_POD);
    let before = names(&sim, "VirtualMachineInstance");
    let run = run_job(&sim, &t, Some(NODE), &[]).await.expect("runs");
    assert_ne!(run.code, 0, "{}", run.output);
    assert_eq!(names(&sim, "VirtualMachineInstance"), before);
    let msg = format!(
        "vmrecover on node {RUNNER_NODE} may only write its own Lease {SA_NS}/vmrecover-{RUNNER_NODE}"
    );
    assert!(run.output.contains(&msg), "{}", run.output);
    // The runbook's rehearsal from an agent pod (`--dry-run`) makes no write, so the agents'
    // policy has nothing to refuse: it shows the plan.
    let seen = sim.requests().len();
    let dry = run_job(&sim, &t, Some(NODE), &["--dry-run"])
        .await
        .expect("runs");
    assert!(matches!(dry.code, 0 | 3), "{}", dry.output);
    assert!(dry.output.contains("FENCED RUN"), "{}", dry.output);
    let writes: Vec<String> = dry.requests[seen..]
        .iter()
        .filter(|r| !r.internal && r.is_mutating())
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    assert!(writes.is_empty(), "the dry run wrote: {writes:?}");
}

#[test]
fn the_runbook_gives_the_procedure_not_the_agent_pod() {
    let section = runbook_section();
    let job = rendered("fence-job.yaml", "CronJob");
    assert_eq!(job["spec"]["suspend"], true, "never on a schedule");
    let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert!(
        pod["tolerations"].is_null(),
        "the Job tolerates nothing: NODE's taints keep it off NODE"
    );
    let create = runbook_commands("create job", "harvester-node-1");
    assert_eq!(
        create,
        [words(
            "-n harvester-system create job vmrecover-fence-harvester-node-1 --from=cronjob/vmrecover-fence"
        )],
        "the runbook starts the shipped CronJob's Job"
    );
    assert!(
        !section.contains("from any node's agent pod"),
        "the agent pod's token names its own node: the policy refuses a fenced run from it"
    );
}
