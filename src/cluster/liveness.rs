//! A fenced-node run's look for signs that NODE is alive after all (docs/safety.md "A fenced
//! node"): four objects NODE's own software writes while it runs, read twice, `watch` apart,
//! each read with the API server's clock (the response's `Date` header), so the planner
//! judges "recent" by one clock and "changed" by none.
//!
//! - the Node's `kubevirt.io/heartbeat` annotation (virt-handler, NODE's clock);
//! - the Lease `vmrecover-NODE` (`spec.renewTime`, the holder's clock);
//! - the ConfigMap `vmrecover-summary-NODE` (its summary's `updated`, NODE's agent's clock);
//! - Longhorn's `nodes.longhorn.io/NODE` `Ready` condition (longhorn-manager;
//!   `k8s/pkg/apis/longhorn/v1beta2/node.go`, longhorn-manager v1.10.0: a condition list,
//!   reasons such as `ManagerPodDown`, `KubernetesNodeNotReady`).
//!
//! An object that does not exist is an answer (no sign); a read that fails is `Unreadable`.

use std::time::Duration;

use http_body_util::BodyExt;
use kube::Client;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::RequestFailed;
use super::names::longhorn_namespace;
use super::retry::with_retries;
use super::summary::{summary_name, SUMMARY_KEY};
use crate::evidence::Gathered;

/// virt-handler's heartbeat annotation on a Node.
pub const ANNOTATION_HEARTBEAT: &str = "kubevirt.io/heartbeat";

/// Which of NODE's signs a reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignKind {
    /// virt-handler's `kubevirt.io/heartbeat` on the Node.
    Heartbeat,
    /// vmrecover's node Lease `vmrecover-NODE`.
    Lease,
    /// vmrecover's summary ConfigMap `vmrecover-summary-NODE`.
    Summary,
    /// Longhorn's `nodes.longhorn.io/NODE` Ready condition.
    LonghornNode,
}

/// One reading of one sign: `None` inside `Gathered` when the sign is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// The time the sign carries (heartbeat, renewTime, summary `updated`, Ready's
    /// `lastTransitionTime`).
    #[serde(default)]
    pub stamp: Option<jiff::Timestamp>,
    /// What was read, in words (compared between the two looks).
    pub value: String,
    /// Whether the sign says by itself that NODE runs (Longhorn Ready True).
    #[serde(default)]
    pub says_alive: bool,
}

/// One look at every sign, with the API server's clock at that look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Look {
    /// The API server's `Date` at this look (the earliest of its responses), if any said.
    #[serde(default)]
    pub server_now: Option<jiff::Timestamp>,
    /// Each sign as read.
    pub signs: Vec<(SignKind, Gathered<Option<Reading>>)>,
}

/// What a fenced-node run read of NODE's signs of life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifeSigns {
    /// The first look.
    pub first: Look,
    /// The look `watched` later; `None` when no watch was made (nothing to decide).
    #[serde(default)]
    pub second: Option<Look>,
    /// How long apart the two looks were meant to be.
    #[serde(with = "crate::serde_duration")]
    pub watched: Duration,
}

/// Reads NODE's signs, then, when `watch` is not zero, again after `watch`. A Lease held by
/// `own_holder` (the fenced run itself, once it took NODE's Lease: a re-check) is no sign.
pub async fn gather(
    client: &Client,
    node: &str,
    namespace: &str,
    watch: Duration,
    own_holder: Option<&str>,
) -> LifeSigns {
    let first = look(client, node, namespace, own_holder).await;
    let second = if watch.is_zero() {
        None
    } else {
        tokio::time::sleep(watch).await;
        Some(look(client, node, namespace, own_holder).await)
    };
    LifeSigns {
        first,
        second,
        watched: watch,
    }
}

async fn look(client: &Client, node: &str, namespace: &str, own_holder: Option<&str>) -> Look {
    let lease_url = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
    let summary_url = format!("/api/v1/namespaces/{namespace}/configmaps");
    let longhorn_url = format!(
        "/apis/longhorn.io/v1beta2/namespaces/{}/nodes",
        longhorn_namespace()
    );
    let (lease_name, summary_cm) = (format!("vmrecover-{node}"), summary_name(node));
    let (n, l, s, lh) = tokio::join!(
        get_dated(client, "/api/v1/nodes", node),
        get_dated(client, &lease_url, &lease_name),
        list_one_dated(client, &summary_url, &summary_cm),
        get_dated(client, &longhorn_url, node),
    );
    let l = l.map(|(obj, date)| {
        let ours = |o: &Value| {
            own_holder.is_some()
                && o.pointer("/spec/holderIdentity").and_then(Value::as_str) == own_holder
        };
        (obj.filter(|o| !ours(o)), date)
    });
    let mut dates = Vec::new();
    let mut sign =
        |kind, what: String, got: Dated, read: fn(&Value) -> Result<Option<Reading>, BadSign>| {
            let g = match got {
                Ok((obj, date)) => {
                    dates.extend(date);
                    match obj.as_ref().map(read).transpose() {
                        Ok(r) => Gathered::read(r.flatten()),
                        Err(e) => Gathered::unreadable(what, e),
                    }
                }
                Err(e) => Gathered::unreadable(what, e),
            };
            (kind, g)
        };
    let signs = vec![
        sign(
            SignKind::Heartbeat,
            format!("nodes/{node} annotation {ANNOTATION_HEARTBEAT}"),
            n,
            heartbeat,
        ),
        sign(
            SignKind::Lease,
            format!("leases/vmrecover-{node} in {namespace}"),
            l,
            lease,
        ),
        sign(
            SignKind::Summary,
            format!("configmaps/{} in {namespace}", summary_name(node)),
            s,
            summary,
        ),
        sign(
            SignKind::LonghornNode,
            format!("nodes.longhorn.io/{node} in {}", longhorn_namespace()),
            lh,
            longhorn_ready,
        ),
    ];
    Look {
        server_now: dates.into_iter().min(),
        signs,
    }
}

/// GET `name` in the collection `url`: the object (`None` on 404) and the response's
/// `Date`.
async fn get_dated(client: &Client, url: &str, name: &str) -> Dated {
    let what = format!("{url}/{name}");
    let req = kube::core::Request::new(url).get(name, &kube::api::GetParams::default());
    send_dated(client, &what, "get", req, Some).await
}

/// The object named `name` in the collection `url`, found with a list and a `metadata.name`
/// field selector (what the summary's `list` grant allows), and the response's `Date`.
async fn list_one_dated(client: &Client, url: &str, name: &str) -> Dated {
    let what = format!("{url}?fieldSelector=metadata.name={name}");
    let lp = kube::api::ListParams::default().fields(&format!("metadata.name={name}"));
    let req = kube::core::Request::new(url).list(&lp);
    send_dated(client, &what, "list", req, |mut v| {
        v.get_mut("items")?.as_array_mut()?.pop()
    })
    .await
}

type Dated = Result<(Option<Value>, Option<jiff::Timestamp>), RequestFailed>;

/// A sign of life that was read but cannot be understood.
#[derive(Debug, thiserror::Error)]
enum BadSign {
    /// A time field holds something else.
    #[error("{what} {value:?} is not a time: {why}")]
    NotATime {
        what: &'static str,
        value: String,
        why: jiff::Error,
    },
    /// A field vmrecover reads has another type.
    #[error("{what} is not {expected}: {value}")]
    WrongType {
        what: &'static str,
        expected: &'static str,
        value: String,
    },
    /// The summary's JSON does not parse.
    #[error("summary.json is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
}

async fn send_dated(
    client: &Client,
    what: &str,
    verb: &'static str,
    req: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    pick: fn(Value) -> Option<Value>,
) -> Dated {
    let req = req.map_err(|e| RequestFailed::new(verb, what, kube::Error::BuildRequest(e)))?;
    with_retries(&format!("{verb} {what}"), || async {
        let res = client
            .send(req.clone().map(kube::client::Body::from))
            .await?;
        let date = res
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let code = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        if code == 404 {
            return Ok((None, date));
        }
        if !(200..300).contains(&code) {
            let text = String::from_utf8_lossy(&body).trim().to_string();
            let st = serde_json::from_str::<kube::core::Status>(&text)
                .unwrap_or_else(|_| kube::core::Status::failure(&text, "").with_code(code));
            return Err(kube::Error::Api(st.boxed()));
        }
        let obj: Value = serde_json::from_slice(&body).map_err(kube::Error::SerdeError)?;
        Ok((pick(obj), date))
    })
    .await
    .map_err(|e| RequestFailed::new(verb, what, e))
}

/// An HTTP `Date` (IMF-fixdate, RFC 9110 §5.6.7), which RFC 2822 parsing covers.
pub fn parse_http_date(s: &str) -> Option<jiff::Timestamp> {
    jiff::fmt::rfc2822::parse(s).ok().map(|z| z.timestamp())
}

fn ts(v: Option<&Value>, what: &'static str) -> Result<Option<jiff::Timestamp>, BadSign> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            s.parse::<jiff::Timestamp>()
                .map(Some)
                .map_err(|why| BadSign::NotATime {
                    what,
                    value: s.clone(),
                    why,
                })
        }
        Some(other) => Err(BadSign::WrongType {
            what,
            expected: "a string",
            value: other.to_string(),
        }),
    }
}

fn heartbeat(node: &Value) -> Result<Option<Reading>, BadSign> {
    let v = node
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION_HEARTBEAT));
    Ok(ts(v, ANNOTATION_HEARTBEAT)?.map(|t| Reading {
        stamp: Some(t),
        value: format!("{ANNOTATION_HEARTBEAT}={t}"),
        says_alive: false,
    }))
}

fn lease(l: &Value) -> Result<Option<Reading>, BadSign> {
    let spec = l.get("spec");
    let renew = ts(spec.and_then(|s| s.get("renewTime")), "spec.renewTime")?;
    let holder = spec
        .and_then(|s| s.get("holderIdentity"))
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty());
    Ok(renew.map(|t| Reading {
        stamp: Some(t),
        value: format!("renewed {t} by {}", holder.unwrap_or("(released)")),
        says_alive: false,
    }))
}

fn summary(cm: &Value) -> Result<Option<Reading>, BadSign> {
    let Some(text) = cm.pointer(&format!("/data/{}", SUMMARY_KEY.replace('/', "~1"))) else {
        return Ok(None);
    };
    let text = text.as_str().ok_or_else(|| BadSign::WrongType {
        what: "summary.json",
        expected: "a string",
        value: text.to_string(),
    })?;
    let doc: Value = serde_json::from_str(text)?;
    Ok(ts(doc.get("updated"), "summary updated")?.map(|t| Reading {
        stamp: Some(t),
        value: format!("written {t}"),
        says_alive: false,
    }))
}

fn longhorn_ready(n: &Value) -> Result<Option<Reading>, BadSign> {
    let conds = match n.pointer("/status/conditions") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(c)) => c,
        Some(other) => {
            return Err(BadSign::WrongType {
                what: "status.conditions",
                expected: "a list",
                value: other.to_string(),
            })
        }
    };
    let Some(ready) = conds.iter().find(|c| c["type"] == "Ready") else {
        return Ok(None);
    };
    let status = ready["status"].as_str().unwrap_or("");
    let since = ts(ready.get("lastTransitionTime"), "Ready lastTransitionTime")?;
    Ok(Some(Reading {
        stamp: since,
        value: format!(
            "Ready={status}{}{}",
            ready["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            since.map(|t| format!(" since {t}")).unwrap_or_default()
        ),
        says_alive: status == "True",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_http_date_is_read() {
        let t = parse_http_date("Sun, 06 Dec 2026 08:36:56 GMT");
        assert_eq!(t, "2026-12-06T08:36:56Z".parse().ok());
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn each_sign_reads_its_stamp_and_absence_is_no_sign() {
        let node =
            json!({"metadata": {"annotations": {ANNOTATION_HEARTBEAT: "2026-12-06T08:00:00Z"}}});
        let r = heartbeat(&node).ok().flatten();
        assert_eq!(r.and_then(|r| r.stamp), "2026-12-06T08:00:00Z".parse().ok());
        assert!(matches!(heartbeat(&json!({"metadata": {}})), Ok(None)));
        assert!(
            heartbeat(&json!({"metadata": {"annotations": {ANNOTATION_HEARTBEAT: "soon"}}}))
                .is_err()
        );
        let l = json!({"spec": {"holderIdentity": "agent@n1/7", "renewTime": "2026-12-06T08:00:00.000000Z"}});
        assert!(lease(&l)
            .ok()
            .flatten()
            .is_some_and(|r| r.value.contains("agent@n1/7")));
        let cm = json!({"data": {"summary.json": "{\"updated\": \"2026-12-06T08:00:00Z\"}"}});
        assert!(summary(&cm).ok().flatten().is_some());
        assert!(matches!(summary(&json!({"data": {}})), Ok(None)));
        let lh = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-06T08:00:00Z"}]}});
        assert!(longhorn_ready(&lh)
            .ok()
            .flatten()
            .is_some_and(|r| r.says_alive));
        let down = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "ManagerPodDown"}]}});
        assert!(longhorn_ready(&down)
            .ok()
            .flatten()
            .is_some_and(|r| !r.says_alive && r.value.contains("ManagerPodDown")));
    }
}
