//! What an operator expects of a chart (issue 25 items 4 and 5), rendered with the real Helm
//! engine: the standard labels on every object, NOTES.txt with the next steps, the usual pod
//! and image options reaching the DaemonSet, the AppArmor field from Kubernetes 1.30 and the
//! annotation below it, host mode without an agent container (its metrics scraped through
//! the DaemonSet's host-network pod, or explicitly off), and Chart.yaml's metadata for
//! Rancher's Apps page.
//!
//! Without the venv (outside CI) the rendering tests print why they skipped.

use std::path::Path;
use std::process::Command;

use crate::chart_support::*;
use serde_json::Value;

/// NOTES.txt rendered for `namespace` with `values` (render.py leaves NOTES out of manifests).
fn notes(py: &Path, namespace: &str, values: &str) -> String {
    let o = Command::new(py)
        .args([
            "-c",
            "import json, sys, helm_python as h\n\
             c = h.Chart.load(sys.argv[1])\n\
             out = c.render(json.loads(sys.argv[3]), name='vmrecover', namespace=sys.argv[2], is_install=True)\n\
             print(out['vmrecover/templates/NOTES.txt'])",
        ])
        .arg(repo().join("charts/vmrecover"))
        .args([namespace, values])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn pod_spec(objs: &[Value]) -> &Value {
    &find(objs, "DaemonSet", "vmrecover")["spec"]["template"]["spec"]
}

#[test]
fn every_object_carries_the_standard_labels() {
    let Some(py) = helm_python() else { return };
    let objs = objects(&template(&py, "harvester-system", &[ALL_ON]));
    for o in &objs {
        let l = &o["metadata"]["labels"];
        let what = format!("{} {}", o["kind"], o["metadata"]["name"]);
        assert_eq!(l["app.kubernetes.io/name"], "vmrecover", "{what}");
        assert_eq!(l["app.kubernetes.io/instance"], "vmrecover", "{what}");
        assert_eq!(l["app.kubernetes.io/version"], "0.1.0", "{what}");
        assert_eq!(l["app.kubernetes.io/managed-by"], "Helm", "{what}");
        assert_eq!(l["helm.sh/chart"], "vmrecover-0.1.0", "{what}");
    }
    // The selector is what it always was: an upgrade cannot change a DaemonSet's selector.
    let ds = find(&objs, "DaemonSet", "vmrecover");
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        serde_json::json!({"app.kubernetes.io/name": "vmrecover", "app.kubernetes.io/component": "agent"})
    );
}

#[test]
fn notes_say_what_to_do_next() {
    let Some(py) = helm_python() else { return };
    let n = notes(&py, "harvester-system", "{}");
    for says in [
        "localhost/vmrecover:0.1.0 must be on EVERY node",
        "ImagePullBackOff",
        "boot records (the strongest evidence of a power cut) are not installed",
        "exec ds/vmrecover -c vmrecover -- vmrecover status",
        "--reset-then-reuse-values",
    ] {
        assert!(n.contains(says), "NOTES.txt does not say {says:?}:\n{n}");
    }
    assert!(!n.contains("pod-security"), "{n}");
    let n = notes(
        &py,
        "vmrecover",
        r#"{"hostUnits":{"cloudInit":{"enabled":true}}}"#,
    );
    for says in [
        "start only at each node's NEXT boot",
        "systemctl daemon-reload && systemctl enable --now vmrecover-boot.service",
        "pod-security.kubernetes.io/enforce=privileged",
    ] {
        assert!(n.contains(says), "NOTES.txt does not say {says:?}:\n{n}");
    }
}

#[test]
fn pod_and_image_options_reach_the_daemonset() {
    let Some(py) = helm_python() else { return };
    let digest = format!("sha256:{}", "ab".repeat(32));
    let values = format!(
        r#"{{"image": {{"digest": "{digest}"}}, "imagePullSecrets": [{{"name": "regcred"}}],
        "podLabels": {{"team": "infra"}}, "podAnnotations": {{"example.com/a": "b"}},
        "affinity": {{"nodeAffinity": {{"requiredDuringSchedulingIgnoredDuringExecution": {{"nodeSelectorTerms": [{{"matchExpressions": [{{"key": "k", "operator": "Exists"}}]}}]}}}}}},
        "extraArgs": ["--journal-tail", "800"], "extraEnv": [{{"name": "TZ", "value": "UTC"}}],
        "logLevel": "vmrecover=debug",
        "updateStrategy": {{"type": "RollingUpdate", "rollingUpdate": {{"maxUnavailable": "20%"}}}}}}"#
    );
    let objs = objects(&template(&py, "harvester-system", &[&values]));
    let ds = find(&objs, "DaemonSet", "vmrecover");
    let meta = &ds["spec"]["template"]["metadata"];
    assert_eq!(meta["labels"]["team"], "infra");
    assert_eq!(meta["annotations"]["example.com/a"], "b");
    let pod = pod_spec(&objs);
    assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
    assert!(pod["affinity"]["nodeAffinity"].is_object());
    let c = &pod["containers"][0];
    assert_eq!(c["image"], format!("localhost/vmrecover@{digest}"));
    assert_eq!(pod["initContainers"][0]["image"], c["image"]);
    let args = strs(&c["args"]);
    assert_eq!(args[args.len() - 2..], ["--journal-tail", "800"]);
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(env("VMRECOVER_LOG")["value"], "vmrecover=debug");
    assert_eq!(env("TZ")["value"], "UTC");
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        "20%"
    );
}

#[test]
fn apparmor_is_the_field_from_1_30_and_the_annotation_below() {
    let Some(py) = helm_python() else { return };
    for (version, field) in [("1.29.9", false), ("1.30.7", true), ("1.35.2", true)] {
        let v = format!(r#"{{"kubeVersion":"{version}"}}"#);
        let objs = objects(&template(&py, "harvester-system", &[&v]));
        let ds = find(&objs, "DaemonSet", "vmrecover");
        let annotation = &ds["spec"]["template"]["metadata"]["annotations"]
            ["container.apparmor.security.beta.kubernetes.io/vmrecover"];
        let profile = &pod_spec(&objs)["containers"][0]["securityContext"]["appArmorProfile"];
        if field {
            assert_eq!(profile["type"], "Unconfined", "{version}");
            assert!(annotation.is_null(), "{version}: the deprecated annotation");
        } else {
            assert!(profile.is_null(), "{version}: no such field before 1.30");
            assert_eq!(annotation, "unconfined", "{version}");
        }
    }
}

#[test]
fn host_mode_runs_no_agent_container_and_its_metrics_are_scraped_or_off() {
    let Some(py) = helm_python() else { return };
    let host = r#"{"hostUnits":{"cloudInit":{"enabled":true,"hostMode":true}},"metrics":{"service":{"enabled":true},"serviceMonitor":{"enabled":true}}}"#;
    let objs = objects(&template(&py, "harvester-system", &[host]));
    let pod = pod_spec(&objs);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(strs(&c["args"]), ["idle"], "no agent in the pod");
    assert_eq!(c["securityContext"]["runAsNonRoot"], true);
    assert!(c["securityContext"]["capabilities"]["add"].is_null());
    assert!(c["volumeMounts"].is_null(), "it reads nothing of the host");
    assert!(pod["hostPID"].is_null());
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(c["ports"][0]["containerPort"], 9477);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(volumes, ["config", "state"], "no host root");
    let inits: Vec<&str> = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(inits, ["install-host-binary", "install-host-config"]);
    // The ServiceMonitor scrapes the pod's port, which is the host agent's.
    let svc = find(&objs, "Service", "vmrecover-metrics");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    let ci = find(&objs, "CloudInit", "vmrecover-host-units");
    let contents = go_yaml(&py, ci["spec"]["contents"].as_str().unwrap());
    let files = contents["stages"]["initramfs"][0]["files"]
        .as_array()
        .unwrap();
    let unit = files
        .iter()
        .find(|f| f["path"] == "/etc/systemd/system/vmrecover.service")
        .unwrap()["content"]
        .as_str()
        .unwrap();
    assert!(
        unit.contains(
            "vmrecover agent --config /usr/local/vmrecover/config.yaml --metrics-addr 0.0.0.0:9477"
        ),
        "{unit}"
    );
    let config = files
        .iter()
        .find(|f| f["path"] == "/usr/local/vmrecover/config.yaml")
        .unwrap();
    assert!(config["content"].as_str().unwrap().contains("maxVms: 50"));

    // Metrics explicitly off: the host agent serves none and the pod declares no port.
    let off = r#"{"hostUnits":{"cloudInit":{"hostMetrics":false}}}"#;
    let objs = objects(&template(&py, "harvester-system", &[host, off]));
    assert!(pod_spec(&objs)["containers"][0]["ports"].is_null());
    let ci = find(&objs, "CloudInit", "vmrecover-host-units");
    assert!(ci["spec"]["contents"]
        .as_str()
        .unwrap()
        .contains("--metrics-addr off"));

    // Host mode needs the CloudInit that writes the host agent's unit.
    let o = try_template(
        &py,
        "harvester-system",
        &[r#"{"hostUnits":{"cloudInit":{"hostMode":true}}}"#],
    );
    assert!(
        !o.status.success() && text(&o).contains("hostMode needs hostUnits.cloudInit.enabled"),
        "{}",
        text(&o)
    );
}

#[test]
fn chart_yaml_has_what_rancher_apps_reads() {
    let Some(py) = helm_python() else { return };
    let chart = go_yaml(
        &py,
        &std::fs::read_to_string(repo().join("charts/vmrecover/Chart.yaml")).unwrap(),
    );
    // No placeholder URL: the repository is not public, so no home or sources is true yet.
    assert!(chart.get("home").is_none(), "home: {}", chart["home"]);
    assert!(
        chart.get("sources").is_none(),
        "sources: {}",
        chart["sources"]
    );
    assert!(
        chart["icon"]
            .as_str()
            .unwrap()
            .starts_with("data:image/svg+xml;base64,"),
        "an icon that shows offline"
    );
    assert!(chart["maintainers"][0]["name"].is_string());
    for key in [
        "catalog.cattle.io/display-name",
        "catalog.cattle.io/namespace",
        "catalog.cattle.io/release-name",
        "catalog.cattle.io/os",
    ] {
        assert!(chart["annotations"][key].is_string(), "{key}");
    }
}

/// Host mode's container (`vmrecover idle`) does nothing until SIGTERM and then exits 0,
/// needing no cluster, node, host root or state.
#[test]
fn the_host_mode_container_idles_until_sigterm() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .arg("idle")
        .env_clear()
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start vmrecover idle");
    // It says so once its SIGTERM handler is in place.
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("waiting for SIGTERM"), "{line}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "it must keep running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
