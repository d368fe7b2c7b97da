//! kubectl fidelity suite: the real kubectl binaries (1.27, 1.30, 1.33 and the /usr/bin/kubectl
//! dispatcher) against the simulator started from power-loss.yaml. A missing binary is skipped
//! with a printed reason; the suite fails when none is present.

use std::path::{Path, PathBuf};
use std::process::Output;

use harvester_sim::{shipped_scenario, Sim, SimConfig};
use serde_json::{json, Value};

const CANDIDATES: [&str; 4] = [
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.30",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
    "/usr/bin/kubectl",
];

fn kubectls() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for c in CANDIDATES {
        if Path::new(c).exists() {
            found.push(PathBuf::from(c));
        } else {
            println!("skipping {c}: not installed");
        }
    }
    assert!(
        !found.is_empty(),
        "no kubectl binary found among {CANDIDATES:?}"
    );
    found
}

async fn power_loss() -> Sim {
    match Sim::start(SimConfig::default().scenario_file(shipped_scenario("power-loss.yaml"))).await
    {
        Ok(s) => s,
        Err(e) => panic!("simulator did not start: {e:#}"),
    }
}

struct Kubectl<'a> {
    bin: &'a Path,
    kubeconfig: &'a Path,
}

impl Kubectl<'_> {
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd =
            tokio::process::Command::from(harvester_sim::kubectl(self.bin, self.kubeconfig));
        cmd.args(args)
            .env("HOME", std::env::temp_dir())
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .stdin(if stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot run {}: {e}", self.bin.display()),
        };
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            if let Err(e) = pipe.write_all(input.as_bytes()).await {
                panic!("writing stdin: {e}");
            }
        }
        match child.wait_with_output().await {
            Ok(o) => o,
            Err(e) => panic!("{} {args:?}: {e}", self.bin.display()),
        }
    }

    /// Runs and requires success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        self.ok_in(args, None).await
    }

    async fn ok_in(&self, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.run(args, stdin).await;
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{} {args:?} failed: {}\n{out}",
            self.bin.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }
}

fn table_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[tokio::test]
async fn kubectl_reads_the_stuck_cluster() {
    for bin in kubectls() {
        let sim = power_loss().await;
        let k = Kubectl {
            bin: &bin,
            kubeconfig: sim.kubeconfig_path(),
        };
        let out = k.ok(&["get", "vm,vmi", "-A"]).await;
        for (ns, name, status) in [
            (
                "default",
                "virtualmachine.kubevirt.io/vm-web-01",
                "Terminating",
            ),
            ("prod", "virtualmachine.kubevirt.io/vm-app-02", "Stopping"),
            ("default", "virtualmachine.kubevirt.io/vm-web-02", "Running"),
        ] {
            let found = out.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.first() == Some(&ns) && w.get(1) == Some(&name) && w.get(3) == Some(&status)
            });
            assert!(
                found,
                "{}: no row {ns} {name} {status} in\n{out}",
                bin.display()
            );
        }
        assert!(
            out.contains("virtualmachineinstance.kubevirt.io/vm-app-02"),
            "{out}"
        );

        let out = k
            .ok(&[
                "get",
                "vmi",
                "-A",
                "-l",
                "kubevirt.io/nodeName=harvester-node-1",
            ])
            .await;
        let rows = table_rows(&out);
        assert_eq!(rows.len(), 6, "{}: {out}", bin.display());
        assert!(
            rows.iter()
                .all(|r| r.get(5).map(String::as_str) == Some("harvester-node-1")),
            "{out}"
        );
        assert!(rows
            .iter()
            .any(|r| r.get(1).map(String::as_str) == Some("vm-app-02")
                && r.get(3).map(String::as_str) == Some("Failed")));

        let out = k
            .ok(&[
                "get",
                "pods",
                "-A",
                "--field-selector",
                "spec.nodeName=harvester-node-1",
            ])
            .await;
        let rows = table_rows(&out);
        assert_eq!(rows.len(), 2, "{out}");
        assert!(
            rows.iter().any(|r| r.get(1).map(String::as_str)
                == Some("virt-launcher-vm-db-01-xxxxx")
                && r.get(3).map(String::as_str) == Some("Terminating")),
            "{out}"
        );

        // `nodes` names core Nodes although Longhorn serves nodes.longhorn.io too (kubectl
        // prefers the core group, as on a real Harvester cluster).
        let out = k.ok(&["get", "nodes", "-o", "name"]).await;
        assert!(out.contains("node/harvester-node-1"), "{out}");
        let out = k
            .ok(&["get", "vmi", "vm-web-01", "-n", "default", "-o", "yaml"])
            .await;
        assert!(
            out.contains("deletionTimestamp: \"2025-06-02T08:31:40Z\""),
            "{out}"
        );
        assert!(
            out.contains("- kubevirt.io/foregroundDeleteVirtualMachine"),
            "{out}"
        );
        assert!(
            out.contains("uid: 22222222-0000-4000-8000-000000000001"),
            "{out}"
        );

        let out = k.ok(&["api-resources"]).await;
        for needle in [
            "virtualmachineinstances",
            "vmi",
            "kubevirt.io/v1",
            "volumeattachments",
            "longhorn.io/v1beta2",
            "lhn",
            "pvc",
        ] {
            assert!(
                out.contains(needle),
                "{}: api-resources lacks {needle}:\n{out}",
                bin.display()
            );
        }

        let bad = k
            .run(
                &[
                    "get",
                    "vmi",
                    "-A",
                    "--field-selector",
                    "status.phase=Running",
                ],
                None,
            )
            .await;
        assert!(!bad.status.success());
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(
            err.contains("Error from server (BadRequest)")
                && err.contains("field label not supported: status.phase"),
            "{err}"
        );
        let missing = k.run(&["get", "vm", "nope", "-n", "default"], None).await;
        let err = String::from_utf8_lossy(&missing.stderr);
        assert!(
            err.contains(
                "Error from server (NotFound): virtualmachines.kubevirt.io \"nope\" not found"
            ),
            "{err}"
        );
    }
}

#[tokio::test]
async fn kubectl_deletes_and_patches_finalizers_away() {
    for bin in kubectls() {
        let sim = power_loss().await;
        let k = Kubectl {
            bin: &bin,
            kubeconfig: sim.kubeconfig_path(),
        };
        // delete --wait=false on an object with finalizers: it stays, with a deletionTimestamp.
        k.ok(&["delete", "vm", "vm-web-02", "-n", "default", "--wait=false"])
            .await;
        let ts = k
            .ok(&[
                "get",
                "vm",
                "vm-web-02",
                "-n",
                "default",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ])
            .await;
        assert!(
            !ts.trim().is_empty(),
            "{}: no deletionTimestamp",
            bin.display()
        );

        // A failing test op: non-zero exit and the server's message.
        let failing = k
            .run(
                &["patch", "vmi", "vm-web-01", "-n", "default", "--type=json", "-p",
                  r#"[{"op":"test","path":"/metadata/finalizers","value":["nope"]},{"op":"remove","path":"/metadata/finalizers"}]"#],
                None,
            )
            .await;
        assert!(!failing.status.success());
        let err = String::from_utf8_lossy(&failing.stderr);
        assert!(
            err.contains("the server rejected our request due to an error in our request"),
            "{err}"
        );

        // Removing the finalizers of the deleting VMI makes it disappear.
        k.ok(&[
            "patch",
            "vmi",
            "vm-web-01",
            "-n",
            "default",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ])
        .await;
        let gone = k
            .run(&["get", "vmi", "vm-web-01", "-n", "default"], None)
            .await;
        assert!(!gone.status.success());
        assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
        // The leftover Terminating pod goes with a forced delete.
        k.ok(&[
            "delete",
            "pod",
            "virt-launcher-vm-db-01-xxxxx",
            "-n",
            "default",
            "--grace-period=0",
            "--force",
        ])
        .await;
        let pods = k.ok(&["get", "pods", "-n", "default", "-o", "name"]).await;
        assert!(!pods.contains("vm-db-01"), "{pods}");
        let mutating = sim.mutating_requests();
        assert!(mutating.iter().any(|r| r.method == "DELETE"
            && r.query.contains("gracePeriodSeconds=0")
            || r.body["gracePeriodSeconds"] == 0));
    }
}

const NEW_VM: &str = "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: vm-new
  namespace: default
  labels: {app: LABEL}
spec:
  runStrategy: Halted
  template:
    spec:
      domain: {devices: {}}
";

#[tokio::test]
async fn kubectl_create_apply_and_status_subresource() {
    for bin in kubectls() {
        let sim = power_loss().await;
        let k = Kubectl {
            bin: &bin,
            kubeconfig: sim.kubeconfig_path(),
        };
        let v1 = NEW_VM.replace("LABEL", "one");
        let out = k.ok_in(&["create", "-f", "-"], Some(&v1)).await;
        assert!(
            out.contains("virtualmachine.kubevirt.io/vm-new created"),
            "{out}"
        );
        let again = k.run(&["create", "-f", "-"], Some(&v1)).await;
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("(AlreadyExists)"));

        let v2 = NEW_VM.replace("LABEL", "two");
        k.ok_in(&["apply", "-f", "-"], Some(&v2)).await;
        let label = k
            .ok(&[
                "get",
                "vm",
                "vm-new",
                "-n",
                "default",
                "-o",
                "jsonpath={.metadata.labels.app}",
            ])
            .await;
        assert_eq!(label, "two", "{}", bin.display());

        let v3 = NEW_VM.replace("LABEL", "three");
        let out = k
            .ok_in(&["apply", "--server-side", "-f", "-"], Some(&v3))
            .await;
        assert!(out.contains("serverside-applied"), "{out}");
        let label = k
            .ok(&[
                "get",
                "vm",
                "vm-new",
                "-n",
                "default",
                "-o",
                "jsonpath={.metadata.labels.app}",
            ])
            .await;
        assert_eq!(label, "three");

        k.ok(&[
            "patch",
            "vm",
            "vm-new",
            "-n",
            "default",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"printableStatus":"Stopped"}}"#,
        ])
        .await;
        let st = k
            .ok(&["get", "vm", "vm-new", "-n", "default", "-o", "json"])
            .await;
        let v: Value = serde_json::from_str(&st).unwrap_or_default();
        assert_eq!(v["status"]["printableStatus"], "Stopped");
        assert_eq!(
            v["metadata"]["generation"], 1,
            "status writes do not move generation"
        );
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p-new, namespace: default}\nspec: {containers: [{name: c, image: busybox}]}\n";
        k.ok_in(&["apply", "-f", "-"], Some(pod)).await;
        k.ok(&["delete", "pod", "p-new", "-n", "default"]).await;
    }
}

#[tokio::test]
async fn kubectl_watch_prints_changes() {
    let bins = kubectls();
    let Some(bin) = bins.last() else { return };
    let sim = power_loss().await;
    let mut child =
        match tokio::process::Command::from(harvester_sim::kubectl(bin, sim.kubeconfig_path()))
            .args(["get", "vmi", "-n", "default", "-w", "--request-timeout=20s"])
            .env("HOME", std::env::temp_dir())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
    let Some(stdout) = child.stdout.take() else {
        panic!("no stdout")
    };
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let mut patched = false;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, lines.next_line()).await {
        seen.push(line.clone());
        if !patched && line.starts_with("vm-web-03") {
            patched = true;
            let k = Kubectl {
                bin,
                kubeconfig: sim.kubeconfig_path(),
            };
            k.ok(&[
                "patch",
                "vmi",
                "vm-live-01",
                "-n",
                "default",
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
            ])
            .await;
        } else if patched && line.starts_with("vm-live-01") {
            break;
        }
    }
    let _ = child.kill().await;
    let live_rows = seen.iter().filter(|l| l.starts_with("vm-live-01")).count();
    assert!(
        live_rows >= 2,
        "the watch printed the change of vm-live-01: {seen:?}"
    );
}

/// What kubectl prints for a webhook that is down and one that denies (the operator's view
/// right after a power cut; see `harvester_sim::admission`).
#[tokio::test]
async fn kubectl_shows_webhook_failures_as_the_apiserver_words_them() {
    for bin in kubectls() {
        let sim = power_loss().await;
        let k = Kubectl {
            bin: &bin,
            kubeconfig: sim.kubeconfig_path(),
        };
        let _ = sim.set_webhook("virt-api", harvester_sim::WebhookState::Down);
        let patch = [
            "patch",
            "vmi",
            "vm-web-01",
            "-n",
            "default",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ];
        let down = k.run(&patch, None).await;
        assert!(!down.status.success());
        let err = String::from_utf8_lossy(&down.stderr);
        assert!(
            err.contains("Error from server (InternalError): Internal error occurred: failed calling webhook \"virtualmachineinstances-mutator.kubevirt.io\": failed to call webhook: Post \"https://virt-api.harvester-system.svc:443/virtualmachineinstances-mutate?timeout=10s\": dial tcp 10.53.121.37:443: connect: connection refused"),
            "{}: {err}",
            bin.display()
        );
        // A 422 denial: kubectl prints the causes of an Invalid Status, not its message.
        let _ = sim.set_webhook(
            "virt-api",
            harvester_sim::WebhookState::deny("spec is immutable"),
        );
        let denied = k.run(&patch, None).await;
        assert!(!denied.status.success());
        let err = String::from_utf8_lossy(&denied.stderr);
        assert!(
            err.contains("The request is invalid") && err.contains("spec is immutable"),
            "{}: {err}",
            bin.display()
        );
        // A 400 denial (Harvester's NewBadRequest): the whole message.
        let _ = sim.set_webhook(
            "virt-api",
            harvester_sim::WebhookState::Deny {
                message: "spec is immutable".into(),
                code: 400,
            },
        );
        let denied = k.run(&patch, None).await;
        let err = String::from_utf8_lossy(&denied.stderr);
        assert!(
            err.contains("Error from server (BadRequest): admission webhook \"virtualmachineinstances-mutator.kubevirt.io\" denied the request: spec is immutable"),
            "{}: {err}",
            bin.display()
        );
        let _ = sim.set_webhook("virt-api", harvester_sim::WebhookState::Up);
        k.ok(&patch).await;
    }
}

/// A ValidatingAdmissionPolicy applied with kubectl, and its denial as kubectl prints it: the
/// Invalid Status with one cause reads as in the Kubernetes docs' example ("The deployments
/// \"nginx\" is invalid: : ValidatingAdmissionPolicy '...' with binding '...' denied request:
/// failed expression: ...").
#[tokio::test]
async fn kubectl_applies_an_admission_policy_and_shows_its_denial() {
    const POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: freeze-web}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {apiGroups: [kubevirt.io], apiVersions: ["*"], operations: [UPDATE], resources: [virtualmachineinstances]}
  validations:
    - expression: "object.metadata.name != 'vm-web-01'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: freeze-web-binding}
spec: {policyName: freeze-web, validationActions: [Deny]}
"#;
    for bin in kubectls() {
        let sim = power_loss().await;
        let k = Kubectl {
            bin: &bin,
            kubeconfig: sim.kubeconfig_path(),
        };
        let patch = |name: &'static str| {
            [
                "patch",
                "vmi",
                name,
                "-n",
                "default",
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
            ]
        };
        k.ok_in(&["apply", "-f", "-"], Some(POLICY)).await;
        let names = k
            .ok(&["get", "validatingadmissionpolicies", "-o", "name"])
            .await;
        assert!(
            names.contains("validatingadmissionpolicy.admissionregistration.k8s.io/freeze-web"),
            "{names}"
        );
        let denied = k.run(&patch("vm-web-01"), None).await;
        assert!(!denied.status.success());
        let err = String::from_utf8_lossy(&denied.stderr);
        assert!(
            err.contains("The virtualmachineinstances \"vm-web-01\" is invalid: : ValidatingAdmissionPolicy 'freeze-web' with binding 'freeze-web-binding' denied request: failed expression: object.metadata.name != 'vm-web-01'"),
            "{}: {err}",
            bin.display()
        );
        // Another VMI passes; without the binding nothing is enforced.
        k.ok(&patch("vm-db-01")).await;
        k.ok(&[
            "delete",
            "validatingadmissionpolicybinding",
            "freeze-web-binding",
        ])
        .await;
        k.ok(&patch("vm-web-01")).await;
    }
}

/// A node to drain: a DaemonSet's pod (left alone with --ignore-daemonsets), a pod with an
/// emptyDir (--delete-emptydir-data) and a pod no controller owns (--force), and a pod bound
/// ServiceAccount for a pod-bound token.
const DRAIN: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: drain-me, uid: 9a0b7c3e-0000-4000-8000-00000000d001}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: default, uid: 9a0b7c3e-0000-4000-8000-00000000d002}
spec: {selector: {matchLabels: {app: agent}}, template: {metadata: {labels: {app: agent}}, spec: {containers: [{name: a, image: x}]}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: agent-x1
  namespace: default
  labels: {app: agent}
  ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: agent, uid: 9a0b7c3e-0000-4000-8000-00000000d002, controller: true}]
spec: {nodeName: drain-me, containers: [{name: a, image: x}]}
status: {phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: scratch, namespace: default}
spec: {nodeName: drain-me, containers: [{name: a, image: x}], volumes: [{name: tmp, emptyDir: {}}]}
status: {phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: bare, namespace: default}
spec: {nodeName: drain-me, serviceAccountName: builder, containers: [{name: a, image: x}]}
status: {phase: Running}
"#;

/// kubectl ≥ 1.32 creates with protobuf bodies; `drain` evicts through `pods/eviction` and
/// `create token` mints a token the simulator then authenticates (see
/// `harvester_sim::protobuf`, `harvester_sim::tokens`).
#[tokio::test]
async fn kubectl_create_drain_and_token() {
    for bin in kubectls() {
        let sim = match Sim::start(
            SimConfig::default()
                .scenario_file(shipped_scenario("power-loss.yaml"))
                .scenario_text(DRAIN),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => panic!("simulator did not start: {e:#}"),
        };
        let k = Kubectl {
            bin: &bin,
            kubeconfig: sim.kubeconfig_path(),
        };
        let b = bin.display();
        k.ok(&["create", "namespace", "team"]).await;
        k.ok(&["create", "serviceaccount", "builder", "-n", "team"])
            .await;
        k.ok(&["create", "serviceaccount", "builder", "-n", "default"])
            .await;
        k.ok(&[
            "create",
            "role",
            "reader",
            "-n",
            "team",
            "--verb=get,list",
            "--resource=pods",
        ])
        .await;
        k.ok(&[
            "create",
            "rolebinding",
            "reader",
            "-n",
            "team",
            "--role=reader",
            "--serviceaccount=team:builder",
        ])
        .await;
        let rb = sim
            .get(
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
                "team",
                "reader",
            )
            .unwrap_or_default();
        assert_eq!(rb["roleRef"]["name"], "reader", "{b}: {rb}");
        assert_eq!(
            rb["subjects"][0],
            serde_json::json!({"kind": "ServiceAccount", "name": "builder", "namespace": "team"}),
            "{b}"
        );
        let role = sim
            .get("rbac.authorization.k8s.io/v1", "Role", "team", "reader")
            .unwrap_or_default();
        assert_eq!(
            role["rules"][0]["verbs"],
            serde_json::json!(["get", "list"]),
            "{b}"
        );
        let protobuf_creates = sim
            .mutating_requests()
            .iter()
            .filter(|r| r.content_type == "application/vnd.kubernetes.protobuf")
            .count();
        let before_1_32 = ["kubectl.1.27", "kubectl.1.30"]
            .iter()
            .any(|v| bin.ends_with(v));
        assert!(
            before_1_32 || protobuf_creates >= 4,
            "{b}: kubectl ≥ 1.32 sends protobuf ({protobuf_creates})"
        );

        // create token: the token authenticates as the ServiceAccount.
        let token = k.ok(&["create", "token", "builder", "-n", "team"]).await;
        let who = sim.authenticate_token(token.trim());
        assert_eq!(
            who.as_ref().map(|w| w.user.as_str()),
            Some("system:serviceaccount:team:builder"),
            "{b}"
        );
        // Bound to a pod: the pod's node is in the identity's extra.
        let token = k
            .ok(&[
                "create",
                "token",
                "builder",
                "-n",
                "default",
                "--bound-object-kind=Pod",
                "--bound-object-name=bare",
            ])
            .await;
        let who = sim.authenticate_token(token.trim());
        assert_eq!(
            who.as_ref()
                .and_then(|w| w.extra.get("authentication.kubernetes.io/node-name"))
                .cloned(),
            Some(vec!["drain-me".to_string()]),
            "{b}: {who:?}"
        );

        // drain: cordon, evict what may go, leave the DaemonSet's pod.
        k.ok(&[
            "drain",
            "drain-me",
            "--force",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ])
        .await;
        let node = sim.get("v1", "Node", "", "drain-me").unwrap_or_default();
        assert_eq!(node["spec"]["unschedulable"], true, "{b}");
        for gone in ["scratch", "bare"] {
            assert!(
                sim.get("v1", "Pod", "default", gone).is_none(),
                "{b}: {gone}"
            );
        }
        assert!(sim.get("v1", "Pod", "default", "agent-x1").is_some(), "{b}");
        let evictions = sim
            .mutating_requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/eviction") && r.status == 201)
            .count();
        assert_eq!(evictions, 2, "{b}: evicted through pods/eviction");
        // The pod the token was bound to is gone: the token no longer authenticates.
        assert!(sim.authenticate_token(token.trim()).is_none(), "{b}");
    }
}

/// Objects carry managedFields as a real apiserver keeps them: the scenario's VMIs show their
/// usual managers, and a `kubectl label` adds kubectl's own entry owning just that label.
#[tokio::test]
async fn kubectl_sees_managed_fields() {
    for bin in kubectls() {
        let sim = power_loss().await;
        let k = Kubectl {
            bin: &bin,
            kubeconfig: sim.kubeconfig_path(),
        };
        k.ok(&["label", "vmi", "vm-web-03", "-n", "default", "team=storage"])
            .await;
        let out = k
            .ok(&[
                "get",
                "vmi",
                "vm-web-03",
                "-n",
                "default",
                "-o",
                "json",
                "--show-managed-fields",
            ])
            .await;
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let entries = v["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let managers: Vec<&str> = entries
            .iter()
            .filter_map(|e| e["manager"].as_str())
            .collect();
        assert!(
            managers.contains(&"virt-controller") && managers.contains(&"virt-handler"),
            "{}: {managers:?}",
            bin.display()
        );
        let Some(mine) = entries.iter().find(|e| e["manager"] == "kubectl-label") else {
            panic!("{}: no kubectl-label entry in {managers:?}", bin.display());
        };
        assert_eq!(mine["operation"], "Update");
        assert_eq!(
            mine["fieldsV1"],
            serde_json::json!({"f:metadata": {"f:labels": {"f:team": {}}}}),
            "{}",
            bin.display()
        );
    }
}

/// Params found by `paramRef.selector` in the request's namespace (no `paramRef.namespace`), as
/// k8s.io/apiserver `policy/generic/policy_dispatcher.go` `CollectParams` finds them (v1.30.0,
/// v1.33.0): none yet (`parameterNotFoundAction: Deny`) refuses the write; each selected
/// ConfigMap is evaluated and any one's denial refuses; another namespace's do not count.
#[tokio::test]
async fn kubectl_params_by_selector_in_the_requests_namespace() {
    const POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: freeze}
spec:
  failurePolicy: Fail
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
      - {apiGroups: [kubevirt.io], apiVersions: ["*"], operations: [UPDATE], resources: [virtualmachineinstances]}
  validations:
    - expression: "object.metadata.name != params.data.frozen"
      messageExpression: "'frozen by ' + params.metadata.name"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: freeze-binding}
spec:
  policyName: freeze
  validationActions: [Deny]
  paramRef:
    selector: {matchLabels: {freeze: "yes"}}
    parameterNotFoundAction: Deny
"#;
    let Some(bin) = kubectls().into_iter().last() else {
        return;
    };
    let sim = power_loss().await;
    let k = Kubectl {
        bin: &bin,
        kubeconfig: sim.kubeconfig_path(),
    };
    let patch = |name: &'static str| {
        [
            "patch",
            "vmi",
            name,
            "-n",
            "default",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"checked":"yes"}}}"#,
        ]
    };
    // Params and their labels first: the binding refuses every VMI update until one exists.
    k.ok(&[
        "create",
        "configmap",
        "f1",
        "-n",
        "prod",
        "--from-literal=frozen=vm-db-01",
    ])
    .await;
    k.ok(&["label", "configmap", "f1", "-n", "prod", "freeze=yes"])
        .await;
    k.ok_in(&["apply", "-f", "-"], Some(POLICY)).await;
    let none = k.run(&patch("vm-web-01"), None).await;
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(
        err.contains("failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"),
        "prod's params do not count for default: {err}"
    );
    k.ok(&[
        "create",
        "configmap",
        "f2",
        "-n",
        "default",
        "--from-literal=frozen=vm-web-01",
    ])
    .await;
    k.ok(&["label", "configmap", "f2", "-n", "default", "freeze=yes"])
        .await;
    let denied = k.run(&patch("vm-web-01"), None).await;
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("denied request: frozen by f2"), "{err}");
    k.ok(&patch("vm-db-01")).await;
    // A second selected ConfigMap: each is evaluated, either one refuses.
    k.ok(&[
        "create",
        "configmap",
        "f3",
        "-n",
        "default",
        "--from-literal=frozen=vm-db-01",
    ])
    .await;
    k.ok(&["label", "configmap", "f3", "-n", "default", "freeze=yes"])
        .await;
    let denied = k.run(&patch("vm-web-01"), None).await;
    assert!(String::from_utf8_lossy(&denied.stderr).contains("frozen by f2"));
    let denied = k.run(&patch("vm-db-01"), None).await;
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("denied request: frozen by f3"), "{err}");
}

/// Longhorn's replicas (`replicas.longhorn.io`, short name `lhr`) as longhorn-manager serves
/// them: listed by the `longhornvolume` label, printed with replica.go's columns.
#[tokio::test]
async fn kubectl_lists_a_volumes_replicas_by_label() {
    for bin in kubectls() {
        let sim = power_loss().await;
        for (name, volume, node, state) in [
            ("vol-a-r-1", "vol-a", "harvester-node-2", "running"),
            ("vol-a-r-2", "vol-a", "harvester-node-3", "stopped"),
            ("vol-b-r-1", "vol-b", "harvester-node-2", "running"),
        ] {
            sim.put(json!({
                "apiVersion": "longhorn.io/v1beta2", "kind": "Replica",
                "metadata": {"name": name, "namespace": "longhorn-system",
                             "labels": {"longhornvolume": volume}},
                "spec": {"volumeName": volume, "nodeID": node},
                "status": {"currentState": state}
            }))
            .expect("put a replica");
        }
        let k = Kubectl {
            bin: &bin,
            kubeconfig: sim.kubeconfig_path(),
        };
        let out = k
            .ok(&[
                "get",
                "lhr",
                "-n",
                "longhorn-system",
                "-l",
                "longhornvolume=vol-a",
            ])
            .await;
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0][..3], ["NAME", "STATE", "NODE"], "{out}");
        assert_eq!(lines.len(), 3, "only vol-a's replicas:\n{out}");
        assert_eq!(
            lines[2][..3],
            ["vol-a-r-2", "stopped", "harvester-node-3"],
            "{out}"
        );
    }
}
