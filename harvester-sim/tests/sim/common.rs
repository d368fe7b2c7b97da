//! Helpers shared by the simulator's integration tests: a raw HTTP client and small fixtures.

use bytes::Bytes;
use harvester_sim::{Sim, SimConfig};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// A namespace plus a node that is up and one that is down, with virt-controller off.
pub const BASE: &str = r#"
apiVersion: sim.vmrecover.dev/v1
kind: SimulatorSettings
downNodes: [node-down]
virtController: false
---
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Node
metadata: {name: node-up}
---
apiVersion: v1
kind: Node
metadata: {name: node-down}
"#;

/// Starts a simulator from the base scenario plus `extra` YAML.
pub async fn sim_with(extra: &str) -> Sim {
    // Plain HTTP: the raw client below does not do TLS (HTTPS is tested in tls.rs).
    let mut cfg = SimConfig::default().plain_http().scenario_text(BASE);
    if !extra.trim().is_empty() {
        cfg = cfg.scenario_text(extra);
    }
    match Sim::start(cfg).await {
        Ok(s) => s,
        Err(e) => panic!("simulator did not start: {e:#}"),
    }
}

/// A response: status code, headers we care about, and the body as JSON (or a string).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
    pub text: String,
}

/// A raw HTTP client bound to one simulator.
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

impl Http {
    pub fn new(sim: &Sim) -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: sim.url(),
            token: None,
        }
    }

    /// A client that sends `Authorization: Bearer <token>`.
    pub fn with_token(sim: &Sim, token: &str) -> Http {
        Http {
            token: Some(token.to_string()),
            ..Http::new(sim)
        }
    }

    pub async fn send(&self, method: &str, path: &str, ct: Option<&str>, body: &str) -> Resp {
        self.send_accept(method, path, ct, None, body).await
    }

    pub async fn get_accept(&self, path: &str, accept: &str) -> Resp {
        self.send_accept("GET", path, None, Some(accept), "").await
    }

    pub async fn send_accept(
        &self,
        method: &str,
        path: &str,
        ct: Option<&str>,
        accept: Option<&str>,
        body: &str,
    ) -> Resp {
        self.send_raw(method, path, ct, accept, Bytes::from(body.to_string()))
            .await
    }

    /// Sends a binary body (protobuf).
    pub async fn send_bytes(&self, method: &str, path: &str, ct: &str, body: Vec<u8>) -> Resp {
        self.send_raw(method, path, Some(ct), None, Bytes::from(body))
            .await
    }

    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        ct: Option<&str>,
        accept: Option<&str>,
        body: Bytes,
    ) -> Resp {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(ct) = ct {
            b = b.header("Content-Type", ct);
        }
        if let Some(a) = accept {
            b = b.header("Accept", a);
        }
        if let Some(t) = &self.token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        let req = match b.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => panic!("bad request {method} {path}: {e}"),
        };
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => panic!("{method} {path} failed: {e}"),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = match resp.into_body().collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => panic!("{method} {path}: reading body: {e}"),
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::String(text.clone()));
        Resp {
            status,
            retry_after,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None, "").await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send("POST", path, Some("application/json"), &body.to_string())
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send("PUT", path, Some("application/json"), &body.to_string())
            .await
    }

    pub async fn patch(&self, path: &str, ct: &str, body: &str) -> Resp {
        self.send("PATCH", path, Some(ct), body).await
    }

    pub async fn delete(&self, path: &str, body: Option<&Value>) -> Resp {
        let b = body.map(Value::to_string).unwrap_or_default();
        let ct = body.map(|_| "application/json");
        self.send("DELETE", path, ct, &b).await
    }
}

/// Path of a namespaced VMI.
pub fn vmi_path(ns: &str, name: &str) -> String {
    format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{name}")
}

/// Path of a namespaced VM.
pub fn vm_path(ns: &str, name: &str) -> String {
    format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}")
}

/// Path of a pod.
pub fn pod_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods/{name}")
}

/// A minimal VMI object.
pub fn vmi(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "default", "labels": {"kubevirt.io/nodeName": node}},
        "spec": {"domain": {"devices": {}}},
    })
}

/// A launcher-like pod on `node`, optionally owned by `owner_uid` (a VMI).
pub fn pod(name: &str, node: &str, owner: Option<(&str, &str)>) -> Value {
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"kubevirt.io": "virt-launcher"}},
        "spec": {"nodeName": node, "containers": [{"name": "compute", "image": "x"}], "terminationGracePeriodSeconds": 30},
        "status": {"phase": "Running"},
    });
    if let Some((owner_name, uid)) = owner {
        p["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": owner_name,
            "uid": uid, "controller": true, "blockOwnerDeletion": true,
        }]);
    }
    p
}

/// `metadata.finalizers` of a JSON object.
pub fn finalizers(v: &Value) -> Vec<String> {
    harvester_sim::meta::finalizers(v)
}

/// `metadata.resourceVersion` of a JSON object as a number.
pub fn rv(v: &Value) -> u64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
