//! The chart's readiness alert (issue 24): `VmrecoverNotReady` from
//! `templates/prometheusrule-readiness.yaml`, rendered with the monitoring values on, passes
//! `promtool check rules`, and `promtool test rules` (monitoring/vmrecover-readiness.test.yaml)
//! shows it firing for a check in fail for 30 minutes and quiet for a shorter fail or a warn.
//! Without promtool or the Helm SDK (outside CI) it skips, as chart_monitoring does.

use std::path::PathBuf;
use std::process::Command;

use crate::chart_support::*;

fn promtool() -> Option<PathBuf> {
    tool("promtool", &["/usr/bin/promtool"])
        .or_else(|| skip("no promtool (apt-get install prometheus)"))
}

#[test]
fn vmrecover_not_ready_fires_for_a_check_in_fail_for_30_minutes() {
    let (Some(py), Some(promtool)) = (helm_python(), promtool()) else {
        return;
    };
    let objs = objects(&template(
        &py,
        "harvester-system",
        &[r#"{"metrics":{"prometheusRule":{"enabled":true}}}"#],
    ));
    let rule = objs
        .iter()
        .find(|o| o["kind"] == "PrometheusRule" && o["metadata"]["name"] == "vmrecover-readiness")
        .expect("the readiness PrometheusRule is rendered with the rules on");
    let dir = tempfile::tempdir().expect("tempdir");
    // JSON is YAML: the rule group as a plain Prometheus rules file.
    let rules = serde_json::json!({"groups": rule["spec"]["groups"]});
    std::fs::write(
        dir.path().join("vmrecover-readiness.rules.yaml"),
        rules.to_string(),
    )
    .expect("rules");
    let test = repo().join("monitoring/vmrecover-readiness.test.yaml");
    std::fs::copy(&test, dir.path().join("test.yaml")).expect("test file");
    let run = |args: &[&str]| {
        let o = Command::new(&promtool)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run promtool");
        (o.status.success(), text(&o))
    };
    let (ok, out) = run(&["check", "rules", "vmrecover-readiness.rules.yaml"]);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = run(&["test", "rules", "test.yaml"]);
    assert!(ok, "promtool test rules:\n{out}");
    // Off without the rules value.
    let off = objects(&template(&py, "harvester-system", &[]));
    assert!(!off
        .iter()
        .any(|o| o["metadata"]["name"] == "vmrecover-readiness"));
}
