//! Monitoring (issue 17 item 3): the chart's PrometheusRule checked with `promtool check rules`
//! and every alert unit-tested with `promtool test rules` (monitoring/vmrecover-rules.test.yaml
//! over monitoring/vmrecover-rules.yaml, the rule group rendered with default values); the
//! ServiceMonitor adds the `node` label; the Grafana dashboard ConfigMap is where
//! rancher-monitoring's Grafana looks; a live agent's `/metrics` passes `promtool check
//! metrics` and serves every metric the alerts and the dashboard query.
//!
//! promtool is Debian's `prometheus` package; without it (outside CI) its tests skip.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::chart_support::*;
use harvester_sim::{shipped_scenario, Sim, SimConfig};
use serde_json::Value;

fn promtool() -> Option<PathBuf> {
    tool("promtool", &["/usr/bin/promtool"])
        .or_else(|| skip("no promtool (apt-get install prometheus)"))
}

fn run(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().expect("run promtool");
    (o.status.success(), text(&o))
}

#[test]
fn promtool_checks_the_rules_and_unit_tests_every_alert() {
    let Some(promtool) = promtool() else { return };
    let dir = repo().join("monitoring");
    let (ok, out) = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(dir.join("vmrecover-rules.yaml")));
    assert!(ok, "promtool check rules:\n{out}");
    println!("{out}");
    let (ok, out) = run(Command::new(&promtool)
        .args(["test", "rules"])
        .arg(dir.join("vmrecover-rules.test.yaml")));
    assert!(ok, "promtool test rules:\n{out}");
    println!("{out}");
    // Every alert of the rules file has a unit test.
    let rules = std::fs::read_to_string(dir.join("vmrecover-rules.yaml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("vmrecover-rules.test.yaml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 7, "{alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {a}\n        exp_alerts:\n          - exp_labels"
            )),
            "alert {a} has no firing unit test in monitoring/vmrecover-rules.test.yaml"
        );
    }
}

#[test]
fn alert_durations_follow_the_values() {
    let Some(py) = helm_python() else { return };
    let objs = objects(&template(
        &py,
        "harvester-system",
        &[
            r#"{"metrics":{"prometheusRule":{"enabled":true,"blockedFor":"45m","runFailedWindow":"2h","labels":{"team":"infra"}}}}"#,
        ],
    ));
    let rule = find(&objs, "PrometheusRule", "vmrecover");
    assert_eq!(rule["metadata"]["labels"]["team"], "infra");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let by = |name: &str| rules.iter().find(|r| r["alert"] == name).unwrap();
    assert_eq!(by("VmrecoverVMsBlockedAfterUncleanBoot")["for"], "45m");
    assert!(
        by("VmrecoverVMsBlockedAfterUncleanBoot")["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("for more than 45m")
    );
    assert!(by("VmrecoverRunFailed")["expr"]
        .as_str()
        .unwrap()
        .contains("[2h]"));
    // Alert texts reach Prometheus as templates, not rendered by Helm.
    assert!(
        by("VmrecoverVMsBlockedAfterUncleanBoot")["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("{{ $labels.node }}")
    );
}

#[test]
fn every_alert_links_its_runbook_section() {
    let Some(py) = helm_python() else { return };
    let runbook = std::fs::read_to_string(repo().join("docs/runbook.md")).unwrap();
    for (values, base) in [
        (
            r#"{"metrics":{"prometheusRule":{"enabled":true}}}"#,
            "docs/runbook.md",
        ),
        (
            r#"{"metrics":{"prometheusRule":{"enabled":true,"runbookBaseUrl":"http://docs.site.internal/runbook.html"}}}"#,
            "http://docs.site.internal/runbook.html",
        ),
    ] {
        let objs = objects(&template(&py, "harvester-system", &[values]));
        let rule = find(&objs, "PrometheusRule", "vmrecover");
        for r in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
            let alert = r["alert"].as_str().unwrap();
            let url = r["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert} has no runbook_url"));
            let anchor = url
                .strip_prefix(&format!("{base}#"))
                .unwrap_or_else(|| panic!("{alert}: {url} is not under {base}"));
            assert_eq!(anchor, alert.to_lowercase());
            assert!(
                runbook.contains(&format!("<a id=\"{anchor}\"></a>\n### {alert} (")),
                "docs/runbook.md has no section {alert} with anchor {anchor}"
            );
        }
    }
}

#[test]
fn the_agent_down_alert_leaves_a_node_that_is_down_to_kubernetes() {
    let rules = std::fs::read_to_string(repo().join("monitoring/vmrecover-rules.yaml")).unwrap();
    let at = rules.find("alert: VmrecoverAgentDown").unwrap();
    let expr = &rules[at..];
    assert!(
        expr.contains(r#"kube_node_status_condition{condition="Ready",status="true"}"#),
        "{expr}"
    );
}

#[test]
fn the_service_monitor_scrapes_every_agent_and_names_its_node() {
    let Some(py) = helm_python() else { return };
    let objs = objects(&template(&py, "harvester-system", &[ALL_ON]));
    let ds = find(&objs, "DaemonSet", "vmrecover");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let svc = find(&objs, "Service", "vmrecover-metrics");
    assert_eq!(svc["spec"]["clusterIP"], "None", "headless");
    // The Service selects exactly the DaemonSet's pods (its selector, a subset of their labels).
    assert_eq!(
        &svc["spec"]["selector"],
        &ds["spec"]["selector"]["matchLabels"]
    );
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "{k}");
    }
    assert_eq!(svc["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    let port = &ds["spec"]["template"]["spec"]["containers"][0]["ports"][0];
    assert_eq!(port["name"], "metrics");
    assert_eq!(svc["spec"]["ports"][0]["port"], port["containerPort"]);
    let sm = find(&objs, "ServiceMonitor", "vmrecover");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selects the Service"
        );
    }
    assert_eq!(
        strs(&sm["spec"]["namespaceSelector"]["matchNames"]),
        ["harvester-system"]
    );
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], "metrics");
    assert_eq!(ep["path"], "/metrics");
    let relabel = ep["relabelings"].as_array().unwrap();
    assert!(
        relabel.iter().any(
            |r| strs(&r["sourceLabels"]) == ["__meta_kubernetes_pod_node_name"]
                && r["targetLabel"] == "node"
        ),
        "the node label: {relabel:?}"
    );
    assert!(relabel
        .iter()
        .any(|r| r["targetLabel"] == "job" && r["replacement"] == "vmrecover"));
}

#[test]
fn the_dashboard_is_where_rancher_monitoring_looks() {
    let Some(py) = helm_python() else { return };
    let objs = objects(&template(&py, "harvester-system", &[ALL_ON]));
    let cm = find(&objs, "ConfigMap", "vmrecover-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "cattle-dashboards");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dash: Value =
        serde_json::from_str(cm["data"]["vmrecover.json"].as_str().unwrap()).expect("JSON");
    let titles: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    // rancher-monitoring per Harvester release (harvester-installer scripts/version-monitoring
    // v1.4.0/v1.5.0, harvester/addons version_info v1.6/v1.7/v1.8): 103.1.1+up45.31.1 (1.4,
    // Grafana 9.1.5, newest dashboard schema 37), 105.1.2+up61.3.2 (1.5, 1.6; Grafana 11.1.0),
    // 107.1.0+up69.8.2 (1.7), 108.0.2+up77.9.1 (1.8). Newer Grafanas migrate an older schema
    // on load; an older one does not load a newer schema. Panel kinds and transformations
    // Grafana 9.1 has.
    assert!(
        dash["schemaVersion"].as_u64().unwrap() <= 37,
        "{}",
        dash["schemaVersion"]
    );
    for p in dash["panels"].as_array().unwrap() {
        assert!(
            ["stat", "table", "timeseries"].contains(&p["type"].as_str().unwrap()),
            "{}",
            p["type"]
        );
        for t in p["transformations"].as_array().into_iter().flatten() {
            assert!(
                ["labelsToFields", "organize"].contains(&t["id"].as_str().unwrap()),
                "{}",
                t["id"]
            );
        }
    }
    for want in [
        "Boot verdict per node (this boot)",
        "VMs by decision and reason",
        "Actions over time",
    ] {
        assert!(titles.contains(&want), "{titles:?}");
    }
}

/// Every `vmrecover_*` metric family a query names (`_total`, `_bucket` folded).
fn families_queried(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("vmrecover_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_string();
        out.insert(family);
    }
    out
}

/// OpenMetrics text as the Prometheus text format 0.0.4 names it: counter families get their
/// samples' `_total` name in HELP and TYPE, `# EOF` goes; nothing else changes.
fn openmetrics_as_text_format(om: &str) -> String {
    let counters: BTreeSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::new();
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_agents_metrics_pass_promtool_and_serve_what_the_alerts_query() {
    let Some(promtool) = promtool() else { return };
    let sim = Sim::start(SimConfig::default().scenario_file(shipped_scenario("power-loss.yaml")))
        .await
        .expect("start harvester-sim");
    let state = tempfile::tempdir().unwrap();
    let root = state.path().join("host");
    fake_host_root(&root);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .args(["--kubeconfig"])
        .arg(sim.kubeconfig_path())
        .args(["--node", "harvester-node-1", "--log-target", "stderr"])
        .arg("--state-dir")
        .arg(state.path())
        .arg("--host-root")
        .arg(&root)
        // A recovery, so that every family has series (the action counters appear with the
        // first action).
        .args(["--stuck-after", "0s", "--controller-grace", "1s"])
        .args(["agent", "--act-on", "always", "--boot-window", "100000h"])
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");
    // Wait for a recovery (the action counters) or give up after two minutes.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut metrics = String::new();
    while Instant::now() < deadline {
        if let Some(body) = tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
            .await
            .unwrap()
        {
            metrics = body;
            if metrics.contains("vmrecover_vms{") && metrics.contains("vmrecover_actions_total{") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        metrics.contains("vmrecover_vms{") && metrics.contains("vmrecover_actions_total{"),
        "no recovery in /metrics:\n{metrics}"
    );
    // The agent serves OpenMetrics 1.0 (its Content-Type says so; Prometheus scrapes it as
    // such), which ends with `# EOF` and names a counter family `foo` with samples
    // `foo_total`. promtool (2.42) lints the Prometheus text format 0.0.4, where the family
    // is named after its samples: rename exactly those HELP/TYPE names and drop `# EOF`;
    // every sample line is linted as served.
    assert_eq!(
        metrics.lines().last(),
        Some("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    let lintable = openmetrics_as_text_format(&metrics);
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lintable.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics:\n{}\n{lintable}",
        text(&o)
    );
    println!("promtool check metrics: ok {}", text(&o));

    // Every family the alerts and the dashboard query is served.
    let served: BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    let rules = std::fs::read_to_string(repo().join("monitoring/vmrecover-rules.yaml")).unwrap();
    let dash =
        std::fs::read_to_string(repo().join("charts/vmrecover/files/grafana-dashboard.json"))
            .unwrap();
    for (what, text) in [("alert", rules), ("dashboard", dash)] {
        let queried = families_queried(&text);
        assert!(!queried.is_empty());
        let missing: Vec<_> = queried.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "the {what} queries metrics the agent does not serve: {missing:?} (served: {served:?})"
        );
    }
}
