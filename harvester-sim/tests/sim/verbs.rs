//! Every verb and error path of the simulated apiserver over real HTTP.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn discovery_and_version() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let v = h.get("/version").await;
    assert_eq!(v.status, 200);
    assert_eq!(v.body["gitVersion"], "v1.33.2");
    let api = h.get("/api").await;
    assert_eq!(api.body["versions"][0], "v1");
    let core = h.get("/api/v1").await;
    let names: Vec<&str> = core.body["resources"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    for n in [
        "pods",
        "pods/status",
        "nodes",
        "namespaces",
        "persistentvolumeclaims",
        "persistentvolumes",
        "events",
    ] {
        assert!(names.contains(&n), "{n} missing from /api/v1: {names:?}");
    }
    let apis = h.get("/apis").await;
    let groups: Vec<&str> = apis.body["groups"]
        .as_array()
        .map(|a| a.iter().filter_map(|g| g["name"].as_str()).collect())
        .unwrap_or_default();
    for g in [
        "kubevirt.io",
        "storage.k8s.io",
        "longhorn.io",
        "coordination.k8s.io",
        "events.k8s.io",
    ] {
        assert!(groups.contains(&g), "{g} missing: {groups:?}");
    }
    let kv = h.get("/apis/kubevirt.io/v1").await;
    let vmi = kv.body["resources"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|r| r["name"] == "virtualmachineinstances")
                .cloned()
        })
        .unwrap_or_default();
    assert_eq!(vmi["kind"], "VirtualMachineInstance");
    assert_eq!(vmi["namespaced"], true);
    assert_eq!(vmi["shortNames"][0], "vmi");
    assert_eq!(h.get("/apis/nope.io/v1").await.status, 404);
    let pb = h.get("/openapi/v2").await;
    assert_eq!(pb.status, 200);
    assert!(pb.text.contains("fieldValidation"));
}

#[tokio::test]
async fn create_get_conflicts_and_generate_name() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let coll = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
    let c = h.post(coll, &vmi("a", "node-up")).await;
    assert_eq!(c.status, 201, "{}", c.text);
    let uid = c.body["metadata"]["uid"].as_str().unwrap_or("");
    assert_eq!(uid.len(), 36);
    assert!(c.body["metadata"]["creationTimestamp"].is_string());
    assert_eq!(c.body["metadata"]["generation"], 1);
    assert!(rv(&c.body) > 0);
    let again = h.post(coll, &vmi("a", "node-up")).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["reason"], "AlreadyExists");
    assert_eq!(
        again.body["message"],
        "virtualmachineinstances.kubevirt.io \"a\" already exists"
    );
    let mut g = vmi("", "node-up");
    g["metadata"]["generateName"] = json!("gen-");
    let made = h.post(coll, &g).await;
    assert_eq!(made.status, 201);
    let name = made.body["metadata"]["name"].as_str().unwrap_or("");
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    let missing = h.get(&vmi_path("default", "nope")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "virtualmachineinstances.kubevirt.io \"nope\" not found", "reason": "NotFound",
            "details": {"name": "nope", "group": "kubevirt.io", "kind": "virtualmachineinstances"}, "code": 404})
    );
    let mut ghost = vmi("a", "n");
    ghost["metadata"]["namespace"] = json!("ghost");
    let no_ns = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/ghost/virtualmachineinstances",
            &ghost,
        )
        .await;
    assert_eq!(no_ns.status, 404);
    assert_eq!(no_ns.body["message"], "namespaces \"ghost\" not found");
    let mismatch = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/other/virtualmachineinstances",
            &vmi("a", "n"),
        )
        .await;
    assert_eq!(
        mismatch.status, 400,
        "body namespace differs from the URL's"
    );
}

#[tokio::test]
async fn list_selectors_pagination_and_resource_version() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let coll = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
    for (n, node) in [("a", "n1"), ("b", "n2"), ("c", "n1")] {
        assert_eq!(h.post(coll, &vmi(n, node)).await.status, 201);
    }
    let mut other = vmi("d", "n1");
    other["metadata"]["namespace"] = json!("other");
    h.post(
        "/apis/kubevirt.io/v1/namespaces/other/virtualmachineinstances",
        &other,
    )
    .await;
    let names = |r: &Resp| -> Vec<String> {
        r.body["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let all = h.get("/apis/kubevirt.io/v1/virtualmachineinstances").await;
    assert_eq!(names(&all), ["a", "b", "c", "d"]);
    assert_eq!(all.body["kind"], "VirtualMachineInstanceList");
    assert_eq!(
        all.body["metadata"]["resourceVersion"]
            .as_str()
            .map(|s| s.parse::<u64>().is_ok()),
        Some(true)
    );
    let sel = h
        .get(&format!("{coll}?labelSelector=kubevirt.io%2FnodeName%3Dn1"))
        .await;
    assert_eq!(names(&sel), ["a", "c"]);
    let notin = h
        .get(&format!(
            "{coll}?labelSelector=kubevirt.io%2FnodeName%20notin%20(n1)"
        ))
        .await;
    assert_eq!(names(&notin), ["b"]);
    let fsel = h
        .get(&format!("{coll}?fieldSelector=metadata.name%3Db"))
        .await;
    assert_eq!(names(&fsel), ["b"]);
    let bad = h
        .get(&format!("{coll}?fieldSelector=status.phase%3DRunning"))
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body["message"],
        "field label not supported: status.phase"
    );
    let bad_label = h.get(&format!("{coll}?labelSelector=a%20in%20b")).await;
    assert_eq!(bad_label.status, 400);
    let p1 = h.get(&format!("{coll}?limit=2")).await;
    assert_eq!(names(&p1), ["a", "b"]);
    let cont = p1.body["metadata"]["continue"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!cont.is_empty());
    assert_eq!(p1.body["metadata"]["remainingItemCount"], 1);
    let p2 = h.get(&format!("{coll}?limit=2&continue={cont}")).await;
    assert_eq!(names(&p2), ["c"]);
    assert!(p2.body["metadata"].get("continue").is_none());
}

#[tokio::test]
async fn pod_field_selectors() {
    let sim = sim_with("").await;
    sim.put(pod("p1", "node-up", None)).ok();
    sim.put(pod("p2", "node-down", None)).ok();
    let h = Http::new(&sim);
    let r = h
        .get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-down")
        .await;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.body["items"][0]["metadata"]["name"], "p2");
    let r = h
        .get("/api/v1/pods?fieldSelector=status.phase%21%3DRunning")
        .await;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn update_with_stale_resource_version_conflicts() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let c = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances",
            &vmi("a", "n"),
        )
        .await;
    let mut obj = c.body.clone();
    obj["spec"]["domain"]["cpu"] = json!({"cores": 2});
    let ok = h.put(&vmi_path("default", "a"), &obj).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(rv(&ok.body) > rv(&c.body));
    assert_eq!(
        ok.body["metadata"]["generation"], 2,
        "spec change bumps generation"
    );
    let stale = h.put(&vmi_path("default", "a"), &obj).await;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.body["reason"], "Conflict");
    assert_eq!(
        stale.body["message"],
        "Operation cannot be fulfilled on virtualmachineinstances.kubevirt.io \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // A label change does not move generation; a no-op does not move the resourceVersion.
    let mut cur = ok.body.clone();
    cur["metadata"]["labels"]["x"] = json!("y");
    let labelled = h.put(&vmi_path("default", "a"), &cur).await;
    assert_eq!(labelled.body["metadata"]["generation"], 2);
    let same = h.put(&vmi_path("default", "a"), &labelled.body).await;
    assert_eq!(rv(&same.body), rv(&labelled.body));
    let missing = h.put(&vmi_path("default", "zz"), &obj).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn json_patch_test_op_and_merge_patch() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let mut v = vmi("a", "n");
    v["metadata"]["finalizers"] = json!(["f1", "f2"]);
    h.post(
        "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances",
        &v,
    )
    .await;
    let failing = h
        .patch(
            &vmi_path("default", "a"),
            "application/json-patch+json",
            r#"[{"op":"test","path":"/metadata/finalizers","value":["f1"]},{"op":"remove","path":"/metadata/finalizers"}]"#,
        )
        .await;
    assert_eq!(failing.status, 422);
    assert_eq!(
        failing.body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server rejected our request due to an error in our request",
            "reason": "Invalid", "details": {}, "code": 422})
    );
    let passing = h
        .patch(
            &vmi_path("default", "a"),
            "application/json-patch+json",
            r#"[{"op":"test","path":"/metadata/finalizers","value":["f1","f2"]},{"op":"replace","path":"/metadata/finalizers","value":["f2"]}]"#,
        )
        .await;
    assert_eq!(passing.status, 200);
    assert_eq!(finalizers(&passing.body), ["f2"]);
    let rv_test = format!(
        r#"[{{"op":"test","path":"/metadata/resourceVersion","value":"{}"}},{{"op":"add","path":"/metadata/labels/z","value":"1"}}]"#,
        rv(&passing.body) - 1
    );
    let stale = h
        .patch(
            &vmi_path("default", "a"),
            "application/json-patch+json",
            &rv_test,
        )
        .await;
    assert_eq!(stale.status, 422, "a test on a stale resourceVersion fails");
    let merged = h
        .patch(
            &vmi_path("default", "a"),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"m":"1"}}}"#,
        )
        .await;
    assert_eq!(merged.body["metadata"]["labels"]["m"], "1");
    let rv_conflict = h
        .patch(
            &vmi_path("default", "a"),
            "application/merge-patch+json",
            r#"{"metadata":{"resourceVersion":"1","labels":{"m":"2"}}}"#,
        )
        .await;
    assert_eq!(rv_conflict.status, 409);
    let smp = h
        .patch(
            &vmi_path("default", "a"),
            "application/strategic-merge-patch+json",
            "{}",
        )
        .await;
    assert_eq!(
        smp.status, 415,
        "custom resources reject strategic merge like the real server"
    );
    let bad_ct = h.patch(&vmi_path("default", "a"), "text/plain", "{}").await;
    assert_eq!(bad_ct.status, 415);
    let missing = h
        .patch(
            &vmi_path("default", "nope"),
            "application/merge-patch+json",
            "{}",
        )
        .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn strategic_merge_on_pod_finalizers() {
    let sim = sim_with("").await;
    let mut p = pod("p", "node-up", None);
    p["metadata"]["finalizers"] = json!(["a", "b"]);
    sim.put(p).ok();
    let h = Http::new(&sim);
    let add = h
        .patch(
            &pod_path("default", "p"),
            "application/strategic-merge-patch+json",
            r#"{"metadata":{"finalizers":["c"]}}"#,
        )
        .await;
    assert_eq!(finalizers(&add.body), ["a", "b", "c"]);
    let del = h
        .patch(
            &pod_path("default", "p"),
            "application/strategic-merge-patch+json",
            r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["a","c"]}}"#,
        )
        .await;
    assert_eq!(finalizers(&del.body), ["b"]);
}

#[tokio::test]
async fn server_side_apply_creates_then_merges() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let path = vm_path("default", "vm-a");
    let body = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: vm-a\n  labels: {a: '1'}\nspec:\n  runStrategy: Halted\n";
    let no_manager = h.patch(&path, "application/apply-patch+yaml", body).await;
    assert_eq!(no_manager.status, 422);
    let created = h
        .patch(
            &format!("{path}?fieldManager=test&force=true"),
            "application/apply-patch+yaml",
            body,
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["spec"]["runStrategy"], "Halted");
    let second = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: vm-a\n  labels: {b: '2'}\n";
    let merged = h
        .patch(
            &format!("{path}?fieldManager=test"),
            "application/apply-patch+yaml",
            second,
        )
        .await;
    assert_eq!(merged.status, 200);
    assert_eq!(
        merged.body["metadata"]["labels"],
        json!({"a": "1", "b": "2"})
    );
    assert_eq!(merged.body["spec"]["runStrategy"], "Halted");
}

#[tokio::test]
async fn status_subresource_is_separate() {
    // VirtualMachines have a status subresource (virt-operator crds.go NewVirtualMachineCrd).
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let coll = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";
    let v = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "a"}, "spec": {"runStrategy": "Always"},
        "status": {"printableStatus": "Running"}});
    let c = h.post(coll, &v).await;
    assert!(
        c.body.get("status").is_none(),
        "custom resources drop status on create"
    );
    let path = vm_path("default", "a");
    let st = h
        .patch(
            &format!("{path}/status"),
            "application/merge-patch+json",
            r#"{"status":{"printableStatus":"Stopped"},"spec":{"ignored":true},"metadata":{"labels":{"ignored":"yes"}}}"#,
        )
        .await;
    assert_eq!(st.status, 200);
    assert_eq!(st.body["status"]["printableStatus"], "Stopped");
    assert!(st.body["spec"].get("ignored").is_none());
    assert!(st.body["metadata"].get("labels").is_none());
    assert_eq!(st.body["metadata"]["generation"], 1);
    let mut main = st.body.clone();
    main["status"]["printableStatus"] = json!("Running");
    main["metadata"]["labels"] = json!({"l": "1"});
    let upd = h.put(&path, &main).await;
    assert_eq!(
        upd.body["status"]["printableStatus"], "Stopped",
        "main resource ignores status"
    );
    assert_eq!(upd.body["metadata"]["labels"]["l"], "1");
    let got = h.get(&format!("{path}/status")).await;
    assert_eq!(got.body["status"]["printableStatus"], "Stopped");
    let mut put_status = upd.body.clone();
    put_status["status"] = json!({"printableStatus": "Stopping"});
    let ps = h.put(&format!("{path}/status"), &put_status).await;
    assert_eq!(ps.body["status"]["printableStatus"], "Stopping");
}

#[tokio::test]
async fn delete_with_finalizers_then_last_finalizer_removal() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let mut v = vmi("a", "n");
    v["metadata"]["finalizers"] = json!(["f1"]);
    h.post(
        "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances",
        &v,
    )
    .await;
    let d = h.delete(&vmi_path("default", "a"), None).await;
    assert_eq!(d.status, 200);
    assert!(d.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(d.body["metadata"]["deletionGracePeriodSeconds"], 0);
    assert_eq!(d.body["metadata"]["generation"], 2);
    let again = h.delete(&vmi_path("default", "a"), None).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        rv(&again.body),
        rv(&d.body),
        "a second delete changes nothing"
    );
    let add = h
        .patch(
            &vmi_path("default", "a"),
            "application/merge-patch+json",
            r#"{"metadata":{"finalizers":["f1","f2"]}}"#,
        )
        .await;
    assert_eq!(add.status, 422);
    assert_eq!(
        add.body["message"],
        "VirtualMachineInstance.kubevirt.io \"a\" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"f2\"}"
    );
    let gone = h
        .patch(
            &vmi_path("default", "a"),
            "application/json-patch+json",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        )
        .await;
    assert_eq!(gone.status, 200);
    assert_eq!(h.get(&vmi_path("default", "a")).await.status, 404);
    // Without finalizers a custom resource goes at once and the answer is a Status.
    h.post(
        "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances",
        &vmi("b", "n"),
    )
    .await;
    let now = h.delete(&vmi_path("default", "b"), None).await;
    assert_eq!(now.body["kind"], "Status");
    assert_eq!(now.body["status"], "Success");
    assert_eq!(h.get(&vmi_path("default", "b")).await.status, 404);
    assert_eq!(h.delete(&vmi_path("default", "b"), None).await.status, 404);
}

#[tokio::test]
async fn delete_preconditions() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let c = h
        .post(
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances",
            &vmi("a", "n"),
        )
        .await;
    let uid = c.body["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let bad_uid =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "other"}});
    let r = h.delete(&vmi_path("default", "a"), Some(&bad_uid)).await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.body["message"],
        // k8s.io/apiserver pkg/registry/rest/delete.go BeforeDelete (v0.33.0).
        format!("Operation cannot be fulfilled on VirtualMachineInstance.kubevirt.io \"a\": the UID in the precondition (other) does not match the UID in record ({uid}). The object might have been deleted and then recreated")
    );
    let bad_rv = json!({"preconditions": {"resourceVersion": "1"}});
    assert_eq!(
        h.delete(&vmi_path("default", "a"), Some(&bad_rv))
            .await
            .status,
        409
    );
    let good = json!({"preconditions": {"uid": uid, "resourceVersion": c.body["metadata"]["resourceVersion"]}});
    assert_eq!(
        h.delete(&vmi_path("default", "a"), Some(&good))
            .await
            .status,
        200
    );
    assert_eq!(h.get(&vmi_path("default", "a")).await.status, 404);
}

#[tokio::test]
async fn table_output_for_kubectl() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let mut v = vmi("a", "n");
    v["status"] = json!({"phase": "Running", "nodeName": "node-x"});
    sim.put(v).ok();
    let coll = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
    let r = h.get(coll).await;
    assert_eq!(r.body["kind"], "VirtualMachineInstanceList");
    let t = h
        .get_accept(
            coll,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .await
        .body;
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        &cols[..6],
        ["Name", "Age", "Phase", "IP", "NodeName", "Ready"]
    );
    assert_eq!(t["rows"][0]["cells"][2], "Running");
    assert_eq!(t["rows"][0]["cells"][4], "node-x");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
}

#[tokio::test]
async fn kube_client_crud() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
    let sim = sim_with("").await;
    let client = match kube_client(&sim).await {
        Ok(c) => c,
        Err(e) => panic!("kube client: {e:#}"),
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p: Pod = match serde_json::from_value(pod("kp", "node-down", None)) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let created = pods.create(&PostParams::default(), &p).await;
    assert!(created.is_ok(), "{created:?}");
    let listed = pods
        .list(&ListParams::default().labels("kubevirt.io=virt-launcher"))
        .await;
    assert_eq!(listed.map(|l| l.items.len()).ok(), Some(1));
    let patched = pods
        .patch(
            "kp",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await;
    assert_eq!(
        patched
            .ok()
            .and_then(|p| p.metadata.labels)
            .and_then(|l| l.get("x").cloned()),
        Some("1".into())
    );
    let err = pods.get("missing").await;
    match err {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 404);
            assert_eq!(s.reason, "NotFound");
        }
        other => panic!("expected a 404, got {other:?}"),
    }
    let deleted = pods.delete("kp", &DeleteParams::default()).await;
    assert!(deleted.is_ok(), "{deleted:?}");
    // On the down node the pod stays Terminating.
    let still = pods.get("kp").await;
    assert!(still.is_ok_and(|p| p.metadata.deletion_timestamp.is_some()));
}

async fn kube_client(sim: &harvester_sim::Sim) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(sim.kubeconfig_path())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(kube::Client::try_from(cfg)?)
}
