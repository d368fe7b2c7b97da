//! Docs that would drift if written by hand (issue 25 item 6): the permissions page is
//! generated from the chart's Roles and ClusterRole (`charts/render.py deploy`; its currency is
//! checked by tests/chart_render.rs) and here checked against deploy/rbac.yaml independently of
//! the generator, rule by rule; the runbook's table of reasons has one row per `Blocker`.

use crate::chart_support::*;
use vmrecover::recovery::Blocker;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_runbook_explains_every_blocker_and_no_other() {
    let runbook = read("docs/runbook.md");
    let table_at = runbook
        .find("| reason | meaning | what to do |")
        .expect("the runbook's table of reasons");
    let rows: Vec<&str> = runbook[table_at..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    for b in Blocker::all() {
        assert!(
            rows.contains(&b.label()),
            "docs/runbook.md's table of reasons has no row for `{}`",
            b.label()
        );
    }
    let labels: Vec<&str> = Blocker::all().map(|b| b.label()).collect();
    for r in &rows {
        assert!(
            labels.contains(r),
            "docs/runbook.md lists `{r}`, which is no Blocker"
        );
    }
    assert_eq!(rows.len(), labels.len(), "one row each: {rows:?}");
}

#[test]
fn the_permissions_page_lists_every_rule_of_the_chart_with_its_reason() {
    let doc = read("docs/rbac.md");
    assert!(doc.contains("GENERATED from charts/vmrecover/templates/rbac.yaml"));
    let objs = objects(&read("deploy/rbac.yaml"));
    let mut rules = 0;
    for o in objs
        .iter()
        .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
    {
        let name = o["metadata"]["name"].as_str().unwrap();
        let heading = format!("## {} `{name}` (", o["kind"].as_str().unwrap());
        let at = doc
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/rbac.md has no section {heading}"));
        let section = &doc[at..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
        for rule in o["rules"].as_array().unwrap() {
            rules += 1;
            let res = strs(&rule["resources"])
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let verbs = strs(&rule["verbs"]).join(", ");
            let names = strs(&rule["resourceNames"])
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let names = if names.is_empty() {
                "any".into()
            } else {
                names
            };
            let row = section
                .lines()
                .find(|l| l.contains(&format!(" {res} | {names} | {verbs} |")))
                .unwrap_or_else(|| {
                    panic!("docs/rbac.md, {heading}: no row for {res} {names} {verbs}")
                });
            let why = row.trim_end_matches('|').rsplit('|').next().unwrap().trim();
            assert!(
                why.len() > 10,
                "docs/rbac.md: {res} {verbs} of {name} says nothing about why (comment the rule in charts/vmrecover/templates/rbac.yaml)"
            );
        }
    }
    assert!(rules >= 14, "{rules} rules");
    // The README points there instead of keeping a summary of its own.
    let readme = read("README.md");
    assert!(readme.contains("[docs/rbac.md](docs/rbac.md)"));
    assert!(
        !readme.contains("list PVCs"),
        "the README's stale RBAC summary is back"
    );
}
