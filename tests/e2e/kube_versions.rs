//! Real clusters first (issue 22): what vmrecover ships, applied with the real kubectl to the
//! simulator at each Harvester release's real Kubernetes version, and refused where a real
//! kube-apiserver refuses it.
//!
//! - `kubectl apply -k deploy/` works at 1.29 (Harvester 1.4.0), 1.30, 1.33 and 1.35;
//!   `kubectl apply -f deploy/admissionpolicy.yaml` fails with "no matches for kind" on 1.29
//!   and is applied and enforced from 1.30; pod-bound tokens carry their node from 1.30 only.
//! - The chart (`admissionPolicy.enabled: auto`) renders the policy exactly where the API
//!   exists (`render.py template --kube-version`), and its rendering applies at each version.
//! - Policies the apiserver refuses are refused with its message: the old `["*", "*/*"]`, a
//!   validation that is not bool (`1 + 1`), an undeclared function, a library function newer
//!   than the version's CEL environment.
//! - A policy denial of vmrecover's finalizer patch is reported once with the policy's
//!   message, not retried as a conflict.

use crate::admission_support::{kubectl, AGENT_POD, SA_NS};
use harvester_sim::{shipped_scenario, SettingsPatch, Sim, SimConfig};
use serde_json::{json, Value};

/// Kubernetes versions of Harvester 1.4.0, 1.4.1, 1.6.x and 1.8.0.
const VERSIONS: [&str; 4] = [
    "1.29.9+rke2r1",
    "1.30.7+rke2r1",
    "1.33.5+rke2r1",
    "1.35.2+rke2r1",
];

fn minor(v: &str) -> u32 {
    v.split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

async fn sim_at(version: &str) -> Sim {
    let cfg = SimConfig::default()
        .scenario_file(shipped_scenario("power-loss.yaml"))
        .settings(SettingsPatch {
            kube_version: Some(version.to_string()),
            virt_controller: Some(false),
            ..SettingsPatch::default()
        });
    Sim::start(cfg).await.expect("start harvester-sim")
}

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn deploy(file: &str) -> String {
    format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR"))
}

const NO_POLICY_KIND: &str =
    "no matches for kind \"ValidatingAdmissionPolicy\" in version \"admissionregistration.k8s.io/v1\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_applies_at_every_release_kubernetes_version() {
    for v in VERSIONS {
        let sim = sim_at(v).await;
        let version = kubectl(&sim, &["get", "--raw", "/version"]);
        assert!(
            out(&version).contains(&format!("\"gitVersion\": \"v{v}\""))
                || out(&version).contains(&format!("\"gitVersion\":\"v{v}\"")),
            "{}",
            out(&version)
        );

        let k = kubectl(&sim, &["apply", "-k", &deploy("")]);
        assert!(k.status.success(), "{v}: apply -k deploy/: {}", out(&k));
        assert!(sim
            .get("apps/v1", "DaemonSet", SA_NS, "vmrecover")
            .is_some());

        let p = kubectl(&sim, &["apply", "-f", &deploy("admissionpolicy.yaml")]);
        let policies = sim.list(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicy",
        );
        if minor(v) < 30 {
            assert!(
                !p.status.success(),
                "{v}: the policy API does not exist on 1.29"
            );
            assert!(out(&p).contains(NO_POLICY_KIND), "{v}: {}", out(&p));
            assert!(policies.is_empty());
        } else {
            assert!(
                p.status.success(),
                "{v}: apply -f admissionpolicy.yaml: {}",
                out(&p)
            );
            assert_eq!(
                policies.len(),
                2,
                "{v}: the agents' and the fence identity's"
            );
        }

        // Pod-bound tokens name their node from 1.30 (ServiceAccountTokenPodNodeInfo).
        sim.put(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": AGENT_POD, "namespace": SA_NS},
            "spec": {"nodeName": crate::e2e_support::NODE, "serviceAccountName": "vmrecover",
                     "containers": [{"name": "vmrecover", "image": "vmrecover"}]},
        }))
        .expect("agent pod");
        let t = kubectl(
            &sim,
            &[
                "create",
                "token",
                "vmrecover",
                "-n",
                SA_NS,
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                AGENT_POD,
            ],
        );
        assert!(t.status.success(), "{}", out(&t));
        let token = String::from_utf8_lossy(&t.stdout).trim().to_string();
        let who = sim.authenticate_token(&token).expect("token authenticates");
        assert_eq!(
            who.extra
                .contains_key("authentication.kubernetes.io/node-name"),
            minor(v) >= 30,
            "{v}: {who:?}"
        );

        if minor(v) >= 30 {
            // Enforced: the unbound token of the ServiceAccount is refused a write.
            let (c, _dir) = crate::admission_support::client(
                &sim,
                &crate::admission_support::token(&sim, None),
            )
            .await;
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "vmrecover-harvester-node-1", "namespace": SA_NS}});
            let refused = crate::admission_support::send(
                &c,
                "POST",
                &format!("/apis/coordination.k8s.io/v1/namespaces/{SA_NS}/leases"),
                "application/json",
                Some(lease),
            )
            .await;
            let Err((code, _, message)) = refused else {
                panic!("{v}: a write without a node passed the policy")
            };
            assert_eq!(code, 422, "{v}: {message}");
            assert!(message.contains("this one names no node"), "{v}: {message}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_renders_the_policy_exactly_where_the_api_exists() {
    let Some(py) = crate::chart_support::helm_python() else {
        return;
    };
    let kinds = |yaml: &str| -> Vec<String> {
        crate::chart_support::objects(yaml)
            .iter()
            .filter_map(|o| o["kind"].as_str().map(String::from))
            .filter(|k| k.starts_with("ValidatingAdmissionPolicy"))
            .collect()
    };
    for v in VERSIONS {
        let o = crate::chart_support::render_py(&py, &["template", "--kube-version", v]);
        assert!(o.status.success(), "{}", crate::chart_support::text(&o));
        let yaml = String::from_utf8_lossy(&o.stdout).into_owned();
        let policy = kinds(&yaml);
        if minor(v) < 30 {
            assert!(policy.is_empty(), "{v}: {policy:?}");
        } else {
            assert_eq!(
                policy,
                [
                    "ValidatingAdmissionPolicy",
                    "ValidatingAdmissionPolicyBinding",
                    "ValidatingAdmissionPolicy",
                    "ValidatingAdmissionPolicyBinding"
                ],
                "{v}"
            );
        }
        // The rendering applies (the kinds the simulator serves) at that version.
        let (list, _others) =
            crate::chart_support::split_for_sim(&crate::chart_support::objects(&yaml));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("chart.json");
        std::fs::write(&file, list).expect("write");
        let sim = sim_at(v).await;
        let a = kubectl(&sim, &["apply", "-f", &file.display().to_string()]);
        assert!(a.status.success(), "{v}: {}", out(&a));
    }
    // true forces it (and 1.29 then refuses it), false leaves it out, anything else fails.
    let forced = crate::chart_support::render_py(
        &py,
        &[
            "template",
            "--kube-version",
            "1.29.9",
            "--set-json",
            r#"{"admissionPolicy":{"enabled":true}}"#,
        ],
    );
    assert_eq!(kinds(&String::from_utf8_lossy(&forced.stdout)).len(), 4);
    let off =
        crate::chart_support::template(&py, SA_NS, &[r#"{"admissionPolicy":{"enabled":false}}"#]);
    assert!(kinds(&off).is_empty());
    let bad = crate::chart_support::try_template(
        &py,
        SA_NS,
        &[r#"{"admissionPolicy":{"enabled":"yes"}}"#],
    );
    assert!(!bad.status.success());
    assert!(
        // The values schema refuses it before the template's own check would.
        crate::chart_support::text(&bad).contains("/admissionPolicy/enabled")
            && crate::chart_support::text(&bad).contains("'auto', true, false"),
        "{}",
        crate::chart_support::text(&bad)
    );
}

/// A one-validation policy over `resources` as kubectl would apply it.
fn policy(name: &str, resources: Value, expression: &str) -> String {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"], "resources": resources}]},
            "validations": [{"expression": expression, "message": "no"}]}
    })
    .to_string()
}

fn apply_policy(sim: &Sim, doc: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.json");
    std::fs::write(&file, doc).expect("write");
    kubectl(sim, &["apply", "-f", &file.display().to_string()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_the_apiserver_refuses_are_refused_with_its_message() {
    let sim = sim_at("1.30.7+rke2r1").await;
    let refused = [
        (
            policy("old-rules", json!(["*", "*/*"]), "true"),
            "spec.matchConstraints.resourceRules[0].resources: Invalid value: []string{\"*\", \"*/*\"}: if '*/*' is present, must not specify other resources",
        ),
        (
            policy("not-bool", json!(["*/*"]), "1 + 1"),
            "spec.validations[0].expression: Invalid value: \"1 + 1\": must evaluate to bool",
        ),
        (
            policy("undeclared", json!(["*/*"]), "nosuch(object) == 1"),
            "undeclared reference to 'nosuch' (in container '')",
        ),
        // 1.30 compiles against 1.29's environment: no IP library yet (1.30's, so 1.31+).
        (
            policy("too-new", json!(["*/*"]), "isIP('10.0.0.1')"),
            "undeclared reference to 'isIP' (in container '')",
        ),
    ];
    for (doc, message) in &refused {
        let o = apply_policy(&sim, doc);
        assert!(!o.status.success(), "accepted: {doc}");
        assert!(
            out(&o).contains(message),
            "want {message:?} in\n{}",
            out(&o)
        );
    }
    assert!(sim
        .list(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicy"
        )
        .is_empty());
    // The same function on 1.31 (Harvester 1.4.3), the fixed rules on 1.30: accepted.
    let newer = sim_at("1.31.7+rke2r1").await;
    let ok = apply_policy(&newer, &policy("ip", json!(["*/*"]), "isIP('10.0.0.1')"));
    assert!(ok.status.success(), "{}", out(&ok));
    let ok = apply_policy(&sim, &policy("fixed", json!(["*/*"]), "true"));
    assert!(ok.status.success(), "{}", out(&ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_denial_is_reported_with_its_message_not_as_conflicts() {
    // backup.example.com/protect (vm-custom-01's VMI) named with --also-finalizer but not in
    // the policy's params (the chart's alsoFinalizers): the policy refuses its removal.
    let sim = crate::admission_support::cluster(true, true).await;
    let ran = crate::admission_support::run_as_agent_with(
        &sim,
        false,
        &["--also-finalizer", "backup.example.com/protect"],
    )
    .await;
    let report = ran.report.to_string();
    assert!(
        report.contains("admission policy vmrecover-node-restriction refused the change: vmrecover may only remove the finalizers it knows and the ones the operator named (alsoFinalizers), not: backup.example.com/protect"),
        "{report}\n{}",
        ran.stderr
    );
    assert!(!report.contains("conflicts"), "{report}");
    let patches = ran
        .requests
        .iter()
        .filter(|r| {
            r.method == "PATCH" && r.path.ends_with("/virtualmachineinstances/vm-custom-01")
        })
        .count();
    assert_eq!(patches, 1, "one request, no retry loop");
    assert_ne!(ran.code, 0, "{}", ran.stderr);
}

/// The paragraph `_admissionpolicy_notes.tpl` gives NOTES.txt: what is missing without the
/// policy, and nothing where it is installed. Rendered through a copy of the chart whose
/// NOTES.txt includes it (charts/render.py leaves NOTES.txt out of its streams).
#[test]
fn the_notes_partial_says_which_guarantee_is_missing() {
    let Some(py) = crate::chart_support::helm_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = dir.path().join("vmrecover");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(crate::chart_support::repo().join("charts/vmrecover"))
        .arg(&chart)
        .status()
        .expect("cp");
    assert!(copied.success());
    std::fs::write(
        chart.join("templates/NOTES.txt"),
        "{{ include \"vmrecover.admissionPolicy.notes\" . }}\n",
    )
    .expect("NOTES.txt");
    let notes = |values: &str| -> String {
        let script = format!(
            "import helm_python as h, json, sys\nc = h.Chart.load({chart:?})\nwith c:\n    out = c.render(json.loads({values:?}), name='vmrecover', namespace='harvester-system', is_install=True)\nsys.stdout.write(next(v for k, v in out.items() if k.endswith('NOTES.txt')))\n",
            chart = chart.display().to_string(),
        );
        let o = std::process::Command::new(&py)
            .args(["-c", &script])
            .output()
            .expect("python");
        assert!(o.status.success(), "{}", crate::chart_support::text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let old = notes(r#"{"kubeVersion": "1.29.9"}"#);
    assert!(
        old.contains("vmrecover-node-restriction is NOT installed")
            && old.contains("Kubernetes before 1.30, e.g. Harvester 1.4.0")
            && old.contains(
                "The API server then does not restrict the agent's ServiceAccount to its own node"
            ),
        "{old}"
    );
    let off = notes(r#"{"admissionPolicy": {"enabled": false}}"#);
    assert!(off.contains("(admissionPolicy.enabled=false)"), "{off}");
    assert_eq!(notes(r#"{"kubeVersion": "1.30.7"}"#).trim(), "");
}

/// `vmrecover status` says, in its compact header and in its JSON, when the cluster cannot
/// hold vmrecover's node restriction (no ValidatingAdmissionPolicy API: Kubernetes 1.29,
/// Harvester 1.4.0), as NOTES, docs and `check` do; from 1.30 it says nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_the_node_restriction_is_missing_below_1_30() {
    for v in ["1.29.9+rke2r1", "1.30.7+rke2r1"] {
        let env = crate::e2e_support::Env::on(sim_at(v).await);
        let compact = env.run(&["status"]).await;
        let said = compact.stdout.contains(
            "node restriction: MISSING — this cluster serves no ValidatingAdmissionPolicy (Kubernetes < 1.30)",
        );
        assert_eq!(said, minor(v) < 30, "{v}: {}", compact.all());
        let json = env.run(&["status", "--output", "json"]).await;
        assert_eq!(
            json.json()["node_restriction_api"],
            json!({"state": "read", "value": minor(v) >= 30}),
            "{v}: {}",
            json.all()
        );
    }
}
