//! The store's label and field indexes change no answer: after each step of a create /
//! update (label or node changed) / delete sequence, every selected list (whole and page by
//! page through `continue` tokens, over HTTP and through the real kubectl's chunked lists)
//! and every list-less watch is the same, byte for byte, with the indexes as without them.

use std::path::Path;

use crate::common::*;
use harvester_sim::Sim;
use serde_json::{json, Value};

const VMIS: &str = "/apis/kubevirt.io/v1/virtualmachineinstances";
const PODS: &str = "/api/v1/pods";

/// The selected lists compared after each step: what the agents ask (a node's VMIs by
/// label, its launcher and hotplug pods by label and field), the same in one namespace,
/// by name, unscheduled pods, negations and selectors no index serves.
fn queries() -> Vec<String> {
    let mut q = Vec::new();
    for node in ["node-a", "node-b", "node-c", "node-none"] {
        q.push(format!(
            "{VMIS}?labelSelector=kubevirt.io%2FnodeName%3D{node}"
        ));
        q.push(format!(
            "/apis/kubevirt.io/v1/namespaces/other/virtualmachineinstances?labelSelector=kubevirt.io%2FnodeName%3D{node}"
        ));
        q.push(format!(
            "{PODS}?labelSelector=kubevirt.io%3Dvirt-launcher&fieldSelector=spec.nodeName%3D{node}"
        ));
        q.push(format!(
            "{PODS}?labelSelector=kubevirt.io%3Dhotplug-disk&fieldSelector=spec.nodeName%3D{node}"
        ));
        q.push(format!("{PODS}?fieldSelector=spec.nodeName%3D{node}"));
        q.push(format!(
            "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3D{node},status.phase%3DRunning"
        ));
        q.push(format!(
            "{PODS}?fieldSelector=spec.nodeName%21%3D{node}&labelSelector=kubevirt.io"
        ));
    }
    q.push(format!("{PODS}?fieldSelector=spec.nodeName%3D"));
    q.push(format!("{PODS}?labelSelector=kubevirt.io%3Dvirt-launcher"));
    q.push(format!("{PODS}?fieldSelector=metadata.name%3Dlauncher-2"));
    q.push(format!("{VMIS}?fieldSelector=metadata.name%3Dvmi-3"));
    q.push(format!(
        "{VMIS}?labelSelector=kubevirt.io%2FnodeName%20in%20(node-a,node-b)"
    ));
    q.push(format!("{VMIS}?labelSelector=kubevirt.io%2FnodeName"));
    q.push(format!(
        "{VMIS}?labelSelector=kubevirt.io%2FnodeName%3Dnode-a,kubevirt.io%2FnodeName%3Dnode-b"
    ));
    q
}

/// Every page of a list with `limit`, following `continue` tokens: the texts.
async fn pages(h: &Http, query: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let r = h
            .get(&format!("{query}&limit={limit}&continue={token}"))
            .await;
        assert_eq!(r.status, 200, "{query}: {}", r.text);
        out.push(r.text.clone());
        match r.body["metadata"]["continue"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => return out,
        }
    }
}

/// Every query's whole answer and pages, with the indexes on or off.
async fn answers(sim: &Sim, h: &Http, indexed: bool) -> Vec<String> {
    sim.store().set_select_indexed(indexed);
    let mut out = Vec::new();
    for q in queries() {
        let r = h.get(&q).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        out.push(format!("{q}\n{}", r.text));
        for (i, p) in pages(h, &q, 1).await.into_iter().enumerate() {
            out.push(format!("{q} page {i}\n{p}"));
        }
    }
    sim.store().set_select_indexed(true);
    out
}

/// Compares both ways of answering and returns the names each query listed (indexed).
async fn same_answers(sim: &Sim, h: &Http, step: &str) -> Vec<(String, Vec<String>)> {
    let indexed = answers(sim, h, true).await;
    let scanned = answers(sim, h, false).await;
    assert_eq!(indexed.len(), scanned.len());
    for (i, s) in indexed.iter().zip(&scanned) {
        assert_eq!(i, s, "after {step}: indexed and scanned answers differ");
    }
    let mut names = Vec::new();
    for q in queries() {
        let r = h.get(&q).await;
        let listed = r.body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.push((q, listed));
    }
    names
}

/// The names one query listed.
fn listed<'a>(names: &'a [(String, Vec<String>)], query_end: &str) -> &'a [String] {
    names
        .iter()
        .find(|(q, _)| q.ends_with(query_end) && q.starts_with(VMIS))
        .map(|(_, n)| n.as_slice())
        .unwrap_or_default()
}

fn vmi_in(ns: &str, name: &str, node: &str) -> Value {
    let mut v = vmi(name, node);
    v["metadata"]["namespace"] = json!(ns);
    v
}

fn pod_in(ns: &str, name: &str, node: Option<&str>, role: &str) -> Value {
    let mut p = pod(name, node.unwrap_or(""), None);
    p["metadata"]["namespace"] = json!(ns);
    p["metadata"]["labels"] = json!({ "kubevirt.io": role });
    match node {
        Some(_) => {}
        None => {
            if let Some(spec) = p["spec"].as_object_mut() {
                spec.remove("nodeName");
            }
            p["status"] = json!({"phase": "Pending"});
        }
    }
    p
}

fn vmis_in(ns: &str) -> String {
    format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances")
}

fn pods_in(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

async fn created(h: &Http, coll: &str, obj: &Value) {
    let r = h.post(coll, obj).await;
    assert_eq!(r.status, 201, "{coll}: {}", r.text);
}

async fn merge_patched(h: &Http, path: &str, patch: Value) {
    let r = h
        .patch(path, "application/merge-patch+json", &patch.to_string())
        .await;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
}

async fn deleted(h: &Http, path: &str) {
    let r = h
        .delete(path, Some(&json!({"gracePeriodSeconds": 0})))
        .await;
    assert!(r.status == 200 || r.status == 202, "{path}: {}", r.text);
}

#[tokio::test]
async fn selected_lists_are_the_same_with_and_without_the_index() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    // Names interleaved over nodes and namespaces: the order of the answer is at stake.
    for (i, (ns, node)) in [
        ("default", "node-a"),
        ("other", "node-b"),
        ("default", "node-b"),
        ("other", "node-a"),
        ("default", "node-c"),
        ("other", "node-a"),
    ]
    .into_iter()
    .enumerate()
    {
        created(&h, &vmis_in(ns), &vmi_in(ns, &format!("vmi-{i}"), node)).await;
        let role = if i % 3 == 2 {
            "hotplug-disk"
        } else {
            "virt-launcher"
        };
        created(
            &h,
            &pods_in(ns),
            &pod_in(ns, &format!("launcher-{i}"), Some(node), role),
        )
        .await;
    }
    created(
        &h,
        &pods_in("other"),
        &pod_in("other", "pending", None, "virt-launcher"),
    )
    .await;
    let names = same_answers(&sim, &h, "creates").await;
    assert_eq!(
        listed(&names, "nodeName%3Dnode-a"),
        ["vmi-0", "vmi-3", "vmi-5"]
    );

    // A VMI moves to another node (its label changes), one loses the label.
    merge_patched(
        &h,
        &vmi_path("default", "vmi-0"),
        json!({"metadata": {"labels": {"kubevirt.io/nodeName": "node-b"}}}),
    )
    .await;
    merge_patched(
        &h,
        &vmi_path("other", "vmi-5"),
        json!({"metadata": {"labels": {"kubevirt.io/nodeName": null}}}),
    )
    .await;
    // A pod changes role: it leaves the launcher lists for the hotplug ones.
    merge_patched(
        &h,
        &pod_path("other", "launcher-1"),
        json!({"metadata": {"labels": {"kubevirt.io": "hotplug-disk"}}}),
    )
    .await;
    let names = same_answers(&sim, &h, "label changes").await;
    assert_eq!(listed(&names, "nodeName%3Dnode-a"), ["vmi-3"]);
    assert_eq!(
        listed(&names, "nodeName%3Dnode-b"),
        ["vmi-0", "vmi-2", "vmi-1"]
    );

    // A replace (PUT) moves a VMI back; deletes; a name re-created on another node.
    let mut v = h.get(&vmi_path("default", "vmi-0")).await.body;
    v["metadata"]["labels"]["kubevirt.io/nodeName"] = json!("node-c");
    let r = h.put(&vmi_path("default", "vmi-0"), &v).await;
    assert_eq!(r.status, 200, "{}", r.text);
    deleted(&h, &vmi_path("other", "vmi-3")).await;
    deleted(&h, &pod_path("default", "launcher-0")).await;
    deleted(&h, &pod_path("other", "pending")).await;
    created(
        &h,
        &pods_in("default"),
        &pod_in("default", "launcher-0", Some("node-c"), "virt-launcher"),
    )
    .await;
    created(&h, &vmis_in("other"), &vmi_in("other", "vmi-3", "node-b")).await;
    let names = same_answers(&sim, &h, "replace, deletes and re-creates").await;
    assert!(listed(&names, "nodeName%3Dnode-a").is_empty());
    assert_eq!(listed(&names, "nodeName%3Dnode-c"), ["vmi-0", "vmi-4"]);

    // List-less watches start with synthetic ADDED events for what matches now.
    let watches = [
        format!("{VMIS}?watch=1&timeoutSeconds=1&labelSelector=kubevirt.io%2FnodeName%3Dnode-b"),
        format!("{PODS}?watch=1&timeoutSeconds=1&labelSelector=kubevirt.io%3Dvirt-launcher&fieldSelector=spec.nodeName%3Dnode-c"),
    ];
    let mut seen = Vec::new();
    for indexed in [true, false] {
        sim.store().set_select_indexed(indexed);
        let (a, b) = tokio::join!(h.get(&watches[0]), h.get(&watches[1]));
        seen.push((a.text, b.text));
    }
    sim.store().set_select_indexed(true);
    assert_eq!(seen[0], seen[1], "watches differ with the index");
    assert_eq!(seen[0].0.lines().count(), 3, "{}", seen[0].0);
    assert_eq!(seen[0].1.lines().count(), 2, "{}", seen[0].1);

    kubectl_chunks_are_the_same(&sim).await;
}

/// The real kubectl's chunked lists (`--chunk-size=1`: one request per item, each with the
/// previous page's `continue` token) print the same with the index as without.
async fn kubectl_chunks_are_the_same(sim: &Sim) {
    let Some(bin) = [
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
        "/usr/bin/kubectl",
    ]
    .into_iter()
    .find(|b| Path::new(b).exists()) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kubectl is not installed"
        );
        println!("skipping the kubectl comparison: kubectl is not installed");
        return;
    };
    let args: [&[&str]; 2] = [
        &[
            "get",
            "vmi",
            "-A",
            "-l",
            "kubevirt.io/nodeName=node-b",
            "--chunk-size=1",
            "-o",
            "json",
        ],
        &[
            "get",
            "pods",
            "-A",
            "-l",
            "kubevirt.io=virt-launcher",
            "--field-selector",
            "spec.nodeName=node-c",
            "--chunk-size=1",
            "-o",
            "name",
        ],
    ];
    for a in args {
        let mut outs = Vec::new();
        for indexed in [true, false] {
            sim.store().set_select_indexed(indexed);
            let mut cmd =
                tokio::process::Command::from(harvester_sim::kubectl(bin, sim.kubeconfig_path()));
            let out = cmd.args(a).env("HOME", std::env::temp_dir()).output().await;
            let out = match out {
                Ok(o) => o,
                Err(e) => panic!("cannot run {bin}: {e}"),
            };
            assert!(
                out.status.success(),
                "kubectl {a:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            outs.push(String::from_utf8_lossy(&out.stdout).to_string());
        }
        sim.store().set_select_indexed(true);
        assert_eq!(outs[0], outs[1], "kubectl {a:?} differs with the index");
        assert!(!outs[0].trim().is_empty(), "kubectl {a:?} listed nothing");
    }
}
