//! Watches: raw event streams, 410 Gone, selector transitions, and kube's watcher.

use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// Reads a watch stream until it ends (the request carries timeoutSeconds) and returns its events.
async fn events(h: &Http, path: &str) -> Vec<Value> {
    let r = h.get(path).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect()
}

fn types(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap_or("?"),
                e["object"]["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[tokio::test]
async fn watch_from_resource_version_sees_added_modified_deleted() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let coll = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
    let start = h.get(coll).await;
    let rv0 = start.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut v = vmi("a", "n1");
    v["metadata"]["finalizers"] = json!(["f"]);
    h.post(coll, &v).await;
    h.delete(&vmi_path("default", "a"), None).await;
    h.patch(
        &vmi_path("default", "a"),
        "application/json-patch+json",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    )
    .await;
    let evs = events(
        &h,
        &format!(
            "{coll}?watch=true&resourceVersion={rv0}&timeoutSeconds=1&allowWatchBookmarks=true"
        ),
    )
    .await;
    assert_eq!(types(&evs), ["ADDED a", "MODIFIED a", "DELETED a"]);
    let rvs: Vec<u64> = evs.iter().map(|e| rv(&e["object"])).collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
}

#[tokio::test]
async fn watch_without_resource_version_starts_with_the_state() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let coll = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
    h.post(coll, &vmi("a", "n1")).await;
    h.post(coll, &vmi("b", "n2")).await;
    let evs = events(
        &h,
        &format!("{coll}?watch=1&timeoutSeconds=1&labelSelector=kubevirt.io%2FnodeName%3Dn2"),
    )
    .await;
    assert_eq!(types(&evs), ["ADDED b"]);
}

#[tokio::test]
async fn too_old_resource_version_is_410_gone() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let coll = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
    h.post(coll, &vmi("a", "n1")).await;
    sim.compact();
    let evs = events(
        &h,
        &format!("{coll}?watch=true&resourceVersion=1&timeoutSeconds=1"),
    )
    .await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["type"], "ERROR");
    assert_eq!(evs[0]["object"]["code"], 410);
    assert_eq!(evs[0]["object"]["reason"], "Expired");
    assert!(evs[0]["object"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("too old resource version: 1 (")));
}

#[tokio::test]
async fn selector_transitions_become_added_and_deleted() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let coll = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
    let c = h.post(coll, &vmi("a", "n1")).await;
    let rv0 = rv(&c.body);
    h.patch(
        &vmi_path("default", "a"),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"kubevirt.io/nodeName":"n2"}}}"#,
    )
    .await;
    h.patch(
        &vmi_path("default", "a"),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"kubevirt.io/nodeName":"n1"}}}"#,
    )
    .await;
    let evs = events(
        &h,
        &format!("{coll}?watch=true&resourceVersion={rv0}&timeoutSeconds=1&labelSelector=kubevirt.io%2FnodeName%3Dn1"),
    )
    .await;
    assert_eq!(types(&evs), ["DELETED a", "ADDED a"]);
}

#[tokio::test]
async fn kube_runtime_watcher_follows_changes() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher::{self, Event};
    let sim = sim_with("").await;
    sim.put(pod("w1", "node-up", None)).ok();
    let kc = match kube::config::Kubeconfig::read_from(sim.kubeconfig_path()) {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    };
    let cfg =
        match kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
        {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
    let client = match kube::Client::try_from(cfg) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let api: kube::Api<Pod> = kube::Api::namespaced(client, "default");
    let mut stream = Box::pin(watcher::watcher(
        api,
        watcher::Config::default().page_size(1),
    ));
    let mut seen_init = false;
    let mut seen_delete = false;
    let h = Http::new(&sim);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, stream.next()).await {
        match ev {
            Ok(Event::InitDone) => {
                seen_init = true;
                sim.put(pod("w2", "node-up", None)).ok();
                h.delete(&pod_path("default", "w2"), None).await;
            }
            Ok(Event::Delete(p)) if p.metadata.name.as_deref() == Some("w2") => {
                seen_delete = true;
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("watcher error: {e}"),
        }
    }
    assert!(seen_init, "the initial (paginated) list completed");
    assert!(seen_delete, "the watch delivered the deletion");
}

/// kube-rs `list_metadata`, `get_metadata` and `metadata_watcher` (the metadata-only reads of
/// issue 16) against the simulator: PartialObjectMetadata objects with no spec or status, a
/// list as an object refused with 406 like the apiserver, and the request log naming the form.
#[tokio::test]
async fn metadata_only_lists_gets_and_watches() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ListParams;
    use kube::runtime::watcher::{self, Event};
    let sim = sim_with("").await;
    sim.put(pod("m1", "node-up", None)).ok();
    let client = match kube::Client::try_from(
        match kube::Config::from_custom_kubeconfig(
            match kube::config::Kubeconfig::read_from(sim.kubeconfig_path()) {
                Ok(k) => k,
                Err(e) => panic!("{e}"),
            },
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        },
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), "default");
    let list = match api.list_metadata(&ListParams::default()).await {
        Ok(l) => l,
        Err(e) => panic!("list_metadata: {e}"),
    };
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(names.contains(&"m1".to_string()), "{names:?}");
    assert!(list.metadata.resource_version.is_some());
    match api.get_metadata("m1").await {
        Ok(p) => assert_eq!(p.metadata.name.as_deref(), Some("m1")),
        Err(e) => panic!("get_metadata: {e}"),
    }

    // The raw bodies carry metadata only.
    let h = Http::new(&sim);
    const LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    const ONE: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let r = h.get_accept("/api/v1/namespaces/default/pods", LIST).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["kind"], "PartialObjectMetadataList");
    let item = &r.body["items"][0];
    assert_eq!(item["kind"], "PartialObjectMetadata");
    assert!(
        item.get("spec").is_none() && item.get("status").is_none(),
        "{item}"
    );
    let r = h.get_accept("/api/v1/namespaces/default/pods", ONE).await;
    assert_eq!(r.status, 406, "{}", r.text);
    assert_eq!(r.body["reason"], "NotAcceptable");
    let r = h.get_accept(&pod_path("default", "m1"), LIST).await;
    assert_eq!(r.status, 406, "{}", r.text);

    // A metadata watch sees changes as PartialObjectMetadata.
    let meta: kube::Api<kube::core::PartialObjectMeta<Pod>> =
        kube::Api::namespaced(client, "default");
    let mut stream = Box::pin(watcher::watcher(meta, watcher::Config::default()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, stream.next()).await {
        match ev {
            Ok(Event::InitDone) => {
                sim.put(pod("m2", "node-up", None)).ok();
            }
            Ok(Event::Apply(p)) if p.metadata.name.as_deref() == Some("m2") => {
                seen = true;
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("metadata watcher error: {e}"),
        }
    }
    assert!(seen, "the metadata watch delivered the new pod");
    let views: Vec<String> = sim
        .requests()
        .iter()
        .filter(|r| !r.internal && r.path.ends_with("/pods"))
        .map(|r| r.view.clone())
        .collect();
    assert!(
        views.iter().any(|v| v == "PartialObjectMetadataList")
            && views.iter().any(|v| v == "PartialObjectMetadata"),
        "the request log names the metadata-only forms: {views:?}"
    );
}
