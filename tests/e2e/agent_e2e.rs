//! `vmrecover agent` as a process against harvester-sim: it decides the boot verdict from
//! real boot records, waits for the API server, recovers the power-loss scenario inside
//! its boot window, serves metrics that match its run report, and stops cleanly on
//! SIGTERM, releasing the Lease.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harvester_sim::{shipped_scenario, Sim, SimConfig};
use serde_json::Value;

const NODE: &str = "harvester-node-1";
const BOOT_1: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
/// The boot after the power cut: the one `harvester-node-1`'s kubelet reports in the scenario.
const BOOT_2: &str = "2c3d4e5f60718293a4b5c6d7e8f90a1b";

struct Node {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    journal: PathBuf,
}

/// A node whose previous boot (BOOT_1) was recorded running and never stopped: a power
/// cut. Its host root holds no Longhorn disk, and its journal directory is empty.
fn node_after_power_cut() -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("host");
    let state = tmp.path().join("state");
    let journal = tmp.path().join("journal");
    for d in ["dev/longhorn", "proc/1", "sys/block"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // A procfs has `self`; this tree's resolves to the running vmrecover's own.
    std::os::unix::fs::symlink("/proc/self", root.join("proc/self")).unwrap();
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(
        root.join("proc/1/mountinfo"),
        "25 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n",
    )
    .unwrap();
    crate::boot_support::host_root(&root, BOOT_1, crate::boot_support::MACHINE_ID);
    let out = Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .args(["boot-record", "start", "--state-dir"])
        .arg(&state)
        .arg("--host-root")
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The power cut: BOOT_1 never ran `boot-record stop`. Now BOOT_2 runs.
    crate::boot_support::host_root(&root, BOOT_2, crate::boot_support::MACHINE_ID);
    Node {
        _tmp: tmp,
        root,
        state,
        journal,
    }
}

/// A running agent; SIGKILLed if a test fails before stopping it.
struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
    metrics: Option<SocketAddr>,
}

impl Agent {
    fn start(node: &Node, kubeconfig: &Path, extra: &[&str]) -> Agent {
        Agent::start_with_env(node, kubeconfig, extra, &[])
    }

    fn start_with_env(
        node: &Node,
        kubeconfig: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        Agent::start_as(NODE, node, kubeconfig, extra, env)
    }

    /// An agent for the Node named `node_name`.
    fn start_as(
        node_name: &str,
        node: &Node,
        kubeconfig: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vmrecover"))
            .envs(env.iter().copied())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--node", node_name, "--log-target", "stderr", "--state-dir"])
            .arg(&node.state)
            .arg("--host-root")
            .arg(&node.root)
            .arg("--journal-dir")
            .arg(&node.journal)
            .args([
                "agent",
                "--boot-window",
                "3650d",
                "--stuck-after",
                "0s",
                "--controller-grace",
                "1s",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut agent = Agent {
            child,
            lines,
            metrics: None,
        };
        let line = agent.wait_line("serving /metrics");
        let addr = line.rsplit("http://").next().unwrap().trim().to_string();
        agent.metrics = Some(addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}")));
        agent
    }

    fn wait_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                if l.contains(needle) {
                    return l;
                }
            }
        }
        panic!("the agent never logged {needle:?}");
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let addr = self.metrics.unwrap();
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                &format!("http://{addr}{path}"),
            ])
            .output()
            .await;
        // curl may be absent: fall back to a raw HTTP/1.0 request.
        match out {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                let (body, code) = text.rsplit_once('\n').unwrap();
                (code.parse().unwrap(), body.to_string())
            }
            _ => raw_get(addr, path).await,
        }
    }

    fn terminate(mut self) -> i32 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name_and_labels} in:\n{text}"))
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sets the VMI's phase to Failed (a change every agent pass decides on).
fn fail_vmi(sim: &Sim, ns: &str, name: &str) {
    let mut vmi = sim
        .get("kubevirt.io/v1", "VirtualMachineInstance", ns, name)
        .unwrap_or_else(|| panic!("no VMI {ns}/{name}"));
    vmi["status"]["phase"] = "Failed".into();
    sim.put(vmi).unwrap();
}

fn agent_status(node: &Node) -> Value {
    // Written atomically (rename), but perhaps not yet.
    std::fs::read(node.state.join("agent-status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn vm_exists(sim: &Sim, ns: &str, name: &str) -> bool {
    sim.get("kubevirt.io/v1", "VirtualMachine", ns, name)
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_an_unclean_boot_serves_matching_metrics_and_stops_cleanly() {
    let sim = Sim::start(SimConfig::default().scenario_file(shipped_scenario("power-loss.yaml")))
        .await
        .unwrap();
    let node = node_after_power_cut();
    let agent = Agent::start(&node, sim.kubeconfig_path(), &[]);

    eventually("the stuck VMs to be recovered", || {
        !vm_exists(&sim, "default", "vm-web-01")
            && !vm_exists(&sim, "prod", "vm-legacy-01")
            && !vm_exists(&sim, "default", "vm-db-01")
    })
    .await;
    assert!(
        vm_exists(&sim, "default", "vm-custom-01"),
        "the unknown finalizer must keep it"
    );
    eventually("the run report", || {
        node.state.join("last-run.json").exists()
    })
    .await;

    let status = agent_status(&node);
    assert_eq!(status["verdict"], "unclean", "{status:#}");
    assert_eq!(status["acting"], true);
    assert_eq!(status["phase"], "boot_window");
    let (code, _) = agent.get("/healthz").await;
    assert_eq!(code, 200);
    let (code, _) = agent.get("/readyz").await;
    assert_eq!(code, 200);

    // The metrics match the saved run report.
    let report: Value =
        serde_json::from_slice(&std::fs::read(node.state.join("last-run.json")).unwrap()).unwrap();
    let recovered = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["result"] == "recovered")
        .count();
    eventually("metrics to reflect the run", || true).await;
    let (_, text) = agent.get("/metrics").await;
    assert_eq!(
        metric(&text, r#"vmrecover_boot_verdict{verdict="unclean"}"#),
        1.0
    );
    assert_eq!(
        metric(&text, r#"vmrecover_vm_outcomes_total{result="recovered"}"#),
        recovered as f64,
        "{text}"
    );
    assert!(
        metric(
            &text,
            r#"vmrecover_actions_total{action="clear_finalizers",result="ok"}"#
        ) >= 6.0
    );
    assert!(metric(&text, "vmrecover_last_run_timestamp_seconds") > 0.0);
    assert!(
        metric(
            &text,
            r#"vmrecover_vms{decision="blocked",reason="unknown_finalizer"}"#
        ) >= 1.0
    );

    assert_eq!(agent.terminate(), 0, "SIGTERM is a clean exit");
    assert_eq!(agent_status(&node)["phase"], "stopped");
    if let Some(lease) = sim.get(
        "coordination.k8s.io/v1",
        "Lease",
        "harvester-system",
        &format!("vmrecover-{NODE}"),
    ) {
        assert!(
            lease["spec"]["holderIdentity"].is_null(),
            "lease still held: {lease:#}"
        );
    }
    // `vmrecover status` shows the agent and its last run.
    let out = Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .arg("--kubeconfig")
        .arg(sim.kubeconfig_path())
        .args(["--node", NODE, "--state-dir"])
        .arg(&node.state)
        .arg("--host-root")
        .arg(&node.root)
        .arg("--journal-dir")
        .arg(&node.journal)
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\nagent:     not running") && text.contains("stopped since"),
        "{text}"
    );
    assert!(text.contains("last run:  agent run at "), "{text}");
}

/// Issue 28: a healthy agent reads its Node once (the connect check's read serves the first
/// pass), lists its VMIs once (the watch starts at that list's resourceVersion instead of
/// listing them again), and a VMI change after that still wakes a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_agent_reads_its_node_and_vmis_once_then_watches_from_that_list() {
    const HEALTHY: &str = "harvester-node-2";
    let sim = Sim::start(SimConfig::default().scenario_file(shipped_scenario("healthy.yaml")))
        .await
        .unwrap();
    let node = node_after_power_cut();
    let agent = Agent::start_as(HEALTHY, &node, sim.kubeconfig_path(), &[], &[]);
    let vmis = "/apis/kubevirt.io/v1/virtualmachineinstances";
    let summary = format!("/configmaps/vmrecover-summary-{HEALTHY}");
    let agents = |sim: &Sim| -> Vec<harvester_sim::RequestRecord> {
        sim.requests().into_iter().filter(|r| !r.internal).collect()
    };
    eventually("the summary written and the VMI watch open", || {
        let reqs = agents(&sim);
        reqs.iter().any(|r| r.path.ends_with(&summary))
            && reqs
                .iter()
                .any(|r| r.path == vmis && r.query.contains("watch=true"))
    })
    .await;
    let reqs = agents(&sim);
    let seen: Vec<String> = reqs
        .iter()
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    let node_reads = reqs
        .iter()
        .filter(|r| r.path == format!("/api/v1/nodes/{HEALTHY}"))
        .count();
    assert_eq!(node_reads, 1, "the Node is read once: {seen:#?}");
    let vmi_lists: Vec<_> = reqs
        .iter()
        .filter(|r| r.path == vmis && !r.query.contains("watch=true"))
        .collect();
    assert_eq!(vmi_lists.len(), 1, "the VMIs are listed once: {seen:#?}");
    let watch = reqs
        .iter()
        .find(|r| r.path == vmis && r.query.contains("watch=true"))
        .unwrap();
    assert!(watch.seq > vmi_lists[0].seq, "{seen:#?}");
    let from = watch
        .query
        .split('&')
        .find_map(|kv| kv.strip_prefix("resourceVersion="))
        .unwrap_or_default();
    assert!(
        !from.is_empty() && from != "0",
        "the watch starts at the list's version, not with a list of its own: {}",
        watch.query
    );

    // A relevant change after the list still reaches the agent: its VMI fails.
    fail_vmi(&sim, "default", "vm-web-02");
    eventually("a second pass woken by the watch", || {
        agents(&sim)
            .iter()
            .filter(|r| r.path == vmis && !r.query.contains("watch=true"))
            .count()
            >= 2
    })
    .await;
    drop(agent);
}

/// Issue 28: `--follow-for 0s` turns following off — the agent recovers and never lists or
/// watches the site's VMs and VMIs (what the benchmarks rely on); with following on, the
/// same run does (so the check can see them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_for_zero_recovers_without_watching_the_site() {
    let followed = site_reads_after_recovery("5m").await;
    assert!(
        !followed.is_empty(),
        "following reads the site's VMs and VMIs"
    );
    let off = site_reads_after_recovery("0s").await;
    assert!(off.is_empty(), "the site's VMs or VMIs were read: {off:#?}");
}

/// The agent's reads of every VM or VMI of the site (no label selector) until one pass after
/// it recovered power-loss.yaml's node with `--follow-for follow_for`.
async fn site_reads_after_recovery(follow_for: &str) -> Vec<String> {
    let sim = Sim::start(SimConfig::default().scenario_file(shipped_scenario("power-loss.yaml")))
        .await
        .unwrap();
    let node = node_after_power_cut();
    let agent = Agent::start(&node, sim.kubeconfig_path(), &["--follow-for", follow_for]);
    eventually("the stuck VMs to be recovered", || {
        !vm_exists(&sim, "default", "vm-web-01") && node.state.join("last-run.json").exists()
    })
    .await;
    // Then one more pass, woken by a change: a follow would have started a whole pass ago.
    let vmis = "/apis/kubevirt.io/v1/virtualmachineinstances";
    let lists = |sim: &Sim| {
        sim.requests()
            .iter()
            .filter(|r| !r.internal && r.path == vmis && !r.query.contains("watch=true"))
            .filter(|r| r.query.contains("labelSelector"))
            .count()
    };
    let before = lists(&sim);
    fail_vmi(&sim, "default", "vm-custom-01");
    eventually("a pass after the change", || lists(&sim) > before).await;
    drop(agent);
    sim.requests()
        .iter()
        .filter(|r| !r.internal && r.method == "GET")
        .filter(|r| {
            (r.path == "/apis/kubevirt.io/v1/virtualmachines" || r.path == vmis)
                && !r.query.contains("labelSelector")
        })
        .map(|r| format!("{}?{}", r.path, r.query))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_the_api_server_then_recovers() {
    // Reserve a port, start the agent against it while nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = node_after_power_cut();
    let kc_dir = tempfile::tempdir().unwrap();
    let kubeconfig = kc_dir.path().join("kubeconfig");
    let cfg = SimConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        kubeconfig_out: Some(kubeconfig.clone()),
        ..SimConfig::default()
    }
    .scenario_file(shipped_scenario("power-loss.yaml"));
    // The kubeconfig must exist before the API server does: write one by starting and
    // stopping a throwaway server on the same port.
    {
        let first = Sim::start(cfg.clone()).await.unwrap();
        first.shutdown();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let agent = Agent::start(&node, &kubeconfig, &[]);
    agent.wait_line("waiting for the API server");
    eventually("the waiting phase", || {
        agent_status(&node)["phase"] == "waiting_for_api"
    })
    .await;
    let (code, _) = agent.get("/readyz").await;
    assert_eq!(code, 503);

    let sim = Sim::start(cfg).await.unwrap();
    eventually("recovery once the API server is up", || {
        !vm_exists(&sim, "default", "vm-web-01")
    })
    .await;
    assert_eq!(agent.terminate(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn act_on_never_only_reports() {
    let sim = Sim::start(SimConfig::default().scenario_file(shipped_scenario("power-loss.yaml")))
        .await
        .unwrap();
    let node = node_after_power_cut();
    let agent = Agent::start(&node, sim.kubeconfig_path(), &["--act-on", "never"]);
    eventually("a decision pass", || {
        agent_status(&node)["last_pass"].is_array()
    })
    .await;
    let (_, text) = agent.get("/metrics").await;
    assert!(
        metric(&text, r#"vmrecover_vms{decision="recover",reason="none"}"#) >= 4.0,
        "{text}"
    );
    assert_eq!(agent_status(&node)["phase"], "watching");
    // Its only write is its own node summary (issue 18): nothing of the cluster's changes.
    let writes: Vec<_> = sim
        .mutating_requests()
        .into_iter()
        .filter(|r| !r.path.contains("/configmaps/vmrecover-summary-"))
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    assert!(vm_exists(&sim, "default", "vm-web-01"));
    assert_eq!(agent.terminate(), 0);
}

/// The chart's ConfigMap changes under a running agent (issue 25 item 1): a valid new file is
/// decided with at once, a bad one is refused with its line and key, shown in the status file
/// and in `vmrecover_config_last_reload_successful`, and the configuration in force stays: the
/// agent neither crashes nor drops to defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_file_is_re_read_and_a_bad_one_keeps_the_old_policy() {
    let sim = Sim::start(SimConfig::default().scenario_file(shipped_scenario("power-loss.yaml")))
        .await
        .unwrap();
    let node = node_after_power_cut();
    let config = node.state.parent().unwrap().join("config.yaml");
    // More stuck VMs than maxVms: the plan is refused whole, nothing is touched.
    std::fs::write(&config, "maxVms: 1\n").unwrap();
    let config_arg = config.to_str().unwrap();
    let agent = Agent::start_with_env(
        &node,
        sim.kubeconfig_path(),
        &["--act-on", "always", "--config", config_arg],
        &[("VMRECOVER_CONFIG_CHECK", "200ms")],
    );
    eventually("a decision pass", || {
        agent_status(&node)["last_pass"].is_array()
    })
    .await;
    assert_eq!(
        agent_status(&node)["config"]["file"].as_str(),
        Some(config_arg)
    );
    let (_, text) = agent.get("/metrics").await;
    assert_eq!(
        metric(&text, "vmrecover_config_last_reload_successful"),
        1.0
    );
    assert!(
        vm_exists(&sim, "default", "vm-web-01"),
        "maxVms 1 refuses the plan"
    );

    // A typo: refused, named, and the old policy (maxVms 1) stays in force.
    std::fs::write(&config, "maxVms: fifty\n").unwrap();
    eventually("the bad file to be refused", || {
        agent_status(&node)["config"]["refused"].is_string()
    })
    .await;
    let refused = agent_status(&node)["config"]["refused"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        refused.contains(config_arg)
            && refused.contains("line 1")
            && refused.contains("at least 1"),
        "{refused}"
    );
    let (_, text) = agent.get("/metrics").await;
    assert_eq!(
        metric(&text, "vmrecover_config_last_reload_successful"),
        0.0
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .args(["--node", NODE, "--state-dir"])
        .arg(&node.state)
        .arg("--host-root")
        .arg(&node.root)
        .args(["--kubeconfig"])
        .arg(sim.kubeconfig_path())
        .args(["--config", config_arg, "status"])
        .output()
        .unwrap();
    // `status` with the same bad file refuses to decide with it, naming it.
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(vm_exists(&sim, "default", "vm-web-01"), "still maxVms 1");

    // Fixed: decided with at once, and the stuck VMs are recovered.
    std::fs::write(&config, "maxVms: 50\n").unwrap();
    eventually("the stuck VMs to be recovered under the new file", || {
        !vm_exists(&sim, "default", "vm-web-01")
    })
    .await;
    assert!(agent_status(&node)["config"]["refused"].is_null());
    let (_, text) = agent.get("/metrics").await;
    assert_eq!(
        metric(&text, "vmrecover_config_last_reload_successful"),
        1.0
    );
    assert_eq!(agent.terminate(), 0);
}

/// An agent that starts with a bad configuration file (a ConfigMap edited by hand, then the
/// power cut) neither crash-loops nor guesses a policy: it reports only, says why, and takes
/// the file as soon as it is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_started_with_a_bad_config_file_reports_only_until_it_is_fixed() {
    let sim = Sim::start(SimConfig::default().scenario_file(shipped_scenario("power-loss.yaml")))
        .await
        .unwrap();
    let node = node_after_power_cut();
    let config = node.state.parent().unwrap().join("config.yaml");
    std::fs::write(&config, "maxVms: 50\nstuckAfer: 5m\n").unwrap();
    let agent = Agent::start_with_env(
        &node,
        sim.kubeconfig_path(),
        &["--act-on", "always", "--config", config.to_str().unwrap()],
        &[("VMRECOVER_CONFIG_CHECK", "200ms")],
    );
    eventually("a decision pass", || {
        agent_status(&node)["last_pass"].is_array()
    })
    .await;
    let status = agent_status(&node);
    assert_eq!(status["acting"], false, "{status:#}");
    let refused = status["config"]["refused"].as_str().unwrap_or("");
    assert!(
        refused.contains("line 2") && refused.contains("unknown field `stuckAfer`"),
        "{status:#}"
    );
    let (_, text) = agent.get("/metrics").await;
    assert_eq!(
        metric(&text, "vmrecover_config_last_reload_successful"),
        0.0
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes: Vec<_> = sim
        .mutating_requests()
        .into_iter()
        .filter(|r| !r.path.contains("/configmaps/vmrecover-summary-"))
        .collect();
    assert!(
        writes.is_empty(),
        "it acted on a policy it could not read: {writes:#?}"
    );

    std::fs::write(&config, "maxVms: 50\nstuckAfter: 5m\n").unwrap();
    eventually(
        "the stuck VMs to be recovered once the file is fixed",
        || !vm_exists(&sim, "default", "vm-web-01"),
    )
    .await;
    assert_eq!(agent_status(&node)["acting"], true);
    let (_, text) = agent.get("/metrics").await;
    assert_eq!(
        metric(&text, "vmrecover_config_last_reload_successful"),
        1.0
    );
    assert_eq!(agent.terminate(), 0);
}
