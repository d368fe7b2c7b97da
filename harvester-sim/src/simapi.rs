//! The control API under `/_sim` (never faulted, never counted as mutating):
//!
//! | method and path | does |
//! |---|---|
//! | `GET /_sim/requests[?since=N]` | request log as a JSON array (records with `seq > N`) |
//! | `DELETE /_sim/requests` | clear the request log |
//! | `GET /_sim/faults` | fault rules with their counters |
//! | `POST /_sim/faults` | add a rule (or a JSON array of rules), see [`crate::faults::FaultRule`] |
//! | `DELETE /_sim/faults` | remove every rule |
//! | `GET /_sim/settings` | current settings |
//! | `POST /_sim/settings` | change settings (`downNodes`, `virtController`, `harvesterController`, `controllerDelayMs`, `kubeVersion`, `watchHistory`, `release`, `webhooks`) |
//! | `GET /_sim/webhooks` | the release's admission webhooks in call order, with their state |
//! | `POST /_sim/webhooks` | switch webhooks: `{"name": "virt-api", "state": "down"}`, `"up"`, `{"deny": {"message": "...", "code": 422}}` (a JSON array of such too); `name` is a webhook or a Service |
//! | `POST /_sim/objects` | store objects as written (JSON object or YAML scenario text, `kind: List` too) |
//! | `POST /_sim/compact` | forget the watch history (older resourceVersions now get 410) |
//! | `GET /_sim/settled` | `{"settled": bool, "resourceVersion": "N"}`: whether the simulated controllers have nothing left to do (always true while they are synchronous; see `controllerDelayMs`) |
//! | `GET /_sim/health` | `ok` |

use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::exchange::{Reply, Req, State};
use crate::faults::FaultRule;
use crate::settings::SettingsPatch;

fn bad(msg: impl Into<String>) -> Reply {
    ApiError::bad_request(msg).into()
}

/// One webhook switch of `POST /_sim/webhooks`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSwitch {
    name: String,
    state: crate::admission::WebhookState,
}

fn switch_webhooks(state: &State, body: &[u8]) -> Reply {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad(format!("webhook switch is not JSON: {e}")),
    };
    let switches: Result<Vec<WebhookSwitch>, _> = match v {
        Value::Array(a) => a.into_iter().map(serde_json::from_value).collect(),
        other => serde_json::from_value(other).map(|s| vec![s]),
    };
    let switches = match switches {
        Ok(s) => s,
        Err(e) => return bad(format!("bad webhook switch: {e}")),
    };
    if let Some(e) = switches
        .iter()
        .find_map(|s| crate::admission::resolve(&s.name).err())
    {
        return bad(e);
    }
    // One after another, in the order given (a Service, then one of its webhooks).
    let mut settings = state.store.settings();
    for s in switches {
        let mut webhooks = std::collections::BTreeMap::new();
        webhooks.insert(s.name, s.state);
        settings = state.store.update_settings(&SettingsPatch {
            webhooks: Some(webhooks),
            ..SettingsPatch::default()
        });
    }
    Reply::Json(200, json!(crate::admission::list(&settings)))
}

/// Routes a `/_sim` request.
pub(crate) fn route(state: &State, r: &Req) -> Reply {
    let path = r.path.trim_end_matches('/');
    match (r.method.as_str(), path) {
        ("GET", "/_sim/health") => Reply::Text(200, "ok".into()),
        ("GET", "/_sim/settled") => Reply::Json(
            200,
            json!({
                "settled": state.store.controllers_settled(),
                "resourceVersion": state.store.current_rv().to_string(),
            }),
        ),
        ("GET", "/_sim/requests") => {
            let since = r.q("since").and_then(|s| s.parse().ok()).unwrap_or(0);
            Reply::Json(200, json!(state.log.since(since)))
        }
        ("DELETE", "/_sim/requests") => {
            state.log.clear();
            Reply::Json(200, json!({"cleared": true}))
        }
        ("GET", "/_sim/faults") => Reply::Json(200, json!(state.faults.list())),
        ("POST", "/_sim/faults") => {
            let v: Value = match serde_json::from_slice(&r.body) {
                Ok(v) => v,
                Err(e) => return bad(format!("fault rule is not JSON: {e}")),
            };
            let rules: Result<Vec<FaultRule>, _> = match v {
                Value::Array(a) => a.into_iter().map(serde_json::from_value).collect(),
                other => serde_json::from_value(other).map(|r| vec![r]),
            };
            match rules {
                Ok(rules) => {
                    for rule in rules {
                        state.faults.add(rule);
                    }
                    Reply::Json(201, json!(state.faults.list()))
                }
                Err(e) => bad(format!("bad fault rule: {e}")),
            }
        }
        ("DELETE", "/_sim/faults") => {
            state.faults.clear();
            Reply::Json(200, json!([]))
        }
        ("GET", "/_sim/settings") => Reply::Json(200, json!(state.store.settings())),
        ("POST", "/_sim/settings") => match serde_json::from_slice::<SettingsPatch>(&r.body) {
            Ok(p) => match p.check() {
                Ok(()) => Reply::Json(200, json!(state.store.update_settings(&p))),
                Err(e) => bad(format!("bad settings: {e}")),
            },
            Err(e) => bad(format!("bad settings: {e}")),
        },
        ("GET", "/_sim/webhooks") => {
            Reply::Json(200, json!(crate::admission::list(&state.store.settings())))
        }
        ("POST", "/_sim/webhooks") => switch_webhooks(state, &r.body),
        ("POST", "/_sim/objects") => {
            let text = String::from_utf8_lossy(&r.body);
            let sc = match crate::scenario::Scenario::parse(&text, "request body") {
                Ok(sc) => sc,
                Err(e) => return bad(format!("{e:#}")),
            };
            if sc.settings != SettingsPatch::default() {
                state.store.update_settings(&sc.settings);
            }
            let mut stored = Vec::new();
            for o in sc.objects {
                match state.store.put(o) {
                    Ok(v) => stored.push(v),
                    Err(e) => return e.into(),
                }
            }
            Reply::Json(
                200,
                json!({"kind": "List", "apiVersion": "v1", "items": stored}),
            )
        }
        ("POST", "/_sim/compact") => {
            state.store.compact();
            Reply::Json(
                200,
                json!({"resourceVersion": state.store.current_rv().to_string()}),
            )
        }
        _ => ApiError::path_not_found().into(),
    }
}
