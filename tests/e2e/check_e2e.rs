//! `vmrecover check` end to end (issue 24): the built binary against the simulator with the
//! chart's RBAC (`deploy/`), the admission policy applied with the real kubectl, a token bound
//! to the agent's pod, a host root with the host's init and kubelet, a real journal with a
//! previous boot and this boot recorded by `boot-record start`.
//!
//! (a) per release, every check is `ok`, exit 0, and every write `check` sent carried
//!     `dryRun=All` (the reviews are the only other POSTs) and nothing in the cluster moved;
//! (b) one thing broken at a time, each caught by its named check with its fix;
//! (c) checks that cannot run: the API unreachable (exit 1, said why), a 403 on the review.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use harvester_sim::{shipped_scenario, FaultRule, Sim, SimConfig, WebhookState};
use serde_json::{json, Value};

/// healthy.yaml's node with two running VMs and their launcher pods.
const NODE: &str = "harvester-node-2";
const SA_NS: &str = "harvester-system";
const AGENT_POD: &str = "vmrecover-check-x1";

/// What to leave out or break when setting up.
#[derive(Default, Clone, Copy)]
struct Setup {
    no_policy: bool,
    unbound_token: bool,
    no_boot_record: bool,
}

struct Env {
    sim: Sim,
    state: tempfile::TempDir,
    root: tempfile::TempDir,
    journal: tempfile::TempDir,
    kubeconfig: PathBuf,
}

fn kubectl(sim: &Sim, args: &[&str]) -> std::process::Output {
    harvester_sim::kubectl("kubectl", sim.kubeconfig_path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl")
}

/// The host root: identity of the fixtures' machine in its current boot, the host's init
/// as pid 1, a kubelet process, and the device, sysfs and CSI directories.
fn host_root() -> tempfile::TempDir {
    let root = crate::e2e_support::host_root();
    let p = root.path();
    std::fs::write(p.join("proc/1/comm"), "systemd\n").expect("comm");
    std::fs::create_dir_all(p.join("proc/812")).expect("proc/812");
    std::fs::write(p.join("proc/812/comm"), "kubelet\n").expect("comm");
    std::fs::create_dir_all(p.join("var/lib/kubelet/plugins/kubernetes.io/csi")).expect("csi");
    root
}

async fn env(release: &str, setup: Setup) -> Env {
    let cfg = SimConfig::default()
        .release(release)
        .scenario_file(shipped_scenario("healthy.yaml"))
        .rbac_file(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy"));
    let sim = Sim::start(cfg).await.expect("start harvester-sim");
    // This machine is harvester-node-2, in the boot the journal fixture calls current.
    crate::e2e_support::report_identity(
        &sim,
        NODE,
        crate::e2e_support::MACHINE_ID,
        crate::e2e_support::BOOT_ID,
    );
    sim.put(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": AGENT_POD, "namespace": SA_NS},
        "spec": {"nodeName": NODE, "serviceAccountName": "vmrecover",
                 "containers": [{"name": "vmrecover", "image": "vmrecover"}]},
        "status": {"phase": "Running"},
    }))
    .expect("agent pod");
    if !setup.no_policy {
        let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/admissionpolicy.yaml");
        let out = kubectl(&sim, &["apply", "-f", policy]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut args = vec!["create", "token", "vmrecover", "-n", SA_NS];
    if !setup.unbound_token {
        args.extend([
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            AGENT_POD,
        ]);
    }
    let out = kubectl(&sim, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = tempfile::tempdir().expect("state");
    let kubeconfig = state.path().join("kubeconfig");
    sim.write_token_kubeconfig(String::from_utf8_lossy(&out.stdout).trim(), &kubeconfig)
        .expect("kubeconfig");
    let journal = tempfile::tempdir().expect("journal");
    crate::boot_support::build_journal(journal.path(), "power_cut_running.export");
    let root = host_root();
    if !setup.no_boot_record {
        crate::boot_support::boot_record("start", state.path(), root.path());
    }
    sim.clear_requests();
    Env {
        sim,
        state,
        root,
        journal,
        kubeconfig,
    }
}

struct Checked {
    code: i32,
    checks: Vec<Value>,
    stderr: String,
}

impl Checked {
    fn line(&self, name: &str) -> &Value {
        self.checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name} in {:#?}", self.checks))
    }

    fn not_ok(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| c["status"] != "ok")
            .map(|c| {
                format!(
                    "{} {}: {} (fix: {})",
                    c["status"], c["name"], c["detail"], c["fix"]
                )
            })
            .collect()
    }
}

async fn check(e: &Env, extra: &[&str]) -> Checked {
    check_with(e, &e.kubeconfig, NODE, extra).await
}

async fn check_with(e: &Env, kubeconfig: &Path, node: &str, extra: &[&str]) -> Checked {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--node", node, "--log-target", "stderr", "--state-dir"])
        .arg(e.state.path())
        .arg("--host-root")
        .arg(e.root.path())
        .arg("--journal-dir")
        .arg(e.journal.path())
        .arg("check")
        .args(if extra.contains(&"--output") {
            &[][..]
        } else {
            &["--output", "json"][..]
        })
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(crate::e2e_support::RUN_LIMIT, out)
        .await
        .expect("check finished in time")
        .expect("run vmrecover");
    Checked {
        code: out.status.code().unwrap_or(-1),
        checks: serde_json::from_slice(&out.stdout).unwrap_or_default(),
        stderr: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            if extra.contains(&"--output") {
                String::from_utf8_lossy(&out.stdout).into_owned()
            } else {
                String::new()
            }
        ),
    }
}

/// The agent's ServiceAccount, as which `check` runs.
const SA_USER: &str = "system:serviceaccount:harvester-system:vmrecover";

/// Every mutating request `check` sent: only the reviews go without `dryRun=All`.
fn writes_without_dry_run(sim: &Sim) -> Vec<String> {
    sim.requests()
        .iter()
        .filter(|r| r.is_mutating() && r.user.as_deref() == Some(SA_USER))
        .filter(|r| !r.path.contains("selfsubject"))
        .filter(|r| {
            // kube-rs sends a DELETE's dryRun in the body's DeleteOptions.
            !r.query.split('&').any(|q| q == "dryRun=All") && r.body["dryRun"] != json!(["All"])
        })
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_installed_by_the_chart_is_ready_on_every_release() {
    for release in ["1.4", "1.4.3", "1.5", "1.6", "1.7", "1.8"] {
        // Harvester 1.4.0 runs Kubernetes 1.29: no admission policy API (kubectl refuses the
        // policy), pod-bound tokens name no node.
        let old_kubernetes = release == "1.4";
        let setup = Setup {
            no_policy: old_kubernetes,
            ..Setup::default()
        };
        let e = env(release, setup).await;
        let rv = e.sim.store().current_rv();
        let r = check(&e, &[]).await;
        if old_kubernetes {
            // Exactly the warnings Kubernetes 1.29 implies: the node restriction is missing.
            let not_ok: Vec<(String, String)> = r
                .checks
                .iter()
                .filter(|c| c["status"] != "ok")
                .map(|c| (c["status"].to_string(), c["name"].to_string()))
                .collect();
            assert_eq!(
                not_ok,
                [
                    ("\"warn\"".to_string(), "\"identity.token\"".to_string()),
                    (
                        "\"warn\"".to_string(),
                        "\"rehearse.finalizer-patch\"".to_string()
                    ),
                ],
                "{release}: {:?}",
                r.not_ok()
            );
            assert_eq!(r.code, 3, "{release}: a warn needs a person by default");
            let policy = r.line("rehearse.finalizer-patch");
            assert!(
                policy["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no ValidatingAdmissionPolicy API"),
                "{policy}"
            );
        } else {
            assert_eq!(r.not_ok(), Vec::<String>::new(), "{release}: {}", r.stderr);
            assert_eq!(r.code, 0, "{release}: {}", r.stderr);
            // The policy was asked and refused the patch of a running VMI.
            let policy = r.line("rehearse.finalizer-patch");
            assert!(
                policy["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("policy in force"),
                "{policy}"
            );
        }
        assert!(r.checks.len() > 40, "{release}: {} checks", r.checks.len());
        // Writes were rehearsed: dry-run every one, and nothing moved.
        let writes: Vec<_> = e
            .sim
            .requests()
            .into_iter()
            .filter(|r| r.is_mutating())
            .collect();
        assert!(
            writes.iter().all(|w| w.user.as_deref() == Some(SA_USER)),
            "{release}: {writes:?}"
        );
        for kind in [
            "/leases",
            "/events",
            "/configmaps/",
            "/pods/",
            "/virtualmachineinstances/",
        ] {
            assert!(
                writes.iter().any(|w| w.path.contains(kind)),
                "{release}: no {kind} write"
            );
        }
        assert_eq!(
            writes_without_dry_run(&e.sim),
            Vec::<String>::new(),
            "{release}"
        );
        assert_eq!(
            e.sim.store().current_rv(),
            rv,
            "{release}: check changed the cluster"
        );
        // Nothing was left in the state directory but what was there.
        let left: Vec<_> = std::fs::read_dir(e.state.path())
            .expect("state dir")
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".vmrecover-check"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// `name` is `status` with `fix` containing `fix_part`; the run exits 3.
fn caught(r: &Checked, name: &str, status: &str, fix_part: &str) {
    let line = r.line(name);
    assert_eq!(line["status"], status, "{line}\n{:#?}", r.not_ok());
    assert!(
        line["fix"].as_str().unwrap_or("").contains(fix_part),
        "{name}: fix {:?} lacks {fix_part:?}",
        line["fix"]
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_thing_broken_is_caught_and_named_with_its_fix() {
    // Wrong --node: harvester-node-3 is another machine.
    let e = env("1.8", Setup::default()).await;
    let r = check_with(&e, &e.kubeconfig, "harvester-node-3", &[]).await;
    caught(&r, "host.node-identity", "fail", "--node");
    assert!(r.line("host.node-identity")["detail"]
        .as_str()
        .unwrap_or("")
        .contains("7b3a4d9ebc6f4a51ad8c3e4f5a6b7c8d"));

    // No hostPID: pid 1 is the container's own process.
    std::fs::write(e.root.path().join("proc/1/comm"), "vmrecover\n").expect("comm");
    caught(
        &check(&e, &[]).await,
        "host.pid-namespace",
        "fail",
        "hostPID: true",
    );
    std::fs::write(e.root.path().join("proc/1/comm"), "systemd\n").expect("comm");

    // Journal unreadable: --journal-dir is no journal directory.
    let not_a_dir = e.state.path().join("kubeconfig");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .arg("--kubeconfig")
        .arg(&e.kubeconfig)
        .args(["--node", NODE, "--log-target", "stderr", "--state-dir"])
        .arg(e.state.path())
        .arg("--host-root")
        .arg(e.root.path())
        .arg("--journal-dir")
        .arg(&not_a_dir)
        .args(["check", "--output", "json"])
        .output()
        .await
        .expect("run");
    let r = Checked {
        code: out.status.code().unwrap_or(-1),
        checks: serde_json::from_slice(&out.stdout).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    caught(&r, "host.journal", "fail", "--journal-dir");

    // A pause left on.
    let out = kubectl(
        &e.sim,
        &["annotate", "node", NODE, "vmrecover.io/paused=maintenance"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    caught(
        &check(&e, &[]).await,
        "harvester.pause",
        "warn",
        "vmrecover.io/paused-",
    );

    // An unknown finalizer on this node's VM, and with --site on a VM of another node.
    for (ns, vm) in [("default", "vm-web-02"), ("default", "vm-web-03")] {
        let mut v = e
            .sim
            .get("kubevirt.io/v1", "VirtualMachine", ns, vm)
            .expect("vm");
        v["metadata"]["finalizers"]
            .as_array_mut()
            .expect("finalizers")
            .push(json!(format!("backup.example.com/{vm}")));
        e.sim.put(v).expect("put vm");
    }
    let r = check(&e, &["--site"]).await;
    caught(
        &r,
        "finalizers.unknown",
        "warn",
        "alsoFinalizers: \"backup.example.com/vm-web-02\"",
    );
    let site = r.line("finalizers.site");
    assert!(
        site["fix"]
            .as_str()
            .unwrap_or("")
            .contains("backup.example.com/vm-web-03"),
        "{site}"
    );

    // An unsupported KubeVirt version.
    let mut kv = e
        .sim
        .get("kubevirt.io/v1", "KubeVirt", SA_NS, "kubevirt")
        .expect("KubeVirt CR");
    kv["status"]["observedKubeVirtVersion"] = json!("v1.1.0");
    e.sim.put(kv).expect("put kubevirt");
    let r = check(&e, &[]).await;
    caught(&r, "version.kubevirt", "warn", "KubeVirt 1.3-1.7");
    assert!(r.line("version.kubevirt")["detail"]
        .as_str()
        .unwrap_or("")
        .contains("nearest tested: 1.3"));

    // A webhook that denies the finalizer patch (KubeVirt's VMI mutator runs before the policy).
    e.sim
        .set_webhook(
            "virtualmachineinstances-mutator.kubevirt.io",
            WebhookState::Deny {
                message: "no finalizer changes today".into(),
                code: 422,
            },
        )
        .expect("webhook");
    let r = check(&e, &[]).await;
    caught(&r, "rehearse.finalizer-patch", "fail", "webhook");
    assert!(r.line("rehearse.finalizer-patch")["detail"]
        .as_str()
        .unwrap_or("")
        .contains("no finalizer changes today"));

    // A missing RBAC verb: the ClusterRole without patch on VMIs.
    let mut role = e
        .sim
        .get(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "",
            "vmrecover",
        )
        .expect("role");
    for rule in role["rules"].as_array_mut().expect("rules") {
        if rule["resources"] == json!(["virtualmachineinstances"]) {
            rule["verbs"] = json!(["get", "list", "watch"]);
        }
    }
    e.sim.put(role).expect("put role");
    caught(
        &check(&e, &[]).await,
        "permission.patch kubevirt.io/virtualmachineinstances",
        "fail",
        "ClusterRole",
    );
    assert_eq!(writes_without_dry_run(&e.sim), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_policy_an_unbound_token_and_no_boot_record_are_named() {
    let e = env(
        "1.8",
        Setup {
            no_policy: true,
            ..Setup::default()
        },
    )
    .await;
    let r = check(&e, &[]).await;
    caught(&r, "rehearse.finalizer-patch", "warn", "admission policy");
    assert_eq!(r.not_ok().len(), 1, "{:#?}", r.not_ok());
    // The table a person reads: the line, its fix under it, the count.
    let table = check(&e, &["--output", "table"]).await;
    assert_eq!(table.code, 3);
    let lines: Vec<&str> = table.stderr.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("warn") && l.contains("rehearse.finalizer-patch"))
        .unwrap_or_else(|| panic!("{}", table.stderr));
    assert!(
        lines[at + 1].contains("fix: install the chart's admission policy"),
        "{}",
        table.stderr
    );
    assert!(
        table.stderr.contains(" ok, 1 warn, 0 fail"),
        "{}",
        table.stderr
    );

    let e = env(
        "1.8",
        Setup {
            unbound_token: true,
            ..Setup::default()
        },
    )
    .await;
    let r = check(&e, &[]).await;
    caught(&r, "identity.token", "fail", "pod-bound");
    assert!(r.line("identity.token")["detail"]
        .as_str()
        .unwrap_or("")
        .contains("names no node"));

    let e = env(
        "1.8",
        Setup {
            no_boot_record: true,
            ..Setup::default()
        },
    )
    .await;
    let r = check(&e, &["--fail-on", "fail"]).await;
    let line = r.line("host.boot-records");
    assert_eq!(line["status"], "warn", "{line}");
    assert!(
        line["fix"]
            .as_str()
            .unwrap_or("")
            .contains("vmrecover-boot.service"),
        "{line}"
    );
    assert_eq!(
        r.code,
        0,
        "a warn does not fail with --fail-on fail: {:#?}",
        r.not_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_that_cannot_run_say_why() {
    let e = env("1.8", Setup::default()).await;
    // The review itself refused: every permission line fails, none is ok.
    e.sim.add_fault(FaultRule::status(
        Some("POST"),
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        403,
    ));
    let r = check(&e, &[]).await;
    let perms: Vec<&Value> = r
        .checks
        .iter()
        .filter(|c| c["name"].as_str().unwrap_or("").starts_with("permission."))
        .collect();
    assert!(!perms.is_empty());
    assert!(
        perms
            .iter()
            .all(|c| c["status"] == "fail"
                && c["detail"].as_str().unwrap_or("").contains("cannot ask")),
        "{perms:#?}"
    );
    assert_eq!(r.code, 3);

    // The API unreachable: exit 1, said why, no table.
    let dead = e.state.path().join("dead-kubeconfig");
    let text = std::fs::read_to_string(&e.kubeconfig).expect("kubeconfig");
    let port = e.sim.addr().port().to_string();
    std::fs::write(&dead, text.replace(&port, "1")).expect("write");
    let r = check_with(&e, &dead, NODE, &[]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("cannot run the checks"), "{}", r.stderr);
    assert!(r.checks.is_empty());
}

/// GET /metrics from the agent.
async fn metrics(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_checks_once_settled_and_exports_the_result() {
    let e = env("1.8", Setup::default()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let addr = format!("127.0.0.1:{port}");
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .arg("--kubeconfig")
        .arg(&e.kubeconfig)
        .args(["--node", NODE, "--log-target", "stderr", "--state-dir"])
        .arg(e.state.path())
        .arg("--host-root")
        .arg(e.root.path())
        .arg("--journal-dir")
        .arg(e.journal.path())
        // The window closes at once; a 20 s interval puts this node's offset under 2 s.
        .args([
            "agent",
            "--boot-window",
            "0s",
            "--check-every",
            "20s",
            "--metrics-addr",
            &addr,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the agent");
    let name = format!("vmrecover-summary-{NODE}");
    let mut readiness = Value::Null;
    for _ in 0..600 {
        let summary = e
            .sim
            .get("v1", "ConfigMap", SA_NS, &name)
            .and_then(|cm| cm["data"]["summary.json"].as_str().map(str::to_string))
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        if let Some(r) = summary
            .map(|s| s["readiness"].clone())
            .filter(|r| !r.is_null())
        {
            readiness = r;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let m = metrics(&addr).await;
    let _ = agent.start_kill();
    let out = agent.wait_with_output().await.expect("agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !readiness.is_null(),
        "no readiness in the summary {:?}: {stderr}",
        e.sim.get("v1", "ConfigMap", SA_NS, &name)
    );
    assert_eq!(readiness["failing"], json!([]), "{readiness}\n{stderr}");
    assert!(
        m.contains("vmrecover_check{check=\"identity.token\",status=\"ok\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("vmrecover_check{check=\"rehearse.finalizer-patch\",status=\"ok\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("vmrecover_check_last_run_timestamp_seconds "),
        "{m}"
    );
    // Its checks wrote nothing but dry runs either.
    let reviews_and_dry_runs_only = writes_without_dry_run(&e.sim)
        .into_iter()
        .filter(|w| !w.contains("/configmaps/vmrecover-summary-") && !w.contains("/leases/"))
        .collect::<Vec<_>>();
    assert_eq!(reviews_and_dry_runs_only, Vec::<String>::new());
}

/// The chart's Helm test (`templates/tests/check-pod.yaml`, `helm.sh/hook: test`): its Pod
/// runs `vmrecover check --fail-on fail` with the DaemonSet's own ServiceAccount, host PID
/// namespace, environment, securityContext, mounts, volumes and scheduling. The simulator
/// runs no pods, so its exact command is run here with the equivalents of what the Pod would
/// have: the host root, journal and state directory for its hostPath mounts, the rendered
/// ConfigMap's file for /etc/vmrecover, a token bound to an agent pod on the node for its
/// ServiceAccount token, its `env` (the pod's node for `spec.nodeName`). An agent installed
/// by the chart passes: at 1.33 with every check ok, at 1.29 with warnings only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helm_test_pod_runs_the_agents_check_and_passes() {
    let Some(py) = crate::chart_support::helm_python() else {
        return;
    };
    // helmTest.nodeName pins it; host mode (the agent on the host) has no such Pod.
    let pinned = crate::chart_support::render_py(
        &py,
        &[
            "template",
            "--hooks",
            "--set-json",
            r#"{"helmTest": {"nodeName": "harvester-node-2"}}"#,
        ],
    );
    let objs = crate::chart_support::objects(&String::from_utf8_lossy(&pinned.stdout));
    let pod = crate::chart_support::find(&objs, "Pod", "vmrecover-check");
    assert_eq!(pod["spec"]["nodeName"], NODE);
    // Pinned, it bypasses the scheduler: the agent's tolerations keep it from NoExecute
    // eviction there, as the agent's own pod.
    let ds = crate::chart_support::find(&objs, "DaemonSet", "vmrecover");
    assert_eq!(
        pod["spec"]["tolerations"],
        ds["spec"]["template"]["spec"]["tolerations"]
    );
    let host = crate::chart_support::render_py(
        &py,
        &[
            "template",
            "--hooks",
            "--set-json",
            r#"{"hostUnits": {"cloudInit": {"enabled": true, "hostMode": true}}}"#,
        ],
    );
    assert!(
        host.status.success(),
        "{}",
        crate::chart_support::text(&host)
    );
    assert!(!String::from_utf8_lossy(&host.stdout).contains("vmrecover-check"));

    for (release, kube) in [("1.6", "1.33.5"), ("1.4", "1.29.9")] {
        let o =
            crate::chart_support::render_py(&py, &["template", "--hooks", "--kube-version", kube]);
        assert!(o.status.success(), "{}", crate::chart_support::text(&o));
        let objs = crate::chart_support::objects(&String::from_utf8_lossy(&o.stdout));
        let pod = crate::chart_support::find(&objs, "Pod", "vmrecover-check");
        let ds = crate::chart_support::find(&objs, "DaemonSet", "vmrecover");
        assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
        let (p, d) = (&pod["spec"], &ds["spec"]["template"]["spec"]);
        for field in [
            "serviceAccountName",
            "hostPID",
            "volumes",
            "priorityClassName",
        ] {
            assert_eq!(p[field], d[field], "{kube}: spec.{field}");
        }
        // Left to the scheduler, it must not tolerate what the agent tolerates (everything):
        // it would land on a NotReady or cordoned node and wait there until the timeout.
        assert!(p["tolerations"].is_null(), "{kube}: {}", p["tolerations"]);
        assert_eq!(p["restartPolicy"], "Never");
        let (pc, dc) = (&p["containers"][0], &d["containers"][0]);
        for field in ["name", "image", "env", "securityContext", "volumeMounts"] {
            assert_eq!(pc[field], dc[field], "{kube}: container {field}");
        }
        // Kubernetes < 1.30: the same AppArmor annotation as the agent's pods.
        let apparmor = "container.apparmor.security.beta.kubernetes.io/vmrecover";
        assert_eq!(
            pod["metadata"]["annotations"][apparmor],
            ds["spec"]["template"]["metadata"]["annotations"][apparmor],
            "{kube}"
        );
        let args: Vec<&str> = crate::chart_support::strs(&pc["args"]);
        assert_eq!(args, ["check", "--fail-on", "fail"]);
        // Left out of what is applied, as Helm leaves test hooks out of an install.
        let o = crate::chart_support::render_py(&py, &["template", "--kube-version", kube]);
        assert!(!String::from_utf8_lossy(&o.stdout).contains("helm.sh/hook"));

        // The Pod's command with the equivalents of its mounts, token and environment.
        let e = env(
            release,
            Setup {
                no_policy: kube.starts_with("1.29"),
                ..Setup::default()
            },
        )
        .await;
        let config = crate::chart_support::find(&objs, "ConfigMap", "vmrecover-config");
        let config_file = e.state.path().join("config.yaml");
        std::fs::write(
            &config_file,
            config["data"]["config.yaml"].as_str().unwrap_or(""),
        )
        .expect("config.yaml");
        let mounted = |path: &str| -> String {
            let host = |p: &str| e.root.path().join(p.trim_start_matches('/'));
            match path {
                "/host/var/log/journal" => e.journal.path().display().to_string(),
                "/host" => e.root.path().display().to_string(),
                "/usr/local/vmrecover" => e.state.path().display().to_string(),
                p if p.starts_with("/host/") => host(&p["/host".len()..]).display().to_string(),
                p => p.to_string(),
            }
        };
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vmrecover"));
        cmd.args(&args);
        for var in pc["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap_or("");
            let value = match var
                .pointer("/valueFrom/fieldRef/fieldPath")
                .and_then(Value::as_str)
            {
                Some("spec.nodeName") => NODE.to_string(),
                Some("metadata.namespace") => SA_NS.to_string(),
                Some(other) => panic!("{kube}: no equivalent for fieldRef {other}"),
                None => mounted(var["value"].as_str().unwrap_or("")),
            };
            cmd.env(name, value);
        }
        cmd.env("VMRECOVER_CONFIG", &config_file)
            .env("KUBECONFIG", &e.kubeconfig)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(crate::e2e_support::RUN_LIMIT, cmd.output())
            .await
            .expect("check finished in time")
            .expect("run vmrecover");
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{kube}: {said}");
        assert!(!said.lines().any(|l| l.starts_with("fail ")), "{said}");
        assert_eq!(
            said.lines().any(|l| l.starts_with("warn ")),
            kube.starts_with("1.29"),
            "{kube}: warnings exactly where Kubernetes 1.29 implies them: {said}"
        );
        assert_eq!(writes_without_dry_run(&e.sim), Vec::<String>::new());
    }
}
