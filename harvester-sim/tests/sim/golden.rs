//! Per-release golden stories, in kwok's testdata shape: `golden/<release>/<story>/` holds
//! `input.yaml` (the objects, and settings, a fresh simulator of that `--release` loads),
//! an optional `steps.yaml` (what happens to the cluster, in order) and `expected.yaml`
//! (every object of the kinds `input.yaml` names once the controllers have settled,
//! normalised). One test runs every story of every release directory, and checks that every
//! release the simulator ships has its directory with the three stories; a mismatch prints a
//! line diff. `GOLDEN_UPDATE=1` rewrites the expected files (review them by hand before you
//! commit: they are what the simulator claims the real cluster does).
//!
//! Steps (each followed by settling):
//! - `powerOff: NODE`: the kubelet stops (setting `downNodes`), and kube-controller-manager's
//!   node lifecycle controller marks the node as it does once the kubelet stopped posting
//!   status (kubernetes `pkg/controller/nodelifecycle/node_lifecycle_controller.go` v1.33.0:
//!   `tryUpdateNodeHealth` sets every condition `Unknown`, reason `NodeStatusUnknown`,
//!   "Kubelet stopped posting node status."; `doNoScheduleTaintingPass` and
//!   `doNoExecuteTaintingPass` add the `node.kubernetes.io/unreachable` taints). The
//!   transition is dated long ago, so every release's grace period is over.
//! - `patch: {apiVersion, kind, namespace, name, merge}`: a JSON merge patch over HTTP.
//! - `delete: {apiVersion, kind, namespace, name}`: a DELETE over HTTP, no body.
//!
//! Settling: `GET /_sim/settled`, then two more looks of the node-down controller, until two
//! such rounds in a row leave every object as it was (a fixed point; the stories' policies
//! have no period still running, so no later look can change anything).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use harvester_sim::profiles::PROFILES;
use harvester_sim::resources::{find_kind, RESOURCES};
use harvester_sim::settings::SettingsPatch;
use harvester_sim::{Sim, SimConfig};
use serde_json::{json, Map, Value};

use crate::common::Http;

/// The three stories every release has.
const STORIES: [&str; 3] = ["delete-vm-node-up", "power-cut", "delete-vm-node-down"];

/// When the node lifecycle controller marked a powered-off node (long before any test runs).
const POWER_CUT_AT: &str = "2025-06-02T08:14:52Z";

/// Rounds of settling after which a story that still changes fails.
const MAX_ROUNDS: usize = 200;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sim/golden")
}

fn subdirs(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml_docs(text: &str, origin: &Path) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", origin.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// The (apiVersion, kind) pairs of the objects in `input.yaml` (not the settings).
fn kinds_of(docs: &[Value]) -> BTreeSet<(String, String)> {
    docs.iter()
        .filter(|d| d["kind"] != "SimulatorSettings")
        .filter_map(|d| Some((d["apiVersion"].as_str()?.into(), d["kind"].as_str()?.into())))
        .collect()
}

/// The API path of one object.
fn path_of(api_version: &str, kind: &str, ns: &str, name: &str) -> String {
    let res = find_kind(api_version, kind)
        .unwrap_or_else(|| panic!("{api_version} {kind} is not served by the simulator"));
    let r = &RESOURCES[res];
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let ns = if r.namespaced {
        format!("/namespaces/{ns}")
    } else {
        String::new()
    };
    format!("{base}{ns}/{}/{name}", r.plural)
}

fn target(step: &Value) -> String {
    let s = |k: &str| step[k].as_str().unwrap_or_default();
    path_of(s("apiVersion"), s("kind"), s("namespace"), s("name"))
}

/// The node lifecycle controller's view of a node whose kubelet stopped posting status.
fn unreachable(mut node: Value) -> (Value, Value) {
    if let Some(conds) = node["status"]["conditions"].as_array_mut() {
        for c in conds {
            c["status"] = json!("Unknown");
            c["reason"] = json!("NodeStatusUnknown");
            c["message"] = json!("Kubelet stopped posting node status.");
            c["lastTransitionTime"] = json!(POWER_CUT_AT);
        }
    }
    let status_update = node.clone();
    let mut taints = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for effect in ["NoSchedule", "NoExecute"] {
        taints.push(
            json!({"key": "node.kubernetes.io/unreachable", "effect": effect,
                           "timeAdded": POWER_CUT_AT}),
        );
    }
    node["spec"]["taints"] = Value::Array(taints);
    (status_update, node)
}

async fn run_step(sim: &Sim, h: &Http, step: &Value, story: &str) {
    if let Some(node) = step["powerOff"].as_str() {
        let mut down = sim.settings().down_nodes;
        down.insert(node.to_string());
        sim.update_settings(&SettingsPatch {
            down_nodes: Some(down),
            ..SettingsPatch::default()
        });
        let path = path_of("v1", "Node", "", node);
        // The node lifecycle controller's two writes, each on the version it read: a timed
        // controller may write the Node in between (409), then both are made again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = h.get(&path).await;
            assert_eq!(current.status, 200, "{story}: GET {path}: {}", current.text);
            let (status, spec) = unreachable(current.body);
            let r = h.put(&format!("{path}/status"), &status).await;
            if r.status == 409 && attempts < 5 {
                continue;
            }
            assert_eq!(r.status, 200, "{story}: PUT {path}/status: {}", r.text);
            let mut spec = spec;
            spec["metadata"]["resourceVersion"] = r.body["metadata"]["resourceVersion"].clone();
            spec["status"] = r.body["status"].clone();
            let r = h.put(&path, &spec).await;
            if r.status == 409 && attempts < 5 {
                continue;
            }
            assert_eq!(r.status, 200, "{story}: PUT {path}: {}", r.text);
            break;
        }
    } else if step.get("patch").is_some() {
        let p = &step["patch"];
        let path = target(p);
        let r = h
            .patch(
                &path,
                "application/merge-patch+json",
                &p["merge"].to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{story}: PATCH {path}: {}", r.text);
    } else if step.get("delete").is_some() {
        let path = target(&step["delete"]);
        let r = h.delete(&path, None).await;
        assert!(
            r.status == 200 || r.status == 202,
            "{story}: DELETE {path}: {} {}",
            r.status,
            r.text
        );
    } else {
        panic!("{story}: unknown step {step}");
    }
}

fn is_uid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (s.ends_with('Z') || s[19..].contains(['+', '-']))
        && b[..4].iter().all(u8::is_ascii_digit)
}

/// Uids and timestamps become placeholders (keys too: `status.activePods` is keyed by pod
/// uid); `managedFields` and `resourceVersion` go.
fn scrub(v: &mut Value) {
    match v {
        Value::String(s) if is_uid(s) => *s = "<uid>".into(),
        Value::String(s) if is_timestamp(s) => *s = "<time>".into(),
        Value::Array(a) => a.iter_mut().for_each(scrub),
        Value::Object(m) => {
            let old = std::mem::take(m);
            let mut new = Map::new();
            for (k, mut val) in old {
                if k == "managedFields" || k == "resourceVersion" {
                    continue;
                }
                scrub(&mut val);
                let k = if is_uid(&k) { "<uid>".to_string() } else { k };
                new.insert(k, val);
            }
            *m = new;
        }
        _ => {}
    }
}

/// One object as the expected files hold it.
fn normalise(mut obj: Value) -> Value {
    if let Some(m) = obj["metadata"].as_object_mut() {
        for k in ["uid", "creationTimestamp"] {
            m.remove(k);
        }
        let generate = m
            .get("generateName")
            .and_then(Value::as_str)
            .map(str::to_string);
        let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
        if let Some(g) = generate.filter(|g| !g.is_empty() && name.starts_with(g.as_str())) {
            m.insert("name".into(), json!(format!("{g}<generated>")));
        }
    }
    // A Node's taints are a set whose order follows when the timed node-down controller
    // looked relative to the step (Kubernetes keys them by key and effect): sorted.
    if let Some(t) = obj
        .pointer_mut("/spec/taints")
        .and_then(Value::as_array_mut)
    {
        t.sort_by_key(|x| (x["key"].to_string(), x["effect"].to_string()));
    }
    scrub(&mut obj);
    obj
}

fn sort_key(o: &Value) -> (String, String, String, String, String) {
    let s = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (
        s("/apiVersion"),
        s("/kind"),
        s("/metadata/namespace"),
        s("/metadata/name"),
        o.to_string(),
    )
}

/// Every object of `kinds`, normalised and sorted, as one multi-document YAML text.
fn dump(sim: &Sim, kinds: &BTreeSet<(String, String)>) -> String {
    let mut objs: Vec<Value> = kinds
        .iter()
        .flat_map(|(av, k)| sim.list(av, k))
        .map(normalise)
        .collect();
    objs.sort_by_key(sort_key);
    let mut out = String::new();
    for o in objs {
        let text = serde_saphyr::to_string(&o).unwrap_or_else(|e| panic!("YAML: {e}"));
        out.push_str("---\n");
        out.push_str(&text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Lets every controller (the node-down controller included) reach a fixed point.
async fn settle(sim: &Sim, h: &Http, kinds: &BTreeSet<(String, String)>, story: &str) -> String {
    let mut last: Option<String> = None;
    for _ in 0..MAX_ROUNDS {
        let r = h.get("/_sim/settled").await;
        assert_eq!(
            r.body["settled"], true,
            "{story}: the controllers are synchronous"
        );
        sim.wait_node_down_looks(2).await;
        let now = dump(sim, kinds);
        if last.as_deref() == Some(now.as_str()) {
            return now;
        }
        last = Some(now);
    }
    panic!("{story}: the controllers still change objects after {MAX_ROUNDS} rounds")
}

/// A readable line diff (longest common subsequence), `-` expected, `+` actual, with two lines
/// of context around each change.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    let docs = doc_names(&ops);
    let mut out = String::new();
    let mut shown: Option<&str> = None;
    for (k, (c, line)) in ops.iter().enumerate() {
        if near(k) {
            if shown != Some(docs[k].as_str()) {
                out.push_str(&format!("@@ {}\n", docs[k]));
                shown = Some(docs[k].as_str());
            }
            out.push_str(&format!(" {c} {line}\n"));
        } else {
            shown = None;
        }
    }
    out
}

/// For every diff line, the object it belongs to (`kind namespace/name`), so that a hunk
/// says where it is.
fn doc_names(ops: &[(char, &str)]) -> Vec<String> {
    let mut out = vec![String::new(); ops.len()];
    let mut start = 0;
    while start < ops.len() {
        let end = (start + 1..ops.len())
            .find(|&k| ops[k].1 == "---")
            .unwrap_or(ops.len());
        let field = |prefix: &str| {
            ops[start..end]
                .iter()
                .find_map(|(_, l)| l.strip_prefix(prefix))
                .unwrap_or_default()
        };
        let name = format!(
            "{} {}/{}",
            field("kind: "),
            field("  namespace: "),
            field("  name: ")
        );
        out[start..end].iter_mut().for_each(|n| n.clone_from(&name));
        start = end;
    }
    out
}

/// The leading comment lines of an expected file (a reviewer's notes), kept on update.
fn header(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Runs one story; `Err` holds what differs.
async fn run_story(release: &str, dir: &Path) -> Result<(), String> {
    let story = format!(
        "{release}/{}",
        dir.file_name().unwrap_or_default().to_string_lossy()
    );
    let input_path = dir.join("input.yaml");
    let input = read(&input_path);
    let kinds = kinds_of(&yaml_docs(&input, &input_path));
    let steps_path = dir.join("steps.yaml");
    let steps = if steps_path.exists() {
        yaml_docs(&read(&steps_path), &steps_path)
            .into_iter()
            .flat_map(|d| d.as_array().cloned().unwrap_or_default())
            .collect()
    } else {
        Vec::new()
    };
    let cfg = SimConfig::default()
        .plain_http()
        .release(release)
        .scenario_text(input);
    let sim = Sim::start(cfg)
        .await
        .unwrap_or_else(|e| panic!("{story}: the simulator did not start: {e:#}"));
    let h = Http::new(&sim);
    settle(&sim, &h, &kinds, &story).await;
    for step in &steps {
        run_step(&sim, &h, step, &story).await;
        settle(&sim, &h, &kinds, &story).await;
    }
    let actual = dump(&sim, &kinds);
    let expected_path = dir.join("expected.yaml");
    let expected_text = std::fs::read_to_string(&expected_path).unwrap_or_default();
    let head = header(&expected_text);
    let expected = &expected_text[head.len()..];
    if expected == actual {
        return Ok(());
    }
    if std::env::var_os("GOLDEN_UPDATE").is_some_and(|v| v == "1") {
        std::fs::write(&expected_path, format!("{head}{actual}"))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", expected_path.display()));
        eprintln!("golden: rewrote {}", expected_path.display());
        return Ok(());
    }
    Err(format!(
        "{story}: the settled objects differ from {} (- expected, + actual; GOLDEN_UPDATE=1 rewrites it):\n{}",
        expected_path.display(),
        diff(expected, &actual)
    ))
}

#[tokio::test]
async fn every_release_story_settles_to_its_expected_objects() {
    let root = golden_dir();
    let releases = subdirs(&root);
    // Sorted as the directories are (a patch row such as 1.5.0 may follow its minor's row).
    let mut shipped: Vec<&str> = PROFILES.iter().map(|p| p.harvester).collect();
    shipped.sort_unstable();
    assert_eq!(
        releases, shipped,
        "one directory of golden stories per shipped release profile"
    );
    let mut failures = Vec::new();
    for release in &releases {
        let stories = subdirs(&root.join(release));
        let mut want: Vec<String> = STORIES.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(stories, want, "the stories of release {release}");
        for story in &stories {
            if let Err(e) = run_story(release, &root.join(release).join(story)).await {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
