//! The performance benchmark of issue 8: recovery at scale against the kubectl baseline,
//! the boot check's cost, the node scan's cost and the agent's footprint, measured in one
//! run against `harvester-sim` on this machine. Prints its figures; never asserts a time.
//!
//! Run: `cargo bench --bench bench -- recovery_scale`.
//!
//! Environment (all optional):
//! - `BENCH_VMS` (5000), `BENCH_NODES` (50), `BENCH_STUCK` (300), `BENCH_NAMESPACES` (10):
//!   the generated cluster.
//! - `BENCH_KUBECTL`: the kubectl binary of the baseline (default: the version-matched
//!   `/usr/lib/google-cloud-sdk/bin/kubectl.1.32` when present, else `kubectl`).
//! - `BENCH_SKIP_BASELINE=1`: skip the kubectl baseline (it takes minutes).
//! - `BENCH_RUN_LOG=<dir>`: keep the run's stderr and the request log there.
//! - `BENCH_JOURNAL_SIZES` ("20000,200000"), `BENCH_JOURNAL_BOOTS` (20),
//!   `BENCH_STATUS_RUNS` (10): the boot check.
//! - `BENCH_PROCESSES` (2000), `BENCH_VOLUMES` (500), `BENCH_SCAN_ITERATIONS` (20): the node scan.
//! - `BENCH_IDLE_SECS` (60): the agent's idle CPU window; `BENCH_AGENT_TIMEOUT_SECS` (120):
//!   how long the agent may take to recover the scale scenario.
//! - `BENCH_AGENT_WRAPPER=<program>`: start the agent as `<program> <vmrecover> <args>` (a
//!   heap profiler: `heaptrack`); its RSS figures are then the wrapper's, not the agent's.

use crate::{agent, footprint, journal, node, requests, scenario};

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use harvester_sim::{RequestRecord, Sim, SimConfig};
use scenario::NODE;

const BIN: &str = env!("CARGO_BIN_EXE_vmrecover");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One line of the final figures table.
struct Figure {
    what: String,
    value: String,
    target: String,
    verdict: String,
}

#[derive(Default)]
struct Figures(Vec<Figure>);

impl Figures {
    fn add(&mut self, what: &str, value: String, target: &str, met: Option<bool>) {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        self.0.push(Figure {
            what: what.into(),
            value,
            target: target.into(),
            verdict: verdict.into(),
        });
    }

    fn print(&self) {
        let w0 = self.0.iter().map(|f| f.what.len()).max().unwrap_or(0);
        let w1 = self.0.iter().map(|f| f.value.len()).max().unwrap_or(0);
        let w2 = self.0.iter().map(|f| f.target.len()).max().unwrap_or(0);
        println!("\n==================== recovery_scale figures ====================");
        for f in &self.0 {
            println!(
                "{:<w0$}  {:>w1$}  {:<w2$}  {}",
                f.what, f.value, f.target, f.verdict
            );
        }
    }
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d.get(d.len() / 2).copied().unwrap_or_default()
}

fn min(d: &[Duration]) -> Duration {
    d.iter().min().copied().unwrap_or_default()
}

/// Runs the benchmark and prints its figures.
pub fn run() {
    crate::runtime().block_on(bench());
}

async fn bench() {
    let mut figures = Figures::default();
    let shape = scenario::Shape {
        total: env_usize("BENCH_VMS", 5000),
        nodes: env_usize("BENCH_NODES", 50),
        stuck: env_usize("BENCH_STUCK", 300),
        namespaces: env_usize("BENCH_NAMESPACES", 10),
        stuck_nodes: 1,
    };
    println!(
        "recovery_scale: vmrecover {BIN} ({} bytes)",
        std::fs::metadata(BIN).map(|m| m.len()).unwrap_or(0)
    );

    let t = Instant::now();
    let generated = scenario::generate(&shape);
    println!(
        "scenario: {} VMs over {} nodes, {} stuck on {NODE} ({} with a leftover launcher pod), {} namespaces: {} objects, {} of YAML, generated in {}",
        shape.total,
        shape.nodes,
        shape.stuck,
        generated.leftover_pods,
        shape.namespaces,
        generated.objects,
        mib(generated.text.len() as u64),
        ms(t.elapsed())
    );

    healthy_node_pass(&generated.text, &mut figures).await;
    let ours = recovery_vmrecover(&generated.text, &shape, &mut figures).await;
    if std::env::var("BENCH_SKIP_BASELINE").is_ok_and(|v| v == "1") {
        figures.add("kubectl baseline", "skipped".into(), "", None);
    } else {
        recovery_baseline(&generated.text, &shape, ours, &mut figures).await;
    }
    agent_footprint(&generated.text, &shape, &mut figures).await;
    boot_check(&mut figures);
    node_scan(&mut figures);

    let size = std::fs::metadata(BIN).map(|m| m.len()).unwrap_or(0);
    figures.add("release binary size (stripped)", mib(size), "", None);
    figures.print();
}

async fn start_sim(text: &str) -> Option<Sim> {
    let t = Instant::now();
    match Sim::start(SimConfig::default().scenario_text(text.to_string())).await {
        Ok(sim) => {
            println!("sim: loaded and listening in {}", ms(t.elapsed()));
            Some(sim)
        }
        Err(e) => {
            eprintln!("sim: cannot start: {e:#}");
            None
        }
    }
}

/// What the vmrecover run measured, for the ratio.
#[derive(Clone, Copy)]
struct Ours {
    wall: Duration,
}

fn print_breakdown(log: &[&RequestRecord]) {
    println!(
        "  {:>6}  {:>11}  {:<9} {:<36} {:<16} selector",
        "count", "bytes", "verb", "resource", "scope"
    );
    for ((verb, resource, scope, selector), row) in requests::breakdown(log) {
        println!(
            "  {:>6}  {:>11}  {verb:<9} {resource:<36} {scope:<16} {selector}",
            row.count, row.bytes
        );
    }
    for flag in requests::replaceable_lists(log) {
        println!("  FLAG: {flag}");
    }
}

async fn recovery_vmrecover(
    text: &str,
    shape: &scenario::Shape,
    figures: &mut Figures,
) -> Option<Ours> {
    println!("\n== 1a. vmrecover run on the scale scenario");
    let sim = start_sim(text).await?;
    let (state, host, journal) = match (
        tempfile::tempdir(),
        empty_host_root_of_node(),
        tempfile::tempdir(),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => {
            eprintln!("cannot create temporary directories");
            return None;
        }
    };
    sim.clear_requests();
    let started = jiff::Timestamp::now();
    let t = Instant::now();
    let out = tokio::process::Command::new(BIN)
        .arg("--kubeconfig")
        .arg(sim.kubeconfig_path())
        .args(["--node", NODE, "--log-target", "stderr", "--state-dir"])
        .arg(state.path())
        .arg("--host-root")
        .arg(host.path())
        .arg("--journal-dir")
        .arg(journal.path())
        .args([
            "run",
            "--yes",
            "--stuck-after",
            "0s",
            "--controller-grace",
            "0s",
            "--max-vms",
            "1000",
            "--output",
            "json",
        ])
        .stdin(Stdio::null())
        .output()
        .await;
    let wall = t.elapsed();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cannot run {BIN}: {e}");
            return None;
        }
    };
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let outcomes = report["outcomes"].as_array().cloned().unwrap_or_default();
    let by_result = |r: &str| outcomes.iter().filter(|o| o["result"] == r).count();
    let done = scenario::recovered(&sim, shape);
    println!(
        "vmrecover run: exit {:?} in {}; report: {} outcomes, {} recovered; cluster: {done}/{} stuck VMs gone",
        out.status.code(),
        ms(wall),
        outcomes.len(),
        by_result("recovered"),
        shape.stuck
    );
    if done < shape.stuck {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        eprintln!(
            "vmrecover did not recover every stuck VM; last stderr lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let log = sim.requests();
    keep_run_log(&out.stderr, &log);
    let client = requests::client_requests(&log);
    let totals = requests::totals(&client);
    print_breakdown(&client);
    let at = |r: Option<&&RequestRecord>| r.and_then(|r| r.time.parse::<jiff::Timestamp>().ok());
    if let (Some(first), Some(write), Some(last)) = (
        at(client.first()),
        at(client.iter().find(|r| r.is_mutating())),
        at(client.last()),
    ) {
        let span = |a: jiff::Timestamp, b: jiff::Timestamp| {
            ms(Duration::from_secs_f64(
                (b.as_nanosecond() - a.as_nanosecond()).max(0) as f64 / 1e9,
            ))
        };
        println!(
            "phases (server clock): first request {} after start; reads until the first write {}; writes {}",
            span(started, first),
            span(first, write),
            span(write, last)
        );
    }
    let beyond = totals.requests - totals.initial_reads;
    let per_vm = beyond as f64 / done.max(1) as f64;
    println!(
        "requests: {} total ({} before the first write, {} after: {:.2} per recovered VM); {} writes; bytes: {} in, {} out",
        totals.requests,
        totals.initial_reads,
        beyond,
        per_vm,
        totals.writes,
        mib(totals.bytes_in),
        mib(totals.bytes_out)
    );
    let mut narrowable = 0;
    for v in requests::unnarrowed_lists(&client) {
        match &v.could_narrow {
            Some(how) => {
                narrowable += v.count;
                println!(
                    "  NARROWABLE: {} ×{}: {how} could narrow it",
                    v.what, v.count
                );
            }
            None => println!("  unnarrowed: {} ×{}: {}", v.what, v.count, v.note),
        }
    }
    figures.add(
        &format!("vmrecover run: {} stuck VMs recovered", shape.stuck),
        format!("{done}/{}", shape.stuck),
        "all",
        Some(done == shape.stuck),
    );
    figures.add(
        "vmrecover run wall time (before: 34.0 s)",
        ms(wall),
        "",
        None,
    );
    figures.add(
        "API requests, total (initial reads)",
        format!("{} ({})", totals.requests, totals.initial_reads),
        "",
        None,
    );
    figures.add(
        "API requests per recovered VM beyond initial reads",
        format!("{per_vm:.2}"),
        "",
        None,
    );
    let all_per_vm = totals.requests as f64 / done.max(1) as f64;
    figures.add(
        "API requests per recovered VM in total, reads included (before: 14.2)",
        format!("{all_per_vm:.2}"),
        "<= 8",
        Some(all_per_vm <= 8.0),
    );
    figures.add(
        "bytes transferred (server in + out)",
        mib(totals.bytes_in + totals.bytes_out),
        "",
        None,
    );
    figures.add(
        "lists a selector could have narrowed",
        narrowable.to_string(),
        "0",
        Some(narrowable == 0),
    );
    Some(Ours { wall })
}

/// With `BENCH_RUN_LOG=<dir>`: the run's stderr and the simulator's request log (JSON lines)
/// kept there, to see where a run's time goes.
fn keep_run_log(stderr: &[u8], log: &[RequestRecord]) {
    let Ok(dir) = std::env::var("BENCH_RUN_LOG") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let lines: Vec<String> = log
        .iter()
        .filter_map(|r| serde_json::to_string(r).ok())
        .collect();
    let kept = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("run.stderr"), stderr))
        .and_then(|()| std::fs::write(dir.join("requests.jsonl"), lines.join("\n")));
    match kept {
        Ok(()) => println!("run log kept in {}", dir.display()),
        Err(e) => eprintln!("cannot keep the run log in {}: {e}", dir.display()),
    }
}

fn kubectl() -> String {
    std::env::var("BENCH_KUBECTL").unwrap_or_else(|_| {
        let matched = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";
        if Path::new(matched).exists() {
            matched.into()
        } else {
            "kubectl".into()
        }
    })
}

async fn recovery_baseline(
    text: &str,
    shape: &scenario::Shape,
    ours: Option<Ours>,
    figures: &mut Figures,
) {
    println!("\n== 1b. kubectl baseline (benches/bench/kubectl_baseline.sh) on the same scenario");
    let Some(sim) = start_sim(text).await else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bench/kubectl_baseline.sh");
    let home = tempfile::tempdir().ok();
    let k = kubectl();
    sim.clear_requests();
    let t = Instant::now();
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(&script)
        .arg(NODE)
        .env("KUBECONFIG", sim.kubeconfig_path())
        .env("KUBECTL", &k)
        .stdin(Stdio::null());
    // A fresh HOME: kubectl starts with an empty discovery cache, as on a fresh admin box.
    if let Some(h) = &home {
        cmd.env("HOME", h.path());
    }
    let out = cmd.output().await;
    let wall = t.elapsed();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cannot run the baseline: {e}");
            return;
        }
    };
    let done = scenario::recovered(&sim, shape);
    println!(
        "baseline ({k}): exit {:?} in {}; {}; cluster: {done}/{} stuck VMs gone",
        out.status.code(),
        ms(wall),
        String::from_utf8_lossy(&out.stdout).trim(),
        shape.stuck
    );
    if !out.status.success() {
        eprintln!("baseline stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    let log = sim.requests();
    keep_run_log(&out.stderr, &log);
    let client = requests::client_requests(&log);
    let totals = requests::totals(&client);
    print_breakdown(&client);
    println!(
        "requests: {} total; bytes: {} in, {} out",
        totals.requests,
        mib(totals.bytes_in),
        mib(totals.bytes_out)
    );
    figures.add(
        "kubectl baseline: stuck VMs recovered",
        format!("{done}/{}", shape.stuck),
        "",
        None,
    );
    figures.add("kubectl baseline wall time", ms(wall), "", None);
    figures.add(
        "kubectl baseline API requests (bytes)",
        format!(
            "{} ({})",
            totals.requests,
            mib(totals.bytes_in + totals.bytes_out)
        ),
        "",
        None,
    );
    if let Some(o) = ours {
        let ratio = wall.as_secs_f64() / o.wall.as_secs_f64().max(1e-9);
        figures.add(
            "speed-up over the kubectl baseline (before: 1.5x)",
            format!("{ratio:.1}x"),
            ">= 20x",
            Some(ratio >= 20.0),
        );
    }
}

/// A TCP port free right now on loopback.
fn free_port() -> Option<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ok()
}

async fn agent_footprint(text: &str, shape: &scenario::Shape, figures: &mut Figures) {
    println!("\n== 4. agent footprint");
    let help = tokio::process::Command::new(BIN)
        .args(["agent", "--help"])
        .output()
        .await;
    let has_agent = help
        .as_ref()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("--metrics-addr")
        })
        .unwrap_or(false);
    if !has_agent {
        println!("agent: not measured (not built yet)");
        figures.add(
            "agent RSS / idle CPU",
            "not measured (not built yet)".into(),
            "",
            None,
        );
        return;
    }
    let Some(sim) = start_sim(text).await else {
        return;
    };
    let (Ok(state), Ok(host), Ok(journal)) = (
        tempfile::tempdir(),
        empty_host_root_of_node(),
        tempfile::tempdir(),
    ) else {
        return;
    };
    let port = free_port().unwrap_or(19477);
    // The agent recovers only within its boot window: this machine booted long ago.
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split('.').next().and_then(|s| s.parse::<u64>().ok()))
        .unwrap_or(0);
    let boot_window = format!("{}s", uptime + 3600);
    // Its log goes to a file: a pipe nobody reads would block it once full.
    let log_path = state.path().join("agent.log");
    let stderr_file = match std::fs::File::create(&log_path) {
        Ok(f) => Stdio::from(f),
        Err(_) => Stdio::null(),
    };
    let paths = agent::AgentPaths {
        kubeconfig: sim.kubeconfig_path(),
        state: state.path(),
        host: host.path(),
        journal: journal.path(),
    };
    let wrapper = std::env::var("BENCH_AGENT_WRAPPER").ok();
    let child = agent::command(
        wrapper.as_deref().unwrap_or(BIN),
        NODE,
        &paths,
        &boot_window,
        &format!("127.0.0.1:{port}"),
        stderr_file,
    )
    .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            println!("agent: not measured (cannot start: {e})");
            return;
        }
    };
    let Some(pid) = child.id() else {
        return;
    };
    // "After start": the first moment its health endpoint answers (or 2 s).
    let t = Instant::now();
    let mut started_rss = None;
    while t.elapsed() < Duration::from_secs(10) {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            started_rss = footprint::rss_kib(pid);
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let err = std::fs::read_to_string(&log_path).unwrap_or_default();
            println!(
                "agent: not measured (it exited with {status}: {})",
                err.lines().last().unwrap_or("")
            );
            figures.add(
                "agent RSS / idle CPU",
                format!("not measured (exited: {status})"),
                "",
                None,
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Recovering the scale scenario: until every stuck VM is gone (or 5 minutes).
    let t = Instant::now();
    let limit = Duration::from_secs(env_usize("BENCH_AGENT_TIMEOUT_SECS", 120) as u64);
    while scenario::recovered(&sim, shape) < shape.stuck && t.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovery = t.elapsed();
    let done = scenario::recovered(&sim, shape);
    if done < shape.stuck {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(6).collect();
        println!(
            "agent: recovered {done}/{} within {}; its last log lines:\n{}",
            shape.stuck,
            ms(limit),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    // Let it settle into its watch, then measure the idle window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_rss = footprint::rss_kib(pid);
    let idle = Duration::from_secs(env_usize("BENCH_IDLE_SECS", 60) as u64);
    let before = footprint::cpu_ticks(pid);
    tokio::time::sleep(idle).await;
    let after = footprint::cpu_ticks(pid);
    // The agent re-decides right after a run (another pass over the large lists), so
    // the RSS at the end of the idle window is the one an idle node pays for.
    let idle_rss = footprint::rss_kib(pid);
    let idle_anon = footprint::status_kib(pid, "RssAnon");
    let idle_file = footprint::status_kib(pid, "RssFile");
    let peak_rss = footprint::peak_rss_kib(pid);
    let tps = footprint::ticks_per_second();
    let _ = child.start_kill();
    let _ = child.wait().await;
    let kib =
        |v: Option<u64>| v.map_or("?".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!(
        "agent: RSS after start {}, after recovering {done}/{} stuck VMs in {} {}",
        kib(started_rss),
        shape.stuck,
        ms(recovery),
        kib(after_rss)
    );
    figures.add("agent RSS after start", kib(started_rss), "", None);
    figures.add(
        "agent peak RSS, VmHWM (before: 147.0 MiB)",
        kib(peak_rss),
        "<= 64 MiB",
        peak_rss.map(|k| k <= 64 * 1024),
    );
    figures.add(
        &format!(
            "agent RSS idle after the run, end of the {} s window (before: 56.5 MiB)",
            idle.as_secs()
        ),
        kib(idle_rss),
        "< 20 MiB",
        idle_rss.map(|k| k < 20 * 1024),
    );
    figures.add(
        "  of which anonymous (heap, stacks) / file-backed (the binary)",
        format!("{} / {}", kib(idle_anon), kib(idle_file)),
        "",
        None,
    );
    figures.add(
        &format!("agent RSS after recovering {done}/{} VMs", shape.stuck),
        kib(after_rss),
        "",
        None,
    );
    if let (Some(b), Some(a)) = (before, after) {
        let cpu = (a.saturating_sub(b)) as f64 / tps as f64;
        figures.add(
            &format!("agent CPU while idle over {} s", idle.as_secs()),
            format!(
                "{:.2} s ({:.3}%)",
                cpu,
                100.0 * cpu / idle.as_secs_f64().max(1e-9)
            ),
            "",
            None,
        );
    }
}

fn status_once(
    journal_dir: &Path,
    host: &Path,
    state: &Path,
    kubeconfig: &Path,
) -> (Duration, String) {
    let t = Instant::now();
    let out = std::process::Command::new(BIN)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--node", NODE, "--log-target", "stderr", "--state-dir"])
        .arg(state)
        .arg("--host-root")
        .arg(host)
        .arg("--journal-dir")
        .arg(journal_dir)
        .args(["status", "--output", "json"])
        .stdin(Stdio::null())
        .output();
    let wall = t.elapsed();
    let verdict = out
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .map(|v| v["boot"]["verdict"]["verdict"].to_string())
        .unwrap_or_else(|| "no output".into());
    (wall, verdict)
}

/// A kubeconfig path that does not exist: `status` has no cluster to read (a node without
/// cluster access), so the figure is the boot check's own cost. An API server that is
/// configured but unreachable adds the bounded retries of `src/cluster/retry.rs` (~1.75 s).
fn closed_kubeconfig(dir: &Path) -> PathBuf {
    dir.join("no-kubeconfig")
}

fn boot_check(figures: &mut Figures) {
    println!("\n== 2. boot check: vmrecover status over a large journal (no cluster)");
    let boots = env_usize("BENCH_JOURNAL_BOOTS", 20).max(3);
    let runs = env_usize("BENCH_STATUS_RUNS", 10).max(1);
    let sizes: Vec<usize> = std::env::var("BENCH_JOURNAL_SIZES")
        .unwrap_or_else(|_| "20000,200000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let Ok(work) = tempfile::tempdir() else {
        return;
    };
    let kubeconfig = closed_kubeconfig(work.path());
    for total in sizes {
        let per_boot = (total / boots).max(10);
        let dir = work.path().join(format!("journal-{total}"));
        let t = Instant::now();
        let export = journal::export(boots, per_boot);
        let built = journal::build(&dir, &export);
        drop(export);
        let entries = match built {
            Ok(n) => n,
            Err(e) => {
                println!("journal of {total} entries: not built: {e}");
                figures.add(
                    &format!("status, {total}-entry journal"),
                    format!("not measured: {e}"),
                    "< 300 ms",
                    None,
                );
                continue;
            }
        };
        println!(
            "journal: {entries} entries over {boots} boots, {} on disk, built in {}",
            mib(journal::dir_size(&dir)),
            ms(t.elapsed())
        );
        let root = work.path().join(format!("root-{total}"));
        let state = work.path().join(format!("state-{total}"));
        let this_boot = journal::boot_id(boots - 1);
        let random = root.join("proc/sys/kernel/random");
        let prepared = std::fs::create_dir_all(&random)
            .and_then(|()| std::fs::create_dir_all(root.join("etc")))
            .and_then(|()| std::fs::create_dir_all(root.join("dev/longhorn")))
            .and_then(|()| std::fs::create_dir_all(root.join("proc/1")))
            .and_then(|()| std::fs::create_dir_all(&state))
            .and_then(|()| {
                std::fs::write(
                    random.join("boot_id"),
                    format!(
                        "{}-{}-{}-{}-{}\n",
                        &this_boot[0..8],
                        &this_boot[8..12],
                        &this_boot[12..16],
                        &this_boot[16..20],
                        &this_boot[20..32]
                    ),
                )
            })
            .and_then(|()| {
                std::fs::write(
                    root.join("etc/machine-id"),
                    format!("{}\n", journal::MACHINE_ID),
                )
            })
            .and_then(|()| {
                std::fs::write(
                    root.join("proc/1/mountinfo"),
                    "25 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n",
                )
            });
        if let Err(e) = prepared {
            eprintln!("cannot prepare the host root: {e}");
            continue;
        }
        // One warm-up (page cache), then the measured runs.
        let (_, verdict) = status_once(&dir, &root, &state, &kubeconfig);
        let times: Vec<Duration> = (0..runs)
            .map(|_| status_once(&dir, &root, &state, &kubeconfig).0)
            .collect();
        let (lo, med) = (min(&times), median(times));
        println!(
            "status over {entries} entries: verdict {verdict}; min {} median {} over {runs} runs",
            ms(lo),
            ms(med)
        );
        figures.add(
            &format!("vmrecover status, {entries}-entry journal, {boots} boots (median)"),
            ms(med),
            "< 300 ms",
            Some(med < Duration::from_millis(300)),
        );
    }
}

fn time_n<T>(n: usize, mut f: impl FnMut() -> T) -> Vec<Duration> {
    for _ in 0..2 {
        std::hint::black_box(f());
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect()
}

fn node_scan(figures: &mut Figures) {
    use vmrecover::node::{processes, volumes};
    println!("\n== 3. node scan (the same code as `cargo bench --bench bench -- node_scan`)");
    let extra = env_usize("BENCH_PROCESSES", 2000);
    let iterations = env_usize("BENCH_SCAN_ITERATIONS", 20).max(1);
    let volumes_n = env_usize("BENCH_VOLUMES", 500);
    let fleet = node::sleepers(extra);
    let table = node::process_count();
    let times = time_n(iterations, || processes::scan(Path::new("/")));
    drop(fleet);
    let (lo, med) = (min(&times), median(times));
    println!(
        "process scan over {table} processes: min {} median {}",
        ms(lo),
        ms(med)
    );
    figures.add(
        &format!("process discovery, {table} processes (median)"),
        ms(med),
        "< 50 ms",
        Some(med < Duration::from_millis(50)),
    );
    match node::disk_tree(volumes_n) {
        Ok(tree) => {
            let times = time_n(iterations, || volumes::gather(tree.path()));
            let (lo, med) = (min(&times), median(times));
            println!(
                "disk evidence over {volumes_n} Longhorn devices: min {} median {}",
                ms(lo),
                ms(med)
            );
            figures.add(
                &format!("disk evidence, {volumes_n} Longhorn devices (median)"),
                ms(med),
                "",
                None,
            );
        }
        Err(e) => eprintln!("cannot build the disk tree: {e}"),
    }
}

/// An empty host root that is the scenario's [`NODE`]: its machine-id and boot id are
/// the ones the generated Node reports.
fn empty_host_root_of_node() -> std::io::Result<tempfile::TempDir> {
    let dir = node::empty_host_root()?;
    node::write_identity(
        dir.path(),
        &scenario::machine_id(scenario::NODE_INDEX),
        &scenario::boot_id_of(scenario::NODE_INDEX),
    )?;
    Ok(dir)
}

/// Issue 16: what one pass costs on a node with nothing stuck — the reads a whole fleet of
/// healthy agents multiplies after a site-wide power cut.
async fn healthy_node_pass(text: &str, figures: &mut Figures) {
    println!("\n== 1c. one pass on a healthy node (dry-run on harvester-node-10)");
    let Some(sim) = start_sim(text).await else {
        return;
    };
    let (Ok(state), Ok(host)) = (tempfile::tempdir(), node::empty_host_root()) else {
        return;
    };
    sim.clear_requests();
    let out = tokio::process::Command::new(BIN)
        .arg("--kubeconfig")
        .arg(sim.kubeconfig_path())
        .args([
            "--node",
            "harvester-node-10",
            "--log-target",
            "stderr",
            "--state-dir",
        ])
        .arg(state.path())
        .arg("--host-root")
        .arg(host.path())
        .args(["run", "--dry-run", "--output", "json"])
        .stdin(Stdio::null())
        .output()
        .await;
    if let Err(e) = out {
        eprintln!("cannot run {BIN}: {e}");
        return;
    }
    let log = sim.requests();
    let reads: Vec<_> = log.iter().filter(|r| !r.internal).collect();
    let bytes: u64 = reads.iter().map(|r| r.bytes_out).sum();
    print_breakdown(&reads);
    // A one-shot run checks the Node once when it connects; the agent does that once at
    // start, so its every pass is the other three (tests/inprocess.rs counts them).
    figures.add(
        "healthy node dry-run: API requests (pass + connect check)",
        reads.len().to_string(),
        "<= 3 + 1",
        Some(reads.len() <= 4),
    );
    figures.add(
        "healthy node pass: bytes read (before: ~8 MB in 10 requests)",
        mib(bytes),
        "",
        None,
    );
}
