//! Least privilege, proven against the simulated cluster with RBAC enforced (issue 6):
//!
//! (a) the full `vmrecover run --yes` on the power-loss scenario, as the ServiceAccount of
//!     `deploy/`, under exactly the ClusterRole and Roles of `deploy/rbac.yaml`, gives the
//!     same outcome as the same run as cluster admin without RBAC, and no request is denied;
//! (b) for every (rule, resource, verb) the manifests grant, the run without just that one
//!     grant breaks a NAMED part of the run (and, unless the code swallows the error on
//!     purpose, says which permission is missing); each row's check is first shown to pass
//!     on a control run with the full policy, so it cannot pass by accident. The table must
//!     cover every grant in the manifests: a grant without a row fails the test — that is the
//!     proof that no rule is superfluous.
//!
//! The workloads: `vmrecover run --yes`, and `vmrecover agent --act-on always` (which also
//! list+watches this node's VMIs by label) for (a). The table of (b) uses `run`, and the
//! agent (its node summary) or `status --all-nodes` for the grants only they need.
//!
//! (c) the same for the fence identity's roles (`vmrecover-fence*`): each verb is needed by the
//! fenced-node run its CronJob's Job makes (the agents' rows that a fenced run shares, run as
//! that identity, and the fenced run's own).

use std::collections::{BTreeMap, BTreeSet};

use crate::e2e_support::names;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::deploy_support::{deploy_policy, grants, policy_yaml, without, Grant};
use futures::StreamExt;
use harvester_sim::{shipped_scenario, Identity, RequestRecord, SettingsPatch, Sim, SimConfig};
use serde_json::{json, Value};

const NODE: &str = "harvester-node-1";
const SA_NS: &str = "harvester-system";
const SA_NAME: &str = "vmrecover";

/// What runs against the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    /// `vmrecover run --yes` (all VMs, or `--only default/vm-db-01` in [`Setup::ControllerAfterWatch`]).
    Run,
    /// `vmrecover agent --act-on always`, stopped with SIGTERM once it has saved its first
    /// run report and watches this node's VMIs; its "stdout" is that report (last-run.json).
    Agent,
    /// `vmrecover status --all-nodes --output json` (a person reading the whole site).
    AllNodes,
    /// `vmrecover run --fenced-node harvester-node-1 --yes` from another machine, the node
    /// tainted out-of-service (a person declaring it powered off).
    Fenced,
    /// `vmrecover check --output json` (the install's readiness check), with the release's
    /// version objects (KubeVirt CR, Harvester and Longhorn version settings) in the cluster.
    Check,
    /// [`Workload::Fenced`] as the fence identity (ServiceAccount vmrecover-fence), as the
    /// `vmrecover-fence` CronJob's Job runs it (fence_procedure.rs runs that Job's exact
    /// command under the policies too).
    FenceJob,
}

/// The cluster a row needs so that the permission is exercised at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Setup {
    /// power-loss as shipped, virt-controller dead.
    Standard,
    /// virt-controller comes back once vmrecover watches vm-db-01's VMI during its wait
    /// (the test turns it on when the watch request arrives): it then removes the VMI and
    /// vmrecover's watch sees it go. The run is `--only default/vm-db-01`.
    ControllerAfterWatch,
    /// As [`Setup::ControllerAfterWatch`], with the controllers in their own tasks, and
    /// Harvester's VM controller (which finishes the VM) off until vmrecover asks for
    /// vm-db-01's VM with a list or watch (whatever the answer): the VM is still there when
    /// the wait starts however slow the machine, and goes a moment later, which the wait
    /// sees through a watch of the VM.
    VmLagsBehind,
    /// The node Lease exists already (released by an earlier run): taking it is an update.
    LeaseExists,
    /// vm-web-01's PVC was deleted by the operator: vmrecover follows what is left of it.
    PvcGone,
    /// vm-custom-01's PV is another CSI driver's: its attachments are storage
    /// VolumeAttachments only, so the run lists them (a Longhorn disk's are read by name).
    OtherDriverDisk,
    /// vm-app-02 runs `Always` but cannot come back (virt-controller dead) and its Longhorn
    /// volume is faulted, a replica on harvester-node-3; the run follows it for 2 s.
    NotBackFaulted,
}

/// One run's result.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
    requests: Vec<RequestRecord>,
    events: usize,
    vmis_left: BTreeSet<String>,
    vms_left: BTreeSet<String>,
    /// The node summary ConfigMap the agent published, if any.
    summary: Option<Value>,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or(Value::Null)
    }

    fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    fn outcome(&self, vm: &str) -> Option<Value> {
        self.json()["outcomes"].as_array().and_then(|a| {
            a.iter()
                .find(|o| {
                    format!(
                        "{}/{}",
                        o["namespace"].as_str().unwrap_or(""),
                        o["name"].as_str().unwrap_or("")
                    ) == vm
                })
                .cloned()
        })
    }

    /// The result text of the first step of `vm` whose description starts with `step`.
    fn step(&self, vm: &str, step: &str) -> Option<String> {
        self.outcome(vm).and_then(|o| {
            o["steps"].as_array().and_then(|s| {
                s.iter()
                    .find(|x| x["step"].as_str().is_some_and(|d| d.starts_with(step)))
                    .and_then(|x| x["result"].as_str().map(str::to_string))
            })
        })
    }

    /// Client writes that changed a VM, VMI or pod.
    fn object_writes(&self) -> Vec<String> {
        self.requests
            .iter()
            .filter(|r| r.is_mutating() && matches!(r.method.as_str(), "PATCH" | "DELETE"))
            .filter(|r| !r.path.contains("/leases/"))
            .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
            .filter(|s| !s.ends_with("403"))
            .collect()
    }

    /// Requests the authorizer denied, as `verb group/resource`.
    fn denied(&self) -> Vec<String> {
        self.requests
            .iter()
            .filter(|r| {
                r.status == 403
                    && r.actor
                        .as_deref()
                        .is_some_and(|a| a.starts_with("rbac: Forbidden"))
            })
            .map(|r| {
                let a = harvester_sim::rbac::Attributes::from_request(
                    &r.method,
                    &r.path,
                    &query_pairs(&r.query),
                );
                // A server-side apply that would create is authorized as a create too.
                let verb = if r.actor.as_deref() == Some("rbac: Forbidden (as create)") {
                    "create"
                } else {
                    a.verb.as_str()
                };
                format!("{verb} {}/{}", a.api_group, a.combined_resource())
            })
            .collect()
    }
}

/// The controller wait sat out its grace period on vm-db-01's VM (it never saw it finish).
fn sat_out_the_vm_wait(r: &Ran) -> Result<(), String> {
    match r.step("default/vm-db-01", "wait up to") {
        Some(s) if s.contains("the VM is still stuck") => Ok(()),
        other => Err(format!("wait step: {other:?}")),
    }
}

/// The agent published no node summary and said why.
fn no_summary_published(r: &Ran) -> Result<(), String> {
    match &r.summary {
        None if r.stderr.contains("cannot publish the node summary") => Ok(()),
        other => Err(format!("summary: {other:?}")),
    }
}

/// Decodes a raw query string (percent escapes and `+`).
fn query_pairs(q: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while let Some(&c) = s.as_bytes().get(i) {
            let escaped = (c == b'%')
                .then(|| s.get(i + 1..i + 3))
                .flatten()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (c, escaped) {
                (_, Some(v)) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                (b'+', None) => out.push(b' '),
                (c, None) => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn host_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    // This host is harvester-node-1 of the scenario: the ids its Node reports.
    harvester_sim::node::HostRoot::harvester_node_1(dir.path());
    dir
}

/// Starts the power-loss cluster (with `policy` enforced, or without RBAC), prepares `setup`,
/// runs the workload as the ServiceAccount (admin without RBAC) and collects the result.
async fn run(policy: Option<&[Value]>, setup: Setup, workload: Workload) -> Ran {
    let mut cfg = SimConfig::default()
        .scenario_file(shipped_scenario("power-loss.yaml"))
        .settings(SettingsPatch {
            virt_controller: Some(false),
            ..SettingsPatch::default()
        });
    if let Some(p) = policy {
        cfg = cfg.rbac_text(policy_yaml(p));
    }
    let sim = Sim::start(cfg).await.expect("start harvester-sim");
    if workload == Workload::Check {
        let p = harvester_sim::profiles::profile("1.8").expect("release 1.8");
        for o in harvester_sim::scenarios::version_objects::objects(p) {
            sim.put(o).expect("version object");
        }
    }
    let state = tempfile::tempdir().expect("state dir");
    let root = host_root();
    let kubeconfig = state.path().join("kubeconfig");
    let who = if policy.is_some() && workload == Workload::FenceJob {
        Identity::service_account(SA_NS, "vmrecover-fence")
    } else if policy.is_some() {
        Identity::service_account(SA_NS, SA_NAME)
    } else {
        Identity::admin()
    };
    sim.write_kubeconfig_as(&who, &kubeconfig)
        .expect("write kubeconfig");
    match setup {
        Setup::LeaseExists => {
            sim.put(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": format!("vmrecover-{NODE}"), "namespace": SA_NS},
                "spec": {"leaseDurationSeconds": 15, "renewTime": "2025-01-01T00:00:00.000000Z"},
            }))
            .expect("put lease");
        }
        Setup::PvcGone => {
            assert!(sim.remove(
                "v1",
                "PersistentVolumeClaim",
                "default",
                "vm-web-01-disk-0-abcde"
            ));
        }
        Setup::VmLagsBehind => {
            sim.set_controller_delay(std::time::Duration::from_millis(200));
        }
        Setup::OtherDriverDisk => {
            let name = "pvc-44444444-0000-4000-8000-000000000005";
            let mut pv = sim.get("v1", "PersistentVolume", "", name).expect("PV");
            pv["spec"]["csi"]["driver"] = serde_json::json!("other.csi.example.com");
            sim.put(pv).expect("PV of another driver");
        }
        Setup::NotBackFaulted => {
            let mut vm = sim
                .get("kubevirt.io/v1", "VirtualMachine", "prod", "vm-app-02")
                .expect("vm-app-02");
            vm["spec"]["runStrategy"] = json!("Always");
            sim.put(vm).expect("put vm-app-02");
            let mut vol = sim
                .list("longhorn.io/v1beta2", "Volume")
                .into_iter()
                .find(|v| v["status"]["kubernetesStatus"]["pvcName"] == "vm-app-02-disk-0-klmno")
                .expect("vm-app-02's Longhorn volume");
            let name = vol["metadata"]["name"].as_str().unwrap_or("").to_string();
            vol["status"]["robustness"] = json!("faulted");
            sim.put(vol).expect("put the volume");
            sim.put(json!({
                "apiVersion": "longhorn.io/v1beta2", "kind": "Replica",
                "metadata": {"name": format!("{name}-r-0"), "namespace": "longhorn-system",
                             "labels": {"longhornvolume": name}},
                "spec": {"volumeName": name, "nodeID": "harvester-node-3"},
            }))
            .expect("put a replica");
        }
        Setup::Standard | Setup::ControllerAfterWatch => {}
    }
    if matches!(workload, Workload::Fenced | Workload::FenceJob) {
        // Run from another machine, on a node a person declared powered off.
        std::fs::write(
            root.path().join("etc/machine-id"),
            "0a1b2c3d4e5f40718293a4b5c6d7e8f9\n",
        )
        .expect("another machine-id");
        let mut n = sim.get("v1", "Node", "", NODE).expect("node");
        n["spec"]["taints"].as_array_mut().expect("taints").push(
            json!({"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}),
        );
        sim.put(n).expect("taint");
    }
    let mut args: Vec<String> = vec!["--kubeconfig".into()];
    args.push(kubeconfig.display().to_string());
    args.extend(["--node", NODE, "--log-target", "stderr", "--state-dir"].map(String::from));
    args.push(state.path().display().to_string());
    args.push("--host-root".into());
    args.push(root.path().display().to_string());
    args.extend(["--stuck-after", "0s"].map(String::from));
    match workload {
        Workload::Run => {
            args.extend(["run", "--yes", "--output", "json"].map(String::from));
            if setup == Setup::NotBackFaulted {
                args.extend(["--follow", "--follow-for", "2s"].map(String::from));
            }
            if matches!(setup, Setup::ControllerAfterWatch | Setup::VmLagsBehind) {
                args.extend(
                    ["--only", "default/vm-db-01", "--controller-grace", "3s"].map(String::from),
                );
            } else {
                args.extend(["--controller-grace", "1s"].map(String::from));
            }
        }
        Workload::AllNodes => {
            args.extend(["status", "--all-nodes", "--output", "json"].map(String::from))
        }
        Workload::Fenced | Workload::FenceJob => {
            args.extend(
                [
                    "run",
                    "--fenced-node",
                    NODE,
                    "--fence-watch",
                    "1s",
                    "--yes",
                    "--output",
                    "json",
                ]
                .map(String::from),
            );
            if matches!(setup, Setup::ControllerAfterWatch | Setup::VmLagsBehind) {
                args.extend(
                    ["--only", "default/vm-db-01", "--controller-grace", "3s"].map(String::from),
                );
            } else {
                args.extend(["--controller-grace", "1s"].map(String::from));
            }
        }
        Workload::Check => args.extend(["check", "--output", "json"].map(String::from)),
        Workload::Agent => args.extend(
            [
                "--controller-grace",
                "1s",
                "agent",
                "--act-on",
                "always",
                "--boot-window",
                "100000h",
                "--metrics-addr",
                "off",
            ]
            .map(String::from),
        ),
    }
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start vmrecover");
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let report = state.path().join("last-run.json");
    let exited = AtomicBool::new(false);
    let (out, ()) = tokio::join!(
        async {
            let out = child.wait_with_output().await;
            exited.store(true, Ordering::SeqCst);
            out
        },
        async {
            // Event-driven, not timed: react to what vmrecover has asked the API server.
            let mut controller_back =
                !matches!(setup, Setup::ControllerAfterWatch | Setup::VmLagsBehind);
            let mut vm_controller_back = setup != Setup::VmLagsBehind;
            while !exited.load(Ordering::SeqCst) {
                let requests = sim.requests();
                let watched = |path_end: &str, selector: &str| {
                    requests.iter().any(|r| {
                        r.path.ends_with(path_end)
                            && r.query.contains("watch=true")
                            && r.query.contains(selector)
                    })
                };
                // virt-controller comes back once vmrecover watches vm-db-01's VMI
                // (whatever the answer).
                if !controller_back
                    && watched("/namespaces/default/virtualmachineinstances", "vm-db-01")
                {
                    sim.set_virt_controller(true);
                    controller_back = true;
                }
                // Harvester's VM controller once vmrecover lists or watches vm-db-01's VM.
                if !vm_controller_back
                    && requests
                        .iter()
                        .any(|r| r.path.ends_with("/namespaces/default/virtualmachines"))
                {
                    sim.set_harvester_controller(true);
                    vm_controller_back = true;
                }
                // The agent is stopped once it saved its report and watches this node.
                if workload == Workload::Agent
                    && report.exists()
                    && watched(
                        "/virtualmachineinstances",
                        "labelSelector=kubevirt.io%2FnodeName",
                    )
                {
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
    let out = out.expect("run vmrecover");
    let stdout = match workload {
        Workload::Run
        | Workload::AllNodes
        | Workload::Fenced
        | Workload::FenceJob
        | Workload::Check => String::from_utf8_lossy(&out.stdout).into_owned(),
        Workload::Agent => std::fs::read_to_string(&report).unwrap_or_default(),
    };
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        requests: sim.requests(),
        // The follow's Events (a VM back or not back) come in the background, before or
        // after the test stops the agent: the run's own Events compare.
        events: sim
            .list("events.k8s.io/v1", "Event")
            .iter()
            .filter(|e| e["action"] != "FollowOutcome")
            .count(),
        vmis_left: names(&sim, "VirtualMachineInstance"),
        vms_left: names(&sim, "VirtualMachine"),
        summary: sim.get(
            "v1",
            "ConfigMap",
            SA_NS,
            &format!("vmrecover-summary-{NODE}"),
        ),
    }
}

/// The named part of the run that a missing permission breaks: `Ok` when it is broken.
type Check = fn(&Ran) -> Result<(), String>;

/// One row of the least-privilege table.
struct Row {
    /// `Kind namespace/name group/resource verb`, as [`Grant::key`] spells it.
    grant: String,
    /// The part of the run that needs it.
    part: &'static str,
    workload: Workload,
    setup: Setup,
    /// Whether vmrecover reports the 403 (the permission is named in its output). False only
    /// where the code treats any failure as "not seen" on purpose (the controller wait).
    names_permission: bool,
    broken: Check,
}

fn no_object_changed(r: &Ran) -> Result<(), String> {
    let w = r.object_writes();
    if w.is_empty() {
        Ok(())
    } else {
        Err(format!("VMs/pods were still changed: {w:?}"))
    }
}

fn exit_error_nothing_changed(r: &Ran) -> Result<(), String> {
    if r.code != 1 {
        return Err(format!("exit code {} (wanted 1)", r.code));
    }
    no_object_changed(r)
}

fn step_failed(vm: &'static str, step: &'static str) -> impl Fn(&Ran) -> Result<(), String> {
    move |r: &Ran| {
        let result = r
            .outcome(vm)
            .map(|o| o["result"].as_str().unwrap_or("").to_string());
        let step_result = r.step(vm, step);
        match (result.as_deref(), step_result) {
            (Some("failed"), Some(s)) if s.contains("forbidden") => Ok(()),
            (res, s) => Err(format!("{vm}: result {res:?}, step {step:?} -> {s:?}")),
        }
    }
}

/// `check`'s line `name` is a fail.
fn check_failed(name: &'static str) -> impl Fn(&Ran) -> Result<(), String> {
    move |r: &Ran| {
        let line = r
            .json()
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name).cloned());
        match line {
            Some(l) if l["status"] == "fail" => Ok(()),
            other => Err(format!("{name}: {other:?}")),
        }
    }
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            grant: "ClusterRole /vmrecover /nodes get".into(),
            part: "checking that --node names a Node, before anything else",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: exit_error_nothing_changed,
        },
        Row {
            grant: "ClusterRole /vmrecover /pods list".into(),
            part: "launcher-pod evidence: unreadable, so every VM is blocked (fail closed)",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: no_object_changed,
        },
        Row {
            grant: "ClusterRole /vmrecover /pods delete".into(),
            part: "ladder step 2: force-delete vm-db-01's leftover launcher pod",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: |r| step_failed("default/vm-db-01", "force-delete launcher pod")(r),
        },
        Row {
            grant: "ClusterRole /vmrecover /persistentvolumeclaims get".into(),
            part: "the stuck VMIs' PVCs (by name): unreadable, so every VM with a disk is blocked",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: no_object_changed,
        },
        Row {
            grant: "ClusterRole /vmrecover /persistentvolumes get".into(),
            part: "PV -> Longhorn volume handle: unreadable, so every VM with a disk is blocked",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: no_object_changed,
        },
        Row {
            grant: "ClusterRole /vmrecover /persistentvolumes list".into(),
            part: "following vm-web-01's deleted PVC to what is left of its disk: unreadable, so blocked",
            workload: Workload::Run,
            setup: Setup::PvcGone,
            names_permission: true,
            broken: no_object_changed,
        },
        Row {
            grant: "ClusterRole /vmrecover kubevirt.io/virtualmachineinstances get".into(),
            part: "the re-check after the wait reads vm-db-01's VMI by name once this node's list no longer has it (gone, or moved)",
            workload: Workload::Run,
            setup: Setup::ControllerAfterWatch,
            names_permission: true,
            broken: |r| match r.outcome("default/vm-db-01") {
                Some(o)
                    if o["result"] == "aborted"
                        && o["blocker"] == "cluster_unreadable"
                        && o["reason"]
                            .as_str()
                            .is_some_and(|w| w.contains("forbidden")) =>
                {
                    Ok(())
                }
                other => Err(format!("vm-db-01: {other:?}")),
            },
        },
        Row {
            grant: "ClusterRole /vmrecover kubevirt.io/virtualmachineinstances list".into(),
            part: "finding this node's VMIs: nothing is decided, nothing changed",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: no_object_changed,
        },
        Row {
            grant: "ClusterRole /vmrecover kubevirt.io/virtualmachineinstances watch".into(),
            part: "ladder step 3: the wait does not see virt-controller remove vm-db-01's VMI",
            workload: Workload::Run,
            setup: Setup::ControllerAfterWatch,
            names_permission: false,
            broken: |r| match r.step("default/vm-db-01", "wait up to") {
                Some(s) if s == "done: still stuck after the grace period" => Ok(()),
                other => Err(format!("wait step: {other:?}")),
            },
        },
        Row {
            grant: "ClusterRole /vmrecover kubevirt.io/virtualmachineinstances patch".into(),
            part: "ladder step 4: clearing VMI vm-web-01's finalizers",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: |r| step_failed("default/vm-web-01", "clear finalizers of vmi")(r),
        },
        Row {
            grant: "ClusterRole /vmrecover kubevirt.io/virtualmachines get".into(),
            part: "the VMs of this node's stuck VMIs (by name): unreadable, so every VM is blocked",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: no_object_changed,
        },
        Row {
            grant: "ClusterRole /vmrecover kubevirt.io/virtualmachines list".into(),
            part: "ladder step 3: the wait's watch of vm-db-01's VM starts with a list: it sits out the grace period",
            workload: Workload::Run,
            setup: Setup::VmLagsBehind,
            names_permission: false,
            broken: sat_out_the_vm_wait,
        },
        Row {
            grant: "ClusterRole /vmrecover kubevirt.io/virtualmachines watch".into(),
            part: "ladder step 3: the wait does not see the controllers finish vm-db-01's VM after its VMI: it sits out the grace period",
            workload: Workload::Run,
            setup: Setup::VmLagsBehind,
            names_permission: false,
            broken: sat_out_the_vm_wait,
        },
        Row {
            grant: "ClusterRole /vmrecover kubevirt.io/virtualmachines patch".into(),
            part: "ladder step 4: clearing VM vm-web-01's finalizers",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: |r| step_failed("default/vm-web-01", "clear finalizers of vm ")(r),
        },
        Row {
            grant: "ClusterRole /vmrecover storage.k8s.io/volumeattachments list".into(),
            part: "CSI attachment evidence of another driver's disk: unreadable, so every VM is blocked",
            workload: Workload::Run,
            setup: Setup::OtherDriverDisk,
            names_permission: true,
            broken: no_object_changed,
        },
        Row {
            grant: "ClusterRole /vmrecover events.k8s.io/events create".into(),
            part: "the Kubernetes Event recorded on every VM/VMI vmrecover changed",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: |r| {
                if r.events == 0 && r.stderr.contains("could not record an Event") {
                    Ok(())
                } else {
                    Err(format!("{} Events recorded", r.events))
                }
            },
        },
        Row {
            grant: "Role harvester-system/vmrecover coordination.k8s.io/leases get".into(),
            part: "taking the node Lease: the run stops before any change",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: exit_error_nothing_changed,
        },
        Row {
            grant: "Role harvester-system/vmrecover coordination.k8s.io/leases create".into(),
            part: "taking the node Lease (first run on this node): the run stops",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: exit_error_nothing_changed,
        },
        Row {
            grant: "Role harvester-system/vmrecover coordination.k8s.io/leases update".into(),
            part: "taking the node Lease an earlier run released: the run stops",
            workload: Workload::Run,
            setup: Setup::LeaseExists,
            names_permission: true,
            broken: exit_error_nothing_changed,
        },
        Row {
            grant: "Role longhorn-system/vmrecover-longhorn longhorn.io/volumes list".into(),
            part: "the Longhorn volume that may still name vm-web-01's deleted PVC: unreadable, so blocked",
            workload: Workload::Run,
            setup: Setup::PvcGone,
            names_permission: true,
            broken: |r| {
                let plan = &r.json()["plan"];
                let web = plan["decisions"]
                    .as_array()
                    .and_then(|d| d.iter().find(|d| d["name"] == "vm-web-01"))
                    .cloned();
                match web {
                    Some(d)
                        if d["action"]["kind"] == "blocked"
                            && d["reasons"]
                                .to_string()
                                .contains("Longhorn volumes could not be read") =>
                    {
                        Ok(())
                    }
                    other => Err(format!("vm-web-01: {other:?}")),
                }
            },
        },
        Row {
            grant: "ClusterRole /vmrecover harvesterhci.io/settings get".into(),
            part: "Harvester's vm-force-reset-policy, shown in the plan as evidence",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: |r| {
                let notes = r.json()["plan"]["harvester"].to_string();
                if notes.contains("vm-force-reset-policy could not be read") {
                    Ok(())
                } else {
                    Err(format!("plan notes: {notes}"))
                }
            },
        },
        Row {
            grant: "Role harvester-system/vmrecover /configmaps get".into(),
            part: "the cluster-wide pause: unreadable, so nothing is changed (fail closed)",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: no_object_changed,
        },
        Row {
            grant: "Role harvester-system/vmrecover-harvester harvesterhci.io/upgrades list".into(),
            part: "whether a Harvester Upgrade is in progress: unreadable, so nothing is changed",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: no_object_changed,
        },
        Row {
            grant: "Role harvester-system/vmrecover /configmaps patch".into(),
            part: "the agent's node summary (ConfigMap vmrecover-summary-<node>, server-side apply)",
            workload: Workload::Agent,
            setup: Setup::Standard,
            names_permission: true,
            broken: no_summary_published,
        },
        Row {
            grant: "Role harvester-system/vmrecover /configmaps create".into(),
            part: "the agent's first node summary: a server-side apply that creates is authorized as a create",
            workload: Workload::Agent,
            setup: Setup::Standard,
            names_permission: true,
            broken: no_summary_published,
        },
        Row {
            grant: "Role harvester-system/vmrecover /configmaps list".into(),
            part: "status --all-nodes: every agent's summary in one list",
            workload: Workload::AllNodes,
            setup: Setup::Standard,
            names_permission: true,
            broken: |r| if r.code == 1 { Ok(()) } else { Err(format!("exit {}", r.code)) },
        },
        Row {
            grant: "ClusterRole /vmrecover /nodes list".into(),
            part: "status --all-nodes: every Node of the site",
            workload: Workload::AllNodes,
            setup: Setup::Standard,
            names_permission: true,
            broken: |r| if r.code == 1 { Ok(()) } else { Err(format!("exit {}", r.code)) },
        },
        Row {
            grant: "Role longhorn-system/vmrecover-longhorn longhorn.io/volumes get".into(),
            part: "where each stuck VM's Longhorn volume is attached: unreadable, so blocked",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: no_object_changed,
        },
        Row {
            grant: "Role longhorn-system/vmrecover-longhorn longhorn.io/nodes get".into(),
            part: "a fenced-node run: whether Longhorn says the fenced node is Ready (a sign of life): unreadable, so refused",
            workload: Workload::Fenced,
            setup: Setup::Standard,
            names_permission: true,
            broken: |r| {
                let j = r.json();
                // A refused run prints its plan; a run that acted, its report.
                let plan = if j.get("plan").is_some() { &j["plan"] } else { &j };
                if plan["refused"]["blocker"] == "evidence_missing"
                    && plan["refused"].to_string().contains("nodes.longhorn.io")
                {
                    no_object_changed(r)
                } else {
                    Err(format!("plan refused by {} ({})", plan["refused"]["blocker"], plan["refused"]))
                }
            },
        },
        Row {
            grant: "Role longhorn-system/vmrecover-longhorn longhorn.io/replicas list".into(),
            part: "why vm-app-02 is not back: its faulted volume's replicas and their nodes",
            workload: Workload::Run,
            setup: Setup::NotBackFaulted,
            names_permission: true,
            broken: |r| {
                let why = r
                    .outcome("prod/vm-app-02")
                    .map(|o| o["follow"]["why"].to_string())
                    .unwrap_or_default();
                if why.contains("could not read") && why.contains("replicas.longhorn.io") {
                    Ok(())
                } else {
                    Err(format!("vm-app-02's follow: {why}"))
                }
            },
        },
        Row {
            grant: "Role longhorn-system/vmrecover-longhorn longhorn.io/settings get".into(),
            part: "check: the Longhorn version (setting current-longhorn-version)",
            workload: Workload::Check,
            setup: Setup::Standard,
            names_permission: true,
            broken: |r| check_failed("version.longhorn")(r),
        },
        Row {
            grant: "Role harvester-system/vmrecover-harvester kubevirt.io/kubevirts get".into(),
            part: "check: the KubeVirt version (the KubeVirt CR)",
            workload: Workload::Check,
            setup: Setup::Standard,
            names_permission: true,
            broken: |r| check_failed("version.kubevirt")(r),
        },
        Row {
            grant: "Role longhorn-system/vmrecover-longhorn longhorn.io/volumeattachments get".into(),
            part: "the attachment tickets of each stuck VM's Longhorn volume: unreadable, so blocked",
            workload: Workload::Run,
            setup: Setup::Standard,
            names_permission: true,
            broken: no_object_changed,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_run_under_deploy_rbac_matches_the_admin_run() {
    let policy = deploy_policy(Path::new(env!("CARGO_MANIFEST_DIR")));
    let (as_sa, as_admin) = tokio::join!(
        run(Some(&policy), Setup::Standard, Workload::Run),
        run(None, Setup::Standard, Workload::Run),
    );
    assert_eq!(as_sa.denied(), Vec::<String>::new(), "{}", as_sa.stderr);
    assert_eq!(
        as_sa.code,
        as_admin.code,
        "{}\n---\n{}",
        as_sa.output(),
        as_admin.output()
    );
    assert_eq!(
        as_sa.code, 3,
        "vm-custom-01 stays blocked: {}",
        as_sa.stderr
    );
    let sa = as_sa.json();
    let admin = as_admin.json();
    assert_eq!(sa["outcomes"], admin["outcomes"]);
    assert_eq!(sa["plan"]["decisions"], admin["plan"]["decisions"]);
    assert_eq!(as_sa.vmis_left, as_admin.vmis_left);
    assert_eq!(as_sa.vms_left, as_admin.vms_left);
    assert_eq!(as_sa.events, as_admin.events);
    // Recovered, or finished by the controllers during its grace period (both runs alike,
    // compared above): under load the simulated controllers can finish one first.
    let done = sa["outcomes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|o| {
                    matches!(
                        o["result"].as_str(),
                        Some("recovered" | "finished_by_controller" | "handed_to_controller")
                    )
                })
                .count()
        })
        .unwrap_or(0);
    assert!(done >= 4, "the run finished {done} VMs:\n{sa:#}");
    assert!(!as_sa.vms_left.contains("default/vm-web-01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_under_deploy_rbac_matches_the_admin_agent() {
    let policy = deploy_policy(Path::new(env!("CARGO_MANIFEST_DIR")));
    let (as_sa, as_admin) = tokio::join!(
        run(Some(&policy), Setup::Standard, Workload::Agent),
        run(None, Setup::Standard, Workload::Agent),
    );
    assert_eq!(as_sa.denied(), Vec::<String>::new(), "{}", as_sa.stderr);
    assert_eq!(
        as_sa.code, 0,
        "the agent stops cleanly on SIGTERM: {}",
        as_sa.stderr
    );
    assert_eq!(as_admin.code, 0, "{}", as_admin.stderr);
    let (sa, admin) = (as_sa.json(), as_admin.json());
    assert!(
        sa["outcomes"].is_array(),
        "no report saved: {}",
        as_sa.stderr
    );
    // What became of the VMs afterwards is followed in the background by the agent and may
    // or may not be in the report when the test stops it: the run's own outcomes compare.
    let steps_only = |r: &Value| {
        let mut o = r["outcomes"].clone();
        for each in o.as_array_mut().into_iter().flatten() {
            if let Some(m) = each.as_object_mut() {
                m.remove("follow");
            }
        }
        o
    };
    assert_eq!(steps_only(&sa), steps_only(&admin));
    assert_eq!(as_sa.vmis_left, as_admin.vmis_left);
    assert_eq!(as_sa.vms_left, as_admin.vms_left);
    assert!(!as_sa.vms_left.contains("default/vm-web-01"));
    // The agent's own watch ran, allowed.
    assert!(as_sa.requests.iter().any(|r| r.query.contains("watch=true")
        && r.query.contains("labelSelector=kubevirt.io%2FnodeName")
        && r.status == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_granted_verb_is_needed_by_a_named_part_of_the_run() {
    prove_every_grant(false, rows()).await;
}

/// The fence identity's roles (`vmrecover-fence*`, fence.yaml): each verb is needed by the
/// fenced-node run it makes (the `vmrecover-fence` CronJob's Job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_granted_to_the_fence_identity_is_needed_by_the_fenced_run() {
    prove_every_grant(true, fence_rows()).await;
}

/// Whether a grant is the fence identity's (its roles are named `vmrecover-fence*`).
fn is_fence(g: &Grant) -> bool {
    g.name.starts_with("vmrecover-fence")
}

/// The agents' rows of [`rows`] that a fenced run also needs, for the fence identity's roles,
/// and the fenced run's own.
fn fence_rows() -> Vec<Row> {
    let role = |key: &str| -> Option<String> {
        let (head, rest) = key.split_once(' ')?;
        let (scope, rest) = rest.split_once(' ')?;
        let renamed = match scope {
            "/vmrecover" => "/vmrecover-fence",
            "harvester-system/vmrecover" => "harvester-system/vmrecover-fence",
            "harvester-system/vmrecover-harvester" => "harvester-system/vmrecover-fence-harvester",
            "longhorn-system/vmrecover-longhorn" => "longhorn-system/vmrecover-fence-longhorn",
            _ => return None,
        };
        Some(format!("{head} {renamed} {rest}"))
    };
    let policy = deploy_policy(Path::new(env!("CARGO_MANIFEST_DIR")));
    let fence: BTreeSet<String> = grants(&policy)
        .iter()
        .filter(|g| is_fence(g))
        .map(Grant::key)
        .collect();
    let mut out: Vec<Row> = rows()
        .into_iter()
        .filter(|r| matches!(r.workload, Workload::Run | Workload::Fenced))
        .filter_map(|r| {
            let grant = role(&r.grant).filter(|k| fence.contains(k))?;
            Some(Row {
                grant,
                workload: Workload::FenceJob,
                ..r
            })
        })
        .collect();
    out.push(Row {
        grant: "Role harvester-system/vmrecover-fence /configmaps list".into(),
        part: "a fenced-node run: NODE's summary (a sign of life): unreadable, so refused",
        workload: Workload::FenceJob,
        setup: Setup::Standard,
        names_permission: true,
        broken: no_object_changed,
    });
    out
}

/// For every grant of the agents' roles (`fence` false) or of the fence identity's (`fence`
/// true), the run of `table`'s row without just that grant breaks the row's named part.
async fn prove_every_grant(fence: bool, table: Vec<Row>) {
    let policy = deploy_policy(Path::new(env!("CARGO_MANIFEST_DIR")));
    let mine = |g: &Grant| is_fence(g) == fence;

    // The table covers exactly what the manifests grant: nothing granted without a reason,
    // no row for a grant that is not there.
    let granted: BTreeSet<String> = grants(&policy)
        .iter()
        .filter(|g| mine(g))
        .map(Grant::key)
        .collect();
    let covered: BTreeSet<String> = table.iter().map(|r| r.grant.to_string()).collect();
    assert_eq!(
        granted.difference(&covered).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "granted in deploy/ but no row proves it is needed"
    );
    assert_eq!(
        covered.difference(&granted).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "rows for grants deploy/ does not make"
    );
    let by_key: BTreeMap<String, Grant> =
        grants(&policy).into_iter().map(|g| (g.key(), g)).collect();

    // Controls: each setup with the full policy; every check must find its part intact.
    let setups: BTreeSet<(Setup, Workload)> = table.iter().map(|r| (r.setup, r.workload)).collect();
    let controls: BTreeMap<(Setup, Workload), Ran> = futures::stream::iter(setups)
        .map(|(s, w)| {
            let p = policy.clone();
            async move { ((s, w), run(Some(&p), s, w).await) }
        })
        .buffer_unordered(3)
        .collect()
        .await;
    for (setup, ran) in &controls {
        assert_eq!(
            ran.denied(),
            Vec::<String>::new(),
            "control {setup:?}: {}",
            ran.stderr
        );
    }

    let results: Vec<(usize, Ran)> = futures::stream::iter(table.iter().enumerate())
        .map(|(i, row)| {
            let grant = &by_key[&row.grant];
            let reduced = without(&policy, grant);
            async move { (i, run(Some(&reduced), row.setup, row.workload).await) }
        })
        .buffer_unordered(3)
        .collect()
        .await;

    let mut failures = Vec::new();
    for (i, ran) in results {
        let row = &table[i];
        let grant = &by_key[&row.grant];
        let control = &controls[&(row.setup, row.workload)];
        let mut why = Vec::new();
        if (row.broken)(control).is_ok() {
            why.push("the check also passes with the full policy (not discriminating)".to_string());
        }
        if let Err(e) = (row.broken)(&ran) {
            why.push(format!("part not broken: {e}"));
        }
        let wanted = format!("{} {}/{}", grant.verb, grant.group, grant.resource);
        let denied = ran.denied();
        if !denied.contains(&wanted) {
            why.push(format!(
                "no request was denied as {wanted:?}; denied: {denied:?}"
            ));
        }
        if let Some(other) = denied.iter().find(|d| **d != wanted) {
            why.push(format!("another permission was denied too: {other}"));
        }
        if row.names_permission {
            let says = format!(
                "cannot {} resource \"{}\" in API group \"{}\"",
                grant.verb, grant.resource, grant.group
            );
            let output = ran.output();
            if !output.contains(&says) && !output.contains(&says.replace('"', "\\\"")) {
                why.push(format!("the output does not name the permission ({says})"));
            }
        }
        eprintln!(
            "without {:<75} breaks: {}{}",
            row.grant,
            row.part,
            if why.is_empty() {
                ""
            } else {
                "  <-- NOT PROVEN"
            }
        );
        if !why.is_empty() {
            failures.push(format!(
                "{} ({}):\n  {}\n  exit {}; stdout:\n{}\n  stderr:\n{}",
                row.grant,
                row.part,
                why.join("\n  "),
                ran.code,
                ran.stdout.chars().take(3000).collect::<String>(),
                ran.stderr.chars().take(3000).collect::<String>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `check` asks one SelfSubjectAccessReview per entry of `vmrecover::check::permissions`; that
/// list and the roles of deploy/ name exactly the same (namespace, group, resource, verb,
/// resourceName) rows, so the review and the proof above cannot drift apart.
#[test]
fn the_permissions_check_asks_exactly_what_the_roles_grant() {
    use vmrecover::check::permissions::PERMISSIONS;
    let policy = deploy_policy(Path::new(env!("CARGO_MANIFEST_DIR")));
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut granted = BTreeSet::new();
    for doc in &policy {
        if doc["kind"] != "ClusterRole" && doc["kind"] != "Role" {
            continue;
        }
        // The fence identity's roles are not the agents' (`check` reviews the agent's).
        if doc["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("vmrecover-fence"))
        {
            continue;
        }
        let ns = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        for rule in doc["rules"].as_array().into_iter().flatten() {
            let names = strings(&rule["resourceNames"]);
            let names: Vec<Option<String>> = if names.is_empty() {
                vec![None]
            } else {
                names.into_iter().map(Some).collect()
            };
            for g in strings(&rule["apiGroups"]) {
                for r in strings(&rule["resources"]) {
                    for v in strings(&rule["verbs"]) {
                        for n in &names {
                            granted.insert((
                                ns.clone(),
                                g.clone(),
                                r.clone(),
                                v.clone(),
                                n.clone(),
                            ));
                        }
                    }
                }
            }
        }
    }
    let asked: BTreeSet<_> = PERMISSIONS
        .iter()
        .map(|p| {
            (
                p.scope.namespace(SA_NS).to_string(),
                p.group.to_string(),
                p.resource.to_string(),
                p.verb.to_string(),
                p.name.map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        granted.difference(&asked).collect::<Vec<_>>(),
        Vec::<&(String, String, String, String, Option<String>)>::new(),
        "granted in deploy/ but not reviewed by `check`"
    );
    assert_eq!(
        asked.difference(&granted).collect::<Vec<_>>(),
        Vec::<&(String, String, String, String, Option<String>)>::new(),
        "reviewed by `check` but not granted in deploy/"
    );
}
