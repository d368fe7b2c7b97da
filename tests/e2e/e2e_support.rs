//! Shared by `recovery_e2e` and the `reliability_*` tests: the power-loss simulator, the built binary run
//! as an operator would, the cluster's end state, and the check that every mutation in
//! the request log stays inside the plan. The simulator serves HTTPS: the kubeconfig handed
//! to the binary is the RKE2-shaped one (the simulator's CA, a client certificate in
//! `system:masters`), so every run goes through kube's rustls client as on a node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;

use harvester_sim::node::{FakeOpts, FakeProc, HostRoot, PidNamespace};
use harvester_sim::{shipped_scenario, FaultAction, FaultRule, Sim, SimConfig};
use serde_json::{json, Value};

/// The node the power-loss scenario lost.
pub const NODE: &str = "harvester-node-1";

/// `run --yes` with no waiting: every VM stuck at once, no controller grace.
pub const RUN: &[&str] = &[
    "run",
    "--yes",
    "--stuck-after",
    "0s",
    "--controller-grace",
    "0s",
    "--output",
    "json",
];

/// The same plan, shown only.
pub const DRY_RUN: &[&str] = &[
    "run",
    "--dry-run",
    "--stuck-after",
    "0s",
    "--controller-grace",
    "0s",
    "--output",
    "json",
];

/// An agent that acts at once, inside a boot window that never closes, without metrics.
pub const ACTING_AGENT: &[&str] = &[
    "--stuck-after",
    "0s",
    "--controller-grace",
    "0s",
    "agent",
    "--act-on",
    "always",
    "--boot-window",
    "100000h",
    "--metrics-addr",
    "off",
];

/// The longest a single run may take before the test calls it hung.
pub const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A simulator, a state directory and a host root for one test.
pub struct Env {
    /// The simulated cluster.
    pub sim: Sim,
    /// `--state-dir`.
    pub state: tempfile::TempDir,
    /// `--host-root`.
    pub host_root: tempfile::TempDir,
    /// Extra environment for the binary.
    pub vars: Vec<(String, String)>,
    /// The node's own pid namespace: its vmrecover runs and fake VM processes are seen by
    /// no other test (None when the machine cannot make one outside CI).
    pub node: Option<PidNamespace>,
}

/// A pid namespace for one test's node. In CI (`CI=true`) failing to make one fails the
/// test; elsewhere the test runs on the machine's process table and says so.
pub fn own_node() -> Option<PidNamespace> {
    match PidNamespace::new() {
        Ok(ns) => Some(ns),
        Err(e) if std::env::var_os("CI").is_some_and(|v| v == "true") => {
            panic!("a private pid namespace for the test's node: {e}")
        }
        Err(e) => {
            eprintln!(
                "note: not isolated ({e}): this test's node shares the machine's process table"
            );
            None
        }
    }
}

/// `harvester-node-1`'s machine-id and the boot its kubelet reported.
pub use harvester_sim::node::{BOOT_ID, MACHINE_ID};

/// Writes the host's identity under a host root: `/etc/machine-id` and this boot's id.
pub fn write_identity(root: &std::path::Path, machine_id: &str, boot_id: &str) {
    HostRoot::at(root).identity(machine_id, boot_id);
}

/// Makes the simulated Node report `machine_id` and `boot_id`, as its kubelet does once
/// it posts node status after a boot.
pub fn report_identity(sim: &Sim, node: &str, machine_id: &str, boot_id: &str) {
    let mut n = sim.get("v1", "Node", "", node).expect("the Node exists");
    n["status"]["nodeInfo"]["machineID"] = json!(machine_id);
    n["status"]["nodeInfo"]["bootID"] = json!(boot_id);
    sim.put(n).expect("update the Node");
}

/// A host root with no Longhorn device held or mounted, which is `harvester-node-1`.
pub fn host_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    HostRoot::harvester_node_1(dir.path());
    dir
}

impl Env {
    /// The power-loss scenario, virt-controller off.
    pub async fn power_loss() -> Env {
        Self::with_texts(&[]).await
    }

    /// The power-loss scenario plus extra scenario YAML documents.
    pub async fn with_texts(texts: &[&str]) -> Env {
        Self::start(SimConfig::default(), texts).await
    }

    /// The power-loss scenario generated for one Harvester release (`1.4` … `1.8`).
    pub async fn release(release: &str) -> Env {
        Self::start(SimConfig::default().release(release), &[]).await
    }

    async fn start(cfg: SimConfig, texts: &[&str]) -> Env {
        let mut cfg = cfg.scenario_file(shipped_scenario("power-loss.yaml"));
        for t in texts {
            cfg = cfg.scenario_text(*t);
        }
        let sim = Sim::start(cfg).await.expect("start harvester-sim");
        assert!(sim.url().starts_with("https://"), "{}", sim.url());
        sim.set_virt_controller(false);
        Env {
            sim,
            state: tempfile::tempdir().expect("tempdir"),
            host_root: host_root(),
            vars: Vec::new(),
            node: own_node(),
        }
    }

    /// An environment on a simulator a test started itself: a fresh state directory, the
    /// empty host root of harvester-node-1 and a node of its own.
    pub fn on(sim: Sim) -> Env {
        Env {
            sim,
            state: tempfile::tempdir().expect("tempdir"),
            host_root: host_root(),
            vars: Vec::new(),
            node: own_node(),
        }
    }

    /// The binary with the global flags pointing at this environment.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let bin = env!("CARGO_BIN_EXE_vmrecover");
        let mut c = tokio::process::Command::from(match &self.node {
            Some(ns) => ns.command(bin),
            None => std::process::Command::new(bin),
        });
        c.arg("--kubeconfig")
            .arg(self.sim.kubeconfig_path())
            .args(["--node", NODE, "--log-target", "stderr", "--state-dir"])
            .arg(self.state.path())
            .arg("--host-root")
            .arg(self.host_root.path())
            .args(args)
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs the binary to completion.
    pub async fn run(&self, args: &[&str]) -> Ran {
        // A run that hangs is a finding, not a stuck CI job: kill_on_drop ends it.
        let out = match tokio::time::timeout(RUN_LIMIT, self.command(args).output()).await {
            Ok(out) => out.expect("run vmrecover"),
            Err(_) => {
                return Ran {
                    code: -2,
                    stdout: String::new(),
                    stderr: format!("HUNG: still running after {RUN_LIMIT:?}"),
                }
            }
        };
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A fake VM process on this test's node.
    pub fn fake_vm(&self, exe: &str, argv0: &str, args: &[std::ffi::OsString]) -> FakeProc {
        FakeProc::spawn_in(self.node.as_ref(), exe, argv0, args, &FakeOpts::default())
    }

    /// The pid (on the machine) of the vmrecover that [`Env::command`] started as
    /// `child_pid` (`nsenter` when the node has its own namespace).
    pub fn vmrecover_pid(&self, child_pid: u32) -> u32 {
        match &self.node {
            Some(_) => PidNamespace::started_by(child_pid).expect("nsenter started vmrecover"),
            None => child_pid,
        }
    }

    /// Sends `signal` to the vmrecover that [`Env::command`] started as `child_pid`.
    pub fn signal(&self, child_pid: u32, signal: nix::sys::signal::Signal) {
        let pid = self.vmrecover_pid(child_pid);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
    }

    /// The state directory's path.
    pub fn state_path(&self, file: &str) -> PathBuf {
        self.state.path().join(file)
    }
}

/// A finished run.
#[derive(Debug)]
pub struct Ran {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Ran {
    /// Standard output as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}), exit {}:\n{}\n{}",
                self.code, self.stdout, self.stderr
            )
        })
    }

    /// Both streams, for assertion messages.
    pub fn all(&self) -> String {
        format!("exit {}\n{}\n{}", self.code, self.stdout, self.stderr)
    }
}

/// A YAML document: the Longhorn volume `name`, attached on `node`. Longhorn's CSI attach
/// writes a storage VolumeAttachment's ticket into its Longhorn volumeattachment only when
/// the volume exists (the simulator's `longhorn_csi` controller), so a fixture of a Longhorn
/// disk attached somewhere carries its volume.
pub fn longhorn_volume_yaml(name: &str, node: &str) -> String {
    format!(
        "apiVersion: longhorn.io/v1beta2\nkind: Volume\n\
         metadata: {{name: {name}, namespace: longhorn-system}}\n\
         spec: {{frontend: blockdev}}\n\
         status: {{state: attached, currentNodeID: {node}, robustness: healthy}}\n"
    )
}

/// What the end state of a run is compared on: every VM, VMI and launcher pod, and
/// `namespace/name` of every KubeVirt object of `kind`.
pub fn names(sim: &Sim, kind: &str) -> BTreeSet<String> {
    sim.list("kubevirt.io/v1", kind)
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// their finalizers.
pub fn end_state(sim: &Sim) -> BTreeMap<String, Vec<String>> {
    let mut m = BTreeMap::new();
    for (api, kind) in [
        ("kubevirt.io/v1", "VirtualMachine"),
        ("kubevirt.io/v1", "VirtualMachineInstance"),
        ("v1", "Pod"),
    ] {
        for o in sim.list(api, kind) {
            let meta = &o["metadata"];
            let key = format!(
                "{kind} {}/{}",
                meta["namespace"].as_str().unwrap_or(""),
                meta["name"].as_str().unwrap_or("")
            );
            let fins = meta["finalizers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|f| f.as_str().unwrap_or("?").to_string())
                        .collect()
                })
                .unwrap_or_default();
            m.insert(key, fins);
        }
    }
    m
}

/// [`end_state`] once the simulated controllers have settled (they may run in their own
/// tasks, see `Sim::set_controller_delay`): compare end states only through this.
pub async fn settled_end_state(sim: &Sim) -> BTreeMap<String, Vec<String>> {
    assert!(
        sim.wait_controllers_settled(std::time::Duration::from_secs(30))
            .await,
        "the simulated controllers did not settle"
    );
    end_state(sim)
}

/// Object names (`Kind ns/name`) whose resourceVersion the runs must never change: the
/// VMs, VMIs and pods of the other nodes.
pub fn versions(sim: &Sim) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (api, kind) in [
        ("kubevirt.io/v1", "VirtualMachine"),
        ("kubevirt.io/v1", "VirtualMachineInstance"),
        ("v1", "Pod"),
        ("v1", "PersistentVolumeClaim"),
    ] {
        for o in sim.list(api, kind) {
            let meta = &o["metadata"];
            m.insert(
                format!(
                    "{kind} {}/{}",
                    meta["namespace"].as_str().unwrap_or(""),
                    meta["name"].as_str().unwrap_or("")
                ),
                meta["resourceVersion"].as_str().unwrap_or("").to_string(),
            );
        }
    }
    m
}

/// What a plan allows to change: finalizers per object path, pods to delete.
#[derive(Debug, Default, Clone)]
pub struct Allowed {
    /// API path of a VMI/VM → the finalizers the plan removes from it.
    pub finalizers: BTreeMap<String, BTreeSet<String>>,
    /// API paths of the pods the plan force-deletes.
    pub pods: BTreeSet<String>,
    /// The VMs (`ns/name`) the plan recovers.
    pub vms: BTreeSet<String>,
}

impl Allowed {
    /// Reads the allowed changes from a plan as `--output json` prints it.
    pub fn from_plan(plan: &Value) -> Allowed {
        let mut a = Allowed::default();
        for d in plan["decisions"].as_array().into_iter().flatten() {
            if d["action"]["kind"] != "recover" {
                continue;
            }
            a.vms.insert(format!(
                "{}/{}",
                d["namespace"].as_str().unwrap_or(""),
                d["name"].as_str().unwrap_or("")
            ));
            for s in d["action"]["steps"].as_array().into_iter().flatten() {
                match s["step"].as_str() {
                    Some("force_delete_pod") => {
                        a.pods.insert(format!(
                            "/api/v1/namespaces/{}/pods/{}",
                            s["pod"]["namespace"].as_str().unwrap_or(""),
                            s["pod"]["name"].as_str().unwrap_or("")
                        ));
                    }
                    Some("clear_finalizers") => {
                        let plural = if s["kind"] == "VirtualMachineInstance" {
                            "virtualmachineinstances"
                        } else {
                            "virtualmachines"
                        };
                        let path = format!(
                            "/apis/kubevirt.io/v1/namespaces/{}/{plural}/{}",
                            s["object"]["namespace"].as_str().unwrap_or(""),
                            s["object"]["name"].as_str().unwrap_or("")
                        );
                        let set = a.finalizers.entry(path).or_default();
                        for f in s["remove"].as_array().into_iter().flatten() {
                            set.insert(f.as_str().unwrap_or("").to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        a
    }

    /// Every client mutation in the log that the plan does not allow, in words.
    pub fn violations(&self, sim: &Sim) -> Vec<String> {
        let lease = "/apis/coordination.k8s.io/v1/namespaces/harvester-system/leases".to_string();
        let mut bad = Vec::new();
        for r in sim.mutating_requests() {
            let ok = match r.method.as_str() {
                "POST" => r.path == lease || r.path.ends_with("/events"),
                "PUT" => r.path == format!("{lease}/vmrecover-{NODE}"),
                "DELETE" => self.pods.contains(&r.path),
                "PATCH" => match self.finalizers.get(&r.path) {
                    None => false,
                    Some(allowed) => match removed_by_patch(&r.body) {
                        Some(removed) => removed.iter().all(|f| allowed.contains(f)),
                        None => false,
                    },
                },
                _ => false,
            };
            if !ok {
                bad.push(format!("{} {} {}", r.method, r.path, r.body));
            }
        }
        bad
    }
}

/// The finalizers a vmrecover JSON patch removes: tested list minus replacement.
/// `None` when the body is not that shape (which is itself a violation).
pub fn removed_by_patch(body: &Value) -> Option<Vec<String>> {
    let ops = body.as_array()?;
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array()?
            .iter()
            .map(|f| f.as_str().map(String::from))
            .collect()
    };
    let mut tested = None;
    let mut kept = None;
    for op in ops {
        if op["path"] != "/metadata/finalizers" {
            if op["op"] != "test" {
                return None;
            }
            continue;
        }
        match op["op"].as_str()? {
            "test" => tested = strings(&op["value"]),
            "replace" => kept = strings(&op["value"]),
            _ => return None,
        }
    }
    let (tested, kept) = (tested?, kept?);
    if kept.iter().any(|k| !tested.contains(k)) {
        return None;
    }
    Some(tested.into_iter().filter(|f| !kept.contains(f)).collect())
}

/// Moves this node's Lease renewal into the past, as if its holder died long ago, and
/// shortens its duration to 2 s: a contender takes it over only once it has itself seen
/// it unchanged that long (`--lease-wait` of more than 2 s).
pub fn age_lease(sim: &Sim) {
    let name = format!("vmrecover-{NODE}");
    if let Some(mut lease) = sim.get("coordination.k8s.io/v1", "Lease", "harvester-system", &name) {
        let old = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(120)).to_string();
        lease["spec"]["renewTime"] = json!(old);
        lease["spec"]["acquireTime"] = json!(old);
        lease["spec"]["leaseDurationSeconds"] = json!(2);
        sim.put(lease).expect("age the lease");
    }
}

/// The Lease's holder, if any.
pub fn lease_holder(sim: &Sim) -> Option<String> {
    sim.get(
        "coordination.k8s.io/v1",
        "Lease",
        "harvester-system",
        &format!("vmrecover-{NODE}"),
    )
    .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
}

/// A fault rule from its parts.
pub fn rule(method: &str, path: &str, action: FaultAction, times: Option<u32>) -> FaultRule {
    FaultRule {
        method: Some(method.into()),
        path: path.into(),
        action,
        times,
        after: 0,
        matched: 0,
        fired: 0,
    }
}

/// An error status fault.
pub fn status(code: u16, retry_after: Option<u32>) -> FaultAction {
    FaultAction::Status {
        code,
        message: None,
        retry_after,
    }
}

/// The outcome (`result`, `reason`) of every VM in a run report.
pub fn outcomes(report: &Value) -> BTreeMap<String, (String, Option<String>)> {
    report["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["namespace"].as_str().unwrap_or(""),
                    o["name"].as_str().unwrap_or("")
                ),
                (
                    o["result"].as_str().unwrap_or("").to_string(),
                    o["reason"].as_str().map(String::from),
                ),
            )
        })
        .collect()
}

/// The decisions (`ns/name` → action kind) of a plan.
pub fn decisions(plan: &Value) -> BTreeMap<String, String> {
    plan["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                format!(
                    "{}/{}",
                    d["namespace"].as_str().unwrap_or(""),
                    d["name"].as_str().unwrap_or("")
                ),
                d["action"]["kind"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Runs `run --only default/vm-web-01`, holding its Lease create (after the plan, before
/// any change) while `meanwhile` runs.
pub async fn between_plan_and_apply(env: &Env, meanwhile: impl FnOnce()) -> Ran {
    env.sim.add_fault(rule(
        "POST",
        "*/leases",
        harvester_sim::FaultAction::Latency { ms: 800 },
        Some(1),
    ));
    let child = env
        .command(&[RUN, &["--only", "default/vm-web-01"]].concat())
        .spawn()
        .expect("spawn");
    for _ in 0..500 {
        if env.sim.faults()[0].fired > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        env.sim.faults()[0].fired > 0,
        "the run never reached the Lease"
    );
    meanwhile();
    let out = child.wait_with_output().await.expect("wait");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
