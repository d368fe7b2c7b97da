//! The Helm chart `charts/vmrecover` (issue 17 item 1), rendered and linted with the real Helm
//! engine (the Helm v4 Go SDK through PyPI `helm-python-sdk`, `charts/render.py`):
//!
//! - `deploy/` is the chart rendered with its default values, and the other generated files
//!   (monitoring/vmrecover-rules.yaml, addons/vmrecover-cloudinit.yaml, the chart's copies of
//!   the systemd units) are current: one source of truth, or a "re-render with ..." failure;
//! - the chart lints clean (strict) with its defaults and with every option on;
//! - every value reaches the manifests (namespace from the release, image registry with
//!   `global.cattle.systemDefaultRegistry`, the agent's policy flags, resources, tolerations,
//!   metrics off), optional objects appear only behind their plain values, and the templates
//!   use nothing Helm 3 would render differently (`.Capabilities`, `lookup`);
//! - a non-default rendering passes `kubectl apply --dry-run=server` against the simulated
//!   Harvester with RBAC enforced (deploy/, the default rendering, is dry-run by
//!   tests/deploy_manifests.rs, and tests/deploy_rbac.rs proves its RBAC verb by verb: since
//!   deploy/ IS the chart's output, that proof holds for the chart by construction).
//!
//! Without the venv (outside CI) each test prints why it skipped.

use crate::chart_support::*;
use harvester_sim::{shipped_scenario, Sim, SimConfig};
use serde_json::Value;

#[test]
fn deploy_and_the_generated_files_are_the_charts_rendering() {
    let Some(py) = helm_python() else { return };
    let out = render_py(&py, &["deploy", "--check"]);
    assert!(
        out.status.success(),
        "deploy/ is not the chart's rendering:\n{}",
        text(&out)
    );
    // Every rendered file says where it comes from and how to re-render it.
    for f in ["serviceaccount.yaml", "rbac.yaml", "daemonset.yaml"] {
        let t = std::fs::read_to_string(repo().join("deploy").join(f)).expect("read deploy/");
        assert!(
            t.starts_with("# GENERATED from charts/vmrecover/templates/")
                && t.contains("charts/render.py deploy"),
            "deploy/{f} does not say it is generated"
        );
    }
    // The chart carries the host units byte for byte (its CloudInit writes them).
    for unit in ["vmrecover-boot.service", "vmrecover.service"] {
        assert_eq!(
            std::fs::read(repo().join("systemd").join(unit)).expect("systemd unit"),
            std::fs::read(repo().join("charts/vmrecover/files").join(unit)).expect("chart copy"),
            "charts/vmrecover/files/{unit} differs from systemd/{unit}"
        );
    }
}

#[test]
fn the_chart_lints_clean_with_defaults_and_every_option() {
    let Some(py) = helm_python() else { return };
    let out = render_py(&py, &["lint", "--set-json", ALL_ON]);
    let t = text(&out);
    assert!(out.status.success() && t.contains("lint: ok"), "{t}");
}

#[test]
fn the_chart_version_is_the_crate_version() {
    let chart = std::fs::read_to_string(repo().join("charts/vmrecover/Chart.yaml")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        chart.contains(&format!("\nversion: {version}\n"))
            && chart.contains(&format!("\nappVersion: \"{version}\"\n")),
        "Chart.yaml version/appVersion must be the crate's {version}"
    );
}

#[test]
fn templates_use_nothing_helm_3_renders_differently() {
    let dir = repo().join("charts/vmrecover/templates");
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .chain(std::fs::read_dir(dir.join("tests")).unwrap());
    for e in files {
        let path = e.unwrap().path();
        if path.is_dir() {
            continue;
        }
        // The one exception: the Kubernetes version, read in one helper (the kubeVersion value
        // first, so an offline rendering can name the cluster's), which gates only a field
        // and its older annotation, never an object.
        let t = std::fs::read_to_string(&path).unwrap().replace(
            ".Values.kubeVersion | default .Capabilities.KubeVersion.Version",
            "",
        );
        for banned in [".Capabilities", "lookup ", "mustToJson", "toToml"] {
            // The one exception: the admission policy's `auto` asks whether the cluster
            // serves the policy API, overruled offline by the kubeVersion value
            // (tests/kube_versions.rs renders it per version).
            if banned == ".Capabilities" && path.ends_with("_admissionpolicy.tpl") {
                continue;
            }
            assert!(
                !t.contains(banned),
                "{} uses {banned}: optional objects are gated on plain values (offline rendering \
                 and Harvester's Helm 3 must render the same)",
                path.display()
            );
        }
    }
}

#[test]
fn optional_objects_appear_only_behind_their_values() {
    let Some(py) = helm_python() else { return };
    let base = [
        "ClusterRole /vmrecover",
        "ClusterRole /vmrecover-fence",
        "ClusterRoleBinding /vmrecover",
        "ClusterRoleBinding /vmrecover-fence",
        "ConfigMap harvester-system/vmrecover-admission-params",
        "ConfigMap harvester-system/vmrecover-config",
        "ConfigMap harvester-system/vmrecover-fence-params",
        "CronJob harvester-system/vmrecover-fence",
        "DaemonSet harvester-system/vmrecover",
        "Role harvester-system/vmrecover",
        "Role harvester-system/vmrecover-fence",
        "Role harvester-system/vmrecover-fence-harvester",
        "Role harvester-system/vmrecover-harvester",
        "Role longhorn-system/vmrecover-fence-longhorn",
        "Role longhorn-system/vmrecover-longhorn",
        "RoleBinding harvester-system/vmrecover",
        "RoleBinding harvester-system/vmrecover-fence",
        "RoleBinding harvester-system/vmrecover-fence-harvester",
        "RoleBinding harvester-system/vmrecover-harvester",
        "RoleBinding longhorn-system/vmrecover-fence-longhorn",
        "RoleBinding longhorn-system/vmrecover-longhorn",
        "ServiceAccount harvester-system/vmrecover",
        "ServiceAccount harvester-system/vmrecover-fence",
        "ValidatingAdmissionPolicy /vmrecover-fence-restriction",
        "ValidatingAdmissionPolicy /vmrecover-node-restriction",
        "ValidatingAdmissionPolicyBinding /vmrecover-fence-restriction",
        "ValidatingAdmissionPolicyBinding /vmrecover-node-restriction",
    ];
    assert_eq!(
        inventory(&objects(&template(&py, "harvester-system", &[]))),
        base
    );
    // The admission policy (on by default) goes with its value.
    let off = inventory(&objects(&template(
        &py,
        "harvester-system",
        &[r#"{"admissionPolicy":{"enabled":false}}"#],
    )));
    let without: Vec<&str> = base
        .iter()
        .copied()
        .filter(|o| {
            !o.contains("vmrecover-node-restriction")
                && !o.contains("vmrecover-fence-restriction")
                && !o.contains("admission-params")
        })
        .collect();
    assert_eq!(off, without);
    let mut all: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    all.extend(
        [
            "CloudInit /vmrecover-host-units",
            "ConfigMap cattle-dashboards/vmrecover-dashboard",
            "PrometheusRule harvester-system/vmrecover",
            "PrometheusRule harvester-system/vmrecover-readiness",
            "Service harvester-system/vmrecover-metrics",
            "ServiceMonitor harvester-system/vmrecover",
        ]
        .map(String::from),
    );
    all.sort();
    assert_eq!(
        inventory(&objects(&template(&py, "harvester-system", &[ALL_ON]))),
        all
    );
    // Metrics off: no Service, monitor, alert rules or dashboard even when asked for (alerts
    // on series that never exist), no port, no probes.
    let objs = objects(&template(
        &py,
        "harvester-system",
        &[
            ALL_ON,
            r#"{"metrics":{"enabled":false},"hostUnits":{"cloudInit":{"hostMode":false}}}"#,
        ],
    ));
    assert!(objs
        .iter()
        .all(|o| !["Service", "ServiceMonitor", "PrometheusRule"]
            .contains(&o["kind"].as_str().unwrap_or(""))
            && o["metadata"]["name"] != "vmrecover-dashboard"));
    let c = &find(&objs, "DaemonSet", "vmrecover")["spec"]["template"]["spec"]["containers"][0];
    assert!(c.get("ports").is_none() && c.get("livenessProbe").is_none());
    let args = strs(&c["args"]);
    assert_eq!(
        args[args.iter().position(|a| *a == "--metrics-addr").unwrap() + 1],
        "off"
    );
    // Misconfigurations fail with a message, not a broken manifest.
    for (values, says) in [
        // values.schema.json (tests/chart_schema.rs has every such case).
        (r#"{"actOn":"sometimes"}"#, "at '/actOn'"),
        (
            r#"{"metrics":{"serviceMonitor":{"enabled":true}}}"#,
            "metrics.serviceMonitor.enabled needs metrics.service.enabled",
        ),
    ] {
        let o = try_template(&py, "harvester-system", &[values]);
        assert!(
            !o.status.success() && text(&o).contains(says),
            "{values}: {}",
            text(&o)
        );
    }
}

#[test]
fn values_reach_the_manifests() {
    let Some(py) = helm_python() else { return };
    let values = r#"{
        "global": {"cattle": {"systemDefaultRegistry": "registry.local:5000"}},
        "image": {"registry": "ignored.example", "tag": "9.9.9", "pullPolicy": "Always"},
        "actOn": "always", "bootWindow": "1h", "stuckAfter": "10m", "controllerGrace": "3m",
        "maxVms": 7, "alsoFinalizers": ["example.com/cleanup", "other/thing"],
        "stateDir": "/var/lib/rancher/vmrecover", "longhornNamespace": "storage",
        "resources": {"requests": {"cpu": "20m", "memory": "40Mi"}, "limits": {"cpu": "1", "memory": "300Mi"}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "vm", "effect": "NoSchedule"}],
        "nodeSelector": {"harvesterhci.io/managed": "true"},
        "installHostBinary": false,
        "hostUnits": {"cloudInit": {"enabled": true}}
    }"#;
    let objs = objects(&template(&py, "vmrecover-system", &[values]));
    for o in &objs {
        let (kind, ns) = (
            o["kind"].as_str().unwrap(),
            o["metadata"]["namespace"].as_str().unwrap_or(""),
        );
        let name = o["metadata"]["name"].as_str().unwrap();
        match kind {
            "ClusterRole"
            | "ClusterRoleBinding"
            | "CloudInit"
            | "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding" => assert_eq!(ns, ""),
            _ if name == "vmrecover-longhorn" || name == "vmrecover-fence-longhorn" => {
                assert_eq!(ns, "storage", "{kind} {name}")
            }
            // Harvester's Upgrades live in harvester-system whatever the release namespace.
            _ if name == "vmrecover-harvester" || name == "vmrecover-fence-harvester" => {
                assert_eq!(ns, "harvester-system", "{kind} {name}")
            }
            _ => assert_eq!(
                ns, "vmrecover-system",
                "{kind} {name}: the release namespace"
            ),
        }
        for s in o["subjects"].as_array().into_iter().flatten() {
            assert_eq!(s["namespace"], "vmrecover-system", "{kind} {name}");
        }
    }
    // The policy: the release's ServiceAccount, its params in the release namespace, and
    // alsoFinalizers among the finalizers it lets vmrecover remove.
    let vap = find(
        &objs,
        "ValidatingAdmissionPolicy",
        "vmrecover-node-restriction",
    );
    assert_eq!(
        vap["spec"]["matchConditions"][0]["expression"],
        "request.userInfo.username == 'system:serviceaccount:vmrecover-system:vmrecover'"
    );
    let vapb = find(
        &objs,
        "ValidatingAdmissionPolicyBinding",
        "vmrecover-node-restriction",
    );
    assert_eq!(vapb["spec"]["paramRef"]["namespace"], "vmrecover-system");
    let params = find(&objs, "ConfigMap", "vmrecover-admission-params");
    for key in ["vmiFinalizers", "vmFinalizers"] {
        let list = params["data"][key].as_str().unwrap();
        assert!(
            list.ends_with(",example.com/cleanup,other/thing"),
            "{key}: {list}"
        );
    }
    let ds = find(&objs, "DaemonSet", "vmrecover");
    let pod = &ds["spec"]["template"]["spec"];
    assert!(
        pod.get("initContainers").is_none(),
        "installHostBinary false"
    );
    assert_eq!(pod["nodeSelector"]["harvesterhci.io/managed"], "true");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.local:5000/vmrecover:9.9.9");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["resources"]["limits"]["memory"], "300Mi");
    assert_eq!(
        strs(&c["args"])[3..],
        [
            "--host-root",
            "/host",
            "--journal-dir",
            "/host/var/log/journal",
            "--state-dir",
            "/var/lib/rancher/vmrecover",
            "--log-format",
            "json",
            "--metrics-addr",
            "0.0.0.0:9477",
        ]
    );
    // The policy reaches every command in the pod through the mounted configuration file,
    // whose keys are the values' names (src/config/file.rs reads it).
    assert_eq!(
        strs(&c["args"])[..3],
        ["agent", "--config", "/etc/vmrecover/config.yaml"]
    );
    let config = find(&objs, "ConfigMap", "vmrecover-config");
    let file = go_yaml(&py, config["data"]["config.yaml"].as_str().unwrap());
    assert_eq!(
        file,
        serde_json::json!({"actOn": "always", "bootWindow": "1h", "stuckAfter": "10m",
            "controllerGrace": "3m", "maxVms": 7,
            "alsoFinalizers": ["example.com/cleanup", "other/thing"],
            "longhornNamespace": "storage", "followFor": "5m"})
    );
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .expect("the config mount");
    assert_eq!(mount["mountPath"], "/etc/vmrecover");
    let state = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "state")
        .unwrap();
    assert_eq!(state["hostPath"]["path"], "/var/lib/rancher/vmrecover");
    // The host units follow the state directory.
    let ci = find(&objs, "CloudInit", "vmrecover-host-units");
    let contents = ci["spec"]["contents"].as_str().unwrap();
    assert!(
        contents.contains("ExecStart=/var/lib/rancher/vmrecover/bin/vmrecover boot-record start")
    );
    assert!(contents.contains("RequiresMountsFor=/var/lib/rancher/vmrecover"));
    assert!(!contents.contains("/usr/local/vmrecover"), "{contents}");

    // The registry: image.registry without systemDefaultRegistry; none at all.
    for (v, image) in [
        (r#"{}"#, "localhost/vmrecover:0.1.0"),
        (
            r#"{"image":{"registry":"reg.example"}}"#,
            "reg.example/vmrecover:0.1.0",
        ),
        (r#"{"image":{"registry":""}}"#, "vmrecover:0.1.0"),
    ] {
        let objs = objects(&template(&py, "harvester-system", &[v]));
        let pod = &find(&objs, "DaemonSet", "vmrecover")["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["image"], image, "{v}");
        assert_eq!(pod["initContainers"][0]["image"], image, "{v}");
    }
}

#[test]
fn the_host_binary_init_container_writes_only_the_state_directory() {
    let Some(py) = helm_python() else { return };
    let objs = objects(&template(&py, "harvester-system", &[]));
    let pod = &find(&objs, "DaemonSet", "vmrecover")["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    assert_eq!(
        strs(&init["command"]),
        [
            "/usr/bin/install",
            "-D",
            "-m",
            "0755",
            "/usr/local/bin/vmrecover",
            "/usr/local/vmrecover/bin/vmrecover"
        ]
    );
    let sc = &init["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(
        sc["capabilities"].get("add").is_none(),
        "no capability added"
    );
    let mounts = init["volumeMounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0]["name"], "state");
    assert_eq!(mounts[0]["mountPath"], "/usr/local/vmrecover");
}

#[test]
fn the_cloudinit_writes_the_repositorys_units() {
    let Some(py) = helm_python() else { return };
    for host_mode in [false, true] {
        let v =
            format!(r#"{{"hostUnits":{{"cloudInit":{{"enabled":true,"hostMode":{host_mode}}}}}}}"#);
        let objs = objects(&template(&py, "harvester-system", &[&v]));
        let ci = find(&objs, "CloudInit", "vmrecover-host-units");
        assert_eq!(ci["apiVersion"], "node.harvesterhci.io/v1beta1");
        assert_eq!(
            ci["spec"]["matchSelector"]["harvesterhci.io/managed"],
            "true"
        );
        assert_eq!(ci["spec"]["paused"], false);
        let contents = ci["spec"]["contents"].as_str().unwrap();
        let doc = go_yaml(&py, contents);
        let step = &doc["stages"]["initramfs"][0];
        let files = step["files"].as_array().unwrap();
        let mut want = vec!["vmrecover-boot.service"];
        if host_mode {
            want.push("vmrecover.service");
        }
        // The units, and the configuration file where the host units read it.
        let units: Vec<&Value> = files
            .iter()
            .filter(|f| f["path"] != "/usr/local/vmrecover/config.yaml")
            .collect();
        assert_eq!(units.len(), want.len());
        assert_eq!(files.len(), want.len() + 1, "the config file too");
        for (f, unit) in units.iter().zip(&want) {
            assert_eq!(f["path"], format!("/etc/systemd/system/{unit}"));
            let source = std::fs::read_to_string(repo().join("systemd").join(unit)).unwrap();
            assert_eq!(
                f["content"].as_str().unwrap(),
                // Host mode: the agent's metrics on the node's address (the DaemonSet's
                // hostNetwork pod is their scrape target).
                source.replace(
                    "--metrics-addr 127.0.0.1:9477",
                    "--metrics-addr 0.0.0.0:9477"
                ),
                "{unit} in the CloudInit is systemd/{unit}"
            );
        }
        assert_eq!(strs(&step["systemctl"]["enable"]), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_default_rendering_passes_server_dry_run_with_rbac_enforced() {
    let Some(py) = helm_python() else { return };
    let Some(kubectl) = tool("kubectl", &["/usr/bin/kubectl"]) else {
        println!("SKIPPED: no kubectl");
        return;
    };
    let yaml = template(
        &py,
        "harvester-system",
        &[
            ALL_ON,
            r#"{"global":{"cattle":{"systemDefaultRegistry":"registry.local:5000"}},"alsoFinalizers":["example.com/x"],"metrics":{"port":9555}}"#,
        ],
    );
    let (served, others) = split_for_sim(&objects(&yaml));
    println!(
        "not applied (kinds harvester-sim does not serve; checked by shape in the other tests): {others:?}"
    );
    assert_eq!(
        others,
        [
            "CloudInit",
            "ConfigMap",
            "PrometheusRule",
            "PrometheusRule",
            "Service",
            "ServiceMonitor"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chart.yaml");
    std::fs::write(&file, served).unwrap();
    let sim = Sim::start(
        SimConfig::default()
            .scenario_file(shipped_scenario("power-loss.yaml"))
            .rbac_file(repo().join("deploy")),
    )
    .await
    .expect("start harvester-sim with RBAC");
    let kc = sim.kubeconfig_path().display().to_string();
    let f = file.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        harvester_sim::kubectl(kubectl, std::path::Path::new(&kc))
            .args(["apply", "--dry-run=server", "-f", &f])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("daemonset.apps/vmrecover created (server dry run)"),
        "{t}"
    );
    assert!(sim.list("apps/v1", "DaemonSet").is_empty());
}
