//! The chart's `values.schema.json` (issue 25 item 3): Helm validates the merged values against
//! it on install, upgrade and template (`charts/render.py template` renders through the same
//! Helm engine), so each typo an operator made before — a duration without its unit, a word
//! for a number, a key in the wrong case, a port that is not a number — is refused with a
//! message naming the key, instead of crash-looping every node or silently turning recovery
//! off. The values files the project ships pass it, and every object of the chart's own is
//! closed (`additionalProperties: false`) while the pass-through maps stay open.
//!
//! Without the venv (outside CI) the rendering tests print why they skipped.

use crate::chart_support::*;
use serde_json::Value;

/// Values an operator could write, and the key path Helm's refusal must name.
const BAD: [(&str, &str); 12] = [
    // Crash-looped every node: the agent refused the flag `--stuck-after 5`.
    (r#"{"stuckAfter": 5}"#, "/stuckAfter"),
    (r#"{"stuckAfter": "5"}"#, "/stuckAfter"),
    // Rendered 0, which refuses every plan: recovery silently off.
    (r#"{"maxVms": "fifty"}"#, "/maxVms"),
    (r#"{"maxVms": 0}"#, "/maxVms"),
    // The wrong case was ignored: the policy stayed on while the operator believed it off.
    (
        r#"{"admissionpolicy": {"enabled": false}}"#,
        "'admissionpolicy' not allowed",
    ),
    // Rendered containerPort 0.
    (r#"{"metrics": {"port": "abc"}}"#, "/metrics/port"),
    (r#"{"actOn": "Unclean"}"#, "/actOn"),
    (r#"{"controllerGrace": "2 minutes"}"#, "/controllerGrace"),
    (
        r#"{"metrics": {"prometheusRule": {"blockedFor": 15}}}"#,
        "/metrics/prometheusRule/blockedFor",
    ),
    (
        r#"{"hostUnits": {"cloudInit": {"hostmode": true}}}"#,
        "'hostmode' not allowed",
    ),
    (r#"{"image": {"digest": "abc"}}"#, "/image/digest"),
    (r#"{"alsoFinalizers": "x/y"}"#, "/alsoFinalizers"),
];

#[test]
fn every_known_typo_is_refused_naming_its_key() {
    let Some(py) = helm_python() else { return };
    for (values, key) in BAD {
        let o = try_template(&py, "harvester-system", &[values]);
        let t = text(&o);
        assert!(
            !o.status.success(),
            "values {values} rendered, but must be refused"
        );
        assert!(
            t.contains("the chart refuses these values") && t.contains(key),
            "values {values}: the refusal does not name {key}:\n{t}"
        );
    }
}

#[test]
fn the_shipped_values_and_what_operators_may_add_pass_the_schema() {
    let Some(py) = helm_python() else { return };
    let addon = repo().join("addons/vmrecover.yaml");
    let o = render_py(
        &py,
        &[
            "template",
            "--addon",
            addon.to_str().unwrap(),
            "--set-json",
            ALL_ON,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // Pass-through maps stay open: Rancher's global.cattle.*, any resources, affinity,
    // pod labels and annotations, env entries.
    let open = r#"{"global": {"cattle": {"systemDefaultRegistry": "r.example", "clusterId": "c-1"}},
        "resources": {"limits": {"hugepages-2Mi": "0"}},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "Exists"}]}]}}},
        "podLabels": {"team": "infra"}, "podAnnotations": {"a": "b"},
        "extraEnv": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "stuckAfter": "1h30m", "maxVms": 1, "metrics": {"port": 9100},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}}"#;
    let o = try_template(&py, "harvester-system", &[open]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Every object schema reached from `at`, with its JSON path.
fn objects_of<'a>(at: &str, s: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    if s["type"] == "object" {
        out.push((at.to_string(), s));
    }
    if let Some(props) = s["properties"].as_object() {
        for (k, v) in props {
            objects_of(&format!("{at}/{k}"), v, out);
        }
    }
    if s["items"].is_object() {
        objects_of(&format!("{at}/[]"), &s["items"], out);
    }
}

#[test]
fn every_object_of_ours_is_closed_and_only_pass_through_maps_are_open() {
    let text = std::fs::read_to_string(repo().join("charts/vmrecover/values.schema.json"))
        .expect("values.schema.json");
    let schema: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        schema["$schema"], "http://json-schema.org/draft-07/schema#",
        "Helm 3 validates draft 7"
    );
    // Maps whose keys are the cluster's, not ours: labels, annotations, Kubernetes objects
    // passed through as they are, and `global` (Rancher injects global.cattle.*).
    let open = [
        "/global",
        "/resources",
        "/affinity",
        "/tolerations/[]",
        "/extraEnv/[]",
    ];
    let string_maps = [
        "/nodeSelector",
        "/podLabels",
        "/podAnnotations",
        "/hostUnits/cloudInit/matchSelector",
        "/metrics/serviceMonitor/labels",
        "/metrics/prometheusRule/labels",
    ];
    let mut objs = Vec::new();
    objects_of("", &schema, &mut objs);
    for (path, s) in objs {
        let ap = &s["additionalProperties"];
        if open.contains(&path.as_str()) {
            assert!(ap.is_null(), "{path} is a pass-through map: keep it open");
        } else if string_maps.contains(&path.as_str()) {
            assert_eq!(ap["type"], "string", "{path}: a map of strings");
        } else {
            assert_eq!(ap, &Value::Bool(false), "{path} is ours: close it");
        }
    }
}

/// docs/install.md's way to find what a new chart refuses in the values of a release before
/// upgrading: the values file through `render.py template --values` (as `helm template -f`).
#[test]
fn the_documented_pre_upgrade_check_names_the_bad_keys_of_a_values_file() {
    let Some(py) = helm_python() else { return };
    let doc = std::fs::read_to_string(repo().join("docs/install.md")).unwrap();
    assert!(doc.contains(
        "charts/render.py template --chart addons/repo/vmrecover-<new>.tgz --values current-values.yaml"
    ));
    assert!(doc.contains("--reset-then-reuse-values"));
    assert!(
        doc.lines()
            .filter(|l| l.contains("--reuse-values"))
            .all(|l| l.contains("Never")),
        "install.md must not advise --reuse-values"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("current-values.yaml");
    std::fs::write(
        &file,
        "stuckAfter: 10m\nmaxVMs: 20\nmetrics:\n  prometheusRule:\n    enabled: true\n    blockedFor: 15\n",
    )
    .unwrap();
    let o = render_py(&py, &["template", "--values", file.to_str().unwrap()]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    for key in ["'maxVMs' not allowed", "/metrics/prometheusRule/blockedFor"] {
        assert!(t.contains(key), "the check does not name {key}:\n{t}");
    }
}
