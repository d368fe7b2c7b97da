//! The deployment artefacts (issue 6): `deploy/` (the chart `charts/vmrecover` rendered with
//! its default values, kept current by tests/chart_render.rs) renders with `kubectl kustomize`, the real
//! kubectl (1.27, 1.33, the dispatcher) applies the rendering with `--dry-run=server` against
//! the simulated Harvester (RBAC off and on), the DaemonSet has the shape a node agent needs,
//! and both systemd units pass `systemd-analyze verify`. A missing kubectl binary or
//! `systemd-analyze` is skipped with a printed reason.

use std::path::{Path, PathBuf};

use harvester_sim::{shipped_scenario, Scenario, Sim, SimConfig};
use serde_json::Value;

const KUBECTLS: [&str; 3] = [
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
    "/usr/bin/kubectl",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kubectls() -> Vec<PathBuf> {
    let found: Vec<PathBuf> = KUBECTLS
        .iter()
        .map(PathBuf::from)
        .filter(|p| {
            let ok = p.exists();
            if !ok {
                println!("skipping {}: not installed", p.display());
            }
            ok
        })
        .collect();
    assert!(
        !found.is_empty(),
        "no kubectl among {KUBECTLS:?} (apt-get install kubernetes-client)"
    );
    found
}

fn kubectl(bin: &Path, args: &[&str]) -> std::process::Output {
    // A discovery cache of its own: kubectl keys it by host:port only, which earlier
    // simulators may have used (harvester_sim::kubectl_cache_dir).
    let cache = tempfile::tempdir().expect("kubectl cache dir");
    std::process::Command::new(bin)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// `kubectl kustomize deploy/`.
fn rendered() -> String {
    let bin = kubectls().remove(0);
    let deploy = repo().join("deploy");
    let out = kubectl(&bin, &["kustomize", &deploy.display().to_string()]);
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn objects(yaml: &str) -> Vec<Value> {
    Scenario::parse(yaml, "kubectl kustomize deploy/")
        .unwrap_or_else(|e| panic!("rendering is not YAML: {e:#}"))
        .objects
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendering"))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn kustomize_renders_the_agent_and_its_rbac() {
    let objs = objects(&rendered());
    let mut kinds: Vec<String> = objs
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
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole /vmrecover",
            "ClusterRole /vmrecover-fence",
            "ClusterRoleBinding /vmrecover",
            "ClusterRoleBinding /vmrecover-fence",
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
        ]
    );
    // The admission policy (and its params) needs Kubernetes 1.30: `apply -k` must work on
    // Harvester 1.4.0's 1.29 too, so it is applied on its own (`kubectl apply -f`).
    assert!(objs.iter().all(|o| !o["kind"]
        .as_str()
        .unwrap_or("")
        .starts_with("ValidatingAdmissionPolicy")));
    // Every RBAC binding names the ServiceAccount the DaemonSet runs as, or for the fence
    // roles (vmrecover-fence*) the one the fence CronJob's Job runs as.
    for o in objs.iter().filter(|o| {
        o["kind"].as_str().is_some_and(|k| k.ends_with("Binding"))
            && o["kind"] != "ValidatingAdmissionPolicyBinding"
    }) {
        let fence = o["roleRef"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("vmrecover-fence"));
        assert_eq!(o["subjects"].as_array().map(Vec::len), Some(1), "{o:#}");
        assert_eq!(o["subjects"][0]["kind"], "ServiceAccount");
        let sa = if fence {
            "vmrecover-fence"
        } else {
            "vmrecover"
        };
        assert_eq!(o["subjects"][0]["name"], sa);
        assert_eq!(o["subjects"][0]["namespace"], "harvester-system");
    }
    let job = find(&objs, "CronJob", "vmrecover-fence");
    assert_eq!(job["spec"]["suspend"], true);
    assert_eq!(
        job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"],
        "vmrecover-fence"
    );
    // No Namespace object: harvester-system is Harvester's.
    assert!(objs.iter().all(|o| o["kind"] != "Namespace"));
}

#[test]
fn daemonset_is_shaped_for_a_node_agent() {
    let objs = objects(&rendered());
    let ds = find(&objs, "DaemonSet", "vmrecover");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "vmrecover");
    assert_eq!(
        pod["hostPID"], true,
        "launchers are only visible in the host PID namespace"
    );
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    let tolerations = pod["tolerations"].as_array().cloned().unwrap_or_default();
    assert!(
        tolerations.iter().any(|t| t["operator"] == "Exists"
            && t.get("key").is_none()
            && t.get("effect").is_none()),
        "must tolerate every taint: {tolerations:?}"
    );
    // deploy/ is rendered for the oldest Kubernetes Harvester runs (1.29.9), so it applies on
    // every version: the AppArmor annotation, not the 1.30 field (the chart renders the field
    // from 1.30: tests/e2e/chart_conventions.rs).
    assert_eq!(
        ds["spec"]["template"]["metadata"]["annotations"]
            ["container.apparmor.security.beta.kubernetes.io/vmrecover"],
        "unconfined"
    );

    let containers = pod["containers"].as_array().cloned().unwrap_or_default();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        strs(&c["args"]),
        [
            "agent",
            "--config",
            "/etc/vmrecover/config.yaml",
            "--host-root",
            "/host",
            "--journal-dir",
            "/host/var/log/journal",
            "--state-dir",
            "/usr/local/vmrecover",
            "--log-format",
            "json",
            "--metrics-addr",
            "0.0.0.0:9477"
        ]
    );
    // The annotation above says it (the host's launchers' /proc/<pid>/fd need it); the
    // field would be refused by a 1.29 apiserver's strict field validation.
    assert!(c["securityContext"]["appArmorProfile"].is_null());
    // The init container puts the binary where the host units run it.
    let init = &pod["initContainers"][0];
    assert_eq!(init["name"], "install-host-binary");
    assert_eq!(init["image"], c["image"]);
    assert_eq!(
        strs(&init["command"]).last().copied(),
        Some("/usr/local/vmrecover/bin/vmrecover")
    );
    let env = |name: &str| {
        c["env"]
            .as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        env("NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        env("VMRECOVER_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        let port = &c[probe]["httpGet"]["port"];
        let number = c["ports"]
            .as_array()
            .and_then(|p| {
                p.iter()
                    .find(|p| &p["name"] == port || &p["containerPort"] == port)
            })
            .map(|p| p["containerPort"].clone());
        assert_eq!(number, Some(Value::from(9477)), "{probe} port {port}");
    }
    for r in ["requests", "limits"] {
        assert!(
            c["resources"][r]["memory"].is_string(),
            "resources.{r}.memory"
        );
        assert!(c["resources"][r]["cpu"].is_string(), "resources.{r}.cpu");
    }

    let sc = &c["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_ne!(sc["privileged"], true);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    let mut added = strs(&sc["capabilities"]["add"]);
    added.sort();
    assert_eq!(added, ["DAC_READ_SEARCH", "KILL", "SYS_PTRACE"]);

    let mount = |name: &str| {
        c["volumeMounts"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no volumeMount {name}"))
    };
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let host = mount("host-root");
    assert_eq!(host["mountPath"], "/host");
    assert_eq!(host["readOnly"], true, "the host's / is mounted read-only");
    assert_eq!(host["mountPropagation"], "HostToContainer");
    assert_eq!(volume("host-root")["hostPath"]["path"], "/");
    let state = mount("state");
    assert_eq!(state["mountPath"], "/usr/local/vmrecover");
    assert_ne!(state["readOnly"], true);
    assert_eq!(volume("state")["hostPath"]["path"], "/usr/local/vmrecover");
    assert_eq!(volume("state")["hostPath"]["type"], "DirectoryOrCreate");
    // Every other mount is read-only or an emptyDir: nothing else of the host is writable.
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let v = volume(m["name"].as_str().unwrap_or(""));
        assert!(
            m["readOnly"] == true || v.get("emptyDir").is_some() || m["name"] == "state",
            "writable host mount {m}"
        );
    }
}

async fn apply_dry_run(sim: &Sim, bin: &Path, file: &Path) -> String {
    let kc = sim.kubeconfig_path().display().to_string();
    let f = file.display().to_string();
    let bin = bin.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        kubectl(
            &bin,
            &["--kubeconfig", &kc, "apply", "--dry-run=server", "-f", &f],
        )
    })
    .await
    .expect("kubectl task");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl apply --dry-run=server failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_rendering_with_server_dry_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("vmrecover.yaml");
    std::fs::write(&file, rendered()).expect("write rendering");
    for bin in kubectls() {
        // A fresh cluster: everything would be created, nothing is.
        let sim =
            Sim::start(SimConfig::default().scenario_file(shipped_scenario("power-loss.yaml")))
                .await
                .expect("start harvester-sim");
        let out = apply_dry_run(&sim, &bin, &file).await;
        for line in [
            "serviceaccount/vmrecover created (server dry run)",
            "clusterrole.rbac.authorization.k8s.io/vmrecover created (server dry run)",
            "clusterrolebinding.rbac.authorization.k8s.io/vmrecover created (server dry run)",
            "role.rbac.authorization.k8s.io/vmrecover created (server dry run)",
            "rolebinding.rbac.authorization.k8s.io/vmrecover-longhorn created (server dry run)",
            "daemonset.apps/vmrecover created (server dry run)",
            "cronjob.batch/vmrecover-fence created (server dry run)",
        ] {
            assert!(
                out.contains(line),
                "{}: no {line:?} in\n{out}",
                bin.display()
            );
        }
        for (api, kind) in [
            ("apps/v1", "DaemonSet"),
            ("v1", "ServiceAccount"),
            ("rbac.authorization.k8s.io/v1", "ClusterRole"),
            ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ] {
            assert!(sim.list(api, kind).is_empty(), "a dry run stored a {kind}");
        }
        assert!(sim
            .mutating_requests()
            .iter()
            .all(|r| r.query.contains("dryRun=All")));

        // The same cluster with vmrecover's RBAC installed and enforced: kubectl (admin)
        // sees the installed objects and would configure them.
        let sim = Sim::start(
            SimConfig::default()
                .scenario_file(shipped_scenario("power-loss.yaml"))
                .rbac_file(repo().join("deploy")),
        )
        .await
        .expect("start harvester-sim with RBAC");
        let out = apply_dry_run(&sim, &bin, &file).await;
        assert!(
            out.contains("daemonset.apps/vmrecover created (server dry run)"),
            "{out}"
        );
        assert!(
            out.contains(
                "clusterrole.rbac.authorization.k8s.io/vmrecover configured (server dry run)"
            ) || out.contains(
                "clusterrole.rbac.authorization.k8s.io/vmrecover unchanged (server dry run)"
            ),
            "{out}"
        );
        assert!(sim.list("apps/v1", "DaemonSet").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_as_the_service_account_gets_the_real_forbidden_message() {
    let sim = Sim::start(
        SimConfig::default()
            .scenario_file(shipped_scenario("power-loss.yaml"))
            .rbac_file(repo().join("deploy")),
    )
    .await
    .expect("start harvester-sim with RBAC");
    let kc = sim.kubeconfig_path().display().to_string();
    let sa = "system:serviceaccount:harvester-system:vmrecover";
    for bin in kubectls() {
        let (kc2, bin2) = (kc.clone(), bin.clone());
        let out = tokio::task::spawn_blocking(move || {
            kubectl(
                &bin2,
                &[
                    "--kubeconfig",
                    &kc2,
                    "--as",
                    sa,
                    "get",
                    "leases",
                    "-n",
                    "default",
                ],
            )
        })
        .await
        .expect("kubectl task");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(
                "Error from server (Forbidden): leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:harvester-system:vmrecover\" cannot list resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"default\""
            ),
            "{}: {err}",
            bin.display()
        );
        let (kc2, bin2) = (kc.clone(), bin.clone());
        let out = tokio::task::spawn_blocking(move || {
            kubectl(
                &bin2,
                &[
                    "--kubeconfig",
                    &kc2,
                    "--as",
                    sa,
                    "get",
                    "vmi",
                    "-A",
                    "-l",
                    "kubevirt.io/nodeName=harvester-node-1",
                ],
            )
        })
        .await
        .expect("kubectl task");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("vm-web-01"));
    }
}

/// `systemd-analyze verify` on both units, with ExecStart pointing at the built binary (the
/// units name /usr/local/vmrecover/bin/vmrecover, which a build machine does not have).
#[test]
fn systemd_units_verify() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists());
    let Some(analyze) = analyze else {
        println!("skipping systemd-analyze verify: systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut units = Vec::new();
    for name in ["vmrecover.service", "vmrecover-boot.service"] {
        let text = std::fs::read_to_string(repo().join("systemd").join(name))
            .unwrap_or_else(|e| panic!("systemd/{name}: {e}"));
        assert!(
            text.contains("/usr/local/vmrecover/bin/vmrecover"),
            "{name} runs /usr/local/vmrecover/bin/vmrecover"
        );
        let text = text.replace(
            "/usr/local/vmrecover/bin/vmrecover",
            env!("CARGO_BIN_EXE_vmrecover"),
        );
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write unit copy");
        units.push(path);
    }
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .args(&units)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_us: Vec<&str> = stderr.lines().filter(|l| l.contains("vmrecover")).collect();
    assert!(
        out.status.success() && about_us.is_empty(),
        "systemd-analyze verify: exit {:?}\n{stderr}",
        out.status.code()
    );

    let agent = std::fs::read_to_string(repo().join("systemd/vmrecover.service"))
        .expect("read vmrecover.service");
    for line in [
        // The ServiceAccount's node-bound kubeconfig, not the node's admin one.
        "Environment=KUBECONFIG=/usr/local/vmrecover/kubeconfig",
        "ExecStart=/usr/local/vmrecover/bin/vmrecover agent --config /usr/local/vmrecover/config.yaml --metrics-addr 127.0.0.1:9477",
        "Environment=NODE_NAME=%H",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/usr/local/vmrecover",
        "ReadOnlyPaths=-/usr/local/vmrecover/bin",
        "CapabilityBoundingSet=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_KILL",
    ] {
        assert!(
            agent.lines().any(|l| l.trim() == line),
            "vmrecover.service lacks {line:?}"
        );
    }
    let after = agent
        .lines()
        .find(|l| l.starts_with("After="))
        .unwrap_or_default();
    assert!(after.contains("network-online.target") && after.contains("vmrecover-boot.service"));
    // The agent's state directory is the one the boot records are written to.
    let boot = std::fs::read_to_string(repo().join("systemd/vmrecover-boot.service"))
        .expect("read vmrecover-boot.service");
    assert!(boot.contains("VMRECOVER_STATE_DIR=/usr/local/vmrecover"));
    assert!(agent.contains("VMRECOVER_STATE_DIR=/usr/local/vmrecover"));
}
