//! Shared by the chart, monitoring, add-on and image tests: the Helm SDK (PyPI
//! `helm-python-sdk` in the venv `.ci/run` makes at `.venv/`) driven through
//! `charts/render.py`, tools found or skipped with a printed reason (never skipped in CI, where
//! `.ci/run` installs them), and rendered YAML read as JSON values.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this is CI (`.ci/run` installs every tool, so nothing may be skipped there).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skips (prints why and returns `None`) outside CI; fails in CI.
pub fn skip<T>(why: &str) -> Option<T> {
    assert!(!in_ci(), "{why} (CI must provide it: see .ci/run)");
    println!("SKIPPED: {why}");
    None
}

/// The venv's Python with `helm_python` importable: `$VMRECOVER_HELM_PYTHON` or `.venv/bin/python`.
pub fn helm_python() -> Option<PathBuf> {
    let py = std::env::var_os("VMRECOVER_HELM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import helm_python"])
            .output()
            .is_ok_and(|o| o.status.success());
    if ok {
        Some(py)
    } else {
        skip(&format!(
            "no Helm SDK at {} (python3 -m venv .venv && .venv/bin/pip install helm-python-sdk==0.2.2)",
            py.display()
        ))
    }
}

/// `charts/render.py ARGS`.
pub fn render_py(py: &Path, args: &[&str]) -> Output {
    Command::new(py)
        .arg(repo().join("charts/render.py"))
        .args(args)
        .output()
        .expect("run charts/render.py")
}

/// The text of an output, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `render.py template` with values given as JSON documents (merged in order); panics with
/// the SDK's message when rendering fails.
pub fn template(py: &Path, namespace: &str, values: &[&str]) -> String {
    let o = try_template(py, namespace, values);
    assert!(o.status.success(), "render failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `render.py template`, whatever its outcome.
pub fn try_template(py: &Path, namespace: &str, values: &[&str]) -> Output {
    let mut args = vec!["template", "--namespace", namespace];
    for v in values {
        args.push("--set-json");
        args.push(v);
    }
    render_py(py, &args)
}

/// The documents of a YAML stream.
pub fn objects(yaml: &str) -> Vec<Value> {
    harvester_sim::Scenario::parse(yaml, "the chart's rendering")
        .unwrap_or_else(|e| panic!("rendering is not YAML: {e:#}\n{yaml}"))
        .objects
}

/// `Kind namespace/name` of every object, sorted.
pub fn inventory(objs: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = objs
        .iter()
        .map(|o| {
            format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    v.sort();
    v
}

/// The object of `kind` named `name`.
pub fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", inventory(objs)))
}

/// Strings of a JSON array.
pub fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The kinds the simulated Harvester serves (others cannot be applied to it).
pub const SIM_KINDS: [&str; 9] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "DaemonSet",
    "CronJob",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// Splits rendered objects into the ones the simulator serves (with the release's ConfigMaps) (as one `v1` List in JSON,
/// which `kubectl apply -f` takes) and the kinds of the rest.
pub fn split_for_sim(objs: &[Value]) -> (String, Vec<String>) {
    let mut served = Vec::new();
    let mut others = Vec::new();
    for o in objs {
        let kind = o["kind"].as_str().unwrap_or("");
        // ConfigMaps of the release namespace (the admission policy's params) too; the
        // Grafana dashboard's goes to cattle-dashboards, which the simulated cluster lacks.
        let release_config =
            kind == "ConfigMap" && o["metadata"]["namespace"] == "harvester-system";
        if SIM_KINDS.contains(&kind) || release_config {
            served.push(o.clone());
        } else {
            others.push(kind.to_string());
        }
    }
    others.sort();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": served});
    (list.to_string(), others)
}

/// A YAML document as JSON, parsed by the Go YAML library Kubernetes tools use (through the
/// Helm SDK): `off`, `yes` and friends read as they would on the cluster.
pub fn go_yaml(py: &Path, yaml: &str) -> Value {
    use std::io::Write;
    let mut child = Command::new(py)
        .args([
            "-c",
            "import json, sys, helm_python as h; print(json.dumps(h.values_from_yaml(sys.stdin.read())))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "not YAML: {}\n{yaml}", text(&o));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

/// An executable on the PATH or at one of `paths`.
pub fn tool(name: &str, paths: &[&str]) -> Option<PathBuf> {
    paths
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join(name))
                    .find(|p| p.exists())
            })
        })
}

/// Every option of the chart switched on (for lint and for the inventory of optional objects).
pub const ALL_ON: &str = r#"{"metrics":{"service":{"enabled":true},"serviceMonitor":{"enabled":true},"prometheusRule":{"enabled":true},"dashboard":{"enabled":true}},"hostUnits":{"cloudInit":{"enabled":true,"hostMode":true}}}"#;

/// A host root for harvester-node-1 of the power-loss scenario (its machine and boot ids), with
/// nothing of a VM on it: no Longhorn device, one root mount.
pub fn fake_host_root(dir: &Path) {
    harvester_sim::node::HostRoot::harvester_node_1(dir);
}
