//! Request log and fault injection, in-process and over `/_sim`.

use std::time::{Duration, Instant};

use crate::common::*;
use harvester_sim::{FaultRule, RequestRecord};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn request_log_records_every_request() {
    let path = std::env::temp_dir().join(format!("harvester-sim-log-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let cfg = harvester_sim::SimConfig {
        log_file: Some(path.clone()),
        ..harvester_sim::SimConfig::default()
            .plain_http()
            .scenario_text(BASE)
    };
    let sim = match harvester_sim::Sim::start(cfg).await {
        Ok(s) => s,
        Err(e) => panic!("{e:#}"),
    };
    let h = Http::new(&sim);
    h.get("/api/v1/namespaces/default/pods?limit=5").await;
    h.post(
        "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances",
        &vmi("a", "n"),
    )
    .await;
    h.get("/_sim/settings").await;
    let log = sim.requests();
    let post = log.iter().find(|r| r.method == "POST").cloned();
    let Some(post) = post else {
        panic!("POST not logged: {log:?}")
    };
    assert_eq!(
        post.path,
        "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances"
    );
    assert_eq!(post.status, 201);
    assert_eq!(post.content_type, "application/json");
    assert_eq!(post.body["metadata"]["name"], "a");
    assert!(post.bytes_in > 0 && post.bytes_out > 0);
    assert!(post.time.contains('T'));
    let get = log.iter().find(|r| r.method == "GET").cloned();
    assert_eq!(get.map(|g| g.query), Some("limit=5".to_string()));
    assert_eq!(sim.mutating_requests().len(), 1);
    let over_http = h.get("/_sim/requests").await;
    let recs: Vec<RequestRecord> = serde_json::from_value(over_http.body).unwrap_or_default();
    assert!(recs.len() >= 3);
    assert!(recs.iter().filter(|r| r.is_mutating()).count() == 1);
    let file = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(file.lines().count() >= 3, "{file}");
    assert!(file
        .lines()
        .all(|l| serde_json::from_str::<RequestRecord>(l).is_ok()));
    h.delete("/_sim/requests", None).await;
    assert!(sim.requests().len() <= 1);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn status_fault_fires_n_times_after_m() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    sim.add_fault(
        FaultRule::status(Some("GET"), "/api/v1/namespaces/*/pods", 503)
            .times(2)
            .after(1),
    );
    let codes = [
        h.get("/api/v1/namespaces/default/pods").await.status,
        h.get("/api/v1/namespaces/default/pods").await.status,
        h.get("/api/v1/namespaces/default/pods").await.status,
        h.get("/api/v1/namespaces/default/pods").await.status,
    ];
    assert_eq!(codes, [200, 503, 503, 200]);
    let faults = sim.faults();
    assert_eq!((faults[0].matched, faults[0].fired), (4, 2));
    let log = sim.requests();
    assert_eq!(log.iter().filter(|r| r.status == 503).count(), 2);
}

#[tokio::test]
async fn too_many_requests_has_retry_after_and_status_body() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let rule = json!({"method": "PATCH", "path": "virtualmachineinstances", "action": "status", "code": 429, "retryAfter": 3, "times": 1});
    let added = h.post("/_sim/faults", &rule).await;
    assert_eq!(added.status, 201);
    let r = h
        .patch(
            &vmi_path("default", "x"),
            "application/merge-patch+json",
            "{}",
        )
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.retry_after.as_deref(), Some("3"));
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.body["reason"], "TooManyRequests");
    let r2 = h
        .patch(
            &vmi_path("default", "x"),
            "application/merge-patch+json",
            "{}",
        )
        .await;
    assert_eq!(r2.status, 404, "fired once, then the real answer");
    let listed = h.get("/_sim/faults").await;
    assert_eq!(listed.body[0]["fired"], 1);
    h.delete("/_sim/faults", None).await;
    assert_eq!(h.get("/_sim/faults").await.body, json!([]));
}

#[tokio::test]
async fn latency_fault_delays_the_answer() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    sim.add_fault(FaultRule::latency(None, "/api/v1/nodes", 300));
    let t = Instant::now();
    let r = h.get("/api/v1/nodes").await;
    let waited = t.elapsed();
    assert_eq!(r.status, 200);
    // Not a timing assertion on performance: the rule promises at least this delay.
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert_eq!(sim.faults()[0].fired, 1);
}

#[tokio::test]
async fn drop_fault_closes_the_connection_without_answer() {
    let sim = sim_with("").await;
    sim.add_fault(FaultRule::drop_connection(Some("GET"), "/api/v1/nodes").times(1));
    let mut s = match tokio::net::TcpStream::connect(sim.addr()).await {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let req = format!("GET /api/v1/nodes HTTP/1.1\r\nHost: {}\r\n\r\n", sim.addr());
    if let Err(e) = s.write_all(req.as_bytes()).await {
        panic!("{e}");
    }
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "expected a closed connection, got {n:?} {:?}",
        String::from_utf8_lossy(&buf)
    );
    let h = Http::new(&sim);
    assert_eq!(h.get("/api/v1/nodes").await.status, 200, "fired once");
    let dropped: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.actor.as_deref() == Some("fault:drop"))
        .collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].status, 0);
}

#[tokio::test]
async fn settings_and_objects_over_http() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let s = h
        .post(
            "/_sim/settings",
            &json!({"virtController": true, "kubeVersion": "1.27.16"}),
        )
        .await;
    assert_eq!(s.body["virtController"], true);
    assert_eq!(h.get("/version").await.body["gitVersion"], "v1.27.16");
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default, uid: fixed-uid}\nspec: {nodeName: node-up}\nstatus: {phase: Running}\n";
    let put = h
        .send("POST", "/_sim/objects", Some("application/yaml"), yaml)
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    let got = h.get(&pod_path("default", "p")).await;
    assert_eq!(got.body["metadata"]["uid"], "fixed-uid");
    assert_eq!(got.body["status"]["phase"], "Running", "loaded as written");
    let bad = h
        .send(
            "POST",
            "/_sim/objects",
            None,
            "kind: Nope\napiVersion: x/v1\nmetadata: {name: a}\n",
        )
        .await;
    assert_eq!(bad.status, 400);
    let compact = h.post("/_sim/compact", &Value::Null).await;
    assert_eq!(compact.status, 200);
    // /_sim requests are never mutating.
    assert!(sim.mutating_requests().is_empty());
}
